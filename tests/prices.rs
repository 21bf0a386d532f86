//! End-to-end: the `ferry` binary syncs a DuckDB model of a price list into the emulator's
//! Prices, keyed by lookup key, each naming its product by the id a product sync gave it.
//! Assertions read what the emulator holds or received.

mod common;

use common::Scene;
use ferry_stripe_emulator::{FaultConfig, FaultKind};
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
    /// Saves each `(name, sql)` as a model of the warehouse.
    async fn models(&self, models: &[(&str, &str)]) {
        for (name, sql) in models {
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
    }

    async fn catalogue_models(&self) {
        self.models(&[
            ("plans", "select * from plans order by sku"),
            ("price-list", "select * from price_list order by lookup"),
        ])
        .await;
    }

    async fn catalogue_syncs(&self) {
        self.catalogue_models().await;
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

    // A nickname changes: one update. An amount changes: Stripe cannot change it, so the price
    // is replaced: a new price takes over the lookup key, becomes the product's default (the
    // old one was), and the old one is archived. The preview says so first.
    let pro_yearly = scene.price_with_lookup_key("pro_yearly")[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    scene
        .stripe()
        .update_product("pro", json!({"default_price": pro_yearly}))
        .unwrap();
    scene.warehouse_sql(
        "update price_list set nickname = 'Pro, monthly' where lookup = 'pro_monthly';
         update price_list set amount = 2500 where lookup = 'pro_yearly';
         delete from price_list where lookup = 'no_product'",
    );
    let preview = scene
        .ferry(&["sync", "preview", "prices-to-stripe", "--format", "json"])
        .await
        .ok()
        .json();
    assert_eq!(
        (preview["update"].as_u64(), preview["replace"].as_u64()),
        (Some(1), Some(1)),
        "{preview}"
    );
    let example = preview["examples"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "replace")
        .unwrap();
    assert_eq!(example["stripe_id"], json!(pro_yearly), "{example}");
    assert_eq!(
        example["changes"]["unit_amount"],
        json!({"before": 20000, "after": 2500}),
        "{example}"
    );
    let reason = example["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("Stripe cannot change unit_amount once a price exists")
            && reason.contains("keep it"),
        "{reason}"
    );

    let posts_before = scene.stripe().requests().len();
    let run = scene.run_sync_json("prices-to-stripe", &[]).await;
    assert_eq!(counts(&run), [Some(0), Some(2), Some(2), Some(0)], "{run}");
    let mut posts: Vec<(String, Json)> = scene.stripe().requests()[posts_before..]
        .iter()
        .filter(|r| r.method == "POST")
        .map(|r| (r.path.clone(), r.params.clone()))
        .collect();
    posts.sort_by(|a, b| a.0.cmp(&b.0));
    let replacement = scene.price_with_lookup_key("pro_yearly");
    assert_eq!(replacement.len(), 1);
    let new_id = replacement[0]["id"].as_str().unwrap();
    let monthly_id = scene.price_with_lookup_key("pro_monthly")[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut expected = vec![
        (
            "/v1/prices".to_string(),
            json!({"currency": "usd", "lookup_key": "pro_yearly", "metadata": {"ferry_replaces": pro_yearly},
                   "nickname": "Pro yearly", "product": "pro", "recurring": {"interval": "year"},
                   "transfer_lookup_key": "true", "unit_amount": "2500"}),
        ),
        (
            format!("/v1/prices/{monthly_id}"),
            json!({"nickname": "Pro, monthly"}),
        ),
        (
            format!("/v1/prices/{pro_yearly}"),
            json!({"active": "false"}),
        ),
        (
            "/v1/products/pro".to_string(),
            json!({"default_price": new_id}),
        ),
    ];
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(posts, expected);
    assert_eq!(
        (
            &replacement[0]["unit_amount"],
            &replacement[0]["active"],
            &replacement[0]["nickname"]
        ),
        (&json!(2500), &json!(true), &json!("Pro yearly"))
    );
    let old = scene.stripe().price(&pro_yearly).unwrap();
    assert_eq!(
        (&old["active"], &old["lookup_key"]),
        (&json!(false), &Json::Null)
    );
    assert_eq!(
        scene.stripe().product("pro").unwrap()["default_price"],
        new_id
    );
    let updated = scene
        .run_records(run["run_id"].as_str().unwrap(), "updated")
        .await;
    let record = updated.iter().find(|r| r["key"] == "pro_yearly").unwrap();
    assert_eq!(record["stripe_id"], new_id, "{record}");
    let reason = record["reason"].as_str().unwrap();
    assert!(
        reason.starts_with(&format!(
            "replaced `{pro_yearly}`: Stripe cannot change unit_amount"
        )),
        "{reason}"
    );

    // Nothing changed since: nothing is sent, and the replacement is not replaced again.
    let run = scene.run_sync_json("prices-to-stripe", &[]).await;
    assert_eq!(counts(&run), [Some(0), Some(0), Some(4), Some(0)], "{run}");
}

/// A replacement killed after each of its steps (the new price made; the product's default
/// pointed at it; the old price archived), each before its outcome was committed: every rerun
/// finds the new price by its lookup key and finishes, and Stripe ends with one price per
/// lookup key, the old one archived and the product's default the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_price_replacement_killed_at_any_step_is_finished_by_the_rerun_without_a_duplicate() {
    let scene = Scene::new().await;
    scene.warehouse_sql(CATALOGUE_SQL);
    scene.warehouse_sql("delete from price_list where lookup = 'no_product'");
    scene.connect().await;
    scene.catalogue_syncs().await;
    scene.run_sync_json("plans-to-stripe", &[]).await;
    scene.run_sync_json("prices-to-stripe", &[]).await;
    for (round, point) in ["replace:created", "replace:repointed", "replace:retired"]
        .into_iter()
        .enumerate()
    {
        let old = scene.price_with_lookup_key("team_monthly")[0]["id"]
            .as_str()
            .unwrap()
            .to_string();
        scene
            .stripe()
            .update_product("team", json!({"default_price": old}))
            .unwrap();
        let amount = 6000 + 100 * round;
        scene.warehouse_sql(&format!(
            "update price_list set amount = {amount} where lookup = 'team_monthly'"
        ));
        scene.crash_run_at("prices-to-stripe", point).await;

        let run = scene.run_sync_json("prices-to-stripe", &[]).await;
        assert_eq!(
            (
                run["status"].as_str(),
                run["updated"].as_u64(),
                run["failed"].as_u64()
            ),
            (Some("completed"), Some(1), Some(0)),
            "after a crash at {point}: {run}"
        );
        let holders = scene.price_with_lookup_key("team_monthly");
        assert_eq!(holders.len(), 1, "after a crash at {point}");
        let new_id = holders[0]["id"].as_str().unwrap();
        assert_ne!(new_id, old);
        assert_eq!(
            holders[0]["unit_amount"], amount,
            "after a crash at {point}"
        );
        assert_eq!(holders[0]["metadata"]["ferry_replaces"], old);
        let team_prices: Vec<Json> = scene
            .stripe()
            .prices()
            .into_iter()
            .filter(|p| p["product"] == "team")
            .collect();
        assert_eq!(
            team_prices.len(),
            round + 2,
            "one new price per replacement, after a crash at {point}: {team_prices:?}"
        );
        assert_eq!(
            team_prices.iter().filter(|p| p["active"] == true).count(),
            1,
            "only the newest is active, after a crash at {point}"
        );
        assert_eq!(
            scene.stripe().product("team").unwrap()["default_price"],
            new_id
        );
        let again = scene.run_sync_json("prices-to-stripe", &[]).await;
        assert_eq!(again["updated"].as_u64(), Some(0), "{again}");
    }

    // Half of Stripe's answers lost (each write executed, its answer never seen): retries
    // replay each step under its idempotency key, and what still failed the next run finishes.
    let old = scene.price_with_lookup_key("team_monthly")[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    scene.warehouse_sql("update price_list set amount = 7000 where lookup = 'team_monthly'");
    scene.stripe().set_fault_seed(7);
    scene.stripe().set_faults(FaultConfig {
        lose_response_rate: 0.5,
        ..FaultConfig::default()
    });
    let requests_before = scene.stripe().requests().len();
    scene.ferry(&["sync", "run", "prices-to-stripe"]).await;
    let lost = scene.stripe().requests()[requests_before..]
        .iter()
        .filter(|r| r.fault == Some(FaultKind::LostResponse))
        .count();
    assert!(lost > 0, "the test must really lose answers");
    scene.stripe().set_faults(FaultConfig::default());
    scene.run_sync_json("prices-to-stripe", &[]).await;
    let holders = scene.price_with_lookup_key("team_monthly");
    assert_eq!(holders.len(), 1);
    assert_eq!(
        (
            &holders[0]["unit_amount"],
            &holders[0]["metadata"]["ferry_replaces"]
        ),
        (&json!(7000), &json!(old))
    );
    let team_prices: Vec<Json> = scene
        .stripe()
        .prices()
        .into_iter()
        .filter(|p| p["product"] == "team")
        .collect();
    assert_eq!(team_prices.len(), 5, "{team_prices:?}");
    assert_eq!(
        team_prices.iter().filter(|p| p["active"] == true).count(),
        1
    );
    assert_eq!(
        scene.stripe().product("team").unwrap()["default_price"],
        holders[0]["id"]
    );
}

/// A price names its product by the product's key (`--map sku=product(metadata.sku)`) when
/// Stripe chose the product's id: the key resolves from what the product sync wrote, a key no
/// product carries rejects the row with the fix, and a changed price sends only what changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_price_names_its_product_by_the_products_key() {
    let scene = Scene::new().await;
    scene.warehouse_sql(CATALOGUE_SQL);
    scene.connect().await;
    scene.catalogue_models().await;
    scene
        .ferry(&[
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
            "sku=metadata.sku",
            "--map",
            "name=name",
        ])
        .await
        .ok();
    // A field that names no other record cannot be looked up; a key the product lacks is
    // refused with the keys it has.
    for (map, expected) in [
        ("sku=nickname(id)", "nickname does not name another Stripe record"),
        ("sku=product(email)", "a product is found by `id` or an external id kept in its metadata (`metadata.KEY`), not `email`"),
    ] {
        let refused = scene
            .ferry(&[
                "sync", "create", "refused", "--model", "price-list", "--destination", "stripe",
                "--object", "price", "--key", "lookup=lookup_key", "--map", map,
                "--map", "currency=currency", "--map", "amount=unit_amount",
            ])
            .await;
        assert!(refused.stderr.contains(expected), "{}", refused.stderr);
    }
    scene
        .ferry(&[
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
            "sku=product(metadata.sku)",
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

    // Before the products exist, every row says what to do.
    let run = scene.run_sync_json("prices-to-stripe", &[]).await;
    assert_eq!(counts(&run), [Some(0), Some(0), Some(0), Some(5)], "{run}");
    let rejected = scene
        .run_records(run["run_id"].as_str().unwrap(), "rejected")
        .await;
    let reasons: Vec<&str> = rejected
        .iter()
        .map(|r| r["reason"].as_str().unwrap())
        .collect();
    assert!(
        reasons.contains(&"product: no Stripe product has metadata.sku `pro` (from sku): sync products first, or correct the value"),
        "{reasons:?}"
    );
    assert!(scene.stripe().prices().is_empty());

    scene.run_sync_json("plans-to-stripe", &[]).await;
    let product_id = |sku: &str| {
        let products: Vec<Json> = scene
            .stripe()
            .products()
            .into_iter()
            .filter(|p| p["metadata"]["sku"] == sku)
            .collect();
        assert_eq!(products.len(), 1, "{products:?}");
        products[0]["id"].as_str().unwrap().to_string()
    };
    let (pro, team) = (product_id("pro"), product_id("team"));
    assert_ne!(pro, "pro", "Stripe chose the id");

    let run = scene.run_sync_json("prices-to-stripe", &[]).await;
    assert_eq!(counts(&run), [Some(4), Some(0), Some(0), Some(1)], "{run}");
    assert_eq!(
        scene.price_with_lookup_key("pro_monthly")[0]["product"],
        json!(pro)
    );
    assert_eq!(
        scene.price_with_lookup_key("team_monthly")[0]["product"],
        json!(team)
    );
    let rejected = scene
        .run_records(run["run_id"].as_str().unwrap(), "rejected")
        .await;
    assert_eq!(rejected[0]["key"], "no_product");
    assert!(
        rejected[0]["reason"]
            .as_str()
            .unwrap()
            .contains("no Stripe product has metadata.sku `gone`"),
        "{rejected:?}"
    );

    // A changed nickname sends the nickname alone: the snapshot remembers the product's id,
    // not the key it was found by.
    scene.warehouse_sql(
        "update price_list set nickname = 'Pro, monthly' where lookup = 'pro_monthly'",
    );
    let posts_before = scene.stripe().requests().len();
    let run = scene.run_sync_json("prices-to-stripe", &[]).await;
    assert_eq!(counts(&run), [Some(0), Some(1), Some(3), Some(1)], "{run}");
    let posts: Vec<Json> = scene.stripe().requests()[posts_before..]
        .iter()
        .filter(|r| r.method == "POST")
        .map(|r| r.params.clone())
        .collect();
    assert_eq!(posts, vec![json!({"nickname": "Pro, monthly"})]);
}

/// A tiered price maps its tiers from a JSON column: created with them, compared with what
/// Stripe returns (read with `expand[]=tiers`, every amount written twice there) so that an
/// unchanged price sends nothing even when read back, and replaced when its tiers change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tiered_price_maps_its_tiers_and_is_replaced_when_they_change() {
    let scene = Scene::new().await;
    scene.warehouse_sql(
        r#"create table plans as select 'seats' as sku, 'Seats' as name;
        create table tiered as select 'seats_monthly' as lookup, 'seats' as sku, 'usd' as currency,
            'month' as every, 'graduated' as mode,
            '[{"up_to": 10, "unit_amount": 500}, {"up_to": "inf", "unit_amount_decimal": "4.50", "flat_amount": 100}]' as tiers"#,
    );
    scene.connect().await;
    scene
        .models(&[
            ("plans", "select * from plans"),
            ("tiered", "select * from tiered"),
        ])
        .await;
    scene
        .ferry(&[
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
    scene
        .ferry(&[
            "sync",
            "create",
            "tiers-to-stripe",
            "--model",
            "tiered",
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
            "every=recurring.interval",
            "--map",
            "'tiered'=billing_scheme",
            "--map",
            "mode=tiers_mode",
            "--map",
            "tiers=tiers",
        ])
        .await
        .ok();
    scene.run_sync_json("plans-to-stripe", &[]).await;
    let run = scene.run_sync_json("tiers-to-stripe", &[]).await;
    assert_eq!(counts(&run), [Some(1), Some(0), Some(0), Some(0)], "{run}");
    let price = &scene.price_with_lookup_key("seats_monthly")[0];
    assert_eq!(
        (
            &price["billing_scheme"],
            &price["tiers_mode"],
            &price["tiers"]
        ),
        (
            &json!("tiered"),
            &json!("graduated"),
            &json!([
                {"flat_amount": null, "flat_amount_decimal": null, "unit_amount": 500, "unit_amount_decimal": "500", "up_to": 10},
                {"flat_amount": 100, "flat_amount_decimal": "100", "unit_amount": null, "unit_amount_decimal": "4.5", "up_to": null}
            ])
        )
    );

    // Read back from Stripe and compared field by field: nothing to send.
    let posts_before = scene.posts();
    let run = scene
        .run_sync_json("tiers-to-stripe", &["--full-resync"])
        .await;
    assert_eq!(counts(&run), [Some(0), Some(0), Some(1), Some(0)], "{run}");
    assert_eq!(scene.posts(), posts_before);

    // Stripe never changes tiers: new tiers replace the price.
    let old_id = price["id"].as_str().unwrap().to_string();
    scene.warehouse_sql(
        r#"update tiered set tiers = '[{"up_to": 10, "unit_amount": 450}, {"up_to": null, "unit_amount": 400}]'"#,
    );
    let run = scene.run_sync_json("tiers-to-stripe", &[]).await;
    assert_eq!(counts(&run), [Some(0), Some(1), Some(0), Some(0)], "{run}");
    let holders = scene.price_with_lookup_key("seats_monthly");
    assert_eq!(holders.len(), 1);
    assert_ne!(holders[0]["id"], json!(old_id));
    assert_eq!(
        holders[0]["tiers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["unit_amount"].clone())
            .collect::<Vec<_>>(),
        vec![json!(450), json!(400)]
    );
    assert_eq!(
        scene.stripe().price(&old_id).unwrap()["active"],
        json!(false)
    );
}

/// Forty price replacements (every amount changed), against 10 ms of latency and ferry's
/// test-mode limit of 25 requests a second, in runs SIGKILLed at seeded random moments (a
/// rerun first reads each interrupted replacement's lookup key, over a second for forty),
/// then one run to the end: each lookup key ends on one
/// active price with the new amount, made once, naming the one it replaced, which is archived.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacements_killed_at_random_moments_make_each_new_price_once() {
    let mut config = common::fast_emulator_config();
    config.faults.latency = std::time::Duration::from_millis(10);
    let scene = Scene::with_emulator(config).await;
    scene.warehouse_sql(
        "create table plans as select * from (values ('pro', 'Pro'), ('team', 'Team')) t(sku, name);
         create table price_list as select 'p' || lpad(i::varchar, 2, '0') as lookup, 'pro' as sku,
             'usd' as currency, 1000 + i as amount, 'month' as every, 'Plan ' || i as nickname
             from range(40) t(i)",
    );
    scene.connect().await;
    scene.catalogue_syncs().await;
    scene.run_sync_json("plans-to-stripe", &[]).await;
    let run = scene.run_sync_json("prices-to-stripe", &[]).await;
    assert_eq!(run["created"].as_u64(), Some(40), "{run}");
    let originals: std::collections::HashMap<String, String> = scene
        .stripe()
        .prices()
        .into_iter()
        .map(|p| {
            (
                p["lookup_key"].as_str().unwrap().to_string(),
                p["id"].as_str().unwrap().to_string(),
            )
        })
        .collect();

    scene.warehouse_sql("update price_list set amount = amount + 500");
    let kills = scene
        .kill_runs_at_random_moments("prices-to-stripe", 5, 5, 300..3500, |scene| {
            scene.stripe().prices().len()
        })
        .await;
    assert!(
        kills.iter().any(|(_, prices)| *prices > 40 && *prices < 80),
        "some run must be killed halfway: {kills:?}"
    );
    let run = scene.run_sync_json("prices-to-stripe", &[]).await;
    assert_eq!(
        (run["status"].as_str(), run["failed"].as_u64()),
        (Some("completed"), Some(0)),
        "{run}"
    );

    let prices = scene.stripe().prices();
    assert_eq!(prices.len(), 80, "one new price per old one");
    for (lookup, old) in &originals {
        let holders = scene.price_with_lookup_key(lookup);
        assert_eq!(holders.len(), 1, "{lookup}");
        let n: i64 = lookup[1..].parse().unwrap();
        assert_eq!(
            (
                &holders[0]["unit_amount"],
                &holders[0]["active"],
                &holders[0]["metadata"]["ferry_replaces"]
            ),
            (&json!(1500 + n), &json!(true), &json!(old)),
            "{lookup}"
        );
        let old_price = prices.iter().find(|p| p["id"] == json!(old)).unwrap();
        assert_eq!(old_price["active"], false, "{lookup}: the old one archived");
    }
    let again = scene.run_sync_json("prices-to-stripe", &[]).await;
    assert_eq!(again["unchanged"].as_u64(), Some(40), "{again}");
}
