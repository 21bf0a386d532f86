//! Throughput benchmark: how many requests per second the emulator serves with rate limits off,
//! for creates, updates, retrieves and lists, over real HTTP from in-process reqwest clients.
//! Run with `cargo bench -p ferry-stripe-emulator`; each phase stops after a fixed number of
//! requests or a time budget, whichever comes first, so the whole run takes seconds.
//!
//! The client shares the machine with the server, so the figure is a floor for the server alone.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_stripe_emulator::{Emulator, EmulatorConfig, RateLimits, TEST_API_KEY};

/// Requests in flight at once, like a sync with a generous concurrency setting.
const CONCURRENCY: usize = 32;
/// Requests per phase, at most.
const REQUESTS_PER_PHASE: usize = 20_000;
/// Time per phase, at most.
const PHASE_BUDGET: Duration = Duration::from_secs(4);
/// What the emulator must sustain never to be a sync's bottleneck.
const TARGET_REQUESTS_PER_SECOND: f64 = 5_000.0;

#[derive(Clone, Copy)]
enum Phase {
    Creates,
    Updates,
    Retrieves,
    Lists,
}

impl Phase {
    fn label(self) -> &'static str {
        match self {
            Phase::Creates => "creates",
            Phase::Updates => "updates",
            Phase::Retrieves => "retrieves",
            Phase::Lists => "lists",
        }
    }
}

struct PhaseResult {
    phase: Phase,
    requests: usize,
    failures: usize,
    seconds: f64,
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(run());
}

async fn run() {
    let emulator = Emulator::start(EmulatorConfig {
        rate_limits: RateLimits::disabled(),
        ..EmulatorConfig::default()
    })
    .await
    .expect("the emulator starts");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CONCURRENCY)
        .build()
        .expect("a client");
    let base = emulator.url();

    let mut results = Vec::new();
    for phase in [
        Phase::Creates,
        Phase::Updates,
        Phase::Retrieves,
        Phase::Lists,
    ] {
        let ids: Arc<Vec<String>> = Arc::new(
            emulator
                .handle()
                .customers()
                .iter()
                .filter_map(|customer| customer["id"].as_str().map(str::to_owned))
                .collect(),
        );
        results.push(run_phase(phase, &client, &base, ids).await);
    }
    emulator.stop().await;

    println!();
    println!(
        "ferry Stripe emulator throughput (rate limits off, {CONCURRENCY} concurrent clients)"
    );
    println!(
        "{:<10} {:>10} {:>9} {:>14} {:>9}",
        "phase", "requests", "seconds", "requests/s", "failures"
    );
    let mut slowest = f64::INFINITY;
    for result in &results {
        let rate = result.requests as f64 / result.seconds;
        slowest = slowest.min(rate);
        println!(
            "{:<10} {:>10} {:>9.2} {:>14.0} {:>9}",
            result.phase.label(),
            result.requests,
            result.seconds,
            rate,
            result.failures
        );
    }
    let verdict = if slowest >= TARGET_REQUESTS_PER_SECOND {
        "meets"
    } else {
        "BELOW"
    };
    println!("slowest phase: {slowest:.0} requests/s, {verdict} the {TARGET_REQUESTS_PER_SECOND:.0} requests/s target");
}

async fn run_phase(
    phase: Phase,
    client: &reqwest::Client,
    base: &str,
    ids: Arc<Vec<String>>,
) -> PhaseResult {
    let issued = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + PHASE_BUDGET;
    let mut workers = Vec::new();
    for _ in 0..CONCURRENCY {
        let client = client.clone();
        let base = base.to_owned();
        let ids = ids.clone();
        let issued = issued.clone();
        let failures = failures.clone();
        workers.push(tokio::spawn(async move {
            loop {
                let index = issued.fetch_add(1, Ordering::Relaxed);
                if index >= REQUESTS_PER_PHASE || Instant::now() >= deadline {
                    issued.fetch_sub(1, Ordering::Relaxed);
                    break;
                }
                let request = build_request(phase, &client, &base, &ids, index);
                let ok = match request.send().await {
                    Ok(response) => {
                        let ok = response.status().is_success();
                        // Read the body, as a real client does.
                        ok && response.bytes().await.is_ok()
                    }
                    Err(_) => false,
                };
                if !ok {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for worker in workers {
        worker.await.expect("a benchmark worker");
    }
    PhaseResult {
        phase,
        requests: issued.load(Ordering::Relaxed),
        failures: failures.load(Ordering::Relaxed),
        seconds: started.elapsed().as_secs_f64(),
    }
}

fn build_request(
    phase: Phase,
    client: &reqwest::Client,
    base: &str,
    ids: &[String],
    index: usize,
) -> reqwest::RequestBuilder {
    let form = |builder: reqwest::RequestBuilder, body: String| {
        builder
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
    };
    let id = || &ids[index % ids.len()];
    let builder = match phase {
        Phase::Creates => form(
            client.post(format!("{base}/v1/customers")),
            format!(
                "email=user{index}%40example.com&name=User+{index}&metadata[external_id]={index}&address[city]=Paris"
            ),
        )
        .header("idempotency-key", format!("bench-create-{index}")),
        Phase::Updates => form(
            client.post(format!("{base}/v1/customers/{}", id())),
            format!("name=Renamed+{index}&metadata[revision]={index}"),
        )
        .header("idempotency-key", format!("bench-update-{index}")),
        Phase::Retrieves => client.get(format!("{base}/v1/customers/{}", id())),
        Phase::Lists => client.get(format!("{base}/v1/customers?limit=10")),
    };
    builder.bearer_auth(TEST_API_KEY)
}
