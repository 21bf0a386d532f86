//! End-to-end: several `ferry serve` processes on one PostgreSQL workspace share the work. Runs
//! are queued and claimed by whichever server has room, each Stripe account's rate limit is
//! shared by every process that writes into it, and a server SIGKILLed mid-run has its run
//! resumed by another, with no duplicate and no lost row.

mod common;

use common::{Scene, Served, KEY};
use ferry_stripe_emulator::{Emulator, EmulatorConfig, RateLimits};
use ferry_testkit::PgServer;
use serde_json::Value as Json;
use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

const SYNCS: usize = 10;
const ACCOUNTS: usize = 3;
const ROWS_PER_SYNC: usize = 60;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_servers_share_the_queue_and_the_rate_limits_and_resume_a_killed_servers_run() {
    let pg = tokio::task::spawn_blocking(|| PgServer::start().expect("PostgreSQL starts"))
        .await
        .unwrap();
    let state_url = pg.create_database("ferry_state").unwrap();
    // Three Stripe accounts, each limited as Stripe limits a test-mode account (25 requests/s).
    let limited = || EmulatorConfig {
        rate_limits: RateLimits::default(),
        ..EmulatorConfig::default()
    };
    let mut scene = Scene::with_emulator(limited()).await;
    scene.env.push(("FERRY_STATE_URL".into(), state_url));
    scene.env.push((
        "FERRY_LOG".into(),
        "info,ferry_server=debug,ferry_engine=debug".into(),
    ));
    let other_accounts = [
        Emulator::start(limited()).await.unwrap(),
        Emulator::start(limited()).await.unwrap(),
    ];
    let accounts: Vec<&Emulator> = std::iter::once(&scene.emulator)
        .chain(other_accounts.iter())
        .collect();

    scene.warehouse_sql(&format!(
        "create table people as select i as id, 's' || (i % {SYNCS}) || '-p' || i || '@example.com' as email, \
         'Person ' || i as name from range({}) t(i)",
        SYNCS * ROWS_PER_SYNC
    ));
    for (index, account) in accounts.iter().enumerate() {
        let url = account.url();
        scene
            .ferry(&[
                "connect",
                "stripe",
                &format!("account{index}"),
                "--api-key",
                KEY,
                "--api-base",
                &url,
            ])
            .await
            .ok();
    }
    let warehouse = scene.warehouse().display().to_string();
    scene
        .ferry(&["connect", "duckdb", "warehouse", "--path", &warehouse])
        .await
        .ok();
    for sync in 0..SYNCS {
        let name = format!("people{sync}");
        scene
            .ferry(&[
                "model",
                "create",
                &name,
                "--connection",
                "warehouse",
                "--sql",
                &format!("select email, name from people where id % {SYNCS} = {sync} order by id"),
            ])
            .await
            .ok();
        scene
            .ferry(&[
                "sync",
                "create",
                &name,
                "--model",
                &name,
                "--destination",
                &format!("account{}", sync % ACCOUNTS),
                "--key",
                "email=email",
                "--map",
                "name=name",
            ])
            .await
            .ok();
    }
    let token = scene.ferry(&["token", "create", "workers"]).await.ok();
    let token = token
        .stdout
        .lines()
        .map(str::trim)
        .find(|line| line.starts_with("ferry_"))
        .expect("a token")
        .to_string();

    // Three servers, each running at most two runs at once: ten runs cannot all start at once,
    // so the queue holds some until a server has room.
    let mut servers = Vec::new();
    for index in 0..3 {
        servers.push(serve(&scene, index, &token).await);
    }
    let client = servers[0].api();
    let asks = (0..SYNCS).map(|sync| {
        let request =
            client.post(servers[sync % 3].url(&format!("/api/v1/syncs/people{sync}/runs")));
        async move {
            let response = request.send().await.expect("the server answers");
            let status = response.status().as_u16();
            (status, response.json::<Json>().await.unwrap())
        }
    });
    let answers = futures::future::join_all(asks).await;
    for (status, body) in &answers {
        assert_eq!(*status, 202, "{body}");
        assert!(
            body["status"] == "running" || body["status"] == "queued",
            "{body}"
        );
    }

    // SIGKILL a server once one of its runs has written part of its rows.
    let pids: Vec<u32> = servers.iter().map(|server| server.child.id()).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let (victim, killed_run) = loop {
        let queue: Json = get(&client, &servers[0], "/api/v1/queue").await;
        let under_way = queue.as_array().unwrap().iter().find_map(|entry| {
            let holder = entry["claimed_by"].as_str()?;
            let run = entry["run"].as_str()?;
            let victim = pids
                .iter()
                .position(|pid| holder.contains(&format!(":{pid}:")))?;
            let sync = entry["sync"].as_str().unwrap();
            let index: usize = sync.trim_start_matches("people").parse().unwrap();
            let written = customers_of(accounts[index % ACCOUNTS], index).len();
            (5..ROWS_PER_SYNC - 10)
                .contains(&written)
                .then(|| (victim, (sync.to_string(), run.to_string())))
        });
        if let Some(found) = under_way {
            break found;
        }
        assert!(
            Instant::now() < deadline,
            "no run got under way: {queue:#}\n{}",
            servers[0].output()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    servers[victim].child.kill().unwrap();
    servers[victim].child.wait().unwrap();
    let killed = servers.remove(victim);
    drop(killed);
    let killed_at = Instant::now();

    // Everything ends: the queue empties, the killed server's run included.
    let deadline = Instant::now() + Duration::from_secs(150);
    loop {
        let queue: Json = get(&client, &servers[0], "/api/v1/queue").await;
        if queue.as_array().unwrap().is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            let stuck: Vec<String> = queue
                .as_array()
                .unwrap()
                .iter()
                .map(|entry| entry["sync"].as_str().unwrap().to_string())
                .collect();
            let runs: Json = get(&client, &servers[0], "/api/v1/runs?limit=100").await;
            let mut lines = String::new();
            for index in 0..3 {
                for stream in ["stdout", "stderr"] {
                    let path = scene.dir.path().join(format!("serve{index}.{stream}"));
                    let text = std::fs::read_to_string(path).unwrap_or_default();
                    for line in text
                        .lines()
                        .filter(|l| stuck.iter().any(|s| l.contains(s.as_str())))
                    {
                        lines.push_str(&format!("[server {index}] {line}\n"));
                    }
                }
            }
            panic!("the queue did not empty: {queue:#}\nruns: {runs:#}\nlog lines:\n{lines}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Every row is in its Stripe account exactly once, and no account was ever over its limit.
    for (index, account) in accounts.iter().enumerate() {
        let counters = account.handle().counters();
        let limited: u64 = counters
            .by_endpoint
            .values()
            .map(|outcomes| outcomes.get("429").copied().unwrap_or(0))
            .sum();
        assert_eq!(limited, 0, "account {index} answered 429s: {counters:?}");
    }
    for sync in 0..SYNCS {
        let customers = customers_of(accounts[sync % ACCOUNTS], sync);
        let emails: HashSet<&str> = customers
            .iter()
            .map(|c| c["email"].as_str().unwrap())
            .collect();
        assert_eq!(
            (customers.len(), emails.len()),
            (ROWS_PER_SYNC, ROWS_PER_SYNC),
            "sync people{sync}: each row once"
        );
    }

    // The history agrees: the killed run is interrupted, and a run resumed it on another
    // server within the lease (15 s) and a claim tick; each sync's last run completed, and the
    // customers its runs created add up to what Stripe holds.
    let runs: Json = get(&client, &servers[0], "/api/v1/runs?limit=100").await;
    let runs = runs["runs"].as_array().or(runs.as_array()).unwrap().clone();
    let mut by_sync: BTreeMap<String, Vec<&Json>> = BTreeMap::new();
    for run in &runs {
        by_sync
            .entry(run["sync"].as_str().unwrap().to_string())
            .or_default()
            .push(run);
    }
    let (killed_sync, killed_run) = killed_run;
    let killed = runs
        .iter()
        .find(|r| r["id"] == killed_run.as_str())
        .unwrap();
    assert_eq!(killed["status"], "interrupted", "{killed}");
    for (sync, runs) in &by_sync {
        let newest = runs
            .iter()
            .max_by_key(|r| r["started_at"].as_str().unwrap().to_string())
            .unwrap();
        assert_eq!(newest["status"], "completed", "{sync}: {newest}");
        // The killed server ran up to two runs: each is interrupted, and resumed once.
        let interrupted = runs.iter().filter(|r| r["status"] == "interrupted").count();
        assert!(interrupted <= 1, "{sync}: {runs:?}");
        assert_eq!(runs.len(), 1 + interrupted, "{sync}: {runs:?}");
        // The last run accounts for every row (those an interrupted run created are found
        // again: unchanged), and no row is counted created twice.
        let count = |run: &Json, what: &str| run["counts"][what].as_u64().unwrap();
        assert_eq!(
            (
                count(newest, "rows"),
                count(newest, "created") + count(newest, "unchanged"),
                count(newest, "rejected") + count(newest, "failed"),
            ),
            (ROWS_PER_SYNC as u64, ROWS_PER_SYNC as u64, 0),
            "{sync}: {newest}"
        );
        let created: u64 = runs.iter().map(|r| count(r, "created")).sum();
        assert!(created <= ROWS_PER_SYNC as u64, "{sync}: {runs:?}");
    }
    let resumed = by_sync[&killed_sync]
        .iter()
        .find(|r| r["id"] != killed_run.as_str())
        .unwrap();
    let resumed_after =
        chrono::DateTime::parse_from_rfc3339(resumed["started_at"].as_str().unwrap()).unwrap()
            - chrono::DateTime::parse_from_rfc3339(killed["started_at"].as_str().unwrap()).unwrap();
    assert!(
        killed_at.elapsed() < Duration::from_secs(150)
            && resumed_after < chrono::Duration::seconds(60),
        "the killed run was resumed {resumed_after} after it started"
    );
}

/// `ferry serve --max-runs 2` on a free port, with its output in files of its own.
async fn serve(scene: &Scene, index: usize, token: &str) -> Served {
    let stdout_path = scene.dir.path().join(format!("serve{index}.stdout"));
    let stderr_path = scene.dir.path().join(format!("serve{index}.stderr"));
    let mut command = scene.command(&["serve", "--bind", "127.0.0.1:0", "--max-runs", "2"]);
    command
        .stdout(std::fs::File::create(&stdout_path).unwrap())
        .stderr(std::fs::File::create(&stderr_path).unwrap());
    let child = command.spawn().expect("ferry serve starts");
    let mut served = Served {
        child,
        base: String::new(),
        token: token.to_string(),
        stdout_path,
        stderr_path,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = std::fs::read_to_string(&served.stdout_path).unwrap_or_default();
        if let Some(base) = out
            .lines()
            .find_map(|l| l.strip_prefix("ferry is serving the workspace at "))
        {
            served.base = base.trim_end_matches('/').to_string();
            return served;
        }
        if let Ok(Some(status)) = served.child.try_wait() {
            panic!("ferry serve exited with {status}:\n{}", served.output());
        }
        assert!(
            Instant::now() < deadline,
            "ferry serve did not start:\n{}",
            served.output()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn get(client: &reqwest::Client, server: &Served, path: &str) -> Json {
    let response = client.get(server.url(path)).send().await.unwrap();
    assert_eq!(response.status(), 200, "{path}");
    response.json().await.unwrap()
}

/// The customers sync `people{sync}` wrote into `account`.
fn customers_of(account: &Emulator, sync: usize) -> Vec<Json> {
    let prefix = format!("s{sync}-");
    account
        .handle()
        .customers()
        .into_iter()
        .filter(|c| c["email"].as_str().is_some_and(|e| e.starts_with(&prefix)))
        .collect()
}
