//! ferry's domain types and the pure parts of a sync: values, sync specs, payloads and their
//! diffs. This crate does no IO (see ARCHITECTURE.md).

pub mod alerts;
pub mod outcome;
pub mod payload;
pub mod schedule;
pub mod secret;
pub mod sequence;
pub mod spec;
pub mod value;

pub use alerts::{
    evaluate_alerts, AlertChange, AlertCondition, AlertSettings, EventKind, FinishedRun,
};
pub use outcome::{Outcome, RunCounts, RunStatus};
pub use payload::{changed_fields, Baseline, FieldValue, Payload};
pub use schedule::Schedule;
pub use secret::Secret;
pub use sequence::{
    after_step, SequenceMove, SequenceRunStatus, SequenceSpec, StepResult,
    MAX_STEPS as MAX_SEQUENCE_STEPS,
};
pub use spec::{
    Behavior, FieldMapping, Finalize, InvoiceSettings, KeyMapping, MappingSource, MirrorSettings,
    NullPolicy, ObjectKind, SyncSpec, TemplatePart,
};
pub use value::{Value, ValueError};
