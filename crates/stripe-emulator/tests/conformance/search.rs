//! `GET /v1/customers/search`: the query language, pages, and eventual consistency: search sees
//! each customer as it was `search_delay` ago, while retrieve and list see it at once.

use std::time::Duration;

use ferry_stripe_emulator::EmulatorConfig;
use serde_json::json;

use crate::common::{start, start_with, test_config, Reply, TestServer};

fn ids(reply: &Reply) -> Vec<String> {
    reply.body["data"]
        .as_array()
        .unwrap_or_else(|| panic!("a search result: {:?}", reply.body))
        .iter()
        .map(|customer| customer["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn search(server: &TestServer, query: &str) -> Reply {
    let encoded: String = form_urlencoded_query(query);
    server
        .get(&format!("/v1/customers/search?query={encoded}"))
        .await
}

fn form_urlencoded_query(query: &str) -> String {
    query
        .bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                (byte as char).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn fields_operators_and_connectors() {
    let server = start().await;
    let ann = server.handle.seed_customer(json!({
        "email": "Ann.Lee@Example.com", "name": "Ann Lee", "phone": "+33100",
        "created": 1_000, "metadata": {"external_id": "42"}
    }));
    let bob = server.handle.seed_customer(json!({
        "email": "bob@example.com", "name": "Bob", "phone": "+33200",
        "created": 2_000, "metadata": {"external_id": "43"}
    }));
    let reply = search(&server, r#"email:"ann.lee@example.com""#).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body["object"], "search_result");
    assert_eq!(ids(&reply), vec![ann.clone()], "email is case-insensitive");
    assert_eq!(ids(&search(&server, "name:'lee'").await), vec![ann.clone()]);
    assert_eq!(
        ids(&search(&server, "phone:'+33200'").await),
        vec![bob.clone()]
    );
    assert_eq!(
        ids(&search(&server, "metadata['external_id']:'42'").await),
        vec![ann.clone()]
    );
    assert_eq!(
        ids(&search(&server, "created>1500").await),
        vec![bob.clone()]
    );
    assert_eq!(
        ids(&search(&server, "created>=1000 AND created<2000").await),
        vec![ann.clone()]
    );
    assert_eq!(
        ids(&search(&server, "metadata['external_id']:'42' OR name:'bob'").await),
        vec![bob.clone(), ann.clone()]
    );
    assert!(ids(&search(&server, "metadata['external_id']:'42' AND name:'bob'").await).is_empty());
    assert_eq!(ids(&search(&server, "-name:'bob'").await), vec![ann]);
}

#[tokio::test]
async fn invalid_or_missing_queries_are_400() {
    let server = start().await;
    let missing = server.get("/v1/customers/search").await;
    assert_eq!(missing.status, 400);
    assert_eq!(missing.error_code(), Some("parameter_missing"));
    assert_eq!(missing.error_param(), Some("query"));
    for bad in [
        "nickname:'x'",
        "email:'a' AND name:'b' OR phone:'c'",
        "created:soon",
    ] {
        let reply = search(&server, bad).await;
        assert_eq!(reply.status, 400, "{bad}");
        assert_eq!(reply.error_param(), Some("query"), "{bad}");
    }
}

#[tokio::test]
async fn pages_follow_next_page() {
    let server = start().await;
    for index in 0..5 {
        server
            .handle
            .seed_customer(json!({"created": 1_000 + index, "metadata": {"batch": "b"}}));
    }
    let mut seen = Vec::new();
    let mut page_token: Option<String> = None;
    for _ in 0..5 {
        let mut path =
            "/v1/customers/search?limit=2&query=metadata%5B%27batch%27%5D%3A%27b%27".to_owned();
        if let Some(token) = &page_token {
            path.push_str(&format!("&page={token}"));
        }
        let reply = server.get(&path).await;
        assert_eq!(reply.status, 200);
        seen.extend(ids(&reply));
        match reply.body["next_page"].as_str() {
            Some(token) => {
                assert_eq!(reply.body["has_more"], true);
                page_token = Some(token.to_owned());
            }
            None => break,
        }
    }
    assert_eq!(seen.len(), 5);
    let expected: Vec<String> = server
        .handle
        .customers()
        .iter()
        .map(|customer| customer["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(seen, expected, "newest first, each once");
}

#[tokio::test]
async fn a_new_customer_is_invisible_to_search_until_the_delay_passes() {
    let delay = Duration::from_millis(400);
    let server = start_with(EmulatorConfig {
        search_delay: delay,
        ..test_config()
    })
    .await;
    let id = server.create_customer("email=new%40example.com").await;
    assert!(ids(&search(&server, "email:'new@example.com'").await).is_empty());
    // Retrieve and list by email are immediately consistent.
    assert_eq!(server.get(&format!("/v1/customers/{id}")).await.status, 200);
    let listed = server.get("/v1/customers?email=new%40example.com").await;
    assert_eq!(listed.body["data"][0]["id"], id.as_str());
    tokio::time::sleep(delay + Duration::from_millis(50)).await;
    assert_eq!(
        ids(&search(&server, "email:'new@example.com'").await),
        vec![id]
    );
}

#[tokio::test]
async fn search_shows_old_values_and_deleted_customers_until_the_delay_passes() {
    let delay = Duration::from_millis(400);
    let server = start_with(EmulatorConfig {
        search_delay: delay,
        ..test_config()
    })
    .await;
    let id = server
        .handle
        .seed_customer(json!({"email": "old@example.com", "name": "Old"}));
    server
        .post(
            &format!("/v1/customers/{id}"),
            "email=new%40example.com&name=New",
        )
        .await;
    let stale = search(&server, "email:'old@example.com'").await;
    assert_eq!(ids(&stale), vec![id.clone()]);
    assert_eq!(
        stale.body["data"][0]["name"], "Old",
        "search shows the old values"
    );
    assert!(ids(&search(&server, "email:'new@example.com'").await).is_empty());

    server.delete(&format!("/v1/customers/{id}")).await;
    assert_eq!(
        ids(&search(&server, "email:'old@example.com'").await),
        vec![id.clone()],
        "a deleted customer still shows"
    );
    tokio::time::sleep(delay + Duration::from_millis(50)).await;
    assert!(ids(&search(&server, "email:'old@example.com'").await).is_empty());
    assert!(ids(&search(&server, "email:'new@example.com'").await).is_empty());
}

#[tokio::test]
async fn the_search_delay_changes_at_run_time() {
    let server = start().await;
    server.handle.set_search_delay(Duration::ZERO);
    let id = server.create_customer("name=Instant").await;
    assert_eq!(ids(&search(&server, "name:'instant'").await), vec![id]);
}

async fn search_at(server: &TestServer, path: &str, query: &str) -> Reply {
    server
        .get(&format!("{path}?query={}", form_urlencoded_query(query)))
        .await
}

/// Products and prices are searched with the fields Stripe offers for each, and, like
/// customers, seen as they were `search_delay` ago: a new one is not found yet, a changed one
/// is found as it was.
#[tokio::test]
async fn products_and_prices_are_searched_by_their_own_fields_and_seen_late() {
    let delay = Duration::from_millis(400);
    let server = start_with(EmulatorConfig {
        search_delay: delay,
        ..test_config()
    })
    .await;
    let gold = server
        .create_product("name=Gold+Plan&metadata[sku]=g1")
        .await;
    let silver = server.create_product("name=Silver&active=false").await;
    let price = server
        .create_price(&format!(
            "product={gold}&currency=usd&unit_amount=100&lookup_key=gold_monthly"
        ))
        .await;
    let products = |query: &'static str| search_at(&server, "/v1/products/search", query);
    assert!(
        ids(&products("name:'gold'").await).is_empty(),
        "a new product is not found yet"
    );
    tokio::time::sleep(delay + Duration::from_millis(50)).await;
    assert_eq!(ids(&products("name:'gold'").await), vec![gold.clone()]);
    assert_eq!(ids(&products("active:'false'").await), vec![silver.clone()]);
    assert_eq!(
        ids(&products("metadata['sku']:'g1' AND active:'true'").await),
        vec![gold.clone()]
    );
    let prices = |query: String| {
        let server = &server;
        async move { ids(&search_at(server, "/v1/prices/search", &query).await) }
    };
    assert_eq!(
        prices(format!("lookup_key:'gold_monthly' AND product:'{gold}'")).await,
        vec![price.clone()]
    );
    assert!(prices("active:'false'".into()).await.is_empty());

    let archived = server
        .post(&format!("/v1/prices/{price}"), "active=false")
        .await;
    assert_eq!(archived.status, 200);
    assert!(
        prices("active:'false'".into()).await.is_empty(),
        "search still sees the price as it was"
    );
    tokio::time::sleep(delay + Duration::from_millis(50)).await;
    assert_eq!(prices("active:'false'".into()).await, vec![price.clone()]);

    let refused = products("email:'a@b.co'").await;
    assert_eq!(refused.status, 400);
    assert_eq!(
        refused.error_message(),
        "Invalid search query: `email` is not a searchable product field (active, description, name, shippable, url, created, metadata['key'])."
    );
}
