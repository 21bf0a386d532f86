//! What every server the kit starts has in common: a [`Watchdog`] that cleans up after a test
//! process that died without dropping its server, a [`ServerProcess`] killed when it is dropped,
//! free ports, programs looked up on PATH, and a CA with a `localhost` certificate for servers
//! that speak TLS.

use anyhow::{bail, Context};
use std::ffi::OsStr;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A shell that waits for this test process to exit, then cleans up what it leaves behind.
///
/// Servers are often held in a `static` shared by a whole test binary, which is never dropped,
/// and a test process can be killed; either way its servers would outlive it. The shell polls
/// once a second, so cleanup follows within a second. It has its own process group, so a
/// Ctrl-C aimed at the tests does not kill it before it has cleaned up. Dropping the value
/// stops the shell: whoever drops it cleans up themselves.
pub(crate) struct Watchdog {
    shell: Child,
}

impl Watchdog {
    /// Runs `cleanup` (shell code) once this process has exited; the shell gives up early,
    /// doing nothing, when `still_needed` (a shell condition) turns false. Both see `arguments`
    /// as `$1`, `$2`, …
    pub(crate) fn spawn(
        label: &str,
        still_needed: &str,
        cleanup: &str,
        arguments: &[&OsStr],
    ) -> anyhow::Result<Watchdog> {
        let script = format!(
            "parent=\"$1\"; shift\n\
             while kill -0 \"$parent\" 2>/dev/null && {still_needed}; do sleep 1; done\n\
             kill -0 \"$parent\" 2>/dev/null || {{ {cleanup}; }}\n"
        );
        let shell = Command::new("sh")
            .args(["-c", &script, label])
            .arg(std::process::id().to_string())
            .args(arguments)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .with_context(|| format!("cannot start the watchdog shell (sh) of {label}"))?;
        Ok(Watchdog { shell })
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        let _ = self.shell.kill();
        let _ = self.shell.wait();
    }
}

/// A server the kit started as a child process: killed when this value is dropped, or by its
/// [`Watchdog`] within a second of the test process dying without dropping it (which also
/// deletes the server's folder, if it has one). Its output goes to a log file, which error
/// messages quote.
pub(crate) struct ServerProcess {
    label: String,
    child: Child,
    log: PathBuf,
    _watchdog: Watchdog,
}

impl ServerProcess {
    /// Starts `command` with no input and its output appended to `log`. `folder` is deleted by
    /// the watchdog, after the server was killed, if this process dies first.
    pub(crate) fn spawn(
        label: &str,
        command: &mut Command,
        log: &Path,
        folder: Option<&Path>,
    ) -> anyhow::Result<ServerProcess> {
        let output = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(output.try_clone()?)
            .stderr(output)
            .spawn()
            .with_context(|| format!("cannot start {label} ({command:?})"))?;
        let pid = child.id().to_string();
        let folder = folder.map(Path::as_os_str).unwrap_or_default();
        let watchdog = Watchdog::spawn(
            &format!("{label} watchdog"),
            "true",
            "kill -9 \"$1\" 2>/dev/null; sleep 0.2; [ -z \"$2\" ] || rm -rf \"$2\"",
            &[OsStr::new(&pid), folder],
        );
        let mut child = child;
        let watchdog = match watchdog {
            Ok(watchdog) => watchdog,
            Err(error) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(error);
            }
        };
        Ok(ServerProcess {
            label: label.to_string(),
            child,
            log: log.to_path_buf(),
            _watchdog: watchdog,
        })
    }

    /// Polls `ready` until it holds; fails, quoting the log, if the server exits first or is
    /// not ready within `timeout`.
    pub(crate) fn wait_until_ready(
        &mut self,
        timeout: Duration,
        mut ready: impl FnMut() -> bool,
    ) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            if ready() {
                return Ok(());
            }
            if let Some(status) = self.exited()? {
                bail!(
                    "{} exited ({status}) before it was ready:\n{}",
                    self.label,
                    self.log()
                );
            }
            if started.elapsed() > timeout {
                bail!(
                    "{} was not ready within {timeout:?}:\n{}",
                    self.label,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The exit status, if the server has exited.
    pub(crate) fn exited(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        Ok(self.child.try_wait()?)
    }

    /// What the server wrote so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port nothing listens on right now, from the kernel. Another process could take it before
/// the server binds it; that is rare enough for tests, and shows as a start error.
pub(crate) fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("cannot pick a free port")?;
    Ok(listener.local_addr()?.port())
}

/// `program` in a directory of PATH, else in one of `also_in`.
pub(crate) fn find_program(program: &str, also_in: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(also_in.iter().map(PathBuf::from))
        .map(|directory| directory.join(program))
        .find(|candidate| candidate.is_file())
}

/// PEM texts of a CA made now, and of a certificate for `localhost` (not 127.0.0.1) it signed,
/// with that certificate's key.
pub(crate) struct LocalhostCertificates {
    pub(crate) ca_certificate: String,
    pub(crate) server_certificate: String,
    pub(crate) server_key: String,
}

/// Makes a CA named `ca_name` and a `localhost` server certificate with rcgen: nothing to
/// install, nothing kept.
pub(crate) fn localhost_certificates(ca_name: &str) -> anyhow::Result<LocalhostCertificates> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate().context("cannot make the test CA's key")?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, ca_name);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_certificate = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate().context("cannot make the server's key")?;
    let mut server_params = CertificateParams::new(vec!["localhost".to_string()])?;
    server_params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_certificate = server_params.signed_by(&server_key, &issuer)?;
    Ok(LocalhostCertificates {
        ca_certificate: ca_certificate.pem(),
        server_certificate: server_certificate.pem(),
        server_key: server_key.serialize_pem(),
    })
}
