//! Sequences: the list, a form to declare one (its syncs in order, when it stops, its
//! schedule), and a sequence's page with its steps, its Run button and its latest runs, each
//! step linked to its run.

use super::layout::{
    csrf_field, empty_state, error_box, page_header, shell, status_badge, time, Page, Section,
    NAME_INPUT_PATTERN, NAME_INPUT_TITLE,
};
use crate::api::sequences::{SequenceRunView, SequenceView};
use crate::auth::Caller;
use crate::{ApiError, AppState};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Extension;
use chrono::Utc;
use ferry_core::SequenceSpec;
use maud::{html, Markup};

pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Markup, Page> {
    let mut sequences = Vec::new();
    for record in state.store().list_sequences().await? {
        sequences.push(SequenceView::load(&state, &record).await?);
    }
    let connections = state.store().list_connections().await?;
    let triggers: Vec<_> = connections.iter().filter(|c| c.kind.is_trigger()).collect();
    Ok(shell(
        &caller,
        Section::Sequences,
        "Sequences",
        html! {
            (page_header("Sequences", Some("Syncs run one after another: products, then prices, then invoices. A step starts when the one before it completed."),
                html! { a.button.primary href="/sequences/new" { "New sequence" } }))
            @if sequences.is_empty() {
                (empty_state("No sequence yet", "A sequence runs syncs in order and stops when a step fails or rejects too many rows, so prices never run against products that did not make it.", "/sequences/new", "New sequence"))
            } @else {
                section.card {
                    table.table {
                        thead { tr { th { "Sequence" } th { "Steps" } th { "Schedule" } th { "Last run" } th { "Next run" } } }
                        tbody {
                            @for sequence in &sequences {
                                tr {
                                    td { a href={"/sequences/" (sequence.name)} { (sequence.name) } }
                                    td { (sequence.spec.steps.join(" → ")) }
                                    td { @if let Some(schedule) = &sequence.spec.schedule { (schedule.to_string()) } @else { "manual" } }
                                    td { @if let Some(run) = &sequence.last_run { (status_badge(run.status.as_str())) " " (time(run.started_at)) } @else { span.muted { "never" } } }
                                    td { @if let Some(next) = sequence.next_run_at { (time(next)) } @else { "—" } }
                                }
                            }
                        }
                    }
                }
            }
            section.card #triggers {
                h2 { "Triggers" }
                p.help { "Orchestrators start a sync or a sequence by POSTing to " code { "/hooks/NAME" } " on this server: a dbt Cloud job's webhook (job.run.completed), or a request signed with the trigger's secret (Airflow, Dagster, a script). Serve ferry where they reach it, with " code { "--public-host" } "." }
                @if triggers.is_empty() {
                    p.muted { "No trigger yet." }
                } @else {
                    (super::connections::connection_rows(&caller, &triggers))
                    ul.hooks {
                        @for trigger in &triggers {
                            li { code { "POST /hooks/" (trigger.name) } }
                        }
                    }
                }
                a.button href="/triggers/new" { "New trigger" }
            }
        },
    ))
}

pub async fn new(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Markup, Page> {
    form_page(&state, &caller, None, &SequenceForm::default(), None).await
}

pub async fn edit(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Markup, Page> {
    let record = require(&state, &name).await?;
    let form = SequenceForm {
        name: record.name.clone(),
        steps: record.spec.steps.clone(),
        stop_percent: record
            .spec
            .stop_when_rejected_over_percent
            .map(|p| p.to_string())
            .unwrap_or_default(),
        schedule: record
            .spec
            .schedule
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
    };
    form_page(&state, &caller, Some(&name), &form, None).await
}

/// What the form posts: the name, the steps (a select per step; empty ones ignored), the
/// stop percent and the schedule.
#[derive(Default)]
struct SequenceForm {
    name: String,
    steps: Vec<String>,
    stop_percent: String,
    schedule: String,
}

impl SequenceForm {
    fn parse(body: &[u8]) -> Result<SequenceForm, Page> {
        let fields =
            crate::form::parse_form(body).map_err(|problem| Page::bad_request(problem.0))?;
        let mut form = SequenceForm::default();
        for (field, value) in fields {
            let value = value.trim().to_string();
            match field.as_str() {
                "name" => form.name = value,
                "step" if !value.is_empty() => form.steps.push(value),
                "stop_percent" => form.stop_percent = value,
                "schedule" => form.schedule = value,
                _ => {}
            }
        }
        Ok(form)
    }

    fn to_spec(&self) -> Result<SequenceSpec, ApiError> {
        let stop_when_rejected_over_percent = match self.stop_percent.as_str() {
            "" => None,
            text => Some(text.parse().map_err(|_| {
                ApiError::invalid(format!(
                    "stop when rejected over must be a whole percent from 0 to 100, not `{text}`"
                ))
            })?),
        };
        let schedule = match self.schedule.as_str() {
            "" => None,
            text => Some(
                ferry_core::Schedule::parse(text)
                    .map_err(|problem| ApiError::invalid(format!("schedule: {problem}")))?,
            ),
        };
        Ok(SequenceSpec {
            steps: self.steps.clone(),
            stop_when_rejected_over_percent,
            schedule,
        })
    }
}

async fn form_page(
    state: &AppState,
    caller: &Caller,
    editing: Option<&str>,
    form: &SequenceForm,
    problem: Option<&str>,
) -> Result<Markup, Page> {
    let syncs: Vec<String> = state
        .store()
        .list_syncs()
        .await?
        .into_iter()
        .map(|sync| sync.name)
        .collect();
    // Room for every step given, plus two empty ones to add more.
    let rows = (form.steps.len() + 2).clamp(3, ferry_core::MAX_SEQUENCE_STEPS);
    let title = match editing {
        Some(name) => format!("Edit sequence {name}"),
        None => "New sequence".to_string(),
    };
    let action = match editing {
        Some(name) => format!("/sequences/{name}/edit"),
        None => "/sequences".to_string(),
    };
    Ok(shell(
        caller,
        Section::Sequences,
        &title,
        html! {
            (page_header(&title, Some("Pick the syncs in the order they must run. Each starts once the one before it completed."), html! {}))
            @if let Some(problem) = problem { (error_box(problem)) }
            section.card {
                form method="post" action=(action) {
                    (csrf_field(caller))
                    div.field {
                        label for="name" { "Name" }
                        @if editing.is_some() {
                            input #name name="name" value=(form.name) readonly;
                        } @else {
                            input #name name="name" value=(form.name) required placeholder="billing" pattern=(NAME_INPUT_PATTERN) title=(NAME_INPUT_TITLE);
                        }
                    }
                    fieldset.field {
                        legend { "Steps, in order" }
                        @if syncs.is_empty() { p.muted { "Create the syncs first." } }
                        @for index in 0..rows {
                            div.sequence-step {
                                label for={"step" (index)} { "Step " (index + 1) }
                                select id={"step" (index)} name="step" {
                                    option value="" { "—" }
                                    @for sync in &syncs {
                                        option value=(sync) selected[form.steps.get(index) == Some(sync)] { (sync) }
                                    }
                                }
                            }
                        }
                    }
                    div.field {
                        label for="stop_percent" { "Stop when a step rejects more than (% of its rows)" }
                        input #stop_percent name="stop_percent" inputmode="numeric" value=(form.stop_percent) placeholder="5";
                        p.help { "0 stops on any rejected row; empty: only a failed step stops the sequence." }
                    }
                    div.field {
                        label for="schedule" { "Schedule" }
                        input #schedule name="schedule" value=(form.schedule) placeholder="daily at 06:00";
                        p.help { "As for syncs: every 15m, hourly, daily at 06:30 in Europe/Paris, cron 0 6 * * 1-5. Empty: only when run." }
                    }
                    div.form-actions { button.primary type="submit" { "Save sequence" } }
                }
            }
        },
    ))
}

pub async fn save(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Response {
    save_form(&state, &caller, None, &body).await
}

pub async fn save_edit(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    save_form(&state, &caller, Some(&name), &body).await
}

async fn save_form(
    state: &AppState,
    caller: &Caller,
    editing: Option<&str>,
    body: &[u8],
) -> Response {
    let form = match SequenceForm::parse(body) {
        Ok(form) => form,
        Err(page) => return page.into_response(),
    };
    let name = editing
        .map(str::to_string)
        .unwrap_or_else(|| form.name.clone());
    let saved = async {
        if editing.is_none() && state.store().get_sequence(&name).await?.is_some() {
            return Err(ApiError::new(
                axum::http::StatusCode::CONFLICT,
                "conflict",
                format!("sequence '{name}' already exists; edit it from its page"),
            ));
        }
        let spec = form.to_spec()?;
        state.store().put_sequence(&name, &spec).await?;
        Ok::<_, ApiError>(())
    }
    .await;
    match saved {
        Ok(()) => Redirect::to(&format!("/sequences/{name}")).into_response(),
        Err(error) => match form_page(state, caller, editing, &form, Some(&error.message)).await {
            Ok(page) => (axum::http::StatusCode::UNPROCESSABLE_ENTITY, page).into_response(),
            Err(page) => page.into_response(),
        },
    }
}

async fn require(state: &AppState, name: &str) -> Result<ferry_state::SequenceRecord, Page> {
    state
        .store()
        .get_sequence(name)
        .await?
        .ok_or_else(|| Page::from(crate::sequences::unknown_sequence(name)))
}

pub async fn show(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Markup, Page> {
    let record = require(&state, &name).await?;
    let view = SequenceView::load(&state, &record).await?;
    let mut runs = Vec::new();
    for run in state.store().list_sequence_runs(Some(&name), 20).await? {
        runs.push(SequenceRunView::load(&state, run).await?);
    }
    let running = runs
        .iter()
        .any(|run| run.status == ferry_core::SequenceRunStatus::Running);
    Ok(shell(
        &caller,
        Section::Sequences,
        &name,
        html! {
            (page_header(&format!("Sequence {name}"), Some(&record.spec.steps.join(" → ")), html! {
                a.button href={"/sequences/" (name) "/edit"} { "Edit" }
                form.inline method="post" action={"/sequences/" (name) "/delete"} {
                    (csrf_field(&caller))
                    button.danger type="submit" { "Delete" }
                }
                form.inline method="post" action={"/sequences/" (name) "/run"} {
                    (csrf_field(&caller))
                    button.primary type="submit" disabled[running] { "Run now" }
                }
            }))
            section.card {
                dl.settings {
                    dt { "Steps" } dd { (record.spec.steps.len()) ", in order" }
                    dt { "Stops" } dd { (view.stops) }
                    dt { "Schedule" } dd {
                        @if let Some(schedule) = &record.spec.schedule { (schedule.to_string()) " (while ferry serve runs)" } @else { "manual" }
                    }
                    dt { "Next run" } dd { @if let Some(next) = view.next_run_at { @if next <= Utc::now() { "due now" } @else { (time(next)) } } @else { "—" } }
                }
            }
            section.card #sequence-runs {
                h2 { "Runs" }
                @if runs.is_empty() {
                    p.muted { "Not run yet." }
                } @else {
                    table.table {
                        thead { tr { th { "Started" } th { "Status" } th { "Steps" } th { "Why" } } }
                        tbody {
                            @for run in &runs {
                                tr title=(run.id) {
                                    td { (time(run.started_at)) " " span.muted { (run.reason) } }
                                    td { (status_badge(run.status.as_str())) }
                                    td {
                                        @for (index, step) in run.steps.iter().enumerate() {
                                            @if index > 0 { " → " }
                                            @if let Some(id) = &step.run_id {
                                                a href={"/runs/" (id)} { (step.sync) } " "
                                                (status_badge(step.status.map(|s| s.as_str()).unwrap_or("queued")))
                                            } @else if run.status == ferry_core::SequenceRunStatus::Running && index + 1 == run.current_step as usize {
                                                (step.sync) " " (status_badge("queued"))
                                            } @else {
                                                span.muted { (step.sync) }
                                            }
                                        }
                                    }
                                    td { (run.message.as_deref().unwrap_or("")) }
                                }
                            }
                        }
                    }
                    @if running {
                        // While a run goes on, the page looks again every 2 s.
                        div hx-get={"/sequences/" (name)} hx-trigger="every 2s" hx-select="#sequence-runs" hx-target="#sequence-runs" hx-swap="outerHTML" {}
                    }
                }
            }
        },
    ))
}

pub async fn run(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Redirect, Page> {
    crate::sequences::start(&state, &name, "ui", None).await?;
    Ok(Redirect::to(&format!("/sequences/{name}")))
}

pub async fn delete(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Redirect, Page> {
    require(&state, &name).await?;
    crate::sequences::refuse_removal_while_running(state.store(), &name).await?;
    state.store().remove_sequence(&name).await?;
    Ok(Redirect::to("/sequences"))
}
