//! Sequences run by the servers. A sequence run lives in the workspace; each step is a request in
//! the run queue (its dedupe key names the sequence run and the step, so it is queued once however
//! many servers look), claimed and run like any other. Every second each server looks at the
//! sequence runs still running and moves each one on as far as the queue allows: queue the
//! current step, note its run's id, and once the run ended ask [`ferry_core::after_step`] what
//! comes next. Each move is a compare-and-set on the sequence run's version, so when several
//! servers look at once exactly one moves it, and a server that dies between two moves leaves
//! nothing another cannot pick up at the next tick.

use crate::{ApiError, AppState};
use axum::http::StatusCode;
use ferry_core::{after_step, RunStatus, SequenceMove, SequenceRunStatus, StepResult};
use ferry_state::{
    NewRunRequest, NewSequenceRun, SequenceRunRecord, SequenceRunUpdate, StateError, StateStore,
};
use std::time::Duration;

/// How often the servers move running sequences on.
pub const SEQUENCE_TICK: Duration = Duration::from_secs(1);

/// Who drives a sequence run started by a server: the servers, through the run queue.
pub const QUEUE_DRIVER: &str = "queue";

/// The queue's dedupe key of a sequence run's step.
fn step_request_key(sequence_run: &str, step: usize) -> String {
    format!("sequence {sequence_run} step {step}")
}

/// Starts a run of sequence `name` (its first step is queued at once). Refused with 409 while a
/// run of the same sequence is still going. `Ok(None)` when `dedupe_key` was used already (a
/// scheduled run another server started).
pub async fn start(
    state: &AppState,
    name: &str,
    reason: &str,
    dedupe_key: Option<String>,
) -> Result<Option<SequenceRunRecord>, ApiError> {
    let store = state.store();
    if store.get_sequence(name).await?.is_none() {
        return Err(unknown_sequence(name));
    }
    if let Some(running) = running_run_of(store, name).await? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!(
                "sequence '{name}' is already running (run {}, step {} of {}); wait for it to end",
                running.id,
                running.step + 1,
                running.spec.steps.len()
            ),
        ));
    }
    let Some(run) = store
        .create_sequence_run(&NewSequenceRun {
            sequence: name.to_string(),
            reason: reason.to_string(),
            driver: QUEUE_DRIVER.to_string(),
            dedupe_key,
        })
        .await?
    else {
        return Ok(None);
    };
    tracing::info!(sequence = %name, sequence_run = %run.id, %reason, "Started a sequence.");
    move_on(state, run.clone()).await?;
    Ok(Some(store.get_sequence_run(&run.id).await?.unwrap_or(run)))
}

/// The run of sequence `name` still going, if one is.
pub async fn running_run_of(
    store: &StateStore,
    name: &str,
) -> Result<Option<SequenceRunRecord>, StateError> {
    Ok(store
        .running_sequence_runs()
        .await?
        .into_iter()
        .find(|run| run.sequence == name))
}

/// Refuses (409) to remove a sequence while it runs, saying how to stop it.
pub async fn refuse_removal_while_running(store: &StateStore, name: &str) -> Result<(), ApiError> {
    let Some(running) = running_run_of(store, name).await? else {
        return Ok(());
    };
    let current = running
        .run_ids
        .get(running.step as usize)
        .map(|id| format!("cancel its run {id} (POST /api/v1/runs/{id}/cancel)"))
        .unwrap_or_else(|| "wait for its step to start and cancel that run".to_string());
    Err(ApiError::new(
        StatusCode::CONFLICT,
        "conflict",
        format!(
            "sequence '{name}' is running (step {} of {}); {current} to stop it, then remove the sequence",
            running.step + 1,
            running.spec.steps.len()
        ),
    ))
}

pub fn unknown_sequence(name: &str) -> ApiError {
    ApiError::not_found(format!(
        "no sequence '{name}'; GET /api/v1/sequences lists them"
    ))
}

/// Moves every running sequence on, every [`SEQUENCE_TICK`], for as long as the server runs.
pub async fn drive_forever(state: AppState) {
    let mut interval = tokio::time::interval(SEQUENCE_TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        if let Err(problem) = drive_all(&state).await {
            if state
                .scheduler_warnings()
                .should_warn(&"sequences".to_string(), &problem.to_string())
            {
                tracing::warn!(%problem, "Moving running sequences on failed; trying again every second (repeats are logged at debug level).");
            } else {
                tracing::debug!(%problem, "Moving running sequences on failed again.");
            }
        }
    }
}

async fn drive_all(state: &AppState) -> Result<(), StateError> {
    for run in state.store().running_sequence_runs().await? {
        if run.driver == QUEUE_DRIVER {
            move_on(state, run).await?;
        } else {
            reap_if_abandoned(state.store(), &run).await?;
        }
    }
    Ok(())
}

/// How long a sequence run a `ferry sequence run` drives may go without a move while its step's
/// sync is not running before it counts as abandoned (its process died). The process moves it
/// on the moment a step ends, so a live one is never this quiet between steps.
const ABANDONED_AFTER: chrono::Duration = chrono::Duration::seconds(60);

/// Marks interrupted a sequence run whose `ferry sequence run` died: otherwise it would stay
/// "running" and refuse every later start of its sequence.
async fn reap_if_abandoned(store: &StateStore, run: &SequenceRunRecord) -> Result<(), StateError> {
    if chrono::Utc::now() - run.updated_at < ABANDONED_AFTER {
        return Ok(());
    }
    let mut step_busy = false;
    if let Some(sync) = run.spec.steps.get(run.step as usize) {
        if let Some(record) = store.get_sync(sync).await? {
            // A step whose run just ended is about to be moved on by its process.
            let last_activity = store
                .list_runs(Some(sync), 1)
                .await?
                .into_iter()
                .next()
                .map(|last| last.finished_at.unwrap_or(last.started_at));
            step_busy = last_activity.is_some_and(|at| chrono::Utc::now() - at < ABANDONED_AFTER)
                || store.sync_is_running(&record).await?;
        }
    }
    if !step_busy {
        advance(
            store,
            run,
            run.step as usize,
            run.run_ids.clone(),
            SequenceRunStatus::Interrupted,
            Some("the `ferry sequence run` that drove it stopped before it ended".to_string()),
        )
        .await?;
    }
    Ok(())
}

/// Moves one sequence run on as far as it can go now. Losing a compare-and-set to another
/// server ends the turn: that server moved it.
async fn move_on(state: &AppState, mut run: SequenceRunRecord) -> Result<(), StateError> {
    let store = state.store();
    // A step that is refused at once leads straight to the next decision, so a few turns.
    for _ in 0..=run.spec.steps.len() {
        let step = run.step as usize;
        let Some(sync) = run.spec.steps.get(step).cloned() else {
            finish(
                store,
                &run,
                run.run_ids.clone(),
                SequenceRunStatus::Failed,
                format!("it has no step {}", step + 1),
            )
            .await?;
            return Ok(());
        };
        let key = step_request_key(&run.id, step);
        let mut run_ids = run.run_ids.clone();
        let result = match store.find_run_request_by_dedupe_key(&key).await? {
            None => match store.get_sync(&sync).await? {
                None => StepResult::Refused {
                    reason: format!("sync '{sync}' no longer exists"),
                },
                Some(record) if record.paused_at.is_some() => StepResult::Refused {
                    reason: format!(
                        "sync '{sync}' is paused; resume it (POST /api/v1/syncs/{sync}/resume) and run the sequence again"
                    ),
                },
                Some(_) => {
                    store
                        .enqueue_run(&NewRunRequest {
                            sync: sync.clone(),
                            reason: "sequence".to_string(),
                            full_resync: false,
                            allow_mass_retire: false,
                            dedupe_key: Some(key),
                        })
                        .await?;
                    state.runs().wake();
                    return Ok(());
                }
            },
            Some(request) => {
                let started = request.run_id.clone();
                if let Some(run_id) = &started {
                    if run_ids.len() == step {
                        run_ids.push(run_id.clone());
                    } else if run_ids.len() == step + 1 {
                        // A run resumed by another server after its first died.
                        run_ids[step] = run_id.clone();
                    }
                }
                if let Some(refusal) = request.refusal {
                    StepResult::Refused {
                        reason: refusal.message,
                    }
                } else if request.finished_at.is_none() {
                    // Waiting or running: note its run for the pages, then wait.
                    if run_ids != run.run_ids {
                        advance(store, &run, step, run_ids, SequenceRunStatus::Running, None)
                            .await?;
                    }
                    return Ok(());
                } else if let Some(run_id) = started {
                    match store.get_run(&run_id).await? {
                        None => StepResult::Refused {
                            reason: format!("its run {run_id} was removed"),
                        },
                        Some(ended) => StepResult::Ran {
                            // A request finished while its run still says running: the run
                            // stopped on an error it could not record.
                            status: if ended.status == RunStatus::Running {
                                RunStatus::Failed
                            } else {
                                ended.status
                            },
                            error: ended.error.or_else(|| {
                                (ended.status == RunStatus::Running).then(|| {
                                    "its run stopped on an error; the server log has the details"
                                        .to_string()
                                })
                            }),
                            counts: ended.counts,
                        },
                    }
                } else {
                    StepResult::Refused {
                        reason: "its queued run ended without starting".to_string(),
                    }
                }
            }
        };
        match after_step(&run.spec, step, &result) {
            SequenceMove::Run(next) => {
                if !advance(store, &run, next, run_ids, SequenceRunStatus::Running, None).await? {
                    return Ok(());
                }
                let Some(moved) = store.get_sequence_run(&run.id).await? else {
                    return Ok(());
                };
                run = moved;
            }
            SequenceMove::Finish(status, message) => {
                finish(store, &run, run_ids, status, message).await?;
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Compare-and-set of the run's progress; `false` when another server moved it first.
async fn advance(
    store: &StateStore,
    run: &SequenceRunRecord,
    step: usize,
    run_ids: Vec<String>,
    status: SequenceRunStatus,
    message: Option<String>,
) -> Result<bool, StateError> {
    store
        .advance_sequence_run(
            &run.id,
            run.version,
            &SequenceRunUpdate {
                step: step as u32,
                run_ids,
                status,
                message,
            },
        )
        .await
}

async fn finish(
    store: &StateStore,
    run: &SequenceRunRecord,
    run_ids: Vec<String>,
    status: SequenceRunStatus,
    message: String,
) -> Result<(), StateError> {
    if advance(
        store,
        run,
        run.step as usize,
        run_ids,
        status,
        Some(message.clone()),
    )
    .await?
    {
        if status == SequenceRunStatus::Completed {
            tracing::info!(sequence = %run.sequence, sequence_run = %run.id, "A sequence completed: {message}.");
        } else {
            tracing::warn!(sequence = %run.sequence, sequence_run = %run.id, status = status.as_str(), "A sequence ended early: {message}.");
        }
    }
    Ok(())
}

/// When the sequence's schedule starts its next run, given when its last run started; `None`
/// without a schedule. It counts from the latest of the last start and the last save (a saved
/// schedule leaves time before anything runs). Never before `now`.
pub fn next_scheduled_run(
    sequence: &ferry_state::SequenceRecord,
    last_start: Option<chrono::DateTime<chrono::Utc>>,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<chrono::DateTime<chrono::Utc>> {
    let schedule = sequence.spec.schedule.as_ref()?;
    let since = last_start.into_iter().chain([sequence.updated_at]).max();
    Some(schedule.next_due(since, now).max(now))
}

/// Starts the sequences whose schedule says a run is due at `now`; returns the sequence runs
/// started. Every server sees the same due time; the run's dedupe key lets one start it.
pub(crate) async fn start_due_sequences(
    state: &AppState,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<String>, StateError> {
    let store = state.store();
    let mut started = Vec::new();
    for sequence in store.list_sequences().await? {
        let Some(schedule) = &sequence.spec.schedule else {
            continue;
        };
        let last_start = store
            .list_sequence_runs(Some(&sequence.name), 1)
            .await?
            .into_iter()
            .next()
            .map(|run| run.started_at);
        let since = last_start.into_iter().chain([sequence.updated_at]).max();
        let due = schedule.next_due(since, now);
        if due > now {
            continue;
        }
        let dedupe_key = format!("schedule sequence {} {}", sequence.name, due.to_rfc3339());
        match start(state, &sequence.name, "schedule", Some(dedupe_key)).await {
            Ok(Some(run)) => started.push(run.id),
            Ok(None) => {
                tracing::debug!(sequence = %sequence.name, "A scheduled sequence is due; another server started it.");
            }
            Err(error) if error.status == StatusCode::CONFLICT => {
                tracing::debug!(sequence = %sequence.name, "A scheduled sequence is due, but it is still running.");
            }
            Err(error) => {
                if state
                    .scheduler_warnings()
                    .should_warn(&format!("sequence {}", sequence.name), &error.message)
                {
                    tracing::warn!(sequence = %sequence.name, problem = %error.message, "A scheduled sequence could not start; trying again at every tick (repeats are logged at debug level).");
                }
            }
        }
    }
    Ok(started)
}
