//! Scheduled runs. Every tick, each sync whose schedule says a run is due is started through the
//! run registry, exactly as if someone pressed "Run". A sync that is already running (in this
//! server or in another process holding its lock) is skipped until a later tick.

use crate::AppState;
use ferry_core::RunStatus;
use std::time::Duration;

/// How often due schedules are looked for, unless `ServerOptions` says otherwise.
pub const DEFAULT_TICK: Duration = Duration::from_secs(20);

pub async fn run_scheduler(state: AppState, tick: Duration) {
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        if let Err(problem) = start_due_runs(&state).await {
            tracing::warn!(%problem, "Looking for scheduled syncs failed; trying again at the next tick.");
        }
    }
}

async fn start_due_runs(state: &AppState) -> Result<(), ferry_state::StateError> {
    let now = chrono::Utc::now();
    for sync in state.store().list_syncs().await? {
        let Some(schedule) = sync.spec.schedule else {
            continue;
        };
        let last = state
            .store()
            .list_runs(Some(&sync.name), 1)
            .await?
            .into_iter()
            .next();
        if last
            .as_ref()
            .is_some_and(|run| run.status == RunStatus::Running)
        {
            continue;
        }
        if schedule.next_due(last.map(|run| run.started_at), now) > now {
            continue;
        }
        match state
            .runs()
            .start(state.store().clone(), &sync.name, false)
            .await
        {
            Ok(run_id) => {
                tracing::info!(sync = %sync.name, run = %run_id, %schedule, "Started a scheduled run.")
            }
            Err(error) => {
                tracing::warn!(sync = %sync.name, problem = %error.message, "A scheduled run could not start; trying again at the next tick.")
            }
        }
    }
    Ok(())
}
