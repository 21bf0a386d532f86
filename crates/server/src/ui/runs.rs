//! Run history and the run page: live progress while it runs, then every record's outcome with
//! filters, paging, links to Stripe's dashboard and a CSV download.

use super::layout::{
    clip, csrf_field, empty_state, page_header, shell, status_badge, time, Page, Section,
};
use crate::api::runs::{dashboard_base, RecordView};
use crate::auth::Caller;
use crate::AppState;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Extension;
use ferry_core::{Outcome, RunCounts, RunStatus};
use ferry_state::RunRecord;
use maud::{html, Markup};
use serde::Deserialize;

const PAGE_SIZE: usize = 50;

/// How many of a running run's newest records its page shows, refreshed every second.
const LIVE_RECORDS: usize = 50;

pub fn runs_table(runs: &[RunRecord], with_sync: bool) -> Markup {
    html! {
        table.table.runs {
            thead { tr {
                th { "Run" } @if with_sync { th { "Sync" } } th { "Status" } th { "Started" }
                th.num { "Rows" } th.num { "Created" } th.num { "Updated" } th.num { "Unchanged" } th.num { "Rejected" } th.num { "Failed" } th.num { "Not attempted" }
            } }
            tbody {
                @for run in runs {
                    tr {
                        td { a.mono href={"/runs/" (run.id)} { (run.id) } }
                        @if with_sync { td { a href={"/syncs/" (run.sync)} { (run.sync) } } }
                        td { (status_badge(run.status.as_str())) }
                        td { (time(run.started_at)) }
                        td.num { (run.counts.rows) }
                        td.num { (run.counts.created) }
                        td.num { (run.counts.updated) }
                        td.num { (run.counts.unchanged) }
                        td.num { (run.counts.rejected) }
                        td.num { (run.counts.failed) }
                        td.num { (run.counts.not_attempted) }
                    }
                }
            }
        }
    }
}

#[derive(Deserialize)]
pub struct HistoryParams {
    sync: Option<String>,
}

pub async fn history(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(params): Query<HistoryParams>,
) -> Result<Markup, Page> {
    let sync = params.sync.filter(|s| !s.is_empty());
    ferry_engine::reap_dead_runs(state.store(), sync.as_deref()).await?;
    let runs = state.store().list_runs(sync.as_deref(), 100).await?;
    let syncs = state.store().list_syncs().await?;
    Ok(shell(
        &caller,
        Section::Runs,
        "Run history",
        html! {
            (page_header("Run history", Some("Every run of every sync, newest first."), html! {
                form.inline method="get" action="/runs" {
                    select name="sync" aria-label="Sync" onchange="this.form.submit()" {
                        option value="" { "All syncs" }
                        @for s in &syncs { option value=(s.name) selected[Some(&s.name) == sync.as_ref()] { (s.name) } }
                    }
                }
            }))
            @if runs.is_empty() {
                (empty_state("No run yet", "Runs appear here once a sync has run. Open a sync and press “Run now”.", "/syncs", "Go to syncs"))
            } @else {
                (runs_table(&runs, true))
            }
        },
    ))
}

#[derive(Deserialize)]
pub struct RunPageParams {
    outcome: Option<String>,
    /// Records after this row number (keyset paging).
    after: Option<u64>,
}

fn counts_block(c: &RunCounts) -> Markup {
    let items = [
        ("created", "Created", c.created),
        ("updated", "Updated", c.updated),
        ("unchanged", "Unchanged", c.unchanged),
        ("not_found", "Not found", c.not_found),
        ("rejected", "Rejected", c.rejected),
        ("failed", "Failed", c.failed),
        ("not_attempted", "Not attempted", c.not_attempted),
        ("retired", "Retired", c.retired),
    ];
    html! {
        div.counts {
            @for (class, label, count) in items.into_iter().filter(|(class, _, count)| *class != "retired" || *count > 0) {
                div class={"count " (class)} { div.number { (count) } div.label { (label) } }
            }
        }
    }
}

/// The part of the run page that changes while the run runs; it polls itself until the end,
/// then reloads the page once so the records appear.
fn status_block(state: &AppState, run: &RunRecord, caller: &Caller) -> Markup {
    let running = run.status == RunStatus::Running;
    let progress = if running {
        state.runs().progress(&run.id)
    } else {
        None
    };
    html! {
        div #run-status hx-get=[running.then(|| format!("/runs/{}/status", run.id))]
            hx-trigger=[running.then_some("every 1s")] hx-swap="outerHTML" {
            div.run-line {
                (status_badge(run.status.as_str()))
                " started " (time(run.started_at))
                @if let Some(finished) = run.finished_at { ", finished " (time(finished)) }
                " · " (run.counts.requests) " requests"
            }
            @if let Some(error) = &run.error { div.alert.error { (error) } }
            @if let Some(progress) = &progress {
                @let total = progress.rows.unwrap_or(0);
                div.progress-line {
                    @if let Some(rows) = progress.rows {
                        progress value=(progress.done) max=(rows.max(1)) {}
                        " " (progress.done) " of " (rows) " rows"
                    } @else {
                        "Reading the model and planning…"
                    }
                    @if total > 0 && !progress.cancel_requested {
                        form.inline method="post" action={"/runs/" (run.id) "/cancel"} {
                            (csrf_field(caller))
                            button.small type="submit" { "Stop" }
                        }
                    }
                }
                (counts_block(&progress.counts))
            } @else if running {
                p.muted {
                    "This run is running in another process; its counts here are those it last saved. "
                    form.inline method="post" action={"/runs/" (run.id) "/cancel"} {
                        (csrf_field(caller))
                        button.small type="submit" { "Stop" }
                    }
                }
            } @else {
                (counts_block(&run.counts))
            }
        }
    }
}

pub async fn status(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, Page> {
    let run = require_run(&state, &id).await?;
    if run.status != RunStatus::Running {
        // Finished: a full reload shows the final counts and the records.
        return Ok((
            [("hx-refresh", "true")],
            status_block(&state, &run, &caller),
        )
            .into_response());
    }
    Ok(status_block(&state, &run, &caller).into_response())
}

async fn require_run(state: &AppState, id: &str) -> Result<RunRecord, Page> {
    state
        .store()
        .get_run(id)
        .await?
        .ok_or_else(|| Page::not_found(format!("run '{id}' does not exist")))
}

fn parse_outcome(text: Option<&str>) -> Option<Outcome> {
    let text = text?;
    Outcome::ALL.into_iter().find(|o| o.as_str() == text)
}

pub async fn show(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Query(params): Query<RunPageParams>,
) -> Result<Markup, Page> {
    let run = require_run(&state, &id).await?;
    let outcome = parse_outcome(params.outcome.as_deref());
    let after = params.after.unwrap_or(0);
    // A running run's first page is its newest records, kept up to date; a later page (the
    // pager's) is a page in row order like a finished run's.
    let live = if run.status == RunStatus::Running && after == 0 {
        Some(latest_records(&state, &run, outcome).await?)
    } else {
        None
    };
    let (total, records, next_after) = match live {
        Some(_) => (0, Vec::new(), None),
        None => page_in_row_order(&state, &run, outcome, after).await?,
    };
    let filter_link = |o: Option<Outcome>| match o {
        Some(o) => format!("/runs/{id}?outcome={}", o.as_str()),
        None => format!("/runs/{id}"),
    };
    let page_link = |after: u64| match outcome {
        Some(o) => format!("/runs/{id}?outcome={}&after={after}", o.as_str()),
        None => format!("/runs/{id}?after={after}"),
    };
    let csv_link = match outcome {
        Some(o) => format!("/runs/{id}/records.csv?outcome={}", o.as_str()),
        None => format!("/runs/{id}/records.csv"),
    };
    Ok(shell(
        &caller,
        Section::Runs,
        &format!("Run {id}"),
        html! {
            (page_header(&format!("Run of {}", run.sync), Some(&id), html! {
                a.button href={"/syncs/" (run.sync)} { "Sync" }
                a.button href=(csv_link) { "Download CSV" }
            }))
            (status_block(&state, &run, &caller))
            h2 { "Records" }
            nav.tabs {
                a href=(filter_link(None)) class=[outcome.is_none().then_some("active")] { "All" }
                @for o in Outcome::ALL.into_iter().filter(|o| *o != Outcome::Unchanged) {
                    a href=(filter_link(Some(o))) class=[(outcome == Some(o)).then_some("active")] { (o.as_str().replace('_', " ")) }
                }
            }
            @if let Some((latest, so_far)) = &live {
                (live_records_block(&run, outcome, latest, *so_far))
            } @else if records.is_empty() {
                p.muted { "No records with this outcome. Unchanged rows are counted above, not listed." }
            } @else {
                (records_table(&id, &records))
                div.pager {
                    @if after > 0 { a.button.small href=(filter_link(outcome)) { "← First" } }
                    span.muted { (total) " records" @if after > 0 { " · from row " (after + 1) } }
                    @if let Some(next) = next_after { a.button.small href=(page_link(next)) { "Next →" } }
                }
            }
        },
    ))
}

/// Records as a table: row, key, outcome, the record in Stripe and the reason or what changed.
fn records_table(run_id: &str, records: &[RecordView]) -> Markup {
    html! {
        table.table.records {
            thead { tr { th.num title="Open a row to see what was sent to Stripe for it" { "Row" } th { "Key" } th { "Outcome" } th { "In Stripe" } th { "Details" } } }
            tbody {
                @for record in records {
                    tr {
                        td.num { a href={"/runs/" (run_id) "/records/" (record.row)} title="What was sent to Stripe for this row" { (record.row) } }
                        td.mono { (clip(&record.key, 60)) }
                        td { (status_badge(record.outcome.as_str())) }
                        td {
                            @if let (Some(id), Some(url)) = (&record.stripe_id, &record.stripe_url) {
                                a.mono href=(url) target="_blank" rel="noopener" title="Open in Stripe" { (id) " ↗" }
                            } @else if let Some(id) = &record.stripe_id {
                                span.mono { (id) }
                            }
                        }
                        td.reason {
                            @if let Some(reason) = &record.reason { (reason) }
                            @else if let Some(changes) = record.changes.as_ref().and_then(|c| c.as_object()) {
                                span.muted { (changes.keys().cloned().collect::<Vec<_>>().join(", ")) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// While the run runs: its newest records, refreshed every second until it ends (the status
/// block then reloads the page, which lists them all in row order, with filters and pages).
fn live_records_block(
    run: &RunRecord,
    outcome: Option<Outcome>,
    records: &[RecordView],
    total: u64,
) -> Markup {
    let running = run.status == RunStatus::Running;
    let url = match outcome {
        Some(o) => format!("/runs/{}/records/live?outcome={}", run.id, o.as_str()),
        None => format!("/runs/{}/records/live", run.id),
    };
    html! {
        div #live-records hx-get=[running.then_some(url)]
            hx-trigger=[running.then_some("every 1s")] hx-swap="outerHTML" {
            @if records.is_empty() {
                p.muted { "Records appear here as Stripe confirms them." }
            } @else {
                p.muted {
                    (total) " records so far, the newest first. When the run ends they are listed in row order."
                }
                (records_table(&run.id, records))
            }
        }
    }
}

/// The running run's newest records (the page's live block polls it).
pub async fn live_records(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(params): Query<RunPageParams>,
) -> Result<Markup, Page> {
    let run = require_run(&state, &id).await?;
    let outcome = parse_outcome(params.outcome.as_deref());
    let (records, total) = latest_records(&state, &run, outcome).await?;
    Ok(live_records_block(&run, outcome, &records, total))
}

/// A page of the run's records in row order: the total over every page, the page, and where
/// the next one starts.
async fn page_in_row_order(
    state: &AppState,
    run: &RunRecord,
    outcome: Option<Outcome>,
    after: u64,
) -> Result<(u64, Vec<RecordView>, Option<u64>), Page> {
    let store = state.store();
    let total = store.count_run_records(&run.id, outcome).await?;
    let rows = store
        .list_run_records(&run.id, outcome, after, PAGE_SIZE)
        .await?;
    let next_after = (rows.len() == PAGE_SIZE)
        .then(|| rows.last().map(|r| r.row_number))
        .flatten();
    let dashboard = dashboard_base(state, &run.sync).await;
    let records = rows
        .into_iter()
        .map(|r| RecordView::new(r, dashboard.as_deref()))
        .collect();
    Ok((total, records, next_after))
}

async fn latest_records(
    state: &AppState,
    run: &RunRecord,
    outcome: Option<Outcome>,
) -> Result<(Vec<RecordView>, u64), Page> {
    let store = state.store();
    let rows = store
        .latest_run_records(&run.id, outcome, LIVE_RECORDS)
        .await?;
    let total = store.count_run_records(&run.id, outcome).await?;
    let dashboard = dashboard_base(state, &run.sync).await;
    let records = rows
        .into_iter()
        .map(|r| RecordView::new(r, dashboard.as_deref()))
        .collect();
    Ok((records, total))
}

/// One record of a run and every request sent to Stripe for it, as sent and as answered.
pub async fn record(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((id, row)): Path<(String, u64)>,
) -> Result<Markup, Page> {
    let run = require_run(&state, &id).await?;
    let Some(detail) = crate::api::runs::record_detail(&state, &run, row).await? else {
        return Err(Page::not_found(format!(
            "run '{id}' kept no record for row {row}: unchanged rows are only counted"
        )));
    };
    let record = &detail.record;
    Ok(shell(
        &caller,
        Section::Runs,
        &format!("Row {row} of run {id}"),
        html! {
            (page_header(&format!("Row {row} · {}", record.key), Some(&format!("Run {id} of {}", run.sync)), html! {
                a.button href={"/runs/" (id)} { "Run" }
            }))
            section.card {
                dl.settings {
                    dt { "Outcome" } dd { (status_badge(record.outcome.as_str())) }
                    dt { "In Stripe" } dd {
                        @if let (Some(stripe_id), Some(url)) = (&record.stripe_id, &record.stripe_url) {
                            a.mono href=(url) target="_blank" rel="noopener" { (stripe_id) " ↗" }
                        } @else if let Some(stripe_id) = &record.stripe_id {
                            span.mono { (stripe_id) }
                        } @else { span.muted { "—" } }
                    }
                    @if let Some(reason) = &record.reason { dt { "Why" } dd { (reason) } }
                    @if let Some(changes) = &record.changes {
                        dt { "Changes" } dd { pre.exchange { (serde_json::to_string_pretty(changes).unwrap_or_default()) } }
                    }
                }
            }
            h2 { "Requests to Stripe" }
            @if detail.requests.is_empty() {
                p.muted {
                    "No request is kept for this row: it needed none, or its requests are older than the log keeps them ("
                    code { "FERRY_REQUEST_LOG_DAYS" } ", 7 days unless set)."
                }
            }
            @for exchange in &detail.requests {
                section.card.exchange {
                    h3 {
                        span.mono { (exchange.method) " " (exchange.path) }
                        " "
                        @match exchange.status {
                            Some(status) => { (status_badge(if (200..300).contains(&status) { "completed" } else { "failed" })) " " span.mono { (status) } }
                            None => { (status_badge("failed")) " no answer" }
                        }
                    }
                    p.muted {
                        (time(exchange.sent_at)) " · " (exchange.duration_ms) " ms"
                        @if let Some(request_id) = &exchange.request_id { " · request " span.mono { (request_id) } }
                        @if let Some(key) = &exchange.idempotency_key { " · idempotency key " span.mono { (key) } }
                    }
                    @if let Some(error) = &exchange.error { div.alert.error { (error) } }
                    @if !exchange.request_params.is_empty() {
                        table.table.compact {
                            thead { tr { th { "Sent" } th { "Value" } } }
                            tbody {
                                @for (name, value) in &exchange.request_params {
                                    tr { td.mono { (name) } td.mono { (value) } }
                                }
                            }
                        }
                    }
                    @if let Some(body) = &exchange.response_body {
                        details open[exchange.status.is_some_and(|status| status >= 400)] {
                            summary { "Answer" }
                            pre.exchange { (pretty_json(body)) }
                        }
                    }
                }
            }
        },
    ))
}

/// `text` indented when it is JSON, as it came otherwise (a cut body is not JSON).
fn pretty_json(text: &str) -> String {
    serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|value| serde_json::to_string_pretty(&value).ok())
        .unwrap_or_else(|| text.to_string())
}

pub async fn cancel(State(state): State<AppState>, Path(id): Path<String>) -> Redirect {
    // Not running in a server (it just ended, or `ferry sync run` runs it): the page says so.
    if let Err(error) = state.runs().cancel(state.store(), &id).await {
        tracing::warn!(run = %id, %error, "Could not ask a run to stop.");
    }
    Redirect::to(&format!("/runs/{id}"))
}

#[derive(Deserialize)]
pub struct CsvParams {
    outcome: Option<String>,
}

/// The UI's CSV download: the API's handler, behind the session instead of a token.
pub async fn csv(
    state: State<AppState>,
    id: Path<String>,
    Query(params): Query<CsvParams>,
) -> Result<Response, Page> {
    let outcome = parse_outcome(params.outcome.as_deref());
    Ok(crate::api::runs::records_csv(
        state,
        id,
        crate::api::ApiQuery(crate::api::runs::CsvParams { outcome }),
    )
    .await?)
}
