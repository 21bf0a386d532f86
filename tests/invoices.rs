//! End-to-end: the `ferry` binary turns a DuckDB model of order lines (one row per line) into
//! the emulator's Invoices and Invoice Items: one invoice per order, keyed by the order id in
//! its metadata, each line an invoice item carrying its line key. Assertions read what the
//! emulator holds or received.

mod common;

use common::Scene;
use ferry_stripe_emulator::{FaultConfig, FaultKind};
use serde_json::{json, Value as Json};

/// `(order, line, email, amount, price, quantity, description)`; `amount` is text so that a
/// bad one can be written, NULL fields as `None`.
type Line<'a> = (
    &'a str,
    &'a str,
    &'a str,
    Option<&'a str>,
    Option<&'a str>,
    Option<u32>,
    &'a str,
);

fn order_lines_sql(lines: &[Line<'_>]) -> String {
    let text = |value: Option<&str>| value.map_or("NULL".to_string(), |v| format!("'{v}'"));
    let values: Vec<String> = lines
        .iter()
        .map(|(order, line, email, amount, price, quantity, description)| {
            format!(
                "('{order}', '{line}', '{email}', {}::varchar, {}::varchar, {}::integer, '{description}')",
                text(*amount),
                text(*price),
                quantity.map_or("NULL".to_string(), |q| q.to_string())
            )
        })
        .collect();
    format!(
        "create or replace table order_lines as select * from (values {}) t(order_id, line_id, email, amount, price, quantity, description)",
        values.join(", ")
    )
}

const ORDER_LINES_MODEL: &str = "select * from order_lines order by order_id, line_id";

impl Scene {
    /// Two customers and a one-time setup fee price, made in Stripe before the sync.
    fn seed_billing(&self) -> (String, String, String) {
        let stripe = self.stripe();
        let ada = stripe.seed_customer(json!({"email": "ada@example.com"}));
        let bob = stripe.seed_customer(json!({"email": "bob@example.com"}));
        stripe.seed_product(json!({"id": "setup", "name": "Setup"}));
        let fee = stripe.seed_price(json!({
            "product": "setup", "currency": "usd", "unit_amount": 5000, "lookup_key": "setup_fee"
        }));
        (ada, bob, fee)
    }

    async fn invoices_sync(&self, extra: &[&str]) {
        self.ferry(&[
            "model",
            "create",
            "order-lines",
            "--connection",
            "warehouse",
            "--sql",
            ORDER_LINES_MODEL,
        ])
        .await
        .ok();
        let mut args = vec![
            "sync",
            "create",
            "orders-to-stripe",
            "--model",
            "order-lines",
            "--destination",
            "stripe",
            "--object",
            "invoice",
            "--key",
            "order_id=metadata.order_id",
            "--line-key",
            "line_id",
            "--map",
            "email=customer(email)",
            "--map",
            "'send_invoice'=collection_method",
            "--map",
            "'30'=days_until_due",
            "--map",
            "'usd'=currency",
            "--map",
            "amount=lines.amount",
            "--map",
            "price=lines.price(lookup_key)",
            "--map",
            "quantity=lines.quantity",
            "--map",
            "description=lines.description",
        ];
        args.extend_from_slice(extra);
        self.ferry(&args).await.ok();
    }

    fn invoices_of(&self, order: &str) -> Vec<Json> {
        self.stripe()
            .invoices()
            .into_iter()
            .filter(|invoice| invoice["metadata"]["order_id"] == order)
            .collect()
    }

    /// `(line key, amount, quantity)` of each item on the invoice, by line key, and their ids.
    fn items_of(&self, invoice_id: &str) -> (Vec<(String, i64, u64)>, Vec<String>) {
        let mut items: Vec<Json> = self
            .stripe()
            .invoice_items()
            .into_iter()
            .filter(|item| item["invoice"] == invoice_id)
            .collect();
        items.sort_by_key(|item| item["metadata"]["ferry_line"].as_str().unwrap().to_string());
        (
            items
                .iter()
                .map(|item| {
                    (
                        item["metadata"]["ferry_line"].as_str().unwrap().to_string(),
                        item["amount"].as_i64().unwrap(),
                        item["quantity"].as_u64().unwrap(),
                    )
                })
                .collect(),
            items
                .iter()
                .map(|item| item["id"].as_str().unwrap().to_string())
                .collect(),
        )
    }

    fn invoice_writes(&self) -> usize {
        self.stripe()
            .requests()
            .iter()
            .filter(|r| r.method != "GET" && r.path.starts_with("/v1/invoice"))
            .count()
    }
}

fn counts(report: &Json) -> [Option<u64>; 4] {
    ["created", "updated", "unchanged", "rejected"].map(|k| report[k].as_u64())
}

fn line<'a>(
    order: &'a str,
    line: &'a str,
    email: &'a str,
    amount: Option<&'a str>,
    price: Option<&'a str>,
    quantity: Option<u32>,
) -> Line<'a> {
    (order, line, email, amount, price, quantity, "item")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_lines_become_whole_invoices_changed_in_place_while_drafts() {
    let scene = Scene::new().await;
    let (ada, bob, fee) = scene.seed_billing();
    scene.warehouse_sql(&order_lines_sql(&[
        line("O1", "L1", "ada@example.com", Some("1000"), None, None),
        line(
            "O1",
            "L2",
            "ada@example.com",
            None,
            Some("setup_fee"),
            Some(2),
        ),
        line("O2", "L1", "bob@example.com", Some("500"), None, None),
        // No such customer: the invoice is rejected, naming the key.
        line("O3", "L1", "nobody@example.com", Some("100"), None, None),
        // A bad amount on one line holds the whole order back.
        line("O4", "L1", "ada@example.com", Some("700"), None, None),
        line("O4", "L2", "ada@example.com", Some("seven"), None, None),
    ]));
    scene.connect().await;
    scene.invoices_sync(&[]).await;

    let run = scene.run_sync_json("orders-to-stripe", &[]).await;
    assert_eq!(counts(&run), [Some(2), Some(0), Some(0), Some(3)], "{run}");
    let o1 = scene.invoices_of("O1");
    assert_eq!(o1.len(), 1);
    assert_eq!(
        (
            &o1[0]["customer"],
            &o1[0]["status"],
            &o1[0]["collection_method"]
        ),
        (&json!(ada), &json!("draft"), &json!("send_invoice"))
    );
    let o1_id = o1[0]["id"].as_str().unwrap().to_string();
    let (items, o1_item_ids) = scene.items_of(&o1_id);
    assert_eq!(
        items,
        vec![("L1".into(), 1000, 1), ("L2".into(), 10000, 2)],
        "the setup fee line is its price times two"
    );
    let fee_item = scene
        .stripe()
        .invoice_items()
        .into_iter()
        .find(|item| item["id"] == o1_item_ids[1].as_str())
        .unwrap();
    assert_eq!(fee_item["price"]["id"], json!(fee));
    let o2 = scene.invoices_of("O2");
    assert_eq!(o2[0]["customer"], json!(bob));
    assert!(scene.invoices_of("O3").is_empty() && scene.invoices_of("O4").is_empty());
    let mut reasons: Vec<String> = scene
        .run_records(run["run_id"].as_str().unwrap(), "rejected")
        .await
        .iter()
        .map(|record| record["reason"].as_str().unwrap_or_default().to_string())
        .collect();
    reasons.sort();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(
        reasons[0].contains("(→ lines.amount) is not a whole number: seven"),
        "{reasons:?}"
    );
    assert!(
        reasons[1].starts_with("customer: no Stripe customer has email `nobody@example.com`"),
        "{reasons:?}"
    );
    assert!(
        reasons[2].contains("invoice `O4` is held back: its line at row 6 was rejected"),
        "{reasons:?}"
    );

    // Nothing changed: nothing is sent.
    let writes = scene.invoice_writes();
    let run = scene.run_sync_json("orders-to-stripe", &[]).await;
    assert_eq!(counts(&run)[2], Some(2), "{run}");
    assert_eq!(scene.invoice_writes(), writes);

    // O1's first line changes, its second leaves, a third arrives: the draft's items follow,
    // the changed one in place.
    scene.warehouse_sql(&order_lines_sql(&[
        line("O1", "L1", "ada@example.com", Some("1200"), None, None),
        line("O1", "L3", "ada@example.com", Some("300"), None, None),
        line("O2", "L1", "bob@example.com", Some("500"), None, None),
    ]));
    let run = scene.run_sync_json("orders-to-stripe", &[]).await;
    assert_eq!(counts(&run), [Some(0), Some(1), Some(1), Some(0)], "{run}");
    let (items, item_ids) = scene.items_of(&o1_id);
    assert_eq!(items, vec![("L1".into(), 1200, 1), ("L3".into(), 300, 1)]);
    assert_eq!(
        item_ids[0], o1_item_ids[0],
        "the changed line kept its item"
    );
    assert_eq!(scene.invoices_of("O1").len(), 1);

    // Someone finalizes O2 in Stripe; its line then changes in the model: reported, since
    // Stripe does not change a finalized invoice.
    let o2_id = o2[0]["id"].as_str().unwrap().to_string();
    scene
        .stripe_post(&format!("/v1/invoices/{o2_id}/finalize"), &[])
        .await;
    scene.warehouse_sql(&order_lines_sql(&[
        line("O1", "L1", "ada@example.com", Some("1200"), None, None),
        line("O1", "L3", "ada@example.com", Some("300"), None, None),
        line("O2", "L1", "bob@example.com", Some("550"), None, None),
    ]));
    let run = scene.run_sync_json("orders-to-stripe", &[]).await;
    assert_eq!(counts(&run), [Some(0), Some(0), Some(1), Some(1)], "{run}");
    let rejected = scene
        .run_records(run["run_id"].as_str().unwrap(), "rejected")
        .await;
    let reason = rejected[0]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with(&format!("invoice `O2` is open in Stripe ({o2_id})")),
        "{reason}"
    );
    assert_eq!(scene.items_of(&o2_id).0, vec![("L1".into(), 500, 1)]);
}

/// With `--finalize when-created`, runs killed after an invoice's first line, just before
/// finalizing and between finalizing and sending, and a run whose answers are lost half the
/// time leave each order one invoice holding each line once, finalized and sent once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashes_and_lost_answers_never_duplicate_an_invoice_or_a_line() {
    let scene = Scene::new().await;
    scene.seed_billing();
    scene.warehouse_sql(&order_lines_sql(&[
        line("O1", "L1", "ada@example.com", Some("1000"), None, None),
        line("O1", "L2", "ada@example.com", Some("2000"), None, None),
        line(
            "O1",
            "L3",
            "ada@example.com",
            None,
            Some("setup_fee"),
            Some(1),
        ),
        line("O2", "L1", "bob@example.com", Some("500"), None, None),
        line("O2", "L2", "bob@example.com", Some("600"), None, None),
    ]));
    scene.connect().await;
    scene.invoices_sync(&["--finalize", "when-created"]).await;

    for point in ["lines:added:1", "lines:finalize", "lines:send"] {
        scene.crash_run_at("orders-to-stripe", point).await;
    }
    scene.stripe().set_faults(FaultConfig {
        lose_response_rate: 0.5,
        ..FaultConfig::default()
    });
    let requests_before = scene.stripe().requests().len();
    scene.ferry(&["sync", "run", "orders-to-stripe"]).await;
    let lost = scene.stripe().requests()[requests_before..]
        .iter()
        .filter(|r| r.fault == Some(FaultKind::LostResponse))
        .count();
    scene.stripe().set_faults(FaultConfig::default());
    let run = scene.run_sync_json("orders-to-stripe", &[]).await;
    assert_eq!(run["failed"], 0, "{run}");

    for (order, lines) in [("O1", vec!["L1", "L2", "L3"]), ("O2", vec!["L1", "L2"])] {
        let invoices = scene.invoices_of(order);
        assert_eq!(
            invoices.len(),
            1,
            "{order}: one invoice (lost answers: {lost})"
        );
        assert_eq!(invoices[0]["status"], "open", "{order}: finalized");
        let id = invoices[0]["id"].as_str().unwrap();
        let keys: Vec<String> = scene.items_of(id).0.into_iter().map(|l| l.0).collect();
        assert_eq!(keys, lines, "{order}: each line once");
        let sent = scene
            .stripe()
            .events()
            .into_iter()
            .filter(|e| e["type"] == "invoice.sent" && e["data"]["object"]["id"] == id)
            .count();
        assert_eq!(sent, 1, "{order}: sent once");
    }
    // No item was left pending on a customer, outside an invoice.
    assert!(scene
        .stripe()
        .invoice_items()
        .iter()
        .all(|item| item["invoice"].is_string()));
}

/// Runs of 24 orders of three lines each (finalized and sent when created), against 10 ms of
/// latency, SIGKILLed at seeded random moments, then one run to the end: each order ends with
/// one invoice holding each line once, finalized and sent once, and no item is left outside
/// an invoice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_killed_at_random_moments_leave_one_whole_invoice_per_order() {
    let mut config = common::fast_emulator_config();
    config.faults.latency = std::time::Duration::from_millis(10);
    let scene = Scene::with_emulator(config).await;
    scene.seed_billing();
    let orders: Vec<String> = (1..=24).map(|n| format!("O{n:02}")).collect();
    let mut lines = Vec::new();
    for (n, order) in orders.iter().enumerate() {
        let email = if n % 2 == 0 {
            "ada@example.com"
        } else {
            "bob@example.com"
        };
        for line_key in ["L1", "L2", "L3"] {
            lines.push(line(order, line_key, email, Some("1000"), None, None));
        }
    }
    scene.warehouse_sql(&order_lines_sql(&lines));
    scene.connect().await;
    scene.invoices_sync(&["--finalize", "when-created"]).await;

    let kills = scene
        .kill_runs_at_random_moments("orders-to-stripe", 11, 6, 150..1200, |scene| {
            scene.stripe().invoices().len()
        })
        .await;
    assert!(
        kills
            .iter()
            .any(|(_, invoices)| *invoices > 0 && *invoices < orders.len()),
        "some run must be killed halfway: {kills:?}"
    );
    let run = scene.run_sync_json("orders-to-stripe", &[]).await;
    assert_eq!(
        (run["status"].as_str(), run["failed"].as_u64()),
        (Some("completed"), Some(0)),
        "{run}"
    );

    assert_eq!(
        scene.stripe().invoices().len(),
        orders.len(),
        "no second invoice"
    );
    for order in &orders {
        let invoices = scene.invoices_of(order);
        assert_eq!(invoices.len(), 1, "{order}");
        assert_eq!(invoices[0]["status"], "open", "{order}: finalized");
        let id = invoices[0]["id"].as_str().unwrap();
        let keys: Vec<String> = scene.items_of(id).0.into_iter().map(|l| l.0).collect();
        assert_eq!(keys, ["L1", "L2", "L3"], "{order}: each line once");
        let sent = scene
            .stripe()
            .events()
            .into_iter()
            .filter(|e| e["type"] == "invoice.sent" && e["data"]["object"]["id"] == id)
            .count();
        assert_eq!(sent, 1, "{order}: sent once");
    }
    assert!(scene
        .stripe()
        .invoice_items()
        .iter()
        .all(|item| item["invoice"].is_string()));
    let again = scene.run_sync_json("orders-to-stripe", &[]).await;
    assert_eq!(
        again["unchanged"].as_u64(),
        Some(orders.len() as u64),
        "{again}"
    );
}

/// With `--reissue-finalized`, a finalized invoice whose lines change is voided and issued
/// again: runs killed after the old one gave up its key and after the new one was made still
/// leave one live invoice per order, holding the new lines once, sent once, with the voided one
/// naming its key and the new one naming the voided one. A paid invoice is only reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_finalized_invoices_are_voided_and_reissued_when_told() {
    let scene = Scene::new().await;
    let (ada, bob, _) = scene.seed_billing();
    scene.warehouse_sql(&order_lines_sql(&[
        line("O1", "L1", "ada@example.com", Some("1000"), None, None),
        line("O1", "L2", "ada@example.com", Some("2000"), None, None),
        line("O2", "L1", "bob@example.com", Some("500"), None, None),
    ]));
    scene.connect().await;
    scene
        .invoices_sync(&["--finalize", "when-created", "--reissue-finalized"])
        .await;
    let run = scene.run_sync_json("orders-to-stripe", &[]).await;
    assert_eq!(counts(&run), [Some(2), Some(0), Some(0), Some(0)], "{run}");
    let old_id = scene.invoices_of("O1")[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let o2_id = scene.invoices_of("O2")[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    scene
        .stripe_post(
            &format!("/v1/invoices/{o2_id}/pay"),
            &[("paid_out_of_band", "true")],
        )
        .await;

    scene.warehouse_sql(&order_lines_sql(&[
        line("O1", "L1", "ada@example.com", Some("1200"), None, None),
        line("O1", "L2", "ada@example.com", Some("2000"), None, None),
        line("O2", "L1", "bob@example.com", Some("550"), None, None),
    ]));
    // The preview reads both invoices: O1 would be reissued, O2 (paid) rejected.
    let preview = scene
        .ferry(&["sync", "preview", "orders-to-stripe", "--format", "json"])
        .await
        .ok()
        .json();
    assert_eq!(
        ["update", "replace", "rejected"].map(|k| preview[k].as_u64()),
        [Some(0), Some(1), Some(1)],
        "{preview}"
    );
    let example = |action: &str| {
        preview["examples"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["action"] == action)
            .map(|e| e["reason"].as_str().unwrap().to_string())
            .unwrap()
    };
    assert!(
        example("replace").starts_with(&format!(
            "voids `{old_id}` (it is open) and issues a new invoice"
        )),
        "{preview}"
    );
    assert!(example("reject").contains("is paid in Stripe"), "{preview}");
    for point in ["reissue:unkeyed", "reissue:created"] {
        scene.crash_run_at("orders-to-stripe", point).await;
    }
    let run = scene.run_sync_json("orders-to-stripe", &[]).await;
    assert_eq!(counts(&run), [Some(0), Some(1), Some(0), Some(1)], "{run}");

    let live = scene.invoices_of("O1");
    assert_eq!(live.len(), 1, "one invoice holds the key: {live:?}");
    let new_id = live[0]["id"].as_str().unwrap();
    assert_ne!(new_id, old_id);
    assert_eq!(live[0]["status"], "open", "the reissue is finalized");
    assert_eq!(live[0]["metadata"]["ferry_reissues"], json!(old_id));
    assert_eq!(
        scene.items_of(new_id).0,
        vec![("L1".into(), 1200, 1), ("L2".into(), 2000, 1)]
    );
    let ada_invoices: Vec<Json> = scene
        .stripe()
        .invoices()
        .into_iter()
        .filter(|invoice| invoice["customer"] == json!(ada))
        .collect();
    assert_eq!(
        ada_invoices.len(),
        2,
        "the old and one new: {ada_invoices:?}"
    );
    let old = ada_invoices
        .iter()
        .find(|invoice| invoice["id"] == json!(old_id))
        .unwrap();
    assert_eq!(old["status"], "void");
    assert_eq!(old["metadata"]["ferry_reissued_key"], "O1");
    assert!(old["metadata"].get("order_id").is_none(), "{old}");
    let sent = |id: &str| {
        scene
            .stripe()
            .events()
            .into_iter()
            .filter(|e| e["type"] == "invoice.sent" && e["data"]["object"]["id"] == id)
            .count()
    };
    assert_eq!(sent(new_id), 1);
    let run_id = run["run_id"].as_str().unwrap();
    let updated = scene.run_records(run_id, "updated").await;
    let reason = updated[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains(new_id) && reason.contains(&old_id),
        "{reason}"
    );
    let rejected = scene.run_records(run_id, "rejected").await;
    let reason = rejected[0]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with(&format!("invoice `O2` is paid in Stripe ({o2_id})"))
            && reason.contains("credit note"),
        "{reason}"
    );
    let o2 = scene.invoices_of("O2");
    assert_eq!((o2.len(), &o2[0]["status"]), (1, &json!("paid")));
    assert!(scene
        .stripe()
        .invoices()
        .iter()
        .all(|invoice| invoice["customer"] != json!(bob) || invoice["id"] == json!(o2_id)));

    // In step now: nothing more is sent for O1.
    let writes = scene.invoice_writes();
    let run = scene.run_sync_json("orders-to-stripe", &[]).await;
    assert_eq!(counts(&run), [Some(0), Some(0), Some(1), Some(1)], "{run}");
    assert_eq!(scene.invoice_writes(), writes);
}

/// Mirror deletes the draft invoice of an order that left the model; a finalized one is left
/// and reported until the sync says to void it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_deletes_drafts_and_voids_finalized_invoices_only_when_told() {
    let scene = Scene::new().await;
    scene.seed_billing();
    let all = [
        line("O1", "L1", "ada@example.com", Some("1000"), None, None),
        line("O2", "L1", "bob@example.com", Some("500"), None, None),
        line("O3", "L1", "bob@example.com", Some("700"), None, None),
        line("O4", "L1", "ada@example.com", Some("900"), None, None),
        line("O5", "L1", "ada@example.com", Some("800"), None, None),
    ];
    scene.warehouse_sql(&order_lines_sql(&all));
    scene.connect().await;
    scene
        .invoices_sync(&["--behavior", "mirror", "--max-retire-percent", "50"])
        .await;
    let run = scene.run_sync_json("orders-to-stripe", &[]).await;
    assert_eq!(run["created"], 5, "{run}");
    let o2_id = scene.invoices_of("O2")[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    scene
        .stripe_post(&format!("/v1/invoices/{o2_id}/finalize"), &[])
        .await;

    // O1 (a draft) and O2 (finalized in Stripe) leave the model.
    scene.warehouse_sql(&order_lines_sql(&all[2..]));
    let run = scene.run_sync_json("orders-to-stripe", &[]).await;
    assert_eq!(
        (&run["retired"], &run["failed"]),
        (&json!(1), &json!(1)),
        "{run}"
    );
    assert!(scene.invoices_of("O1").is_empty(), "the draft is deleted");
    let failed = scene
        .run_records(run["run_id"].as_str().unwrap(), "failed")
        .await;
    let reason = failed[0]["reason"].as_str().unwrap();
    assert!(reason.contains("--void-open"), "{reason}");
    assert_eq!(scene.invoices_of("O2")[0]["status"], "open");

    // Told to void finalized invoices, the next run does.
    scene
        .ferry(&[
            "sync",
            "create",
            "orders-to-stripe",
            "--model",
            "order-lines",
            "--destination",
            "stripe",
            "--object",
            "invoice",
            "--key",
            "order_id=metadata.order_id",
            "--line-key",
            "line_id",
            "--map",
            "email=customer(email)",
            "--map",
            "'send_invoice'=collection_method",
            "--map",
            "'30'=days_until_due",
            "--map",
            "'usd'=currency",
            "--map",
            "amount=lines.amount",
            "--behavior",
            "mirror",
            "--max-retire-percent",
            "50",
            "--void-open",
        ])
        .await
        .ok();
    let run = scene.run_sync_json("orders-to-stripe", &[]).await;
    assert_eq!(run["retired"], 1, "{run}");
    assert_eq!(scene.invoices_of("O2")[0]["status"], "void");
}
