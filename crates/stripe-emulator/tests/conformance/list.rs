//! `GET /v1/customers`: newest first, `has_more`, cursors, `email` and `created` filters, limits.

use serde_json::json;

use crate::common::{start, TestServer};

fn ids(reply: &crate::common::Reply) -> Vec<String> {
    reply.body["data"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|customer| customer["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn seed_at(server: &TestServer, created: i64, email: &str) -> String {
    server
        .handle
        .seed_customer(json!({"created": created, "email": email}))
}

#[tokio::test]
async fn lists_newest_first_with_has_more_and_both_cursors() {
    let server = start().await;
    let mut created = Vec::new();
    for index in 0..5 {
        created.push(server.create_customer(&format!("name=c{index}")).await);
    }
    let newest_first: Vec<String> = created.iter().rev().cloned().collect();
    let first = server.get("/v1/customers?limit=2").await;
    assert_eq!(first.status, 200);
    assert_eq!(first.body["object"], "list");
    assert_eq!(first.body["url"], "/v1/customers");
    assert_eq!(ids(&first), newest_first[0..2]);
    assert_eq!(first.body["has_more"], true);
    let second = server
        .get(&format!(
            "/v1/customers?limit=2&starting_after={}",
            newest_first[1]
        ))
        .await;
    assert_eq!(ids(&second), newest_first[2..4]);
    assert_eq!(second.body["has_more"], true);
    let last = server
        .get(&format!(
            "/v1/customers?limit=2&starting_after={}",
            newest_first[3]
        ))
        .await;
    assert_eq!(ids(&last), newest_first[4..5]);
    assert_eq!(last.body["has_more"], false);
    let back = server
        .get(&format!(
            "/v1/customers?limit=2&ending_before={}",
            newest_first[4]
        ))
        .await;
    assert_eq!(ids(&back), newest_first[2..4]);
    assert_eq!(back.body["has_more"], true);
    let all = server.get("/v1/customers").await;
    assert_eq!(ids(&all), newest_first);
}

#[tokio::test]
async fn email_filter_is_exact_case_sensitive_and_immediately_consistent() {
    let server = start().await;
    let first = server.create_customer("email=Ann%40example.com").await;
    let second = server.create_customer("email=Ann%40example.com").await;
    server.create_customer("email=ann%40example.com").await;
    let reply = server.get("/v1/customers?email=Ann%40example.com").await;
    assert_eq!(ids(&reply), vec![second.clone(), first.clone()]);
    let other_case = server.get("/v1/customers?email=ANN%40example.com").await;
    assert!(ids(&other_case).is_empty());
    server
        .post(
            &format!("/v1/customers/{first}"),
            "email=moved%40example.com",
        )
        .await;
    let after_update = server.get("/v1/customers?email=Ann%40example.com").await;
    assert_eq!(ids(&after_update), vec![second.clone()]);
    let moved = server.get("/v1/customers?email=moved%40example.com").await;
    assert_eq!(ids(&moved), vec![first]);
    server.delete(&format!("/v1/customers/{second}")).await;
    let after_delete = server.get("/v1/customers?email=Ann%40example.com").await;
    assert!(ids(&after_delete).is_empty());
}

#[tokio::test]
async fn created_filters_exact_and_ranges() {
    let server = start().await;
    let old = seed_at(&server, 1_000, "a@example.com").await;
    let middle = seed_at(&server, 2_000, "b@example.com").await;
    let new = seed_at(&server, 3_000, "c@example.com").await;
    let exact = server.get("/v1/customers?created=2000").await;
    assert_eq!(ids(&exact), vec![middle.clone()]);
    let after = server.get("/v1/customers?created[gt]=1000").await;
    assert_eq!(ids(&after), vec![new.clone(), middle.clone()]);
    let range = server
        .get("/v1/customers?created[gte]=1000&created[lt]=3000")
        .await;
    assert_eq!(ids(&range), vec![middle.clone(), old.clone()]);
    let up_to = server.get("/v1/customers?created%5Blte%5D=1000").await;
    assert_eq!(ids(&up_to), vec![old]);
    let bad = server.get("/v1/customers?created[gt]=yesterday").await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.error_param(), Some("created[gt]"));
    let unknown = server.get("/v1/customers?created[after]=1").await;
    assert_eq!(unknown.status, 400);
    assert_eq!(unknown.error_param(), Some("created[after]"));
}

#[tokio::test]
async fn limit_must_be_between_1_and_100() {
    let server = start().await;
    for limit in ["0", "101", "ten"] {
        let reply = server.get(&format!("/v1/customers?limit={limit}")).await;
        assert_eq!(reply.status, 400, "{limit}");
        assert_eq!(reply.error_param(), Some("limit"), "{limit}");
    }
    for index in 0..101 {
        server
            .handle
            .seed_customer(json!({"name": format!("c{index}")}));
    }
    let hundred = server.get("/v1/customers?limit=100").await;
    assert_eq!(ids(&hundred).len(), 100);
    assert_eq!(hundred.body["has_more"], true);
}

#[tokio::test]
async fn unknown_params_and_cursors_are_rejected() {
    let server = start().await;
    let unknown = server.get("/v1/customers?phone=123").await;
    assert_eq!(unknown.status, 400);
    assert_eq!(unknown.error_code(), Some("parameter_unknown"));
    let missing_cursor = server
        .get("/v1/customers?starting_after=cus_nothere000000")
        .await;
    assert_eq!(missing_cursor.status, 404);
    assert_eq!(missing_cursor.error_param(), Some("starting_after"));
    let both = server
        .get("/v1/customers?starting_after=a&ending_before=b")
        .await;
    assert_eq!(both.status, 400);
}
