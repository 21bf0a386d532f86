//! Alerts and lifecycle events around runs: what is sent to whom when a run starts and ends,
//! and the delivery of it.
//!
//! Events are not sent from the run itself. They are written to the workspace's delivery
//! queue (`deliveries`), one row per event and channel, and sent from there by
//! [`deliver_due`]: at once by whoever ran the sync (the CLI after its run, the server's
//! delivery loop), and again later, with backoff, when a channel did not take one. So a
//! receiver that is down loses nothing, a run never waits on a slow receiver, and each
//! delivery keeps its answer for the API and the UI to show.
//!
//! Who hears what:
//! - a webhook channel receives the events it subscribes to (`events`, all by default), for
//!   every sync, like Census's workspace webhooks;
//! - the channels a sync's alert settings name (webhook, Slack or email) receive its alerts
//!   (`sync.alert.raised`, `sync.alert.resolved`);
//! - a channel both ways receives each event once.

use crate::channel_kinds::EmailChannelSettings;
use crate::connections::ConnectionSettings;
use crate::EngineError;
use chrono::{Duration, Utc};
use ferry_core::{
    evaluate_alerts, AlertChange, AlertSettings, EventKind, FinishedRun, RunStatus, Secret,
};
use ferry_notify::{email, slack, webhook, ChannelAnswer, ChannelError};
use ferry_state::{
    DeliveryAttempt, DeliveryRecord, DeliveryStatus, NewDelivery, RunRecord, StateStore, SyncRecord,
};
use serde_json::json;

/// The workspace setting that holds the alert settings of every sync that has none of its own.
pub const ALERT_DEFAULTS: &str = ferry_state::ALERT_DEFAULTS_SETTING;

/// How long after each failed attempt a delivery is tried again, in seconds; once all are
/// spent it is given up (failed), about nine hours after the first. `FERRY_DELIVERY_RETRIES`
/// (seconds separated by commas) replaces it.
const RETRY_AFTER_SECONDS: [i64; 5] = [60, 300, 1_800, 7_200, 21_600];

/// The waits between a delivery's attempts.
fn retry_waits() -> Vec<i64> {
    match std::env::var("FERRY_DELIVERY_RETRIES") {
        Ok(text) => {
            let waits: Result<Vec<i64>, _> = text
                .split(',')
                .map(|part| part.trim().parse::<i64>())
                .collect();
            match waits {
                Ok(waits) if waits.iter().all(|wait| *wait >= 0) => waits,
                _ => {
                    tracing::warn!(value = %text, "FERRY_DELIVERY_RETRIES is not whole seconds separated by commas (`60,300,1800`); the default waits apply.");
                    RETRY_AFTER_SECONDS.to_vec()
                }
            }
        }
        Err(_) => RETRY_AFTER_SECONDS.to_vec(),
    }
}

/// How many due deliveries one pass sends.
const DELIVERIES_PER_PASS: u32 = 100;

/// The workspace's default alert settings, if set.
pub async fn alert_defaults(store: &StateStore) -> Result<Option<AlertSettings>, EngineError> {
    let Some(value) = store.get_workspace_setting(ALERT_DEFAULTS).await? else {
        return Ok(None);
    };
    serde_json::from_value(value).map(Some).map_err(|error| {
        EngineError::Config(format!(
            "the workspace's default alert settings cannot be read ({error}); set them again \
             with `ferry alerts defaults`"
        ))
    })
}

/// Saves the workspace's default alert settings, checked like a sync's.
pub async fn set_alert_defaults(
    store: &StateStore,
    settings: &AlertSettings,
) -> Result<(), EngineError> {
    check_alert_settings(store, settings).await?;
    let value = serde_json::to_value(settings).expect("alert settings serialize");
    store.put_workspace_setting(ALERT_DEFAULTS, &value).await?;
    Ok(())
}

/// Checks alert settings before they are saved (a sync's or the workspace's defaults): the
/// figures, and that every channel named exists and is an alert channel.
pub async fn check_alert_settings(
    store: &StateStore,
    settings: &AlertSettings,
) -> Result<(), EngineError> {
    let mut problems = settings.problems();
    for channel in &settings.channels {
        match store.get_connection(channel).await? {
            None => problems.push(format!(
                "alerts.channels names `{channel}`, which is not a connection; add it with \
                 `ferry connect webhook|slack|email {channel} …`"
            )),
            Some(connection) if !connection.kind.is_channel() => problems.push(format!(
                "alerts.channels names `{channel}`, a {} connection; name a webhook, slack or \
                 email connection",
                connection.kind
            )),
            Some(_) => {}
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(EngineError::Config(problems.join("; ")))
    }
}

/// The alert settings a sync runs with: its own, else the workspace's defaults, else none.
pub async fn effective_alerts(
    store: &StateStore,
    sync: &SyncRecord,
) -> Result<Option<AlertSettings>, EngineError> {
    match &sync.spec.alerts {
        Some(own) => Ok(Some(own.clone())),
        None => alert_defaults(store).await,
    }
}

/// Queues `sync.started` for the webhooks that subscribe to it. Never fails the run: a
/// problem is logged.
pub async fn run_started(store: &StateStore, sync: &SyncRecord, run: &RunRecord) {
    let event = event_body(EventKind::SyncStarted, sync, run, None);
    if let Err(error) = enqueue(
        store,
        sync,
        Some(&run.id),
        &[(EventKind::SyncStarted, event)],
    )
    .await
    {
        tracing::warn!(%error, "Could not queue the sync.started event; the run goes on.");
    }
}

/// After a run is recorded finished: raises and resolves its sync's alerts, and queues
/// `sync.completed` or `sync.failed` and each alert change for the channels that hear them.
/// Never fails the run: a problem is logged.
pub async fn run_finished(store: &StateStore, sync: &SyncRecord, run: &RunRecord) {
    if let Err(error) = run_finished_inner(store, sync, run).await {
        tracing::warn!(%error, "Could not evaluate the sync's alerts or queue its events.");
    }
}

async fn run_finished_inner(
    store: &StateStore,
    sync: &SyncRecord,
    run: &RunRecord,
) -> Result<(), EngineError> {
    let mut events = Vec::new();
    match run.status {
        RunStatus::Completed => events.push((
            EventKind::SyncCompleted,
            event_body(EventKind::SyncCompleted, sync, run, None),
        )),
        RunStatus::Failed => events.push((
            EventKind::SyncFailed,
            event_body(EventKind::SyncFailed, sync, run, None),
        )),
        _ => {}
    }
    let settings = effective_alerts(store, sync)
        .await?
        .unwrap_or(AlertSettings {
            on_failure: false,
            ..AlertSettings::default()
        });
    let raised: Vec<_> = store
        .raised_alerts(&sync.name)
        .await?
        .into_iter()
        .map(|alert| alert.condition)
        .collect();
    let previous_rows = store
        .list_runs(Some(&sync.name), 50)
        .await?
        .into_iter()
        .find(|earlier| earlier.id != run.id && earlier.status == RunStatus::Completed)
        .map(|earlier| earlier.counts.rows);
    let finished_at = run.finished_at.unwrap_or_else(Utc::now);
    let finished = FinishedRun {
        status: run.status,
        counts: run.counts,
        seconds: (finished_at - run.started_at).num_milliseconds() as f64 / 1000.0,
        error: run.error.clone(),
    };
    for change in evaluate_alerts(&settings, &finished, previous_rows, &raised) {
        let kind = match &change {
            AlertChange::Raised {
                condition, message, ..
            } => {
                store
                    .raise_alert(&sync.name, *condition, message, finished_at)
                    .await?;
                EventKind::AlertRaised
            }
            AlertChange::Resolved { condition, .. } => {
                store.resolve_alert(&sync.name, *condition).await?;
                EventKind::AlertResolved
            }
        };
        tracing::info!(
            condition = change.condition().as_str(),
            event = kind.as_str(),
            "{}",
            change.message()
        );
        events.push((kind, event_body(kind, sync, run, Some(&change))));
    }
    enqueue_with(store, sync, Some(&run.id), &events, &settings.channels).await
}

async fn enqueue(
    store: &StateStore,
    sync: &SyncRecord,
    run_id: Option<&str>,
    events: &[(EventKind, serde_json::Value)],
) -> Result<(), EngineError> {
    let channels = effective_alerts(store, sync)
        .await?
        .map(|settings| settings.channels)
        .unwrap_or_default();
    enqueue_with(store, sync, run_id, events, &channels).await
}

/// One delivery per event and channel that hears it.
async fn enqueue_with(
    store: &StateStore,
    sync: &SyncRecord,
    run_id: Option<&str>,
    events: &[(EventKind, serde_json::Value)],
    alert_channels: &[String],
) -> Result<(), EngineError> {
    if events.is_empty() {
        return Ok(());
    }
    let connections: Vec<_> = store
        .list_connections()
        .await?
        .into_iter()
        .filter(|connection| connection.kind.is_channel())
        .collect();
    let mut deliveries = Vec::new();
    for (kind, body) in events {
        let is_alert = matches!(kind, EventKind::AlertRaised | EventKind::AlertResolved);
        for connection in &connections {
            let subscribed = match ConnectionSettings::of_record(connection) {
                Ok(ConnectionSettings::Webhook(settings)) => settings.events().contains(kind),
                Ok(_) => false,
                Err(error) => {
                    tracing::warn!(channel = %connection.name, %error, "An alert channel's settings cannot be read; it is skipped.");
                    continue;
                }
            };
            let named = is_alert && alert_channels.contains(&connection.name);
            if subscribed || named {
                deliveries.push(NewDelivery {
                    event_id: body["id"].as_str().unwrap_or_default().to_string(),
                    event_type: kind.as_str().to_string(),
                    sync: sync.name.clone(),
                    run_id: run_id.map(str::to_string),
                    channel: connection.name.clone(),
                    payload: body.to_string(),
                });
            }
        }
    }
    if !deliveries.is_empty() {
        store.enqueue_deliveries(&deliveries, Utc::now()).await?;
    }
    Ok(())
}

/// An event as every channel receives it (a webhook as its body; Slack and email rewrite it
/// into words).
fn event_body(
    kind: EventKind,
    sync: &SyncRecord,
    run: &RunRecord,
    alert: Option<&AlertChange>,
) -> serde_json::Value {
    let mut data = json!({
        "sync": {
            "name": sync.name,
            "model": sync.spec.model,
            "destination": sync.spec.destination,
            "object": sync.spec.object.as_str(),
        },
        "run": {
            "id": run.id,
            "status": run.status.as_str(),
            "started_at": run.started_at,
            "finished_at": run.finished_at,
            "counts": run.counts,
            "error": run.error,
        },
    });
    if let Some(change) = alert {
        data["alert"] = json!({
            "condition": change.condition().as_str(),
            "state": if matches!(change, AlertChange::Raised { .. }) { "raised" } else { "resolved" },
            "message": change.message(),
        });
    }
    json!({
        "id": format!("evt_{}", random_hex()),
        "type": kind.as_str(),
        "created_at": Utc::now(),
        "data": data,
    })
}

fn random_hex() -> String {
    use rand::Rng;
    let bytes: [u8; 12] = rand::rng().random();
    hex::encode(bytes)
}

/// Sends the deliveries that are due, one pass; returns how many were attempted. Each
/// attempt's answer is kept; one that fails is tried again after a longer wait, and given up
/// after the last.
pub async fn deliver_due(store: &StateStore) -> Result<usize, EngineError> {
    // Claimed for long enough to try each once (a few quick retries of 10 s at most each).
    let now = Utc::now();
    let due = store
        .claim_due_deliveries(now, DELIVERIES_PER_PASS, now + Duration::minutes(10))
        .await?;
    let waits = retry_waits();
    for delivery in &due {
        let result = send(store, delivery).await;
        let now = Utc::now();
        let attempt = match result {
            Ok(answer) => DeliveryAttempt {
                at: now,
                status: DeliveryStatus::Delivered,
                next_attempt_at: None,
                answer_status: answer.status,
                answer: answer.text,
            },
            Err(error) => {
                let wait = waits.get(delivery.attempts as usize);
                let (status, next_attempt_at) = match wait {
                    Some(seconds) if error.retryable => (
                        DeliveryStatus::Pending,
                        Some(now + Duration::seconds(*seconds)),
                    ),
                    _ => (DeliveryStatus::Failed, None),
                };
                tracing::warn!(
                    channel = %delivery.channel,
                    event = %delivery.event_type,
                    delivery = %delivery.id,
                    retry_at = ?next_attempt_at,
                    "The alert channel did not take the event: {}",
                    error.message
                );
                DeliveryAttempt {
                    at: now,
                    status,
                    next_attempt_at,
                    answer_status: None,
                    answer: error.message,
                }
            }
        };
        store
            .record_delivery_attempt(&delivery.id, &attempt)
            .await?;
    }
    Ok(due.len())
}

async fn send(
    store: &StateStore,
    delivery: &DeliveryRecord,
) -> Result<ChannelAnswer, ChannelError> {
    let connection = store
        .get_connection(&delivery.channel)
        .await
        .map_err(|error| ChannelError::retryable(error.to_string()))?
        .ok_or_else(|| {
            ChannelError::permanent(format!(
                "the alert channel '{}' was removed",
                delivery.channel
            ))
        })?;
    let settings = ConnectionSettings::of_record(&connection)
        .map_err(|error| ChannelError::permanent(error.to_string()))?;
    let secret = match &connection.secret {
        Some(secret) => Some(
            store
                .resolve_secret(secret)
                .map_err(|error| ChannelError::retryable(error.to_string()))?,
        ),
        None => None,
    };
    let event: serde_json::Value = serde_json::from_str(&delivery.payload).map_err(|error| {
        ChannelError::permanent(format!("the stored event is unreadable: {error}"))
    })?;
    send_to(
        &settings,
        secret,
        &delivery.id,
        &delivery.event_type,
        &delivery.payload,
        &event,
    )
    .await
}

async fn send_to(
    settings: &ConnectionSettings,
    secret: Option<Secret>,
    delivery_id: &str,
    event_type: &str,
    payload: &str,
    event: &serde_json::Value,
) -> Result<ChannelAnswer, ChannelError> {
    let needs_secret = |what: &str| {
        secret.clone().ok_or_else(|| {
            ChannelError::permanent(format!(
                "the channel has no {what}; connect it again with it"
            ))
        })
    };
    match settings {
        ConnectionSettings::Webhook(webhook_settings) => {
            let signing_secret = needs_secret("signing secret")?;
            let client = ferry_notify::http_client("webhook")?;
            webhook::send_webhook(
                &client,
                &webhook::WebhookDelivery {
                    url: &webhook_settings.url,
                    signing_secret: &signing_secret,
                    event_type,
                    delivery_id,
                    body: payload,
                },
            )
            .await
        }
        ConnectionSettings::Slack(_) => {
            let url = needs_secret("webhook URL")?;
            let client = ferry_notify::http_client("slack")?;
            let (title, details) = notice_words(event);
            let body = slack::slack_body(&slack::SlackMessage {
                title: &title,
                details: &details,
                link: None,
            });
            slack::send_slack(&client, &url, &body).await
        }
        ConnectionSettings::Email(email_settings) => {
            let (title, details) = notice_words(event);
            let text = format!(
                "{title}\n\n{}\n\n-- \nSent by ferry. Event {}, delivery {delivery_id}.\n",
                details.join("\n"),
                event["id"].as_str().unwrap_or("")
            );
            let server_answer = email::send_email(
                &email_settings.email_settings(secret),
                &email::EmailMessage {
                    subject: format!("[ferry] {title}"),
                    text,
                },
            )
            .await?;
            Ok(ChannelAnswer {
                status: server_answer.get(..3).and_then(|code| code.parse().ok()),
                text: ferry_notify::cut(&server_answer),
            })
        }
        _ => Err(ChannelError::permanent(
            "the connection is not an alert channel (webhook, slack or email)",
        )),
    }
}

/// An event in words, for Slack and email: a title and the lines under it.
pub fn notice_words(event: &serde_json::Value) -> (String, Vec<String>) {
    let data = &event["data"];
    let sync = data["sync"]["name"].as_str().unwrap_or("?");
    let run = &data["run"];
    let run_id = run["id"].as_str().unwrap_or("?");
    let counts = &run["counts"];
    let count = |field: &str| counts[field].as_u64().unwrap_or(0);
    let summary = format!(
        "{} rows: {} created, {} updated, {} unchanged, {} rejected, {} failed",
        count("rows"),
        count("created"),
        count("updated"),
        count("unchanged"),
        count("rejected"),
        count("failed")
    );
    let condition_words = |condition: &str| match condition {
        "run_failed" => "a failed run",
        "rejected_rows" => "rejected rows",
        "slow_run" => "a slow run",
        "row_count_drop" => "a drop in the model's rows",
        _ => "an alert",
    };
    let alert = &data["alert"];
    match event["type"].as_str().unwrap_or("") {
        "sync.started" => (
            format!("Sync {sync} started"),
            vec![format!("Run {run_id}")],
        ),
        "sync.completed" => (
            format!("Sync {sync} completed"),
            vec![summary, format!("Run {run_id}")],
        ),
        "sync.failed" => (
            format!("Sync {sync} failed"),
            vec![
                run["error"]
                    .as_str()
                    .unwrap_or("no reason was recorded")
                    .to_string(),
                summary,
                format!("Run {run_id}"),
            ],
        ),
        "sync.alert.raised" => (
            format!(
                "Alert on sync {sync}: {}",
                condition_words(alert["condition"].as_str().unwrap_or(""))
            ),
            vec![
                alert["message"].as_str().unwrap_or("").to_string(),
                format!("Run {run_id}"),
            ],
        ),
        "sync.alert.resolved" => (
            format!(
                "Resolved on sync {sync}: {}",
                condition_words(alert["condition"].as_str().unwrap_or(""))
            ),
            vec![
                alert["message"].as_str().unwrap_or("").to_string(),
                format!("Run {run_id}"),
            ],
        ),
        other => (
            format!("Sync {sync}: {other}"),
            vec![format!("Run {run_id}")],
        ),
    }
}

/// The connection test of an alert channel: a webhook receives a signed `ping` (it must answer
/// 2xx), Slack a message saying the channel is connected, an SMTP server is signed in to.
pub(crate) async fn test_channel(
    settings: &ConnectionSettings,
    connection: &str,
    secret: Option<Secret>,
) -> Result<(), EngineError> {
    let failed = |error: ChannelError| EngineError::ConnectionTest(error.message);
    match settings {
        ConnectionSettings::Email(email_settings) => {
            let email_settings: &EmailChannelSettings = email_settings;
            email_settings
                .check(secret.clone())
                .map_err(EngineError::Config)?;
            email::test_email(&email_settings.email_settings(secret))
                .await
                .map_err(failed)
        }
        ConnectionSettings::Webhook(_) => {
            let ping = json!({
                "id": format!("evt_{}", random_hex()),
                "type": "ping",
                "created_at": Utc::now(),
                "data": {"channel": connection},
            });
            send_to(
                settings,
                secret,
                "dlv_ping",
                "ping",
                &ping.to_string(),
                &ping,
            )
            .await
            .map(|_| ())
            .map_err(failed)
        }
        ConnectionSettings::Slack(_) => {
            let client = ferry_notify::http_client("slack").map_err(failed)?;
            let url = secret.ok_or_else(|| {
                EngineError::Config(
                    "a Slack connection needs its incoming webhook's URL".to_string(),
                )
            })?;
            let body = slack::slack_body(&slack::SlackMessage {
                title: "ferry is connected to this channel",
                details: &[format!(
                    "Alerts of syncs that name the channel '{connection}' will be posted here."
                )],
                link: None,
            });
            slack::send_slack(&client, &url, &body)
                .await
                .map(|_| ())
                .map_err(failed)
        }
        _ => Err(EngineError::Config(format!(
            "connection '{connection}' is not an alert channel"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_read_as_words() {
        let event = json!({
            "id": "evt_1",
            "type": "sync.alert.raised",
            "data": {
                "sync": {"name": "customers"},
                "run": {"id": "run_1", "counts": {"rows": 10, "rejected": 6}},
                "alert": {"condition": "rejected_rows", "state": "raised", "message": "6 of 10 rows rejected (60%), over the alert's 5%"}
            }
        });
        let (title, details) = notice_words(&event);
        assert_eq!(title, "Alert on sync customers: rejected rows");
        assert_eq!(
            details[0],
            "6 of 10 rows rejected (60%), over the alert's 5%"
        );
        let failed = json!({"type": "sync.failed", "data": {"sync": {"name": "s"}, "run": {"id": "run_2", "error": "boom", "counts": {}}}});
        assert_eq!(notice_words(&failed).1[0], "boom");
    }
}
