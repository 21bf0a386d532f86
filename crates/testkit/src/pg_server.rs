//! A throwaway PostgreSQL server for tests: its own data directory, reachable through a unix
//! socket in a temporary directory (and, if asked, over TCP on 127.0.0.1, with or without TLS),
//! gone when the value is dropped.

use crate::process::{find_program, free_port, localhost_certificates, Watchdog};
use anyhow::{anyhow, bail, Context};
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use tempfile::TempDir;

/// The message a test prints when the machine has no PostgreSQL binaries.
const MISSING_BINARIES: &str = "PostgreSQL 15 binaries (initdb, pg_ctl, postgres) must be on PATH \
     (on Debian: apt-get install postgresql-15, then add /usr/lib/postgresql/15/bin to PATH)";

/// The database every server is created with; [`PgServer::url`] points at it.
const DEFAULT_DATABASE: &str = "ferry_test";

/// The CA's certificate, in the server's root directory (readable by the tests).
const CA_CERTIFICATE_FILE: &str = "ca.pem";

/// The role initdb creates; authentication is `trust`, so no password is needed.
const SUPERUSER: &str = "postgres";

/// The password of the `postgres` role over TCP (the unix socket needs none). Tests check that
/// ferry never prints it.
pub const TCP_PASSWORD: &str = "tcp-secret-8c1f";

/// How a server can be reached besides its unix socket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Listen {
    /// Only the unix socket.
    #[default]
    SocketOnly,
    /// TCP on 127.0.0.1 as well, without TLS (`ssl = off`); password login.
    Tcp,
    /// TCP on 127.0.0.1 with TLS only: `hostssl` lines, plain TCP refused; password login. The
    /// server's certificate names `localhost` (not 127.0.0.1) and is signed by a CA made for
    /// this server, whose certificate is [`PgServer::ca_certificate`].
    TcpTlsOnly,
}

/// A PostgreSQL server that lives as long as this value.
///
/// By default it listens on no TCP address at all, only on a unix socket inside its own
/// temporary directory, so any number of servers can run at once (parallel tests, several test
/// binaries). [`PgServer::start_with`] adds TCP on 127.0.0.1, plain or TLS only.
/// Dropping the value stops the server and deletes the directory. If the test process dies
/// without dropping it (a `static`, a panic that aborts, SIGKILL), its [`Watchdog`] notices
/// within a second and does the same cleanup.
pub struct PgServer {
    root_dir: PathBuf,
    data_dir: PathBuf,
    log_file: PathBuf,
    port: u16,
    binaries: PgBinaries,
    run_as: RunAs,
    listen: Listen,
    /// True while the server process should be up; `restart` and `stop` flip it.
    running: AtomicBool,
    watchdog: Option<Watchdog>,
    /// Declared last so the directory is deleted after `Drop::drop` has stopped the server.
    _temp_dir: TempDir,
}

impl PgServer {
    /// Runs `initdb` into a fresh temporary directory, starts the server, waits until it
    /// accepts connections and creates the `ferry_test` database.
    ///
    /// PostgreSQL refuses to run as root; when the tests run as root (CI does), the server
    /// runs as the `postgres` system user through `runuser`.
    pub fn start() -> anyhow::Result<PgServer> {
        PgServer::start_with(Listen::SocketOnly)
    }

    /// Like [`PgServer::start`], also listening on 127.0.0.1 as `listen` says. The CA and the
    /// server's certificate are made at start (rcgen), so nothing needs installing.
    pub fn start_with(listen: Listen) -> anyhow::Result<PgServer> {
        let binaries = PgBinaries::find()?;
        let run_as = RunAs::detect()?;
        // Unix socket paths are limited to about 100 bytes, so the directory is made in /tmp
        // rather than in a possibly long $TMPDIR.
        let temp_dir = tempfile::Builder::new()
            .prefix("ferry-pg-")
            .tempdir_in("/tmp")
            .context("cannot create a temporary directory for PostgreSQL in /tmp")?;
        let root_dir = temp_dir.path().to_path_buf();
        if let RunAs::PostgresUser { uid, gid } = run_as {
            std::os::unix::fs::chown(&root_dir, Some(uid), Some(gid)).with_context(|| {
                format!("cannot give {} to the postgres user", root_dir.display())
            })?;
        }
        let mut server = PgServer {
            data_dir: root_dir.join("data"),
            log_file: root_dir.join("server.log"),
            root_dir,
            port: free_port()?,
            binaries,
            run_as,
            listen,
            running: AtomicBool::new(false),
            watchdog: None,
            _temp_dir: temp_dir,
        };
        // From here on, an error drops `server`, which stops whatever was started.
        server.watchdog = Some(server.spawn_watchdog()?);
        server.run_initdb()?;
        server.write_configuration()?;
        if listen == Listen::TcpTlsOnly {
            server.write_certificates()?;
        }
        if listen != Listen::SocketOnly {
            server.write_tcp_access_rules()?;
        }
        server.start_server()?;
        server.create_database(DEFAULT_DATABASE)?;
        if listen != Listen::SocketOnly {
            server.run_sql(
                "postgres",
                &format!("ALTER ROLE {SUPERUSER} PASSWORD '{TCP_PASSWORD}'"),
            )?;
        }
        Ok(server)
    }

    /// A connection string for the `ferry_test` database that tokio-postgres accepts.
    pub fn url(&self) -> String {
        self.url_for_db(DEFAULT_DATABASE)
    }

    /// A connection string for another database of this server.
    pub fn url_for_db(&self, database: &str) -> String {
        format!(
            "host={} port={} user={SUPERUSER} dbname={database}",
            self.root_dir.display(),
            self.port
        )
    }

    /// A `postgres://` URL reaching `database` over TCP through `host` (`localhost` or
    /// `127.0.0.1`), with the password; `parameters` (e.g. `sslmode=require`) are appended as
    /// the query. Only for servers started with [`Listen::Tcp`] or [`Listen::TcpTlsOnly`].
    pub fn tcp_url(&self, host: &str, database: &str, parameters: &str) -> String {
        assert_ne!(
            self.listen,
            Listen::SocketOnly,
            "this PostgreSQL server listens on no TCP address; start it with PgServer::start_with"
        );
        let mut url = format!(
            "postgres://{SUPERUSER}:{TCP_PASSWORD}@{host}:{}/{database}",
            self.port
        );
        if !parameters.is_empty() {
            url.push('?');
            url.push_str(parameters);
        }
        url
    }

    /// The PEM file of the CA that signed the server's certificate ([`Listen::TcpTlsOnly`]).
    pub fn ca_certificate(&self) -> Option<PathBuf> {
        (self.listen == Listen::TcpTlsOnly).then(|| self.root_dir.join(CA_CERTIFICATE_FILE))
    }

    /// Creates a database and returns its connection string. Names are lowercase
    /// `[a-z0-9_]` so they need no quoting anywhere.
    pub fn create_database(&self, database: &str) -> anyhow::Result<String> {
        let valid = !database.is_empty()
            && database.len() <= 63
            && database
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid {
            bail!("database name {database:?} must be 1-63 characters of [a-z0-9_]");
        }
        self.run_sql("postgres", &format!("CREATE DATABASE {database}"))?;
        Ok(self.url_for_db(database))
    }

    /// The directory holding the server's unix socket (the `host` of the connection string).
    pub fn socket_dir(&self) -> &Path {
        &self.root_dir
    }

    /// The port number; with no TCP listener it only names the socket file.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server (fast shutdown: open connections are cut) and starts it again on the
    /// same socket, as if an operator restarted PostgreSQL in the middle of a run.
    pub fn restart(&self) -> anyhow::Result<()> {
        self.stop_temporarily()?;
        self.start_again()
    }

    /// Stops the server but keeps its data, so a test can observe "PostgreSQL is down" for as
    /// long as it likes before [`PgServer::start_again`].
    pub fn stop_temporarily(&self) -> anyhow::Result<()> {
        self.stop_server("fast")
    }

    /// Starts a server stopped by [`PgServer::stop_temporarily`] again.
    pub fn start_again(&self) -> anyhow::Result<()> {
        self.start_server()
    }

    /// Stops the server at once (`pg_ctl stop -m immediate`) and deletes its directory.
    pub fn stop(self) -> anyhow::Result<()> {
        self.stop_server("immediate")
        // Dropping `self` now removes the directory and the watchdog.
    }

    fn run_initdb(&self) -> anyhow::Result<()> {
        let mut initdb = self.command_as_server_user(&self.binaries.initdb);
        initdb
            .arg("--pgdata")
            .arg(&self.data_dir)
            .args(["--username", SUPERUSER, "--auth=trust", "--encoding=UTF8"])
            .args(["--locale=C", "--no-sync"]);
        run_checked(&mut initdb, "initdb")
    }

    /// Settings for a fast, private, disposable server. They live in postgresql.conf rather
    /// than on the command line so `start_again` brings the server back exactly the same.
    fn write_configuration(&self) -> anyhow::Result<()> {
        let listen_addresses = match self.listen {
            Listen::SocketOnly => "",
            Listen::Tcp | Listen::TcpTlsOnly => "127.0.0.1",
        };
        let tls = match self.listen {
            Listen::SocketOnly | Listen::Tcp => "",
            Listen::TcpTlsOnly => {
                "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n"
            }
        };
        let settings = format!(
            "\n# Added by ferry-testkit: durability off (the data is thrown away).\n\
             listen_addresses = '{listen_addresses}'\n\
             unix_socket_directories = '{socket_dir}'\n\
             port = {port}\n\
             fsync = off\n\
             synchronous_commit = off\n\
             full_page_writes = off\n\
             shared_buffers = 16MB\n\
             max_connections = 100\n\
             log_min_messages = warning\n\
             {tls}",
            socket_dir = self.root_dir.display(),
            port = self.port,
        );
        let config_path = self.data_dir.join("postgresql.conf");
        let mut config = std::fs::read_to_string(&config_path)
            .with_context(|| format!("cannot read {}", config_path.display()))?;
        config.push_str(&settings);
        // Rewriting the existing file keeps its owner (the postgres user when we run as root).
        std::fs::write(&config_path, config)
            .with_context(|| format!("cannot write {}", config_path.display()))
    }

    /// pg_hba.conf for TCP: the socket stays `trust` (the kit's own psql, tests' setup SQL);
    /// TCP asks for the password, and with TLS only `hostssl` is let in.
    fn write_tcp_access_rules(&self) -> anyhow::Result<()> {
        let tcp_rules = match self.listen {
            Listen::SocketOnly => return Ok(()),
            Listen::Tcp => "host all all 127.0.0.1/32 scram-sha-256\n",
            Listen::TcpTlsOnly => {
                "hostssl all all 127.0.0.1/32 scram-sha-256\n\
                 hostnossl all all 127.0.0.1/32 reject\n"
            }
        };
        let rules = format!("# Written by ferry-testkit.\nlocal all all trust\n{tcp_rules}");
        self.write_server_file(&self.data_dir.join("pg_hba.conf"), &rules, 0o600)
    }

    /// A CA, and a certificate for `localhost` signed by it, made now: the server's key and
    /// certificate in the data directory (the key 0600, as PostgreSQL insists), the CA's
    /// certificate next to it for clients.
    fn write_certificates(&self) -> anyhow::Result<()> {
        let certificates = localhost_certificates("ferry-testkit CA")?;
        self.write_server_file(
            &self.data_dir.join("server.crt"),
            &certificates.server_certificate,
            0o644,
        )?;
        self.write_server_file(
            &self.data_dir.join("server.key"),
            &certificates.server_key,
            0o600,
        )?;
        let ca_path = self.root_dir.join(CA_CERTIFICATE_FILE);
        std::fs::write(&ca_path, certificates.ca_certificate)
            .with_context(|| format!("cannot write {}", ca_path.display()))
    }

    /// Writes a file the server reads, with `mode`, owned by the user the server runs as.
    fn write_server_file(&self, path: &Path, contents: &str, mode: u32) -> anyhow::Result<()> {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::write(path, contents)
            .with_context(|| format!("cannot write {}", path.display()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("cannot set the mode of {}", path.display()))?;
        if let RunAs::PostgresUser { uid, gid } = self.run_as {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .with_context(|| format!("cannot give {} to the postgres user", path.display()))?;
        }
        Ok(())
    }

    fn start_server(&self) -> anyhow::Result<()> {
        self.running.store(true, Ordering::SeqCst);
        let mut pg_ctl = self.command_as_server_user(&self.binaries.pg_ctl);
        pg_ctl
            .arg("--pgdata")
            .arg(&self.data_dir)
            .arg("--log")
            .arg(&self.log_file)
            .args(["--wait", "--timeout=60", "start"]);
        run_checked(&mut pg_ctl, "pg_ctl start").map_err(|error| {
            anyhow!(
                "{error:#}\nserver log:\n{}",
                std::fs::read_to_string(&self.log_file).unwrap_or_default()
            )
        })
    }

    fn stop_server(&self, mode: &str) -> anyhow::Result<()> {
        let mut pg_ctl = self.command_as_server_user(&self.binaries.pg_ctl);
        pg_ctl.arg("--pgdata").arg(&self.data_dir).args([
            "--mode",
            mode,
            "--wait",
            "--timeout=60",
            "stop",
        ]);
        run_checked(&mut pg_ctl, "pg_ctl stop")?;
        self.running.store(false, Ordering::SeqCst);
        Ok(())
    }

    fn run_sql(&self, database: &str, sql: &str) -> anyhow::Result<()> {
        // psql is a client: it may run as any user, and trust authentication lets it in.
        let mut psql = Command::new(&self.binaries.psql);
        psql.arg("--no-psqlrc")
            .arg("--quiet")
            .arg("--host")
            .arg(&self.root_dir)
            .args(["--port", &self.port.to_string(), "--username", SUPERUSER])
            .args(["--dbname", database, "--set", "ON_ERROR_STOP=1"])
            .args(["--command", sql])
            .current_dir(&self.root_dir);
        run_checked(&mut psql, "psql")
    }

    /// initdb and pg_ctl refuse to run as root, so as root they run as the postgres user.
    fn command_as_server_user(&self, program: &Path) -> Command {
        let mut command = match self.run_as {
            RunAs::CurrentUser => Command::new(program),
            RunAs::PostgresUser { .. } => {
                let mut runuser = Command::new("runuser");
                runuser.args(["-u", SUPERUSER, "--"]).arg(program);
                runuser
            }
        };
        // The postgres user may not be allowed into the caller's working directory.
        command.current_dir(&self.root_dir);
        command
    }

    /// Stops the server and deletes the directory once this process has exited: it covers
    /// servers that are never dropped (a `static` shared by a test binary) or a test process
    /// that is killed.
    fn spawn_watchdog(&self) -> anyhow::Result<Watchdog> {
        let as_postgres = match self.run_as {
            RunAs::CurrentUser => "no",
            RunAs::PostgresUser { .. } => "yes",
        };
        Watchdog::spawn(
            "ferry-pg-watchdog",
            "[ -d \"$1\" ]",
            r#"[ -d "$1" ] || exit 0
               if [ "$3" = yes ]; then
                   runuser -u postgres -- "$2" -D "$1/data" -m immediate -w stop
               else
                   "$2" -D "$1/data" -m immediate -w stop
               fi
               rm -rf "$1""#,
            &[
                self.root_dir.as_os_str(),
                self.binaries.pg_ctl.as_os_str(),
                OsStr::new(as_postgres),
            ],
        )
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        // Stopped first, so that it does not race this cleanup.
        drop(self.watchdog.take());
        if self.running.load(Ordering::SeqCst) {
            if let Err(error) = self.stop_server("immediate") {
                eprintln!("ferry-testkit: could not stop PostgreSQL: {error:#}");
            }
        }
        // `_temp_dir` is dropped after this and deletes the directory.
    }
}

impl std::fmt::Debug for PgServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgServer")
            .field("socket_dir", &self.root_dir)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

/// Absolute paths of the programs the kit runs, all from the directory `initdb` lives in so a
/// PATH that mixes versions cannot pair initdb 15 with another version's pg_ctl.
#[derive(Debug, Clone)]
struct PgBinaries {
    initdb: PathBuf,
    pg_ctl: PathBuf,
    psql: PathBuf,
}

impl PgBinaries {
    fn find() -> anyhow::Result<PgBinaries> {
        let initdb_on_path =
            find_program("initdb", &[]).ok_or_else(|| anyhow!(MISSING_BINARIES))?;
        // Debian links /usr/local/bin/initdb to /usr/lib/postgresql/15/bin/initdb; the real
        // directory also has psql, which /usr/bin only has as a version-switching wrapper.
        let initdb = std::fs::canonicalize(&initdb_on_path).unwrap_or(initdb_on_path);
        let bin_dir = initdb.parent().map(Path::to_path_buf).unwrap_or_default();
        let sibling_or_path = |name: &str| -> anyhow::Result<PathBuf> {
            let sibling = bin_dir.join(name);
            if sibling.is_file() {
                return Ok(sibling);
            }
            find_program(name, &[])
                .ok_or_else(|| anyhow!("{MISSING_BINARIES}; {name} was not found"))
        };
        Ok(PgBinaries {
            pg_ctl: sibling_or_path("pg_ctl")?,
            psql: sibling_or_path("psql")?,
            initdb,
        })
    }
}

/// Which user the server processes run as.
#[derive(Debug, Clone, Copy)]
enum RunAs {
    CurrentUser,
    PostgresUser { uid: u32, gid: u32 },
}

impl RunAs {
    fn detect() -> anyhow::Result<RunAs> {
        // `id -u` rather than libc::geteuid: the workspace forbids unsafe code.
        if command_stdout(Command::new("id").arg("-u"))?.trim() != "0" {
            return Ok(RunAs::CurrentUser);
        }
        let explain = "running as root, and initdb refuses to run as root: ferry-testkit needs a \
                       `postgres` system user (useradd --system postgres) and `runuser` to run \
                       the server as that user";
        let uid = command_stdout(Command::new("id").args(["-u", SUPERUSER]))
            .and_then(|text| Ok(text.trim().parse::<u32>()?))
            .context(explain)?;
        let gid = command_stdout(Command::new("id").args(["-g", SUPERUSER]))
            .and_then(|text| Ok(text.trim().parse::<u32>()?))
            .context(explain)?;
        if find_program("runuser", &[]).is_none() && !Path::new("/usr/sbin/runuser").exists() {
            bail!("{explain}; runuser was not found");
        }
        Ok(RunAs::PostgresUser { uid, gid })
    }
}

fn command_stdout(command: &mut Command) -> anyhow::Result<String> {
    let output = command
        .output()
        .with_context(|| format!("cannot run {command:?}"))?;
    if !output.status.success() {
        bail!("{command:?} failed: {}", describe_output(&output));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn run_checked(command: &mut Command, what: &str) -> anyhow::Result<()> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {what} ({command:?})"))?;
    if !output.status.success() {
        bail!("{what} failed: {}", describe_output(&output));
    }
    Ok(())
}

fn describe_output(output: &Output) -> String {
    let mut text = format!("{}", output.status);
    for stream in [&output.stdout, &output.stderr] {
        let stream = String::from_utf8_lossy(stream);
        if !stream.trim().is_empty() {
            let _ = write!(text, "\n{}", stream.trim_end());
        }
    }
    text
}
