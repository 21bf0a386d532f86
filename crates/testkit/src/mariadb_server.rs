//! A throwaway MariaDB server for tests: Debian's `mariadb-server` binaries, its own data
//! directory in a temporary folder, listening on a free port of 127.0.0.1 (with TLS if asked)
//! and on a unix socket in that folder, gone when the value is dropped.

use crate::process::{find_program, free_port, localhost_certificates, ServerProcess};
use anyhow::{anyhow, bail, Context};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use tempfile::TempDir;

/// The message a test prints when the machine has no MariaDB server binaries.
const MISSING_BINARIES: &str = "MariaDB's server binaries (mariadb-install-db, mariadbd, mariadb) \
     must be installed (on Debian: apt-get install mariadb-server)";

/// The user the tests connect as over TCP, with [`MARIADB_PASSWORD`]. It has every privilege
/// (it creates the tests' tables); ferry's read-only session is what keeps models from writing.
pub const MARIADB_USER: &str = "ferry";

/// The test user's password. Tests check that ferry never prints it.
pub const MARIADB_PASSWORD: &str = "maria-secret-4d2a";

/// The CA's certificate, the server's certificate and its key, in the server's folder.
const CA_CERTIFICATE_FILE: &str = "ca.pem";
const SERVER_CERTIFICATE_FILE: &str = "server-cert.pem";
const SERVER_KEY_FILE: &str = "server-key.pem";

/// How long the server may take to accept connections after it was started.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A MariaDB server that lives as long as this value.
///
/// Each server has its own port (picked free on 127.0.0.1) and socket, so any number can run at
/// once. Dropping the value stops the server and deletes the directory; if the test process dies
/// without dropping it (a `static`, SIGKILL), the server's watchdog notices within a second and
/// does the same.
pub struct MariaDbServer {
    root_dir: PathBuf,
    port: u16,
    client: PathBuf,
    /// `mariadbd`, once started; killed when dropped (the data is thrown away, so there is
    /// nothing to shut down cleanly).
    server: Option<ServerProcess>,
    tls: bool,
    /// Declared last so the directory is deleted after `Drop::drop` has stopped the server.
    _temp_dir: TempDir,
}

impl MariaDbServer {
    /// Creates the system tables in a fresh temporary directory, starts `mariadbd`, waits until
    /// it accepts connections and creates the test user. No TLS.
    pub fn start() -> anyhow::Result<MariaDbServer> {
        MariaDbServer::start_with(false)
    }

    /// Like [`MariaDbServer::start`], with TLS offered (not required) on TCP: the server's
    /// certificate names `localhost` (not 127.0.0.1) and is signed by a CA made for this server
    /// at start, whose certificate is [`MariaDbServer::ca_certificate`].
    pub fn start_with_tls() -> anyhow::Result<MariaDbServer> {
        MariaDbServer::start_with(true)
    }

    fn start_with(tls: bool) -> anyhow::Result<MariaDbServer> {
        let binaries = MariaDbBinaries::find()?;
        // Unix socket paths are limited to about 100 bytes, so the directory is made in /tmp
        // rather than in a possibly long $TMPDIR.
        let temp_dir = tempfile::Builder::new()
            .prefix("ferry-mariadb-")
            .tempdir_in("/tmp")
            .context("cannot create a temporary directory for MariaDB in /tmp")?;
        let root_dir = temp_dir.path().to_path_buf();
        let run_as = current_user_name()?;
        let mut server = MariaDbServer {
            port: free_port()?,
            client: binaries.client.clone(),
            server: None,
            tls,
            root_dir,
            _temp_dir: temp_dir,
        };
        // From here on, an error drops `server`, which stops whatever was started.
        server.install_system_tables(&binaries, &run_as)?;
        if tls {
            server.write_certificates()?;
        }
        server.server = Some(server.spawn_server(&binaries, &run_as)?);
        server.wait_until_ready()?;
        server.run_sql(&format!(
            "CREATE USER '{MARIADB_USER}'@'%' IDENTIFIED BY '{MARIADB_PASSWORD}'; \
             GRANT ALL PRIVILEGES ON *.* TO '{MARIADB_USER}'@'%' WITH GRANT OPTION;"
        ))?;
        Ok(server)
    }

    /// Creates a database and returns a `mysql://` URL for it (the test user, its password,
    /// TCP on 127.0.0.1). Names are lowercase `[a-z0-9_]` so they need no quoting anywhere.
    pub fn create_database(&self, database: &str) -> anyhow::Result<String> {
        let valid = !database.is_empty()
            && database.len() <= 64
            && database
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid {
            bail!("database name {database:?} must be 1-64 characters of [a-z0-9_]");
        }
        self.run_sql(&format!(
            "CREATE DATABASE {database} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
        ))?;
        Ok(self.url_for_db(database))
    }

    /// A `mysql://` URL for `database` as the test user, over TCP on 127.0.0.1.
    pub fn url_for_db(&self, database: &str) -> String {
        format!(
            "mysql://{MARIADB_USER}:{MARIADB_PASSWORD}@127.0.0.1:{}/{database}",
            self.port
        )
    }

    /// The PEM file of the CA that signed the server's certificate (servers started with
    /// [`MariaDbServer::start_with_tls`]).
    pub fn ca_certificate(&self) -> Option<PathBuf> {
        self.tls.then(|| self.root_dir.join(CA_CERTIFICATE_FILE))
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's unix socket.
    pub fn socket_path(&self) -> PathBuf {
        socket_path(&self.root_dir)
    }

    /// Runs SQL as the server's `root` account, through the `mariadb` client and the socket.
    pub fn run_sql(&self, sql: &str) -> anyhow::Result<()> {
        run_sql_through_socket(&self.client, &self.root_dir, sql)
    }

    fn install_system_tables(
        &self,
        binaries: &MariaDbBinaries,
        run_as: &str,
    ) -> anyhow::Result<()> {
        let output = Command::new(&binaries.install_db)
            // --no-defaults must come first: the machine's /etc/mysql settings (a data directory
            // owned by the mysql user, a system-wide socket) must not apply.
            .arg("--no-defaults")
            .arg(format!("--datadir={}", self.data_dir().display()))
            .arg(format!("--user={run_as}"))
            // root@localhost with an empty password rather than unix_socket authentication,
            // which would only let in the operating system's root.
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
            .arg("--skip-name-resolve")
            .current_dir(&self.root_dir)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot run {}", binaries.install_db.display()))?;
        if !output.status.success() {
            bail!(
                "mariadb-install-db failed ({}): {}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout).trim_end(),
                String::from_utf8_lossy(&output.stderr).trim_end()
            );
        }
        Ok(())
    }

    /// A CA, and a certificate for `localhost` signed by it, made now: nothing to install,
    /// nothing kept.
    fn write_certificates(&self) -> anyhow::Result<()> {
        let certificates = localhost_certificates("ferry-testkit MariaDB CA")?;
        for (file, contents) in [
            (CA_CERTIFICATE_FILE, certificates.ca_certificate),
            (SERVER_CERTIFICATE_FILE, certificates.server_certificate),
            (SERVER_KEY_FILE, certificates.server_key),
        ] {
            let path = self.root_dir.join(file);
            std::fs::write(&path, contents)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok(())
    }

    /// Starts `mariadbd` with settings for a fast, private, disposable server.
    fn spawn_server(
        &self,
        binaries: &MariaDbBinaries,
        run_as: &str,
    ) -> anyhow::Result<ServerProcess> {
        let root = self.root_dir.display();
        let tls_settings = if self.tls {
            vec![
                format!("--ssl-ca={root}/{CA_CERTIFICATE_FILE}"),
                format!("--ssl-cert={root}/{SERVER_CERTIFICATE_FILE}"),
                format!("--ssl-key={root}/{SERVER_KEY_FILE}"),
            ]
        } else {
            Vec::new()
        };
        let mut mariadbd = Command::new(&binaries.server);
        mariadbd
            .arg("--no-defaults")
            .arg(format!("--datadir={}", self.data_dir().display()))
            .arg(format!("--socket={}", self.socket_path().display()))
            .arg(format!("--pid-file={root}/mariadbd.pid"))
            .arg(format!("--log-error={root}/server.log"))
            .arg(format!("--tmpdir={root}"))
            .arg(format!("--port={}", self.port))
            // mariadbd refuses to start as root unless told which user to run as, and switching
            // to the `mysql` user would leave it unable to write into a directory root made;
            // the tests run as root on CI, so it stays the current user, whoever that is.
            .arg(format!("--user={run_as}"))
            .arg("--bind-address=127.0.0.1")
            // No DNS lookups of 127.0.0.1 on every connection (and accounts are matched by
            // address: the test user is 'ferry'@'%').
            .arg("--skip-name-resolve")
            // Durability and memory down: the data is thrown away.
            .args([
                "--innodb-buffer-pool-size=16M",
                "--innodb-log-file-size=16M",
                "--innodb-flush-log-at-trx-commit=0",
                "--innodb-doublewrite=0",
                "--performance-schema=OFF",
                "--skip-log-bin",
                "--max-connections=200",
            ])
            .args([
                "--character-set-server=utf8mb4",
                "--collation-server=utf8mb4_unicode_ci",
            ])
            // SELECT … INTO OUTFILE may only write into the server's own folder.
            .arg(format!("--secure-file-priv={root}"))
            .args(tls_settings)
            .current_dir(&self.root_dir);
        ServerProcess::spawn(
            "mariadbd",
            &mut mariadbd,
            &self.root_dir.join("mariadbd.out"),
            Some(&self.root_dir),
        )
    }

    fn wait_until_ready(&mut self) -> anyhow::Result<()> {
        let Some(server) = self.server.as_mut() else {
            bail!("mariadbd was not started");
        };
        let ready = server.wait_until_ready(START_TIMEOUT, || {
            run_sql_through_socket(&self.client, &self.root_dir, "SELECT 1").is_ok()
        });
        ready.map_err(|error| {
            let log = std::fs::read_to_string(self.root_dir.join("server.log")).unwrap_or_default();
            anyhow!("MariaDB did not start: {error:#}\nserver log:\n{log}")
        })
    }

    fn data_dir(&self) -> PathBuf {
        self.root_dir.join("data")
    }
}

impl std::fmt::Debug for MariaDbServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MariaDbServer")
            .field("root_dir", &self.root_dir)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

/// Absolute paths of the programs the kit runs. Debian puts `mariadbd` in /usr/sbin, which is
/// not on an ordinary user's PATH.
struct MariaDbBinaries {
    install_db: PathBuf,
    server: PathBuf,
    client: PathBuf,
}

impl MariaDbBinaries {
    fn find() -> anyhow::Result<MariaDbBinaries> {
        let find = |name: &str| {
            find_program(name, &["/usr/sbin", "/usr/bin"])
                .ok_or_else(|| anyhow!("{MISSING_BINARIES}; {name} was not found"))
        };
        Ok(MariaDbBinaries {
            install_db: find("mariadb-install-db")?,
            server: find("mariadbd")?,
            client: find("mariadb")?,
        })
    }
}

/// The name of the user the tests run as (`id -un`: the workspace forbids unsafe code, so no
/// libc call).
fn current_user_name() -> anyhow::Result<String> {
    let output = Command::new("id")
        .arg("-un")
        .output()
        .context("cannot run `id -un`")?;
    let name = String::from_utf8_lossy(&output.stdout).trim().to_string();
    if !output.status.success() || name.is_empty() {
        bail!("`id -un` did not name the current user");
    }
    Ok(name)
}

/// The socket of the server whose folder is `root_dir`.
fn socket_path(root_dir: &Path) -> PathBuf {
    root_dir.join("mariadbd.sock")
}

/// Runs SQL as the server's `root` account, through the `mariadb` client and the socket.
fn run_sql_through_socket(client: &Path, root_dir: &Path, sql: &str) -> anyhow::Result<()> {
    let output = Command::new(client)
        .arg("--no-defaults")
        .arg(format!("--socket={}", socket_path(root_dir).display()))
        .args(["--user=root", "--batch", "--execute", sql])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {}", client.display()))?;
    if !output.status.success() {
        bail!(
            "mariadb failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim_end()
        );
    }
    Ok(())
}
