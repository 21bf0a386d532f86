//! End-to-end: the `ferry` binary syncs a DuckDB model of a catalogue into the emulator's
//! Products, keyed by the product's own id or by an external id in metadata, and every
//! assertion reads what the emulator holds or received.

mod common;

use common::Scene;
use serde_json::{json, Value as Json};

/// A `plans` table: sku, name, description, active, tier, unit_label.
const PLANS_SQL: &str = "create table plans as select * from (values
    ('gold-2026', 'Gold', 'Everything, fast', true, 'gold', 'seat'),
    ('silver-2026', 'Silver', 'Most things', true, 'silver', 'seat'),
    ('legacy-1', 'Legacy', null, false, 'old', null)
) t(sku, name, description, active, tier, unit_label)";

impl Scene {
    /// Model `plans` and sync `plans-to-stripe` of products keyed by their own id.
    async fn plans_sync(&self, key: &str, extra: &[&str]) {
        self.ferry(&[
            "model",
            "create",
            "plans",
            "--connection",
            "warehouse",
            "--sql",
            "select * from plans order by sku",
        ])
        .await
        .ok();
        let mut args = vec![
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
            key,
            "--map",
            "name=name",
            "--map",
            "description=description",
            "--map",
            "active=active",
            "--map",
            "tier=metadata.tier",
            "--map",
            "unit_label=unit_label",
        ];
        args.extend_from_slice(extra);
        self.ferry(&args).await.ok();
    }

    fn product_posts(&self) -> usize {
        self.stripe()
            .requests()
            .iter()
            .filter(|r| r.method == "POST" && r.path.starts_with("/v1/products"))
            .count()
    }
}

fn counts(report: &Json, keys: [&str; 4]) -> [Option<u64>; 4] {
    keys.map(|k| report[k].as_u64())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn products_are_created_with_their_own_ids_then_updated_and_left_alone() {
    let scene = Scene::new().await;
    // Made in the Dashboard before ferry: matched by its id, updated, never duplicated.
    scene
        .stripe()
        .seed_product(json!({"id": "legacy-1", "name": "Legacy plan", "active": true}));
    scene.warehouse_sql(PLANS_SQL);
    scene.connect().await;
    scene.plans_sync("sku=id", &[]).await;

    let preview = scene
        .ferry(&["sync", "preview", "plans-to-stripe", "--format", "json"])
        .await
        .ok()
        .json();
    assert_eq!(
        counts(&preview, ["rows", "create", "update", "rejected"]),
        [Some(3), Some(2), Some(1), Some(0)],
        "{preview}"
    );
    assert_eq!(scene.product_posts(), 0, "a preview sends no write");
    // Stripe's booleans compare with the model's: `active` goes from true to false.
    let legacy = preview["examples"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["key"] == "legacy-1")
        .expect("the update is shown");
    assert_eq!(
        legacy["changes"],
        json!({
            "active": {"before": "true", "after": "false"},
            "metadata.tier": {"before": null, "after": "old"},
            "name": {"before": "Legacy plan", "after": "Legacy"}
        })
    );

    let run = scene.run_sync_json("plans-to-stripe", &[]).await;
    assert_eq!(
        counts(&run, ["created", "updated", "unchanged", "rejected"]),
        [Some(2), Some(1), Some(0), Some(0)],
        "{run}"
    );
    let stripe = scene.stripe();
    assert_eq!(stripe.products().len(), 3, "no duplicate of legacy-1");
    let gold = stripe
        .product("gold-2026")
        .expect("the sku is the product's id");
    assert_eq!(
        (
            &gold["name"],
            &gold["description"],
            &gold["active"],
            &gold["unit_label"],
            &gold["metadata"]
        ),
        (
            &json!("Gold"),
            &json!("Everything, fast"),
            &json!(true),
            &json!("seat"),
            &json!({"tier": "gold"})
        )
    );
    let legacy = stripe.product("legacy-1").unwrap();
    assert_eq!(
        (&legacy["name"], &legacy["active"], &legacy["metadata"]),
        (&json!("Legacy"), &json!(false), &json!({"tier": "old"}))
    );

    // Nothing changed: nothing sent.
    let posts = scene.product_posts();
    let run = scene.run_sync_json("plans-to-stripe", &[]).await;
    assert_eq!(
        counts(&run, ["created", "updated", "unchanged", "rejected"]),
        [Some(0), Some(0), Some(3), Some(0)],
        "{run}"
    );
    assert_eq!(scene.product_posts(), posts);

    // One row changes: one update, with only what changed (the id is never sent again).
    scene.warehouse_sql(
        "update plans set name = 'Gold+', description = null where sku = 'gold-2026'",
    );
    let run = scene.run_sync_json("plans-to-stripe", &[]).await;
    assert_eq!(
        counts(&run, ["created", "updated", "unchanged", "rejected"]),
        [Some(0), Some(1), Some(2), Some(0)],
        "{run}"
    );
    let requests = scene.stripe().requests();
    let update = requests.last().unwrap();
    assert_eq!(
        (update.method.as_str(), update.path.as_str()),
        ("POST", "/v1/products/gold-2026")
    );
    assert_eq!(
        update.params,
        json!({"name": "Gold+"}),
        "only the name: nulls are skipped by default"
    );
    assert_eq!(
        scene.stripe().product("gold-2026").unwrap()["name"],
        "Gold+"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn products_keyed_by_an_external_id_get_stripe_made_ids_and_bad_rows_are_rejected() {
    let scene = Scene::new().await;
    scene.warehouse_sql(PLANS_SQL);
    scene.warehouse_sql(
        "insert into plans values ('no-name', null, 'x', true, 't', null),
                                  ('long-label', 'Long', 'x', true, 't', 'a unit label too long')",
    );
    scene.connect().await;
    scene.plans_sync("sku=metadata.sku", &[]).await;

    let run = scene.run_sync_json("plans-to-stripe", &[]).await;
    assert_eq!(
        counts(&run, ["created", "updated", "unchanged", "rejected"]),
        [Some(3), Some(0), Some(0), Some(2)],
        "{run}"
    );
    let records = scene
        .run_records(run["run_id"].as_str().unwrap(), "rejected")
        .await;
    let reasons: Vec<String> = records
        .iter()
        .map(|r| format!("{}: {}", r["key"], r["reason"].as_str().unwrap_or("")))
        .collect();
    assert_in_order(
        &reasons.join("\n"),
        &["long-label", "unit_label", "no-name", "name"],
    );

    let products = scene.stripe().products();
    assert_eq!(products.len(), 3);
    for product in &products {
        let id = product["id"].as_str().unwrap();
        assert!(id.starts_with("prod_"), "Stripe chose the id: {id}");
        assert_eq!(product["metadata"]["sku"], product_sku(product));
    }

    // A rerun after the rows are fixed creates only those two.
    scene.warehouse_sql(
        "update plans set name = 'Named' where sku = 'no-name';
         update plans set unit_label = 'seat' where sku = 'long-label'",
    );
    let run = scene.run_sync_json("plans-to-stripe", &[]).await;
    assert_eq!(
        counts(&run, ["created", "updated", "unchanged", "rejected"]),
        [Some(2), Some(0), Some(3), Some(0)],
        "{run}"
    );
    assert_eq!(scene.stripe().products().len(), 5);
}

/// The sku a product was created from, read back from its name (the test's rows are distinct).
fn product_sku(product: &Json) -> Json {
    let sku = match product["name"].as_str().unwrap() {
        "Gold" => "gold-2026",
        "Silver" => "silver-2026",
        "Legacy" => "legacy-1",
        other => panic!("unexpected product {other}"),
    };
    json!(sku)
}

/// Every fragment appears in `text`, in order.
fn assert_in_order(text: &str, fragments: &[&str]) {
    let mut rest = text;
    for fragment in fragments {
        let at = rest
            .find(fragment)
            .unwrap_or_else(|| panic!("`{fragment}` missing (in order) from:\n{text}"));
        rest = &rest[at + fragment.len()..];
    }
}

/// ferry.yaml declares a product sync with `object: product`; `ferry export` writes it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_product_sync_is_declared_in_ferry_yaml_and_exported_back() {
    let mut scene = Scene::new().await;
    scene.warehouse_sql(PLANS_SQL);
    scene
        .env
        .push(("STRIPE_API_KEY".to_string(), common::KEY.to_string()));
    let yaml = format!(
        r#"version: 1
connections:
  stripe:
    kind: stripe
    api_key_env: STRIPE_API_KEY
    api_base: {api_base}
  warehouse:
    kind: duckdb
    path: warehouse.duckdb
models:
  plans:
    connection: warehouse
    sql: select sku, name, active from plans
syncs:
  plans_to_stripe:
    model: plans
    destination: stripe
    object: product
    behavior: update-or-create
    key: {{column: sku, field: id}}
    mappings:
      - {{column: name, field: name}}
      - {{column: active, field: active}}
      - {{column: "'ferry'", field: metadata.source}}
"#,
        api_base = scene.emulator.url(),
    );
    std::fs::write(scene.dir.path().join("ferry.yaml"), yaml).unwrap();
    scene
        .ferry(&["apply", "-f", "ferry.yaml", "--yes"])
        .await
        .ok();
    let run = scene.run_sync_json("plans_to_stripe", &[]).await;
    assert_eq!(run["created"].as_u64(), Some(3), "{run}");
    let silver = scene.stripe().product("silver-2026").unwrap();
    assert_eq!(
        (&silver["name"], &silver["metadata"]),
        (&json!("Silver"), &json!({"source": "ferry"}))
    );
    let exported = scene.ferry(&["export"]).await.ok().stdout;
    assert_in_order(
        &exported,
        &[
            "plans_to_stripe:",
            "object: product",
            "field: id",
            "metadata.source",
        ],
    );
}

/// A product made by hand since the last run, with the id a new row asks for: the run's index
/// refresh (`created[gte]`) finds it, so ferry updates it instead of trying to create it. (Made
/// during a run, after that refresh, Stripe refuses the create and the row fails for the next
/// run to match: `execute::tests::a_taken_id_fails_the_row_for_the_next_run_to_match`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_product_made_by_hand_with_a_rows_id_is_matched_not_created() {
    let scene = Scene::new().await;
    scene.warehouse_sql(PLANS_SQL);
    scene.connect().await;
    scene.plans_sync("sku=id", &[]).await;
    scene.run_sync_json("plans-to-stripe", &[]).await;

    scene
        .stripe()
        .seed_product(json!({"id": "bronze-2026", "name": "Made by hand"}));
    scene.warehouse_sql(
        "insert into plans values ('bronze-2026', 'Bronze', 'Some things', true, 'bronze', 'seat')",
    );
    let run = scene.run_sync_json("plans-to-stripe", &[]).await;
    assert_eq!(
        counts(&run, ["created", "updated", "unchanged", "failed"]),
        [Some(0), Some(1), Some(3), Some(0)],
        "{run}"
    );
    let bronze = scene.stripe().product("bronze-2026").unwrap();
    assert_eq!(bronze["name"], "Bronze", "{run}");
    assert_eq!(scene.stripe().products().len(), 4);
}

/// A product ferry made, deleted in Stripe since: a full resync makes it again under the same
/// id (the emulator frees a deleted product's id; Stripe does not document whether it does),
/// never replaying the old create.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_product_deleted_in_stripe_is_made_again_with_its_id() {
    let scene = Scene::new().await;
    scene.warehouse_sql(PLANS_SQL);
    scene.connect().await;
    scene.plans_sync("sku=id", &[]).await;
    scene.run_sync_json("plans-to-stripe", &[]).await;
    scene
        .stripe()
        .delete_product("silver-2026")
        .expect("a product without prices can be deleted");
    assert!(scene.stripe().product("silver-2026").is_none());

    let run = scene
        .run_sync_json("plans-to-stripe", &["--full-resync"])
        .await;
    assert_eq!(
        counts(&run, ["created", "updated", "unchanged", "failed"]),
        [Some(1), Some(0), Some(2), Some(0)],
        "{run}"
    );
    let silver = scene.stripe().product("silver-2026").expect("made again");
    assert_eq!(silver["name"], "Silver");
    let creates: Vec<_> = scene
        .stripe()
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path == "/v1/products" && r.executed)
        .collect();
    assert_eq!(creates.len(), 4, "3 first, then silver again");
}

/// `marketing_features` maps from a list of names: a warehouse list or `a, b` text. Stripe's
/// `[{"name": …}]` reads back as the same list, so an unchanged row sends nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marketing_features_map_from_a_list_of_names() {
    let scene = Scene::new().await;
    scene.warehouse_sql(
        "create table tiers as select * from (values
            ('basic', 'Basic', ['Email support'], null),
            ('plus', 'Plus', null, 'Phone support, SSO'),
            ('max', 'Max', range(16)::varchar[], null)
         ) t(code, name, feature_list, feature_text)",
    );
    scene.connect().await;
    scene
        .ferry(&[
            "model",
            "create",
            "tiers",
            "--connection",
            "warehouse",
            "--sql",
            "select code, name, coalesce(feature_list, string_split(feature_text, ', ')) as features from tiers",
        ])
        .await
        .ok();
    scene
        .ferry(&[
            "sync",
            "create",
            "tiers-to-stripe",
            "--model",
            "tiers",
            "--destination",
            "stripe",
            "--object",
            "product",
            "--key",
            "code=id",
            "--map",
            "name=name",
            "--map",
            "features=marketing_features",
        ])
        .await
        .ok();
    let run = scene.run_sync_json("tiers-to-stripe", &[]).await;
    assert_eq!(
        counts(&run, ["created", "updated", "unchanged", "rejected"]),
        [Some(2), Some(0), Some(0), Some(1)],
        "{run}"
    );
    assert_eq!(
        scene.stripe().product("plus").unwrap()["marketing_features"],
        json!([{"name": "Phone support"}, {"name": "SSO"}])
    );
    let records = scene
        .run_records(run["run_id"].as_str().unwrap(), "rejected")
        .await;
    let reason = records[0]["reason"].as_str().unwrap().to_string();
    assert_in_order(&reason, &["features", "marketing_features", "at most 15"]);

    // Unchanged: nothing sent, even after a full resync compares with what Stripe holds.
    let posts = scene.product_posts();
    let run = scene
        .run_sync_json("tiers-to-stripe", &["--full-resync"])
        .await;
    assert_eq!(run["unchanged"].as_u64(), Some(2), "{run}");
    assert_eq!(scene.product_posts(), posts);

    scene.warehouse_sql(
        "update tiers set feature_list = ['Email support', 'Chat'] where code = 'basic'",
    );
    let run = scene.run_sync_json("tiers-to-stripe", &[]).await;
    assert_eq!(run["updated"].as_u64(), Some(1), "{run}");
    assert_eq!(
        scene.stripe().product("basic").unwrap()["marketing_features"],
        json!([{"name": "Email support"}, {"name": "Chat"}])
    );
}
