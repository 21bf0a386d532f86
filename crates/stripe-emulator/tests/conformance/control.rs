//! The `/_emulator` control API and the in-process handle: reset, seed, customers as stored,
//! the request log, counters, and settings.

use serde_json::json;

use crate::common::start;

#[tokio::test]
async fn seeded_customers_are_stored_and_listed_as_stored_regardless_of_search_delay() {
    let server = start().await;
    let (status, body) = server
        .control_post(
            "/_emulator/customers",
            &json!([
                {"id": "cus_seeded000001", "email": "a@example.com", "created": 1000, "metadata": {"k": "v"}},
                {"email": "b@example.com", "balance": 500}
            ]),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["ids"][0], "cus_seeded000001");
    let created = server
        .create_customer("email=c%40example.com&metadata[x]=y")
        .await;
    let listed = server.control_get("/_emulator/customers").await;
    let data = listed["data"].as_array().unwrap();
    assert_eq!(data.len(), 3);
    assert_eq!(
        data[0]["id"],
        created.as_str(),
        "newest first, new customers included at once"
    );
    assert_eq!(data[0]["metadata"], json!({"x": "y"}));
    let seeded = server.get("/v1/customers/cus_seeded000001").await;
    assert_eq!(seeded.body["metadata"], json!({"k": "v"}));
    assert_eq!(seeded.body["created"], 1000);

    let (status, body) = server
        .control_post("/_emulator/customers", &json!({"email": "not-an-email"}))
        .await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("email"));
    let (status, _) = server
        .control_post("/_emulator/customers", &json!({"id": "cus_seeded000001"}))
        .await;
    assert_eq!(status, 400, "duplicate id");
}

#[tokio::test]
async fn the_request_log_records_what_was_received() {
    let server = start().await;
    server
        .post_idempotent(
            "/v1/customers",
            "email=a%40example.com&metadata[k]=v",
            "key-1",
        )
        .await;
    server.get("/v1/customers?limit=3").await;
    server.post("/v1/customers", "bogus=1").await;
    let requests = server.control_get("/_emulator/requests").await;
    let requests = requests["data"].as_array().unwrap();
    assert_eq!(requests.len(), 3);
    assert_eq!(requests[0]["method"], "POST");
    assert_eq!(requests[0]["path"], "/v1/customers");
    assert_eq!(requests[0]["endpoint"], "POST /v1/customers");
    assert_eq!(
        requests[0]["params"],
        json!({"email": "a@example.com", "metadata": {"k": "v"}})
    );
    assert_eq!(requests[0]["idempotency_key"], "key-1");
    assert_eq!(requests[0]["status"], 200);
    assert_eq!(requests[0]["fault"], serde_json::Value::Null);
    assert_eq!(requests[0]["executed"], true);
    assert!(requests[0]["request_id"]
        .as_str()
        .unwrap()
        .starts_with("req_"));
    assert_eq!(requests[1]["params"], json!({"limit": "3"}));
    assert_eq!(requests[2]["status"], 400);
    assert_eq!(requests[2]["executed"], false);
    assert_eq!(server.handle.requests().len(), 3);
}

#[tokio::test]
async fn counters_group_by_endpoint_template_and_status() {
    let server = start().await;
    let first = server.create_customer("name=a").await;
    let second = server.create_customer("name=b").await;
    server
        .post(&format!("/v1/customers/{first}"), "name=x")
        .await;
    server
        .post(&format!("/v1/customers/{second}"), "name=y")
        .await;
    server.get("/v1/customers/cus_nothere000000").await;
    server.get("/v1/nothing").await;
    let counters = server.control_get("/_emulator/counters").await;
    assert_eq!(counters["total"], 6);
    assert_eq!(counters["by_endpoint"]["POST /v1/customers"]["200"], 2);
    assert_eq!(counters["by_endpoint"]["POST /v1/customers/{id}"]["200"], 2);
    assert_eq!(counters["by_endpoint"]["GET /v1/customers/{id}"]["404"], 1);
    assert_eq!(counters["by_endpoint"]["unrecognized"]["404"], 1);
    assert_eq!(
        server
            .handle
            .counters()
            .count("POST /v1/customers/{id}", "200"),
        2
    );
}

#[tokio::test]
async fn reset_forgets_customers_keys_log_and_counters() {
    let server = start().await;
    server
        .post_idempotent("/v1/customers", "name=a", "key-1")
        .await;
    let (status, _) = server.control_post("/_emulator/reset", &json!({})).await;
    assert_eq!(status, 200);
    assert!(server.handle.customers().is_empty());
    assert!(server.handle.requests().is_empty());
    assert_eq!(server.handle.counters().total, 0);
    let again = server
        .post_idempotent("/v1/customers", "name=a", "key-1")
        .await;
    assert_eq!(again.header("idempotent-replayed"), None, "keys forgotten");
}

#[tokio::test]
async fn config_reads_and_rejects_unknown_fields() {
    let server = start().await;
    let config = server.control_get("/_emulator/config").await;
    assert_eq!(config["rate_limits"]["enabled"], false);
    assert_eq!(config["search_delay_ms"], 300);
    assert_eq!(config["faults"]["latency_ms"], 0);
    let (status, body) = server
        .control_post(
            "/_emulator/config",
            &json!({"search_delay_ms": 0, "fault_seed": 9}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["search_delay_ms"], 0);
    assert_eq!(body["fault_seed"], 9);
    let (status, _) = server
        .control_post("/_emulator/config", &json!({"colour": "blue"}))
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn an_in_process_emulator_starts_on_a_free_port_and_stops() {
    let server = start().await;
    assert!(server.url.starts_with("http://127.0.0.1:"));
    assert_ne!(server.emulator.local_addr().port(), 0);
    assert_eq!(server.get("/v1/balance").await.status, 200);
    let url = server.url.clone();
    let client = server.client.clone();
    server.emulator.stop().await;
    let after = client.get(format!("{url}/v1/balance")).send().await;
    assert!(after.is_err(), "nothing listens after stop");
}
