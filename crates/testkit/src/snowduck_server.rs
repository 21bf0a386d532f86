//! A throwaway snowduck server for tests: snowduck (PyPI) answers Snowflake's SQL API v2
//! (`/api/v2/statements`) from an in-memory DuckDB, on a free port of 127.0.0.1, and stops
//! when the value is dropped (or, held in a `static`, when the test process exits).
//!
//! `scripts/test` installs the version pinned in `scripts/snowduck.txt` into a virtualenv and
//! points `FERRY_SNOWDUCK` at its `snowduck` command; otherwise it is looked for on PATH.

use crate::process::{find_program, free_port, ServerProcess};
use anyhow::{bail, Context};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;
use tempfile::TempDir;

/// How to get snowduck, for the message of a test that cannot find it.
const HOW_TO_INSTALL: &str = "the Snowflake source is tested against snowduck, pinned in \
    scripts/snowduck.txt; run the tests with scripts/test, which installs it, or install it \
    yourself with `python3 -m pip install -r scripts/snowduck.txt` and put `snowduck` on PATH \
    or set FERRY_SNOWDUCK to its path";

/// How long snowduck may take to import DuckDB and the Snowflake connector and listen.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A snowduck server that lives as long as this value.
pub struct SnowduckServer {
    port: u16,
    /// Declared before the folder holding its log, so the server stops first.
    _process: ServerProcess,
    _log_folder: TempDir,
}

impl SnowduckServer {
    /// Starts snowduck on a free loopback port and waits until it accepts connections. A
    /// missing snowduck is an error that says how to install it.
    pub fn start() -> anyhow::Result<SnowduckServer> {
        let program = find_snowduck()?;
        let port = free_port()?;
        let log_folder = tempfile::Builder::new()
            .prefix("ferry-snowduck-")
            .tempdir()?;
        let mut process = ServerProcess::spawn(
            "snowduck",
            Command::new(&program).args(["--host", "127.0.0.1", "--port", &port.to_string()]),
            &log_folder.path().join("snowduck.log"),
            Some(log_folder.path()),
        )?;
        process.wait_until_ready(START_TIMEOUT, || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        })?;
        Ok(SnowduckServer {
            port,
            _process: process,
            _log_folder: log_folder,
        })
    }

    /// `http://127.0.0.1:PORT`, the base URL a Snowflake connection should use.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

fn find_snowduck() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("FERRY_SNOWDUCK") {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!(
                "FERRY_SNOWDUCK={} does not exist: {HOW_TO_INSTALL}",
                path.display()
            );
        }
        return Ok(path);
    }
    find_program("snowduck", &[])
        .with_context(|| format!("snowduck is not installed: {HOW_TO_INSTALL}"))
}
