//! `POST /hooks/{name}`: orchestrators start a sync or a sequence. A trigger is a connection of
//! kind `dbt_cloud` or `trigger` (`engine/src/trigger_kinds.rs`); its signing secret is the
//! request's authentication, so the route takes no API token and trusts nothing before the
//! signature matched. An unknown trigger and a wrong signature get the same answer, so the
//! endpoint does not tell strangers which names exist.
//!
//! - dbt Cloud signs the body: `Authorization: <hex HMAC-SHA256 of the body>`. Only a
//!   `job.run.completed` event whose `runStatus` is `Success` (and, when the trigger names one,
//!   of its job) starts anything; the rest are answered 200 with the reason, which dbt Cloud
//!   shows in the webhook's deliveries. dbt Cloud waits 10 s for an answer, so the answer does
//!   not wait for the run.
//! - A signed trigger uses ferry's own webhook scheme (Stripe's): `Ferry-Signature:
//!   t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`, refused 5 minutes after `t`.
//!
//! A delivery repeated (dbt Cloud retries; a replayed signed request) starts nothing twice: the
//! run it asks for is queued under a dedupe key made of the event's id or the signature.

use crate::run_registry::StartOutcome;
use crate::{ApiError, AppState};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use ferry_engine::connections::{ConnectionSettings, TriggerTarget};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use std::time::Duration;

/// How old a signed trigger's timestamp may be (or how far ahead of this clock).
pub const SIGNATURE_TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// How long the answer waits for the run to start before saying it is queued (dbt Cloud gives
/// up after 10 s).
const START_WAIT: Duration = Duration::from_secs(5);

/// Why a request was not taken, in the answer's words.
fn refused(status: StatusCode, code: &'static str, message: impl Into<String>) -> Response {
    ApiError::new(status, code, message).into_response()
}

fn unauthenticated() -> Response {
    refused(
        StatusCode::UNAUTHORIZED,
        "invalid_signature",
        "the request's signature does not match this trigger's secret (or no trigger has this \
         name); dbt Cloud signs in `Authorization`, other callers in `Ferry-Signature: t=…,v1=…`",
    )
}

pub async fn receive(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let store = state.store();
    let record = match store.get_connection(&name).await {
        Ok(Some(record)) if record.kind.is_trigger() => record,
        Ok(_) => {
            tracing::info!(trigger = %name, "A request arrived at /hooks for a trigger that does not exist; refused.");
            return unauthenticated();
        }
        Err(error) => return ApiError::from(error).into_response(),
    };
    let settings = match ConnectionSettings::of_record(&record) {
        Ok(settings) => settings,
        Err(error) => return ApiError::from(error).into_response(),
    };
    let secret = match record
        .secret
        .as_ref()
        .map(|secret| store.resolve_secret(secret))
    {
        Some(Ok(secret)) => secret,
        Some(Err(error)) => {
            tracing::warn!(trigger = %name, %error, "A trigger's secret cannot be read; its requests are refused until it can.");
            return refused(
                StatusCode::SERVICE_UNAVAILABLE,
                "secret_unavailable",
                format!("trigger '{name}' cannot check signatures on this server: its secret is not available here (the server's log says why)"),
            );
        }
        None => return unauthenticated(),
    };
    let now = chrono::Utc::now().timestamp();
    let (dedupe, event) = match &settings {
        ConnectionSettings::DbtCloud(dbt) => {
            let signed = headers
                .get(axum::http::header::AUTHORIZATION)
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default();
            if !dbt_cloud_signature_matches(secret.expose(), &body, signed) {
                return unauthenticated();
            }
            let event: Value = match serde_json::from_slice(&body) {
                Ok(event) => event,
                Err(problem) => {
                    return refused(
                        StatusCode::BAD_REQUEST,
                        "invalid_body",
                        format!("the body is not a dbt Cloud event (JSON): {problem}"),
                    )
                }
            };
            if let Some(reason) = dbt_cloud_skip_reason(&event, dbt.job_id.as_deref()) {
                return (
                    StatusCode::OK,
                    Json(json!({"status": "ignored", "reason": reason})),
                )
                    .into_response();
            }
            let event_id = event["eventId"].as_str().unwrap_or_default().to_string();
            (
                (!event_id.is_empty()).then(|| format!("trigger {name} {event_id}")),
                "a dbt Cloud job run that succeeded",
            )
        }
        ConnectionSettings::Trigger(_) => {
            let signed = headers
                .get("ferry-signature")
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default();
            match check_ferry_signature(secret.expose(), &body, signed, now) {
                Ok(v1) => (Some(format!("trigger {name} {v1}")), "a signed request"),
                Err(SignatureProblem::Stale) => {
                    return refused(
                        StatusCode::UNAUTHORIZED,
                        "stale_signature",
                        format!(
                            "the signature's time `t` is more than {} minutes from this server's clock; sign each request when it is sent (and check the clock)",
                            SIGNATURE_TOLERANCE.as_secs() / 60
                        ),
                    )
                }
                Err(SignatureProblem::Mismatch) => return unauthenticated(),
            }
        }
        _ => return unauthenticated(),
    };
    let target = match settings.trigger_target() {
        Some(Ok(target)) => target,
        Some(Err(problem)) => {
            return refused(
                StatusCode::UNPROCESSABLE_ENTITY,
                "trigger_unusable",
                problem,
            )
        }
        None => return unauthenticated(),
    };
    tracing::info!(trigger = %name, target = %target.describe(), "A trigger arrived: {event}.");
    start(&state, &name, &target, dedupe).await
}

/// Starts what the trigger names and answers: 202 started or queued, 200 when the same
/// delivery already started it, 409 paused or running, 404 gone.
async fn start(
    state: &AppState,
    trigger: &str,
    target: &TriggerTarget,
    dedupe: Option<String>,
) -> Response {
    match target {
        TriggerTarget::Sync(sync) => {
            match state.store().get_sync(sync).await {
                Ok(Some(record)) if record.paused_at.is_some() => {
                    return refused(
                        StatusCode::CONFLICT,
                        "paused",
                        format!("sync '{sync}' is paused; trigger '{trigger}' starts it again once it is resumed"),
                    )
                }
                Ok(Some(_)) => {}
                Ok(None) => {
                    return refused(
                        StatusCode::NOT_FOUND,
                        "not_found",
                        format!("trigger '{trigger}' runs sync '{sync}', which does not exist; create it or change the trigger"),
                    )
                }
                Err(error) => return ApiError::from(error).into_response(),
            }
            let started = tokio::time::timeout(
                START_WAIT,
                state
                    .runs()
                    .start(state.store().clone(), sync, false, false, "trigger", dedupe),
            )
            .await;
            match started {
                Ok(Ok(StartOutcome::Started(run_id))) => (
                    StatusCode::ACCEPTED,
                    Json(json!({"status": "started", "sync": sync, "run_id": run_id})),
                )
                    .into_response(),
                Ok(Ok(StartOutcome::Queued(request))) => (
                    StatusCode::ACCEPTED,
                    Json(json!({"status": "queued", "sync": sync, "request": request.id})),
                )
                    .into_response(),
                Ok(Ok(StartOutcome::AlreadyQueued)) => (
                    StatusCode::OK,
                    Json(json!({"status": "already_started", "sync": sync,
                        "reason": "this delivery was received before and its run was started then"})),
                )
                    .into_response(),
                Ok(Err(error)) => error.into_response(),
                // Queued, and waiting for a server with room: the queue runs it.
                Err(_) => (
                    StatusCode::ACCEPTED,
                    Json(json!({"status": "queued", "sync": sync})),
                )
                    .into_response(),
            }
        }
        TriggerTarget::Sequence(sequence) => {
            match crate::sequences::start(state, sequence, "trigger", dedupe).await {
                Ok(Some(run)) => (
                    StatusCode::ACCEPTED,
                    Json(json!({"status": "started", "sequence": sequence, "sequence_run_id": run.id})),
                )
                    .into_response(),
                Ok(None) => (
                    StatusCode::OK,
                    Json(json!({"status": "already_started", "sequence": sequence,
                        "reason": "this delivery was received before and its sequence was started then"})),
                )
                    .into_response(),
                Err(error) => error.into_response(),
            }
        }
    }
}

/// Whether `header` is the hex HMAC-SHA256 of `body` keyed with `secret`, as dbt Cloud signs
/// (compared in constant time).
pub fn dbt_cloud_signature_matches(secret: &str, body: &[u8], header: &str) -> bool {
    let Ok(expected) = hex::decode(header.trim()) else {
        return false;
    };
    let mut mac =
        Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

/// Why a dbt Cloud event starts nothing, or `None` when it is a successful run of the job.
pub fn dbt_cloud_skip_reason(event: &Value, job_id: Option<&str>) -> Option<String> {
    let kind = event["eventType"].as_str().unwrap_or("?");
    if kind != "job.run.completed" {
        return Some(format!(
            "the event is {kind}; only job.run.completed starts anything"
        ));
    }
    let data = &event["data"];
    let job = match &data["jobId"] {
        Value::String(text) => text.clone(),
        Value::Number(number) => number.to_string(),
        _ => String::new(),
    };
    if let Some(wanted) = job_id {
        if job != wanted {
            return Some(format!(
                "the run is of dbt Cloud job {job}; this trigger follows job {wanted}"
            ));
        }
    }
    let status = data["runStatus"].as_str().unwrap_or("?");
    if status != "Success" {
        return Some(format!(
            "the dbt Cloud run ended {status}; only a run that succeeded starts anything"
        ));
    }
    None
}

#[derive(Debug, PartialEq, Eq)]
pub enum SignatureProblem {
    Mismatch,
    Stale,
}

/// Checks `Ferry-Signature: t=…,v1=…` against `body` at `now` (unix seconds); returns the
/// matching `v1`.
pub fn check_ferry_signature(
    secret: &str,
    body: &[u8],
    header: &str,
    now: i64,
) -> Result<String, SignatureProblem> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => timestamp = value.parse::<i64>().ok(),
            Some(("v1", value)) => signatures.push(value.to_string()),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureProblem::Mismatch)?;
    for signature in signatures {
        let Ok(expected) = hex::decode(&signature) else {
            continue;
        };
        let mut mac =
            Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        if mac.verify_slice(&expected).is_ok() {
            if (now - timestamp).unsigned_abs() > SIGNATURE_TOLERANCE.as_secs() {
                return Err(SignatureProblem::Stale);
            }
            return Ok(signature);
        }
    }
    Err(SignatureProblem::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hmac_hex(secret: &str, message: &[u8]) -> String {
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(message);
        hex::encode(mac.finalize().into_bytes())
    }

    #[test]
    fn dbt_clouds_signature_is_the_hex_hmac_of_the_body() {
        let body = br#"{"eventType":"job.run.completed"}"#;
        // Checked against Python: hmac.new(b"dbt_secret", body, sha256).hexdigest()
        let signed = hmac_hex("dbt_secret", body);
        assert!(dbt_cloud_signature_matches("dbt_secret", body, &signed));
        assert!(dbt_cloud_signature_matches(
            "dbt_secret",
            body,
            &format!(" {signed} ")
        ));
        assert!(!dbt_cloud_signature_matches("other", body, &signed));
        assert!(!dbt_cloud_signature_matches("dbt_secret", b"{}", &signed));
        assert!(!dbt_cloud_signature_matches("dbt_secret", body, "Bearer x"));
        assert!(!dbt_cloud_signature_matches("dbt_secret", body, ""));
    }

    #[test]
    fn only_a_successful_run_of_the_followed_job_starts_anything() {
        let event = |kind: &str, job: Value, status: &str| json!({"eventId": "wev_1", "eventType": kind, "data": {"jobId": job, "runStatus": status}});
        let cases = [
            (
                event("job.run.completed", json!("123"), "Success"),
                Some("123"),
                None,
            ),
            (
                event("job.run.completed", json!(123), "Success"),
                Some("123"),
                None,
            ),
            (
                event("job.run.completed", json!("9"), "Success"),
                None,
                None,
            ),
            (
                event("job.run.started", json!("123"), "Running"),
                Some("123"),
                Some("the event is job.run.started; only job.run.completed starts anything"),
            ),
            (
                event("job.run.completed", json!("124"), "Success"),
                Some("123"),
                Some("the run is of dbt Cloud job 124; this trigger follows job 123"),
            ),
            (
                event("job.run.completed", json!("123"), "Errored"),
                Some("123"),
                Some("the dbt Cloud run ended Errored; only a run that succeeded starts anything"),
            ),
        ];
        for (event, job, expect) in cases {
            assert_eq!(
                dbt_cloud_skip_reason(&event, job).as_deref(),
                expect,
                "{event}"
            );
        }
    }

    #[test]
    fn a_ferry_signature_matches_within_five_minutes_only() {
        let body = br#"{"run":"now"}"#;
        let t = 1_733_212_800_i64;
        let v1 = hmac_hex("s3cret", format!("{t}.{{\"run\":\"now\"}}").as_bytes());
        let header = format!("t={t},v1={v1}");
        assert_eq!(
            check_ferry_signature("s3cret", body, &header, t + 10),
            Ok(v1.clone())
        );
        // A second v1 (a secret being rotated) may come first.
        assert_eq!(
            check_ferry_signature("s3cret", body, &format!("t={t},v1=00ff,v1={v1}"), t),
            Ok(v1.clone())
        );
        assert_eq!(
            check_ferry_signature("s3cret", body, &header, t + 301),
            Err(SignatureProblem::Stale)
        );
        assert_eq!(
            check_ferry_signature("wrong", body, &header, t),
            Err(SignatureProblem::Mismatch)
        );
        assert_eq!(
            check_ferry_signature("s3cret", b"{}", &header, t),
            Err(SignatureProblem::Mismatch)
        );
        assert_eq!(
            check_ferry_signature("s3cret", body, &format!("v1={v1}"), t),
            Err(SignatureProblem::Mismatch)
        );
    }
}
