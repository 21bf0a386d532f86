//! `/api/v1/alerts`: the workspace's default alert settings, the alerts raised now, and the
//! deliveries of events to alert channels with each one's last answer.

use super::ApiQuery;
use crate::{ApiError, AppState};
use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use ferry_core::AlertSettings;
use ferry_state::{DeliveryRecord, RaisedAlert};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AlertsView {
    /// The settings of every sync without alert settings of its own; absent: none.
    pub defaults: Option<AlertSettings>,
    /// The alerts raised now, across syncs.
    pub raised: Vec<RaisedAlertView>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RaisedAlertView {
    pub sync: String,
    /// `run_failed`, `rejected_rows`, `slow_run` or `row_count_drop`.
    pub condition: String,
    pub message: String,
    pub raised_at: DateTime<Utc>,
}

impl From<RaisedAlert> for RaisedAlertView {
    fn from(alert: RaisedAlert) -> Self {
        RaisedAlertView {
            sync: alert.sync,
            condition: alert.condition.as_str().to_string(),
            message: alert.message,
            raised_at: alert.raised_at,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeliveryView {
    pub id: String,
    /// The event's id (`evt_…`), the same in its body.
    pub event_id: String,
    /// `sync.started`, `sync.completed`, `sync.failed`, `sync.alert.raised`,
    /// `sync.alert.resolved`.
    pub event_type: String,
    pub sync: String,
    pub run_id: Option<String>,
    /// The alert channel (connection) it is for.
    pub channel: String,
    /// `pending` (to be tried, again, at `next_attempt_at`), `delivered` or `failed` (given
    /// up).
    pub status: String,
    pub attempts: u32,
    pub created_at: DateTime<Utc>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    /// The last attempt's HTTP status or SMTP reply code.
    pub answer_status: Option<u16>,
    /// The last attempt's answer (its first 2,000 characters) or what went wrong.
    pub answer: Option<String>,
    /// The event as sent.
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
}

impl From<DeliveryRecord> for DeliveryView {
    fn from(delivery: DeliveryRecord) -> Self {
        DeliveryView {
            payload: serde_json::from_str(&delivery.payload)
                .unwrap_or(serde_json::Value::String(delivery.payload)),
            id: delivery.id,
            event_id: delivery.event_id,
            event_type: delivery.event_type,
            sync: delivery.sync,
            run_id: delivery.run_id,
            channel: delivery.channel,
            status: delivery.status.as_str().to_string(),
            attempts: delivery.attempts,
            created_at: delivery.created_at,
            next_attempt_at: delivery.next_attempt_at,
            last_attempt_at: delivery.last_attempt_at,
            answer_status: delivery.answer_status,
            answer: delivery.answer,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeliveryList {
    pub deliveries: Vec<DeliveryView>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveryListParams {
    /// Only this sync's deliveries.
    pub sync: Option<String>,
    /// At most this many, newest first (default 50, at most 500).
    pub limit: Option<u32>,
}

#[utoipa::path(get, path = "/api/v1/alerts", tag = "alerts",
    responses((status = 200, body = AlertsView)))]
pub async fn show(State(state): State<AppState>) -> Result<Json<AlertsView>, ApiError> {
    let defaults = ferry_engine::alerts::alert_defaults(state.store()).await?;
    let raised = state.store().list_raised_alerts().await?;
    Ok(Json(AlertsView {
        defaults,
        raised: raised.into_iter().map(Into::into).collect(),
    }))
}

#[utoipa::path(put, path = "/api/v1/alerts/defaults", tag = "alerts", request_body = AlertSettings,
    responses((status = 200, body = AlertSettings),
        (status = 422, description = "a figure out of range or a channel that is not an alert channel", body = crate::error::ErrorBody)))]
pub async fn put_defaults(
    State(state): State<AppState>,
    super::ApiJson(settings): super::ApiJson<AlertSettings>,
) -> Result<Json<AlertSettings>, ApiError> {
    ferry_engine::alerts::set_alert_defaults(state.store(), &settings).await?;
    Ok(Json(settings))
}

#[utoipa::path(get, path = "/api/v1/deliveries", tag = "alerts", params(DeliveryListParams),
    responses((status = 200, body = DeliveryList)))]
pub async fn deliveries(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<DeliveryListParams>,
) -> Result<Json<DeliveryList>, ApiError> {
    let limit = params.limit.unwrap_or(50).min(500);
    let deliveries = state
        .store()
        .list_deliveries(params.sync.as_deref(), limit)
        .await?;
    Ok(Json(DeliveryList {
        deliveries: deliveries.into_iter().map(Into::into).collect(),
    }))
}
