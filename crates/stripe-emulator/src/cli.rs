//! `ferry emulate stripe`: the command-line arguments and the foreground server loop.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::Context;

use crate::config::{EmulatorConfig, FaultConfig, RateLimits, RestrictedKey};
use crate::server::Emulator;
use crate::TEST_API_KEY;

/// Run a Stripe-compatible API server (customers, search, products, prices,
/// subscriptions, invoices, events, balance) in
/// memory, for tests, demos and benchmarks.
#[derive(clap::Args, Debug, Clone)]
pub struct EmulateStripeArgs {
    /// Port to listen on.
    #[arg(long, default_value_t = 12111)]
    pub port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: IpAddr,
    /// Turn off all rate limits (for throughput benchmarks).
    #[arg(long)]
    pub no_rate_limits: bool,
    /// Global requests per second for test-mode keys.
    #[arg(long, default_value_t = 25)]
    pub global_test_rate: u32,
    /// Global requests per second for live-mode keys.
    #[arg(long, default_value_t = 100)]
    pub global_live_rate: u32,
    /// Requests per second for each endpoint.
    #[arg(long, default_value_t = 25)]
    pub endpoint_rate: u32,
    /// Requests per second for the search endpoint.
    #[arg(long, default_value_t = 20)]
    pub search_rate: u32,
    /// How long a write takes to become visible to search, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub search_delay_ms: u64,
    /// Latency added to every /v1 request, in milliseconds (real Stripe: about 300).
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// A random extra latency between 0 and this, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_jitter_ms: u64,
    /// Probability (0–1) of answering 500, 502 or 503 without executing.
    #[arg(long, default_value_t = 0.0)]
    pub fail_rate: f64,
    /// Probability (0–1) of answering 429 lock_timeout without executing.
    #[arg(long, default_value_t = 0.0)]
    pub lock_timeout_rate: f64,
    /// Probability (0–1) of closing the connection without executing or answering.
    #[arg(long, default_value_t = 0.0)]
    pub drop_rate: f64,
    /// Probability (0–1) of executing the request but closing the connection instead of answering.
    #[arg(long, default_value_t = 0.0)]
    pub lose_response_rate: f64,
    /// Seed for fault decisions, to make a run reproducible.
    #[arg(long)]
    pub seed: Option<u64>,
    /// A restricted key and its permissions, e.g. rk_test_abc:customers=read,products=write,prices=write,subscriptions=write,invoices=write,balance=read
    /// (repeatable).
    #[arg(long = "restricted-key", value_name = "KEY:PERMISSIONS")]
    pub restricted_keys: Vec<RestrictedKey>,
}

impl EmulateStripeArgs {
    /// The emulator configuration these arguments describe.
    pub fn to_config(&self) -> EmulatorConfig {
        EmulatorConfig {
            bind: SocketAddr::new(self.bind, self.port),
            rate_limits: RateLimits {
                enabled: !self.no_rate_limits,
                global_test_per_sec: self.global_test_rate,
                global_live_per_sec: self.global_live_rate,
                endpoint_per_sec: self.endpoint_rate,
                search_per_sec: self.search_rate,
            },
            search_delay: Duration::from_millis(self.search_delay_ms),
            faults: FaultConfig {
                server_error_rate: self.fail_rate,
                lock_timeout_rate: self.lock_timeout_rate,
                drop_rate: self.drop_rate,
                lose_response_rate: self.lose_response_rate,
                latency: Duration::from_millis(self.latency_ms),
                latency_jitter: Duration::from_millis(self.latency_jitter_ms),
            },
            restricted_keys: self.restricted_keys.clone(),
            fault_seed: self.seed,
            ..EmulatorConfig::default()
        }
    }
}

/// Starts the server from the args, prints the base URL, the test key and how to point ferry at
/// it, and serves until Ctrl-C or SIGTERM.
pub async fn run_from_cli(args: EmulateStripeArgs) -> anyhow::Result<()> {
    let config = args.to_config();
    config.faults.validate().context("invalid fault options")?;
    let bind = config.bind;
    let emulator = Emulator::start(config).await.with_context(|| {
        format!("cannot start the Stripe emulator on {bind}; is the port free? (try --port)")
    })?;
    let url = emulator.url();
    println!("Stripe emulator listening on {url}");
    println!("Test API key: {TEST_API_KEY}");
    println!(
        "Point ferry at it: ferry connect stripe NAME --api-key {TEST_API_KEY} --api-base {url}"
    );
    println!(
        "Control API: {url}/_emulator/ (reset, customers, products, prices, events, requests, counters, config)"
    );
    tracing::info!(url = %url, "Stripe emulator started.");
    wait_for_shutdown_signal().await?;
    emulator.stop().await;
    tracing::info!("Stripe emulator stopped.");
    Ok(())
}

async fn wait_for_shutdown_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .context("cannot listen for SIGTERM")?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result.context("cannot listen for Ctrl-C")?,
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c()
        .await
        .context("cannot listen for Ctrl-C")?;
    Ok(())
}
