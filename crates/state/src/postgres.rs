//! The PostgreSQL backend (`--state-url postgres://…`): the same tables as SQLite, with
//! TIMESTAMPTZ and JSONB columns, in the connected database's current schema.
//!
//! One session serves every call; transactions need it exclusively, so it sits behind an async
//! mutex. When PostgreSQL restarts the session dies; the next call opens a new one, so a
//! long-lived `ferry server` recovers by itself. Each sync lock gets its own session because a
//! session-level advisory lock lives exactly as long as its session.

use crate::api_tokens;
use crate::error::{postgres_error_text, ObjectType, StateError};
use crate::ids;
use crate::master_key::MasterKey;
use crate::names;
use crate::rate_budget::{RateSlots, Reservation};
use crate::records::{
    counts_from_columns, counts_to_columns, delivery_number, exchange_status,
    parse_alert_condition, parse_connection_kind, parse_delivery_status, parse_outcome,
    parse_run_ids, parse_run_status, parse_sequence_run_status, parse_sequence_spec,
    parse_sync_spec, run_ids_json, secret_from_columns, sequence_run_number, sequence_spec_json,
    sorted_json, sync_spec_json, to_sql_integer, StoredSecret,
};
use crate::stored_time;
use crate::sync_lock::{advisory_lock_key, HeldLock, SyncLock};
use crate::workspace::{OpenMode, PostgresUrl};
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
use ferry_postgres_connect::{ConnectError, ConnectionStringError, PostgresTarget, TlsError};
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::types::{FromSql, ToSql};
use tokio_postgres::{Client, GenericClient, Row};

/// The schema, one SQL script per version, applied in order and recorded in
/// `schema_migrations`. Append new versions; never edit an applied one.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "initial schema",
        include_str!("../migrations/postgres/0001_initial_schema.sql"),
    ),
    (
        2,
        "api tokens",
        include_str!("../migrations/postgres/0002_api_tokens.sql"),
    ),
    (
        3,
        "generic engine",
        include_str!("../migrations/postgres/0003_generic_engine.sql"),
    ),
    (
        4,
        "snapshot in key order",
        include_str!("../migrations/postgres/0004_snapshot_in_key_order.sql"),
    ),
    (
        5,
        "mirror",
        include_str!("../migrations/postgres/0005_mirror.sql"),
    ),
    (
        6,
        "pause",
        include_str!("../migrations/postgres/0006_pause.sql"),
    ),
    (
        7,
        "alerts",
        include_str!("../migrations/postgres/0007_alerts.sql"),
    ),
    (
        8,
        "sessions and rate budgets",
        include_str!("../migrations/postgres/0008_sessions_and_rate_budgets.sql"),
    ),
    (
        9,
        "run_queue",
        include_str!("../migrations/postgres/0009_run_queue.sql"),
    ),
    (
        10,
        "stripe exchanges",
        include_str!("../migrations/postgres/0010_stripe_exchanges.sql"),
    ),
    (
        11,
        "sequences",
        include_str!("../migrations/postgres/0011_sequences.sql"),
    ),
];

/// The transaction-level advisory lock that makes concurrent `initialize` calls take turns
/// (an arbitrary constant: "ferry" in ASCII).
const MIGRATION_LOCK_KEY: i64 = 0x0066_6572_7279;

/// The transaction-level advisory lock under which new names are checked and saved ("ferry"
/// and "names" in ASCII, like the migration lock's constant).
const NAMES_LOCK_KEY: i64 = 0x6665_7272_796e_616d;

/// A lock whose holder just dropped its session is free a moment later, once the server has
/// noticed; a failing `pg_try_advisory_lock` is retried this often, this far apart.
const LOCK_ATTEMPTS: u32 = 5;
const LOCK_RETRY_DELAY: Duration = Duration::from_millis(100);

/// Runs `$body` (a block that may use `?`) with `$session`, the shared session. If the session
/// turns out to be closed (PostgreSQL restarted since the last call, which the client only
/// learns when it next sends), opens a new session and runs the block once more. A repeat is
/// safe: every operation is one statement or one transaction, and a transaction that did land
/// before the connection died makes its repeat fail on a primary key rather than write twice.
macro_rules! with_session {
    ($store:expr, |$session:ident| $body:block) => {{
        let mut guard = $store.session().await?;
        let first: Result<_, StateError> = async {
            let $session: &mut Session = &mut guard;
            $body
        }
        .await;
        match first {
            Err(error) if error.is_closed_connection() => {
                tracing::info!(location = %$store.inner.url.redacted, "The PostgreSQL state store session was closed; reconnecting.");
                *guard = open_session(&$store.inner.url).await?;
                let $session: &mut Session = &mut guard;
                async { $body }.await
            }
            other => other,
        }
    }};
}

#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<PostgresInner>,
}

struct PostgresInner {
    url: PostgresUrl,
    /// The workspace directory, which holds the key file.
    dir: std::path::PathBuf,
    session: tokio::sync::Mutex<Session>,
    master_key: MasterKey,
}

/// A connected client and the task that drives its connection. Dropping the client ends the
/// task: the connection sends a Terminate message and closes.
pub(crate) struct Session {
    client: Client,
    connection_task: tokio::task::JoinHandle<()>,
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

impl PostgresStore {
    /// Connects and applies missing migrations; with `MustExist`, a database without ferry's
    /// tables is reported as "no ferry workspace".
    pub(crate) async fn connect(url: PostgresUrl, mode: OpenMode) -> Result<Session, StateError> {
        let mut session = open_session(&url).await?;
        if mode == OpenMode::MustExist {
            let exists: bool = session
                .client
                .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])
                .await
                .map_err(StateError::postgres("looking for the workspace"))?
                .get(0);
            if !exists {
                return Err(StateError::NoWorkspace {
                    location: url.redacted.clone(),
                });
            }
        }
        migrate(&mut session.client).await?;
        Ok(session)
    }

    pub(crate) fn new(
        url: PostgresUrl,
        dir: &std::path::Path,
        session: Session,
        master_key: MasterKey,
    ) -> PostgresStore {
        PostgresStore {
            inner: Arc::new(PostgresInner {
                url,
                dir: dir.to_path_buf(),
                session: tokio::sync::Mutex::new(session),
                master_key,
            }),
        }
    }

    pub(crate) fn master_key(&self) -> &MasterKey {
        &self.inner.master_key
    }

    pub(crate) fn workspace_dir(&self) -> &std::path::Path {
        &self.inner.dir
    }

    pub(crate) fn location(&self) -> String {
        self.inner.url.redacted.clone()
    }

    pub(crate) async fn upsert_connection(
        &self,
        name: &str,
        kind: ConnectionKind,
        config: &serde_json::Value,
        secret: Option<StoredSecret>,
    ) -> Result<(), StateError> {
        let (secret_kind, secret_value, secret_hint) = match secret {
            Some(secret) => (Some(secret.kind), Some(secret.value), secret.hint),
            None => (None, None, None),
        };
        let doing = "saving a connection";
        with_session!(self, |session| {
            let transaction =
                names_transaction(session, ObjectType::Connection, name, doing).await?;
            transaction
                .execute(
                    "INSERT INTO connections (name, kind, config, secret_kind, secret_value, \
                     secret_hint, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7) \
                     ON CONFLICT (name) DO UPDATE SET kind = excluded.kind, config = excluded.config, \
                     secret_kind = excluded.secret_kind, secret_value = excluded.secret_value, \
                     secret_hint = excluded.secret_hint, updated_at = excluded.updated_at",
                    &[
                        &name,
                        &kind.as_str(),
                        config,
                        &secret_kind,
                        &secret_value,
                        &secret_hint,
                        &ids::now(),
                    ],
                )
                .await
                .map_err(StateError::postgres(doing))?;
            transaction
                .commit()
                .await
                .map_err(StateError::postgres(doing))?;
            Ok(())
        })
    }

    pub(crate) async fn update_connection_keeping_secret(
        &self,
        name: &str,
        kind: ConnectionKind,
        config: &serde_json::Value,
    ) -> Result<bool, StateError> {
        with_session!(self, |session| {
            let changed = session
                .client
                .execute(
                    "UPDATE connections SET kind = $2, config = $3, updated_at = $4 WHERE name = $1",
                    &[&name, &kind.as_str(), config, &ids::now()],
                )
                .await
                .map_err(StateError::postgres("updating a connection"))?;
            Ok(changed > 0)
        })
    }

    pub(crate) async fn get_connection(
        &self,
        name: &str,
    ) -> Result<Option<ConnectionRecord>, StateError> {
        with_session!(self, |session| {
            let sql = format!("SELECT {CONNECTION_COLUMNS} FROM connections WHERE name = $1");
            query_optional(&session.client, &sql, &[&name], read_connection).await
        })
    }

    pub(crate) async fn list_connections(&self) -> Result<Vec<ConnectionRecord>, StateError> {
        with_session!(self, |session| {
            let sql =
                format!("SELECT {CONNECTION_COLUMNS} FROM connections ORDER BY name COLLATE \"C\"");
            query_all(&session.client, &sql, &[], read_connection).await
        })
    }

    pub(crate) async fn remove_connection(&self, name: &str) -> Result<bool, StateError> {
        let doing = "removing a connection";
        with_session!(self, |session| {
            let transaction = session
                .client
                .transaction()
                .await
                .map_err(StateError::postgres(doing))?;
            let mut used_by = names_of(
                &transaction,
                "model",
                "SELECT name FROM models WHERE connection = $1 ORDER BY name COLLATE \"C\"",
                name,
            )
            .await?;
            used_by.extend(
                names_of(
                    &transaction,
                    "sync",
                    "SELECT name FROM syncs WHERE destination = $1 ORDER BY name COLLATE \"C\"",
                    name,
                )
                .await?,
            );
            if !used_by.is_empty() {
                return Err(StateError::InUse {
                    what: ObjectType::Connection,
                    name: name.to_string(),
                    used_by,
                });
            }
            let removed = transaction
                .execute("DELETE FROM connections WHERE name = $1", &[&name])
                .await
                .map_err(StateError::postgres(doing))?;
            transaction
                .commit()
                .await
                .map_err(StateError::postgres(doing))?;
            Ok(removed > 0)
        })
    }

    pub(crate) async fn upsert_model(
        &self,
        name: &str,
        source: &str,
        sql: &str,
    ) -> Result<(), StateError> {
        let doing = "saving a model";
        with_session!(self, |session| {
            let transaction = names_transaction(session, ObjectType::Model, name, doing).await?;
            transaction
                .execute(
                    "INSERT INTO models (name, connection, sql, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $4) ON CONFLICT (name) DO UPDATE SET \
                     connection = excluded.connection, sql = excluded.sql, \
                     updated_at = excluded.updated_at",
                    &[&name, &source, &sql, &ids::now()],
                )
                .await
                .map_err(StateError::postgres(doing))?;
            transaction
                .commit()
                .await
                .map_err(StateError::postgres(doing))?;
            Ok(())
        })
    }

    pub(crate) async fn get_model(&self, name: &str) -> Result<Option<ModelRecord>, StateError> {
        with_session!(self, |session| {
            let sql = format!("SELECT {MODEL_COLUMNS} FROM models WHERE name = $1");
            query_optional(&session.client, &sql, &[&name], read_model).await
        })
    }

    pub(crate) async fn list_models(&self) -> Result<Vec<ModelRecord>, StateError> {
        with_session!(self, |session| {
            let sql = format!("SELECT {MODEL_COLUMNS} FROM models ORDER BY name COLLATE \"C\"");
            query_all(&session.client, &sql, &[], read_model).await
        })
    }

    pub(crate) async fn remove_model(&self, name: &str) -> Result<bool, StateError> {
        let doing = "removing a model";
        with_session!(self, |session| {
            let transaction = session
                .client
                .transaction()
                .await
                .map_err(StateError::postgres(doing))?;
            let used_by = names_of(
                &transaction,
                "sync",
                "SELECT name FROM syncs WHERE model = $1 ORDER BY name COLLATE \"C\"",
                name,
            )
            .await?;
            if !used_by.is_empty() {
                return Err(StateError::InUse {
                    what: ObjectType::Model,
                    name: name.to_string(),
                    used_by,
                });
            }
            let removed = transaction
                .execute("DELETE FROM models WHERE name = $1", &[&name])
                .await
                .map_err(StateError::postgres(doing))?;
            transaction
                .commit()
                .await
                .map_err(StateError::postgres(doing))?;
            Ok(removed > 0)
        })
    }

    pub(crate) async fn upsert_sync(
        &self,
        name: &str,
        spec: &SyncSpec,
    ) -> Result<SyncRecord, StateError> {
        let spec_json = sync_spec_json(spec);
        let doing = "saving a sync";
        with_session!(self, |session| {
            let transaction = names_transaction(session, ObjectType::Sync, name, doing).await?;
            let row = transaction
                .query_one(
                    "INSERT INTO syncs (name, uid, model, destination, spec, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $6) ON CONFLICT (name) DO UPDATE SET \
                     model = excluded.model, destination = excluded.destination, \
                     spec = excluded.spec, updated_at = excluded.updated_at \
                     RETURNING uid, created_at, updated_at, paused_at, resumed_at",
                    &[
                        &name,
                        &ids::new_sync_uid(),
                        &spec.model,
                        &spec.destination,
                        &spec_json,
                        &ids::now(),
                    ],
                )
                .await
                .map_err(StateError::postgres(doing))?;
            transaction
                .commit()
                .await
                .map_err(StateError::postgres(doing))?;
            Ok(SyncRecord {
                name: name.to_string(),
                uid: column(&row, 0)?,
                spec: spec.clone(),
                created_at: column(&row, 1)?,
                updated_at: column(&row, 2)?,
                paused_at: column(&row, 3)?,
                resumed_at: column(&row, 4)?,
            })
        })
    }

    pub(crate) async fn get_sync(&self, name: &str) -> Result<Option<SyncRecord>, StateError> {
        with_session!(self, |session| {
            let sql = format!("SELECT {SYNC_COLUMNS} FROM syncs WHERE name = $1");
            query_optional(&session.client, &sql, &[&name], read_sync).await
        })
    }

    pub(crate) async fn set_sync_paused(
        &self,
        name: &str,
        paused: bool,
        now: DateTime<Utc>,
    ) -> Result<Option<SyncRecord>, StateError> {
        let sql = if paused {
            format!(
                "UPDATE syncs SET paused_at = COALESCE(paused_at, $2) WHERE name = $1 \
                 RETURNING {SYNC_COLUMNS}"
            )
        } else {
            format!(
                "UPDATE syncs SET paused_at = NULL, resumed_at = CASE WHEN paused_at IS NULL \
                 THEN resumed_at ELSE $2 END WHERE name = $1 RETURNING {SYNC_COLUMNS}"
            )
        };
        with_session!(self, |session| {
            query_optional(&session.client, &sql, &[&name, &now], read_sync).await
        })
    }

    pub(crate) async fn list_syncs(&self) -> Result<Vec<SyncRecord>, StateError> {
        with_session!(self, |session| {
            let sql = format!("SELECT {SYNC_COLUMNS} FROM syncs ORDER BY name COLLATE \"C\"");
            query_all(&session.client, &sql, &[], read_sync).await
        })
    }

    pub(crate) async fn remove_sync(&self, name: &str) -> Result<bool, StateError> {
        let doing = "removing a sync";
        with_session!(self, |session| {
            let transaction = session
                .client
                .transaction()
                .await
                .map_err(StateError::postgres(doing))?;
            for statement in [
                "DELETE FROM run_records WHERE run_id IN (SELECT id FROM runs WHERE sync = $1)",
                "DELETE FROM stripe_exchanges WHERE run_id IN (SELECT id FROM runs WHERE sync = $1)",
                "DELETE FROM runs WHERE sync = $1",
                "DELETE FROM snapshot WHERE sync = $1",
                "DELETE FROM pending_creates WHERE sync = $1",
                "DELETE FROM raised_alerts WHERE sync_name = $1",
                "DELETE FROM run_requests WHERE sync_name = $1",
            ] {
                transaction
                    .execute(statement, &[&name])
                    .await
                    .map_err(StateError::postgres(doing))?;
            }
            let removed = transaction
                .execute("DELETE FROM syncs WHERE name = $1", &[&name])
                .await
                .map_err(StateError::postgres(doing))?;
            transaction
                .commit()
                .await
                .map_err(StateError::postgres(doing))?;
            Ok(removed > 0)
        })
    }

    pub(crate) async fn insert_run(&self, run: &RunRecord) -> Result<(), StateError> {
        let counts = counts_to_columns(&run.counts);
        with_session!(self, |session| {
            session
                .client
                .execute(
                    &format!(
                        "INSERT INTO runs ({RUN_COLUMNS}) VALUES \
                         ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)"
                    ),
                    &[
                        &run.id,
                        &run.sync,
                        &run.status.as_str(),
                        &run.full_resync,
                        &run.started_at,
                        &run.finished_at,
                        &counts[0],
                        &counts[1],
                        &counts[2],
                        &counts[3],
                        &counts[4],
                        &counts[5],
                        &counts[6],
                        &counts[7],
                        &run.error,
                        &counts[8],
                        &run.last_seen_at,
                        &counts[9],
                    ],
                )
                .await
                .map_err(StateError::postgres("starting a run"))?;
            Ok(())
        })
    }

    pub(crate) async fn update_run_counts(
        &self,
        run_id: &str,
        counts: &RunCounts,
    ) -> Result<bool, StateError> {
        with_session!(self, |session| {
            Ok(set_run_counts(&session.client, run_id, None, counts).await? > 0)
        })
    }

    pub(crate) async fn finish_run(
        &self,
        run_id: &str,
        status: RunStatus,
        counts: &RunCounts,
        error: Option<&str>,
        finished_at: DateTime<Utc>,
    ) -> Result<bool, StateError> {
        let doing = "finishing a run";
        with_session!(self, |session| {
            let transaction = session
                .client
                .transaction()
                .await
                .map_err(StateError::postgres(doing))?;
            let changed = transaction
                .execute(
                    "UPDATE runs SET status = $2, error = $3, finished_at = $4 WHERE id = $1",
                    &[&run_id, &status.as_str(), &error, &finished_at],
                )
                .await
                .map_err(StateError::postgres(doing))?;
            set_run_counts(&transaction, run_id, None, counts).await?;
            transaction
                .commit()
                .await
                .map_err(StateError::postgres(doing))?;
            Ok(changed > 0)
        })
    }

    pub(crate) async fn get_run(&self, run_id: &str) -> Result<Option<RunRecord>, StateError> {
        with_session!(self, |session| {
            let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1");
            query_optional(&session.client, &sql, &[&run_id], read_run).await
        })
    }

    pub(crate) async fn list_runs(
        &self,
        sync: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RunRecord>, StateError> {
        let limit = to_sql_integer(limit as u64);
        with_session!(self, |session| {
            let sql = format!(
                "SELECT {RUN_COLUMNS} FROM runs WHERE ($1::text IS NULL OR sync = $1) \
                 ORDER BY id COLLATE \"C\" DESC LIMIT $2"
            );
            query_all(&session.client, &sql, &[&sync, &limit], read_run).await
        })
    }

    pub(crate) async fn mark_interrupted_runs(&self, sync: &str) -> Result<u64, StateError> {
        with_session!(self, |session| {
            session
                .client
                .execute(
                    "UPDATE runs SET status = $2, finished_at = COALESCE(last_seen_at, started_at) \
                     WHERE sync = $1 AND status = $3",
                    &[
                        &sync,
                        &RunStatus::Interrupted.as_str(),
                        &RunStatus::Running.as_str(),
                    ],
                )
                .await
                .map_err(StateError::postgres("marking interrupted runs"))
        })
    }

    pub(crate) async fn touch_run(
        &self,
        run_id: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StateError> {
        with_session!(self, |session| {
            let changed = session
                .client
                .execute(
                    "UPDATE runs SET last_seen_at = $2 WHERE id = $1",
                    &[&run_id, &now],
                )
                .await
                .map_err(StateError::postgres("recording that a run is alive"))?;
            Ok(changed > 0)
        })
    }

    pub(crate) async fn list_run_records(
        &self,
        run_id: &str,
        filter: Option<Outcome>,
        after_row: u64,
        limit: usize,
    ) -> Result<Vec<RunRecordRow>, StateError> {
        let (after_row, limit) = (to_sql_integer(after_row), to_sql_integer(limit as u64));
        let outcome = filter.map(Outcome::as_str);
        with_session!(self, |session| {
            let sql = format!(
                "SELECT {RUN_RECORD_COLUMNS} FROM run_records \
                 WHERE run_id = $1 AND ($2::text IS NULL OR outcome = $2) AND row_number > $3 \
                 ORDER BY row_number LIMIT $4"
            );
            query_all(
                &session.client,
                &sql,
                &[&run_id, &outcome, &after_row, &limit],
                read_run_record,
            )
            .await
        })
    }

    pub(crate) async fn latest_run_records(
        &self,
        run_id: &str,
        filter: Option<Outcome>,
        limit: usize,
    ) -> Result<Vec<RunRecordRow>, StateError> {
        let limit = to_sql_integer(limit as u64);
        let outcome = filter.map(Outcome::as_str);
        with_session!(self, |session| {
            let sql = format!(
                "SELECT {RUN_RECORD_COLUMNS} FROM run_records \
                 WHERE run_id = $1 AND ($2::text IS NULL OR outcome = $2) \
                 ORDER BY row_number DESC LIMIT $3"
            );
            query_all(
                &session.client,
                &sql,
                &[&run_id, &outcome, &limit],
                read_run_record,
            )
            .await
        })
    }

    pub(crate) async fn prune_runs(&self, before: DateTime<Utc>) -> Result<u64, StateError> {
        let doing = "removing old runs";
        with_session!(self, |session| {
            let transaction = session
                .client
                .transaction()
                .await
                .map_err(StateError::postgres(doing))?;
            let old = "SELECT id FROM runs r WHERE finished_at IS NOT NULL AND finished_at < $1 \
                       AND id <> (SELECT MAX(id COLLATE \"C\") FROM runs n WHERE n.sync = r.sync)";
            for table in ["run_records", "stripe_exchanges"] {
                transaction
                    .execute(
                        &format!("DELETE FROM {table} WHERE run_id IN ({old})"),
                        &[&before],
                    )
                    .await
                    .map_err(StateError::postgres(doing))?;
            }
            let removed = transaction
                .execute(&format!("DELETE FROM runs WHERE id IN ({old})"), &[&before])
                .await
                .map_err(StateError::postgres(doing))?;
            transaction
                .execute(
                    "DELETE FROM deliveries WHERE created_at < $1 AND status <> $2",
                    &[&before, &DeliveryStatus::Pending.as_str()],
                )
                .await
                .map_err(StateError::postgres(doing))?;
            transaction
                .execute(
                    "DELETE FROM sequence_runs WHERE id IN (SELECT id FROM sequence_runs r \
                     WHERE finished_at IS NOT NULL AND finished_at < $1 AND id <> \
                     (SELECT MAX(id COLLATE \"C\") FROM sequence_runs n \
                     WHERE n.sequence_name = r.sequence_name))",
                    &[&before],
                )
                .await
                .map_err(StateError::postgres(doing))?;
            transaction
                .commit()
                .await
                .map_err(StateError::postgres(doing))?;
            Ok(removed)
        })
    }

    pub(crate) async fn list_stripe_exchanges(
        &self,
        run_id: &str,
        row_number: u64,
    ) -> Result<Vec<StripeExchange>, StateError> {
        let row_number = to_sql_integer(row_number);
        with_session!(self, |session| {
            let sql = format!(
                "SELECT {STRIPE_EXCHANGE_COLUMNS} FROM stripe_exchanges \
                 WHERE run_id = $1 AND row_number = $2 ORDER BY sequence"
            );
            query_all(
                &session.client,
                &sql,
                &[&run_id, &row_number],
                read_stripe_exchange,
            )
            .await
        })
    }

    pub(crate) async fn prune_stripe_exchanges(
        &self,
        sent_before: DateTime<Utc>,
    ) -> Result<u64, StateError> {
        with_session!(self, |session| {
            session
                .client
                .execute(
                    "DELETE FROM stripe_exchanges WHERE sent_at < $1",
                    &[&sent_before],
                )
                .await
                .map_err(StateError::postgres("removing old Stripe exchanges"))
        })
    }

    pub(crate) async fn count_run_records(
        &self,
        run_id: &str,
        filter: Option<Outcome>,
    ) -> Result<u64, StateError> {
        let outcome = filter.map(Outcome::as_str);
        with_session!(self, |session| {
            let row = session
                .client
                .query_one(
                    "SELECT COUNT(*) FROM run_records WHERE run_id = $1 AND ($2::text IS NULL OR outcome = $2)",
                    &[&run_id, &outcome],
                )
                .await
                .map_err(StateError::postgres("counting run records"))?;
            Ok(u64::try_from(column::<i64>(&row, 0)?).unwrap_or(0))
        })
    }

    pub(crate) async fn snapshot_keys(
        &self,
        sync: &str,
        object: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<SnapshotKey>, StateError> {
        let limit = to_sql_integer(limit as u64);
        with_session!(self, |session| {
            // `key` is COLLATE "C": byte order, served by the primary key index.
            query_all(
                &session.client,
                "SELECT key, destination_id, payload_hash FROM snapshot \
                 WHERE sync = $1 AND object = $2 AND ($3::text IS NULL OR key > $3) \
                 ORDER BY key LIMIT $4",
                &[&sync, &object, &after, &limit],
                |row| {
                    Ok(SnapshotKey {
                        key: column(row, 0)?,
                        destination_id: column(row, 1)?,
                        payload_hash: column(row, 2)?,
                    })
                },
            )
            .await
        })
    }

    pub(crate) async fn snapshot_entries(
        &self,
        sync: &str,
        object: &str,
        keys: &[String],
    ) -> Result<Vec<(String, SnapshotEntry)>, StateError> {
        with_session!(self, |session| {
            query_all(
                &session.client,
                "SELECT key, destination_id, payload_hash, payload, updated_at FROM snapshot \
                 WHERE sync = $1 AND object = $2 AND key = ANY($3)",
                &[&sync, &object, &keys],
                |row| {
                    let entry = SnapshotEntry {
                        destination_id: column(row, 1)?,
                        payload_hash: column(row, 2)?,
                        payload: column(row, 3)?,
                        updated_at: column(row, 4)?,
                    };
                    Ok((column::<String>(row, 0)?, entry))
                },
            )
            .await
        })
    }

    pub(crate) async fn count_snapshot(&self, sync: &str, object: &str) -> Result<u64, StateError> {
        with_session!(self, |session| {
            let row = session
                .client
                .query_one(
                    "SELECT COUNT(*) FROM snapshot WHERE sync = $1 AND object = $2",
                    &[&sync, &object],
                )
                .await
                .map_err(StateError::postgres("counting the snapshot"))?;
            Ok(u64::try_from(column::<i64>(&row, 0)?).unwrap_or(0))
        })
    }

    pub(crate) async fn pending_creates(
        &self,
        sync: &str,
        object: &str,
        keys: &[String],
    ) -> Result<Vec<PendingCreate>, StateError> {
        with_session!(self, |session| {
            query_all(
                &session.client,
                "SELECT key, idempotency_key, request_body, created_at FROM pending_creates \
                 WHERE sync = $1 AND object = $2 AND key = ANY($3)",
                &[&sync, &object, &keys],
                |row| {
                    Ok(PendingCreate {
                        key: column(row, 0)?,
                        idempotency_key: column(row, 1)?,
                        request_body: column(row, 2)?,
                        created_at: column(row, 3)?,
                    })
                },
            )
            .await
        })
    }

    /// One statement for the whole list (UNNEST over arrays), so saving N creates is one
    /// round trip.
    pub(crate) async fn save_pending_creates(
        &self,
        sync: &str,
        object: &str,
        items: &[&PendingCreate],
    ) -> Result<(), StateError> {
        let keys: Vec<&str> = items.iter().map(|item| item.key.as_str()).collect();
        let idempotency_keys: Vec<&str> = items
            .iter()
            .map(|item| item.idempotency_key.as_str())
            .collect();
        let bodies: Vec<&str> = items
            .iter()
            .map(|item| item.request_body.as_str())
            .collect();
        let created_at: Vec<DateTime<Utc>> = items.iter().map(|item| item.created_at).collect();
        with_session!(self, |session| {
            session
                .client
                .execute(
                    "INSERT INTO pending_creates (sync, object, key, idempotency_key, request_body, \
                     created_at) SELECT $1, $6, * FROM UNNEST($2::text[], $3::text[], $4::text[], \
                     $5::timestamptz[]) ON CONFLICT (sync, object, key) DO UPDATE SET \
                     idempotency_key = excluded.idempotency_key, \
                     request_body = excluded.request_body, created_at = excluded.created_at",
                    &[&sync, &keys, &idempotency_keys, &bodies, &created_at, &object],
                )
                .await
                .map_err(StateError::postgres("saving pending creates"))?;
            Ok(())
        })
    }

    pub(crate) async fn commit_batch(
        &self,
        sync: &str,
        object: &str,
        run_id: &str,
        batch: &CommitBatchRef<'_>,
    ) -> Result<(), StateError> {
        let doing = "committing a batch";
        with_session!(self, |session| {
            let transaction = session
                .client
                .transaction()
                .await
                .map_err(StateError::postgres(doing))?;
            if set_run_counts(&transaction, run_id, Some(sync), batch.counts).await? == 0 {
                return Err(StateError::NotFound {
                    what: ObjectType::Run,
                    name: run_id.to_string(),
                });
            }

            let records = batch.records;
            let row_numbers: Vec<i64> = records
                .iter()
                .map(|r| to_sql_integer(r.row_number))
                .collect();
            let keys: Vec<&str> = records.iter().map(|r| r.key.as_str()).collect();
            let outcomes: Vec<&str> = records.iter().map(|r| r.outcome.as_str()).collect();
            let destination_ids: Vec<Option<&str>> = records
                .iter()
                .map(|r| r.destination_id.as_deref())
                .collect();
            let reasons: Vec<Option<&str>> = records.iter().map(|r| r.reason.as_deref()).collect();
            let request_ids: Vec<Option<&str>> =
                records.iter().map(|r| r.request_id.as_deref()).collect();
            let changes: Vec<Option<&str>> = records.iter().map(|r| r.changes.as_deref()).collect();
            transaction
                .execute(
                    &format!(
                        "INSERT INTO run_records (run_id, {RUN_RECORD_COLUMNS}) \
                         SELECT $1, r, k, o, d, re, rq, c FROM \
                         UNNEST($2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], \
                         $7::text[], $8::text[]) AS t(r, k, o, d, re, rq, c)"
                    ),
                    &[
                        &run_id,
                        &row_numbers,
                        &keys,
                        &outcomes,
                        &destination_ids,
                        &reasons,
                        &request_ids,
                        &changes,
                    ],
                )
                .await
                .map_err(StateError::postgres(doing))?;

            let upserts = &batch.snapshot_upserts;
            let snapshot_keys: Vec<&str> = upserts.iter().map(|(key, _)| key.as_str()).collect();
            let destination_ids: Vec<&str> = upserts
                .iter()
                .map(|(_, e)| e.destination_id.as_str())
                .collect();
            let hashes: Vec<&str> = upserts
                .iter()
                .map(|(_, e)| e.payload_hash.as_str())
                .collect();
            let payloads: Vec<&str> = upserts.iter().map(|(_, e)| e.payload.as_str()).collect();
            let updated_at: Vec<DateTime<Utc>> =
                upserts.iter().map(|(_, e)| e.updated_at).collect();
            transaction
                .execute(
                    "INSERT INTO snapshot (sync, object, key, destination_id, payload_hash, payload, \
                     updated_at) SELECT $1, $7, k, d, h, p, u FROM UNNEST($2::text[], \
                     $3::text[], $4::text[], $5::text[], $6::timestamptz[]) AS t(k, d, h, p, u) \
                     ON CONFLICT (sync, object, key) DO UPDATE SET \
                     destination_id = excluded.destination_id, payload_hash = excluded.payload_hash, \
                     payload = excluded.payload, updated_at = excluded.updated_at",
                    &[
                        &sync,
                        &snapshot_keys,
                        &destination_ids,
                        &hashes,
                        &payloads,
                        &updated_at,
                        &object,
                    ],
                )
                .await
                .map_err(StateError::postgres(doing))?;

            let settled_keys: Vec<&str> = snapshot_keys
                .iter()
                .copied()
                .chain(batch.pending_deletes.iter().map(String::as_str))
                .collect();
            transaction
                .execute(
                    "DELETE FROM pending_creates WHERE sync = $1 AND object = $3 AND key = ANY($2)",
                    &[&sync, &settled_keys, &object],
                )
                .await
                .map_err(StateError::postgres(doing))?;
            transaction
                .execute(
                    "DELETE FROM snapshot WHERE sync = $1 AND object = $3 AND key = ANY($2)",
                    &[&sync, &batch.snapshot_deletes, &object],
                )
                .await
                .map_err(StateError::postgres(doing))?;

            let exchanges = batch.exchanges;
            let row_numbers: Vec<i64> = exchanges
                .iter()
                .map(|e| to_sql_integer(e.row_number))
                .collect();
            let sequences: Vec<i64> = exchanges
                .iter()
                .map(|e| to_sql_integer(e.sequence))
                .collect();
            // Truncated as SQLite's text is: PostgreSQL would round to the microsecond.
            let sent_at: Vec<DateTime<Utc>> =
                exchanges.iter().map(|e| stored_time(e.sent_at)).collect();
            let methods: Vec<&str> = exchanges.iter().map(|e| e.method.as_str()).collect();
            let paths: Vec<&str> = exchanges.iter().map(|e| e.path.as_str()).collect();
            let idempotency_keys: Vec<Option<&str>> = exchanges
                .iter()
                .map(|e| e.idempotency_key.as_deref())
                .collect();
            let request_bodies: Vec<Option<&str>> = exchanges
                .iter()
                .map(|e| e.request_body.as_deref())
                .collect();
            let statuses: Vec<Option<i32>> =
                exchanges.iter().map(|e| e.status.map(i32::from)).collect();
            let response_bodies: Vec<Option<&str>> = exchanges
                .iter()
                .map(|e| e.response_body.as_deref())
                .collect();
            let request_ids: Vec<Option<&str>> =
                exchanges.iter().map(|e| e.request_id.as_deref()).collect();
            let errors: Vec<Option<&str>> = exchanges.iter().map(|e| e.error.as_deref()).collect();
            let durations: Vec<i64> = exchanges
                .iter()
                .map(|e| to_sql_integer(e.duration_ms))
                .collect();
            transaction
                .execute(
                    &format!(
                        "INSERT INTO stripe_exchanges (run_id, {STRIPE_EXCHANGE_COLUMNS}) \
                         SELECT $1, r, s, sa, m, p, ik, rb, st, ab, rq, e, d FROM \
                         UNNEST($2::bigint[], $3::bigint[], $4::timestamptz[], $5::text[], \
                         $6::text[], $7::text[], $8::text[], $9::int[], $10::text[], $11::text[], \
                         $12::text[], $13::bigint[]) AS t(r, s, sa, m, p, ik, rb, st, ab, rq, e, d) \
                         ON CONFLICT (run_id, sequence) DO NOTHING"
                    ),
                    &[
                        &run_id,
                        &row_numbers,
                        &sequences,
                        &sent_at,
                        &methods,
                        &paths,
                        &idempotency_keys,
                        &request_bodies,
                        &statuses,
                        &response_bodies,
                        &request_ids,
                        &errors,
                        &durations,
                    ],
                )
                .await
                .map_err(StateError::postgres(doing))?;
            transaction
                .commit()
                .await
                .map_err(StateError::postgres(doing))?;
            Ok(())
        })
    }

    pub(crate) async fn index_state(&self, scope: &str) -> Result<Option<IndexState>, StateError> {
        with_session!(self, |session| {
            query_optional(
                &session.client,
                "SELECT key_names, built_at, created_through, events_through, refreshed_at \
                 FROM key_index_state WHERE scope = $1",
                &[&scope],
                |row| {
                    Ok(IndexState {
                        key_names: serde_json::from_value(column(row, 0)?).map_err(|e| {
                            StateError::Corrupt(format!("unreadable index key names ({e})"))
                        })?,
                        built_at: column(row, 1)?,
                        created_through: column(row, 2)?,
                        events_through: column(row, 3)?,
                        refreshed_at: column(row, 4)?,
                    })
                },
            )
            .await
        })
    }

    pub(crate) async fn index_clear(&self, scope: &str) -> Result<(), StateError> {
        let doing = "clearing the key index";
        with_session!(self, |session| {
            let transaction = session
                .client
                .transaction()
                .await
                .map_err(StateError::postgres(doing))?;
            for sql in [
                "DELETE FROM key_index WHERE scope = $1",
                "DELETE FROM key_index_state WHERE scope = $1",
            ] {
                transaction
                    .execute(sql, &[&scope])
                    .await
                    .map_err(StateError::postgres(doing))?;
            }
            transaction
                .commit()
                .await
                .map_err(StateError::postgres(doing))
        })
    }

    pub(crate) async fn index_update(
        &self,
        scope: &str,
        records: &[IndexedRecord],
        removed: &[String],
    ) -> Result<(), StateError> {
        let doing = "updating the key index";
        let forgotten: Vec<&str> = records
            .iter()
            .filter(|r| !r.new)
            .map(|r| r.destination_id.as_str())
            .chain(removed.iter().map(String::as_str))
            .collect();
        let mut names = Vec::new();
        let mut values = Vec::new();
        let mut ids = Vec::new();
        for record in records {
            for (name, value) in &record.keys {
                names.push(name.as_str());
                values.push(value.as_str());
                ids.push(record.destination_id.as_str());
            }
        }
        with_session!(self, |session| {
            let transaction = session
                .client
                .transaction()
                .await
                .map_err(StateError::postgres(doing))?;
            transaction
                .execute(
                    "DELETE FROM key_index WHERE scope = $1 AND destination_id = ANY($2)",
                    &[&scope, &forgotten],
                )
                .await
                .map_err(StateError::postgres(doing))?;
            transaction
                .execute(
                    "INSERT INTO key_index (scope, key_name, key_value, destination_id) \
                     SELECT $1, * FROM UNNEST($2::text[], $3::text[], $4::text[]) \
                     ON CONFLICT DO NOTHING",
                    &[&scope, &names, &values, &ids],
                )
                .await
                .map_err(StateError::postgres(doing))?;
            transaction
                .commit()
                .await
                .map_err(StateError::postgres(doing))
        })
    }

    pub(crate) async fn index_lookup(
        &self,
        scope: &str,
        key_name: &str,
        values: &[String],
    ) -> Result<Vec<(String, String)>, StateError> {
        with_session!(self, |session| {
            query_all(
                &session.client,
                "SELECT key_value, destination_id FROM key_index \
                 WHERE scope = $1 AND key_name = $2 AND key_value = ANY($3) \
                 ORDER BY destination_id COLLATE \"C\"",
                &[&scope, &key_name, &values],
                |row| Ok((column(row, 0)?, column(row, 1)?)),
            )
            .await
        })
    }

    pub(crate) async fn index_save_state(
        &self,
        scope: &str,
        state: &IndexState,
    ) -> Result<(), StateError> {
        let key_names = serde_json::Value::from(state.key_names.clone());
        with_session!(self, |session| {
            session
                .client
                .execute(
                    "INSERT INTO key_index_state (scope, key_names, built_at, created_through, \
                     events_through, refreshed_at) VALUES ($1, $2, $3, $4, $5, $6) \
                     ON CONFLICT (scope) DO UPDATE SET key_names = excluded.key_names, \
                     built_at = excluded.built_at, created_through = excluded.created_through, \
                     events_through = excluded.events_through, refreshed_at = excluded.refreshed_at",
                    &[
                        &scope,
                        &key_names,
                        &state.built_at,
                        &state.created_through,
                        &state.events_through,
                        &state.refreshed_at,
                    ],
                )
                .await
                .map_err(StateError::postgres("saving the key index state"))?;
            Ok(())
        })
    }

    /// Inserts the token; `Ok(false)` when one with its name exists.
    pub(crate) async fn insert_api_token(
        &self,
        record: &ApiTokenRecord,
        token_hash: &str,
    ) -> Result<bool, StateError> {
        let doing = "creating an API token";
        with_session!(self, |session| {
            // A repeat after a lost connection finds the row its first attempt inserted.
            let ours = session
                .client
                .query_opt(
                    "SELECT 1 FROM api_tokens WHERE name = $1 AND token_hash = $2",
                    &[&record.name, &token_hash],
                )
                .await
                .map_err(StateError::postgres(doing))?;
            if ours.is_some() {
                return Ok(true);
            }
            let transaction =
                names_transaction(session, ObjectType::ApiToken, &record.name, doing).await?;
            let inserted = transaction
                .execute(
                    "INSERT INTO api_tokens (name, token_hash, prefix, created_at, last_used_at) \
                     VALUES ($1, $2, $3, $4, NULL) ON CONFLICT (name) DO NOTHING",
                    &[
                        &record.name,
                        &token_hash,
                        &record.prefix,
                        &record.created_at,
                    ],
                )
                .await
                .map_err(StateError::postgres(doing))?;
            transaction
                .commit()
                .await
                .map_err(StateError::postgres(doing))?;
            Ok(inserted > 0)
        })
    }

    pub(crate) async fn list_api_tokens(&self) -> Result<Vec<ApiTokenRecord>, StateError> {
        with_session!(self, |session| {
            let sql =
                format!("SELECT {API_TOKEN_COLUMNS} FROM api_tokens ORDER BY name COLLATE \"C\"");
            query_all(&session.client, &sql, &[], read_api_token).await
        })
    }

    pub(crate) async fn delete_api_token(&self, name: &str) -> Result<bool, StateError> {
        with_session!(self, |session| {
            let removed = session
                .client
                .execute("DELETE FROM api_tokens WHERE name = $1", &[&name])
                .await
                .map_err(StateError::postgres("revoking an API token"))?;
            Ok(removed > 0)
        })
    }

    /// The token with this hash, its `last_used_at` first set to `now` unless it was set less
    /// than a minute ago.
    pub(crate) async fn touch_api_token(
        &self,
        token_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<ApiTokenRecord>, StateError> {
        with_session!(self, |session| {
            let sql = format!("SELECT {API_TOKEN_COLUMNS} FROM api_tokens WHERE token_hash = $1");
            let Some(mut record) =
                query_optional(&session.client, &sql, &[&token_hash], read_api_token).await?
            else {
                return Ok(None);
            };
            if api_tokens::last_used_is_stale(record.last_used_at, now) {
                session
                    .client
                    .execute(
                        "UPDATE api_tokens SET last_used_at = $2 WHERE token_hash = $1",
                        &[&token_hash, &now],
                    )
                    .await
                    .map_err(StateError::postgres("recording the use of an API token"))?;
                record.last_used_at = Some(now);
            }
            Ok(Some(record))
        })
    }

    pub(crate) async fn count_api_tokens(&self) -> Result<u64, StateError> {
        with_session!(self, |session| {
            let row = session
                .client
                .query_one("SELECT COUNT(*) FROM api_tokens", &[])
                .await
                .map_err(StateError::postgres("counting API tokens"))?;
            Ok(u64::try_from(column::<i64>(&row, 0)?).unwrap_or(0))
        })
    }

    /// The raised alerts of one sync, or of all.
    pub(crate) async fn raised_alerts(
        &self,
        sync: Option<&str>,
    ) -> Result<Vec<RaisedAlert>, StateError> {
        with_session!(self, |session| {
            let sql = format!(
                "SELECT {RAISED_ALERT_COLUMNS} FROM raised_alerts \
                 WHERE ($1::text IS NULL OR sync_name = $1)"
            );
            query_all(&session.client, &sql, &[&sync], read_raised_alert).await
        })
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
        with_session!(self, |session| {
            let saved = session
                .client
                .execute(
                    "INSERT INTO raised_alerts (sync_name, condition, message, raised_at) \
                     SELECT name, $2, $3, $4 FROM syncs WHERE name = $1 \
                     ON CONFLICT (sync_name, condition) DO UPDATE SET message = excluded.message",
                    &[&sync, &condition.as_str(), &message, &at],
                )
                .await
                .map_err(StateError::postgres("raising an alert"))?;
            Ok(saved > 0)
        })
    }

    pub(crate) async fn resolve_alert(
        &self,
        sync: &str,
        condition: AlertCondition,
    ) -> Result<bool, StateError> {
        with_session!(self, |session| {
            let removed = session
                .client
                .execute(
                    "DELETE FROM raised_alerts WHERE sync_name = $1 AND condition = $2",
                    &[&sync, &condition.as_str()],
                )
                .await
                .map_err(StateError::postgres("resolving an alert"))?;
            Ok(removed > 0)
        })
    }

    /// Inserts the deliveries in one transaction (one statement, so a repeat after a lost
    /// connection fails on the primary key rather than queueing twice).
    pub(crate) async fn insert_deliveries(
        &self,
        deliveries: &[DeliveryRecord],
    ) -> Result<(), StateError> {
        let text = |value: fn(&DeliveryRecord) -> &str| -> Vec<&str> {
            deliveries.iter().map(value).collect()
        };
        let optional_text = |value: fn(&DeliveryRecord) -> Option<&str>| -> Vec<Option<&str>> {
            deliveries.iter().map(value).collect()
        };
        let ids = text(|d| &d.id);
        let event_ids = text(|d| &d.event_id);
        let event_types = text(|d| &d.event_type);
        let syncs = text(|d| &d.sync);
        let run_ids = optional_text(|d| d.run_id.as_deref());
        let channels = text(|d| &d.channel);
        let payloads = text(|d| &d.payload);
        let statuses = text(|d| d.status.as_str());
        let answers = optional_text(|d| d.answer.as_deref());
        let attempts: Vec<i64> = deliveries.iter().map(|d| i64::from(d.attempts)).collect();
        let created_ats: Vec<DateTime<Utc>> = deliveries.iter().map(|d| d.created_at).collect();
        let next_attempt_ats: Vec<Option<DateTime<Utc>>> =
            deliveries.iter().map(|d| d.next_attempt_at).collect();
        let last_attempt_ats: Vec<Option<DateTime<Utc>>> =
            deliveries.iter().map(|d| d.last_attempt_at).collect();
        let answer_statuses: Vec<Option<i32>> = deliveries
            .iter()
            .map(|d| d.answer_status.map(i32::from))
            .collect();
        with_session!(self, |session| {
            session
                .client
                .execute(
                    &format!(
                        "INSERT INTO deliveries ({DELIVERY_COLUMNS}) SELECT * FROM UNNEST(\
                         $1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
                         $7::text[], $8::text[], $9::bigint[], $10::timestamptz[], \
                         $11::timestamptz[], $12::timestamptz[], $13::integer[], $14::text[])"
                    ),
                    &[
                        &ids,
                        &event_ids,
                        &event_types,
                        &syncs,
                        &run_ids,
                        &channels,
                        &payloads,
                        &statuses,
                        &attempts,
                        &created_ats,
                        &next_attempt_ats,
                        &last_attempt_ats,
                        &answer_statuses,
                        &answers,
                    ],
                )
                .await
                .map_err(StateError::postgres("queueing deliveries"))?;
            Ok(())
        })
    }

    /// Pending deliveries due at `now`, oldest first.
    pub(crate) async fn due_deliveries(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<DeliveryRecord>, StateError> {
        let limit = i64::from(limit);
        with_session!(self, |session| {
            let sql = format!(
                "SELECT {DELIVERY_COLUMNS} FROM deliveries \
                 WHERE status = $1 AND next_attempt_at <= $2 \
                 ORDER BY created_at, id COLLATE \"C\" LIMIT $3"
            );
            query_all(
                &session.client,
                &sql,
                &[&DeliveryStatus::Pending.as_str(), &now, &limit],
                read_delivery,
            )
            .await
        })
    }

    /// Like `due_deliveries`, and moves each one's next attempt to `lease_until` in the same
    /// statement, so another process draining the queue meanwhile does not send it too (rows
    /// another process is claiming are skipped, not waited for).
    pub(crate) async fn claim_due_deliveries(
        &self,
        now: DateTime<Utc>,
        limit: u32,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<DeliveryRecord>, StateError> {
        let limit = i64::from(limit);
        with_session!(self, |session| {
            let sql = format!(
                "UPDATE deliveries SET next_attempt_at = $4 WHERE id IN (\
                 SELECT id FROM deliveries WHERE status = $1 AND next_attempt_at <= $2 \
                 ORDER BY created_at, id COLLATE \"C\" LIMIT $3 FOR UPDATE SKIP LOCKED) \
                 RETURNING {DELIVERY_COLUMNS}"
            );
            query_all(
                &session.client,
                &sql,
                &[
                    &DeliveryStatus::Pending.as_str(),
                    &now,
                    &limit,
                    &lease_until,
                ],
                read_delivery,
            )
            .await
        })
    }

    /// Counts the attempt and keeps its outcome; `Ok(false)` when there is no such delivery.
    pub(crate) async fn record_delivery_attempt(
        &self,
        id: &str,
        attempt: &DeliveryAttempt,
    ) -> Result<bool, StateError> {
        let answer_status = attempt.answer_status.map(i32::from);
        with_session!(self, |session| {
            let changed = session
                .client
                .execute(
                    "UPDATE deliveries SET attempts = attempts + 1, status = $2, \
                     next_attempt_at = $3, last_attempt_at = $4, answer_status = $5, answer = $6 \
                     WHERE id = $1",
                    &[
                        &id,
                        &attempt.status.as_str(),
                        &attempt.next_attempt_at,
                        &attempt.at,
                        &answer_status,
                        &attempt.answer,
                    ],
                )
                .await
                .map_err(StateError::postgres("recording a delivery attempt"))?;
            Ok(changed > 0)
        })
    }

    /// The newest deliveries, of one sync or of all, newest first.
    pub(crate) async fn list_deliveries(
        &self,
        sync: Option<&str>,
        limit: u32,
    ) -> Result<Vec<DeliveryRecord>, StateError> {
        let limit = i64::from(limit);
        with_session!(self, |session| {
            let sql = format!(
                "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE ($1::text IS NULL OR sync_name = $1) \
                 ORDER BY created_at DESC, id COLLATE \"C\" DESC LIMIT $2"
            );
            query_all(&session.client, &sql, &[&sync, &limit], read_delivery).await
        })
    }

    pub(crate) async fn get_delivery(
        &self,
        id: &str,
    ) -> Result<Option<DeliveryRecord>, StateError> {
        with_session!(self, |session| {
            let sql = format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id = $1");
            query_optional(&session.client, &sql, &[&id], read_delivery).await
        })
    }

    /// Inserts the session; `Ok(false)` when one with its hash exists.
    pub(crate) async fn insert_ui_session(
        &self,
        ui_session: &UiSession,
    ) -> Result<bool, StateError> {
        with_session!(self, |session| {
            let inserted = session
                .client
                .execute(
                    &format!(
                        "INSERT INTO ui_sessions ({UI_SESSION_COLUMNS}) VALUES ($1, $2, $3, $4, $5) \
                         ON CONFLICT (id_hash) DO NOTHING"
                    ),
                    &[
                        &ui_session.id_hash,
                        &ui_session.token_name,
                        &ui_session.csrf,
                        &ui_session.signed_in_at,
                        &ui_session.last_seen_at,
                    ],
                )
                .await
                .map_err(StateError::postgres("saving a web UI session"))?;
            Ok(inserted > 0)
        })
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
        with_session!(self, |session| {
            let sql = format!(
                "UPDATE ui_sessions SET last_seen_at = GREATEST(last_seen_at, $2) \
                 WHERE id_hash = $1 AND last_seen_at >= $3 RETURNING {UI_SESSION_COLUMNS}"
            );
            let seen = query_optional(
                &session.client,
                &sql,
                &[&id_hash, &now, &idle_cutoff],
                read_ui_session,
            )
            .await?;
            if seen.is_none() {
                session
                    .client
                    .execute(
                        "DELETE FROM ui_sessions WHERE id_hash = $1 AND last_seen_at < $2",
                        &[&id_hash, &idle_cutoff],
                    )
                    .await
                    .map_err(StateError::postgres("ending an idle web UI session"))?;
            }
            Ok(seen)
        })
    }

    pub(crate) async fn delete_ui_session(&self, id_hash: &str) -> Result<bool, StateError> {
        with_session!(self, |session| {
            let removed = session
                .client
                .execute("DELETE FROM ui_sessions WHERE id_hash = $1", &[&id_hash])
                .await
                .map_err(StateError::postgres("ending a web UI session"))?;
            Ok(removed > 0)
        })
    }

    pub(crate) async fn prune_ui_sessions(
        &self,
        idle_cutoff: DateTime<Utc>,
    ) -> Result<u64, StateError> {
        with_session!(self, |session| {
            session
                .client
                .execute(
                    "DELETE FROM ui_sessions WHERE last_seen_at < $1",
                    &[&idle_cutoff],
                )
                .await
                .map_err(StateError::postgres("removing idle web UI sessions"))
        })
    }

    /// Takes the budget's next slots in one statement, by the database server's clock, so
    /// processes on several machines agree without synchronized clocks. Concurrent reservations
    /// of one budget queue on its row; the clock is read before the row's lock is granted, so a
    /// reservation that waited reports a `first_in` a little longer than needed, never shorter.
    /// If the connection dies after the statement committed, the repeat reserves a second
    /// window and the first goes unused: slower, never faster than the budget.
    pub(crate) async fn reserve_rate_slots(
        &self,
        budget_key: &str,
        reservation: Reservation,
    ) -> Result<RateSlots, StateError> {
        let span_micros = reservation
            .span
            .num_microseconds()
            .expect("a reservation spans at most a minute");
        with_session!(self, |session| {
            // `excluded.next_free_at - span` is the clock reading: a new budget starts now.
            let row = session
                .client
                .query_one(
                    "WITH clock AS MATERIALIZED (SELECT clock_timestamp() AS now) \
                     INSERT INTO rate_budgets AS budget (budget_key, next_free_at) \
                     SELECT $1, clock.now + $2::bigint * INTERVAL '1 microsecond' FROM clock \
                     ON CONFLICT (budget_key) DO UPDATE SET next_free_at = \
                     GREATEST(budget.next_free_at, excluded.next_free_at - $2::bigint * INTERVAL '1 microsecond') \
                     + $2::bigint * INTERVAL '1 microsecond' \
                     RETURNING budget.next_free_at, (SELECT now FROM clock)",
                    &[&budget_key, &span_micros],
                )
                .await
                .map_err(StateError::postgres("reserving request slots"))?;
            let next_free_at: DateTime<Utc> = column(&row, 0)?;
            let now: DateTime<Utc> = column(&row, 1)?;
            Ok(reservation.slots(next_free_at - reservation.span, now))
        })
    }

    pub(crate) async fn get_workspace_setting(
        &self,
        key: &str,
    ) -> Result<Option<serde_json::Value>, StateError> {
        with_session!(self, |session| {
            query_optional(
                &session.client,
                "SELECT value FROM workspace_settings WHERE key = $1",
                &[&key],
                |row| Ok(sorted_json(column(row, 0)?)),
            )
            .await
        })
    }

    pub(crate) async fn put_workspace_setting(
        &self,
        key: &str,
        value: &serde_json::Value,
    ) -> Result<(), StateError> {
        with_session!(self, |session| {
            session
                .client
                .execute(
                    "INSERT INTO workspace_settings (key, value) VALUES ($1, $2) \
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    &[&key, value],
                )
                .await
                .map_err(StateError::postgres("saving a workspace setting"))?;
            Ok(())
        })
    }

    pub(crate) async fn enqueue_run(
        &self,
        id: &str,
        request: &NewRunRequest,
        now: DateTime<Utc>,
        prune_before: DateTime<Utc>,
    ) -> Result<Option<RunRequest>, StateError> {
        let doing = "queueing a run";
        with_session!(self, |session| {
            session
                .client
                .execute(
                    "DELETE FROM run_requests WHERE finished_at < $1",
                    &[&prune_before],
                )
                .await
                .map_err(StateError::postgres(doing))?;
            query_optional(
                &session.client,
                &format!(
                    "INSERT INTO run_requests (id, sync_name, reason, full_resync, \
                     allow_mass_retire, dedupe_key, requested_at, not_before) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $7) ON CONFLICT (dedupe_key) DO NOTHING \
                     RETURNING {RUN_REQUEST_COLUMNS}"
                ),
                &[
                    &id,
                    &request.sync,
                    &request.reason,
                    &request.full_resync,
                    &request.allow_mass_retire,
                    &request.dedupe_key,
                    &now,
                ],
                read_run_request,
            )
            .await
        })
    }

    pub(crate) async fn claim_run_request(
        &self,
        worker: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Option<RunRequest>, StateError> {
        with_session!(self, |session| {
            // SKIP LOCKED: processes claiming at the same moment each take another request
            // instead of queueing behind one another's row lock.
            query_optional(
                &session.client,
                &format!(
                    "UPDATE run_requests SET claimed_by = $1, lease_until = $3, claims = claims + 1 \
                     WHERE id = (SELECT id FROM run_requests WHERE finished_at IS NULL \
                     AND not_before <= $2 AND (claimed_by IS NULL OR lease_until < $2) \
                     ORDER BY requested_at, id COLLATE \"C\" LIMIT 1 FOR UPDATE SKIP LOCKED) \
                     RETURNING {RUN_REQUEST_COLUMNS}"
                ),
                &[&worker, &now, &lease_until],
                read_run_request,
            )
            .await
        })
    }

    pub(crate) async fn run_request_started(
        &self,
        id: &str,
        worker: &str,
        run_id: &str,
    ) -> Result<bool, StateError> {
        with_session!(self, |session| {
            let changed = session
                .client
                .execute(
                    "UPDATE run_requests SET run_id = $3 WHERE id = $1 AND claimed_by = $2",
                    &[&id, &worker, &run_id],
                )
                .await
                .map_err(StateError::postgres(
                    "recording the run a queued request started",
                ))?;
            Ok(changed > 0)
        })
    }

    pub(crate) async fn renew_run_request(
        &self,
        id: &str,
        worker: &str,
        lease_until: DateTime<Utc>,
    ) -> Result<Option<bool>, StateError> {
        with_session!(self, |session| {
            query_optional(
                &session.client,
                "UPDATE run_requests SET lease_until = $3 \
                 WHERE id = $1 AND claimed_by = $2 AND finished_at IS NULL \
                 RETURNING cancel_requested",
                &[&id, &worker, &lease_until],
                |row| column::<bool>(row, 0),
            )
            .await
        })
    }

    pub(crate) async fn release_run_request(
        &self,
        id: &str,
        worker: &str,
        not_before: DateTime<Utc>,
    ) -> Result<bool, StateError> {
        with_session!(self, |session| {
            let changed = session
                .client
                .execute(
                    "UPDATE run_requests SET claimed_by = NULL, lease_until = NULL, not_before = $3 \
                     WHERE id = $1 AND claimed_by = $2 AND finished_at IS NULL",
                    &[&id, &worker, &not_before],
                )
                .await
                .map_err(StateError::postgres("putting a run request back in the queue"))?;
            Ok(changed > 0)
        })
    }

    pub(crate) async fn finish_run_request(
        &self,
        id: &str,
        worker: &str,
        now: DateTime<Utc>,
        refusal: Option<&RunRefusal>,
    ) -> Result<bool, StateError> {
        let status = refusal.map(|r| i32::from(r.status));
        let code = refusal.map(|r| r.code.as_str());
        let message = refusal.map(|r| r.message.as_str());
        with_session!(self, |session| {
            let changed = session
                .client
                .execute(
                    "UPDATE run_requests SET finished_at = $3, lease_until = NULL, \
                     refusal_status = $4, refusal_code = $5, refusal_message = $6 \
                     WHERE id = $1 AND claimed_by = $2 AND finished_at IS NULL",
                    &[&id, &worker, &now, &status, &code, &message],
                )
                .await
                .map_err(StateError::postgres("finishing a run request"))?;
            Ok(changed > 0)
        })
    }

    pub(crate) async fn get_run_request(&self, id: &str) -> Result<Option<RunRequest>, StateError> {
        with_session!(self, |session| {
            query_optional(
                &session.client,
                &format!("SELECT {RUN_REQUEST_COLUMNS} FROM run_requests WHERE id = $1"),
                &[&id],
                read_run_request,
            )
            .await
        })
    }

    pub(crate) async fn pending_run_requests(&self) -> Result<Vec<RunRequest>, StateError> {
        with_session!(self, |session| {
            query_all(
                &session.client,
                &format!(
                    "SELECT {RUN_REQUEST_COLUMNS} FROM run_requests WHERE finished_at IS NULL \
                     ORDER BY requested_at, id COLLATE \"C\""
                ),
                &[],
                read_run_request,
            )
            .await
        })
    }

    pub(crate) async fn request_run_cancel(&self, run_id: &str) -> Result<bool, StateError> {
        with_session!(self, |session| {
            let changed = session
                .client
                .execute(
                    "UPDATE run_requests SET cancel_requested = TRUE \
                     WHERE run_id = $1 AND finished_at IS NULL",
                    &[&run_id],
                )
                .await
                .map_err(StateError::postgres("asking a run to cancel"))?;
            Ok(changed > 0)
        })
    }

    /// `pg_try_advisory_lock` on a session of its own, kept open by the guard: the lock ends
    /// with the session, whether the guard is dropped or the process dies.
    pub(crate) async fn find_run_request_by_dedupe_key(
        &self,
        dedupe_key: &str,
    ) -> Result<Option<RunRequest>, StateError> {
        with_session!(self, |session| {
            query_optional(
                &session.client,
                &format!("SELECT {RUN_REQUEST_COLUMNS} FROM run_requests WHERE dedupe_key = $1"),
                &[&dedupe_key],
                read_run_request,
            )
            .await
        })
    }

    pub(crate) async fn upsert_sequence(
        &self,
        name: &str,
        spec: &SequenceSpec,
    ) -> Result<SequenceRecord, StateError> {
        let spec_json = sequence_spec_json(spec);
        let doing = "saving a sequence";
        with_session!(self, |session| {
            let transaction = names_transaction(session, ObjectType::Sequence, name, doing).await?;
            let row = transaction
                .query_one(
                    "INSERT INTO sequences (name, spec, created_at, updated_at) \
                     VALUES ($1, $2, $3, $3) ON CONFLICT (name) DO UPDATE SET \
                     spec = excluded.spec, updated_at = excluded.updated_at \
                     RETURNING created_at, updated_at",
                    &[&name, &spec_json, &ids::now()],
                )
                .await
                .map_err(StateError::postgres(doing))?;
            transaction
                .commit()
                .await
                .map_err(StateError::postgres(doing))?;
            Ok(SequenceRecord {
                name: name.to_string(),
                spec: spec.clone(),
                created_at: column(&row, 0)?,
                updated_at: column(&row, 1)?,
            })
        })
    }

    pub(crate) async fn get_sequence(
        &self,
        name: &str,
    ) -> Result<Option<SequenceRecord>, StateError> {
        with_session!(self, |session| {
            let sql = format!("SELECT {SEQUENCE_COLUMNS} FROM sequences WHERE name = $1");
            query_optional(&session.client, &sql, &[&name], read_sequence).await
        })
    }

    pub(crate) async fn list_sequences(&self) -> Result<Vec<SequenceRecord>, StateError> {
        with_session!(self, |session| {
            let sql =
                format!("SELECT {SEQUENCE_COLUMNS} FROM sequences ORDER BY name COLLATE \"C\"");
            query_all(&session.client, &sql, &[], read_sequence).await
        })
    }

    /// Removes the sequence and its runs, in one transaction.
    pub(crate) async fn remove_sequence(&self, name: &str) -> Result<bool, StateError> {
        let doing = "removing a sequence";
        with_session!(self, |session| {
            let transaction = session
                .client
                .transaction()
                .await
                .map_err(StateError::postgres(doing))?;
            transaction
                .execute(
                    "DELETE FROM sequence_runs WHERE sequence_name = $1",
                    &[&name],
                )
                .await
                .map_err(StateError::postgres(doing))?;
            let removed = transaction
                .execute("DELETE FROM sequences WHERE name = $1", &[&name])
                .await
                .map_err(StateError::postgres(doing))?;
            transaction
                .commit()
                .await
                .map_err(StateError::postgres(doing))?;
            Ok(removed > 0)
        })
    }

    /// Inserts a new sequence run; `Ok(false)` when another one holds its dedupe key.
    pub(crate) async fn insert_sequence_run(
        &self,
        run: &SequenceRunRecord,
    ) -> Result<bool, StateError> {
        let spec_json = sequence_spec_json(&run.spec);
        let run_ids = run_ids_json(&run.run_ids);
        let step = i64::from(run.step);
        let version = to_sql_integer(run.version);
        with_session!(self, |session| {
            let inserted = session
                .client
                .execute(
                    "INSERT INTO sequence_runs (id, sequence_name, spec, status, reason, driver, \
                     step, run_ids, message, dedupe_key, version, started_at, finished_at, \
                     updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, \
                     $13, $14) ON CONFLICT (dedupe_key) DO NOTHING",
                    &[
                        &run.id,
                        &run.sequence,
                        &spec_json,
                        &run.status.as_str(),
                        &run.reason,
                        &run.driver,
                        &step,
                        &run_ids,
                        &run.message,
                        &run.dedupe_key,
                        &version,
                        &run.started_at,
                        &run.finished_at,
                        &run.updated_at,
                    ],
                )
                .await
                .map_err(StateError::postgres("starting a sequence run"))?;
            Ok(inserted > 0)
        })
    }

    /// The compare-and-set of a sequence run: one UPDATE. A second process updating the same
    /// row waits for the first to commit, then finds the version changed and updates nothing.
    pub(crate) async fn advance_sequence_run(
        &self,
        id: &str,
        expected_version: u64,
        update: &SequenceRunUpdate,
        now: DateTime<Utc>,
    ) -> Result<bool, StateError> {
        let expected_version = to_sql_integer(expected_version);
        let step = i64::from(update.step);
        let run_ids = run_ids_json(&update.run_ids);
        let finished_at = (update.status != SequenceRunStatus::Running).then_some(now);
        with_session!(self, |session| {
            let changed = session
                .client
                .execute(
                    "UPDATE sequence_runs SET step = $3, run_ids = $4, status = $5, \
                     message = $6, updated_at = $7, finished_at = $8, version = version + 1 \
                     WHERE id = $1 AND version = $2 AND status = $9",
                    &[
                        &id,
                        &expected_version,
                        &step,
                        &run_ids,
                        &update.status.as_str(),
                        &update.message,
                        &now,
                        &finished_at,
                        &SequenceRunStatus::Running.as_str(),
                    ],
                )
                .await
                .map_err(StateError::postgres("advancing a sequence run"))?;
            Ok(changed > 0)
        })
    }

    pub(crate) async fn get_sequence_run(
        &self,
        id: &str,
    ) -> Result<Option<SequenceRunRecord>, StateError> {
        with_session!(self, |session| {
            let sql = format!("SELECT {SEQUENCE_RUN_COLUMNS} FROM sequence_runs WHERE id = $1");
            query_optional(&session.client, &sql, &[&id], read_sequence_run).await
        })
    }

    pub(crate) async fn list_sequence_runs(
        &self,
        sequence: Option<&str>,
        limit: u32,
    ) -> Result<Vec<SequenceRunRecord>, StateError> {
        let limit = i64::from(limit);
        with_session!(self, |session| {
            let sql = format!(
                "SELECT {SEQUENCE_RUN_COLUMNS} FROM sequence_runs \
                 WHERE ($1::text IS NULL OR sequence_name = $1) \
                 ORDER BY id COLLATE \"C\" DESC LIMIT $2"
            );
            query_all(
                &session.client,
                &sql,
                &[&sequence, &limit],
                read_sequence_run,
            )
            .await
        })
    }

    pub(crate) async fn running_sequence_runs(&self) -> Result<Vec<SequenceRunRecord>, StateError> {
        with_session!(self, |session| {
            let sql = format!(
                "SELECT {SEQUENCE_RUN_COLUMNS} FROM sequence_runs WHERE status = $1 \
                 ORDER BY id COLLATE \"C\""
            );
            query_all(
                &session.client,
                &sql,
                &[&SequenceRunStatus::Running.as_str()],
                read_sequence_run,
            )
            .await
        })
    }

    pub(crate) async fn lock_sync(&self, sync: &SyncRecord) -> Result<SyncLock, StateError> {
        let key = advisory_lock_key(&sync.uid);
        let session = open_session(&self.inner.url).await?;
        for attempt in 1..=LOCK_ATTEMPTS {
            let acquired: bool = session
                .client
                .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
                .await
                .map_err(StateError::postgres("locking a sync"))?
                .get(0);
            if acquired {
                let Session {
                    client,
                    connection_task,
                } = session;
                return Ok(SyncLock::new(
                    &sync.name,
                    HeldLock::Postgres {
                        client,
                        connection_task,
                        key,
                    },
                ));
            }
            if attempt < LOCK_ATTEMPTS {
                tokio::time::sleep(LOCK_RETRY_DELAY).await;
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
        let key = advisory_lock_key(&sync.uid);
        let session = open_session(&self.inner.url).await?;
        let acquired: bool = session
            .client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
            .await
            .map_err(StateError::postgres("checking a sync's lock"))?
            .get(0);
        if !acquired {
            return Ok(None);
        }
        let Session {
            client,
            connection_task,
        } = session;
        Ok(Some(SyncLock::new(
            &sync.name,
            HeldLock::Postgres {
                client,
                connection_task,
                key,
            },
        )))
    }

    /// The lock of a create scope: a session-level advisory lock on a session of its own,
    /// tried every [`crate::CREATE_LOCK_POLL`] until it is free or `give_up` says to stop.
    pub(crate) async fn lock_create_scope(
        &self,
        scope: &str,
        give_up: &(dyn Fn() -> bool + Sync),
    ) -> Result<Option<SyncLock>, StateError> {
        let key = crate::sync_lock::advisory_lock_key(&format!("creates:{scope}"));
        let session = open_session(&self.inner.url).await?;
        loop {
            let acquired: bool = session
                .client
                .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
                .await
                .map_err(StateError::postgres("locking a create scope"))?
                .get(0);
            if acquired {
                let Session {
                    client,
                    connection_task,
                } = session;
                return Ok(Some(SyncLock::new(
                    scope,
                    HeldLock::Postgres {
                        client,
                        connection_task,
                        key,
                    },
                )));
            }
            if give_up() {
                return Ok(None);
            }
            tokio::time::sleep(crate::CREATE_LOCK_POLL).await;
        }
    }

    /// The shared session, reopened first if the server closed it (a restart, a timeout).
    async fn session(&self) -> Result<tokio::sync::MutexGuard<'_, Session>, StateError> {
        let mut session = self.inner.session.lock().await;
        if session.client.is_closed() {
            tracing::info!(location = %self.inner.url.redacted, "Reconnecting to the PostgreSQL state store.");
            *session = open_session(&self.inner.url).await?;
        }
        Ok(session)
    }
}

/// How long reaching the state database, then its handshake, may take (unless the connection
/// string sets `connect_timeout`): a server that accepts and never answers must not hang ferry.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

async fn open_session(url: &PostgresUrl) -> Result<Session, StateError> {
    let failed = |message: String| StateError::PostgresConnect {
        location: url.redacted.clone(),
        message,
    };
    let tls_failed = |error: TlsError| StateError::PostgresTls {
        location: url.redacted.clone(),
        message: error.to_string(),
    };
    let mut target = PostgresTarget::parse(&url.connection_string).map_err(|error| {
        failed(match &error {
            ConnectionStringError::Driver(driver_error) => postgres_error_text(driver_error),
            other => other.to_string(),
        })
    })?;
    if target.config().get_connect_timeout().is_none() {
        target.config_mut().connect_timeout(CONNECT_TIMEOUT);
    }
    let limit = target
        .config()
        .get_connect_timeout()
        .copied()
        .unwrap_or(CONNECT_TIMEOUT)
        + HANDSHAKE_TIMEOUT;
    let tls = target.tls_connector().map_err(tls_failed)?;
    let (client, connection) = tokio::time::timeout(limit, target.connect(&tls))
        .await
        .map_err(|_| {
            failed(format!(
                "the server accepted the connection but did not answer within {}s",
                limit.as_secs()
            ))
        })?
        .map_err(|error| match error {
            ConnectError::Tls(tls_error) => tls_failed(tls_error),
            ConnectError::Postgres(error) => failed(postgres_error_text(&error)),
        })?;
    let location = url.redacted.clone();
    let connection_task = tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%location, error = %postgres_error_text(&error), "A PostgreSQL state store session ended.");
        }
    });
    Ok(Session {
        client,
        connection_task,
    })
}

/// Applies every migration the database does not have, in one transaction (PostgreSQL DDL is
/// transactional), behind an advisory lock so concurrent `initialize` calls take turns.
async fn migrate(client: &mut Client) -> Result<(), StateError> {
    let doing = "migrating the workspace database";
    let transaction = client
        .transaction()
        .await
        .map_err(StateError::postgres(doing))?;
    transaction
        .execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK_KEY])
        .await
        .map_err(StateError::postgres(doing))?;
    transaction
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, \
             name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL)",
        )
        .await
        .map_err(StateError::postgres(doing))?;
    let current: i64 = transaction
        .query_one(
            "SELECT COALESCE(MAX(version), 0)::bigint FROM schema_migrations",
            &[],
        )
        .await
        .map_err(StateError::postgres(doing))?
        .get(0);
    let known = MIGRATIONS.last().map_or(0, |(version, _, _)| *version);
    if current > known {
        return Err(StateError::NewerSchema {
            found: current,
            known,
        });
    }
    for (version, name, sql) in MIGRATIONS
        .iter()
        .filter(|(version, _, _)| *version > current)
    {
        transaction
            .batch_execute(sql)
            .await
            .map_err(StateError::postgres(doing))?;
        transaction
            .execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                &[version, name, &ids::now()],
            )
            .await
            .map_err(StateError::postgres(doing))?;
        tracing::debug!(version, name, "Applied a workspace migration.");
    }
    transaction
        .commit()
        .await
        .map_err(StateError::postgres(doing))
}

/// Sets a run's counts; with `sync`, only if the run belongs to it. Returns the rows changed.
async fn set_run_counts(
    client: &impl GenericClient,
    run_id: &str,
    sync: Option<&str>,
    counts: &RunCounts,
) -> Result<u64, StateError> {
    let c = counts_to_columns(counts);
    client
        .execute(
            "UPDATE runs SET rows_total = $3, created_count = $4, updated_count = $5, \
             unchanged_count = $6, not_found_count = $7, rejected_count = $8, failed_count = $9, \
             requests_count = $10, not_attempted_count = $11, last_seen_at = $12, retired_count = $13 \
             WHERE id = $1 AND ($2::text IS NULL OR sync = $2)",
            &[
                &run_id,
                &sync,
                &c[0],
                &c[1],
                &c[2],
                &c[3],
                &c[4],
                &c[5],
                &c[6],
                &c[7],
                &c[8],
                // ferry's clock, as for every other run timestamp (not the server's `now()`,
                // which is also frozen at the start of the transaction).
                &ids::now(),
                &c[9],
            ],
        )
        .await
        .map_err(StateError::postgres("saving run counts"))
}

/// Begins the transaction that saves an object named `name`: takes the names lock for the rest
/// of it, then refuses the name when it is new and another object of its kind has it in another
/// case. The lock makes two sessions that save `m1` and `M1` at once take turns, so the second
/// sees the first's row.
async fn names_transaction<'a>(
    session: &'a mut Session,
    what: ObjectType,
    name: &str,
    doing: &'static str,
) -> Result<tokio_postgres::Transaction<'a>, StateError> {
    let transaction = session
        .client
        .transaction()
        .await
        .map_err(StateError::postgres(doing))?;
    transaction
        .execute("SELECT pg_advisory_xact_lock($1)", &[&NAMES_LOCK_KEY])
        .await
        .map_err(StateError::postgres(doing))?;
    let sql = format!(
        "SELECT name FROM {} WHERE lower(name) = lower($1) ORDER BY name COLLATE \"C\"",
        names::name_table(what)
    );
    let found = query_all(&transaction, &sql, &[&name], |row| column::<String>(row, 0)).await?;
    names::check_case_conflict(what, name, found.iter().map(String::as_str))?;
    Ok(transaction)
}

/// "model 'a'", "model 'b'" for each name the query returns.
async fn names_of(
    client: &impl GenericClient,
    what: &str,
    sql: &str,
    name: &str,
) -> Result<Vec<String>, StateError> {
    let names = query_all(client, sql, &[&name], |row| column::<String>(row, 0)).await?;
    Ok(names
        .into_iter()
        .map(|found| format!("{what} '{found}'"))
        .collect())
}

fn read_connection(row: &Row) -> Result<ConnectionRecord, StateError> {
    let name: String = column(row, 0)?;
    let secret = secret_from_columns(&name, column(row, 3)?, column(row, 4)?, column(row, 5)?)?;
    Ok(ConnectionRecord {
        kind: parse_connection_kind(&column::<String>(row, 1)?)?,
        config: sorted_json(column(row, 2)?),
        secret,
        created_at: column(row, 6)?,
        updated_at: column(row, 7)?,
        name,
    })
}

fn read_model(row: &Row) -> Result<ModelRecord, StateError> {
    Ok(ModelRecord {
        name: column(row, 0)?,
        connection: column(row, 1)?,
        sql: column(row, 2)?,
        created_at: column(row, 3)?,
        updated_at: column(row, 4)?,
    })
}

fn read_sync(row: &Row) -> Result<SyncRecord, StateError> {
    let name: String = column(row, 0)?;
    Ok(SyncRecord {
        uid: column(row, 1)?,
        spec: parse_sync_spec(&name, column(row, 2)?)?,
        created_at: column(row, 3)?,
        updated_at: column(row, 4)?,
        paused_at: column(row, 5)?,
        resumed_at: column(row, 6)?,
        name,
    })
}

fn read_run(row: &Row) -> Result<RunRecord, StateError> {
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
        started_at: column(row, 4)?,
        finished_at: column(row, 5)?,
        counts: counts_from_columns(counts),
        error: column(row, 14)?,
        last_seen_at: column(row, 16)?,
    })
}

fn read_run_record(row: &Row) -> Result<RunRecordRow, StateError> {
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

fn read_stripe_exchange(row: &Row) -> Result<StripeExchange, StateError> {
    Ok(StripeExchange {
        row_number: u64::try_from(column::<i64>(row, 0)?).unwrap_or(0),
        sequence: u64::try_from(column::<i64>(row, 1)?).unwrap_or(0),
        sent_at: column(row, 2)?,
        method: column(row, 3)?,
        path: column(row, 4)?,
        idempotency_key: column(row, 5)?,
        request_body: column(row, 6)?,
        status: column::<Option<i32>>(row, 7)?
            .map(|status| exchange_status(i64::from(status)))
            .transpose()?,
        response_body: column(row, 8)?,
        request_id: column(row, 9)?,
        error: column(row, 10)?,
        duration_ms: u64::try_from(column::<i64>(row, 11)?).unwrap_or(0),
    })
}

fn read_api_token(row: &Row) -> Result<ApiTokenRecord, StateError> {
    Ok(ApiTokenRecord {
        name: column(row, 0)?,
        prefix: column(row, 1)?,
        created_at: column(row, 2)?,
        last_used_at: column(row, 3)?,
    })
}

fn read_raised_alert(row: &Row) -> Result<RaisedAlert, StateError> {
    Ok(RaisedAlert {
        sync: column(row, 0)?,
        condition: parse_alert_condition(&column::<String>(row, 1)?)?,
        message: column(row, 2)?,
        raised_at: column(row, 3)?,
    })
}

fn read_delivery(row: &Row) -> Result<DeliveryRecord, StateError> {
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
        created_at: column(row, 9)?,
        next_attempt_at: column(row, 10)?,
        last_attempt_at: column(row, 11)?,
        answer_status: column::<Option<i32>>(row, 12)?
            .map(|status| delivery_number(i64::from(status), "answer status"))
            .transpose()?,
        answer: column(row, 13)?,
    })
}

const RUN_REQUEST_COLUMNS: &str = "id, sync_name, reason, full_resync, allow_mass_retire, \
     dedupe_key, requested_at, not_before, claims, claimed_by, lease_until, run_id, \
     cancel_requested, finished_at, refusal_status, refusal_code, refusal_message";

fn read_run_request(row: &Row) -> Result<RunRequest, StateError> {
    let refusal = match column::<Option<i32>>(row, 14)? {
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
        requested_at: column(row, 6)?,
        not_before: column(row, 7)?,
        claims: u32::try_from(column::<i64>(row, 8)?).unwrap_or(u32::MAX),
        claimed_by: column(row, 9)?,
        lease_until: column(row, 10)?,
        run_id: column(row, 11)?,
        cancel_requested: column(row, 12)?,
        finished_at: column(row, 13)?,
        refusal,
    })
}

fn read_sequence(row: &Row) -> Result<SequenceRecord, StateError> {
    let name: String = column(row, 0)?;
    Ok(SequenceRecord {
        spec: parse_sequence_spec(&name, column(row, 1)?)?,
        created_at: column(row, 2)?,
        updated_at: column(row, 3)?,
        name,
    })
}

fn read_sequence_run(row: &Row) -> Result<SequenceRunRecord, StateError> {
    let id: String = column(row, 0)?;
    let sequence: String = column(row, 1)?;
    Ok(SequenceRunRecord {
        spec: parse_sequence_spec(&sequence, column(row, 2)?)?,
        status: parse_sequence_run_status(&column::<String>(row, 3)?)?,
        reason: column(row, 4)?,
        driver: column(row, 5)?,
        step: sequence_run_number(column(row, 6)?, "step")?,
        run_ids: parse_run_ids(&id, column(row, 7)?)?,
        message: column(row, 8)?,
        dedupe_key: column(row, 9)?,
        version: sequence_run_number(column(row, 10)?, "version")?,
        started_at: column(row, 11)?,
        finished_at: column(row, 12)?,
        updated_at: column(row, 13)?,
        sequence,
        id,
    })
}

fn read_ui_session(row: &Row) -> Result<UiSession, StateError> {
    Ok(UiSession {
        id_hash: column(row, 0)?,
        token_name: column(row, 1)?,
        csrf: column(row, 2)?,
        signed_in_at: column(row, 3)?,
        last_seen_at: column(row, 4)?,
    })
}

async fn query_all<T>(
    client: &impl GenericClient,
    sql: &str,
    parameters: &[&(dyn ToSql + Sync)],
    read: impl Fn(&Row) -> Result<T, StateError>,
) -> Result<Vec<T>, StateError> {
    let rows = client
        .query(sql, parameters)
        .await
        .map_err(StateError::postgres("reading the workspace database"))?;
    rows.iter().map(read).collect()
}

async fn query_optional<T>(
    client: &impl GenericClient,
    sql: &str,
    parameters: &[&(dyn ToSql + Sync)],
    read: impl Fn(&Row) -> Result<T, StateError>,
) -> Result<Option<T>, StateError> {
    let row = client
        .query_opt(sql, parameters)
        .await
        .map_err(StateError::postgres("reading the workspace database"))?;
    row.as_ref().map(read).transpose()
}

fn column<'a, T: FromSql<'a>>(row: &'a Row, index: usize) -> Result<T, StateError> {
    row.try_get(index)
        .map_err(StateError::postgres("reading the workspace database"))
}
