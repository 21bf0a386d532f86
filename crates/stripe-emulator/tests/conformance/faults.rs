//! Fault injection: 5xx, 429 `lock_timeout`, dropped connections, lost responses, latency,
//! reproducible decisions from a seed, run-time changes, and never on `/_emulator`.

use std::time::{Duration, Instant};

use ferry_stripe_emulator::{EmulatorConfig, FaultConfig, FaultKind};
use serde_json::json;

use crate::common::{start, start_with, test_config, TestServer};

async fn start_faulty(faults: FaultConfig) -> TestServer {
    start_with(EmulatorConfig {
        faults,
        fault_seed: Some(7),
        ..test_config()
    })
    .await
}

#[tokio::test]
async fn server_errors_happen_before_execution_and_are_not_stored() {
    let server = start_faulty(FaultConfig {
        server_error_rate: 1.0,
        ..FaultConfig::default()
    })
    .await;
    let reply = server
        .post_idempotent("/v1/customers", "name=a", "key-5xx")
        .await;
    assert!([500, 502, 503].contains(&reply.status), "{}", reply.status);
    assert_eq!(reply.error_type(), Some("api_error"));
    assert!(reply.header("request-id").is_some());
    assert!(server.handle.customers().is_empty(), "not executed");
    server.handle.set_faults(FaultConfig::default());
    let retried = server
        .post_idempotent("/v1/customers", "name=a", "key-5xx")
        .await;
    assert_eq!(retried.status, 200);
    assert_eq!(
        retried.header("idempotent-replayed"),
        None,
        "the 5xx was not stored"
    );
    assert_eq!(server.handle.customers().len(), 1);
}

#[tokio::test]
async fn lock_timeouts_are_429_lock_timeout_without_execution() {
    let server = start_faulty(FaultConfig {
        lock_timeout_rate: 1.0,
        ..FaultConfig::default()
    })
    .await;
    let reply = server.post("/v1/customers", "name=a").await;
    assert_eq!(reply.status, 429);
    assert_eq!(reply.error_code(), Some("lock_timeout"));
    assert_eq!(reply.header("stripe-rate-limited-reason"), None);
    assert!(server.handle.customers().is_empty());
}

#[tokio::test]
async fn a_dropped_connection_gets_no_response_and_executes_nothing() {
    let server = start_faulty(FaultConfig {
        drop_rate: 1.0,
        ..FaultConfig::default()
    })
    .await;
    let outcome = server
        .form_post("/v1/customers", "name=a")
        .header("idempotency-key", "key-drop")
        .send()
        .await;
    let error = outcome.expect_err("the connection is dropped");
    assert!(!error.is_status() && !error.is_timeout(), "{error:?}");
    assert!(server.handle.customers().is_empty());
    let requests = server.handle.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].fault, Some(FaultKind::DroppedConnection));
    assert_eq!(requests[0].status, None);
    assert!(!requests[0].executed);
    assert_eq!(
        server
            .handle
            .counters()
            .count("POST /v1/customers", "dropped"),
        1
    );
    server.handle.set_faults(FaultConfig::default());
    let retried = server
        .post_idempotent("/v1/customers", "name=a", "key-drop")
        .await;
    assert_eq!(retried.header("idempotent-replayed"), None);
    assert_eq!(server.handle.customers().len(), 1);
}

#[tokio::test]
async fn a_lost_response_executes_and_stores_so_a_retry_with_the_key_replays() {
    let server = start_faulty(FaultConfig {
        lose_response_rate: 1.0,
        ..FaultConfig::default()
    })
    .await;
    let outcome = server
        .form_post("/v1/customers", "email=lost%40example.com")
        .header("idempotency-key", "key-lost")
        .send()
        .await;
    assert!(outcome.is_err(), "the client sees a connection error");
    assert_eq!(server.handle.customers().len(), 1, "but the write happened");
    let requests = server.handle.requests();
    assert_eq!(requests[0].fault, Some(FaultKind::LostResponse));
    assert!(requests[0].executed);
    assert_eq!(requests[0].status, Some(200));
    assert_eq!(
        server
            .handle
            .counters()
            .count("POST /v1/customers", "lost_response"),
        1
    );

    server.handle.set_faults(FaultConfig::default());
    let retried = server
        .post_idempotent("/v1/customers", "email=lost%40example.com", "key-lost")
        .await;
    assert_eq!(retried.status, 200);
    assert_eq!(retried.header("idempotent-replayed"), Some("true"));
    assert_eq!(retried.body, server.handle.customers()[0]);
    // A naive client retrying without a key creates a duplicate: the case this fault exists for.
    server
        .post("/v1/customers", "email=lost%40example.com")
        .await;
    assert_eq!(server.handle.customers().len(), 2);
}

#[tokio::test]
async fn latency_is_added_to_v1_requests() {
    let server = start_faulty(FaultConfig {
        latency: Duration::from_millis(150),
        latency_jitter: Duration::from_millis(50),
        ..FaultConfig::default()
    })
    .await;
    let started = Instant::now();
    assert_eq!(server.get("/v1/balance").await.status, 200);
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(150), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(1000), "{elapsed:?}");
    let started = Instant::now();
    server.control_get("/_emulator/counters").await;
    assert!(
        started.elapsed() < Duration::from_millis(150),
        "control routes are not delayed"
    );
}

/// Statuses of 30 sequential balance reads.
async fn statuses(server: &TestServer) -> Vec<u16> {
    let mut statuses = Vec::new();
    for _ in 0..30 {
        statuses.push(server.get("/v1/balance").await.status);
    }
    statuses
}

#[tokio::test]
async fn a_seed_makes_fault_decisions_reproducible() {
    let faults = FaultConfig {
        server_error_rate: 0.3,
        lock_timeout_rate: 0.2,
        ..FaultConfig::default()
    };
    let server = start_faulty(faults.clone()).await;
    let first_run = statuses(&server).await;
    assert!(
        first_run.contains(&200) && first_run.contains(&429),
        "{first_run:?}"
    );
    assert!(
        first_run.iter().any(|status| *status >= 500),
        "{first_run:?}"
    );
    server.handle.reset();
    assert_eq!(statuses(&server).await, first_run, "same after reset");
    let twin = start_faulty(faults).await;
    assert_eq!(statuses(&twin).await, first_run, "same on another emulator");
}

#[tokio::test]
async fn faults_change_at_run_time_over_the_control_api() {
    let server = start().await;
    let (status, _) = server
        .control_post(
            "/_emulator/config",
            &json!({"faults": {"server_error_rate": 1.0}}),
        )
        .await;
    assert_eq!(status, 200);
    assert!(server.get("/v1/balance").await.status >= 500);
    let (status, body) = server
        .control_post("/_emulator/config", &json!({"faults": {"drop_rate": 1.5}}))
        .await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("drop_rate"));
    server
        .control_post("/_emulator/config", &json!({"faults": {}}))
        .await;
    assert_eq!(server.get("/v1/balance").await.status, 200);
}

#[tokio::test]
async fn faults_never_apply_to_control_routes() {
    let server = start_faulty(FaultConfig {
        drop_rate: 1.0,
        ..FaultConfig::default()
    })
    .await;
    let (status, _) = server
        .control_post("/_emulator/customers", &json!({"name": "seeded"}))
        .await;
    assert_eq!(status, 200);
    let customers = server.control_get("/_emulator/customers").await;
    assert_eq!(customers["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn invalid_fault_rates_refuse_to_start() {
    let result = ferry_stripe_emulator::Emulator::start(EmulatorConfig {
        faults: FaultConfig {
            server_error_rate: 0.8,
            drop_rate: 0.8,
            ..FaultConfig::default()
        },
        ..test_config()
    })
    .await;
    assert!(result.is_err());
}
