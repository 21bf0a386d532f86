//! Alerts: when a sync's run deserves a person's attention, and the events ferry sends about
//! its runs. Pure: the engine feeds it each finished run, the alerts the sync has raised, and
//! the row count of its last run; it answers which alerts are raised and which resolved. One
//! notice per change of state: an alert already raised is not raised again while it lasts,
//! and its end is a notice of its own.

use crate::{RunCounts, RunStatus};
use serde::{Deserialize, Serialize};
use std::fmt;

/// When a sync raises alerts, and which channels hear of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertSettings {
    /// The alert channels told of the sync's alerts: connections of kind `webhook`, `slack`
    /// or `email`. (A webhook that subscribes to `sync.alert.raised` hears every sync's
    /// alerts without being named here.)
    #[serde(default)]
    pub channels: Vec<String>,
    /// A run that fails raises an alert; the next run that completes resolves it.
    #[serde(default = "on")]
    pub on_failure: bool,
    /// A completed run that rejects more than this share of its rows, in percent (0: any
    /// rejected row).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected_over_percent: Option<u32>,
    /// A run that takes longer than this many minutes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slower_than_minutes: Option<u32>,
    /// A completed run whose model has fewer rows than the last completed run's by more than
    /// this share, in percent: an upstream job that half failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row_drop_over_percent: Option<u32>,
}

fn on() -> bool {
    true
}

impl Default for AlertSettings {
    fn default() -> Self {
        AlertSettings {
            channels: Vec::new(),
            on_failure: true,
            rejected_over_percent: None,
            slower_than_minutes: None,
            row_drop_over_percent: None,
        }
    }
}

impl AlertSettings {
    /// Problems a person must fix before the settings are saved, each naming its field.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (field, value) in [
            ("rejected_over_percent", self.rejected_over_percent),
            ("row_drop_over_percent", self.row_drop_over_percent),
        ] {
            if value.is_some_and(|percent| percent > 100) {
                problems.push(format!(
                    "alerts.{field} is a share of the run's rows: write a percent from 0 to 100"
                ));
            }
        }
        if self.slower_than_minutes == Some(0) {
            problems.push(
                "alerts.slower_than_minutes must be at least 1 (leave it out for no alert on \
                 slow runs)"
                    .to_string(),
            );
        }
        let mut seen = std::collections::BTreeSet::new();
        for channel in &self.channels {
            if !seen.insert(channel) {
                problems.push(format!("alerts.channels names `{channel}` twice"));
            }
        }
        problems
    }

    /// The settings in words, for every door that shows them: `on a failed run, over 5% of rows
    /// rejected; to ops-slack, oncall`.
    pub fn summary(&self) -> String {
        let mut when = Vec::new();
        if self.on_failure {
            when.push("on a failed run".to_string());
        }
        if let Some(percent) = self.rejected_over_percent {
            when.push(format!("over {percent}% of rows rejected"));
        }
        if let Some(minutes) = self.slower_than_minutes {
            when.push(format!("a run over {minutes} min"));
        }
        if let Some(percent) = self.row_drop_over_percent {
            when.push(format!("the model's rows down over {percent}%"));
        }
        if when.is_empty() {
            return "no alerts".to_string();
        }
        let to = if self.channels.is_empty() {
            "to the webhooks that subscribe to alerts".to_string()
        } else {
            format!("to {}", self.channels.join(", "))
        };
        format!("{}; {to}", when.join(", "))
    }

    /// The conditions these settings watch.
    pub fn conditions(&self) -> Vec<AlertCondition> {
        let mut conditions = Vec::new();
        if self.on_failure {
            conditions.push(AlertCondition::RunFailed);
        }
        if self.rejected_over_percent.is_some() {
            conditions.push(AlertCondition::RejectedRows);
        }
        if self.slower_than_minutes.is_some() {
            conditions.push(AlertCondition::SlowRun);
        }
        if self.row_drop_over_percent.is_some() {
            conditions.push(AlertCondition::RowCountDrop);
        }
        conditions
    }
}

/// What an alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AlertCondition {
    RunFailed,
    RejectedRows,
    SlowRun,
    RowCountDrop,
}

impl AlertCondition {
    pub const ALL: [AlertCondition; 4] = [
        AlertCondition::RunFailed,
        AlertCondition::RejectedRows,
        AlertCondition::SlowRun,
        AlertCondition::RowCountDrop,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AlertCondition::RunFailed => "run_failed",
            AlertCondition::RejectedRows => "rejected_rows",
            AlertCondition::SlowRun => "slow_run",
            AlertCondition::RowCountDrop => "row_count_drop",
        }
    }

    pub fn parse(text: &str) -> Option<AlertCondition> {
        AlertCondition::ALL.into_iter().find(|c| c.as_str() == text)
    }
}

impl fmt::Display for AlertCondition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The events ferry sends about a sync, named as Census names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    SyncStarted,
    SyncCompleted,
    SyncFailed,
    AlertRaised,
    AlertResolved,
}

impl EventKind {
    pub const ALL: [EventKind; 5] = [
        EventKind::SyncStarted,
        EventKind::SyncCompleted,
        EventKind::SyncFailed,
        EventKind::AlertRaised,
        EventKind::AlertResolved,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::SyncStarted => "sync.started",
            EventKind::SyncCompleted => "sync.completed",
            EventKind::SyncFailed => "sync.failed",
            EventKind::AlertRaised => "sync.alert.raised",
            EventKind::AlertResolved => "sync.alert.resolved",
        }
    }

    pub fn parse(text: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|e| e.as_str() == text)
    }

    /// Every event's name, for error messages and help: `sync.started, sync.completed, …`.
    pub fn names() -> String {
        EventKind::ALL
            .iter()
            .map(|e| e.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// A comma-separated list of event names (`sync.failed, sync.alert.raised`), each checked;
    /// an empty text is every event.
    pub fn parse_list(text: &str) -> Result<Vec<EventKind>, String> {
        let names: Vec<&str> = text
            .split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .collect();
        if names.is_empty() {
            return Ok(EventKind::ALL.to_vec());
        }
        let mut events = Vec::new();
        for name in names {
            let event = EventKind::parse(name).ok_or_else(|| {
                format!(
                    "`{name}` is not an event ferry sends; name some of {}",
                    EventKind::names()
                )
            })?;
            if !events.contains(&event) {
                events.push(event);
            }
        }
        Ok(events)
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the alerts need to know of a finished run.
#[derive(Debug, Clone, PartialEq)]
pub struct FinishedRun {
    pub status: RunStatus,
    pub counts: RunCounts,
    pub seconds: f64,
    pub error: Option<String>,
}

/// A change in one alert's state, with the sentence that tells a person about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlertChange {
    Raised {
        condition: AlertCondition,
        message: String,
    },
    Resolved {
        condition: AlertCondition,
        message: String,
    },
}

impl AlertChange {
    pub fn condition(&self) -> AlertCondition {
        match self {
            AlertChange::Raised { condition, .. } | AlertChange::Resolved { condition, .. } => {
                *condition
            }
        }
    }

    pub fn message(&self) -> &str {
        match self {
            AlertChange::Raised { message, .. } | AlertChange::Resolved { message, .. } => message,
        }
    }
}

/// The alerts `run` raises and resolves, given what is raised already and the model's row
/// count in the last completed run before it.
///
/// A condition a run cannot judge leaves its alert as it is: a failed run says nothing of its
/// rejected rows or its row count (it may have stopped early), and a cancelled or interrupted
/// run says nothing at all. A condition no longer watched (its setting removed) resolves.
pub fn evaluate_alerts(
    settings: &AlertSettings,
    run: &FinishedRun,
    previous_rows: Option<u64>,
    raised: &[AlertCondition],
) -> Vec<AlertChange> {
    let mut changes = Vec::new();
    let is_raised = |condition: AlertCondition| raised.contains(&condition);
    let mut judge =
        |condition: AlertCondition, verdict: Option<Result<String, String>>| match verdict {
            Some(Err(problem)) if !is_raised(condition) => changes.push(AlertChange::Raised {
                condition,
                message: problem,
            }),
            Some(Ok(fine)) if is_raised(condition) => changes.push(AlertChange::Resolved {
                condition,
                message: fine,
            }),
            _ => {}
        };
    let judged = matches!(run.status, RunStatus::Completed | RunStatus::Failed);
    let completed = run.status == RunStatus::Completed;

    let failure = if !settings.on_failure {
        Some(Ok("alerts on failed runs were turned off".to_string()))
    } else if !judged {
        None
    } else if completed {
        Some(Ok("the sync completed a run again".to_string()))
    } else {
        Some(Err(format!(
            "the run failed: {}",
            run.error.as_deref().unwrap_or("no reason was recorded")
        )))
    };
    judge(AlertCondition::RunFailed, failure);

    let rejected = match settings.rejected_over_percent {
        None => Some(Ok("alerts on rejected rows were turned off".to_string())),
        Some(_) if !completed => None,
        Some(limit) => {
            let share = percent(run.counts.rejected, run.counts.rows);
            let words = format!(
                "{} of {} rows rejected ({})",
                run.counts.rejected,
                run.counts.rows,
                percent_text(share)
            );
            let over = if limit == 0 {
                run.counts.rejected > 0
            } else {
                share > f64::from(limit)
            };
            Some(if over {
                Err(format!("{words}, over the alert's {limit}%"))
            } else {
                Ok(format!("{words}, within the alert's {limit}%"))
            })
        }
    };
    judge(AlertCondition::RejectedRows, rejected);

    let slow = match settings.slower_than_minutes {
        None => Some(Ok("alerts on slow runs were turned off".to_string())),
        Some(_) if !judged => None,
        Some(limit) => {
            let took = duration_text(run.seconds);
            Some(if run.seconds > f64::from(limit) * 60.0 {
                Err(format!(
                    "the run took {took}, longer than the alert's {limit} min"
                ))
            } else {
                Ok(format!(
                    "the run took {took}, within the alert's {limit} min"
                ))
            })
        }
    };
    judge(AlertCondition::SlowRun, slow);

    let drop = match settings.row_drop_over_percent {
        None => Some(Ok("alerts on row count drops were turned off".to_string())),
        Some(_) if !completed => None,
        Some(limit) => match previous_rows {
            None | Some(0) => None,
            Some(before) => {
                let now = run.counts.rows;
                let fell = percent(before.saturating_sub(now), before);
                let words = format!("the model has {now} rows, {before} in the last run");
                Some(if fell > f64::from(limit) {
                    Err(format!(
                        "{words}: {} fewer, over the alert's {limit}%",
                        percent_text(fell)
                    ))
                } else {
                    Ok(format!("{words}, within the alert's {limit}%"))
                })
            }
        },
    };
    judge(AlertCondition::RowCountDrop, drop);
    changes
}

pub(crate) fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

pub(crate) fn percent_text(share: f64) -> String {
    if share == 0.0 || share >= 10.0 || share.fract() == 0.0 {
        format!("{share:.0}%")
    } else {
        format!("{share:.1}%")
    }
}

fn duration_text(seconds: f64) -> String {
    let whole = seconds.round() as u64;
    if whole < 60 {
        format!("{whole} s")
    } else if whole < 3600 {
        format!("{} min {} s", whole / 60, whole % 60)
    } else {
        format!("{} h {} min", whole / 3600, whole % 3600 / 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use AlertCondition::*;

    fn run(status: RunStatus, rows: u64, rejected: u64, seconds: f64) -> FinishedRun {
        FinishedRun {
            status,
            counts: RunCounts {
                rows,
                rejected,
                created: rows - rejected,
                ..RunCounts::default()
            },
            seconds,
            error: (status == RunStatus::Failed).then(|| "the warehouse went away".to_string()),
        }
    }

    fn all_watched() -> AlertSettings {
        AlertSettings {
            channels: vec!["ops".to_string()],
            on_failure: true,
            rejected_over_percent: Some(5),
            slower_than_minutes: Some(10),
            row_drop_over_percent: Some(50),
        }
    }

    /// What happened, the previous row count, raised before → raised, resolved after.
    type Case = (
        &'static str,
        FinishedRun,
        Option<u64>,
        Vec<AlertCondition>,
        Vec<AlertCondition>,
        Vec<AlertCondition>,
    );

    #[test]
    fn each_condition_is_raised_once_and_resolved_once() {
        use RunStatus::*;
        let cases: Vec<Case> = vec![
            (
                "a clean run raises nothing",
                run(Completed, 100, 0, 30.0),
                Some(100),
                vec![],
                vec![],
                vec![],
            ),
            (
                "a failure raises",
                run(Failed, 10, 0, 5.0),
                Some(100),
                vec![],
                vec![RunFailed],
                vec![],
            ),
            (
                "a second failure says nothing new",
                run(Failed, 10, 0, 5.0),
                Some(100),
                vec![RunFailed],
                vec![],
                vec![],
            ),
            (
                "a completed run resolves the failure",
                run(Completed, 100, 0, 5.0),
                Some(100),
                vec![RunFailed],
                vec![],
                vec![RunFailed],
            ),
            (
                "6% rejected is over 5%",
                run(Completed, 100, 6, 5.0),
                Some(100),
                vec![],
                vec![RejectedRows],
                vec![],
            ),
            (
                "5% rejected is not over 5%",
                run(Completed, 100, 5, 5.0),
                Some(100),
                vec![RejectedRows],
                vec![],
                vec![RejectedRows],
            ),
            (
                "a failed run does not judge rejections",
                run(Failed, 100, 0, 5.0),
                Some(100),
                vec![RejectedRows],
                vec![RunFailed],
                vec![],
            ),
            (
                "slow",
                run(Completed, 100, 0, 601.0),
                Some(100),
                vec![],
                vec![SlowRun],
                vec![],
            ),
            (
                "a slow failure is still slow",
                run(Failed, 100, 0, 601.0),
                Some(100),
                vec![],
                vec![RunFailed, SlowRun],
                vec![],
            ),
            (
                "fast again",
                run(Completed, 100, 0, 60.0),
                Some(100),
                vec![SlowRun],
                vec![],
                vec![SlowRun],
            ),
            (
                "rows halved and a bit",
                run(Completed, 49, 0, 5.0),
                Some(100),
                vec![],
                vec![RowCountDrop],
                vec![],
            ),
            (
                "rows halved exactly",
                run(Completed, 50, 0, 5.0),
                Some(100),
                vec![RowCountDrop],
                vec![],
                vec![RowCountDrop],
            ),
            (
                "no earlier run: no judgement",
                run(Completed, 1, 0, 5.0),
                None,
                vec![RowCountDrop],
                vec![],
                vec![],
            ),
            (
                "an interrupted run judges nothing",
                run(Interrupted, 0, 0, 9999.0),
                Some(100),
                vec![RunFailed, SlowRun],
                vec![],
                vec![],
            ),
        ];
        for (what, finished, previous, raised, want_raised, want_resolved) in cases {
            let changes = evaluate_alerts(&all_watched(), &finished, previous, &raised);
            let got_raised: Vec<_> = changes
                .iter()
                .filter(|c| matches!(c, AlertChange::Raised { .. }))
                .map(AlertChange::condition)
                .collect();
            let got_resolved: Vec<_> = changes
                .iter()
                .filter(|c| matches!(c, AlertChange::Resolved { .. }))
                .map(AlertChange::condition)
                .collect();
            assert_eq!(
                (got_raised, got_resolved),
                (want_raised, want_resolved),
                "{what}"
            );
        }
    }

    #[test]
    fn zero_percent_means_any_rejected_row_and_messages_say_the_figures() {
        let settings = AlertSettings {
            rejected_over_percent: Some(0),
            ..AlertSettings::default()
        };
        let changes = evaluate_alerts(
            &settings,
            &run(RunStatus::Completed, 1000, 1, 1.0),
            None,
            &[],
        );
        assert_eq!(
            changes,
            vec![AlertChange::Raised {
                condition: RejectedRows,
                message: "1 of 1000 rows rejected (0.1%), over the alert's 0%".to_string()
            }]
        );
        let failed = evaluate_alerts(&settings, &run(RunStatus::Failed, 0, 0, 1.0), None, &[]);
        assert_eq!(
            failed[0].message(),
            "the run failed: the warehouse went away"
        );
    }

    #[test]
    fn a_condition_no_longer_watched_resolves() {
        let changes = evaluate_alerts(
            &AlertSettings {
                on_failure: false,
                ..AlertSettings::default()
            },
            &run(RunStatus::Failed, 0, 0, 1.0),
            None,
            &[RunFailed, SlowRun],
        );
        let resolved: Vec<_> = changes.iter().map(AlertChange::condition).collect();
        assert_eq!(resolved, vec![RunFailed, SlowRun]);
    }

    #[test]
    fn settings_name_what_is_wrong() {
        let settings = AlertSettings {
            channels: vec!["ops".into(), "ops".into()],
            rejected_over_percent: Some(120),
            slower_than_minutes: Some(0),
            ..AlertSettings::default()
        };
        let problems = settings.problems().join("\n");
        assert!(
            problems.contains("alerts.rejected_over_percent"),
            "{problems}"
        );
        assert!(
            problems.contains("alerts.slower_than_minutes"),
            "{problems}"
        );
        assert!(problems.contains("`ops` twice"), "{problems}");
        assert!(AlertSettings::default().problems().is_empty());
    }

    #[test]
    fn settings_read_as_words() {
        let settings = AlertSettings {
            channels: vec!["ops".into(), "oncall".into()],
            rejected_over_percent: Some(5),
            ..AlertSettings::default()
        };
        assert_eq!(
            settings.summary(),
            "on a failed run, over 5% of rows rejected; to ops, oncall"
        );
        let none = AlertSettings {
            on_failure: false,
            ..AlertSettings::default()
        };
        assert_eq!(none.summary(), "no alerts");
    }

    #[test]
    fn event_lists_read_and_refuse() {
        assert_eq!(EventKind::parse_list("").unwrap(), EventKind::ALL.to_vec());
        assert_eq!(
            EventKind::parse_list("sync.failed, sync.alert.raised,sync.failed").unwrap(),
            vec![EventKind::SyncFailed, EventKind::AlertRaised]
        );
        let problem = EventKind::parse_list("sync.done").unwrap_err();
        assert!(
            problem.contains("sync.started, sync.completed"),
            "{problem}"
        );
    }

    #[test]
    fn settings_read_with_defaults() {
        let settings: AlertSettings =
            serde_json::from_str(r#"{"channels": ["ops"], "rejected_over_percent": 5}"#).unwrap();
        assert!(settings.on_failure);
        assert_eq!(settings.conditions(), vec![RunFailed, RejectedRows]);
        assert!(serde_json::from_str::<AlertSettings>(r#"{"on_fail": true}"#).is_err());
    }
}
