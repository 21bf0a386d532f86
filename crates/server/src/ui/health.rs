//! The home page once a workspace is set up: how every sync is doing at a glance. Failing syncs
//! come first, then those whose last run rejected rows; each shows its last runs as a small
//! chart (records written and rejected) and when its schedule runs it next.

use super::layout::{page_header, shell, status_badge, time, Page, Section};
use super::syncs::next_run;
use crate::auth::Caller;
use crate::AppState;
use chrono::{DateTime, Utc};
use ferry_core::RunStatus;
use ferry_state::{RunRecord, SyncRecord};
use maud::{html, Markup};

/// How many of a sync's runs its chart shows.
const RUNS_CHARTED: usize = 12;

/// A sync and its newest runs, newest first.
struct SyncHealth {
    sync: SyncRecord,
    runs: Vec<RunRecord>,
}

impl SyncHealth {
    /// 0 failing (its last run failed or was interrupted), 1 rejecting rows, 2 well, 3 never run.
    fn rank(&self) -> u8 {
        match self.runs.first() {
            None => 3,
            Some(run) if matches!(run.status, RunStatus::Failed | RunStatus::Interrupted) => 0,
            Some(run) if run.counts.rejected > 0 => 1,
            Some(_) => 2,
        }
    }

    fn next_run_at(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.sync
            .next_scheduled_run(self.runs.first().map(|run| run.started_at), now)
    }
}

pub async fn page(state: &AppState, caller: &Caller) -> Result<Markup, Page> {
    let mut syncs = Vec::new();
    for sync in state.store().list_syncs().await? {
        let runs = state
            .store()
            .list_runs(Some(&sync.name), RUNS_CHARTED)
            .await?;
        syncs.push(SyncHealth { sync, runs });
    }
    syncs.sort_by(|a, b| a.rank().cmp(&b.rank()).then(a.sync.name.cmp(&b.sync.name)));
    let failing = syncs.iter().filter(|s| s.rank() == 0).count();
    let now = Utc::now();
    let mut upcoming: Vec<(&SyncHealth, DateTime<Utc>)> = syncs
        .iter()
        .filter_map(|s| s.next_run_at(now).map(|at| (s, at)))
        .collect();
    upcoming.sort_by_key(|(_, at)| *at);
    let summary = match failing {
        0 => "Every sync's last run went through.".to_string(),
        1 => "1 sync's last run failed.".to_string(),
        n => format!("{n} syncs' last runs failed."),
    };
    Ok(shell(
        caller,
        Section::Home,
        "Health",
        html! {
            (page_header("Health", Some(&summary), html! { a.button href="/syncs" { "All syncs" } }))
            table.table #health {
                thead { tr { th { "Sync" } th { "Last run" } th { "Last runs" } th { "Next run" } } }
                tbody {
                    @for health in &syncs {
                        tr.failing[health.rank() == 0] {
                            td { a href={"/syncs/" (health.sync.name)} { strong { (health.sync.name) } } }
                            td {
                                @if let Some(run) = health.runs.first() {
                                    a href={"/runs/" (run.id)} { (status_badge(run.status.as_str())) }
                                    " " (time(run.started_at))
                                    @if run.counts.rejected > 0 {
                                        br; span.muted { (run.counts.rejected) " rejected" }
                                    }
                                    @if let Some(error) = &run.error {
                                        br; span.muted title=(error) { (first_words(error)) }
                                    }
                                } @else { span.muted { "never run" } }
                            }
                            td { (trend(&health.runs)) }
                            td { (next_run(&health.sync, health.runs.first().map(|run| run.started_at))) }
                        }
                    }
                }
            }
            h2 { "Next scheduled runs" }
            @if upcoming.is_empty() {
                p.muted { "No sync runs on a schedule. Give one a schedule in its settings (" code { "every 1h" } ", " code { "cron 0 6 * * 1-5" } ")." }
            } @else {
                ul.upcoming {
                    @for (health, at) in upcoming.iter().take(5) {
                        li {
                            @if *at <= now { "due now" } @else { (time(*at)) }
                            " · " a href={"/syncs/" (health.sync.name)} { (health.sync.name) }
                            @if let Some(schedule) = &health.sync.spec.schedule { span.muted { " (" (schedule.to_string()) ")" } }
                        }
                    }
                }
            }
        },
    ))
}

/// An error's first sentence, short enough for a table cell.
fn first_words(error: &str) -> String {
    const MAX: usize = 90;
    let sentence = error.split(". ").next().unwrap_or(error);
    if sentence.chars().count() <= MAX {
        sentence.to_string()
    } else {
        let cut: String = sentence.chars().take(MAX).collect();
        format!("{cut}…")
    }
}

/// The last runs, oldest on the left: a bar per run, its height the records written (created,
/// updated, retired), red below for the rejected and failed; a failed run is a red mark.
fn trend(runs: &[RunRecord]) -> Markup {
    const BAR: usize = 8;
    const HEIGHT: f64 = 24.0;
    if runs.is_empty() {
        return html! { span.muted { "–" } };
    }
    let written = |run: &RunRecord| run.counts.created + run.counts.updated + run.counts.retired;
    let refused = |run: &RunRecord| run.counts.rejected + run.counts.failed;
    let tallest = runs
        .iter()
        .map(|run| written(run).max(refused(run)))
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let height = |count: u64| {
        if count == 0 {
            0.0
        } else {
            (count as f64 / tallest * (HEIGHT / 2.0)).max(1.0)
        }
    };
    let width = runs.len() * BAR;
    let label = runs
        .iter()
        .rev()
        .map(|run| {
            format!(
                "{}: {} written, {} rejected or failed",
                run.status.as_str(),
                written(run),
                refused(run)
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    html! {
        svg.trend width=(width) height=(HEIGHT) viewBox={"0 0 " (width) " " (HEIGHT)} role="img" aria-label=(label) {
            title { (label) }
            @for (i, run) in runs.iter().rev().enumerate() {
                @let x = i * BAR + 1;
                @let up = height(written(run));
                @let down = height(refused(run));
                @if run.status == RunStatus::Failed {
                    rect.bad x=(x) y="0" width=(BAR - 2) height=(HEIGHT) opacity="0.35" {}
                }
                rect.ok x=(x) y=(HEIGHT / 2.0 - up) width=(BAR - 2) height=(up) {}
                rect.bad x=(x) y=(HEIGHT / 2.0) width=(BAR - 2) height=(down) {}
            }
            line x1="0" x2=(width) y1=(HEIGHT / 2.0) y2=(HEIGHT / 2.0) stroke="currentColor" stroke-opacity="0.2" {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_errors_are_cut_at_their_first_sentence() {
        assert_eq!(
            first_words("the run could not start. Set FERRY_X."),
            "the run could not start"
        );
        let long = "x".repeat(200);
        assert_eq!(first_words(&long).chars().count(), 91);
    }
}
