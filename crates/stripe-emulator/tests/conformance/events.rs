//! The Events API: every executed customer write records its event (whatever the door), the
//! Event object's shape and `previous_attributes`, `GET /v1/events` order, cursors and filters,
//! `GET /v1/events/{id}`, and retention.

use std::time::Duration;

use ferry_stripe_emulator::{
    CustomerWriteError, EmulatorConfig, FaultConfig, RateLimits, TEST_API_KEY,
};
use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{send, start, start_with, test_config, Reply, TestServer};

fn data(reply: &Reply) -> &Vec<Value> {
    reply.body["data"].as_array().expect("a list")
}

fn ids(reply: &Reply) -> Vec<String> {
    data(reply)
        .iter()
        .map(|event| event["id"].as_str().unwrap().to_owned())
        .collect()
}

fn types(reply: &Reply) -> Vec<String> {
    data(reply)
        .iter()
        .map(|event| event["type"].as_str().unwrap().to_owned())
        .collect()
}

/// The customer ids the listed events are about.
fn subjects(reply: &Reply) -> Vec<String> {
    data(reply)
        .iter()
        .map(|event| event["data"]["object"]["id"].as_str().unwrap().to_owned())
        .collect()
}

/// The newest event, through the API.
async fn newest_event(server: &TestServer) -> Value {
    let reply = server.get("/v1/events?limit=1").await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    data(&reply).first().cloned().expect("an event")
}

async fn event_count(server: &TestServer) -> usize {
    let reply = server.get("/v1/events?limit=100").await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    data(&reply).len()
}

#[tokio::test]
async fn each_write_records_its_event_with_stripes_shape() {
    let server = start().await;
    let created = send(
        server
            .form_post(
                "/v1/customers",
                "email=old%40x.com&metadata[plan]=free&metadata[seats]=3",
            )
            .header("idempotency-key", "create-1")
            .header("stripe-version", "2024-06-20"),
    )
    .await;
    assert_eq!(created.status, 200);
    let customer_id = created.id();
    let event = newest_event(&server).await;
    assert_eq!(
        event.as_object().unwrap().keys().collect::<Vec<_>>(),
        vec![
            "id",
            "object",
            "api_version",
            "created",
            "data",
            "livemode",
            "pending_webhooks",
            "request",
            "type"
        ],
        "Stripe's keys, in Stripe's order"
    );
    assert!(event["id"].as_str().unwrap().starts_with("evt_"));
    assert_eq!(event["object"], "event");
    assert_eq!(event["type"], "customer.created");
    assert_eq!(event["api_version"], "2024-06-20", "the request's version");
    assert_eq!(event["created"], created.body["created"]);
    assert_eq!(event["livemode"], false);
    assert_eq!(event["pending_webhooks"], 0);
    assert_eq!(
        event["request"],
        json!({"id": created.header("request-id").unwrap(), "idempotency_key": "create-1"})
    );
    assert_eq!(
        event["data"],
        json!({"object": created.body}),
        "no previous_attributes"
    );

    let email_change = server
        .post(&format!("/v1/customers/{customer_id}"), "email=new%40x.com")
        .await;
    let event = newest_event(&server).await;
    assert_eq!(event["type"], "customer.updated");
    assert_eq!(event["api_version"], "2020-08-27", "the emulator's default");
    assert_eq!(event["data"]["object"], email_change.body);
    assert_eq!(
        event["data"]["previous_attributes"],
        json!({"email": "old@x.com"})
    );
    assert_eq!(
        event["request"],
        json!({"id": email_change.header("request-id").unwrap(), "idempotency_key": null})
    );

    server
        .post(
            &format!("/v1/customers/{customer_id}"),
            "metadata[plan]=pro&metadata[region]=eu",
        )
        .await;
    let event = newest_event(&server).await;
    assert_eq!(
        event["data"]["previous_attributes"],
        json!({"metadata": {"plan": "free", "region": null}}),
        "only the changed entries of a hash; an added entry was null"
    );
    assert_eq!(
        event["data"]["object"]["metadata"],
        json!({"plan": "pro", "seats": "3", "region": "eu"})
    );

    server
        .post(
            &format!("/v1/customers/{customer_id}"),
            "name=Ann&preferred_locales[0]=fr&address[city]=Paris",
        )
        .await;
    let event = newest_event(&server).await;
    assert_eq!(
        event["data"]["previous_attributes"],
        json!({"address": null, "name": null, "preferred_locales": []}),
        "exactly the top-level fields that changed, arrays whole"
    );

    let before_delete = server.get(&format!("/v1/customers/{customer_id}")).await;
    let deleted = server.delete(&format!("/v1/customers/{customer_id}")).await;
    assert_eq!(deleted.status, 200);
    let event = newest_event(&server).await;
    assert_eq!(event["type"], "customer.deleted");
    assert_eq!(
        event["data"],
        json!({"object": before_delete.body}),
        "the customer as it was when deleted"
    );
    assert_eq!(
        event["request"]["id"],
        deleted.header("request-id").unwrap()
    );

    let all = server.get("/v1/events").await;
    assert_eq!(
        types(&all),
        vec![
            "customer.deleted",
            "customer.updated",
            "customer.updated",
            "customer.updated",
            "customer.created"
        ]
    );
    assert_eq!(server.handle.events(), *data(&all), "the handle agrees");
}

#[tokio::test]
async fn live_keys_record_live_events() {
    let server = start().await;
    let reply = send(
        server
            .client
            .post(format!("{}/v1/customers", server.url))
            .bearer_auth(crate::common::LIVE_KEY)
            .header("content-type", "application/x-www-form-urlencoded")
            .body("name=live"),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(newest_event(&server).await["livemode"], true);
}

#[tokio::test]
async fn seeding_and_handle_writes_record_events_without_a_request() {
    let server = start().await;
    let seeded = server
        .handle
        .seed_customer(json!({"email": "a@x.com", "created": 1_000, "metadata": {"plan": "free"}}));
    let event = newest_event(&server).await;
    assert_eq!(event["type"], "customer.created");
    assert_eq!(event["data"]["object"]["id"], seeded.as_str());
    assert_eq!(
        event["request"],
        json!({"id": null, "idempotency_key": null})
    );
    assert_eq!(event["api_version"], "2020-08-27");
    assert!(
        event["created"].as_i64().unwrap() > 1_000,
        "the event happened when seeded, whatever the customer's `created`"
    );

    let updated = server
        .handle
        .update_customer(
            &seeded,
            json!({"email": "b@x.com", "metadata": {"plan": ""}}),
        )
        .unwrap();
    assert_eq!(updated["metadata"], json!({}));
    let event = newest_event(&server).await;
    assert_eq!(event["type"], "customer.updated");
    assert_eq!(event["data"]["object"], updated);
    assert_eq!(
        event["data"]["previous_attributes"],
        json!({"email": "a@x.com", "metadata": {"plan": "free"}})
    );
    assert_eq!(event["request"]["id"], Value::Null);

    assert!(matches!(
        server
            .handle
            .update_customer(&seeded, json!({"email": "not-an-email"})),
        Err(CustomerWriteError::InvalidParams(_))
    ));
    assert!(matches!(
        server
            .handle
            .update_customer(&seeded, json!({"bogus": "1"})),
        Err(CustomerWriteError::InvalidParams(_))
    ));
    assert!(matches!(
        server.handle.update_customer(&seeded, json!("email=b")),
        Err(CustomerWriteError::NotAnObject)
    ));
    assert_eq!(
        event_count(&server).await,
        2,
        "refused writes record nothing"
    );

    server.handle.delete_customer(&seeded).unwrap();
    let event = newest_event(&server).await;
    assert_eq!(event["type"], "customer.deleted");
    assert_eq!(event["data"]["object"], updated);
    assert_eq!(
        server.handle.delete_customer(&seeded),
        Err(CustomerWriteError::NoSuchCustomer(seeded.clone()))
    );
    assert_eq!(
        server
            .handle
            .update_customer("cus_nothere000000", json!({"name": "x"})),
        Err(CustomerWriteError::NoSuchCustomer(
            "cus_nothere000000".into()
        ))
    );

    // The same through the control API.
    let (status, body) = server
        .control_post("/_emulator/customers", &json!({"email": "c@x.com"}))
        .await;
    assert_eq!(status, 200);
    let other = body["ids"][0].as_str().unwrap().to_owned();
    let (status, body) = server
        .control_post(
            &format!("/_emulator/customers/{other}"),
            &json!({"name": "Dashboard edit"}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["name"], "Dashboard edit");
    let (status, _) = server
        .control_post(
            &format!("/_emulator/customers/{other}"),
            &json!({"email": "nope"}),
        )
        .await;
    assert_eq!(status, 400);
    let deleted = server
        .client
        .delete(format!("{}/_emulator/customers/{other}", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    let again = server
        .client
        .delete(format!("{}/_emulator/customers/{other}", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 404);
    let listed = server.control_get("/_emulator/events").await;
    let listed_types: Vec<&str> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        listed_types,
        vec![
            "customer.deleted",
            "customer.updated",
            "customer.created",
            "customer.deleted",
            "customer.updated",
            "customer.created"
        ]
    );
}

#[tokio::test]
async fn no_event_for_a_no_op_update_a_refused_write_or_a_replay() {
    let server = start().await;
    let first = server
        .post_idempotent("/v1/customers", "email=a%40x.com&name=Ann", "create-once")
        .await;
    let customer_id = first.id();
    assert_eq!(event_count(&server).await, 1);

    let replay = server
        .post_idempotent("/v1/customers", "email=a%40x.com&name=Ann", "create-once")
        .await;
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    assert_eq!(event_count(&server).await, 1, "a replay records nothing");

    let same = server
        .post(
            &format!("/v1/customers/{customer_id}"),
            "email=a%40x.com&name=Ann&metadata[gone]=",
        )
        .await;
    assert_eq!(same.status, 200);
    assert_eq!(same.body, first.body, "a no-op update answers the customer");
    assert_eq!(event_count(&server).await, 1, "and records nothing");

    let fifty_one: Vec<String> = (0..51)
        .map(|index| format!("metadata[k{index}]=v"))
        .collect();
    let refused = server
        .post(
            &format!("/v1/customers/{customer_id}"),
            &fifty_one.join("&"),
        )
        .await;
    assert_eq!(refused.status, 400);
    let invalid = server
        .post(&format!("/v1/customers/{customer_id}"), "email=nope")
        .await;
    assert_eq!(invalid.status, 400);
    let missing = server
        .post("/v1/customers/cus_nothere000000", "name=x")
        .await;
    assert_eq!(missing.status, 404);
    assert_eq!(
        event_count(&server).await,
        1,
        "refused writes record nothing"
    );

    let update = server
        .post_idempotent(
            &format!("/v1/customers/{customer_id}"),
            "name=Bea",
            "update-once",
        )
        .await;
    assert_eq!(update.status, 200);
    let replayed_update = server
        .post_idempotent(
            &format!("/v1/customers/{customer_id}"),
            "name=Bea",
            "update-once",
        )
        .await;
    assert_eq!(replayed_update.header("idempotent-replayed"), Some("true"));
    let all = server.get("/v1/events").await;
    assert_eq!(types(&all), vec!["customer.updated", "customer.created"]);
    assert_eq!(data(&all)[0]["request"]["idempotency_key"], "update-once");
}

#[tokio::test]
async fn a_write_whose_response_is_lost_still_records_its_event() {
    let server = start_with(EmulatorConfig {
        faults: FaultConfig {
            lose_response_rate: 1.0,
            ..FaultConfig::default()
        },
        fault_seed: Some(3),
        ..test_config()
    })
    .await;
    let outcome = server
        .form_post("/v1/customers", "email=lost%40x.com")
        .header("idempotency-key", "lost-1")
        .send()
        .await;
    assert!(outcome.is_err(), "the client never hears back");

    server.handle.set_faults(FaultConfig {
        drop_rate: 1.0,
        ..FaultConfig::default()
    });
    let dropped = server
        .form_post("/v1/customers", "email=dropped%40x.com")
        .send()
        .await;
    assert!(dropped.is_err());

    server.handle.set_faults(FaultConfig::default());
    let events = server.get("/v1/events").await;
    assert_eq!(
        types(&events),
        vec!["customer.created"],
        "dropped: not executed"
    );
    let event = &data(&events)[0];
    assert_eq!(event["data"]["object"]["email"], "lost@x.com");
    assert_eq!(event["request"]["idempotency_key"], "lost-1");
    let requests = server.handle.requests();
    assert_eq!(event["request"]["id"], requests[0].request_id.as_str());

    let retried = server
        .post_idempotent("/v1/customers", "email=lost%40x.com", "lost-1")
        .await;
    assert_eq!(retried.header("idempotent-replayed"), Some("true"));
    assert_eq!(event_count(&server).await, 1, "the replay adds nothing");
}

#[tokio::test]
async fn events_list_newest_first_and_page_with_cursors_across_more_than_100() {
    let server = start().await;
    // Seeding is fast and the events share a second or two: order within a second is the
    // order of writing, as for customers.
    let mut customers = Vec::new();
    for index in 0..150 {
        customers.push(
            server
                .handle
                .seed_customer(json!({"name": format!("c{index}")})),
        );
    }
    let newest_first: Vec<String> = customers.iter().rev().cloned().collect();

    let default_page = server.get("/v1/events").await;
    assert_eq!(default_page.body["object"], "list");
    assert_eq!(default_page.body["url"], "/v1/events");
    assert_eq!(default_page.body["has_more"], true);
    assert_eq!(subjects(&default_page), newest_first[..10], "10 by default");

    let first = server.get("/v1/events?limit=100").await;
    assert_eq!(subjects(&first), newest_first[..100]);
    assert_eq!(first.body["has_more"], true);
    let last_id = ids(&first).last().unwrap().clone();
    let second = server
        .get(&format!("/v1/events?limit=100&starting_after={last_id}"))
        .await;
    assert_eq!(subjects(&second), newest_first[100..]);
    assert_eq!(second.body["has_more"], false);

    let oldest_id = ids(&second).last().unwrap().clone();
    let back = server
        .get(&format!("/v1/events?limit=20&ending_before={oldest_id}"))
        .await;
    assert_eq!(subjects(&back), newest_first[129..149]);
    assert_eq!(back.body["has_more"], true);
    let newest_id = ids(&first)[0].clone();
    let nothing_newer = server
        .get(&format!("/v1/events?ending_before={newest_id}"))
        .await;
    assert!(data(&nothing_newer).is_empty());
    assert_eq!(nothing_newer.body["has_more"], false);

    let all_ids: Vec<String> = ids(&first).into_iter().chain(ids(&second)).collect();
    let handle_ids: Vec<String> = server
        .handle
        .events()
        .iter()
        .map(|event| event["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(all_ids, handle_ids);
    let created: Vec<i64> = data(&first)
        .iter()
        .chain(data(&second))
        .map(|event| event["created"].as_i64().unwrap())
        .collect();
    assert!(created.windows(2).all(|pair| pair[0] >= pair[1]));

    // A page boundary holds while new events arrive: a client reading "since its last refresh"
    // with `ending_before` sees exactly the new ones.
    let newer = server.create_customer("name=after").await;
    let since = server
        .get(&format!("/v1/events?ending_before={newest_id}"))
        .await;
    assert_eq!(subjects(&since), vec![newer]);
}

#[tokio::test]
async fn created_filters_select_by_second() {
    let server = start().await;
    let early = server.create_customer("name=early").await;
    let early_event = newest_event(&server).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let late = server.create_customer("name=late").await;
    let late_event = newest_event(&server).await;
    let early_at = early_event["created"].as_i64().unwrap();
    let late_at = late_event["created"].as_i64().unwrap();
    assert!(late_at > early_at);

    let since = server
        .get(&format!("/v1/events?created[gte]={late_at}"))
        .await;
    assert_eq!(subjects(&since), vec![late.clone()]);
    let after = server
        .get(&format!("/v1/events?created%5Bgt%5D={early_at}"))
        .await;
    assert_eq!(subjects(&after), vec![late.clone()]);
    let before = server
        .get(&format!("/v1/events?created[lt]={late_at}"))
        .await;
    assert_eq!(subjects(&before), vec![early.clone()]);
    let up_to = server
        .get(&format!(
            "/v1/events?created[lte]={late_at}&created[gte]={early_at}"
        ))
        .await;
    assert_eq!(subjects(&up_to), vec![late, early.clone()]);
    let exact = server.get(&format!("/v1/events?created={early_at}")).await;
    assert_eq!(subjects(&exact), vec![early]);
    let future = server
        .get(&format!("/v1/events?created[gte]={}", late_at + 1000))
        .await;
    assert!(data(&future).is_empty());
}

#[tokio::test]
async fn type_types_and_wildcard_filters() {
    let server = start().await;
    let customer = server.create_customer("name=a").await;
    server
        .post(&format!("/v1/customers/{customer}"), "name=b")
        .await;
    server.delete(&format!("/v1/customers/{customer}")).await;

    let updated = server.get("/v1/events?type=customer.updated").await;
    assert_eq!(types(&updated), vec!["customer.updated"]);
    let wildcard = server.get("/v1/events?type=customer.*").await;
    assert_eq!(
        types(&wildcard),
        vec!["customer.deleted", "customer.updated", "customer.created"]
    );
    let suffix = server.get("/v1/events?type=*.deleted").await;
    assert_eq!(types(&suffix), vec!["customer.deleted"]);
    let other = server.get("/v1/events?type=charge.*").await;
    assert!(data(&other).is_empty());
    let prefix_only = server.get("/v1/events?type=customer").await;
    assert!(data(&prefix_only).is_empty(), "`type` is exact without `*`");

    let several = server
        .get("/v1/events?types[]=customer.created&types[]=customer.deleted")
        .await;
    assert_eq!(
        types(&several),
        vec!["customer.deleted", "customer.created"]
    );
    let indexed = server.get("/v1/events?types[0]=customer.updated").await;
    assert_eq!(types(&indexed), vec!["customer.updated"]);
    let no_wildcards = server.get("/v1/events?types[]=customer.*").await;
    assert!(data(&no_wildcards).is_empty(), "`types` names are exact");
    let twenty: Vec<String> = (0..20)
        .map(|index| format!("types[]=customer.t{index}"))
        .collect();
    let at_most = server
        .get(&format!(
            "/v1/events?{}&types[]=customer.created",
            &twenty[..19].join("&")
        ))
        .await;
    assert_eq!(at_most.status, 200);
    assert_eq!(types(&at_most), vec!["customer.created"]);

    let paged = server.get("/v1/events?type=customer.*&limit=1").await;
    assert_eq!(
        paged.body["has_more"], true,
        "has_more counts matching events"
    );
    let last = server
        .get(&format!(
            "/v1/events?type=customer.*&limit=5&starting_after={}",
            ids(&paged)[0]
        ))
        .await;
    assert_eq!(types(&last), vec!["customer.updated", "customer.created"]);
    assert_eq!(last.body["has_more"], false);
}

#[tokio::test]
async fn bad_params_are_400_like_other_lists() {
    let server = start().await;
    server.create_customer("name=a").await;
    for limit in ["0", "101", "ten"] {
        let reply = server.get(&format!("/v1/events?limit={limit}")).await;
        assert_eq!(reply.status, 400, "{limit}");
        assert_eq!(reply.error_param(), Some("limit"), "{limit}");
    }
    assert_eq!(
        data(&server.get("/v1/events?limit=100").await).len(),
        1,
        "100 is allowed"
    );

    let unknown = server.get("/v1/events?customer=cus_1").await;
    assert_eq!(unknown.status, 400);
    assert_eq!(unknown.error_code(), Some("parameter_unknown"));
    assert_eq!(unknown.error_param(), Some("customer"));

    let both = server
        .get("/v1/events?type=customer.created&types[]=customer.updated")
        .await;
    assert_eq!(both.status, 400);
    assert_eq!(both.error_type(), Some("invalid_request_error"));
    assert_eq!(both.error_code(), Some("parameters_exclusive"));
    assert!(both.error_message().contains("type, types"));

    let twenty_one: Vec<String> = (0..21)
        .map(|index| format!("types[]=customer.t{index}"))
        .collect();
    let too_many = server
        .get(&format!("/v1/events?{}", twenty_one.join("&")))
        .await;
    assert_eq!(too_many.status, 400);
    assert_eq!(too_many.error_param(), Some("types"));
    let not_an_array = server.get("/v1/events?types=customer.created").await;
    assert_eq!(not_an_array.status, 400);
    assert_eq!(not_an_array.error_param(), Some("types"));

    let delivered = server.get("/v1/events?delivery_success=true").await;
    assert_eq!(delivered.status, 200, "accepted, and ignored");
    assert_eq!(data(&delivered).len(), 1);
    let undelivered = server.get("/v1/events?delivery_success=false").await;
    assert_eq!(undelivered.status, 200);
    let not_boolean = server.get("/v1/events?delivery_success=maybe").await;
    assert_eq!(not_boolean.status, 400);
    assert_eq!(not_boolean.error_param(), Some("delivery_success"));

    let bad_created = server.get("/v1/events?created[after]=1").await;
    assert_eq!(bad_created.status, 400);
    assert_eq!(bad_created.error_param(), Some("created[after]"));
    let not_integer = server.get("/v1/events?created[gte]=yesterday").await;
    assert_eq!(not_integer.status, 400);
    assert_eq!(not_integer.error_param(), Some("created[gte]"));

    let both_cursors = server
        .get("/v1/events?starting_after=evt_a&ending_before=evt_b")
        .await;
    assert_eq!(both_cursors.status, 400);
    assert_eq!(both_cursors.error_code(), Some("parameters_exclusive"));
    for param in ["starting_after", "ending_before"] {
        let reply = server
            .get(&format!("/v1/events?{param}=evt_nothere000000"))
            .await;
        assert_eq!(reply.status, 404, "as the customer list answers");
        assert_eq!(reply.error_code(), Some("resource_missing"));
        assert_eq!(reply.error_param(), Some(param));
        assert!(reply.error_message().contains("No such event"));
    }

    let on_retrieve = server.get("/v1/events/evt_x?limit=1").await;
    assert_eq!(on_retrieve.status, 400);
    assert_eq!(on_retrieve.error_code(), Some("parameter_unknown"));
    let posted = server.post("/v1/events", "type=customer.created").await;
    assert_eq!(posted.status, 404, "events are read-only");
}

#[tokio::test]
async fn retrieve_returns_one_event_and_404_when_unknown() {
    let server = start().await;
    server.create_customer("name=a").await;
    let listed = newest_event(&server).await;
    let id = listed["id"].as_str().unwrap();
    let retrieved = server
        .get(&format!("/v1/events/{id}?expand[]=data.object"))
        .await;
    assert_eq!(retrieved.status, 200);
    assert_eq!(retrieved.body, listed);
    assert!(retrieved.header("request-id").unwrap().starts_with("req_"));

    let missing = server.get("/v1/events/evt_nothere000000").await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.error_type(), Some("invalid_request_error"));
    assert_eq!(missing.error_code(), Some("resource_missing"));
    assert_eq!(missing.error_param(), Some("id"));
    assert_eq!(
        missing.error_message(),
        "No such event: 'evt_nothere000000'"
    );
}

#[tokio::test]
async fn retention_forgets_older_events() {
    let server = start().await;
    let config = server.control_get("/_emulator/config").await;
    assert_eq!(
        config["event_retention_seconds"], 2_592_000,
        "Stripe's 30 days"
    );
    server.create_customer("name=old").await;
    let old = newest_event(&server).await;
    let old_id = old["id"].as_str().unwrap().to_owned();

    let (status, body) = server
        .control_post("/_emulator/config", &json!({"event_retention_seconds": 0}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["event_retention_seconds"], 0);
    assert_eq!(event_count(&server).await, 0, "every event is too old");
    assert_eq!(
        server.get(&format!("/v1/events/{old_id}")).await.status,
        404
    );
    let cursor = server
        .get(&format!("/v1/events?starting_after={old_id}"))
        .await;
    assert_eq!(cursor.status, 404, "a cursor past retention names nothing");
    assert!(server.handle.events().is_empty());

    server
        .control_post(
            "/_emulator/config",
            &json!({"event_retention_seconds": 2_592_000}),
        )
        .await;
    assert_eq!(event_count(&server).await, 0, "forgotten events stay gone");
    let newer = server.create_customer("name=new").await;
    let listed = server.get("/v1/events").await;
    assert_eq!(subjects(&listed), vec![newer]);

    // Events age out on their own, too.
    server
        .handle
        .set_event_retention(Duration::from_millis(1500));
    assert_eq!(server.handle.settings().event_retention_seconds, 2);
    server.create_customer("name=short-lived").await;
    assert_eq!(event_count(&server).await, 2, "both written within 1.5 s");
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(event_count(&server).await, 0);
}

#[tokio::test]
async fn retention_is_configured_at_start_and_reset_forgets_events() {
    let server = start_with(EmulatorConfig {
        event_retention: Duration::from_secs(3600),
        ..test_config()
    })
    .await;
    assert_eq!(server.handle.settings().event_retention_seconds, 3600);
    server.create_customer("name=a").await;
    assert_eq!(server.handle.events().len(), 1);
    let (status, _) = server.control_post("/_emulator/reset", &json!({})).await;
    assert_eq!(status, 200);
    assert!(server.handle.events().is_empty());
    assert_eq!(event_count(&server).await, 0);
    assert_eq!(
        server.handle.settings().event_retention_seconds,
        3600,
        "settings survive a reset"
    );
}

#[tokio::test]
async fn events_need_customer_read_access_and_are_rate_limited_and_faulted_like_reads() {
    let server = start_with(EmulatorConfig {
        rate_limits: RateLimits {
            enabled: true,
            global_test_per_sec: 100,
            endpoint_per_sec: 2,
            ..RateLimits::default()
        },
        restricted_keys: vec![
            "rk_test_reader:customers=read".parse().unwrap(),
            "rk_test_balanceonly:balance=read".parse().unwrap(),
        ],
        ..test_config()
    })
    .await;
    server.handle.seed_customer(json!({"name": "a"}));
    let event_id = server.handle.events()[0]["id"].as_str().unwrap().to_owned();

    let reader = send(
        server
            .client
            .get(format!("{}/v1/events", server.url))
            .bearer_auth("rk_test_reader"),
    )
    .await;
    assert_eq!(reader.status, 200);
    let refused = send(
        server
            .client
            .get(format!("{}/v1/events/{event_id}", server.url))
            .bearer_auth("rk_test_balanceonly"),
    )
    .await;
    assert_eq!(refused.status, 403);
    assert!(refused.error_message().contains("rak_customer_read"));

    // `reader` used one of the two list requests this second.
    assert_eq!(server.get("/v1/events").await.status, 200);
    let limited = server.get("/v1/events").await;
    assert_eq!(limited.status, 429);
    assert_eq!(
        limited.header("stripe-rate-limited-reason"),
        Some("endpoint-rate")
    );
    let retrieve = server.get(&format!("/v1/events/{event_id}")).await;
    assert_eq!(retrieve.status, 200, "retrieve has its own bucket");
    assert_eq!(server.handle.counters().count("GET /v1/events", "429"), 1);

    server.handle.set_rate_limits(RateLimits::disabled());
    server.handle.set_faults(FaultConfig {
        server_error_rate: 1.0,
        ..FaultConfig::default()
    });
    let faulted = send(
        server
            .client
            .request(Method::GET, format!("{}/v1/events", server.url))
            .bearer_auth(TEST_API_KEY),
    )
    .await;
    assert!(faulted.status >= 500, "{}", faulted.status);
    assert_eq!(faulted.error_type(), Some("api_error"));
}
