//! Rate limits: global and per-endpoint token buckets, the search limit, the 429 shape and
//! `Stripe-Rate-Limited-Reason`, run-time changes and switching them off.

use ferry_stripe_emulator::{EmulatorConfig, RateLimits};
use serde_json::json;

use crate::common::{send, start, start_with, test_config, Reply, TestServer, LIVE_KEY};

async fn start_limited(limits: RateLimits) -> TestServer {
    start_with(EmulatorConfig {
        rate_limits: limits,
        ..test_config()
    })
    .await
}

fn assert_rate_limited(reply: &Reply, reason: &str) {
    assert_eq!(reply.status, 429, "{:?}", reply.body);
    assert_eq!(reply.error_code(), Some("rate_limit"));
    assert_eq!(reply.error_type(), Some("invalid_request_error"));
    assert_eq!(reply.header("stripe-rate-limited-reason"), Some(reason));
    assert!(reply.header("request-id").is_some());
}

#[tokio::test]
async fn the_endpoint_limit_counts_all_ids_of_one_path_template_together() {
    let server = start_limited(RateLimits {
        global_test_per_sec: 1000,
        endpoint_per_sec: 3,
        ..RateLimits::default()
    })
    .await;
    let ids: Vec<String> = (0..3)
        .map(|index| {
            server
                .handle
                .seed_customer(json!({"name": format!("c{index}")}))
        })
        .collect();
    for id in &ids {
        let reply = server.get(&format!("/v1/customers/{id}")).await;
        assert_eq!(reply.status, 200);
    }
    let limited = server.get(&format!("/v1/customers/{}", ids[0])).await;
    assert_rate_limited(&limited, "endpoint-rate");
    // Another endpoint has its own bucket.
    assert_eq!(server.get("/v1/customers").await.status, 200);
    assert_eq!(
        server
            .post(&format!("/v1/customers/{}", ids[0]), "name=x")
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn the_global_limit_is_per_mode() {
    let server = start_limited(RateLimits {
        global_test_per_sec: 3,
        global_live_per_sec: 5,
        endpoint_per_sec: 1000,
        ..RateLimits::default()
    })
    .await;
    for _ in 0..3 {
        assert_eq!(server.get("/v1/balance").await.status, 200);
    }
    let limited = server.get("/v1/customers").await;
    assert_rate_limited(&limited, "global-rate");
    for _ in 0..5 {
        let live = send(
            server
                .client
                .get(format!("{}/v1/balance", server.url))
                .bearer_auth(LIVE_KEY),
        )
        .await;
        assert_eq!(live.status, 200, "live keys have their own bucket");
    }
}

#[tokio::test]
async fn search_has_its_own_lower_limit() {
    let server = start_limited(RateLimits {
        global_test_per_sec: 1000,
        endpoint_per_sec: 1000,
        search_per_sec: 2,
        ..RateLimits::default()
    })
    .await;
    let path = "/v1/customers/search?query=name%3A%27x%27";
    assert_eq!(server.get(path).await.status, 200);
    assert_eq!(server.get(path).await.status, 200);
    assert_rate_limited(&server.get(path).await, "endpoint-rate");
}

#[tokio::test]
async fn stripes_default_limits_apply_unless_configured() {
    let server = start_limited(RateLimits::default()).await;
    let mut statuses = Vec::new();
    for _ in 0..30 {
        statuses.push(server.get("/v1/balance").await.status);
    }
    let admitted = statuses.iter().filter(|status| **status == 200).count();
    assert!(
        (25..=27).contains(&admitted),
        "25/s for one endpoint with a test key, got {admitted}"
    );
    assert!(statuses.contains(&429));
}

#[tokio::test]
async fn a_rate_limited_request_is_not_stored_under_its_idempotency_key() {
    let server = start_limited(RateLimits {
        global_test_per_sec: 1000,
        endpoint_per_sec: 1,
        ..RateLimits::default()
    })
    .await;
    assert_eq!(server.post("/v1/customers", "name=first").await.status, 200);
    let limited = server
        .post_idempotent("/v1/customers", "name=second", "key-429")
        .await;
    assert_rate_limited(&limited, "endpoint-rate");
    server.handle.set_rate_limits(RateLimits::disabled());
    let retried = server
        .post_idempotent("/v1/customers", "name=second", "key-429")
        .await;
    assert_eq!(retried.status, 200);
    assert_eq!(retried.header("idempotent-replayed"), None);
    assert_eq!(server.handle.customers().len(), 2);
}

#[tokio::test]
async fn limits_can_be_turned_off_and_changed_over_the_control_api() {
    let server = start().await;
    for _ in 0..100 {
        assert_eq!(server.get("/v1/balance").await.status, 200);
    }
    let (status, settings) = server
        .control_post(
            "/_emulator/config",
            &json!({"rate_limits": {"enabled": true, "endpoint_per_sec": 1, "global_test_per_sec": 1000}}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(settings["rate_limits"]["endpoint_per_sec"], 1);
    assert_eq!(server.get("/v1/balance").await.status, 200);
    assert_rate_limited(&server.get("/v1/balance").await, "endpoint-rate");
}
