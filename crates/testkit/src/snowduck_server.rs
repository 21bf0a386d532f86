//! A throwaway snowduck server for tests: snowduck (PyPI) answers Snowflake's SQL API v2
//! (`/api/v2/statements`) from an in-memory DuckDB, on a free port of 127.0.0.1, and stops
//! when the value is dropped.
//!
//! `scripts/test` installs the version pinned in `scripts/snowduck.txt` into a virtualenv and
//! points `FERRY_SNOWDUCK` at its `snowduck` command; otherwise it is looked for on PATH.

use anyhow::{bail, Context};
use std::io::Read as _;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How to get snowduck, for the message of a test that cannot find it.
const HOW_TO_INSTALL: &str = "the Snowflake source is tested against snowduck, pinned in \
    scripts/snowduck.txt; run the tests with scripts/test, which installs it, or install it \
    yourself with `python3 -m pip install -r scripts/snowduck.txt` and put `snowduck` on PATH \
    or set FERRY_SNOWDUCK to its path";

/// How long snowduck may take to import DuckDB and the Snowflake connector and listen.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A snowduck server that lives as long as this value.
pub struct SnowduckServer {
    child: Child,
    port: u16,
}

impl SnowduckServer {
    /// Starts snowduck on a free loopback port and waits until it accepts connections. A
    /// missing snowduck is an error that says how to install it.
    pub fn start() -> anyhow::Result<SnowduckServer> {
        let program = find_snowduck()?;
        let port = free_port()?;
        let child = Command::new(&program)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {}", program.display()))?;
        let mut server = SnowduckServer { child, port };
        server.wait_until_listening()?;
        Ok(server)
    }

    /// `http://127.0.0.1:PORT`, the base URL a Snowflake connection should use.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn wait_until_listening(&mut self) -> anyhow::Result<()> {
        let started = Instant::now();
        while started.elapsed() < START_TIMEOUT {
            if let Some(status) = self.child.try_wait()? {
                let mut stderr = String::new();
                if let Some(mut pipe) = self.child.stderr.take() {
                    let _ = pipe.read_to_string(&mut stderr);
                }
                bail!("snowduck exited ({status}) before listening: {stderr}");
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                // Its log goes nowhere from now on; a full pipe must not block the server.
                self.child.stderr.take();
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!(
            "snowduck did not listen on port {} within {START_TIMEOUT:?}",
            self.port
        )
    }
}

impl Drop for SnowduckServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("snowduck"))
        .find(|candidate| candidate.is_file())
        .with_context(|| format!("snowduck is not installed: {HOW_TO_INSTALL}"))
}

/// A port nothing listens on right now (the kernel picks it; snowduck binds it a moment later).
fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}
