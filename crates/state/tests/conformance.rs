//! The state store's conformance suite: every test runs once on SQLite and once on PostgreSQL,
//! each time on a fresh workspace, and checks what the database really holds.

mod common;

use base64::Engine as _;
use common::{customer_spec, stripe_connection, Backend, TestWorkspace};
use ferry_core::{
    AlertCondition, AlertSettings, Outcome, RunCounts, RunStatus, Schedule, Secret,
    SequenceRunStatus, SequenceSpec,
};
use ferry_state::{
    ApiTokenRecord, CommitBatch, ConnectionKind, DeliveryAttempt, DeliveryRecord, DeliveryStatus,
    IndexState, IndexedRecord, NewConnection, NewDelivery, NewSequenceRun, PendingCreate,
    RaisedAlert, RateSlots, RunRecordRow, SecretInput, SecretRef, SequenceRunRecord,
    SequenceRunUpdate, SnapshotEntry, SnapshotKey, StateError, StateStore, StripeExchange,
    UiSession, WorkspaceOptions,
};
use serde_json::json;
use std::collections::HashMap;
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
    the_run_queue_is_claimed_once_leased_renewed_and_finished,
    connections_are_created_replaced_listed_and_removed,
    names_and_references_are_validated,
    new_names_are_unique_ignoring_case_and_do_not_start_with_a_dash,
    names_saved_before_the_rule_stay_usable,
    models_are_created_replaced_and_removed,
    syncs_keep_their_uid_when_replaced,
    a_paused_sync_stays_paused_when_saved_and_resumes_afresh,
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
    a_version_2_workspace_is_upgraded_with_its_data,
    snapshot_keys_come_in_byte_order_and_page_after_a_key,
    the_snapshot_is_kept_per_sync_and_object,
    pending_creates_are_kept_per_object_and_settled_per_object,
    an_interrupted_run_ends_when_it_was_last_seen_alive,
    progress_refreshes_last_seen_at_and_keeps_not_attempted,
    run_records_page_by_row_number_through_every_page,
    pruning_keeps_running_runs_and_each_syncs_newest,
    the_key_index_replaces_a_records_keys_and_removes_records,
    a_key_value_shared_by_several_records_finds_them_all,
    key_index_scopes_are_kept_apart,
    key_index_state_is_saved_replaced_and_cleared,
    a_syncs_alert_settings_round_trip,
    alerts_are_raised_once_updated_and_resolved,
    removing_a_sync_removes_its_raised_alerts,
    a_delivery_is_due_at_its_time_and_keeps_each_attempt,
    deliveries_are_listed_newest_first_and_by_sync,
    pruning_removes_old_finished_deliveries_and_keeps_pending_ones,
    workspace_settings_are_saved_replaced_and_read_sorted,
    ui_sessions_are_seen_until_idle_and_outlive_a_restart,
    ui_sessions_are_stored_only_as_hashes,
    idle_ui_sessions_are_pruned,
    rate_slots_reserved_back_to_back_follow_each_other,
    an_idle_rate_budget_starts_now_without_a_burst,
    concurrent_rate_reservations_never_overlap,
    stripe_exchanges_are_kept_with_their_run_listed_by_row_and_pruned,
    sequences_are_saved_listed_replaced_and_removed,
    a_sequence_is_refused_for_its_problems_its_name_or_a_missing_step,
    a_sync_a_sequence_names_cannot_be_removed,
    sequence_runs_start_once_per_dedupe_key_and_advance_by_compare_and_set,
    racing_advances_of_a_sequence_run_have_one_winner,
    sequence_runs_are_listed_newest_first_and_running_oldest_first,
    a_run_request_is_found_by_its_dedupe_key,
    removing_a_sequence_removes_its_runs,
    pruning_removes_finished_sequence_runs_and_keeps_running_ones,
);

/// The schema version this build migrates workspaces to.
const LATEST_SCHEMA_VERSION: i64 = 11;

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
    let rule = ferry_state::NAME_RULE;
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
         warehouse's connection (duckdb, postgres, redshift, mysql, snowflake, bigquery, files)"
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

async fn new_names_are_unique_ignoring_case_and_do_not_start_with_a_dash(workspace: TestWorkspace) {
    let store = &workspace.store;
    workspace.seed_customers_sync().await;
    let taken = |what: &str, name: &str, existing: &str| {
        format!(
            "{what} '{name}' cannot be created: {what} '{existing}' already exists, and names \
             must differ by more than case; use '{existing}' or choose another name"
        )
    };
    assert_eq!(
        error_text(store.put_connection(&stripe_connection("STRIPE")).await),
        taken("connection", "STRIPE", "stripe")
    );
    assert_eq!(
        error_text(store.put_model("SignUps", "warehouse", "SELECT 1").await),
        taken("model", "SignUps", "signups")
    );
    assert_eq!(
        error_text(
            store
                .put_sync("Customers", &customer_spec("signups", "stripe"))
                .await
        ),
        taken("sync", "Customers", "customers")
    );
    store.create_api_token("ops").await.unwrap();
    assert_eq!(
        error_text(store.create_api_token("OPS").await),
        taken("API token", "OPS", "ops")
    );
    let rule = ferry_state::NAME_RULE;
    for dashed in ["-rf", "--force", "-"] {
        assert_eq!(
            error_text(store.put_model(dashed, "warehouse", "SELECT 1").await),
            format!("invalid model name {dashed:?}: {rule}")
        );
        assert_eq!(
            error_text(store.put_connection(&stripe_connection(dashed)).await),
            format!("invalid connection name {dashed:?}: {rule}")
        );
        assert_eq!(
            error_text(
                store
                    .put_sync(dashed, &customer_spec("signups", "stripe"))
                    .await
            ),
            format!("invalid sync name {dashed:?}: {rule}")
        );
        assert_eq!(
            error_text(store.create_api_token(dashed).await),
            format!("invalid API token name {dashed:?}: {rule}")
        );
    }
    // The same answers before anything is saved, for callers that check first.
    use ferry_state::ObjectType;
    assert_eq!(
        error_text(store.check_name_to_save(ObjectType::Model, "SignUps").await),
        taken("model", "SignUps", "signups")
    );
    assert_eq!(
        error_text(store.check_name_to_save(ObjectType::ApiToken, "-rf").await),
        format!("invalid API token name \"-rf\": {rule}")
    );
    store
        .check_name_to_save(ObjectType::Model, "signups")
        .await
        .unwrap();
    store
        .check_name_to_save(ObjectType::Sync, "orders")
        .await
        .unwrap();
    // Replacing an object under its own name is no conflict, and '_' or a digit may lead.
    store
        .put_model("signups", "warehouse", "SELECT email FROM signups")
        .await
        .unwrap();
    store
        .put_model("_staging", "warehouse", "SELECT 1")
        .await
        .unwrap();
    store
        .put_model("2024-q1", "warehouse", "SELECT 1")
        .await
        .unwrap();
    // Nothing refused was stored.
    assert_eq!(
        workspace
            .raw_count("SELECT COUNT(*) FROM connections")
            .await,
        2
    );
    assert_eq!(workspace.raw_count("SELECT COUNT(*) FROM models").await, 3);
    assert_eq!(workspace.raw_count("SELECT COUNT(*) FROM syncs").await, 1);
    assert_eq!(
        workspace.raw_count("SELECT COUNT(*) FROM api_tokens").await,
        1
    );
}

/// A workspace written by an earlier ferry may hold names the rule now refuses (`-rf`, or both
/// `m1` and `M1`): it opens, and those objects are read, replaced, used and removed as before.
async fn names_saved_before_the_rule_stay_usable(workspace: TestWorkspace) {
    workspace.seed_customers_sync().await;
    workspace
        .raw_execute(
            "INSERT INTO models (name, connection, sql, created_at, updated_at) \
             SELECT '-rf', connection, sql, created_at, updated_at FROM models WHERE name = 'signups'; \
             INSERT INTO models (name, connection, sql, created_at, updated_at) \
             SELECT 'SIGNUPS', connection, sql, created_at, updated_at FROM models WHERE name = 'signups'; \
             INSERT INTO connections (name, kind, config, secret_kind, secret_value, secret_hint, created_at, updated_at) \
             SELECT '-old', kind, config, secret_kind, secret_value, secret_hint, created_at, updated_at FROM connections WHERE name = 'stripe'; \
             INSERT INTO syncs (name, uid, model, destination, spec, created_at, updated_at) \
             SELECT 'CUSTOMERS', 'fedcba9876543210', model, destination, spec, created_at, updated_at FROM syncs WHERE name = 'customers'; \
             INSERT INTO api_tokens (name, token_hash, prefix, created_at, last_used_at) VALUES \
             ('-bot', 'not-a-real-hash', 'ferry_ab', (SELECT created_at FROM models WHERE name = 'signups'), NULL)",
        )
        .await;
    // It opens again, as every command opens it.
    let store = StateStore::open_existing(&workspace.options).await.unwrap();

    let models: Vec<String> = store
        .list_models()
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(models, ["-rf", "SIGNUPS", "signups"]);
    assert!(store.get_model("-rf").await.unwrap().is_some());
    assert!(store.get_connection("-old").await.unwrap().is_some());
    // Each may be replaced under its own name, even while another differs only in case.
    store
        .put_model("-rf", "warehouse", "SELECT 2 AS x")
        .await
        .unwrap();
    store
        .put_model("SIGNUPS", "warehouse", "SELECT email FROM signups")
        .await
        .unwrap();
    store
        .put_model("signups", "warehouse", "SELECT email, name FROM signups")
        .await
        .unwrap();
    store
        .put_connection(&stripe_connection("-old"))
        .await
        .unwrap();
    let old_sync = store
        .put_sync("CUSTOMERS", &customer_spec("-rf", "-old"))
        .await
        .unwrap();
    assert_eq!(old_sync.uid, "fedcba9876543210", "replaced, not created");
    store
        .put_sync("customers", &customer_spec("SIGNUPS", "stripe"))
        .await
        .unwrap();
    // Runs of an old-named sync are recorded as any other's.
    let run = store.create_run("CUSTOMERS", false).await.unwrap();
    assert_eq!(
        store.list_runs(Some("CUSTOMERS"), 5).await.unwrap()[0].id,
        run.id
    );
    assert_eq!(
        store.list_runs(Some("customers"), 5).await.unwrap().len(),
        0
    );
    use ferry_state::ObjectType;
    store
        .check_name_to_save(ObjectType::Model, "-rf")
        .await
        .unwrap();
    store
        .check_name_to_save(ObjectType::Model, "SIGNUPS")
        .await
        .unwrap();
    // A third spelling is new, so it is refused.
    assert!(matches!(
        store.put_model("SignUps", "warehouse", "SELECT 1").await,
        Err(StateError::NameTakenIgnoringCase { .. })
    ));
    // And each can be removed.
    assert!(store.revoke_api_token("-bot").await.unwrap());
    assert!(store.remove_sync("CUSTOMERS").await.unwrap());
    assert!(store.remove_model("-rf").await.unwrap());
    assert!(store.remove_connection("-old").await.unwrap());
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

async fn a_paused_sync_stays_paused_when_saved_and_resumes_afresh(workspace: TestWorkspace) {
    let store = &workspace.store;
    let created = workspace.seed_customers_sync().await;
    assert_eq!((created.paused_at, created.resumed_at), (None, None));
    assert_eq!(store.set_sync_paused("nothing", true).await.unwrap(), None);

    let paused = store
        .set_sync_paused("customers", true)
        .await
        .unwrap()
        .unwrap();
    let paused_at = paused.paused_at.expect("paused");
    assert_eq!(paused.resumed_at, None);
    tokio::time::sleep(Duration::from_millis(5)).await;
    let again = store
        .set_sync_paused("customers", true)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        again.paused_at,
        Some(paused_at),
        "pausing again keeps the first time"
    );

    // Saving the sync (a config applied, a mapping edited) does not resume it.
    let saved = store
        .put_sync("customers", &customer_spec("signups", "stripe"))
        .await
        .unwrap();
    assert_eq!(saved.paused_at, Some(paused_at));
    assert_eq!(store.get_sync("customers").await.unwrap(), Some(saved));

    let resumed = store
        .set_sync_paused("customers", false)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resumed.paused_at, None);
    let resumed_at = resumed.resumed_at.expect("resumed");
    assert!(resumed_at > paused_at);
    let not_paused = store
        .set_sync_paused("customers", false)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        not_paused.resumed_at,
        Some(resumed_at),
        "resuming a running schedule changes nothing"
    );
    assert_eq!(store.list_syncs().await.unwrap(), vec![not_paused]);
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
    // The reopen (on SQLite the same database, which a process opens once) did not change the
    // key of the store already open: each open decrypts with the key it was given.
    assert_eq!(
        workspace
            .store
            .resolve_secret(record.secret.as_ref().unwrap())
            .unwrap()
            .expose(),
        clear
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
        .save_pending_creates("customers", CUSTOMER, &pending)
        .await
        .unwrap();
    let all_keys = keys(&["ada@example.com", "bob@example.com", "cy@example.com"]);
    let loaded = store
        .pending_creates("customers", CUSTOMER, &all_keys)
        .await
        .unwrap();
    assert_eq!(loaded.len(), 3);
    assert_eq!(loaded["bob@example.com"], pending[1]);

    // Saving again for a key replaces its entry.
    let replacement = PendingCreate {
        request_body: "email=cy%40example.com&name=Cy+2".to_string(),
        ..pending_create("cy@example.com", 33)
    };
    store
        .save_pending_creates("customers", CUSTOMER, std::slice::from_ref(&replacement))
        .await
        .unwrap();
    assert_eq!(
        store
            .pending_creates("customers", CUSTOMER, &all_keys)
            .await
            .unwrap()["cy@example.com"],
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
        exchanges: vec![],
    };
    store
        .commit_batch("customers", CUSTOMER, &run.id, &batch)
        .await
        .unwrap();

    assert!(store
        .pending_creates("customers", CUSTOMER, &all_keys)
        .await
        .unwrap()
        .is_empty());
    let snapshot = store
        .snapshot_entries("customers", CUSTOMER, &all_keys)
        .await
        .unwrap();
    assert_eq!(snapshot.len(), 2);
    assert_eq!(
        snapshot["ada@example.com"],
        snapshot_entry("cus_ada", "Ada")
    );
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&snapshot["bob@example.com"].payload).unwrap(),
        json!({"email":"bob@example.com","metadata":{"a":"1","z":"2"},"name":"Bob"})
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
        exchanges: vec![],
    };
    store
        .commit_batch("customers", CUSTOMER, &run.id, &later)
        .await
        .unwrap();
    let snapshot = store
        .snapshot_entries("customers", CUSTOMER, &all_keys)
        .await
        .unwrap();
    assert_eq!(snapshot.keys().collect::<Vec<_>>(), ["ada@example.com"]);
    assert_eq!(
        store.count_snapshot("customers", CUSTOMER).await.unwrap(),
        1
    );
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&snapshot["ada@example.com"].payload).unwrap()
            ["name"],
        json!("Ada Lovelace")
    );
    assert_eq!(store.count_run_records(&run.id, None).await.unwrap(), 4);
}

async fn a_failing_commit_batch_leaves_nothing_behind(workspace: TestWorkspace) {
    let store = &workspace.store;
    workspace.seed_customers_sync().await;
    let run = store.create_run("customers", false).await.unwrap();
    store
        .save_pending_creates(
            "customers",
            CUSTOMER,
            &[pending_create("ada@example.com", 1)],
        )
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
        exchanges: vec![exchange(7, 1, "2026-01-01T00:00:00Z")],
    };
    let error = store
        .commit_batch("customers", CUSTOMER, &run.id, &batch)
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            StateError::Sqlite { .. } | StateError::Postgres { .. }
        ),
        "{error}"
    );
    for table in ["run_records", "stripe_exchanges"] {
        assert_eq!(
            workspace
                .raw_count(&format!("SELECT COUNT(*) FROM {table}"))
                .await,
            0,
            "{table}"
        );
    }
    assert_eq!(
        store.count_snapshot("customers", CUSTOMER).await.unwrap(),
        0
    );
    assert_eq!(
        workspace.raw_count("SELECT COUNT(*) FROM snapshot").await,
        0
    );
    assert_eq!(
        store
            .pending_creates("customers", CUSTOMER, &keys(&["ada@example.com"]))
            .await
            .unwrap()
            .len(),
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
        error_text(
            store
                .commit_batch("customers", CUSTOMER, "run_unknown", &good)
                .await
        ),
        "run 'run_unknown' does not exist; see `ferry runs list`"
    );
    for table in ["run_records", "stripe_exchanges"] {
        assert_eq!(
            workspace
                .raw_count(&format!("SELECT COUNT(*) FROM {table}"))
                .await,
            0,
            "{table}"
        );
    }
    store
        .commit_batch("customers", CUSTOMER, &run.id, &good)
        .await
        .unwrap();
    for table in ["run_records", "stripe_exchanges"] {
        assert_eq!(
            workspace
                .raw_count(&format!("SELECT COUNT(*) FROM {table}"))
                .await,
            1,
            "{table}"
        );
    }
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
                record.destination_id = None;
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
            .commit_batch("customers", CUSTOMER, &run.id, &batch)
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
    // The page after the rejected row 8 (keyset: rows after it, not an offset).
    let second_page: Vec<u64> = store
        .list_run_records(&run.id, Some(Outcome::Rejected), 8, 3)
        .await
        .unwrap()
        .iter()
        .map(|r| r.row_number)
        .collect();
    assert_eq!(second_page, [11, 14, 17]);
    // The newest first, as a running run's page shows them.
    let latest: Vec<u64> = store
        .latest_run_records(&run.id, None, 3)
        .await
        .unwrap()
        .iter()
        .map(|r| r.row_number)
        .collect();
    assert_eq!(latest, [25, 24, 23]);
    let latest_rejected: Vec<u64> = store
        .latest_run_records(&run.id, Some(Outcome::Rejected), 2)
        .await
        .unwrap()
        .iter()
        .map(|r| r.row_number)
        .collect();
    assert_eq!(latest_rejected, [23, 20]);
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
    // A second open cannot take it either. (On SQLite it shares this process's database
    // connection, but each lock is a file opened on its own; other processes are the subject of
    // sync_lock_process.rs.)
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
            .save_pending_creates(sync, CUSTOMER, &[pending_create("cy@example.com", 3)])
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
        store
            .commit_batch(sync, CUSTOMER, &run.id, &batch)
            .await
            .unwrap();
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

async fn stripe_exchanges_are_kept_with_their_run_listed_by_row_and_pruned(
    workspace: TestWorkspace,
) {
    let store = &workspace.store;
    workspace.seed_customers_sync().await;
    let run = store.create_run("customers", false).await.unwrap();

    // Row 1's first attempt got no answer; its retry, a day later, did.
    let timed_out = StripeExchange {
        status: None,
        response_body: None,
        request_id: None,
        error: Some("no answer within 30 s".to_string()),
        duration_ms: 30_000,
        ..exchange(1, 1, "2026-01-01T00:00:00.123456Z")
    };
    let row_2 = StripeExchange {
        method: "GET".to_string(),
        path: "/v1/customers/search?query=email%3A%27bo%40example.com%27".to_string(),
        idempotency_key: None,
        request_body: None,
        ..exchange(2, 2, "2026-01-01T00:00:00.5Z")
    };
    let retried = StripeExchange {
        response_body: Some(r#"{"id":"cus_1","name":"Zoë Ørsted — 東京 🚀"}"#.to_string()),
        ..exchange(1, 3, "2026-01-02T00:00:00.654321Z")
    };
    // Row 1 was still in flight when the first batch (row 2's) was committed.
    let first = CommitBatch {
        records: vec![record_row(2, "bo@example.com", Outcome::Updated)],
        exchanges: vec![timed_out.clone(), row_2.clone()],
        ..CommitBatch::default()
    };
    store
        .commit_batch("customers", CUSTOMER, &run.id, &first)
        .await
        .unwrap();
    // The second batch repeats sequence 2 (a retried hand-over): ignored, not an error.
    let repeated = StripeExchange {
        status: Some(500),
        response_body: Some("a different answer".to_string()),
        ..row_2.clone()
    };
    let second = CommitBatch {
        records: vec![record_row(1, "ada@example.com", Outcome::Created)],
        exchanges: vec![retried.clone(), repeated],
        ..CommitBatch::default()
    };
    store
        .commit_batch("customers", CUSTOMER, &run.id, &second)
        .await
        .unwrap();

    assert_eq!(
        store.list_stripe_exchanges(&run.id, 1).await.unwrap(),
        [timed_out.clone(), retried.clone()]
    );
    assert_eq!(
        store.list_stripe_exchanges(&run.id, 2).await.unwrap(),
        vec![row_2.clone()]
    );
    assert_eq!(store.list_stripe_exchanges(&run.id, 3).await.unwrap(), []);
    assert_eq!(
        store.list_stripe_exchanges("run_unknown", 1).await.unwrap(),
        []
    );
    assert_eq!(
        workspace
            .raw_count("SELECT COUNT(*) FROM stripe_exchanges")
            .await,
        3
    );

    // Another sync's runs, each with its own sequence 1: sequences are unique per run only.
    store
        .put_sync("kept", &customer_spec("signups", "stripe"))
        .await
        .unwrap();
    let mut kept_runs = Vec::new();
    for sent_at in ["2026-02-01T00:00:00Z", "2026-02-02T00:00:00Z"] {
        let kept_run = store.create_run("kept", false).await.unwrap();
        let batch = CommitBatch {
            records: vec![record_row(1, "ada@example.com", Outcome::Created)],
            exchanges: vec![exchange(1, 1, sent_at)],
            ..CommitBatch::default()
        };
        store
            .commit_batch("kept", CUSTOMER, &kept_run.id, &batch)
            .await
            .unwrap();
        store
            .finish_run(
                &kept_run.id,
                RunStatus::Completed,
                &RunCounts::default(),
                None,
            )
            .await
            .unwrap();
        kept_runs.push(kept_run.id);
    }
    let (kept_old, kept_newest) = (&kept_runs[0], &kept_runs[1]);
    assert_eq!(
        store.list_stripe_exchanges(kept_old, 1).await.unwrap(),
        [exchange(1, 1, "2026-02-01T00:00:00Z")]
    );

    // Pruning by age removes only what was sent before the cut-off ("before" is strict, also
    // below a microsecond), of every run, and leaves the records.
    assert_eq!(
        store
            .prune_stripe_exchanges(at("2026-01-01T12:00:00Z"))
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        store.list_stripe_exchanges(&run.id, 1).await.unwrap(),
        vec![retried.clone()]
    );
    assert_eq!(store.list_stripe_exchanges(&run.id, 2).await.unwrap(), []);
    assert_eq!(store.count_run_records(&run.id, None).await.unwrap(), 2);
    let just_after_retry = retried.sent_at + chrono::TimeDelta::nanoseconds(500);
    assert_eq!(
        store
            .prune_stripe_exchanges(just_after_retry)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store.list_stripe_exchanges(&run.id, 1).await.unwrap(),
        vec![retried.clone()]
    );

    // Pruning runs takes their exchanges along; each sync's newest run keeps its own.
    workspace
        .raw_execute(&format!(
            "UPDATE runs SET finished_at = '2020-01-01T00:00:00.000000Z' WHERE id = '{kept_old}'"
        ))
        .await;
    let a_day_ago = chrono::Utc::now() - chrono::TimeDelta::days(1);
    assert_eq!(store.prune_runs(a_day_ago).await.unwrap(), 1);
    assert_eq!(store.list_stripe_exchanges(kept_old, 1).await.unwrap(), []);
    assert_eq!(
        store.list_stripe_exchanges(kept_newest, 1).await.unwrap(),
        [exchange(1, 1, "2026-02-02T00:00:00Z")]
    );
    assert_eq!(
        store.list_stripe_exchanges(&run.id, 1).await.unwrap(),
        [retried]
    );

    // Removing a sync takes its runs' exchanges along, and only theirs.
    assert!(store.remove_sync("customers").await.unwrap());
    assert_eq!(store.list_stripe_exchanges(&run.id, 1).await.unwrap(), []);
    assert_eq!(
        workspace
            .raw_count("SELECT COUNT(*) FROM stripe_exchanges")
            .await,
        1
    );
    assert_eq!(
        workspace
            .raw_count(&format!(
                "SELECT COUNT(*) FROM stripe_exchanges WHERE run_id = '{kept_newest}'"
            ))
            .await,
        1
    );
}

async fn open_existing_needs_an_initialized_workspace(workspace: TestWorkspace) {
    let (options, _dir) = workspace.fresh_options().await;
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
        LATEST_SCHEMA_VERSION
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
    let (mut options, _dir) = workspace.fresh_options().await;
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
    let rule = ferry_state::NAME_RULE;
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
    // A name differing only in case is the same name to a person: refused, naming the first.
    assert_eq!(
        error_text(store.create_api_token("Deploy-bot").await),
        "API token 'Deploy-bot' cannot be created: API token 'deploy-bot' already exists, and \
         names must differ by more than case; use 'deploy-bot' or choose another name"
    );
    assert_eq!(store.count_api_tokens().await.unwrap(), 1);
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
    // Take the workspace back to schema version 1, as an older ferry left it. The store stays
    // open meanwhile: on SQLite, initialising again then returns that store (a process opens a
    // workspace once), and must still bring its schema up to date.
    build_release_schema(&workspace.options, 1).await;
    workspace
        .raw_execute(
            "INSERT INTO connections (name, kind, config, secret_kind, secret_value, \
             secret_hint, created_at, updated_at) VALUES ('stripe', 'stripe', '{}', 'env_var', \
             'STRIPE_API_KEY', NULL, '2025-01-01T00:00:00.000000Z', \
             '2025-01-01T00:00:00.000000Z')",
        )
        .await;
    let store = StateStore::initialize(&workspace.options).await.unwrap();
    assert_eq!(
        workspace
            .raw_count("SELECT MAX(version) FROM schema_migrations")
            .await,
        LATEST_SCHEMA_VERSION
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

async fn a_version_2_workspace_is_upgraded_with_its_data(workspace: TestWorkspace) {
    // A workspace the previous release left, in a place this ferry never opened: schema
    // version 2, a sync whose spec is in that release's JSON, a snapshot entry, a pending create
    // and runs with their records, all in the old columns (`stripe_id`, no object).
    let (options, _dir) = workspace.fresh_options().await;
    build_release_schema(&options, 2).await;
    let old_spec = json!({
        "model": "signups",
        "destination": "stripe",
        "object": "customer",
        "behavior": "update-only",
        "key": {"column": "user_id", "field": "metadata.user_id"},
        "mappings": [
            {"column": "email", "field": "email"},
            {"column": "name", "field": "name"}
        ],
        "nulls": "clear",
        "schedule": "daily at 06:30"
    });
    let finished_run = run_id_at("2025-05-02T10:00:00Z");
    let crashed_run = run_id_at("2025-05-03T10:00:00Z");
    common::raw_execute(
        &options,
        &format!(
            "INSERT INTO connections (name, kind, config, secret_kind, secret_value, secret_hint, \
             created_at, updated_at) VALUES \
             ('stripe', 'stripe', '{{\"api_base\": \"http://127.0.0.1:12111\"}}', \
              'env_var', 'STRIPE_API_KEY', NULL, '2025-05-01T09:00:00.000000Z', \
              '2025-05-01T09:00:00.000000Z'), \
             ('warehouse', 'duckdb', '{{\"path\": \"warehouse.duckdb\"}}', NULL, NULL, NULL, \
              '2025-05-01T09:00:00.000000Z', '2025-05-01T09:00:00.000000Z');
             INSERT INTO models (name, connection, sql, created_at, updated_at) VALUES \
             ('signups', 'warehouse', 'SELECT user_id, email, name FROM signups', \
              '2025-05-01T09:00:00.000000Z', '2025-05-01T09:00:00.000000Z');
             INSERT INTO syncs (name, uid, model, destination, spec, created_at, updated_at) \
             VALUES \
             ('customers', '0123456789abcdef', 'signups', 'stripe', '{old_spec}', \
              '2025-05-01T09:00:00.000000Z', '2025-05-01T09:00:00.000000Z');
             INSERT INTO runs (id, sync, status, full_resync, started_at, finished_at, \
             rows_total, created_count, updated_count, unchanged_count, not_found_count, \
             rejected_count, failed_count, requests_count, error) VALUES \
             ('{finished_run}', 'customers', 'completed', FALSE, '2025-05-02T10:00:00.000000Z', \
              '2025-05-02T10:00:05.000000Z', 3, 1, 0, 2, 0, 0, 0, 1, NULL), \
             ('{crashed_run}', 'customers', 'running', TRUE, '2025-05-03T10:00:00.000000Z', NULL, \
              1, 0, 0, 1, 0, 0, 0, 0, NULL);
             INSERT INTO run_records (run_id, row_number, key, outcome, stripe_id, reason, \
             request_id, changes) VALUES ('{finished_run}', 1, '7', 'created', 'cus_ada', NULL, \
             'req_1', '{{\"name\": {{\"before\": null, \"after\": \"Ada\"}}}}');
             INSERT INTO snapshot (sync, key, stripe_id, payload_hash, payload, updated_at) VALUES \
             ('customers', '7', 'cus_ada', 'sha256:ada', \
              '{{\"name\": \"Ada\", \"email\": \"ada@example.com\"}}', \
              '2025-05-02T10:00:04.000000Z');
             INSERT INTO pending_creates (sync, key, idempotency_key, request_body, created_at) \
             VALUES ('customers', '8', 'ferry-0123456789abcdef-8', 'email=bob%40example.com', \
             '2025-05-03T10:00:01.000000Z');"
        ),
    )
    .await;

    let store = StateStore::initialize(&options).await.unwrap();
    assert_eq!(
        common::raw_count(&options, "SELECT MAX(version) FROM schema_migrations").await,
        LATEST_SCHEMA_VERSION
    );

    // The sync reads back as it was declared.
    let sync = store.get_sync("customers").await.unwrap().unwrap();
    let expected_spec = ferry_core::SyncSpec {
        invoice: None,
        model: "signups".to_string(),
        destination: "stripe".to_string(),
        object: ferry_core::ObjectKind::Customer,
        behavior: ferry_core::Behavior::UpdateOnly,
        key: ferry_core::KeyMapping {
            column: "user_id".to_string(),
            field: "metadata.user_id".to_string(),
        },
        mappings: vec![
            ferry_core::FieldMapping {
                column: "email".to_string(),
                field: "email".to_string(),
            },
            ferry_core::FieldMapping {
                column: "name".to_string(),
                field: "name".to_string(),
            },
        ],
        nulls: ferry_core::NullPolicy::Clear,
        schedule: Some(ferry_core::Schedule::parse("daily at 06:30").unwrap()),
        mirror: Default::default(),
        alerts: None,
    };
    assert_eq!(sync.spec, expected_spec);
    assert_eq!(sync.uid, "0123456789abcdef");
    // Saved again, it is stored in the same shape as before.
    store.put_sync("customers", &sync.spec).await.unwrap();
    let stored: serde_json::Value = serde_json::from_str(
        &common::raw_text(&options, "SELECT CAST(spec AS TEXT) FROM syncs")
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(stored, old_spec);
    assert_eq!(
        store.get_sync("customers").await.unwrap().unwrap().spec,
        expected_spec
    );

    // The snapshot entry and the pending create are the sync's Customers now.
    assert_eq!(
        store
            .snapshot_keys("customers", CUSTOMER, None, 10)
            .await
            .unwrap(),
        [SnapshotKey {
            key: "7".to_string(),
            destination_id: "cus_ada".to_string(),
            payload_hash: "sha256:ada".to_string(),
        }]
    );
    let upgraded = store
        .snapshot_entries("customers", CUSTOMER, &keys(&["7"]))
        .await
        .unwrap()
        .remove("7")
        .unwrap();
    // The payload is kept as JSON text from now on (PostgreSQL wrote its JSONB as text).
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&upgraded.payload).unwrap(),
        json!({"email": "ada@example.com", "name": "Ada"})
    );
    assert_eq!(
        SnapshotEntry {
            payload: String::new(),
            ..upgraded
        },
        SnapshotEntry {
            destination_id: "cus_ada".to_string(),
            payload_hash: "sha256:ada".to_string(),
            payload: String::new(),
            updated_at: at("2025-05-02T10:00:04Z"),
        }
    );
    assert_eq!(
        store
            .pending_creates("customers", CUSTOMER, &keys(&["8"]))
            .await
            .unwrap()["8"],
        PendingCreate {
            key: "8".to_string(),
            idempotency_key: "ferry-0123456789abcdef-8".to_string(),
            request_body: "email=bob%40example.com".to_string(),
            created_at: at("2025-05-03T10:00:01Z"),
        }
    );
    for table in ["snapshot", "pending_creates"] {
        assert_eq!(
            common::raw_texts(&options, &format!("SELECT object FROM {table}")).await,
            [Some("customer".to_string())],
            "{table}"
        );
    }
    if workspace.backend == Backend::Postgres {
        assert_eq!(
            common::raw_text(&options, SNAPSHOT_KEY_COLLATION)
                .await
                .as_deref(),
            Some("C")
        );
    }

    // The runs and their records (changes kept as JSON text from now on).
    let mut records = store
        .list_run_records(&finished_run, None, 0, 10)
        .await
        .unwrap();
    let changes = records[0].changes.take().unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&changes).unwrap(),
        json!({"name": {"after": "Ada", "before": null}})
    );
    assert_eq!(
        records,
        [RunRecordRow {
            row_number: 1,
            key: "7".to_string(),
            outcome: Outcome::Created,
            destination_id: Some("cus_ada".to_string()),
            reason: None,
            request_id: Some("req_1".to_string()),
            changes: None,
        }]
    );
    let finished = store.get_run(&finished_run).await.unwrap().unwrap();
    assert_eq!(
        finished.counts,
        RunCounts {
            rows: 3,
            created: 1,
            unchanged: 2,
            requests: 1,
            not_attempted: 0,
            ..RunCounts::default()
        }
    );
    assert_eq!(finished.status, RunStatus::Completed);
    assert_eq!(finished.finished_at, Some(at("2025-05-02T10:00:05Z")));
    assert_eq!(finished.last_seen_at, None);
    assert_eq!(
        common::raw_count(
            &options,
            "SELECT COUNT(*) FROM runs WHERE not_attempted_count = 0"
        )
        .await,
        2
    );
    // The run the old process left running was never seen alive: it ends when it started.
    assert_eq!(store.mark_interrupted_runs("customers").await.unwrap(), 1);
    let crashed = store.get_run(&crashed_run).await.unwrap().unwrap();
    assert_eq!(crashed.status, RunStatus::Interrupted);
    assert_eq!(crashed.finished_at, Some(at("2025-05-03T10:00:00Z")));

    // And the upgraded workspace takes the new engine's writes.
    let run = store.create_run("customers", false).await.unwrap();
    let batch = CommitBatch {
        records: vec![record_row(1, "8", Outcome::Created)],
        snapshot_upserts: vec![("8".to_string(), snapshot_entry("cus_bob", "Bob"))],
        ..CommitBatch::default()
    };
    store
        .commit_batch("customers", CUSTOMER, &run.id, &batch)
        .await
        .unwrap();
    assert_eq!(
        store.count_snapshot("customers", CUSTOMER).await.unwrap(),
        2
    );
    assert!(store
        .pending_creates("customers", CUSTOMER, &keys(&["8"]))
        .await
        .unwrap()
        .is_empty());
}

async fn snapshot_keys_come_in_byte_order_and_page_after_a_key(workspace: TestWorkspace) {
    let store = &workspace.store;
    workspace.seed_customers_sync().await;
    let run = store.create_run("customers", false).await.unwrap();
    // Keys that a language's collation orders otherwise: case, accents, digits, '_' and '-'.
    let byte_order = [
        "-dash", "9lives", "Bob", "Zoe", "_hidden", "ada-2", "ada10", "ada2", "ada_2", "bob",
        "emile", "zoe", "Émile", "émile",
    ];
    let mut sorted = byte_order.map(String::from).to_vec();
    sorted.sort(); // Rust orders strings by their bytes.
    assert_eq!(sorted, byte_order);
    // Committed in another order, in two batches.
    let scrambled = [
        "émile", "ada2", "Zoe", "_hidden", "bob", "-dash", "ada_2", "Émile", "9lives", "zoe",
        "ada-2", "Bob", "emile", "ada10",
    ];
    for part in scrambled.chunks(7) {
        let batch = CommitBatch {
            snapshot_upserts: part
                .iter()
                .map(|key| (key.to_string(), snapshot_entry(&format!("cus_{key}"), key)))
                .collect(),
            ..CommitBatch::default()
        };
        store
            .commit_batch("customers", CUSTOMER, &run.id, &batch)
            .await
            .unwrap();
    }

    let everything = store
        .snapshot_keys("customers", CUSTOMER, None, 100)
        .await
        .unwrap();
    assert_eq!(key_names(&everything), byte_order);
    assert_eq!(
        everything[2],
        SnapshotKey {
            key: "Bob".to_string(),
            destination_id: "cus_Bob".to_string(),
            payload_hash: "sha256:cus_Bob:Bob".to_string(),
        }
    );

    // Page by page, each after the last key of the page before.
    let mut pages: Vec<Vec<String>> = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store
            .snapshot_keys("customers", CUSTOMER, after.as_deref(), 5)
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.key.clone());
        pages.push(key_names(&page));
    }
    assert_eq!(
        pages,
        [&byte_order[..5], &byte_order[5..10], &byte_order[10..]]
    );
    // `after` need not be a key of the snapshot.
    for (after, expected) in [
        ("ada", &["ada-2", "ada10", "ada2"][..]),
        ("Z", &["Zoe", "_hidden", "ada-2"][..]),
        ("zz", &["Émile", "émile"][..]),
        ("émile", &[][..]),
    ] {
        let page = store
            .snapshot_keys("customers", CUSTOMER, Some(after), 3)
            .await
            .unwrap();
        assert_eq!(key_names(&page), expected, "after {after:?}");
    }
    assert_eq!(
        store.count_snapshot("customers", CUSTOMER).await.unwrap(),
        14
    );

    if workspace.backend == Backend::Postgres {
        // The key column compares bytes, whatever the database's own collation is ...
        assert_eq!(
            workspace.raw_text(SNAPSHOT_KEY_COLLATION).await.as_deref(),
            Some("C")
        );
        // ... and this database's collation (a language's, as in production) would order these
        // keys otherwise.
        let by_language: Vec<String> = workspace
            .raw_texts("SELECT key FROM snapshot ORDER BY key COLLATE \"default\"")
            .await
            .into_iter()
            .flatten()
            .collect();
        assert_eq!(by_language.len(), byte_order.len());
        assert_ne!(by_language, byte_order);
    }
}

async fn the_snapshot_is_kept_per_sync_and_object(workspace: TestWorkspace) {
    let store = &workspace.store;
    workspace.seed_customers_sync().await;
    store
        .put_sync("other", &customer_spec("signups", "stripe"))
        .await
        .unwrap();
    let run = store.create_run("customers", false).await.unwrap();
    let other_run = store.create_run("other", false).await.unwrap();
    let upserts = |entries: &[(&str, &str, &str)]| CommitBatch {
        snapshot_upserts: entries
            .iter()
            .map(|(key, id, name)| (key.to_string(), snapshot_entry(id, name)))
            .collect(),
        ..CommitBatch::default()
    };
    let (ada, bob) = ("ada@example.com", "bob@example.com");
    store
        .commit_batch(
            "customers",
            CUSTOMER,
            &run.id,
            &upserts(&[(ada, "cus_ada", "Ada"), (bob, "cus_bob", "Bob")]),
        )
        .await
        .unwrap();
    store
        .commit_batch(
            "customers",
            "invoice",
            &run.id,
            &upserts(&[(ada, "in_ada", "Ada")]),
        )
        .await
        .unwrap();
    store
        .commit_batch(
            "other",
            CUSTOMER,
            &other_run.id,
            &upserts(&[(ada, "cus_other_ada", "Ada")]),
        )
        .await
        .unwrap();

    for (sync, object, count) in [
        ("customers", CUSTOMER, 2),
        ("customers", "invoice", 1),
        ("other", CUSTOMER, 1),
        ("other", "invoice", 0),
    ] {
        assert_eq!(
            store.count_snapshot(sync, object).await.unwrap(),
            count,
            "{sync} {object}"
        );
    }
    assert_eq!(
        workspace.raw_count("SELECT COUNT(*) FROM snapshot").await,
        4
    );
    let ids = |entries: Vec<SnapshotKey>| {
        entries
            .into_iter()
            .map(|e| e.destination_id)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ids(store
            .snapshot_keys("customers", CUSTOMER, None, 10)
            .await
            .unwrap()),
        ["cus_ada", "cus_bob"]
    );
    assert_eq!(
        ids(store
            .snapshot_keys("customers", "invoice", None, 10)
            .await
            .unwrap()),
        ["in_ada"]
    );
    assert_eq!(
        ids(store
            .snapshot_keys("other", CUSTOMER, None, 10)
            .await
            .unwrap()),
        ["cus_other_ada"]
    );

    // Entries come only for the keys that have one, with their payloads.
    let entries = store
        .snapshot_entries(
            "customers",
            CUSTOMER,
            &keys(&[ada, "missing@example.com", bob, ada]),
        )
        .await
        .unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[ada], snapshot_entry("cus_ada", "Ada"));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&entries[bob].payload).unwrap(),
        json!({"email":"bob@example.com","metadata":{"a":"1","z":"2"},"name":"Bob"})
    );
    let invoices = store
        .snapshot_entries("customers", "invoice", &keys(&[ada, bob]))
        .await
        .unwrap();
    assert_eq!(invoices.len(), 1);
    assert_eq!(invoices[ada].destination_id, "in_ada");
    assert!(store
        .snapshot_entries("customers", CUSTOMER, &[])
        .await
        .unwrap()
        .is_empty());

    // Deleting a key in one object leaves the same key in the others.
    let delete_ada = CommitBatch {
        snapshot_deletes: keys(&[ada]),
        ..CommitBatch::default()
    };
    store
        .commit_batch("customers", "invoice", &run.id, &delete_ada)
        .await
        .unwrap();
    assert_eq!(
        store.count_snapshot("customers", "invoice").await.unwrap(),
        0
    );
    assert_eq!(
        store.count_snapshot("customers", CUSTOMER).await.unwrap(),
        2
    );
    assert_eq!(store.count_snapshot("other", CUSTOMER).await.unwrap(), 1);
    assert_eq!(
        workspace
            .raw_texts(
                "SELECT destination_id FROM snapshot WHERE key = 'ada@example.com' \
                 ORDER BY destination_id"
            )
            .await,
        [
            Some("cus_ada".to_string()),
            Some("cus_other_ada".to_string())
        ]
    );
}

async fn pending_creates_are_kept_per_object_and_settled_per_object(workspace: TestWorkspace) {
    let store = &workspace.store;
    workspace.seed_customers_sync().await;
    store
        .put_sync("other", &customer_spec("signups", "stripe"))
        .await
        .unwrap();
    let (ada, bob) = ("ada@example.com", "bob@example.com");
    store
        .save_pending_creates(
            "customers",
            CUSTOMER,
            &[pending_create(ada, 1), pending_create(bob, 2)],
        )
        .await
        .unwrap();
    store
        .save_pending_creates("customers", "invoice", &[pending_create(ada, 11)])
        .await
        .unwrap();
    store
        .save_pending_creates("other", CUSTOMER, &[pending_create(ada, 21)])
        .await
        .unwrap();
    assert_eq!(
        workspace
            .raw_count("SELECT COUNT(*) FROM pending_creates")
            .await,
        4
    );

    let customers = store
        .pending_creates("customers", CUSTOMER, &keys(&[ada, bob, "cy@example.com"]))
        .await
        .unwrap();
    assert_eq!(
        customers,
        HashMap::from([
            (ada.to_string(), pending_create(ada, 1)),
            (bob.to_string(), pending_create(bob, 2)),
        ])
    );
    assert_eq!(
        store
            .pending_creates("customers", "invoice", &keys(&[ada, bob]))
            .await
            .unwrap(),
        HashMap::from([(ada.to_string(), pending_create(ada, 11))])
    );
    assert_eq!(
        store
            .pending_creates("other", CUSTOMER, &keys(&[ada, bob]))
            .await
            .unwrap(),
        HashMap::from([(ada.to_string(), pending_create(ada, 21))])
    );
    assert!(store
        .pending_creates("customers", CUSTOMER, &[])
        .await
        .unwrap()
        .is_empty());

    // Saving a key again replaces it in its object only; a list naming a key twice keeps the
    // later one.
    store
        .save_pending_creates(
            "customers",
            CUSTOMER,
            &[pending_create(bob, 3), pending_create(bob, 4)],
        )
        .await
        .unwrap();
    assert_eq!(
        store
            .pending_creates("customers", CUSTOMER, &keys(&[bob]))
            .await
            .unwrap()[bob],
        pending_create(bob, 4)
    );
    assert_eq!(
        workspace
            .raw_count("SELECT COUNT(*) FROM pending_creates")
            .await,
        4
    );

    // A batch settles the creates of its own object: a confirmed write and a rejected create.
    let run = store.create_run("customers", false).await.unwrap();
    let batch = CommitBatch {
        snapshot_upserts: vec![(ada.to_string(), snapshot_entry("cus_ada", "Ada"))],
        pending_deletes: keys(&[bob]),
        ..CommitBatch::default()
    };
    store
        .commit_batch("customers", CUSTOMER, &run.id, &batch)
        .await
        .unwrap();
    assert!(store
        .pending_creates("customers", CUSTOMER, &keys(&[ada, bob]))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        workspace
            .raw_texts(
                "SELECT sync || ' ' || object || ' ' || key || ' ' || idempotency_key \
                 FROM pending_creates ORDER BY sync, object"
            )
            .await,
        [
            Some("customers invoice ada@example.com ferry-0123456789abcdef-11".to_string()),
            Some("other customer ada@example.com ferry-0123456789abcdef-21".to_string()),
        ]
    );
    let settle_invoice = CommitBatch {
        pending_deletes: keys(&[ada]),
        ..CommitBatch::default()
    };
    store
        .commit_batch("customers", "invoice", &run.id, &settle_invoice)
        .await
        .unwrap();
    assert_eq!(
        workspace
            .raw_texts("SELECT sync || ' ' || object FROM pending_creates")
            .await,
        [Some("other customer".to_string())]
    );
}

async fn an_interrupted_run_ends_when_it_was_last_seen_alive(workspace: TestWorkspace) {
    let store = &workspace.store;
    workspace.seed_customers_sync().await;
    let run = store.create_run("customers", false).await.unwrap();
    assert_eq!(run.last_seen_at, Some(run.started_at));
    assert_eq!(store.get_run(&run.id).await.unwrap(), Some(run.clone()));

    tokio::time::sleep(Duration::from_millis(5)).await;
    store.touch_run(&run.id).await.unwrap();
    let seen = store
        .get_run(&run.id)
        .await
        .unwrap()
        .unwrap()
        .last_seen_at
        .unwrap();
    assert!(seen > run.started_at);
    assert!(seen <= chrono::Utc::now());

    // A run of the previous release, which never said it was alive.
    let never_seen = store.create_run("customers", false).await.unwrap();
    workspace
        .raw_execute(&format!(
            "UPDATE runs SET last_seen_at = NULL WHERE id = '{}'",
            never_seen.id
        ))
        .await;

    // The process dies; some time later the next run finds them.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let marking_at = chrono::Utc::now();
    assert_eq!(store.mark_interrupted_runs("customers").await.unwrap(), 2);
    let interrupted = store.get_run(&run.id).await.unwrap().unwrap();
    assert_eq!(interrupted.status, RunStatus::Interrupted);
    assert_eq!(interrupted.finished_at, Some(seen));
    assert!(seen < marking_at);
    assert_eq!(interrupted.last_seen_at, Some(seen));
    let never_seen = store.get_run(&never_seen.id).await.unwrap().unwrap();
    assert_eq!(never_seen.status, RunStatus::Interrupted);
    assert_eq!(never_seen.finished_at, Some(never_seen.started_at));

    assert_eq!(
        error_text(store.touch_run("run_missing").await),
        "run 'run_missing' does not exist; see `ferry runs list`"
    );
}

async fn progress_refreshes_last_seen_at_and_keeps_not_attempted(workspace: TestWorkspace) {
    let store = &workspace.store;
    workspace.seed_customers_sync().await;
    let run = store.create_run("customers", false).await.unwrap();
    let last_seen = |run: &ferry_state::RunRecord| run.last_seen_at.unwrap();

    tokio::time::sleep(Duration::from_millis(5)).await;
    let progress = RunCounts {
        rows: 10,
        created: 3,
        not_attempted: 7,
        requests: 3,
        ..RunCounts::default()
    };
    store.update_run_counts(&run.id, &progress).await.unwrap();
    let after_progress = store.get_run(&run.id).await.unwrap().unwrap();
    assert_eq!(after_progress.counts, progress);
    assert!(last_seen(&after_progress) > last_seen(&run));
    assert_eq!(
        workspace
            .raw_count("SELECT not_attempted_count FROM runs")
            .await,
        7
    );

    tokio::time::sleep(Duration::from_millis(5)).await;
    let committed = RunCounts {
        created: 5,
        not_attempted: 5,
        requests: 5,
        ..progress
    };
    let batch = CommitBatch {
        records: vec![record_row(1, "ada@example.com", Outcome::Created)],
        counts: committed,
        ..CommitBatch::default()
    };
    store
        .commit_batch("customers", CUSTOMER, &run.id, &batch)
        .await
        .unwrap();
    let after_commit = store.get_run(&run.id).await.unwrap().unwrap();
    assert_eq!(after_commit.counts, committed);
    assert!(last_seen(&after_commit) > last_seen(&after_progress));

    tokio::time::sleep(Duration::from_millis(5)).await;
    // Mirror's retired records are kept apart from the rows.
    let stopped = RunCounts {
        not_attempted: 4,
        created: 6,
        retired: 2,
        ..committed
    };
    store
        .finish_run(&run.id, RunStatus::Cancelled, &stopped, None)
        .await
        .unwrap();
    let finished = store.get_run(&run.id).await.unwrap().unwrap();
    assert_eq!(finished.counts, stopped);
    assert_eq!(finished.counts.outcomes_total(), 10);
    assert!(last_seen(&finished) > last_seen(&after_commit));
    assert!(last_seen(&finished) >= finished.finished_at.unwrap());
    assert_eq!(
        store.list_runs(Some("customers"), 1).await.unwrap(),
        [finished]
    );
    assert_eq!(
        workspace
            .raw_count("SELECT not_attempted_count FROM runs")
            .await,
        4
    );
}

async fn run_records_page_by_row_number_through_every_page(workspace: TestWorkspace) {
    let store = &workspace.store;
    workspace.seed_customers_sync().await;
    let run = store.create_run("customers", false).await.unwrap();
    let outcomes = [
        Outcome::Created,
        Outcome::Updated,
        Outcome::Rejected,
        Outcome::Failed,
        Outcome::NotFound,
    ];
    // Even row numbers only: the unchanged rows between them have no record.
    let records: Vec<RunRecordRow> = (1..=250u64)
        .map(|i| {
            record_row(
                2 * i,
                &format!("user{i}@example.com"),
                outcomes[(i % 5) as usize],
            )
        })
        .collect();
    for part in records.chunks(90).rev() {
        let batch = CommitBatch {
            records: part.to_vec(),
            ..CommitBatch::default()
        };
        store
            .commit_batch("customers", CUSTOMER, &run.id, &batch)
            .await
            .unwrap();
    }
    assert_eq!(
        workspace
            .raw_count("SELECT COUNT(*) FROM run_records")
            .await,
        250
    );

    let pages = walk_run_records(store, &run.id, None, 100).await;
    assert_eq!(
        pages.iter().map(Vec::len).collect::<Vec<_>>(),
        [100, 100, 50]
    );
    assert_eq!(pages.concat(), records);
    assert_eq!(pages[1][0].row_number, 202, "the page after row 200");

    let failed_pages = walk_run_records(store, &run.id, Some(Outcome::Failed), 20).await;
    assert_eq!(
        failed_pages.iter().map(Vec::len).collect::<Vec<_>>(),
        [20, 20, 10]
    );
    let failed: Vec<RunRecordRow> = records
        .iter()
        .filter(|r| r.outcome == Outcome::Failed)
        .cloned()
        .collect();
    assert_eq!(failed_pages.concat(), failed);
    assert_eq!(failed[0].row_number, 6);
    // After a row that is not of the outcome: the next ones that are.
    let page: Vec<u64> = store
        .list_run_records(&run.id, Some(Outcome::Failed), 7, 2)
        .await
        .unwrap()
        .iter()
        .map(|r| r.row_number)
        .collect();
    assert_eq!(page, [16, 26]);
    assert_eq!(
        store
            .count_run_records(&run.id, Some(Outcome::Failed))
            .await
            .unwrap(),
        50
    );
    assert!(store
        .list_run_records(&run.id, None, 500, 100)
        .await
        .unwrap()
        .is_empty());
}

async fn pruning_keeps_running_runs_and_each_syncs_newest(workspace: TestWorkspace) {
    let store = &workspace.store;
    workspace.seed_customers_sync().await;
    for sync in ["other", "lonely"] {
        store
            .put_sync(sync, &customer_spec("signups", "stripe"))
            .await
            .unwrap();
    }
    let mut runs = HashMap::new();
    for (name, sync, finished) in [
        ("old", "customers", true),
        ("running", "customers", false),
        ("recent", "customers", true),
        ("other_old", "other", true),
        ("other_newest", "other", true),
        ("lonely", "lonely", true),
    ] {
        let run = store.create_run(sync, false).await.unwrap();
        let batch = CommitBatch {
            records: vec![record_row(1, "ada@example.com", Outcome::Created)],
            ..CommitBatch::default()
        };
        store
            .commit_batch(sync, CUSTOMER, &run.id, &batch)
            .await
            .unwrap();
        if finished {
            store
                .finish_run(&run.id, RunStatus::Completed, &RunCounts::default(), None)
                .await
                .unwrap();
        }
        runs.insert(name, run.id);
    }
    // All but "recent" (and "running") finished long ago.
    workspace
        .raw_execute(&format!(
            "UPDATE runs SET finished_at = '2020-01-01T00:00:00.000000Z' \
             WHERE id IN ('{}', '{}', '{}', '{}')",
            runs["old"], runs["other_old"], runs["other_newest"], runs["lonely"]
        ))
        .await;

    let a_day_ago = chrono::Utc::now() - chrono::TimeDelta::days(1);
    assert_eq!(store.prune_runs(a_day_ago).await.unwrap(), 2);
    let mut kept: Vec<String> = store
        .list_runs(None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    kept.sort();
    let mut expected: Vec<String> = ["running", "recent", "other_newest", "lonely"]
        .iter()
        .map(|name| runs[name].clone())
        .collect();
    expected.sort();
    assert_eq!(kept, expected);
    // Their records went with them; the others' stay.
    for (name, count) in [
        ("old", 0),
        ("other_old", 0),
        ("running", 1),
        ("recent", 1),
        ("other_newest", 1),
        ("lonely", 1),
    ] {
        assert_eq!(
            workspace
                .raw_count(&format!(
                    "SELECT COUNT(*) FROM run_records WHERE run_id = '{}'",
                    runs[name]
                ))
                .await,
            count,
            "{name}"
        );
    }
    assert_eq!(workspace.raw_count("SELECT COUNT(*) FROM runs").await, 4);
    assert_eq!(store.prune_runs(a_day_ago).await.unwrap(), 0);

    // "Before" is strict: a run finished at the cutoff stays.
    let newer = store.create_run("customers", false).await.unwrap();
    store
        .finish_run(&newer.id, RunStatus::Completed, &RunCounts::default(), None)
        .await
        .unwrap();
    workspace
        .raw_execute(&format!(
            "UPDATE runs SET finished_at = '2024-01-01T00:00:00.000000Z' WHERE id = '{}'",
            runs["recent"]
        ))
        .await;
    assert_eq!(
        store.prune_runs(at("2024-01-01T00:00:00Z")).await.unwrap(),
        0
    );
    assert_eq!(
        store
            .prune_runs(at("2024-01-01T00:00:00.000001Z"))
            .await
            .unwrap(),
        1
    );
    assert_eq!(store.get_run(&runs["recent"]).await.unwrap(), None);
    assert!(store.get_run(&newer.id).await.unwrap().is_some());
}

async fn the_key_index_replaces_a_records_keys_and_removes_records(workspace: TestWorkspace) {
    let store = &workspace.store;
    let scope = "stripe https://api.stripe.com acct_1 customer";
    let (ada, bob) = ("ada@example.com", "bob@example.com");
    assert_eq!(store.index_state(scope).await.unwrap(), None);
    assert!(lookup(store, scope, "email", &[ada]).await.is_empty());

    store
        .index_update(
            scope,
            &[
                indexed("cus_A", &[("email", ada), ("metadata.user_id", "1")]),
                indexed("cus_B", &[("email", bob)]),
            ],
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        lookup(store, scope, "email", &[ada, bob]).await,
        ids_by_value(&[(ada, &["cus_A"]), (bob, &["cus_B"])])
    );
    assert_eq!(
        lookup(store, scope, "metadata.user_id", &["1"]).await,
        ids_by_value(&[("1", &["cus_A"])])
    );
    // Values are looked up under their key name only.
    assert!(lookup(store, scope, "email", &["1"]).await.is_empty());

    // A changed email moves: an update replaces all of a record's keys.
    let moved = "ada.lovelace@example.com";
    store
        .index_update(scope, &[indexed("cus_A", &[("email", moved)])], &[])
        .await
        .unwrap();
    assert_eq!(
        lookup(store, scope, "email", &[ada, moved]).await,
        ids_by_value(&[(moved, &["cus_A"])])
    );
    assert!(lookup(store, scope, "metadata.user_id", &["1"])
        .await
        .is_empty());
    assert_eq!(
        workspace
            .raw_texts(
                "SELECT key_name || '=' || key_value FROM key_index \
                 WHERE destination_id = 'cus_A'"
            )
            .await,
        [Some(format!("email={moved}"))]
    );

    // A record left with no key goes; so do the records removed.
    store
        .index_update(scope, &[indexed("cus_B", &[])], &[])
        .await
        .unwrap();
    assert!(lookup(store, scope, "email", &[bob]).await.is_empty());
    store
        .index_update(
            scope,
            &[indexed("cus_C", &[("email", "cy@example.com")])],
            &keys(&["cus_A", "cus_unknown"]),
        )
        .await
        .unwrap();
    assert!(lookup(store, scope, "email", &[moved]).await.is_empty());
    assert_eq!(
        workspace
            .raw_texts("SELECT destination_id FROM key_index")
            .await,
        [Some("cus_C".to_string())]
    );

    // A record given twice in one update keeps its later keys.
    store
        .index_update(
            scope,
            &[
                indexed("cus_D", &[("email", "d1@example.com")]),
                indexed("cus_D", &[("email", "d2@example.com")]),
            ],
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        lookup(store, scope, "email", &["d1@example.com", "d2@example.com"]).await,
        ids_by_value(&[("d2@example.com", &["cus_D"])])
    );
    // An empty update changes nothing.
    store.index_update(scope, &[], &[]).await.unwrap();
    assert_eq!(
        workspace.raw_count("SELECT COUNT(*) FROM key_index").await,
        2
    );
}

async fn a_key_value_shared_by_several_records_finds_them_all(workspace: TestWorkspace) {
    let store = &workspace.store;
    let scope = "stripe https://api.stripe.com acct_1 customer";
    let shared = "shared@example.com";
    store
        .index_update(
            scope,
            &[
                indexed("cus_abc", &[("email", shared)]),
                indexed("cus_Zed", &[("email", shared)]),
                indexed("cus_123", &[("email", shared)]),
                indexed("cus_solo", &[("email", "solo@example.com")]),
            ],
            &[],
        )
        .await
        .unwrap();
    // The ids of one value come in byte order, as everywhere else.
    assert_eq!(
        lookup(
            store,
            scope,
            "email",
            &[shared, "solo@example.com", "nobody@example.com", shared]
        )
        .await,
        ids_by_value(&[
            (shared, &["cus_123", "cus_Zed", "cus_abc"]),
            ("solo@example.com", &["cus_solo"]),
        ])
    );

    // Many values at once.
    let many: Vec<IndexedRecord> = (0..300)
        .map(|i| {
            indexed(
                &format!("cus_{i:04}"),
                &[("email", format!("user{i}@example.com").as_str())],
            )
        })
        .collect();
    store.index_update(scope, &many, &[]).await.unwrap();
    let values: Vec<String> = (0..300).map(|i| format!("user{i}@example.com")).collect();
    let found = store.index_lookup(scope, "email", &values).await.unwrap();
    assert_eq!(found.len(), 300);
    assert_eq!(found["user42@example.com"], ["cus_0042"]);
}

async fn key_index_scopes_are_kept_apart(workspace: TestWorkspace) {
    let store = &workspace.store;
    let one = "stripe https://api.stripe.com acct_1 customer";
    let two = "stripe https://api.stripe.com acct_2 customer";
    let ada = "ada@example.com";
    store
        .index_update(one, &[indexed("cus_A", &[("email", ada)])], &[])
        .await
        .unwrap();
    store
        .index_update(
            two,
            &[
                indexed("cus_A", &[("email", "other@example.com")]),
                indexed("cus_B", &[("email", ada)]),
            ],
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        lookup(store, one, "email", &[ada]).await,
        ids_by_value(&[(ada, &["cus_A"])])
    );
    assert_eq!(
        lookup(store, two, "email", &[ada]).await,
        ids_by_value(&[(ada, &["cus_B"])])
    );
    // Changing or removing a record in one scope leaves the same id in the other alone.
    store
        .index_update(one, &[], &keys(&["cus_A"]))
        .await
        .unwrap();
    assert!(lookup(store, one, "email", &[ada]).await.is_empty());
    assert_eq!(
        lookup(store, two, "email", &["other@example.com"]).await,
        ids_by_value(&[("other@example.com", &["cus_A"])])
    );
    assert_eq!(
        workspace.raw_count("SELECT COUNT(*) FROM key_index").await,
        2
    );

    // Clearing one scope leaves the other's index and state.
    store
        .index_update(one, &[indexed("cus_C", &[("email", ada)])], &[])
        .await
        .unwrap();
    store
        .index_save_state(one, &index_state(100, 200))
        .await
        .unwrap();
    store
        .index_save_state(two, &index_state(300, 400))
        .await
        .unwrap();
    store.index_clear(one).await.unwrap();
    assert!(lookup(store, one, "email", &[ada]).await.is_empty());
    assert_eq!(store.index_state(one).await.unwrap(), None);
    assert_eq!(
        lookup(store, two, "email", &[ada]).await,
        ids_by_value(&[(ada, &["cus_B"])])
    );
    assert_eq!(
        store.index_state(two).await.unwrap(),
        Some(index_state(300, 400))
    );
    assert_eq!(
        workspace
            .raw_texts("SELECT DISTINCT scope FROM key_index")
            .await,
        [Some(two.to_string())]
    );
}

async fn key_index_state_is_saved_replaced_and_cleared(workspace: TestWorkspace) {
    let store = &workspace.store;
    let scope = "stripe https://api.stripe.com acct_1 customer";
    assert_eq!(store.index_state(scope).await.unwrap(), None);
    let built = index_state(1_700_000_000, 1_700_000_100);
    store.index_save_state(scope, &built).await.unwrap();
    assert_eq!(store.index_state(scope).await.unwrap(), Some(built.clone()));

    // Saving again replaces it: a refresh moves the event mark on.
    let refreshed = IndexState {
        events_through: 1_700_000_900,
        refreshed_at: at("2025-06-01T12:15:00.000001Z"),
        ..built.clone()
    };
    store.index_save_state(scope, &refreshed).await.unwrap();
    assert_eq!(store.index_state(scope).await.unwrap(), Some(refreshed));
    assert_eq!(
        workspace
            .raw_count("SELECT COUNT(*) FROM key_index_state")
            .await,
        1
    );
    assert_eq!(
        workspace
            .raw_count("SELECT events_through FROM key_index_state")
            .await,
        1_700_000_900
    );
    assert_eq!(
        store
            .index_state("stripe https://api.stripe.com acct_2 customer")
            .await
            .unwrap(),
        None
    );

    store
        .index_update(
            scope,
            &[indexed("cus_A", &[("email", "ada@example.com")])],
            &[],
        )
        .await
        .unwrap();
    store.index_clear(scope).await.unwrap();
    assert_eq!(store.index_state(scope).await.unwrap(), None);
    assert_eq!(
        workspace.raw_count("SELECT COUNT(*) FROM key_index").await,
        0
    );
    assert_eq!(
        workspace
            .raw_count("SELECT COUNT(*) FROM key_index_state")
            .await,
        0
    );
}

async fn a_syncs_alert_settings_round_trip(workspace: TestWorkspace) {
    let store = &workspace.store;
    let created = workspace.seed_customers_sync().await;
    assert_eq!(created.spec.alerts, None);
    assert_eq!(
        workspace
            .raw_count("SELECT COUNT(*) FROM syncs WHERE CAST(spec AS TEXT) LIKE '%alerts%'")
            .await,
        0,
        "no alert settings: none stored, as before they existed"
    );

    let mut spec = customer_spec("signups", "stripe");
    spec.alerts = Some(AlertSettings {
        channels: vec!["ops-webhook".to_string(), "oncall-slack".to_string()],
        on_failure: false,
        rejected_over_percent: Some(0),
        slower_than_minutes: Some(30),
        row_drop_over_percent: None,
    });
    let saved = store.put_sync("customers", &spec).await.unwrap();
    assert_eq!(saved.spec, spec);
    assert_eq!(
        store.get_sync("customers").await.unwrap().unwrap().spec,
        spec
    );

    // Settings stored without the fields added later read with their defaults.
    workspace
        .raw_execute(
            "UPDATE syncs SET spec = '{\"model\": \"signups\", \"destination\": \"stripe\", \
             \"object\": \"customer\", \"behavior\": \"update-or-create\", \
             \"key\": {\"column\": \"email\", \"field\": \"email\"}, \"alerts\": {}}'",
        )
        .await;
    let read = store.get_sync("customers").await.unwrap().unwrap();
    assert_eq!(read.spec.alerts, Some(AlertSettings::default()));
}

async fn alerts_are_raised_once_updated_and_resolved(workspace: TestWorkspace) {
    let store = &workspace.store;
    workspace.seed_customers_sync().await;
    store
        .put_sync("another", &customer_spec("signups", "stripe"))
        .await
        .unwrap();
    assert_eq!(store.raised_alerts("customers").await.unwrap(), []);
    assert_eq!(store.list_raised_alerts().await.unwrap(), []);

    let raised = |sync: &str, condition, message: &str, raised_at| RaisedAlert {
        sync: sync.to_string(),
        condition,
        message: message.to_string(),
        raised_at: at(raised_at),
    };
    store
        .raise_alert(
            "customers",
            AlertCondition::SlowRun,
            "the run took 41 minutes",
            at("2026-01-01T10:00:00.123456Z"),
        )
        .await
        .unwrap();
    store
        .raise_alert(
            "customers",
            AlertCondition::RunFailed,
            "the run failed: 401",
            at("2026-01-01T10:00:00Z"),
        )
        .await
        .unwrap();
    store
        .raise_alert(
            "another",
            AlertCondition::RejectedRows,
            "3% of rows were rejected",
            at("2026-01-01T09:00:00Z"),
        )
        .await
        .unwrap();
    // Raised again while it lasts: the new message, the first time.
    store
        .raise_alert(
            "customers",
            AlertCondition::SlowRun,
            "the run took 55 minutes",
            at("2026-01-01T11:00:00Z"),
        )
        .await
        .unwrap();

    assert_eq!(
        store.raised_alerts("customers").await.unwrap(),
        [
            raised(
                "customers",
                AlertCondition::RunFailed,
                "the run failed: 401",
                "2026-01-01T10:00:00Z"
            ),
            raised(
                "customers",
                AlertCondition::SlowRun,
                "the run took 55 minutes",
                "2026-01-01T10:00:00.123456Z"
            ),
        ]
    );
    let listed: Vec<(String, AlertCondition)> = store
        .list_raised_alerts()
        .await
        .unwrap()
        .into_iter()
        .map(|alert| (alert.sync, alert.condition))
        .collect();
    assert_eq!(
        listed,
        [
            ("another".to_string(), AlertCondition::RejectedRows),
            ("customers".to_string(), AlertCondition::RunFailed),
            ("customers".to_string(), AlertCondition::SlowRun),
        ]
    );

    assert!(store
        .resolve_alert("customers", AlertCondition::RunFailed)
        .await
        .unwrap());
    assert!(!store
        .resolve_alert("customers", AlertCondition::RunFailed)
        .await
        .unwrap());
    assert!(!store
        .resolve_alert("customers", AlertCondition::RowCountDrop)
        .await
        .unwrap());
    let left: Vec<AlertCondition> = store
        .raised_alerts("customers")
        .await
        .unwrap()
        .into_iter()
        .map(|alert| alert.condition)
        .collect();
    assert_eq!(left, [AlertCondition::SlowRun]);
    assert_eq!(store.raised_alerts("another").await.unwrap().len(), 1);

    assert_eq!(
        error_text(
            store
                .raise_alert(
                    "missing",
                    AlertCondition::RunFailed,
                    "failed",
                    at("2026-01-01T10:00:00Z")
                )
                .await
        ),
        "sync 'missing' does not exist; see `ferry sync list`"
    );
}

async fn removing_a_sync_removes_its_raised_alerts(workspace: TestWorkspace) {
    let store = &workspace.store;
    workspace.seed_customers_sync().await;
    store
        .put_sync("kept", &customer_spec("signups", "stripe"))
        .await
        .unwrap();
    for sync in ["customers", "kept"] {
        store
            .raise_alert(
                sync,
                AlertCondition::RunFailed,
                "failed",
                at("2026-01-01T10:00:00Z"),
            )
            .await
            .unwrap();
    }
    store
        .enqueue_deliveries(
            &[new_delivery(
                "evt_1",
                "sync.alert.raised",
                "customers",
                "ops",
            )],
            at("2026-01-01T10:00:00Z"),
        )
        .await
        .unwrap();

    assert!(store.remove_sync("customers").await.unwrap());
    assert_eq!(
        workspace
            .raw_count("SELECT COUNT(*) FROM raised_alerts WHERE sync_name = 'customers'")
            .await,
        0
    );
    assert_eq!(store.raised_alerts("kept").await.unwrap().len(), 1);
    // What was sent about it stays, as history.
    assert_eq!(
        store
            .list_deliveries(Some("customers"), 10)
            .await
            .unwrap()
            .len(),
        1
    );
    // A sync made again under the name starts without alerts.
    store
        .put_sync("customers", &customer_spec("signups", "stripe"))
        .await
        .unwrap();
    assert_eq!(store.raised_alerts("customers").await.unwrap(), []);
}

async fn a_delivery_is_due_at_its_time_and_keeps_each_attempt(workspace: TestWorkspace) {
    let store = &workspace.store;
    let queued = store
        .enqueue_deliveries(
            &[
                new_delivery("evt_1", "sync.failed", "customers", "ops-webhook"),
                new_delivery("evt_1", "sync.failed", "customers", "oncall-slack"),
            ],
            at("2026-01-01T10:00:00.000001Z"),
        )
        .await
        .unwrap();
    assert_eq!(queued.len(), 2);
    let first = &queued[0];
    assert!(
        first.id.starts_with("dlv_") && first.id.len() == 24,
        "{}",
        first.id
    );
    assert!(queued[0].id < queued[1].id);
    assert_eq!(
        (
            first.status,
            first.attempts,
            first.created_at,
            first.next_attempt_at
        ),
        (
            DeliveryStatus::Pending,
            0,
            at("2026-01-01T10:00:00.000001Z"),
            Some(at("2026-01-01T10:00:00.000001Z"))
        )
    );
    assert_eq!(
        (&first.channel, &first.payload, &first.run_id),
        (
            &"ops-webhook".to_string(),
            &r#"{"type":"sync.failed","id":"evt_1"}"#.to_string(),
            &Some("run_1".to_string())
        )
    );
    assert_eq!(
        store.get_delivery(&first.id).await.unwrap().as_ref(),
        Some(first)
    );
    assert_eq!(store.get_delivery("dlv_unknown").await.unwrap(), None);

    // Not due before its time; due from then on, oldest first, up to the limit.
    let due_ids =
        |due: Vec<DeliveryRecord>| -> Vec<String> { due.into_iter().map(|d| d.id).collect() };
    assert_eq!(
        store
            .due_deliveries(at("2026-01-01T10:00:00Z"), 10)
            .await
            .unwrap(),
        []
    );
    assert_eq!(
        due_ids(
            store
                .due_deliveries(at("2026-01-01T10:00:00.000001Z"), 10)
                .await
                .unwrap()
        ),
        [queued[0].id.clone(), queued[1].id.clone()]
    );
    assert_eq!(
        due_ids(
            store
                .due_deliveries(at("2026-01-01T12:00:00Z"), 1)
                .await
                .unwrap()
        ),
        [queued[0].id.clone()]
    );

    // A failed attempt that may work later: tried again at its next time, not before.
    store
        .record_delivery_attempt(
            &first.id,
            &DeliveryAttempt {
                at: at("2026-01-01T10:00:01Z"),
                status: DeliveryStatus::Pending,
                next_attempt_at: Some(at("2026-01-01T10:01:00Z")),
                answer_status: Some(503),
                answer: "Service Unavailable".to_string(),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        due_ids(
            store
                .due_deliveries(at("2026-01-01T10:00:59Z"), 10)
                .await
                .unwrap()
        ),
        [queued[1].id.clone()]
    );
    assert_eq!(
        due_ids(
            store
                .due_deliveries(at("2026-01-01T10:01:00Z"), 10)
                .await
                .unwrap()
        ),
        [queued[0].id.clone(), queued[1].id.clone()]
    );

    // A claim takes what is due and hides it from the next claim until its lease ends.
    let claimed = store
        .claim_due_deliveries(at("2026-01-01T10:01:00Z"), 10, at("2026-01-01T10:11:00Z"))
        .await
        .unwrap();
    assert_eq!(
        due_ids(claimed),
        [queued[0].id.clone(), queued[1].id.clone()]
    );
    assert_eq!(
        store
            .claim_due_deliveries(at("2026-01-01T10:05:00Z"), 10, at("2026-01-01T10:15:00Z"))
            .await
            .unwrap(),
        []
    );
    assert_eq!(
        due_ids(
            store
                .due_deliveries(at("2026-01-01T10:11:00Z"), 10)
                .await
                .unwrap()
        ),
        [queued[0].id.clone(), queued[1].id.clone()]
    );

    // Delivered: never due again, shown with its last answer.
    store
        .record_delivery_attempt(
            &first.id,
            &DeliveryAttempt {
                at: at("2026-01-01T10:01:02Z"),
                status: DeliveryStatus::Delivered,
                next_attempt_at: None,
                answer_status: Some(200),
                answer: "ok".to_string(),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        due_ids(
            store
                .due_deliveries(at("2026-02-01T00:00:00Z"), 10)
                .await
                .unwrap()
        ),
        [queued[1].id.clone()]
    );
    let delivered = store
        .list_deliveries(None, 10)
        .await
        .unwrap()
        .into_iter()
        .find(|d| d.id == first.id)
        .unwrap();
    assert_eq!(
        delivered,
        DeliveryRecord {
            status: DeliveryStatus::Delivered,
            attempts: 2,
            next_attempt_at: None,
            last_attempt_at: Some(at("2026-01-01T10:01:02Z")),
            answer_status: Some(200),
            answer: Some("ok".to_string()),
            ..first.clone()
        }
    );

    // Given up: a finished attempt clears the next time even if one is given.
    store
        .record_delivery_attempt(
            &queued[1].id,
            &DeliveryAttempt {
                at: at("2026-01-01T10:02:00Z"),
                status: DeliveryStatus::Failed,
                next_attempt_at: Some(at("2026-01-01T11:00:00Z")),
                answer_status: None,
                answer: "cannot reach hooks.slack.com: connection refused".to_string(),
            },
        )
        .await
        .unwrap();
    let failed = store.get_delivery(&queued[1].id).await.unwrap().unwrap();
    assert_eq!(
        (
            failed.status,
            failed.attempts,
            failed.next_attempt_at,
            failed.answer_status
        ),
        (DeliveryStatus::Failed, 1, None, None)
    );
    assert_eq!(
        store
            .due_deliveries(at("2026-02-01T00:00:00Z"), 10)
            .await
            .unwrap(),
        []
    );

    let attempt = DeliveryAttempt {
        at: at("2026-01-01T10:00:01Z"),
        status: DeliveryStatus::Pending,
        next_attempt_at: None,
        answer_status: None,
        answer: String::new(),
    };
    assert_eq!(
        error_text(store.record_delivery_attempt(&first.id, &attempt).await),
        format!(
            "delivery {} stays pending but has no next attempt time; give next_attempt_at, or \
             finish it as delivered or failed",
            first.id
        )
    );
    let attempt = DeliveryAttempt {
        next_attempt_at: Some(at("2026-01-01T10:01:00Z")),
        ..attempt
    };
    assert_eq!(
        error_text(store.record_delivery_attempt("dlv_unknown", &attempt).await),
        "delivery 'dlv_unknown' does not exist; finished deliveries are removed with old runs"
    );
    assert_eq!(
        store
            .enqueue_deliveries(&[], at("2026-01-01T10:00:00Z"))
            .await
            .unwrap(),
        []
    );
}

async fn deliveries_are_listed_newest_first_and_by_sync(workspace: TestWorkspace) {
    let store = &workspace.store;
    let mut made = HashMap::new();
    for (event, sync, time) in [
        ("evt_b", "billing", "2026-01-01T10:00:00Z"),
        ("evt_c1", "customers", "2026-01-01T09:00:00Z"),
        ("evt_c2", "customers", "2026-01-01T11:00:00Z"),
        ("evt_c3", "customers", "2026-01-01T10:30:00Z"),
    ] {
        let queued = store
            .enqueue_deliveries(
                &[new_delivery(event, "sync.completed", sync, "ops")],
                at(time),
            )
            .await
            .unwrap();
        made.insert(queued[0].id.clone(), event);
    }
    let events = |deliveries: Vec<DeliveryRecord>| -> Vec<&str> {
        deliveries.iter().map(|d| made[&d.id]).collect()
    };
    assert_eq!(
        events(store.list_deliveries(None, 10).await.unwrap()),
        ["evt_c2", "evt_c3", "evt_b", "evt_c1"]
    );
    assert_eq!(
        events(store.list_deliveries(None, 2).await.unwrap()),
        ["evt_c2", "evt_c3"]
    );
    assert_eq!(
        events(store.list_deliveries(Some("customers"), 10).await.unwrap()),
        ["evt_c2", "evt_c3", "evt_c1"]
    );
    assert_eq!(
        events(store.list_deliveries(Some("billing"), 10).await.unwrap()),
        ["evt_b"]
    );
    assert_eq!(
        store.list_deliveries(Some("nothing"), 10).await.unwrap(),
        []
    );
    // Made at the same time: the one queued last is listed first.
    let same_time = store
        .enqueue_deliveries(
            &[
                new_delivery("evt_s1", "sync.started", "same", "a"),
                new_delivery("evt_s2", "sync.started", "same", "b"),
            ],
            at("2026-01-01T12:00:00Z"),
        )
        .await
        .unwrap();
    let listed: Vec<String> = store
        .list_deliveries(Some("same"), 10)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.channel)
        .collect();
    assert_eq!(listed, ["b", "a"]);
    assert_eq!(same_time[0].created_at, same_time[1].created_at);
}

async fn pruning_removes_old_finished_deliveries_and_keeps_pending_ones(workspace: TestWorkspace) {
    let store = &workspace.store;
    let old = at("2020-01-01T00:00:00Z");
    let queued = store
        .enqueue_deliveries(
            &[
                new_delivery("evt_1", "sync.failed", "customers", "delivered"),
                new_delivery("evt_1", "sync.failed", "customers", "failed"),
                new_delivery("evt_1", "sync.failed", "customers", "still-trying"),
            ],
            old,
        )
        .await
        .unwrap();
    let recent = store
        .enqueue_deliveries(
            &[new_delivery(
                "evt_2",
                "sync.completed",
                "customers",
                "delivered",
            )],
            chrono::Utc::now(),
        )
        .await
        .unwrap();
    for (delivery, status, next_attempt_at) in [
        (&queued[0], DeliveryStatus::Delivered, None),
        (&queued[1], DeliveryStatus::Failed, None),
        (
            &queued[2],
            DeliveryStatus::Pending,
            Some(at("2020-01-01T01:00:00Z")),
        ),
        (&recent[0], DeliveryStatus::Delivered, None),
    ] {
        store
            .record_delivery_attempt(
                &delivery.id,
                &DeliveryAttempt {
                    at: old,
                    status,
                    next_attempt_at,
                    answer_status: Some(500),
                    answer: String::new(),
                },
            )
            .await
            .unwrap();
    }

    let a_day_ago = chrono::Utc::now() - chrono::TimeDelta::days(1);
    assert_eq!(store.prune_runs(a_day_ago).await.unwrap(), 0, "no runs");
    let mut kept: Vec<String> = store
        .list_deliveries(None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.id)
        .collect();
    kept.sort();
    assert_eq!(kept, [queued[2].id.clone(), recent[0].id.clone()]);
    assert!(store.get_delivery(&queued[0].id).await.unwrap().is_none());
}

async fn workspace_settings_are_saved_replaced_and_read_sorted(workspace: TestWorkspace) {
    let store = &workspace.store;
    assert_eq!(store.get_workspace_setting("alerts").await.unwrap(), None);

    store
        .put_workspace_setting(
            "alerts",
            &json!({"on_failure": true, "channels": ["ops"], "b": {"z": 1, "a": 2}}),
        )
        .await
        .unwrap();
    let read = store
        .get_workspace_setting("alerts")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        read.to_string(),
        r#"{"b":{"a":2,"z":1},"channels":["ops"],"on_failure":true}"#
    );

    store
        .put_workspace_setting("alerts", &json!({"on_failure": false}))
        .await
        .unwrap();
    store
        .put_workspace_setting("retention_days", &json!(30))
        .await
        .unwrap();
    assert_eq!(
        store.get_workspace_setting("alerts").await.unwrap(),
        Some(json!({"on_failure": false}))
    );
    assert_eq!(
        store.get_workspace_setting("retention_days").await.unwrap(),
        Some(json!(30))
    );
    assert_eq!(
        workspace
            .raw_count("SELECT COUNT(*) FROM workspace_settings")
            .await,
        2
    );
    assert_eq!(store.get_workspace_setting("Alerts").await.unwrap(), None);
}

async fn ui_sessions_are_seen_until_idle_and_outlive_a_restart(workspace: TestWorkspace) {
    let store = &workspace.store;
    // Times keep microseconds, as every time the store keeps.
    let session = ui_session("cookie one", "admin", at("2026-12-01T09:00:00.123456789Z"));
    store.create_ui_session(&session).await.unwrap();
    let stored = UiSession {
        signed_in_at: at("2026-12-01T09:00:00.123456Z"),
        last_seen_at: at("2026-12-01T09:00:00.123456Z"),
        ..session.clone()
    };
    let touch = |store: &StateStore, now: &str, idle_cutoff: &str| {
        let (store, id_hash) = (store.clone(), session.id_hash.clone());
        let (now, idle_cutoff) = (at(now), at(idle_cutoff));
        async move {
            store
                .touch_ui_session(&id_hash, now, idle_cutoff)
                .await
                .unwrap()
        }
    };

    // Another server on the same workspace, or this one restarted, finds the session.
    let restarted = StateStore::open_existing(&workspace.options).await.unwrap();
    assert_eq!(
        touch(&restarted, "2026-12-01T10:00:00Z", "2026-11-30T22:00:00Z").await,
        Some(UiSession {
            last_seen_at: at("2026-12-01T10:00:00Z"),
            ..stored.clone()
        })
    );
    // Seen exactly at the cutoff is not idle yet.
    assert_eq!(
        touch(store, "2026-12-01T10:30:00Z", "2026-12-01T10:00:00Z")
            .await
            .map(|seen| seen.last_seen_at),
        Some(at("2026-12-01T10:30:00Z"))
    );
    // A server whose clock is behind does not move the last sighting back.
    assert_eq!(
        touch(store, "2026-12-01T10:15:00Z", "2026-12-01T10:00:00Z")
            .await
            .map(|seen| seen.last_seen_at),
        Some(at("2026-12-01T10:30:00Z"))
    );

    // Idle since before the cutoff: it ends, and stays ended.
    assert_eq!(
        touch(store, "2026-12-01T23:00:00Z", "2026-12-01T10:30:00.000001Z").await,
        None
    );
    assert_eq!(
        workspace
            .raw_count("SELECT COUNT(*) FROM ui_sessions")
            .await,
        0
    );
    assert_eq!(
        touch(store, "2026-12-01T10:31:00Z", "2026-11-30T00:00:00Z").await,
        None
    );

    // Signing out ends a session at once.
    store.create_ui_session(&session).await.unwrap();
    assert_eq!(
        error_text(store.create_ui_session(&session).await),
        "a web UI session with this id already exists; start the session with a new random id"
    );
    assert!(restarted.end_ui_session(&session.id_hash).await.unwrap());
    assert!(!store.end_ui_session(&session.id_hash).await.unwrap());
    assert_eq!(
        touch(store, "2026-12-01T09:01:00Z", "2026-11-30T00:00:00Z").await,
        None
    );
}

async fn ui_sessions_are_stored_only_as_hashes(workspace: TestWorkspace) {
    let store = &workspace.store;
    let session_id = "Xk2oJ8b1q9VtY4mWcR7sLd0nPzHfGa3eUi6yBwTjQvE";
    let session = UiSession {
        csrf: "the session's csrf token".to_string(),
        ..ui_session(session_id, "admin", at("2026-12-01T09:00:00Z"))
    };
    store.create_ui_session(&session).await.unwrap();
    let every_text = workspace
        .raw_texts("SELECT id_hash || ' ' || token_name || ' ' || csrf FROM ui_sessions")
        .await;
    assert_eq!(
        every_text,
        [Some(format!("{} admin {}", session.id_hash, session.csrf))]
    );
    if workspace.backend == Backend::Sqlite {
        let bytes = database_bytes(&workspace.options.database_file());
        assert!(contains(&bytes, session.id_hash.as_bytes()));
        assert!(!contains(&bytes, session_id.as_bytes()));
    }

    // Whatever is not the lowercase hex of a SHA-256 is refused, lest a clear id be stored.
    for not_a_hash in [
        session_id.to_string(),
        session.id_hash.to_uppercase(),
        session.id_hash[1..].to_string(),
        String::new(),
    ] {
        let mistaken = UiSession {
            id_hash: not_a_hash.clone(),
            ..session.clone()
        };
        assert_eq!(
            error_text(store.create_ui_session(&mistaken).await),
            "a web UI session is stored by the SHA-256 of its id, in lowercase hex (64 \
             characters), never by the id itself; hash the id first",
            "{not_a_hash:?}"
        );
        let now = at("2026-12-01T09:01:00Z");
        let idle_cutoff = at("2026-11-30T00:00:00Z");
        assert_eq!(
            store
                .touch_ui_session(&not_a_hash, now, idle_cutoff)
                .await
                .unwrap(),
            None
        );
        assert!(!store.end_ui_session(&not_a_hash).await.unwrap());
    }
    assert_eq!(
        workspace
            .raw_count("SELECT COUNT(*) FROM ui_sessions")
            .await,
        1
    );
}

async fn idle_ui_sessions_are_pruned(workspace: TestWorkspace) {
    let store = &workspace.store;
    for (id, last_seen_at) in [
        ("eight", "2026-12-01T08:00:00Z"),
        ("nine", "2026-12-01T09:00:00Z"),
        ("ten", "2026-12-01T10:00:00Z"),
    ] {
        let session = ui_session(id, "admin", at("2026-12-01T07:00:00Z"));
        store
            .create_ui_session(&UiSession {
                last_seen_at: at(last_seen_at),
                ..session
            })
            .await
            .unwrap();
    }
    // The same rule as touching: seen at the cutoff is not idle.
    let cutoff = at("2026-12-01T09:00:00Z");
    assert_eq!(store.prune_ui_sessions(cutoff).await.unwrap(), 1);
    assert_eq!(store.prune_ui_sessions(cutoff).await.unwrap(), 0);
    let mut left = workspace
        .raw_texts("SELECT token_name || ' ' || csrf FROM ui_sessions")
        .await;
    left.sort();
    assert_eq!(
        left,
        [
            Some("admin csrf of nine".to_string()),
            Some("admin csrf of ten".to_string())
        ]
    );
    assert_eq!(
        store
            .prune_ui_sessions(at("2026-12-02T00:00:00Z"))
            .await
            .unwrap(),
        2
    );
}

async fn rate_slots_reserved_back_to_back_follow_each_other(workspace: TestWorkspace) {
    let store = &workspace.store;
    // A budget never used starts now.
    let first = store.reserve_rate_slots("acct_1", 25, 5).await.unwrap();
    assert_eq!((first.spacing, first.count), (Duration::from_millis(40), 5));
    assert!(first.first_in < Duration::from_millis(50), "{first:?}");
    let after_first = stored_next_free_at(&workspace, "acct_1").await;

    // The next reservation starts exactly where the first ends.
    let second = store.reserve_rate_slots("acct_1", 25, 5).await.unwrap();
    let after_second = stored_next_free_at(&workspace, "acct_1").await;
    assert_eq!(
        after_second - after_first,
        chrono::TimeDelta::milliseconds(200)
    );
    assert!(
        second.first_in > Duration::from_millis(100)
            && second.first_in <= first.first_in + Duration::from_millis(200),
        "{first:?} then {second:?}"
    );

    // Another key is another budget: an endpoint's own, say.
    let endpoint = store
        .reserve_rate_slots("acct_1 POST /v1/customers", 25, 1)
        .await
        .unwrap();
    assert!(
        endpoint.first_in < Duration::from_millis(50),
        "{endpoint:?}"
    );
    assert_eq!(
        stored_next_free_at(&workspace, "acct_1").await,
        after_second
    );

    // Reservations that make no sense are refused before the store is asked.
    assert_eq!(
        error_text(store.reserve_rate_slots("acct_1", 0, 5).await),
        "rate budget 'acct_1' needs a rate of at least 1 request per second; for no limit at \
         all, do not reserve slots"
    );
    assert_eq!(
        error_text(store.reserve_rate_slots("acct_1", 25, 0).await),
        "reserve at least 1 slot of rate budget 'acct_1'"
    );
    assert_eq!(
        stored_next_free_at(&workspace, "acct_1").await,
        after_second
    );
}

async fn an_idle_rate_budget_starts_now_without_a_burst(workspace: TestWorkspace) {
    let store = &workspace.store;
    store.reserve_rate_slots("acct", 100, 10).await.unwrap();
    // Idle for long: the slots it did not use are gone, not a burst waiting to happen.
    workspace
        .raw_execute("UPDATE rate_budgets SET next_free_at = '2000-01-01T00:00:00.000000Z'")
        .await;
    let before = chrono::Utc::now();
    let slots = store.reserve_rate_slots("acct", 100, 10).await.unwrap();
    let after = chrono::Utc::now();
    assert_eq!(
        slots,
        RateSlots {
            first_in: Duration::ZERO,
            spacing: Duration::from_millis(10),
            count: 10
        }
    );
    // Its ten slots end 100 ms after the store's clock read "now" (the test database's server
    // runs on this machine, so its clock is this one's).
    let next_free_at = stored_next_free_at(&workspace, "acct").await;
    let span = chrono::TimeDelta::milliseconds(100);
    let slack = chrono::TimeDelta::milliseconds(20);
    assert!(
        next_free_at >= before + span - slack && next_free_at <= after + span + slack,
        "{before} … {after}: {next_free_at}"
    );
}

async fn concurrent_rate_reservations_never_overlap(workspace: TestWorkspace) {
    // Four processes (a store each: on PostgreSQL, a session each), four tasks in each, all
    // reserving from one budget at once. Each reservation is a second of slots, so windows that
    // overlapped would start together, far beyond the slack of reading them with local clocks.
    let mut stores = Vec::new();
    for _ in 0..4 {
        stores.push(StateStore::open_existing(&workspace.options).await.unwrap());
    }
    let span = Duration::from_secs(1);
    let mut reservations = tokio::task::JoinSet::new();
    for store in &stores {
        for _ in 0..4 {
            let store = store.clone();
            reservations.spawn(async move {
                let slots = store.reserve_rate_slots("acct", 10, 10).await.unwrap();
                let start = std::time::Instant::now() + slots.first_in;
                (start, start + slots.spacing * slots.count)
            });
        }
    }
    let mut windows = reservations.join_all().await;
    windows.sort();
    assert_eq!(windows.len(), 16);
    let slack = Duration::from_millis(250);
    for pair in windows.windows(2) {
        let ((_, end), (next_start, _)) = (pair[0], pair[1]);
        assert!(
            next_start + slack >= end,
            "overlapping windows: one ends {:?} after the next starts",
            end - next_start
        );
    }
    // Together they hold sixteen seconds, one after the other from about now.
    let (first_start, _) = windows[0];
    let (_, last_end) = windows[15];
    assert!(
        last_end - first_start >= span * 16 - slack,
        "{:?}",
        last_end - first_start
    );
}

fn error_text<T: std::fmt::Debug>(result: Result<T, StateError>) -> String {
    match result {
        Ok(value) => panic!("expected an error, got {value:?}"),
        Err(error) => error.to_string(),
    }
}

/// A session of the web UI whose cookie is `session_id`, signed in and last seen at `at`.
fn ui_session(session_id: &str, token_name: &str, at: chrono::DateTime<chrono::Utc>) -> UiSession {
    use sha2::Digest as _;
    UiSession {
        id_hash: hex::encode(sha2::Sha256::digest(session_id.as_bytes())),
        token_name: token_name.to_string(),
        csrf: format!("csrf of {session_id}"),
        signed_in_at: at,
        last_seen_at: at,
    }
}

/// When the budget's next slot is free, as the database holds it.
async fn stored_next_free_at(
    workspace: &TestWorkspace,
    budget_key: &str,
) -> chrono::DateTime<chrono::Utc> {
    let as_text = match workspace.backend {
        Backend::Sqlite => "next_free_at",
        Backend::Postgres => {
            "to_char(next_free_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
        }
    };
    let text = workspace
        .raw_text(&format!(
            "SELECT {as_text} FROM rate_budgets WHERE budget_key = '{budget_key}'"
        ))
        .await
        .unwrap_or_else(|| panic!("no rate budget '{budget_key}'"));
    at(&text)
}

fn new_delivery(event_id: &str, event_type: &str, sync: &str, channel: &str) -> NewDelivery {
    NewDelivery {
        event_id: event_id.to_string(),
        event_type: event_type.to_string(),
        sync: sync.to_string(),
        run_id: Some("run_1".to_string()),
        channel: channel.to_string(),
        payload: format!(r#"{{"type":"{event_type}","id":"{event_id}"}}"#),
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
        destination_id: Some(format!("cus_{row_number}")),
        reason: None,
        request_id: Some(format!("req_{row_number}")),
        changes: Some(
            json!({"name": {"before": null, "after": format!("Name {row_number}")}}).to_string(),
        ),
    }
}

/// A successful create of row `row_number`'s customer, with every field set.
fn exchange(row_number: u64, sequence: u64, sent_at: &str) -> StripeExchange {
    StripeExchange {
        row_number,
        sequence,
        sent_at: at(sent_at),
        method: "POST".to_string(),
        path: "/v1/customers".to_string(),
        idempotency_key: Some(format!("ferry-abc123-{row_number}")),
        request_body: Some(format!("email=row{row_number}%40example.com&name=Zo%C3%AB")),
        status: Some(200),
        response_body: Some(format!(r#"{{"id":"cus_{row_number}"}}"#)),
        request_id: Some(format!("req_{sequence}")),
        error: None,
        duration_ms: 182,
    }
}

fn snapshot_entry(destination_id: &str, name: &str) -> SnapshotEntry {
    let email = format!(
        "{}@example.com",
        name.split(' ').next().unwrap().to_lowercase()
    );
    SnapshotEntry {
        destination_id: destination_id.to_string(),
        payload_hash: format!("sha256:{destination_id}:{name}"),
        // Deliberately unsorted: it comes back sorted.
        payload: json!({"name": name, "metadata": {"z": "2", "a": "1"}, "email": email})
            .to_string(),
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

/// The object every test sync writes, unless a test says otherwise.
const CUSTOMER: &str = "customer";

/// The collation of the snapshot's key column (PostgreSQL).
const SNAPSHOT_KEY_COLLATION: &str = "SELECT CAST(collation_name AS TEXT) FROM \
     information_schema.columns WHERE table_name = 'snapshot' AND column_name = 'key'";

fn keys(keys: &[&str]) -> Vec<String> {
    keys.iter().map(ToString::to_string).collect()
}

fn key_names(entries: &[SnapshotKey]) -> Vec<String> {
    entries.iter().map(|entry| entry.key.clone()).collect()
}

fn at(text: &str) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&chrono::Utc)
}

/// A run id as ferry makes them, for a run started at `started_at`.
fn run_id_at(started_at: &str) -> String {
    format!("run_{:014x}abcdef", at(started_at).timestamp_micros())
}

/// Every page of a run's records, `limit` at a time, each after the last row of the one before.
async fn walk_run_records(
    store: &StateStore,
    run_id: &str,
    filter: Option<Outcome>,
    limit: usize,
) -> Vec<Vec<RunRecordRow>> {
    let mut pages = Vec::new();
    let mut after_row = 0;
    loop {
        let page = store
            .list_run_records(run_id, filter, after_row, limit)
            .await
            .unwrap();
        let Some(last) = page.last() else {
            return pages;
        };
        after_row = last.row_number;
        pages.push(page);
    }
}

fn indexed(id: &str, keys: &[(&str, &str)]) -> IndexedRecord {
    IndexedRecord {
        destination_id: id.to_string(),
        keys: keys
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect(),
        new: false,
    }
}

async fn lookup(
    store: &StateStore,
    scope: &str,
    key_name: &str,
    values: &[&str],
) -> HashMap<String, Vec<String>> {
    store
        .index_lookup(scope, key_name, &keys(values))
        .await
        .unwrap()
}

fn ids_by_value(entries: &[(&str, &[&str])]) -> HashMap<String, Vec<String>> {
    entries
        .iter()
        .map(|(value, ids)| (value.to_string(), keys(ids)))
        .collect()
}

fn index_state(created_through: i64, events_through: i64) -> IndexState {
    IndexState {
        key_names: keys(&["email", "metadata.user_id"]),
        built_at: at("2025-06-01T12:00:00.123456Z"),
        created_through,
        events_through,
        refreshed_at: at("2025-06-01T12:05:00.654321Z"),
    }
}

/// Makes the workspace's database what the release that stopped at schema `version` created:
/// every table dropped, then that release's migrations applied by hand and recorded.
async fn build_release_schema(options: &WorkspaceOptions, version: usize) {
    let (migrations, migrations_table) = match options.state_url {
        None => (
            [
                include_str!("../migrations/sqlite/0001_initial_schema.sql"),
                include_str!("../migrations/sqlite/0002_api_tokens.sql"),
            ],
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, \
             applied_at TEXT NOT NULL);",
        ),
        Some(_) => (
            [
                include_str!("../migrations/postgres/0001_initial_schema.sql"),
                include_str!("../migrations/postgres/0002_api_tokens.sql"),
            ],
            "CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, \
             applied_at TIMESTAMPTZ NOT NULL);",
        ),
    };
    let mut sql = String::new();
    for table in [
        "sequence_runs",
        "sequences",
        "stripe_exchanges",
        "run_requests",
        "ui_sessions",
        "rate_budgets",
        "raised_alerts",
        "deliveries",
        "workspace_settings",
        "key_index",
        "key_index_state",
        "api_tokens",
        "run_records",
        "runs",
        "pending_creates",
        "snapshot",
        "syncs",
        "models",
        "connections",
        "schema_migrations",
    ] {
        sql.push_str(&format!("DROP TABLE IF EXISTS {table};\n"));
    }
    sql.push_str(migrations_table);
    for (number, (script, name)) in migrations
        .iter()
        .zip(["initial schema", "api tokens"])
        .take(version)
        .enumerate()
    {
        sql.push_str(&format!(
            "\n{script}\nINSERT INTO schema_migrations (version, name, applied_at) VALUES \
             ({}, '{name}', '2025-01-01T00:00:00.000000Z');\n",
            number + 1
        ));
    }
    common::raw_execute(options, &sql).await;
}

async fn the_run_queue_is_claimed_once_leased_renewed_and_finished(workspace: TestWorkspace) {
    let store = &workspace.store;
    let request = |sync: &str, dedupe_key: Option<&str>| ferry_state::NewRunRequest {
        sync: sync.to_string(),
        reason: "api".to_string(),
        full_resync: sync == "billing",
        allow_mass_retire: false,
        dedupe_key: dedupe_key.map(str::to_string),
    };
    let first = store
        .enqueue_run(&request("customers", Some("schedule customers 10:00")))
        .await
        .unwrap()
        .expect("queued");
    assert!(first.id.starts_with("rrq_"), "{}", first.id);
    assert_eq!((first.claims, first.claimed_by.as_deref()), (0, None));
    // A second server seeing the same scheduled time due queues nothing.
    assert_eq!(
        store
            .enqueue_run(&request("customers", Some("schedule customers 10:00")))
            .await
            .unwrap(),
        None
    );
    let second = store
        .enqueue_run(&request("billing", None))
        .await
        .unwrap()
        .unwrap();
    assert!(second.full_resync);

    // Oldest first, and a claimed request is not claimed again while its lease lasts.
    let long = Duration::from_secs(60);
    let claimed = store.claim_run_request("w1", long).await.unwrap().unwrap();
    assert_eq!(claimed.id, first.id);
    assert_eq!(
        (claimed.claims, claimed.claimed_by.as_deref()),
        (1, Some("w1"))
    );
    let other = store.claim_run_request("w2", long).await.unwrap().unwrap();
    assert_eq!(other.id, second.id);
    assert_eq!(store.claim_run_request("w3", long).await.unwrap(), None);

    // Only the holder records the start, renews, finishes.
    assert!(!store
        .run_request_started(&first.id, "w2", "run_x")
        .await
        .unwrap());
    assert!(store
        .run_request_started(&first.id, "w1", "run_1")
        .await
        .unwrap());
    assert_eq!(
        store
            .renew_run_request(&first.id, "w1", long)
            .await
            .unwrap(),
        Some(false)
    );
    assert_eq!(
        store
            .renew_run_request(&first.id, "w2", long)
            .await
            .unwrap(),
        None
    );
    // A cancel asked anywhere reaches the holder at its next renewal.
    assert!(store.request_run_cancel("run_1").await.unwrap());
    assert!(!store.request_run_cancel("run_unknown").await.unwrap());
    assert_eq!(
        store
            .renew_run_request(&first.id, "w1", long)
            .await
            .unwrap(),
        Some(true)
    );

    // A holder that stops renewing loses the request to the next claim, which counts it.
    assert!(store
        .renew_run_request(&second.id, "w2", Duration::ZERO)
        .await
        .unwrap()
        .is_some());
    tokio::time::sleep(Duration::from_millis(20)).await;
    let taken_over = store.claim_run_request("w3", long).await.unwrap().unwrap();
    assert_eq!(taken_over.id, second.id);
    assert_eq!(
        (taken_over.claims, taken_over.claimed_by.as_deref()),
        (2, Some("w3"))
    );
    assert_eq!(
        store
            .renew_run_request(&second.id, "w2", long)
            .await
            .unwrap(),
        None,
        "the old holder lost it"
    );

    // Put back, it waits before it is claimed again.
    assert!(store
        .release_run_request(&second.id, "w3", Duration::from_secs(30))
        .await
        .unwrap());
    assert_eq!(store.claim_run_request("w1", long).await.unwrap(), None);

    // Finished: with a refusal, or without; no longer pending, never claimed again.
    let refusal = ferry_state::RunRefusal {
        status: 409,
        code: "conflict".to_string(),
        message: "sync 'customers' is already running".to_string(),
    };
    assert!(!store
        .finish_run_request(&first.id, "w2", None)
        .await
        .unwrap());
    assert!(store
        .finish_run_request(&first.id, "w1", Some(&refusal))
        .await
        .unwrap());
    let finished = store.get_run_request(&first.id).await.unwrap().unwrap();
    assert_eq!(finished.refusal, Some(refusal));
    assert!(finished.finished_at.is_some());
    assert_eq!(finished.run_id.as_deref(), Some("run_1"));
    let pending: Vec<String> = store
        .pending_run_requests()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(pending, std::slice::from_ref(&second.id));
    assert_eq!(store.get_run_request("rrq_unknown").await.unwrap(), None);

    // Claims racing from many tasks each get a different request.
    let mut ids = Vec::new();
    for index in 0..6 {
        let queued = store
            .enqueue_run(&request(&format!("sync{index}"), None))
            .await
            .unwrap()
            .unwrap();
        ids.push(queued.id);
    }
    let mut racers = tokio::task::JoinSet::new();
    for worker in 0..8 {
        let store = store.clone();
        racers.spawn(async move {
            store
                .claim_run_request(&format!("racer{worker}"), long)
                .await
                .unwrap()
        });
    }
    let claims = racers.join_all().await;
    let mut won: Vec<String> = claims.into_iter().flatten().map(|r| r.id).collect();
    won.sort();
    assert_eq!(won, ids, "each request claimed exactly once");
}

// ----- sequences -----

fn sequence_spec(steps: &[&str], limit: Option<u32>, schedule: Option<&str>) -> SequenceSpec {
    SequenceSpec {
        steps: steps.iter().map(|step| step.to_string()).collect(),
        stop_when_rejected_over_percent: limit,
        schedule: schedule.map(|text| Schedule::parse(text).unwrap()),
    }
}

fn new_sequence_run(sequence: &str, dedupe_key: Option<&str>) -> NewSequenceRun {
    NewSequenceRun {
        sequence: sequence.to_string(),
        reason: "api".to_string(),
        driver: "queue".to_string(),
        dedupe_key: dedupe_key.map(str::to_string),
    }
}

/// The customers sync, plus syncs "prices" and "invoices" over the same model.
async fn seed_three_syncs(workspace: &TestWorkspace) {
    workspace.seed_customers_sync().await;
    for sync in ["prices", "invoices"] {
        workspace
            .store
            .put_sync(sync, &customer_spec("signups", "stripe"))
            .await
            .unwrap();
    }
}

async fn start_sequence_run(store: &StateStore, sequence: &str) -> SequenceRunRecord {
    store
        .create_sequence_run(&new_sequence_run(sequence, None))
        .await
        .unwrap()
        .expect("started")
}

async fn finish_sequence_run(store: &StateStore, run: &SequenceRunRecord) {
    let update = SequenceRunUpdate {
        step: 0,
        run_ids: vec!["run_1".to_string()],
        status: SequenceRunStatus::Completed,
        message: Some("its step completed".to_string()),
    };
    assert!(store
        .advance_sequence_run(&run.id, run.version, &update)
        .await
        .unwrap());
}

async fn sequences_are_saved_listed_replaced_and_removed(workspace: TestWorkspace) {
    let store = &workspace.store;
    seed_three_syncs(&workspace).await;
    let spec = sequence_spec(
        &["customers", "prices", "invoices"],
        Some(5),
        Some("daily at 06:00 in Europe/Paris"),
    );
    let saved = store.put_sequence("billing", &spec).await.unwrap();
    assert_eq!(saved.name, "billing");
    assert_eq!(saved.spec, spec);
    assert_eq!(saved.created_at, saved.updated_at);
    assert_eq!(
        store.get_sequence("billing").await.unwrap(),
        Some(saved.clone())
    );
    assert_eq!(store.get_sequence("nothing").await.unwrap(), None);
    // The spec is stored as JSON, its schedule as written.
    let stored = workspace
        .raw_text("SELECT CAST(spec AS TEXT) FROM sequences WHERE name = 'billing'")
        .await
        .unwrap();
    let stored: serde_json::Value = serde_json::from_str(&stored).unwrap();
    assert_eq!(
        stored,
        json!({
            "steps": ["customers", "prices", "invoices"],
            "stop_when_rejected_over_percent": 5,
            "schedule": "daily at 06:00 in Europe/Paris"
        })
    );

    // Listed by name, in byte order.
    let only_prices = sequence_spec(&["prices"], None, None);
    for name in ["zeta", "Alpha", "alpha_2"] {
        store.put_sequence(name, &only_prices).await.unwrap();
    }
    let names: Vec<String> = store
        .list_sequences()
        .await
        .unwrap()
        .into_iter()
        .map(|sequence| sequence.name)
        .collect();
    assert_eq!(names, ["Alpha", "alpha_2", "billing", "zeta"]);

    // Replaced: the new spec, the first created_at.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let replaced = store.put_sequence("billing", &only_prices).await.unwrap();
    assert_eq!(replaced.spec, only_prices);
    assert_eq!(replaced.created_at, saved.created_at);
    assert!(replaced.updated_at > saved.updated_at);
    assert_eq!(store.get_sequence("billing").await.unwrap(), Some(replaced));
    assert_eq!(
        workspace.raw_count("SELECT COUNT(*) FROM sequences").await,
        4
    );

    // Removed, once.
    assert!(store.remove_sequence("billing").await.unwrap());
    assert!(!store.remove_sequence("billing").await.unwrap());
    assert_eq!(store.get_sequence("billing").await.unwrap(), None);
    assert_eq!(store.list_sequences().await.unwrap().len(), 3);
}

async fn a_sequence_is_refused_for_its_problems_its_name_or_a_missing_step(
    workspace: TestWorkspace,
) {
    let store = &workspace.store;
    seed_three_syncs(&workspace).await;
    // A step must be an existing sync, named exactly so.
    assert!(matches!(
        store
            .put_sequence("billing", &sequence_spec(&["customers", "refunds"], None, None))
            .await,
        Err(StateError::NotFound { what: ferry_state::ObjectType::Sync, ref name }) if name == "refunds"
    ));
    assert_eq!(
        error_text(
            store
                .put_sequence("billing", &sequence_spec(&["Customers"], None, None))
                .await
        ),
        "sync 'Customers' does not exist; see `ferry sync list`"
    );
    // The spec's problems, all of them, prefixed with the sequence.
    let refused = error_text(
        store
            .put_sequence("billing", &sequence_spec(&[], Some(101), None))
            .await,
    );
    assert!(
        refused.starts_with("sequence 'billing': steps is empty"),
        "{refused}"
    );
    assert!(
        refused.contains("; stop_when_rejected_over_percent"),
        "{refused}"
    );
    let twice = error_text(
        store
            .put_sequence("billing", &sequence_spec(&["prices", "prices"], None, None))
            .await,
    );
    assert!(twice.contains("names sync `prices` twice"), "{twice}");
    // Names follow the rules of syncs' names.
    for bad in ["-rf", "has space", ""] {
        assert!(
            matches!(
                store
                    .put_sequence(bad, &sequence_spec(&["prices"], None, None))
                    .await,
                Err(StateError::InvalidName {
                    what: ferry_state::ObjectType::Sequence,
                    ..
                })
            ),
            "{bad:?}"
        );
    }
    assert_eq!(
        workspace.raw_count("SELECT COUNT(*) FROM sequences").await,
        0
    );

    store
        .put_sequence("billing", &sequence_spec(&["prices"], None, None))
        .await
        .unwrap();
    assert_eq!(
        error_text(
            store
                .put_sequence("Billing", &sequence_spec(&["prices"], None, None))
                .await
        ),
        "sequence 'Billing' cannot be created: sequence 'billing' already exists, and names must \
         differ by more than case; use 'billing' or choose another name"
    );
    // A sync of the same name is another kind of object.
    store
        .put_sequence("customers", &sequence_spec(&["customers"], None, None))
        .await
        .unwrap();
    // check_name_to_save knows sequences.
    let check =
        |name: &'static str| store.check_name_to_save(ferry_state::ObjectType::Sequence, name);
    assert!(check("billing").await.is_ok());
    assert!(check("other").await.is_ok());
    assert!(matches!(
        check("BILLING").await,
        Err(StateError::NameTakenIgnoringCase { ref existing, .. }) if existing == "billing"
    ));
    assert!(check("-x").await.is_err());
    assert_eq!(
        error_text(
            store
                .create_sequence_run(&new_sequence_run("nothing", None))
                .await
        ),
        "sequence 'nothing' does not exist; see `ferry sequence list`"
    );
}

async fn a_sync_a_sequence_names_cannot_be_removed(workspace: TestWorkspace) {
    let store = &workspace.store;
    seed_three_syncs(&workspace).await;
    store
        .put_sequence(
            "billing",
            &sequence_spec(&["customers", "prices"], None, None),
        )
        .await
        .unwrap();
    store
        .put_sequence("also", &sequence_spec(&["prices"], None, None))
        .await
        .unwrap();
    match store.remove_sync("prices").await {
        Err(StateError::InUse {
            what: ferry_state::ObjectType::Sync,
            name,
            used_by,
        }) => {
            assert_eq!(name, "prices");
            assert_eq!(used_by, ["sequence 'also'", "sequence 'billing'"]);
        }
        other => panic!("expected InUse, got {other:?}"),
    }
    assert_eq!(
        error_text(store.remove_sync("customers").await),
        "sync 'customers' is used by sequence 'billing'; remove or change those first"
    );
    assert!(store.get_sync("prices").await.unwrap().is_some());
    // A sync no sequence names goes; so do the others once their sequences went.
    assert!(store.remove_sync("invoices").await.unwrap());
    assert!(store.remove_sequence("billing").await.unwrap());
    assert!(store.remove_sync("customers").await.unwrap());
    assert!(store.remove_sync("prices").await.is_err());
    assert!(store.remove_sequence("also").await.unwrap());
    assert!(store.remove_sync("prices").await.unwrap());
}

async fn sequence_runs_start_once_per_dedupe_key_and_advance_by_compare_and_set(
    workspace: TestWorkspace,
) {
    let store = &workspace.store;
    seed_three_syncs(&workspace).await;
    let spec = sequence_spec(
        &["customers", "prices", "invoices"],
        Some(5),
        Some("every 2h"),
    );
    store.put_sequence("billing", &spec).await.unwrap();

    let key = "schedule billing 2026-12-03T06:00";
    let run = store
        .create_sequence_run(&NewSequenceRun {
            sequence: "billing".to_string(),
            reason: "schedule".to_string(),
            driver: "queue".to_string(),
            dedupe_key: Some(key.to_string()),
        })
        .await
        .unwrap()
        .expect("started");
    assert!(
        run.id.starts_with("seqrun_") && run.id.len() == "seqrun_".len() + 20,
        "{}",
        run.id
    );
    assert_eq!(
        i64::from_str_radix(&run.id[7..21], 16).unwrap(),
        run.started_at.timestamp_micros()
    );
    assert_eq!(
        (
            run.sequence.as_str(),
            &run.spec,
            run.status,
            run.step,
            run.version
        ),
        ("billing", &spec, SequenceRunStatus::Running, 0, 0)
    );
    assert_eq!(
        (run.reason.as_str(), run.driver.as_str()),
        ("schedule", "queue")
    );
    assert!(run.run_ids.is_empty());
    assert_eq!(
        (run.message.as_deref(), run.dedupe_key.as_deref()),
        (None, Some(key))
    );
    assert_eq!((run.finished_at, run.updated_at), (None, run.started_at));
    assert_eq!(
        store.get_sequence_run(&run.id).await.unwrap(),
        Some(run.clone())
    );
    assert_eq!(
        store.get_sequence_run("seqrun_unknown").await.unwrap(),
        None
    );

    // A second server seeing the same scheduled time starts nothing.
    assert_eq!(
        store
            .create_sequence_run(&new_sequence_run("billing", Some(key)))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        workspace
            .raw_count("SELECT COUNT(*) FROM sequence_runs")
            .await,
        1
    );

    // The run keeps the spec it started with when the sequence is saved again.
    store
        .put_sequence("billing", &sequence_spec(&["prices"], None, None))
        .await
        .unwrap();
    assert_eq!(
        store.get_sequence_run(&run.id).await.unwrap().unwrap().spec,
        spec
    );

    // Step 1 started: the version read wins once.
    let second_step = SequenceRunUpdate {
        step: 1,
        run_ids: vec!["run_a".to_string(), "run_b".to_string()],
        status: SequenceRunStatus::Running,
        message: None,
    };
    assert!(store
        .advance_sequence_run(&run.id, 0, &second_step)
        .await
        .unwrap());
    let stale = SequenceRunUpdate {
        step: 1,
        run_ids: vec!["run_a".to_string(), "run_other".to_string()],
        status: SequenceRunStatus::Running,
        message: Some("the loser".to_string()),
    };
    assert!(!store
        .advance_sequence_run(&run.id, 0, &stale)
        .await
        .unwrap());
    assert!(!store
        .advance_sequence_run(&run.id, 7, &stale)
        .await
        .unwrap());
    assert!(!store
        .advance_sequence_run("seqrun_unknown", 0, &stale)
        .await
        .unwrap());
    let advanced = store.get_sequence_run(&run.id).await.unwrap().unwrap();
    assert_eq!(advanced.step, 1);
    assert_eq!(advanced.run_ids, ["run_a", "run_b"]);
    assert_eq!(
        (advanced.version, advanced.status),
        (1, SequenceRunStatus::Running)
    );
    assert_eq!((advanced.message, advanced.finished_at), (None, None));
    assert!(advanced.updated_at >= run.updated_at);
    assert_eq!(advanced.started_at, run.started_at);

    // Finishing sets finished_at; a finished run is never advanced again.
    let stopped = SequenceRunUpdate {
        step: 1,
        run_ids: vec!["run_a".to_string(), "run_b".to_string()],
        status: SequenceRunStatus::Stopped,
        message: Some("step 2 (prices) rejected 6 of 100 rows".to_string()),
    };
    assert!(store
        .advance_sequence_run(&run.id, 1, &stopped)
        .await
        .unwrap());
    let finished = store.get_sequence_run(&run.id).await.unwrap().unwrap();
    assert_eq!(
        (finished.status, finished.version),
        (SequenceRunStatus::Stopped, 2)
    );
    assert_eq!(finished.message, stopped.message);
    assert_eq!(finished.finished_at, Some(finished.updated_at));
    assert!(finished.updated_at >= advanced.updated_at);
    let revived = SequenceRunUpdate {
        status: SequenceRunStatus::Running,
        ..stopped.clone()
    };
    assert!(!store
        .advance_sequence_run(&run.id, 2, &revived)
        .await
        .unwrap());
    assert!(!store
        .advance_sequence_run(&run.id, 2, &stopped)
        .await
        .unwrap());
    assert_eq!(
        store.get_sequence_run(&run.id).await.unwrap(),
        Some(finished)
    );

    // Without a dedupe key, runs of a sequence start side by side.
    let a = start_sequence_run(store, "billing").await;
    let b = start_sequence_run(store, "billing").await;
    assert!(a.id < b.id);
    assert_eq!(a.spec, sequence_spec(&["prices"], None, None));
}

async fn racing_advances_of_a_sequence_run_have_one_winner(workspace: TestWorkspace) {
    let store = &workspace.store;
    seed_three_syncs(&workspace).await;
    store
        .put_sequence(
            "billing",
            &sequence_spec(&["customers", "prices"], None, None),
        )
        .await
        .unwrap();
    let run = start_sequence_run(store, "billing").await;
    // Each racer is a process of its own: its own connection (PostgreSQL session), so the
    // database, not a mutex in this process, decides who wins.
    let mut racers = tokio::task::JoinSet::new();
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(8));
    for racer in 0..8 {
        let (options, id) = (workspace.options.clone(), run.id.clone());
        let start = start.clone();
        racers.spawn(async move {
            let store = StateStore::open_existing(&options).await.unwrap();
            start.wait().await;
            let update = SequenceRunUpdate {
                step: 1,
                run_ids: vec!["run_a".to_string(), format!("run_racer{racer}")],
                status: SequenceRunStatus::Running,
                message: None,
            };
            let won = store.advance_sequence_run(&id, 0, &update).await.unwrap();
            (racer, won)
        });
    }
    let winners: Vec<usize> = racers
        .join_all()
        .await
        .into_iter()
        .filter(|(_, won)| *won)
        .map(|(racer, _)| racer)
        .collect();
    assert_eq!(winners.len(), 1, "exactly one winner: {winners:?}");
    let after = store.get_sequence_run(&run.id).await.unwrap().unwrap();
    assert_eq!(after.version, 1);
    assert_eq!(after.run_ids[1], format!("run_racer{}", winners[0]));
}

async fn sequence_runs_are_listed_newest_first_and_running_oldest_first(workspace: TestWorkspace) {
    let store = &workspace.store;
    seed_three_syncs(&workspace).await;
    for name in ["billing", "catalog"] {
        store
            .put_sequence(name, &sequence_spec(&["customers", "prices"], None, None))
            .await
            .unwrap();
    }
    let mut started = Vec::new();
    for sequence in ["billing", "catalog", "billing", "billing", "catalog"] {
        started.push(start_sequence_run(store, sequence).await);
    }
    finish_sequence_run(store, &started[0]).await;
    finish_sequence_run(store, &started[3]).await;

    let ids = |runs: Vec<SequenceRunRecord>| -> Vec<String> {
        runs.into_iter().map(|run| run.id).collect()
    };
    let all = ids(store.list_sequence_runs(None, 100).await.unwrap());
    let mut expected: Vec<String> = started.iter().rev().map(|run| run.id.clone()).collect();
    assert_eq!(all, expected);
    expected.truncate(2);
    assert_eq!(
        ids(store.list_sequence_runs(None, 2).await.unwrap()),
        expected
    );
    assert_eq!(
        ids(store
            .list_sequence_runs(Some("billing"), 100)
            .await
            .unwrap()),
        [
            started[3].id.as_str(),
            started[2].id.as_str(),
            started[0].id.as_str()
        ]
    );
    assert_eq!(
        ids(store.list_sequence_runs(Some("billing"), 1).await.unwrap()),
        [started[3].id.as_str()]
    );
    assert!(store
        .list_sequence_runs(Some("nothing"), 10)
        .await
        .unwrap()
        .is_empty());
    let listed = store.list_sequence_runs(Some("billing"), 1).await.unwrap();
    assert_eq!(listed[0].status, SequenceRunStatus::Completed);
    assert_eq!(listed[0].run_ids, ["run_1"]);

    assert_eq!(
        ids(store.running_sequence_runs().await.unwrap()),
        [
            started[1].id.as_str(),
            started[2].id.as_str(),
            started[4].id.as_str()
        ]
    );
}

async fn a_run_request_is_found_by_its_dedupe_key(workspace: TestWorkspace) {
    let store = &workspace.store;
    let request = |dedupe_key: Option<&str>| ferry_state::NewRunRequest {
        sync: "customers".to_string(),
        reason: "schedule".to_string(),
        full_resync: false,
        allow_mass_retire: false,
        dedupe_key: dedupe_key.map(str::to_string),
    };
    let keyed = store
        .enqueue_run(&request(Some("seqrun_1 step 0")))
        .await
        .unwrap()
        .unwrap();
    store.enqueue_run(&request(None)).await.unwrap().unwrap();
    assert_eq!(
        store
            .find_run_request_by_dedupe_key("seqrun_1 step 0")
            .await
            .unwrap(),
        Some(keyed.clone())
    );
    assert_eq!(
        store
            .find_run_request_by_dedupe_key("seqrun_1 step 1")
            .await
            .unwrap(),
        None
    );
    // Found once claimed and finished too.
    let claimed = store
        .claim_run_request("w1", Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claimed.id, keyed.id);
    assert!(store
        .finish_run_request(&keyed.id, "w1", None)
        .await
        .unwrap());
    let found = store
        .find_run_request_by_dedupe_key("seqrun_1 step 0")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.id, keyed.id);
    assert!(found.finished_at.is_some());
}

async fn removing_a_sequence_removes_its_runs(workspace: TestWorkspace) {
    let store = &workspace.store;
    seed_three_syncs(&workspace).await;
    for name in ["billing", "catalog"] {
        store
            .put_sequence(name, &sequence_spec(&["customers"], None, None))
            .await
            .unwrap();
    }
    let billing_run = start_sequence_run(store, "billing").await;
    start_sequence_run(store, "billing").await;
    let catalog_run = start_sequence_run(store, "catalog").await;
    finish_sequence_run(store, &billing_run).await;
    assert!(store.remove_sequence("billing").await.unwrap());
    assert_eq!(
        workspace
            .raw_count("SELECT COUNT(*) FROM sequence_runs WHERE sequence_name = 'billing'")
            .await,
        0
    );
    assert_eq!(store.get_sequence_run(&billing_run.id).await.unwrap(), None);
    let left: Vec<String> = store
        .list_sequence_runs(None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|run| run.id)
        .collect();
    assert_eq!(left, [catalog_run.id]);
    // A sequence saved again under the name starts without a history.
    store
        .put_sequence("billing", &sequence_spec(&["customers"], None, None))
        .await
        .unwrap();
    assert!(store
        .list_sequence_runs(Some("billing"), 10)
        .await
        .unwrap()
        .is_empty());
}

async fn pruning_removes_finished_sequence_runs_and_keeps_running_ones(workspace: TestWorkspace) {
    let store = &workspace.store;
    seed_three_syncs(&workspace).await;
    for name in ["billing", "catalog"] {
        store
            .put_sequence(name, &sequence_spec(&["customers"], None, None))
            .await
            .unwrap();
    }
    let mut runs = HashMap::new();
    for (name, sequence, finished) in [
        ("old", "billing", true),
        ("running", "billing", false),
        ("recent", "billing", true),
        ("catalog_old", "catalog", true),
        ("catalog_newest", "catalog", true),
    ] {
        let run = start_sequence_run(store, sequence).await;
        if finished {
            finish_sequence_run(store, &run).await;
        }
        runs.insert(name, run.id);
    }
    // All finished long ago but "recent"; the running one started long ago.
    workspace
        .raw_execute(&format!(
            "UPDATE sequence_runs SET finished_at = '2020-01-01T00:00:00.000000Z' \
             WHERE id IN ('{}', '{}', '{}')",
            runs["old"], runs["catalog_old"], runs["catalog_newest"]
        ))
        .await;
    workspace
        .raw_execute(&format!(
            "UPDATE sequence_runs SET started_at = '2020-01-01T00:00:00.000000Z' WHERE id = '{}'",
            runs["running"]
        ))
        .await;

    let a_day_ago = chrono::Utc::now() - chrono::TimeDelta::days(1);
    // No run of a sync was pruned: the count is of those.
    assert_eq!(store.prune_runs(a_day_ago).await.unwrap(), 0);
    let mut kept: Vec<String> = store
        .list_sequence_runs(None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|run| run.id)
        .collect();
    kept.sort();
    // Each sequence keeps its newest run, whatever its age (its schedule counts from it).
    let mut expected: Vec<String> = ["running", "recent", "catalog_newest"]
        .iter()
        .map(|name| runs[name].clone())
        .collect();
    expected.sort();
    assert_eq!(kept, expected);
    store.prune_runs(a_day_ago).await.unwrap();
    assert_eq!(
        workspace
            .raw_count("SELECT COUNT(*) FROM sequence_runs")
            .await,
        3
    );

    // Once "recent" is old too, it goes; the running one stays.
    let newer = start_sequence_run(store, "billing").await;
    workspace
        .raw_execute(&format!(
            "UPDATE sequence_runs SET finished_at = '2020-01-01T00:00:00.000000Z' WHERE id = '{}'",
            runs["recent"]
        ))
        .await;
    store.prune_runs(a_day_ago).await.unwrap();
    assert_eq!(store.get_sequence_run(&runs["recent"]).await.unwrap(), None);
    assert!(store
        .get_sequence_run(&runs["running"])
        .await
        .unwrap()
        .is_some());
    assert!(store.get_sequence_run(&newer.id).await.unwrap().is_some());
}
