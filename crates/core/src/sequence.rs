//! Sequences: syncs run one after the other (products, then prices, then invoices), each
//! starting only once the one before it completed without rejecting too many of its rows. Pure:
//! whoever drives a sequence (the servers' queue, or `ferry sequence run` in a terminal) asks
//! [`after_step`] what comes after each step, so both stop for the same reasons, in the same
//! words.

use crate::alerts::{percent, percent_text};
use crate::{RunCounts, RunStatus, Schedule};
use serde::{Deserialize, Serialize};

/// The most steps a sequence has: a chain longer than this is better split.
pub const MAX_STEPS: usize = 20;

/// What a sequence runs, and when it stops.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SequenceSpec {
    /// The syncs to run, in order; each starts when the one before it completed.
    pub steps: Vec<String>,
    /// Stop after a step that rejected more than this share of its rows, in percent (0: any
    /// rejected row). Without it, only a step that fails (or cannot start) stops the sequence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_when_rejected_over_percent: Option<u32>,
    /// When `ferry serve` runs the sequence by itself; `None`: only when asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "daily at 06:00")]
    pub schedule: Option<Schedule>,
}

impl SequenceSpec {
    /// Problems a person must fix before the sequence is saved, each naming its field. (That
    /// each step is an existing sync is checked where syncs are known: the workspace.)
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.steps.is_empty() {
            problems.push("steps is empty: name the syncs to run, in order".to_string());
        }
        if self.steps.len() > MAX_STEPS {
            problems.push(format!(
                "steps names {} syncs; a sequence runs at most {MAX_STEPS}: split it in two",
                self.steps.len()
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for step in &self.steps {
            if !seen.insert(step.to_lowercase()) {
                problems.push(format!(
                    "steps names sync `{step}` twice: a sync runs once per sequence"
                ));
            }
        }
        if self
            .stop_when_rejected_over_percent
            .is_some_and(|percent| percent > 100)
        {
            problems.push(
                "stop_when_rejected_over_percent is a share of a step's rows: write a percent \
                 from 0 to 100"
                    .to_string(),
            );
        }
        problems
    }

    /// The stopping rule in words: `stops when a step fails or rejects over 5% of its rows`.
    pub fn stop_rule(&self) -> String {
        match self.stop_when_rejected_over_percent {
            None => "stops when a step fails".to_string(),
            Some(0) => "stops when a step fails or rejects any row".to_string(),
            Some(limit) => format!("stops when a step fails or rejects over {limit}% of its rows"),
        }
    }
}

/// The state of one run of a sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SequenceRunStatus {
    Running,
    /// Every step completed.
    Completed,
    /// A step failed, was cancelled or interrupted, or could not start; the rest did not run.
    Failed,
    /// A step rejected more of its rows than the sequence allows; the rest did not run.
    Stopped,
    /// Whoever drove it (`ferry sequence run` in a terminal) died before it ended.
    Interrupted,
}

impl SequenceRunStatus {
    pub const ALL: [SequenceRunStatus; 5] = [
        SequenceRunStatus::Running,
        SequenceRunStatus::Completed,
        SequenceRunStatus::Failed,
        SequenceRunStatus::Stopped,
        SequenceRunStatus::Interrupted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SequenceRunStatus::Running => "running",
            SequenceRunStatus::Completed => "completed",
            SequenceRunStatus::Failed => "failed",
            SequenceRunStatus::Stopped => "stopped",
            SequenceRunStatus::Interrupted => "interrupted",
        }
    }

    pub fn parse(text: &str) -> Option<SequenceRunStatus> {
        SequenceRunStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == text)
    }
}

/// How one step ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepResult {
    /// Its run ended (any status but running).
    Ran {
        status: RunStatus,
        counts: RunCounts,
        error: Option<String>,
    },
    /// Its run never started: the sync was paused, deleted, already running, unusable, …
    Refused { reason: String },
}

/// What comes after a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SequenceMove {
    /// Run the step at this index.
    Run(usize),
    /// The sequence is over, with this status and why.
    Finish(SequenceRunStatus, String),
}

/// What comes after step `step` (0-based) of `spec` ended with `result`.
pub fn after_step(spec: &SequenceSpec, step: usize, result: &StepResult) -> SequenceMove {
    let name = spec.steps.get(step).map(String::as_str).unwrap_or("?");
    let what = format!("step {} ({name})", step + 1);
    let rest = match &spec.steps[(step + 1).min(spec.steps.len())..] {
        [] => String::new(),
        [one] => format!("; {one} did not run"),
        more => format!("; {} did not run", more.join(", ")),
    };
    let counts = match result {
        StepResult::Refused { reason } => {
            return SequenceMove::Finish(
                SequenceRunStatus::Failed,
                format!("{what} could not start: {reason}{rest}"),
            );
        }
        StepResult::Ran { status, counts, .. } if *status == RunStatus::Completed => counts,
        StepResult::Ran { status, error, .. } => {
            let why = match (status, error) {
                (RunStatus::Failed, Some(error)) => format!("failed: {error}"),
                (RunStatus::Failed, None) => "failed".to_string(),
                (RunStatus::Cancelled, _) => "was cancelled".to_string(),
                (RunStatus::Interrupted, _) => "was interrupted".to_string(),
                (status, _) => format!("ended {}", status.as_str()),
            };
            return SequenceMove::Finish(SequenceRunStatus::Failed, format!("{what} {why}{rest}"));
        }
    };
    if let Some(limit) = spec.stop_when_rejected_over_percent {
        let share = percent(counts.rejected, counts.rows);
        let over = if limit == 0 {
            counts.rejected > 0
        } else {
            share > f64::from(limit)
        };
        if over {
            return SequenceMove::Finish(
                SequenceRunStatus::Stopped,
                format!(
                    "{what} rejected {} of {} rows ({}), over the sequence's {limit}%{rest}",
                    counts.rejected,
                    counts.rows,
                    percent_text(share)
                ),
            );
        }
    }
    if step + 1 < spec.steps.len() {
        SequenceMove::Run(step + 1)
    } else {
        let steps = spec.steps.len();
        SequenceMove::Finish(
            SequenceRunStatus::Completed,
            if steps == 1 {
                "its step completed".to_string()
            } else {
                format!("all {steps} steps completed")
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(steps: &[&str], limit: Option<u32>) -> SequenceSpec {
        SequenceSpec {
            steps: steps.iter().map(|s| s.to_string()).collect(),
            stop_when_rejected_over_percent: limit,
            schedule: None,
        }
    }

    fn ran(status: RunStatus, rows: u64, rejected: u64) -> StepResult {
        StepResult::Ran {
            status,
            counts: RunCounts {
                rows,
                rejected,
                created: rows - rejected,
                ..RunCounts::default()
            },
            error: (status == RunStatus::Failed).then(|| "Stripe said 401".to_string()),
        }
    }

    fn check(spec: &SequenceSpec, step: usize, result: StepResult, expect: &str) {
        let got = match after_step(spec, step, &result) {
            SequenceMove::Run(next) => format!("run step {}", next + 1),
            SequenceMove::Finish(status, why) => format!("{}: {why}", status.as_str()),
        };
        assert_eq!(got, expect, "step {step}, {result:?}");
    }

    #[test]
    fn each_step_leads_to_the_next_or_stops_the_sequence_saying_why() {
        let three = spec(&["products", "prices", "invoices"], Some(5));
        let cases: &[(usize, StepResult, &str)] = &[
            (0, ran(RunStatus::Completed, 100, 0), "run step 2"),
            (1, ran(RunStatus::Completed, 100, 5), "run step 3"),
            (2, ran(RunStatus::Completed, 100, 0), "completed: all 3 steps completed"),
            (
                0,
                ran(RunStatus::Completed, 100, 6),
                "stopped: step 1 (products) rejected 6 of 100 rows (6%), over the sequence's 5%; prices, invoices did not run",
            ),
            (
                1,
                ran(RunStatus::Failed, 100, 0),
                "failed: step 2 (prices) failed: Stripe said 401; invoices did not run",
            ),
            (
                2,
                ran(RunStatus::Cancelled, 100, 0),
                "failed: step 3 (invoices) was cancelled",
            ),
            (
                0,
                ran(RunStatus::Interrupted, 10, 0),
                "failed: step 1 (products) was interrupted; prices, invoices did not run",
            ),
            (
                1,
                StepResult::Refused {
                    reason: "sync 'prices' is paused".to_string(),
                },
                "failed: step 2 (prices) could not start: sync 'prices' is paused; invoices did not run",
            ),
            // A step with no rows rejected nothing.
            (0, ran(RunStatus::Completed, 0, 0), "run step 2"),
        ];
        for (step, result, expect) in cases {
            check(&three, *step, result.clone(), expect);
        }
    }

    #[test]
    fn zero_percent_stops_on_any_rejection_and_no_limit_never_does() {
        let strict = spec(&["a", "b"], Some(0));
        check(
            &strict,
            0,
            ran(RunStatus::Completed, 1000, 1),
            "stopped: step 1 (a) rejected 1 of 1000 rows (0.1%), over the sequence's 0%; b did not run",
        );
        let lenient = spec(&["a", "b"], None);
        check(&lenient, 0, ran(RunStatus::Completed, 10, 10), "run step 2");
        check(
            &spec(&["only"], None),
            0,
            ran(RunStatus::Completed, 1, 0),
            "completed: its step completed",
        );
    }

    #[test]
    fn problems_name_the_field_and_the_fix() {
        assert!(spec(&["a", "b"], Some(5)).problems().is_empty());
        let problems = spec(&[], Some(101)).problems().join("\n");
        assert!(problems.contains("steps is empty"), "{problems}");
        assert!(problems.contains("from 0 to 100"), "{problems}");
        let twice = spec(&["a", "b", "A"], None).problems().join("\n");
        assert!(twice.contains("names sync `A` twice"), "{twice}");
        let many: Vec<String> = (0..=MAX_STEPS).map(|i| format!("s{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(spec(&many, None).problems()[0].contains("at most 20"));
    }

    #[test]
    fn statuses_round_trip_through_their_names() {
        for status in SequenceRunStatus::ALL {
            assert_eq!(SequenceRunStatus::parse(status.as_str()), Some(status));
        }
    }
}
