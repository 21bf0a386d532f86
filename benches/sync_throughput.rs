//! Benchmark: the real `ferry` binary against the Stripe emulator, at scale. Prints one table:
//! wall time, ferry's peak memory (RSS) and CPU time, and the requests sent, for each scenario
//! of the engine's goals (see the README's "Benchmarks"): 1M- and 10M-row models in bounded
//! memory, a 1%-changed rerun, one new row against an account of 1M customers, a 10M-row
//! PostgreSQL model with 0.1% changed found by change detection in the warehouse, 20,000 creates
//! with limits off, a live-mode run under Stripe's limits, and the requests per changed record
//! of each object (a customer's update, a product's, a price's replacement, a subscription's
//! change of seats, an invoice's changed line).
//!
//! `cargo bench --bench sync_throughput`. `FERRY_BENCH_SCALE=0.1` runs every scenario at a tenth
//! of its size (a quick check); `FERRY_BENCH_ONLY=name,name` runs some scenarios only
//! (`duckdb`, `ten_million`, `postgres`, `warehouse_diff`, `creates`, `live`, `catalogue`,
//! `billing`, `workers`). Peak RSS and CPU come from GNU time
//! (`/usr/bin/time`, Debian package `time`) wrapped around each ferry command.

use ferry_stripe_emulator::{Emulator, EmulatorConfig, RateLimits, TEST_API_KEY};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

// A made-up live-mode key: the emulator accepts any with 16 letters or digits.
const LIVE_KEY: &str = "sk_live_ferrybench000000";

fn main() {
    assert!(
        Path::new(TIME).exists(),
        "the benchmark measures memory and CPU with GNU time: apt-get install time"
    );
    let scale: f64 = std::env::var("FERRY_BENCH_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0);
    let only: Option<Vec<String>> = std::env::var("FERRY_BENCH_ONLY")
        .ok()
        .map(|v| v.split(',').map(str::to_string).collect());
    let wanted = |name: &str| only.as_ref().is_none_or(|o| o.iter().any(|n| n == name));
    let scaled = |n: u64| ((n as f64 * scale) as u64).max(10);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let mut table = Table::default();
    // First: the emulator serves in this process, and after the million-customer scenarios it
    // answers creates at less than half its pace (at a fifth of the scale: 2,400 instead of
    // 5,600 records per second), which would be measured as ferry's.
    if wanted("creates") {
        runtime.block_on(twenty_thousand_creates(&mut table, scaled(20_000)));
    }
    if wanted("duckdb") {
        runtime.block_on(duckdb_million(&mut table, scaled(1_000_000)));
    }
    if wanted("ten_million") {
        runtime.block_on(ten_million_preview(&mut table, scaled(10_000_000)));
    }
    if wanted("postgres") {
        runtime.block_on(postgres_million(&mut table, scaled(1_000_000)));
    }
    if wanted("warehouse_diff") {
        runtime.block_on(warehouse_diff(&mut table, scaled(10_000_000)));
    }
    if wanted("live") {
        runtime.block_on(live_mode(&mut table, scaled(1_000)));
    }
    if wanted("catalogue") {
        runtime.block_on(catalogue(&mut table, scaled(5_000)));
    }
    if wanted("billing") {
        runtime.block_on(billing(&mut table, scaled(2_000)));
    }
    if wanted("workers") {
        runtime.block_on(three_workers(&mut table, scaled(250)));
    }
    table.print();
}

const TIME: &str = "/usr/bin/time";

/// One measured ferry command.
#[derive(Debug, Clone, Default)]
struct Measured {
    wall: Duration,
    /// Peak resident memory of the ferry process.
    rss_mb: f64,
    /// User + system CPU time of the ferry process.
    cpu: Duration,
    /// Requests the emulator received during the command.
    requests: usize,
    report: serde_json::Value,
}

#[derive(Default)]
struct Table {
    rows: Vec<(String, u64, Measured, String)>,
}

impl Table {
    fn add(&mut self, scenario: &str, rows: u64, measured: &Measured, goal: String) {
        println!(
            "measured: {scenario}: {:.2}s, {:.0} MB, {} requests; {goal}",
            measured.wall.as_secs_f64(),
            measured.rss_mb,
            measured.requests
        );
        self.rows
            .push((scenario.to_string(), rows, measured.clone(), goal));
    }

    fn print(&self) {
        println!();
        println!(
            "{:<58} {:>9} {:>8} {:>9} {:>9} {:>9}  goal",
            "scenario", "rows", "seconds", "peak MB", "cpu µs/r", "requests"
        );
        for (scenario, rows, m, goal) in &self.rows {
            println!(
                "{:<58} {:>9} {:>8.2} {:>9.0} {:>9.1} {:>9}  {goal}",
                scenario,
                rows,
                m.wall.as_secs_f64(),
                m.rss_mb,
                m.cpu.as_secs_f64() * 1e6 / (*rows).max(1) as f64,
                m.requests,
            );
        }
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT MET"
    }
}

/// A workspace, a warehouse and an emulator for one scenario set.
struct Bench {
    emulator: Emulator,
    dir: tempfile::TempDir,
}

impl Bench {
    async fn start(config: EmulatorConfig) -> Bench {
        Bench {
            emulator: Emulator::start(config).await.expect("the emulator starts"),
            dir: tempfile::tempdir().expect("a temp dir"),
        }
    }

    fn workspace(&self) -> PathBuf {
        self.dir.path().join("ws")
    }

    fn warehouse(&self) -> PathBuf {
        self.dir.path().join("bench.duckdb")
    }

    /// Runs `ferry ARGS` under GNU time; it must succeed.
    fn measure(&self, args: &[&str]) -> Measured {
        let stats = self.dir.path().join("time.txt");
        let before = self.emulator.handle().counters().total as usize;
        let started = Instant::now();
        // FERRY_BENCH_PERF=DIR records a CPU profile of each command there (perf record).
        let mut command = Command::new(TIME);
        command.args(["-f", "%M %U %S", "-o"]).arg(&stats);
        if let Ok(dir) = std::env::var("FERRY_BENCH_PERF") {
            let name = format!("{dir}/{}.data", args.join("-").replace('/', "_"));
            command.args([
                "perf",
                "record",
                "-F",
                "299",
                "--call-graph",
                "dwarf,16384",
                "-o",
                &name,
            ]);
        }
        let output = command
            .arg(env!("CARGO_BIN_EXE_ferry"))
            .args(args)
            .env("FERRY_HOME", self.workspace())
            .output()
            .expect("ferry runs");
        let wall = started.elapsed();
        assert!(
            output.status.success(),
            "ferry {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let text = std::fs::read_to_string(&stats).unwrap_or_default();
        let numbers: Vec<f64> = text
            .lines()
            .last()
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|n| n.parse().ok())
            .collect();
        let [rss_kb, user, system] = numbers[..] else {
            panic!("cannot read GNU time's output: {text}");
        };
        Measured {
            wall,
            rss_mb: rss_kb / 1024.0,
            cpu: Duration::from_secs_f64(user + system),
            requests: self.emulator.handle().counters().total as usize - before,
            report: serde_json::from_slice(&output.stdout).unwrap_or_default(),
        }
    }

    fn ferry(&self, args: &[&str]) {
        self.measure(args);
    }

    fn connect(&self, key: &str, limits_off: bool, warehouse: &[&str]) {
        let url = self.emulator.url();
        let mut stripe = vec![
            "connect",
            "stripe",
            "stripe",
            "--api-key",
            key,
            "--api-base",
            &url,
        ];
        if limits_off {
            stripe.extend(["--max-rps", "0", "--max-rps-per-endpoint", "0"]);
        }
        self.ferry(&stripe);
        self.ferry(warehouse);
    }

    fn sync(&self, name: &str, model: &str, sql: &str) {
        self.ferry(&[
            "model",
            "create",
            model,
            "--connection",
            "warehouse",
            "--sql",
            sql,
        ]);
        self.ferry(&[
            "sync",
            "create",
            name,
            "--model",
            model,
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
            "--map",
            "city=address.city",
            "--map",
            "country=address.country",
        ]);
    }

    /// The workspace directory's size on disk, after SQLite's WAL is folded back.
    fn workspace_bytes(&self) -> u64 {
        let db = rusqlite::Connection::open(self.workspace().join("ferry.db")).unwrap();
        db.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
        drop(db);
        std::fs::read_dir(self.workspace())
            .unwrap()
            .flatten()
            .filter_map(|e| e.metadata().ok())
            .filter(|m| m.is_file())
            .map(|m| m.len())
            .sum()
    }
}

fn people_sql(rows: u64) -> String {
    format!(
        "create or replace table people as select i as id, 'bench' || i || '@example.com' as email, 'Bench ' || i as name,
                '+1 555 ' || lpad(cast(i % 10000 as varchar), 4, '0') as phone, ['free', 'pro'][1 + i % 2] as plan,
                'Paris' as city, 'FR' as country
         from range(1, {rows} + 1) t(i)"
    )
}

fn unlimited() -> EmulatorConfig {
    EmulatorConfig {
        rate_limits: RateLimits::disabled(),
        ..EmulatorConfig::default()
    }
}

const PEOPLE: &str = "select * from people";

/// An emulator with its limits off and a workspace with sync `bench` over a DuckDB table of
/// `rows` people.
async fn duckdb_people_bench(rows: u64) -> Bench {
    let bench = Bench::start(unlimited()).await;
    ferry_source::duckdb_execute(&bench.warehouse(), &people_sql(rows)).unwrap();
    let warehouse = bench.warehouse().display().to_string();
    tokio::task::block_in_place(|| {
        bench.connect(
            TEST_API_KEY,
            true,
            &["connect", "duckdb", "warehouse", "--path", &warehouse],
        );
        bench.sync("bench", "people", PEOPLE);
    });
    bench
}

/// The first preview and the first run (all creates, limits off) of sync `bench`: peak memory.
fn first_preview_and_run(bench: &Bench, table: &mut Table, model: &str, rows: u64) {
    let preview = bench.measure(&["sync", "preview", "bench", "--format", "json"]);
    table.add(
        &format!("{model}, first preview"),
        rows,
        &preview,
        format!("peak ≤ 250 MB: {}", verdict(preview.rss_mb <= 250.0)),
    );
    let run = bench.measure(&["sync", "run", "bench", "--format", "json"]);
    assert_eq!(run.report["created"], rows, "{}", run.report);
    table.add(
        &format!("{model}, first run (all creates), limits off"),
        rows,
        &run,
        format!(
            "peak ≤ 250 MB: {}; {:.0} records/s",
            verdict(run.rss_mb <= 250.0),
            rows as f64 / run.wall.as_secs_f64()
        ),
    );
}

/// 1M rows from DuckDB: first preview and run, a 1%-changed preview and run (plan time and
/// workspace growth), then one new row synced into the account of 1M customers.
async fn duckdb_million(table: &mut Table, rows: u64) {
    let bench = duckdb_people_bench(rows).await;
    tokio::task::block_in_place(|| {
        first_preview_and_run(&bench, table, "DuckDB model", rows);
        let changed = rows / 100;
        ferry_source::duckdb_execute(
            &bench.warehouse(),
            &format!("update people set plan = 'enterprise' where id % 100 = 0 and id <= {rows}"),
        )
        .unwrap();
        let preview = bench.measure(&["sync", "preview", "bench", "--format", "json"]);
        assert_eq!(preview.report["update"], changed, "{}", preview.report);
        table.add(
            "DuckDB model, 1% changed: preview (the plan)",
            rows,
            &preview,
            format!(
                "plan ≤ 5 s: {}; peak ≤ 250 MB: {}",
                verdict(preview.wall.as_secs_f64() <= 5.0),
                verdict(preview.rss_mb <= 250.0)
            ),
        );
        let before = bench.workspace_bytes();
        let run = bench.measure(&["sync", "run", "bench", "--format", "json"]);
        assert_eq!(run.report["updated"], changed, "{}", run.report);
        let growth = bench.workspace_bytes().saturating_sub(before) as f64 / 1e6;
        let per_million = growth * 1_000_000.0 / rows as f64;
        table.add(
            "DuckDB model, 1% changed: run",
            rows,
            &run,
            format!(
                "workspace grew {growth:.1} MB ({per_million:.1} MB per 1M rows; goal ≤ 50): {}",
                verdict(per_million <= 50.0)
            ),
        );
        // One new row against the account of 1M customers. The index first catches up on the
        // 1% run: it reads the events of those updates (100 per page). Each refresh reads again
        // the last seconds before the previous one (`OVERLAP_SECONDS`, against writes still
        // committing), so the catch-up waits until the 1% run's writes are that old; then the
        // same preview again finds the index fresh.
        std::thread::sleep(Duration::from_secs(6));
        ferry_source::duckdb_execute(
            &bench.warehouse(),
            "create or replace table newcomer as select 0 as id, 'newcomer@example.com' as email, 'New' as name, '+1 555 0000' as phone, 'pro' as plan, 'Paris' as city, 'FR' as country",
        )
        .unwrap();
        bench.sync("newcomer", "newcomer", "select * from newcomer");
        let catching_up = bench.measure(&["sync", "preview", "newcomer", "--format", "json"]);
        assert_eq!(catching_up.report["create"], 1, "{}", catching_up.report);
        table.add(
            &format!(
                "1 new row, account of {rows} customers, index catching up on the 1% run: preview"
            ),
            1,
            &catching_up,
            format!("({changed} update events to read, 100 per page)"),
        );
        let preview = bench.measure(&["sync", "preview", "newcomer", "--format", "json"]);
        assert_eq!(preview.report["create"], 1, "{}", preview.report);
        table.add(
            &format!("1 new row, account of {rows} customers, index fresh: preview"),
            1,
            &preview,
            format!(
                "≤ 3 lookup requests: {}; ≤ 3 s: {}",
                verdict(preview.requests <= 3),
                verdict(preview.wall.as_secs_f64() <= 3.0)
            ),
        );
    });
}

/// 10M rows from DuckDB: the first preview stays in bounded memory.
async fn ten_million_preview(table: &mut Table, rows: u64) {
    let bench = duckdb_people_bench(rows).await;
    tokio::task::block_in_place(|| {
        let preview = bench.measure(&["sync", "preview", "bench", "--format", "json"]);
        assert_eq!(preview.report["create"], rows, "{}", preview.report);
        table.add(
            "DuckDB model, first preview",
            rows,
            &preview,
            format!("peak ≤ 250 MB: {}", verdict(preview.rss_mb <= 250.0)),
        );
    });
}

/// A throwaway PostgreSQL server with a `people` table of `rows` rows; its URL and a client.
async fn postgres_people(rows: u64) -> (ferry_testkit::PgServer, String, tokio_postgres::Client) {
    let server = ferry_testkit::PgServer::start().expect("PostgreSQL starts");
    let url = server.create_database("bench").expect("a database");
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connects");
    tokio::spawn(connection);
    client
        .batch_execute(&format!(
            "create table people as select i as id, 'bench' || i || '@example.com' as email, 'Bench ' || i as name,
                    '+1 555 ' || lpad((i % 10000)::text, 4, '0') as phone, (array['free', 'pro'])[1 + i % 2] as plan,
                    'Paris' as city, 'FR' as country
             from generate_series(1, {rows}) i"
        ))
        .await
        .expect("the table is made");
    (server, url, client)
}

/// 1M rows from PostgreSQL: first preview and first run.
async fn postgres_million(table: &mut Table, rows: u64) {
    let (server, url, client) = postgres_people(rows).await;
    let bench = Bench::start(unlimited()).await;
    tokio::task::block_in_place(|| {
        bench.connect(
            TEST_API_KEY,
            true,
            &["connect", "postgres", "warehouse", "--url", &url],
        );
        bench.sync("bench", "people", PEOPLE);
        first_preview_and_run(&bench, table, "PostgreSQL model", rows);
    });
    drop(client);
    server.stop().ok();
}

/// A PostgreSQL model of `rows` rows whose every row Stripe acknowledged (seeded in the
/// warehouse as a run would have left it), then 0.1% changed: the preview (the plan) with change
/// detection in the warehouse, ferry's memory and time.
async fn warehouse_diff(table: &mut Table, rows: u64) {
    let (server, url, client) = postgres_people(rows).await;
    let bench = Bench::start(unlimited()).await;
    tokio::task::block_in_place(|| {
        bench.connect(
            TEST_API_KEY,
            true,
            &[
                "connect",
                "postgres",
                "warehouse",
                "--url",
                &url,
                "--change-detection-schema",
                "ferry",
            ],
        );
        bench.sync("bench", "people", PEOPLE);
    });
    // Every row acknowledged, as after a run that synced them all.
    let store = ferry_state::StateStore::open_existing(&ferry_state::WorkspaceOptions {
        dir: bench.workspace(),
        state_url: None,
        master_key: None,
    })
    .await
    .expect("the workspace opens");
    let spec = ferry_engine::change_detection_spec(&store, "bench")
        .await
        .expect("the sync loads")
        .expect("change detection is on");
    drop(store);
    let source = ferry_source::SourceConfig::Postgres {
        url: ferry_core::Secret::new(url.clone()),
    };
    let every_row = ferry_source::warehouse_diff::change_query(&source, PEOPLE, &spec, true);
    let seeded = Instant::now();
    client
        .batch_execute(&format!(
            "create table ferry.sync_{uid} (key varchar primary key, row_hash varchar not null);
             insert into ferry.ferry_syncs (sync_uid, sync_name) values ('{uid}', 'bench');
             insert into ferry.sync_{uid} select __ferry_key, __ferry_hash from ({every_row}) z
               where __ferry_hash is not null;
             update people set plan = 'enterprise' where id % 1000 = 0;
             analyze people; analyze ferry.sync_{uid};",
            uid = spec.sync_uid
        ))
        .await
        .expect("the acknowledgements are seeded");
    println!(
        "seeded {rows} acknowledgements in {:.1}s",
        seeded.elapsed().as_secs_f64()
    );
    let changed = rows / 1000;
    tokio::task::block_in_place(|| {
        let preview = bench.measure(&["sync", "preview", "bench", "--format", "json"]);
        assert_eq!(
            (
                preview.report["rows"].as_u64(),
                preview.report["create"].as_u64(),
                preview.report["unchanged"].as_u64()
            ),
            (Some(rows), Some(changed), Some(rows - changed)),
            "{}",
            preview.report
        );
        table.add(
            "PostgreSQL 0.1% changed, in-warehouse diff: plan",
            rows,
            &preview,
            format!(
                "plan ≤ 20 s: {}, peak ≤ 250 MB: {}",
                verdict(preview.wall.as_secs_f64() <= 20.0),
                verdict(preview.rss_mb <= 250.0)
            ),
        );
    });
    drop(client);
    server.stop().ok();
}

/// 20,000 creates with every limit off: ferry's CPU per record, and records per second with the
/// emulator on the same two cores.
async fn twenty_thousand_creates(table: &mut Table, rows: u64) {
    let bench = duckdb_people_bench(rows).await;
    tokio::task::block_in_place(|| {
        let run = bench.measure(&["sync", "run", "bench", "--format", "json"]);
        assert_eq!(run.report["created"], rows, "{}", run.report);
        let per_record = run.cpu.as_secs_f64() * 1e6 / rows as f64;
        let rate = rows as f64 / run.wall.as_secs_f64();
        table.add(
            "creates, limits off",
            rows,
            &run,
            format!(
                "cpu ≤ 60 µs/record: {} ({per_record:.0}); ≥ 10,000 records/s: {} ({rate:.0}); {:.3} requests/record",
                verdict(per_record <= 60.0),
                verdict(rate >= 10_000.0),
                run.requests as f64 / rows as f64
            ),
        );
        let again = bench.measure(&["sync", "run", "bench", "--format", "json"]);
        table.add(
            "unchanged rerun",
            rows,
            &again,
            format!("0 requests: {}", verdict(again.requests == 0)),
        );
    });
}

/// Products and prices, `n` of each (limits off): created, then a tenth of the products renamed
/// (an update each) and a tenth of the prices given a new amount (a replacement each: the new
/// price, a read of its product, the product's default repointed, the old price archived).
async fn catalogue(table: &mut Table, n: u64) {
    let bench = Bench::start(unlimited()).await;
    ferry_source::duckdb_execute(
        &bench.warehouse(),
        &format!(
            "create table plans as select 'plan-' || i as sku, 'Plan ' || i as name from range(1, {n} + 1) t(i);
             create table price_list as select 'plan-' || i || '-monthly' as lookup, 'plan-' || i as sku,
                    'usd' as currency, 1000 + i as amount from range(1, {n} + 1) t(i)"
        ),
    )
    .unwrap();
    let warehouse = bench.warehouse().display().to_string();
    tokio::task::block_in_place(|| {
        bench.connect(
            TEST_API_KEY,
            true,
            &["connect", "duckdb", "warehouse", "--path", &warehouse],
        );
        for (model, sql) in [
            ("plans", "select * from plans"),
            ("price-list", "select * from price_list"),
        ] {
            bench.ferry(&[
                "model",
                "create",
                model,
                "--connection",
                "warehouse",
                "--sql",
                sql,
            ]);
        }
        bench.ferry(&[
            "sync",
            "create",
            "products",
            "--model",
            "plans",
            "--destination",
            "stripe",
            "--object",
            "product",
            "--key",
            "sku=id",
            "--map",
            "name=name",
        ]);
        bench.ferry(&[
            "sync",
            "create",
            "prices",
            "--model",
            "price-list",
            "--destination",
            "stripe",
            "--object",
            "price",
            "--key",
            "lookup=lookup_key",
            "--map",
            "sku=product",
            "--map",
            "currency=currency",
            "--map",
            "amount=unit_amount",
        ]);
        let products = bench.measure(&["sync", "run", "products", "--format", "json"]);
        table.add(
            "products: creates",
            n,
            &products,
            format!("{:.3} requests/record", products.requests as f64 / n as f64),
        );
        let prices = bench.measure(&["sync", "run", "prices", "--format", "json"]);
        table.add(
            "prices: creates",
            n,
            &prices,
            format!("{:.3} requests/record", prices.requests as f64 / n as f64),
        );
        ferry_source::duckdb_execute(
            &bench.warehouse(),
            "update plans set name = name || ' (new)' where cast(substr(sku, 6) as integer) % 10 = 0;
             update price_list set amount = amount + 100 where cast(substr(sku, 6) as integer) % 10 = 0",
        )
        .unwrap();
        let changed = n / 10;
        let renamed = bench.measure(&["sync", "run", "products", "--format", "json"]);
        assert_eq!(renamed.report["updated"], changed, "{}", renamed.report);
        let per_update = renamed.requests as f64 / changed as f64;
        table.add(
            "products: a tenth renamed",
            n,
            &renamed,
            format!(
                "1.0 request per update: {} ({per_update:.2})",
                verdict(per_update <= 1.0)
            ),
        );
        // Half the replaced prices are their product's default (set in the Dashboard, say):
        // those cost the repoint too.
        let stripe = bench.emulator.handle();
        for price in stripe.prices() {
            let product = price["product"].as_str().unwrap_or_default();
            if product[5..].parse::<u64>().is_ok_and(|i| i % 20 == 0) {
                stripe
                    .update_product(product, serde_json::json!({"default_price": price["id"]}))
                    .unwrap();
            }
        }
        let replaced = bench.measure(&["sync", "run", "prices", "--format", "json"]);
        assert_eq!(replaced.report["updated"], changed, "{}", replaced.report);
        table.add(
            "prices: a tenth with a new amount (replaced)",
            n,
            &replaced,
            format!(
                "{:.2} requests per replacement (3, 4 when it is the product's default; half are)",
                replaced.requests as f64 / changed as f64
            ),
        );
    });
}

/// Subscriptions and invoices for `n` customers (limits off): a subscription each (its customer
/// found by email, its price by lookup key), then a tenth change their seats (a read of the
/// subscription for its item ids, and the update); an invoice of three lines each, then a
/// tenth change one line's amount (a read of the invoice, one of its lines, the line's update).
async fn billing(table: &mut Table, n: u64) {
    let bench = Bench::start(unlimited()).await;
    let stripe = bench.emulator.handle();
    for i in 1..=n {
        stripe.seed_customer(serde_json::json!({"email": format!("c{i}@example.com")}));
    }
    stripe.seed_product(serde_json::json!({"id": "pro", "name": "Pro"}));
    stripe.seed_price(serde_json::json!({
        "product": "pro", "currency": "usd", "unit_amount": 2000,
        "recurring": {"interval": "month"}, "lookup_key": "pro_monthly"
    }));
    ferry_source::duckdb_execute(
        &bench.warehouse(),
        &format!(
            "create table contracts as select 'k' || i as contract, 'c' || i || '@example.com' as email, 1 + i % 5 as seats from range(1, {n} + 1) t(i);
             create table order_lines as select 'o' || i as order_id, 'l' || j as line_id, 'c' || i || '@example.com' as email,
                    100 * j + i as amount from range(1, {n} + 1) t(i), range(1, 4) u(j)"
        ),
    )
    .unwrap();
    let warehouse = bench.warehouse().display().to_string();
    tokio::task::block_in_place(|| {
        bench.connect(
            TEST_API_KEY,
            true,
            &["connect", "duckdb", "warehouse", "--path", &warehouse],
        );
        for (model, sql) in [
            (
                "contracts",
                r#"select contract, email, '[{"price": "pro_monthly", "quantity": ' || seats || '}]' as items from contracts"#,
            ),
            ("order-lines", "select * from order_lines"),
        ] {
            bench.ferry(&[
                "model",
                "create",
                model,
                "--connection",
                "warehouse",
                "--sql",
                sql,
            ]);
        }
        bench.ferry(&[
            "sync",
            "create",
            "subscriptions",
            "--model",
            "contracts",
            "--destination",
            "stripe",
            "--object",
            "subscription",
            "--key",
            "contract=metadata.contract",
            "--map",
            "email=customer(email)",
            "--map",
            "items=items(lookup_key)",
            "--map",
            "'send_invoice'=collection_method",
            "--map",
            "'30'=days_until_due",
        ]);
        bench.ferry(&[
            "sync",
            "create",
            "invoices",
            "--model",
            "order-lines",
            "--destination",
            "stripe",
            "--object",
            "invoice",
            "--key",
            "order_id=metadata.order_id",
            "--line-key",
            "line_id",
            "--map",
            "email=customer(email)",
            "--map",
            "'send_invoice'=collection_method",
            "--map",
            "'30'=days_until_due",
            "--map",
            "'usd'=currency",
            "--map",
            "amount=lines.amount",
        ]);
        let created = bench.measure(&["sync", "run", "subscriptions", "--format", "json"]);
        table.add(
            "subscriptions: creates",
            n,
            &created,
            format!("{:.3} requests/record", created.requests as f64 / n as f64),
        );
        let invoiced = bench.measure(&["sync", "run", "invoices", "--format", "json"]);
        assert_eq!(invoiced.report["created"], n, "{}", invoiced.report);
        table.add(
            "invoices: creates, 3 lines each",
            n,
            &invoiced,
            format!(
                "{:.3} requests/invoice (1 + 3 lines)",
                invoiced.requests as f64 / n as f64
            ),
        );
        ferry_source::duckdb_execute(
            &bench.warehouse(),
            "update contracts set seats = seats + 10 where cast(substr(contract, 2) as integer) % 10 = 0;
             update order_lines set amount = amount + 1 where line_id = 'l2' and cast(substr(order_id, 2) as integer) % 10 = 0",
        )
        .unwrap();
        let changed = n / 10;
        let reseated = bench.measure(&["sync", "run", "subscriptions", "--format", "json"]);
        assert_eq!(reseated.report["updated"], changed, "{}", reseated.report);
        table.add(
            "subscriptions: a tenth change seats",
            n,
            &reseated,
            format!(
                "{:.2} requests per update (2: the read for item ids, the update)",
                reseated.requests as f64 / changed as f64
            ),
        );
        let relined = bench.measure(&["sync", "run", "invoices", "--format", "json"]);
        assert_eq!(relined.report["updated"], changed, "{}", relined.report);
        table.add(
            "invoices: a tenth change one line",
            n,
            &relined,
            format!(
                "{:.2} requests per changed invoice (3: the invoice, its lines, the line)",
                relined.requests as f64 / changed as f64
            ),
        );
    });
}

/// A live-mode key under Stripe's limits (100/s overall, 25/s per endpoint): one run of `n`
/// creates and `n` updates, which Stripe's endpoint limits bound at 2n/50 seconds.
async fn live_mode(table: &mut Table, n: u64) {
    let bench = Bench::start(EmulatorConfig::default()).await;
    ferry_source::duckdb_execute(&bench.warehouse(), &people_sql(n)).unwrap();
    let warehouse = bench.warehouse().display().to_string();
    tokio::task::block_in_place(|| {
        bench.connect(
            LIVE_KEY,
            false,
            &["connect", "duckdb", "warehouse", "--path", &warehouse],
        );
        bench.sync("bench", "people", PEOPLE);
        bench.ferry(&["sync", "run", "bench"]);
        ferry_source::duckdb_execute(
            &bench.warehouse(),
            &format!(
                "update people set plan = 'enterprise';
                 insert into people select i, 'bench' || i || '@example.com', 'Bench ' || i, '+1 555 0000', 'pro', 'Paris', 'FR'
                 from range({n} + 1, 2 * {n} + 1) t(i)"
            ),
        )
        .unwrap();
        let run = bench.measure(&["sync", "run", "bench", "--format", "json"]);
        assert_eq!(
            (
                run.report["created"].as_u64(),
                run.report["updated"].as_u64()
            ),
            (Some(n), Some(n)),
            "{}",
            run.report
        );
        let floor = 2.0 * n as f64 / 50.0;
        table.add(
            "live-mode key, limits on: creates + updates in one run",
            2 * n,
            &run,
            format!(
                "≤ {:.0} s (floor {floor:.0} s): {}",
                floor * 1.1,
                verdict(run.wall.as_secs_f64() <= floor * 1.1)
            ),
        );
    });
}

/// Three `ferry serve` processes on one PostgreSQL workspace, nine syncs of `n` rows into three
/// Stripe accounts limited as Stripe limits a test-mode account (25 requests/s): each account's
/// throughput over the time it was busy, against its limit, and its 429s. Nine runs at once
/// (three per account, spread over the servers) each paced at the account's full limit would
/// triple it; the shared budget keeps them together under it.
async fn three_workers(table: &mut Table, n: u64) {
    const ACCOUNTS: usize = 3;
    const SYNCS: usize = 9;
    let pg = tokio::task::spawn_blocking(|| {
        ferry_testkit::PgServer::start().expect("PostgreSQL starts")
    })
    .await
    .unwrap();
    let state_url = pg.create_database("ferry_bench_state").unwrap();
    let mut accounts = Vec::new();
    for _ in 0..ACCOUNTS {
        accounts.push(
            Emulator::start(EmulatorConfig {
                rate_limits: RateLimits::default(),
                ..EmulatorConfig::default()
            })
            .await
            .unwrap(),
        );
    }
    let bench = Bench {
        emulator: Emulator::start(EmulatorConfig::default()).await.unwrap(),
        dir: tempfile::tempdir().unwrap(),
    };
    let ferry = |args: &[&str]| -> String {
        let output = Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(args)
            .env("FERRY_HOME", bench.workspace())
            .env("FERRY_STATE_URL", &state_url)
            .output()
            .expect("ferry runs");
        assert!(
            output.status.success(),
            "ferry {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    ferry_source::duckdb_execute(
        &bench.warehouse(),
        &format!(
            "create table people as select i as id, 's' || (i % {SYNCS}) || '-' || i || '@example.com' as email, \
             'Person ' || i as name from range({}) t(i)",
            SYNCS as u64 * n
        ),
    )
    .unwrap();
    let warehouse = bench.warehouse().display().to_string();
    let mut servers = Vec::new();
    let token = tokio::task::block_in_place(|| {
        for (index, account) in accounts.iter().enumerate() {
            let url = account.url();
            ferry(&[
                "connect",
                "stripe",
                &format!("account{index}"),
                "--api-key",
                TEST_API_KEY,
                "--api-base",
                &url,
            ]);
        }
        ferry(&["connect", "duckdb", "warehouse", "--path", &warehouse]);
        for sync in 0..SYNCS {
            let name = format!("people{sync}");
            let sql =
                format!("select email, name from people where id % {SYNCS} = {sync} order by id");
            ferry(&[
                "model",
                "create",
                &name,
                "--connection",
                "warehouse",
                "--sql",
                &sql,
            ]);
            let account = format!("account{}", sync % ACCOUNTS);
            ferry(&[
                "sync",
                "create",
                &name,
                "--model",
                &name,
                "--destination",
                &account,
                "--key",
                "email=email",
                "--map",
                "name=name",
            ]);
        }
        let token = ferry(&["token", "create", "bench"]);
        for index in 0..3 {
            let out = bench.dir.path().join(format!("serve{index}.out"));
            let child = Command::new(env!("CARGO_BIN_EXE_ferry"))
                .args(["serve", "--bind", "127.0.0.1:0", "--max-runs", "3"])
                .env("FERRY_HOME", bench.workspace())
                .env("FERRY_STATE_URL", &state_url)
                .stdout(std::fs::File::create(&out).unwrap())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("ferry serve starts");
            let deadline = Instant::now() + Duration::from_secs(30);
            let base = loop {
                let text = std::fs::read_to_string(&out).unwrap_or_default();
                if let Some(base) = text
                    .lines()
                    .find_map(|l| l.strip_prefix("ferry is serving the workspace at "))
                {
                    break base.trim_end_matches('/').to_string();
                }
                assert!(
                    Instant::now() < deadline,
                    "ferry serve did not start: {text}"
                );
                std::thread::sleep(Duration::from_millis(50));
            };
            servers.push((ServerProcess(child), base));
        }
        token
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with("ferry_"))
            .expect("a token")
            .to_string()
    });
    let client = reqwest::Client::new();
    let started = Instant::now();
    for sync in 0..SYNCS {
        let base = &servers[sync % servers.len()].1;
        let response = client
            .post(format!("{base}/api/v1/syncs/people{sync}/runs"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202, "{}", response.text().await.unwrap());
    }
    // Each account's request count, sampled every 50 ms: busy from its first request to its
    // last.
    let mut first: Vec<Option<(Instant, u64)>> = vec![None; ACCOUNTS];
    let mut last: Vec<(Instant, u64)> = vec![(started, 0); ACCOUNTS];
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        for (index, account) in accounts.iter().enumerate() {
            let total = account.handle().counters().total;
            if total > 0 && first[index].is_none() {
                first[index] = Some((Instant::now(), total));
            }
            if total != last[index].1 {
                last[index] = (Instant::now(), total);
            }
        }
        let queue: serde_json::Value = client
            .get(format!("{}/api/v1/queue", servers[0].1))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if queue.as_array().is_some_and(|q| q.is_empty()) {
            break;
        }
        assert!(Instant::now() < deadline, "the runs did not end: {queue}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let wall = started.elapsed();
    let mut rates = Vec::new();
    let mut throttled = 0;
    for (index, account) in accounts.iter().enumerate() {
        let counters = account.handle().counters();
        throttled += counters
            .by_endpoint
            .values()
            .map(|o| o.get("429").copied().unwrap_or(0))
            .sum::<u64>();
        let (from, at_first) = first[index].expect("the account was written to");
        let (to, at_last) = last[index];
        // Requests after the first sample, over the time between the two samples.
        let rate = (at_last - at_first) as f64 / (to - from).as_secs_f64().max(0.001);
        rates.push(rate / 25.0 * 100.0);
        let created = account.handle().customers().len() as u64;
        assert_eq!(created, n * (SYNCS / ACCOUNTS) as u64, "account {index}");
    }
    let lowest = rates.iter().copied().fold(f64::MAX, f64::min);
    let highest = rates.iter().copied().fold(0.0, f64::max);
    // The largest peak RSS of the three servers (VmHWM), read while they still run.
    let rss_mb = servers
        .iter()
        .filter_map(|(server, _)| {
            let status = std::fs::read_to_string(format!("/proc/{}/status", server.0.id())).ok()?;
            let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
            line.split_whitespace().nth(1)?.parse::<f64>().ok()
        })
        .fold(0.0, f64::max)
        / 1024.0;
    let measured = Measured {
        wall,
        rss_mb,
        requests: accounts
            .iter()
            .map(|a| a.handle().counters().total as usize)
            .sum(),
        ..Measured::default()
    };
    table.add(
        "3 servers, 9 syncs into 3 accounts at 25/s: throughput/limit",
        SYNCS as u64 * n,
        &measured,
        format!(
            "per account {lowest:.1}%–{highest:.1}% of the limit, {throttled} 429s \
             (97–100%, 0): {}",
            verdict(lowest >= 97.0 && highest <= 100.5 && throttled == 0)
        ),
    );
    drop(servers);
}

/// A `ferry serve` the benchmark started; killed when dropped.
struct ServerProcess(std::process::Child);

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
