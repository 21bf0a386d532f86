//! Customer create, retrieve, update, delete and balance: response shapes and update semantics.

use serde_json::{json, Value};

use crate::common::start;

#[tokio::test]
async fn create_returns_a_stripe_shaped_customer_with_request_id() {
    let server = start().await;
    let reply = server
        .post(
            "/v1/customers",
            "email=ann%40example.com&name=Ann&phone=%2B33123",
        )
        .await;
    assert_eq!(reply.status, 200);
    assert!(reply.header("request-id").unwrap().starts_with("req_"));
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let customer = &reply.body;
    let id = customer["id"].as_str().unwrap();
    assert!(id.starts_with("cus_") && id.len() == 18, "{id}");
    assert_eq!(customer["object"], "customer");
    assert!(customer["created"].as_i64().unwrap() > 1_600_000_000);
    assert_eq!(customer["livemode"], false);
    assert_eq!(customer["email"], "ann@example.com");
    assert_eq!(customer["name"], "Ann");
    assert_eq!(customer["phone"], "+33123");
    for (field, default) in [
        ("description", Value::Null),
        ("address", Value::Null),
        ("shipping", Value::Null),
        ("metadata", json!({})),
        ("preferred_locales", json!([])),
        ("tax_exempt", json!("none")),
        ("balance", json!(0)),
        ("next_invoice_sequence", json!(1)),
        ("currency", Value::Null),
        ("delinquent", json!(false)),
        ("default_source", Value::Null),
    ] {
        assert_eq!(customer[field], default, "{field}");
    }
    assert!(customer["invoice_prefix"].as_str().unwrap().len() == 8);
    assert_eq!(customer["invoice_settings"]["footer"], Value::Null);
    assert_eq!(server.handle.customers(), vec![customer.clone()]);
}

#[tokio::test]
async fn retrieve_returns_the_stored_customer() {
    let server = start().await;
    let id = server
        .create_customer("email=a%40example.com&metadata[k]=v")
        .await;
    let reply = server.get(&format!("/v1/customers/{id}")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, server.handle.customer(&id).unwrap());
}

#[tokio::test]
async fn update_keeps_unsent_fields_and_merges_metadata() {
    let server = start().await;
    let id = server
        .create_customer("email=a%40example.com&name=Ann&metadata[a]=1&metadata[b]=2&description=d")
        .await;
    let reply = server
        .post(
            &format!("/v1/customers/{id}"),
            "name=Ann+Lee&metadata[b]=20&metadata[c]=3",
        )
        .await;
    assert_eq!(reply.status, 200);
    let stored = server.handle.customer(&id).unwrap();
    assert_eq!(stored["email"], "a@example.com");
    assert_eq!(stored["description"], "d");
    assert_eq!(stored["name"], "Ann Lee");
    assert_eq!(stored["metadata"], json!({"a": "1", "b": "20", "c": "3"}));
    assert_eq!(reply.body, stored);
}

#[tokio::test]
async fn empty_values_delete_keys_and_clear_fields() {
    let server = start().await;
    let id = server
        .create_customer(
            "metadata[a]=1&metadata[b]=2&address[city]=Paris&shipping[name]=A&shipping[address][city]=Lyon&tax_exempt=exempt&preferred_locales[0]=fr&name=Ann",
        )
        .await;
    let path = format!("/v1/customers/{id}");
    server.post(&path, "metadata[a]=").await;
    assert_eq!(
        server.handle.customer(&id).unwrap()["metadata"],
        json!({"b": "2"})
    );
    let reply = server
        .post(
            &path,
            "metadata=&address=&shipping=&tax_exempt=&preferred_locales=&name=",
        )
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let stored = server.handle.customer(&id).unwrap();
    assert_eq!(stored["metadata"], json!({}));
    assert_eq!(stored["address"], Value::Null);
    assert_eq!(stored["shipping"], Value::Null);
    assert_eq!(stored["tax_exempt"], "none");
    assert_eq!(stored["preferred_locales"], json!([]));
    assert_eq!(stored["name"], "", "name= sets the empty string");
}

#[tokio::test]
async fn merged_metadata_over_50_keys_is_400() {
    let server = start().await;
    let fifty: Vec<String> = (0..50)
        .map(|index| format!("metadata[k{index}]=v"))
        .collect();
    let id = server.create_customer(&fifty.join("&")).await;
    let reply = server
        .post(&format!("/v1/customers/{id}"), "metadata[one_more]=v")
        .await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.error_param(), Some("metadata"));
    let replaced = server
        .post(
            &format!("/v1/customers/{id}"),
            "metadata[k0]=&metadata[one_more]=v",
        )
        .await;
    assert_eq!(replaced.status, 200, "a deletion makes room");
}

#[tokio::test]
async fn delete_then_retrieve_returns_the_deleted_stub() {
    let server = start().await;
    let id = server.create_customer("email=a%40example.com").await;
    let path = format!("/v1/customers/{id}");
    let deleted = server.delete(&path).await;
    assert_eq!(deleted.status, 200);
    assert_eq!(
        deleted.body,
        json!({"id": id, "object": "customer", "deleted": true})
    );
    let retrieved = server.get(&path).await;
    assert_eq!(retrieved.status, 200);
    assert_eq!(
        retrieved.body,
        json!({"id": id, "object": "customer", "deleted": true})
    );
    assert!(server.handle.customers().is_empty());
    assert_eq!(server.delete(&path).await.status, 404);
    assert_eq!(server.post(&path, "name=x").await.status, 404);
}

#[tokio::test]
async fn unknown_id_is_404_resource_missing() {
    let server = start().await;
    let path = "/v1/customers/cus_doesnotexist00";
    for reply in [
        server.get(path).await,
        server.post(path, "name=x").await,
        server.delete(path).await,
    ] {
        assert_eq!(reply.status, 404);
        assert_eq!(reply.error_code(), Some("resource_missing"));
        assert_eq!(reply.error_param(), Some("id"));
        assert_eq!(
            reply.error_message(),
            "No such customer: 'cus_doesnotexist00'"
        );
    }
}

#[tokio::test]
async fn balance_returns_a_balance_object() {
    let server = start().await;
    let reply = server.get("/v1/balance").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body["object"], "balance");
    assert_eq!(reply.body["available"][0]["currency"], "usd");
    assert!(reply.header("request-id").unwrap().starts_with("req_"));
}
