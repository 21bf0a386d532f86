//! The state store's conformance suite: every test runs once on SQLite and once on PostgreSQL,
//! each time on a fresh workspace, and checks what the database really holds.

mod common;

use base64::Engine as _;
use common::{customer_spec, stripe_connection, Backend, TestWorkspace};
use ferry_core::{Outcome, RunCounts, RunStatus, Secret};
use ferry_state::{
    ApiTokenRecord, CommitBatch, ConnectionKind, NewConnection, PendingCreate, RunRecordRow,
    SecretInput, SecretRef, SnapshotEntry, StateError, StateStore, WorkspaceOptions,
};
use serde_json::json;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::Duration;

/// Runs each listed test function on both backends, as `on_sqlite::NAME` and
/// `on_postgres::NAME`.
macro_rules! conformance_tests {
    ($($test:ident),* $(,)?) => {
        mod on_sqlite {
            $(
                #[tokio::test]
                async fn $test() {
                    let workspace = super::TestWorkspace::new(super::Backend::Sqlite, stringify!($test)).await;
                    super::$test(workspace).await;
                }
            )*
        }
        mod on_postgres {
            $(
                #[tokio::test]
                async fn $test() {
                    let workspace = super::TestWorkspace::new(super::Backend::Postgres, stringify!($test)).await;
                    super::$test(workspace).await;
                }
            )*
        }
    };
}

conformance_tests!(
    connections_are_created_replaced_listed_and_removed,
    names_and_references_are_validated,
    models_are_created_replaced_and_removed,
    syncs_keep_their_uid_when_replaced,
    objects_in_use_cannot_be_removed,
    encrypted_secrets_round_trip_and_are_not_stored_in_clear,
    env_var_secrets_are_read_when_resolved,
    a_different_master_key_cannot_decrypt,
    commit_batch_updates_snapshot_pending_creates_and_counts,
    a_failing_commit_batch_leaves_nothing_behind,
    runs_go_from_running_to_finished_or_interrupted,
    run_records_page_and_filter_by_outcome,
    sync_lock_is_exclusive_until_released,
    removing_a_sync_removes_its_state,
    open_existing_needs_an_initialized_workspace,
    workspace_files_are_private,
    api_tokens_verify_until_revoked,
    api_tokens_are_stored_only_as_hashes,
    api_token_names_are_validated_and_unique,
    api_tokens_are_listed_by_name_and_counted,
    a_version_1_workspace_gains_api_tokens,
);

async fn connections_are_created_replaced_listed_and_removed(workspace: TestWorkspace) {
    let store = &workspace.store;
    let warehouse = |config| NewConnection {
        name: "warehouse".to_string(),
        kind: ConnectionKind::Duckdb,
        config,
        secret: None,
    };
    store
        .put_connection(&warehouse(json!({"path": "a.duckdb"})))
        .await
        .unwrap();
    let first = store.get_connection("warehouse").await.unwrap().unwrap();
    assert_eq!(first.kind, ConnectionKind::Duckdb);
    assert_eq!(first.config, json!({"path": "a.duckdb"}));
    assert_eq!(first.secret, None);
    assert_eq!(first.created_at, first.updated_at);

    tokio::time::sleep(Duration::from_millis(5)).await;
    store
        .put_connection(&warehouse(json!({"threads": 4, "path": "b.duckdb"})))
        .await
        .unwrap();
    let replaced = store.get_connection("warehouse").await.unwrap().unwrap();
    assert_eq!(replaced.config, json!({"path": "b.duckdb", "threads": 4}));
    // Objects come back with sorted keys on both backends (JSONB does not keep key order).
    assert_eq!(
        replaced.config.to_string(),
        r#"{"path":"b.duckdb","threads":4}"#
    );
    assert_eq!(replaced.created_at, first.created_at);
    assert!(replaced.updated_at > first.updated_at);

    store
        .put_connection(&stripe_connection("stripe"))
        .await
        .unwrap();
    let names: Vec<String> = store
        .list_connections()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, ["stripe", "warehouse"]);

    assert!(store.remove_connection("stripe").await.unwrap());
    assert!(!store.remove_connection("stripe").await.unwrap());
    assert_eq!(store.get_connection("stripe").await.unwrap(), None);
    assert_eq!(
        workspace
            .raw_count("SELECT COUNT(*) FROM connections")
            .await,
        1
    );
}

async fn names_and_references_are_validated(workspace: TestWorkspace) {
    let store = &workspace.store;
    let rule = "a name is 1 to 64 characters of letters, digits, '_' and '-'";
    let bad_name = stripe_connection("has space");
    assert_eq!(
        error_text(store.put_connection(&bad_name).await),
        format!("invalid connection name \"has space\": {rule}")
    );
    assert_eq!(
        error_text(
            store
                .put_model(&"m".repeat(65), "warehouse", "SELECT 1")
                .await
        ),
        format!("invalid model name \"{}\": {rule}", "m".repeat(65))
    );
    assert_eq!(
        error_text(store.put_sync("", &customer_spec("m", "stripe")).await),
        format!("invalid sync name \"\": {rule}")
    );
    let not_an_object = NewConnection {
        config: json!(["path"]),
        ..stripe_connection("stripe")
    };
    assert_eq!(
        error_text(store.put_connection(&not_an_object).await),
        "the config of connection 'stripe' must be a JSON object, not [\"path\"]"
    );
    let bad_variable = NewConnection {
        secret: Some(SecretInput::EnvVar("STRIPE-KEY".to_string())),
        ..stripe_connection("stripe")
    };
    assert!(error_text(store.put_connection(&bad_variable).await)
        .starts_with("\"STRIPE-KEY\" is not an environment variable name"));
    assert_eq!(
        error_text(store.put_model("signups", "warehouse", "SELECT 1").await),
        "connection 'warehouse' does not exist; see `ferry connection list`"
    );

    store
        .put_connection(&stripe_connection("stripe"))
        .await
        .unwrap();
    assert_eq!(
        error_text(store.put_model("signups", "stripe", "SELECT 1").await),
        "model 'signups' cannot read from connection 'stripe': it is a stripe connection; use a \
         duckdb or postgres connection"
    );
    assert_eq!(
        error_text(
            store
                .put_sync("customers", &customer_spec("signups", "stripe"))
                .await
        ),
        "model 'signups' does not exist; see `ferry model list`"
    );
    workspace.seed_customers_sync().await;
    assert_eq!(
        error_text(store.put_model("empty", "warehouse", "  \n").await),
        "the SQL of model 'empty' is empty; give the query that selects the rows to sync"
    );
    assert_eq!(
        error_text(
            store
                .put_sync("back", &customer_spec("signups", "warehouse"))
                .await
        ),
        "sync 'back' cannot write to connection 'warehouse': it is a duckdb connection; use a \
         stripe connection"
    );
    // Nothing invalid was stored.
    assert_eq!(workspace.raw_count("SELECT COUNT(*) FROM syncs").await, 1);
    assert_eq!(workspace.raw_count("SELECT COUNT(*) FROM models").await, 1);
}

async fn models_are_created_replaced_and_removed(workspace: TestWorkspace) {
    let store = &workspace.store;
    workspace.seed_customers_sync().await;
    let first = store.get_model("signups").await.unwrap().unwrap();
    assert_eq!(first.connection, "warehouse");
    assert_eq!(first.sql, "SELECT email, name FROM signups");

    tokio::time::sleep(Duration::from_millis(5)).await;
    store
        .put_model("signups", "warehouse", "SELECT email, name FROM signups_v2")
        .await
        .unwrap();
    let replaced = store.get_model("signups").await.unwrap().unwrap();
    assert_eq!(replaced.sql, "SELECT email, name FROM signups_v2");
    assert_eq!(replaced.created_at, first.created_at);
    assert!(replaced.updated_at > first.updated_at);

    store
        .put_model("active", "warehouse", "SELECT 1")
        .await
        .unwrap();
    let names: Vec<String> = store
        .list_models()
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(names, ["active", "signups"]);
    assert!(store.remove_model("active").await.unwrap());
    assert!(!store.remove_model("active").await.unwrap());
    assert_eq!(store.get_model("active").await.unwrap(), None);
}

async fn syncs_keep_their_uid_when_replaced(workspace: TestWorkspace) {
    let store = &workspace.store;
    let created = workspace.seed_customers_sync().await;
    assert_eq!(created.uid.len(), 16);
    assert!(created.uid.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(
        store.get_sync("customers").await.unwrap(),
        Some(created.clone())
    );

    tokio::time::sleep(Duration::from_millis(5)).await;
    let mut spec = customer_spec("signups", "stripe");
    spec.behavior = ferry_core::Behavior::UpdateOnly;
    spec.mappings.clear();
    let replaced = store.put_sync("customers", &spec).await.unwrap();
    assert_eq!(replaced.uid, created.uid);
    assert_eq!(replaced.created_at, created.created_at);
    assert!(replaced.updated_at > created.updated_at);
    assert_eq!(store.get_sync("customers").await.unwrap(), Some(replaced));
    assert_eq!(
        store.get_sync("customers").await.unwrap().unwrap().spec,
        spec
    );

    let other = store
        .put_sync("another", &customer_spec("signups", "stripe"))
        .await
        .unwrap();
    assert_ne!(other.uid, created.uid);
    let names: Vec<String> = store
        .list_syncs()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["another", "customers"]);

    assert!(store.remove_sync("customers").await.unwrap());
    let recreated = store
        .put_sync("customers", &customer_spec("signups", "stripe"))
        .await
        .unwrap();
    assert_ne!(recreated.uid, created.uid, "a new sync gets a new uid");
}

async fn objects_in_use_cannot_be_removed(workspace: TestWorkspace) {
    let store = &workspace.store;
    workspace.seed_customers_sync().await;
    store
        .put_sync("customers_copy", &customer_spec("signups", "stripe"))
        .await
        .unwrap();
    assert_eq!(
        error_text(store.remove_connection("stripe").await),
        "connection 'stripe' is used by sync 'customers', sync 'customers_copy'; remove or \
         change those first"
    );
    assert_eq!(
        error_text(store.remove_connection("warehouse").await),
        "connection 'warehouse' is used by model 'signups'; remove or change those first"
    );
    assert_eq!(
        error_text(store.remove_model("signups").await),
        "model 'signups' is used by sync 'customers', sync 'customers_copy'; remove or change \
         those first"
    );
    assert_eq!(
        workspace
            .raw_count("SELECT COUNT(*) FROM connections")
            .await,
        2
    );
    assert_eq!(workspace.raw_count("SELECT COUNT(*) FROM models").await, 1);

    assert!(store.remove_sync("customers").await.unwrap());
    assert!(store.remove_sync("customers_copy").await.unwrap());
    assert!(store.remove_model("signups").await.unwrap());
    assert!(store.remove_connection("warehouse").await.unwrap());
    assert!(store.remove_connection("stripe").await.unwrap());
    assert_eq!(
        workspace
            .raw_count("SELECT COUNT(*) FROM connections")
            .await,
        0
    );
}

async fn encrypted_secrets_round_trip_and_are_not_stored_in_clear(workspace: TestWorkspace) {
    let store = &workspace.store;
    let clear = "sk_test_51ConformanceSecretValue4242";
    store
        .put_connection(&NewConnection {
            secret: Some(SecretInput::Value(Secret::new(clear))),
            ..stripe_connection("stripe")
        })
        .await
        .unwrap();
    let record = store.get_connection("stripe").await.unwrap().unwrap();
    let Some(SecretRef::Encrypted(encrypted)) = &record.secret else {
        panic!("expected an encrypted secret, got {:?}", record.secret);
    };
    assert_eq!(encrypted.hint(), "sk_test_…4242");
    assert_eq!(
        record.secret.as_ref().unwrap().describe(),
        "encrypted (sk_test_…4242)"
    );
    let resolved = store
        .resolve_secret(record.secret.as_ref().unwrap())
        .unwrap();
    assert_eq!(resolved.expose(), clear);

    // Debug shows neither the secret nor its ciphertext.
    let stored_blob = workspace
        .raw_text("SELECT secret_value FROM connections WHERE name = 'stripe'")
        .await
        .unwrap();
    let debug = format!("{record:?}");
    assert!(
        !debug.contains(clear) && !debug.contains(&stored_blob),
        "{debug}"
    );
    assert!(!stored_blob.contains(clear));
    let sealed = base64::engine::general_purpose::STANDARD
        .decode(&stored_blob)
        .unwrap();
    assert_eq!(
        sealed.len(),
        12 + clear.len() + 16,
        "nonce ‖ ciphertext ‖ tag"
    );

    // Neither the clear secret nor the master key is anywhere in the database.
    let master_key = std::fs::read_to_string(workspace.options.key_file()).unwrap();
    match workspace.backend {
        Backend::Sqlite => {
            let bytes = database_bytes(&workspace.options.database_file());
            assert!(!contains(&bytes, clear.as_bytes()));
            assert!(!contains(&bytes, master_key.trim().as_bytes()));
            assert!(
                contains(&bytes, stored_blob.as_bytes()),
                "the scan sees stored data"
            );
        }
        Backend::Postgres => {
            let every_text = workspace
                .raw_text("SELECT string_agg(CAST(c AS TEXT), ' ') FROM connections AS c")
                .await
                .unwrap();
            assert!(every_text.contains(&stored_blob));
            assert!(!every_text.contains(clear));
            assert!(!every_text.contains(master_key.trim()));
        }
    }

    // Replacing the config alone keeps the secret.
    store
        .put_connection(&NewConnection {
            config: json!({"max_rps": 5}),
            secret: Some(SecretInput::Keep),
            ..stripe_connection("stripe")
        })
        .await
        .unwrap();
    let kept = store.get_connection("stripe").await.unwrap().unwrap();
    assert_eq!(kept.config, json!({"max_rps": 5}));
    assert_eq!(kept.secret, record.secret);
    assert_eq!(
        store
            .resolve_secret(kept.secret.as_ref().unwrap())
            .unwrap()
            .expose(),
        clear
    );
    assert_eq!(
        error_text(
            store
                .put_connection(&NewConnection {
                    secret: Some(SecretInput::Keep),
                    ..stripe_connection("missing")
                })
                .await
        ),
        "connection 'missing' does not exist; see `ferry connection list`"
    );
}

async fn env_var_secrets_are_read_when_resolved(workspace: TestWorkspace) {
    let store = &workspace.store;
    let unset = "FERRY_CONFORMANCE_SURELY_UNSET_VARIABLE";
    store
        .put_connection(&NewConnection {
            secret: Some(SecretInput::EnvVar(unset.to_string())),
            ..stripe_connection("stripe")
        })
        .await
        .unwrap();
    let record = store.get_connection("stripe").await.unwrap().unwrap();
    assert_eq!(record.secret, Some(SecretRef::EnvVar(unset.to_string())));
    assert_eq!(
        workspace
            .raw_text("SELECT secret_value FROM connections WHERE name = 'stripe'")
            .await
            .as_deref(),
        Some(unset),
        "only the variable's name is stored"
    );
    assert_eq!(
        error_text(store.resolve_secret(record.secret.as_ref().unwrap())),
        format!(
            "environment variable {unset} is not set; export it or reconnect with --api-key-env"
        )
    );
    // PATH is set in every test environment; it stands in for STRIPE_API_KEY here so the test
    // does not have to change the process environment.
    let path = SecretRef::EnvVar("PATH".to_string());
    assert_eq!(
        store.resolve_secret(&path).unwrap().expose(),
        std::env::var("PATH").unwrap()
    );
}

async fn a_different_master_key_cannot_decrypt(workspace: TestWorkspace) {
    let clear = "sk_test_51MasterKeyConformance0001";
    workspace
        .store
        .put_connection(&NewConnection {
            secret: Some(SecretInput::Value(Secret::new(clear))),
            ..stripe_connection("stripe")
        })
        .await
        .unwrap();
    let other_key = base64::engine::general_purpose::STANDARD.encode([9u8; 32]);
    let with_other_key = WorkspaceOptions {
        master_key: Some(Secret::new(other_key)),
        ..workspace.options.clone()
    };
    let reopened = StateStore::open_existing(&with_other_key).await.unwrap();
    let record = reopened.get_connection("stripe").await.unwrap().unwrap();
    assert_eq!(
        error_text(reopened.resolve_secret(record.secret.as_ref().unwrap())),
        format!(
            "cannot decrypt the secret of connection 'stripe': the master key differs from the \
             one it was saved with (FERRY_MASTER_KEY or {})",
            workspace.options.key_file().display()
        )
    );

    // The key file's key, given through FERRY_MASTER_KEY instead, works.
    let key_file_text = std::fs::read_to_string(workspace.options.key_file()).unwrap();
    let with_same_key = WorkspaceOptions {
        master_key: Some(Secret::new(key_file_text.trim())),
        ..workspace.options.clone()
    };
    let same = StateStore::open_existing(&with_same_key).await.unwrap();
    assert_eq!(
        same.resolve_secret(record.secret.as_ref().unwrap())
            .unwrap()
            .expose(),
        clear
    );

    // A blob copied onto another connection does not decrypt there.
    workspace
        .store
        .put_connection(&NewConnection {
            secret: Some(SecretInput::Value(Secret::new(
                "sk_test_51SomethingElse000000",
            ))),
            ..stripe_connection("stripe_copy")
        })
        .await
        .unwrap();
    workspace
        .raw_execute(
            "UPDATE connections SET secret_value = (SELECT secret_value FROM connections \
             WHERE name = 'stripe') WHERE name = 'stripe_copy'",
        )
        .await;
    let copied = workspace
        .store
        .get_connection("stripe_copy")
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(
        workspace
            .store
            .resolve_secret(copied.secret.as_ref().unwrap()),
        Err(StateError::WrongMasterKey { .. })
    ));

    let malformed = WorkspaceOptions {
        master_key: Some(Secret::new("too-short")),
        ..workspace.options.clone()
    };
    assert_eq!(
        error_text(StateStore::open_existing(&malformed).await),
        "FERRY_MASTER_KEY is not a valid master key: it must be the base64 of 32 random bytes \
         (make one with `openssl rand -base64 32`)"
    );
}

async fn commit_batch_updates_snapshot_pending_creates_and_counts(workspace: TestWorkspace) {
    let store = &workspace.store;
    workspace.seed_customers_sync().await;
    let run = store.create_run("customers", false).await.unwrap();

    let pending = [
        pending_create("ada@example.com", 1),
        pending_create("bob@example.com", 2),
        pending_create("cy@example.com", 3),
    ];
    store
        .save_pending_creates("customers", &pending)
        .await
        .unwrap();
    let loaded = store.load_pending_creates("customers").await.unwrap();
    assert_eq!(loaded.len(), 3);
    assert_eq!(loaded["bob@example.com"], pending[1]);

    // Saving again for a key replaces its entry.
    let replacement = PendingCreate {
        request_body: "email=cy%40example.com&name=Cy+2".to_string(),
        ..pending_create("cy@example.com", 33)
    };
    store
        .save_pending_creates("customers", std::slice::from_ref(&replacement))
        .await
        .unwrap();
    assert_eq!(
        store.load_pending_creates("customers").await.unwrap()["cy@example.com"],
        replacement
    );

    let counts = RunCounts {
        rows: 3,
        created: 2,
        rejected: 1,
        requests: 4,
        ..RunCounts::default()
    };
    let batch = CommitBatch {
        records: vec![
            record_row(1, "ada@example.com", Outcome::Created),
            record_row(2, "bob@example.com", Outcome::Created),
            record_row(3, "cy@example.com", Outcome::Rejected),
        ],
        snapshot_upserts: vec![
            (
                "ada@example.com".to_string(),
                snapshot_entry("cus_ada", "Ada"),
            ),
            (
                "bob@example.com".to_string(),
                snapshot_entry("cus_bob", "Bob"),
            ),
        ],
        snapshot_deletes: vec![],
        pending_deletes: vec!["cy@example.com".to_string()],
        counts,
    };
    store
        .commit_batch("customers", &run.id, &batch)
        .await
        .unwrap();

    assert!(store
        .load_pending_creates("customers")
        .await
        .unwrap()
        .is_empty());
    let snapshot = store.load_snapshot("customers").await.unwrap();
    assert_eq!(snapshot.len(), 2);
    assert_eq!(
        snapshot["ada@example.com"],
        snapshot_entry("cus_ada", "Ada")
    );
    assert_eq!(
        snapshot["bob@example.com"].payload.to_string(),
        r#"{"email":"bob@example.com","metadata":{"a":"1","z":"2"},"name":"Bob"}"#
    );
    assert_eq!(
        store.get_run(&run.id).await.unwrap().unwrap().counts,
        counts
    );
    assert_eq!(
        store.list_run_records(&run.id, None, 0, 10).await.unwrap(),
        batch.records
    );

    // A later batch updates one entry and deletes another.
    let later = CommitBatch {
        records: vec![record_row(4, "ada@example.com", Outcome::Updated)],
        snapshot_upserts: vec![(
            "ada@example.com".to_string(),
            snapshot_entry("cus_ada", "Ada Lovelace"),
        )],
        snapshot_deletes: vec!["bob@example.com".to_string()],
        pending_deletes: vec![],
        counts: RunCounts {
            rows: 4,
            updated: 1,
            ..counts
        },
    };
    store
        .commit_batch("customers", &run.id, &later)
        .await
        .unwrap();
    let snapshot = store.load_snapshot("customers").await.unwrap();
    assert_eq!(snapshot.keys().collect::<Vec<_>>(), ["ada@example.com"]);
    assert_eq!(
        snapshot["ada@example.com"].payload["name"],
        json!("Ada Lovelace")
    );
    assert_eq!(store.count_run_records(&run.id, None).await.unwrap(), 4);
}

async fn a_failing_commit_batch_leaves_nothing_behind(workspace: TestWorkspace) {
    let store = &workspace.store;
    workspace.seed_customers_sync().await;
    let run = store.create_run("customers", false).await.unwrap();
    store
        .save_pending_creates("customers", &[pending_create("ada@example.com", 1)])
        .await
        .unwrap();

    // Row number 7 twice violates the primary key after everything else was written.
    let batch = CommitBatch {
        records: vec![
            record_row(7, "ada@example.com", Outcome::Created),
            record_row(7, "bob@example.com", Outcome::Created),
        ],
        snapshot_upserts: vec![(
            "ada@example.com".to_string(),
            snapshot_entry("cus_ada", "Ada"),
        )],
        snapshot_deletes: vec![],
        pending_deletes: vec![],
        counts: RunCounts {
            rows: 2,
            created: 2,
            ..RunCounts::default()
        },
    };
    let error = store
        .commit_batch("customers", &run.id, &batch)
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            StateError::Sqlite { .. } | StateError::Postgres { .. }
        ),
        "{error}"
    );
    assert_eq!(
        workspace
            .raw_count("SELECT COUNT(*) FROM run_records")
            .await,
        0
    );
    assert!(store.load_snapshot("customers").await.unwrap().is_empty());
    assert_eq!(
        store.load_pending_creates("customers").await.unwrap().len(),
        1
    );
    assert_eq!(
        store.get_run(&run.id).await.unwrap().unwrap().counts,
        RunCounts::default()
    );

    // A batch naming a run of another sync is refused before anything is written.
    let good = CommitBatch {
        records: vec![record_row(1, "ada@example.com", Outcome::Created)],
        ..batch
    };
    assert_eq!(
        error_text(store.commit_batch("customers", "run_unknown", &good).await),
        "run 'run_unknown' does not exist; see `ferry runs list`"
    );
    assert_eq!(
        workspace
            .raw_count("SELECT COUNT(*) FROM run_records")
            .await,
        0
    );
    store
        .commit_batch("customers", &run.id, &good)
        .await
        .unwrap();
    assert_eq!(
        workspace
            .raw_count("SELECT COUNT(*) FROM run_records")
            .await,
        1
    );
}

async fn runs_go_from_running_to_finished_or_interrupted(workspace: TestWorkspace) {
    let store = &workspace.store;
    workspace.seed_customers_sync().await;
    store
        .put_sync("other", &customer_spec("signups", "stripe"))
        .await
        .unwrap();

    let first = store.create_run("customers", false).await.unwrap();
    assert!(first.id.starts_with("run_"));
    assert_eq!(first.status, RunStatus::Running);
    assert_eq!(first.finished_at, None);
    assert_eq!(store.get_run(&first.id).await.unwrap(), Some(first.clone()));

    let progress = RunCounts {
        rows: 10,
        created: 4,
        requests: 4,
        ..RunCounts::default()
    };
    store.update_run_counts(&first.id, &progress).await.unwrap();
    assert_eq!(
        store.get_run(&first.id).await.unwrap().unwrap().counts,
        progress
    );

    let done = RunCounts {
        created: 9,
        failed: 1,
        requests: 12,
        ..progress
    };
    store
        .finish_run(
            &first.id,
            RunStatus::Failed,
            &done,
            Some("Stripe answered 401"),
        )
        .await
        .unwrap();
    let finished = store.get_run(&first.id).await.unwrap().unwrap();
    assert_eq!(finished.status, RunStatus::Failed);
    assert_eq!(finished.counts, done);
    assert_eq!(finished.error.as_deref(), Some("Stripe answered 401"));
    assert!(finished.finished_at.unwrap() >= finished.started_at);
    assert_eq!(
        error_text(
            store
                .finish_run(&first.id, RunStatus::Running, &done, None)
                .await
        ),
        format!(
            "run {} cannot finish with status running; use completed, failed, cancelled or \
             interrupted",
            first.id
        )
    );

    let second = store.create_run("customers", true).await.unwrap();
    let third = store.create_run("customers", false).await.unwrap();
    let other = store.create_run("other", false).await.unwrap();
    assert!(second.full_resync);
    let ids =
        |runs: Vec<ferry_state::RunRecord>| runs.into_iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.list_runs(Some("customers"), 10).await.unwrap()),
        [third.id.clone(), second.id.clone(), first.id.clone()]
    );
    assert_eq!(
        ids(store.list_runs(None, 2).await.unwrap()),
        [other.id.clone(), third.id.clone()]
    );

    assert_eq!(store.mark_interrupted_runs("customers").await.unwrap(), 2);
    assert_eq!(store.mark_interrupted_runs("customers").await.unwrap(), 0);
    for run_id in [&second.id, &third.id] {
        let run = store.get_run(run_id).await.unwrap().unwrap();
        assert_eq!(run.status, RunStatus::Interrupted);
        assert!(run.finished_at.is_some());
    }
    // The failed run and the other sync's run are left alone.
    assert_eq!(
        store.get_run(&first.id).await.unwrap().unwrap().status,
        RunStatus::Failed
    );
    assert_eq!(
        store.get_run(&other.id).await.unwrap().unwrap().status,
        RunStatus::Running
    );

    assert_eq!(store.get_run("run_missing").await.unwrap(), None);
    assert_eq!(
        error_text(store.update_run_counts("run_missing", &progress).await),
        "run 'run_missing' does not exist; see `ferry runs list`"
    );
    assert_eq!(
        error_text(store.create_run("nope", false).await),
        "sync 'nope' does not exist; see `ferry sync list`"
    );
}

async fn run_records_page_and_filter_by_outcome(workspace: TestWorkspace) {
    let store = &workspace.store;
    workspace.seed_customers_sync().await;
    let run = store.create_run("customers", false).await.unwrap();
    let outcomes = [Outcome::Created, Outcome::Unchanged, Outcome::Rejected];
    let records: Vec<RunRecordRow> = (1..=25)
        .map(|row| {
            let mut record = record_row(
                row,
                &format!("user{row}@example.com"),
                outcomes[(row % 3) as usize],
            );
            if record.outcome == Outcome::Rejected {
                record.reason = Some("email is not a valid address".to_string());
                record.stripe_id = None;
            }
            record
        })
        .collect();
    // Committed in two batches, the second first: pages still come back by row number.
    let (early, late) = records.split_at(10);
    for part in [late, early] {
        let batch = CommitBatch {
            records: part.to_vec(),
            ..CommitBatch::default()
        };
        store
            .commit_batch("customers", &run.id, &batch)
            .await
            .unwrap();
    }

    let page = store.list_run_records(&run.id, None, 10, 5).await.unwrap();
    assert_eq!(page, records[10..15]);
    let everything = store.list_run_records(&run.id, None, 0, 100).await.unwrap();
    assert_eq!(everything, records);
    assert!(store
        .list_run_records(&run.id, None, 25, 10)
        .await
        .unwrap()
        .is_empty());

    let rejected: Vec<u64> = store
        .list_run_records(&run.id, Some(Outcome::Rejected), 0, 100)
        .await
        .unwrap()
        .iter()
        .map(|r| r.row_number)
        .collect();
    assert_eq!(rejected, [2, 5, 8, 11, 14, 17, 20, 23]);
    let second_page: Vec<u64> = store
        .list_run_records(&run.id, Some(Outcome::Rejected), 3, 3)
        .await
        .unwrap()
        .iter()
        .map(|r| r.row_number)
        .collect();
    assert_eq!(second_page, [11, 14, 17]);
    assert_eq!(store.count_run_records(&run.id, None).await.unwrap(), 25);
    assert_eq!(
        store
            .count_run_records(&run.id, Some(Outcome::Rejected))
            .await
            .unwrap(),
        8
    );
    assert_eq!(
        store
            .count_run_records(&run.id, Some(Outcome::Failed))
            .await
            .unwrap(),
        0
    );
}

async fn sync_lock_is_exclusive_until_released(workspace: TestWorkspace) {
    let store = &workspace.store;
    let customers = workspace.seed_customers_sync().await;
    let other = store
        .put_sync("other", &customer_spec("signups", "stripe"))
        .await
        .unwrap();

    let guard = store.lock_sync(&customers).await.unwrap();
    assert_eq!(guard.sync(), "customers");
    // Another store (another `ferry` process would open its own) cannot take it either.
    let second_store = StateStore::open_existing(&workspace.options).await.unwrap();
    for contender in [store, &second_store] {
        assert_eq!(
            error_text(contender.lock_sync(&customers).await),
            "sync 'customers' is already running (another `ferry sync run` holds its lock); \
             wait for it to finish"
        );
    }
    // Other syncs are not affected.
    let other_guard = second_store.lock_sync(&other).await.unwrap();

    drop(guard);
    let again = second_store.lock_sync(&customers).await.unwrap();
    again.release().await;
    let after_release = store.lock_sync(&customers).await.unwrap();
    drop(after_release);
    drop(other_guard);
}

async fn removing_a_sync_removes_its_state(workspace: TestWorkspace) {
    let store = &workspace.store;
    workspace.seed_customers_sync().await;
    store
        .put_sync("kept", &customer_spec("signups", "stripe"))
        .await
        .unwrap();
    for sync in ["customers", "kept"] {
        let run = store.create_run(sync, false).await.unwrap();
        store
            .save_pending_creates(sync, &[pending_create("cy@example.com", 3)])
            .await
            .unwrap();
        let batch = CommitBatch {
            records: vec![record_row(1, "ada@example.com", Outcome::Created)],
            snapshot_upserts: vec![(
                "ada@example.com".to_string(),
                snapshot_entry("cus_ada", "Ada"),
            )],
            ..CommitBatch::default()
        };
        store.commit_batch(sync, &run.id, &batch).await.unwrap();
    }

    assert!(store.remove_sync("customers").await.unwrap());
    for table in ["runs", "snapshot", "pending_creates"] {
        assert_eq!(
            workspace
                .raw_count(&format!(
                    "SELECT COUNT(*) FROM {table} WHERE sync = 'customers'"
                ))
                .await,
            0,
            "{table}"
        );
        assert_eq!(
            workspace
                .raw_count(&format!("SELECT COUNT(*) FROM {table} WHERE sync = 'kept'"))
                .await,
            1,
            "{table} of the other sync"
        );
    }
    assert_eq!(
        workspace
            .raw_count("SELECT COUNT(*) FROM run_records")
            .await,
        1
    );
    assert_eq!(store.get_sync("customers").await.unwrap(), None);
}

async fn open_existing_needs_an_initialized_workspace(workspace: TestWorkspace) {
    let (options, _dir) = workspace.fresh_options();
    let location = match workspace.backend {
        Backend::Sqlite => options.dir.display().to_string(),
        Backend::Postgres => options.state_url.clone().unwrap(),
    };
    assert_eq!(
        error_text(StateStore::open_existing(&options).await),
        format!("no ferry workspace at {location}; run `ferry init` first")
    );
    assert!(
        !options.database_file().exists(),
        "open_existing creates nothing"
    );

    let store = StateStore::initialize(&options).await.unwrap();
    store
        .put_connection(&stripe_connection("stripe"))
        .await
        .unwrap();
    // Initialising again only checks the migrations and keeps the data and the key.
    let key_before = std::fs::read(options.key_file()).unwrap();
    let again = StateStore::initialize(&options).await.unwrap();
    assert_eq!(std::fs::read(options.key_file()).unwrap(), key_before);
    let reopened = StateStore::open_existing(&options).await.unwrap();
    for store in [&again, &reopened] {
        assert_eq!(store.list_connections().await.unwrap().len(), 1);
    }
    assert_eq!(
        workspace
            .raw_count("SELECT COUNT(*) FROM schema_migrations")
            .await,
        2
    );

    // Without its key file, a workspace cannot be opened (its secrets would be unreadable).
    std::fs::remove_file(options.key_file()).unwrap();
    assert_eq!(
        error_text(StateStore::open_existing(&options).await),
        format!(
            "the master key file {} is missing, so the secrets of this workspace cannot be read; \
             restore the file or set FERRY_MASTER_KEY to the key it held",
            options.key_file().display()
        )
    );
}

async fn workspace_files_are_private(workspace: TestWorkspace) {
    let options = &workspace.options;
    let sync = workspace.seed_customers_sync().await;
    let _guard = workspace.store.lock_sync(&sync).await.unwrap();
    assert_eq!(mode(&options.dir), 0o700);
    assert_eq!(mode(&options.key_file()), 0o600);
    let key = std::fs::read_to_string(options.key_file()).unwrap();
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(key.trim())
            .unwrap()
            .len(),
        32
    );
    match workspace.backend {
        Backend::Sqlite => {
            let database = options.database_file();
            assert_eq!(mode(&database), 0o600);
            for suffix in ["-wal", "-shm"] {
                let companion = Path::new(&format!("{}{suffix}", database.display())).to_path_buf();
                assert_eq!(mode(&companion), 0o600, "{}", companion.display());
            }
            let locks = options.dir.join(ferry_state::LOCKS_DIR_NAME);
            assert_eq!(mode(&locks), 0o700);
            assert_eq!(mode(&locks.join(format!("{}.lock", sync.uid))), 0o600);
        }
        Backend::Postgres => {
            // The PostgreSQL backend keeps only the key file in the directory.
            let mut entries: Vec<String> = std::fs::read_dir(&options.dir)
                .unwrap()
                .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            entries.sort();
            assert_eq!(entries, ["master.key"]);
        }
    }

    // With FERRY_MASTER_KEY, no key file is written.
    let (mut options, _dir) = workspace.fresh_options();
    options.master_key = Some(Secret::new(
        base64::engine::general_purpose::STANDARD.encode([3u8; 32]),
    ));
    StateStore::initialize(&options).await.unwrap();
    assert!(!options.key_file().exists());
}

async fn api_tokens_verify_until_revoked(workspace: TestWorkspace) {
    let store = &workspace.store;
    let before = chrono::Utc::now() - chrono::TimeDelta::seconds(1);
    let (created, token) = store.create_api_token("ci").await.unwrap();
    let clear = token.expose().to_string();
    assert!(clear.starts_with("ferry_"), "{clear}");
    assert_eq!(clear.len(), "ferry_".len() + 43);
    assert!(clear["ferry_".len()..]
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    assert!(!format!("{token:?} {token}").contains(&clear));
    assert_eq!(created.name, "ci");
    assert_eq!(created.prefix, clear[..12]);
    assert_eq!(created.last_used_at, None);
    assert!(created.created_at > before && created.created_at <= chrono::Utc::now());
    assert_eq!(
        store.list_api_tokens().await.unwrap(),
        std::slice::from_ref(&created)
    );

    // Verifying returns the record and records the use.
    let verified = store.verify_api_token(&clear).await.unwrap().unwrap();
    let used_at = verified.last_used_at.expect("last_used_at is set");
    assert!(used_at >= created.created_at);
    assert_eq!(
        verified,
        ApiTokenRecord {
            last_used_at: Some(used_at),
            ..created.clone()
        }
    );
    assert_eq!(
        store.list_api_tokens().await.unwrap(),
        std::slice::from_ref(&verified)
    );
    // Within a minute the use is not written again.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let again = store.verify_api_token(&clear).await.unwrap().unwrap();
    assert_eq!(again.last_used_at, Some(used_at));
    // After it, it is.
    workspace
        .raw_execute("UPDATE api_tokens SET last_used_at = '2000-01-01T00:00:00.000000Z'")
        .await;
    let later = store.verify_api_token(&clear).await.unwrap().unwrap();
    assert!(later.last_used_at.unwrap() > used_at);
    assert_eq!(
        store.list_api_tokens().await.unwrap()[0].last_used_at,
        later.last_used_at
    );

    // Anything else is not a token.
    let mut wrong = clear.clone();
    let last = wrong.pop().unwrap();
    wrong.push(if last == 'A' { 'B' } else { 'A' });
    for presented in [
        wrong.as_str(),
        &clear[..clear.len() - 1],
        &format!("{clear} "),
        &clear.to_uppercase(),
        &clear["ferry_".len()..],
        &created.prefix,
        "ferry_",
        "",
    ] {
        assert_eq!(
            store.verify_api_token(presented).await.unwrap(),
            None,
            "{presented:?}"
        );
    }
    // The hash itself is not a token either.
    let hash = workspace
        .raw_text("SELECT token_hash FROM api_tokens")
        .await
        .unwrap();
    assert_eq!(store.verify_api_token(&hash).await.unwrap(), None);

    // Revoked, it no longer verifies.
    assert!(store.revoke_api_token("ci").await.unwrap());
    assert_eq!(store.verify_api_token(&clear).await.unwrap(), None);
    assert!(!store.revoke_api_token("ci").await.unwrap());
    assert_eq!(store.list_api_tokens().await.unwrap(), []);
    assert_eq!(
        workspace.raw_count("SELECT COUNT(*) FROM api_tokens").await,
        0
    );

    // A new token under the same name is a different token.
    let (_, renewed) = store.create_api_token("ci").await.unwrap();
    assert_ne!(renewed.expose(), clear);
    assert_eq!(store.verify_api_token(&clear).await.unwrap(), None);
    assert_eq!(
        store
            .verify_api_token(renewed.expose())
            .await
            .unwrap()
            .unwrap()
            .name,
        "ci"
    );
}

async fn api_tokens_are_stored_only_as_hashes(workspace: TestWorkspace) {
    use sha2::Digest as _;
    let store = &workspace.store;
    let (_, token) = store.create_api_token("server").await.unwrap();
    let clear = token.expose();
    store.verify_api_token(clear).await.unwrap().unwrap();
    let secret_part = &clear[12..];

    let stored_hash = workspace
        .raw_text("SELECT token_hash FROM api_tokens WHERE name = 'server'")
        .await
        .unwrap();
    assert_eq!(
        stored_hash,
        hex::encode(sha2::Sha256::digest(clear.as_bytes()))
    );
    assert_eq!(
        workspace
            .raw_text("SELECT prefix FROM api_tokens WHERE name = 'server'")
            .await
            .unwrap(),
        clear[..12]
    );
    match workspace.backend {
        Backend::Sqlite => {
            let bytes = database_bytes(&workspace.options.database_file());
            assert!(!contains(&bytes, clear.as_bytes()));
            assert!(!contains(&bytes, secret_part.as_bytes()));
            assert!(
                contains(&bytes, stored_hash.as_bytes()),
                "the scan sees stored data"
            );
        }
        Backend::Postgres => {
            let every_text = workspace
                .raw_text("SELECT string_agg(CAST(t AS TEXT), ' ') FROM api_tokens AS t")
                .await
                .unwrap();
            assert!(every_text.contains(&stored_hash));
            assert!(!every_text.contains(secret_part));
        }
    }
}

async fn api_token_names_are_validated_and_unique(workspace: TestWorkspace) {
    let store = &workspace.store;
    let rule = "a name is 1 to 64 characters of letters, digits, '_' and '-'";
    for bad in ["", "has space", "../etc"] {
        assert_eq!(
            error_text(store.create_api_token(bad).await),
            format!("invalid API token name {bad:?}: {rule}")
        );
    }
    assert_eq!(
        error_text(store.revoke_api_token("has space").await),
        format!("invalid API token name \"has space\": {rule}")
    );

    let (first, token) = store.create_api_token("deploy-bot").await.unwrap();
    assert_eq!(
        error_text(store.create_api_token("deploy-bot").await),
        "API token 'deploy-bot' already exists; revoke it first with `ferry token revoke \
         deploy-bot` or choose another name"
    );
    // The existing token is untouched.
    assert_eq!(store.list_api_tokens().await.unwrap(), [first]);
    assert!(store
        .verify_api_token(token.expose())
        .await
        .unwrap()
        .is_some());
    assert_eq!(store.count_api_tokens().await.unwrap(), 1);
    // Names are case-sensitive, like every other name.
    store.create_api_token("Deploy-bot").await.unwrap();
    assert_eq!(store.count_api_tokens().await.unwrap(), 2);
}

async fn api_tokens_are_listed_by_name_and_counted(workspace: TestWorkspace) {
    let store = &workspace.store;
    assert_eq!(store.count_api_tokens().await.unwrap(), 0);
    assert_eq!(store.list_api_tokens().await.unwrap(), []);
    let mut tokens = Vec::new();
    for name in ["zeta", "beta", "Alpha", "_ops", "beta-2"] {
        let (record, token) = store.create_api_token(name).await.unwrap();
        tokens.push((record, token));
    }
    assert_eq!(store.count_api_tokens().await.unwrap(), 5);
    let listed = store.list_api_tokens().await.unwrap();
    let names: Vec<&str> = listed.iter().map(|t| t.name.as_str()).collect();
    // Byte order on both backends, as for every other listing.
    assert_eq!(names, ["Alpha", "_ops", "beta", "beta-2", "zeta"]);
    for (record, token) in &tokens {
        assert!(listed.contains(record));
        assert_eq!(
            store
                .verify_api_token(token.expose())
                .await
                .unwrap()
                .unwrap()
                .name,
            record.name
        );
    }
    let mut distinct: Vec<&str> = tokens.iter().map(|(_, t)| t.expose()).collect();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), 5);

    assert!(store.revoke_api_token("beta").await.unwrap());
    assert_eq!(store.count_api_tokens().await.unwrap(), 4);
    let names: Vec<String> = store
        .list_api_tokens()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["Alpha", "_ops", "beta-2", "zeta"]);
}

async fn a_version_1_workspace_gains_api_tokens(workspace: TestWorkspace) {
    workspace
        .store
        .put_connection(&stripe_connection("stripe"))
        .await
        .unwrap();
    // Take the workspace back to schema version 1, as an older ferry left it.
    workspace
        .raw_execute("DROP TABLE api_tokens; DELETE FROM schema_migrations WHERE version = 2;")
        .await;
    let store = StateStore::initialize(&workspace.options).await.unwrap();
    assert_eq!(
        workspace
            .raw_count("SELECT MAX(version) FROM schema_migrations")
            .await,
        2
    );
    assert_eq!(store.list_connections().await.unwrap().len(), 1);
    assert_eq!(store.count_api_tokens().await.unwrap(), 0);
    let (_, token) = store.create_api_token("ci").await.unwrap();
    assert!(store
        .verify_api_token(token.expose())
        .await
        .unwrap()
        .is_some());
}

fn error_text<T: std::fmt::Debug>(result: Result<T, StateError>) -> String {
    match result {
        Ok(value) => panic!("expected an error, got {value:?}"),
        Err(error) => error.to_string(),
    }
}

fn pending_create(key: &str, number: u32) -> PendingCreate {
    PendingCreate {
        key: key.to_string(),
        idempotency_key: format!("ferry-0123456789abcdef-{number}"),
        request_body: format!("email={}", key.replace('@', "%40")),
        created_at: chrono::DateTime::from_timestamp_micros(
            1_700_000_000_123_456 + i64::from(number),
        )
        .unwrap(),
    }
}

fn record_row(row_number: u64, key: &str, outcome: Outcome) -> RunRecordRow {
    RunRecordRow {
        row_number,
        key: key.to_string(),
        outcome,
        stripe_id: Some(format!("cus_{row_number}")),
        reason: None,
        request_id: Some(format!("req_{row_number}")),
        changes: Some(json!({"name": {"before": null, "after": format!("Name {row_number}")}})),
    }
}

fn snapshot_entry(stripe_id: &str, name: &str) -> SnapshotEntry {
    let email = format!(
        "{}@example.com",
        name.split(' ').next().unwrap().to_lowercase()
    );
    SnapshotEntry {
        stripe_id: stripe_id.to_string(),
        payload_hash: format!("sha256:{stripe_id}:{name}"),
        // Deliberately unsorted: it comes back sorted.
        payload: json!({"name": name, "metadata": {"z": "2", "a": "1"}, "email": email}),
        updated_at: chrono::DateTime::from_timestamp_micros(1_700_000_100_000_001).unwrap(),
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// The database file and its write-ahead log, where fresh writes live until a checkpoint.
fn database_bytes(database: &Path) -> Vec<u8> {
    let mut bytes = std::fs::read(database).unwrap();
    if let Ok(wal) = std::fs::read(format!("{}-wal", database.display())) {
        bytes.extend(wal);
    }
    bytes
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}
