//! The objects a workspace holds, as callers give them and as the store returns them.

use crate::error::StateError;
use chrono::{DateTime, Utc};
use ferry_core::{
    AlertCondition, AlertSettings, Behavior, FieldMapping, Finalize, InvoiceSettings, KeyMapping,
    MirrorSettings, NullPolicy, ObjectKind, Outcome, RunCounts, RunStatus, Schedule, Secret,
    SequenceRunStatus, SequenceSpec, SyncSpec,
};
use std::fmt;

/// What a connection talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectionKind {
    /// A Stripe account (a destination).
    Stripe,
    /// A DuckDB database file (a source).
    Duckdb,
    /// A PostgreSQL database (a source).
    Postgres,
    /// An Amazon Redshift cluster or workgroup, over PostgreSQL's protocol (a source).
    Redshift,
    /// A MySQL or MariaDB database (a source).
    Mysql,
    /// A Snowflake account (a source).
    Snowflake,
    /// A BigQuery project (a source).
    Bigquery,
    /// CSV, Parquet and JSON files in folders (a source).
    Files,
    /// A URL that receives signed JSON events (an alert channel).
    Webhook,
    /// A Slack incoming webhook (an alert channel).
    Slack,
    /// Email over SMTP (an alert channel).
    Email,
    /// A dbt Cloud job's webhook, which starts a sync or a sequence (a trigger).
    DbtCloud,
    /// A request signed by an orchestrator, which starts a sync or a sequence (a trigger).
    Trigger,
}

impl ConnectionKind {
    pub const ALL: [ConnectionKind; 13] = [
        ConnectionKind::Stripe,
        ConnectionKind::Duckdb,
        ConnectionKind::Postgres,
        ConnectionKind::Redshift,
        ConnectionKind::Mysql,
        ConnectionKind::Snowflake,
        ConnectionKind::Bigquery,
        ConnectionKind::Files,
        ConnectionKind::Webhook,
        ConnectionKind::Slack,
        ConnectionKind::Email,
        ConnectionKind::DbtCloud,
        ConnectionKind::Trigger,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionKind::Stripe => "stripe",
            ConnectionKind::Duckdb => "duckdb",
            ConnectionKind::Postgres => "postgres",
            ConnectionKind::Redshift => "redshift",
            ConnectionKind::Mysql => "mysql",
            ConnectionKind::Snowflake => "snowflake",
            ConnectionKind::Bigquery => "bigquery",
            ConnectionKind::Files => "files",
            ConnectionKind::Webhook => "webhook",
            ConnectionKind::Slack => "slack",
            ConnectionKind::Email => "email",
            ConnectionKind::DbtCloud => "dbt_cloud",
            ConnectionKind::Trigger => "trigger",
        }
    }

    pub fn parse(text: &str) -> Option<ConnectionKind> {
        ConnectionKind::ALL.into_iter().find(|k| k.as_str() == text)
    }

    /// Whether models can read from it (a warehouse) rather than syncs write to it.
    pub fn is_source(self) -> bool {
        !matches!(self, ConnectionKind::Stripe) && !self.is_channel() && !self.is_trigger()
    }

    /// Whether it starts ferry's work from outside (`ferry serve`'s `/hooks/NAME`).
    pub fn is_trigger(self) -> bool {
        matches!(self, ConnectionKind::DbtCloud | ConnectionKind::Trigger)
    }

    /// Whether ferry tells it of syncs' runs and alerts (an alert channel).
    pub fn is_channel(self) -> bool {
        matches!(
            self,
            ConnectionKind::Webhook | ConnectionKind::Slack | ConnectionKind::Email
        )
    }
}

impl fmt::Display for ConnectionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A connection to create or replace.
#[derive(Debug, Clone)]
pub struct NewConnection {
    pub name: String,
    pub kind: ConnectionKind,
    /// Non-secret settings as a JSON object: `api_base`, `path`, `max_rps`, …
    pub config: serde_json::Value,
    pub secret: Option<SecretInput>,
}

/// Where a connection's secret comes from.
#[derive(Debug, Clone)]
pub enum SecretInput {
    /// Store the value, encrypted with the workspace's master key.
    Value(Secret),
    /// Store only the name of an environment variable, read each time the secret is needed.
    EnvVar(String),
    /// Keep the secret the connection already has (to change only its config). Fails with
    /// `NotFound` when the connection does not exist yet.
    Keep,
}

/// A stored connection. Its secret stays a reference until [`crate::StateStore::resolve_secret`].
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectionRecord {
    pub name: String,
    pub kind: ConnectionKind,
    pub config: serde_json::Value,
    pub secret: Option<SecretRef>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// How a stored secret is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretRef {
    Encrypted(EncryptedSecret),
    EnvVar(String),
}

/// A secret encrypted at rest. `Debug` shows only the hint, never the ciphertext.
#[derive(Clone, PartialEq, Eq)]
pub struct EncryptedSecret {
    /// The connection it belongs to: the associated data of the encryption, so a blob copied
    /// to another connection does not decrypt.
    pub(crate) connection: String,
    /// base64(nonce ‖ ciphertext).
    pub(crate) blob: String,
    pub(crate) hint: String,
}

impl EncryptedSecret {
    /// A recognisable, redacted form of the clear secret (`sk_test_…4242`), saved with it.
    pub fn hint(&self) -> &str {
        &self.hint
    }
}

impl fmt::Debug for EncryptedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EncryptedSecret({})", self.hint)
    }
}

impl SecretRef {
    /// For listings: `encrypted (sk_test_…4242)` or `$STRIPE_API_KEY`.
    pub fn describe(&self) -> String {
        match self {
            SecretRef::Encrypted(encrypted) => format!("encrypted ({})", encrypted.hint),
            SecretRef::EnvVar(variable) => format!("${variable}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelRecord {
    pub name: String,
    pub connection: String,
    pub sql: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncRecord {
    pub name: String,
    /// 16 random hex characters, fixed when the sync is first created and kept by every update;
    /// part of idempotency keys and of the sync's lock.
    pub uid: String,
    pub spec: SyncSpec,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Set while the sync is paused: its schedule starts no run, orchestrators' triggers are
    /// refused; a person can still run it.
    pub paused_at: Option<DateTime<Utc>>,
    /// When it was last resumed: its schedule counts from then.
    pub resumed_at: Option<DateTime<Utc>>,
}

impl SyncRecord {
    /// When its schedule starts the next run, given when its last run started; `None` without
    /// a schedule or while paused. The schedule counts from the latest of the last start, the
    /// last save (saving a schedule leaves time to preview before anything is written, and a
    /// changed schedule starts afresh) and the last resume (a paused sync does not catch up on
    /// the runs it skipped). A time before `now` means due now.
    pub fn next_scheduled_run(
        &self,
        last_start: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        if self.paused_at.is_some() {
            return None;
        }
        let schedule = self.spec.schedule.as_ref()?;
        let since = [last_start, Some(self.updated_at), self.resumed_at]
            .into_iter()
            .flatten()
            .max();
        Some(schedule.next_due(since, now))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRecord {
    /// `run_` + 14 hex digits of start time in microseconds + 6 random hex digits, so sorting
    /// ids sorts runs by start.
    pub id: String,
    pub sync: String,
    pub status: RunStatus,
    pub full_resync: bool,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub counts: RunCounts,
    pub error: Option<String>,
    /// When the run last said it was alive (each commit, and a heartbeat while it works).
    pub last_seen_at: Option<DateTime<Utc>>,
}

/// The outcome of one model row in one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRecordRow {
    /// The row's position in the model's result, from 1.
    pub row_number: u64,
    pub key: String,
    pub outcome: Outcome,
    /// The id the destination gave the record (`cus_…`).
    pub destination_id: Option<String>,
    pub reason: Option<String>,
    /// Stripe's `Request-Id` of the request that settled the row.
    pub request_id: Option<String>,
    /// Field → `{"before": …, "after": …}`, as JSON text (stored and shown as it is, so a run
    /// of a million records does not build and rebuild a million JSON trees).
    pub changes: Option<String>,
}

/// What was last confirmed written for one record key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotEntry {
    pub destination_id: String,
    pub payload_hash: String,
    /// The payload as JSON text (`Payload::to_json`, written as text).
    pub payload: String,
    pub updated_at: DateTime<Utc>,
}

/// A snapshot entry without its payload, as the engine streams them in key order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotKey {
    pub key: String,
    pub destination_id: String,
    pub payload_hash: String,
}

/// How far the key index of one destination account and object is known to be complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexState {
    /// The key names indexed (`email`, `metadata.user_id`), sorted.
    pub key_names: Vec<String>,
    pub built_at: DateTime<Utc>,
    /// Unix seconds: every record created before this is in the index.
    pub created_through: i64,
    /// Unix seconds: every change event before this has been applied.
    pub events_through: i64,
    pub refreshed_at: DateTime<Utc>,
}

/// One record's keys in the index: (key name, normalized value) pairs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedRecord {
    pub destination_id: String,
    pub keys: Vec<(String, String)>,
    /// Just created, so it has no keys in the index yet: they are only added.
    pub new: bool,
}

/// A create whose idempotency key was saved before its first attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingCreate {
    pub key: String,
    pub idempotency_key: String,
    /// The exact form-encoded body, replayed byte for byte after a crash.
    pub request_body: String,
    pub created_at: DateTime<Utc>,
}

/// An API token of `ferry server`, as listings show it. The token itself is never stored: only
/// its SHA-256, so a token lost is revoked and replaced, not recovered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiTokenRecord {
    pub name: String,
    /// The first 12 characters of the token (`ferry_ab12cd`), to recognise it in listings.
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    /// When a request last presented it (updated at most once a minute); `None` if never.
    pub last_used_at: Option<DateTime<Utc>>,
}

/// A sign-in session of the web UI. The session id (the cookie) is never stored: only its
/// SHA-256, so reading the workspace database does not let anyone sign in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UiSession {
    /// Lowercase hex of SHA-256(session id): 64 characters.
    pub id_hash: String,
    /// The API token the session signed in with.
    pub token_name: String,
    /// The token every request that changes something must carry.
    pub csrf: String,
    /// When the session began: a token of the same name created later is another token, and
    /// does not revive a session of a revoked one.
    pub signed_in_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
}

/// Everything one acknowledged batch changes, committed in one transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommitBatch {
    /// The records of rows that were not unchanged (unchanged rows are only counted).
    pub records: Vec<RunRecordRow>,
    /// Confirmed writes: the snapshot entry of each key, and its pending create is settled.
    pub snapshot_upserts: Vec<(String, SnapshotEntry)>,
    pub snapshot_deletes: Vec<String>,
    /// Keys whose create was permanently rejected: their pending create is dropped.
    pub pending_deletes: Vec<String>,
    /// The run's totals after this batch.
    pub counts: RunCounts,
    /// Requests sent to Stripe for this batch's rows (and rows still in flight), kept for the
    /// record's debugger.
    pub exchanges: Vec<StripeExchange>,
}

/// One attempt of a request ferry sent to Stripe for a record of a run, as sent and as answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripeExchange {
    /// The record's row number in the run.
    pub row_number: u64,
    /// Its order among the run's exchanges (unique within a run; assigned by the engine).
    pub sequence: u64,
    pub sent_at: DateTime<Utc>,
    /// `POST`, `GET`, …
    pub method: String,
    /// The path and query, without the host: `/v1/customers/cus_123`.
    pub path: String,
    pub idempotency_key: Option<String>,
    /// The form-encoded body as sent (already capped by the engine).
    pub request_body: Option<String>,
    /// The HTTP status; None when no answer came (transport error, timeout).
    pub status: Option<u16>,
    /// The answer's body (already capped by the engine).
    pub response_body: Option<String>,
    /// Stripe's `Request-Id` header.
    pub request_id: Option<String>,
    /// Why there was no answer, when there was none.
    pub error: Option<String>,
    pub duration_ms: u64,
}

/// An alert a sync raised and has not resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaisedAlert {
    pub sync: String,
    pub condition: AlertCondition,
    /// The sentence that told people of it, as of its latest raise.
    pub message: String,
    /// When it was first raised: raising it again while it lasts keeps this.
    pub raised_at: DateTime<Utc>,
}

/// An event to send to one alert channel, as the engine hands it over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDelivery {
    /// `evt_…`, made by the caller; the same for every channel told of the event.
    pub event_id: String,
    /// `sync.failed`, `sync.alert.raised`, …
    pub event_type: String,
    pub sync: String,
    pub run_id: Option<String>,
    /// The alert channel's connection name.
    pub channel: String,
    /// The event's JSON text, sent as it is on every attempt.
    pub payload: String,
}

/// Where a delivery is: still to be tried, or finished one way or the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryStatus {
    /// Not delivered yet; tried (again) at its `next_attempt_at`.
    Pending,
    /// The channel took it.
    Delivered,
    /// Given up: the channel refused it, or it ran out of attempts.
    Failed,
}

impl DeliveryStatus {
    pub const ALL: [DeliveryStatus; 3] = [
        DeliveryStatus::Pending,
        DeliveryStatus::Delivered,
        DeliveryStatus::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<DeliveryStatus> {
        DeliveryStatus::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

impl fmt::Display for DeliveryStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One event's delivery to one channel, with how its attempts went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRecord {
    /// `dlv_` + 14 hex digits of creation time in microseconds + 6 random hex digits, so
    /// sorting ids sorts deliveries by when they were made (as run ids do).
    pub id: String,
    pub event_id: String,
    pub event_type: String,
    pub sync: String,
    pub run_id: Option<String>,
    pub channel: String,
    pub payload: String,
    pub status: DeliveryStatus,
    /// How many attempts were made (0 until the first).
    pub attempts: u32,
    pub created_at: DateTime<Utc>,
    /// When it is tried next; `Some` only while pending.
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    /// The last attempt's HTTP status or SMTP reply code.
    pub answer_status: Option<u16>,
    /// The last attempt's answer: a body (cut by the caller) or the error.
    pub answer: Option<String>,
}

/// How one attempt of a delivery went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryAttempt {
    pub at: DateTime<Utc>,
    /// `Delivered`; `Pending` to try again at `next_attempt_at`; `Failed` to give up.
    pub status: DeliveryStatus,
    /// Required with `Pending`; ignored otherwise (a finished delivery is never due).
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub answer_status: Option<u16>,
    pub answer: String,
}

/// A run asked for (through the API or the UI, or due on a schedule), waiting in the run queue
/// for a server process to claim it, running under its claim, or finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRequest {
    /// `rrq_` + 14 hex digits of microseconds + 6 random, so ids sort by when they were made.
    pub id: String,
    pub sync: String,
    /// Who asked: `api`, `ui` or `schedule`.
    pub reason: String,
    pub full_resync: bool,
    pub allow_mass_retire: bool,
    /// At most one request ever holds a given key (a scheduled time: `schedule <sync> <time>`).
    pub dedupe_key: Option<String>,
    pub requested_at: DateTime<Utc>,
    /// It is not claimed before this.
    pub not_before: DateTime<Utc>,
    /// How many times it was claimed; more than once when a worker died or stood aside.
    pub claims: u32,
    /// The worker holding it, while its lease lasts.
    pub claimed_by: Option<String>,
    pub lease_until: Option<DateTime<Utc>>,
    /// The run it started (the latest, when a run was resumed by another worker).
    pub run_id: Option<String>,
    /// Someone asked to cancel its run; the worker running it stops it at its next renewal.
    pub cancel_requested: bool,
    pub finished_at: Option<DateTime<Utc>>,
    /// Why it did not start, when it did not.
    pub refusal: Option<RunRefusal>,
}

/// Why a queued run did not start, as the API answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRefusal {
    /// The HTTP status the API answers (409 already running, 422 cannot be used, …).
    pub status: u16,
    /// The API's error code (`conflict`, `sync_unusable`, …).
    pub code: String,
    pub message: String,
}

/// What a new queue entry asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRunRequest {
    pub sync: String,
    pub reason: String,
    pub full_resync: bool,
    pub allow_mass_retire: bool,
    pub dedupe_key: Option<String>,
}

/// A sequence: syncs run one after another, as saved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SequenceRecord {
    pub name: String,
    pub spec: SequenceSpec,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What a new run of a sequence asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSequenceRun {
    pub sequence: String,
    /// Who asked: `api`, `ui`, `schedule`, `cli`, `trigger`.
    pub reason: String,
    /// `queue` (driven by the servers) or `cli` (a `ferry sequence run` process).
    pub driver: String,
    /// At most one sequence run ever holds a given key (a scheduled time).
    pub dedupe_key: Option<String>,
}

/// One run of a sequence: which step it is at, the run each step started, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SequenceRunRecord {
    /// `seqrun_` + 14 hex digits of start time in microseconds + 6 random hex digits, so
    /// sorting ids sorts sequence runs by start, like run ids.
    pub id: String,
    pub sequence: String,
    /// The sequence's spec as it was when the run started: saving the sequence meanwhile does
    /// not change a run under way.
    pub spec: SequenceSpec,
    pub status: SequenceRunStatus,
    /// Who asked: `api`, `ui`, `schedule`, `cli`, `trigger`.
    pub reason: String,
    /// `queue` (driven by the servers) or `cli` (a `ferry sequence run` process).
    pub driver: String,
    /// The index of the step running now (the last one run, once finished).
    pub step: u32,
    /// The run id of each step started so far, in step order.
    pub run_ids: Vec<String>,
    /// Why it ended (or where it is), in words.
    pub message: Option<String>,
    pub dedupe_key: Option<String>,
    /// Bumped by each update; the compare-and-set token of `advance_sequence_run`.
    pub version: u64,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

/// What a sequence run becomes after a step: where it is, the runs its steps started, and its
/// status (anything but running finishes it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SequenceRunUpdate {
    pub step: u32,
    pub run_ids: Vec<String>,
    pub status: SequenceRunStatus,
    pub message: Option<String>,
}

/// The secret columns of a connection row, in the form both backends store them.
pub(crate) struct StoredSecret {
    pub(crate) kind: &'static str,
    pub(crate) value: String,
    pub(crate) hint: Option<String>,
}

pub(crate) const SECRET_KIND_ENCRYPTED: &str = "encrypted";
pub(crate) const SECRET_KIND_ENV_VAR: &str = "env_var";

impl StoredSecret {
    pub(crate) fn from_ref(secret: &SecretRef) -> StoredSecret {
        match secret {
            SecretRef::Encrypted(encrypted) => StoredSecret {
                kind: SECRET_KIND_ENCRYPTED,
                value: encrypted.blob.clone(),
                hint: Some(encrypted.hint.clone()),
            },
            SecretRef::EnvVar(variable) => StoredSecret {
                kind: SECRET_KIND_ENV_VAR,
                value: variable.clone(),
                hint: None,
            },
        }
    }
}

/// Rebuilds a connection's secret reference from its three columns.
pub(crate) fn secret_from_columns(
    connection: &str,
    kind: Option<String>,
    value: Option<String>,
    hint: Option<String>,
) -> Result<Option<SecretRef>, StateError> {
    match (kind.as_deref(), value) {
        (None, None) => Ok(None),
        (Some(SECRET_KIND_ENCRYPTED), Some(blob)) => {
            Ok(Some(SecretRef::Encrypted(EncryptedSecret {
                connection: connection.to_string(),
                blob,
                hint: hint.unwrap_or_else(|| "…".to_string()),
            })))
        }
        (Some(SECRET_KIND_ENV_VAR), Some(variable)) => Ok(Some(SecretRef::EnvVar(variable))),
        (kind, _) => Err(StateError::Corrupt(format!(
            "an unknown secret kind {kind:?} for connection '{connection}'"
        ))),
    }
}

pub(crate) fn parse_connection_kind(text: &str) -> Result<ConnectionKind, StateError> {
    ConnectionKind::parse(text)
        .ok_or_else(|| StateError::Corrupt(format!("an unknown connection kind {text:?}")))
}

pub(crate) fn parse_outcome(text: &str) -> Result<Outcome, StateError> {
    Outcome::parse(text).ok_or_else(|| StateError::Corrupt(format!("an unknown outcome {text:?}")))
}

pub(crate) fn parse_run_status(text: &str) -> Result<RunStatus, StateError> {
    RunStatus::parse(text)
        .ok_or_else(|| StateError::Corrupt(format!("an unknown run status {text:?}")))
}

pub(crate) fn parse_alert_condition(text: &str) -> Result<AlertCondition, StateError> {
    AlertCondition::parse(text)
        .ok_or_else(|| StateError::Corrupt(format!("an unknown alert condition {text:?}")))
}

pub(crate) fn parse_delivery_status(text: &str) -> Result<DeliveryStatus, StateError> {
    DeliveryStatus::parse(text)
        .ok_or_else(|| StateError::Corrupt(format!("an unknown delivery status {text:?}")))
}

pub(crate) fn parse_sequence_run_status(text: &str) -> Result<SequenceRunStatus, StateError> {
    SequenceRunStatus::parse(text)
        .ok_or_else(|| StateError::Corrupt(format!("an unknown sequence run status {text:?}")))
}

/// An exchange's HTTP status as read from its integer column.
pub(crate) fn exchange_status(value: i64) -> Result<u16, StateError> {
    u16::try_from(value)
        .map_err(|_| StateError::Corrupt(format!("a Stripe exchange whose status is {value}")))
}

/// A delivery's attempt count or answer status as read from its integer column.
pub(crate) fn delivery_number<T: TryFrom<i64>>(value: i64, what: &str) -> Result<T, StateError> {
    T::try_from(value)
        .map_err(|_| StateError::Corrupt(format!("a delivery whose {what} is {value}")))
}

pub(crate) fn parse_sync_spec(sync: &str, json: serde_json::Value) -> Result<SyncSpec, StateError> {
    let corrupt = |error: String| {
        StateError::Corrupt(format!("an unreadable spec for sync '{sync}' ({error})"))
    };
    let stored: StoredSyncSpec =
        serde_json::from_value(json).map_err(|error| corrupt(error.to_string()))?;
    SyncSpec::try_from(stored).map_err(corrupt)
}

/// The JSON a sync's spec is stored as.
pub(crate) fn sync_spec_json(spec: &SyncSpec) -> serde_json::Value {
    serde_json::to_value(StoredSyncSpec::from(spec)).expect("a stored spec serializes")
}

/// A sync's spec as the workspace stores it: its own type, converted by hand, so that the
/// domain's `SyncSpec` can grow (per-object settings, constants, templates) while every stored
/// workspace stays readable. Fields added later must have defaults.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredSyncSpec {
    model: String,
    destination: String,
    object: String,
    behavior: String,
    key: StoredMapping,
    #[serde(default)]
    mappings: Vec<StoredMapping>,
    #[serde(default = "default_nulls")]
    nulls: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    schedule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mirror: Option<StoredMirror>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    invoice: Option<StoredInvoice>,
    /// Absent: the workspace's default alert settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    alerts: Option<StoredAlerts>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct StoredAlerts {
    #[serde(default)]
    channels: Vec<String>,
    #[serde(default = "default_on_failure")]
    on_failure: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rejected_over_percent: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    slower_than_minutes: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    row_drop_over_percent: Option<u32>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct StoredInvoice {
    line_key: String,
    finalize: String,
    #[serde(default)]
    reissue_finalized: bool,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct StoredMirror {
    max_retire_percent: u32,
    delete_customers: bool,
    #[serde(default)]
    cancel_subscriptions_now: bool,
    #[serde(default)]
    void_open_invoices: bool,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct StoredMapping {
    column: String,
    field: String,
}

fn default_nulls() -> String {
    "skip".to_string()
}

fn default_on_failure() -> bool {
    true
}

impl From<&SyncSpec> for StoredSyncSpec {
    fn from(spec: &SyncSpec) -> StoredSyncSpec {
        let mapping = |column: &str, field: &str| StoredMapping {
            column: column.to_string(),
            field: field.to_string(),
        };
        StoredSyncSpec {
            model: spec.model.clone(),
            destination: spec.destination.clone(),
            object: spec.object.as_str().to_string(),
            behavior: spec.behavior.as_str().to_string(),
            key: mapping(&spec.key.column, &spec.key.field),
            mappings: spec
                .mappings
                .iter()
                .map(|m| mapping(&m.column, &m.field))
                .collect(),
            nulls: spec.nulls.as_str().to_string(),
            schedule: spec.schedule.as_ref().map(ToString::to_string),
            mirror: (!spec.mirror.is_default()).then_some(StoredMirror {
                max_retire_percent: spec.mirror.max_retire_percent,
                delete_customers: spec.mirror.delete_customers,
                cancel_subscriptions_now: spec.mirror.cancel_subscriptions_now,
                void_open_invoices: spec.mirror.void_open_invoices,
            }),
            invoice: spec.invoice.as_ref().map(|invoice| StoredInvoice {
                line_key: invoice.line_key.clone(),
                finalize: invoice.finalize.as_str().to_string(),
                reissue_finalized: invoice.reissue_finalized,
            }),
            alerts: spec.alerts.as_ref().map(|alerts| StoredAlerts {
                channels: alerts.channels.clone(),
                on_failure: alerts.on_failure,
                rejected_over_percent: alerts.rejected_over_percent,
                slower_than_minutes: alerts.slower_than_minutes,
                row_drop_over_percent: alerts.row_drop_over_percent,
            }),
        }
    }
}

impl TryFrom<StoredSyncSpec> for SyncSpec {
    type Error = String;

    fn try_from(stored: StoredSyncSpec) -> Result<SyncSpec, String> {
        Ok(SyncSpec {
            model: stored.model,
            destination: stored.destination,
            object: ObjectKind::parse(&stored.object)
                .ok_or_else(|| format!("unknown object `{}`", stored.object))?,
            behavior: Behavior::parse(&stored.behavior)
                .ok_or_else(|| format!("unknown behavior `{}`", stored.behavior))?,
            key: KeyMapping {
                column: stored.key.column,
                field: stored.key.field,
            },
            mappings: stored
                .mappings
                .into_iter()
                .map(|m| FieldMapping {
                    column: m.column,
                    field: m.field,
                })
                .collect(),
            nulls: NullPolicy::parse(&stored.nulls)
                .ok_or_else(|| format!("unknown null policy `{}`", stored.nulls))?,
            schedule: stored
                .schedule
                .map(|text| Schedule::read_stored(&text))
                .transpose()?,
            mirror: stored
                .mirror
                .map(|mirror| MirrorSettings {
                    max_retire_percent: mirror.max_retire_percent,
                    delete_customers: mirror.delete_customers,
                    cancel_subscriptions_now: mirror.cancel_subscriptions_now,
                    void_open_invoices: mirror.void_open_invoices,
                })
                .unwrap_or_default(),
            invoice: stored
                .invoice
                .map(|invoice| {
                    Ok::<_, String>(InvoiceSettings {
                        line_key: invoice.line_key,
                        finalize: Finalize::parse(&invoice.finalize)
                            .ok_or_else(|| format!("unknown finalize `{}`", invoice.finalize))?,
                        reissue_finalized: invoice.reissue_finalized,
                    })
                })
                .transpose()?,
            alerts: stored.alerts.map(|alerts| AlertSettings {
                channels: alerts.channels,
                on_failure: alerts.on_failure,
                rejected_over_percent: alerts.rejected_over_percent,
                slower_than_minutes: alerts.slower_than_minutes,
                row_drop_over_percent: alerts.row_drop_over_percent,
            }),
        })
    }
}

pub(crate) fn parse_sequence_spec(
    sequence: &str,
    json: serde_json::Value,
) -> Result<SequenceSpec, StateError> {
    let corrupt = |error: String| {
        StateError::Corrupt(format!(
            "an unreadable spec for sequence '{sequence}' ({error})"
        ))
    };
    let stored: StoredSequenceSpec =
        serde_json::from_value(json).map_err(|error| corrupt(error.to_string()))?;
    Ok(SequenceSpec {
        steps: stored.steps,
        stop_when_rejected_over_percent: stored.stop_when_rejected_over_percent,
        schedule: stored
            .schedule
            .map(|text| Schedule::read_stored(&text))
            .transpose()
            .map_err(corrupt)?,
    })
}

/// The JSON a sequence's spec is stored as (in the sequence, and in each of its runs).
pub(crate) fn sequence_spec_json(spec: &SequenceSpec) -> serde_json::Value {
    let stored = StoredSequenceSpec {
        steps: spec.steps.clone(),
        stop_when_rejected_over_percent: spec.stop_when_rejected_over_percent,
        schedule: spec.schedule.as_ref().map(ToString::to_string),
    };
    serde_json::to_value(stored).expect("a stored sequence spec serializes")
}

/// The JSON a sequence run's `run_ids` are stored as: an array of strings.
pub(crate) fn run_ids_json(run_ids: &[String]) -> serde_json::Value {
    serde_json::Value::from(run_ids.to_vec())
}

pub(crate) fn parse_run_ids(
    run_id: &str,
    json: serde_json::Value,
) -> Result<Vec<String>, StateError> {
    serde_json::from_value(json).map_err(|error| {
        StateError::Corrupt(format!(
            "unreadable step run ids for sequence run {run_id} ({error})"
        ))
    })
}

/// A sequence run's step or version as read from its integer column.
pub(crate) fn sequence_run_number<T: TryFrom<i64>>(
    value: i64,
    what: &str,
) -> Result<T, StateError> {
    T::try_from(value)
        .map_err(|_| StateError::Corrupt(format!("a sequence run whose {what} is {value}")))
}

/// A sequence's spec as the workspace stores it: its own type, like [`StoredSyncSpec`], so the
/// domain's `SequenceSpec` can grow while stored workspaces stay readable, and a stored schedule
/// is read with [`Schedule::read_stored`] (not checked again on every read). Fields added later
/// must have defaults.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredSequenceSpec {
    steps: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stop_when_rejected_over_percent: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    schedule: Option<String>,
}

/// Sorts the keys of every JSON object, recursively. PostgreSQL's JSONB does not keep key
/// order, so both backends return objects sorted; callers then see the same JSON either way.
pub(crate) fn sorted_json(value: serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => {
            let mut entries: Vec<(String, serde_json::Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            serde_json::Value::Object(
                entries
                    .into_iter()
                    .map(|(key, value)| (key, sorted_json(value)))
                    .collect(),
            )
        }
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.into_iter().map(sorted_json).collect())
        }
        other => other,
    }
}

/// The counts columns shared by both backends' `runs` table, in this order.
pub(crate) fn counts_to_columns(counts: &RunCounts) -> [i64; 10] {
    [
        counts.rows,
        counts.created,
        counts.updated,
        counts.unchanged,
        counts.not_found,
        counts.rejected,
        counts.failed,
        counts.requests,
        counts.not_attempted,
        counts.retired,
    ]
    .map(to_sql_integer)
}

pub(crate) fn counts_from_columns(columns: [i64; 10]) -> RunCounts {
    let [rows, created, updated, unchanged, not_found, rejected, failed, requests, not_attempted, retired] =
        columns.map(|value| u64::try_from(value).unwrap_or(0));
    RunCounts {
        rows,
        created,
        updated,
        unchanged,
        not_found,
        rejected,
        failed,
        not_attempted,
        retired,
        requests,
    }
}

/// Both databases store signed 64-bit integers; no count or row number gets near the limit.
pub(crate) fn to_sql_integer(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
