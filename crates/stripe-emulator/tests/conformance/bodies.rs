//! Request bodies and parameter validation: form encoding with brackets, JSON rejected, unknown
//! parameters, types, enums and maximum lengths, all answered 400 naming `param`.

use reqwest::Method;
use serde_json::json;

use crate::common::{send, start, Reply, TestServer};

/// Posts a create and expects a 400 `invalid_request_error` naming `param`.
async fn check_rejected(server: &TestServer, body: &str, param: &str) -> Reply {
    let reply = server.post("/v1/customers", body).await;
    assert_eq!(reply.status, 400, "{body}: {:?}", reply.body);
    assert_eq!(reply.error_type(), Some("invalid_request_error"), "{body}");
    assert_eq!(reply.error_param(), Some(param), "{body}");
    reply
}

#[tokio::test]
async fn bracket_nesting_decodes_into_nested_fields() {
    let server = start().await;
    let reply = server
        .post(
            "/v1/customers",
            "email=ann%40example.com&metadata[plan]=pro&metadata%5Bseats%5D=3&address[line1]=1+Main+St&address[city]=Paris&shipping[name]=Ann&shipping[address][city]=Lyon&preferred_locales[0]=fr&preferred_locales[1]=en",
        )
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.body["metadata"], json!({"plan": "pro", "seats": "3"}));
    assert_eq!(reply.body["address"]["line1"], "1 Main St");
    assert_eq!(reply.body["address"]["city"], "Paris");
    assert_eq!(reply.body["shipping"]["name"], "Ann");
    assert_eq!(reply.body["shipping"]["address"]["city"], "Lyon");
    assert_eq!(reply.body["preferred_locales"], json!(["fr", "en"]));
    let stored = server.handle.customer(&reply.id()).unwrap();
    assert_eq!(stored["metadata"]["plan"], "pro");
}

#[tokio::test]
async fn a_json_body_is_400() {
    let server = start().await;
    let reply = send(
        server
            .request(Method::POST, "/v1/customers")
            .header("content-type", "application/json")
            .body(r#"{"email": "ann@example.com"}"#),
    )
    .await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.error_type(), Some("invalid_request_error"));
    assert!(reply
        .error_message()
        .contains("application/x-www-form-urlencoded"));
    assert!(server.handle.customers().is_empty());
}

#[tokio::test]
async fn unknown_parameters_are_400_parameter_unknown() {
    let server = start().await;
    let reply = check_rejected(&server, "emial=a%40b.co", "emial").await;
    assert_eq!(reply.error_code(), Some("parameter_unknown"));
    assert_eq!(reply.error_message(), "Received unknown parameter: emial");
    let nested = check_rejected(&server, "address[street]=x", "address[street]").await;
    assert_eq!(nested.error_code(), Some("parameter_unknown"));
    let id = server.create_customer("name=a").await;
    let update_only_unknown = server
        .post(&format!("/v1/customers/{id}"), "test_clock=clock_1")
        .await;
    assert_eq!(update_only_unknown.status, 400);
    assert_eq!(update_only_unknown.error_param(), Some("test_clock"));
    let retrieve = server.get(&format!("/v1/customers/{id}?foo=bar")).await;
    assert_eq!(retrieve.status, 400);
    assert_eq!(retrieve.error_param(), Some("foo"));
}

#[tokio::test]
async fn malformed_brackets_are_400_naming_the_key() {
    let server = start().await;
    check_rejected(&server, "address[line1=x", "address[line1").await;
    check_rejected(&server, "address=&address[city]=x", "address[city]").await;
}

#[tokio::test]
async fn maximum_lengths_count_characters() {
    let server = start().await;
    let cases = [
        (format!("email={}%40example.com", "a".repeat(501)), "email"),
        (format!("name={}", "n".repeat(257)), "name"),
        (format!("phone={}", "1".repeat(21)), "phone"),
        (format!("description={}", "d".repeat(5001)), "description"),
        (
            format!("address[line1]={}", "l".repeat(5001)),
            "address[line1]",
        ),
        (
            format!("metadata[{}]=v", "k".repeat(41)),
            &*format!("metadata[{}]", "k".repeat(41)),
        ),
        (
            format!("metadata[plan]={}", "v".repeat(501)),
            "metadata[plan]",
        ),
    ];
    for (body, param) in &cases {
        check_rejected(&server, body, param).await;
    }
    // At the limit, in multi-byte characters: 20 characters but 40 bytes.
    let phone = "é".repeat(20);
    let reply = server
        .post(
            "/v1/customers",
            &format!("phone={phone}&name={}", "n".repeat(256)),
        )
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert!(
        server.handle.customers().len() == 1,
        "only the valid one stored"
    );
}

#[tokio::test]
async fn metadata_key_count_is_limited_to_50() {
    let server = start().await;
    let fifty: Vec<String> = (0..50)
        .map(|index| format!("metadata[k{index}]=v"))
        .collect();
    let ok = server.post("/v1/customers", &fifty.join("&")).await;
    assert_eq!(ok.status, 200);
    check_rejected(
        &server,
        &format!("{}&metadata[k50]=v", fifty.join("&")),
        "metadata",
    )
    .await;
}

#[tokio::test]
async fn enums_formats_and_integers_are_checked() {
    let server = start().await;
    let tax_exempt = check_rejected(&server, "tax_exempt=partial", "tax_exempt").await;
    assert!(tax_exempt
        .error_message()
        .contains("none, exempt, or reverse"));
    for prefix in ["AB", "ABCDEFGHIJKLM", "abc1", "AB-1"] {
        check_rejected(
            &server,
            &format!("invoice_prefix={prefix}"),
            "invoice_prefix",
        )
        .await;
    }
    let balance = check_rejected(&server, "balance=12.50", "balance").await;
    assert_eq!(balance.error_code(), Some("parameter_invalid_integer"));
    check_rejected(
        &server,
        "next_invoice_sequence=seven",
        "next_invoice_sequence",
    )
    .await;
    let reply = server
        .post(
            "/v1/customers",
            "tax_exempt=reverse&invoice_prefix=ACME12&balance=-1500&next_invoice_sequence=42",
        )
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.body["tax_exempt"], "reverse");
    assert_eq!(reply.body["invoice_prefix"], "ACME12");
    assert_eq!(reply.body["balance"], -1500);
    assert_eq!(reply.body["next_invoice_sequence"], 42);
}

#[tokio::test]
async fn shipping_requires_name_and_address() {
    let server = start().await;
    let missing_name =
        check_rejected(&server, "shipping[address][city]=Paris", "shipping[name]").await;
    assert_eq!(missing_name.error_code(), Some("parameter_missing"));
    check_rejected(&server, "shipping[name]=Ann", "shipping[address]").await;
    check_rejected(&server, "shipping=somewhere", "shipping").await;
}

#[tokio::test]
async fn malformed_email_is_email_invalid() {
    let server = start().await;
    for email in ["not-an-email", "a%40b", "a+b%40exa+mple.com"] {
        let reply = check_rejected(&server, &format!("email={email}"), "email").await;
        assert_eq!(reply.error_code(), Some("email_invalid"), "{email}");
    }
}

#[tokio::test]
async fn unrecognized_urls_are_404() {
    let server = start().await;
    let reply = server.get("/v1/charges").await;
    assert_eq!(reply.status, 404);
    assert!(reply
        .error_message()
        .starts_with("Unrecognized request URL (GET: /v1/charges)"));
    let wrong_method = send(server.request(Method::PUT, "/v1/customers")).await;
    assert_eq!(wrong_method.status, 404);
    assert!(wrong_method.header("request-id").is_some());
}
