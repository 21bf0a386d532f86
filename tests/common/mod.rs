//! Shared fixtures for the end-to-end tests: a Stripe emulator in this process, a temporary
//! workspace and DuckDB warehouse, and a `ferry` command runner that drives the real binary.

#![allow(dead_code)] // Each test binary uses a different part of this module.

use ferry_stripe_emulator::{Emulator, EmulatorConfig, EmulatorHandle, RateLimits, TEST_API_KEY};
use serde_json::Value as Json;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

pub const KEY: &str = TEST_API_KEY;

/// How long one `ferry` command of a test may take. Every call finishes in seconds; one that
/// hangs fails the test with what it printed instead of stalling the suite until CI's limit.
pub const CALL_LIMIT: Duration = Duration::from_secs(300);

/// Waits for a child `ferry` on a blocking thread. One still running after `limit` is killed
/// and the test fails with its output.
pub async fn wait_within(child: std::process::Child, limit: Duration, what: &str) -> Ran {
    let pid = child.id();
    let waiting = tokio::task::spawn_blocking(move || child.wait_with_output().expect("waits"));
    tokio::pin!(waiting);
    let (output, timed_out) = match tokio::time::timeout(limit, &mut waiting).await {
        Ok(output) => (output.expect("the blocking task finishes"), false),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            (waiting.await.expect("the blocking task finishes"), true)
        }
    };
    let ran = Ran {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    assert!(
        !timed_out,
        "`ferry {what}` was still running after {limit:?}, and was killed.\nstdout:\n{}\nstderr:\n{}",
        ran.stdout, ran.stderr
    );
    ran
}

/// One end-to-end scene: an emulator, a workspace directory and a warehouse file.
pub struct Scene {
    pub emulator: Emulator,
    pub dir: tempfile::TempDir,
    /// Extra environment for every `ferry` call (e.g. FERRY_STATE_URL).
    pub env: Vec<(String, String)>,
}

pub struct Ran {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    pub fn json(&self) -> Json {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    #[track_caller]
    pub fn ok(self) -> Ran {
        assert_eq!(
            self.code, 0,
            "ferry failed\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

/// A fast emulator: no search delay beyond what a test asks for, rate limits off.
pub fn fast_emulator_config() -> EmulatorConfig {
    EmulatorConfig {
        rate_limits: RateLimits::disabled(),
        search_delay: Duration::from_millis(2000),
        ..EmulatorConfig::default()
    }
}

impl Scene {
    /// Connects the emulator as `stripe` (`ferry connect stripe stripe … EXTRA…`), which must work.
    pub async fn connect_stripe(&self, extra: &[&str]) {
        let url = self.emulator.url();
        let mut args = vec![
            "connect",
            "stripe",
            "stripe",
            "--api-key",
            KEY,
            "--api-base",
            &url,
        ];
        args.extend_from_slice(extra);
        self.ferry(&args).await.ok();
    }

    pub async fn new() -> Scene {
        Scene::with_emulator(fast_emulator_config()).await
    }

    pub async fn with_emulator(config: EmulatorConfig) -> Scene {
        let emulator = Emulator::start(config).await.expect("the emulator starts");
        Scene {
            emulator,
            dir: tempfile::tempdir().expect("a temp dir"),
            env: Vec::new(),
        }
    }

    pub fn stripe(&self) -> EmulatorHandle {
        self.emulator.handle()
    }

    /// A write to the emulator's API as another Stripe client makes it (form params); the
    /// object it returns, which must be a success.
    #[allow(dead_code)]
    pub async fn stripe_post(&self, path: &str, form: &[(&str, &str)]) -> Json {
        let response = reqwest::Client::new()
            .post(format!("{}{path}", self.emulator.url()))
            .bearer_auth(KEY)
            .form(form)
            .send()
            .await
            .expect("the emulator answers");
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        response.json().await.expect("a JSON body")
    }

    pub fn workspace(&self) -> PathBuf {
        self.dir.path().join("workspace")
    }

    pub fn warehouse(&self) -> PathBuf {
        self.dir.path().join("warehouse.duckdb")
    }

    /// Runs SQL against the scene's DuckDB warehouse with a read-write connection.
    pub fn warehouse_sql(&self, sql: &str) {
        ferry_source::duckdb_execute(&self.warehouse(), sql).expect("warehouse SQL runs");
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ferry"));
        command
            .args(args)
            .env("FERRY_HOME", self.workspace())
            .env_remove("FERRY_STATE_URL")
            .env_remove("STRIPE_API_KEY")
            .env_remove("FERRY_MASTER_KEY")
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        for (k, v) in &self.env {
            command.env(k, v);
        }
        command
    }

    /// Runs `ferry ARGS` to completion on a blocking thread (the emulator lives on this runtime).
    pub async fn ferry(&self, args: &[&str]) -> Ran {
        let mut command = self.command(args);
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let child = command.spawn().expect("ferry starts");
        wait_within(child, CALL_LIMIT, &args.join(" ")).await
    }

    /// `ferry sync run NAME --format json EXTRA…`, which must exit 0; its JSON report.
    pub async fn run_sync_json(&self, name: &str, extra: &[&str]) -> Json {
        let mut args = vec!["sync", "run", name, "--format", "json"];
        args.extend_from_slice(extra);
        self.ferry(&args).await.ok().json()
    }

    /// Connects the emulator as `stripe` and the warehouse as `warehouse`.
    pub async fn connect(&self) {
        self.connect_with(&[]).await;
    }

    /// Like [`Scene::connect`], with ferry's own rate limiter off: a large run at Stripe's
    /// test-mode 25/s would take minutes.
    pub async fn connect_unlimited(&self) {
        self.connect_with(&["--max-rps", "0", "--max-rps-per-endpoint", "0"])
            .await;
    }

    async fn connect_with(&self, stripe_extra: &[&str]) {
        self.connect_stripe(stripe_extra).await;
        let warehouse = self.warehouse().display().to_string();
        self.ferry(&["connect", "duckdb", "warehouse", "--path", &warehouse])
            .await
            .ok();
    }

    /// Model `people` over table `people`, and sync `people-to-stripe` keyed on email.
    pub async fn email_sync(&self, extra: &[&str]) {
        self.ferry(&[
            "model",
            "create",
            "people",
            "--connection",
            "warehouse",
            "--sql",
            "select * from people order by id",
        ])
        .await
        .ok();
        self.save_email_sync(extra).await;
    }

    /// Saves sync `people-to-stripe` over model `people`, keyed on email (again, to change it).
    pub async fn save_email_sync(&self, extra: &[&str]) {
        let mut args = vec![
            "sync",
            "create",
            "people-to-stripe",
            "--model",
            "people",
            "--destination",
            "stripe",
            "--key",
            "email=email",
            "--map",
            "name=name",
            "--map",
            "phone=phone",
            "--map",
            "plan=metadata.plan",
        ];
        args.extend_from_slice(extra);
        self.ferry(&args).await.ok();
    }

    /// The records of run `run_id` with this outcome (`rejected`, `updated`, …), as
    /// `ferry run show RUN --records OUTCOME --format json` lists them.
    pub async fn run_records(&self, run_id: &str, outcome: &str) -> Vec<Json> {
        let shown = self
            .ferry(&[
                "run",
                "show",
                run_id,
                "--records",
                outcome,
                "--format",
                "json",
            ])
            .await
            .ok()
            .json();
        shown["records"].as_array().cloned().unwrap_or_default()
    }

    /// Live customers in the emulator with this email (exact).
    pub fn customers_with_email(&self, email: &str) -> Vec<Json> {
        self.stripe()
            .customers()
            .into_iter()
            .filter(|c| c["email"] == email)
            .collect()
    }

    /// Write requests (POST) the emulator received so far.
    pub fn posts(&self) -> usize {
        self.stripe()
            .requests()
            .iter()
            .filter(|r| r.method == "POST")
            .count()
    }
}

/// Change detection in the warehouse: rows the warehouse sent to ferry in the run whose `-v` log is `stderr`.
pub fn rows_travelled(stderr: &str) -> u64 {
    let line = stderr
        .lines()
        .find(|line| line.contains("The warehouse compared the model"))
        .unwrap_or_else(|| panic!("no change detection line in the log:\n{stderr}"));
    let after = line
        .split("travelled")
        .nth(1)
        .expect("the line names the rows that travelled");
    let digits: String = after
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().expect("a count")
}

/// A `people` table with `count` rows: id, email, name, phone, plan.
pub fn people_sql(count: u32) -> String {
    format!(
        "create table people as select i as id, 'person' || i || '@example.com' as email, 'Person ' || i as name,
                '+1 555 ' || lpad(cast(i as varchar), 4, '0') as phone, ['free', 'pro'][1 + i % 2] as plan
         from range(1, {count} + 1) t(i)"
    )
}

/// Runs SQL (one or more statements) on a PostgreSQL database, which must succeed.
pub async fn postgres_execute(url: &str, sql: &str) {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connects");
    tokio::spawn(connection);
    client.batch_execute(sql).await.expect("SQL runs");
}

pub fn path_str(path: &Path) -> String {
    path.display().to_string()
}

/// A `ferry serve` process on a free loopback port, over the scene's workspace. Killed on drop.
pub struct Served {
    pub child: std::process::Child,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    /// The token `ferry serve` printed at its first start.
    pub token: String,
    /// Everything the server printed on stdout and stderr so far (read on demand).
    pub stdout_path: PathBuf,
    pub stderr_path: PathBuf,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Served {
    /// An HTTP client with the token as Bearer.
    pub fn api(&self) -> reqwest::Client {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {}", self.token)
                .parse()
                .expect("a header value"),
        );
        reqwest::Client::builder()
            .default_headers(headers)
            .build()
            .expect("a client")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// All the server wrote so far, stdout then stderr.
    pub fn output(&self) -> String {
        let out = std::fs::read_to_string(&self.stdout_path).unwrap_or_default();
        let err = std::fs::read_to_string(&self.stderr_path).unwrap_or_default();
        format!("{out}{err}")
    }
}

impl Scene {
    /// Starts `ferry serve --bind 127.0.0.1:0 EXTRA…` on a fresh workspace and waits until it
    /// listens; returns its address and the first sign-in token it printed.
    pub async fn serve(&self, extra: &[&str]) -> Served {
        let stdout_path = self.dir.path().join("serve.stdout");
        let stderr_path = self.dir.path().join("serve.stderr");
        let mut args = vec!["serve", "--bind", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        let mut command = self.command(&args);
        command
            .stdout(std::fs::File::create(&stdout_path).expect("a stdout file"))
            .stderr(std::fs::File::create(&stderr_path).expect("a stderr file"));
        let child = command.spawn().expect("ferry serve starts");
        let mut served = Served {
            child,
            base: String::new(),
            token: String::new(),
            stdout_path,
            stderr_path,
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let out = std::fs::read_to_string(&served.stdout_path).unwrap_or_default();
            let base = out
                .lines()
                .find_map(|l| l.strip_prefix("ferry is serving the workspace at "))
                .map(|u| u.trim_end_matches('/').to_string());
            let token = out
                .lines()
                .map(str::trim)
                .find(|l| l.starts_with("ferry_"))
                .map(str::to_string);
            if let Some(base) = base {
                served.base = base;
                served.token = token.unwrap_or_default();
                return served;
            }
            if let Ok(Some(status)) = served.child.try_wait() {
                panic!("ferry serve exited with {status}:\n{}", served.output());
            }
            assert!(
                std::time::Instant::now() < deadline,
                "ferry serve did not start within 30 s:\n{}",
                served.output()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Scene {
    /// Runs sync `sync` set to crash at an exact point (`FERRY_TEST_CRASH_AT`, an abort as
    /// sudden as SIGKILL), and checks that it died there, saying so.
    pub async fn crash_run_at(&self, sync: &str, point: &str) {
        let mut command = self.command(&["sync", "run", sync]);
        command.env("FERRY_TEST_CRASH_AT", point);
        let output = tokio::task::spawn_blocking(move || command.output().unwrap())
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success()
                && stderr.contains(&format!("crashing on purpose at '{point}'")),
            "the run crashed at {point}: {stderr}"
        );
    }

    /// Starts `runs` runs of sync `sync` one after another and SIGKILLs each at a seeded random
    /// moment (`millis` after its start). Returns each moment with `count` of what Stripe held
    /// after that kill.
    pub async fn kill_runs_at_random_moments(
        &self,
        sync: &str,
        seed: u64,
        runs: usize,
        millis: std::ops::Range<u64>,
        count: impl Fn(&Scene) -> usize,
    ) -> Vec<(u64, usize)> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut kills = Vec::new();
        for _ in 0..runs {
            let after = rng.random_range(millis.clone());
            let mut child = self.command(&["sync", "run", sync]).spawn().unwrap();
            tokio::time::sleep(Duration::from_millis(after)).await;
            child.kill().unwrap();
            child.wait().unwrap();
            kills.push((after, count(self)));
        }
        println!("killed at (ms after start, records in Stripe): {kills:?}");
        kills
    }
}
