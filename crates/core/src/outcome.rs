//! What happened to one model row in a run, and the run's totals.

use serde::{Deserialize, Serialize};

/// The fate of one row. Every row of a run ends in exactly one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A new Stripe record was created.
    Created,
    /// An existing Stripe record was updated.
    Updated,
    /// The mapped payload equals the last confirmed write: no request was sent. Counted, but
    /// not kept as a record.
    Unchanged,
    /// Update Only, and no Stripe record matches the key.
    NotFound,
    /// The row cannot be synced as it is (bad value, missing or duplicate key, ambiguous match,
    /// or a permanent error from Stripe). Retried on the next run.
    Rejected,
    /// A transient failure that outlasted every retry. Retried on the next run.
    Failed,
    /// Mirror: a record ferry synced whose row left the model was deleted or archived in
    /// Stripe. Not a model row: its run record is numbered after the model's rows, and it is
    /// not counted in `rows`.
    Retired,
}

impl Outcome {
    pub const ALL: [Outcome; 7] = [
        Outcome::Created,
        Outcome::Updated,
        Outcome::Unchanged,
        Outcome::NotFound,
        Outcome::Rejected,
        Outcome::Failed,
        Outcome::Retired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Created => "created",
            Outcome::Updated => "updated",
            Outcome::Unchanged => "unchanged",
            Outcome::NotFound => "not_found",
            Outcome::Rejected => "rejected",
            Outcome::Failed => "failed",
            Outcome::Retired => "retired",
        }
    }

    pub fn parse(text: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == text)
    }
}

/// The state of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    /// Every row reached an outcome (some may be rejected or failed).
    Completed,
    /// The run stopped early: source error, authentication error, …
    Failed,
    /// Stopped by the user (SIGINT/SIGTERM).
    Cancelled,
    /// Found still "running" after its process died; the next run picks up its rows.
    Interrupted,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
            RunStatus::Interrupted => "interrupted",
        }
    }

    pub fn parse(text: &str) -> Option<RunStatus> {
        [
            RunStatus::Running,
            RunStatus::Completed,
            RunStatus::Failed,
            RunStatus::Cancelled,
            RunStatus::Interrupted,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

/// A run's totals. `rows` counts every model row; the outcome counts add up to it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunCounts {
    pub rows: u64,
    pub created: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub not_found: u64,
    pub rejected: u64,
    pub failed: u64,
    /// Rows the run never got to: it was stopped, or lost its lock, before their turn. They
    /// have no record; the next run takes them up.
    #[serde(default)]
    pub not_attempted: u64,
    /// Mirror: records retired because their rows left the model (not model rows, so not
    /// part of `rows`).
    #[serde(default)]
    pub retired: u64,
    /// HTTP requests sent to the destination, retries included.
    pub requests: u64,
}

impl RunCounts {
    pub fn add(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Created => self.created += 1,
            Outcome::Updated => self.updated += 1,
            Outcome::Unchanged => self.unchanged += 1,
            Outcome::NotFound => self.not_found += 1,
            Outcome::Rejected => self.rejected += 1,
            Outcome::Failed => self.failed += 1,
            Outcome::Retired => self.retired += 1,
        }
    }

    /// How many records ended with `outcome`.
    pub fn count_of(&self, outcome: Outcome) -> u64 {
        match outcome {
            Outcome::Created => self.created,
            Outcome::Updated => self.updated,
            Outcome::Unchanged => self.unchanged,
            Outcome::NotFound => self.not_found,
            Outcome::Rejected => self.rejected,
            Outcome::Failed => self.failed,
            Outcome::Retired => self.retired,
        }
    }

    /// Every row accounted for: the outcomes plus the rows not attempted (retired records are
    /// not rows).
    pub fn outcomes_total(&self) -> u64 {
        self.created
            + self.updated
            + self.unchanged
            + self.not_found
            + self.rejected
            + self.failed
            + self.not_attempted
    }
}
