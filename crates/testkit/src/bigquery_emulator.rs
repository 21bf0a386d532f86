//! A throwaway BigQuery emulator for tests: `crucible serve --dialect bigquery` (the PyPI
//! package `crucible-emulator[server]`, pinned in scripts/bigquery-emulator.txt) on a free
//! loopback port, in memory, stopped when the value is dropped.
//!
//! It speaks BigQuery's REST API v2 (jobs.query, getQueryResults with page tokens, jobs.cancel,
//! datasets, tables) over DuckDB, accepts any bearer token, and has no token endpoint.

use anyhow::{bail, Context};
use std::io::Read as _;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What a test prints when the emulator is not installed.
const HOW_TO_INSTALL: &str = "the BigQuery emulator is not installed: run scripts/test (it \
     installs it), or `python3 -m venv VENV && VENV/bin/pip install -r \
     scripts/bigquery-emulator.txt` and set FERRY_BIGQUERY_EMULATOR=VENV/bin/crucible";

/// A running emulator; dropping it stops the process.
pub struct BigQueryEmulator {
    child: Child,
    port: u16,
}

impl BigQueryEmulator {
    /// Starts the emulator found through `FERRY_BIGQUERY_EMULATOR` (set by scripts/test), else
    /// `crucible` on PATH, and waits until it answers its health check.
    pub fn start() -> anyhow::Result<BigQueryEmulator> {
        let command = emulator_command()?;
        // A port the OS says is free; the emulator binds it a moment later (a race another
        // process could win, in which case the health check below fails and says so).
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
            .local_addr()?
            .port();
        let child = Command::new(&command)
            .args([
                "serve",
                "--dialect",
                "bigquery",
                "--host",
                "127.0.0.1",
                "--port",
            ])
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {}; {HOW_TO_INSTALL}", command.display()))?;
        let mut emulator = BigQueryEmulator { child, port };
        emulator.wait_until_ready()?;
        Ok(emulator)
    }

    /// The API root to give the source instead of https://bigquery.googleapis.com.
    pub fn api_base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn wait_until_ready(&mut self) -> anyhow::Result<()> {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            if let Some(status) = self.child.try_wait()? {
                let mut stderr = String::new();
                if let Some(pipe) = self.child.stderr.as_mut() {
                    let _ = pipe.read_to_string(&mut stderr);
                }
                bail!("the BigQuery emulator exited ({status}) before answering:\n{stderr}");
            }
            if health_check(self.port) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!(
            "the BigQuery emulator did not answer on port {} within 30s",
            self.port
        )
    }
}

impl Drop for BigQueryEmulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn emulator_command() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("FERRY_BIGQUERY_EMULATOR") {
        let path = PathBuf::from(path);
        if !path.exists() {
            bail!(
                "FERRY_BIGQUERY_EMULATOR={} does not exist; {HOW_TO_INSTALL}",
                path.display()
            );
        }
        return Ok(path);
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|directory| directory.join("crucible"))
            .find(|candidate| candidate.is_file())
    });
    on_path.ok_or_else(|| anyhow::anyhow!("{HOW_TO_INSTALL}"))
}

/// `GET /_crucible/health` answers 200 once the server is up.
fn health_check(port: u16) -> bool {
    use std::io::Write as _;
    let Ok(mut stream) = TcpStream::connect((Ipv4Addr::LOCALHOST, port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = "GET /_crucible/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.starts_with("HTTP/1.1 200")
}
