//! Identifiers and clock readings the store hands out: run, sequence run and delivery ids that
//! sort by when they were made, sync uids, and timestamps both backends store without loss.

use chrono::{DateTime, SubsecRound, Utc};
use std::sync::atomic::{AtomicI64, Ordering};

/// The last microsecond timestamp given to an id by this process, so ids made in the same
/// microsecond (or after the clock stepped back) still sort in the order they were made.
static LAST_ID_MICROS: AtomicI64 = AtomicI64::new(0);

/// Now, truncated to microseconds: PostgreSQL keeps microseconds, so both backends then return
/// exactly the timestamp they were given.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// A new run id and its start time: `run_` + 14 hex digits of microseconds since 1970 (enough
/// until the year 4250) + 6 random hex digits against collisions between processes.
pub fn new_run_id() -> (String, DateTime<Utc>) {
    time_sortable_id("run_")
}

/// A new delivery id, made like a run id: `dlv_` + 14 hex digits of microseconds + 6 random.
pub fn new_delivery_id() -> String {
    time_sortable_id("dlv_").0
}

/// A new run request id: `rrq_` + 14 hex digits of microseconds + 6 random.
pub fn new_run_request_id() -> String {
    time_sortable_id("rrq_").0
}

/// A new sequence run id and its start time: `seqrun_` + 14 hex digits of microseconds + 6
/// random, so a sequence's runs sort by when they started, like runs.
pub fn new_sequence_run_id() -> (String, DateTime<Utc>) {
    time_sortable_id("seqrun_")
}

/// 16 random hex characters.
pub fn new_sync_uid() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// `prefix` + 14 hex digits of the microseconds since 1970 it was made at (after the last id's,
/// so ids of this process sort in the order they were made) + 6 random hex digits; and that time.
fn time_sortable_id(prefix: &str) -> (String, DateTime<Utc>) {
    let wall_clock = now().timestamp_micros();
    let mut previous = LAST_ID_MICROS.load(Ordering::SeqCst);
    let micros = loop {
        let candidate = wall_clock.max(previous + 1);
        match LAST_ID_MICROS.compare_exchange(
            previous,
            candidate,
            Ordering::SeqCst,
            Ordering::SeqCst,
        ) {
            Ok(_) => break candidate,
            Err(current) => previous = current,
        }
    };
    let random: u32 = rand::random::<u32>() & 0x00ff_ffff;
    let made_at = DateTime::from_timestamp_micros(micros).unwrap_or_else(now);
    (format!("{prefix}{micros:014x}{random:06x}"), made_at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_sort_in_creation_order() {
        let ids: Vec<(String, DateTime<Utc>)> = (0..1000).map(|_| new_run_id()).collect();
        for pair in ids.windows(2) {
            assert!(pair[0].0 < pair[1].0, "{} !< {}", pair[0].0, pair[1].0);
            assert!(pair[0].1 < pair[1].1);
        }
        let (id, started_at) = &ids[0];
        assert_eq!(id.len(), "run_".len() + 14 + 6);
        assert_eq!(
            i64::from_str_radix(&id[4..18], 16).unwrap(),
            started_at.timestamp_micros()
        );
    }

    #[test]
    fn sequence_run_ids_sort_in_creation_order_among_run_ids() {
        let (first, started_at) = new_sequence_run_id();
        let (run, _) = new_run_id();
        let (second, _) = new_sequence_run_id();
        assert!(first.starts_with("seqrun_") && first.len() == "seqrun_".len() + 14 + 6);
        assert_eq!(
            i64::from_str_radix(&first[7..21], 16).unwrap(),
            started_at.timestamp_micros()
        );
        assert!(first < second);
        assert!(first[7..] < run[4..] && run[4..] < second[7..]);
    }

    #[test]
    fn sync_uids_are_16_hex_characters() {
        let uid = new_sync_uid();
        assert_eq!(uid.len(), 16);
        assert!(uid
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_ne!(uid, new_sync_uid());
    }

    #[test]
    fn delivery_ids_sort_in_creation_order_among_run_ids() {
        let first = new_delivery_id();
        let (run, _) = new_run_id();
        let second = new_delivery_id();
        assert!(first.starts_with("dlv_") && first.len() == "dlv_".len() + 14 + 6);
        assert!(first < second);
        assert!(first[4..] < run[4..] && run[4..] < second[4..]);
    }
}
