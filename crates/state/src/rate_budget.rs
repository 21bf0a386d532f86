//! Request budgets shared by every process that writes into one account (Stripe limits requests
//! per account, not per client): each budget remembers the first moment no reservation holds
//! yet, and a reservation takes the next `count` slots after it. This is GCRA without a burst:
//! slots are evenly spaced, so however many processes reserve, the account never sees more
//! than its rate.
//!
//! The backends keep the state and the clock; this module holds the arithmetic both share.

use crate::error::StateError;
use chrono::{DateTime, TimeDelta, Utc};
use std::time::Duration;

/// The slots of one reservation: the first one `first_in` from when the store answered, the
/// others `spacing` apart after it. A slot not used is lost; the budget does not give it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateSlots {
    pub first_in: Duration,
    pub spacing: Duration,
    pub count: u32,
}

/// The longest window one reservation may take: a caller asking for more is confused, and would
/// hold every other process writing into the account back for as long.
pub(crate) const LONGEST_RESERVATION: TimeDelta = TimeDelta::minutes(1);

/// A reservation asked for, checked, in the store's precision (microseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reservation {
    /// `1 s / per_second`, rounded up so that rounding never lets a request more through.
    pub(crate) spacing: TimeDelta,
    /// `count × spacing`: how far the budget's next free moment moves.
    pub(crate) span: TimeDelta,
    pub(crate) count: u32,
}

impl Reservation {
    pub(crate) fn new(budget_key: &str, per_second: u32, count: u32) -> Result<Self, StateError> {
        if budget_key.is_empty() {
            return Err(StateError::InvalidInput(
                "a rate budget needs a key, such as the account the requests go to".to_string(),
            ));
        }
        if per_second == 0 {
            return Err(StateError::InvalidInput(format!(
                "rate budget '{budget_key}' needs a rate of at least 1 request per second; \
                 for no limit at all, do not reserve slots"
            )));
        }
        if count == 0 {
            return Err(StateError::InvalidInput(format!(
                "reserve at least 1 slot of rate budget '{budget_key}'"
            )));
        }
        let spacing_micros = 1_000_000_u32.div_ceil(per_second);
        let spacing_micros = i64::from(spacing_micros);
        let spacing = TimeDelta::microseconds(spacing_micros);
        let span = TimeDelta::microseconds(spacing_micros * i64::from(count));
        if span > LONGEST_RESERVATION {
            let most = LONGEST_RESERVATION.num_microseconds().unwrap_or(i64::MAX) / spacing_micros;
            return Err(StateError::InvalidInput(format!(
                "cannot reserve {count} slots of rate budget '{budget_key}' at {per_second}/s at \
                 once: that is more than a minute of requests; reserve at most {most} at a time"
            )));
        }
        Ok(Reservation {
            spacing,
            span,
            count,
        })
    }

    /// The reservation's slots once it starts at `start`, as seen at `now`.
    pub(crate) fn slots(&self, start: DateTime<Utc>, now: DateTime<Utc>) -> RateSlots {
        RateSlots {
            // A start in the past (it cannot be, but clocks are clocks) means "now".
            first_in: (start - now).to_std().unwrap_or(Duration::ZERO),
            spacing: self.spacing.to_std().expect("the spacing is positive"),
            count: self.count,
        }
    }
}

/// Where a reservation starts: at the budget's next free moment, or now if that has passed (an
/// idle budget does not save up slots for a burst later).
pub(crate) fn reservation_start(
    next_free_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> DateTime<Utc> {
    next_free_at.map_or(now, |next_free_at| next_free_at.max(now))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at_micros(micros: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_micros(1_800_000_000_000_000 + micros).unwrap()
    }

    #[test]
    fn spacing_is_a_second_over_the_rate_rounded_up() {
        let check = |per_second, count, spacing_micros, span_micros| {
            let reservation = Reservation::new("acct", per_second, count).unwrap();
            assert_eq!(
                (
                    reservation.spacing.num_microseconds(),
                    reservation.span.num_microseconds()
                ),
                (Some(spacing_micros), Some(span_micros)),
                "{per_second}/s × {count}"
            );
        };
        check(25, 1, 40_000, 40_000);
        check(100, 10, 10_000, 100_000);
        check(3, 3, 333_334, 1_000_002);
        check(1, 60, 1_000_000, 60_000_000);
        check(u32::MAX, 5, 1, 5);
    }

    #[test]
    fn a_reservation_starts_at_the_next_free_moment_or_now() {
        assert_eq!(reservation_start(None, at_micros(0)), at_micros(0));
        assert_eq!(
            reservation_start(Some(at_micros(500)), at_micros(0)),
            at_micros(500)
        );
        assert_eq!(
            reservation_start(Some(at_micros(-500)), at_micros(0)),
            at_micros(0)
        );
        let reservation = Reservation::new("acct", 25, 2).unwrap();
        assert_eq!(
            reservation.slots(at_micros(1_500), at_micros(0)),
            RateSlots {
                first_in: Duration::from_micros(1_500),
                spacing: Duration::from_millis(40),
                count: 2
            }
        );
        assert_eq!(
            reservation.slots(at_micros(0), at_micros(7)).first_in,
            Duration::ZERO
        );
    }

    #[test]
    fn nonsense_reservations_are_refused_with_what_to_do() {
        let refusal = |key, per_second, count| {
            Reservation::new(key, per_second, count)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            refusal("", 25, 1),
            "a rate budget needs a key, such as the account the requests go to"
        );
        assert_eq!(
            refusal("acct", 0, 1),
            "rate budget 'acct' needs a rate of at least 1 request per second; for no limit at \
             all, do not reserve slots"
        );
        assert_eq!(
            refusal("acct", 25, 0),
            "reserve at least 1 slot of rate budget 'acct'"
        );
        assert_eq!(
            refusal("acct", 25, 1_501),
            "cannot reserve 1501 slots of rate budget 'acct' at 25/s at once: that is more than \
             a minute of requests; reserve at most 1500 at a time"
        );
        assert!(Reservation::new("acct", 25, 1_500).is_ok());
    }
}
