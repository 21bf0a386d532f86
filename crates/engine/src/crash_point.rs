//! Crash points for the crash tests. With `FERRY_TEST_CRASH_AT` set to a point's name, a run
//! aborts the whole process the moment it reaches that point, as a SIGKILL at that instant would:
//! no destructor runs, nothing is flushed. Random kills cannot aim at a moment between two
//! steps; these can. Unset (as always outside tests) it costs one environment read per process.
//!
//! Points: `staged` (the model is read and staged on disk, no request sent) and `chunk:N` (the
//! run's Nth chunk was sent, before its outcomes are surely committed and before the next chunk
//! is planned); `replace:created`, `replace:repointed` and `replace:retired` (a replacement's
//! new record was made; the parent's default points at it; the old record is retired — each
//! before the outcome is committed); `lines:start`, `lines:added:N` and `lines:finalize` (an
//! invoice exists, before its lines are read or added; its Nth line was added; every line is
//! on it, before it is finalized).

use std::sync::OnceLock;

fn wanted() -> Option<&'static str> {
    static WANTED: OnceLock<Option<String>> = OnceLock::new();
    WANTED
        .get_or_init(|| std::env::var("FERRY_TEST_CRASH_AT").ok())
        .as_deref()
}

/// Aborts the process if `point` is the one asked for.
pub(crate) fn reached(point: &str) {
    if wanted() == Some(point) {
        eprintln!("ferry: crashing on purpose at '{point}' (FERRY_TEST_CRASH_AT)");
        std::process::abort();
    }
}
