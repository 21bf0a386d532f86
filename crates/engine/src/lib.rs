//! The sync engine: model rows → validation → plan → Stripe → acknowledged state.
//!
//! The only crate that joins a source, the workspace store and a destination. A preview runs the
//! same steps up to the plan and sends no write; a run executes the plan.

mod connections;
pub mod declare;
mod execute;
mod matching;
mod plan;
pub mod prepare;

pub use connections::{source_config, stripe_config};
pub use execute::{create_idempotency_key, ProgressFn};
pub use plan::Action;

use ferry_core::{Outcome, RunCounts, RunStatus};
use ferry_destinations::stripe::{StripeConfig, StripeService};
use ferry_source::{QueryOptions, SourceConfig};
use ferry_state::{ModelRecord, StateError, StateStore, SyncRecord};
use plan::{plan_records, PlanInputs, PlannedRecord};
use prepare::{prepare_row, reject_duplicate_keys, validate_sync, RejectedRow, ValidatedSync};
use serde::Serialize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    // Transparent, so that an error chain (`{:#}`) does not say the same sentence twice.
    #[error(transparent)]
    State(#[from] StateError),
    #[error("sync '{0}' does not exist; `ferry sync list` shows the syncs of this workspace")]
    UnknownSync(String),
    #[error("connection '{0}' does not exist; `ferry connections` lists the connections of this workspace")]
    UnknownConnection(String),
    #[error("model '{0}' does not exist; `ferry model list` lists the models of this workspace")]
    UnknownModel(String),
    /// A connection test failed: a bad key, a missing permission, an unreachable host.
    #[error("{0}")]
    ConnectionTest(String),
    /// A model's SQL failed or is not a read-only query.
    #[error("{0}")]
    Query(String),
    #[error("{what} '{name}' used by sync '{sync}' does not exist any more; recreate it or update the sync")]
    MissingDependency {
        what: &'static str,
        name: String,
        sync: String,
    },
    #[error("connection '{name}' is a {actual} connection, but the sync uses it as {expected}")]
    WrongConnectionKind {
        name: String,
        actual: String,
        expected: &'static str,
    },
    #[error("the sync does not fit its model:\n  - {}", .0.join("\n  - "))]
    InvalidSync(Vec<String>),
    #[error("reading model '{model}' failed: {problem}")]
    Source { model: String, problem: String },
    #[error("Stripe refused the API key: {0}. Check the key with `ferry connections test NAME`")]
    StripeKey(String),
    #[error("looking customers up in Stripe failed: {0}")]
    StripeLookup(String),
    #[error("{0}")]
    Config(String),
    /// The sync's lock (a PostgreSQL session-level advisory lock) died with its session, so the
    /// run stopped sending: another run could have taken the lock.
    #[error("{}", execute::LOCK_LOST)]
    LockLost,
}

/// Everything a sync needs, loaded and resolved from the workspace.
pub struct SyncSetup {
    pub sync: SyncRecord,
    pub model: ModelRecord,
    pub source: SourceConfig,
    pub stripe: StripeConfig,
    pub query: QueryOptions,
}

pub async fn load_sync_setup(
    store: &StateStore,
    sync_name: &str,
) -> Result<SyncSetup, EngineError> {
    let sync = store
        .get_sync(sync_name)
        .await?
        .ok_or_else(|| EngineError::UnknownSync(sync_name.to_string()))?;
    let missing = |what, name: &str| EngineError::MissingDependency {
        what,
        name: name.to_string(),
        sync: sync_name.to_string(),
    };
    let model = store
        .get_model(&sync.spec.model)
        .await?
        .ok_or_else(|| missing("model", &sync.spec.model))?;
    let source_connection = store
        .get_connection(&model.connection)
        .await?
        .ok_or_else(|| missing("connection", &model.connection))?;
    let destination = store
        .get_connection(&sync.spec.destination)
        .await?
        .ok_or_else(|| missing("destination", &sync.spec.destination))?;
    Ok(SyncSetup {
        source: source_config(store, &source_connection)?,
        stripe: stripe_config(store, &destination)?,
        query: QueryOptions::default(),
        sync,
        model,
    })
}

/// What a run would do, found with reads only.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct Preview {
    pub rows: u64,
    /// Rejected before any request (missing, invalid or duplicate keys, bad values).
    pub invalid: u64,
    pub create: u64,
    pub update: u64,
    pub unchanged: u64,
    pub not_found: u64,
    /// Every row a run would reject, `invalid` included.
    pub rejected: u64,
    /// Lookups that failed; the run would report these rows as failed.
    pub failed: u64,
    /// Requests the run will send: the same lookups plus one per write (before retries).
    pub requests_estimate: u64,
    pub examples: Vec<PreviewExample>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PreviewExample {
    pub row: u64,
    pub key: String,
    pub action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stripe_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changes: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

const EXAMPLES_PER_KIND: usize = 5;
const REJECTED_EXAMPLES: usize = 20;

pub async fn preview_sync(store: &StateStore, setup: &SyncSetup) -> Result<Preview, EngineError> {
    let stripe =
        StripeService::new(setup.stripe.clone()).map_err(|e| EngineError::Config(e.to_string()))?;
    let ReadAndPlanned {
        rows,
        invalid,
        planned,
        ..
    } = read_and_plan(store, setup, &stripe, false).await?;
    let mut preview = Preview {
        rows,
        invalid: invalid.len() as u64,
        rejected: invalid.len() as u64,
        ..Preview::default()
    };
    let mut per_kind = std::collections::HashMap::<&str, usize>::new();
    let mut example = |preview: &mut Preview,
                       kind: &'static str,
                       limit: usize,
                       planned: &PlannedRecord,
                       stripe_id: Option<&String>,
                       changes: Option<&serde_json::Value>,
                       reason: Option<&String>| {
        let seen = per_kind.entry(kind).or_default();
        if *seen < limit {
            *seen += 1;
            preview.examples.push(PreviewExample {
                row: planned.record.row_number,
                key: planned.record.key.clone(),
                action: kind,
                stripe_id: stripe_id.cloned(),
                changes: changes.cloned(),
                reason: reason.cloned(),
            });
        }
    };
    for planned in &planned {
        match &planned.action {
            Action::Unchanged { .. } => preview.unchanged += 1,
            Action::Update {
                stripe_id, changes, ..
            } => {
                preview.update += 1;
                example(
                    &mut preview,
                    "update",
                    EXAMPLES_PER_KIND,
                    planned,
                    Some(stripe_id),
                    Some(changes),
                    None,
                );
            }
            Action::Create { changes } => {
                preview.create += 1;
                example(
                    &mut preview,
                    "create",
                    EXAMPLES_PER_KIND,
                    planned,
                    None,
                    Some(changes),
                    None,
                );
            }
            Action::ReplayCreate { .. } => {
                preview.create += 1;
                let reason =
                    "finishes a create that an interrupted run started (same idempotency key)"
                        .to_string();
                example(
                    &mut preview,
                    "create",
                    EXAMPLES_PER_KIND,
                    planned,
                    None,
                    None,
                    Some(&reason),
                );
            }
            Action::NotFound => {
                preview.not_found += 1;
                example(
                    &mut preview,
                    "not_found",
                    EXAMPLES_PER_KIND,
                    planned,
                    None,
                    None,
                    None,
                );
            }
            Action::Reject { reason } => {
                preview.rejected += 1;
                example(
                    &mut preview,
                    "reject",
                    REJECTED_EXAMPLES,
                    planned,
                    None,
                    None,
                    Some(reason),
                );
            }
            Action::Fail { reason } => {
                preview.failed += 1;
                example(
                    &mut preview,
                    "fail",
                    REJECTED_EXAMPLES,
                    planned,
                    None,
                    None,
                    Some(reason),
                );
            }
        }
    }
    for rejected in invalid.iter().take(REJECTED_EXAMPLES) {
        preview.examples.push(PreviewExample {
            row: rejected.row_number,
            key: rejected.key.clone(),
            action: "reject",
            stripe_id: None,
            changes: None,
            reason: Some(rejected.reason.clone()),
        });
    }
    preview.requests_estimate = stripe.http().requests_sent() + preview.create + preview.update;
    Ok(preview)
}

#[derive(Clone, Default)]
pub struct RunOptions {
    pub full_resync: bool,
    pub progress: Option<ProgressFn>,
    /// Called once the plan is known, with the number of rows.
    pub on_plan: Option<Arc<dyn Fn(u64) + Send + Sync>>,
    /// Set to request a clean stop (SIGINT/SIGTERM).
    pub cancel: Arc<AtomicBool>,
    /// Called with the run's id once the lock is held and the run recorded, so that a caller
    /// running the sync in the background can answer with the id at once.
    pub on_start: Option<Arc<dyn Fn(String) + Send + Sync>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub run_id: String,
    pub status: RunStatus,
    pub counts: RunCounts,
    pub error: Option<String>,
}

/// Runs a sync once. Holds the sync's lock for the whole run; a run that stops early is still
/// recorded, with what it did until then.
pub async fn run_sync(
    store: &StateStore,
    setup: &SyncSetup,
    options: &RunOptions,
) -> Result<RunReport, EngineError> {
    let lock = store.lock_sync(&setup.sync).await?;
    let interrupted = store.mark_interrupted_runs(&setup.sync.name).await?;
    if interrupted > 0 {
        tracing::info!(sync = %setup.sync.name, interrupted, "Earlier runs were interrupted; their unfinished rows are picked up now.");
    }
    let run = store
        .create_run(&setup.sync.name, options.full_resync)
        .await?;
    if let Some(on_start) = &options.on_start {
        on_start(run.id.clone());
    }
    let stripe =
        StripeService::new(setup.stripe.clone()).map_err(|e| EngineError::Config(e.to_string()))?;
    let mut counts = RunCounts::default();
    let lock_held = || lock.is_still_held();
    let result = async {
        let read = read_and_plan(store, setup, &stripe, options.full_resync).await?;
        counts.rows = read.rows;
        if let Some(on_plan) = &options.on_plan {
            on_plan(read.rows);
        }
        let mut planned = read.planned;
        // Another sync into the same Stripe account may create the same customers: runs that
        // create take turns under the account's create lock, and look their creates up again
        // once they hold it.
        let mut _create_lock = None;
        if planned.iter().any(|p| {
            matches!(
                p.action,
                Action::Create { .. } | Action::ReplayCreate { .. }
            )
        }) {
            let scope = stripe.create_scope("customer").await.map_err(|e| match e {
                ferry_destinations::stripe::StripeCallError::Unauthorized { message, .. } => {
                    EngineError::StripeKey(message)
                }
                other => EngineError::StripeLookup(other.to_string()),
            })?;
            let give_up = || options.cancel.load(Ordering::Relaxed) || !lock.is_still_held();
            let held = match store.lock_create_scope(&scope, &give_up).await? {
                Some(held) => held,
                None if !lock.is_still_held() => return Err(EngineError::LockLost),
                None => return Ok(execute::Ending::Cancelled),
            };
            _create_lock = Some(held);
            planned =
                plan::recheck_creates(&stripe, &read.context.inputs(options.full_resync), planned)
                    .await?;
        }
        let execution = execute::Execution {
            store,
            stripe: &stripe,
            sync_name: &setup.sync.name,
            sync_uid: &setup.sync.uid,
            run_id: &run.id,
            progress: options.progress.clone(),
            cancel: options.cancel.clone(),
            lock_held: &lock_held,
        };
        execute::execute_plan(&execution, read.invalid, planned, &mut counts).await
    }
    .await;
    counts.requests = stripe.http().requests_sent();
    let (status, error) = match &result {
        Ok(execute::Ending::Completed) => (RunStatus::Completed, None),
        Ok(execute::Ending::Cancelled) => {
            (RunStatus::Cancelled, Some("stopped by request".to_string()))
        }
        Err(e) => (RunStatus::Failed, Some(e.to_string())),
    };
    // After a restart of a PostgreSQL workspace the store reconnects; while the server is still
    // starting up, recording the end is retried for a while (once only if the run already gave
    // up waiting for the database).
    let finish = || store.finish_run(&run.id, status, &counts, error.as_deref());
    let finished = match &result {
        Err(EngineError::State(e)) if execute::is_unreachable(e) => finish().await,
        _ => execute::retry_state_write("recording the end of the run", finish).await,
    };
    if let Err(e) = finished {
        tracing::error!(
            sync = %setup.sync.name,
            run = %run.id,
            error = %e,
            run_error = error.as_deref().unwrap_or("none"),
            "Could not record the end of the run. The next run marks it interrupted and picks \
             up its unfinished rows; creates replay their saved idempotency keys, so nothing is \
             created twice."
        );
        return Err(e.into());
    }
    lock.release().await;
    tracing::info!(
        sync = %setup.sync.name,
        run = %run.id,
        status = status.as_str(),
        created = counts.created,
        updated = counts.updated,
        unchanged = counts.unchanged,
        rejected = counts.rejected,
        failed = counts.failed,
        "Sync run finished."
    );
    Ok(RunReport {
        run_id: run.id,
        status,
        counts,
        error,
    })
}

/// What a run knows once the model is read and planned.
struct ReadAndPlanned {
    rows: u64,
    invalid: Vec<RejectedRow>,
    planned: Vec<PlannedRecord>,
    context: PlanContext,
}

/// What planning reads from the workspace, kept to plan creates again under the create lock.
struct PlanContext {
    sync: ValidatedSync,
    behavior: ferry_core::Behavior,
    snapshot: std::collections::HashMap<String, ferry_state::SnapshotEntry>,
    pending: std::collections::HashMap<String, ferry_state::PendingCreate>,
}

impl PlanContext {
    fn inputs(&self, full_resync: bool) -> PlanInputs<'_> {
        PlanInputs {
            sync: &self.sync,
            behavior: self.behavior,
            snapshot: &self.snapshot,
            pending: &self.pending,
            full_resync,
        }
    }
}

/// Streams the model, prepares every row, and plans the records.
async fn read_and_plan(
    store: &StateStore,
    setup: &SyncSetup,
    stripe: &StripeService,
    full_resync: bool,
) -> Result<ReadAndPlanned, EngineError> {
    let source_error = |error: ferry_source::SourceError| {
        let mut problem = error.to_string();
        if matches!(error, ferry_source::SourceError::ConnectionLost { .. }) {
            // Say what that means for Stripe: no write goes out before the whole model is read.
            problem.push_str(
                "; nothing was sent to Stripe (a run reads the whole model before its first \
                 write), so run the sync again once the warehouse answers",
            );
        }
        EngineError::Source {
            model: setup.model.name.clone(),
            problem,
        }
    };
    let mut stream = ferry_source::query(&setup.source, &setup.model.sql, &setup.query)
        .await
        .map_err(source_error)?;
    let columns: Vec<String> = stream.columns().iter().map(|c| c.name.clone()).collect();
    let validated = validate_sync(&setup.sync.spec, &columns).map_err(EngineError::InvalidSync)?;
    let mut rows = 0u64;
    let mut ready = Vec::new();
    let mut invalid = Vec::new();
    while let Some(row) = stream.next_row().await {
        let row = row.map_err(source_error)?;
        rows += 1;
        match prepare_row(&validated, rows, &row) {
            Ok(record) => ready.push(record),
            Err(rejected) => invalid.push(rejected),
        }
    }
    let (ready, duplicates) = reject_duplicate_keys(ready);
    invalid.extend(duplicates);
    invalid.sort_by_key(|r| r.row_number);
    let context = PlanContext {
        sync: validated,
        behavior: setup.sync.spec.behavior,
        snapshot: store.load_snapshot(&setup.sync.name).await?,
        pending: store.load_pending_creates(&setup.sync.name).await?,
    };
    let planned = plan_records(stripe, &context.inputs(full_resync), ready).await?;
    Ok(ReadAndPlanned {
        rows,
        invalid,
        planned,
        context,
    })
}

/// Counts of a finished run by outcome, for reports.
pub fn outcome_count(counts: &RunCounts, outcome: Outcome) -> u64 {
    match outcome {
        Outcome::Created => counts.created,
        Outcome::Updated => counts.updated,
        Outcome::Unchanged => counts.unchanged,
        Outcome::NotFound => counts.not_found,
        Outcome::Rejected => counts.rejected,
        Outcome::Failed => counts.failed,
    }
}
