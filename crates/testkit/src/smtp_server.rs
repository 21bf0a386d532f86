//! A throwaway SMTP server for tests: Python's aiosmtpd (PyPI, pinned in scripts/aiosmtpd.txt)
//! on a free port of 127.0.0.1, with STARTTLS, implicit TLS or neither, and AUTH for one user
//! if asked. It keeps every message it receives, as the server saw it, for
//! [`SmtpServer::messages`], and stops when the value is dropped (or, held in a `static`, when
//! the test process exits).
//!
//! Two recipient domains stand for failures: `RCPT TO` an address `@refused.example` is refused
//! for good (`550 5.1.1`), one `@deferred.example` for now (`451 4.3.0`).
//!
//! `scripts/test` installs aiosmtpd into a virtualenv and points `FERRY_SMTP_PYTHON` at that
//! virtualenv's python, which runs `smtp_server.py` (written into the server's folder).

use crate::process::{free_port, localhost_certificates, ServerProcess};
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use tempfile::TempDir;

/// How the test server protects its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpServerSecurity {
    /// Plain text first; the server offers STARTTLS and refuses mail until the client used it.
    Starttls,
    /// TLS from the first byte (what port 465 speaks).
    Tls,
    /// No TLS at all, like a local relay.
    Plain,
}

/// What the test server offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpOptions {
    pub security: SmtpServerSecurity,
    /// `Some((user, password))`: AUTH (PLAIN, LOGIN) for this one user, required before MAIL.
    /// `None`: no AUTH offered, anyone may send.
    pub auth: Option<(String, String)>,
}

/// One message as the server received it. The headers are decoded by Python's `email` package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedEmail {
    /// `MAIL FROM`.
    pub envelope_from: String,
    /// Every `RCPT TO`, in order.
    pub envelope_to: Vec<String>,
    /// The `From` header, e.g. `ferry <ferry@example.com>`.
    pub from: String,
    /// The addresses of the `To` header, in order, each as written (`Name <a@b>` or `a@b`).
    pub to: Vec<String>,
    pub subject: String,
    /// The text/plain body, decoded, with `\n` line ends. SMTP clients often add blank lines at
    /// its end: compare `trim_end()`.
    pub body: String,
    /// The whole message as received, headers included.
    pub raw: String,
}

/// How to get aiosmtpd, for the message of a test that cannot find it.
const HOW_TO_INSTALL: &str = "the email channel is tested against aiosmtpd, pinned in \
    scripts/aiosmtpd.txt: run the tests with scripts/test, which installs it, or `python3 -m \
    venv VENV && VENV/bin/pip install -r scripts/aiosmtpd.txt` and set \
    FERRY_SMTP_PYTHON=VENV/bin/python";

/// The server's program, run by the virtualenv's python.
const SERVER_SCRIPT: &str = include_str!("smtp_server.py");

/// How long python may take to import aiosmtpd and listen.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// An SMTP server that lives as long as this value.
pub struct SmtpServer {
    port: u16,
    mail_folder: PathBuf,
    ca_certificate: PathBuf,
    /// Declared before the folder holding its script and mail, so the server stops first.
    _process: ServerProcess,
    _folder: TempDir,
}

impl SmtpServer {
    /// Makes a CA and a `localhost` certificate (rcgen), starts aiosmtpd with `options` on a
    /// free loopback port and waits until it accepts connections. A missing aiosmtpd is an
    /// error that says how to install it.
    pub fn start(options: SmtpOptions) -> anyhow::Result<SmtpServer> {
        let python = find_python()?;
        let port = free_port()?;
        let folder = tempfile::Builder::new().prefix("ferry-smtp-").tempdir()?;
        let root = folder.path();
        let script = write_file(root, "smtp_server.py", SERVER_SCRIPT)?;
        let certificates = localhost_certificates("ferry-testkit SMTP CA")?;
        let ca_certificate = write_file(root, "ca.pem", &certificates.ca_certificate)?;
        let server_certificate =
            write_file(root, "server-cert.pem", &certificates.server_certificate)?;
        let server_key = write_file(root, "server-key.pem", &certificates.server_key)?;
        let mail_folder = root.join("mail");
        std::fs::create_dir(&mail_folder)?;
        let ready_file = root.join("ready");

        let mut command = Command::new(&python);
        command
            .arg(&script)
            .args(["--port", &port.to_string()])
            .arg("--mail-folder")
            .arg(&mail_folder)
            .arg("--ready-file")
            .arg(&ready_file)
            .arg("--certificate")
            .arg(&server_certificate)
            .arg("--key")
            .arg(&server_key)
            .arg("--security")
            .arg(match options.security {
                SmtpServerSecurity::Starttls => "starttls",
                SmtpServerSecurity::Tls => "tls",
                SmtpServerSecurity::Plain => "plain",
            });
        if let Some((user, password)) = &options.auth {
            command
                .args(["--user", user])
                .env("FERRY_SMTP_SERVER_PASSWORD", password);
        }
        let mut process =
            ServerProcess::spawn("aiosmtpd", &mut command, &root.join("smtp.log"), Some(root))?;
        process.wait_until_ready(START_TIMEOUT, || ready_file.exists())?;
        Ok(SmtpServer {
            port,
            mail_folder,
            ca_certificate,
            _process: process,
            _folder: folder,
        })
    }

    /// The port on 127.0.0.1. Connect to `localhost`, the name on the server's certificate.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The PEM file of the CA that signed the server's certificate (for `localhost`).
    pub fn ca_certificate(&self) -> &Path {
        &self.ca_certificate
    }

    /// Every message received so far, oldest first.
    pub fn messages(&self) -> anyhow::Result<Vec<ReceivedEmail>> {
        let mut numbers = Vec::new();
        for entry in std::fs::read_dir(&self.mail_folder)? {
            // `N.partial` is a message still being written.
            if let Ok(number) = entry?.file_name().to_string_lossy().parse::<u32>() {
                numbers.push(number);
            }
        }
        numbers.sort_unstable();
        numbers
            .into_iter()
            .map(|number| read_message(&self.mail_folder.join(number.to_string())))
            .collect()
    }
}

fn find_python() -> anyhow::Result<PathBuf> {
    let Some(path) = std::env::var_os("FERRY_SMTP_PYTHON") else {
        bail!("FERRY_SMTP_PYTHON is not set: {HOW_TO_INSTALL}");
    };
    let path = PathBuf::from(path);
    if !path.is_file() {
        bail!(
            "FERRY_SMTP_PYTHON={} does not exist: {HOW_TO_INSTALL}",
            path.display()
        );
    }
    Ok(path)
}

fn write_file(folder: &Path, name: &str, contents: &str) -> anyhow::Result<PathBuf> {
    let path = folder.join(name);
    std::fs::write(&path, contents).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// Reads the folder `smtp_server.py` wrote for one message.
fn read_message(folder: &Path) -> anyhow::Result<ReceivedEmail> {
    let read = |name: &str| {
        let path = folder.join(name);
        std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))
    };
    let lines = |text: String| -> Vec<String> { text.lines().map(str::to_string).collect() };
    Ok(ReceivedEmail {
        envelope_from: read("envelope_from")?,
        envelope_to: lines(read("envelope_to")?),
        from: read("from")?,
        to: lines(read("to")?),
        subject: read("subject")?,
        body: read("body")?,
        raw: read("raw.eml")?,
    })
}
