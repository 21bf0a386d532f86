//! Products: create (with a chosen id), retrieve, update, delete (refused while prices exist),
//! list and its filters, validation, `default_price`, events, restricted keys, and the pipeline
//! (idempotency, rate limits, faults, request log) as for customers.

use ferry_stripe_emulator::{
    Access, CatalogWriteError, EmulatorConfig, FaultConfig, RateLimits, RestrictedKey,
};
use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{send, start, start_with, test_config, Reply, TestServer};

fn ids(reply: &Reply) -> Vec<String> {
    reply.body["data"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|object| object["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn check_rejected(server: &TestServer, path: &str, body: &str, param: &str) -> Reply {
    let reply = server.post(path, body).await;
    assert_eq!(reply.status, 400, "{body}: {:?}", reply.body);
    assert_eq!(reply.error_type(), Some("invalid_request_error"), "{body}");
    assert_eq!(reply.error_param(), Some(param), "{body}");
    reply
}

#[tokio::test]
async fn create_returns_a_stripe_shaped_product() {
    let server = start().await;
    let reply = server
        .post("/v1/products", "name=Gold+Plan&description=The+best")
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert!(reply.header("request-id").unwrap().starts_with("req_"));
    let product = &reply.body;
    let id = product["id"].as_str().unwrap();
    assert!(id.starts_with("prod_") && id.len() == 19, "{id}");
    assert_eq!(
        product.as_object().unwrap().keys().collect::<Vec<_>>(),
        vec![
            "id",
            "object",
            "active",
            "created",
            "default_price",
            "description",
            "images",
            "marketing_features",
            "livemode",
            "metadata",
            "name",
            "package_dimensions",
            "shippable",
            "statement_descriptor",
            "tax_code",
            "unit_label",
            "updated",
            "url"
        ],
        "the keys of Stripe's documented product, in its order"
    );
    assert_eq!(product["object"], "product");
    assert!(product["created"].as_i64().unwrap() > 1_600_000_000);
    assert_eq!(product["updated"], product["created"]);
    assert_eq!(product["livemode"], false);
    assert_eq!(product["name"], "Gold Plan");
    assert_eq!(product["description"], "The best");
    for (field, default) in [
        ("active", json!(true)),
        ("default_price", Value::Null),
        ("images", json!([])),
        ("marketing_features", json!([])),
        ("metadata", json!({})),
        ("package_dimensions", Value::Null),
        ("shippable", Value::Null),
        ("statement_descriptor", Value::Null),
        ("tax_code", Value::Null),
        ("unit_label", Value::Null),
        ("url", Value::Null),
    ] {
        assert_eq!(product[field], default, "{field}");
    }
    assert_eq!(server.handle.products(), vec![product.clone()]);
    let full = server
        .post(
            "/v1/products",
            "name=Box&shippable=true&active=false&images[0]=https%3A%2F%2Fx.co%2Fa.png&marketing_features[0][name]=Sturdy&package_dimensions[height]=1.5&package_dimensions[length]=2&package_dimensions[weight]=10&package_dimensions[width]=3&statement_descriptor=ACME+BOX&tax_code=txcd_99999999&unit_label=box&url=https%3A%2F%2Fx.co",
        )
        .await;
    assert_eq!(full.status, 200, "{:?}", full.body);
    assert_eq!(full.body["shippable"], true);
    assert_eq!(full.body["active"], false);
    assert_eq!(full.body["images"], json!(["https://x.co/a.png"]));
    assert_eq!(full.body["marketing_features"], json!([{"name": "Sturdy"}]));
    assert_eq!(
        full.body["package_dimensions"],
        json!({"height": 1.5, "length": 2.0, "weight": 10.0, "width": 3.0})
    );
    assert_eq!(full.body["statement_descriptor"], "ACME BOX");
    assert_eq!(full.body["unit_label"], "box");
}

#[tokio::test]
async fn a_chosen_id_is_kept_and_a_taken_one_is_400_resource_already_exists() {
    let server = start().await;
    let created = server.post("/v1/products", "id=gold+plan&name=Gold").await;
    assert_eq!(created.status, 200, "{:?}", created.body);
    assert_eq!(created.body["id"], "gold plan");
    let retrieved = server.get("/v1/products/gold%20plan").await;
    assert_eq!(
        retrieved.status, 200,
        "ids are percent-decoded from the path"
    );
    assert_eq!(retrieved.body, created.body);
    let taken = server.post("/v1/products", "id=gold+plan&name=Other").await;
    assert_eq!(taken.status, 400);
    assert_eq!(taken.error_code(), Some("resource_already_exists"));
    assert_eq!(taken.error_param(), Some("id"));
    assert_eq!(taken.error_message(), "Product already exists.");
    assert_eq!(server.handle.products().len(), 1);
    assert_eq!(server.handle.product("gold plan").unwrap()["name"], "Gold");
}

#[tokio::test]
async fn params_are_validated_by_the_product_table() {
    let server = start().await;
    let missing = check_rejected(&server, "/v1/products", "description=d", "name").await;
    assert_eq!(missing.error_code(), Some("parameter_missing"));
    assert_eq!(missing.error_message(), "Missing required param: name.");
    let unknown = check_rejected(&server, "/v1/products", "name=a&type=service", "type").await;
    assert_eq!(unknown.error_code(), Some("parameter_unknown"));
    let nine: Vec<String> = (0..9)
        .map(|index| format!("images[{index}]=u{index}"))
        .collect();
    check_rejected(
        &server,
        "/v1/products",
        &format!("name=a&{}", nine.join("&")),
        "images",
    )
    .await;
    check_rejected(&server, "/v1/products", "name=a&active=yes", "active").await;
    check_rejected(
        &server,
        "/v1/products",
        &format!("name=a&statement_descriptor={}", "S".repeat(23)),
        "statement_descriptor",
    )
    .await;
    check_rejected(
        &server,
        "/v1/products",
        "name=a&statement_descriptor=12345",
        "statement_descriptor",
    )
    .await;
    check_rejected(
        &server,
        "/v1/products",
        "name=a&package_dimensions[height]=1&package_dimensions[length]=1&package_dimensions[weight]=1",
        "package_dimensions[width]",
    )
    .await;
    check_rejected(
        &server,
        "/v1/products",
        "name=a&package_dimensions[height]=tall&package_dimensions[length]=1&package_dimensions[weight]=1&package_dimensions[width]=1",
        "package_dimensions[height]",
    )
    .await;
    check_rejected(
        &server,
        "/v1/products",
        &format!("name=a&unit_label={}", "u".repeat(13)),
        "unit_label",
    )
    .await;
    check_rejected(
        &server,
        "/v1/products",
        &format!("name={}", "n".repeat(5001)),
        "name",
    )
    .await;
    assert!(server.handle.products().is_empty(), "nothing stored");
    let id = server.create_product("name=a").await;
    let empty = check_rejected(&server, &format!("/v1/products/{id}"), "name=", "name").await;
    assert_eq!(empty.error_code(), Some("parameter_invalid_empty"));
}

#[tokio::test]
async fn id_is_create_only_and_default_price_update_only() {
    let server = start().await;
    let id = server.create_product("name=a").await;
    let id_on_update =
        check_rejected(&server, &format!("/v1/products/{id}"), "id=other", "id").await;
    assert_eq!(id_on_update.error_code(), Some("parameter_unknown"));
    let default_on_create = check_rejected(
        &server,
        "/v1/products",
        "name=b&default_price=price_1",
        "default_price",
    )
    .await;
    assert_eq!(default_on_create.error_code(), Some("parameter_unknown"));
}

#[tokio::test]
async fn retrieve_returns_the_stored_product_and_an_unknown_id_is_404() {
    let server = start().await;
    let id = server.create_product("name=a&metadata[k]=v").await;
    let reply = server.get(&format!("/v1/products/{id}")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, server.handle.product(&id).unwrap());
    let path = "/v1/products/prod_doesnotexist0";
    for reply in [
        server.get(path).await,
        server.post(path, "name=x").await,
        server.delete(path).await,
    ] {
        assert_eq!(reply.status, 404, "{:?}", reply.body);
        assert_eq!(reply.error_code(), Some("resource_missing"));
        assert_eq!(reply.error_param(), Some("id"));
        assert_eq!(
            reply.error_message(),
            "No such product: 'prod_doesnotexist0'"
        );
    }
}

#[tokio::test]
async fn update_keeps_unsent_fields_merges_metadata_unsets_and_bumps_updated() {
    let server = start().await;
    let id = server.handle.seed_product(json!({
        "name": "Gold", "created": 1_000, "description": "d", "url": "https://x.co",
        "images": ["a", "b"], "metadata": {"a": "1", "b": "2"},
        "package_dimensions": {"height": 1, "length": 2, "weight": 3, "width": 4}
    }));
    let path = format!("/v1/products/{id}");
    let reply = server
        .post(
            &path,
            "name=Gold+2&metadata[a]=&metadata[c]=3&description=&images=&package_dimensions[height]=9&package_dimensions[length]=9&package_dimensions[weight]=9&package_dimensions[width]=9",
        )
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let stored = server.handle.product(&id).unwrap();
    assert_eq!(reply.body, stored);
    assert_eq!(stored["name"], "Gold 2");
    assert_eq!(stored["url"], "https://x.co", "unsent fields stay");
    assert_eq!(stored["metadata"], json!({"b": "2", "c": "3"}));
    assert_eq!(stored["description"], Value::Null);
    assert_eq!(stored["images"], json!([]));
    assert_eq!(
        stored["package_dimensions"],
        json!({"height": 9.0, "length": 9.0, "weight": 9.0, "width": 9.0})
    );
    assert_eq!(stored["created"], 1_000);
    assert!(stored["updated"].as_i64().unwrap() > 1_000, "updated moves");
    let cleared = server
        .post(&path, "url=&package_dimensions=&metadata=&active=false")
        .await;
    assert_eq!(cleared.status, 200, "{:?}", cleared.body);
    assert_eq!(cleared.body["url"], Value::Null);
    assert_eq!(cleared.body["package_dimensions"], Value::Null);
    assert_eq!(cleared.body["metadata"], json!({}));
    assert_eq!(cleared.body["active"], false);
    let fifty: Vec<String> = (0..50)
        .map(|index| format!("metadata[k{index}]=v"))
        .collect();
    assert_eq!(server.post(&path, &fifty.join("&")).await.status, 200);
    let over = server.post(&path, "metadata[one_more]=v").await;
    assert_eq!(over.status, 400);
    assert_eq!(over.error_param(), Some("metadata"));
}

#[tokio::test]
async fn default_price_must_name_an_active_price_of_this_product_and_can_be_unset() {
    let server = start().await;
    let product = server.create_product("name=A").await;
    let other_product = server.create_product("name=B").await;
    let own = server
        .create_price(&format!("product={product}&currency=usd&unit_amount=100"))
        .await;
    let archived = server
        .create_price(&format!(
            "product={product}&currency=usd&unit_amount=50&active=false"
        ))
        .await;
    let foreign = server
        .create_price(&format!(
            "product={other_product}&currency=usd&unit_amount=100"
        ))
        .await;
    let path = format!("/v1/products/{product}");
    let unknown = check_rejected(
        &server,
        &path,
        "default_price=price_nothere000000",
        "default_price",
    )
    .await;
    assert_eq!(unknown.error_code(), Some("resource_missing"));
    assert_eq!(
        unknown.error_message(),
        "No such price: 'price_nothere000000'"
    );
    check_rejected(
        &server,
        &path,
        &format!("default_price={foreign}"),
        "default_price",
    )
    .await;
    check_rejected(
        &server,
        &path,
        &format!("default_price={archived}"),
        "default_price",
    )
    .await;
    assert_eq!(
        server.handle.product(&product).unwrap()["default_price"],
        Value::Null
    );
    let set = server.post(&path, &format!("default_price={own}")).await;
    assert_eq!(set.status, 200, "{:?}", set.body);
    assert_eq!(set.body["default_price"], own.as_str());
    // An empty value unsets it (before that price is archived, say).
    let unset = server.post(&path, "default_price=").await;
    assert_eq!(unset.status, 200, "{:?}", unset.body);
    assert_eq!(unset.body["default_price"], Value::Null);
}

#[tokio::test]
async fn delete_is_refused_while_the_product_has_prices() {
    let server = start().await;
    let priced = server.create_product("name=Priced").await;
    let price = server
        .create_price(&format!("product={priced}&currency=usd&unit_amount=100"))
        .await;
    let refused = server.delete(&format!("/v1/products/{priced}")).await;
    assert_eq!(refused.status, 400, "{:?}", refused.body);
    assert_eq!(refused.error_type(), Some("invalid_request_error"));
    assert_eq!(
        refused.error_message(),
        "This product cannot be deleted because it has one or more user-created prices."
    );
    server
        .post(&format!("/v1/prices/{price}"), "active=false")
        .await;
    let still = server.delete(&format!("/v1/products/{priced}")).await;
    assert_eq!(still.status, 400, "archived prices still count");
    assert!(server.handle.product(&priced).is_some());

    let bare = server.create_product("id=bare&name=Bare").await;
    let deleted = server.delete(&format!("/v1/products/{bare}")).await;
    assert_eq!(deleted.status, 200);
    assert_eq!(
        deleted.body,
        json!({"id": "bare", "object": "product", "deleted": true})
    );
    let gone = server.get("/v1/products/bare").await;
    assert_eq!(gone.status, 404);
    assert_eq!(gone.error_code(), Some("resource_missing"));
    assert_eq!(server.delete("/v1/products/bare").await.status, 404);
    assert_eq!(server.post("/v1/products/bare", "name=x").await.status, 404);
    assert!(server.handle.product("bare").is_none());
    let again = server.post("/v1/products", "id=bare&name=Again").await;
    assert_eq!(again.status, 200, "a deleted product's id is free again");
}

#[tokio::test]
async fn list_newest_first_with_filters_and_cursors() {
    let server = start().await;
    let seed = |product: Value| server.handle.seed_product(product);
    let p1 = seed(
        json!({"name": "p1", "created": 1_000, "shippable": true, "url": "https://a.example"}),
    );
    let p2 = seed(json!({"name": "p2", "created": 2_000, "active": false}));
    let p3 = seed(json!({"name": "p3", "created": 3_000, "shippable": false}));
    let p4 = seed(json!({"name": "p4", "created": 3_000}));
    let all = server.get("/v1/products").await;
    assert_eq!(all.status, 200);
    assert_eq!(all.body["object"], "list");
    assert_eq!(all.body["url"], "/v1/products");
    assert_eq!(all.body["has_more"], false);
    let owned = |list: &[&String]| list.iter().map(|id| (*id).clone()).collect::<Vec<String>>();
    assert_eq!(ids(&all), owned(&[&p4, &p3, &p2, &p1]));
    let first = server.get("/v1/products?limit=2").await;
    assert_eq!(
        (ids(&first), first.body["has_more"].clone()),
        (vec![p4.clone(), p3.clone()], json!(true))
    );
    let next = server
        .get(&format!("/v1/products?limit=2&starting_after={p3}"))
        .await;
    assert_eq!(
        (ids(&next), next.body["has_more"].clone()),
        (vec![p2.clone(), p1.clone()], json!(false))
    );
    let back = server
        .get(&format!("/v1/products?limit=2&ending_before={p1}"))
        .await;
    assert_eq!(ids(&back), vec![p3.clone(), p2.clone()]);
    let cases = [
        ("active=false", vec![&p2]),
        ("active=true", vec![&p4, &p3, &p1]),
        (&*format!("ids[]={p1}&ids[]={p3}"), vec![&p3, &p1]),
        ("created[gte]=2000", vec![&p4, &p3, &p2]),
        ("created=1000", vec![&p1]),
        ("shippable=true", vec![&p1]),
        ("shippable=false", vec![&p4, &p3, &p2]),
        ("url=https%3A%2F%2Fa.example", vec![&p1]),
    ];
    for (query, expected) in cases {
        let reply = server.get(&format!("/v1/products?{query}")).await;
        assert_eq!(reply.status, 200, "{query}: {:?}", reply.body);
        assert_eq!(ids(&reply), owned(&expected), "{query}");
    }
    for (query, param, status) in [
        (format!("ids[]={p1}&starting_after={p2}"), "ids", 400),
        ("active=maybe".to_owned(), "active", 400),
        ("limit=0".to_owned(), "limit", 400),
        ("limit=101".to_owned(), "limit", 400),
        ("name=p1".to_owned(), "name", 400),
        (
            "starting_after=prod_nothere00000".to_owned(),
            "starting_after",
            404,
        ),
    ] {
        let reply = server.get(&format!("/v1/products?{query}")).await;
        assert_eq!(reply.status, status, "{query}: {:?}", reply.body);
        assert_eq!(reply.error_param(), Some(param), "{query}");
    }
    let both = server
        .get(&format!(
            "/v1/products?starting_after={p1}&ending_before={p2}"
        ))
        .await;
    assert_eq!(both.status, 400);
}

#[tokio::test]
async fn writes_record_product_created_updated_and_deleted_events() {
    let server = start().await;
    let created = send(
        server
            .form_post("/v1/products", "name=Old&metadata[k]=v")
            .header("idempotency-key", "product-create-1"),
    )
    .await;
    assert_eq!(created.status, 200);
    let event = server.newest_event().await;
    assert_eq!(event["type"], "product.created");
    assert!(event["id"].as_str().unwrap().starts_with("evt_"));
    assert_eq!(event["data"], json!({"object": created.body}));
    assert_eq!(
        event["request"],
        json!({"id": created.header("request-id").unwrap(), "idempotency_key": "product-create-1"})
    );
    assert_eq!(event["created"], created.body["created"]);

    let seeded = server
        .handle
        .seed_product(json!({"name": "Old", "created": 1_000, "metadata": {"k": "v"}}));
    let updated = server
        .post(
            &format!("/v1/products/{seeded}"),
            "name=New&metadata[added]=1",
        )
        .await;
    assert_eq!(updated.status, 200);
    let event = server.newest_event().await;
    assert_eq!(event["type"], "product.updated");
    assert_eq!(event["data"]["object"], updated.body);
    assert_eq!(
        event["data"]["previous_attributes"],
        json!({"metadata": {"added": null}, "name": "Old", "updated": 1_000})
    );
    let before = server.handle.events().len();
    let no_op = server
        .post(&format!("/v1/products/{seeded}"), "name=New")
        .await;
    assert_eq!(no_op.status, 200);
    assert_eq!(
        no_op.body, updated.body,
        "nothing changed, not even `updated`"
    );
    assert_eq!(server.handle.events().len(), before, "no event for a no-op");

    let deleted = server.delete(&format!("/v1/products/{seeded}")).await;
    assert_eq!(deleted.status, 200);
    let event = server.newest_event().await;
    assert_eq!(event["type"], "product.deleted");
    assert_eq!(event["data"], json!({"object": updated.body}), "as it was");
    let filtered = server.get("/v1/events?type=product.*").await;
    assert_eq!(filtered.body["data"].as_array().unwrap().len(), 4);
}

#[tokio::test]
async fn restricted_keys_need_product_permissions() {
    let server = start_with(EmulatorConfig {
        restricted_keys: vec![
            RestrictedKey {
                products: Access::Read,
                ..RestrictedKey::new("rk_test_productreader")
            },
            "rk_test_customersonly:customers=write".parse().unwrap(),
            "rk_test_productwriter:products=write".parse().unwrap(),
        ],
        ..test_config()
    })
    .await;
    let id = server.create_product("name=a").await;
    let as_key = |key: &str, method: Method, path: &str| {
        server
            .client
            .request(method, format!("{}{path}", server.url))
            .bearer_auth(key)
    };
    let reader = "rk_test_productreader";
    assert_eq!(
        send(as_key(reader, Method::GET, "/v1/products"))
            .await
            .status,
        200
    );
    assert_eq!(
        send(as_key(reader, Method::GET, &format!("/v1/products/{id}")))
            .await
            .status,
        200
    );
    let create = send(
        as_key(reader, Method::POST, "/v1/products")
            .header("content-type", "application/x-www-form-urlencoded")
            .body("name=b"),
    )
    .await;
    assert_eq!(create.status, 403);
    assert!(create.error_message().contains("rak_product_write"));
    assert!(!create.error_message().contains(reader), "key redacted");
    let delete = send(as_key(
        reader,
        Method::DELETE,
        &format!("/v1/products/{id}"),
    ))
    .await;
    assert_eq!(delete.status, 403);
    let customers_only = send(as_key("rk_test_customersonly", Method::GET, "/v1/products")).await;
    assert_eq!(customers_only.status, 403);
    assert!(customers_only.error_message().contains("rak_product_read"));
    let writer = send(
        as_key("rk_test_productwriter", Method::POST, "/v1/products")
            .header("content-type", "application/x-www-form-urlencoded")
            .body("name=c"),
    )
    .await;
    assert_eq!(writer.status, 200);
    assert_eq!(server.handle.products().len(), 2);
}

#[tokio::test]
async fn product_writes_are_idempotent_and_logged_like_customer_writes() {
    let server = start().await;
    let first = server
        .post_idempotent("/v1/products", "name=a&id=idem", "key-p1")
        .await;
    assert_eq!(first.status, 200);
    let replay = server
        .post_idempotent("/v1/products", "name=a&id=idem", "key-p1")
        .await;
    assert_eq!(
        replay.status, 200,
        "a replay, not a taken id: {:?}",
        replay.body
    );
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    assert_eq!(replay.body, first.body);
    let other = server
        .post_idempotent("/v1/products", "name=b&id=idem", "key-p1")
        .await;
    assert_eq!(other.status, 400);
    assert_eq!(other.error_type(), Some("idempotency_error"));
    let taken = server
        .post_idempotent("/v1/products", "name=a&id=idem", "key-p2")
        .await;
    assert_eq!(taken.status, 400, "the taken id is found while executing");
    let taken_again = server
        .post_idempotent("/v1/products", "name=a&id=idem", "key-p2")
        .await;
    assert_eq!(
        taken_again.header("idempotent-replayed"),
        Some("true"),
        "and stored under the key"
    );
    server.post("/v1/products/idem", "name=c").await;
    server.get("/v1/products/idem").await;
    let requests = server.handle.requests();
    assert_eq!(requests[0].endpoint.as_deref(), Some("POST /v1/products"));
    assert_eq!(requests[0].params, json!({"name": "a", "id": "idem"}));
    assert_eq!(requests[0].idempotency_key.as_deref(), Some("key-p1"));
    assert!(requests[0].executed && requests[1].replayed);
    let counters = server.handle.counters();
    assert_eq!(counters.count("POST /v1/products", "200"), 2);
    assert_eq!(counters.count("POST /v1/products", "400"), 3);
    assert_eq!(counters.count("POST /v1/products/{id}", "200"), 1);
    assert_eq!(counters.count("GET /v1/products/{id}", "200"), 1);
}

#[tokio::test]
async fn rate_limits_and_faults_apply_to_product_routes() {
    let server = start_with(EmulatorConfig {
        rate_limits: RateLimits {
            global_test_per_sec: 1000,
            endpoint_per_sec: 2,
            ..RateLimits::default()
        },
        fault_seed: Some(3),
        ..test_config()
    })
    .await;
    server.create_product("name=a").await;
    server.create_product("name=b").await;
    let limited = server.post("/v1/products", "name=c").await;
    assert_eq!(limited.status, 429);
    assert_eq!(limited.error_code(), Some("rate_limit"));
    assert_eq!(
        limited.header("stripe-rate-limited-reason"),
        Some("endpoint-rate")
    );
    assert_eq!(
        server.get("/v1/products").await.status,
        200,
        "its own bucket"
    );
    server.handle.set_rate_limits(RateLimits::disabled());

    server.handle.set_faults(FaultConfig {
        server_error_rate: 1.0,
        ..FaultConfig::default()
    });
    let failed = server.post("/v1/products", "name=d").await;
    assert!(
        [500, 502, 503].contains(&failed.status),
        "{}",
        failed.status
    );
    assert_eq!(failed.error_type(), Some("api_error"));
    assert_eq!(server.handle.products().len(), 2, "not executed");

    server.handle.set_faults(FaultConfig {
        lose_response_rate: 1.0,
        ..FaultConfig::default()
    });
    let lost = server
        .form_post("/v1/products", "name=e&id=lost")
        .header("idempotency-key", "key-lost")
        .send()
        .await;
    assert!(lost.is_err(), "the response is lost");
    assert!(
        server.handle.product("lost").is_some(),
        "but the write stands"
    );
    server.handle.set_faults(FaultConfig::default());
    let retried = server
        .post_idempotent("/v1/products", "name=e&id=lost", "key-lost")
        .await;
    assert_eq!(retried.status, 200);
    assert_eq!(retried.header("idempotent-replayed"), Some("true"));
}

#[tokio::test]
async fn products_are_seeded_listed_updated_and_deleted_over_the_control_api() {
    let server = start().await;
    let (status, body) = server
        .control_post(
            "/_emulator/products",
            &json!([
                {"id": "gold", "name": "Gold", "created": 1_000, "metadata": {"k": "v"}},
                {"name": "Silver", "livemode": true}
            ]),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ids"][0], "gold");
    let listed = server.control_get("/_emulator/products").await;
    let data = listed["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data[0]["name"], "Silver", "newest first");
    assert_eq!(data[0]["livemode"], true);
    assert_eq!(data[1]["created"], 1_000);
    assert_eq!(data[1]["updated"], 1_000);
    let event = server.newest_event().await;
    assert_eq!(event["type"], "product.created");
    assert_eq!(event["request"]["id"], Value::Null);

    let (status, body) = server
        .control_post("/_emulator/products", &json!({"description": "no name"}))
        .await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("name"), "{body}");
    let (status, _) = server
        .control_post(
            "/_emulator/products",
            &json!({"id": "gold", "name": "Again"}),
        )
        .await;
    assert_eq!(status, 400, "a taken id");

    let (status, body) = server
        .control_post("/_emulator/products/gold", &json!({"active": false}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["active"], false);
    let event = server.newest_event().await;
    assert_eq!(event["type"], "product.updated");
    assert_eq!(event["request"]["id"], Value::Null);
    assert_eq!(
        server
            .handle
            .update_product("nothere", json!({"name": "x"})),
        Err(CatalogWriteError::NoSuch {
            object: "product",
            id: "nothere".into()
        })
    );
    let (status, _) = server
        .control_post("/_emulator/products/nothere", &json!({"name": "x"}))
        .await;
    assert_eq!(status, 404);
    let (status, _) = server.control_delete("/_emulator/products/gold").await;
    assert_eq!(status, 200);
    assert_eq!(server.newest_event().await["type"], "product.deleted");
    assert!(server.handle.product("gold").is_none());
    let (status, _) = server.control_post("/_emulator/reset", &json!({})).await;
    assert_eq!(status, 200);
    assert!(server.handle.products().is_empty());
}
