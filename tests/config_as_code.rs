//! End-to-end: `ferry apply -f ferry.yaml` and `ferry export` drive the real binary against a
//! temporary workspace, a DuckDB warehouse and the Stripe emulator. Assertions read what the
//! workspace saved and what the emulator holds, not only what ferry printed.

mod common;

use common::{people_sql, Ran, Scene, KEY};
use ferry_state::{ConnectionKind, SecretRef, StateStore, WorkspaceOptions};
use serde_json::json;
use std::path::{Path, PathBuf};

/// The declared file of most tests: the emulator, the warehouse, one model and one sync.
fn ferry_yaml(scene: &Scene, sql: &str, plan_field: &str) -> String {
    format!(
        r#"version: 1
connections:
  stripe:
    kind: stripe
    api_key_env: STRIPE_API_KEY
    api_base: {api_base}
    max_rps: 25
  warehouse:
    kind: duckdb
    path: warehouse.duckdb
models:
  customers:
    connection: warehouse
    sql: |
      {sql}
syncs:
  customers_to_stripe:
    model: customers
    destination: stripe
    behavior: update-or-create
    key: {{column: email, field: email}}
    mappings:
      - {{column: name, field: name}}
      - {{column: plan, field: {plan_field}}}
"#,
        api_base = scene.emulator.url(),
    )
}

const SQL: &str = "select email, name, plan from people order by id";

/// A scene with a 5-row warehouse and the Stripe key in the environment of every `ferry` call.
async fn scene() -> Scene {
    let mut scene = Scene::new().await;
    scene.warehouse_sql(&people_sql(5));
    scene
        .env
        .push(("STRIPE_API_KEY".to_string(), KEY.to_string()));
    scene
}

fn write(scene: &Scene, relative: &str, text: &str) -> PathBuf {
    let path = scene.dir.path().join(relative);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("a folder");
    }
    std::fs::write(&path, text).expect("the file is written");
    path
}

async fn store(scene: &Scene) -> StateStore {
    StateStore::open_existing(&WorkspaceOptions::in_dir(scene.workspace()))
        .await
        .expect("the workspace opens")
}

/// (connections, models, syncs) in the workspace, by name.
async fn contents(scene: &Scene) -> (Vec<String>, Vec<String>, Vec<String>) {
    let store = store(scene).await;
    (
        store
            .list_connections()
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.name)
            .collect(),
        store
            .list_models()
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.name)
            .collect(),
        store
            .list_syncs()
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.name)
            .collect(),
    )
}

fn lines_starting(ran: &Ran, prefix: &str) -> Vec<String> {
    ran.stdout
        .lines()
        .filter(|l| l.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

#[track_caller]
fn refused(ran: &Ran) -> &str {
    assert_eq!(
        ran.code, 2,
        "expected a configuration error\nstdout:\n{}\nstderr:\n{}",
        ran.stdout, ran.stderr
    );
    &ran.stderr
}

fn canonical(path: &Path) -> String {
    std::fs::canonicalize(path)
        .expect("the path exists")
        .display()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_plans_then_creates_and_a_second_apply_changes_nothing() {
    let scene = scene().await;
    write(
        &scene,
        "ferry.yaml",
        &ferry_yaml(&scene, SQL, "metadata.plan"),
    );

    // Without --yes: the plan, and nothing saved.
    let plan = scene.ferry(&["apply", "-f", "ferry.yaml"]).await.ok();
    assert_eq!(
        lines_starting(&plan, "+ "),
        [
            "+ create connection stripe (stripe)",
            "+ create connection warehouse (duckdb)",
            "+ create model customers (on warehouse)",
            "+ create sync customers_to_stripe (customers → stripe)",
        ],
        "{}",
        plan.stdout
    );
    assert!(plan
        .stdout
        .contains("Plan: 4 to create, 0 to change, 0 unchanged."));
    assert!(plan
        .stdout
        .contains("Nothing applied. Run again with --yes to apply."));
    assert_eq!(contents(&scene).await, (vec![], vec![], vec![]));
    let listed = scene.ferry(&["connections"]).await.ok();
    assert!(listed.stdout.contains("No connections yet"));
    assert_eq!(scene.posts(), 0);

    // The JSON plan says the same.
    let json = scene
        .ferry(&["apply", "-f", "ferry.yaml", "--format", "json"])
        .await
        .ok()
        .json();
    assert_eq!(
        json["summary"],
        json!({"create": 4, "change": 0, "unchanged": 0, "keep": 0})
    );
    assert_eq!(json["applied"], false);
    assert_eq!(json["plan"][3]["object"], "sync");

    // With --yes: saved through the same code as `ferry connect` / `model create` / `sync create`.
    let applied = scene
        .ferry(&["apply", "-f", "ferry.yaml", "--yes"])
        .await
        .ok();
    assert!(
        applied
            .stdout
            .contains("Created connection stripe (stripe); the key works."),
        "{}",
        applied.stdout
    );
    assert!(applied
        .stdout
        .contains("Applied: 4 created, 0 changed, 0 unchanged."));
    let store = store(&scene).await;
    let stripe = store.get_connection("stripe").await.unwrap().unwrap();
    assert_eq!(stripe.kind, ConnectionKind::Stripe);
    assert_eq!(
        stripe.secret,
        Some(SecretRef::EnvVar("STRIPE_API_KEY".to_string()))
    );
    assert_eq!(
        stripe.config,
        json!({"api_base": scene.emulator.url(), "max_rps": 25})
    );
    let warehouse = store.get_connection("warehouse").await.unwrap().unwrap();
    assert_eq!(
        warehouse.config,
        json!({"path": canonical(&scene.warehouse())}),
        "a relative path is stored absolute"
    );
    let model = store.get_model("customers").await.unwrap().unwrap();
    assert_eq!(model.connection, "warehouse");
    assert_eq!(model.sql.trim_end(), SQL);
    let sync = store
        .get_sync("customers_to_stripe")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(sync.spec.mappings.len(), 2);
    assert_eq!(sync.spec.mappings[1].field, "metadata.plan");

    // The sync it declared runs.
    let run = scene.run_sync_json("customers_to_stripe", &[]).await;
    assert_eq!(
        (run["status"].as_str(), run["created"].as_u64()),
        (Some("completed"), Some(5))
    );
    assert_eq!(scene.stripe().customers().len(), 5);
    let two = &scene.customers_with_email("person2@example.com")[0];
    assert_eq!(two["name"], "Person 2");
    assert_eq!(two["metadata"], json!({"plan": "free"}));

    // A PostgreSQL warehouse is declared by the name of the variable holding its URL (the plan
    // only: no PostgreSQL server here).
    let with_pg = ferry_yaml(&scene, SQL, "metadata.plan").replace(
        "  warehouse:\n",
        "  pg:\n    kind: postgres\n    url_env: FERRY_TEST_WAREHOUSE_URL\n  warehouse:\n",
    );
    write(&scene, "with-pg.yaml", &with_pg);
    let mut command = scene.command(&["apply", "-f", "with-pg.yaml"]);
    command.env("FERRY_TEST_WAREHOUSE_URL", "postgres://localhost/none");
    let output = command.output().expect("ferry starts");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("+ create connection pg (postgres)")
            && stdout.contains("Plan: 1 to create, 0 to change, 4 unchanged."),
        "{stdout}"
    );
    assert!(store.get_connection("pg").await.unwrap().is_none());

    // A second apply: everything unchanged, nothing saved again.
    let again = scene
        .ferry(&["apply", "-f", "ferry.yaml", "--yes"])
        .await
        .ok();
    assert_eq!(
        lines_starting(&again, "= "),
        [
            "= unchanged connection stripe",
            "= unchanged connection warehouse",
            "= unchanged model customers",
            "= unchanged sync customers_to_stripe",
        ]
    );
    assert!(again
        .stdout
        .contains("Plan: 0 to create, 0 to change, 4 unchanged."));
    assert!(again.stdout.contains("Nothing to apply"));
    let sync_after = store
        .get_sync("customers_to_stripe")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(sync_after.updated_at, sync.updated_at, "not saved again");
    assert_eq!(sync_after.uid, sync.uid);

    // Applying from another directory names the same warehouse file: still unchanged.
    let elsewhere = scene.dir.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let mut command = scene.command(&["apply", "-f", "../ferry.yaml"]);
    command.current_dir(&elsewhere);
    let output = command.output().expect("ferry starts");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("Plan: 0 to create, 0 to change, 4 unchanged."),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_file_changes_exactly_what_was_edited() {
    let scene = scene().await;
    write(
        &scene,
        "ferry.yaml",
        &ferry_yaml(&scene, SQL, "metadata.plan"),
    );
    scene
        .ferry(&["apply", "-f", "ferry.yaml", "--yes"])
        .await
        .ok();
    scene.run_sync_json("customers_to_stripe", &[]).await;

    // Another SQL and one mapping pointed at another field.
    let new_sql = "select email, upper(name) as name, plan from people order by id";
    write(
        &scene,
        "ferry.yaml",
        &ferry_yaml(&scene, new_sql, "metadata.tier"),
    );
    let plan = scene.ferry(&["apply", "-f", "ferry.yaml"]).await.ok();
    assert_eq!(
        lines_starting(&plan, "~ "),
        [
            "~ change model customers: sql",
            "~ change sync customers_to_stripe: mappings",
        ],
        "{}",
        plan.stdout
    );
    assert!(plan
        .stdout
        .contains("Plan: 0 to create, 2 to change, 2 unchanged."));
    let store = store(&scene).await;
    assert_eq!(
        store
            .get_model("customers")
            .await
            .unwrap()
            .unwrap()
            .sql
            .trim_end(),
        SQL,
        "a plan saves nothing"
    );

    let applied = scene
        .ferry(&["apply", "-f", "ferry.yaml", "--yes"])
        .await
        .ok();
    assert!(applied
        .stdout
        .contains("Applied: 0 created, 2 changed, 2 unchanged."));
    assert_eq!(
        store
            .get_model("customers")
            .await
            .unwrap()
            .unwrap()
            .sql
            .trim_end(),
        new_sql
    );
    let show = scene
        .ferry(&["sync", "show", "customers_to_stripe"])
        .await
        .ok();
    assert!(
        show.stdout.contains("plan → metadata.tier"),
        "{}",
        show.stdout
    );
    assert!(!show.stdout.contains("metadata.plan"), "{}", show.stdout);

    // The next run writes the new form.
    let run = scene.run_sync_json("customers_to_stripe", &[]).await;
    assert_eq!(run["updated"], 5);
    let three = &scene.customers_with_email("person3@example.com")[0];
    assert_eq!(three["name"], "PERSON 3");
    assert_eq!(three["metadata"]["tier"], "pro");

    // Applied again: nothing left to change.
    let again = scene.ferry(&["apply", "-f", "ferry.yaml"]).await.ok();
    assert!(again
        .stdout
        .contains("Plan: 0 to create, 0 to change, 4 unchanged."));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_only_in_the_workspace_are_kept_and_a_model_can_come_from_a_file() {
    let scene = scene().await;
    scene.connect().await; // `stripe` (encrypted key) and `warehouse`, by the CLI
    scene.email_sync(&[]).await; // model `people`, sync `people-to-stripe`

    // A file in a subfolder: paths are relative to it.
    write(
        &scene,
        "config/models/emails.sql",
        "select email from people order by id\n",
    );
    write(
        &scene,
        "config/ferry.yaml",
        "version: 1\nmodels:\n  emails:\n    connection: warehouse\n    file: models/emails.sql\n",
    );
    let applied = scene
        .ferry(&["apply", "-f", "config/ferry.yaml", "--yes"])
        .await
        .ok();
    assert_eq!(
        lines_starting(&applied, "  keep "),
        [
            "  keep connection stripe (not in the file; ferry apply never deletes)",
            "  keep connection warehouse (not in the file; ferry apply never deletes)",
            "  keep model people (not in the file; ferry apply never deletes)",
            "  keep sync people-to-stripe (not in the file; ferry apply never deletes)",
        ],
        "{}",
        applied.stdout
    );
    assert_eq!(
        contents(&scene).await,
        (
            vec!["stripe".into(), "warehouse".into()],
            vec!["emails".into(), "people".into()],
            vec!["people-to-stripe".into()]
        )
    );
    let store = store(&scene).await;
    assert_eq!(
        store.get_model("emails").await.unwrap().unwrap().sql,
        "select email from people order by id\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_applies_as_a_no_op_and_holds_no_secret() {
    let scene = scene().await;
    // One connection with its key stored encrypted by `ferry connect --api-key`, and one by
    // environment variable from a file.
    scene.connect().await;
    scene
        .email_sync(&["--nulls", "clear", "--behavior", "update-only"])
        .await;
    write(
        &scene,
        "ferry.yaml",
        &format!(
            "version: 1\nconnections:\n  stripe-env:\n    kind: stripe\n    api_key_env: STRIPE_API_KEY\n    api_base: {}/\n    max_rps_per_endpoint: 10\n",
            scene.emulator.url()
        ),
    );
    scene
        .ferry(&["apply", "-f", "ferry.yaml", "--yes"])
        .await
        .ok();
    // A model whose SQL spans lines and ends without a newline.
    scene
        .ferry(&[
            "model",
            "create",
            "multi",
            "--connection",
            "warehouse",
            "--sql",
            "select email,\n  name\nfrom people",
        ])
        .await
        .ok();
    // An invoice sync from order lines, mirrored: its line key, finalize, reissue and void settings.
    scene
        .ferry(&[
            "model",
            "create",
            "orders",
            "--connection",
            "warehouse",
            "--sql",
            "select email as order_id, 'L1' as line_id, email, 100 as amount from people",
        ])
        .await
        .ok();
    scene
        .ferry(&[
            "sync",
            "create",
            "orders-to-stripe",
            "--model",
            "orders",
            "--destination",
            "stripe",
            "--object",
            "invoice",
            "--key",
            "order_id=metadata.order_id",
            "--line-key",
            "line_id",
            "--finalize",
            "when-created",
            "--reissue-finalized",
            "--map",
            "email=customer(email)",
            "--map",
            "amount=lines.amount",
            "--map",
            "'usd'=currency",
            "--behavior",
            "mirror",
            "--void-open",
        ])
        .await
        .ok();

    let exported = scene.ferry(&["export"]).await.ok();
    let text = exported.stdout;
    assert!(
        text.contains("    invoice:\n      line_key: line_id\n      finalize: when-created\n      reissue_finalized: true")
            && text.contains("void_open_invoices: true"),
        "{text}"
    );
    assert!(!text.contains(KEY), "the key is not exported:\n{text}");
    let store = store(&scene).await;
    let stripe = store.get_connection("stripe").await.unwrap().unwrap();
    assert!(matches!(stripe.secret, Some(SecretRef::Encrypted(_))));
    assert!(text.contains("version: 1"));
    assert!(
        text.contains("# The API key is stored encrypted in the workspace, not in this file;"),
        "{text}"
    );
    assert!(text.contains("`api_key_env: VARIABLE` would manage it"));
    assert!(text.contains("api_key_env: STRIPE_API_KEY"));
    assert!(text.contains(&format!("path: {}", scene.warehouse().display())));
    assert!(text.contains("    sql: |"), "{text}");
    assert!(text.contains("behavior: update-only"));
    assert!(text.contains("nulls: clear"));
    assert!(
        text.contains("- {column: plan, field: metadata.plan}"),
        "{text}"
    );
    // Nothing of the encrypted blob either: no line holds a long base64 run.
    for line in text.lines() {
        assert!(
            !line
                .split_whitespace()
                .any(|word| word.len() > 60 && !word.contains('/')),
            "suspicious line: {line}"
        );
    }

    // Written to a file, applied back: nothing to do.
    let written = scene.ferry(&["export", "-o", "exported.yaml"]).await.ok();
    assert!(written.stdout.is_empty(), "nothing on stdout with -o");
    let on_disk = std::fs::read_to_string(scene.dir.path().join("exported.yaml")).unwrap();
    assert_eq!(on_disk, text);
    let applied = scene
        .ferry(&["apply", "-f", "exported.yaml", "--yes"])
        .await
        .ok();
    assert!(
        applied
            .stdout
            .contains("Plan: 0 to create, 0 to change, 8 unchanged."),
        "{}",
        applied.stdout
    );
    assert!(!applied.stdout.contains("~ "), "{}", applied.stdout);
    let stripe_after = store.get_connection("stripe").await.unwrap().unwrap();
    assert_eq!(stripe_after, stripe, "the encrypted key is kept as it was");
    assert_eq!(
        store.get_model("multi").await.unwrap().unwrap().sql,
        "select email,\n  name\nfrom people"
    );

    // The same file in a fresh workspace recreates the objects, except that the encrypted
    // connection must be told where its key is.
    let fresh = scene.dir.path().join("fresh");
    let mut command = scene.command(&["apply", "-f", "exported.yaml"]);
    command.env("FERRY_HOME", &fresh);
    let output = command.output().expect("ferry starts");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("connection 'stripe' is not in the workspace yet")
            && stderr.contains("api_key_env:"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_file_is_refused_with_a_clear_message_and_nothing_is_saved() {
    let scene = scene().await;
    let good = ferry_yaml(&scene, SQL, "metadata.plan");
    let check = |ran: &Ran, needles: &[&str]| {
        let message = refused(ran);
        for needle in needles {
            assert!(
                message.contains(needle),
                "`{needle}` missing from:\n{message}"
            );
        }
    };

    // An unknown field, named with its line.
    let typo = good.replace("    max_rps: 25", "    max_rsp: 25");
    let line = typo.lines().position(|l| l.contains("max_rsp")).unwrap() + 1;
    write(&scene, "typo.yaml", &typo);
    let ran = scene.ferry(&["apply", "-f", "typo.yaml", "--yes"]).await;
    check(
        &ran,
        &[
            "`max_rsp` is not a setting of a stripe connection",
            &format!("line {line}"),
            "`max_rps`",
        ],
    );

    // A key written in the file: refused, and never repeated.
    let literal = good.replace(
        "    api_key_env: STRIPE_API_KEY",
        "    api_key: sk_test_LITERALSECRET123",
    );
    write(&scene, "literal.yaml", &literal);
    let ran = scene.ferry(&["apply", "-f", "literal.yaml", "--yes"]).await;
    check(
        &ran,
        &["connection 'stripe'", "`api_key:`", "api_key_env: VARIABLE"],
    );
    assert!(!ran.stderr.contains("LITERALSECRET") && !ran.stdout.contains("LITERALSECRET"));

    // The key pasted where the variable's name belongs: refused, and never repeated.
    let pasted = good.replace(
        "api_key_env: STRIPE_API_KEY",
        "api_key_env: sk_test_PASTEDSECRET123",
    );
    write(&scene, "pasted.yaml", &pasted);
    let ran = scene.ferry(&["apply", "-f", "pasted.yaml", "--yes"]).await;
    check(
        &ran,
        &["`api_key_env` must be the name of an environment variable"],
    );
    assert!(!ran.stderr.contains("PASTEDSECRET") && !ran.stdout.contains("PASTEDSECRET"));

    // A warehouse URL written in the file: refused, and never repeated.
    let pg_literal = good.replace(
        "  warehouse:\n",
        "  pg:\n    kind: postgres\n    url: postgres://ferry:PGPASSWORD42@db.internal/warehouse\n  warehouse:\n",
    );
    write(&scene, "pg-literal.yaml", &pg_literal);
    let ran = scene.ferry(&["apply", "-f", "pg-literal.yaml"]).await;
    check(&ran, &["connection 'pg'", "`url:`", "url_env: VARIABLE"]);
    assert!(!ran.stderr.contains("PGPASSWORD42") && !ran.stdout.contains("PGPASSWORD42"));

    // A new connection whose variable is not set: named.
    let unset = good.replace("STRIPE_API_KEY", "FERRY_TEST_UNSET_KEY");
    write(&scene, "unset.yaml", &unset);
    let ran = scene.ferry(&["apply", "-f", "unset.yaml", "--yes"]).await;
    check(&ran, &["FERRY_TEST_UNSET_KEY", "not set"]);

    // A new connection without any secret: the field to add is named.
    let no_key = good.replace("    api_key_env: STRIPE_API_KEY\n", "");
    write(&scene, "no-key.yaml", &no_key);
    let ran = scene.ferry(&["apply", "-f", "no-key.yaml", "--yes"]).await;
    check(
        &ran,
        &["connection 'stripe'", "api_key_env: STRIPE_API_KEY"],
    );

    // A sync reading a model that exists nowhere: named.
    let unknown_model = good.replace("    model: customers", "    model: customerz");
    write(&scene, "unknown-model.yaml", &unknown_model);
    let ran = scene
        .ferry(&["apply", "-f", "unknown-model.yaml", "--yes"])
        .await;
    check(&ran, &["sync 'customers_to_stripe'", "model 'customerz'"]);

    // A model file that does not exist: its path is named.
    let missing_file = good.replace(
        &format!("    sql: |\n      {SQL}\n"),
        "    file: models/missing.sql\n",
    );
    assert_ne!(missing_file, good);
    write(&scene, "missing-file.yaml", &missing_file);
    let ran = scene
        .ferry(&["apply", "-f", "missing-file.yaml", "--yes"])
        .await;
    check(&ran, &["model 'customers'", "models/missing.sql"]);

    // A setting of another kind of connection.
    let wrong_kind = good.replace("    path: warehouse.duckdb", "    api_base: http://x");
    write(&scene, "wrong-kind.yaml", &wrong_kind);
    let ran = scene
        .ferry(&["apply", "-f", "wrong-kind.yaml", "--yes"])
        .await;
    check(
        &ran,
        &["`api_base` is not a setting of a duckdb connection"],
    );

    // Another version of the format.
    write(&scene, "v2.yaml", &good.replace("version: 1", "version: 2"));
    let ran = scene.ferry(&["apply", "-f", "v2.yaml", "--yes"]).await;
    check(&ran, &["version 2 is not supported"]);

    // No file at all.
    let ran = scene.ferry(&["apply", "--yes"]).await;
    check(&ran, &["cannot read ferry.yaml"]);

    // An empty file.
    write(&scene, "empty.yaml", "");
    let ran = scene.ferry(&["apply", "-f", "empty.yaml"]).await;
    check(&ran, &["version"]);

    // None of these saved anything, and nothing reached Stripe.
    assert_eq!(contents(&scene).await, (vec![], vec![], vec![]));
    assert_eq!(scene.posts(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_stops_at_the_first_object_the_engine_refuses() {
    let scene = scene().await;
    // The SQL names a table the warehouse does not have: only running it can tell.
    let bad = ferry_yaml(
        &scene,
        "select email, name, plan from no_such_table",
        "metadata.plan",
    );
    write(&scene, "ferry.yaml", &bad);
    let plan = scene.ferry(&["apply", "-f", "ferry.yaml"]).await.ok();
    assert!(plan.stdout.contains("Plan: 4 to create"));
    let ran = scene.ferry(&["apply", "-f", "ferry.yaml", "--yes"]).await;
    let message = refused(&ran);
    assert!(
        message.contains("could not create model 'customers'") && message.contains("no_such_table"),
        "{message}"
    );
    assert!(
        message.contains("The 2 objects before it were applied"),
        "{message}"
    );
    assert!(ran.stdout.contains("Created connection warehouse"));
    assert_eq!(
        contents(&scene).await,
        (vec!["stripe".into(), "warehouse".into()], vec![], vec![]),
        "connections before the failing model are saved, nothing after it"
    );

    // Fixed, the next apply goes on from there.
    write(
        &scene,
        "ferry.yaml",
        &ferry_yaml(&scene, SQL, "metadata.plan"),
    );
    let applied = scene
        .ferry(&["apply", "-f", "ferry.yaml", "--yes"])
        .await
        .ok();
    assert!(applied
        .stdout
        .contains("Applied: 2 created, 0 changed, 2 unchanged."));

    // SQL that drops a column an unchanged sync maps: refused before the model is saved.
    let dropped = ferry_yaml(
        &scene,
        "select email, name from people order by id",
        "metadata.plan",
    );
    write(&scene, "ferry.yaml", &dropped);
    let ran = scene.ferry(&["apply", "-f", "ferry.yaml", "--yes"]).await;
    let message = refused(&ran);
    assert!(
        message.contains("could not change model 'customers'")
            && message.contains("sync 'customers_to_stripe'")
            && message.contains("`plan`")
            && message.contains("Nothing was applied."),
        "{message}"
    );
    let store = store(&scene).await;
    assert_eq!(
        store
            .get_model("customers")
            .await
            .unwrap()
            .unwrap()
            .sql
            .trim_end(),
        SQL,
        "the model is not saved"
    );

    // A mapping to a field Stripe does not have: the engine's validation message.
    let bad_field = ferry_yaml(&scene, SQL, "plan_field_that_does_not_exist");
    write(&scene, "ferry.yaml", &bad_field);
    let ran = scene.ferry(&["apply", "-f", "ferry.yaml", "--yes"]).await;
    let message = refused(&ran);
    assert!(
        message.contains("could not change sync 'customers_to_stripe'")
            && message.contains("plan_field_that_does_not_exist"),
        "{message}"
    );
    let sync = store
        .get_sync("customers_to_stripe")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(sync.spec.mappings[1].field, "metadata.plan", "not saved");
}

/// `statement_timeout_seconds` and `preview_timeout_seconds` on a warehouse connection: saved,
/// exported, planned as changes, and refused with the field and its range when they are not
/// whole seconds from 0 to 86400 or sit on a Stripe connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warehouse_timeouts_apply_export_and_bad_ones_are_refused() {
    let scene = scene().await;
    let with_timeouts = |statement: &str, preview: &str| {
        ferry_yaml(&scene, SQL, "metadata.plan").replace(
            "    path: warehouse.duckdb\n",
            &format!(
                "    path: warehouse.duckdb\n    statement_timeout_seconds: {statement}\n    \
                 preview_timeout_seconds: {preview}\n"
            ),
        )
    };
    write(&scene, "ferry.yaml", &with_timeouts("600", "0"));
    scene
        .ferry(&["apply", "-f", "ferry.yaml", "--yes"])
        .await
        .ok();
    let store = store(&scene).await;
    let config = || async {
        store
            .get_connection("warehouse")
            .await
            .unwrap()
            .unwrap()
            .config
    };
    let saved = config().await;
    assert_eq!(saved["statement_timeout_seconds"], 600, "{saved}");
    assert_eq!(saved["preview_timeout_seconds"], 0, "{saved}");

    let exported = scene.ferry(&["export"]).await.ok().stdout;
    assert!(
        exported.contains("    statement_timeout_seconds: 600\n")
            && exported.contains("    preview_timeout_seconds: 0\n"),
        "{exported}"
    );
    write(&scene, "exported.yaml", &exported);
    let again = scene.ferry(&["apply", "-f", "exported.yaml"]).await.ok();
    assert!(
        again
            .stdout
            .contains("Plan: 0 to create, 0 to change, 4 unchanged."),
        "{}",
        again.stdout
    );

    write(&scene, "ferry.yaml", &with_timeouts("900", "0"));
    let plan = scene.ferry(&["apply", "-f", "ferry.yaml"]).await.ok();
    assert_eq!(
        lines_starting(&plan, "~ "),
        ["~ change connection warehouse: statement_timeout_seconds"],
        "{}",
        plan.stdout
    );

    for (statement, preview, field) in [
        ("-5", "0", "statement_timeout_seconds"),
        ("1.5", "0", "statement_timeout_seconds"),
        ("\"30\"", "0", "statement_timeout_seconds"),
        ("600", "86401", "preview_timeout_seconds"),
    ] {
        write(&scene, "bad.yaml", &with_timeouts(statement, preview));
        let ran = scene.ferry(&["apply", "-f", "bad.yaml", "--yes"]).await;
        let message = refused(&ran);
        assert!(
            message.contains(&format!(
                "connection 'warehouse': {field} must be a whole number of seconds between 0 \
                 (no limit) and 86400"
            )),
            "{statement}/{preview}: {message}"
        );
    }
    let on_stripe = ferry_yaml(&scene, SQL, "metadata.plan").replace(
        "    max_rps: 25\n",
        "    max_rps: 25\n    statement_timeout_seconds: 60\n",
    );
    write(&scene, "on-stripe.yaml", &on_stripe);
    let ran = scene
        .ferry(&["apply", "-f", "on-stripe.yaml", "--yes"])
        .await;
    let message = refused(&ran);
    assert!(
        message.contains("`statement_timeout_seconds` is not a setting of a stripe connection"),
        "{message}"
    );
    assert_eq!(config().await, saved, "nothing refused was saved");
}

/// `change_detection_schema` on a warehouse connection: applied through the same save as the
/// CLI (which creates the schema and its `ferry_syncs` table in the DuckDB file), exported,
/// planned as a change, and refused naming the field when it is not a plain lower-case name or
/// sits on a Stripe connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_detection_schema_applies_exports_and_a_bad_one_is_refused() {
    let scene = scene().await;
    let registry = "select sync_uid, sync_name, created_at from ferry.ferry_syncs";
    assert!(
        ferry_source::duckdb_execute(&scene.warehouse(), registry).is_err(),
        "no bookkeeping table before the setting is applied"
    );
    let with_schema = |schema: &str| {
        ferry_yaml(&scene, SQL, "metadata.plan").replace(
            "    path: warehouse.duckdb\n",
            &format!("    path: warehouse.duckdb\n    change_detection_schema: {schema}\n"),
        )
    };
    write(&scene, "ferry.yaml", &with_schema("ferry"));
    scene
        .ferry(&["apply", "-f", "ferry.yaml", "--yes"])
        .await
        .ok();
    let store = store(&scene).await;
    let config = || async {
        store
            .get_connection("warehouse")
            .await
            .unwrap()
            .unwrap()
            .config
    };
    let saved = config().await;
    assert_eq!(saved["change_detection_schema"], "ferry", "{saved}");
    ferry_source::duckdb_execute(&scene.warehouse(), registry)
        .expect("saving the connection created ferry.ferry_syncs in the warehouse");

    let listed = scene.ferry(&["connections"]).await.ok().stdout;
    assert!(
        listed.contains("change detection in schema ferry"),
        "{listed}"
    );
    let exported = scene.ferry(&["export"]).await.ok().stdout;
    assert!(
        exported.contains("    path: ")
            && exported.contains("    change_detection_schema: ferry\n"),
        "{exported}"
    );
    write(&scene, "exported.yaml", &exported);
    let again = scene.ferry(&["apply", "-f", "exported.yaml"]).await.ok();
    assert!(
        again
            .stdout
            .contains("Plan: 0 to create, 0 to change, 4 unchanged."),
        "{}",
        again.stdout
    );
    write(&scene, "other.yaml", &with_schema("ferry_cd"));
    let plan = scene.ferry(&["apply", "-f", "other.yaml"]).await.ok();
    assert_eq!(
        lines_starting(&plan, "~ "),
        ["~ change connection warehouse: change_detection_schema"],
        "{}",
        plan.stdout
    );

    for (value, problem) in [
        ("Bad-Name", "`Bad-Name` is not a schema name ferry accepts"),
        ("1x", "`1x` is not a schema name ferry accepts"),
        ("5", "5 is not a schema name; give a name such as `ferry`"),
    ] {
        write(&scene, "bad.yaml", &with_schema(value));
        let ran = scene.ferry(&["apply", "-f", "bad.yaml", "--yes"]).await;
        let message = refused(&ran);
        assert!(
            message.contains(&format!(
                "connection 'warehouse': change_detection_schema: {problem}"
            )),
            "{value}: {message}"
        );
    }
    let on_stripe = ferry_yaml(&scene, SQL, "metadata.plan").replace(
        "    max_rps: 25\n",
        "    max_rps: 25\n    change_detection_schema: ferry\n",
    );
    write(&scene, "on-stripe.yaml", &on_stripe);
    let ran = scene
        .ferry(&["apply", "-f", "on-stripe.yaml", "--yes"])
        .await;
    let message = refused(&ran);
    assert!(
        message.contains("`change_detection_schema` is not a setting of a stripe connection"),
        "{message}"
    );
    assert_eq!(config().await, saved, "nothing refused was saved");
}

/// Mirror in `ferry.yaml`: its settings are saved, exported and planned as changes; a customer
/// sync that mirrors without `delete_customers` is refused, naming the setting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_settings_apply_export_and_a_customer_sync_needs_the_opt_in() {
    let scene = scene().await;
    let mirrored = |settings: &str| {
        ferry_yaml(&scene, SQL, "metadata.plan").replace(
            "    behavior: update-or-create\n",
            &format!("    behavior: mirror\n{settings}"),
        )
    };
    write(&scene, "refused.yaml", &mirrored(""));
    let ran = scene.ferry(&["apply", "-f", "refused.yaml", "--yes"]).await;
    let message = refused(&ran);
    assert!(
        message.contains("mirror: {delete_customers: true}"),
        "{message}"
    );

    let settings = "    mirror: {max_retire_percent: 25, delete_customers: true}\n";
    write(&scene, "ferry.yaml", &mirrored(settings));
    scene
        .ferry(&["apply", "-f", "ferry.yaml", "--yes"])
        .await
        .ok();
    let store = store(&scene).await;
    let spec = store
        .get_sync("customers_to_stripe")
        .await
        .unwrap()
        .unwrap()
        .spec;
    assert_eq!(
        (
            spec.behavior,
            spec.mirror.max_retire_percent,
            spec.mirror.delete_customers
        ),
        (ferry_core::Behavior::Mirror, 25, true)
    );
    let exported = scene.ferry(&["export"]).await.ok().stdout;
    assert!(
        exported.contains("    behavior: mirror\n    key: {column: email, field: email}\n")
            && exported.contains(
                "    mirror:\n      max_retire_percent: 25\n      delete_customers: true\n"
            ),
        "{exported}"
    );
    write(&scene, "exported.yaml", &exported);
    let again = scene.ferry(&["apply", "-f", "exported.yaml"]).await.ok();
    assert!(
        again
            .stdout
            .contains("Plan: 0 to create, 0 to change, 4 unchanged."),
        "{}",
        again.stdout
    );
    write(
        &scene,
        "ferry.yaml",
        &mirrored("    mirror: {max_retire_percent: 5, delete_customers: true}\n"),
    );
    let plan = scene.ferry(&["apply", "-f", "ferry.yaml"]).await.ok();
    assert_eq!(
        lines_starting(&plan, "~ "),
        ["~ change sync customers_to_stripe: mirror"],
        "{}",
        plan.stdout
    );
}

/// A receiver that answers 200 to anything: the webhook channel's connection test.
async fn answering_receiver() -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = vec![0u8; 65536];
                let _ = socket.read(&mut request).await;
                let _ = socket
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    format!("http://{address}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_defaults_apply_export_and_an_unknown_channel_is_refused() {
    let mut scene = scene().await;
    scene
        .env
        .push(("HOOK_SECRET".to_string(), "whsec_config_test".to_string()));
    let receiver = answering_receiver().await;
    let declared = |defaults: &str| {
        ferry_yaml(&scene, SQL, "metadata.plan").replace(
            "  warehouse:\n    kind: duckdb\n",
            &format!(
                "  hooks:\n    kind: webhook\n    url: {receiver}/hook\n    signing_secret_env: HOOK_SECRET\n  warehouse:\n    kind: duckdb\n"
            ),
        ) + defaults
    };

    write(
        &scene,
        "ferry.yaml",
        &declared("alert_defaults:\n  channels: [nope]\n"),
    );
    let ran = scene.ferry(&["apply", "-f", "ferry.yaml", "--yes"]).await;
    let message = refused(&ran);
    assert!(
        message.contains("could not create the alert defaults") && message.contains("nope"),
        "{message}"
    );

    let defaults = "alert_defaults:\n  channels: [hooks]\n  rejected_over_percent: 10\n";
    write(&scene, "ferry.yaml", &declared(defaults));
    let plan = scene.ferry(&["apply", "-f", "ferry.yaml"]).await.ok();
    assert_eq!(
        lines_starting(&plan, "+ create alert"),
        ["+ create alert defaults (on a failed run, over 10% of rows rejected; to hooks)"],
        "{}",
        plan.stdout
    );
    scene
        .ferry(&["apply", "-f", "ferry.yaml", "--yes"])
        .await
        .ok();
    let exported = scene.ferry(&["export"]).await.ok().stdout;
    assert!(
        exported.ends_with(
            "alert_defaults:\n  channels: [hooks]\n  on_failure: true\n  rejected_over_percent: 10\n"
        ),
        "{exported}"
    );
    write(&scene, "exported.yaml", &exported);
    let again = scene.ferry(&["apply", "-f", "exported.yaml"]).await.ok();
    assert!(
        again.stdout.contains("= unchanged alert defaults")
            && again.stdout.contains("Nothing to apply"),
        "{}",
        again.stdout
    );

    write(
        &scene,
        "ferry.yaml",
        &declared("alert_defaults:\n  channels: [hooks]\n  rejected_over_percent: 5\n"),
    );
    let plan = scene.ferry(&["apply", "-f", "ferry.yaml"]).await.ok();
    assert_eq!(
        lines_starting(&plan, "~ "),
        ["~ change alert defaults: rejected_over_percent"],
        "{}",
        plan.stdout
    );
    write(&scene, "ferry.yaml", &declared(""));
    let plan = scene.ferry(&["apply", "-f", "ferry.yaml"]).await.ok();
    assert!(
        plan.stdout
            .contains("  keep alert defaults (not in the file; ferry apply never deletes)"),
        "{}",
        plan.stdout
    );
}
