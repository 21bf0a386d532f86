//! Runs started from the API or the UI: each runs `ferry_engine::run_sync` in a background task,
//! exactly as `ferry sync run` does in the foreground, with its live progress kept here for
//! the run page and the status endpoint. The run's record in the workspace is the truth; this
//! only adds "how far along" while it runs.

use crate::error::ApiError;
use ferry_core::{Outcome, RunCounts};
use ferry_engine::RunOptions;
use ferry_state::StateStore;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::task::JoinHandle;

#[derive(Default)]
pub struct RunRegistry {
    live: Arc<Mutex<HashMap<String, LiveRun>>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

#[derive(Clone)]
struct LiveRun {
    /// Rows read from the model, known once the plan is; `u64::MAX` until then.
    planned: Arc<AtomicU64>,
    counts: Arc<Mutex<RunCounts>>,
    cancel: Arc<AtomicBool>,
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

impl RunRegistry {
    /// Starts a run in the background and returns its id once the run holds the sync's lock and
    /// is recorded. A sync that is already running is refused (409), like the CLI refuses.
    pub async fn start(
        &self,
        store: StateStore,
        sync: &str,
        full_resync: bool,
        allow_mass_retire: bool,
    ) -> Result<String, ApiError> {
        let setup = ferry_engine::load_sync_setup(&store, sync).await?;
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
        let (failed_tx, failed_rx) = tokio::sync::oneshot::channel::<ApiError>();
        let task = tokio::spawn(async move {
            let requested_at = std::time::Instant::now();
            let result = ferry_engine::run_sync(&store, &setup, &options).await;
            let started = started_id.lock().expect("run id lock").take();
            if let Some(run_id) = &started {
                registry.lock().expect("run registry lock").remove(run_id);
            }
            // Counted here, where every run the server starts ends (the API's, the UI's and the
            // scheduler's alike).
            match (result, started) {
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
                    let _ = failed_tx.send(ApiError::from(error));
                }
            }
        });
        {
            let mut tasks = self.tasks.lock().expect("tasks lock");
            tasks.retain(|t| !t.is_finished());
            tasks.push(task);
        }
        tokio::select! {
            Ok(run_id) = started_rx => Ok(run_id),
            Ok(error) = failed_rx => Err(error),
            else => Err(ApiError::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the run stopped before it started; the server log has the details",
            )),
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

    /// Asks a live run to stop cleanly; `false` when it is not running in this server.
    pub fn cancel(&self, run_id: &str) -> bool {
        match self.live.lock().expect("run registry lock").get(run_id) {
            Some(run) => {
                run.cancel.store(true, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// On shutdown: asks every run to stop and waits for them to record how they ended.
    pub async fn stop_all(&self) {
        for run in self.live.lock().expect("run registry lock").values() {
            run.cancel.store(true, Ordering::Relaxed);
        }
        let tasks: Vec<_> = std::mem::take(&mut *self.tasks.lock().expect("tasks lock"));
        for task in tasks {
            let _ = task.await;
        }
    }
}
