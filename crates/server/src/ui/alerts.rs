//! The Alerts page: the alerts raised now, the alert channels, the workspace's default alert
//! settings (a form), and the latest deliveries of events with each one's last answer.

use super::connections::connection_rows;
use super::layout::{csrf_field, error_box, page_header, shell, status_badge, time, Page, Section};
use crate::auth::Caller;
use crate::{ApiError, AppState};
use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use ferry_core::AlertSettings;
use ferry_state::DeliveryRecord;
use maud::{html, Markup};

pub async fn page(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Markup, Page> {
    render(&state, &caller, None).await
}

async fn render(state: &AppState, caller: &Caller, problem: Option<&str>) -> Result<Markup, Page> {
    let store = state.store();
    let raised = store.list_raised_alerts().await?;
    let connections = store.list_connections().await?;
    let channels: Vec<_> = connections.iter().filter(|c| c.kind.is_channel()).collect();
    let defaults = ferry_engine::alerts::alert_defaults(store).await?;
    let deliveries = store.list_deliveries(None, 50).await?;
    Ok(shell(
        caller,
        Section::Alerts,
        "Alerts",
        html! {
            (page_header("Alerts", Some("Who is told when a sync fails, rejects rows, runs slow or loses rows, and what they were sent."),
                html! { a.button.primary href="/alerts/channels/new" { "New alert channel" } }))
            @if let Some(problem) = problem { (error_box(problem)) }
            section.card {
                h2 { "Raised now" }
                @if raised.is_empty() {
                    p.muted { "No alert is raised." }
                } @else {
                    table.table {
                        thead { tr { th { "Sync" } th { "Alert" } th { "Since" } th { "Why" } } }
                        tbody {
                            @for alert in &raised {
                                tr {
                                    td { a href={"/syncs/" (alert.sync)} { (alert.sync) } }
                                    td { span.badge.failed { (alert.condition.as_str().replace('_', " ")) } }
                                    td { (time(alert.raised_at)) }
                                    td { (alert.message) }
                                }
                            }
                        }
                    }
                }
            }
            section.card {
                h2 { "Channels" }
                @if channels.is_empty() {
                    p.muted { "No alert channel yet. Add a webhook (signed JSON events), a Slack incoming webhook or an SMTP server." }
                } @else {
                    (connection_rows(caller, &channels))
                }
            }
            section.card {
                h2 { "Default alerts" }
                p.help { "For every sync without alert settings of its own." }
                (defaults_form(caller, defaults.as_ref(), &channels.iter().map(|c| c.name.clone()).collect::<Vec<_>>()))
            }
            section.card {
                h2 { "Deliveries" }
                @if deliveries.is_empty() {
                    p.muted { "Nothing sent yet." }
                } @else {
                    (deliveries_table(&deliveries))
                }
            }
        },
    ))
}

fn defaults_form(caller: &Caller, defaults: Option<&AlertSettings>, channels: &[String]) -> Markup {
    let settings = defaults.cloned().unwrap_or_default();
    let number = |value: Option<u32>| value.map(|v| v.to_string()).unwrap_or_default();
    html! {
        form method="post" action="/alerts/defaults" {
            (csrf_field(caller))
            fieldset.field {
                legend { "Channels" }
                @if channels.is_empty() { p.muted { "Add a channel first." } }
                @for channel in channels {
                    label.choice {
                        input type="checkbox" name="channel" value=(channel) checked[settings.channels.contains(channel)];
                        " " (channel)
                    }
                }
            }
            label.choice {
                input type="checkbox" name="on_failure" value="true" checked[settings.on_failure];
                " When a run fails"
            }
            div.field {
                label for="rejected_over_percent" { "When more rows than this are rejected (%)" }
                input #rejected_over_percent name="rejected_over_percent" inputmode="numeric" value=(number(settings.rejected_over_percent)) placeholder="5";
            }
            div.field {
                label for="slower_than_minutes" { "When a run takes longer than (minutes)" }
                input #slower_than_minutes name="slower_than_minutes" inputmode="numeric" value=(number(settings.slower_than_minutes)) placeholder="60";
            }
            div.field {
                label for="row_drop_over_percent" { "When the model's rows drop by more than (%)" }
                input #row_drop_over_percent name="row_drop_over_percent" inputmode="numeric" value=(number(settings.row_drop_over_percent)) placeholder="50";
            }
            div.form-actions { button.primary type="submit" { "Save defaults" } }
        }
    }
}

pub fn deliveries_table(deliveries: &[DeliveryRecord]) -> Markup {
    html! {
        table.table {
            thead { tr {
                th { "Sent" } th { "Sync" } th { "Event" } th { "Channel" } th { "Status" }
                th.num { "Attempts" } th { "Answer" }
            } }
            tbody {
                @for delivery in deliveries {
                    tr title=(delivery.id) {
                        td { (time(delivery.created_at)) }
                        td { a href={"/syncs/" (delivery.sync)} { (delivery.sync) } }
                        td.mono { (delivery.event_type) }
                        td { (delivery.channel) }
                        td {
                            (status_badge(delivery.status.as_str()))
                            @if let Some(next) = delivery.next_attempt_at { " next try " (time(next)) }
                        }
                        td.num { (delivery.attempts) }
                        td.mono {
                            @if let Some(status) = delivery.answer_status { (status) " " }
                            (delivery.answer.as_deref().unwrap_or("").chars().take(200).collect::<String>())
                        }
                    }
                }
            }
        }
    }
}

/// Saves the default alert settings the form posts.
pub async fn save_defaults(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    let result = async {
        let mut settings = AlertSettings {
            on_failure: false,
            ..AlertSettings::default()
        };
        let number = |field: &str, value: &str| -> Result<Option<u32>, ApiError> {
            let value = value.trim();
            if value.is_empty() {
                return Ok(None);
            }
            value.parse().map(Some).map_err(|_| {
                ApiError::invalid(format!("{field} must be a whole number, not `{value}`"))
            })
        };
        for (field, value) in &pairs {
            match field.as_str() {
                "channel" => settings.channels.push(value.clone()),
                "on_failure" => settings.on_failure = true,
                "rejected_over_percent" => {
                    settings.rejected_over_percent = number("rejected_over_percent", value)?
                }
                "slower_than_minutes" => {
                    settings.slower_than_minutes = number("slower_than_minutes", value)?
                }
                "row_drop_over_percent" => {
                    settings.row_drop_over_percent = number("row_drop_over_percent", value)?
                }
                _ => {}
            }
        }
        ferry_engine::alerts::set_alert_defaults(state.store(), &settings).await?;
        Ok::<_, ApiError>(())
    }
    .await;
    match result {
        Ok(()) => Redirect::to("/alerts").into_response(),
        Err(error) => match render(&state, &caller, Some(&error.message)).await {
            Ok(page) => (axum::http::StatusCode::UNPROCESSABLE_ENTITY, page).into_response(),
            Err(page) => page.into_response(),
        },
    }
}
