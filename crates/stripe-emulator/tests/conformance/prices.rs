//! Prices: create (per-unit, decimal, recurring, tiered, with `product_data`), retrieve, the
//! few mutable fields of update, no delete, lookup keys (unique, transferred), list and its
//! filters, events, restricted keys, and the pipeline (idempotency, rate limits, faults) as for
//! customers.

use ferry_stripe_emulator::{
    Access, CatalogWriteError, EmulatorConfig, FaultConfig, RateLimits, RestrictedKey,
};
use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{send, start, start_with, test_config, Reply, TestServer};

fn ids(reply: &Reply) -> Vec<String> {
    reply.body["data"]
        .as_array()
        .unwrap_or_else(|| panic!("a list: {:?}", reply.body))
        .iter()
        .map(|object| object["id"].as_str().unwrap().to_owned())
        .collect()
}

fn owned(list: &[&String]) -> Vec<String> {
    list.iter().map(|id| (*id).clone()).collect()
}

async fn check_rejected(server: &TestServer, path: &str, body: &str, param: &str) -> Reply {
    let reply = server.post(path, body).await;
    assert_eq!(reply.status, 400, "{body}: {:?}", reply.body);
    assert_eq!(reply.error_type(), Some("invalid_request_error"), "{body}");
    assert_eq!(reply.error_param(), Some(param), "{body}");
    reply
}

const TIERED: &str = "currency=usd&billing_scheme=tiered&tiers_mode=graduated&recurring[interval]=month&tiers[0][up_to]=10&tiers[0][unit_amount]=500&tiers[1][up_to]=inf&tiers[1][unit_amount_decimal]=400.5&tiers[1][flat_amount]=100";

#[tokio::test]
async fn create_returns_a_stripe_shaped_one_time_price() {
    let server = start().await;
    let product = server.create_product("name=Gold").await;
    let reply = server
        .post(
            "/v1/prices",
            &format!("product={product}&currency=USD&unit_amount=1000&nickname=Gold&lookup_key=gold&metadata[k]=v"),
        )
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert!(reply.header("request-id").unwrap().starts_with("req_"));
    let price = &reply.body;
    let id = price["id"].as_str().unwrap();
    assert!(id.starts_with("price_") && id.len() == 20, "{id}");
    assert_eq!(
        price.as_object().unwrap().keys().collect::<Vec<_>>(),
        vec![
            "id",
            "object",
            "active",
            "billing_scheme",
            "created",
            "currency",
            "custom_unit_amount",
            "livemode",
            "lookup_key",
            "metadata",
            "nickname",
            "product",
            "recurring",
            "tax_behavior",
            "tiers_mode",
            "transform_quantity",
            "type",
            "unit_amount",
            "unit_amount_decimal"
        ],
        "the keys of Stripe's documented price, in its order; no tiers unless expanded"
    );
    for (field, expected) in [
        ("object", json!("price")),
        ("active", json!(true)),
        ("billing_scheme", json!("per_unit")),
        ("currency", json!("usd")),
        ("custom_unit_amount", Value::Null),
        ("livemode", json!(false)),
        ("lookup_key", json!("gold")),
        ("metadata", json!({"k": "v"})),
        ("nickname", json!("Gold")),
        ("product", json!(product)),
        ("recurring", Value::Null),
        ("tax_behavior", json!("unspecified")),
        ("tiers_mode", Value::Null),
        ("transform_quantity", Value::Null),
        ("type", json!("one_time")),
        ("unit_amount", json!(1000)),
        ("unit_amount_decimal", json!("1000")),
    ] {
        assert_eq!(price[field], expected, "{field}");
    }
    assert!(price["created"].as_i64().unwrap() > 1_600_000_000);
    assert_eq!(server.handle.prices(), vec![price.clone()]);
    let decimal = server
        .post(
            "/v1/prices",
            &format!("product={product}&currency=eur&unit_amount_decimal=12.50"),
        )
        .await;
    assert_eq!(decimal.status, 200, "{:?}", decimal.body);
    assert_eq!(decimal.body["unit_amount"], Value::Null);
    assert_eq!(decimal.body["unit_amount_decimal"], "12.5");
}

#[tokio::test]
async fn recurring_makes_a_recurring_price() {
    let server = start().await;
    let product = server.create_product("name=Gold").await;
    let monthly = server
        .post(
            "/v1/prices",
            &format!("product={product}&currency=usd&unit_amount=900&recurring[interval]=month&recurring[interval_count]=3"),
        )
        .await;
    assert_eq!(monthly.status, 200, "{:?}", monthly.body);
    assert_eq!(monthly.body["type"], "recurring");
    assert_eq!(
        monthly.body["recurring"],
        json!({"aggregate_usage": null, "interval": "month", "interval_count": 3, "trial_period_days": null, "usage_type": "licensed"})
    );
    let metered = server
        .post(
            "/v1/prices",
            &format!("product={product}&currency=usd&unit_amount_decimal=0.25&recurring[interval]=day&recurring[usage_type]=metered&recurring[aggregate_usage]=max&transform_quantity[divide_by]=10&transform_quantity[round]=up"),
        )
        .await;
    assert_eq!(metered.status, 200, "{:?}", metered.body);
    assert_eq!(metered.body["recurring"]["usage_type"], "metered");
    assert_eq!(metered.body["recurring"]["aggregate_usage"], "max");
    assert_eq!(
        metered.body["transform_quantity"],
        json!({"divide_by": 10, "round": "up"})
    );
    let base = format!("product={product}&currency=usd&unit_amount=1");
    check_rejected(
        &server,
        "/v1/prices",
        &format!("{base}&recurring[interval]=month&recurring[interval_count]=37"),
        "recurring[interval_count]",
    )
    .await;
    check_rejected(
        &server,
        "/v1/prices",
        &format!("{base}&recurring[interval]=month&recurring[aggregate_usage]=sum"),
        "recurring[aggregate_usage]",
    )
    .await;
    check_rejected(
        &server,
        "/v1/prices",
        &format!("{base}&recurring[interval_count]=2"),
        "recurring[interval]",
    )
    .await;
    assert_eq!(server.handle.prices().len(), 2);
}

#[tokio::test]
async fn the_product_must_exist_or_product_data_creates_it() {
    let server = start().await;
    let unknown = check_rejected(
        &server,
        "/v1/prices",
        "product=prod_nope&currency=usd&unit_amount=1",
        "product",
    )
    .await;
    assert_eq!(unknown.error_code(), Some("resource_missing"));
    assert_eq!(unknown.error_message(), "No such product: 'prod_nope'");
    let neither = check_rejected(
        &server,
        "/v1/prices",
        "currency=usd&unit_amount=1",
        "product",
    )
    .await;
    assert_eq!(
        neither.error_message(),
        "You must specify either `product` or `product_data` when creating a price."
    );
    let both = check_rejected(
        &server,
        "/v1/prices",
        "product=prod_nope&product_data[name]=x&currency=usd&unit_amount=1",
        "product",
    )
    .await;
    assert_eq!(
        both.error_message(),
        "You may only specify one of these parameters: product, product_data."
    );
    check_rejected(&server, "/v1/prices", "product=p&unit_amount=1", "currency").await;
    check_rejected(
        &server,
        "/v1/prices",
        "product=p&currency=xyz&unit_amount=1",
        "currency",
    )
    .await;
    assert!(server.handle.prices().is_empty() && server.handle.products().is_empty());

    let inline = server
        .post(
            "/v1/prices",
            "currency=usd&unit_amount=1&product_data[id]=inline&product_data[name]=Inline&product_data[metadata][k]=v&product_data[unit_label]=seat",
        )
        .await;
    assert_eq!(inline.status, 200, "{:?}", inline.body);
    assert_eq!(inline.body["product"], "inline");
    let product = server.get("/v1/products/inline").await;
    assert_eq!(product.status, 200);
    assert_eq!(product.body["name"], "Inline");
    assert_eq!(product.body["metadata"], json!({"k": "v"}));
    assert_eq!(product.body["unit_label"], "seat");
    let events = server.get("/v1/events?limit=2").await;
    let types: Vec<&str> = events.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, vec!["price.created", "product.created"]);
    let generated = server
        .post(
            "/v1/prices",
            "currency=usd&unit_amount=1&product_data[name]=Gen",
        )
        .await;
    assert!(generated.body["product"]
        .as_str()
        .unwrap()
        .starts_with("prod_"));
    let taken = check_rejected(
        &server,
        "/v1/prices",
        "currency=usd&unit_amount=1&product_data[id]=inline&product_data[name]=Again",
        "product_data[id]",
    )
    .await;
    assert_eq!(taken.error_code(), Some("resource_already_exists"));
}

#[tokio::test]
async fn per_unit_prices_need_one_amount_and_tiered_prices_need_recurring_tiers() {
    let server = start().await;
    let product = server.create_product("name=Gold").await;
    let no_amount = check_rejected(
        &server,
        "/v1/prices",
        &format!("product={product}&currency=usd"),
        "unit_amount",
    )
    .await;
    assert_eq!(
        no_amount.error_message(),
        "Prices require an `unit_amount` or `unit_amount_decimal` parameter to be set."
    );
    check_rejected(
        &server,
        "/v1/prices",
        &format!("product={product}&currency=usd&unit_amount=1&unit_amount_decimal=1.5"),
        "unit_amount",
    )
    .await;
    check_rejected(
        &server,
        "/v1/prices",
        &format!("product={product}&currency=usd&unit_amount=-5"),
        "unit_amount",
    )
    .await;
    let one_time = check_rejected(
        &server,
        "/v1/prices",
        &format!("product={product}&currency=usd&billing_scheme=tiered&tiers_mode=volume&tiers[0][up_to]=inf&tiers[0][unit_amount]=5"),
        "interval",
    )
    .await;
    assert_eq!(
        one_time.error_message(),
        "Prices with `type=one_time` are not supported with tiered billing."
    );
    check_rejected(
        &server,
        "/v1/prices",
        &format!("product={product}&currency=usd&billing_scheme=tiered&tiers_mode=volume&recurring[interval]=month&tiers[0][up_to]=10&tiers[0][unit_amount]=5&tiers[1][up_to]=5&tiers[1][unit_amount]=4&tiers[2][up_to]=inf&tiers[2][unit_amount]=3"),
        "tiers[1][up_to]",
    )
    .await;
    assert!(server.handle.prices().is_empty());

    let tiered = server
        .post("/v1/prices", &format!("product={product}&{TIERED}"))
        .await;
    assert_eq!(tiered.status, 200, "{:?}", tiered.body);
    assert_eq!(tiered.body["billing_scheme"], "tiered");
    assert_eq!(tiered.body["tiers_mode"], "graduated");
    assert_eq!(tiered.body["unit_amount"], Value::Null);
    assert_eq!(tiered.body["unit_amount_decimal"], Value::Null);
    assert!(
        tiered.body.get("tiers").is_none(),
        "tiers only when expanded"
    );
    let id = tiered.id();
    let expected_tiers = json!([
        {"flat_amount": null, "flat_amount_decimal": null, "unit_amount": 500, "unit_amount_decimal": "500", "up_to": 10},
        {"flat_amount": 100, "flat_amount_decimal": "100", "unit_amount": null, "unit_amount_decimal": "400.5", "up_to": null}
    ]);
    let expanded = server.get(&format!("/v1/prices/{id}?expand[]=tiers")).await;
    assert_eq!(expanded.status, 200, "{:?}", expanded.body);
    assert_eq!(expanded.body["tiers"], expected_tiers);
    let listed = server.get("/v1/prices?expand[]=data.tiers").await;
    assert_eq!(listed.body["data"][0]["tiers"], expected_tiers);
    let plain_list = server.get("/v1/prices").await;
    assert!(plain_list.body["data"][0].get("tiers").is_none());
    assert_eq!(
        server.handle.price(&id).unwrap()["tiers"],
        expected_tiers,
        "as stored"
    );
}

#[tokio::test]
async fn lookup_keys_are_unique_and_transfer_lookup_key_moves_them() {
    let server = start().await;
    let product = server.create_product("name=Gold").await;
    let base = format!("product={product}&currency=usd");
    let holder = server
        .create_price(&format!("{base}&unit_amount=100&lookup_key=gold"))
        .await;
    let conflict = check_rejected(
        &server,
        "/v1/prices",
        &format!("{base}&unit_amount=200&lookup_key=gold"),
        "lookup_key",
    )
    .await;
    assert_eq!(
        conflict.error_message(),
        format!("A price (`{holder}`) already uses that lookup key.")
    );
    server
        .post(&format!("/v1/prices/{holder}"), "active=false")
        .await;
    check_rejected(
        &server,
        "/v1/prices",
        &format!("{base}&unit_amount=200&lookup_key=gold"),
        "lookup_key",
    )
    .await;
    assert_eq!(
        server.handle.prices().len(),
        1,
        "an archived holder still holds it"
    );

    let successor = server
        .post(
            "/v1/prices",
            &format!("{base}&unit_amount=200&lookup_key=gold&transfer_lookup_key=true"),
        )
        .await;
    assert_eq!(successor.status, 200, "{:?}", successor.body);
    assert_eq!(successor.body["lookup_key"], "gold");
    let old = server.get(&format!("/v1/prices/{holder}")).await;
    assert_eq!(old.body["lookup_key"], Value::Null);
    assert_eq!(
        old.body["active"], false,
        "the old price is otherwise unchanged"
    );
    let events = server.get("/v1/events?limit=2").await;
    let events = events.body["data"].as_array().unwrap();
    assert_eq!(events[0]["type"], "price.created");
    assert_eq!(events[1]["type"], "price.updated");
    assert_eq!(events[1]["data"]["object"]["id"], holder.as_str());
    assert_eq!(
        events[1]["data"]["previous_attributes"],
        json!({"lookup_key": "gold"})
    );

    let third = server
        .create_price(&format!("{base}&unit_amount=300"))
        .await;
    let third_path = format!("/v1/prices/{third}");
    check_rejected(&server, &third_path, "lookup_key=gold", "lookup_key").await;
    let moved = server
        .post(&third_path, "lookup_key=gold&transfer_lookup_key=true")
        .await;
    assert_eq!(moved.status, 200, "{:?}", moved.body);
    assert_eq!(moved.body["lookup_key"], "gold");
    assert_eq!(
        server.handle.price(&successor.id()).unwrap()["lookup_key"],
        Value::Null
    );
    let own = server.post(&third_path, "lookup_key=gold").await;
    assert_eq!(own.status, 200, "re-sending its own key is no conflict");
    let removed = server.post(&third_path, "lookup_key=").await;
    assert_eq!(removed.body["lookup_key"], Value::Null);
    server
        .create_price(&format!("{base}&unit_amount=400&lookup_key=gold"))
        .await;
}

#[tokio::test]
async fn update_accepts_only_the_mutable_fields() {
    let server = start().await;
    let product = server.create_product("name=Gold").await;
    let id = server
        .create_price(&format!(
            "product={product}&currency=usd&unit_amount=100&nickname=n&metadata[k]=v"
        ))
        .await;
    let path = format!("/v1/prices/{id}");
    for (body, param) in [
        ("unit_amount=200", "unit_amount"),
        ("unit_amount_decimal=2", "unit_amount_decimal"),
        ("currency=eur", "currency"),
        ("product=prod_other", "product"),
        ("recurring[interval]=month", "recurring"),
        ("billing_scheme=tiered", "billing_scheme"),
        ("tiers_mode=volume", "tiers_mode"),
        ("product_data[name]=x", "product_data"),
    ] {
        let reply = check_rejected(&server, &path, body, param).await;
        assert_eq!(reply.error_code(), Some("parameter_unknown"), "{body}");
        assert_eq!(
            reply.error_message(),
            format!("Received unknown parameter: {param}")
        );
    }
    let updated = server
        .post(
            &path,
            "nickname=&metadata[k]=&metadata[n]=1&active=false&tax_behavior=exclusive",
        )
        .await;
    assert_eq!(updated.status, 200, "{:?}", updated.body);
    assert_eq!(updated.body["nickname"], Value::Null);
    assert_eq!(updated.body["metadata"], json!({"n": "1"}));
    assert_eq!(updated.body["active"], false);
    assert_eq!(updated.body["tax_behavior"], "exclusive");
    assert_eq!(updated.body["unit_amount"], 100);
    assert_eq!(updated.body, server.handle.price(&id).unwrap());
}

#[tokio::test]
async fn tax_behavior_cannot_change_once_inclusive_or_exclusive() {
    let server = start().await;
    let product = server.create_product("name=Gold").await;
    let id = server
        .create_price(&format!("product={product}&currency=usd&unit_amount=100"))
        .await;
    let path = format!("/v1/prices/{id}");
    let set = server.post(&path, "tax_behavior=inclusive").await;
    assert_eq!(set.status, 200);
    assert_eq!(
        server.post(&path, "tax_behavior=inclusive").await.status,
        200
    );
    check_rejected(&server, &path, "tax_behavior=exclusive", "tax_behavior").await;
    check_rejected(&server, &path, "tax_behavior=unspecified", "tax_behavior").await;
    check_rejected(&server, &path, "tax_behavior=sometimes", "tax_behavior").await;
    assert_eq!(
        server.handle.price(&id).unwrap()["tax_behavior"],
        "inclusive"
    );
}

#[tokio::test]
async fn the_default_price_of_a_product_cannot_be_archived() {
    let server = start().await;
    let product = server.create_product("name=Gold").await;
    let first = server
        .create_price(&format!("product={product}&currency=usd&unit_amount=100"))
        .await;
    let second = server
        .create_price(&format!("product={product}&currency=usd&unit_amount=200"))
        .await;
    let product_path = format!("/v1/products/{product}");
    server
        .post(&product_path, &format!("default_price={first}"))
        .await;
    check_rejected(
        &server,
        &format!("/v1/prices/{first}"),
        "active=false",
        "active",
    )
    .await;
    server
        .post(&product_path, &format!("default_price={second}"))
        .await;
    let archived = server
        .post(&format!("/v1/prices/{first}"), "active=false")
        .await;
    assert_eq!(archived.status, 200, "{:?}", archived.body);
}

#[tokio::test]
async fn prices_cannot_be_deleted() {
    let server = start().await;
    let product = server.create_product("name=Gold").await;
    let id = server
        .create_price(&format!("product={product}&currency=usd&unit_amount=100"))
        .await;
    let reply = server.delete(&format!("/v1/prices/{id}")).await;
    assert_eq!(reply.status, 404);
    assert!(reply.error_message().starts_with(&format!(
        "Unrecognized request URL (DELETE: /v1/prices/{id})"
    )));
    assert!(server.handle.price(&id).is_some());
    assert_eq!(server.handle.counters().count("unrecognized", "404"), 1);
    let search = server.get("/v1/prices/search?query=active:'true'").await;
    assert_eq!(
        (search.status, &search.body["object"]),
        (200, &serde_json::json!("search_result")),
        "`search` is a route of its own, not a price id"
    );
}

#[tokio::test]
async fn an_unknown_price_is_404_naming_the_price_param() {
    let server = start().await;
    for reply in [
        server.get("/v1/prices/price_nope").await,
        server.post("/v1/prices/price_nope", "nickname=x").await,
    ] {
        assert_eq!(reply.status, 404, "{:?}", reply.body);
        assert_eq!(reply.error_code(), Some("resource_missing"));
        assert_eq!(reply.error_param(), Some("price"));
        assert_eq!(reply.error_message(), "No such price: 'price_nope'");
    }
}

#[tokio::test]
async fn list_shows_active_prices_newest_first_with_filters_and_cursors() {
    let server = start().await;
    let gold = server
        .handle
        .seed_product(json!({"id": "gold", "name": "Gold"}));
    let silver = server
        .handle
        .seed_product(json!({"id": "silver", "name": "Silver"}));
    let seed = |price: Value| server.handle.seed_price(price);
    let one_time = seed(
        json!({"product": gold, "currency": "usd", "unit_amount": 100, "created": 1_000, "lookup_key": "a"}),
    );
    let monthly = seed(
        json!({"product": gold, "currency": "usd", "unit_amount": 200, "created": 2_000, "lookup_key": "b", "recurring": {"interval": "month"}}),
    );
    let metered = seed(
        json!({"product": silver, "currency": "eur", "unit_amount": 1, "created": 3_000, "recurring": {"interval": "month", "usage_type": "metered"}}),
    );
    let yearly = seed(
        json!({"product": silver, "currency": "eur", "unit_amount": 300, "created": 3_000, "recurring": {"interval": "year"}}),
    );
    let archived = seed(
        json!({"product": gold, "currency": "usd", "unit_amount": 50, "created": 4_000, "active": false, "lookup_key": "c"}),
    );
    let all = server.get("/v1/prices").await;
    assert_eq!(all.status, 200, "{:?}", all.body);
    assert_eq!(all.body["object"], "list");
    assert_eq!(all.body["url"], "/v1/prices");
    assert_eq!(
        ids(&all),
        owned(&[&yearly, &metered, &monthly, &one_time]),
        "active prices only unless asked"
    );
    let cases = [
        ("active=false", vec![&archived]),
        ("product=gold", vec![&monthly, &one_time]),
        ("product=gold&active=false", vec![&archived]),
        ("currency=EUR", vec![&yearly, &metered]),
        ("type=one_time", vec![&one_time]),
        ("type=recurring", vec![&yearly, &metered, &monthly]),
        (
            "lookup_keys[]=a&lookup_keys[]=b&lookup_keys[]=c",
            vec![&monthly, &one_time],
        ),
        ("lookup_keys[0]=c&active=false", vec![&archived]),
        ("recurring[interval]=month", vec![&metered, &monthly]),
        ("recurring[usage_type]=metered", vec![&metered]),
        ("created[lt]=3000", vec![&monthly, &one_time]),
        ("limit=2", vec![&yearly, &metered]),
        (
            &*format!("limit=2&starting_after={metered}"),
            vec![&monthly, &one_time],
        ),
        (
            &*format!("limit=1&ending_before={one_time}"),
            vec![&monthly],
        ),
    ];
    for (query, expected) in cases {
        let reply = server.get(&format!("/v1/prices?{query}")).await;
        assert_eq!(reply.status, 200, "{query}: {:?}", reply.body);
        assert_eq!(ids(&reply), owned(&expected), "{query}");
    }
    assert_eq!(
        server.get("/v1/prices?limit=2").await.body["has_more"],
        true
    );
    let eleven: Vec<String> = (0..11)
        .map(|index| format!("lookup_keys[]=k{index}"))
        .collect();
    for (query, param, status) in [
        (eleven.join("&"), "lookup_keys", 400),
        ("product=prod_nope".to_owned(), "product", 400),
        ("type=sometimes".to_owned(), "type", 400),
        ("currency=xyz".to_owned(), "currency", 400),
        ("active=maybe".to_owned(), "active", 400),
        ("recurring[meter]=m".to_owned(), "recurring[meter]", 400),
        (
            "recurring[interval]=fortnight".to_owned(),
            "recurring[interval]",
            400,
        ),
        ("nickname=n".to_owned(), "nickname", 400),
        ("limit=101".to_owned(), "limit", 400),
        (
            "starting_after=price_nope".to_owned(),
            "starting_after",
            404,
        ),
    ] {
        let reply = server.get(&format!("/v1/prices?{query}")).await;
        assert_eq!(reply.status, status, "{query}: {:?}", reply.body);
        assert_eq!(reply.error_param(), Some(param), "{query}");
    }
    let unknown_product = server.get("/v1/prices?product=prod_nope").await;
    assert_eq!(
        unknown_product.error_message(),
        "No such product: 'prod_nope'"
    );
}

#[tokio::test]
async fn writes_record_price_created_and_updated_events() {
    let server = start().await;
    let product = server.create_product("name=Gold").await;
    let created = send(
        server
            .form_post(
                "/v1/prices",
                &format!("product={product}&{TIERED}&nickname=old&metadata[k]=v"),
            )
            .header("idempotency-key", "price-create-1")
            .header("stripe-version", "2024-06-20"),
    )
    .await;
    assert_eq!(created.status, 200, "{:?}", created.body);
    let event = server.newest_event().await;
    assert_eq!(event["type"], "price.created");
    assert_eq!(event["api_version"], "2024-06-20");
    assert_eq!(
        event["data"],
        json!({"object": created.body}),
        "no tiers in events"
    );
    assert_eq!(
        event["request"],
        json!({"id": created.header("request-id").unwrap(), "idempotency_key": "price-create-1"})
    );
    let id = created.id();
    let updated = server
        .post(
            &format!("/v1/prices/{id}"),
            "nickname=new&metadata[k]=&active=false",
        )
        .await;
    assert_eq!(updated.status, 200);
    let event = server.newest_event().await;
    assert_eq!(event["type"], "price.updated");
    assert_eq!(event["data"]["object"], updated.body);
    assert_eq!(
        event["data"]["previous_attributes"],
        json!({"active": true, "metadata": {"k": "v"}, "nickname": "old"})
    );
    let before = server.handle.events().len();
    let no_op = server
        .post(&format!("/v1/prices/{id}"), "nickname=new")
        .await;
    assert_eq!(no_op.status, 200);
    let refused = server
        .post(&format!("/v1/prices/{id}"), "unit_amount=5")
        .await;
    assert_eq!(refused.status, 400);
    assert_eq!(
        server.handle.events().len(),
        before,
        "no event for a no-op or a refusal"
    );
    let price_events = server.get("/v1/events?type=price.*").await;
    assert_eq!(price_events.body["data"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn restricted_keys_need_price_permissions() {
    let server = start_with(EmulatorConfig {
        restricted_keys: vec![
            RestrictedKey {
                prices: Access::Read,
                ..RestrictedKey::new("rk_test_pricereader")
            },
            "rk_test_productsonly:products=write".parse().unwrap(),
            "rk_live_catalog:products=write,prices=write"
                .parse()
                .unwrap(),
        ],
        ..test_config()
    })
    .await;
    let product = server.create_product("id=gold&name=Gold").await;
    let id = server
        .create_price(&format!("product={product}&currency=usd&unit_amount=100"))
        .await;
    let as_key = |key: &str, method: Method, path: &str| {
        server
            .client
            .request(method, format!("{}{path}", server.url))
            .bearer_auth(key)
            .header("content-type", "application/x-www-form-urlencoded")
    };
    let reader = "rk_test_pricereader";
    assert_eq!(
        send(as_key(reader, Method::GET, "/v1/prices")).await.status,
        200
    );
    assert_eq!(
        send(as_key(reader, Method::GET, &format!("/v1/prices/{id}")))
            .await
            .status,
        200
    );
    let update =
        send(as_key(reader, Method::POST, &format!("/v1/prices/{id}")).body("nickname=x")).await;
    assert_eq!(update.status, 403);
    assert!(update.error_message().contains("rak_price_write"));
    let products_only = send(
        as_key("rk_test_productsonly", Method::POST, "/v1/prices")
            .body("product=gold&currency=usd&unit_amount=1"),
    )
    .await;
    assert_eq!(products_only.status, 403);
    assert!(products_only.error_message().contains("rak_price_write"));
    let list = send(as_key("rk_test_productsonly", Method::GET, "/v1/prices")).await;
    assert_eq!(list.status, 403);
    assert!(list.error_message().contains("rak_price_read"));
    let live = send(
        as_key("rk_live_catalog", Method::POST, "/v1/prices")
            .body("product=gold&currency=usd&unit_amount=1"),
    )
    .await;
    assert_eq!(live.status, 200, "{:?}", live.body);
    assert_eq!(live.body["livemode"], true);
    assert_eq!(server.handle.prices().len(), 2);
}

#[tokio::test]
async fn price_writes_are_idempotent_rate_limited_and_faulted_like_customer_writes() {
    let server = start_with(EmulatorConfig {
        rate_limits: RateLimits {
            global_test_per_sec: 1000,
            endpoint_per_sec: 2,
            ..RateLimits::default()
        },
        fault_seed: Some(5),
        ..test_config()
    })
    .await;
    server
        .handle
        .seed_product(json!({"id": "gold", "name": "Gold"}));
    let body = "product=gold&currency=usd&unit_amount=100&lookup_key=gold";
    let first = server
        .post_idempotent("/v1/prices", body, "key-price")
        .await;
    assert_eq!(first.status, 200, "{:?}", first.body);
    let replay = server
        .post_idempotent("/v1/prices", body, "key-price")
        .await;
    assert_eq!(replay.status, 200, "a replay, not a lookup key conflict");
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    assert_eq!(replay.body, first.body);
    let limited = server
        .post_idempotent("/v1/prices", body, "key-other")
        .await;
    assert_eq!(limited.status, 429);
    assert_eq!(
        limited.header("stripe-rate-limited-reason"),
        Some("endpoint-rate")
    );
    let update = server
        .post(&format!("/v1/prices/{}", first.id()), "nickname=n")
        .await;
    assert_eq!(update.status, 200, "updates have their own bucket");
    server.handle.set_rate_limits(RateLimits::disabled());

    server.handle.set_faults(FaultConfig {
        lock_timeout_rate: 1.0,
        ..FaultConfig::default()
    });
    let locked = server
        .post("/v1/prices", "product=gold&currency=usd&unit_amount=5")
        .await;
    assert_eq!(locked.status, 429);
    assert_eq!(locked.error_code(), Some("lock_timeout"));
    assert_eq!(server.handle.prices().len(), 1);
    server.handle.set_faults(FaultConfig {
        lose_response_rate: 1.0,
        ..FaultConfig::default()
    });
    let lost = server
        .form_post("/v1/prices", "product=gold&currency=usd&unit_amount=7")
        .header("idempotency-key", "key-lost")
        .send()
        .await;
    assert!(lost.is_err());
    assert_eq!(server.handle.prices().len(), 2, "the write stands");
    server.handle.set_faults(FaultConfig::default());
    let retried = server
        .post_idempotent(
            "/v1/prices",
            "product=gold&currency=usd&unit_amount=7",
            "key-lost",
        )
        .await;
    assert_eq!(retried.header("idempotent-replayed"), Some("true"));
    assert_eq!(server.handle.prices().len(), 2);
    let counters = server.handle.counters();
    assert_eq!(counters.count("POST /v1/prices", "200"), 3);
    assert_eq!(counters.count("POST /v1/prices", "429"), 2);
    assert_eq!(counters.count("POST /v1/prices", "lost_response"), 1);
    assert_eq!(counters.count("POST /v1/prices/{id}", "200"), 1);
}

#[tokio::test]
async fn prices_are_seeded_listed_and_updated_over_the_control_api() {
    let server = start().await;
    server
        .control_post(
            "/_emulator/products",
            &json!({"id": "gold", "name": "Gold"}),
        )
        .await;
    let (status, body) = server
        .control_post(
            "/_emulator/prices",
            &json!([
                {"id": "price_seeded", "product": "gold", "currency": "usd", "unit_amount": 100, "lookup_key": "gold", "created": 1_000},
                {"product": "gold", "currency": "usd", "billing_scheme": "tiered", "tiers_mode": "volume",
                 "recurring": {"interval": "month"}, "tiers": [{"up_to": "inf", "unit_amount": 5}]}
            ]),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ids"][0], "price_seeded");
    let listed = server.control_get("/_emulator/prices").await;
    let data = listed["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(
        data[0]["tiers"][0]["up_to"],
        Value::Null,
        "as stored, tiers included"
    );
    assert_eq!(data[1]["id"], "price_seeded");
    assert_eq!(data[1]["created"], 1_000);
    let event = server.newest_event().await;
    assert_eq!(event["type"], "price.created");
    assert_eq!(event["request"]["id"], Value::Null);
    for (seed, needle) in [
        (
            json!({"product": "nothere", "currency": "usd", "unit_amount": 1}),
            "No such product",
        ),
        (
            json!({"product": "gold", "currency": "usd", "unit_amount": 1, "lookup_key": "gold"}),
            "already uses that lookup key",
        ),
        (json!({"product": "gold", "currency": "usd"}), "unit_amount"),
    ] {
        let (status, body) = server.control_post("/_emulator/prices", &seed).await;
        assert_eq!(status, 400, "{seed}");
        assert!(body["error"].as_str().unwrap().contains(needle), "{body}");
    }
    assert!(matches!(
        server.handle.try_seed_price(
            json!({"product": "gold", "currency": "usd", "unit_amount": 1, "id": "price_seeded"})
        ),
        Err(CatalogWriteError::Refused(_))
    ));
    let (status, body) = server
        .control_post(
            "/_emulator/prices/price_seeded",
            &json!({"lookup_key": "", "active": false}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["lookup_key"], Value::Null);
    let event = server.newest_event().await;
    assert_eq!(event["type"], "price.updated");
    assert_eq!(event["request"]["id"], Value::Null);
    let (status, _) = server
        .control_post("/_emulator/prices/price_nope", &json!({"active": false}))
        .await;
    assert_eq!(status, 404);
    let (status, _) = server
        .control_post("/_emulator/prices/price_seeded", &json!({"unit_amount": 5}))
        .await;
    assert_eq!(status, 400, "immutable through the control API too");
    server.control_post("/_emulator/reset", &json!({})).await;
    assert!(server.handle.prices().is_empty());
}
