//! Idempotency keys: replay, 400 for other parameters, 409 while running, per-API-key scope,
//! length limit, and which answers are stored.

use std::time::Duration;

use ferry_stripe_emulator::{EmulatorConfig, FaultConfig};
use reqwest::Method;

use crate::common::{send, start, start_with, test_config, OTHER_TEST_KEY};

#[tokio::test]
async fn a_retry_with_the_same_key_and_params_replays_the_stored_response() {
    let server = start().await;
    let first = server
        .post_idempotent("/v1/customers", "email=a%40example.com", "key-1")
        .await;
    let retry = server
        .post_idempotent("/v1/customers", "email=a%40example.com", "key-1")
        .await;
    assert_eq!(first.status, 200);
    assert_eq!(retry.status, 200);
    assert_eq!(retry.body, first.body, "same customer, byte for byte");
    assert_eq!(retry.header("idempotent-replayed"), Some("true"));
    assert_eq!(first.header("idempotent-replayed"), None);
    assert_eq!(
        retry.header("original-request"),
        first.header("request-id"),
        "the replay points at the first request"
    );
    assert_ne!(retry.header("request-id"), first.header("request-id"));
    assert_eq!(server.handle.customers().len(), 1);
    let executed: Vec<bool> = server
        .handle
        .requests()
        .iter()
        .map(|request| request.executed)
        .collect();
    assert_eq!(executed, vec![true, false]);
}

#[tokio::test]
async fn the_same_key_with_other_params_is_400_idempotency_error() {
    let server = start().await;
    server
        .post_idempotent("/v1/customers", "email=a%40example.com", "key-1")
        .await;
    let other = server
        .post_idempotent("/v1/customers", "email=b%40example.com", "key-1")
        .await;
    assert_eq!(other.status, 400);
    assert_eq!(other.error_type(), Some("idempotency_error"));
    assert!(other.error_message().contains("same parameters"));
    let id = server.handle.customers()[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let other_endpoint = server
        .post_idempotent(
            &format!("/v1/customers/{id}"),
            "email=a%40example.com",
            "key-1",
        )
        .await;
    assert_eq!(other_endpoint.status, 400);
    assert_eq!(other_endpoint.error_type(), Some("idempotency_error"));
    assert_eq!(server.handle.customers().len(), 1);
}

#[tokio::test]
async fn the_same_key_while_the_first_request_runs_is_409() {
    let server = start_with(EmulatorConfig {
        faults: FaultConfig {
            latency: Duration::from_millis(400),
            ..FaultConfig::default()
        },
        ..test_config()
    })
    .await;
    let first = server.post_idempotent("/v1/customers", "name=slow", "key-1");
    let second = async {
        tokio::time::sleep(Duration::from_millis(150)).await;
        server
            .post_idempotent("/v1/customers", "name=slow", "key-1")
            .await
    };
    let (first, second) = tokio::join!(first, second);
    assert_eq!(first.status, 200);
    assert_eq!(second.status, 409);
    assert_eq!(second.error_code(), Some("idempotency_key_in_use"));
    let after = server
        .post_idempotent("/v1/customers", "name=slow", "key-1")
        .await;
    assert_eq!(after.status, 200);
    assert_eq!(after.header("idempotent-replayed"), Some("true"));
    assert_eq!(server.handle.customers().len(), 1);
}

#[tokio::test]
async fn keys_are_scoped_per_api_key() {
    let server = start().await;
    let first = server
        .post_idempotent("/v1/customers", "name=a", "shared-key")
        .await;
    let other_api_key = send(
        server
            .client
            .post(format!("{}/v1/customers", server.url))
            .bearer_auth(OTHER_TEST_KEY)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("idempotency-key", "shared-key")
            .body("name=a"),
    )
    .await;
    assert_eq!(other_api_key.status, 200);
    assert_eq!(other_api_key.header("idempotent-replayed"), None);
    assert_ne!(other_api_key.id(), first.id());
    assert_eq!(server.handle.customers().len(), 2);
}

#[tokio::test]
async fn keys_longer_than_255_characters_are_400() {
    let server = start().await;
    let at_limit = server
        .post_idempotent("/v1/customers", "name=a", &"k".repeat(255))
        .await;
    assert_eq!(at_limit.status, 200);
    let too_long = server
        .post_idempotent("/v1/customers", "name=a", &"k".repeat(256))
        .await;
    assert_eq!(too_long.status, 400);
    assert_eq!(server.handle.customers().len(), 1);
}

#[tokio::test]
async fn errors_from_execution_are_stored_but_validation_errors_are_not() {
    let server = start().await;
    // A 404 comes from executing the endpoint: stored and replayed.
    let missing = server
        .post_idempotent("/v1/customers/cus_nothere000000", "name=a", "key-404")
        .await;
    assert_eq!(missing.status, 404);
    let replayed = server
        .post_idempotent("/v1/customers/cus_nothere000000", "name=a", "key-404")
        .await;
    assert_eq!(replayed.status, 404);
    assert_eq!(replayed.header("idempotent-replayed"), Some("true"));

    // A validation 400 happens before the idempotency layer: the key stays free.
    let invalid = server
        .post_idempotent("/v1/customers", "phone=123456789012345678901", "key-400")
        .await;
    assert_eq!(invalid.status, 400);
    let fixed = server
        .post_idempotent("/v1/customers", "phone=12345", "key-400")
        .await;
    assert_eq!(fixed.status, 200);
    assert_eq!(fixed.header("idempotent-replayed"), None);
}

#[tokio::test]
async fn keys_are_ignored_on_get_and_delete() {
    let server = start().await;
    let id = server.create_customer("name=a").await;
    for _ in 0..2 {
        let reply = send(
            server
                .request(Method::GET, &format!("/v1/customers/{id}"))
                .header("idempotency-key", "get-key"),
        )
        .await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("idempotent-replayed"), None);
    }
}
