//! `/api/v1/runs`: run status, counts, per-record outcomes (filtered, paged, as CSV).

use super::{ApiPath, ApiQuery};
use crate::run_registry::LiveProgress;
use crate::{ApiError, AppState};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use ferry_core::{Outcome, RunCounts, RunStatus};
use ferry_state::{RunRecord, RunRecordRow};
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RunView {
    pub id: String,
    pub sync: String,
    pub status: RunStatus,
    pub full_resync: bool,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Final counts once the run ended; see `progress` while it runs.
    pub counts: RunCounts,
    pub error: Option<String>,
    /// How far along a run that is running in this server is.
    pub progress: Option<LiveProgress>,
}

/// A run asked for that waits in the run queue, or runs under a server's claim.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct QueuedRunView {
    /// The queue entry's id (`rrq_…`).
    pub request: String,
    pub sync: String,
    /// `queued` while it waits for a server with room, `running` once one runs it.
    pub status: String,
    /// Who asked: `api`, `ui` or `schedule`.
    pub reason: String,
    pub full_resync: bool,
    pub requested_at: DateTime<Utc>,
    /// The server process holding it (`host:pid:…`), while it runs.
    pub claimed_by: Option<String>,
    /// More than 1 when a server died during its run and another resumed it.
    pub claims: u32,
    /// The run it started.
    pub run: Option<String>,
}

impl QueuedRunView {
    pub fn new(request: &ferry_state::RunRequest) -> QueuedRunView {
        let running = request.claimed_by.is_some() && request.run_id.is_some();
        QueuedRunView {
            request: request.id.clone(),
            sync: request.sync.clone(),
            status: if running { "running" } else { "queued" }.to_string(),
            reason: request.reason.clone(),
            full_resync: request.full_resync,
            requested_at: request.requested_at,
            claimed_by: request.claimed_by.clone(),
            claims: request.claims,
            run: request.run_id.clone(),
        }
    }
}

/// What asking for a run answers: the run, or its place in the queue when every server is busy.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum StartedRunView {
    Started(RunView),
    Queued(QueuedRunView),
}

/// The run queue: runs waiting for a server with room and runs under a server's claim, oldest
/// first. With several `ferry serve` processes on one PostgreSQL workspace, this shows which
/// process runs what.
#[utoipa::path(get, path = "/api/v1/queue", tag = "runs",
    responses((status = 200, body = Vec<QueuedRunView>)))]
pub async fn queue(State(state): State<AppState>) -> Result<Json<Vec<QueuedRunView>>, ApiError> {
    let pending = state.store().pending_run_requests().await?;
    Ok(Json(pending.iter().map(QueuedRunView::new).collect()))
}

impl RunView {
    pub fn new(state: &AppState, run: RunRecord) -> RunView {
        let progress = if run.status == RunStatus::Running {
            state.runs().progress(&run.id)
        } else {
            None
        };
        RunView {
            id: run.id,
            sync: run.sync,
            status: run.status,
            full_resync: run.full_resync,
            started_at: run.started_at,
            finished_at: run.finished_at,
            counts: run.counts,
            error: run.error,
            progress,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RecordView {
    /// The row's position in the model's result, from 1.
    pub row: u64,
    pub key: String,
    pub outcome: Outcome,
    /// The record's id in Stripe (`cus_…`).
    pub stripe_id: Option<String>,
    /// The record in Stripe's dashboard; none for records in another server (the emulator).
    pub stripe_url: Option<String>,
    /// Why the row was rejected or failed, for a person.
    pub reason: Option<String>,
    /// Stripe's `Request-Id` of the request that settled the row.
    pub request_id: Option<String>,
    /// Field → `{"before": …, "after": …}` for updates and creates.
    #[schema(value_type = Option<Object>)]
    pub changes: Option<serde_json::Value>,
}

impl RecordView {
    /// `dashboard`: where the sync's records are in Stripe's dashboard (see [`dashboard_base`]).
    pub fn new(row: RunRecordRow, dashboard: Option<&str>) -> RecordView {
        RecordView {
            row: row.row_number,
            stripe_url: dashboard
                .and_then(|base| row.destination_id.as_ref().map(|id| format!("{base}/{id}"))),
            key: row.key,
            outcome: row.outcome,
            stripe_id: row.destination_id,
            reason: row.reason,
            request_id: row.request_id,
            changes: row
                .changes
                .as_deref()
                .and_then(|text| serde_json::from_str(text).ok()),
        }
    }
}

/// One attempt of a request ferry sent to Stripe for a record, as sent and as answered. The API
/// key is never kept: only the method, the path, the idempotency key and the bodies (each
/// cut at 16 KiB).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ExchangeView {
    /// The attempts' order within the run.
    pub sequence: u64,
    pub sent_at: DateTime<Utc>,
    pub method: String,
    /// Path and query: `/v1/customers/cus_…`.
    pub path: String,
    pub idempotency_key: Option<String>,
    /// The form-encoded body as sent.
    pub request_body: Option<String>,
    /// The body's parameters, decoded, in the order sent: `[["email", "a@b.c"], …]`.
    #[schema(value_type = Vec<Vec<String>>)]
    pub request_params: Vec<(String, String)>,
    /// Absent when no answer came (see `error`).
    pub status: Option<u16>,
    /// Stripe's answer: JSON, as a string.
    pub response_body: Option<String>,
    /// Stripe's `Request-Id`: quote it to Stripe's support.
    pub request_id: Option<String>,
    /// Why no answer came (a timeout, a dropped connection).
    pub error: Option<String>,
    pub duration_ms: u64,
}

impl ExchangeView {
    pub fn new(exchange: ferry_state::StripeExchange) -> ExchangeView {
        let request_params = exchange
            .request_body
            .as_deref()
            .map(|body| {
                form_urlencoded::parse(body.as_bytes())
                    .map(|(name, value)| (name.into_owned(), value.into_owned()))
                    .collect()
            })
            .unwrap_or_default();
        ExchangeView {
            sequence: exchange.sequence,
            sent_at: exchange.sent_at,
            method: exchange.method,
            path: exchange.path,
            idempotency_key: exchange.idempotency_key,
            request_body: exchange.request_body,
            request_params,
            status: exchange.status,
            response_body: exchange.response_body,
            request_id: exchange.request_id,
            error: exchange.error,
            duration_ms: exchange.duration_ms,
        }
    }
}

/// A record of a run and the requests ferry sent to Stripe for it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RecordDetail {
    pub record: RecordView,
    /// Every attempt, in order (retries included). Empty for a record that needed no request,
    /// and once the requests are older than `FERRY_REQUEST_LOG_DAYS` (7 by default).
    pub requests: Vec<ExchangeView>,
}

/// A run's record and what was sent to Stripe for it; `None` when the run has no such row.
pub async fn record_detail(
    state: &AppState,
    run: &RunRecord,
    row: u64,
) -> Result<Option<RecordDetail>, ferry_state::StateError> {
    let store = state.store();
    let Some(record) = store
        .list_run_records(&run.id, None, row.saturating_sub(1), 1)
        .await?
        .into_iter()
        .find(|record| record.row_number == row)
    else {
        return Ok(None);
    };
    let dashboard = dashboard_base(state, &run.sync).await;
    let requests = store
        .list_stripe_exchanges(&run.id, row)
        .await?
        .into_iter()
        .map(ExchangeView::new)
        .collect();
    Ok(Some(RecordDetail {
        record: RecordView::new(record, dashboard.as_deref()),
        requests,
    }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RunList {
    pub runs: Vec<RunView>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RunListParams {
    /// Only this sync's runs.
    pub sync: Option<String>,
    /// At most this many, newest first (default 50, at most 500).
    pub limit: Option<usize>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RecordPage {
    pub records: Vec<RecordView>,
    /// Records matching the filter, over all pages.
    pub total: u64,
    pub limit: usize,
    /// Pass as `after` for the next page; absent on the last page.
    pub next_after: Option<u64>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RecordParams {
    /// Only records with this outcome: created, updated, not_found, rejected, failed. (Unchanged
    /// rows are counted, not kept as records.)
    pub outcome: Option<Outcome>,
    /// Records after this row number (the previous page's `next_after`); from the first when
    /// absent. Pages by key, so any page costs the same.
    pub after: Option<u64>,
    /// Page size (default 100, at most 1000).
    pub limit: Option<usize>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CsvParams {
    /// Only records with this outcome.
    pub outcome: Option<Outcome>,
}

pub async fn require_run(state: &AppState, id: &str) -> Result<RunRecord, ApiError> {
    state.store().get_run(id).await?.ok_or_else(|| {
        ApiError::not_found(format!(
            "run '{id}' does not exist; GET /api/v1/runs lists the runs"
        ))
    })
}

/// Where the sync's records are in Stripe's dashboard (`https://dashboard.stripe.com/test/customers`),
/// or `None` when the sync writes to another server than Stripe (the emulator), whose records
/// Stripe's dashboard does not have.
pub async fn dashboard_base(state: &AppState, sync: &str) -> Option<String> {
    let sync = state.store().get_sync(sync).await.ok()??;
    let connection = state
        .store()
        .get_connection(&sync.spec.destination)
        .await
        .ok()??;
    let config = ferry_engine::stripe_config(state.store(), &connection).ok()?;
    config.dashboard_url(ferry_destinations::stripe::stripe_object(sync.spec.object).schema())
}

#[utoipa::path(get, path = "/api/v1/runs", tag = "runs", params(RunListParams),
    responses((status = 200, body = RunList),
        (status = 422, description = "`sync` is not a valid name", body = crate::error::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<RunListParams>,
) -> Result<Json<RunList>, ApiError> {
    let limit = params.limit.unwrap_or(50).min(500);
    ferry_engine::reap_dead_runs(state.store(), params.sync.as_deref()).await?;
    let runs = state
        .store()
        .list_runs(params.sync.as_deref(), limit)
        .await?;
    Ok(Json(RunList {
        runs: runs.into_iter().map(|r| RunView::new(&state, r)).collect(),
    }))
}

#[utoipa::path(get, path = "/api/v1/runs/{id}", tag = "runs", params(("id" = String, Path)),
    responses((status = 200, body = RunView), (status = 404, body = crate::error::ErrorBody)))]
pub async fn show(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<RunView>, ApiError> {
    let run = require_run(&state, &id).await?;
    Ok(Json(RunView::new(&state, run)))
}

/// Asks a running run to stop cleanly: in-flight requests finish, the rest is recorded as not
/// attempted, and the run ends `cancelled`.
#[utoipa::path(post, path = "/api/v1/runs/{id}/cancel", tag = "runs", params(("id" = String, Path)),
    responses((status = 202, body = RunView), (status = 404, body = crate::error::ErrorBody),
        (status = 409, description = "the run is not running in a server (it ended, or `ferry sync run` runs it)", body = crate::error::ErrorBody)))]
pub async fn cancel(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<(StatusCode, Json<RunView>), ApiError> {
    let run = require_run(&state, &id).await?;
    // A run of another server process on the workspace stops at that server's next renewal.
    if !state.runs().cancel(state.store(), &id).await? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_running",
            if run.status == RunStatus::Running {
                format!(
                    "run '{id}' runs outside the servers (`ferry sync run`); stop it there with Ctrl-C or SIGTERM"
                )
            } else {
                format!(
                    "run '{id}' is {}, so there is nothing to stop",
                    run.status.as_str()
                )
            },
        ));
    }
    let run = require_run(&state, &id).await?;
    Ok((StatusCode::ACCEPTED, Json(RunView::new(&state, run))))
}

/// One record of a run with every request ferry sent to Stripe for it, as sent and as
/// answered (the API key never appears).
#[utoipa::path(get, path = "/api/v1/runs/{id}/records/{row}", tag = "runs",
    params(("id" = String, Path), ("row" = u64, Path, description = "The record's row number")),
    responses((status = 200, body = RecordDetail),
        (status = 404, description = "no such run, or the run kept no record for this row (unchanged rows are only counted)", body = crate::error::ErrorBody)))]
pub async fn record(
    State(state): State<AppState>,
    ApiPath((id, row)): ApiPath<(String, u64)>,
) -> Result<Json<RecordDetail>, ApiError> {
    let run = require_run(&state, &id).await?;
    record_detail(&state, &run, row)
        .await?
        .map(Json)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "run '{id}' has no record for row {row} (unchanged rows are only counted); \
                 GET /api/v1/runs/{id}/records lists its records"
            ))
        })
}

#[utoipa::path(get, path = "/api/v1/runs/{id}/records", tag = "runs",
    params(("id" = String, Path), RecordParams),
    responses((status = 200, body = RecordPage), (status = 404, body = crate::error::ErrorBody)))]
pub async fn records(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(params): ApiQuery<RecordParams>,
) -> Result<Json<RecordPage>, ApiError> {
    let run = require_run(&state, &id).await?;
    let limit = params.limit.unwrap_or(100).clamp(1, 1000);
    let store = state.store();
    let total = store.count_run_records(&id, params.outcome).await?;
    let rows = store
        .list_run_records(&id, params.outcome, params.after.unwrap_or(0), limit)
        .await?;
    let next_after = (rows.len() == limit)
        .then(|| rows.last().map(|r| r.row_number))
        .flatten();
    let dashboard = dashboard_base(&state, &run.sync).await;
    Ok(Json(RecordPage {
        records: rows
            .into_iter()
            .map(|r| RecordView::new(r, dashboard.as_deref()))
            .collect(),
        total,
        limit,
        next_after,
    }))
}

/// Every record of the run (or those with one outcome) as CSV, for a spreadsheet.
#[utoipa::path(get, path = "/api/v1/runs/{id}/records.csv", tag = "runs",
    params(("id" = String, Path), CsvParams),
    responses((status = 200, content_type = "text/csv", body = String),
        (status = 404, body = crate::error::ErrorBody)))]
pub async fn records_csv(
    State(state): State<AppState>,
    axum::extract::Path(id): axum::extract::Path<String>,
    ApiQuery(params): ApiQuery<CsvParams>,
) -> Result<Response, ApiError> {
    let run = require_run(&state, &id).await?;
    let dashboard = dashboard_base(&state, &run.sync).await;
    let header_line = csv_line([
        "row",
        "key",
        "outcome",
        "stripe_id",
        "stripe_url",
        "reason",
        "request_id",
        "changes",
    ]);
    // Streamed a page at a time: a run of millions of records never sits in memory whole.
    const PAGE: usize = 2_000;
    let store = state.store().clone();
    let outcome = params.outcome;
    let run_id = id.clone();
    let pages = futures::stream::unfold(Some(0u64), move |after| {
        let (store, id, dashboard) = (store.clone(), run_id.clone(), dashboard.clone());
        async move {
            let after = after?;
            let rows = match store.list_run_records(&id, outcome, after, PAGE).await {
                Ok(rows) => rows,
                Err(error) => {
                    tracing::warn!(%error, run = %id, "Could not read run records for a CSV export.");
                    return Some((Err(std::io::Error::other(error.to_string())), None));
                }
            };
            let next = (rows.len() == PAGE)
                .then(|| rows.last().map(|r| r.row_number))
                .flatten();
            let mut text = String::new();
            for row in rows {
                let record = RecordView::new(row, dashboard.as_deref());
                text.push_str(&csv_line([
                    record.row.to_string().as_str(),
                    &spreadsheet_safe(record.key),
                    record.outcome.as_str(),
                    &record.stripe_id.unwrap_or_default(),
                    &record.stripe_url.unwrap_or_default(),
                    &spreadsheet_safe(record.reason.unwrap_or_default()),
                    &record.request_id.unwrap_or_default(),
                    &record.changes.map(|c| c.to_string()).unwrap_or_default(),
                ]));
            }
            Some((Ok::<_, std::io::Error>(text), next))
        }
    });
    let body =
        futures::stream::once(async move { Ok::<_, std::io::Error>(header_line) }).chain(pages);
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{id}.csv\""),
            ),
        ],
        axum::body::Body::from_stream(body),
    )
        .into_response())
}

/// One CSV line, quoted as the `csv` crate quotes.
fn csv_line<'a>(cells: impl IntoIterator<Item = &'a str>) -> String {
    let mut writer = csv::Writer::from_writer(Vec::new());
    let _ = writer.write_record(cells);
    String::from_utf8(writer.into_inner().unwrap_or_default()).unwrap_or_default()
}

/// The route for [`records_csv`] (which the UI calls too): a bad path answers in the API's shape.
pub async fn records_csv_route(
    state: State<AppState>,
    ApiPath(id): ApiPath<String>,
    params: ApiQuery<CsvParams>,
) -> Result<Response, ApiError> {
    records_csv(state, axum::extract::Path(id), params).await
}

/// Keys and reasons come from the warehouse; a cell starting with `=`, `+`, `-` or `@` would run
/// as a formula when the CSV is opened in a spreadsheet, so it is prefixed with `'`.
fn spreadsheet_safe(text: String) -> String {
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn formulas_are_defused_for_spreadsheets() {
        assert_eq!(
            super::spreadsheet_safe("=HYPERLINK(1)".into()),
            "'=HYPERLINK(1)"
        );
        assert_eq!(
            super::spreadsheet_safe("ada@example.com".into()),
            "ada@example.com"
        );
    }
}
