//! `/api/v1/sequences`: syncs run one after another (products, then prices, then invoices),
//! stopping when a step fails or rejects too many of its rows; and their runs.

use super::{check_name_matches, ApiJson, ApiPath};
use crate::{ApiError, AppState};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use ferry_core::{RunCounts, RunStatus, SequenceRunStatus, SequenceSpec};
use ferry_state::{SequenceRecord, SequenceRunRecord};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SequenceView {
    pub name: String,
    pub spec: SequenceSpec,
    /// The stopping rule in words: `stops when a step fails or rejects over 5% of its rows`.
    pub stops: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// When `ferry serve` starts its next scheduled run (now, when one is due); absent without
    /// a schedule.
    pub next_run_at: Option<DateTime<Utc>>,
    pub last_run: Option<SequenceRunView>,
}

impl SequenceView {
    pub async fn load(state: &AppState, record: &SequenceRecord) -> Result<SequenceView, ApiError> {
        let last = state
            .store()
            .list_sequence_runs(Some(&record.name), 1)
            .await?
            .into_iter()
            .next();
        let next_run_at = crate::sequences::next_scheduled_run(
            record,
            last.as_ref().map(|run| run.started_at),
            Utc::now(),
        );
        let last_run = match last {
            Some(run) => Some(SequenceRunView::load(state, run).await?),
            None => None,
        };
        Ok(SequenceView {
            name: record.name.clone(),
            stops: record.spec.stop_rule(),
            spec: record.spec.clone(),
            created_at: record.created_at,
            updated_at: record.updated_at,
            next_run_at,
            last_run,
        })
    }
}

/// One run of a sequence.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SequenceRunView {
    /// `seqrun_…`
    pub id: String,
    pub sequence: String,
    /// `running` until it ends: `completed` (every step completed), `failed` (a step failed or
    /// could not start), `stopped` (a step rejected more rows than the sequence allows), or
    /// `interrupted` (the `ferry sequence run` that drove it died).
    pub status: SequenceRunStatus,
    /// Who asked: `api`, `ui`, `schedule` or `cli`.
    pub reason: String,
    /// The step running now (from 1), or the last one run once it ended.
    pub current_step: u32,
    pub steps: Vec<SequenceStepView>,
    /// Why it ended as it did.
    pub message: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// One step of a sequence run.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SequenceStepView {
    pub sync: String,
    /// The step's run; absent until it starts (and for a step that never ran).
    pub run_id: Option<String>,
    pub status: Option<RunStatus>,
    pub counts: Option<RunCounts>,
}

impl SequenceRunView {
    pub async fn load(
        state: &AppState,
        run: SequenceRunRecord,
    ) -> Result<SequenceRunView, ApiError> {
        let mut steps = Vec::new();
        for (index, sync) in run.spec.steps.iter().enumerate() {
            let run_id = run.run_ids.get(index).cloned();
            let step_run = match &run_id {
                Some(id) => state.store().get_run(id).await?,
                None => None,
            };
            steps.push(SequenceStepView {
                sync: sync.clone(),
                run_id,
                status: step_run.as_ref().map(|r| r.status),
                counts: step_run.map(|r| r.counts),
            });
        }
        Ok(SequenceRunView {
            id: run.id,
            sequence: run.sequence,
            status: run.status,
            reason: run.reason,
            current_step: run.step + 1,
            steps,
            message: run.message,
            started_at: run.started_at,
            finished_at: run.finished_at,
        })
    }
}

/// A sequence to create or replace.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SequenceInput {
    /// Required when creating; on replace it must match the path if given.
    pub name: Option<String>,
    /// The syncs to run, in order (at most 20, each once).
    pub steps: Vec<String>,
    /// Stop after a step that rejected more than this share of its rows, in percent (0: any
    /// rejected row). Absent: only a failed step stops the sequence.
    pub stop_when_rejected_over_percent: Option<u32>,
    /// When `ferry serve` runs the sequence by itself, in the syncs' schedule forms (`daily at
    /// 06:00`, `cron 0 6 * * 1-5 in Europe/Paris`, …). Absent: only when asked.
    #[schema(value_type = Option<String>, example = "daily at 06:00")]
    pub schedule: Option<ferry_core::Schedule>,
}

impl SequenceInput {
    fn into_spec(self) -> SequenceSpec {
        SequenceSpec {
            steps: self.steps,
            stop_when_rejected_over_percent: self.stop_when_rejected_over_percent,
            schedule: self.schedule,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SequenceList {
    pub sequences: Vec<SequenceView>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SequenceRunList {
    pub runs: Vec<SequenceRunView>,
}

async fn require_sequence(state: &AppState, name: &str) -> Result<SequenceRecord, ApiError> {
    state
        .store()
        .get_sequence(name)
        .await?
        .ok_or_else(|| crate::sequences::unknown_sequence(name))
}

#[utoipa::path(get, path = "/api/v1/sequences", tag = "sequences", responses((status = 200, body = SequenceList)))]
pub async fn list(State(state): State<AppState>) -> Result<Json<SequenceList>, ApiError> {
    let mut sequences = Vec::new();
    for record in state.store().list_sequences().await? {
        sequences.push(SequenceView::load(&state, &record).await?);
    }
    Ok(Json(SequenceList { sequences }))
}

#[utoipa::path(get, path = "/api/v1/sequences/{name}", tag = "sequences", params(("name" = String, Path)),
    responses((status = 200, body = SequenceView), (status = 404, body = crate::error::ErrorBody)))]
pub async fn show(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<SequenceView>, ApiError> {
    let record = require_sequence(&state, &name).await?;
    Ok(Json(SequenceView::load(&state, &record).await?))
}

/// Creates a sequence of existing syncs.
#[utoipa::path(post, path = "/api/v1/sequences", tag = "sequences", request_body = SequenceInput,
    responses((status = 201, body = SequenceView),
        (status = 404, description = "a step names a sync that does not exist", body = crate::error::ErrorBody),
        (status = 409, description = "the name is taken (names are unique ignoring case)", body = crate::error::ErrorBody),
        (status = 422, description = "no steps, too many, a sync twice, or a percent over 100", body = crate::error::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    ApiJson(input): ApiJson<SequenceInput>,
) -> Result<(StatusCode, Json<SequenceView>), ApiError> {
    let name = input
        .name
        .clone()
        .ok_or_else(|| ApiError::invalid("`name` is required"))?;
    if state.store().get_sequence(&name).await?.is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("sequence '{name}' already exists; PUT /api/v1/sequences/{name} replaces it"),
        ));
    }
    let record = state
        .store()
        .put_sequence(&name, &input.into_spec())
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(SequenceView::load(&state, &record).await?),
    ))
}

/// Replaces a sequence's steps, stopping rule and schedule; a run going on keeps the steps it
/// started with.
#[utoipa::path(put, path = "/api/v1/sequences/{name}", tag = "sequences", params(("name" = String, Path)),
    request_body = SequenceInput,
    responses((status = 200, body = SequenceView),
        (status = 404, description = "a step names a sync that does not exist", body = crate::error::ErrorBody),
        (status = 422, description = "no steps, too many, a sync twice, or a percent over 100", body = crate::error::ErrorBody)))]
pub async fn replace(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    ApiJson(input): ApiJson<SequenceInput>,
) -> Result<Json<SequenceView>, ApiError> {
    check_name_matches(&name, input.name.as_deref())?;
    let record = state
        .store()
        .put_sequence(&name, &input.into_spec())
        .await?;
    Ok(Json(SequenceView::load(&state, &record).await?))
}

/// Removes a sequence and its runs' history (the runs of its syncs stay). Refused while it runs.
#[utoipa::path(delete, path = "/api/v1/sequences/{name}", tag = "sequences", params(("name" = String, Path)),
    responses((status = 204), (status = 404, body = crate::error::ErrorBody),
        (status = 409, description = "the sequence is running", body = crate::error::ErrorBody)))]
pub async fn remove(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    require_sequence(&state, &name).await?;
    crate::sequences::refuse_removal_while_running(state.store(), &name).await?;
    state.store().remove_sequence(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Starts a run of the sequence and answers at once; poll `GET /api/v1/sequence-runs/{id}` until
/// its status is not `running`. Its steps run through the servers' run queue, one after another.
#[utoipa::path(post, path = "/api/v1/sequences/{name}/runs", tag = "sequences",
    params(("name" = String, Path)),
    responses((status = 202, body = SequenceRunView), (status = 404, body = crate::error::ErrorBody),
        (status = 409, description = "the sequence is already running", body = crate::error::ErrorBody)))]
pub async fn start_run(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<(StatusCode, Json<SequenceRunView>), ApiError> {
    let run = crate::sequences::start(&state, &name, "api", None)
        .await?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "a run asked for without a dedupe key was taken for a duplicate",
            )
        })?;
    Ok((
        StatusCode::ACCEPTED,
        Json(SequenceRunView::load(&state, run).await?),
    ))
}

/// The sequence's latest runs, newest first.
#[utoipa::path(get, path = "/api/v1/sequences/{name}/runs", tag = "sequences",
    params(("name" = String, Path)),
    responses((status = 200, body = SequenceRunList), (status = 404, body = crate::error::ErrorBody)))]
pub async fn runs(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<SequenceRunList>, ApiError> {
    require_sequence(&state, &name).await?;
    let mut runs = Vec::new();
    for run in state.store().list_sequence_runs(Some(&name), 50).await? {
        runs.push(SequenceRunView::load(&state, run).await?);
    }
    Ok(Json(SequenceRunList { runs }))
}

#[utoipa::path(get, path = "/api/v1/sequence-runs/{id}", tag = "sequences",
    params(("id" = String, Path)),
    responses((status = 200, body = SequenceRunView), (status = 404, body = crate::error::ErrorBody)))]
pub async fn show_run(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<SequenceRunView>, ApiError> {
    let run = state.store().get_sequence_run(&id).await?.ok_or_else(|| {
        ApiError::not_found(format!(
            "sequence run '{id}' does not exist; GET /api/v1/sequences/NAME/runs lists a sequence's runs"
        ))
    })?;
    Ok(Json(SequenceRunView::load(&state, run).await?))
}
