//! End-to-end reliability: faults injected by the emulator, ferry killed mid-run, two runs at
//! once. Each test reads the emulator afterwards: every valid row exactly once, nothing lost.

mod common;

use common::{fast_emulator_config, people_sql, wait_within, Scene, CALL_LIMIT};
use ferry_stripe_emulator::{FaultConfig, FaultKind};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Every `personN@example.com` for N in 1..=count exists exactly once, with its name.
fn assert_each_person_once(scene: &Scene, count: u32) {
    let mut by_email: HashMap<String, Vec<serde_json::Value>> = HashMap::new();
    for customer in scene.stripe().customers() {
        by_email
            .entry(customer["email"].as_str().unwrap_or_default().to_string())
            .or_default()
            .push(customer);
    }
    for i in 1..=count {
        let email = format!("person{i}@example.com");
        let found = by_email.get(&email).map(Vec::len).unwrap_or(0);
        assert_eq!(found, 1, "{email} is in Stripe {found} times");
        assert_eq!(by_email[&email][0]["name"], format!("Person {i}"));
    }
    assert_eq!(
        scene.stripe().customers().len(),
        count as usize,
        "no customer beyond the model's rows"
    );
}

/// The workspace's snapshot agrees with Stripe: one more run finds every row unchanged and
/// sends no request at all.
async fn assert_snapshot_agrees_with_stripe(scene: &Scene, rows: u32) {
    let again = scene.run_sync_json("people-to-stripe", &[]).await;
    assert_eq!(
        (again["unchanged"].as_u64(), again["requests"].as_u64()),
        (Some(rows as u64), Some(0)),
        "{again}"
    );
}

/// A 300-row sync whose run (against 40 ms of latency) is killed once 20 customers are in
/// Stripe: its creates saved, some sent, some answered, most not sent.
async fn killed_after_twenty_of_three_hundred_creates() -> Scene {
    let mut config = fast_emulator_config();
    config.faults.latency = Duration::from_millis(40);
    let scene = Scene::with_emulator(config).await;
    scene.warehouse_sql(&people_sql(300));
    scene.connect().await;
    scene.email_sync(&[]).await;
    let mut child = scene
        .command(&["sync", "run", "people-to-stripe"])
        .spawn()
        .unwrap();
    let started = Instant::now();
    while scene.stripe().customers().len() < 20 && started.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    scene
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_responses_and_server_errors_create_no_duplicate() {
    let mut config = fast_emulator_config();
    config.fault_seed = Some(42);
    config.faults = FaultConfig {
        server_error_rate: 0.10,
        lock_timeout_rate: 0.05,
        drop_rate: 0.02,
        lose_response_rate: 0.10,
        latency: Duration::from_millis(5),
        latency_jitter: Duration::from_millis(5),
    };
    let scene = Scene::with_emulator(config).await;
    scene.warehouse_sql(&people_sql(200));
    scene.connect().await;
    scene.email_sync(&[]).await;
    let run = scene.run_sync_json("people-to-stripe", &[]).await;
    assert_eq!(run["status"], "completed");
    assert_eq!(
        run["created"].as_u64().unwrap() + run["failed"].as_u64().unwrap(),
        200,
        "{run}"
    );
    let lost = scene
        .stripe()
        .requests()
        .iter()
        .filter(|r| r.fault == Some(FaultKind::LostResponse))
        .count();
    assert!(
        lost > 5,
        "the test must really lose responses (lost {lost})"
    );
    // A second run finishes whatever failed and must still not duplicate anything.
    scene.stripe().set_faults(FaultConfig::default());
    scene.ferry(&["sync", "run", "people-to-stripe"]).await.ok();
    assert_each_person_once(&scene, 200);
    assert_snapshot_agrees_with_stripe(&scene, 200).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_run_then_rerun_loses_nothing_and_duplicates_nothing() {
    let mut config = fast_emulator_config();
    config.faults.latency = Duration::from_millis(20);
    config.faults.lose_response_rate = 0.05;
    config.fault_seed = Some(7);
    let scene = Scene::with_emulator(config).await;
    scene.warehouse_sql(&people_sql(400));
    scene.connect().await;
    scene.email_sync(&[]).await;

    for kill_after_creates in [40usize, 170] {
        let mut child = scene
            .command(&["sync", "run", "people-to-stripe"])
            .spawn()
            .unwrap();
        let started = Instant::now();
        while scene.stripe().customers().len() < kill_after_creates
            && started.elapsed() < Duration::from_secs(60)
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        child.kill().unwrap(); // SIGKILL: no chance to commit anything.
        child.wait().unwrap();
        assert!(
            scene.stripe().customers().len() < 400,
            "the kill must land mid-run"
        );
    }
    let run = scene.run_sync_json("people-to-stripe", &[]).await;
    assert_eq!(run["status"], "completed");
    assert_eq!(run["failed"], 0, "{run}");
    assert_each_person_once(&scene, 400);
    let runs = scene.ferry(&["runs", "people-to-stripe"]).await.ok();
    assert_eq!(
        runs.stdout.matches("interrupted").count(),
        2,
        "{}",
        runs.stdout
    );
    assert_snapshot_agrees_with_stripe(&scene, 400).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_of_the_same_sync_refuses_while_the_first_holds_the_lock() {
    let mut config = fast_emulator_config();
    config.faults.latency = Duration::from_millis(50);
    let scene = Scene::with_emulator(config).await;
    scene.warehouse_sql(&people_sql(100));
    scene.connect().await;
    scene.email_sync(&[]).await;
    let mut first = scene
        .command(&["sync", "run", "people-to-stripe"])
        .spawn()
        .unwrap();
    let started = Instant::now();
    while scene.stripe().customers().is_empty() && started.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let second = scene.ferry(&["sync", "run", "people-to-stripe"]).await;
    assert_ne!(second.code, 0);
    assert!(
        second.stderr.contains("already running"),
        "{}",
        second.stderr
    );
    let status = tokio::task::spawn_blocking(move || first.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success());
    assert_each_person_once(&scene, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_cleanly_and_records_the_run_as_cancelled() {
    let mut config = fast_emulator_config();
    config.faults.latency = Duration::from_millis(30);
    let scene = Scene::with_emulator(config).await;
    scene.warehouse_sql(&people_sql(300));
    scene.connect().await;
    scene.email_sync(&[]).await;
    let child = scene
        .command(&["sync", "run", "people-to-stripe", "--format", "json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while scene.stripe().customers().len() < 30 && started.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let pid = child.id().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let output = wait_within(child, CALL_LIMIT, "sync run (stopped)").await;
    assert_eq!(output.code, 1);
    let report: serde_json::Value = serde_json::from_str(&output.stdout).unwrap();
    assert_eq!(report["status"], "cancelled");
    let created_in_stripe = scene.stripe().customers().len() as u64;
    assert!(created_in_stripe < 300);
    // What the run recorded as created is exactly what Stripe holds: nothing in flight was lost.
    assert_eq!(
        report["created"].as_u64().unwrap(),
        created_in_stripe,
        "{report}"
    );
    let rerun = scene.run_sync_json("people-to-stripe", &[]).await;
    assert_eq!(rerun["created"].as_u64().unwrap() + created_in_stripe, 300);
    assert_each_person_once(&scene, 300);
}

/// Rows for the fault suite: FERRY_FAULT_ROWS overrides (a larger run for local use).
fn fault_suite_rows() -> u32 {
    std::env::var("FERRY_FAULT_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_suite_every_fault_at_once_on_a_large_sync() {
    let rows = fault_suite_rows();
    let mut config = fast_emulator_config();
    config.fault_seed = Some(2026);
    config.faults = FaultConfig {
        server_error_rate: 0.10,
        lock_timeout_rate: 0.05,
        drop_rate: 0.01,
        lose_response_rate: 0.02,
        latency: Duration::from_millis(300),
        latency_jitter: Duration::from_millis(100),
    };
    let scene = Scene::with_emulator(config).await;
    scene.warehouse_sql(&people_sql(rows));
    // ferry's own rate limiter off: the suite is about faults, and at Stripe's 25/s it would
    // take minutes. Concurrency (32 in flight against 300 ms latency) still bounds the pace.
    scene.connect_unlimited().await;
    scene.email_sync(&[]).await;
    let run = scene.run_sync_json("people-to-stripe", &[]).await;

    let requests = scene.stripe().requests();
    let count = |kind: FaultKind| requests.iter().filter(|r| r.fault == Some(kind)).count();
    let rate_limited = requests.iter().filter(|r| r.status == Some(429)).count();
    println!(
        "fault suite: {rows} rows, {} requests; injected {} server errors, {} lock timeouts/429s, {} dropped connections, {} lost responses",
        requests.len(),
        count(FaultKind::ServerError),
        rate_limited,
        count(FaultKind::DroppedConnection),
        count(FaultKind::LostResponse)
    );
    assert!(
        count(FaultKind::ServerError) > 0
            && count(FaultKind::LostResponse) > 0
            && count(FaultKind::DroppedConnection) > 0
    );

    // The run's counts add up, and what it says it created is exactly what Stripe holds.
    assert_eq!(run["status"], "completed", "{run}");
    let outcomes: u64 = [
        "created",
        "updated",
        "unchanged",
        "not_found",
        "rejected",
        "failed",
    ]
    .iter()
    .map(|k| run[k].as_u64().unwrap())
    .sum();
    assert_eq!(outcomes, rows as u64, "{run}");
    assert_eq!(
        run["created"].as_u64().unwrap() + run["failed"].as_u64().unwrap(),
        rows as u64,
        "{run}"
    );

    // Whatever failed is finished by the next run; then every row is in Stripe exactly once and
    // the workspace's snapshot agrees with Stripe (a third run finds nothing to do).
    scene.stripe().set_faults(FaultConfig::default());
    scene.ferry(&["sync", "run", "people-to-stripe"]).await.ok();
    assert_each_person_once(&scene, rows);
    assert_snapshot_agrees_with_stripe(&scene, rows).await;
    println!("fault suite: verified {rows} customers exactly once, snapshot in agreement with the emulator");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_twenty_seeded_random_moments_then_rerun_is_exact() {
    let mut config = fast_emulator_config();
    config.faults.latency = Duration::from_millis(10);
    let scene = Scene::with_emulator(config).await;
    scene.warehouse_sql(&people_sql(600));
    scene.connect().await;
    scene.email_sync(&[]).await;
    // Moments from 0 to 600 ms after start: while the model is read, while lookups and creates
    // are in flight, between Stripe's answers and the commit of their batch.
    scene
        .kill_runs_at_random_moments("people-to-stripe", 20261125, 20, 0..600, customers)
        .await;
    let run = scene.run_sync_json("people-to-stripe", &[]).await;
    assert_eq!(
        (run["status"].as_str(), run["failed"].as_u64()),
        (Some("completed"), Some(0)),
        "{run}"
    );
    assert_each_person_once(&scene, 600);
    assert_snapshot_agrees_with_stripe(&scene, 600).await;
}

/// A run killed after saving its creates but before sending some of them; then someone creates
/// one of those customers by hand; the rerun must find and update that customer, not replay the
/// saved create and make a second one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_then_someone_creates_the_customer_then_the_rerun_updates_it_not_duplicates() {
    let scene = killed_after_twenty_of_three_hundred_creates().await;
    let in_stripe = scene.stripe().customers().len();
    assert!(
        (20..300).contains(&in_stripe),
        "killed mid-run: {in_stripe}"
    );
    // The last row, surely not sent yet, is created by hand (no ferry metadata, another name).
    assert!(scene
        .customers_with_email("person300@example.com")
        .is_empty());
    let by_hand = scene.stripe().seed_customer(serde_json::json!({
        "email": "person300@example.com",
        "name": "Created by hand",
    }));
    let run = scene.run_sync_json("people-to-stripe", &[]).await;
    assert_eq!(
        (run["status"].as_str(), run["failed"].as_u64()),
        (Some("completed"), Some(0)),
        "{run}"
    );
    let found = scene.customers_with_email("person300@example.com");
    assert_eq!(found.len(), 1, "one customer for person300: {found:?}");
    assert_eq!(
        found[0]["id"],
        by_hand.as_str(),
        "the customer made by hand was kept"
    );
    assert_eq!(found[0]["name"], "Person 300", "and brought up to date");
    assert_each_person_once(&scene, 300);
    assert_snapshot_agrees_with_stripe(&scene, 300).await;
}

/// Two syncs keyed on email over the same rows, run at once by two processes: they take turns
/// creating in the account, and the second finds what the first created. Each customer exists
/// once and carries both syncs' fields.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_syncs_with_overlapping_keys_run_at_once_create_each_customer_once() {
    let mut config = fast_emulator_config();
    config.faults.latency = Duration::from_millis(10);
    let scene = Scene::with_emulator(config).await;
    scene.warehouse_sql(&people_sql(300));
    scene.connect().await;
    scene.email_sync(&[]).await; // people-to-stripe: name, phone, metadata.plan
    scene
        .ferry(&[
            "sync",
            "create",
            "people-ids",
            "--model",
            "people",
            "--destination",
            "stripe",
            "--key",
            "email=email",
            "--map",
            "id=metadata.person_id",
        ])
        .await
        .ok();
    for round in 0..2 {
        let children: Vec<_> = ["people-to-stripe", "people-ids"]
            .iter()
            .map(|sync| {
                scene
                    .command(&["sync", "run", sync, "--format", "json"])
                    .stdout(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for child in children {
            let output = wait_within(child, CALL_LIMIT, "sync run (concurrent)").await;
            assert_eq!(
                output.code, 0,
                "round {round}: {}\n{}",
                output.stdout, output.stderr
            );
        }
    }
    assert_each_person_once(&scene, 300);
    let seven = &scene.customers_with_email("person7@example.com")[0];
    assert_eq!(seven["metadata"]["person_id"], "7");
    assert_eq!(seven["metadata"]["plan"], "pro");
    for sync in ["people-to-stripe", "people-ids"] {
        let again = scene.run_sync_json(sync, &[]).await;
        assert_eq!(
            (again["unchanged"].as_u64(), again["requests"].as_u64()),
            (Some(300), Some(0)),
            "{sync}: {again}"
        );
    }
}

/// A run whose process died is recorded `interrupted` as soon as someone lists the runs, finished
/// when it was last seen alive, not left `running` until the sync's next run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_run_is_recorded_interrupted_as_soon_as_runs_are_listed() {
    let scene = killed_after_twenty_of_three_hundred_creates().await;
    let killed_at = chrono::Utc::now();
    let runs = scene.ferry(&["runs", "people-to-stripe"]).await.ok();
    assert!(runs.stdout.contains("interrupted"), "{}", runs.stdout);
    assert!(!runs.stdout.contains("running"), "{}", runs.stdout);
    let run_id = runs
        .stdout
        .split_whitespace()
        .find(|word| word.starts_with("run_"))
        .unwrap()
        .to_string();
    let shown = scene
        .ferry(&["run", "show", &run_id, "--format", "json"])
        .await
        .ok()
        .json();
    let finished: chrono::DateTime<chrono::Utc> = shown["run"]["finished_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let begun: chrono::DateTime<chrono::Utc> = shown["run"]["started_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        finished >= begun && finished <= killed_at,
        "finished when last seen alive, before the kill: {shown}"
    );
}

/// Stopping a run whose requests go to a server that never answers ends it within seconds as
/// `cancelled`, not minutes later as `failed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_ends_a_run_stuck_on_a_silent_server_within_seconds() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_url = format!("http://{}", silent.local_addr().unwrap());
    // Accepts connections and never answers.
    let held = tokio::spawn(async move {
        let mut kept = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            kept.push(socket);
        }
    });
    let scene = Scene::new().await;
    scene.warehouse_sql(&people_sql(10));
    scene.connect().await;
    scene.email_sync(&[]).await;
    // Point the destination at the silent server (no test: it would never answer either).
    scene
        .ferry(&[
            "connect",
            "stripe",
            "stripe",
            "--api-key",
            common::KEY,
            "--api-base",
            &silent_url,
            "--skip-test",
        ])
        .await
        .ok();
    let child = scene
        .command(&["sync", "run", "people-to-stripe", "--format", "json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stopped_at = Instant::now();
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let output = wait_within(child, CALL_LIMIT, "sync run (stopped)").await;
    let took = stopped_at.elapsed();
    held.abort();
    assert!(took < Duration::from_secs(15), "stopped after {took:?}");
    let report: serde_json::Value = serde_json::from_str(&output.stdout).unwrap();
    assert_eq!(report["status"], "cancelled", "{report}");
    assert_eq!(report["not_attempted"], 10, "{report}");
}

/// A run killed after it read and staged the whole model but before its first request, then a
/// run killed right after its first chunk went out (its outcomes perhaps not committed, the
/// next chunks not planned): each crash loses nothing, the rerun creates each customer once,
/// and the workspace agrees with Stripe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashed_between_staging_and_sending_then_between_two_chunks_the_rerun_is_exact() {
    let scene = Scene::with_emulator(fast_emulator_config()).await;
    // Three chunks of 2,000 records: 2,000, 2,000 and 1,000.
    scene.warehouse_sql(&people_sql(5_000));
    scene.connect_unlimited().await;
    scene.email_sync(&[]).await;
    let requests_before = scene.stripe().requests().len();

    scene.crash_run_at("people-to-stripe", "staged").await;
    let writes: Vec<_> = scene.stripe().requests()[requests_before..]
        .iter()
        .filter(|r| r.method == "POST")
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(
        writes,
        Vec::<String>::new(),
        "nothing written before the crash"
    );
    let runs = scene.ferry(&["runs", "people-to-stripe"]).await.ok();
    assert!(runs.stdout.contains("interrupted"), "{}", runs.stdout);

    scene.crash_run_at("people-to-stripe", "chunk:1").await;
    assert_eq!(
        scene.stripe().customers().len(),
        2_000,
        "the first chunk, and only it, reached Stripe"
    );

    let run = scene.run_sync_json("people-to-stripe", &[]).await;
    assert_eq!(
        (run["status"].as_str(), run["failed"].as_u64()),
        (Some("completed"), Some(0)),
        "{run}"
    );
    assert_each_person_once(&scene, 5_000);
    assert_snapshot_agrees_with_stripe(&scene, 5_000).await;
}

/// The random-moment kills again, on a model of 100,000 rows that runs in many chunks: kills
/// land while the model is staged, between chunks, and while a chunk's creates are in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_random_moments_of_a_hundred_thousand_row_run_then_rerun_is_exact() {
    const ROWS: u32 = 100_000;
    let scene = Scene::with_emulator(fast_emulator_config()).await;
    scene.warehouse_sql(&people_sql(ROWS));
    scene.connect_unlimited().await;
    scene.email_sync(&[]).await;
    let kills = scene
        .kill_runs_at_random_moments("people-to-stripe", 20261201, 6, 200..5_000, customers)
        .await;
    assert!(
        kills
            .iter()
            .any(|(_, customers)| *customers < ROWS as usize),
        "a kill came before the end: {kills:?}"
    );
    let run = scene.run_sync_json("people-to-stripe", &[]).await;
    assert_eq!(
        (run["status"].as_str(), run["failed"].as_u64()),
        (Some("completed"), Some(0)),
        "{run}"
    );
    assert_each_person_once(&scene, ROWS);
    assert_snapshot_agrees_with_stripe(&scene, ROWS).await;
}

/// How many customers Stripe holds.
fn customers(scene: &Scene) -> usize {
    scene.stripe().customers().len()
}
