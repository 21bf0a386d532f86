//! The workspace store: ferry's connections, models, syncs, runs, per-record outcomes, and per
//! sync the snapshot of what was last confirmed written plus the creates still in flight, and the
//! alerts it has raised; sequences of syncs and their runs; the deliveries of events to alert
//! channels, each tried until it is delivered or given up; a few workspace-wide settings; the
//! API tokens of `ferry server` and the sessions of its web UI, both kept only as hashes; and the
//! request budgets shared by every process that writes into one account.
//!
//! Two backends hold the same data with the same behaviour: SQLite in the workspace directory
//! (the default) and PostgreSQL (`--state-url`). [`StateStore`] dispatches to one of them and
//! does everything that is the same for both: name validation, cross-object checks and the
//! encryption of secrets, so a backend only stores and loads rows. One conformance suite
//! (`tests/conformance.rs`) runs against both.

mod api_tokens;
mod error;
mod ids;
mod master_key;
mod names;
mod postgres;
mod rate_budget;
mod records;
mod sqlite;
mod sync_lock;
mod workspace;

pub use error::{ObjectType, StateError};
pub use master_key::MasterKey;
pub use names::{
    is_valid_new_name, same_name_ignoring_case, validate_name, validate_new_name, MAX_NAME_LENGTH,
    NAME_PATTERN, NAME_RULE,
};
pub use rate_budget::RateSlots;
pub use records::{
    ApiTokenRecord, CommitBatch, ConnectionKind, ConnectionRecord, DeliveryAttempt, DeliveryRecord,
    DeliveryStatus, EncryptedSecret, IndexState, IndexedRecord, ModelRecord, NewConnection,
    NewDelivery, NewRunRequest, NewSequenceRun, PendingCreate, RaisedAlert, RunRecord,
    RunRecordRow, RunRefusal, RunRequest, SecretInput, SecretRef, SequenceRecord,
    SequenceRunRecord, SequenceRunUpdate, SnapshotEntry, SnapshotKey, StripeExchange, SyncRecord,
    UiSession,
};
pub use sync_lock::SyncLock;
pub use workspace::{WorkspaceOptions, DATABASE_FILE_NAME, KEY_FILE_NAME, LOCKS_DIR_NAME};

use chrono::{DateTime, SubsecRound as _, Utc};
use ferry_core::{
    AlertCondition, Outcome, RunCounts, RunStatus, Secret, SequenceRunStatus, SequenceSpec,
    SyncSpec,
};

/// The workspace setting that holds the default alert settings (JSON of
/// `ferry_core::AlertSettings`), of every sync without its own.
pub const ALERT_DEFAULTS_SETTING: &str = "alert_defaults";

/// How many times taking a sync's lock is tried (a reader may hold it for a moment).
pub(crate) const SYNC_LOCK_ATTEMPTS: u32 = 5;

/// How often a run waiting for a create scope's lock tries again.
pub(crate) const CREATE_LOCK_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// A short, file-name-safe name for a create scope.
pub(crate) fn scope_hash(scope: &str) -> String {
    use sha2::Digest as _;
    hex::encode(&sha2::Sha256::digest(scope.as_bytes())[..8])
}
use records::StoredSecret;
use std::collections::HashMap;

/// The workspace store, over one of its backends. Cheap to clone: each backend keeps its
/// connection behind an `Arc`, so clones share it.
///
/// An enum rather than a trait object because async methods in traits are not object-safe,
/// and two backends do not need open extension.
#[derive(Clone)]
pub enum StateStore {
    Sqlite(sqlite::SqliteStore),
    Postgres(postgres::PostgresStore),
}

/// Calls the same method on whichever backend this is.
macro_rules! on_backend {
    ($store:expr, $backend:ident => $call:expr) => {
        match $store {
            StateStore::Sqlite($backend) => $call,
            StateStore::Postgres($backend) => $call,
        }
    };
}

impl StateStore {
    /// Opens the workspace, creating whatever is missing: the directory (mode 0700), the key
    /// file `master.key` (0600, unless a master key is given), the SQLite database (0600) or
    /// the schema in the PostgreSQL database. Running it on an existing workspace only applies
    /// migrations it does not have yet.
    pub async fn initialize(options: &WorkspaceOptions) -> Result<StateStore, StateError> {
        workspace::open(options, workspace::OpenMode::CreateIfMissing).await
    }

    /// Opens a workspace that `ferry init` created; errors with "no ferry workspace at DIR;
    /// run `ferry init` first" when there is none.
    pub async fn open_existing(options: &WorkspaceOptions) -> Result<StateStore, StateError> {
        workspace::open(options, workspace::OpenMode::MustExist).await
    }

    /// "sqlite" or "postgres".
    pub fn backend_name(&self) -> &'static str {
        match self {
            StateStore::Sqlite(_) => "sqlite",
            StateStore::Postgres(_) => "postgres",
        }
    }

    /// Where the state lives, for `ferry status` and logs: the database file, or the
    /// PostgreSQL connection string with its password removed.
    pub fn location(&self) -> String {
        on_backend!(self, backend => backend.location())
    }

    /// The workspace directory (the key file, and with SQLite the database and lock files).
    pub fn workspace_dir(&self) -> &std::path::Path {
        on_backend!(self, backend => backend.workspace_dir())
    }

    /// Whether `path` is the workspace directory or one of its files, through symbolic or hard
    /// links. A warehouse must never be one of them: a DuckDB connection to `ferry.db` would let
    /// DuckDB open and close the workspace database inside this process, which drops SQLite's
    /// locks on it, and the next ferry process would then delete the WAL under this one.
    pub fn is_inside_workspace(&self, path: &std::path::Path) -> bool {
        workspace::is_inside(self.workspace_dir(), path)
    }

    /// Whether `name` may be saved for an object of kind `what`: an existing name always may
    /// (its object is replaced); a new one must follow [`NAME_PATTERN`] and differ by more than
    /// case from the names of its kind. Saves nothing. Callers ask before costly checks (testing
    /// a connection, running a query), so a refused name costs nothing; saving checks again,
    /// inside its transaction.
    pub async fn check_name_to_save(&self, what: ObjectType, name: &str) -> Result<(), StateError> {
        validate_name(what, name)?;
        let existing: Vec<String> = match what {
            ObjectType::Connection => self
                .list_connections()
                .await?
                .into_iter()
                .map(|c| c.name)
                .collect(),
            ObjectType::Model => self
                .list_models()
                .await?
                .into_iter()
                .map(|m| m.name)
                .collect(),
            ObjectType::Sync => self
                .list_syncs()
                .await?
                .into_iter()
                .map(|s| s.name)
                .collect(),
            ObjectType::ApiToken => self
                .list_api_tokens()
                .await?
                .into_iter()
                .map(|t| t.name)
                .collect(),
            ObjectType::Sequence => self
                .list_sequences()
                .await?
                .into_iter()
                .map(|s| s.name)
                .collect(),
            ObjectType::Run | ObjectType::Delivery => return Ok(()),
        };
        if existing.iter().any(|n| n == name) {
            return Ok(());
        }
        validate_new_name(what, name)?;
        names::check_case_conflict(what, name, existing.iter().map(String::as_str))
    }

    // ----- connections -----

    /// Creates the connection, or replaces the one with the same name (its `created_at` stays).
    /// A new name must follow [`NAME_PATTERN`] and differ by more than case from the other
    /// connections' names.
    pub async fn put_connection(&self, connection: &NewConnection) -> Result<(), StateError> {
        validate_name(ObjectType::Connection, &connection.name)?;
        if !is_valid_new_name(&connection.name)
            && self.get_connection(&connection.name).await?.is_none()
        {
            validate_new_name(ObjectType::Connection, &connection.name)?;
        }
        if !connection.config.is_object() {
            return Err(StateError::InvalidInput(format!(
                "the config of connection '{}' must be a JSON object, not {}",
                connection.name, connection.config
            )));
        }
        let name = &connection.name;
        let (kind, config) = (connection.kind, &connection.config);
        let stored_secret = match &connection.secret {
            None => None,
            Some(SecretInput::Keep) => {
                let updated = on_backend!(self, backend =>
                    backend.update_connection_keeping_secret(name, kind, config).await)?;
                return if updated {
                    Ok(())
                } else {
                    Err(StateError::NotFound {
                        what: ObjectType::Connection,
                        name: name.clone(),
                    })
                };
            }
            Some(SecretInput::Value(secret)) => Some(StoredSecret::from_ref(
                &SecretRef::Encrypted(self.master_key().encrypt(name, secret)),
            )),
            Some(SecretInput::EnvVar(variable)) => {
                names::validate_env_var_name(variable)?;
                Some(StoredSecret::from_ref(&SecretRef::EnvVar(variable.clone())))
            }
        };
        on_backend!(self, backend => backend.upsert_connection(name, kind, config, stored_secret).await)
    }

    pub async fn get_connection(&self, name: &str) -> Result<Option<ConnectionRecord>, StateError> {
        validate_name(ObjectType::Connection, name)?;
        on_backend!(self, backend => backend.get_connection(name).await)
    }

    /// All connections, by name.
    pub async fn list_connections(&self) -> Result<Vec<ConnectionRecord>, StateError> {
        on_backend!(self, backend => backend.list_connections().await)
    }

    /// Removes the connection; `Ok(false)` when there was none. Refuses with
    /// [`StateError::InUse`] while a model reads from it or a sync writes to it.
    pub async fn remove_connection(&self, name: &str) -> Result<bool, StateError> {
        validate_name(ObjectType::Connection, name)?;
        // An alert channel is named inside syncs' specs and the default alert settings (JSON),
        // which the backends' own checks do not read: refused here, so a sync's alerts never
        // silently go nowhere.
        if let Some(connection) = self.get_connection(name).await? {
            if connection.kind.is_channel() {
                let mut used_by: Vec<String> = self
                    .list_syncs()
                    .await?
                    .into_iter()
                    .filter(|sync| {
                        sync.spec
                            .alerts
                            .as_ref()
                            .is_some_and(|alerts| alerts.channels.iter().any(|c| c == name))
                    })
                    .map(|sync| format!("the alerts of sync '{}'", sync.name))
                    .collect();
                let defaults = self.get_workspace_setting(ALERT_DEFAULTS_SETTING).await?;
                let named_by_defaults = defaults
                    .as_ref()
                    .and_then(|value| value["channels"].as_array())
                    .is_some_and(|channels| channels.iter().any(|c| c.as_str() == Some(name)));
                if named_by_defaults {
                    used_by.push("the default alerts".to_string());
                }
                if !used_by.is_empty() {
                    return Err(StateError::InUse {
                        what: ObjectType::Connection,
                        name: name.to_string(),
                        used_by,
                    });
                }
            }
        }
        on_backend!(self, backend => backend.remove_connection(name).await)
    }

    /// The clear secret: decrypted with the master key, or read from its environment variable.
    pub fn resolve_secret(&self, secret: &SecretRef) -> Result<Secret, StateError> {
        match secret {
            SecretRef::Encrypted(encrypted) => self.master_key().decrypt(encrypted),
            SecretRef::EnvVar(variable) => match std::env::var(variable) {
                Ok(value) if !value.is_empty() => Ok(Secret::new(value)),
                _ => Err(StateError::EnvVarNotSet {
                    variable: variable.clone(),
                }),
            },
        }
    }

    // ----- models -----

    /// Creates or replaces a model. Its connection must exist and be a warehouse. A new name
    /// must follow [`NAME_PATTERN`] and differ by more than case from the other models' names.
    pub async fn put_model(
        &self,
        name: &str,
        connection: &str,
        sql: &str,
    ) -> Result<(), StateError> {
        validate_name(ObjectType::Model, name)?;
        if !is_valid_new_name(name) && self.get_model(name).await?.is_none() {
            validate_new_name(ObjectType::Model, name)?;
        }
        let source = self.require_connection(connection).await?;
        if !source.kind.is_source() {
            return Err(StateError::InvalidInput(format!(
                "model '{name}' cannot read from connection '{connection}': it is a {} \
                 connection; use a warehouse's connection ({})",
                source.kind,
                ConnectionKind::ALL
                    .iter()
                    .filter(|kind| kind.is_source())
                    .map(|kind| kind.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        if sql.trim().is_empty() {
            return Err(StateError::InvalidInput(format!(
                "the SQL of model '{name}' is empty; give the query that selects the rows to sync"
            )));
        }
        on_backend!(self, backend => backend.upsert_model(name, connection, sql).await)
    }

    pub async fn get_model(&self, name: &str) -> Result<Option<ModelRecord>, StateError> {
        validate_name(ObjectType::Model, name)?;
        on_backend!(self, backend => backend.get_model(name).await)
    }

    /// All models, by name.
    pub async fn list_models(&self) -> Result<Vec<ModelRecord>, StateError> {
        on_backend!(self, backend => backend.list_models().await)
    }

    /// Removes the model; `Ok(false)` when there was none. Refuses while a sync uses it.
    pub async fn remove_model(&self, name: &str) -> Result<bool, StateError> {
        validate_name(ObjectType::Model, name)?;
        on_backend!(self, backend => backend.remove_model(name).await)
    }

    // ----- syncs -----

    /// Creates or replaces a sync. A new sync gets a random `uid`; a replaced one keeps its
    /// uid, runs, snapshot and pending creates. Its model must exist and its destination must
    /// be a Stripe connection. A new name must follow [`NAME_PATTERN`] and differ by more than
    /// case from the other syncs' names.
    pub async fn put_sync(&self, name: &str, spec: &SyncSpec) -> Result<SyncRecord, StateError> {
        validate_name(ObjectType::Sync, name)?;
        if !is_valid_new_name(name) && self.get_sync(name).await?.is_none() {
            validate_new_name(ObjectType::Sync, name)?;
        }
        if self.get_model(&spec.model).await?.is_none() {
            return Err(StateError::NotFound {
                what: ObjectType::Model,
                name: spec.model.clone(),
            });
        }
        let destination = self.require_connection(&spec.destination).await?;
        if destination.kind != ConnectionKind::Stripe {
            return Err(StateError::InvalidInput(format!(
                "sync '{name}' cannot write to connection '{}': it is a {} connection; use a \
                 stripe connection",
                spec.destination, destination.kind
            )));
        }
        on_backend!(self, backend => backend.upsert_sync(name, spec).await)
    }

    pub async fn get_sync(&self, name: &str) -> Result<Option<SyncRecord>, StateError> {
        validate_name(ObjectType::Sync, name)?;
        on_backend!(self, backend => backend.get_sync(name).await)
    }

    /// Pauses (`true`) or resumes (`false`) a sync's schedule; returns the sync as it is now,
    /// `Ok(None)` when there is none. Pausing a paused sync keeps when it was first paused;
    /// resuming one that is not paused changes nothing.
    pub async fn set_sync_paused(
        &self,
        name: &str,
        paused: bool,
    ) -> Result<Option<SyncRecord>, StateError> {
        validate_name(ObjectType::Sync, name)?;
        let now = ids::now();
        on_backend!(self, backend => backend.set_sync_paused(name, paused, now).await)
    }

    /// All syncs, by name.
    pub async fn list_syncs(&self) -> Result<Vec<SyncRecord>, StateError> {
        on_backend!(self, backend => backend.list_syncs().await)
    }

    /// Removes the sync with its runs, run records, Stripe exchanges, snapshot, pending creates
    /// and raised alerts, in one transaction; `Ok(false)` when there was none. Its deliveries
    /// stay, as the record of what was sent (and a pending one is still tried). Refuses with
    /// [`StateError::InUse`] while a sequence names it as a step.
    pub async fn remove_sync(&self, name: &str) -> Result<bool, StateError> {
        validate_name(ObjectType::Sync, name)?;
        // A sequence names its steps inside its spec (JSON), which no foreign key sees: refused
        // here, so a sequence never stops at a step that no longer exists.
        let used_by: Vec<String> = self
            .list_sequences()
            .await?
            .into_iter()
            .filter(|sequence| sequence.spec.steps.iter().any(|step| step == name))
            .map(|sequence| format!("sequence '{}'", sequence.name))
            .collect();
        if !used_by.is_empty() {
            return Err(StateError::InUse {
                what: ObjectType::Sync,
                name: name.to_string(),
                used_by,
            });
        }
        on_backend!(self, backend => backend.remove_sync(name).await)
    }

    // ----- runs -----

    /// Starts a run of an existing sync, in status `running`.
    pub async fn create_run(&self, sync: &str, full_resync: bool) -> Result<RunRecord, StateError> {
        validate_name(ObjectType::Sync, sync)?;
        if self.get_sync(sync).await?.is_none() {
            return Err(StateError::NotFound {
                what: ObjectType::Sync,
                name: sync.to_string(),
            });
        }
        let (id, started_at) = ids::new_run_id();
        let run = RunRecord {
            id,
            sync: sync.to_string(),
            status: RunStatus::Running,
            full_resync,
            started_at,
            finished_at: None,
            counts: RunCounts::default(),
            error: None,
            last_seen_at: Some(started_at),
        };
        on_backend!(self, backend => backend.insert_run(&run).await)?;
        Ok(run)
    }

    /// Records progress of a running run.
    pub async fn update_run_counts(
        &self,
        run_id: &str,
        counts: &RunCounts,
    ) -> Result<(), StateError> {
        let updated =
            on_backend!(self, backend => backend.update_run_counts(run_id, counts).await)?;
        require_run(updated, run_id)
    }

    /// Ends a run with its final status, totals and (for a failed run) the error.
    pub async fn finish_run(
        &self,
        run_id: &str,
        status: RunStatus,
        counts: &RunCounts,
        error: Option<&str>,
    ) -> Result<(), StateError> {
        if status == RunStatus::Running {
            return Err(StateError::InvalidInput(format!(
                "run {run_id} cannot finish with status running; use completed, failed, \
                 cancelled or interrupted"
            )));
        }
        let finished_at = ids::now();
        let updated = on_backend!(self, backend =>
            backend.finish_run(run_id, status, counts, error, finished_at).await)?;
        require_run(updated, run_id)
    }

    pub async fn get_run(&self, run_id: &str) -> Result<Option<RunRecord>, StateError> {
        on_backend!(self, backend => backend.get_run(run_id).await)
    }

    /// The newest `limit` runs, of one sync or of all, newest first.
    pub async fn list_runs(
        &self,
        sync: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RunRecord>, StateError> {
        if let Some(sync) = sync {
            validate_name(ObjectType::Sync, sync)?;
        }
        on_backend!(self, backend => backend.list_runs(sync, limit).await)
    }

    /// Turns the sync's runs still marked `running` into `interrupted`: their process died.
    /// Each is finished when it was last seen alive. Call it while holding the sync's lock, so
    /// a live run is never marked.
    pub async fn mark_interrupted_runs(&self, sync: &str) -> Result<u64, StateError> {
        validate_name(ObjectType::Sync, sync)?;
        on_backend!(self, backend => backend.mark_interrupted_runs(sync).await)
    }

    /// Records that a run is alive now (its heartbeat).
    pub async fn touch_run(&self, run_id: &str) -> Result<(), StateError> {
        let now = ids::now();
        let updated = on_backend!(self, backend => backend.touch_run(run_id, now).await)?;
        require_run(updated, run_id)
    }

    /// A page of a run's records: those after row `after_row` (0 for the first page), by row
    /// number, optionally only those with one outcome. Pages by key, so the thousandth page
    /// costs what the first does.
    pub async fn list_run_records(
        &self,
        run_id: &str,
        filter: Option<Outcome>,
        after_row: u64,
        limit: usize,
    ) -> Result<Vec<RunRecordRow>, StateError> {
        on_backend!(self, backend => backend.list_run_records(run_id, filter, after_row, limit).await)
    }

    /// The run's `limit` highest-numbered records, highest first, optionally only those with
    /// one outcome: what a running run confirmed last (it writes its rows about in order).
    pub async fn latest_run_records(
        &self,
        run_id: &str,
        filter: Option<Outcome>,
        limit: usize,
    ) -> Result<Vec<RunRecordRow>, StateError> {
        on_backend!(self, backend => backend.latest_run_records(run_id, filter, limit).await)
    }

    /// Deletes the runs that finished before `before`, with their records and Stripe exchanges;
    /// each sync keeps its newest run whatever its age. Also deletes the deliveries made before
    /// `before` that are finished (delivered or given up); pending ones stay until they are; and
    /// the sequence runs that finished before `before`, each sequence keeping its newest (a
    /// schedule counts from its last start, as a sync's does). Returns how many runs of syncs
    /// were removed.
    pub async fn prune_runs(&self, before: DateTime<Utc>) -> Result<u64, StateError> {
        on_backend!(self, backend => backend.prune_runs(before).await)
    }

    /// Every attempt of every request sent to Stripe for the record of row `row_number` of the
    /// run, in the order they were sent (by sequence); empty when there was none, or when they
    /// were pruned.
    pub async fn list_stripe_exchanges(
        &self,
        run_id: &str,
        row_number: u64,
    ) -> Result<Vec<StripeExchange>, StateError> {
        on_backend!(self, backend => backend.list_stripe_exchanges(run_id, row_number).await)
    }

    /// Deletes the Stripe exchanges sent before `sent_before`, of every run, even of runs that
    /// are kept: exchanges hold whole bodies, so they may be kept for less time than the runs
    /// they belong to. Returns how many were removed.
    pub async fn prune_stripe_exchanges(
        &self,
        sent_before: DateTime<Utc>,
    ) -> Result<u64, StateError> {
        let sent_before = stored_time(sent_before);
        on_backend!(self, backend => backend.prune_stripe_exchanges(sent_before).await)
    }

    pub async fn count_run_records(
        &self,
        run_id: &str,
        filter: Option<Outcome>,
    ) -> Result<u64, StateError> {
        on_backend!(self, backend => backend.count_run_records(run_id, filter).await)
    }

    // ----- snapshot and pending creates -----

    /// Up to `limit` snapshot entries of the sync's `object` records after key `after` (from
    /// the first when `None`), in byte order of the keys, without their payloads: the engine
    /// streams them alongside the model's records sorted the same way.
    pub async fn snapshot_keys(
        &self,
        sync: &str,
        object: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<SnapshotKey>, StateError> {
        validate_name(ObjectType::Sync, sync)?;
        on_backend!(self, backend => backend.snapshot_keys(sync, object, after, limit).await)
    }

    /// What was last confirmed written for these keys (those that have an entry).
    pub async fn snapshot_entries(
        &self,
        sync: &str,
        object: &str,
        keys: &[String],
    ) -> Result<HashMap<String, SnapshotEntry>, StateError> {
        validate_name(ObjectType::Sync, sync)?;
        let found =
            on_backend!(self, backend => backend.snapshot_entries(sync, object, keys).await)?;
        Ok(found.into_iter().collect())
    }

    /// How many records of `object` the sync has confirmed.
    pub async fn count_snapshot(&self, sync: &str, object: &str) -> Result<u64, StateError> {
        validate_name(ObjectType::Sync, sync)?;
        on_backend!(self, backend => backend.count_snapshot(sync, object).await)
    }

    /// The creates of these keys saved before their first attempt and not settled yet.
    pub async fn pending_creates(
        &self,
        sync: &str,
        object: &str,
        keys: &[String],
    ) -> Result<HashMap<String, PendingCreate>, StateError> {
        validate_name(ObjectType::Sync, sync)?;
        let found =
            on_backend!(self, backend => backend.pending_creates(sync, object, keys).await)?;
        Ok(found
            .into_iter()
            .map(|create| (create.key.clone(), create))
            .collect())
    }

    /// Saves creates (replacing any saved for the same key) durably, in one transaction. Call
    /// it BEFORE the first attempt of each create, so the same idempotency key and body are
    /// replayed after a crash.
    pub async fn save_pending_creates(
        &self,
        sync: &str,
        object: &str,
        items: &[PendingCreate],
    ) -> Result<(), StateError> {
        validate_name(ObjectType::Sync, sync)?;
        let items = last_per_key(items.iter().map(|item| (item.key.as_str(), item)));
        on_backend!(self, backend => backend.save_pending_creates(sync, object, &items).await)
    }

    /// In ONE transaction: inserts the run records and the Stripe exchanges (one whose sequence
    /// the run already has is ignored, so a retried commit does not fail on it); for each
    /// confirmed write upserts its snapshot entry and deletes its pending create; deletes the
    /// snapshot entries in `snapshot_deletes` and the pending creates in `pending_deletes`;
    /// stores the run's counts. Either all of it lands or none of it.
    pub async fn commit_batch(
        &self,
        sync: &str,
        object: &str,
        run_id: &str,
        batch: &CommitBatch,
    ) -> Result<(), StateError> {
        validate_name(ObjectType::Sync, sync)?;
        // When a key appears twice, the later entry wins on both backends (PostgreSQL's
        // ON CONFLICT refuses to touch one row twice in a statement).
        let snapshot_upserts = last_per_key(
            batch
                .snapshot_upserts
                .iter()
                .map(|(key, entry)| (key.as_str(), (key, entry))),
        );
        let committed = CommitBatchRef {
            records: &batch.records,
            snapshot_upserts,
            snapshot_deletes: &batch.snapshot_deletes,
            pending_deletes: &batch.pending_deletes,
            counts: &batch.counts,
            exchanges: &batch.exchanges,
        };
        on_backend!(self, backend => backend.commit_batch(sync, object, run_id, &committed).await)
    }

    // ----- the key index -----

    /// How far the key index of `scope` (one destination account and object) is complete;
    /// `None` when it was never built.
    pub async fn index_state(&self, scope: &str) -> Result<Option<IndexState>, StateError> {
        on_backend!(self, backend => backend.index_state(scope).await)
    }

    /// Forgets the index of `scope` and its state, before it is built anew.
    pub async fn index_clear(&self, scope: &str) -> Result<(), StateError> {
        on_backend!(self, backend => backend.index_clear(scope).await)
    }

    /// In one transaction: replaces the keys of each record in `records` (a record with no key
    /// left is removed; a record given twice keeps its later keys) and removes the records whose
    /// ids are in `removed`.
    pub async fn index_update(
        &self,
        scope: &str,
        records: &[IndexedRecord],
        removed: &[String],
    ) -> Result<(), StateError> {
        if records.is_empty() && removed.is_empty() {
            return Ok(());
        }
        // A record given twice keeps its later keys on both backends (SQLite would replace the
        // first with the second; PostgreSQL, inserting all at once, would keep both).
        let records: Vec<IndexedRecord> = last_per_key(
            records
                .iter()
                .map(|record| (record.destination_id.as_str(), record)),
        )
        .into_iter()
        .cloned()
        .collect();
        on_backend!(self, backend => backend.index_update(scope, &records, removed).await)
    }

    /// The ids of the records whose key `key_name` has one of `values`: value → ids, in byte
    /// order. Values with no record are absent; a value several records share lists them all.
    pub async fn index_lookup(
        &self,
        scope: &str,
        key_name: &str,
        values: &[String],
    ) -> Result<HashMap<String, Vec<String>>, StateError> {
        // Each value once: SQLite looks values up one by one and would list an id twice.
        let mut values = values.to_vec();
        values.sort_unstable();
        values.dedup();
        let pairs =
            on_backend!(self, backend => backend.index_lookup(scope, key_name, &values).await)?;
        let mut found: HashMap<String, Vec<String>> = HashMap::new();
        for (value, id) in pairs {
            found.entry(value).or_default().push(id);
        }
        Ok(found)
    }

    /// Saves how far the index of `scope` is complete.
    pub async fn index_save_state(
        &self,
        scope: &str,
        state: &IndexState,
    ) -> Result<(), StateError> {
        on_backend!(self, backend => backend.index_save_state(scope, state).await)
    }

    // ----- API tokens -----

    /// Creates an API token for `ferry server` and returns its record with the clear token,
    /// which exists only in this return value: the store keeps just its SHA-256, so show it to
    /// the user now. The token is `ferry_` + 43 base64url characters (32 random bytes). Fails
    /// with [`StateError::AlreadyExists`] when a token with this name exists, and with
    /// [`StateError::NameTakenIgnoringCase`] when one differs from it only in case.
    pub async fn create_api_token(
        &self,
        name: &str,
    ) -> Result<(ApiTokenRecord, Secret), StateError> {
        validate_new_name(ObjectType::ApiToken, name)?;
        let token = Secret::new(api_tokens::new_token());
        let record = ApiTokenRecord {
            name: name.to_string(),
            prefix: api_tokens::listed_prefix(token.expose()),
            created_at: ids::now(),
            last_used_at: None,
        };
        let hash = api_tokens::token_hash(token.expose());
        let inserted =
            on_backend!(self, backend => backend.insert_api_token(&record, &hash).await)?;
        if !inserted {
            return Err(StateError::AlreadyExists {
                what: ObjectType::ApiToken,
                name: name.to_string(),
            });
        }
        Ok((record, token))
    }

    /// All API tokens, by name.
    pub async fn list_api_tokens(&self) -> Result<Vec<ApiTokenRecord>, StateError> {
        on_backend!(self, backend => backend.list_api_tokens().await)
    }

    /// Deletes the API token; requests presenting it are refused from now on. `Ok(false)` when
    /// there was none.
    pub async fn revoke_api_token(&self, name: &str) -> Result<bool, StateError> {
        validate_name(ObjectType::ApiToken, name)?;
        on_backend!(self, backend => backend.delete_api_token(name).await)
    }

    /// The record of the API token a request presented, or `Ok(None)` when it is not one
    /// (revoked, mistyped, or not a ferry token at all: those are refused without a query).
    /// Records the use in `last_used_at`, at most once a minute per token.
    pub async fn verify_api_token(
        &self,
        token: &str,
    ) -> Result<Option<ApiTokenRecord>, StateError> {
        if !token.starts_with(api_tokens::TOKEN_PREFIX) {
            return Ok(None);
        }
        let hash = api_tokens::token_hash(token);
        let now = ids::now();
        on_backend!(self, backend => backend.touch_api_token(&hash, now).await)
    }

    /// How many API tokens exist.
    pub async fn count_api_tokens(&self) -> Result<u64, StateError> {
        on_backend!(self, backend => backend.count_api_tokens().await)
    }

    // ----- web UI sessions -----

    /// Saves a new session of the web UI. Its `id_hash` must be the SHA-256 of the session id
    /// in lowercase hex: the id itself is never stored. Fails with
    /// [`StateError::InvalidInput`] when a session with this hash exists.
    pub async fn create_ui_session(&self, session: &UiSession) -> Result<(), StateError> {
        validate_ui_session_hash(&session.id_hash)?;
        let session = UiSession {
            signed_in_at: stored_time(session.signed_in_at),
            last_seen_at: stored_time(session.last_seen_at),
            ..session.clone()
        };
        let inserted = on_backend!(self, backend => backend.insert_ui_session(&session).await)?;
        if inserted {
            Ok(())
        } else {
            Err(StateError::InvalidInput(
                "a web UI session with this id already exists; start the session with a new \
                 random id"
                    .to_string(),
            ))
        }
    }

    /// The session with this id hash, if it was seen at or after `idle_cutoff`: then it is
    /// seen again at `now` (its `last_seen_at` never moves back, if another server saw it
    /// later). A session idle since before the cutoff is deleted, and `Ok(None)` returned, as
    /// for one that never existed.
    pub async fn touch_ui_session(
        &self,
        id_hash: &str,
        now: DateTime<Utc>,
        idle_cutoff: DateTime<Utc>,
    ) -> Result<Option<UiSession>, StateError> {
        if validate_ui_session_hash(id_hash).is_err() {
            return Ok(None);
        }
        let (now, idle_cutoff) = (stored_time(now), stored_time(idle_cutoff));
        on_backend!(self, backend => backend.touch_ui_session(id_hash, now, idle_cutoff).await)
    }

    /// Ends the session (signing out); returns whether it existed.
    pub async fn end_ui_session(&self, id_hash: &str) -> Result<bool, StateError> {
        if validate_ui_session_hash(id_hash).is_err() {
            return Ok(false);
        }
        on_backend!(self, backend => backend.delete_ui_session(id_hash).await)
    }

    /// Deletes the sessions last seen before `idle_cutoff`; returns how many.
    pub async fn prune_ui_sessions(&self, idle_cutoff: DateTime<Utc>) -> Result<u64, StateError> {
        let idle_cutoff = stored_time(idle_cutoff);
        on_backend!(self, backend => backend.prune_ui_sessions(idle_cutoff).await)
    }

    // ----- shared request budgets -----

    /// Reserves the next `count` request slots of the budget `budget_key` (a Stripe account,
    /// say), which allows `per_second` requests a second to every process of the workspace
    /// together: slots are `1 s / per_second` apart and each is given out once. A budget idle
    /// for a while starts now: unused slots are not saved up for a burst. At most a minute of
    /// slots is reserved at once.
    ///
    /// On PostgreSQL the database's clock decides, in one statement, so processes on several
    /// machines agree without synchronized clocks; on SQLite, this machine's clock, inside a
    /// write transaction. `first_in` counts from when the store answered.
    pub async fn reserve_rate_slots(
        &self,
        budget_key: &str,
        per_second: u32,
        count: u32,
    ) -> Result<RateSlots, StateError> {
        let reservation = rate_budget::Reservation::new(budget_key, per_second, count)?;
        on_backend!(self, backend => backend.reserve_rate_slots(budget_key, reservation).await)
    }

    // ----- alerts -----

    /// The alerts the sync has raised and not resolved, by condition.
    pub async fn raised_alerts(&self, sync: &str) -> Result<Vec<RaisedAlert>, StateError> {
        validate_name(ObjectType::Sync, sync)?;
        let mut alerts = on_backend!(self, backend => backend.raised_alerts(Some(sync)).await)?;
        sort_raised_alerts(&mut alerts);
        Ok(alerts)
    }

    /// The raised alerts of every sync, by sync name (in byte order), then condition.
    pub async fn list_raised_alerts(&self) -> Result<Vec<RaisedAlert>, StateError> {
        let mut alerts = on_backend!(self, backend => backend.raised_alerts(None).await)?;
        sort_raised_alerts(&mut alerts);
        Ok(alerts)
    }

    /// Records that the sync raised an alert on `condition` at `at`. Raising one already raised
    /// keeps when it was first raised and takes the new message. Fails with
    /// [`StateError::NotFound`] when the sync does not exist.
    pub async fn raise_alert(
        &self,
        sync: &str,
        condition: AlertCondition,
        message: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StateError> {
        validate_name(ObjectType::Sync, sync)?;
        let at = stored_time(at);
        let saved = on_backend!(self, backend =>
            backend.raise_alert(sync, condition, message, at).await)?;
        if saved {
            Ok(())
        } else {
            Err(StateError::NotFound {
                what: ObjectType::Sync,
                name: sync.to_string(),
            })
        }
    }

    /// Resolves the sync's alert on `condition`; returns whether it was raised.
    pub async fn resolve_alert(
        &self,
        sync: &str,
        condition: AlertCondition,
    ) -> Result<bool, StateError> {
        validate_name(ObjectType::Sync, sync)?;
        on_backend!(self, backend => backend.resolve_alert(sync, condition).await)
    }

    // ----- deliveries -----

    /// Queues events for their channels, in one transaction: each becomes a pending delivery,
    /// due at `at`, with no attempt yet. Returns them, in the order given.
    pub async fn enqueue_deliveries(
        &self,
        deliveries: &[NewDelivery],
        at: DateTime<Utc>,
    ) -> Result<Vec<DeliveryRecord>, StateError> {
        for delivery in deliveries {
            validate_name(ObjectType::Sync, &delivery.sync)?;
        }
        if deliveries.is_empty() {
            return Ok(Vec::new());
        }
        let at = stored_time(at);
        let records: Vec<DeliveryRecord> = deliveries
            .iter()
            .map(|delivery| DeliveryRecord {
                id: ids::new_delivery_id(),
                event_id: delivery.event_id.clone(),
                event_type: delivery.event_type.clone(),
                sync: delivery.sync.clone(),
                run_id: delivery.run_id.clone(),
                channel: delivery.channel.clone(),
                payload: delivery.payload.clone(),
                status: DeliveryStatus::Pending,
                attempts: 0,
                created_at: at,
                next_attempt_at: Some(at),
                last_attempt_at: None,
                answer_status: None,
                answer: None,
            })
            .collect();
        on_backend!(self, backend => backend.insert_deliveries(&records).await)?;
        Ok(records)
    }

    /// Up to `limit` pending deliveries whose next attempt is due at `now`, oldest first.
    pub async fn due_deliveries(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<DeliveryRecord>, StateError> {
        let now = stored_time(now);
        on_backend!(self, backend => backend.due_deliveries(now, limit).await)
    }

    /// Claims up to `limit` pending deliveries due at `now`, oldest first, for the caller to
    /// send: their next attempt moves to `lease_until`, so another process draining the queue
    /// meanwhile skips them, and a process that dies while sending leaves them due again then.
    pub async fn claim_due_deliveries(
        &self,
        now: DateTime<Utc>,
        limit: u32,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<DeliveryRecord>, StateError> {
        let (now, lease_until) = (stored_time(now), stored_time(lease_until));
        let mut claimed = on_backend!(self, backend => backend.claim_due_deliveries(now, limit, lease_until).await)?;
        claimed.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(claimed)
    }

    /// Records an attempt of a delivery: counts it, and keeps its outcome, its answer and, while
    /// the delivery stays pending, when it is tried next. A pending outcome needs a
    /// `next_attempt_at`; a finished one clears it. Fails with [`StateError::NotFound`] for an
    /// unknown id.
    pub async fn record_delivery_attempt(
        &self,
        id: &str,
        attempt: &DeliveryAttempt,
    ) -> Result<(), StateError> {
        let next_attempt_at = match (attempt.status, attempt.next_attempt_at) {
            (DeliveryStatus::Pending, None) => {
                return Err(StateError::InvalidInput(format!(
                    "delivery {id} stays pending but has no next attempt time; give \
                     next_attempt_at, or finish it as delivered or failed"
                )))
            }
            (DeliveryStatus::Pending, Some(next)) => Some(stored_time(next)),
            (DeliveryStatus::Delivered | DeliveryStatus::Failed, _) => None,
        };
        let attempt = DeliveryAttempt {
            at: stored_time(attempt.at),
            next_attempt_at,
            ..attempt.clone()
        };
        let updated =
            on_backend!(self, backend => backend.record_delivery_attempt(id, &attempt).await)?;
        if updated {
            Ok(())
        } else {
            Err(StateError::NotFound {
                what: ObjectType::Delivery,
                name: id.to_string(),
            })
        }
    }

    /// The newest `limit` deliveries, of one sync or of all, newest first.
    pub async fn list_deliveries(
        &self,
        sync: Option<&str>,
        limit: u32,
    ) -> Result<Vec<DeliveryRecord>, StateError> {
        if let Some(sync) = sync {
            validate_name(ObjectType::Sync, sync)?;
        }
        on_backend!(self, backend => backend.list_deliveries(sync, limit).await)
    }

    pub async fn get_delivery(&self, id: &str) -> Result<Option<DeliveryRecord>, StateError> {
        on_backend!(self, backend => backend.get_delivery(id).await)
    }

    // ----- workspace settings -----

    /// The setting saved under `key`, with its objects' keys sorted; `Ok(None)` when none is.
    pub async fn get_workspace_setting(
        &self,
        key: &str,
    ) -> Result<Option<serde_json::Value>, StateError> {
        on_backend!(self, backend => backend.get_workspace_setting(key).await)
    }

    /// Saves `value` under `key`, replacing what was there.
    pub async fn put_workspace_setting(
        &self,
        key: &str,
        value: &serde_json::Value,
    ) -> Result<(), StateError> {
        on_backend!(self, backend => backend.put_workspace_setting(key, value).await)
    }

    // ----- the run queue -----

    /// Queues a run of `request.sync`. `Ok(None)` when a request with the same dedupe key
    /// already exists (another server queued this scheduled run). Requests finished more than a
    /// day ago are removed on the way.
    pub async fn enqueue_run(
        &self,
        request: &NewRunRequest,
    ) -> Result<Option<RunRequest>, StateError> {
        let now = ids::now();
        let id = ids::new_run_request_id();
        on_backend!(self, backend => backend.enqueue_run(&id, request, now, now - chrono::Duration::days(1)).await)
    }

    /// Claims the oldest request that is due and unclaimed (or whose holder's lease ran out)
    /// for `worker`, for `lease`; several processes claiming at once each get another request.
    pub async fn claim_run_request(
        &self,
        worker: &str,
        lease: std::time::Duration,
    ) -> Result<Option<RunRequest>, StateError> {
        let now = ids::now();
        let lease_until = now + chrono_duration(lease);
        on_backend!(self, backend => backend.claim_run_request(worker, now, lease_until).await)
    }

    /// Records the run a claimed request started; `Ok(false)` when `worker` no longer holds it.
    pub async fn run_request_started(
        &self,
        id: &str,
        worker: &str,
        run_id: &str,
    ) -> Result<bool, StateError> {
        on_backend!(self, backend => backend.run_request_started(id, worker, run_id).await)
    }

    /// Extends `worker`'s lease on a request by `lease` from now. Returns whether its run was
    /// asked to cancel, or `Ok(None)` when the worker no longer holds the request.
    pub async fn renew_run_request(
        &self,
        id: &str,
        worker: &str,
        lease: std::time::Duration,
    ) -> Result<Option<bool>, StateError> {
        let lease_until = ids::now() + chrono_duration(lease);
        on_backend!(self, backend => backend.renew_run_request(id, worker, lease_until).await)
    }

    /// Puts a claimed request back in the queue, to be claimed again after `wait`.
    pub async fn release_run_request(
        &self,
        id: &str,
        worker: &str,
        wait: std::time::Duration,
    ) -> Result<bool, StateError> {
        let not_before = ids::now() + chrono_duration(wait);
        on_backend!(self, backend => backend.release_run_request(id, worker, not_before).await)
    }

    /// Ends a request `worker` holds: its run ended, or it did not start (`refusal`).
    pub async fn finish_run_request(
        &self,
        id: &str,
        worker: &str,
        refusal: Option<&RunRefusal>,
    ) -> Result<bool, StateError> {
        let now = ids::now();
        on_backend!(self, backend => backend.finish_run_request(id, worker, now, refusal).await)
    }

    pub async fn get_run_request(&self, id: &str) -> Result<Option<RunRequest>, StateError> {
        on_backend!(self, backend => backend.get_run_request(id).await)
    }

    /// The requests not finished yet (waiting or running), oldest first.
    pub async fn pending_run_requests(&self) -> Result<Vec<RunRequest>, StateError> {
        on_backend!(self, backend => backend.pending_run_requests().await)
    }

    /// Asks the worker running `run_id` to cancel it (at its next lease renewal); `Ok(false)`
    /// when no unfinished request started that run.
    pub async fn request_run_cancel(&self, run_id: &str) -> Result<bool, StateError> {
        on_backend!(self, backend => backend.request_run_cancel(run_id).await)
    }

    /// The request that holds `dedupe_key` (unique among requests), finished or not;
    /// `Ok(None)` when none does (never queued, or finished more than a day ago and removed).
    /// Whoever queued a run under a key it chose (a sequence's step, say) finds it again after
    /// a restart, rather than queueing it twice.
    pub async fn find_run_request_by_dedupe_key(
        &self,
        dedupe_key: &str,
    ) -> Result<Option<RunRequest>, StateError> {
        on_backend!(self, backend => backend.find_run_request_by_dedupe_key(dedupe_key).await)
    }

    // ----- sequences -----

    /// Creates a sequence, or replaces the one with the same name (its `created_at` stays; its
    /// runs keep the spec they started with). A new name must follow [`NAME_PATTERN`] and
    /// differ by more than case from the other sequences' names. Refuses a spec with
    /// [`SequenceSpec::problems`], and a step that is not an existing sync named exactly so
    /// ([`StateError::NotFound`] naming it).
    pub async fn put_sequence(
        &self,
        name: &str,
        spec: &SequenceSpec,
    ) -> Result<SequenceRecord, StateError> {
        validate_name(ObjectType::Sequence, name)?;
        if !is_valid_new_name(name) && self.get_sequence(name).await?.is_none() {
            validate_new_name(ObjectType::Sequence, name)?;
        }
        let problems = spec.problems();
        if !problems.is_empty() {
            return Err(StateError::InvalidInput(format!(
                "sequence '{name}': {}",
                problems.join("; ")
            )));
        }
        let syncs = self.list_syncs().await?;
        if let Some(missing) = spec
            .steps
            .iter()
            .find(|step| !syncs.iter().any(|sync| &sync.name == *step))
        {
            return Err(StateError::NotFound {
                what: ObjectType::Sync,
                name: missing.clone(),
            });
        }
        on_backend!(self, backend => backend.upsert_sequence(name, spec).await)
    }

    pub async fn get_sequence(&self, name: &str) -> Result<Option<SequenceRecord>, StateError> {
        validate_name(ObjectType::Sequence, name)?;
        on_backend!(self, backend => backend.get_sequence(name).await)
    }

    /// All sequences, by name.
    pub async fn list_sequences(&self) -> Result<Vec<SequenceRecord>, StateError> {
        on_backend!(self, backend => backend.list_sequences().await)
    }

    /// Removes the sequence with its runs, in one transaction; `Ok(false)` when there was none.
    /// The runs its steps started stay, with their syncs.
    pub async fn remove_sequence(&self, name: &str) -> Result<bool, StateError> {
        validate_name(ObjectType::Sequence, name)?;
        on_backend!(self, backend => backend.remove_sequence(name).await)
    }

    /// Starts a run of an existing sequence ([`StateError::NotFound`] when there is none):
    /// running, at step 0, no step run yet, version 0, with a copy of the sequence's spec, so
    /// that saving the sequence meanwhile does not change a run under way. `Ok(None)` when a
    /// sequence run with the same dedupe key already exists (another server started this
    /// scheduled run).
    pub async fn create_sequence_run(
        &self,
        run: &NewSequenceRun,
    ) -> Result<Option<SequenceRunRecord>, StateError> {
        let sequence =
            self.get_sequence(&run.sequence)
                .await?
                .ok_or_else(|| StateError::NotFound {
                    what: ObjectType::Sequence,
                    name: run.sequence.clone(),
                })?;
        let (id, started_at) = ids::new_sequence_run_id();
        let record = SequenceRunRecord {
            id,
            sequence: sequence.name,
            spec: sequence.spec,
            status: SequenceRunStatus::Running,
            reason: run.reason.clone(),
            driver: run.driver.clone(),
            step: 0,
            run_ids: Vec::new(),
            message: None,
            dedupe_key: run.dedupe_key.clone(),
            version: 0,
            started_at,
            finished_at: None,
            updated_at: started_at,
        };
        let inserted = on_backend!(self, backend => backend.insert_sequence_run(&record).await)?;
        Ok(inserted.then_some(record))
    }

    /// Moves a sequence run on, compare-and-set: sets its step, step runs, status and message,
    /// bumps its version and `updated_at` (and sets `finished_at` when the status is not
    /// running) only if its version is still `expected_version` and it is still running.
    /// Returns whether it did: several server processes may drive the same run, and of those
    /// that read one version exactly one moves it on; the others read it again. An unknown id
    /// updates nothing.
    pub async fn advance_sequence_run(
        &self,
        id: &str,
        expected_version: u64,
        update: &SequenceRunUpdate,
    ) -> Result<bool, StateError> {
        let now = ids::now();
        on_backend!(self, backend => backend.advance_sequence_run(id, expected_version, update, now).await)
    }

    pub async fn get_sequence_run(
        &self,
        id: &str,
    ) -> Result<Option<SequenceRunRecord>, StateError> {
        on_backend!(self, backend => backend.get_sequence_run(id).await)
    }

    /// The newest `limit` sequence runs, of one sequence or of all, newest first.
    pub async fn list_sequence_runs(
        &self,
        sequence: Option<&str>,
        limit: u32,
    ) -> Result<Vec<SequenceRunRecord>, StateError> {
        if let Some(sequence) = sequence {
            validate_name(ObjectType::Sequence, sequence)?;
        }
        on_backend!(self, backend => backend.list_sequence_runs(sequence, limit).await)
    }

    /// The sequence runs still running, oldest first: what the servers drive (or what a dead
    /// `ferry sequence run` left behind).
    pub async fn running_sequence_runs(&self) -> Result<Vec<SequenceRunRecord>, StateError> {
        on_backend!(self, backend => backend.running_sequence_runs().await)
    }

    // ----- locking -----

    /// Whether a run of the sync holds its lock now: tried without waiting (a lock taken is
    /// released at once).
    pub async fn sync_is_running(&self, sync: &SyncRecord) -> Result<bool, StateError> {
        match on_backend!(self, backend => backend.try_lock_sync_once(sync).await)? {
            Some(lock) => {
                lock.release().await;
                Ok(false)
            }
            None => Ok(true),
        }
    }

    /// Takes the sync's run lock, or fails at once with [`StateError::SyncLocked`]. Hold the
    /// returned guard for the whole run; the lock is released when it is dropped, and by the
    /// operating system or the database if the process dies.
    pub async fn lock_sync(&self, sync: &SyncRecord) -> Result<SyncLock, StateError> {
        on_backend!(self, backend => backend.lock_sync(sync).await)
    }

    /// Takes the lock of a create scope (one Stripe account and object, say), waiting while
    /// another run holds it; `Ok(None)` if `give_up` returned true first. Runs of different
    /// syncs whose records could be the same ones take turns creating under it, and each
    /// checks again, once it holds the lock, that no one created its records meanwhile.
    pub async fn lock_create_scope(
        &self,
        scope: &str,
        give_up: &(dyn Fn() -> bool + Sync),
    ) -> Result<Option<SyncLock>, StateError> {
        on_backend!(self, backend => backend.lock_create_scope(scope, give_up).await)
    }

    fn master_key(&self) -> &MasterKey {
        on_backend!(self, backend => backend.master_key())
    }

    async fn require_connection(&self, name: &str) -> Result<ConnectionRecord, StateError> {
        self.get_connection(name)
            .await?
            .ok_or_else(|| StateError::NotFound {
                what: ObjectType::Connection,
                name: name.to_string(),
            })
    }
}

impl std::fmt::Debug for StateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The location is already redacted; the master key is never shown.
        write!(
            f,
            "StateStore({} at {})",
            self.backend_name(),
            self.location()
        )
    }
}

/// A [`CommitBatch`] after the common layer removed repeated snapshot keys.
pub(crate) struct CommitBatchRef<'a> {
    pub(crate) records: &'a [RunRecordRow],
    pub(crate) snapshot_upserts: Vec<(&'a String, &'a SnapshotEntry)>,
    pub(crate) snapshot_deletes: &'a [String],
    pub(crate) pending_deletes: &'a [String],
    pub(crate) counts: &'a RunCounts,
    pub(crate) exchanges: &'a [StripeExchange],
}

fn require_run(updated: bool, run_id: &str) -> Result<(), StateError> {
    if updated {
        Ok(())
    } else {
        Err(StateError::NotFound {
            what: ObjectType::Run,
            name: run_id.to_string(),
        })
    }
}

/// A time as both backends store it: truncated to microseconds, so what a call returns is what
/// a later read returns.
fn stored_time(time: DateTime<Utc>) -> DateTime<Utc> {
    time.trunc_subsecs(6)
}

/// Refuses anything but the lowercase hex of a SHA-256, so that a session id passed by mistake
/// is never stored.
fn validate_ui_session_hash(id_hash: &str) -> Result<(), StateError> {
    let is_sha256_hex = id_hash.len() == 64
        && id_hash
            .bytes()
            .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte));
    if is_sha256_hex {
        Ok(())
    } else {
        Err(StateError::InvalidInput(
            "a web UI session is stored by the SHA-256 of its id, in lowercase hex (64 \
             characters), never by the id itself; hash the id first"
                .to_string(),
        ))
    }
}

/// By sync name in byte order, then condition: the same order on both backends, whatever the
/// database's collation.
fn sort_raised_alerts(alerts: &mut [RaisedAlert]) {
    alerts.sort_by(|a, b| (a.sync.as_bytes(), a.condition).cmp(&(b.sync.as_bytes(), b.condition)));
}

/// Keeps the last item of each key, in first-seen key order.
fn last_per_key<'a, T: Copy>(items: impl Iterator<Item = (&'a str, T)>) -> Vec<T> {
    let mut position_of_key: HashMap<&str, usize> = HashMap::new();
    let mut kept: Vec<T> = Vec::new();
    for (key, item) in items {
        match position_of_key.get(key) {
            Some(&position) => kept[position] = item,
            None => {
                position_of_key.insert(key, kept.len());
                kept.push(item);
            }
        }
    }
    kept
}

fn chrono_duration(duration: std::time::Duration) -> chrono::Duration {
    chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::days(365))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>(_: &T) {}
    fn assert_send_sync<T: Send + Sync + 'static>() {}

    /// `ferry server` calls the store from axum handlers and spawned tasks, which need `Send`
    /// futures; this fails to compile if a backend holds something non-Send across an await.
    #[allow(dead_code)]
    fn store_futures_are_send(
        store: &StateStore,
        sync: &SyncRecord,
        batch: &CommitBatch,
        attempt: &DeliveryAttempt,
        sequence_spec: &SequenceSpec,
        new_sequence_run: &NewSequenceRun,
        sequence_update: &SequenceRunUpdate,
    ) {
        assert_send(&store.put_connection(&NewConnection {
            name: String::new(),
            kind: ConnectionKind::Stripe,
            config: serde_json::Value::Null,
            secret: None,
        }));
        assert_send(&store.list_connections());
        assert_send(&store.remove_connection(""));
        assert_send(&store.put_model("", "", ""));
        assert_send(&store.put_sync("", &sync.spec));
        assert_send(&store.remove_sync(""));
        assert_send(&store.create_run("", false));
        assert_send(&store.finish_run("", RunStatus::Completed, &RunCounts::default(), None));
        assert_send(&store.list_runs(None, 1));
        assert_send(&store.list_run_records("", None, 0, 1));
        assert_send(&store.list_stripe_exchanges("", 0));
        assert_send(&store.prune_stripe_exchanges(ids::now()));
        assert_send(&store.latest_run_records("", None, 1));
        assert_send(&store.snapshot_keys("", "", None, 1));
        assert_send(&store.snapshot_entries("", "", &[]));
        assert_send(&store.pending_creates("", "", &[]));
        assert_send(&store.save_pending_creates("", "", &[]));
        assert_send(&store.commit_batch("", "", "", batch));
        assert_send(&store.index_update("", &[], &[]));
        assert_send(&store.index_lookup("", "", &[]));
        assert_send(&store.lock_sync(sync));
        assert_send(&store.create_api_token(""));
        assert_send(&store.list_api_tokens());
        assert_send(&store.revoke_api_token(""));
        assert_send(&store.verify_api_token(""));
        assert_send(&store.count_api_tokens());
        assert_send(&store.raised_alerts(""));
        assert_send(&store.list_raised_alerts());
        assert_send(&store.raise_alert("", AlertCondition::RunFailed, "", ids::now()));
        assert_send(&store.resolve_alert("", AlertCondition::RunFailed));
        assert_send(&store.enqueue_deliveries(&[], ids::now()));
        assert_send(&store.due_deliveries(ids::now(), 1));
        assert_send(&store.record_delivery_attempt("", attempt));
        assert_send(&store.list_deliveries(None, 1));
        assert_send(&store.get_delivery(""));
        assert_send(&store.get_workspace_setting(""));
        assert_send(&store.put_workspace_setting("", &serde_json::Value::Null));
        assert_send(&store.touch_ui_session("", ids::now(), ids::now()));
        assert_send(&store.end_ui_session(""));
        assert_send(&store.prune_ui_sessions(ids::now()));
        assert_send(&store.reserve_rate_slots("", 1, 1));
        assert_send(&store.find_run_request_by_dedupe_key(""));
        assert_send(&store.put_sequence("", sequence_spec));
        assert_send(&store.get_sequence(""));
        assert_send(&store.list_sequences());
        assert_send(&store.remove_sequence(""));
        assert_send(&store.create_sequence_run(new_sequence_run));
        assert_send(&store.advance_sequence_run("", 0, sequence_update));
        assert_send(&store.get_sequence_run(""));
        assert_send(&store.list_sequence_runs(None, 1));
        assert_send(&store.running_sequence_runs());
    }

    /// The same for futures that borrow across their awaits, as axum middleware and
    /// `tokio::spawn` need them: `Send` for every lifetime, not just one.
    #[allow(dead_code)]
    fn api_token_futures_can_be_spawned(store: StateStore, name: String, token: String) {
        tokio::spawn(async move {
            let created = store.create_api_token(&name).await;
            let verified = store.verify_api_token(&token).await;
            let listed = store.list_api_tokens().await;
            let counted = store.count_api_tokens().await;
            let revoked = store.revoke_api_token(&name).await;
            (
                created.is_ok(),
                verified.is_ok(),
                listed.is_ok(),
                counted.is_ok(),
                revoked.is_ok(),
            )
        });
    }

    #[test]
    fn store_and_lock_can_move_between_threads() {
        assert_send_sync::<StateStore>();
        assert_send_sync::<SyncLock>();
        assert_send_sync::<StateError>();
    }

    #[test]
    fn repeated_keys_keep_the_last_item_in_first_seen_order() {
        let items = [("a", 1), ("b", 2), ("a", 3), ("c", 4), ("b", 5)];
        assert_eq!(last_per_key(items.into_iter()), [3, 5, 4]);
    }
}
