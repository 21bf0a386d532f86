//! End-to-end: the `ferry` binary syncs a DuckDB model of a price list into the emulator's
//! Prices, keyed by lookup key, each naming its product by the id a product sync gave it.
//! Assertions read what the emulator holds or received.

mod common;

use common::Scene;
use serde_json::{json, Value as Json};

const CATALOGUE_SQL: &str = "
create table plans as select * from (values ('pro', 'Pro'), ('team', 'Team')) t(sku, name);
create table price_list as select * from (values
    ('pro_monthly', 'pro', 'usd', 2000, 'month', 'Pro monthly'),
    ('pro_yearly', 'pro', 'usd', 20000, 'year', 'Pro yearly'),
    ('team_monthly', 'team', 'EUR', 5000, 'month', 'Team monthly'),
    ('legacy_monthly', 'pro', 'usd', 1500, 'month', 'Legacy'),
    ('no_product', 'gone', 'usd', 100, 'month', 'Orphan')
) t(lookup, sku, currency, amount, every, nickname)";

impl Scene {
    async fn catalogue_syncs(&self) {
        for (name, sql) in [
            ("plans", "select * from plans order by sku"),
            ("price-list", "select * from price_list order by lookup"),
        ] {
            self.ferry(&[
                "model",
                "create",
                name,
                "--connection",
                "warehouse",
                "--sql",
                sql,
            ])
            .await
            .ok();
        }
        self.ferry(&[
            "sync",
            "create",
            "plans-to-stripe",
            "--model",
            "plans",
            "--destination",
            "stripe",
            "--object",
            "product",
            "--key",
            "sku=id",
            "--map",
            "name=name",
        ])
        .await
        .ok();
        self.ferry(&[
            "sync",
            "create",
            "prices-to-stripe",
            "--model",
            "price-list",
            "--destination",
            "stripe",
            "--object",
            "price",
            "--key",
            "lookup=lookup_key",
            "--map",
            "sku=product",
            "--map",
            "currency=currency",
            "--map",
            "amount=unit_amount",
            "--map",
            "every=recurring.interval",
            "--map",
            "nickname=nickname",
        ])
        .await
        .ok();
    }

    fn price_with_lookup_key(&self, key: &str) -> Vec<Json> {
        self.stripe()
            .prices()
            .into_iter()
            .filter(|p| p["lookup_key"] == key)
            .collect()
    }
}

fn counts(report: &Json) -> [Option<u64>; 4] {
    ["created", "updated", "unchanged", "rejected"].map(|k| report[k].as_u64())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prices_are_created_by_lookup_key_updated_where_stripe_allows_and_never_duplicated() {
    let scene = Scene::new().await;
    scene.warehouse_sql(CATALOGUE_SQL);
    scene.connect().await;
    scene.catalogue_syncs().await;
    scene.run_sync_json("plans-to-stripe", &[]).await;
    // An archived price made before ferry holds `legacy_monthly`: `GET /v1/prices` hides
    // archived prices, so only listing them too finds it and keeps it from being duplicated.
    let legacy = scene.stripe().seed_price(json!({
        "product": "pro", "currency": "usd", "unit_amount": 1500,
        "recurring": {"interval": "month"}, "lookup_key": "legacy_monthly",
        "nickname": "Old name", "active": false
    }));

    let run = scene.run_sync_json("prices-to-stripe", &[]).await;
    assert_eq!(counts(&run), [Some(3), Some(1), Some(0), Some(1)], "{run}");
    let pro_monthly = scene.price_with_lookup_key("pro_monthly");
    assert_eq!(pro_monthly.len(), 1);
    assert_eq!(
        (
            &pro_monthly[0]["product"],
            &pro_monthly[0]["currency"],
            &pro_monthly[0]["unit_amount"],
            &pro_monthly[0]["recurring"]["interval"],
            &pro_monthly[0]["nickname"],
        ),
        (
            &json!("pro"),
            &json!("usd"),
            &json!(2000),
            &json!("month"),
            &json!("Pro monthly")
        )
    );
    assert_eq!(
        scene.price_with_lookup_key("team_monthly")[0]["currency"],
        "eur",
        "currencies are sent in lower case"
    );
    let legacy_now = scene.price_with_lookup_key("legacy_monthly");
    assert_eq!(legacy_now.len(), 1, "matched, not duplicated");
    assert_eq!(
        (&legacy_now[0]["id"], &legacy_now[0]["nickname"]),
        (&json!(legacy), &json!("Legacy"))
    );
    // The price whose product does not exist: Stripe's refusal, as the row's reason.
    let rejected = scene
        .run_records(run["run_id"].as_str().unwrap(), "rejected")
        .await;
    let reason = rejected[0]["reason"].as_str().unwrap();
    assert!(reason.contains("No such product: 'gone'"), "{reason}");

    // A nickname changes: one update. An amount changes: Stripe cannot change it, so the row
    // is rejected, saying why, and nothing is sent for it.
    scene.warehouse_sql(
        "update price_list set nickname = 'Pro, monthly' where lookup = 'pro_monthly';
         update price_list set amount = 2500 where lookup = 'pro_yearly';
         delete from price_list where lookup = 'no_product'",
    );
    let posts_before = scene
        .stripe()
        .requests()
        .iter()
        .filter(|r| r.method == "POST")
        .count();
    let run = scene.run_sync_json("prices-to-stripe", &[]).await;
    assert_eq!(counts(&run), [Some(0), Some(1), Some(2), Some(1)], "{run}");
    let posts: Vec<_> = scene
        .stripe()
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .skip(posts_before)
        .collect();
    assert_eq!(posts.len(), 1, "{posts:?}");
    assert_eq!(posts[0].params, json!({"nickname": "Pro, monthly"}));
    let rejected = scene
        .run_records(run["run_id"].as_str().unwrap(), "rejected")
        .await;
    let reason = rejected[0]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("`unit_amount` cannot change once the price exists"),
        "{reason}"
    );
    assert_eq!(
        scene.price_with_lookup_key("pro_yearly")[0]["unit_amount"],
        20000
    );
}
