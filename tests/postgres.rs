//! End-to-end on PostgreSQL: a PostgreSQL warehouse as the model's source, and the workspace
//! state kept in PostgreSQL instead of SQLite. Both servers are throwaway ones the test starts.

mod common;

use common::{fast_emulator_config, people_sql, postgres_execute, wait_within, Scene, CALL_LIMIT};
use ferry_testkit::PgServer;
use serde_json::Value as Json;
use std::collections::HashMap;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_model_syncs_with_state_in_postgres() {
    let pg = tokio::task::spawn_blocking(|| PgServer::start().expect("PostgreSQL starts"))
        .await
        .unwrap();
    let warehouse_url = pg.create_database("warehouse").unwrap();
    let state_url = pg.create_database("ferry_state").unwrap();
    postgres_execute(
        &warehouse_url,
        "create table people (id int primary key, email text, name text, ltv numeric(30, 2), tags text[], signed_up date);
         insert into people select i, 'pg' || i || '@example.com', 'PG ' || i, 123456789012345678901234567.89 + i, array['a', 'b'], date '1969-07-20' + i
         from generate_series(1, 25) i;",
    )
    .await;

    let mut scene = Scene::new().await;
    scene
        .env
        .push(("FERRY_STATE_URL".into(), state_url.clone()));
    scene.connect_stripe(&[]).await;
    scene
        .ferry(&["connect", "postgres", "warehouse", "--url", &warehouse_url])
        .await
        .ok();
    scene
        .ferry(&[
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
    scene
        .ferry(&[
            "sync",
            "create",
            "pg",
            "--model",
            "people",
            "--destination",
            "stripe",
            "--key",
            "email=email",
            "--map",
            "name=name",
            "--map",
            "ltv=metadata.ltv",
            "--map",
            "tags=metadata.tags",
            "--map",
            "signed_up=metadata.signed_up",
        ])
        .await
        .ok();
    let run = scene
        .ferry(&["sync", "run", "pg", "--format", "json"])
        .await
        .ok()
        .json();
    assert_eq!(run["created"], 25, "{run}");
    let three = &scene.customers_with_email("pg3@example.com")[0];
    assert_eq!(three["name"], "PG 3");
    assert_eq!(
        three["metadata"]["ltv"], "123456789012345678901234570.89",
        "30-digit numerics stay exact"
    );
    assert_eq!(three["metadata"]["tags"], r#"["a","b"]"#);
    assert_eq!(three["metadata"]["signed_up"], "1969-07-23");

    // The state really is in PostgreSQL: no SQLite file, and the runs table has the run.
    assert!(!scene.workspace().join("ferry.db").exists());
    let (client, connection) = tokio_postgres::connect(&state_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let snapshot_rows: i64 = client
        .query_one("select count(*) from snapshot", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(snapshot_rows, 25);

    postgres_execute(
        &warehouse_url,
        "update people set name = 'Changed' where id = 4",
    )
    .await;
    let run = scene
        .ferry(&["sync", "run", "pg", "--format", "json"])
        .await
        .ok()
        .json();
    assert_eq!(
        (run["updated"].as_u64(), run["unchanged"].as_u64()),
        (Some(1), Some(24))
    );

    // A model that tries to write is stopped by the read-only transaction.
    scene
        .ferry(&[
            "model",
            "create",
            "sneaky",
            "--connection",
            "warehouse",
            "--sql",
            "select * from people",
        ])
        .await
        .ok();
    let sneaky = scene
        .ferry(&[
            "model",
            "create",
            "sneaky",
            "--connection",
            "warehouse",
            "--sql",
            "with gone as (delete from people returning *) select * from gone",
        ])
        .await;
    assert_eq!(sneaky.code, 2, "{}", sneaky.stderr);
    assert!(sneaky.stderr.contains("read-only"), "{}", sneaky.stderr);
    assert!(!sneaky.stderr.contains(&warehouse_url));
}

/// Every `personN@example.com` for N in 1..=count is in the emulator exactly once, with the
/// fields the sync maps (name, phone, metadata.plan), and nothing else is.
fn assert_each_person_once_with_fields(scene: &Scene, count: u32) {
    let customers = scene.stripe().customers();
    let mut by_email: HashMap<String, Vec<&Json>> = HashMap::new();
    for customer in &customers {
        by_email
            .entry(customer["email"].as_str().unwrap_or_default().to_string())
            .or_default()
            .push(customer);
    }
    for i in 1..=count {
        let email = format!("person{i}@example.com");
        let found = by_email.get(&email).map(Vec::len).unwrap_or(0);
        assert_eq!(found, 1, "{email} is in Stripe {found} times");
        let customer = by_email[&email][0];
        assert_eq!(customer["name"], format!("Person {i}"), "{customer}");
        assert_eq!(customer["phone"], format!("+1 555 {i:04}"), "{customer}");
        let plan = if i % 2 == 0 { "free" } else { "pro" };
        assert_eq!(customer["metadata"]["plan"], plan, "{customer}");
    }
    assert_eq!(
        customers.len(),
        count as usize,
        "no customer beyond the model's rows"
    );
}

/// The workspace's snapshot agrees with Stripe: one more run finds every row unchanged and
/// sends no request at all.
async fn assert_snapshot_agrees_with_stripe(scene: &Scene, sync: &str, rows: u32) {
    let again = scene.run_sync_json(sync, &[]).await;
    assert_eq!(
        (again["unchanged"].as_u64(), again["requests"].as_u64()),
        (Some(rows as u64), Some(0)),
        "{again}"
    );
}

/// The sum of a run report's outcomes.
fn outcomes_in(report: &Json) -> u64 {
    [
        "created",
        "updated",
        "unchanged",
        "not_found",
        "rejected",
        "failed",
        "not_attempted",
    ]
    .iter()
    .map(|k| report[k].as_u64().unwrap_or(0))
    .sum()
}

async fn count_rows(url: &str, sql: &str) -> i64 {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connects");
    tokio::spawn(connection);
    client.query_one(sql, &[]).await.expect("SQL runs").get(0)
}

/// Waits for a child `ferry` (killed after [`CALL_LIMIT`]); its exit code, stdout and stderr.
async fn wait_for(child: std::process::Child) -> (Option<i32>, String, String) {
    let ran = wait_within(child, CALL_LIMIT, "sync run people-to-stripe").await;
    (
        Some(ran.code).filter(|code| *code >= 0),
        ran.stdout,
        ran.stderr,
    )
}

/// The workspace database (PostgreSQL) goes down in the middle of a run and comes back. The
/// run's lock was a session advisory lock, which died with the server; the run must stop
/// writing to Stripe at once (a second run could take the lock), record what Stripe
/// confirmed, and fail with a clear error. The next run finishes the job exactly once.
/// A slow sync of `rows` people with its state in a fresh PostgreSQL (20–50 ms per Stripe
/// request at Stripe's 25 writes/s: 300 creates take about 12 s), started as a child process;
/// returns once `customers` customers exist in Stripe, with the server, the state's URL, the
/// scene, the child and when it started.
async fn run_with_state_in_postgres(
    rows: u32,
    fault_seed: u64,
    customers: usize,
) -> (Arc<PgServer>, String, Scene, std::process::Child, Instant) {
    let pg = tokio::task::spawn_blocking(|| PgServer::start().expect("PostgreSQL starts"))
        .await
        .unwrap();
    let pg = Arc::new(pg);
    let state_url = pg.create_database("ferry_state").unwrap();
    let mut config = fast_emulator_config();
    config.faults.latency = Duration::from_millis(20);
    config.faults.latency_jitter = Duration::from_millis(30);
    config.fault_seed = Some(fault_seed);
    let mut scene = Scene::with_emulator(config).await;
    scene
        .env
        .push(("FERRY_STATE_URL".into(), state_url.clone()));
    scene.warehouse_sql(&people_sql(rows));
    scene.connect().await;
    scene.email_sync(&[]).await;
    let started = Instant::now();
    let child = scene
        .command(&["sync", "run", "people-to-stripe", "--format", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    while scene.stripe().customers().len() < customers
        && started.elapsed() < Duration::from_secs(60)
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    (pg, state_url, scene, child, started)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_database_restart_mid_run_stops_the_writes_and_the_rerun_is_exact() {
    const ROWS: u32 = 300;
    const DOWN_FOR: Duration = Duration::from_millis(1500);
    let (pg, state_url, scene, child, started) = run_with_state_in_postgres(ROWS, 5, 40).await;
    let customers_at_restart = scene.stripe().customers().len();
    // A restart in two steps, so the test knows when the sessions (and the lock) died: a fast
    // shutdown cuts every connection, and `pg_ctl stop` returns once the server is down.
    let server = pg.clone();
    tokio::task::spawn_blocking(move || server.stop_temporarily().expect("PostgreSQL stops"))
        .await
        .unwrap();
    let posts_at_stop = scene.posts();
    let customers_at_stop = scene.stripe().customers().len();
    let stopped_at = started.elapsed();
    tokio::time::sleep(DOWN_FOR).await;
    let posts_while_down = scene.posts() - posts_at_stop;
    let server = pg.clone();
    tokio::task::spawn_blocking(move || server.start_again().expect("PostgreSQL starts again"))
        .await
        .unwrap();
    let (code, stdout, stderr) = wait_for(child).await;
    let first_took = started.elapsed();
    let posts_after_stop = scene.posts() - posts_at_stop;
    let in_stripe = scene.stripe().customers().len() as u64;
    println!(
        "injected: PostgreSQL (the workspace database) stopped {:.1}s into the run with {customers_at_restart} of {ROWS} customers in Stripe, down for {DOWN_FOR:?}, then started again",
        stopped_at.as_secs_f64()
    );
    println!(
        "first run: exit {code:?} after {:.1}s; {posts_after_stop} writes reached Stripe after the stop ({posts_while_down} while it was down); {in_stripe} customers in Stripe",
        first_took.as_secs_f64()
    );
    let report: Json = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{stdout}\nstderr:\n{stderr}"));
    println!("first run report: {report}");
    if code == Some(0) {
        // Only acceptable if the run had sent everything before PostgreSQL went down; a run
        // that completes after writing without its lock is the bug this test is about.
        println!("the first run finished before the restart reached it");
        assert_eq!(report["status"], "completed", "{report}");
        assert_eq!(
            (customers_at_stop, posts_after_stop),
            (ROWS as usize, 0),
            "the run completed, writing to Stripe after PostgreSQL went down: {report}"
        );
    } else {
        assert_eq!(code, Some(1), "{report}\nstderr:\n{stderr}");
        assert_eq!(report["status"], "failed", "{report}");
        let error = report["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("lost the sync's lock")
                && error.contains("PostgreSQL")
                && error.contains("run the sync again"),
            "{error}"
        );
        assert!(in_stripe < ROWS as u64, "the restart must land mid-run");
        // The run stopped writing once its lock was gone: at 25 writes/s a run that kept going
        // would have sent dozens while PostgreSQL was down; a few may still have been under
        // way when the lock's session died.
        assert!(
            posts_after_stop <= 8,
            "{posts_after_stop} writes reached Stripe after PostgreSQL stopped"
        );
        // Every row of the run is accounted for, recorded in the workspace once PostgreSQL was
        // back: what Stripe confirmed as created, the requests that were out failed, and the
        // rows never sent are counted as not attempted (all retried by the next run).
        assert_eq!(outcomes_in(&report), ROWS as u64, "{report}");
        let created = report["created"].as_u64().unwrap();
        assert!(created > 0 && created <= in_stripe, "{report}");
        assert_eq!(
            created
                + report["failed"].as_u64().unwrap()
                + report["not_attempted"].as_u64().unwrap(),
            ROWS as u64,
            "{report}"
        );
        let run_id = report["run_id"].as_str().unwrap();
        let show = scene
            .ferry(&["run", "show", run_id, "--format", "json"])
            .await
            .ok()
            .json();
        assert_eq!(show["run"]["status"], "failed", "{}", show["run"]);
        // Rows not attempted have no record; every other row has one.
        let records = show["records"].as_array().unwrap();
        assert_eq!(
            records.len() as u64,
            ROWS as u64 - report["not_attempted"].as_u64().unwrap()
        );
        let recorded_created = records.iter().filter(|r| r["outcome"] == "created").count() as u64;
        assert_eq!(recorded_created, created);
        assert!(records
            .iter()
            .filter(|r| r["outcome"] == "failed")
            .all(|r| r["reason"]
                .as_str()
                .unwrap_or_default()
                .contains("lost the sync's lock")));
        let snapshot = count_rows(&state_url, "select count(*) from snapshot").await;
        assert_eq!(
            snapshot as u64, created,
            "the snapshot holds what the run created"
        );
    }

    // The rerun finishes the job: creates replayed with their saved idempotency keys get the
    // customer Stripe already made, so every person exists exactly once.
    let rerun_started = Instant::now();
    let rerun = scene
        .ferry(&["sync", "run", "people-to-stripe", "--format", "json"])
        .await;
    assert_eq!(rerun.code, 0, "{}\n{}", rerun.stdout, rerun.stderr);
    let rerun = rerun.json();
    assert_eq!(
        (rerun["status"].as_str(), rerun["failed"].as_u64()),
        (Some("completed"), Some(0)),
        "{rerun}"
    );
    assert_eq!(
        report["created"].as_u64().unwrap() + rerun["created"].as_u64().unwrap(),
        ROWS as u64,
        "the two runs together created every row once: {report} {rerun}"
    );
    assert_each_person_once_with_fields(&scene, ROWS);
    assert_snapshot_agrees_with_stripe(&scene, "people-to-stripe", ROWS).await;
    let pending = count_rows(&state_url, "select count(*) from pending_creates").await;
    assert_eq!(pending, 0, "no create is left pending");
    println!(
        "verified: rerun exit 0 in {:.1}s creating {}; {ROWS} customers exactly once with name, phone and plan; the snapshot agrees with the emulator; no pending create left",
        rerun_started.elapsed().as_secs_f64(),
        rerun["created"]
    );
}

/// The warehouse connection dies while the model streams: the run fails with a message that
/// names the model and says the connection was lost, nothing reaches Stripe (the whole model is
/// read before the first write), and the next run creates every row once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warehouse_connection_lost_mid_stream_fails_the_run_and_writes_nothing() {
    const ROWS: u32 = 3000;
    let pg = tokio::task::spawn_blocking(|| PgServer::start().expect("PostgreSQL starts"))
        .await
        .unwrap();
    let warehouse_url = pg.create_database("warehouse").unwrap();
    let state_url = pg.create_database("ferry_state").unwrap();
    postgres_execute(
        &warehouse_url,
        &format!(
            "create table people (id int primary key, email text, name text, phone text, plan text);
             insert into people select i, 'person' || i || '@example.com', 'Person ' || i,
                 '+1 555 ' || lpad(i::text, 4, '0'), (array['free', 'pro'])[1 + i % 2]
             from generate_series(1, {ROWS}) i;"
        ),
    )
    .await;

    let mut scene = Scene::new().await;
    scene
        .env
        .push(("FERRY_STATE_URL".into(), state_url.clone()));
    // ferry's own rate limit off, so the rerun's 3000 creates take seconds, not minutes.
    scene
        .connect_stripe(&["--max-rps", "0", "--max-rps-per-endpoint", "0"])
        .await;
    scene
        .ferry(&["connect", "postgres", "warehouse", "--url", &warehouse_url])
        .await
        .ok();
    // About 2 ms per row, and no sort, so rows stream as they are made: some 6 s in all, in
    // batches of 1000 (ferry's portal fetch size).
    let slow_sql = "select p.* from people p \
                    cross join lateral (select pg_sleep(0.002) where p.id > 0) s";
    scene
        .ferry(&[
            "model",
            "create",
            "slow_people",
            "--connection",
            "warehouse",
            "--sql",
            slow_sql,
        ])
        .await
        .ok();
    scene
        .ferry(&[
            "sync",
            "create",
            "slow",
            "--model",
            "slow_people",
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
        ])
        .await
        .ok();
    let posts_before = scene.posts();

    let started = Instant::now();
    let child = scene
        .command(&["sync", "run", "slow", "--format", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (monitor, connection) = tokio_postgres::connect(&warehouse_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let find_model = "select pid from pg_stat_activity where datname = 'warehouse' \
                      and pid <> pg_backend_pid() and query like '%pg_sleep(0.002)%'";
    let model_pid: i32 = loop {
        if let Some(row) = monitor.query_opt(find_model, &[]).await.unwrap() {
            break row.get(0);
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the model's query never showed up in pg_stat_activity"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let seen_after = started.elapsed();
    // Let it stream a while, then cut its connection as a DBA or a failover would.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let terminated: bool = monitor
        .query_one("select pg_terminate_backend($1)", &[&model_pid])
        .await
        .unwrap()
        .get(0);
    assert!(
        terminated,
        "the model's backend was still there to terminate"
    );
    let terminated_after = started.elapsed();
    let (code, stdout, stderr) = wait_for(child).await;
    println!(
        "injected: pg_terminate_backend({model_pid}) on the model's query {:.1}s into the run (seen running at {:.1}s)",
        terminated_after.as_secs_f64(),
        seen_after.as_secs_f64()
    );
    let report: Json = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{stdout}\nstderr:\n{stderr}"));
    println!(
        "first run: exit {code:?} after {:.1}s: {report}",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(code, Some(1), "{report}\nstderr:\n{stderr}");
    assert_eq!(report["status"], "failed", "{report}");
    let error = report["error"].as_str().unwrap_or_default().to_string();
    assert!(
        error.contains("model 'slow_people'")
            && error.contains("warehouse connection was lost")
            && error.contains("nothing was sent to Stripe"),
        "{error}"
    );
    assert!(!error.contains(&warehouse_url), "{error}");

    // Nothing reached Stripe and nothing is marked synced.
    assert_eq!(scene.posts(), posts_before, "no write reached Stripe");
    assert!(scene.stripe().customers().is_empty());
    assert_eq!(
        count_rows(&state_url, "select count(*) from snapshot").await,
        0
    );
    assert_eq!(
        count_rows(&state_url, "select count(*) from pending_creates").await,
        0
    );
    let runs = scene.ferry(&["runs", "slow"]).await.ok();
    assert!(runs.stdout.contains("failed"), "{}", runs.stdout);
    let run_id = report["run_id"].as_str().unwrap();
    let show = scene
        .ferry(&["run", "show", run_id, "--format", "json"])
        .await
        .ok()
        .json();
    assert_eq!(show["run"]["status"], "failed");
    assert_eq!(show["run"]["error"].as_str(), Some(error.as_str()));

    // Once the warehouse answers again, the rerun creates every row exactly once.
    let rerun_started = Instant::now();
    let rerun = scene.run_sync_json("slow", &[]).await;
    assert_eq!(
        (rerun["status"].as_str(), rerun["created"].as_u64()),
        (Some("completed"), Some(ROWS as u64)),
        "{rerun}"
    );
    assert_each_person_once_with_fields(&scene, ROWS);
    println!(
        "verified: the run failed with \"{error}\"; no write reached Stripe; `ferry runs` shows it failed; the rerun (exit 0, {:.1}s) created {ROWS} customers exactly once",
        rerun_started.elapsed().as_secs_f64()
    );
}

/// The workspace database goes down mid-run and stays down: the run stops writing, cannot
/// record anything, gives up after its retries and exits with an error. Nothing is lost or
/// duplicated: the next run (PostgreSQL back) marks it interrupted and replays its saved
/// creates with their idempotency keys. Takes about 40 s (ferry retries commits for 30 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_database_down_until_the_run_gives_up_loses_and_duplicates_nothing() {
    const ROWS: u32 = 300;
    let (pg, _state_url, scene, child, started) = run_with_state_in_postgres(ROWS, 6, 60).await;
    let server = pg.clone();
    tokio::task::spawn_blocking(move || server.stop_temporarily().expect("PostgreSQL stops"))
        .await
        .unwrap();
    let stopped_at = started.elapsed();
    let posts_at_stop = scene.posts();
    let customers_at_stop = scene.stripe().customers().len();
    let (code, stdout, stderr) = wait_for(child).await;
    let posts_after_stop = scene.posts() - posts_at_stop;
    println!(
        "injected: PostgreSQL (the workspace database) stopped {:.1}s into the run with {customers_at_stop} of {ROWS} customers in Stripe, and kept down until the run exited",
        stopped_at.as_secs_f64()
    );
    println!(
        "first run: exit {code:?} after {:.1}s; {posts_after_stop} writes reached Stripe after the stop; stderr: {}",
        started.elapsed().as_secs_f64(),
        stderr.trim()
    );
    assert_ne!(code, Some(0), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("PostgreSQL state store"),
        "the error says the workspace database is unreachable: {stderr}"
    );
    assert!(
        posts_after_stop <= 8,
        "{posts_after_stop} writes reached Stripe after PostgreSQL stopped"
    );
    let server = pg.clone();
    tokio::task::spawn_blocking(move || server.start_again().expect("PostgreSQL starts again"))
        .await
        .unwrap();

    let rerun = scene.run_sync_json("people-to-stripe", &[]).await;
    assert_eq!(
        (rerun["status"].as_str(), rerun["failed"].as_u64()),
        (Some("completed"), Some(0)),
        "{rerun}"
    );
    let runs = scene.ferry(&["runs", "people-to-stripe"]).await.ok();
    assert_eq!(
        runs.stdout.matches("interrupted").count(),
        1,
        "the run that could not record its end is marked interrupted:\n{}",
        runs.stdout
    );
    assert_each_person_once_with_fields(&scene, ROWS);
    assert_snapshot_agrees_with_stripe(&scene, "people-to-stripe", ROWS).await;
    println!(
        "verified: the rerun (exit 0) created {}, unchanged {}; {ROWS} customers exactly once; the first run shows as interrupted; the snapshot agrees with the emulator",
        rerun["created"], rerun["unchanged"]
    );
}
