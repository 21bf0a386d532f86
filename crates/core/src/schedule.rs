//! When a sync runs by itself. Three forms, read and printed back the same way:
//! - `every 15m`, `every 2h`, `hourly`: a run this long after the previous one started;
//! - `daily`, `daily at 06:30`, `daily at 06:30 in Europe/Paris`: once a day at a clock time;
//! - `cron 0 6 * * 1-5`, `cron 0 6 * * 1-5 in America/New_York`: a five-field cron expression
//!   (minute, hour, day of month, month, day of week; with `L`, `#`, `W` and the `@daily`-style
//!   aliases), as data teams already write them for their orchestrators.
//!
//! Clock times are UTC unless an IANA time zone follows `in`; the zone's daylight-saving changes
//! are followed, so `daily at 06:30 in Europe/Paris` stays at half past six in Paris all year.
//! `ferry serve` starts scheduled runs; the CLI and the API start runs on demand.

use chrono::{DateTime, Duration, NaiveTime, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;
use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Schedule {
    /// A run this many minutes after the previous one started.
    Every { minutes: u32 },
    /// One run a day at this clock time in this zone.
    DailyAt { hour: u32, minute: u32, zone: Tz },
    /// A run at each time the cron expression names, read in this zone. The expression is kept
    /// as written (its words joined by single spaces) and checked when the schedule is read.
    Cron { expression: String, zone: Tz },
}

/// The shortest interval: below it, runs would pile up on Stripe's rate limits.
pub const MIN_INTERVAL_MINUTES: u32 = 5;

const EXAMPLES: &str = "`every 15m`, `every 2h`, `hourly`, `daily at 06:30`, \
     `daily at 06:30 in Europe/Paris` or `cron 0 6 * * 1-5` (clock times in UTC unless a time \
     zone follows `in`)";

/// How many coming times of a cron expression are checked against the shortest interval.
const CRON_TIMES_CHECKED: usize = 500;

/// Whether a cron expression's coming times are checked against the shortest interval.
#[derive(Clone, Copy, PartialEq, Eq)]
enum GapCheck {
    Check,
    Skip,
}

impl Schedule {
    /// Reads a schedule a person wrote (at every door): what it says, and that it never runs
    /// closer together than [`MIN_INTERVAL_MINUTES`].
    pub fn parse(text: &str) -> Result<Schedule, String> {
        Schedule::parse_with(text, GapCheck::Check)
    }

    /// Reads a schedule the workspace stored, which [`Schedule::parse`] checked when it was
    /// saved. A cron expression's coming times are not walked again: the store reads every
    /// sync's schedule on each scheduler tick and page, and that walk is hundreds of steps.
    pub fn read_stored(text: &str) -> Result<Schedule, String> {
        Schedule::parse_with(text, GapCheck::Skip)
    }

    fn parse_with(text: &str, gap_check: GapCheck) -> Result<Schedule, String> {
        let text = text.trim();
        let all_words: Vec<&str> = text.split_whitespace().collect();
        // A time zone comes last, after `in`.
        let (words, zone) = match all_words.as_slice() {
            [rest @ .., word_in, zone] if word_in.eq_ignore_ascii_case("in") => {
                (rest, Some(parse_zone(zone)?))
            }
            _ => (all_words.as_slice(), None),
        };
        let lower: Vec<String> = words.iter().map(|word| word.to_ascii_lowercase()).collect();
        let lower: Vec<&str> = lower.iter().map(String::as_str).collect();
        let schedule = match lower.as_slice() {
            ["hourly"] => Schedule::Every { minutes: 60 },
            ["daily"] => Schedule::DailyAt {
                hour: 0,
                minute: 0,
                zone: zone.unwrap_or(Tz::UTC),
            },
            ["daily", "at", time] => {
                let time = NaiveTime::parse_from_str(time, "%H:%M")
                    .map_err(|_| format!("`{time}` is not a time like 06:30; use {EXAMPLES}"))?;
                use chrono::Timelike;
                Schedule::DailyAt {
                    hour: time.hour(),
                    minute: time.minute(),
                    zone: zone.unwrap_or(Tz::UTC),
                }
            }
            ["every", amount] => every(amount, "")?,
            ["every", amount, unit] => every(amount, unit)?,
            ["cron", ..] => cron(&words[1..].join(" "), zone.unwrap_or(Tz::UTC), gap_check)?,
            _ => return Err(format!("cannot read the schedule `{text}`; use {EXAMPLES}")),
        };
        if let Schedule::Every { minutes } = schedule {
            if zone.is_some() {
                return Err(format!(
                    "`{text}` repeats at an interval, which no time zone changes; leave out \
                     `in ZONE`, or name a clock time: `daily at 06:30 in Europe/Paris`"
                ));
            }
            if minutes < MIN_INTERVAL_MINUTES {
                return Err(format!(
                    "a schedule runs at most every {MIN_INTERVAL_MINUTES} minutes; `{text}` is more often"
                ));
            }
        }
        Ok(schedule)
    }

    /// When the next run is due, given when the last one started (`None`: never ran, so now).
    /// A clock time is the first one strictly after the last start.
    pub fn next_due(&self, last_start: Option<DateTime<Utc>>, now: DateTime<Utc>) -> DateTime<Utc> {
        let Some(last) = last_start else { return now };
        match self {
            Schedule::Every { minutes } => last + Duration::minutes(i64::from(*minutes)),
            Schedule::DailyAt { zone, .. } | Schedule::Cron { zone, .. } => {
                let cron = self
                    .cron()
                    .expect("a clock-time schedule has a cron expression");
                cron.find_next_occurrence(&last.with_timezone(zone), false)
                    .map(|next| next.with_timezone(&Utc))
                    // Only an expression with no time left before the year 5000 gets here (it
                    // was checked to have one when read): it is never due.
                    .unwrap_or(DateTime::<Utc>::MAX_UTC)
            }
        }
    }

    /// The schedule's clock times as a cron expression (`None` for an interval).
    fn cron(&self) -> Option<Cron> {
        let expression = match self {
            Schedule::Every { .. } => return None,
            Schedule::DailyAt { hour, minute, .. } => format!("{minute} {hour} * * *"),
            Schedule::Cron { expression, .. } => expression.clone(),
        };
        Some(
            cron_parser()
                .parse(&expression)
                .expect("a schedule's cron expression was checked when it was read"),
        )
    }
}

/// Five fields, minute first: what cron, dbt Cloud, Airflow and Dagster take.
fn cron_parser() -> CronParser {
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
}

fn cron(expression: &str, zone: Tz, gap_check: GapCheck) -> Result<Schedule, String> {
    const FORM: &str = "five fields: minute, hour, day of month, month, day of week; for \
         example `cron 0 6 * * 1-5` is 06:00 on weekdays, `cron */30 * * * *` every half hour";
    if expression.is_empty() {
        return Err(format!("`cron` needs an expression of {FORM}"));
    }
    let cron = cron_parser().parse(expression).map_err(|problem| {
        format!("`{expression}` is not a cron expression ferry can read ({problem}); write {FORM}")
    })?;
    if gap_check == GapCheck::Skip {
        return Ok(Schedule::Cron {
            expression: expression.to_string(),
            zone,
        });
    }
    // Runs closer together than the shortest interval would pile up like `every 1m` does.
    let start = Utc::now().with_timezone(&zone);
    let times: Vec<DateTime<Tz>> = cron.iter_after(start).take(CRON_TIMES_CHECKED).collect();
    if times.is_empty() {
        return Err(format!(
            "`cron {expression}` never comes round (no such date); write {FORM}"
        ));
    }
    if let Some(pair) = times
        .windows(2)
        .find(|pair| pair[1] - pair[0] < Duration::minutes(i64::from(MIN_INTERVAL_MINUTES)))
    {
        return Err(format!(
            "a schedule runs at most every {MIN_INTERVAL_MINUTES} minutes; `cron {expression}` \
             runs at {} and again at {}",
            pair[0].format("%H:%M"),
            pair[1].format("%H:%M")
        ));
    }
    Ok(Schedule::Cron {
        expression: expression.to_string(),
        zone,
    })
}

/// An IANA zone name, in any case (`europe/paris` is `Europe/Paris`).
fn parse_zone(name: &str) -> Result<Tz, String> {
    chrono_tz::TZ_VARIANTS
        .iter()
        .find(|zone| zone.name().eq_ignore_ascii_case(name))
        .copied()
        .ok_or_else(|| {
            format!(
                "`{name}` is not a time zone; name one from the IANA database, such as \
                 `Europe/Paris`, `America/New_York` or `UTC`"
            )
        })
}

fn every(amount: &str, unit: &str) -> Result<Schedule, String> {
    // `15m` or `15 minutes`: the unit is glued to the number or the next word.
    let split = amount
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(amount.len());
    let (number, glued) = amount.split_at(split);
    let unit = if glued.is_empty() { unit } else { glued };
    let number: u32 = number
        .parse()
        .map_err(|_| format!("`every {amount} {unit}` needs a whole number; use {EXAMPLES}"))?;
    let minutes = match unit {
        "m" | "min" | "mins" | "minute" | "minutes" => number,
        "h" | "hour" | "hours" => number.saturating_mul(60),
        "d" | "day" | "days" => number.saturating_mul(24 * 60),
        other => return Err(format!("unknown unit `{other}`; use {EXAMPLES}")),
    };
    Ok(Schedule::Every { minutes })
}

/// ` in ZONE`, or nothing for UTC.
struct InZone(Tz);

impl fmt::Display for InZone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == Tz::UTC {
            Ok(())
        } else {
            write!(f, " in {}", self.0.name())
        }
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::Every { minutes } if minutes % (24 * 60) == 0 => {
                write!(f, "every {}d", minutes / (24 * 60))
            }
            Schedule::Every { minutes } if minutes % 60 == 0 => {
                write!(f, "every {}h", minutes / 60)
            }
            Schedule::Every { minutes } => write!(f, "every {minutes}m"),
            Schedule::DailyAt { hour, minute, zone } => {
                write!(f, "daily at {hour:02}:{minute:02}{}", InZone(*zone))
            }
            Schedule::Cron { expression, zone } => {
                write!(f, "cron {expression}{}", InZone(*zone))
            }
        }
    }
}

impl TryFrom<String> for Schedule {
    type Error = String;
    fn try_from(text: String) -> Result<Schedule, String> {
        Schedule::parse(&text)
    }
}

impl From<Schedule> for String {
    fn from(schedule: Schedule) -> String {
        schedule.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn schedules_read_and_print_back() {
        for (text, printed) in [
            ("every 15m", "every 15m"),
            ("every 15 minutes", "every 15m"),
            ("Every 2h", "every 2h"),
            ("every 90m", "every 90m"),
            ("hourly", "every 1h"),
            ("every 1 day", "every 1d"),
            ("daily", "daily at 00:00"),
            ("daily at 6:05", "daily at 06:05"),
            (
                "daily at 06:30 in Europe/Paris",
                "daily at 06:30 in Europe/Paris",
            ),
            (
                "daily at 06:30 IN europe/paris",
                "daily at 06:30 in Europe/Paris",
            ),
            ("daily at 06:30 in UTC", "daily at 06:30"),
            (
                "daily in America/New_York",
                "daily at 00:00 in America/New_York",
            ),
            ("cron 0 6 * * 1-5", "cron 0 6 * * 1-5"),
            ("cron  0  6 * *   MON-FRI ", "cron 0 6 * * MON-FRI"),
            (
                "CRON */15 9-17 * * * in Asia/Tokyo",
                "cron */15 9-17 * * * in Asia/Tokyo",
            ),
            ("cron 0 0 L * *", "cron 0 0 L * *"),
            ("cron @daily", "cron @daily"),
        ] {
            let schedule = Schedule::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(schedule.to_string(), printed);
            assert_eq!(Schedule::parse(printed).unwrap(), schedule);
        }
    }

    #[test]
    fn bad_schedules_say_what_would_work() {
        for text in [
            "every",
            "every 1m",
            "every x m",
            "daily at 25:00",
            "weekly",
            "every 3 fortnights",
            "every 2h in Europe/Paris",
            "daily at 06:30 in Mars/Olympus",
            "cron",
            "cron 0 6 * *",
            "cron 0 0 6 * * 1-5",
            "cron 61 * * * *",
            "cron * * * * *",
            "cron 0-2 6 * * *",
            "cron 0 0 30 2 *",
        ] {
            let problem = Schedule::parse(text).unwrap_err();
            assert!(
                problem.contains("every")
                    || problem.contains("minutes")
                    || problem.contains("five fields")
                    || problem.contains("IANA"),
                "{text}: {problem}"
            );
        }
    }

    #[test]
    fn the_next_run_is_due_after_the_last_start() {
        let now = at("2026-11-25T10:00:00Z");
        let every = Schedule::parse("every 30m").unwrap();
        assert_eq!(every.next_due(None, now), now);
        assert_eq!(
            every.next_due(Some(at("2026-11-25T09:45:00Z")), now),
            at("2026-11-25T10:15:00Z")
        );
        let daily = Schedule::parse("daily at 06:30").unwrap();
        assert_eq!(
            daily.next_due(Some(at("2026-11-25T05:00:00Z")), now),
            at("2026-11-25T06:30:00Z")
        );
        assert_eq!(
            daily.next_due(Some(at("2026-11-25T06:30:00Z")), now),
            at("2026-11-26T06:30:00Z")
        );
    }

    #[test]
    fn clock_times_follow_the_zone_across_daylight_saving() {
        let paris = Schedule::parse("daily at 06:30 in Europe/Paris").unwrap();
        let now = at("2026-01-01T00:00:00Z");
        // Winter: Paris is UTC+1.
        assert_eq!(
            paris.next_due(Some(at("2026-03-27T12:00:00Z")), now),
            at("2026-03-28T05:30:00Z")
        );
        // Clocks go forward on 29 March 2026: from then on 06:30 in Paris is 04:30 UTC.
        assert_eq!(
            paris.next_due(Some(at("2026-03-28T12:00:00Z")), now),
            at("2026-03-29T04:30:00Z")
        );
        let weekdays = Schedule::parse("cron 0 9 * * 1-5 in America/New_York").unwrap();
        // Friday 4 December 2026 09:00 EST has passed: the next is Monday the 7th, 14:00 UTC.
        assert_eq!(
            weekdays.next_due(Some(at("2026-12-04T14:00:00Z")), now),
            at("2026-12-07T14:00:00Z")
        );
        let half_hourly = Schedule::parse("cron */30 * * * *").unwrap();
        assert_eq!(
            half_hourly.next_due(Some(at("2026-12-04T14:00:00Z")), now),
            at("2026-12-04T14:30:00Z")
        );
        assert_eq!(
            half_hourly.next_due(Some(at("2026-12-04T14:29:59Z")), now),
            at("2026-12-04T14:30:00Z")
        );
    }

    #[test]
    fn a_cron_closer_than_the_shortest_interval_names_two_times() {
        let problem = Schedule::parse("cron 0,3 6 * * *").unwrap_err();
        assert!(problem.contains("06:00 and again at 06:03"), "{problem}");
    }

    #[test]
    fn a_stored_schedule_reads_back_without_walking_its_times() {
        for text in [
            "cron 0 6 * * 1-5 in America/New_York",
            "daily at 06:30",
            "every 2h",
        ] {
            assert_eq!(
                Schedule::read_stored(text).unwrap(),
                Schedule::parse(text).unwrap()
            );
        }
        // The gap was checked when it was saved; reading it back does not refuse it again.
        assert!(Schedule::read_stored("cron 0,3 6 * * *").is_ok());
        assert!(Schedule::read_stored("cron 61 * * * *").is_err());
    }

    #[test]
    fn a_schedule_is_a_string_in_json() {
        let schedule: Schedule = serde_json::from_str("\"every 2h\"").unwrap();
        assert_eq!(serde_json::to_string(&schedule).unwrap(), "\"every 2h\"");
        assert!(serde_json::from_str::<Schedule>("\"sometimes\"").is_err());
    }
}
