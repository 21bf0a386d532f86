//! Authentication and permissions: Bearer or Basic, secret and restricted keys, 401 and 403.

use base64::Engine;
use ferry_stripe_emulator::{Access, EmulatorConfig, RestrictedKey, TEST_API_KEY};
use reqwest::Method;

use crate::common::{send, start, start_with, test_config, LIVE_KEY};

#[tokio::test]
async fn missing_key_is_401_with_stripes_message() {
    let server = start().await;
    let reply = send(server.client.get(format!("{}/v1/customers", server.url))).await;
    assert_eq!(reply.status, 401);
    assert_eq!(reply.error_type(), Some("invalid_request_error"));
    assert!(reply
        .error_message()
        .starts_with("You did not provide an API key."));
    assert!(reply.header("request-id").unwrap().starts_with("req_"));
}

#[tokio::test]
async fn invalid_key_is_401_and_the_key_is_redacted() {
    let server = start().await;
    for bad_key in [
        "sk_test_tooshort",
        "pk_test_0123456789abcdef0123",
        "sk_prod_0123456789abcdef0123",
        "sk_test_0123456789abcdef-+/=",
    ] {
        let reply = send(
            server
                .client
                .get(format!("{}/v1/customers", server.url))
                .bearer_auth(bad_key),
        )
        .await;
        assert_eq!(reply.status, 401, "{bad_key}");
        assert!(
            reply
                .error_message()
                .starts_with("Invalid API Key provided: "),
            "{bad_key}: {}",
            reply.error_message()
        );
        assert!(!reply.error_message().contains(bad_key), "key not redacted");
    }
}

#[tokio::test]
async fn bearer_and_basic_auth_with_test_and_live_keys() {
    let server = start().await;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{TEST_API_KEY}:"));
    let reply = send(
        server
            .client
            .get(format!("{}/v1/balance", server.url))
            .header("authorization", format!("Basic {basic}")),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body["livemode"], false);

    let reply = send(
        server
            .client
            .post(format!("{}/v1/customers", server.url))
            .bearer_auth(LIVE_KEY)
            .header("content-type", "application/x-www-form-urlencoded")
            .body("email=live%40example.com"),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body["livemode"], true);
}

#[tokio::test]
async fn accepted_keys_replace_the_default_key_rule() {
    let server = start_with(EmulatorConfig {
        accepted_keys: vec!["sk_test_onlythisone".to_owned()],
        ..test_config()
    })
    .await;
    let default_key = server.get("/v1/balance").await;
    assert_eq!(default_key.status, 401);
    let reply = send(
        server
            .client
            .get(format!("{}/v1/balance", server.url))
            .bearer_auth("sk_test_onlythisone"),
    )
    .await;
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn restricted_key_without_customer_write_gets_403_on_writes_only() {
    let server = start_with(EmulatorConfig {
        restricted_keys: vec![RestrictedKey {
            customers: Access::Read,
            ..RestrictedKey::new("rk_test_readonly")
        }],
        ..test_config()
    })
    .await;
    let id = server.create_customer("email=a%40example.com").await;
    let as_restricted = |method: Method, path: &str| {
        server
            .client
            .request(method, format!("{}{path}", server.url))
            .bearer_auth("rk_test_readonly")
    };
    let read = send(as_restricted(Method::GET, &format!("/v1/customers/{id}"))).await;
    assert_eq!(read.status, 200);
    let list = send(as_restricted(Method::GET, "/v1/customers")).await;
    assert_eq!(list.status, 200);

    let create = send(
        as_restricted(Method::POST, "/v1/customers")
            .header("content-type", "application/x-www-form-urlencoded")
            .body("email=b%40example.com"),
    )
    .await;
    assert_eq!(create.status, 403);
    assert!(create.error_message().contains("rak_customer_write"));
    assert!(!create.error_message().contains("rk_test_readonly"));
    let delete = send(as_restricted(
        Method::DELETE,
        &format!("/v1/customers/{id}"),
    ))
    .await;
    assert_eq!(delete.status, 403);
    let balance = send(as_restricted(Method::GET, "/v1/balance")).await;
    assert_eq!(balance.status, 403);
    assert!(balance.error_message().contains("rak_balance_read"));
    assert_eq!(server.handle.customers().len(), 1, "nothing written");
}

#[tokio::test]
async fn restricted_key_with_write_and_balance_read_works() {
    let server = start_with(EmulatorConfig {
        restricted_keys: vec!["rk_live_writer:customers=write,balance=read"
            .parse()
            .unwrap()],
        ..test_config()
    })
    .await;
    let create = send(
        server
            .client
            .post(format!("{}/v1/customers", server.url))
            .bearer_auth("rk_live_writer")
            .header("content-type", "application/x-www-form-urlencoded")
            .body("name=Writer"),
    )
    .await;
    assert_eq!(create.status, 200);
    assert_eq!(create.body["livemode"], true);
    let balance = send(
        server
            .client
            .get(format!("{}/v1/balance", server.url))
            .bearer_auth("rk_live_writer"),
    )
    .await;
    assert_eq!(balance.status, 200);
}

#[tokio::test]
async fn unconfigured_restricted_key_is_401() {
    let server = start().await;
    let reply = send(
        server
            .client
            .get(format!("{}/v1/balance", server.url))
            .bearer_auth("rk_test_0123456789abcdef0123"),
    )
    .await;
    assert_eq!(reply.status, 401);
}

#[tokio::test]
async fn the_account_is_read_with_a_secret_key_and_refused_to_a_restricted_one() {
    let server = start_with(EmulatorConfig {
        restricted_keys: vec!["rk_test_writer:customers=write,balance=read"
            .parse()
            .unwrap()],
        ..test_config()
    })
    .await;
    let account = send(
        server
            .client
            .get(format!("{}/v1/account", server.url))
            .bearer_auth(TEST_API_KEY),
    )
    .await;
    assert_eq!(account.status, 200);
    assert_eq!(account.body["object"], "account");
    assert!(account.body["id"].as_str().unwrap().starts_with("acct_"));
    let restricted = send(
        server
            .client
            .get(format!("{}/v1/account", server.url))
            .bearer_auth("rk_test_writer"),
    )
    .await;
    assert_eq!(restricted.status, 403);
    assert!(restricted.error_message().contains("rak_account_read"));
}
