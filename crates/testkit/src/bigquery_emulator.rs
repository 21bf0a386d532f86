//! A throwaway BigQuery emulator for tests: `crucible serve --dialect bigquery` (the PyPI
//! package `crucible-emulator[server]`, pinned in scripts/bigquery-emulator.txt) on a free
//! loopback port, in memory, stopped when the value is dropped (or, held in a `static`, when
//! the test process exits).
//!
//! It speaks BigQuery's REST API v2 (jobs.query, getQueryResults with page tokens, jobs.cancel,
//! datasets, tables) over DuckDB, accepts any bearer token, and has no token endpoint.

use crate::process::{find_program, free_port, ServerProcess};
use anyhow::bail;
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;
use tempfile::TempDir;

/// What a test prints when the emulator is not installed.
const HOW_TO_INSTALL: &str = "the BigQuery emulator is not installed: run scripts/test (it \
     installs it), or `python3 -m venv VENV && VENV/bin/pip install -r \
     scripts/bigquery-emulator.txt` and set FERRY_BIGQUERY_EMULATOR=VENV/bin/crucible";

/// A running emulator; dropping it stops the process.
pub struct BigQueryEmulator {
    port: u16,
    /// Declared before the folder holding its log, so the server stops first.
    _process: ServerProcess,
    _log_folder: TempDir,
}

impl BigQueryEmulator {
    /// Starts the emulator found through `FERRY_BIGQUERY_EMULATOR` (set by scripts/test), else
    /// `crucible` on PATH, and waits until it answers its health check.
    pub fn start() -> anyhow::Result<BigQueryEmulator> {
        let command = emulator_command()?;
        let port = free_port()?;
        let log_folder = tempfile::Builder::new()
            .prefix("ferry-crucible-")
            .tempdir()?;
        let mut process = ServerProcess::spawn(
            "the BigQuery emulator",
            Command::new(&command)
                .args(["serve", "--dialect", "bigquery", "--host", "127.0.0.1"])
                .args(["--port", &port.to_string()]),
            &log_folder.path().join("crucible.log"),
            Some(log_folder.path()),
        )?;
        process.wait_until_ready(Duration::from_secs(30), || health_check(port))?;
        Ok(BigQueryEmulator {
            port,
            _process: process,
            _log_folder: log_folder,
        })
    }

    /// The API root to give the source instead of https://bigquery.googleapis.com.
    pub fn api_base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
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
    find_program("crucible", &[]).ok_or_else(|| anyhow::anyhow!("{HOW_TO_INSTALL}"))
}

/// `GET /_crucible/health` answers 200 once the server is up.
fn health_check(port: u16) -> bool {
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
