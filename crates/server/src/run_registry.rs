//! Runs started by the server: every run asked for (through the API or the UI, or due on a
//! schedule) is first a request in the workspace's run queue, and whichever `ferry serve`
//! process on the workspace has room claims it and runs `ferry_engine::run_sync` in a background
//! task, exactly as `ferry sync run` does in the foreground. A claim is a lease the process renews
//! while the run lasts; a process that dies stops renewing it, and another one claims the request
//! again within [`RUN_LEASE`] and resumes the run (the engine marks the dead one interrupted and
//! its journal keeps the rerun from creating anything twice). The run's live progress is kept
//! here for the run page and the status endpoint; the run's record in the workspace is the truth.

use crate::error::ApiError;
use ferry_core::{Outcome, RunCounts};
use ferry_engine::{EngineError, RunOptions};
use ferry_state::{NewRunRequest, RunRefusal, RunRequest, StateError, StateStore};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// How long a claim lasts unless renewed: a worker that dies mid-run has its run picked up by
/// another within this (plus a claim tick).
pub const RUN_LEASE: Duration = Duration::from_secs(15);
/// How often a running run's lease is renewed (and a cancel asked through another process seen).
const RENEW_EVERY: Duration = Duration::from_secs(5);
/// How often the queue is looked at when nothing woke the claimer.
pub const CLAIM_TICK: Duration = Duration::from_secs(1);
/// How long a request for a run waits for it to start before it answers "queued".
const START_WAIT: Duration = Duration::from_secs(10);
/// A resumed run whose sync is still locked (its old holder not yet gone) is tried again after this.
const BUSY_RETRY: Duration = Duration::from_secs(5);
/// Runs one server process holds at once unless `ferry serve --max-runs` says otherwise; the
/// rest wait in the queue for this process or another.
pub const DEFAULT_MAX_RUNS: usize = 8;

pub struct RunRegistry {
    live: Arc<Mutex<HashMap<String, LiveRun>>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// This process's name in the queue's claims: host, process id and a random part.
    worker: String,
    max_runs: usize,
    running: Arc<AtomicUsize>,
    /// Wakes the claimer: a request was queued here, or a run ended and made room.
    wake: Arc<Notify>,
    /// One claim at a time in this process, so that `max_runs` holds.
    claiming: tokio::sync::Mutex<()>,
    /// The runs this process stopped because it is shutting down: their requests go back to
    /// the queue instead of being finished, so another server (or this one, restarted) resumes
    /// them.
    handed_off: Arc<Mutex<std::collections::HashSet<String>>>,
}

impl Default for RunRegistry {
    fn default() -> Self {
        RunRegistry::new(DEFAULT_MAX_RUNS)
    }
}

#[derive(Clone)]
struct LiveRun {
    /// Rows read from the model, known once the plan is; `u64::MAX` until then.
    planned: Arc<AtomicU64>,
    counts: Arc<Mutex<RunCounts>>,
    cancel: Arc<AtomicBool>,
}

/// How a request for a run went.
#[derive(Debug)]
pub enum StartOutcome {
    /// The run started (here or in another server process); its id.
    Started(String),
    /// Every server is busy: the run waits in the queue and starts when one has room.
    Queued(Box<RunRequest>),
    /// The same scheduled run was already queued (by another server process).
    AlreadyQueued,
}

/// How far a running run is.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct LiveProgress {
    /// Rows the model returned; absent while the model is still being read and planned.
    pub rows: Option<u64>,
    /// Rows that reached an outcome so far.
    pub done: u64,
    pub counts: RunCounts,
    pub cancel_requested: bool,
}

/// Why a claimed request did not start.
struct LaunchRefused {
    error: ApiError,
    /// The sync is locked by a run still going (or by a dead worker's session not yet closed).
    sync_busy: bool,
}

impl RunRegistry {
    pub fn new(max_runs: usize) -> RunRegistry {
        RunRegistry {
            live: Arc::default(),
            tasks: Mutex::default(),
            worker: worker_name(),
            max_runs: max_runs.max(1),
            running: Arc::default(),
            wake: Arc::default(),
            claiming: tokio::sync::Mutex::new(()),
            handed_off: Arc::default(),
        }
    }

    /// Asks for a run of `sync`: queues it, claims it here if this process has room, and waits
    /// a little for it to start (here or in another server process on the workspace). A refusal
    /// (the sync already running, its connection unusable, …) comes back as the API error. With
    /// `dedupe_key`, a request another process already queued under the same key is not repeated.
    pub async fn start(
        &self,
        store: StateStore,
        sync: &str,
        full_resync: bool,
        allow_mass_retire: bool,
        reason: &str,
        dedupe_key: Option<String>,
    ) -> Result<StartOutcome, ApiError> {
        // A sync that a server runs now refuses at once, without a turn in the queue: a storm
        // of starts (a script retrying, a double click) is answered in milliseconds instead of
        // being claimed and refused one after the other.
        let running_now = store
            .pending_run_requests()
            .await?
            .into_iter()
            .any(|request| {
                request.sync == sync && request.run_id.is_some() && request.claimed_by.is_some()
            });
        if running_now {
            return Err(ApiError::from(EngineError::State(StateError::SyncLocked {
                sync: sync.to_string(),
            })));
        }
        let queued = store
            .enqueue_run(&NewRunRequest {
                sync: sync.to_string(),
                reason: reason.to_string(),
                full_resync,
                allow_mass_retire,
                dedupe_key,
            })
            .await?;
        let Some(request) = queued else {
            return Ok(StartOutcome::AlreadyQueued);
        };
        // Usually this process has room and claims it at once (the queue is oldest first, so
        // it may claim an older request instead; the claimer takes ours at its next turn).
        while self.claim_next(&store).await? {}
        self.wake.notify_one();
        let deadline = Instant::now() + START_WAIT;
        loop {
            let Some(current) = store.get_run_request(&request.id).await? else {
                return Err(ApiError::not_found(format!(
                    "the run of sync '{sync}' was removed from the queue with its sync"
                )));
            };
            if let Some(run_id) = current.run_id {
                return Ok(StartOutcome::Started(run_id));
            }
            if let Some(refusal) = current.refusal {
                return Err(ApiError::new(
                    axum::http::StatusCode::from_u16(refusal.status)
                        .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR),
                    crate::error::static_code(&refusal.code),
                    refusal.message,
                ));
            }
            if Instant::now() >= deadline {
                return Ok(StartOutcome::Queued(Box::new(current)));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Has the claimer look at the queue now (a request was queued without [`Self::start`]).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Claims the next request of the queue if this process has room, and starts its run.
    /// Returns whether it claimed one (so that a caller can drain the queue).
    pub async fn claim_next(&self, store: &StateStore) -> Result<bool, StateError> {
        let _turn = self.claiming.lock().await;
        if self.running.load(Ordering::SeqCst) >= self.max_runs {
            return Ok(false);
        }
        let Some(request) = store.claim_run_request(&self.worker, RUN_LEASE).await? else {
            return Ok(false);
        };
        if request.claims > 1 {
            tracing::info!(sync = %request.sync, request = %request.id, previous_run = ?request.run_id, "Resuming a run whose server stopped renewing its claim.");
        }
        match self.launch(store.clone(), &request).await {
            Ok(run_id) => {
                store
                    .run_request_started(&request.id, &self.worker, &run_id)
                    .await?;
            }
            // The run of a worker that died: its session (and the sync's lock) may take a
            // moment to close. Another look shortly, rather than a refusal nobody waits for.
            Err(refused) if refused.sync_busy && request.claims > 1 => {
                store
                    .release_run_request(&request.id, &self.worker, BUSY_RETRY)
                    .await?;
            }
            Err(refused) => {
                let refusal = RunRefusal {
                    status: refused.error.status.as_u16(),
                    code: refused.error.code.to_string(),
                    message: refused.error.message.clone(),
                };
                store
                    .finish_run_request(&request.id, &self.worker, Some(&refusal))
                    .await?;
            }
        }
        Ok(true)
    }

    /// Claims queued runs for as long as the server runs: at every tick, and whenever a run is
    /// queued here or ends here.
    pub async fn claim_forever(&self, store: &StateStore) {
        let mut warned_at: Option<Instant> = None;
        loop {
            loop {
                match self.claim_next(store).await {
                    Ok(true) => continue,
                    Ok(false) => break,
                    Err(error) => {
                        if warned_at.is_none_or(|at| at.elapsed() > Duration::from_secs(60)) {
                            tracing::warn!(%error, "Could not claim queued runs; trying again every second (repeats within a minute are not logged).");
                            warned_at = Some(Instant::now());
                        }
                        break;
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(CLAIM_TICK) => {}
                _ = self.wake.notified() => {}
            }
        }
    }

    /// Starts the run a claimed request asks for in the background, and returns its id once the
    /// run holds the sync's lock and is recorded. While it runs, the request's lease is renewed
    /// (and a cancel asked through the workspace honoured); when it ends, the request is finished.
    async fn launch(
        &self,
        store: StateStore,
        request: &RunRequest,
    ) -> Result<String, LaunchRefused> {
        let sync = request.sync.as_str();
        let (full_resync, allow_mass_retire) = (request.full_resync, request.allow_mass_retire);
        let setup = ferry_engine::load_sync_setup(&store, sync)
            .await
            .map_err(|error| LaunchRefused {
                sync_busy: false,
                error: error.into(),
            })?;
        let live = LiveRun {
            planned: Arc::new(AtomicU64::new(u64::MAX)),
            counts: Arc::new(Mutex::new(RunCounts::default())),
            cancel: Arc::new(AtomicBool::new(false)),
        };
        let (started_tx, started_rx) = tokio::sync::oneshot::channel::<String>();
        let started_tx = Mutex::new(Some(started_tx));
        let registry = self.live.clone();
        let on_start_live = live.clone();
        // Remembered so that the entry is removed however the run ends, an error after the
        // start included.
        let started_id: Arc<Mutex<Option<String>>> = Arc::default();
        let started_id_set = started_id.clone();
        let on_start = Arc::new(move |run_id: String| {
            *started_id_set.lock().expect("run id lock") = Some(run_id.clone());
            registry
                .lock()
                .expect("run registry lock")
                .insert(run_id.clone(), on_start_live.clone());
            if let Some(tx) = started_tx.lock().expect("start lock").take() {
                let _ = tx.send(run_id);
            }
        });
        let progress_counts = live.counts.clone();
        let planned = live.planned.clone();
        let options = RunOptions {
            full_resync,
            allow_mass_retire,
            progress: Some(Arc::new(move |outcome: Outcome| {
                progress_counts.lock().expect("progress lock").add(outcome);
            })),
            on_plan: Some(Arc::new(move |rows: u64| {
                planned.store(rows, Ordering::Relaxed);
            })),
            cancel: live.cancel.clone(),
            on_start: Some(on_start),
        };
        let registry = self.live.clone();
        let sync_name = sync.to_string();
        let (failed_tx, failed_rx) = tokio::sync::oneshot::channel::<LaunchRefused>();
        let cancel = live.cancel.clone();
        let (request_id, worker) = (request.id.clone(), self.worker.clone());
        let running = self.running.clone();
        let wake = self.wake.clone();
        let handed_off = self.handed_off.clone();
        running.fetch_add(1, Ordering::SeqCst);
        let task = tokio::spawn(async move {
            let requested_at = Instant::now();
            // The claim is renewed by a task of its own: renewing from a branch of a `select!`
            // beside the run would stop polling the run while the renewal waits for the
            // workspace's session, which the run may hold mid-query (a deadlock).
            let renewal = {
                let (store, request_id, worker) =
                    (store.clone(), request_id.clone(), worker.clone());
                let cancel = cancel.clone();
                tokio::spawn(async move {
                    let mut every = tokio::time::interval(RENEW_EVERY);
                    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    every.tick().await;
                    loop {
                        every.tick().await;
                        renew(&store, &request_id, &worker, &cancel).await;
                    }
                })
            };
            let result = ferry_engine::run_sync(&store, &setup, &options).await;
            renewal.abort();
            let started = started_id.lock().expect("run id lock").take();
            if let Some(run_id) = &started {
                registry.lock().expect("run registry lock").remove(run_id);
            }
            // Counted here, where every run the server starts ends (the API's, the UI's and the
            // scheduler's alike).
            let started_ok = started.is_some();
            let handing_off = started
                .as_ref()
                .is_some_and(|run_id| handed_off.lock().expect("hand-off lock").contains(run_id));
            match (result, started) {
                (Ok(report), Some(run_id))
                    if handing_off && report.status == ferry_core::RunStatus::Cancelled =>
                {
                    // Stopped by this server's shutdown, not by a person: the run is recorded
                    // interrupted and its request goes back to the queue, where the next
                    // server to claim it resumes it (the journal keeps that from creating
                    // anything twice).
                    let reason = "the server running it shut down; another server, or this one once restarted, resumes it";
                    if let Err(error) = store
                        .finish_run(
                            &run_id,
                            ferry_core::RunStatus::Interrupted,
                            &report.counts,
                            Some(reason),
                        )
                        .await
                    {
                        tracing::warn!(run = %run_id, %error, "Could not record a run handed off at shutdown as interrupted; it stays cancelled.");
                    }
                    crate::metrics::global().run_ended(
                        &sync_name,
                        ferry_core::RunStatus::Interrupted,
                        &report.counts,
                        requested_at.elapsed(),
                    );
                    match store
                        .release_run_request(&request_id, &worker, Duration::ZERO)
                        .await
                    {
                        Ok(_) => {
                            tracing::info!(sync = %sync_name, run = %run_id, "Handed a run back to the queue at shutdown; the next server to claim it resumes it.");
                        }
                        Err(error) => {
                            tracing::warn!(run = %run_id, %error, "Could not hand a run back to the queue at shutdown; another server claims it once this one's lease runs out.");
                        }
                    }
                    running.fetch_sub(1, Ordering::SeqCst);
                    wake.notify_one();
                    return;
                }
                (Ok(report), _) => {
                    crate::metrics::global().run_ended(
                        &sync_name,
                        report.status,
                        &report.counts,
                        requested_at.elapsed(),
                    );
                }
                (Err(error), Some(run_id)) => {
                    tracing::warn!(sync = %sync_name, run = %run_id, problem = %error, "A run started from the server stopped with an error.");
                    // Its end could not be recorded, so its counts are unknown: a failure
                    // without records.
                    crate::metrics::global().run_ended(
                        &sync_name,
                        ferry_core::RunStatus::Failed,
                        &RunCounts::default(),
                        requested_at.elapsed(),
                    );
                }
                // Refused before it began: the caller (a request, the scheduler) gets the error
                // and says so. A refusal is routine (a sync already running refuses every other
                // start), so it is no warning: a burst of "Run" requests or scheduler ticks
                // would otherwise fill the log.
                (Err(error), None) => {
                    tracing::debug!(sync = %sync_name, problem = %error, "A run was not started.");
                    let sync_busy =
                        matches!(error, EngineError::State(StateError::SyncLocked { .. }));
                    let _ = failed_tx.send(LaunchRefused {
                        sync_busy,
                        error: ApiError::from(error),
                    });
                }
            }
            // A run that started finishes its request here; one refused before it began is
            // finished (or put back) by its claimer, which has the reason.
            if started_ok {
                if let Err(error) = store.finish_run_request(&request_id, &worker, None).await {
                    tracing::warn!(request = %request_id, %error, "Could not mark a queued run done; another server may resume it once its claim runs out.");
                }
            }
            running.fetch_sub(1, Ordering::SeqCst);
            wake.notify_one();
        });
        {
            let mut tasks = self.tasks.lock().expect("tasks lock");
            tasks.retain(|t| !t.is_finished());
            tasks.push(task);
        }
        tokio::select! {
            Ok(run_id) = started_rx => Ok(run_id),
            Ok(refused) = failed_rx => Err(refused),
            else => Err(LaunchRefused {
                sync_busy: false,
                error: ApiError::new(
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "the run stopped before it started; the server log has the details",
                ),
            }),
        }
    }

    pub fn progress(&self, run_id: &str) -> Option<LiveProgress> {
        let live = self.live.lock().expect("run registry lock");
        let run = live.get(run_id)?;
        let counts = *run.counts.lock().expect("progress lock");
        let rows = run.planned.load(Ordering::Relaxed);
        Some(LiveProgress {
            rows: (rows != u64::MAX).then_some(rows),
            done: counts.outcomes_total(),
            counts,
            cancel_requested: run.cancel.load(Ordering::Relaxed),
        })
    }

    /// Asks a live run to stop cleanly: at once when it runs in this server, else through the
    /// workspace, seen by the server running it at its next renewal. `false` when no server
    /// runs it.
    pub async fn cancel(&self, store: &StateStore, run_id: &str) -> Result<bool, StateError> {
        if let Some(run) = self.live.lock().expect("run registry lock").get(run_id) {
            run.cancel.store(true, Ordering::Relaxed);
            return Ok(true);
        }
        store.request_run_cancel(run_id).await
    }

    /// On shutdown: asks every run to stop, and waits for them to record how they ended. A
    /// run nobody asked to cancel is handed back to the queue, not ended: it stops sending, is
    /// recorded interrupted, and the next server to claim its request resumes it.
    pub async fn stop_all(&self) {
        for (run_id, run) in self.live.lock().expect("run registry lock").iter() {
            if !run.cancel.swap(true, Ordering::Relaxed) {
                self.handed_off
                    .lock()
                    .expect("hand-off lock")
                    .insert(run_id.clone());
            }
        }
        let tasks: Vec<_> = std::mem::take(&mut *self.tasks.lock().expect("tasks lock"));
        for task in tasks {
            let _ = task.await;
        }
    }
}

/// Renews a running run's claim, and passes on a cancel asked through another server.
async fn renew(store: &StateStore, request: &str, worker: &str, cancel: &AtomicBool) {
    match store.renew_run_request(request, worker, RUN_LEASE).await {
        Ok(Some(true)) => cancel.store(true, Ordering::Relaxed),
        Ok(Some(false)) => {}
        // Only after the lease ran out (the database was out of reach for that long): another
        // server may claim it, but cannot start it while this run holds the sync's lock.
        Ok(None) => {
            tracing::warn!(%request, "This server's claim on a running run ran out; the run goes on, holding its sync's lock.");
        }
        Err(error) => {
            tracing::debug!(%request, %error, "Could not renew the claim on a running run; trying again shortly.");
        }
    }
}

/// `host:pid:random`, so that the queue shows which process holds what.
fn worker_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .unwrap_or_else(|_| "host".to_string());
    format!(
        "{host}:{}:{:06x}",
        std::process::id(),
        rand::random::<u32>() & 0xff_ffff
    )
}
