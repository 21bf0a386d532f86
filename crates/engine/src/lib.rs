//! The sync engine: model rows → validation → staging → diff → plan → Stripe → acknowledged
//! state, chunk by chunk in bounded memory (see `run.rs` for the pipeline).
//!
//! The only crate that joins a source, the workspace store and a destination. A preview runs the
//! same steps up to the plan and sends no write; a run executes the plan. Stripe objects are
//! reached only through `ferry_destinations::stripe::StripeObject`, so the engine is the same
//! for every object.

pub mod alerts;
mod channel_kinds;
pub mod connections;
mod crash_point;
pub mod declare;
mod execute;
mod index;
mod lines;
mod mirror;
pub mod plan;
pub mod prepare;
mod reference;
mod replace;
mod request_log;
mod run;
mod shared_budget;
mod stage;
mod trigger_kinds;

pub use connections::{query_options, source_config, stripe_config};
pub use execute::{create_idempotency_key, ProgressFn};
pub use plan::Action;

use execute::{Committer, Ending, Execution, Planned};
use ferry_core::{Outcome, RunCounts, RunStatus};
use ferry_destinations::stripe::{StripeConfig, StripeService};
use ferry_source::{QueryOptions, SourceConfig, TimeoutSetting};
use ferry_state::{ModelRecord, StateError, StateStore, SyncRecord};
use index::KeyIndex;
use plan::Rules;
use prepare::RejectedRow;
use run::{Pipeline, Sink};
use serde::Serialize;
use std::sync::atomic::AtomicBool;
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
    /// The warehouse could not be reached or stopped answering while running a query.
    #[error("{0}")]
    WarehouseUnreachable(String),
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
    #[error("looking records up in Stripe failed: {0}")]
    StripeLookup(String),
    #[error("{0}")]
    Config(String),
    /// Change detection in the warehouse failed after the model was read (writing back the
    /// rows Stripe acknowledged).
    #[error("{0}")]
    ChangeDetection(String),
    /// The sync's lock (a PostgreSQL session-level advisory lock) died with its session, so the
    /// run stopped sending: another run could have taken the lock.
    #[error("{}", execute::LOCK_LOST)]
    LockLost,
    /// Mirror would retire records but may not (too many, or the model's keys are uncertain);
    /// what the run created and updated stands.
    #[error("{0}")]
    RetirementRefused(String),
}

/// Everything a sync needs, loaded and resolved from the workspace.
pub struct SyncSetup {
    pub sync: SyncRecord,
    pub model: ModelRecord,
    pub source: SourceConfig,
    pub stripe: StripeConfig,
    pub query: QueryOptions,
    /// The model's connection's `change_detection_schema`: change detection runs in the
    /// warehouse, in that schema.
    pub change_detection_schema: Option<String>,
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
        query: query_options(&source_connection, TimeoutSetting::Statement)?,
        change_detection_schema: connections::change_detection_schema(&source_connection)?,
        sync,
        model,
    })
}

/// What change detection in the warehouse uses for a sync (its table, key, columns and
/// fingerprint), when its model's connection turns it on: for tools that prepare a warehouse,
/// such as the benchmark.
pub async fn change_detection_spec(
    store: &StateStore,
    sync_name: &str,
) -> Result<Option<ferry_source::warehouse_diff::DiffSpec>, EngineError> {
    run::warehouse_diff_spec(&load_sync_setup(store, sync_name).await?)
}

/// What a run would do, found with reads only.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct Preview {
    pub rows: u64,
    /// Rejected before any request (missing, invalid or duplicate keys, bad values).
    pub invalid: u64,
    pub create: u64,
    pub update: u64,
    /// Records Stripe cannot change in place (a price's amount), replaced by new ones.
    pub replace: u64,
    /// Mirror: records whose rows left the model, to delete or archive.
    pub retire: u64,
    /// Mirror: why the run would retire nothing (too many would go), when it would not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retire_refused: Option<String>,
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
/// A replacement creates the new record, reads the parent, repoints its default when it named
/// the old record (counted: usually it does) and retires the old one.
const REPLACE_REQUESTS: u64 = 4;
const REJECTED_EXAMPLES: usize = 20;

/// Counts what a run would do, keeping a few examples of each kind.
#[derive(Default)]
struct PreviewSink<'s> {
    /// Reads a finalized invoice a changed row would update (its status and lines), to tell
    /// an update from a reissue or a rejection.
    stripe: Option<&'s StripeService>,
    reissue_finalized: bool,
    preview: Preview,
    shown: std::collections::HashMap<&'static str, usize>,
    rejected_examples: Vec<PreviewExample>,
    /// Requests beyond one per write: a record made of lines (an invoice) adds one per line
    /// on create and the finalizing steps; its update reads it and its lines first.
    line_requests: u64,
    /// The finalizing steps after an invoice's create (finalize, send).
    finalize_requests: u64,
}

impl PreviewSink<'_> {
    fn example(&mut self, example: PreviewExample) {
        let limit = match example.action {
            "reject" | "fail" => REJECTED_EXAMPLES,
            _ => EXAMPLES_PER_KIND,
        };
        let shown = self.shown.entry(example.action).or_default();
        if *shown < limit {
            *shown += 1;
            if example.action == "reject" {
                self.rejected_examples.push(example);
            } else {
                self.preview.examples.push(example);
            }
        }
    }
}

impl Sink for PreviewSink<'_> {
    async fn rejected(&mut self, row: RejectedRow) -> Result<(), EngineError> {
        self.preview.invalid += 1;
        self.preview.rejected += 1;
        self.example(PreviewExample {
            row: row.row_number,
            key: row.key,
            action: "reject",
            stripe_id: None,
            changes: None,
            reason: Some(row.reason),
        });
        Ok(())
    }

    async fn unchanged(&mut self, _ack: Option<prepare::WarehouseAck>) -> Result<(), EngineError> {
        self.preview.unchanged += 1;
        Ok(())
    }

    fn unchanged_in_warehouse(&mut self, rows: u64) {
        self.preview.unchanged += rows;
    }

    fn staged(&mut self, rows: u64) {
        self.preview.rows = rows;
    }

    fn retirement_refused(&mut self, reason: String) -> Result<(), EngineError> {
        self.preview.retire_refused = Some(reason);
        Ok(())
    }

    async fn chunk(
        &mut self,
        planned: Vec<Planned>,
        _index: Option<&KeyIndex<'_>>,
        sync: &prepare::ValidatedSync,
        _rules: &Rules<'_>,
    ) -> Result<Ending, EngineError> {
        let made_of_lines = sync.object.lines().is_some();
        for Planned {
            record, mut action, ..
        } in planned
        {
            if let (Some(stripe), Some(lines)) = (self.stripe, sync.object.lines()) {
                action = self
                    .finalized_action(stripe, sync.object, lines, &record, action)
                    .await;
            }
            if made_of_lines {
                self.line_requests += match &action {
                    Action::Create | Action::ReplayCreate { .. } => {
                        lines::lines_of(&record.payload).len() as u64 + self.finalize_requests
                    }
                    // The record, then its lines, are read first.
                    Action::Update { .. } => 2,
                    _ => 0,
                };
            }
            let mut example = PreviewExample {
                row: record.row_number,
                key: record.key,
                action: action.kind(),
                stripe_id: None,
                changes: None,
                reason: None,
            };
            match action {
                Action::Unchanged { .. } => self.preview.unchanged += 1,
                Action::Update {
                    destination_id,
                    changes,
                    ..
                } => {
                    self.preview.update += 1;
                    example.stripe_id = Some(destination_id);
                    example.changes = Some(changes);
                }
                Action::Create => {
                    self.preview.create += 1;
                    example.changes = Some(plan::describe_create(&record.payload));
                }
                Action::ReplayCreate { .. } => {
                    self.preview.create += 1;
                    example.reason = Some(
                        "finishes a create that an interrupted run started (same idempotency key)"
                            .to_string(),
                    );
                }
                Action::Replace {
                    old_id,
                    changes,
                    reason,
                    ..
                } => {
                    self.preview.replace += 1;
                    example.stripe_id = Some(old_id);
                    example.changes = Some(changes);
                    example.reason = Some(reason);
                }
                Action::Retire {
                    destination_id,
                    how,
                } => {
                    self.preview.retire += 1;
                    example.stripe_id = Some(destination_id);
                    example.reason = Some(format!("its row left the model: {how}"));
                }
                Action::NotFound => self.preview.not_found += 1,
                Action::Reject { reason } => {
                    self.preview.rejected += 1;
                    example.reason = Some(reason);
                }
                Action::Fail { reason } => {
                    self.preview.failed += 1;
                    example.reason = Some(reason);
                }
            }
            if example.action != "unchanged" {
                self.example(example);
            }
        }
        Ok(Ending::Completed)
    }
}

impl PreviewSink<'_> {
    /// An update of a record made of lines (an invoice) whose parent Stripe finalized: what
    /// the run will do instead when the model's lines no longer fit it, a reissue or a
    /// rejection (two reads: the invoice and its lines).
    async fn finalized_action(
        &self,
        stripe: &StripeService,
        object: &'static dyn ferry_destinations::stripe::StripeObject,
        lines: &'static ferry_destinations::stripe::Lines,
        record: &prepare::PreparedRecord,
        action: Action,
    ) -> Action {
        let Action::Update {
            destination_id,
            changed,
            changes,
        } = action
        else {
            return action;
        };
        let schema = object.schema();
        let verdict = match stripe.retrieve(schema, &destination_id).await {
            Ok(Some(current)) => {
                lines::finalized_verdict(stripe, schema, lines, record, &current.object, &changed)
                    .await
                    .ok()
            }
            _ => None,
        };
        match verdict {
            Some(lines::Finalized::Differs { status }) if self.reissue_finalized && status != "paid" => {
                Action::Replace {
                    reason: format!(
                        "voids `{destination_id}` (it is {status}) and issues a new {} in its place: Stripe does not change a finalized {}'s lines or amounts",
                        schema.object, schema.object
                    ),
                    old_id: destination_id,
                    changes,
                    pending: None,
                }
            }
            Some(lines::Finalized::Differs { status }) => Action::Reject {
                reason: lines::finalized_reason(schema.object, &record.key, &destination_id, &status),
            },
            // A draft, or a read that failed (the run finds out): an update.
            _ => Action::Update {
                destination_id,
                changed,
                changes,
            },
        }
    }
}

/// What a run would create, update, leave alone and reject, found with reads only.
pub async fn preview_sync(store: &StateStore, setup: &SyncSetup) -> Result<Preview, EngineError> {
    // Like a run's (see `run_sync`): every line logged while previewing names the sync.
    let span = tracing::error_span!("preview", sync = %setup.sync.name);
    tracing::Instrument::instrument(preview_sync_in_span(store, setup), span).await
}

async fn preview_sync_in_span(
    store: &StateStore,
    setup: &SyncSetup,
) -> Result<Preview, EngineError> {
    let stripe = shared_budget::stripe_service(store, &setup.stripe, None)?;
    let never = AtomicBool::new(false);
    let rows_read = std::sync::atomic::AtomicU64::new(0);
    let rows_folded = std::sync::atomic::AtomicU64::new(0);
    let warehouse_diff = run::warehouse_diff_spec(setup)?;
    let pipeline = Pipeline {
        store,
        setup,
        stripe: &stripe,
        full_resync: false,
        cancel: &never,
        rows_read: &rows_read,
        rows_folded: &rows_folded,
        warehouse_diff: warehouse_diff.as_ref(),
        creates_tables: false,
        allow_mass_retire: false,
    };
    let mut sink = PreviewSink {
        stripe: Some(&stripe),
        reissue_finalized: setup
            .sync
            .spec
            .invoice
            .as_ref()
            .is_some_and(|invoice| invoice.reissue_finalized),
        // Finalized, and sent when collected by `send_invoice` (counted: usually so).
        finalize_requests: match setup.sync.spec.invoice.as_ref().map(|i| i.finalize) {
            Some(ferry_core::Finalize::WhenCreated) => 2,
            _ => 0,
        },
        ..PreviewSink::default()
    };
    pipeline.drive(&mut sink).await?;
    let mut preview = sink.preview;
    preview.examples.sort_by_key(|e| e.row);
    sink.rejected_examples.sort_by_key(|e| e.row);
    preview.examples.extend(sink.rejected_examples);
    preview.requests_estimate = stripe.http().requests_sent()
        + sink.line_requests
        + preview.create
        + preview.update
        + REPLACE_REQUESTS * preview.replace
        + preview.retire * u64::from(preview.retire_refused.is_none());
    Ok(preview)
}

#[derive(Clone, Default)]
pub struct RunOptions {
    pub full_resync: bool,
    /// Mirror: retire what left the model even beyond the sync's limit.
    pub allow_mass_retire: bool,
    pub progress: Option<ProgressFn>,
    /// Called once the model is read, with the number of rows.
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

/// A run's records and their outcomes, committed as they settle.
struct RunSink<'a, 'b, 'c> {
    exec: &'a Execution<'b>,
    committer: Committer<'a, 'b>,
    on_plan: Option<&'c Arc<dyn Fn(u64) + Send + Sync>>,
    /// Chunks executed so far (for the crash tests' `chunk:N` point).
    chunks_sent: u64,
}

impl Sink for RunSink<'_, '_, '_> {
    async fn rejected(&mut self, row: RejectedRow) -> Result<(), EngineError> {
        self.committer
            .push(execute::settled(
                row.row_number,
                &row.key,
                Outcome::Rejected,
                None,
                Some(row.reason),
                None,
                None,
            ))
            .await?;
        self.committer.flush_if_due().await
    }

    async fn unchanged(&mut self, ack: Option<prepare::WarehouseAck>) -> Result<(), EngineError> {
        let mut done = execute::unchanged();
        done.warehouse_ack = ack;
        self.committer.push(done).await?;
        self.committer.flush_if_due().await
    }

    fn unchanged_in_warehouse(&mut self, rows: u64) {
        self.committer.unchanged_in_warehouse(rows);
    }

    fn staged(&mut self, rows: u64) {
        crash_point::reached("staged");
        if let Some(on_plan) = self.on_plan {
            on_plan(rows);
        }
    }

    fn created_records(&self) -> bool {
        self.committer.counts().created > 0
    }

    fn retirement_refused(&mut self, reason: String) -> Result<(), EngineError> {
        Err(EngineError::RetirementRefused(reason))
    }

    async fn chunk(
        &mut self,
        planned: Vec<Planned>,
        index: Option<&KeyIndex<'_>>,
        sync: &prepare::ValidatedSync,
        rules: &Rules<'_>,
    ) -> Result<Ending, EngineError> {
        let ending =
            run::execute_chunk(self.exec, &mut self.committer, planned, index, sync, rules).await?;
        self.chunks_sent += 1;
        crash_point::reached(&format!("chunk:{}", self.chunks_sent));
        Ok(ending)
    }
}

/// Runs a sync once. Holds the sync's lock for the whole run; a run that stops early is still
/// recorded, with what it did until then.
pub async fn run_sync(
    store: &StateStore,
    setup: &SyncSetup,
    options: &RunOptions,
) -> Result<RunReport, EngineError> {
    // Every line logged during the run carries the sync's name and, once the run is recorded,
    // its id: `--log-format json` writes them as the span's fields on each line, so a log
    // collector can pick one run's lines out of a server's. At ERROR level so that the span
    // is enabled whatever the log filter lets through (a disabled span adds no fields).
    let span = tracing::error_span!("run", sync = %setup.sync.name, run = tracing::field::Empty);
    tracing::Instrument::instrument(run_sync_in_span(store, setup, options), span).await
}

async fn run_sync_in_span(
    store: &StateStore,
    setup: &SyncSetup,
    options: &RunOptions,
) -> Result<RunReport, EngineError> {
    let retention = run_retention()?;
    let request_log_retention = request_log_retention()?;
    let lock = store.lock_sync(&setup.sync).await?;
    let interrupted = store.mark_interrupted_runs(&setup.sync.name).await?;
    if interrupted > 0 {
        tracing::info!(sync = %setup.sync.name, interrupted, "Earlier runs were interrupted; their unfinished rows are picked up now.");
    }
    let _ = store
        .prune_runs(chrono::Utc::now() - retention)
        .await
        .map_err(|error| {
            tracing::warn!(%error, "Could not remove old runs; trying again at the next run.");
        });
    if let Some(kept_for) = request_log_retention {
        let _ = store
            .prune_stripe_exchanges(chrono::Utc::now() - kept_for)
            .await
            .map_err(|error| {
                tracing::warn!(%error, "Could not remove old Stripe requests; trying again at the next run.");
            });
    }
    let run = store
        .create_run(&setup.sync.name, options.full_resync)
        .await?;
    tracing::Span::current().record("run", tracing::field::display(&run.id));
    alerts::run_started(store, &setup.sync, &run).await;
    if let Some(on_start) = &options.on_start {
        on_start(run.id.clone());
    }
    let request_log = request_log_retention.map(|_| Arc::new(request_log::RequestLog::default()));
    let stripe = shared_budget::stripe_service(store, &setup.stripe, request_log.clone())?;
    let mut counts = RunCounts::default();
    let lock_held = || lock.is_still_held();
    let object = ferry_destinations::stripe::stripe_object(setup.sync.spec.object);
    let execution = Execution {
        store,
        stripe: &stripe,
        object,
        sync_name: &setup.sync.name,
        sync_uid: &setup.sync.uid,
        run_id: &run.id,
        progress: options.progress.clone(),
        cancel: options.cancel.clone(),
        lock_held: &lock_held,
        mirror: setup.sync.spec.mirror,
        finalize: setup
            .sync
            .spec
            .invoice
            .as_ref()
            .map(|invoice| invoice.finalize)
            .unwrap_or_default(),
        reissue_finalized: setup
            .sync
            .spec
            .invoice
            .as_ref()
            .is_some_and(|invoice| invoice.reissue_finalized),
        key_field: &setup.sync.spec.key.field,
        request_log: request_log.as_deref(),
    };
    let heartbeat = heartbeat(store, &run.id);
    let rows_read = std::sync::atomic::AtomicU64::new(0);
    let rows_folded = std::sync::atomic::AtomicU64::new(0);
    let (warehouse_diff, mut spec_error) = match run::warehouse_diff_spec(setup) {
        Ok(spec) => (spec, None),
        Err(error) => (None, Some(error)),
    };
    let result = {
        let warehouse_diff = warehouse_diff.as_ref();
        let pipeline = Pipeline {
            store,
            setup,
            stripe: &stripe,
            full_resync: options.full_resync,
            cancel: &options.cancel,
            rows_read: &rows_read,
            rows_folded: &rows_folded,
            warehouse_diff,
            creates_tables: true,
            allow_mass_retire: options.allow_mass_retire,
        };
        let mut committer = Committer::new(&execution, &mut counts);
        if let Some(spec) = warehouse_diff {
            committer.acknowledge_in(ferry_source::warehouse_diff::Acknowledger::new(
                &setup.source,
                spec,
            ));
        }
        let mut sink = RunSink {
            exec: &execution,
            committer,
            on_plan: options.on_plan.as_ref(),
            chunks_sent: 0,
        };
        let driven = async {
            // A sync that no longer fits its model fails like any other problem of the run.
            if let Some(error) = spec_error.take() {
                return Err(error);
            }
            pipeline.drive(&mut sink).await
        };
        let outcome = tokio::select! {
            outcome = driven => outcome,
            never = heartbeat => match never {},
            // A stop request normally ends the pipeline within its grace; whatever still waits
            // then (a silent server, a slow lookup) is abandoned here.
            () = stopped_after_grace(&options.cancel) => {
                Ok((Ending::Cancelled, rows_read.load(std::sync::atomic::Ordering::Relaxed)))
            }
        };
        // Rows the run never reached (stopped, lock lost, failed) are counted as such.
        match outcome {
            Ok((ending, rows)) => {
                let flushed = sink.committer.flush().await;
                let counts = *sink.committer.counts();
                drop(sink);
                flushed.map(|()| (ending, rows, counts))
            }
            Err(error) => {
                let _ = sink.committer.flush().await;
                Err(error)
            }
        }
    };
    let (status, error) = match &result {
        Ok((Ending::Completed, _, _)) => (RunStatus::Completed, None),
        Ok((Ending::Cancelled, _, _)) => {
            (RunStatus::Cancelled, Some("stopped by request".to_string()))
        }
        Err(e) => (RunStatus::Failed, Some(e.to_string())),
    };
    counts.rows = match &result {
        Ok((_, rows, _)) => *rows,
        Err(_) => rows_read.load(std::sync::atomic::Ordering::Relaxed),
    };
    // The further lines of an invoice are one record with its first: counted in its outcome.
    let folded = rows_folded.load(std::sync::atomic::Ordering::Relaxed);
    counts.not_attempted += counts.rows.saturating_sub(counts.outcomes_total() + folded);
    counts.requests = stripe.http().requests_sent();
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
             up its unfinished rows; creates look their key up, then replay their saved \
             idempotency keys, so nothing is created twice."
        );
        return Err(e.into());
    }
    // Judged under the sync's lock, so two runs never raise the same alert twice.
    match store.get_run(&run.id).await {
        Ok(Some(finished)) => alerts::run_finished(store, &setup.sync, &finished).await,
        Ok(None) => {}
        Err(error) => tracing::warn!(%error, "Could not read the run back to judge its alerts."),
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
        not_attempted = counts.not_attempted,
        "Sync run finished."
    );
    Ok(RunReport {
        run_id: run.id,
        status,
        counts,
        error,
    })
}

/// Ends as `interrupted` the runs recorded `running` whose process is gone (their sync's lock
/// is free): they are finished when last seen alive. Called by whatever shows runs, so a dead
/// run does not stay `running` until its sync runs again. Returns how many were ended.
pub async fn reap_dead_runs(store: &StateStore, sync: Option<&str>) -> Result<u64, EngineError> {
    let running: Vec<String> = store
        .list_runs(sync, 200)
        .await?
        .into_iter()
        .filter(|run| run.status == RunStatus::Running)
        .map(|run| run.sync)
        .collect();
    let mut ended = 0;
    let mut checked = std::collections::HashSet::new();
    for name in running {
        if !checked.insert(name.clone()) {
            continue;
        }
        let Some(record) = store.get_sync(&name).await? else {
            continue;
        };
        if store.sync_is_running(&record).await? {
            continue;
        }
        // The lock was free a moment ago; take it to mark the runs, so that a run starting
        // right now is not marked (it would find the lock held and wait its short turn).
        let Ok(lock) = store.lock_sync(&record).await else {
            continue;
        };
        let marked = store.mark_interrupted_runs(&name).await;
        lock.release().await;
        ended += marked?;
    }
    Ok(ended)
}

/// How long finished runs and their records are kept by default; each sync keeps its newest run
/// always.
pub const RUN_RETENTION: chrono::TimeDelta = chrono::TimeDelta::days(30);
/// The environment variable that sets how many days runs are kept, for every door (`ferry sync
/// run`, `ferry serve`'s runs and schedules): 0 keeps only each sync's newest run.
pub const RUN_RETENTION_VARIABLE: &str = "FERRY_RUN_RETENTION_DAYS";
/// The most days runs may be kept: ten years.
const MAX_RUN_RETENTION_DAYS: u32 = 3_650;

/// How long runs are kept: [`RUN_RETENTION_VARIABLE`] when set, else [`RUN_RETENTION`]. A
/// value that is not a number of days refuses the run, naming the variable and the fix.
pub fn run_retention() -> Result<chrono::TimeDelta, EngineError> {
    days_from_env(
        RUN_RETENTION_VARIABLE,
        RUN_RETENTION,
        MAX_RUN_RETENTION_DAYS,
        "keep only each sync's newest run",
        "keep runs",
    )
}

/// How long each record's Stripe requests are kept by default (the record's debugger).
pub const REQUEST_LOG_RETENTION: chrono::TimeDelta = chrono::TimeDelta::days(7);
/// The environment variable that sets how many days records' Stripe requests are kept: 0 keeps
/// none (and the runs log none).
pub const REQUEST_LOG_RETENTION_VARIABLE: &str = "FERRY_REQUEST_LOG_DAYS";
/// The most days records' requests may be kept.
const MAX_REQUEST_LOG_DAYS: u32 = 365;

/// How long records' Stripe requests are kept: None when [`REQUEST_LOG_RETENTION_VARIABLE`] is
/// 0 (no request is logged). A value that is not a number of days refuses the run, naming the
/// variable and the fix.
pub fn request_log_retention() -> Result<Option<chrono::TimeDelta>, EngineError> {
    let kept_for = days_from_env(
        REQUEST_LOG_RETENTION_VARIABLE,
        REQUEST_LOG_RETENTION,
        MAX_REQUEST_LOG_DAYS,
        "keep no request",
        "keep each record's Stripe requests",
    )?;
    Ok((kept_for > chrono::TimeDelta::zero()).then_some(kept_for))
}

/// A number of days from `variable` (0 to `max`), `default` when unset or empty; anything else
/// refuses, naming the variable, what 0 means and the default.
fn days_from_env(
    variable: &str,
    default: chrono::TimeDelta,
    max: u32,
    zero_means: &str,
    default_does: &str,
) -> Result<chrono::TimeDelta, EngineError> {
    let text = std::env::var(variable).unwrap_or_default();
    if text.trim().is_empty() {
        return Ok(default);
    }
    text.trim()
        .parse::<u32>()
        .ok()
        .filter(|days| *days <= max)
        .map(|days| chrono::TimeDelta::days(i64::from(days)))
        .ok_or_else(|| {
            EngineError::Config(format!(
                "{variable} is `{text}`: give a whole number of days between 0 ({zero_means}) \
                 and {max}, or unset it to {default_does} {} days",
                default.num_days()
            ))
        })
}

/// How often a running run says it is alive.
const HEARTBEAT_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// How long after a stop request a run still running is abandoned: the executor's own grace
/// for requests in flight, and a little more.
const HARD_STOP_AFTER: std::time::Duration = std::time::Duration::from_secs(8);

/// Resolves [`HARD_STOP_AFTER`] after `cancel` is set.
async fn stopped_after_grace(cancel: &AtomicBool) {
    while !cancel.load(std::sync::atomic::Ordering::Relaxed) {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    tokio::time::sleep(HARD_STOP_AFTER).await;
}

/// Records every [`HEARTBEAT_EVERY`] that the run is alive, so that a run whose process died
/// is recorded as interrupted at the time it was last seen. Never returns.
async fn heartbeat(store: &StateStore, run_id: &str) -> std::convert::Infallible {
    loop {
        tokio::time::sleep(HEARTBEAT_EVERY).await;
        if let Err(error) = store.touch_run(run_id).await {
            tracing::debug!(%error, "Could not record the run's heartbeat.");
        }
    }
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
        Outcome::Retired => counts.retired,
    }
}
