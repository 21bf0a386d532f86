//! End-to-end: the `ferry` binary syncs a DuckDB model of contracts into the emulator's
//! Subscriptions, keyed by an external id in metadata, each naming its customer by email and its
//! items' prices by lookup key. Assertions read what the emulator holds or received.

mod common;

use common::Scene;
use serde_json::{json, Value as Json};

/// One row per contract; `items` is the JSON list of the subscription's items, each naming its
/// price by lookup key.
fn contracts_sql(rows: &[(&str, &str, &str, u32)]) -> String {
    let values: Vec<String> = rows
        .iter()
        .map(|(contract, email, plan, seats)| {
            format!("('{contract}', '{email}', '{plan}', {seats})")
        })
        .collect();
    format!(
        "create or replace table contracts as select * from (values {}) t(contract, email, plan, seats)",
        values.join(", ")
    )
}

const CONTRACTS_MODEL: &str = r#"select contract, email,
    '[{"price": "' || plan || '", "quantity": ' || seats || '}]' as items
    from contracts order by contract"#;

struct Catalogue {
    ada: String,
    bob: String,
    pro: String,
    team: String,
}

impl Scene {
    /// Customers and recurring prices made in Stripe before the sync (by other syncs, say).
    fn seed_catalogue(&self) -> Catalogue {
        let stripe = self.stripe();
        let ada = stripe.seed_customer(json!({"email": "ada@example.com"}));
        let bob = stripe.seed_customer(json!({"email": "bob@example.com"}));
        stripe.seed_product(json!({"id": "pro", "name": "Pro"}));
        stripe.seed_product(json!({"id": "team", "name": "Team"}));
        let price = |product: &str, amount: u32, lookup: &str| {
            stripe.seed_price(json!({
                "product": product, "currency": "usd", "unit_amount": amount,
                "recurring": {"interval": "month"}, "lookup_key": lookup
            }))
        };
        Catalogue {
            ada,
            bob,
            pro: price("pro", 2000, "pro_monthly"),
            team: price("team", 5000, "team_monthly"),
        }
    }

    async fn contracts_sync(&self, extra: &[&str]) {
        self.ferry(&[
            "model",
            "create",
            "contracts",
            "--connection",
            "warehouse",
            "--sql",
            CONTRACTS_MODEL,
        ])
        .await
        .ok();
        let mut args = vec![
            "sync",
            "create",
            "contracts-to-stripe",
            "--model",
            "contracts",
            "--destination",
            "stripe",
            "--object",
            "subscription",
            "--key",
            "contract=metadata.contract_id",
            "--map",
            "email=customer(email)",
            "--map",
            "items=items(lookup_key)",
            "--map",
            "'send_invoice'=collection_method",
            "--map",
            "'30'=days_until_due",
            "--map",
            "'none'=proration_behavior",
        ];
        args.extend_from_slice(extra);
        self.ferry(&args).await.ok();
    }

    fn subscription_of(&self, contract: &str) -> Vec<Json> {
        self.stripe()
            .subscriptions()
            .into_iter()
            .filter(|s| s["metadata"]["contract_id"] == contract)
            .collect()
    }

    fn subscription_writes(&self) -> Vec<Json> {
        self.stripe()
            .requests()
            .into_iter()
            .filter(|r| r.method != "GET" && r.path.starts_with("/v1/subscriptions"))
            .map(|r| json!({"method": r.method, "path": r.path, "params": r.params}))
            .collect()
    }
}

/// `(price, quantity)` of each item of a subscription, and the items' ids.
fn items_of(subscription: &Json) -> (Vec<(String, u64)>, Vec<String>) {
    let data = subscription["items"]["data"].as_array().unwrap();
    (
        data.iter()
            .map(|item| {
                (
                    item["price"]["id"].as_str().unwrap().to_string(),
                    item["quantity"].as_u64().unwrap(),
                )
            })
            .collect(),
        data.iter()
            .map(|item| item["id"].as_str().unwrap().to_string())
            .collect(),
    )
}

fn counts(report: &Json) -> [Option<u64>; 5] {
    ["created", "updated", "unchanged", "rejected", "retired"].map(|k| report[k].as_u64())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_name_their_customer_and_prices_by_key_and_change_their_items_in_place() {
    let scene = Scene::new().await;
    let catalogue = scene.seed_catalogue();
    scene.warehouse_sql(&contracts_sql(&[
        ("c1", "ada@example.com", "pro_monthly", 2),
        // Emails match ignoring case, as a customer sync matches them.
        ("c2", "BOB@example.com", "team_monthly", 5),
        ("c3", "nobody@example.com", "pro_monthly", 1),
        ("c4", "ada@example.com", "no_such_plan", 1),
    ]));
    scene.connect().await;
    scene.contracts_sync(&["--behavior", "mirror"]).await;

    let run = scene.run_sync_json("contracts-to-stripe", &[]).await;
    assert_eq!(
        counts(&run),
        [Some(2), Some(0), Some(0), Some(2), Some(0)],
        "{run}"
    );
    let c1 = scene.subscription_of("c1");
    assert_eq!(c1.len(), 1);
    assert_eq!(c1[0]["customer"], json!(catalogue.ada));
    assert_eq!(c1[0]["collection_method"], "send_invoice");
    assert_eq!(c1[0]["days_until_due"], 30);
    let (items, c1_item_ids) = items_of(&c1[0]);
    assert_eq!(items, vec![(catalogue.pro.clone(), 2)]);
    let c2 = scene.subscription_of("c2");
    assert_eq!(c2[0]["customer"], json!(catalogue.bob));
    assert_eq!(items_of(&c2[0]).0, vec![(catalogue.team.clone(), 5)]);
    let mut reasons: Vec<String> = scene
        .run_records(run["run_id"].as_str().unwrap(), "rejected")
        .await
        .iter()
        .map(|record| record["reason"].as_str().unwrap_or_default().to_string())
        .collect();
    reasons.sort();
    expect_test::expect![[r#"
        [
            "customer: no Stripe customer has email `nobody@example.com` (from email): sync customers first, or correct the value",
            "items, item 1 (price): no Stripe price has lookup_key `no_such_plan` (from items): sync prices first, or correct the value",
        ]
    "#]]
    .assert_debug_eq(&reasons);

    // A second run sends nothing: the rows did not change.
    let writes = scene.subscription_writes().len();
    let run = scene.run_sync_json("contracts-to-stripe", &[]).await;
    assert_eq!(counts(&run)[2], Some(2), "{run}");
    assert_eq!(scene.subscription_writes().len(), writes);

    // c1 moves to the team plan with three seats: its one item moves to the new price (same
    // item, prorated as the sync says), not a second item beside the first; c2 left the
    // model, so Mirror cancels it at the end of its period.
    scene.warehouse_sql(&contracts_sql(&[
        ("c1", "ada@example.com", "team_monthly", 3),
        ("c3", "nobody@example.com", "pro_monthly", 1),
        ("c4", "ada@example.com", "no_such_plan", 1),
    ]));
    // One of two is more than Mirror's 10% limit.
    let run = scene
        .run_sync_json("contracts-to-stripe", &["--allow-mass-retire"])
        .await;
    assert_eq!(
        counts(&run),
        [Some(0), Some(1), Some(0), Some(2), Some(1)],
        "{run}"
    );
    let c1 = scene.subscription_of("c1");
    let (items, item_ids) = items_of(&c1[0]);
    assert_eq!(items, vec![(catalogue.team.clone(), 3)]);
    assert_eq!(item_ids, c1_item_ids, "the item was changed, not replaced");
    let c1_id = c1[0]["id"].as_str().unwrap();
    let update = scene
        .subscription_writes()
        .into_iter()
        .find(|write| write["path"] == format!("/v1/subscriptions/{c1_id}"))
        .expect("c1 was updated");
    assert_eq!(update["params"]["proration_behavior"], "none");
    assert_eq!(update["params"]["items"][0]["id"], json!(c1_item_ids[0]));
    let c2 = scene.subscription_of("c2");
    assert_eq!(c2[0]["cancel_at_period_end"], true);
    assert_eq!(
        c2[0]["status"], "active",
        "cancelled at period end, not now"
    );

    // c2 comes back: Mirror takes the cancellation back, and no second subscription is made.
    scene.warehouse_sql(&contracts_sql(&[
        ("c1", "ada@example.com", "team_monthly", 3),
        ("c2", "bob@example.com", "team_monthly", 5),
    ]));
    let run = scene.run_sync_json("contracts-to-stripe", &[]).await;
    assert_eq!(counts(&run)[1], Some(1), "{run}");
    let c2 = scene.subscription_of("c2");
    assert_eq!(c2.len(), 1, "never a second subscription");
    assert_eq!(c2[0]["cancel_at_period_end"], false);
}

/// A subscription ferry did not make, found by its external id, is compared with what Stripe
/// holds (its items as Stripe returns them: expanded prices, ids, `{}` metadata): an equal one
/// costs no write. With `--cancel-now`, Mirror cancels at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_subscription_is_matched_by_its_external_id_and_cancelled_at_once() {
    let scene = Scene::new().await;
    let catalogue = scene.seed_catalogue();
    scene.warehouse_sql(&contracts_sql(&[(
        "c1",
        "ada@example.com",
        "pro_monthly",
        2,
    )]));
    scene.connect().await;
    let created = scene
        .stripe_post(
            "/v1/subscriptions",
            &[
                ("customer", catalogue.ada.as_str()),
                ("items[0][price]", catalogue.pro.as_str()),
                ("items[0][quantity]", "2"),
                ("collection_method", "send_invoice"),
                ("days_until_due", "30"),
                ("metadata[contract_id]", "c1"),
            ],
        )
        .await;
    scene.warehouse_sql(&contracts_sql(&[
        ("c1", "ada@example.com", "pro_monthly", 2),
        ("c2", "bob@example.com", "team_monthly", 1),
    ]));
    scene
        .contracts_sync(&["--behavior", "mirror", "--cancel-now"])
        .await;
    let run = scene.run_sync_json("contracts-to-stripe", &[]).await;
    assert_eq!(
        counts(&run),
        [Some(1), Some(0), Some(1), Some(0), Some(0)],
        "{run}"
    );
    assert_eq!(scene.subscription_of("c1").len(), 1);
    assert!(
        scene.subscription_writes().iter().all(|write| write["path"]
            != format!("/v1/subscriptions/{}", created["id"].as_str().unwrap())),
        "the matching subscription needed no write"
    );

    scene.warehouse_sql(&contracts_sql(&[(
        "c2",
        "bob@example.com",
        "team_monthly",
        1,
    )]));
    // One of two is more than the 10% limit.
    let run = scene
        .run_sync_json("contracts-to-stripe", &["--allow-mass-retire"])
        .await;
    assert_eq!(counts(&run)[4], Some(1), "{run}");
    let c1 = scene.subscription_of("c1");
    assert_eq!(c1[0]["status"], "canceled");
    // A canceled subscription keeps its key: the row coming back is reported, not subscribed
    // anew.
    scene.warehouse_sql(&contracts_sql(&[
        ("c1", "ada@example.com", "pro_monthly", 4),
        ("c2", "bob@example.com", "team_monthly", 1),
    ]));
    let run = scene.run_sync_json("contracts-to-stripe", &[]).await;
    assert_eq!(scene.subscription_of("c1").len(), 1, "{run}");
    assert_eq!(run["created"], 0, "{run}");
    let failed = scene
        .run_records(run["run_id"].as_str().unwrap(), "rejected")
        .await;
    assert_eq!(failed.len(), 1, "{run}");
    let reason = failed[0]["reason"].as_str().unwrap();
    assert!(reason.contains("canceled"), "{reason}");
}
