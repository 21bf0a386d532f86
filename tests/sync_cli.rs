//! End-to-end: the `ferry` binary syncs a DuckDB model into the Stripe emulator, and every
//! assertion reads what the emulator holds, what it received, or what the workspace saved.

mod common;

use common::{people_sql, Scene, KEY};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_run_creates_second_run_sends_nothing_third_sends_only_changes() {
    let scene = Scene::new().await;
    scene.warehouse_sql(&people_sql(40));
    scene.connect().await;
    scene.email_sync(&[]).await;

    let preview = scene
        .ferry(&["sync", "preview", "people-to-stripe", "--format", "json"])
        .await
        .ok()
        .json();
    assert_eq!(
        (
            preview["rows"].as_u64(),
            preview["create"].as_u64(),
            preview["update"].as_u64()
        ),
        (Some(40), Some(40), Some(0))
    );
    assert_eq!(scene.posts(), 0, "a preview sends no write");

    let run = scene.run_sync_json("people-to-stripe", &[]).await;
    assert_eq!(run["status"], "completed");
    assert_eq!(run["created"], 40);
    assert_eq!(
        run["created"], preview["create"],
        "the preview predicted the run"
    );
    let customers = scene.stripe().customers();
    assert_eq!(customers.len(), 40);
    let seven = &scene.customers_with_email("person7@example.com")[0];
    assert_eq!(seven["name"], "Person 7");
    assert_eq!(seven["phone"], "+1 555 0007");
    assert_eq!(seven["metadata"], json!({"plan": "pro"}));

    // Nothing changed: no request at all, not even a lookup.
    let before = scene.stripe().requests().len();
    let run = scene.run_sync_json("people-to-stripe", &[]).await;
    assert_eq!(
        (run["unchanged"].as_u64(), run["requests"].as_u64()),
        (Some(40), Some(0))
    );
    assert_eq!(scene.stripe().requests().len(), before);

    // Three rows change one field each: three updates, each carrying only that field.
    scene.warehouse_sql("update people set plan = 'enterprise' where id in (1, 2); update people set name = 'Renamed' where id = 3");
    let preview = scene
        .ferry(&["sync", "preview", "people-to-stripe", "--format", "json"])
        .await
        .ok()
        .json();
    assert_eq!(
        (
            preview["update"].as_u64(),
            preview["unchanged"].as_u64(),
            preview["requests_estimate"].as_u64()
        ),
        (Some(3), Some(37), Some(3))
    );
    let before = scene.stripe().requests().len();
    let run = scene.run_sync_json("people-to-stripe", &[]).await;
    assert_eq!(
        (
            run["updated"].as_u64(),
            run["unchanged"].as_u64(),
            run["requests"].as_u64()
        ),
        (Some(3), Some(37), Some(3))
    );
    let sent: Vec<_> = scene.stripe().requests()[before..].to_vec();
    assert_eq!(sent.len(), 3);
    let bodies: Vec<String> = sent
        .iter()
        .map(|r| serde_json::to_string(&r.params).unwrap())
        .collect();
    assert!(
        bodies.contains(&r#"{"metadata":{"plan":"enterprise"}}"#.to_string()),
        "{bodies:?}"
    );
    assert!(
        bodies.contains(&r#"{"name":"Renamed"}"#.to_string()),
        "{bodies:?}"
    );
    assert_eq!(
        scene.customers_with_email("person3@example.com")[0]["name"],
        "Renamed"
    );
    assert_eq!(scene.stripe().customers().len(), 40);

    // The run history and per-record log are in the workspace.
    let runs = scene.ferry(&["runs", "people-to-stripe"]).await.ok();
    assert_eq!(
        runs.stdout
            .lines()
            .filter(|l| l.contains("completed"))
            .count(),
        3,
        "{}",
        runs.stdout
    );
    let run_id = run["run_id"].as_str().unwrap();
    let records = scene
        .ferry(&[
            "run",
            "show",
            run_id,
            "--records",
            "updated",
            "--format",
            "json",
        ])
        .await
        .ok()
        .json();
    let records = records["records"].as_array().unwrap();
    assert_eq!(records.len(), 3);
    assert_eq!(
        records[2]["changes"],
        json!({"name": {"before": "Person 3", "after": "Renamed"}})
    );
    // Stripe's request id is kept for every write; the emulator's records are not in Stripe's
    // dashboard, so no link points there.
    assert!(records[0]["request_id"]
        .as_str()
        .unwrap()
        .starts_with("req_"));
    assert!(records[0]["dashboard_url"].is_null(), "{}", records[0]);
    let first_run = runs
        .stdout
        .split_whitespace()
        .rfind(|word| word.starts_with("run_"))
        .unwrap()
        .to_string();
    let created = scene
        .ferry(&[
            "run",
            "show",
            &first_run,
            "--records",
            "created",
            "--format",
            "json",
        ])
        .await
        .ok()
        .json();
    let created = created["records"].as_array().unwrap();
    assert_eq!(created.len(), 40);
    assert!(created.iter().all(|r| r["request_id"]
        .as_str()
        .is_some_and(|id| id.starts_with("req_"))));
}

/// An API base that would send the key in clear text, to another protocol, or with its own
/// credentials is refused before any request, naming the setting; the password is not echoed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_api_bases_are_refused_before_the_key_is_sent() {
    let scene = Scene::new().await;
    for (base, expected) in [
        ("not a url", "api_base is not a URL"),
        ("ftp://files.example.com", "must be an https URL, not ftp:"),
        ("file:///etc/passwd", "must be an https URL, not file:"),
        (
            "http://stripe.example.com",
            "would send the API key in clear text",
        ),
        (
            "https://user:hunter2@proxy.example.com",
            "must not hold a user name or password",
        ),
    ] {
        let refused = scene
            .ferry(&[
                "connect",
                "stripe",
                "s",
                "--api-key",
                KEY,
                "--api-base",
                base,
            ])
            .await;
        assert_eq!(refused.code, 2, "{base}: {}", refused.stderr);
        assert!(
            refused.stderr.contains(expected),
            "{base}: {}",
            refused.stderr
        );
        assert!(!refused.stderr.contains("hunter2"));
        let skipped = scene
            .ferry(&[
                "connect",
                "stripe",
                "s",
                "--api-key",
                KEY,
                "--api-base",
                base,
                "--skip-test",
            ])
            .await;
        assert_eq!(skipped.code, 2, "saved without a test all the same: {base}");
    }
    assert!(scene.stripe().requests().is_empty());
    let listed = scene.ferry(&["connections"]).await.ok();
    assert!(!listed.stdout.contains(" s "), "{}", listed.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rows_are_rejected_with_reasons_and_the_rest_syncs() {
    let scene = Scene::new().await;
    scene.warehouse_sql(&people_sql(6));
    scene.warehouse_sql(
        "update people set email = 'not an email' where id = 1;
         update people set email = NULL where id = 2;
         update people set phone = '+1 555 0100 0100 0100 0100' where id = 3;
         update people set email = ' PERSON5@example.com ' where id = 4;",
    );
    scene.connect().await;
    scene.email_sync(&[]).await;
    let run = scene.run_sync_json("people-to-stripe", &[]).await;
    assert_eq!(
        (run["created"].as_u64(), run["rejected"].as_u64()),
        (Some(1), Some(5)),
        "{run}"
    );
    assert_eq!(scene.stripe().customers().len(), 1);
    assert_eq!(scene.customers_with_email("person6@example.com").len(), 1);

    let run_id = run["run_id"].as_str().unwrap();
    let shown = scene
        .ferry(&[
            "run",
            "show",
            run_id,
            "--records",
            "rejected",
            "--format",
            "json",
        ])
        .await
        .ok()
        .json();
    let reasons: Vec<&str> = shown["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["reason"].as_str().unwrap())
        .collect();
    assert_eq!(
        reasons[0],
        "`not an email` in column `email` is not a valid email address"
    );
    assert_eq!(reasons[1], "missing key: column `email` is empty");
    assert_eq!(
        reasons[2],
        "column `phone` (→ phone) is 26 characters long; Stripe allows at most 20"
    );
    assert!(
        reasons[3].starts_with("duplicate key: `PERSON5@example.com` also appears in row 5"),
        "{}",
        reasons[3]
    );
    assert!(
        reasons[4].starts_with("duplicate key: `person5@example.com` also appears in row 4"),
        "{}",
        reasons[4]
    );

    let csv = scene
        .ferry(&[
            "run",
            "show",
            run_id,
            "--records",
            "rejected",
            "--format",
            "csv",
        ])
        .await
        .ok();
    assert!(
        csv.stdout
            .starts_with("row,key,outcome,stripe_id,reason,request_id\n1,not an email,rejected,,"),
        "{}",
        csv.stdout
    );

    // Rejected rows are tried again on the next run; --fail-on-rejected turns them into exit 3.
    scene.warehouse_sql("update people set email = 'fixed1@example.com' where id = 1");
    let again = scene
        .ferry(&[
            "sync",
            "run",
            "people-to-stripe",
            "--format",
            "json",
            "--fail-on-rejected",
        ])
        .await;
    assert_eq!(again.code, 3, "{}", again.stderr);
    assert_eq!(again.json()["created"], 1);
    assert_eq!(scene.customers_with_email("fixed1@example.com").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_customers_match_ignoring_email_case_and_ambiguous_ones_are_rejected() {
    let scene = Scene::new().await;
    let stripe = scene.stripe();
    let ada = stripe.seed_customer(
        json!({"email": "Ada@Example.com", "name": "Ada", "metadata": {"crm": "keep-me"}}),
    );
    let dup_a = stripe.seed_customer(json!({"email": "dup@example.com"}));
    let dup_b = stripe.seed_customer(json!({"email": "DUP@example.com"}));
    scene.warehouse_sql(
        "create table people as select * from (values
            (1, 'ada@example.com', 'Ada Lovelace', NULL, 'pro'),
            (2, 'dup@example.com', 'Dup', NULL, 'free'),
            (3, 'new@example.com', 'New', NULL, 'free')) t(id, email, name, phone, plan)",
    );
    scene.connect().await;
    scene.email_sync(&[]).await;
    let run = scene.run_sync_json("people-to-stripe", &[]).await;
    assert_eq!(
        (
            run["updated"].as_u64(),
            run["created"].as_u64(),
            run["rejected"].as_u64()
        ),
        (Some(1), Some(1), Some(1)),
        "{run}"
    );

    let customers = stripe.customers();
    assert_eq!(customers.len(), 4, "one new customer, no duplicate of Ada");
    let ada_now = customers.iter().find(|c| c["id"] == ada.as_str()).unwrap();
    assert_eq!(ada_now["name"], "Ada Lovelace");
    assert_eq!(
        ada_now["email"], "Ada@Example.com",
        "the matched email is not rewritten"
    );
    assert_eq!(
        ada_now["metadata"],
        json!({"crm": "keep-me", "plan": "pro"}),
        "metadata merges"
    );

    let shown = scene
        .ferry(&[
            "run",
            "show",
            run["run_id"].as_str().unwrap(),
            "--records",
            "rejected",
            "--format",
            "json",
        ])
        .await
        .ok()
        .json();
    let reason = shown["records"][0]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("ambiguous: 2 Stripe customers match `dup@example.com`"),
        "{reason}"
    );
    assert!(
        reason.contains(&dup_a) && reason.contains(&dup_b),
        "{reason}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_only_reports_rows_missing_in_stripe_and_creates_nothing() {
    let scene = Scene::new().await;
    scene
        .stripe()
        .seed_customer(json!({"email": "person1@example.com", "name": "Old"}));
    scene.warehouse_sql(&people_sql(3));
    scene.connect().await;
    scene.email_sync(&["--behavior", "update-only"]).await;
    let preview = scene
        .ferry(&["sync", "preview", "people-to-stripe", "--format", "json"])
        .await
        .ok()
        .json();
    let run = scene.run_sync_json("people-to-stripe", &[]).await;
    assert_eq!(
        (
            run["updated"].as_u64(),
            run["not_found"].as_u64(),
            run["created"].as_u64()
        ),
        (Some(1), Some(2), Some(0))
    );
    assert_eq!(
        (preview["update"].clone(), preview["not_found"].clone()),
        (run["updated"].clone(), run["not_found"].clone())
    );
    assert_eq!(scene.stripe().customers().len(), 1);
    assert_eq!(
        scene.customers_with_email("person1@example.com")[0]["name"],
        "Person 1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_only_creates_the_missing_and_never_updates_a_matched_record() {
    let scene = Scene::new().await;
    scene
        .stripe()
        .seed_customer(json!({"email": "Person1@Example.com", "name": "Old"}));
    scene.warehouse_sql(&people_sql(3));
    scene.connect().await;
    scene.email_sync(&["--behavior", "create-only"]).await;
    let preview = scene
        .ferry(&["sync", "preview", "people-to-stripe", "--format", "json"])
        .await
        .ok()
        .json();
    assert_eq!(
        (
            preview["create"].as_u64(),
            preview["update"].as_u64(),
            preview["unchanged"].as_u64()
        ),
        (Some(2), Some(0), Some(1)),
        "{preview}"
    );
    let run = scene.run_sync_json("people-to-stripe", &[]).await;
    assert_eq!(
        (
            run["created"].as_u64(),
            run["updated"].as_u64(),
            run["unchanged"].as_u64()
        ),
        (Some(2), Some(0), Some(1)),
        "{run}"
    );
    assert_eq!(scene.stripe().customers().len(), 3);
    // The customer that was there keeps what it held.
    assert_eq!(
        scene.customers_with_email("Person1@Example.com")[0]["name"],
        "Old"
    );
    assert_eq!(
        scene.customers_with_email("person2@example.com")[0]["name"],
        "Person 2"
    );

    // Rows of records ferry created change, and one new row arrives: only the create is sent.
    scene.warehouse_sql(
        "update people set name = 'Renamed' where id in (1, 2);
         insert into people values (4, 'person4@example.com', 'Person 4', '+1 555 0004', 'free')",
    );
    let posts_before = scene.posts();
    let run = scene.run_sync_json("people-to-stripe", &[]).await;
    assert_eq!(
        (
            run["created"].as_u64(),
            run["updated"].as_u64(),
            run["unchanged"].as_u64()
        ),
        (Some(1), Some(0), Some(3)),
        "{run}"
    );
    assert_eq!(scene.posts() - posts_before, 1, "one create, no update");
    assert_eq!(
        scene.customers_with_email("person2@example.com")[0]["name"],
        "Person 2"
    );
    assert_eq!(
        scene.customers_with_email("Person1@Example.com")[0]["name"],
        "Old"
    );

    // Switched to Update or Create, the sync brings the matched records up to date: ferry did
    // not remember values it never wrote.
    scene.save_email_sync(&[]).await;
    let run = scene.run_sync_json("people-to-stripe", &[]).await;
    assert_eq!(
        (run["created"].as_u64(), run["updated"].as_u64()),
        (Some(0), Some(2)),
        "{run}"
    );
    let names = || {
        let mut names: Vec<String> = scene
            .stripe()
            .customers()
            .iter()
            .map(|c| c["name"].as_str().unwrap_or_default().to_string())
            .collect();
        names.sort();
        names
    };
    assert_eq!(names(), ["Person 3", "Person 4", "Renamed", "Renamed"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn constants_and_templates_are_mapped_like_columns() {
    let scene = Scene::new().await;
    scene.warehouse_sql(&people_sql(2));
    scene.warehouse_sql("update people set plan = NULL where id = 2");
    scene.connect().await;
    scene
        .email_sync(&[
            "--map",
            "'gold'=metadata.tier",
            "--map",
            "{{name}} ({{plan}})=description",
        ])
        .await;
    let bad = scene
        .ferry(&[
            "sync",
            "create",
            "bad",
            "--model",
            "people",
            "--destination",
            "stripe",
            "--key",
            "email=email",
            "--map",
            "{{nmae}}=name",
            "--map",
            "'gold=metadata.tier",
        ])
        .await;
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert!(
        bad.stderr.contains("template column `nmae` is not in the model; its columns are: id, email, name, phone, plan"),
        "{}",
        bad.stderr
    );
    assert!(
        bad.stderr
            .contains("`'gold` opens a constant with `'` but does not close it"),
        "{}",
        bad.stderr
    );

    let run = scene.run_sync_json("people-to-stripe", &[]).await;
    assert_eq!(run["created"].as_u64(), Some(2), "{run}");
    let one = &scene.customers_with_email("person1@example.com")[0];
    assert_eq!(one["metadata"]["tier"], "gold");
    assert_eq!(one["description"], "Person 1 (pro)");
    // A NULL fills its place in a template with nothing.
    let two = &scene.customers_with_email("person2@example.com")[0];
    assert_eq!(two["description"], "Person 2 ()");
    assert_eq!(two["metadata"]["tier"], "gold");

    // Unchanged rows send nothing; a column a template reads changes the field it fills.
    let run = scene.run_sync_json("people-to-stripe", &[]).await;
    assert_eq!(run["requests"].as_u64(), Some(0), "{run}");
    scene.warehouse_sql("update people set plan = 'free' where id = 2");
    let run = scene.run_sync_json("people-to-stripe", &[]).await;
    assert_eq!(run["updated"].as_u64(), Some(1), "{run}");
    assert_eq!(
        scene.customers_with_email("person2@example.com")[0]["description"],
        "Person 2 (free)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_id_in_metadata_is_the_key_and_nulls_clear_when_asked() {
    let scene = Scene::new().await;
    let existing = scene.stripe().seed_customer(json!({"email": "someone@example.com", "phone": "+1 555 0000", "metadata": {"user_id": "2", "source": "crm"}}));
    scene.warehouse_sql(
        "create table accounts as select * from (values
            (1, 'one@example.com', '+1 555 0001'),
            (2, 'two@example.com', NULL)) t(user_id, email, phone)",
    );
    scene.connect().await;
    scene
        .ferry(&[
            "model",
            "create",
            "accounts",
            "--connection",
            "warehouse",
            "--sql",
            "select * from accounts",
        ])
        .await
        .ok();
    scene
        .ferry(&[
            "sync",
            "create",
            "accounts",
            "--model",
            "accounts",
            "--destination",
            "stripe",
            "--key",
            "user_id=metadata.user_id",
            "--map",
            "email=email",
            "--map",
            "phone=phone",
            "--nulls",
            "clear",
        ])
        .await
        .ok();
    let run = scene.run_sync_json("accounts", &[]).await;
    assert_eq!(
        (run["created"].as_u64(), run["updated"].as_u64()),
        (Some(1), Some(1)),
        "{run}"
    );
    let customers = scene.stripe().customers();
    assert_eq!(customers.len(), 2);
    let two = customers
        .iter()
        .find(|c| c["id"] == existing.as_str())
        .unwrap();
    assert_eq!(two["email"], "two@example.com");
    assert_eq!(
        two["phone"], "",
        "a NULL with --nulls clear empties the field"
    );
    assert_eq!(two["metadata"], json!({"user_id": "2", "source": "crm"}));
    let one = customers
        .iter()
        .find(|c| c["id"] != existing.as_str())
        .unwrap();
    assert_eq!(one["metadata"], json!({"user_id": "1"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_the_mapping_sends_only_what_it_affects_and_full_resync_repairs_drift() {
    let scene = Scene::new().await;
    scene.warehouse_sql(&people_sql(5));
    scene.connect().await;
    scene.email_sync(&[]).await;
    scene.ferry(&["sync", "run", "people-to-stripe"]).await.ok();

    // Map one more column: every row gets exactly that field, nothing else.
    scene
        .ferry(&[
            "sync",
            "create",
            "people-to-stripe",
            "--model",
            "people",
            "--destination",
            "stripe",
            "--key",
            "email=email",
            "--map",
            "name=name",
            "--map",
            "phone=phone",
            "--map",
            "plan=metadata.plan",
            "--map",
            "id=metadata.warehouse_id",
        ])
        .await
        .ok();
    let before = scene.stripe().requests().len();
    let run = scene.run_sync_json("people-to-stripe", &[]).await;
    assert_eq!(run["updated"], 5);
    let bodies: Vec<String> = scene.stripe().requests()[before..]
        .iter()
        .map(|r| serde_json::to_string(&r.params).unwrap())
        .collect();
    assert!(
        bodies
            .iter()
            .all(|b| b.starts_with(r#"{"metadata":{"warehouse_id":""#)),
        "{bodies:?}"
    );

    // Someone edits a customer in Stripe: a normal run trusts the snapshot, a full resync looks again.
    let target = scene.customers_with_email("person2@example.com")[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let edited = reqwest::Client::new()
        .post(format!("{}/v1/customers/{target}", scene.emulator.url()))
        .bearer_auth(KEY)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("name=Edited+in+Stripe")
        .send()
        .await
        .unwrap();
    assert_eq!(edited.status(), 200);
    let run = scene.run_sync_json("people-to-stripe", &[]).await;
    assert_eq!(run["unchanged"], 5);
    let run = scene
        .run_sync_json("people-to-stripe", &["--full-resync"])
        .await;
    assert_eq!(
        (run["updated"].as_u64(), run["unchanged"].as_u64()),
        (Some(1), Some(4)),
        "{run}"
    );
    assert_eq!(
        scene.customers_with_email("person2@example.com")[0]["name"],
        "Person 2"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_stripe_tests_the_key_and_never_prints_it() {
    let scene = Scene::new().await;
    let url = scene.emulator.url();
    let bad = scene
        .ferry(&[
            "connect",
            "stripe",
            "s",
            "--api-key",
            "not_a_stripe_key_at_all_1234",
            "--api-base",
            &url,
        ])
        .await;
    assert_eq!(bad.code, 1);
    assert!(
        bad.stderr.contains("Stripe rejected this API key (…1234)"),
        "{}",
        bad.stderr
    );
    assert!(!bad.stderr.contains("not_a_stripe_key_at_all_1234"));
    let listed = scene.ferry(&["connections"]).await.ok();
    assert!(
        listed.stdout.starts_with("No connections yet"),
        "a failed test saves nothing"
    );

    let good = scene
        .ferry(&[
            "connect",
            "stripe",
            "s",
            "--api-key",
            KEY,
            "--api-base",
            &url,
        ])
        .await
        .ok();
    let listed = scene.ferry(&["connections"]).await.ok();
    for output in [&good.stdout, &good.stderr, &listed.stdout, &listed.stderr] {
        assert!(!output.contains(KEY), "the key leaked: {output}");
    }
    assert!(listed.stdout.contains("sk_test_…"), "{}", listed.stdout);
    let database = std::fs::read(scene.workspace().join("ferry.db")).unwrap();
    assert!(
        !database.windows(KEY.len()).any(|w| w == KEY.as_bytes()),
        "the key is stored in clear"
    );

    let unreachable = scene
        .ferry(&[
            "connect",
            "stripe",
            "t",
            "--api-key",
            KEY,
            "--api-base",
            "http://127.0.0.1:9",
        ])
        .await;
    assert_eq!(unreachable.code, 1);
    assert!(
        unreachable
            .stderr
            .contains("cannot reach Stripe at http://127.0.0.1:9"),
        "{}",
        unreachable.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_create_explains_a_bad_mapping_and_exits_2() {
    let scene = Scene::new().await;
    scene.warehouse_sql(&people_sql(2));
    scene.connect().await;
    scene
        .ferry(&[
            "model",
            "create",
            "people",
            "--connection",
            "warehouse",
            "--sql",
            "select * from people",
        ])
        .await
        .ok();
    let bad = scene
        .ferry(&[
            "sync",
            "create",
            "s",
            "--model",
            "people",
            "--destination",
            "stripe",
            "--key",
            "email=email",
            "--map",
            "nmae=name",
            "--map",
            "plan=plan",
        ])
        .await;
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert!(bad.stderr.contains("mapped column `nmae` is not in the model; its columns are: id, email, name, phone, plan"), "{}", bad.stderr);
    assert!(
        bad.stderr.contains("`plan` is not a Stripe Customer field"),
        "{}",
        bad.stderr
    );
    assert!(bad.stderr.contains("metadata.KEY"), "{}", bad.stderr);
    let listed = scene.ferry(&["sync", "list"]).await.ok();
    assert!(listed.stdout.starts_with("No syncs yet"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_deleted_in_stripe_is_created_again_not_replayed() {
    let scene = Scene::new().await;
    scene.warehouse_sql(&people_sql(2));
    scene.connect().await;
    scene.email_sync(&[]).await;
    scene.ferry(&["sync", "run", "people-to-stripe"]).await.ok();
    let deleted = scene.customers_with_email("person1@example.com")[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let response = reqwest::Client::new()
        .delete(format!("{}/v1/customers/{deleted}", scene.emulator.url()))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // The same body as the first create: it must not get the deleted customer's answer replayed.
    let run = scene
        .run_sync_json("people-to-stripe", &["--full-resync"])
        .await;
    assert_eq!(
        (run["created"].as_u64(), run["unchanged"].as_u64()),
        (Some(1), Some(1)),
        "{run}"
    );
    let again = scene.customers_with_email("person1@example.com");
    assert_eq!(again.len(), 1);
    assert_ne!(again[0]["id"], deleted.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restricted_key_without_balance_access_is_told_which_permission_is_missing() {
    let restricted = "rk_test_ferryrestricted00000000001234";
    let mut config = common::fast_emulator_config();
    config.restricted_keys = vec![ferry_stripe_emulator::RestrictedKey {
        customers: ferry_stripe_emulator::Access::Write,
        balance: ferry_stripe_emulator::Access::None,
        ..ferry_stripe_emulator::RestrictedKey::new(restricted)
    }];
    let scene = Scene::with_emulator(config).await;
    let url = scene.emulator.url();
    let denied = scene
        .ferry(&[
            "connect",
            "stripe",
            "s",
            "--api-key",
            restricted,
            "--api-base",
            &url,
        ])
        .await;
    assert_eq!(denied.code, 1);
    assert!(
        denied.stderr.contains("lacks a permission ferry needs"),
        "{}",
        denied.stderr
    );
    assert!(
        denied.stderr.contains("read access to Balance"),
        "{}",
        denied.stderr
    );
    assert!(!denied.stderr.contains(restricted), "{}", denied.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_session_at_debug_level_never_shows_the_key() {
    let scene = Scene::new().await;
    scene.warehouse_sql(&people_sql(5));
    scene.warehouse_sql("update people set phone = '+1 555 0100 0100 0100 0100' where id = 1");
    let url = scene.emulator.url();
    let mut outputs = Vec::new();
    let sessions: Vec<Vec<&str>> = vec![
        vec![
            "-vv",
            "connect",
            "stripe",
            "stripe",
            "--api-key",
            KEY,
            "--api-base",
            &url,
        ],
        vec![
            "-vv",
            "connect",
            "stripe",
            "broken",
            "--api-key",
            KEY,
            "--api-base",
            "http://127.0.0.1:9",
        ],
        vec![
            "-vv",
            "connect",
            "duckdb",
            "warehouse",
            "--path",
            "warehouse.duckdb",
        ],
        vec!["-vv", "connections"],
        vec!["-vv", "connections", "test", "stripe"],
        vec![
            "-vv",
            "model",
            "create",
            "people",
            "--connection",
            "warehouse",
            "--sql",
            "select * from people",
        ],
        vec![
            "-vv",
            "sync",
            "create",
            "s",
            "--model",
            "people",
            "--destination",
            "stripe",
            "--key",
            "email=email",
            "--map",
            "phone=phone",
        ],
        vec!["-vv", "sync", "preview", "s", "--format", "json"],
        vec!["-vv", "sync", "run", "s"],
        vec!["-vv", "sync", "show", "s"],
        vec!["-vv", "runs"],
    ];
    for args in &sessions {
        let ran = scene.ferry(args).await;
        outputs.push(ran.stdout);
        outputs.push(ran.stderr);
    }
    let runs = scene.run_sync_json("s", &[]).await;
    for format in ["text", "json", "csv"] {
        let shown = scene
            .ferry(&[
                "-vv",
                "run",
                "show",
                runs["run_id"].as_str().unwrap(),
                "--format",
                format,
            ])
            .await
            .ok();
        outputs.push(shown.stdout);
        outputs.push(shown.stderr);
    }
    let exported = scene.ferry(&["-vv", "export"]).await.ok();
    outputs.push(exported.stdout);
    outputs.push(exported.stderr);
    outputs.extend(server_session_outputs(&scene, runs["run_id"].as_str().unwrap()).await);
    assert!(
        outputs.iter().any(|o| o.contains("DEBUG")),
        "the session really logged at debug level"
    );
    let leaks: Vec<&String> = outputs.iter().filter(|o| o.contains(KEY)).collect();
    assert!(leaks.is_empty(), "the API key appeared in: {leaks:?}");
    for file in std::fs::read_dir(scene.workspace()).unwrap() {
        let path = file.unwrap().path();
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                !bytes.windows(KEY.len()).any(|w| w == KEY.as_bytes()),
                "the key is in {}",
                path.display()
            );
        }
    }
}

/// The server half of the whole-session scan: `ferry serve -vv`, a sign-in, every UI page, every
/// API read, a preview, a run and a failed connection over the API. Returns every response body
/// and the server's own output.
async fn server_session_outputs(scene: &Scene, run_id: &str) -> Vec<String> {
    let served = scene.serve(&["-vv"]).await;
    let mut outputs = Vec::new();
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login = browser
        .post(served.url("/login"))
        .form(&[("token", served.token.as_str())])
        .send()
        .await
        .unwrap();
    let cookie = login.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let sample = |path: &str| {
        path.replace("/x/", "/s/")
            .replace("/runs/s", &format!("/runs/{run_id}"))
            .replace("/models/s", "/models/people")
            .replace("/syncs/x", "/syncs/s")
            .replace("/runs/x", &format!("/runs/{run_id}"))
            .replace("/models/x", "/models/people")
    };
    for (method, path) in ferry_server::UI_ROUTES {
        if *method != "GET" {
            continue;
        }
        let page = browser
            .get(served.url(&sample(path)))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        outputs.push(page.text().await.unwrap());
    }
    let api = served.api();
    for path in [
        "/api/openapi.json".to_string(),
        "/api/v1/connections".into(),
        "/api/v1/connections/stripe".into(),
        "/api/v1/models".into(),
        "/api/v1/syncs".into(),
        "/api/v1/syncs/s".into(),
        "/api/v1/runs".into(),
        format!("/api/v1/runs/{run_id}"),
        format!("/api/v1/runs/{run_id}/records"),
        format!("/api/v1/runs/{run_id}/records.csv"),
    ] {
        let reply = api.get(served.url(&path)).send().await.unwrap();
        outputs.push(reply.text().await.unwrap());
    }
    for (path, body) in [
        ("/api/v1/syncs/s/preview", serde_json::json!({})),
        ("/api/v1/syncs/s/runs", serde_json::json!({})),
        (
            "/api/v1/connections",
            serde_json::json!({"name": "elsewhere", "kind": "stripe", "api_key": KEY, "api_base": "http://127.0.0.1:9"}),
        ),
        ("/api/v1/connections/stripe/test", serde_json::json!({})),
    ] {
        let reply = api.post(served.url(path)).json(&body).send().await.unwrap();
        outputs.push(reply.text().await.unwrap());
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(
        outputs.iter().any(|o| o.contains("sk_test_…")),
        "the pages and the API did show the key's hint"
    );
    assert!(
        outputs.iter().any(|o| o.contains("Run of s")),
        "the signed-in UI pages were read, the run page among them"
    );
    outputs.push(served.output());
    outputs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_names_differing_only_in_case_or_starting_with_a_dash_are_refused_and_old_ones_stay_usable(
) {
    let scene = Scene::new().await;
    scene.warehouse_sql(&people_sql(3));
    scene.connect().await;
    let create_model = |name: &'static str| {
        [
            "model",
            "create",
            "--connection",
            "warehouse",
            "--sql",
            "select * from people order by id",
            "--",
            name,
        ]
    };
    scene.ferry(&create_model("people")).await.ok();
    let taken = scene.ferry(&create_model("People")).await;
    assert_eq!(taken.code, 2, "{}", taken.stderr);
    assert!(
        taken.stderr.contains(
            "model 'People' cannot be created: model 'people' already exists, and names must \
             differ by more than case"
        ),
        "{}",
        taken.stderr
    );
    let dashed = scene.ferry(&create_model("-rf")).await;
    assert_eq!(dashed.code, 2, "{}", dashed.stderr);
    assert!(
        dashed
            .stderr
            .contains("invalid model name \"-rf\": a name is 1 to 64 characters of letters, digits, '_' and '-', and does not start with '-'"),
        "{}",
        dashed.stderr
    );
    let connection = scene
        .ferry(&[
            "connect",
            "duckdb",
            "WAREHOUSE",
            "--path",
            "warehouse.duckdb",
        ])
        .await;
    assert_eq!(connection.code, 2, "{}", connection.stderr);
    assert!(connection
        .stderr
        .contains("connection 'warehouse' already exists"));

    // A workspace written before the rule may hold such names, as an older ferry saved them:
    // it still opens, and each of them can be read, run, replaced and removed.
    let database = rusqlite::Connection::open(scene.workspace().join("ferry.db")).unwrap();
    for old in ["-rf", "PEOPLE"] {
        database
            .execute(
                "INSERT INTO models (name, connection, sql, created_at, updated_at) \
                 SELECT ?1, connection, sql, created_at, updated_at FROM models WHERE name = 'people'",
                [old],
            )
            .unwrap();
    }
    drop(database);
    let listed = scene.ferry(&["model", "list"]).await.ok().stdout;
    for name in ["-rf", "PEOPLE", "people"] {
        assert!(listed.contains(name), "{name} is listed:\n{listed}");
    }
    let shown = scene
        .ferry(&["model", "show", "--", "-rf"])
        .await
        .ok()
        .stdout;
    assert!(shown.contains("@example.com"), "{shown}");
    scene.ferry(&create_model("PEOPLE")).await.ok();
    scene.ferry(&create_model("-rf")).await.ok();
    let sync = scene
        .ferry(&[
            "sync",
            "create",
            "--model",
            "PEOPLE",
            "--destination",
            "stripe",
            "--key",
            "email=email",
            "--map",
            "name=name",
            "--",
            "from-old-name",
        ])
        .await;
    assert_eq!(
        sync.code, 0,
        "a sync may read a model with an old name: {}",
        sync.stderr
    );
    scene.ferry(&["model", "remove", "--", "-rf"]).await.ok();
    let listed = scene.ferry(&["model", "list"]).await.ok().stdout;
    assert!(!listed.contains("-rf"), "{listed}");
    // Once gone, the old name cannot come back.
    assert_eq!(scene.ferry(&create_model("-rf")).await.code, 2);
}

/// A model that turns slow (here its view cross-joins 10^10 row pairs, minutes of work) is
/// cancelled at the warehouse connection's own timeouts: a model preview at
/// `--preview-timeout`, a sync preview and a run at `--statement-timeout`. Each error names
/// the timeout and the setting to raise, and the run sends nothing to Stripe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_model_is_cancelled_at_the_connections_timeouts_and_nothing_reaches_stripe() {
    let scene = Scene::new().await;
    scene.warehouse_sql(&people_sql(5));
    scene.warehouse_sql("create view people_now as select * from people");
    scene.connect_stripe(&[]).await;
    let warehouse = scene.warehouse().display().to_string();
    scene
        .ferry(&[
            "connect",
            "duckdb",
            "warehouse",
            "--path",
            &warehouse,
            "--statement-timeout",
            "1",
            "--preview-timeout",
            "1",
        ])
        .await
        .ok();
    let listed = scene.ferry(&["connections"]).await.ok();
    assert!(
        listed
            .stdout
            .contains("statement timeout 1s  preview timeout 1s"),
        "{}",
        listed.stdout
    );
    scene
        .ferry(&[
            "model",
            "create",
            "people",
            "--connection",
            "warehouse",
            "--sql",
            "select * from people_now order by id",
        ])
        .await
        .ok();
    scene
        .ferry(&[
            "sync",
            "create",
            "people-to-stripe",
            "--model",
            "people",
            "--destination",
            "stripe",
            "--key",
            "email=email",
            "--map",
            "name=name",
        ])
        .await
        .ok();
    scene.ferry(&["model", "show", "people"]).await.ok();

    // The warehouse turns slow.
    scene.warehouse_sql(
        "create or replace view people_now as select p.* from people p, \
         (select sum(a.range * b.range) as n from range(100000) a, range(100000) b) slow \
         where slow.n >= 0",
    );
    let requests_before = scene.stripe().requests().len();

    let started = std::time::Instant::now();
    let shown = scene.ferry(&["model", "show", "people"]).await;
    let elapsed = started.elapsed();
    assert_ne!(shown.code, 0, "{}", shown.stdout);
    assert!(
        shown
            .stderr
            .contains("the model ran longer than 1s and was cancelled")
            && shown.stderr.contains(
                "raise the connection's `preview_timeout_seconds` (`--preview-timeout SECONDS`"
            ),
        "{}",
        shown.stderr
    );
    assert!(
        elapsed < std::time::Duration::from_secs(20),
        "stopped early, not at the 30 s default: {elapsed:?}"
    );

    let preview = scene
        .ferry(&["sync", "preview", "people-to-stripe", "--format", "json"])
        .await;
    assert_ne!(preview.code, 0, "{}", preview.stdout);
    assert!(
        preview
            .stderr
            .contains("the model ran longer than 1s and was cancelled")
            && preview.stderr.contains(
                "raise the connection's `statement_timeout_seconds` (`--statement-timeout SECONDS`"
            ),
        "{}",
        preview.stderr
    );

    let started = std::time::Instant::now();
    let run = scene
        .ferry(&["sync", "run", "people-to-stripe", "--format", "json"])
        .await;
    let elapsed = started.elapsed();
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    let report = run.json();
    assert_eq!(report["status"], "failed", "{report}");
    let error = report["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("the model ran longer than 1s and was cancelled")
            && error.contains(
                "raise the connection's `statement_timeout_seconds` (`--statement-timeout SECONDS`"
            )
            && error.contains("nothing was sent to Stripe"),
        "{error}"
    );
    assert!(
        elapsed < std::time::Duration::from_secs(60),
        "stopped early, not at the 5 min default: {elapsed:?}"
    );
    assert_eq!(report["requests"], 0, "{report}");
    assert_eq!(
        scene.stripe().requests().len(),
        requests_before,
        "no request reached Stripe"
    );
    assert!(scene.stripe().customers().is_empty());

    // Fast again, the same sync runs: it was the timeout, nothing else.
    scene.warehouse_sql("create or replace view people_now as select * from people");
    let run = scene.run_sync_json("people-to-stripe", &[]).await;
    assert_eq!(run["created"], 5, "{run}");
}

/// A timeout that is not a whole number of seconds from 0 to 86400 is refused, naming the
/// option and what it takes; nothing is saved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_warehouse_timeouts_are_refused_naming_the_option() {
    let scene = Scene::new().await;
    scene.warehouse_sql(&people_sql(1));
    let warehouse = scene.warehouse().display().to_string();
    for (option, value) in [
        ("--statement-timeout", "86401"),
        ("--statement-timeout", "-1"),
        ("--preview-timeout", "1.5"),
        ("--preview-timeout", "soon"),
    ] {
        let ran = scene
            .ferry(&[
                "connect",
                "duckdb",
                "warehouse",
                "--path",
                &warehouse,
                option,
                value,
            ])
            .await;
        assert_eq!(ran.code, 2, "{option} {value}: {}", ran.stderr);
        assert!(
            ran.stderr
                .contains(&format!("'{value}' for '{option} <SECONDS>'"))
                && ran
                    .stderr
                    .contains("give a whole number of seconds between 0 (no limit) and 86400"),
            "{}",
            ran.stderr
        );
    }
    let listed = scene.ferry(&["connections"]).await.ok();
    assert!(
        listed.stdout.contains("No connections yet"),
        "{}",
        listed.stdout
    );

    // The bounds themselves are fine; 0 shows as no limit.
    scene
        .ferry(&[
            "connect",
            "duckdb",
            "warehouse",
            "--path",
            &warehouse,
            "--statement-timeout",
            "86400",
            "--preview-timeout",
            "0",
        ])
        .await
        .ok();
    let listed = scene.ferry(&["connections"]).await.ok();
    assert!(
        listed
            .stdout
            .contains("statement timeout 86400s  preview timeout none"),
        "{}",
        listed.stdout
    );
}

/// `FERRY_RUN_RETENTION_DAYS` sets how long runs are kept (each sync keeps its newest run);
/// a value that is not a number of days refuses the run, naming the variable, and sends nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_retention_is_set_by_its_variable_and_a_bad_value_is_refused() {
    let mut scene = Scene::new().await;
    scene.warehouse_sql(&people_sql(3));
    scene.connect().await;
    scene.email_sync(&[]).await;
    let run_ids = |stdout: &str| stdout.matches("run_").count();
    for _ in 0..3 {
        scene.run_sync_json("people-to-stripe", &[]).await;
    }
    let runs = scene.ferry(&["runs", "people-to-stripe"]).await.ok();
    assert_eq!(run_ids(&runs.stdout), 3, "kept 30 days: {}", runs.stdout);

    scene
        .env
        .push(("FERRY_RUN_RETENTION_DAYS".into(), "thirty".into()));
    let before = scene.stripe().requests().len();
    let refused = scene.ferry(&["sync", "run", "people-to-stripe"]).await;
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(
        refused.stderr.contains(
            "FERRY_RUN_RETENTION_DAYS is `thirty`: give a whole number of days between 0"
        ),
        "{}",
        refused.stderr
    );
    assert_eq!(scene.stripe().requests().len(), before, "nothing sent");

    // 0 days: the next run removes every older run but the newest before it.
    scene.env.pop();
    scene
        .env
        .push(("FERRY_RUN_RETENTION_DAYS".into(), "0".into()));
    let latest = scene.run_sync_json("people-to-stripe", &[]).await;
    let runs = scene.ferry(&["runs", "people-to-stripe"]).await.ok();
    assert_eq!(run_ids(&runs.stdout), 2, "{}", runs.stdout);
    assert!(runs.stdout.contains(latest["run_id"].as_str().unwrap()));
}

/// DuckDB may use 128 MB for a model unless `FERRY_DUCKDB_MEMORY_LIMIT` says otherwise (it
/// would otherwise keep every scanned block cached, up to 80% of the machine). A model that
/// needs more than the limit fails naming the variable and sends nothing; a value DuckDB
/// cannot read is refused naming it; the same model runs under the default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duckdb_memory_is_set_by_its_variable_and_a_model_over_it_says_so() {
    let mut scene = Scene::new().await;
    // `people` is a view that counts a million distinct hashes for every read: tens of megabytes
    // of hash table.
    scene.warehouse_sql(&people_sql(3).replace("create table people", "create table people_rows"));
    scene.warehouse_sql(
        "create view people as select p.*, d.hashes from people_rows p, \
         (select count(distinct md5(cast(x as varchar))) as hashes from range(1000000) t(x)) d",
    );
    scene.connect().await;
    scene.email_sync(&["--map", "hashes=metadata.hashes"]).await;
    let before = scene.stripe().requests().len();
    scene
        .env
        .push(("FERRY_DUCKDB_MEMORY_LIMIT".into(), "8MB".into()));
    let over = scene.ferry(&["sync", "run", "people-to-stripe"]).await;
    assert_eq!(over.code, 1, "{}", over.stderr);
    // The failed run's report says why.
    assert!(
        over.stdout.contains("Out of Memory Error")
            && over.stdout.contains(
                "ferry lets DuckDB use 8MB for a model; set FERRY_DUCKDB_MEMORY_LIMIT higher"
            ),
        "{}",
        over.stdout
    );
    scene.env.pop();
    scene
        .env
        .push(("FERRY_DUCKDB_MEMORY_LIMIT".into(), "lots".into()));
    let unreadable = scene.ferry(&["sync", "run", "people-to-stripe"]).await;
    assert_ne!(unreadable.code, 0, "{}", unreadable.stderr);
    assert!(
        format!("{}{}", unreadable.stdout, unreadable.stderr).contains(
            "FERRY_DUCKDB_MEMORY_LIMIT is `lots`, which is not a memory size DuckDB understands"
        ),
        "{}\n{}",
        unreadable.stdout,
        unreadable.stderr
    );
    assert_eq!(scene.stripe().requests().len(), before, "nothing sent");

    scene.env.pop();
    let run = scene.run_sync_json("people-to-stripe", &[]).await;
    assert_eq!(run["created"], 3, "{run}");
    let customer = &scene.customers_with_email("person1@example.com")[0];
    assert_eq!(customer["metadata"]["hashes"], "1000000");
}
