//! End-to-end: the Mirror behavior retires what left the model, per object (a product deleted,
//! or archived when it has prices; a price archived after its product stops naming it as its
//! default; a customer deleted only when the sync opts in), never more than the sync's limit
//! unless told, and never the record of a row that is still in the model but rejected.
//! Assertions read what the emulator holds and what the workspace recorded.

mod common;

use common::{people_sql, Scene};
use serde_json::{json, Value as Json};

const CATALOGUE_SQL: &str = "
create table plans as select * from (values
    ('pro', 'Pro'), ('team', 'Team'), ('starter', 'Starter'), ('legacy', 'Legacy')
) t(sku, name);
create table price_list as select * from (values
    ('pro_monthly', 'pro', 2000), ('pro_yearly', 'pro', 20000), ('team_monthly', 'team', 5000)
) t(lookup, sku, amount)";

impl Scene {
    async fn mirror_catalogue(&self) {
        for (name, sql) in [
            ("plans", "select * from plans"),
            ("price-list", "select * from price_list"),
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
            "--behavior",
            "mirror",
            "--max-retire-percent",
            "50",
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
            "--behavior",
            "mirror",
            "--max-retire-percent",
            "50",
            "--key",
            "lookup=lookup_key",
            "--map",
            "sku=product",
            "--map",
            "'usd'=currency",
            "--map",
            "amount=unit_amount",
        ])
        .await
        .ok();
    }
}

fn retired_records(records: &[Json]) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = records
        .iter()
        .map(|r| {
            (
                r["key"].as_str().unwrap().to_string(),
                r["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    pairs.sort();
    pairs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_deletes_or_archives_the_products_and_prices_that_left_the_model() {
    let scene = Scene::new().await;
    scene.warehouse_sql(CATALOGUE_SQL);
    scene.connect().await;
    scene.mirror_catalogue().await;
    let run = scene.run_sync_json("plans-to-stripe", &[]).await;
    assert_eq!(run["created"], 4, "{run}");
    let run = scene.run_sync_json("prices-to-stripe", &[]).await;
    assert_eq!(run["created"], 3, "{run}");
    // `legacy` has a price made outside ferry: Stripe keeps a product that has prices.
    scene.stripe().seed_price(json!({
        "product": "legacy", "currency": "usd", "unit_amount": 100
    }));
    let pro_yearly = scene
        .stripe()
        .prices()
        .into_iter()
        .find(|p| p["lookup_key"] == "pro_yearly")
        .unwrap();
    let pro_yearly = pro_yearly["id"].as_str().unwrap().to_string();
    scene
        .stripe()
        .update_product("pro", json!({"default_price": pro_yearly}))
        .unwrap();

    scene.warehouse_sql(
        "delete from plans where sku in ('starter', 'legacy');
         delete from price_list where lookup = 'pro_yearly'",
    );
    let preview = scene
        .ferry(&["sync", "preview", "plans-to-stripe", "--format", "json"])
        .await
        .ok()
        .json();
    assert_eq!(
        (preview["retire"].as_u64(), preview["unchanged"].as_u64()),
        (Some(2), Some(2)),
        "{preview}"
    );
    let examples: Vec<(&str, &str)> = preview["examples"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "retire")
        .map(|e| (e["key"].as_str().unwrap(), e["stripe_id"].as_str().unwrap()))
        .collect();
    assert_eq!(examples, [("legacy", "legacy"), ("starter", "starter")]);
    assert!(preview.get("retire_refused").is_none(), "{preview}");

    let requests_before = scene.stripe().requests().len();
    let run = scene.run_sync_json("plans-to-stripe", &[]).await;
    assert_eq!(
        (
            run["status"].as_str(),
            run["retired"].as_u64(),
            run["unchanged"].as_u64(),
            run["rows"].as_u64()
        ),
        (Some("completed"), Some(2), Some(2), Some(2)),
        "{run}"
    );
    let mut writes: Vec<String> = scene.stripe().requests()[requests_before..]
        .iter()
        .filter(|r| r.method != "GET")
        .map(|r| format!("{} {} {}", r.method, r.path, r.status.unwrap_or(0)))
        .collect();
    writes.sort();
    assert_eq!(
        writes,
        [
            "DELETE /v1/products/legacy 400",
            "DELETE /v1/products/starter 200",
            "POST /v1/products/legacy 200",
        ]
    );
    assert!(scene.stripe().product("starter").is_none());
    assert_eq!(scene.stripe().product("legacy").unwrap()["active"], false);
    assert_eq!(scene.stripe().product("pro").unwrap()["active"], true);
    let records = scene
        .run_records(run["run_id"].as_str().unwrap(), "retired")
        .await;
    assert_eq!(
        retired_records(&records),
        [
            (
                "legacy".to_string(),
                "its row left the model: archived (Stripe keeps a product that has prices)"
                    .to_string()
            ),
            (
                "starter".to_string(),
                "its row left the model: deleted".to_string()
            ),
        ]
    );

    // The price that left was its product's default: the default is unset, then the price
    // archived (Stripe keeps a default price active).
    let run = scene.run_sync_json("prices-to-stripe", &[]).await;
    assert_eq!(run["retired"], 1, "{run}");
    let price = scene.stripe().price(&pro_yearly).unwrap();
    assert_eq!(
        (&price["active"], &price["lookup_key"]),
        (&json!(false), &json!("pro_yearly"))
    );
    assert_eq!(
        scene.stripe().product("pro").unwrap()["default_price"],
        Json::Null
    );

    // Retired records are forgotten: the next runs send nothing for them, and a row that
    // comes back is synced again (the deleted product's id is free again).
    let requests_before = scene.stripe().requests().len();
    let run = scene.run_sync_json("plans-to-stripe", &[]).await;
    assert_eq!(
        (run["retired"].as_u64(), run["unchanged"].as_u64()),
        (Some(0), Some(2)),
        "{run}"
    );
    assert_eq!(scene.stripe().requests().len(), requests_before);
    // The archived one comes back to life: under Mirror, a row in the model means an active
    // record.
    scene.warehouse_sql("insert into plans values ('starter', 'Starter'), ('legacy', 'Legacy')");
    let run = scene.run_sync_json("plans-to-stripe", &[]).await;
    assert_eq!(
        (
            run["created"].as_u64(),
            run["updated"].as_u64(),
            run["retired"].as_u64()
        ),
        (Some(1), Some(1), Some(0)),
        "{run}"
    );
    assert_eq!(
        scene.stripe().product("starter").unwrap()["name"],
        "Starter"
    );
    assert_eq!(scene.stripe().product("legacy").unwrap()["active"], true);
    let run = scene.run_sync_json("plans-to-stripe", &[]).await;
    assert_eq!(run["unchanged"], 4, "{run}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_deletes_customers_only_when_opted_in_and_never_more_than_the_limit_unless_told() {
    let scene = Scene::new().await;
    scene.warehouse_sql(&people_sql(10));
    scene.connect().await;
    scene.email_sync(&[]).await;
    // A customer sync mirrors only with the opt-in: deleting customers cannot be undone.
    let refused = scene
        .ferry(&[
            "sync",
            "create",
            "people-to-stripe",
            "--model",
            "people",
            "--destination",
            "stripe",
            "--behavior",
            "mirror",
            "--key",
            "email=email",
            "--map",
            "name=name",
        ])
        .await;
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("--delete-customers"),
        "{}",
        refused.stderr
    );
    scene
        .save_email_sync(&["--behavior", "mirror", "--delete-customers"])
        .await;
    let shown = scene
        .ferry(&["sync", "show", "people-to-stripe"])
        .await
        .ok();
    assert!(
        shown
            .stdout
            .contains("  mirror:   retires at most 10% of the records per run; deletes customers"),
        "{}",
        shown.stdout
    );
    let run = scene.run_sync_json("people-to-stripe", &[]).await;
    assert_eq!(run["created"], 10, "{run}");

    // Half the model is gone (a truncated table?): the run updates what changed but retires
    // nothing, and says why; the preview says the same.
    scene.warehouse_sql(
        "delete from people where id > 5;
         update people set name = 'Person One' where id = 1",
    );
    let preview = scene
        .ferry(&["sync", "preview", "people-to-stripe", "--format", "json"])
        .await
        .ok()
        .json();
    assert_eq!(preview["retire"], 5, "{preview}");
    let refusal = preview["retire_refused"].as_str().unwrap();
    assert!(
        refusal.starts_with("retired nothing: 5 of the sync's 10 customers left the model (50%), more than its limit of 10%"),
        "{refusal}"
    );
    let ran = scene
        .ferry(&["sync", "run", "people-to-stripe", "--format", "json"])
        .await;
    assert_eq!(ran.code, 1, "{}", ran.stderr);
    let run = ran.json();
    assert_eq!(
        (
            run["status"].as_str(),
            run["updated"].as_u64(),
            run["retired"].as_u64()
        ),
        (Some("failed"), Some(1), Some(0)),
        "{run}"
    );
    assert!(
        run["error"]
            .as_str()
            .unwrap()
            .contains("--allow-mass-retire"),
        "{run}"
    );
    assert_eq!(scene.stripe().customers().len(), 10);

    // Told so, it retires them; a row still in the model but rejected (its name too long for
    // Stripe) keeps its customer.
    scene.warehouse_sql(&format!(
        "update people set name = '{}' where id = 2",
        "x".repeat(300)
    ));
    let run = scene
        .run_sync_json("people-to-stripe", &["--allow-mass-retire"])
        .await;
    assert_eq!(
        (
            run["status"].as_str(),
            run["retired"].as_u64(),
            run["rejected"].as_u64()
        ),
        (Some("completed"), Some(5), Some(1)),
        "{run}"
    );
    let mut left: Vec<String> = scene
        .stripe()
        .customers()
        .iter()
        .map(|c| c["email"].as_str().unwrap().to_string())
        .collect();
    left.sort();
    assert_eq!(
        left,
        (1..=5)
            .map(|i| format!("person{i}@example.com"))
            .collect::<Vec<_>>()
    );
    let records = scene
        .run_records(run["run_id"].as_str().unwrap(), "retired")
        .await;
    assert_eq!(records.len(), 5);
    assert!(
        records
            .iter()
            .all(|r| r["reason"] == "its row left the model: deleted"
                && r["row"].as_u64().unwrap() > 5),
        "numbered after the model's rows: {records:?}"
    );
}
