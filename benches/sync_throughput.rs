//! Benchmark: how fast the real `ferry` binary syncs into the Stripe emulator.
//!
//! Prints a table: a 20,000-row first sync with rate limits off (records/s, requests per record),
//! the unchanged re-run, and a sync under Stripe's test-mode limits with the fraction of the
//! limit it achieved. Run with `cargo bench --bench sync_throughput` (FERRY_BENCH_ROWS and
//! FERRY_BENCH_LIMITED_ROWS change the sizes).

use ferry_stripe_emulator::{Emulator, EmulatorConfig, RateLimits, TEST_API_KEY};
use std::process::Command;
use std::time::{Duration, Instant};

fn main() {
    let rows: u32 = env_number("FERRY_BENCH_ROWS", 20_000);
    let limited_rows: u32 = env_number("FERRY_BENCH_LIMITED_ROWS", 500);
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let mut table = Vec::new();

    let unlimited = EmulatorConfig {
        rate_limits: RateLimits::disabled(),
        ..EmulatorConfig::default()
    };
    let (first, second) = runtime.block_on(bench_sync(
        unlimited,
        rows,
        &["--max-rps", "0", "--max-rps-per-endpoint", "0"],
    ));
    table.push(("first sync, limits off", rows, first));
    table.push(("unchanged re-run, limits off", rows, second));

    let limited = EmulatorConfig::default();
    let (first_limited, _) = runtime.block_on(bench_sync(limited, limited_rows, &[]));
    table.push((
        "first sync, Stripe test-mode limits",
        limited_rows,
        first_limited.clone(),
    ));

    println!();
    println!(
        "{:<38} {:>8} {:>9} {:>10} {:>10} {:>13}",
        "scenario", "rows", "seconds", "records/s", "requests", "requests/rec"
    );
    for (name, rows, m) in &table {
        println!(
            "{:<38} {:>8} {:>9.2} {:>10.0} {:>10} {:>13.3}",
            name,
            rows,
            m.elapsed.as_secs_f64(),
            *rows as f64 / m.elapsed.as_secs_f64(),
            m.requests,
            m.requests as f64 / *rows as f64
        );
    }
    // Creates are bounded by POST /v1/customers' own 25/s bucket, below the 25/s global one.
    let achieved = first_limited.requests as f64 / first_limited.elapsed.as_secs_f64();
    println!("\nUnder limits: {achieved:.1} requests/s against a 25/s limit = {:.0}% of the limit; 429s received: {}.", 100.0 * achieved / 25.0, first_limited.rate_limited);
}

#[derive(Clone)]
struct Measured {
    elapsed: Duration,
    requests: u64,
    rate_limited: usize,
}

async fn bench_sync(
    config: EmulatorConfig,
    rows: u32,
    stripe_flags: &[&str],
) -> (Measured, Measured) {
    let emulator = Emulator::start(config).await.expect("emulator starts");
    let dir = tempfile::tempdir().expect("temp dir");
    let warehouse = dir.path().join("bench.duckdb");
    ferry_source::duckdb_execute(
        &warehouse,
        &format!(
            "create table people as select i as id, 'bench' || i || '@example.com' as email, 'Bench ' || i as name,
                    '+1 555 ' || lpad(cast(i % 10000 as varchar), 4, '0') as phone, ['free', 'pro'][1 + i % 2] as plan,
                    'Paris' as city, 'FR' as country
             from range(1, {rows} + 1) t(i)"
        ),
    )
    .expect("warehouse");
    let ferry = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(args)
            .env("FERRY_HOME", dir.path().join("ws"))
            .output()
            .expect("ferry runs");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&output.stdout).unwrap_or_default()
    };
    let url = emulator.url();
    let mut connect = vec![
        "connect",
        "stripe",
        "stripe",
        "--api-key",
        TEST_API_KEY,
        "--api-base",
        &url,
    ];
    connect.extend_from_slice(stripe_flags);
    let warehouse_path = warehouse.display().to_string();
    tokio::task::block_in_place(|| {
        ferry(&connect);
        ferry(&["connect", "duckdb", "warehouse", "--path", &warehouse_path]);
        ferry(&[
            "model",
            "create",
            "people",
            "--connection",
            "warehouse",
            "--sql",
            "select * from people",
        ]);
        ferry(&[
            "sync",
            "create",
            "bench",
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
            "--map",
            "city=address.city",
            "--map",
            "country=address.country",
        ]);
    });
    let mut measured = Vec::new();
    for _ in 0..2 {
        let started = Instant::now();
        let report =
            tokio::task::block_in_place(|| ferry(&["sync", "run", "bench", "--format", "json"]));
        measured.push(Measured {
            elapsed: started.elapsed(),
            requests: report["requests"].as_u64().unwrap_or(0),
            rate_limited: emulator
                .handle()
                .requests()
                .iter()
                .filter(|r| r.status == Some(429))
                .count(),
        });
        assert_eq!(report["status"], "completed", "{report}");
    }
    assert_eq!(emulator.handle().customers().len(), rows as usize);
    (measured[0].clone(), measured[1].clone())
}

fn env_number(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
