//! `ferry emulate stripe` arguments: parsed by clap into the emulator configuration.

use std::time::Duration;

use clap::Parser;
use ferry_stripe_emulator::{run_from_cli, Access, EmulateStripeArgs};

#[derive(Parser)]
struct Command {
    #[command(flatten)]
    args: EmulateStripeArgs,
}

fn parse(arguments: &[&str]) -> EmulateStripeArgs {
    let mut all = vec!["emulate"];
    all.extend_from_slice(arguments);
    Command::try_parse_from(all).expect("valid arguments").args
}

#[test]
fn defaults_are_stripes() {
    let config = parse(&[]).to_config();
    assert_eq!(config.bind.to_string(), "127.0.0.1:12111");
    assert!(config.rate_limits.enabled);
    assert_eq!(config.rate_limits.global_test_per_sec, 25);
    assert_eq!(config.rate_limits.global_live_per_sec, 100);
    assert_eq!(config.rate_limits.endpoint_per_sec, 25);
    assert_eq!(config.rate_limits.search_per_sec, 20);
    assert_eq!(config.search_delay, Duration::from_secs(2));
    assert_eq!(config.fault_seed, None);
}

#[test]
fn every_flag_reaches_the_config() {
    let config = parse(&[
        "--port",
        "0",
        "--bind",
        "0.0.0.0",
        "--no-rate-limits",
        "--search-delay-ms",
        "50",
        "--latency-ms",
        "300",
        "--latency-jitter-ms",
        "100",
        "--fail-rate",
        "0.1",
        "--lock-timeout-rate",
        "0.05",
        "--drop-rate",
        "0.02",
        "--lose-response-rate",
        "0.03",
        "--seed",
        "42",
        "--restricted-key",
        "rk_test_a:customers=read,balance=read",
        "--restricted-key",
        "rk_live_b:customers=write",
    ])
    .to_config();
    assert_eq!(config.bind.to_string(), "0.0.0.0:0");
    assert!(!config.rate_limits.enabled);
    assert_eq!(config.search_delay, Duration::from_millis(50));
    assert_eq!(config.faults.latency, Duration::from_millis(300));
    assert_eq!(config.faults.latency_jitter, Duration::from_millis(100));
    assert_eq!(config.faults.server_error_rate, 0.1);
    assert_eq!(config.faults.lock_timeout_rate, 0.05);
    assert_eq!(config.faults.drop_rate, 0.02);
    assert_eq!(config.faults.lose_response_rate, 0.03);
    assert_eq!(config.fault_seed, Some(42));
    assert_eq!(config.restricted_keys.len(), 2);
    assert_eq!(config.restricted_keys[0].balance, Access::Read);
    assert_eq!(config.restricted_keys[1].customers, Access::Write);
}

#[test]
fn a_malformed_restricted_key_is_a_usage_error() {
    let parsed =
        Command::try_parse_from(["emulate", "--restricted-key", "sk_test_x:customers=read"]);
    assert!(parsed.is_err());
}

#[tokio::test]
async fn invalid_fault_rates_fail_before_serving() {
    let args = parse(&["--port", "0", "--fail-rate", "0.9", "--drop-rate", "0.9"]);
    let error = run_from_cli(args).await.expect_err("rates add up to 1.8");
    assert!(format!("{error:#}").contains("add up to"), "{error:#}");
}
