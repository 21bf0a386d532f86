//! Subscriptions: create (status from collection method and trial, items carrying full prices,
//! periods), the stored-state checks of create (customer, prices, one currency and interval, no
//! price twice), updating, adding and deleting items, cancel and what a canceled subscription
//! still accepts, list and its filters, events, idempotency and restricted keys.

use ferry_stripe_emulator::{Access, EmulatorConfig, RestrictedKey};
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

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A customer, a product and its recurring prices.
struct Fixture {
    customer: String,
    monthly: String,
    monthly_other: String,
    yearly: String,
    monthly_eur: String,
    one_time: String,
}

async fn fixture(server: &TestServer) -> Fixture {
    let customer = server.create_customer("email=a%40b.co").await;
    let product = server.create_product("name=Gold").await;
    let price = |extra: &str| format!("product={product}&unit_amount=1000&{extra}");
    Fixture {
        customer,
        monthly: server
            .create_price(&price("currency=usd&recurring[interval]=month"))
            .await,
        monthly_other: server
            .create_price(&price(
                "currency=usd&recurring[interval]=month&nickname=other",
            ))
            .await,
        yearly: server
            .create_price(&price("currency=usd&recurring[interval]=year"))
            .await,
        monthly_eur: server
            .create_price(&price("currency=eur&recurring[interval]=month"))
            .await,
        one_time: server.create_price(&price("currency=usd")).await,
    }
}

async fn create(server: &TestServer, body: &str) -> Value {
    let reply = server.post("/v1/subscriptions", body).await;
    assert_eq!(reply.status, 200, "{body}: {:?}", reply.body);
    reply.body
}

async fn check_refused(
    server: &TestServer,
    path: &str,
    body: &str,
    param: Option<&str>,
    message: &str,
) -> Reply {
    let reply = server.post(path, body).await;
    assert_eq!(reply.status, 400, "{body}: {:?}", reply.body);
    assert_eq!(reply.error_type(), Some("invalid_request_error"), "{body}");
    assert_eq!(reply.error_param(), param, "{body}");
    assert_eq!(reply.error_message(), message, "{body}");
    reply
}

#[tokio::test]
async fn create_returns_a_stripe_shaped_subscription_with_full_prices() {
    let server = start().await;
    let f = fixture(&server).await;
    let before = now();
    let subscription = create(
        &server,
        &format!(
            "customer={}&items[0][price]={}&items[0][quantity]=2&items[0][metadata][seat]=a&metadata[external_id]=42&description=Gold",
            f.customer, f.monthly
        ),
    )
    .await;
    let id = subscription["id"].as_str().unwrap();
    assert!(id.starts_with("sub_") && id.len() == 18, "{id}");
    assert_eq!(
        subscription.as_object().unwrap().keys().collect::<Vec<_>>(),
        vec![
            "id",
            "object",
            "billing_cycle_anchor",
            "cancel_at",
            "cancel_at_period_end",
            "canceled_at",
            "collection_method",
            "created",
            "currency",
            "current_period_end",
            "current_period_start",
            "customer",
            "days_until_due",
            "description",
            "ended_at",
            "items",
            "livemode",
            "metadata",
            "start_date",
            "status",
            "trial_end",
            "trial_start"
        ]
    );
    for (field, expected) in [
        ("object", json!("subscription")),
        ("cancel_at", Value::Null),
        ("cancel_at_period_end", json!(false)),
        ("canceled_at", Value::Null),
        ("collection_method", json!("charge_automatically")),
        ("currency", json!("usd")),
        ("customer", json!(f.customer)),
        ("days_until_due", Value::Null),
        ("description", json!("Gold")),
        ("ended_at", Value::Null),
        ("livemode", json!(false)),
        ("metadata", json!({"external_id": "42"})),
        ("status", json!("incomplete")),
        ("trial_end", Value::Null),
        ("trial_start", Value::Null),
    ] {
        assert_eq!(subscription[field], expected, "{field}");
    }
    let created = subscription["created"].as_i64().unwrap();
    assert!(created >= before && created <= now());
    for field in ["start_date", "current_period_start", "billing_cycle_anchor"] {
        assert_eq!(subscription[field], created, "{field}");
    }
    let period = subscription["current_period_end"].as_i64().unwrap() - created;
    assert!(
        (28 * 86_400..=31 * 86_400).contains(&period),
        "one calendar month: {period}"
    );
    let items = &subscription["items"];
    assert_eq!(items["object"], "list");
    assert_eq!(items["has_more"], false);
    assert_eq!(items["total_count"], 1);
    assert_eq!(
        items["url"],
        format!("/v1/subscription_items?subscription={id}")
    );
    let item = &items["data"][0];
    assert!(item["id"].as_str().unwrap().starts_with("si_"));
    assert_eq!(item["object"], "subscription_item");
    assert_eq!(item["created"], created);
    assert_eq!(item["metadata"], json!({"seat": "a"}));
    assert_eq!(item["quantity"], 2);
    assert_eq!(item["subscription"], id);
    let price = server.get(&format!("/v1/prices/{}", f.monthly)).await;
    assert_eq!(item["price"], price.body, "the full price, as GET shows it");
    let retrieved = server.get(&format!("/v1/subscriptions/{id}")).await;
    assert_eq!(retrieved.status, 200);
    assert_eq!(retrieved.body, subscription);
    assert_eq!(server.handle.subscriptions(), vec![subscription.clone()]);
    assert_eq!(server.handle.subscription(id), Some(subscription.clone()));
    let missing = server.get("/v1/subscriptions/sub_nope").await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.error_code(), Some("resource_missing"));
    assert_eq!(missing.error_message(), "No such subscription: 'sub_nope'");
    assert_eq!(missing.error_param(), Some("id"));
    let product = server.create_product("name=Weekly").await;
    let fortnightly = server
        .create_price(&format!("product={product}&currency=usd&unit_amount=5&recurring[interval]=week&recurring[interval_count]=2"))
        .await;
    let weekly = create(
        &server,
        &format!("customer={}&items[0][price]={fortnightly}", f.customer),
    )
    .await;
    assert_eq!(
        weekly["current_period_end"].as_i64().unwrap()
            - weekly["current_period_start"].as_i64().unwrap(),
        14 * 86_400
    );
    assert_eq!(
        weekly["items"]["data"][0]["quantity"], 1,
        "quantity defaults to 1"
    );
    let renamed = server
        .post(&format!("/v1/prices/{}", f.monthly), "nickname=Renamed")
        .await;
    assert_eq!(renamed.status, 200);
    let reread = server.get(&format!("/v1/subscriptions/{id}")).await;
    assert_eq!(
        reread.body["items"]["data"][0]["price"], renamed.body,
        "items show their prices as they are now"
    );
    let before = server.handle.events().len();
    let same = server.post(&format!("/v1/subscriptions/{id}"), "").await;
    assert_eq!(same.body, reread.body);
    assert_eq!(
        server.handle.events().len(),
        before,
        "a changed price is no change of the subscription"
    );
    let tagged = server
        .post(&format!("/v1/subscriptions/{id}"), "metadata[k]=v")
        .await;
    let event = server.newest_event().await;
    assert_eq!(event["data"]["object"], tagged.body);
    assert_eq!(
        event["data"]["object"]["items"]["data"][0]["price"]["nickname"],
        "Renamed"
    );
    assert_eq!(
        event["data"]["previous_attributes"],
        json!({"metadata": {"k": null}})
    );
    let reread = server.get(&format!("/v1/subscriptions/{id}")).await;
    let listed = server.control_get("/_emulator/subscriptions").await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 2);
    assert_eq!(listed["data"][1], reread.body);
    assert_eq!(
        server.control_post("/_emulator/reset", &json!({})).await.0,
        200
    );
    assert!(
        server.handle.subscriptions().is_empty(),
        "reset forgets them"
    );
}

#[tokio::test]
async fn status_follows_the_collection_method_and_the_trial() {
    let server = start().await;
    let f = fixture(&server).await;
    let base = format!("customer={}&items[0][price]={}", f.customer, f.monthly);
    let invoiced = create(
        &server,
        &format!("{base}&collection_method=send_invoice&days_until_due=30"),
    )
    .await;
    assert_eq!(invoiced["status"], "active");
    assert_eq!(invoiced["collection_method"], "send_invoice");
    assert_eq!(invoiced["days_until_due"], 30);
    let trial_end = now() + 7 * 86_400;
    let trialing = create(&server, &format!("{base}&trial_end={trial_end}")).await;
    assert_eq!(trialing["status"], "trialing");
    assert_eq!(trialing["trial_end"], trial_end);
    assert_eq!(trialing["trial_start"], trialing["created"]);
    assert_eq!(trialing["current_period_start"], trialing["created"]);
    assert_eq!(
        trialing["current_period_end"], trial_end,
        "the trial is the first period"
    );
    let no_trial = create(&server, &format!("{base}&trial_end=now")).await;
    assert_eq!(no_trial["status"], "incomplete");
    assert_eq!(no_trial["trial_end"], Value::Null);
    let charged = create(&server, &base).await;
    assert_eq!(
        charged["status"], "incomplete",
        "no payment method: the first payment cannot be made"
    );
    check_refused(
        &server,
        "/v1/subscriptions",
        &format!("{base}&trial_end=1000"),
        Some("trial_end"),
        "Invalid timestamp: must be an integer Unix timestamp in the future.",
    )
    .await;
    check_refused(
        &server,
        "/v1/subscriptions",
        &format!("{base}&trial_end=soon"),
        Some("trial_end"),
        "Invalid trial_end: must be an integer Unix timestamp or `now`.",
    )
    .await;
    assert_eq!(server.handle.subscriptions().len(), 4);
}

#[tokio::test]
async fn create_checks_the_customer_and_the_prices() {
    let server = start().await;
    let f = fixture(&server).await;
    let path = "/v1/subscriptions";
    let customer = format!("customer={}", f.customer);
    let unknown = check_refused(
        &server,
        path,
        &format!("customer=cus_x&items[0][price]={}", f.monthly),
        Some("customer"),
        "No such customer: 'cus_x'",
    )
    .await;
    assert_eq!(unknown.error_code(), Some("resource_missing"));
    let no_price = check_refused(
        &server,
        path,
        &format!(
            "{customer}&items[0][price]={}&items[1][price]=price_x",
            f.monthly
        ),
        Some("items[1][price]"),
        "No such price: 'price_x'",
    )
    .await;
    assert_eq!(no_price.error_code(), Some("resource_missing"));
    check_refused(
        &server,
        path,
        &format!("{customer}&items[0][price]={}", f.one_time),
        Some("items[0][price]"),
        "The price specified is set to `type=one_time` but this field only accepts prices with `type=recurring`.",
    )
    .await;
    let archived = server
        .post(&format!("/v1/prices/{}", f.monthly_other), "active=false")
        .await;
    assert_eq!(archived.status, 200);
    check_refused(
        &server,
        path,
        &format!("{customer}&items[0][price]={}", f.monthly_other),
        Some("items[0][price]"),
        "The price specified is inactive. This field only accepts active prices.",
    )
    .await;
    check_refused(
        &server,
        path,
        &format!("{customer}&items[0][price]={}&items[1][price]={}", f.monthly, f.yearly),
        Some("items"),
        "Currency and interval fields must match across all plans on this subscription. Found mismatch in interval field.",
    )
    .await;
    check_refused(
        &server,
        path,
        &format!("{customer}&items[0][price]={}&items[1][price]={}", f.monthly, f.monthly_eur),
        Some("items"),
        "Currency and interval fields must match across all plans on this subscription. Found mismatch in currency field.",
    )
    .await;
    check_refused(
        &server,
        path,
        &format!(
            "{customer}&items[0][price]={0}&items[1][price]={0}",
            f.monthly
        ),
        Some("items"),
        &format!(
            "Cannot add multiple subscription items with the same price: {}",
            f.monthly
        ),
    )
    .await;
    // Parameter checks, before anything executes.
    check_refused(
        &server,
        path,
        &format!("{customer}&items[0][price]={}&days_until_due=3", f.monthly),
        Some("days_until_due"),
        "`days_until_due` can only be set when `collection_method=send_invoice`.",
    )
    .await;
    let missing_days = check_refused(
        &server,
        path,
        &format!(
            "{customer}&items[0][price]={}&collection_method=send_invoice",
            f.monthly
        ),
        Some("days_until_due"),
        "Missing required param: days_until_due.",
    )
    .await;
    assert_eq!(missing_days.error_code(), Some("parameter_missing"));
    check_refused(
        &server,
        path,
        &customer,
        Some("items"),
        "Missing required param: items.",
    )
    .await;
    check_refused(
        &server,
        path,
        &format!("{customer}&items[0][quantity]=2"),
        Some("items[0][price]"),
        "Missing required param: items[0][price].",
    )
    .await;
    check_refused(
        &server,
        path,
        &format!("items[0][price]={}", f.monthly),
        Some("customer"),
        "Missing required param: customer.",
    )
    .await;
    check_refused(
        &server,
        path,
        &format!("{customer}&items[0][price]={}&items[0][id]=si_x", f.monthly),
        Some("items[0][id]"),
        "Received unknown parameter: items[0][id]",
    )
    .await;
    check_refused(
        &server,
        path,
        &format!("{customer}&items[0][price]={}&coupon=x", f.monthly),
        Some("coupon"),
        "Received unknown parameter: coupon",
    )
    .await;
    assert!(server.handle.subscriptions().is_empty(), "nothing stored");
    assert_eq!(
        server
            .get("/v1/events?type=customer.subscription.*")
            .await
            .body["data"],
        json!([]),
        "no event for a refused create"
    );
}

#[tokio::test]
async fn update_changes_an_items_quantity_and_price() {
    let server = start().await;
    let f = fixture(&server).await;
    let subscription = create(
        &server,
        &format!(
            "customer={}&items[0][price]={}&metadata[a]=1",
            f.customer, f.monthly
        ),
    )
    .await;
    let id = subscription["id"].as_str().unwrap();
    let path = format!("/v1/subscriptions/{id}");
    let item = subscription["items"]["data"][0]["id"].as_str().unwrap();
    let more = server
        .post(&path, &format!("items[0][id]={item}&items[0][quantity]=5"))
        .await;
    assert_eq!(more.status, 200, "{:?}", more.body);
    assert_eq!(more.body["items"]["data"][0]["id"], item);
    assert_eq!(more.body["items"]["data"][0]["quantity"], 5);
    let other = server
        .post(
            &path,
            &format!(
                "items[0][id]={item}&items[0][price]={}&proration_behavior=none",
                f.monthly_other
            ),
        )
        .await;
    assert_eq!(other.status, 200, "{:?}", other.body);
    let moved = &other.body["items"]["data"][0];
    assert_eq!(moved["id"], item, "the same item");
    assert_eq!(moved["price"]["id"], f.monthly_other.as_str());
    assert_eq!(moved["price"]["nickname"], "other");
    assert_eq!(moved["quantity"], 5, "the quantity stays");
    let rest = server
        .post(
            &path,
            "metadata[b]=2&description=New&cancel_at_period_end=true",
        )
        .await;
    assert_eq!(rest.status, 200, "{:?}", rest.body);
    assert_eq!(rest.body["metadata"], json!({"a": "1", "b": "2"}));
    assert_eq!(rest.body["description"], "New");
    assert_eq!(rest.body["cancel_at_period_end"], true);
    assert_eq!(rest.body["cancel_at"], rest.body["current_period_end"]);
    assert_eq!(rest.body["status"], "incomplete");
    let invoiced = server
        .post(&path, "collection_method=send_invoice&days_until_due=14")
        .await;
    assert_eq!(invoiced.status, 200, "{:?}", invoiced.body);
    assert_eq!(invoiced.body["days_until_due"], 14);
    let charged = server
        .post(&path, "collection_method=charge_automatically")
        .await;
    assert_eq!(charged.body["days_until_due"], Value::Null);
    check_refused(
        &server,
        &path,
        "days_until_due=3",
        Some("days_until_due"),
        "`days_until_due` can only be set when `collection_method=send_invoice`.",
    )
    .await;
    let unknown = check_refused(
        &server,
        &path,
        "items[0][id]=si_nope&items[0][quantity]=1",
        Some("items[0][id]"),
        "No such subscription item: 'si_nope'",
    )
    .await;
    assert_eq!(unknown.error_code(), Some("resource_missing"));
    let yearly = server
        .post(
            &path,
            &format!("items[0][id]={item}&items[0][price]={}", f.yearly),
        )
        .await;
    assert_eq!(yearly.status, 200, "{:?}", yearly.body);
    let period = yearly.body["current_period_end"].as_i64().unwrap()
        - yearly.body["current_period_start"].as_i64().unwrap();
    assert!(
        (365 * 86_400..=366 * 86_400).contains(&period),
        "a new interval starts a new period: {period}"
    );
    check_refused(
        &server,
        &path,
        "customer=cus_other",
        Some("customer"),
        "Received unknown parameter: customer",
    )
    .await;
    let trial_end = now() + 86_400;
    let trialing = server.post(&path, &format!("trial_end={trial_end}")).await;
    assert_eq!(trialing.status, 200, "{:?}", trialing.body);
    assert_eq!(trialing.body["status"], "trialing");
    assert_eq!(trialing.body["current_period_end"], trial_end);
    let ended = server.post(&path, "trial_end=now").await;
    assert_eq!(ended.body["status"], "past_due");
    assert_eq!(
        server.handle.subscription(id).unwrap(),
        ended.body,
        "stored as answered"
    );
    let unknown_subscription = server
        .post("/v1/subscriptions/sub_nope", "metadata[a]=1")
        .await;
    assert_eq!(unknown_subscription.status, 404);
}

#[tokio::test]
async fn items_can_be_added_and_deleted_but_one_must_remain() {
    let server = start().await;
    let f = fixture(&server).await;
    let subscription = create(
        &server,
        &format!("customer={}&items[0][price]={}", f.customer, f.monthly),
    )
    .await;
    let id = subscription["id"].as_str().unwrap();
    let path = format!("/v1/subscriptions/{id}");
    let first = subscription["items"]["data"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let added = server
        .post(
            &path,
            &format!("items[0][price]={}&items[0][quantity]=3", f.monthly_other),
        )
        .await;
    assert_eq!(added.status, 200, "{:?}", added.body);
    assert_eq!(added.body["items"]["total_count"], 2);
    let data = added.body["items"]["data"].as_array().unwrap();
    assert_eq!(data[0]["id"], first.as_str());
    assert_eq!(data[1]["price"]["id"], f.monthly_other.as_str());
    assert_eq!(data[1]["quantity"], 3);
    assert_eq!(data[1]["subscription"], id);
    let second = data[1]["id"].as_str().unwrap().to_owned();
    assert_ne!(second, first);
    check_refused(
        &server,
        &path,
        &format!("items[0][price]={}", f.monthly),
        Some("items"),
        &format!(
            "Cannot add multiple subscription items with the same price: {}",
            f.monthly
        ),
    )
    .await;
    check_refused(
        &server,
        &path,
        &format!("items[0][price]={}", f.monthly_eur),
        Some("items"),
        "Currency and interval fields must match across all plans on this subscription. Found mismatch in currency field.",
    )
    .await;
    check_refused(
        &server,
        &path,
        &format!("items[0][id]={first}&items[0][price]={}", f.yearly),
        Some("items"),
        "Currency and interval fields must match across all plans on this subscription. Found mismatch in interval field.",
    )
    .await;
    let deleted = server
        .post(
            &path,
            &format!("items[0][id]={first}&items[0][deleted]=true"),
        )
        .await;
    assert_eq!(deleted.status, 200, "{:?}", deleted.body);
    assert_eq!(deleted.body["items"]["total_count"], 1);
    assert_eq!(deleted.body["items"]["data"][0]["id"], second.as_str());
    check_refused(
        &server,
        &path,
        &format!("items[0][id]={second}&items[0][deleted]=true"),
        Some("items"),
        "A subscription must keep at least one item. To end it, cancel the subscription.",
    )
    .await;
    // Replacing the last item in one request is fine: delete it and add another.
    let swapped = server
        .post(
            &path,
            &format!(
                "items[0][id]={second}&items[0][deleted]=true&items[1][price]={}",
                f.monthly
            ),
        )
        .await;
    assert_eq!(swapped.status, 200, "{:?}", swapped.body);
    assert_eq!(swapped.body["items"]["total_count"], 1);
    assert_eq!(
        swapped.body["items"]["data"][0]["price"]["id"],
        f.monthly.as_str()
    );
}

#[tokio::test]
async fn cancel_ends_it_and_a_canceled_subscription_takes_metadata_only() {
    let server = start().await;
    let f = fixture(&server).await;
    let subscription = create(
        &server,
        &format!("customer={}&items[0][price]={}", f.customer, f.monthly),
    )
    .await;
    let id = subscription["id"].as_str().unwrap();
    let path = format!("/v1/subscriptions/{id}");
    let canceled = server.delete(&path).await;
    assert_eq!(canceled.status, 200, "{:?}", canceled.body);
    assert_eq!(canceled.body["id"], id);
    assert_eq!(canceled.body["status"], "canceled");
    let at = canceled.body["canceled_at"].as_i64().unwrap();
    assert!(at >= subscription["created"].as_i64().unwrap());
    assert_eq!(canceled.body["ended_at"], at);
    assert_eq!(
        server.get(&path).await.body,
        canceled.body,
        "still retrievable"
    );
    let again = server.delete(&path).await;
    assert_eq!(again.status, 400);
    assert_eq!(
        again.error_message(),
        format!("The subscription '{id}' has already been canceled: a canceled subscription cannot be canceled again.")
    );
    for body in [
        "description=x",
        "cancel_at_period_end=true",
        "metadata[k]=v&description=x",
    ] {
        check_refused(
            &server,
            &path,
            body,
            None,
            "A canceled subscription can only update its cancellation_details and metadata.",
        )
        .await;
    }
    let tagged = server.post(&path, "metadata[k]=v").await;
    assert_eq!(tagged.status, 200, "{:?}", tagged.body);
    assert_eq!(tagged.body["metadata"], json!({"k": "v"}));
    assert_eq!(tagged.body["status"], "canceled");
    assert_eq!(
        server.delete("/v1/subscriptions/sub_nope").await.status,
        404
    );
    let bad = server
        .request(Method::DELETE, &format!("{path}?prorate=maybe"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
}

#[tokio::test]
async fn deleting_a_customer_cancels_its_subscriptions() {
    let server = start().await;
    let f = fixture(&server).await;
    let other_customer = server.create_customer("email=c%40d.co").await;
    let body = |customer: &str| format!("customer={customer}&items[0][price]={}", f.monthly);
    let open = create(&server, &body(&f.customer)).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let ended = create(&server, &body(&f.customer)).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let others = create(&server, &body(&other_customer)).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        server
            .delete(&format!("/v1/subscriptions/{ended}"))
            .await
            .status,
        200
    );
    let deleted = server
        .delete(&format!("/v1/customers/{}", f.customer))
        .await;
    assert_eq!(deleted.status, 200);
    let open = server.handle.subscription(&open).unwrap();
    assert_eq!(open["status"], "canceled");
    assert!(open["canceled_at"].is_i64());
    assert_eq!(
        server.handle.subscription(&others).unwrap()["status"],
        "incomplete"
    );
    let events = server.get("/v1/events?limit=3").await;
    let types: Vec<&str> = events.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        vec![
            "customer.deleted",
            "customer.subscription.deleted",
            "customer.subscription.deleted"
        ],
        "the open subscription's cancellation, then the customer's deletion"
    );
    assert_eq!(events.body["data"][1]["data"]["object"], open);
    check_refused(
        &server,
        "/v1/subscriptions",
        &body(&f.customer),
        Some("customer"),
        &format!("No such customer: '{}'", f.customer),
    )
    .await;
}

#[tokio::test]
async fn list_is_newest_first_with_filters_and_hides_canceled_by_default() {
    let server = start().await;
    let f = fixture(&server).await;
    let other_customer = server.create_customer("email=c%40d.co").await;
    let first = create(
        &server,
        &format!("customer={}&items[0][price]={}", f.customer, f.monthly),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let second = create(
        &server,
        &format!(
            "customer={other_customer}&items[0][price]={}&collection_method=send_invoice&days_until_due=7",
            f.monthly_other
        ),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let third = create(
        &server,
        &format!("customer={}&items[0][price]={}", f.customer, f.yearly),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        server
            .delete(&format!("/v1/subscriptions/{third}"))
            .await
            .status,
        200
    );
    let list = server.get("/v1/subscriptions").await;
    assert_eq!(list.status, 200, "{:?}", list.body);
    assert_eq!(list.body["object"], "list");
    assert_eq!(list.body["url"], "/v1/subscriptions");
    assert_eq!(
        ids(&list),
        vec![second.clone(), first.clone()],
        "canceled ones hidden"
    );
    assert_eq!(
        list.body["data"][1]["items"]["data"][0]["price"]["id"],
        f.monthly.as_str()
    );
    let check = |query: &str, expected: Vec<&String>| {
        let query = query.to_owned();
        let expected: Vec<String> = expected.into_iter().cloned().collect();
        let server = &server;
        async move {
            let reply = server.get(&format!("/v1/subscriptions?{query}")).await;
            assert_eq!(reply.status, 200, "{query}: {:?}", reply.body);
            assert_eq!(ids(&reply), expected, "{query}");
        }
    };
    check("status=all", vec![&third, &second, &first]).await;
    check("status=canceled", vec![&third]).await;
    check("status=ended", vec![&third]).await;
    check("status=active", vec![&second]).await;
    check("status=incomplete", vec![&first]).await;
    check("status=trialing", vec![]).await;
    check(&format!("customer={}", f.customer), vec![&first]).await;
    check(
        &format!("customer={}&status=all", f.customer),
        vec![&third, &first],
    )
    .await;
    check(&format!("price={}", f.monthly_other), vec![&second]).await;
    check(&format!("price={}&status=all", f.yearly), vec![&third]).await;
    check("collection_method=send_invoice", vec![&second]).await;
    check("status=all&limit=1", vec![&third]).await;
    check(
        &format!("status=all&limit=1&starting_after={third}"),
        vec![&second],
    )
    .await;
    check(
        &format!("status=all&ending_before={first}"),
        vec![&third, &second],
    )
    .await;
    check("created[lt]=1000", vec![]).await;
    let paged = server.get("/v1/subscriptions?status=all&limit=2").await;
    assert_eq!(paged.body["has_more"], true);
    let bad_status = server.get("/v1/subscriptions?status=finished").await;
    assert_eq!(bad_status.status, 400);
    assert_eq!(bad_status.error_param(), Some("status"));
    let unknown_filter = server.get("/v1/subscriptions?plan=x").await;
    assert_eq!(unknown_filter.status, 400);
    assert_eq!(unknown_filter.error_code(), Some("parameter_unknown"));
    let unknown_cursor = server
        .get("/v1/subscriptions?starting_after=sub_nope")
        .await;
    assert_eq!(unknown_cursor.status, 404);
    assert_eq!(
        unknown_cursor.error_message(),
        "No such subscription: 'sub_nope'"
    );
}

#[tokio::test]
async fn create_update_and_cancel_record_subscription_events() {
    let server = start().await;
    let f = fixture(&server).await;
    let created = server
        .post_idempotent(
            "/v1/subscriptions",
            &format!("customer={}&items[0][price]={}", f.customer, f.monthly),
            "sub-create-1",
        )
        .await;
    assert_eq!(created.status, 200);
    let id = created.id();
    let event = server.newest_event().await;
    assert_eq!(event["type"], "customer.subscription.created");
    assert_eq!(event["data"]["object"], created.body);
    assert_eq!(
        event["request"]["id"],
        created.header("request-id").unwrap()
    );
    assert_eq!(event["request"]["idempotency_key"], "sub-create-1");
    assert!(event["data"].get("previous_attributes").is_none());
    let path = format!("/v1/subscriptions/{id}");
    let updated = server.post(&path, "metadata[plan]=pro").await;
    let event = server.newest_event().await;
    assert_eq!(event["type"], "customer.subscription.updated");
    assert_eq!(event["data"]["object"], updated.body);
    assert_eq!(
        event["data"]["previous_attributes"],
        json!({"metadata": {"plan": null}})
    );
    let before = server.handle.events().len();
    let no_op = server.post(&path, "metadata[plan]=pro").await;
    assert_eq!(no_op.status, 200);
    assert_eq!(server.handle.events().len(), before, "no event for a no-op");
    let canceled = server.delete(&path).await;
    let event = server.newest_event().await;
    assert_eq!(event["type"], "customer.subscription.deleted");
    assert_eq!(event["data"]["object"], canceled.body);
    assert_eq!(event["data"]["object"]["status"], "canceled");
    let all = server.get("/v1/events?type=customer.subscription.*").await;
    let types: Vec<&str> = all.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        vec![
            "customer.subscription.deleted",
            "customer.subscription.updated",
            "customer.subscription.created"
        ]
    );
}

#[tokio::test]
async fn an_idempotent_create_replays_the_same_subscription() {
    let server = start().await;
    let f = fixture(&server).await;
    let body = format!("customer={}&items[0][price]={}", f.customer, f.monthly);
    let first = server
        .post_idempotent("/v1/subscriptions", &body, "sub-key")
        .await;
    assert_eq!(first.status, 200, "{:?}", first.body);
    let replay = server
        .post_idempotent("/v1/subscriptions", &body, "sub-key")
        .await;
    assert_eq!(replay.status, 200);
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    assert_eq!(replay.body, first.body, "the same subscription");
    assert_eq!(
        server.handle.subscriptions().len(),
        1,
        "one subscription stored"
    );
    let created_events = server
        .get("/v1/events?type=customer.subscription.created")
        .await;
    assert_eq!(created_events.body["data"].as_array().unwrap().len(), 1);
    let other = server
        .post_idempotent(
            "/v1/subscriptions",
            &format!("{body}&metadata[k]=v"),
            "sub-key",
        )
        .await;
    assert_eq!(other.status, 400);
    assert_eq!(other.error_type(), Some("idempotency_error"));
    assert_eq!(server.handle.subscriptions().len(), 1);
    let counters = server.handle.counters();
    assert_eq!(counters.count("POST /v1/subscriptions", "200"), 2);
}

#[tokio::test]
async fn restricted_keys_need_subscription_permissions() {
    let server = start_with(EmulatorConfig {
        restricted_keys: vec![
            RestrictedKey {
                subscriptions: Access::Read,
                ..RestrictedKey::new("rk_test_subreader")
            },
            "rk_test_subwriter:subscriptions=write".parse().unwrap(),
            "rk_test_catalog:customers=write,products=write,prices=write"
                .parse()
                .unwrap(),
        ],
        ..test_config()
    })
    .await;
    let f = fixture(&server).await;
    let body = format!("customer={}&items[0][price]={}", f.customer, f.monthly);
    let as_key = |key: &str, method: Method, path: &str| {
        server
            .client
            .request(method, format!("{}{path}", server.url))
            .bearer_auth(key)
            .header("content-type", "application/x-www-form-urlencoded")
    };
    let created =
        send(as_key("rk_test_subwriter", Method::POST, "/v1/subscriptions").body(body.clone()))
            .await;
    assert_eq!(created.status, 200, "{:?}", created.body);
    let id = created.id();
    let reader = "rk_test_subreader";
    assert_eq!(
        send(as_key(reader, Method::GET, "/v1/subscriptions"))
            .await
            .status,
        200
    );
    assert_eq!(
        send(as_key(
            reader,
            Method::GET,
            &format!("/v1/subscriptions/{id}")
        ))
        .await
        .status,
        200
    );
    let refused = send(as_key(reader, Method::POST, "/v1/subscriptions").body(body.clone())).await;
    assert_eq!(refused.status, 403);
    assert!(refused.error_message().contains("rak_subscription_write"));
    let cancel = send(as_key(
        reader,
        Method::DELETE,
        &format!("/v1/subscriptions/{id}"),
    ))
    .await;
    assert_eq!(cancel.status, 403);
    let catalog = send(as_key("rk_test_catalog", Method::GET, "/v1/subscriptions")).await;
    assert_eq!(catalog.status, 403);
    assert!(catalog.error_message().contains("rak_subscription_read"));
    assert!("rk_test_x:subscriptions=all"
        .parse::<RestrictedKey>()
        .is_err());
}
