//! Conversions both warehouses share, so the same SQL value becomes the same ferry [`Value`]
//! whichever database produced it: integers past i64, REAL floats, dates and timestamps counted
//! from an epoch (with their `infinity` markers), and the text forms of TIME and INTERVAL,
//! which have no ferry type of their own.

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeDelta};
use ferry_core::Value;

/// An integer as `Int` when it fits, else as exact `Decimal` text.
pub(crate) fn integer_value(integer: i128) -> Value {
    match i64::try_from(integer) {
        Ok(fits) => Value::Int(fits),
        Err(_) => Value::Decimal(integer.to_string()),
    }
}

/// An unsigned integer as `Int` when it fits, else as exact `Decimal` text.
pub(crate) fn unsigned_integer_value(integer: u128) -> Value {
    match i64::try_from(integer) {
        Ok(fits) => Value::Int(fits),
        Err(_) => Value::Decimal(integer.to_string()),
    }
}

/// A REAL widened to f64 through its shortest text, so `0.1::real` becomes `0.1` and not
/// `0.10000000149011612` (the exact binary value, which nobody typed).
pub(crate) fn float_value_from_real(real: f32) -> Value {
    if !real.is_finite() {
        return Value::Float(f64::from(real));
    }
    Value::Float(real.to_string().parse().unwrap_or(f64::from(real)))
}

/// A date stored as days since `epoch`; `None` when chrono cannot represent it.
pub(crate) fn date_from_days(epoch: NaiveDate, days: i64) -> Option<NaiveDate> {
    epoch.checked_add_signed(TimeDelta::try_days(days)?)
}

/// A timestamp stored as `ticks` of `ticks_per_second` since `epoch`; `None` when chrono cannot
/// represent it.
pub(crate) fn timestamp_from_ticks(
    epoch: NaiveDateTime,
    ticks: i64,
    ticks_per_second: i64,
) -> Option<NaiveDateTime> {
    let seconds = ticks.div_euclid(ticks_per_second);
    let nanoseconds_per_tick = 1_000_000_000 / ticks_per_second;
    let nanoseconds = ticks.rem_euclid(ticks_per_second) * nanoseconds_per_tick;
    let offset =
        TimeDelta::try_seconds(seconds)?.checked_add(&TimeDelta::nanoseconds(nanoseconds))?;
    epoch.checked_add_signed(offset)
}

pub(crate) fn unix_epoch() -> NaiveDateTime {
    DateTime::UNIX_EPOCH.naive_utc()
}

/// PostgreSQL counts dates and timestamps from 2000-01-01.
pub(crate) fn postgres_epoch() -> NaiveDateTime {
    NaiveDate::from_ymd_opt(2000, 1, 1)
        .and_then(|date| date.and_hms_opt(0, 0, 0))
        .unwrap_or_default()
}

/// A time of day in microseconds since midnight as `HH:MM:SS[.ffffff]`, trailing zeros of the
/// fraction dropped, as PostgreSQL and DuckDB print it.
pub(crate) fn time_of_day_text(microseconds_since_midnight: i64) -> String {
    let (hours, minutes, seconds, microseconds) = split_microseconds(microseconds_since_midnight);
    format!(
        "{hours:02}:{minutes:02}:{}",
        seconds_text(seconds, microseconds)
    )
}

/// A time with a UTC offset given in seconds EAST of UTC, as PostgreSQL prints `timetz`:
/// `04:05:06+02`, `04:05:06-03:30`.
pub(crate) fn time_with_offset_text(
    microseconds_since_midnight: i64,
    offset_seconds_east: i32,
) -> String {
    let sign = if offset_seconds_east < 0 { '-' } else { '+' };
    let offset = offset_seconds_east.unsigned_abs();
    let (hours, minutes, seconds) = (offset / 3600, offset / 60 % 60, offset % 60);
    let mut text = format!(
        "{}{sign}{hours:02}",
        time_of_day_text(microseconds_since_midnight)
    );
    if minutes != 0 || seconds != 0 {
        text.push_str(&format!(":{minutes:02}"));
    }
    if seconds != 0 {
        text.push_str(&format!(":{seconds:02}"));
    }
    text
}

/// An interval in PostgreSQL's default output style (`1 year 2 mons 3 days 04:05:06`,
/// `-1 days +02:00:00`, `00:00:00`), used for both warehouses so the text does not depend on
/// where the model ran.
pub(crate) fn interval_text(months: i32, days: i32, microseconds: i64) -> String {
    let mut text = String::new();
    let mut nothing_written = true;
    let mut previous_was_negative = false;
    let mut add_part = |value: i64, unit: &str, text: &mut String| {
        if value == 0 {
            return;
        }
        if !nothing_written {
            text.push(' ');
        }
        if previous_was_negative && value > 0 {
            text.push('+');
        }
        let plural = if value == 1 { "" } else { "s" };
        text.push_str(&format!("{value} {unit}{plural}"));
        previous_was_negative = value < 0;
        nothing_written = false;
    };
    add_part(i64::from(months / 12), "year", &mut text);
    add_part(i64::from(months % 12), "mon", &mut text);
    add_part(i64::from(days), "day", &mut text);
    if nothing_written || microseconds != 0 {
        let sign = if microseconds < 0 {
            "-"
        } else if previous_was_negative {
            "+"
        } else {
            ""
        };
        let (hours, minutes, seconds, fraction) = split_microseconds(microseconds.abs());
        if !nothing_written {
            text.push(' ');
        }
        text.push_str(&format!(
            "{sign}{hours:02}:{minutes:02}:{}",
            seconds_text(seconds, fraction)
        ));
    }
    text
}

fn split_microseconds(microseconds: i64) -> (i64, i64, i64, i64) {
    let total_seconds = microseconds / 1_000_000;
    (
        total_seconds / 3600,
        total_seconds / 60 % 60,
        total_seconds % 60,
        microseconds % 1_000_000,
    )
}

fn seconds_text(seconds: i64, microseconds: i64) -> String {
    if microseconds == 0 {
        format!("{seconds:02}")
    } else {
        let fraction = format!("{microseconds:06}");
        format!("{seconds:02}.{}", fraction.trim_end_matches('0'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_read_like_postgres() {
        let hour = 3_600_000_000;
        assert_eq!(
            interval_text(14, 3, 4 * hour + 5 * 60_000_000 + 6_000_000),
            "1 year 2 mons 3 days 04:05:06"
        );
        assert_eq!(interval_text(0, -1, 2 * hour), "-1 days +02:00:00");
        assert_eq!(interval_text(0, 0, 0), "00:00:00");
        assert_eq!(interval_text(-12, 0, 0), "-1 years");
        assert_eq!(interval_text(0, 1, -1_500_000), "1 day -00:00:01.5");
        assert_eq!(interval_text(0, 0, 100 * hour), "100:00:00");
    }

    #[test]
    fn times_trim_their_fraction() {
        assert_eq!(time_of_day_text(4 * 3_600_000_000 + 500_000), "04:00:00.5");
        assert_eq!(time_with_offset_text(0, 2 * 3600), "00:00:00+02");
        assert_eq!(
            time_with_offset_text(0, -(3 * 3600 + 1800)),
            "00:00:00-03:30"
        );
    }

    #[test]
    fn timestamps_before_the_epoch_keep_their_fraction() {
        let timestamp = timestamp_from_ticks(unix_epoch(), -1_500_000, 1_000_000).unwrap();
        assert_eq!(timestamp.to_string(), "1969-12-31 23:59:58.500");
        assert_eq!(timestamp_from_ticks(unix_epoch(), i64::MAX, 1), None);
    }
}
