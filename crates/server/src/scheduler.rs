//! Scheduled runs. Every tick, each sync whose schedule says a run is due (and that is not
//! paused) is started through the run registry, exactly as if someone pressed "Run". The sync's
//! lock decides whether it may start: a sync running here or in another process is skipped until
//! a later tick, and a run left "running" by a process that died does not block it (the engine
//! marks that run interrupted when the next one takes the lock). A run that cannot start (its
//! model's connection removed, a secret gone) is recorded as a failed run with the reason.

use crate::run_registry::StartOutcome;
use crate::AppState;
use chrono::{DateTime, Utc};
use ferry_core::{RunCounts, RunStatus};
use std::time::Duration;

/// How often due schedules are looked for, unless `ServerOptions` says otherwise.
pub const DEFAULT_TICK: Duration = Duration::from_secs(20);

/// A scheduled run that keeps failing to start is tried at every tick; its warning is repeated
/// at most this often (and when the problem changes), the rest go to the debug level.
pub const REPEATED_WARNING_INTERVAL: Duration = Duration::from_secs(10 * 60);

/// The throttle's key for problems that are not one sync's.
const ALL_SYNCS: &str = "";

pub async fn run_scheduler(state: AppState, tick: Duration) {
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        // A run whose process died is recorded interrupted within a tick, not at its next run.
        if let Err(problem) = ferry_engine::reap_dead_runs(state.store(), None).await {
            tracing::debug!(%problem, "Looking for dead runs failed; trying again at the next tick.");
        }
        if let Err(problem) = crate::sequences::start_due_sequences(&state, Utc::now()).await {
            tracing::debug!(%problem, "Looking for scheduled sequences failed; trying again at the next tick.");
        }
        match start_due_runs(&state, Utc::now()).await {
            Ok(_) => state.scheduler_warnings().clear(&ALL_SYNCS.to_string()),
            Err(problem) => {
                if state
                    .scheduler_warnings()
                    .should_warn(&ALL_SYNCS.to_string(), &problem.to_string())
                {
                    tracing::warn!(%problem, "Looking for scheduled syncs failed; trying again at every tick (repeats are logged at debug level).");
                } else {
                    tracing::debug!(%problem, "Looking for scheduled syncs failed again.");
                }
            }
        }
    }
}

/// How often the server sends the alert channels' deliveries that are due: events of runs
/// that just ended, and those waiting to be tried again.
pub const DELIVERY_TICK: Duration = Duration::from_secs(2);

/// Sends due deliveries at every tick, for as long as the server runs.
pub async fn run_deliveries(state: AppState, tick: Duration) {
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        if let Err(problem) = ferry_engine::alerts::deliver_due(state.store()).await {
            if state
                .scheduler_warnings()
                .should_warn(&"deliveries".to_string(), &problem.to_string())
            {
                tracing::warn!(%problem, "Sending alert deliveries failed; trying again at every tick (repeats are logged at debug level).");
            } else {
                tracing::debug!(%problem, "Sending alert deliveries failed again.");
            }
        }
    }
}

/// Starts the runs due at `now`; returns the ids of the runs started, and of those that could not
/// start and were recorded failed.
pub(crate) async fn start_due_runs(
    state: &AppState,
    now: DateTime<Utc>,
) -> Result<Vec<String>, ferry_state::StateError> {
    let mut started = Vec::new();
    for sync in state.store().list_syncs().await? {
        let last_start = state
            .store()
            .list_runs(Some(&sync.name), 1)
            .await?
            .into_iter()
            .next()
            .map(|run| run.started_at);
        let Some(due) = sync.next_scheduled_run(last_start, now) else {
            continue;
        };
        if due > now {
            continue;
        }
        let schedule = sync.spec.schedule.as_ref().map(ToString::to_string);
        let schedule = schedule.as_deref().unwrap_or_default();
        // Every server on the workspace sees the same due time; the queue keeps one request
        // per sync and due time, whichever server queued it first.
        let dedupe_key = format!("schedule {} {}", sync.uid, due.to_rfc3339());
        match state
            .runs()
            .start(
                state.store().clone(),
                &sync.name,
                false,
                false,
                "schedule",
                Some(dedupe_key),
            )
            .await
        {
            Ok(StartOutcome::Started(run_id)) => {
                tracing::info!(sync = %sync.name, run = %run_id, %schedule, "Started a scheduled run.");
                state.scheduler_warnings().clear(&sync.name);
                started.push(run_id);
            }
            Ok(StartOutcome::Queued(request)) => {
                tracing::info!(sync = %sync.name, request = %request.id, %schedule, "A scheduled run is due; it waits in the queue for a server with room.");
            }
            Ok(StartOutcome::AlreadyQueued) => {
                tracing::debug!(sync = %sync.name, "A scheduled run is due; another server queued it.");
            }
            Err(error) if error.status == axum::http::StatusCode::CONFLICT => {
                tracing::debug!(sync = %sync.name, "A scheduled run is due, but the sync is running.");
            }
            Err(error) => {
                // A run that could not start is a failed run in the history, where whoever
                // watches the sync looks (and what alerts count); it also moves the schedule on,
                // so the next attempt is the next scheduled time, not every tick.
                let problem = format!("the scheduled run could not start: {}", error.message);
                let recorded = match state.store().create_run(&sync.name, false).await {
                    Ok(run) => state
                        .store()
                        .finish_run(
                            &run.id,
                            RunStatus::Failed,
                            &RunCounts::default(),
                            Some(&problem),
                        )
                        .await
                        .map(|()| run.id),
                    Err(store_error) => Err(store_error),
                };
                match recorded {
                    Ok(run_id) => {
                        if let Ok(Some(run)) = state.store().get_run(&run_id).await {
                            ferry_engine::alerts::run_finished(state.store(), &sync, &run).await;
                        }
                        crate::metrics::global().run_ended(
                            &sync.name,
                            RunStatus::Failed,
                            &RunCounts::default(),
                            Duration::ZERO,
                        );
                        tracing::warn!(sync = %sync.name, run = %run_id, problem = %error.message, "A scheduled run could not start; it is recorded as a failed run.");
                        started.push(run_id);
                    }
                    Err(store_error) => {
                        if state
                            .scheduler_warnings()
                            .should_warn(&sync.name, &error.message)
                        {
                            tracing::warn!(sync = %sync.name, problem = %error.message, %store_error, "A scheduled run could not start, nor be recorded as failed; trying again at every tick (repeats are logged at debug level).");
                        } else {
                            tracing::debug!(sync = %sync.name, problem = %error.message, "A scheduled run still cannot start.");
                        }
                    }
                }
            }
        }
    }
    Ok(started)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_core::{
        Behavior, FieldMapping, KeyMapping, NullPolicy, ObjectKind, Schedule, SyncSpec,
    };
    use ferry_engine::declare;
    use ferry_state::{SecretInput, StateStore, WorkspaceOptions};
    use ferry_stripe_emulator::{Emulator, EmulatorConfig, RateLimits, TEST_API_KEY};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_due_schedule_starts_one_run_and_the_next_waits_a_whole_interval() {
        let (_dir, store, emulator) = workspace_with_a_scheduled_sync(true).await;
        let saved = store.get_sync("people").await.unwrap().unwrap();
        let state = AppState::new(store.clone(), false);

        // Just saved: not due, so there is time to preview.
        assert!(start_due_runs(&state, Utc::now()).await.unwrap().is_empty());
        // Ten minutes after saving it is due, once.
        let later = saved.updated_at + chrono::Duration::minutes(10);
        let started = start_due_runs(&state, later).await.unwrap();
        assert_eq!(started.len(), 1);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let run = store.get_run(&started[0]).await.unwrap().unwrap();
            if run.status != ferry_core::RunStatus::Running {
                assert_eq!(run.status, ferry_core::RunStatus::Completed, "{run:?}");
                assert_eq!(run.counts.created, 3);
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the scheduled run did not finish"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(emulator.handle().customers().len(), 3);
        // A scheduled run is counted for /metrics like any other (once its task has ended,
        // just after the run recorded its end).
        let counted = "ferry_runs_total{sync=\"people\",status=\"completed\"}";
        while !crate::metrics::global().render().contains(counted) {
            assert!(
                std::time::Instant::now() < deadline,
                "the scheduled run was not counted:\n{}",
                crate::metrics::global().render()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The next run is due ten minutes after this one started, not before.
        let run = store.get_run(&started[0]).await.unwrap().unwrap();
        let too_soon = run.started_at + chrono::Duration::minutes(9);
        assert!(start_due_runs(&state, too_soon).await.unwrap().is_empty());
        let next = start_due_runs(&state, run.started_at + chrono::Duration::minutes(10))
            .await
            .unwrap();
        assert_eq!(next.len(), 1, "due again one interval after the last start");
        state.runs().stop_all().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_paused_schedule_starts_nothing_and_resumes_a_whole_interval_later() {
        let (_dir, store, _emulator) = workspace_with_a_scheduled_sync(true).await;
        let state = AppState::new(store.clone(), false);
        let saved = store.get_sync("people").await.unwrap().unwrap();
        store.set_sync_paused("people", true).await.unwrap();
        let long_after = saved.updated_at + chrono::Duration::hours(5);
        assert!(start_due_runs(&state, long_after).await.unwrap().is_empty());
        assert!(store
            .list_runs(Some("people"), 10)
            .await
            .unwrap()
            .is_empty());

        let resumed = store
            .set_sync_paused("people", false)
            .await
            .unwrap()
            .unwrap();
        let resumed_at = resumed.resumed_at.unwrap();
        // The runs skipped while paused are not caught up on.
        let just_after = resumed_at + chrono::Duration::minutes(1);
        assert!(start_due_runs(&state, just_after).await.unwrap().is_empty());
        assert_eq!(
            resumed.next_scheduled_run(None, just_after),
            Some(resumed_at + chrono::Duration::minutes(10))
        );
        let started = start_due_runs(&state, resumed_at + chrono::Duration::minutes(10))
            .await
            .unwrap();
        assert_eq!(started.len(), 1);
        state.runs().stop_all().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_scheduled_run_that_cannot_start_is_a_failed_run_once_per_due_time() {
        // The Stripe key is read from a variable this process does not have.
        let (_dir, store, emulator) = workspace_with_a_scheduled_sync(false).await;
        let state = AppState::new(store.clone(), false);
        let saved = store.get_sync("people").await.unwrap().unwrap();
        let due = saved.updated_at + chrono::Duration::minutes(10);
        let recorded = start_due_runs(&state, due).await.unwrap();
        assert_eq!(recorded.len(), 1);
        let run = store.get_run(&recorded[0]).await.unwrap().unwrap();
        assert_eq!(run.status, ferry_core::RunStatus::Failed);
        let error = run.error.unwrap();
        assert!(
            error.starts_with("the scheduled run could not start: ")
                && error.contains("FERRY_TEST_SCHEDULER_UNSET_KEY"),
            "{error}"
        );
        // The failure moved the schedule on: the next tick does not record another one.
        assert!(
            start_due_runs(&state, run.started_at + chrono::Duration::minutes(1))
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(store.list_runs(Some("people"), 10).await.unwrap().len(), 1);
        assert!(emulator.handle().customers().is_empty());
        // Counted as a failed run for /metrics (and whatever alerts on it).
        let rendered = crate::metrics::global().render();
        assert!(
            rendered.contains("ferry_runs_total{sync=\"people\",status=\"failed\"}"),
            "{rendered}"
        );
    }

    /// A workspace with a sync `people` (3 rows) scheduled `every 10m`; its Stripe key is
    /// stored, or read from an unset variable when `key_stored` is false.
    async fn workspace_with_a_scheduled_sync(
        key_stored: bool,
    ) -> (tempfile::TempDir, StateStore, Emulator) {
        let dir = tempfile::tempdir().unwrap();
        let warehouse = dir.path().join("warehouse.duckdb");
        ferry_source::duckdb_execute(
            &warehouse,
            "create table people as select 'p' || i || '@example.com' as email from range(3) t(i)",
        )
        .unwrap();
        let emulator = Emulator::start(EmulatorConfig {
            rate_limits: RateLimits::disabled(),
            ..EmulatorConfig::default()
        })
        .await
        .unwrap();
        let store = StateStore::initialize(&WorkspaceOptions::in_dir(dir.path().join("ws")))
            .await
            .unwrap();
        let settings = declare::StripeSettings {
            api_base: Some(emulator.url()),
            ..Default::default()
        };
        let key = if key_stored {
            SecretInput::Value(ferry_core::Secret::new(TEST_API_KEY))
        } else {
            SecretInput::EnvVar("FERRY_TEST_SCHEDULER_UNSET_KEY".into())
        };
        declare::save_connection(
            &store,
            &declare::stripe_connection("stripe", key, &settings),
            key_stored,
        )
        .await
        .unwrap();
        declare::save_connection(
            &store,
            &declare::duckdb_connection("warehouse", &warehouse, &Default::default()),
            true,
        )
        .await
        .unwrap();
        declare::save_model(&store, "people", "warehouse", "select email from people")
            .await
            .unwrap();
        let spec = SyncSpec {
            invoice: None,
            model: "people".into(),
            destination: "stripe".into(),
            object: ObjectKind::Customer,
            behavior: Behavior::UpdateOrCreate,
            key: KeyMapping {
                column: "email".into(),
                field: "email".into(),
            },
            mappings: Vec::<FieldMapping>::new(),
            nulls: NullPolicy::Skip,
            schedule: Some(Schedule::parse("every 10m").unwrap()),
            alerts: None,
            mirror: Default::default(),
        };
        store.put_sync("people", &spec).await.unwrap();
        (dir, store, emulator)
    }
}
