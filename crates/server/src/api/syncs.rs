//! `/api/v1/syncs`: declare syncs, preview them, start runs.

use super::runs::RunView;
use super::{check_name_matches, ApiJson, ApiPath};
use crate::{ApiError, AppState};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse as _;
use axum::Json;
use chrono::{DateTime, Utc};
use ferry_core::{Behavior, FieldMapping, KeyMapping, NullPolicy, ObjectKind, SyncSpec};
use ferry_engine::{declare, Preview};
use ferry_state::SyncRecord;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SyncView {
    pub name: String,
    /// Fixed when the sync is created; part of its idempotency keys.
    pub uid: String,
    pub spec: SyncSpec,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Since when the sync is paused: its schedule starts nothing and triggers from
    /// orchestrators are refused. Absent when it is not paused.
    pub paused_at: Option<DateTime<Utc>>,
    /// When `ferry serve` starts its next scheduled run (now, when one is due); absent when the
    /// sync has no schedule or is paused.
    pub next_run_at: Option<DateTime<Utc>>,
    pub last_run: Option<RunView>,
}

impl SyncView {
    pub async fn load(state: &AppState, record: &SyncRecord) -> Result<SyncView, ApiError> {
        let last_run = state
            .store()
            .list_runs(Some(&record.name), 1)
            .await?
            .into_iter()
            .next()
            .map(|run| RunView::new(state, run));
        let now = Utc::now();
        let next_run_at = record
            .next_scheduled_run(last_run.as_ref().map(|run| run.started_at), now)
            .map(|due| due.max(now));
        Ok(SyncView {
            name: record.name.clone(),
            uid: record.uid.clone(),
            spec: record.spec.clone(),
            created_at: record.created_at,
            updated_at: record.updated_at,
            paused_at: record.paused_at,
            next_run_at,
            last_run,
        })
    }
}

/// A sync to create or replace: model → Stripe object, behavior, mapping key and mapper.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SyncInput {
    /// Required when creating; on replace it must match the path if given.
    pub name: Option<String>,
    pub model: String,
    /// The Stripe connection to write to.
    pub destination: String,
    /// Default `customer`.
    pub object: Option<ObjectKind>,
    pub behavior: Behavior,
    /// The column that identifies a record and the Stripe field it matches: `email`, or an
    /// external id in metadata (`metadata.user_id`).
    pub key: KeyMapping,
    #[serde(default)]
    pub mappings: Vec<FieldMapping>,
    #[serde(default)]
    pub nulls: NullPolicy,
    /// When `ferry serve` runs the sync by itself: `every 15m`, `hourly`, `daily at 06:30`,
    /// `daily at 06:30 in Europe/Paris`, `cron 0 6 * * 1-5` (clock times in UTC unless a time
    /// zone follows `in`). Absent: only when asked.
    #[schema(value_type = Option<String>, example = "cron 0 6 * * 1-5 in Europe/Paris")]
    pub schedule: Option<ferry_core::Schedule>,
    /// With the `mirror` behavior: the share of records a run may retire, and whether
    /// customers may be deleted.
    #[serde(default)]
    pub mirror: ferry_core::MirrorSettings,
    /// With the `invoice` object: the line key column and when invoices are finalized.
    #[serde(default)]
    pub invoice: Option<ferry_core::InvoiceSettings>,
    /// When the sync raises alerts (a failed run, rejected rows over a share, a slow run, a
    /// row count that drops) and which alert channels hear of them. Absent: the workspace's
    /// defaults (`GET /api/v1/alerts/defaults`).
    #[serde(default)]
    pub alerts: Option<ferry_core::AlertSettings>,
}

impl SyncInput {
    fn into_spec(self) -> SyncSpec {
        SyncSpec {
            invoice: self.invoice,
            model: self.model,
            destination: self.destination,
            object: self.object.unwrap_or(ObjectKind::Customer),
            behavior: self.behavior,
            key: self.key,
            mappings: self.mappings,
            nulls: self.nulls,
            schedule: self.schedule,
            alerts: self.alerts,
            mirror: self.mirror,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SyncList {
    pub syncs: Vec<SyncView>,
}

#[utoipa::path(get, path = "/api/v1/syncs", tag = "syncs", responses((status = 200, body = SyncList)))]
pub async fn list(State(state): State<AppState>) -> Result<Json<SyncList>, ApiError> {
    let mut syncs = Vec::new();
    for record in state.store().list_syncs().await? {
        syncs.push(SyncView::load(&state, &record).await?);
    }
    Ok(Json(SyncList { syncs }))
}

async fn require_sync(state: &AppState, name: &str) -> Result<SyncRecord, ApiError> {
    state
        .store()
        .get_sync(name)
        .await?
        .ok_or_else(|| ferry_engine::EngineError::UnknownSync(name.to_string()).into())
}

#[utoipa::path(get, path = "/api/v1/syncs/{name}", tag = "syncs", params(("name" = String, Path)),
    responses((status = 200, body = SyncView), (status = 404, body = crate::error::ErrorBody)))]
pub async fn show(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<SyncView>, ApiError> {
    let record = require_sync(&state, &name).await?;
    Ok(Json(SyncView::load(&state, &record).await?))
}

/// Creates a sync after checking it against its model's columns and Stripe's fields.
#[utoipa::path(post, path = "/api/v1/syncs", tag = "syncs", request_body = SyncInput,
    responses((status = 201, body = SyncView),
        (status = 404, description = "the model or the destination does not exist", body = crate::error::ErrorBody),
        (status = 409, description = "the name is taken (names are unique ignoring case)", body = crate::error::ErrorBody),
        (status = 422, description = "the sync does not fit its model or Stripe", body = crate::error::ErrorBody),
        (status = 502, description = "the warehouse failed", body = crate::error::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    ApiJson(input): ApiJson<SyncInput>,
) -> Result<(StatusCode, Json<SyncView>), ApiError> {
    let name = input
        .name
        .clone()
        .ok_or_else(|| ApiError::invalid("`name` is required"))?;
    if state.store().get_sync(&name).await?.is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("sync '{name}' already exists; PUT /api/v1/syncs/{name} replaces it"),
        ));
    }
    let record = declare::save_sync(state.store(), &name, &input.into_spec()).await?;
    Ok((
        StatusCode::CREATED,
        Json(SyncView::load(&state, &record).await?),
    ))
}

/// Replaces a sync's settings; its uid, runs and snapshot are kept.
#[utoipa::path(put, path = "/api/v1/syncs/{name}", tag = "syncs", params(("name" = String, Path)),
    request_body = SyncInput,
    responses((status = 200, body = SyncView),
        (status = 404, description = "the model or the destination does not exist", body = crate::error::ErrorBody),
        (status = 409, description = "a new name differs only in case from an existing sync's", body = crate::error::ErrorBody),
        (status = 422, description = "the sync does not fit its model or Stripe", body = crate::error::ErrorBody),
        (status = 502, description = "the warehouse failed", body = crate::error::ErrorBody)))]
pub async fn replace(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    ApiJson(input): ApiJson<SyncInput>,
) -> Result<Json<SyncView>, ApiError> {
    check_name_matches(&name, input.name.as_deref())?;
    let record = declare::save_sync(state.store(), &name, &input.into_spec()).await?;
    Ok(Json(SyncView::load(&state, &record).await?))
}

/// Removes a sync with its runs and snapshot. A sync that is running (here or in another
/// process) is refused: its run would go on writing to Stripe with nothing left to record it.
#[utoipa::path(delete, path = "/api/v1/syncs/{name}", tag = "syncs", params(("name" = String, Path)),
    responses((status = 204), (status = 404, body = crate::error::ErrorBody),
        (status = 409, description = "the sync is running", body = crate::error::ErrorBody)))]
pub async fn remove(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    match declare::remove_sync(state.store(), &name).await {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(ferry_engine::EngineError::State(ferry_state::StateError::SyncLocked { .. })) => {
            Err(ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!(
                    "sync '{name}' is running; cancel its run (POST /api/v1/runs/{{id}}/cancel) or wait for it to end, then remove the sync"
                ),
            ))
        }
        Err(other) => Err(other.into()),
    }
}

/// What a run would create, update, leave alone and reject, and why. Sends no write.
#[utoipa::path(post, path = "/api/v1/syncs/{name}/preview", tag = "syncs",
    params(("name" = String, Path)),
    responses((status = 200, body = Preview), (status = 404, body = crate::error::ErrorBody),
        (status = 422, description = "the sync no longer fits its model, or its connections cannot be used", body = crate::error::ErrorBody),
        (status = 502, description = "the warehouse or Stripe failed", body = crate::error::ErrorBody)))]
pub async fn preview(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Preview>, ApiError> {
    let setup = ferry_engine::load_sync_setup(state.store(), &name).await?;
    Ok(Json(
        ferry_engine::preview_sync(state.store(), &setup).await?,
    ))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunInput {
    /// Ignore what earlier runs confirmed: look every record up again and send what differs.
    #[serde(default)]
    pub full_resync: bool,
    /// Mirror: retire what left the model even when it is more than the sync's
    /// `max_retire_percent` of its records.
    #[serde(default)]
    pub allow_mass_retire: bool,
    /// Run a paused sync all the same (a paused sync refuses runs asked for through the API,
    /// so that an orchestrator's trigger does not write while the sync is paused).
    #[serde(default)]
    pub even_if_paused: bool,
}

/// Starts a run in the background and answers at once with the run; poll
/// `GET /api/v1/runs/{id}` until its status is no longer `running`.
#[utoipa::path(post, path = "/api/v1/syncs/{name}/runs", tag = "syncs",
    params(("name" = String, Path)), request_body(content = Option<RunInput>),
    responses((status = 202, description = "the run started (a run), or waits in the queue for a server with room (`status: queued`)", body = super::runs::StartedRunView), (status = 404, body = crate::error::ErrorBody),
        (status = 409, description = "the sync is already running, or paused", body = crate::error::ErrorBody),
        (status = 422, description = "the sync no longer fits its model, or its connections cannot be used", body = crate::error::ErrorBody)))]
pub async fn start_run(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<axum::response::Response, ApiError> {
    let body = body.map_err(|e| ApiError::new(e.status(), "invalid_body", e.body_text()))?;
    // The body is optional: `curl -X POST …/runs` with nothing is the common case.
    let input: RunInput = if body.iter().all(u8::is_ascii_whitespace) {
        RunInput::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", e.to_string()))?
    };
    let sync = require_sync(&state, &name).await?;
    if let (Some(paused_at), false) = (sync.paused_at, input.even_if_paused) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "paused",
            format!(
                "sync '{name}' is paused (since {}); resume it (POST /api/v1/syncs/{name}/resume), \
                 or send {{\"even_if_paused\": true}} to run it once all the same",
                paused_at.format("%Y-%m-%d %H:%M UTC")
            ),
        ));
    }
    let outcome = state
        .runs()
        .start(
            state.store().clone(),
            &name,
            input.full_resync,
            input.allow_mass_retire,
            "api",
            None,
        )
        .await?;
    match outcome {
        crate::run_registry::StartOutcome::Started(run_id) => {
            let run = super::runs::require_run(&state, &run_id).await?;
            let view = super::runs::StartedRunView::Started(RunView::new(&state, run));
            Ok((StatusCode::ACCEPTED, Json(view)).into_response())
        }
        crate::run_registry::StartOutcome::Queued(request) => Ok((
            StatusCode::ACCEPTED,
            Json(super::runs::StartedRunView::Queued(
                super::runs::QueuedRunView::new(&request),
            )),
        )
            .into_response()),
        crate::run_registry::StartOutcome::AlreadyQueued => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "a run asked for without a dedupe key was taken for a duplicate",
        )),
    }
}

/// Pauses the sync's schedule: `ferry serve` starts no scheduled run and runs asked for through
/// the API are refused until it is resumed. A running run goes on; its spec is kept.
#[utoipa::path(post, path = "/api/v1/syncs/{name}/pause", tag = "syncs",
    params(("name" = String, Path)),
    responses((status = 200, body = SyncView), (status = 404, body = crate::error::ErrorBody)))]
pub async fn pause(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<SyncView>, ApiError> {
    set_paused(&state, &name, true).await
}

/// Resumes the sync's schedule, counted from now: the runs skipped while paused are not made up.
#[utoipa::path(post, path = "/api/v1/syncs/{name}/resume", tag = "syncs",
    params(("name" = String, Path)),
    responses((status = 200, body = SyncView), (status = 404, body = crate::error::ErrorBody)))]
pub async fn resume(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<SyncView>, ApiError> {
    set_paused(&state, &name, false).await
}

async fn set_paused(
    state: &AppState,
    name: &str,
    paused: bool,
) -> Result<Json<SyncView>, ApiError> {
    let record = state
        .store()
        .set_sync_paused(name, paused)
        .await?
        .ok_or_else(|| ApiError::from(ferry_engine::EngineError::UnknownSync(name.to_string())))?;
    tracing::info!(sync = %name, "{}", if paused { "Paused the sync." } else { "Resumed the sync." });
    Ok(Json(SyncView::load(state, &record).await?))
}
