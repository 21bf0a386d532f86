//! The SQLite backend: `DIR/ferry.db` in WAL mode, so a `ferry server` and CLI commands can
//! share it, with `synchronous=FULL` so a saved idempotency key survives a power cut.
//!
//! rusqlite is synchronous: the connection sits behind a mutex and every call runs on tokio's
//! blocking pool, so async callers never stall a runtime worker on disk IO.

use crate::api_tokens;
use crate::error::{ObjectType, StateError};
use crate::ids;
use crate::master_key::MasterKey;
use crate::names;
use crate::rate_budget::{self, RateSlots, Reservation};
use crate::records::{
    counts_from_columns, counts_to_columns, delivery_number, exchange_status,
    parse_alert_condition, parse_connection_kind, parse_delivery_status, parse_outcome,
    parse_run_ids, parse_run_status, parse_sequence_run_status, parse_sequence_spec,
    parse_sync_spec, run_ids_json, secret_from_columns, sequence_run_number, sequence_spec_json,
    sorted_json, sync_spec_json, to_sql_integer, StoredSecret,
};
use crate::sync_lock::{HeldLock, SyncLock};
use crate::workspace::{set_mode, DATABASE_FILE_NAME, LOCKS_DIR_NAME};
use crate::{
    ApiTokenRecord, CommitBatchRef, ConnectionKind, ConnectionRecord, DeliveryAttempt,
    DeliveryRecord, DeliveryStatus, IndexState, IndexedRecord, ModelRecord, NewRunRequest,
    PendingCreate, RaisedAlert, RunRecord, RunRecordRow, RunRefusal, RunRequest, SequenceRecord,
    SequenceRunRecord, SequenceRunUpdate, SnapshotEntry, SnapshotKey, StripeExchange, SyncRecord,
    UiSession,
};
use chrono::{DateTime, Utc};
use ferry_core::{
    AlertCondition, Outcome, RunCounts, RunStatus, SequenceRunStatus, SequenceSpec, SyncSpec,
};
use rusqlite::types::FromSql;
use rusqlite::{params, Connection, Row, TransactionBehavior};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The schema, one SQL script per version, applied in order and recorded in
/// `schema_migrations`. Append new versions; never edit an applied one.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "initial schema",
        include_str!("../migrations/sqlite/0001_initial_schema.sql"),
    ),
    (
        2,
        "api tokens",
        include_str!("../migrations/sqlite/0002_api_tokens.sql"),
    ),
    (
        3,
        "generic engine",
        include_str!("../migrations/sqlite/0003_generic_engine.sql"),
    ),
    (
        4,
        "snapshot in key order",
        include_str!("../migrations/sqlite/0004_snapshot_in_key_order.sql"),
    ),
    (
        5,
        "mirror",
        include_str!("../migrations/sqlite/0005_mirror.sql"),
    ),
    (
        6,
        "pause",
        include_str!("../migrations/sqlite/0006_pause.sql"),
    ),
    (
        7,
        "alerts",
        include_str!("../migrations/sqlite/0007_alerts.sql"),
    ),
    (
        8,
        "sessions and rate budgets",
        include_str!("../migrations/sqlite/0008_sessions_and_rate_budgets.sql"),
    ),
    (
        9,
        "run_queue",
        include_str!("../migrations/sqlite/0009_run_queue.sql"),
    ),
    (
        10,
        "stripe exchanges",
        include_str!("../migrations/sqlite/0010_stripe_exchanges.sql"),
    ),
    (
        11,
        "sequences",
        include_str!("../migrations/sqlite/0011_sequences.sql"),
    ),
];

/// How long a writer waits for another process's transaction before giving up.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<SqliteInner>,
    /// The key this open was given. Not shared with other opens of the same database: each
    /// open decrypts with the key it was given, as it would in a process of its own.
    master_key: MasterKey,
}

struct SqliteInner {
    connection: Mutex<Connection>,
    dir: PathBuf,
    database_file: PathBuf,
}

const CONNECTION_COLUMNS: &str =
    "name, kind, config, secret_kind, secret_value, secret_hint, created_at, updated_at";
const MODEL_COLUMNS: &str = "name, connection, sql, created_at, updated_at";
const SYNC_COLUMNS: &str = "name, uid, spec, created_at, updated_at, paused_at, resumed_at";
const RUN_COLUMNS: &str = "id, sync, status, full_resync, started_at, finished_at, rows_total, \
     created_count, updated_count, unchanged_count, not_found_count, rejected_count, \
     failed_count, requests_count, error, not_attempted_count, last_seen_at, retired_count";
const RUN_RECORD_COLUMNS: &str =
    "row_number, key, outcome, destination_id, reason, request_id, changes";
const STRIPE_EXCHANGE_COLUMNS: &str = "row_number, sequence, sent_at, method, path, \
     idempotency_key, request_body, status, response_body, request_id, error, duration_ms";
const API_TOKEN_COLUMNS: &str = "name, prefix, created_at, last_used_at";
const RAISED_ALERT_COLUMNS: &str = "sync_name, condition, message, raised_at";
const DELIVERY_COLUMNS: &str = "id, event_id, event_type, sync_name, run_id, channel, payload, \
     status, attempts, created_at, next_attempt_at, last_attempt_at, answer_status, answer";
const UI_SESSION_COLUMNS: &str = "id_hash, token_name, csrf, signed_in_at, last_seen_at";
const SEQUENCE_COLUMNS: &str = "name, spec, created_at, updated_at";
const SEQUENCE_RUN_COLUMNS: &str = "id, sequence_name, spec, status, reason, driver, step, \
     run_ids, message, dedupe_key, version, started_at, finished_at, updated_at";

impl SqliteStore {
    /// Opens (creating if needed) `DIR/ferry.db` with mode 0600 and applies missing migrations.
    ///
    /// A process opens each workspace database once: a second open of the same file (by device
    /// and inode) shares the connection of the store already open, with the master key it was
    /// given itself. Two handles would be harmless to SQLite itself,
    /// but each open used to create-or-open the file, and closing any descriptor of the file
    /// drops every POSIX lock this process holds on it; another ferry process would then
    /// believe itself alone and delete the WAL under this one.
    pub(crate) async fn open(dir: &Path, master_key: MasterKey) -> Result<SqliteStore, StateError> {
        let dir = dir.to_path_buf();
        let database_file = dir.join(DATABASE_FILE_NAME);
        run_blocking(move || {
            let mut open_stores = OPEN_STORES.lock().unwrap_or_else(|e| e.into_inner());
            open_stores.retain(|(_, store)| store.strong_count() > 0);
            if let Some(identity) = file_identity(&database_file) {
                let open = open_stores
                    .iter()
                    .find(|(id, _)| *id == identity)
                    .and_then(|(_, store)| store.upgrade());
                if let Some(inner) = open {
                    // Opening again still brings the schema up to date, as a first open does.
                    migrate(&mut inner.connection.lock().unwrap_or_else(|e| e.into_inner()))?;
                    return Ok(SqliteStore { inner, master_key });
                }
            }
            let connection = open_database(&database_file)?;
            let identity = file_identity(&database_file).ok_or_else(|| {
                StateError::io(
                    "find the workspace database after opening it",
                    &database_file,
                    std::io::Error::from(std::io::ErrorKind::NotFound),
                )
            })?;
            let inner = Arc::new(SqliteInner {
                connection: Mutex::new(connection),
                dir,
                database_file,
            });
            open_stores.push((identity, Arc::downgrade(&inner)));
            Ok(SqliteStore { inner, master_key })
        })
        .await
    }

    pub(crate) fn workspace_dir(&self) -> &Path {
        &self.inner.dir
    }

    pub(crate) fn master_key(&self) -> &MasterKey {
        &self.master_key
    }

    pub(crate) fn location(&self) -> String {
        self.inner.database_file.display().to_string()
    }

    pub(crate) async fn upsert_connection(
        &self,
        name: &str,
        kind: ConnectionKind,
        config: &serde_json::Value,
        secret: Option<StoredSecret>,
    ) -> Result<(), StateError> {
        let (name, config) = (name.to_string(), config.to_string());
        self.call(move |connection| {
            let now = timestamp_text(ids::now());
            let (secret_kind, secret_value, secret_hint) = match secret {
                Some(secret) => (Some(secret.kind), Some(secret.value), secret.hint),
                None => (None, None, None),
            };
            let transaction = connection
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .doing("saving a connection")?;
            refuse_case_variant(&transaction, ObjectType::Connection, &name)?;
            transaction
                .prepare_cached(
                    "INSERT INTO connections (name, kind, config, secret_kind, secret_value, \
                     secret_hint, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7) \
                     ON CONFLICT (name) DO UPDATE SET kind = excluded.kind, \
                     config = excluded.config, secret_kind = excluded.secret_kind, \
                     secret_value = excluded.secret_value, secret_hint = excluded.secret_hint, \
                     updated_at = excluded.updated_at",
                )
                .and_then(|mut statement| {
                    statement.execute(params![
                        name,
                        kind.as_str(),
                        config,
                        secret_kind,
                        secret_value,
                        secret_hint,
                        now
                    ])
                })
                .doing("saving a connection")?;
            transaction.commit().doing("saving a connection")?;
            Ok(())
        })
        .await
    }

    pub(crate) async fn update_connection_keeping_secret(
        &self,
        name: &str,
        kind: ConnectionKind,
        config: &serde_json::Value,
    ) -> Result<bool, StateError> {
        let (name, config) = (name.to_string(), config.to_string());
        self.call(move |connection| {
            let changed = connection
                .execute(
                    "UPDATE connections SET kind = ?2, config = ?3, updated_at = ?4 WHERE name = ?1",
                    params![name, kind.as_str(), config, timestamp_text(ids::now())],
                )
                .doing("updating a connection")?;
            Ok(changed > 0)
        })
        .await
    }

    pub(crate) async fn get_connection(
        &self,
        name: &str,
    ) -> Result<Option<ConnectionRecord>, StateError> {
        let name = name.to_string();
        self.call(move |connection| {
            let sql = format!("SELECT {CONNECTION_COLUMNS} FROM connections WHERE name = ?1");
            query_optional(connection, &sql, params![name], read_connection)
        })
        .await
    }

    pub(crate) async fn list_connections(&self) -> Result<Vec<ConnectionRecord>, StateError> {
        self.call(|connection| {
            let sql = format!("SELECT {CONNECTION_COLUMNS} FROM connections ORDER BY name");
            query_all(connection, &sql, [], read_connection)
        })
        .await
    }

    pub(crate) async fn remove_connection(&self, name: &str) -> Result<bool, StateError> {
        let name = name.to_string();
        self.call(move |connection| {
            let transaction = connection
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .doing("removing a connection")?;
            let mut used_by = names_of(
                &transaction,
                "model",
                "SELECT name FROM models WHERE connection = ?1 ORDER BY name",
                &name,
            )?;
            used_by.extend(names_of(
                &transaction,
                "sync",
                "SELECT name FROM syncs WHERE destination = ?1 ORDER BY name",
                &name,
            )?);
            if !used_by.is_empty() {
                return Err(StateError::InUse {
                    what: ObjectType::Connection,
                    name,
                    used_by,
                });
            }
            let removed = transaction
                .execute("DELETE FROM connections WHERE name = ?1", params![name])
                .doing("removing a connection")?;
            transaction.commit().doing("removing a connection")?;
            Ok(removed > 0)
        })
        .await
    }

    pub(crate) async fn upsert_model(
        &self,
        name: &str,
        source: &str,
        sql: &str,
    ) -> Result<(), StateError> {
        let (name, source, sql) = (name.to_string(), source.to_string(), sql.to_string());
        self.call(move |connection| {
            let transaction = connection
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .doing("saving a model")?;
            refuse_case_variant(&transaction, ObjectType::Model, &name)?;
            transaction
                .execute(
                    "INSERT INTO models (name, connection, sql, created_at, updated_at) \
                     VALUES (?1, ?2, ?3, ?4, ?4) ON CONFLICT (name) DO UPDATE SET \
                     connection = excluded.connection, sql = excluded.sql, \
                     updated_at = excluded.updated_at",
                    params![name, source, sql, timestamp_text(ids::now())],
                )
                .doing("saving a model")?;
            transaction.commit().doing("saving a model")?;
            Ok(())
        })
        .await
    }

    pub(crate) async fn get_model(&self, name: &str) -> Result<Option<ModelRecord>, StateError> {
        let name = name.to_string();
        self.call(move |connection| {
            let sql = format!("SELECT {MODEL_COLUMNS} FROM models WHERE name = ?1");
            query_optional(connection, &sql, params![name], read_model)
        })
        .await
    }

    pub(crate) async fn list_models(&self) -> Result<Vec<ModelRecord>, StateError> {
        self.call(|connection| {
            let sql = format!("SELECT {MODEL_COLUMNS} FROM models ORDER BY name");
            query_all(connection, &sql, [], read_model)
        })
        .await
    }

    pub(crate) async fn remove_model(&self, name: &str) -> Result<bool, StateError> {
        let name = name.to_string();
        self.call(move |connection| {
            let transaction = connection
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .doing("removing a model")?;
            let used_by = names_of(
                &transaction,
                "sync",
                "SELECT name FROM syncs WHERE model = ?1 ORDER BY name",
                &name,
            )?;
            if !used_by.is_empty() {
                return Err(StateError::InUse {
                    what: ObjectType::Model,
                    name,
                    used_by,
                });
            }
            let removed = transaction
                .execute("DELETE FROM models WHERE name = ?1", params![name])
                .doing("removing a model")?;
            transaction.commit().doing("removing a model")?;
            Ok(removed > 0)
        })
        .await
    }

    pub(crate) async fn upsert_sync(
        &self,
        name: &str,
        spec: &SyncSpec,
    ) -> Result<SyncRecord, StateError> {
        let name = name.to_string();
        let spec = spec.clone();
        self.call(move |connection| {
            let spec_json = sync_spec_json(&spec).to_string();
            let transaction = connection
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .doing("saving a sync")?;
            refuse_case_variant(&transaction, ObjectType::Sync, &name)?;
            let sql = format!(
                "INSERT INTO syncs (name, uid, model, destination, spec, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6) ON CONFLICT (name) DO UPDATE SET \
                 model = excluded.model, destination = excluded.destination, \
                 spec = excluded.spec, updated_at = excluded.updated_at \
                 RETURNING {SYNC_COLUMNS}"
            );
            let saved = query_optional(
                &transaction,
                &sql,
                params![
                    name,
                    ids::new_sync_uid(),
                    spec.model,
                    spec.destination,
                    spec_json,
                    timestamp_text(ids::now())
                ],
                read_sync,
            )?
            .ok_or_else(|| StateError::InvalidInput(format!("sync '{name}' was not saved")))?;
            transaction.commit().doing("saving a sync")?;
            Ok(saved)
        })
        .await
    }

    pub(crate) async fn get_sync(&self, name: &str) -> Result<Option<SyncRecord>, StateError> {
        let name = name.to_string();
        self.call(move |connection| {
            let sql = format!("SELECT {SYNC_COLUMNS} FROM syncs WHERE name = ?1");
            query_optional(connection, &sql, params![name], read_sync)
        })
        .await
    }

    pub(crate) async fn set_sync_paused(
        &self,
        name: &str,
        paused: bool,
        now: DateTime<Utc>,
    ) -> Result<Option<SyncRecord>, StateError> {
        let name = name.to_string();
        self.call(move |connection| {
            let sql = if paused {
                format!(
                    "UPDATE syncs SET paused_at = COALESCE(paused_at, ?2) WHERE name = ?1 \
                     RETURNING {SYNC_COLUMNS}"
                )
            } else {
                format!(
                    "UPDATE syncs SET paused_at = NULL, resumed_at = CASE WHEN paused_at IS NULL \
                     THEN resumed_at ELSE ?2 END WHERE name = ?1 RETURNING {SYNC_COLUMNS}"
                )
            };
            query_optional(
                connection,
                &sql,
                params![name, timestamp_text(now)],
                read_sync,
            )
        })
        .await
    }

    pub(crate) async fn list_syncs(&self) -> Result<Vec<SyncRecord>, StateError> {
        self.call(|connection| {
            let sql = format!("SELECT {SYNC_COLUMNS} FROM syncs ORDER BY name");
            query_all(connection, &sql, [], read_sync)
        })
        .await
    }

    pub(crate) async fn remove_sync(&self, name: &str) -> Result<bool, StateError> {
        let name = name.to_string();
        self.call(move |connection| {
            let transaction = connection
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .doing("removing a sync")?;
            for statement in [
                "DELETE FROM run_records WHERE run_id IN (SELECT id FROM runs WHERE sync = ?1)",
                "DELETE FROM stripe_exchanges WHERE run_id IN (SELECT id FROM runs WHERE sync = ?1)",
                "DELETE FROM runs WHERE sync = ?1",
                "DELETE FROM snapshot WHERE sync = ?1",
                "DELETE FROM pending_creates WHERE sync = ?1",
                "DELETE FROM raised_alerts WHERE sync_name = ?1",
                "DELETE FROM run_requests WHERE sync_name = ?1",
            ] {
                transaction
                    .execute(statement, params![name])
                    .doing("removing a sync")?;
            }
            let removed = transaction
                .execute("DELETE FROM syncs WHERE name = ?1", params![name])
                .doing("removing a sync")?;
            transaction.commit().doing("removing a sync")?;
            Ok(removed > 0)
        })
        .await
    }

    pub(crate) async fn insert_run(&self, run: &RunRecord) -> Result<(), StateError> {
        let run = run.clone();
        self.call(move |connection| {
            let counts = counts_to_columns(&run.counts);
            connection
                .execute(
                    &format!(
                        "INSERT INTO runs ({RUN_COLUMNS}) VALUES \
                         (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)"
                    ),
                    params![
                        run.id,
                        run.sync,
                        run.status.as_str(),
                        run.full_resync,
                        timestamp_text(run.started_at),
                        run.finished_at.map(timestamp_text),
                        counts[0],
                        counts[1],
                        counts[2],
                        counts[3],
                        counts[4],
                        counts[5],
                        counts[6],
                        counts[7],
                        run.error,
                        counts[8],
                        run.last_seen_at.map(timestamp_text),
                        counts[9],
                    ],
                )
                .doing("starting a run")?;
            Ok(())
        })
        .await
    }

    pub(crate) async fn update_run_counts(
        &self,
        run_id: &str,
        counts: &RunCounts,
    ) -> Result<bool, StateError> {
        let (run_id, counts) = (run_id.to_string(), *counts);
        self.call(move |connection| {
            let changed = set_run_counts(connection, &run_id, None, &counts)?;
            Ok(changed > 0)
        })
        .await
    }

    pub(crate) async fn finish_run(
        &self,
        run_id: &str,
        status: RunStatus,
        counts: &RunCounts,
        error: Option<&str>,
        finished_at: DateTime<Utc>,
    ) -> Result<bool, StateError> {
        let (run_id, counts, error) = (run_id.to_string(), *counts, error.map(str::to_string));
        self.call(move |connection| {
            let transaction = connection
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .doing("finishing a run")?;
            let changed = transaction
                .execute(
                    "UPDATE runs SET status = ?2, error = ?3, finished_at = ?4 WHERE id = ?1",
                    params![run_id, status.as_str(), error, timestamp_text(finished_at)],
                )
                .doing("finishing a run")?;
            set_run_counts(&transaction, &run_id, None, &counts)?;
            transaction.commit().doing("finishing a run")?;
            Ok(changed > 0)
        })
        .await
    }

    pub(crate) async fn get_run(&self, run_id: &str) -> Result<Option<RunRecord>, StateError> {
        let run_id = run_id.to_string();
        self.call(move |connection| {
            let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1");
            query_optional(connection, &sql, params![run_id], read_run)
        })
        .await
    }

    pub(crate) async fn list_runs(
        &self,
        sync: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RunRecord>, StateError> {
        let sync = sync.map(str::to_string);
        let limit = to_sql_integer(limit as u64);
        self.call(move |connection| {
            let sql = format!(
                "SELECT {RUN_COLUMNS} FROM runs WHERE (?1 IS NULL OR sync = ?1) \
                 ORDER BY id DESC LIMIT ?2"
            );
            query_all(connection, &sql, params![sync, limit], read_run)
        })
        .await
    }

    /// Ends the sync's runs still marked `running` as `interrupted`, finished when they were
    /// last seen alive (their start, if never).
    pub(crate) async fn mark_interrupted_runs(&self, sync: &str) -> Result<u64, StateError> {
        let sync = sync.to_string();
        self.call(move |connection| {
            let changed = connection
                .execute(
                    "UPDATE runs SET status = ?2, finished_at = COALESCE(last_seen_at, started_at) \
                     WHERE sync = ?1 AND status = ?3",
                    params![
                        sync,
                        RunStatus::Interrupted.as_str(),
                        RunStatus::Running.as_str()
                    ],
                )
                .doing("marking interrupted runs")?;
            Ok(changed as u64)
        })
        .await
    }

    /// Records that a run is alive.
    pub(crate) async fn touch_run(
        &self,
        run_id: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StateError> {
        let run_id = run_id.to_string();
        self.call(move |connection| {
            let changed = connection
                .execute(
                    "UPDATE runs SET last_seen_at = ?2 WHERE id = ?1",
                    params![run_id, timestamp_text(now)],
                )
                .doing("recording that a run is alive")?;
            Ok(changed > 0)
        })
        .await
    }

    /// The records after row `after_row`, by row number, optionally of one outcome.
    pub(crate) async fn list_run_records(
        &self,
        run_id: &str,
        filter: Option<Outcome>,
        after_row: u64,
        limit: usize,
    ) -> Result<Vec<RunRecordRow>, StateError> {
        let run_id = run_id.to_string();
        let (after_row, limit) = (to_sql_integer(after_row), to_sql_integer(limit as u64));
        self.call(move |connection| {
            // With a filter, `outcome = ?2` without an OR, so that SQLite seeks in
            // (run_id, outcome, row_number) instead of reading every record to find a rare one.
            let outcome_condition = match filter {
                Some(_) => "outcome = ?2",
                None => "?2 IS NULL",
            };
            let sql = format!(
                "SELECT {RUN_RECORD_COLUMNS} FROM run_records \
                 WHERE run_id = ?1 AND {outcome_condition} AND row_number > ?3 \
                 ORDER BY row_number LIMIT ?4"
            );
            let outcome = filter.map(Outcome::as_str);
            query_all(
                connection,
                &sql,
                params![run_id, outcome, after_row, limit],
                read_run_record,
            )
        })
        .await
    }

    pub(crate) async fn latest_run_records(
        &self,
        run_id: &str,
        filter: Option<Outcome>,
        limit: usize,
    ) -> Result<Vec<RunRecordRow>, StateError> {
        let run_id = run_id.to_string();
        let limit = to_sql_integer(limit as u64);
        self.call(move |connection| {
            // As in `list_run_records`: no OR, so that SQLite seeks in the index.
            let outcome_condition = match filter {
                Some(_) => "outcome = ?2",
                None => "?2 IS NULL",
            };
            let sql = format!(
                "SELECT {RUN_RECORD_COLUMNS} FROM run_records \
                 WHERE run_id = ?1 AND {outcome_condition} \
                 ORDER BY row_number DESC LIMIT ?3"
            );
            let outcome = filter.map(Outcome::as_str);
            query_all(
                connection,
                &sql,
                params![run_id, outcome, limit],
                read_run_record,
            )
        })
        .await
    }

    /// Deletes the runs (and their records) that finished before `before`, keeping each sync's
    /// newest run. Returns how many runs went.
    pub(crate) async fn prune_runs(&self, before: DateTime<Utc>) -> Result<u64, StateError> {
        self.call(move |connection| {
            let doing = "removing old runs";
            let transaction = connection
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .doing(doing)?;
            let old = "SELECT id FROM runs r WHERE finished_at IS NOT NULL AND finished_at < ?1 \
                       AND id <> (SELECT MAX(id) FROM runs n WHERE n.sync = r.sync)";
            for table in ["run_records", "stripe_exchanges"] {
                transaction
                    .execute(
                        &format!("DELETE FROM {table} WHERE run_id IN ({old})"),
                        params![timestamp_text(before)],
                    )
                    .doing(doing)?;
            }
            let removed = transaction
                .execute(
                    &format!("DELETE FROM runs WHERE id IN ({old})"),
                    params![timestamp_text(before)],
                )
                .doing(doing)?;
            transaction
                .execute(
                    "DELETE FROM deliveries WHERE created_at < ?1 AND status <> ?2",
                    params![timestamp_text(before), DeliveryStatus::Pending.as_str()],
                )
                .doing(doing)?;
            transaction
                .execute(
                    "DELETE FROM sequence_runs WHERE id IN (SELECT id FROM sequence_runs r \
                     WHERE finished_at IS NOT NULL AND finished_at < ?1 AND id <> \
                     (SELECT MAX(id) FROM sequence_runs n WHERE n.sequence_name = r.sequence_name))",
                    params![timestamp_text(before)],
                )
                .doing(doing)?;
            transaction.commit().doing(doing)?;
            Ok(removed as u64)
        })
        .await
    }

    /// The exchanges of one record of a run, by sequence.
    pub(crate) async fn list_stripe_exchanges(
        &self,
        run_id: &str,
        row_number: u64,
    ) -> Result<Vec<StripeExchange>, StateError> {
        let run_id = run_id.to_string();
        let row_number = to_sql_integer(row_number);
        self.call(move |connection| {
            let sql = format!(
                "SELECT {STRIPE_EXCHANGE_COLUMNS} FROM stripe_exchanges \
                 WHERE run_id = ?1 AND row_number = ?2 ORDER BY sequence"
            );
            query_all(
                connection,
                &sql,
                params![run_id, row_number],
                read_stripe_exchange,
            )
        })
        .await
    }

    pub(crate) async fn prune_stripe_exchanges(
        &self,
        sent_before: DateTime<Utc>,
    ) -> Result<u64, StateError> {
        self.call(move |connection| {
            let removed = connection
                .execute(
                    "DELETE FROM stripe_exchanges WHERE sent_at < ?1",
                    params![timestamp_text(sent_before)],
                )
                .doing("removing old Stripe exchanges")?;
            Ok(removed as u64)
        })
        .await
    }

    pub(crate) async fn count_run_records(
        &self,
        run_id: &str,
        filter: Option<Outcome>,
    ) -> Result<u64, StateError> {
        let run_id = run_id.to_string();
        self.call(move |connection| {
            let count: i64 = connection
                .query_row(
                    "SELECT COUNT(*) FROM run_records WHERE run_id = ?1 AND (?2 IS NULL OR outcome = ?2)",
                    params![run_id, filter.map(Outcome::as_str)],
                    |row| row.get(0),
                )
                .doing("counting run records")?;
            Ok(u64::try_from(count).unwrap_or(0))
        })
        .await
    }

    /// Up to `limit` snapshot entries after key `after`, in key (byte) order, without payloads.
    pub(crate) async fn snapshot_keys(
        &self,
        sync: &str,
        object: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<SnapshotKey>, StateError> {
        let (sync, object, after) = (
            sync.to_string(),
            object.to_string(),
            after.map(str::to_string),
        );
        let limit = to_sql_integer(limit as u64);
        self.call(move |connection| {
            // Two statements rather than `(?3 IS NULL OR key > ?3)`: SQLite plans a statement
            // before it sees its parameters, and with the OR it would scan every page from the
            // object's first key instead of seeking to `after` in the primary key.
            let sql = match after {
                Some(_) => {
                    "SELECT key, destination_id, payload_hash FROM snapshot \
                     WHERE sync = ?1 AND object = ?2 AND key > ?3 ORDER BY key LIMIT ?4"
                }
                None => {
                    "SELECT key, destination_id, payload_hash FROM snapshot \
                     WHERE sync = ?1 AND object = ?2 AND ?3 IS NULL ORDER BY key LIMIT ?4"
                }
            };
            query_all(
                connection,
                sql,
                params![sync, object, after, limit],
                |row| {
                    Ok(SnapshotKey {
                        key: column(row, 0)?,
                        destination_id: column(row, 1)?,
                        payload_hash: column(row, 2)?,
                    })
                },
            )
        })
        .await
    }

    /// The snapshot entries of these keys (those that have one).
    pub(crate) async fn snapshot_entries(
        &self,
        sync: &str,
        object: &str,
        keys: &[String],
    ) -> Result<Vec<(String, SnapshotEntry)>, StateError> {
        let (sync, object, keys) = (sync.to_string(), object.to_string(), keys.to_vec());
        self.call(move |connection| {
            query_in_chunks(
                connection,
                "SELECT key, destination_id, payload_hash, payload, updated_at FROM snapshot \
                 WHERE sync = ?1 AND object = ?2 AND key IN ({keys})",
                &[&sync, &object],
                &keys,
                "reading the snapshot",
                |row| {
                    let entry = SnapshotEntry {
                        destination_id: column(row, 1)?,
                        payload_hash: column(row, 2)?,
                        payload: column(row, 3)?,
                        updated_at: parse_timestamp(&column::<String>(row, 4)?)?,
                    };
                    Ok((column::<String>(row, 0)?, entry))
                },
            )
        })
        .await
    }

    pub(crate) async fn count_snapshot(&self, sync: &str, object: &str) -> Result<u64, StateError> {
        let (sync, object) = (sync.to_string(), object.to_string());
        self.call(move |connection| {
            let count: i64 = connection
                .query_row(
                    "SELECT COUNT(*) FROM snapshot WHERE sync = ?1 AND object = ?2",
                    params![sync, object],
                    |row| row.get(0),
                )
                .doing("counting the snapshot")?;
            Ok(u64::try_from(count).unwrap_or(0))
        })
        .await
    }

    /// The saved creates of these keys (those that have one).
    pub(crate) async fn pending_creates(
        &self,
        sync: &str,
        object: &str,
        keys: &[String],
    ) -> Result<Vec<PendingCreate>, StateError> {
        let (sync, object, keys) = (sync.to_string(), object.to_string(), keys.to_vec());
        self.call(move |connection| {
            query_in_chunks(
                connection,
                "SELECT key, idempotency_key, request_body, created_at FROM pending_creates \
                 WHERE sync = ?1 AND object = ?2 AND key IN ({keys})",
                &[&sync, &object],
                &keys,
                "reading pending creates",
                |row| {
                    Ok(PendingCreate {
                        key: column(row, 0)?,
                        idempotency_key: column(row, 1)?,
                        request_body: column(row, 2)?,
                        created_at: parse_timestamp(&column::<String>(row, 3)?)?,
                    })
                },
            )
        })
        .await
    }

    pub(crate) async fn save_pending_creates(
        &self,
        sync: &str,
        object: &str,
        items: &[&PendingCreate],
    ) -> Result<(), StateError> {
        let (sync, object) = (sync.to_string(), object.to_string());
        let items: Vec<PendingCreate> = items.iter().map(|item| (*item).clone()).collect();
        self.call(move |connection| {
            let transaction = connection
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .doing("saving pending creates")?;
            {
                let mut insert = transaction
                    .prepare_cached(
                        "INSERT INTO pending_creates (sync, object, key, idempotency_key, \
                         request_body, created_at) VALUES (?1, ?6, ?2, ?3, ?4, ?5) \
                         ON CONFLICT (sync, object, key) DO UPDATE \
                         SET idempotency_key = excluded.idempotency_key, \
                         request_body = excluded.request_body, created_at = excluded.created_at",
                    )
                    .doing("saving pending creates")?;
                for item in &items {
                    insert
                        .execute(params![
                            sync,
                            item.key,
                            item.idempotency_key,
                            item.request_body,
                            timestamp_text(item.created_at),
                            object
                        ])
                        .doing("saving pending creates")?;
                }
            }
            transaction.commit().doing("saving pending creates")?;
            Ok(())
        })
        .await
    }

    pub(crate) async fn commit_batch(
        &self,
        sync: &str,
        object: &str,
        run_id: &str,
        batch: &CommitBatchRef<'_>,
    ) -> Result<(), StateError> {
        let owned = OwnedBatch::from_ref(batch);
        let (sync, object, run_id) = (sync.to_string(), object.to_string(), run_id.to_string());
        self.call(move |connection| {
            let doing = "committing a batch";
            let transaction = connection
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .doing(doing)?;
            if set_run_counts(&transaction, &run_id, Some(&sync), &owned.counts)? == 0 {
                return Err(StateError::NotFound {
                    what: ObjectType::Run,
                    name: run_id.clone(),
                });
            }
            {
                let mut insert_record = transaction
                    .prepare_cached(&format!(
                        "INSERT INTO run_records (run_id, {RUN_RECORD_COLUMNS}) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
                    ))
                    .doing(doing)?;
                for record in &owned.records {
                    insert_record
                        .execute(params![
                            run_id,
                            to_sql_integer(record.row_number),
                            record.key,
                            record.outcome.as_str(),
                            record.destination_id,
                            record.reason,
                            record.request_id,
                            record.changes,
                        ])
                        .doing(doing)?;
                }
                let mut upsert_snapshot = transaction
                    .prepare_cached(
                        "INSERT INTO snapshot (sync, object, key, destination_id, payload_hash, \
                         payload, updated_at) VALUES (?1, ?7, ?2, ?3, ?4, ?5, ?6) \
                         ON CONFLICT (sync, object, key) DO \
                         UPDATE SET destination_id = excluded.destination_id, \
                         payload_hash = excluded.payload_hash, payload = excluded.payload, \
                         updated_at = excluded.updated_at",
                    )
                    .doing(doing)?;
                let mut delete_pending = transaction
                    .prepare_cached(
                        "DELETE FROM pending_creates WHERE sync = ?1 AND object = ?3 AND key = ?2",
                    )
                    .doing(doing)?;
                for (key, entry) in &owned.snapshot_upserts {
                    upsert_snapshot
                        .execute(params![
                            sync,
                            key,
                            entry.destination_id,
                            entry.payload_hash,
                            entry.payload,
                            timestamp_text(entry.updated_at),
                            object
                        ])
                        .doing(doing)?;
                    delete_pending
                        .execute(params![sync, key, object])
                        .doing(doing)?;
                }
                // A create's outcome both remembers its record and resolves its pending
                // entry: that entry is gone already.
                let remembered: std::collections::HashSet<&str> = owned
                    .snapshot_upserts
                    .iter()
                    .map(|(key, _)| key.as_str())
                    .collect();
                for key in &owned.pending_deletes {
                    if remembered.contains(key.as_str()) {
                        continue;
                    }
                    delete_pending
                        .execute(params![sync, key, object])
                        .doing(doing)?;
                }
                let mut delete_snapshot = transaction
                    .prepare_cached(
                        "DELETE FROM snapshot WHERE sync = ?1 AND object = ?3 AND key = ?2",
                    )
                    .doing(doing)?;
                for key in &owned.snapshot_deletes {
                    delete_snapshot
                        .execute(params![sync, key, object])
                        .doing(doing)?;
                }
                let mut insert_exchange = transaction
                    .prepare_cached(&format!(
                        "INSERT INTO stripe_exchanges (run_id, {STRIPE_EXCHANGE_COLUMNS}) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13) \
                         ON CONFLICT (run_id, sequence) DO NOTHING"
                    ))
                    .doing(doing)?;
                for exchange in &owned.exchanges {
                    insert_exchange
                        .execute(params![
                            run_id,
                            to_sql_integer(exchange.row_number),
                            to_sql_integer(exchange.sequence),
                            timestamp_text(exchange.sent_at),
                            exchange.method,
                            exchange.path,
                            exchange.idempotency_key,
                            exchange.request_body,
                            exchange.status,
                            exchange.response_body,
                            exchange.request_id,
                            exchange.error,
                            to_sql_integer(exchange.duration_ms),
                        ])
                        .doing(doing)?;
                }
            }
            transaction.commit().doing(doing)?;
            Ok(())
        })
        .await
    }

    pub(crate) async fn index_state(&self, scope: &str) -> Result<Option<IndexState>, StateError> {
        let scope = scope.to_string();
        self.call(move |connection| {
            query_optional(
                connection,
                "SELECT key_names, built_at, created_through, events_through, refreshed_at \
                 FROM key_index_state WHERE scope = ?1",
                params![scope],
                |row| {
                    let key_names = parse_json(&column::<String>(row, 0)?, "index key names")?;
                    Ok(IndexState {
                        key_names: serde_json::from_value(key_names).map_err(|e| {
                            StateError::Corrupt(format!("unreadable index key names ({e})"))
                        })?,
                        built_at: parse_timestamp(&column::<String>(row, 1)?)?,
                        created_through: column(row, 2)?,
                        events_through: column(row, 3)?,
                        refreshed_at: parse_timestamp(&column::<String>(row, 4)?)?,
                    })
                },
            )
        })
        .await
    }

    /// Forgets every entry and the state of the index, before it is built anew.
    pub(crate) async fn index_clear(&self, scope: &str) -> Result<(), StateError> {
        let scope = scope.to_string();
        self.call(move |connection| {
            let doing = "clearing the key index";
            let transaction = connection
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .doing(doing)?;
            transaction
                .execute("DELETE FROM key_index WHERE scope = ?1", params![scope])
                .doing(doing)?;
            transaction
                .execute(
                    "DELETE FROM key_index_state WHERE scope = ?1",
                    params![scope],
                )
                .doing(doing)?;
            transaction.commit().doing(doing)
        })
        .await
    }

    /// Replaces the keys of each record (a record with no keys is removed), and removes the
    /// records `removed`, in one transaction.
    pub(crate) async fn index_update(
        &self,
        scope: &str,
        records: &[IndexedRecord],
        removed: &[String],
    ) -> Result<(), StateError> {
        let (scope, records, removed) = (scope.to_string(), records.to_vec(), removed.to_vec());
        self.call(move |connection| {
            let doing = "updating the key index";
            let transaction = connection
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .doing(doing)?;
            {
                let mut forget = transaction
                    .prepare_cached("DELETE FROM key_index WHERE scope = ?1 AND destination_id = ?2")
                    .doing(doing)?;
                let mut insert = transaction
                    .prepare_cached(
                        "INSERT OR IGNORE INTO key_index (scope, key_name, key_value, destination_id) \
                         VALUES (?1, ?2, ?3, ?4)",
                    )
                    .doing(doing)?;
                for id in &removed {
                    forget.execute(params![scope, id]).doing(doing)?;
                }
                let mut indexed_keys = transaction
                    .prepare_cached(
                        // Without the hint SQLite prefers scanning the covering primary
                        // key over the whole scope.
                        "SELECT key_name, key_value FROM key_index INDEXED BY key_index_by_id \
                         WHERE scope = ?1 AND destination_id = ?2",
                    )
                    .doing(doing)?;
                for record in &records {
                    if !record.new {
                        // Most records listed again (a refresh's overlap, a run's own creates
                        // listed at its end) still carry the keys they are indexed under: a
                        // read then saves rewriting their rows.
                        let mut indexed: Vec<(String, String)> = indexed_keys
                            .query_map(params![scope, record.destination_id], |row| {
                                Ok((row.get(0)?, row.get(1)?))
                            })
                            .doing(doing)?
                            .collect::<Result<_, _>>()
                            .doing(doing)?;
                        let mut listed = record.keys.clone();
                        indexed.sort();
                        listed.sort();
                        if indexed == listed {
                            continue;
                        }
                        forget
                            .execute(params![scope, record.destination_id])
                            .doing(doing)?;
                    }
                    for (name, value) in &record.keys {
                        insert
                            .execute(params![scope, name, value, record.destination_id])
                            .doing(doing)?;
                    }
                }
            }
            transaction.commit().doing(doing)
        })
        .await
    }

    /// The ids indexed under these values of one key: (value, id) pairs.
    pub(crate) async fn index_lookup(
        &self,
        scope: &str,
        key_name: &str,
        values: &[String],
    ) -> Result<Vec<(String, String)>, StateError> {
        let (scope, key_name, values) = (scope.to_string(), key_name.to_string(), values.to_vec());
        self.call(move |connection| {
            let mut found = query_in_chunks(
                connection,
                "SELECT key_value, destination_id FROM key_index \
                 WHERE scope = ?1 AND key_name = ?2 AND key_value IN ({keys})",
                &[&scope, &key_name],
                &values,
                "reading the key index",
                |row| Ok((column::<String>(row, 0)?, column::<String>(row, 1)?)),
            )?;
            found.sort_by(|a, b| a.1.cmp(&b.1));
            Ok(found)
        })
        .await
    }

    pub(crate) async fn index_save_state(
        &self,
        scope: &str,
        state: &IndexState,
    ) -> Result<(), StateError> {
        let (scope, state) = (scope.to_string(), state.clone());
        self.call(move |connection| {
            connection
                .execute(
                    "INSERT INTO key_index_state (scope, key_names, built_at, created_through, \
                     events_through, refreshed_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                     ON CONFLICT (scope) DO UPDATE SET key_names = excluded.key_names, \
                     built_at = excluded.built_at, created_through = excluded.created_through, \
                     events_through = excluded.events_through, refreshed_at = excluded.refreshed_at",
                    params![
                        scope,
                        serde_json::Value::from(state.key_names.clone()).to_string(),
                        timestamp_text(state.built_at),
                        state.created_through,
                        state.events_through,
                        timestamp_text(state.refreshed_at)
                    ],
                )
                .doing("saving the key index state")?;
            Ok(())
        })
        .await
    }

    /// Inserts the token; `Ok(false)` when one with its name exists.
    pub(crate) async fn insert_api_token(
        &self,
        record: &ApiTokenRecord,
        token_hash: &str,
    ) -> Result<bool, StateError> {
        let (record, token_hash) = (record.clone(), token_hash.to_string());
        self.call(move |connection| {
            let transaction = connection
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .doing("creating an API token")?;
            refuse_case_variant(&transaction, ObjectType::ApiToken, &record.name)?;
            let inserted = transaction
                .execute(
                    "INSERT INTO api_tokens (name, token_hash, prefix, created_at, last_used_at) \
                     VALUES (?1, ?2, ?3, ?4, NULL) ON CONFLICT (name) DO NOTHING",
                    params![
                        record.name,
                        token_hash,
                        record.prefix,
                        timestamp_text(record.created_at)
                    ],
                )
                .doing("creating an API token")?;
            transaction.commit().doing("creating an API token")?;
            Ok(inserted > 0)
        })
        .await
    }

    pub(crate) async fn list_api_tokens(&self) -> Result<Vec<ApiTokenRecord>, StateError> {
        self.call(|connection| {
            let sql = format!("SELECT {API_TOKEN_COLUMNS} FROM api_tokens ORDER BY name");
            query_all(connection, &sql, [], read_api_token)
        })
        .await
    }

    pub(crate) async fn delete_api_token(&self, name: &str) -> Result<bool, StateError> {
        let name = name.to_string();
        self.call(move |connection| {
            let removed = connection
                .execute("DELETE FROM api_tokens WHERE name = ?1", params![name])
                .doing("revoking an API token")?;
            Ok(removed > 0)
        })
        .await
    }

    /// The token with this hash, its `last_used_at` first set to `now` unless it was set less
    /// than a minute ago.
    pub(crate) async fn touch_api_token(
        &self,
        token_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<ApiTokenRecord>, StateError> {
        let token_hash = token_hash.to_string();
        self.call(move |connection| {
            let sql = format!("SELECT {API_TOKEN_COLUMNS} FROM api_tokens WHERE token_hash = ?1");
            let Some(mut record) =
                query_optional(connection, &sql, params![token_hash], read_api_token)?
            else {
                return Ok(None);
            };
            if api_tokens::last_used_is_stale(record.last_used_at, now) {
                connection
                    .prepare_cached("UPDATE api_tokens SET last_used_at = ?2 WHERE token_hash = ?1")
                    .and_then(|mut statement| {
                        statement.execute(params![token_hash, timestamp_text(now)])
                    })
                    .doing("recording the use of an API token")?;
                record.last_used_at = Some(now);
            }
            Ok(Some(record))
        })
        .await
    }

    pub(crate) async fn count_api_tokens(&self) -> Result<u64, StateError> {
        self.call(|connection| {
            let count: i64 = connection
                .query_row("SELECT COUNT(*) FROM api_tokens", [], |row| row.get(0))
                .doing("counting API tokens")?;
            Ok(u64::try_from(count).unwrap_or(0))
        })
        .await
    }

    /// The raised alerts of one sync, or of all.
    pub(crate) async fn raised_alerts(
        &self,
        sync: Option<&str>,
    ) -> Result<Vec<RaisedAlert>, StateError> {
        let sync = sync.map(str::to_string);
        self.call(move |connection| {
            let sql = format!(
                "SELECT {RAISED_ALERT_COLUMNS} FROM raised_alerts \
                 WHERE (?1 IS NULL OR sync_name = ?1)"
            );
            query_all(connection, &sql, params![sync], read_raised_alert)
        })
        .await
    }

    /// Raises the alert, or takes the new message of the one already raised; `Ok(false)` when
    /// the sync does not exist.
    pub(crate) async fn raise_alert(
        &self,
        sync: &str,
        condition: AlertCondition,
        message: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, StateError> {
        let (sync, message) = (sync.to_string(), message.to_string());
        self.call(move |connection| {
            // The WHERE also keeps SQLite from reading `ON CONFLICT` as a join's `ON`.
            let saved = connection
                .execute(
                    "INSERT INTO raised_alerts (sync_name, condition, message, raised_at) \
                     SELECT name, ?2, ?3, ?4 FROM syncs WHERE name = ?1 \
                     ON CONFLICT (sync_name, condition) DO UPDATE SET message = excluded.message",
                    params![sync, condition.as_str(), message, timestamp_text(at)],
                )
                .doing("raising an alert")?;
            Ok(saved > 0)
        })
        .await
    }

    pub(crate) async fn resolve_alert(
        &self,
        sync: &str,
        condition: AlertCondition,
    ) -> Result<bool, StateError> {
        let sync = sync.to_string();
        self.call(move |connection| {
            let removed = connection
                .execute(
                    "DELETE FROM raised_alerts WHERE sync_name = ?1 AND condition = ?2",
                    params![sync, condition.as_str()],
                )
                .doing("resolving an alert")?;
            Ok(removed > 0)
        })
        .await
    }

    /// Inserts the deliveries in one transaction.
    pub(crate) async fn insert_deliveries(
        &self,
        deliveries: &[DeliveryRecord],
    ) -> Result<(), StateError> {
        let deliveries = deliveries.to_vec();
        self.call(move |connection| {
            let doing = "queueing deliveries";
            let transaction = connection
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .doing(doing)?;
            {
                let mut insert = transaction
                    .prepare_cached(&format!(
                        "INSERT INTO deliveries ({DELIVERY_COLUMNS}) VALUES \
                         (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
                    ))
                    .doing(doing)?;
                for delivery in &deliveries {
                    insert
                        .execute(params![
                            delivery.id,
                            delivery.event_id,
                            delivery.event_type,
                            delivery.sync,
                            delivery.run_id,
                            delivery.channel,
                            delivery.payload,
                            delivery.status.as_str(),
                            delivery.attempts,
                            timestamp_text(delivery.created_at),
                            delivery.next_attempt_at.map(timestamp_text),
                            delivery.last_attempt_at.map(timestamp_text),
                            delivery.answer_status,
                            delivery.answer,
                        ])
                        .doing(doing)?;
                }
            }
            transaction.commit().doing(doing)?;
            Ok(())
        })
        .await
    }

    /// Pending deliveries due at `now`, oldest first.
    pub(crate) async fn due_deliveries(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<DeliveryRecord>, StateError> {
        self.call(move |connection| {
            let sql = format!(
                "SELECT {DELIVERY_COLUMNS} FROM deliveries \
                 WHERE status = ?1 AND next_attempt_at <= ?2 ORDER BY created_at, id LIMIT ?3"
            );
            query_all(
                connection,
                &sql,
                params![DeliveryStatus::Pending.as_str(), timestamp_text(now), limit],
                read_delivery,
            )
        })
        .await
    }

    /// Like `due_deliveries`, and moves each one's next attempt to `lease_until` in the same
    /// statement, so a second process draining the queue meanwhile does not send it too.
    pub(crate) async fn claim_due_deliveries(
        &self,
        now: DateTime<Utc>,
        limit: u32,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<DeliveryRecord>, StateError> {
        self.call(move |connection| {
            let sql = format!(
                "UPDATE deliveries SET next_attempt_at = ?4 WHERE id IN (\
                 SELECT id FROM deliveries WHERE status = ?1 AND next_attempt_at <= ?2 \
                 ORDER BY created_at, id LIMIT ?3) RETURNING {DELIVERY_COLUMNS}"
            );
            query_all(
                connection,
                &sql,
                params![
                    DeliveryStatus::Pending.as_str(),
                    timestamp_text(now),
                    limit,
                    timestamp_text(lease_until)
                ],
                read_delivery,
            )
        })
        .await
    }

    /// Counts the attempt and keeps its outcome; `Ok(false)` when there is no such delivery.
    pub(crate) async fn record_delivery_attempt(
        &self,
        id: &str,
        attempt: &DeliveryAttempt,
    ) -> Result<bool, StateError> {
        let (id, attempt) = (id.to_string(), attempt.clone());
        self.call(move |connection| {
            let changed = connection
                .execute(
                    "UPDATE deliveries SET attempts = attempts + 1, status = ?2, \
                     next_attempt_at = ?3, last_attempt_at = ?4, answer_status = ?5, answer = ?6 \
                     WHERE id = ?1",
                    params![
                        id,
                        attempt.status.as_str(),
                        attempt.next_attempt_at.map(timestamp_text),
                        timestamp_text(attempt.at),
                        attempt.answer_status,
                        attempt.answer
                    ],
                )
                .doing("recording a delivery attempt")?;
            Ok(changed > 0)
        })
        .await
    }

    /// The newest deliveries, of one sync or of all, newest first.
    pub(crate) async fn list_deliveries(
        &self,
        sync: Option<&str>,
        limit: u32,
    ) -> Result<Vec<DeliveryRecord>, StateError> {
        let sync = sync.map(str::to_string);
        self.call(move |connection| {
            // With a sync, `sync_name = ?1` without an OR, so SQLite reads its index backwards.
            let sync_condition = match sync {
                Some(_) => "sync_name = ?1",
                None => "?1 IS NULL",
            };
            let sql = format!(
                "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE {sync_condition} \
                 ORDER BY created_at DESC, id DESC LIMIT ?2"
            );
            query_all(connection, &sql, params![sync, limit], read_delivery)
        })
        .await
    }

    pub(crate) async fn get_delivery(
        &self,
        id: &str,
    ) -> Result<Option<DeliveryRecord>, StateError> {
        let id = id.to_string();
        self.call(move |connection| {
            let sql = format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id = ?1");
            query_optional(connection, &sql, params![id], read_delivery)
        })
        .await
    }

    /// Inserts the session; `Ok(false)` when one with its hash exists.
    pub(crate) async fn insert_ui_session(&self, session: &UiSession) -> Result<bool, StateError> {
        let session = session.clone();
        self.call(move |connection| {
            let inserted = connection
                .execute(
                    &format!(
                        "INSERT INTO ui_sessions ({UI_SESSION_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5) \
                         ON CONFLICT (id_hash) DO NOTHING"
                    ),
                    params![
                        session.id_hash,
                        session.token_name,
                        session.csrf,
                        timestamp_text(session.signed_in_at),
                        timestamp_text(session.last_seen_at)
                    ],
                )
                .doing("saving a web UI session")?;
            Ok(inserted > 0)
        })
        .await
    }

    /// The session seen again at `now` if it was seen at or after `idle_cutoff`; otherwise it
    /// is deleted. Two statements, each atomic: the delete re-checks idleness, so a session
    /// another process saw meanwhile stays.
    pub(crate) async fn touch_ui_session(
        &self,
        id_hash: &str,
        now: DateTime<Utc>,
        idle_cutoff: DateTime<Utc>,
    ) -> Result<Option<UiSession>, StateError> {
        let id_hash = id_hash.to_string();
        self.call(move |connection| {
            let (now, idle_cutoff) = (timestamp_text(now), timestamp_text(idle_cutoff));
            // Timestamps are fixed-width text, so MAX and >= compare them as times.
            let sql = format!(
                "UPDATE ui_sessions SET last_seen_at = MAX(last_seen_at, ?2) \
                 WHERE id_hash = ?1 AND last_seen_at >= ?3 RETURNING {UI_SESSION_COLUMNS}"
            );
            let seen = query_optional(
                connection,
                &sql,
                params![id_hash, now, idle_cutoff],
                read_ui_session,
            )?;
            if seen.is_none() {
                connection
                    .execute(
                        "DELETE FROM ui_sessions WHERE id_hash = ?1 AND last_seen_at < ?2",
                        params![id_hash, idle_cutoff],
                    )
                    .doing("ending an idle web UI session")?;
            }
            Ok(seen)
        })
        .await
    }

    pub(crate) async fn delete_ui_session(&self, id_hash: &str) -> Result<bool, StateError> {
        let id_hash = id_hash.to_string();
        self.call(move |connection| {
            let removed = connection
                .execute(
                    "DELETE FROM ui_sessions WHERE id_hash = ?1",
                    params![id_hash],
                )
                .doing("ending a web UI session")?;
            Ok(removed > 0)
        })
        .await
    }

    pub(crate) async fn prune_ui_sessions(
        &self,
        idle_cutoff: DateTime<Utc>,
    ) -> Result<u64, StateError> {
        self.call(move |connection| {
            let removed = connection
                .execute(
                    "DELETE FROM ui_sessions WHERE last_seen_at < ?1",
                    params![timestamp_text(idle_cutoff)],
                )
                .doing("removing idle web UI sessions")?;
            Ok(removed as u64)
        })
        .await
    }

    /// Takes the budget's next slots in a write transaction, by this machine's clock: every
    /// process sharing the database file runs on this machine.
    pub(crate) async fn reserve_rate_slots(
        &self,
        budget_key: &str,
        reservation: Reservation,
    ) -> Result<RateSlots, StateError> {
        let budget_key = budget_key.to_string();
        self.call(move |connection| {
            let doing = "reserving request slots";
            let transaction = connection
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .doing(doing)?;
            let next_free_at = query_optional(
                &transaction,
                "SELECT next_free_at FROM rate_budgets WHERE budget_key = ?1",
                params![budget_key],
                |row| parse_timestamp(&column::<String>(row, 0)?),
            )?;
            // Read once the write lock is held, so the clock is later than any reservation
            // another process committed before.
            let now = ids::now();
            let start = rate_budget::reservation_start(next_free_at, now);
            transaction
                .execute(
                    "INSERT INTO rate_budgets (budget_key, next_free_at) VALUES (?1, ?2) \
                     ON CONFLICT (budget_key) DO UPDATE SET next_free_at = excluded.next_free_at",
                    params![budget_key, timestamp_text(start + reservation.span)],
                )
                .doing(doing)?;
            transaction.commit().doing(doing)?;
            Ok(reservation.slots(start, now))
        })
        .await
    }

    pub(crate) async fn get_workspace_setting(
        &self,
        key: &str,
    ) -> Result<Option<serde_json::Value>, StateError> {
        let key = key.to_string();
        self.call(move |connection| {
            query_optional(
                connection,
                "SELECT value FROM workspace_settings WHERE key = ?1",
                params![key],
                |row| parse_json(&column::<String>(row, 0)?, "workspace setting"),
            )
        })
        .await
    }

    pub(crate) async fn put_workspace_setting(
        &self,
        key: &str,
        value: &serde_json::Value,
    ) -> Result<(), StateError> {
        let (key, value) = (key.to_string(), value.to_string());
        self.call(move |connection| {
            connection
                .execute(
                    "INSERT INTO workspace_settings (key, value) VALUES (?1, ?2) \
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    params![key, value],
                )
                .doing("saving a workspace setting")?;
            Ok(())
        })
        .await
    }

    pub(crate) async fn enqueue_run(
        &self,
        id: &str,
        request: &NewRunRequest,
        now: DateTime<Utc>,
        prune_before: DateTime<Utc>,
    ) -> Result<Option<RunRequest>, StateError> {
        let (id, request) = (id.to_string(), request.clone());
        self.call(move |connection| {
            let doing = "queueing a run";
            let transaction = connection
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .doing(doing)?;
            transaction
                .execute(
                    "DELETE FROM run_requests WHERE finished_at < ?1",
                    params![timestamp_text(prune_before)],
                )
                .doing(doing)?;
            let inserted = transaction
                .execute(
                    "INSERT INTO run_requests (id, sync_name, reason, full_resync, \
                     allow_mass_retire, dedupe_key, requested_at, not_before) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7) ON CONFLICT (dedupe_key) DO NOTHING",
                    params![
                        id,
                        request.sync,
                        request.reason,
                        request.full_resync,
                        request.allow_mass_retire,
                        request.dedupe_key,
                        timestamp_text(now)
                    ],
                )
                .doing(doing)?;
            let queued = if inserted == 0 {
                None
            } else {
                query_optional(
                    &transaction,
                    &format!("SELECT {RUN_REQUEST_COLUMNS} FROM run_requests WHERE id = ?1"),
                    params![id],
                    read_run_request,
                )?
            };
            transaction.commit().doing(doing)?;
            Ok(queued)
        })
        .await
    }

    pub(crate) async fn claim_run_request(
        &self,
        worker: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Option<RunRequest>, StateError> {
        let worker = worker.to_string();
        self.call(move |connection| {
            let now = timestamp_text(now);
            // One statement, so two processes on one SQLite file cannot claim the same request.
            query_optional(
                connection,
                &format!(
                    "UPDATE run_requests SET claimed_by = ?1, lease_until = ?3, claims = claims + 1 \
                     WHERE id = (SELECT id FROM run_requests WHERE finished_at IS NULL \
                     AND not_before <= ?2 AND (claimed_by IS NULL OR lease_until < ?2) \
                     ORDER BY requested_at, id LIMIT 1) RETURNING {RUN_REQUEST_COLUMNS}"
                ),
                params![worker, now, timestamp_text(lease_until)],
                read_run_request,
            )
        })
        .await
    }

    pub(crate) async fn run_request_started(
        &self,
        id: &str,
        worker: &str,
        run_id: &str,
    ) -> Result<bool, StateError> {
        let (id, worker, run_id) = (id.to_string(), worker.to_string(), run_id.to_string());
        self.call(move |connection| {
            let changed = connection
                .execute(
                    "UPDATE run_requests SET run_id = ?3 WHERE id = ?1 AND claimed_by = ?2",
                    params![id, worker, run_id],
                )
                .doing("recording the run a queued request started")?;
            Ok(changed > 0)
        })
        .await
    }

    pub(crate) async fn renew_run_request(
        &self,
        id: &str,
        worker: &str,
        lease_until: DateTime<Utc>,
    ) -> Result<Option<bool>, StateError> {
        let (id, worker) = (id.to_string(), worker.to_string());
        self.call(move |connection| {
            query_optional(
                connection,
                "UPDATE run_requests SET lease_until = ?3 \
                 WHERE id = ?1 AND claimed_by = ?2 AND finished_at IS NULL \
                 RETURNING cancel_requested",
                params![id, worker, timestamp_text(lease_until)],
                |row| column::<bool>(row, 0),
            )
        })
        .await
    }

    pub(crate) async fn release_run_request(
        &self,
        id: &str,
        worker: &str,
        not_before: DateTime<Utc>,
    ) -> Result<bool, StateError> {
        let (id, worker) = (id.to_string(), worker.to_string());
        self.call(move |connection| {
            let changed = connection
                .execute(
                    "UPDATE run_requests SET claimed_by = NULL, lease_until = NULL, not_before = ?3 \
                     WHERE id = ?1 AND claimed_by = ?2 AND finished_at IS NULL",
                    params![id, worker, timestamp_text(not_before)],
                )
                .doing("putting a run request back in the queue")?;
            Ok(changed > 0)
        })
        .await
    }

    pub(crate) async fn finish_run_request(
        &self,
        id: &str,
        worker: &str,
        now: DateTime<Utc>,
        refusal: Option<&RunRefusal>,
    ) -> Result<bool, StateError> {
        let (id, worker, refusal) = (id.to_string(), worker.to_string(), refusal.cloned());
        self.call(move |connection| {
            let changed = connection
                .execute(
                    "UPDATE run_requests SET finished_at = ?3, lease_until = NULL, \
                     refusal_status = ?4, refusal_code = ?5, refusal_message = ?6 \
                     WHERE id = ?1 AND claimed_by = ?2 AND finished_at IS NULL",
                    params![
                        id,
                        worker,
                        timestamp_text(now),
                        refusal.as_ref().map(|r| r.status),
                        refusal.as_ref().map(|r| r.code.clone()),
                        refusal.as_ref().map(|r| r.message.clone())
                    ],
                )
                .doing("finishing a run request")?;
            Ok(changed > 0)
        })
        .await
    }

    pub(crate) async fn get_run_request(&self, id: &str) -> Result<Option<RunRequest>, StateError> {
        let id = id.to_string();
        self.call(move |connection| {
            query_optional(
                connection,
                &format!("SELECT {RUN_REQUEST_COLUMNS} FROM run_requests WHERE id = ?1"),
                params![id],
                read_run_request,
            )
        })
        .await
    }

    pub(crate) async fn pending_run_requests(&self) -> Result<Vec<RunRequest>, StateError> {
        self.call(move |connection| {
            query_all(
                connection,
                &format!(
                    "SELECT {RUN_REQUEST_COLUMNS} FROM run_requests WHERE finished_at IS NULL \
                     ORDER BY requested_at, id"
                ),
                params![],
                read_run_request,
            )
        })
        .await
    }

    pub(crate) async fn request_run_cancel(&self, run_id: &str) -> Result<bool, StateError> {
        let run_id = run_id.to_string();
        self.call(move |connection| {
            let changed = connection
                .execute(
                    "UPDATE run_requests SET cancel_requested = 1 \
                     WHERE run_id = ?1 AND finished_at IS NULL",
                    params![run_id],
                )
                .doing("asking a run to cancel")?;
            Ok(changed > 0)
        })
        .await
    }

    pub(crate) async fn find_run_request_by_dedupe_key(
        &self,
        dedupe_key: &str,
    ) -> Result<Option<RunRequest>, StateError> {
        let dedupe_key = dedupe_key.to_string();
        self.call(move |connection| {
            query_optional(
                connection,
                &format!("SELECT {RUN_REQUEST_COLUMNS} FROM run_requests WHERE dedupe_key = ?1"),
                params![dedupe_key],
                read_run_request,
            )
        })
        .await
    }

    pub(crate) async fn upsert_sequence(
        &self,
        name: &str,
        spec: &SequenceSpec,
    ) -> Result<SequenceRecord, StateError> {
        let name = name.to_string();
        let spec_json = sequence_spec_json(spec).to_string();
        self.call(move |connection| {
            let doing = "saving a sequence";
            let transaction = connection
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .doing(doing)?;
            refuse_case_variant(&transaction, ObjectType::Sequence, &name)?;
            let sql = format!(
                "INSERT INTO sequences (name, spec, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?3) ON CONFLICT (name) DO UPDATE SET \
                 spec = excluded.spec, updated_at = excluded.updated_at \
                 RETURNING {SEQUENCE_COLUMNS}"
            );
            let saved = query_optional(
                &transaction,
                &sql,
                params![name, spec_json, timestamp_text(ids::now())],
                read_sequence,
            )?
            .ok_or_else(|| StateError::InvalidInput(format!("sequence '{name}' was not saved")))?;
            transaction.commit().doing(doing)?;
            Ok(saved)
        })
        .await
    }

    pub(crate) async fn get_sequence(
        &self,
        name: &str,
    ) -> Result<Option<SequenceRecord>, StateError> {
        let name = name.to_string();
        self.call(move |connection| {
            let sql = format!("SELECT {SEQUENCE_COLUMNS} FROM sequences WHERE name = ?1");
            query_optional(connection, &sql, params![name], read_sequence)
        })
        .await
    }

    pub(crate) async fn list_sequences(&self) -> Result<Vec<SequenceRecord>, StateError> {
        self.call(|connection| {
            let sql = format!("SELECT {SEQUENCE_COLUMNS} FROM sequences ORDER BY name");
            query_all(connection, &sql, [], read_sequence)
        })
        .await
    }

    /// Removes the sequence and its runs, in one transaction.
    pub(crate) async fn remove_sequence(&self, name: &str) -> Result<bool, StateError> {
        let name = name.to_string();
        self.call(move |connection| {
            let doing = "removing a sequence";
            let transaction = connection
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .doing(doing)?;
            transaction
                .execute(
                    "DELETE FROM sequence_runs WHERE sequence_name = ?1",
                    params![name],
                )
                .doing(doing)?;
            let removed = transaction
                .execute("DELETE FROM sequences WHERE name = ?1", params![name])
                .doing(doing)?;
            transaction.commit().doing(doing)?;
            Ok(removed > 0)
        })
        .await
    }

    /// Inserts a new sequence run; `Ok(false)` when another one holds its dedupe key.
    pub(crate) async fn insert_sequence_run(
        &self,
        run: &SequenceRunRecord,
    ) -> Result<bool, StateError> {
        let run = run.clone();
        self.call(move |connection| {
            let inserted = connection
                .execute(
                    "INSERT INTO sequence_runs (id, sequence_name, spec, status, reason, driver, \
                     step, run_ids, message, dedupe_key, version, started_at, finished_at, \
                     updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, \
                     ?13, ?14) ON CONFLICT (dedupe_key) DO NOTHING",
                    params![
                        run.id,
                        run.sequence,
                        sequence_spec_json(&run.spec).to_string(),
                        run.status.as_str(),
                        run.reason,
                        run.driver,
                        i64::from(run.step),
                        run_ids_json(&run.run_ids).to_string(),
                        run.message,
                        run.dedupe_key,
                        to_sql_integer(run.version),
                        timestamp_text(run.started_at),
                        run.finished_at.map(timestamp_text),
                        timestamp_text(run.updated_at)
                    ],
                )
                .doing("starting a sequence run")?;
            Ok(inserted > 0)
        })
        .await
    }

    /// The compare-and-set of a sequence run: one statement, so of several processes that read
    /// the same version only the first to write moves the run on.
    pub(crate) async fn advance_sequence_run(
        &self,
        id: &str,
        expected_version: u64,
        update: &SequenceRunUpdate,
        now: DateTime<Utc>,
    ) -> Result<bool, StateError> {
        let (id, update) = (id.to_string(), update.clone());
        self.call(move |connection| {
            let finished_at =
                (update.status != SequenceRunStatus::Running).then(|| timestamp_text(now));
            let changed = connection
                .execute(
                    "UPDATE sequence_runs SET step = ?3, run_ids = ?4, status = ?5, \
                     message = ?6, updated_at = ?7, finished_at = ?8, version = version + 1 \
                     WHERE id = ?1 AND version = ?2 AND status = ?9",
                    params![
                        id,
                        to_sql_integer(expected_version),
                        i64::from(update.step),
                        run_ids_json(&update.run_ids).to_string(),
                        update.status.as_str(),
                        update.message,
                        timestamp_text(now),
                        finished_at,
                        SequenceRunStatus::Running.as_str()
                    ],
                )
                .doing("advancing a sequence run")?;
            Ok(changed > 0)
        })
        .await
    }

    pub(crate) async fn get_sequence_run(
        &self,
        id: &str,
    ) -> Result<Option<SequenceRunRecord>, StateError> {
        let id = id.to_string();
        self.call(move |connection| {
            let sql = format!("SELECT {SEQUENCE_RUN_COLUMNS} FROM sequence_runs WHERE id = ?1");
            query_optional(connection, &sql, params![id], read_sequence_run)
        })
        .await
    }

    pub(crate) async fn list_sequence_runs(
        &self,
        sequence: Option<&str>,
        limit: u32,
    ) -> Result<Vec<SequenceRunRecord>, StateError> {
        let sequence = sequence.map(str::to_string);
        self.call(move |connection| {
            let sql = format!(
                "SELECT {SEQUENCE_RUN_COLUMNS} FROM sequence_runs \
                 WHERE (?1 IS NULL OR sequence_name = ?1) ORDER BY id DESC LIMIT ?2"
            );
            query_all(
                connection,
                &sql,
                params![sequence, limit],
                read_sequence_run,
            )
        })
        .await
    }

    pub(crate) async fn running_sequence_runs(&self) -> Result<Vec<SequenceRunRecord>, StateError> {
        self.call(move |connection| {
            let sql = format!(
                "SELECT {SEQUENCE_RUN_COLUMNS} FROM sequence_runs WHERE status = ?1 ORDER BY id"
            );
            query_all(
                connection,
                &sql,
                params![SequenceRunStatus::Running.as_str()],
                read_sequence_run,
            )
        })
        .await
    }

    /// An exclusive `flock` on `DIR/locks/<sync uid>.lock`. The kernel drops it when the file
    /// is closed, including when the process dies, so no stale lock can outlive a run.
    pub(crate) async fn lock_sync(&self, sync: &SyncRecord) -> Result<SyncLock, StateError> {
        if sync.uid.is_empty() || !sync.uid.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(StateError::Corrupt(format!(
                "an invalid uid {:?} for sync '{}'",
                sync.uid, sync.name
            )));
        }
        let file = self.lock_file(&format!("{}.lock", sync.uid))?;
        // A few tries: a reader checking whether a run is alive holds the lock for a moment.
        for attempt in 1..=crate::SYNC_LOCK_ATTEMPTS {
            if let Some(held) = file.try_lock_now()? {
                return Ok(SyncLock::new(&sync.name, held));
            }
            if attempt < crate::SYNC_LOCK_ATTEMPTS {
                tokio::time::sleep(crate::CREATE_LOCK_POLL).await;
            }
        }
        Err(StateError::SyncLocked {
            sync: sync.name.clone(),
        })
    }

    /// The sync's lock if it is free now, without waiting.
    pub(crate) async fn try_lock_sync_once(
        &self,
        sync: &SyncRecord,
    ) -> Result<Option<SyncLock>, StateError> {
        let file = self.lock_file(&format!("{}.lock", sync.uid))?;
        Ok(file
            .try_lock_now()?
            .map(|held| SyncLock::new(&sync.name, held)))
    }

    /// The lock of a create scope (`locks/creates-<hash>.lock`), waited for: tried every
    /// [`crate::CREATE_LOCK_POLL`] until it is free or `give_up` says to stop (`Ok(None)`).
    pub(crate) async fn lock_create_scope(
        &self,
        scope: &str,
        give_up: &(dyn Fn() -> bool + Sync),
    ) -> Result<Option<SyncLock>, StateError> {
        let file = self.lock_file(&format!("creates-{}.lock", crate::scope_hash(scope)))?;
        loop {
            if let Some(held) = file.try_lock_now()? {
                return Ok(Some(SyncLock::new(scope, held)));
            }
            if give_up() {
                return Ok(None);
            }
            tokio::time::sleep(crate::CREATE_LOCK_POLL).await;
        }
    }

    /// Opens (creating) a file in `DIR/locks`.
    fn lock_file(&self, name: &str) -> Result<LockFile, StateError> {
        let locks_dir = self.inner.dir.join(LOCKS_DIR_NAME);
        if !locks_dir.is_dir() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&locks_dir)
                .map_err(|error| StateError::io("create the locks directory", &locks_dir, error))?;
        }
        let path = locks_dir.join(name);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|error| StateError::io("open a lock file", &path, error))?;
        Ok(LockFile { file, path })
    }

    /// Runs `work` with the connection on the blocking pool.
    async fn call<R: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection) -> Result<R, StateError> + Send + 'static,
    ) -> Result<R, StateError> {
        let inner = Arc::clone(&self.inner);
        run_blocking(move || {
            // A panic while holding the lock cannot leave a transaction half-done (rusqlite
            // rolls back on drop), so a poisoned mutex is still safe to use.
            let mut connection = inner
                .connection
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            work(&mut connection)
        })
        .await
    }
}

/// The batch moved into owned values for the blocking task.
struct OwnedBatch {
    records: Vec<RunRecordRow>,
    snapshot_upserts: Vec<(String, SnapshotEntry)>,
    snapshot_deletes: Vec<String>,
    pending_deletes: Vec<String>,
    counts: RunCounts,
    exchanges: Vec<StripeExchange>,
}

impl OwnedBatch {
    fn from_ref(batch: &CommitBatchRef<'_>) -> OwnedBatch {
        OwnedBatch {
            records: batch.records.to_vec(),
            snapshot_upserts: batch
                .snapshot_upserts
                .iter()
                .map(|(key, entry)| ((*key).clone(), (*entry).clone()))
                .collect(),
            snapshot_deletes: batch.snapshot_deletes.to_vec(),
            pending_deletes: batch.pending_deletes.to_vec(),
            counts: *batch.counts,
            exchanges: batch.exchanges.to_vec(),
        }
    }
}

/// An open lock file, not locked yet.
struct LockFile {
    file: std::fs::File,
    path: PathBuf,
}

impl LockFile {
    /// `flock(LOCK_EX | LOCK_NB)`: the held lock, or `None` when another holder has it.
    fn try_lock_now(&self) -> Result<Option<HeldLock>, StateError> {
        match self.file.try_lock() {
            Ok(()) => {
                let file = self
                    .file
                    .try_clone()
                    .map_err(|error| StateError::io("hold a lock file", &self.path, error))?;
                Ok(Some(HeldLock::File {
                    file,
                    path: self.path.clone(),
                }))
            }
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(error)) => {
                Err(StateError::io("lock a lock file", &self.path, error))
            }
        }
    }
}

/// A database file's (device, inode).
type FileIdentity = (u64, u64);

/// Keys read per statement by [`query_in_chunks`].
const KEYS_PER_STATEMENT: usize = 250;

/// Runs `sql` for a long list of keys, a few hundred per statement: `{keys}` in `sql` becomes
/// their placeholders, after the `fixed` parameters (`?1`, `?2`, …). One statement per key
/// costs far more in SQLite's per-statement work than the lookups themselves.
fn query_in_chunks<T>(
    connection: &Connection,
    sql: &str,
    fixed: &[&dyn rusqlite::ToSql],
    keys: &[String],
    doing: &'static str,
    read: impl Fn(&Row<'_>) -> Result<T, StateError>,
) -> Result<Vec<T>, StateError> {
    let mut found = Vec::new();
    for chunk in keys.chunks(KEYS_PER_STATEMENT) {
        let placeholders: Vec<String> = (0..chunk.len())
            .map(|i| format!("?{}", fixed.len() + i + 1))
            .collect();
        let sql = sql.replace("{keys}", &placeholders.join(", "));
        let mut statement = connection.prepare_cached(&sql).doing(doing)?;
        let parameters: Vec<&dyn rusqlite::ToSql> = fixed
            .iter()
            .copied()
            .chain(chunk.iter().map(|key| key as &dyn rusqlite::ToSql))
            .collect();
        let mut rows = statement.query(parameters.as_slice()).doing(doing)?;
        while let Some(row) = rows.next().doing(doing)? {
            found.push(read(row)?);
        }
    }
    Ok(found)
}

/// The workspace databases open in this process, by the (device, inode) of their file.
static OPEN_STORES: Mutex<Vec<(FileIdentity, std::sync::Weak<SqliteInner>)>> =
    Mutex::new(Vec::new());

/// The (device, inode) of a file, read without opening it.
fn file_identity(path: &Path) -> Option<FileIdentity> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

fn open_database(database_file: &Path) -> Result<Connection, StateError> {
    // Create the file ourselves so it is 0600 from its first byte; SQLite gives the -wal and
    // -shm files the same mode as the database. Only when it is missing: a descriptor opened
    // and closed on an existing database would drop this process's SQLite locks on it.
    if !database_file.exists() {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(database_file)
        {
            Ok(_) => {}
            // Another process created it in the meantime.
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(error) => {
                return Err(StateError::io(
                    "create the workspace database",
                    database_file,
                    error,
                ))
            }
        }
    }
    set_mode(database_file, 0o600)?;
    let mut connection = Connection::open(database_file).doing("opening the workspace database")?;
    connection
        .busy_timeout(BUSY_TIMEOUT)
        .doing("opening the workspace database")?;
    connection
        .execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;",
        )
        .doing("configuring the workspace database")?;
    migrate(&mut connection)?;
    Ok(connection)
}

/// Applies every migration the database does not have, each in its own transaction. An
/// IMMEDIATE transaction makes two processes opening a new workspace at once take turns.
fn migrate(connection: &mut Connection) -> Result<(), StateError> {
    let doing = "migrating the workspace database";
    connection
        .execute_batch(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, \
             name TEXT NOT NULL, applied_at TEXT NOT NULL)",
        )
        .doing(doing)?;
    let known = MIGRATIONS.last().map_or(0, |(version, _, _)| *version);
    for (version, name, sql) in MIGRATIONS {
        let transaction = connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .doing(doing)?;
        let current: i64 = transaction
            .query_row(
                "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                [],
                |row| row.get(0),
            )
            .doing(doing)?;
        if current > known {
            return Err(StateError::NewerSchema {
                found: current,
                known,
            });
        }
        if current >= *version {
            continue;
        }
        transaction.execute_batch(sql).doing(doing)?;
        transaction
            .execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
                params![version, name, timestamp_text(ids::now())],
            )
            .doing(doing)?;
        transaction.commit().doing(doing)?;
        tracing::debug!(version, name, "Applied a workspace migration.");
    }
    // Also catches a newer database when this ferry has nothing left to apply.
    let current: i64 = connection
        .query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            [],
            |row| row.get(0),
        )
        .doing(doing)?;
    if current > known {
        return Err(StateError::NewerSchema {
            found: current,
            known,
        });
    }
    Ok(())
}

/// Sets a run's counts; with `sync`, only if the run belongs to it. Returns the rows changed.
fn set_run_counts(
    connection: &Connection,
    run_id: &str,
    sync: Option<&str>,
    counts: &RunCounts,
) -> Result<usize, StateError> {
    let columns = counts_to_columns(counts);
    connection
        .prepare_cached(
            "UPDATE runs SET rows_total = ?3, created_count = ?4, updated_count = ?5, \
             unchanged_count = ?6, not_found_count = ?7, rejected_count = ?8, failed_count = ?9, \
             requests_count = ?10, not_attempted_count = ?11, last_seen_at = ?12, retired_count = ?13 \
             WHERE id = ?1 AND (?2 IS NULL OR sync = ?2)",
        )
        .and_then(|mut statement| {
            statement.execute(params![
                run_id,
                sync,
                columns[0],
                columns[1],
                columns[2],
                columns[3],
                columns[4],
                columns[5],
                columns[6],
                columns[7],
                columns[8],
                timestamp_text(ids::now()),
                columns[9],
            ])
        })
        .doing("saving run counts")
}

/// "model 'a'", "model 'b'" for each name the query returns.
/// Inside the write transaction that saves `name`: refuses it when it is new and another object
/// of its kind has the same name in another case. Holding the write lock, no other process can
/// add that other name between this check and the insert.
fn refuse_case_variant(
    connection: &Connection,
    what: ObjectType,
    name: &str,
) -> Result<(), StateError> {
    let sql = format!(
        "SELECT name FROM {} WHERE lower(name) = lower(?1) ORDER BY name",
        names::name_table(what)
    );
    let found = query_all(connection, &sql, params![name], |row| {
        column::<String>(row, 0)
    })?;
    names::check_case_conflict(what, name, found.iter().map(String::as_str))
}

fn names_of(
    connection: &Connection,
    what: &str,
    sql: &str,
    name: &str,
) -> Result<Vec<String>, StateError> {
    let names = query_all(connection, sql, params![name], |row| {
        column::<String>(row, 0)
    })?;
    Ok(names
        .into_iter()
        .map(|found| format!("{what} '{found}'"))
        .collect())
}

fn read_connection(row: &Row<'_>) -> Result<ConnectionRecord, StateError> {
    let name: String = column(row, 0)?;
    let secret = secret_from_columns(&name, column(row, 3)?, column(row, 4)?, column(row, 5)?)?;
    Ok(ConnectionRecord {
        kind: parse_connection_kind(&column::<String>(row, 1)?)?,
        config: parse_json(&column::<String>(row, 2)?, "connection config")?,
        secret,
        created_at: parse_timestamp(&column::<String>(row, 6)?)?,
        updated_at: parse_timestamp(&column::<String>(row, 7)?)?,
        name,
    })
}

fn read_model(row: &Row<'_>) -> Result<ModelRecord, StateError> {
    Ok(ModelRecord {
        name: column(row, 0)?,
        connection: column(row, 1)?,
        sql: column(row, 2)?,
        created_at: parse_timestamp(&column::<String>(row, 3)?)?,
        updated_at: parse_timestamp(&column::<String>(row, 4)?)?,
    })
}

fn read_sync(row: &Row<'_>) -> Result<SyncRecord, StateError> {
    let name: String = column(row, 0)?;
    let spec_json = parse_json(&column::<String>(row, 2)?, "sync spec")?;
    Ok(SyncRecord {
        uid: column(row, 1)?,
        spec: parse_sync_spec(&name, spec_json)?,
        created_at: parse_timestamp(&column::<String>(row, 3)?)?,
        updated_at: parse_timestamp(&column::<String>(row, 4)?)?,
        paused_at: optional_timestamp(row, 5)?,
        resumed_at: optional_timestamp(row, 6)?,
        name,
    })
}

fn optional_timestamp(row: &Row<'_>, index: usize) -> Result<Option<DateTime<Utc>>, StateError> {
    column::<Option<String>>(row, index)?
        .map(|text| parse_timestamp(&text))
        .transpose()
}

fn read_run(row: &Row<'_>) -> Result<RunRecord, StateError> {
    let mut counts = [0i64; 10];
    for (index, count) in counts.iter_mut().take(8).enumerate() {
        *count = column(row, 6 + index)?;
    }
    counts[8] = column(row, 15)?;
    counts[9] = column(row, 17)?;
    Ok(RunRecord {
        id: column(row, 0)?,
        sync: column(row, 1)?,
        status: parse_run_status(&column::<String>(row, 2)?)?,
        full_resync: column(row, 3)?,
        started_at: parse_timestamp(&column::<String>(row, 4)?)?,
        finished_at: column::<Option<String>>(row, 5)?
            .map(|text| parse_timestamp(&text))
            .transpose()?,
        counts: counts_from_columns(counts),
        error: column(row, 14)?,
        last_seen_at: column::<Option<String>>(row, 16)?
            .map(|text| parse_timestamp(&text))
            .transpose()?,
    })
}

fn read_run_record(row: &Row<'_>) -> Result<RunRecordRow, StateError> {
    Ok(RunRecordRow {
        row_number: u64::try_from(column::<i64>(row, 0)?).unwrap_or(0),
        key: column(row, 1)?,
        outcome: parse_outcome(&column::<String>(row, 2)?)?,
        destination_id: column(row, 3)?,
        reason: column(row, 4)?,
        request_id: column(row, 5)?,
        changes: column(row, 6)?,
    })
}

fn read_stripe_exchange(row: &Row<'_>) -> Result<StripeExchange, StateError> {
    Ok(StripeExchange {
        row_number: u64::try_from(column::<i64>(row, 0)?).unwrap_or(0),
        sequence: u64::try_from(column::<i64>(row, 1)?).unwrap_or(0),
        sent_at: parse_timestamp(&column::<String>(row, 2)?)?,
        method: column(row, 3)?,
        path: column(row, 4)?,
        idempotency_key: column(row, 5)?,
        request_body: column(row, 6)?,
        status: column::<Option<i64>>(row, 7)?
            .map(exchange_status)
            .transpose()?,
        response_body: column(row, 8)?,
        request_id: column(row, 9)?,
        error: column(row, 10)?,
        duration_ms: u64::try_from(column::<i64>(row, 11)?).unwrap_or(0),
    })
}

fn read_api_token(row: &Row<'_>) -> Result<ApiTokenRecord, StateError> {
    Ok(ApiTokenRecord {
        name: column(row, 0)?,
        prefix: column(row, 1)?,
        created_at: parse_timestamp(&column::<String>(row, 2)?)?,
        last_used_at: column::<Option<String>>(row, 3)?
            .map(|text| parse_timestamp(&text))
            .transpose()?,
    })
}

fn read_raised_alert(row: &Row<'_>) -> Result<RaisedAlert, StateError> {
    Ok(RaisedAlert {
        sync: column(row, 0)?,
        condition: parse_alert_condition(&column::<String>(row, 1)?)?,
        message: column(row, 2)?,
        raised_at: parse_timestamp(&column::<String>(row, 3)?)?,
    })
}

fn read_delivery(row: &Row<'_>) -> Result<DeliveryRecord, StateError> {
    Ok(DeliveryRecord {
        id: column(row, 0)?,
        event_id: column(row, 1)?,
        event_type: column(row, 2)?,
        sync: column(row, 3)?,
        run_id: column(row, 4)?,
        channel: column(row, 5)?,
        payload: column(row, 6)?,
        status: parse_delivery_status(&column::<String>(row, 7)?)?,
        attempts: delivery_number(column(row, 8)?, "attempt count")?,
        created_at: parse_timestamp(&column::<String>(row, 9)?)?,
        next_attempt_at: optional_timestamp(row, 10)?,
        last_attempt_at: optional_timestamp(row, 11)?,
        answer_status: column::<Option<i64>>(row, 12)?
            .map(|status| delivery_number(status, "answer status"))
            .transpose()?,
        answer: column(row, 13)?,
    })
}

const RUN_REQUEST_COLUMNS: &str = "id, sync_name, reason, full_resync, allow_mass_retire, \
     dedupe_key, requested_at, not_before, claims, claimed_by, lease_until, run_id, \
     cancel_requested, finished_at, refusal_status, refusal_code, refusal_message";

fn read_run_request(row: &Row<'_>) -> Result<RunRequest, StateError> {
    let refusal = match column::<Option<i64>>(row, 14)? {
        Some(status) => Some(RunRefusal {
            status: u16::try_from(status).unwrap_or(500),
            code: column::<Option<String>>(row, 15)?.unwrap_or_default(),
            message: column::<Option<String>>(row, 16)?.unwrap_or_default(),
        }),
        None => None,
    };
    Ok(RunRequest {
        id: column(row, 0)?,
        sync: column(row, 1)?,
        reason: column(row, 2)?,
        full_resync: column(row, 3)?,
        allow_mass_retire: column(row, 4)?,
        dedupe_key: column(row, 5)?,
        requested_at: parse_timestamp(&column::<String>(row, 6)?)?,
        not_before: parse_timestamp(&column::<String>(row, 7)?)?,
        claims: u32::try_from(column::<i64>(row, 8)?).unwrap_or(u32::MAX),
        claimed_by: column(row, 9)?,
        lease_until: optional_timestamp(row, 10)?,
        run_id: column(row, 11)?,
        cancel_requested: column(row, 12)?,
        finished_at: optional_timestamp(row, 13)?,
        refusal,
    })
}

fn read_sequence(row: &Row<'_>) -> Result<SequenceRecord, StateError> {
    let name: String = column(row, 0)?;
    let spec_json = parse_json(&column::<String>(row, 1)?, "sequence spec")?;
    Ok(SequenceRecord {
        spec: parse_sequence_spec(&name, spec_json)?,
        created_at: parse_timestamp(&column::<String>(row, 2)?)?,
        updated_at: parse_timestamp(&column::<String>(row, 3)?)?,
        name,
    })
}

fn read_sequence_run(row: &Row<'_>) -> Result<SequenceRunRecord, StateError> {
    let id: String = column(row, 0)?;
    let sequence: String = column(row, 1)?;
    let spec_json = parse_json(&column::<String>(row, 2)?, "sequence run spec")?;
    let run_ids_json = parse_json(&column::<String>(row, 7)?, "sequence run's run ids")?;
    Ok(SequenceRunRecord {
        spec: parse_sequence_spec(&sequence, spec_json)?,
        status: parse_sequence_run_status(&column::<String>(row, 3)?)?,
        reason: column(row, 4)?,
        driver: column(row, 5)?,
        step: sequence_run_number(column(row, 6)?, "step")?,
        run_ids: parse_run_ids(&id, run_ids_json)?,
        message: column(row, 8)?,
        dedupe_key: column(row, 9)?,
        version: sequence_run_number(column(row, 10)?, "version")?,
        started_at: parse_timestamp(&column::<String>(row, 11)?)?,
        finished_at: optional_timestamp(row, 12)?,
        updated_at: parse_timestamp(&column::<String>(row, 13)?)?,
        sequence,
        id,
    })
}

fn read_ui_session(row: &Row<'_>) -> Result<UiSession, StateError> {
    Ok(UiSession {
        id_hash: column(row, 0)?,
        token_name: column(row, 1)?,
        csrf: column(row, 2)?,
        signed_in_at: parse_timestamp(&column::<String>(row, 3)?)?,
        last_seen_at: parse_timestamp(&column::<String>(row, 4)?)?,
    })
}

fn query_all<T>(
    connection: &Connection,
    sql: &str,
    parameters: impl rusqlite::Params,
    read: impl Fn(&Row<'_>) -> Result<T, StateError>,
) -> Result<Vec<T>, StateError> {
    let doing = "reading the workspace database";
    let mut statement = connection.prepare_cached(sql).doing(doing)?;
    let mut rows = statement.query(parameters).doing(doing)?;
    let mut found = Vec::new();
    while let Some(row) = rows.next().doing(doing)? {
        found.push(read(row)?);
    }
    Ok(found)
}

fn query_optional<T>(
    connection: &Connection,
    sql: &str,
    parameters: impl rusqlite::Params,
    read: impl Fn(&Row<'_>) -> Result<T, StateError>,
) -> Result<Option<T>, StateError> {
    let doing = "reading the workspace database";
    let mut statement = connection.prepare_cached(sql).doing(doing)?;
    let mut rows = statement.query(parameters).doing(doing)?;
    rows.next().doing(doing)?.map(read).transpose()
}

fn column<T: FromSql>(row: &Row<'_>, index: usize) -> Result<T, StateError> {
    row.get(index).doing("reading the workspace database")
}

/// RFC 3339 in UTC with exactly six fractional digits: sorts as text, parses back exactly.
/// `2026-12-01T23:45:11.123456Z`: fixed width, so that text order is time order.
fn timestamp_text(timestamp: DateTime<Utc>) -> String {
    // The RFC 3339 writer, not a format string parsed anew for every row.
    timestamp.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn parse_timestamp(text: &str) -> Result<DateTime<Utc>, StateError> {
    DateTime::parse_from_rfc3339(text)
        .map(|timestamp| timestamp.with_timezone(&Utc))
        .map_err(|_| StateError::Corrupt(format!("an invalid timestamp {text:?}")))
}

fn parse_json(text: &str, what: &str) -> Result<serde_json::Value, StateError> {
    serde_json::from_str(text)
        .map(sorted_json)
        .map_err(|error| StateError::Corrupt(format!("an unreadable {what} ({error})")))
}

async fn run_blocking<R: Send + 'static>(
    work: impl FnOnce() -> Result<R, StateError> + Send + 'static,
) -> Result<R, StateError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| StateError::Internal(format!("a database task did not finish: {error}")))?
}

/// `.doing("saving a model")` turns a rusqlite error into a [`StateError`] that says when.
trait SqliteResultExt<T> {
    fn doing(self, doing: &'static str) -> Result<T, StateError>;
}

impl<T> SqliteResultExt<T> for Result<T, rusqlite::Error> {
    fn doing(self, doing: &'static str) -> Result<T, StateError> {
        self.map_err(StateError::sqlite(doing))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stored timestamps keep the text they always had (workspaces compare them as text).
    #[test]
    fn timestamps_are_written_as_before() {
        for (seconds, nanos) in [(0, 0), (1_796_170_730, 5_000), (1_796_170_730, 999_999_999)] {
            let timestamp = DateTime::from_timestamp(seconds, nanos).unwrap();
            assert_eq!(
                timestamp_text(timestamp),
                timestamp.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
            );
        }
    }
}
