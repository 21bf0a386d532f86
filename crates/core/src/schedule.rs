//! When a sync runs by itself: `every 15m`, `every 2h`, `hourly`, `daily`, `daily at 06:30`
//! (UTC). `ferry serve` starts scheduled runs; the CLI and the API start runs on demand.

use chrono::{DateTime, Duration, NaiveTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Schedule {
    /// A run this many minutes after the previous one started.
    Every { minutes: u32 },
    /// One run a day at this time (UTC).
    DailyAt { hour: u32, minute: u32 },
}

/// The shortest interval: below it, runs would pile up on Stripe's rate limits.
pub const MIN_INTERVAL_MINUTES: u32 = 5;

const EXAMPLES: &str = "`every 15m`, `every 2h`, `hourly`, `daily` or `daily at 06:30` (UTC)";

impl Schedule {
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let text = text.trim().to_ascii_lowercase();
        let words: Vec<&str> = text.split_whitespace().collect();
        let schedule = match words.as_slice() {
            ["hourly"] => Schedule::Every { minutes: 60 },
            ["daily"] => Schedule::DailyAt { hour: 0, minute: 0 },
            ["daily", "at", time] => {
                let time = NaiveTime::parse_from_str(time, "%H:%M")
                    .map_err(|_| format!("`{time}` is not a time like 06:30; use {EXAMPLES}"))?;
                use chrono::Timelike;
                Schedule::DailyAt {
                    hour: time.hour(),
                    minute: time.minute(),
                }
            }
            ["every", amount] => every(amount, "")?,
            ["every", amount, unit] => every(amount, unit)?,
            _ => return Err(format!("cannot read the schedule `{text}`; use {EXAMPLES}")),
        };
        if let Schedule::Every { minutes } = schedule {
            if minutes < MIN_INTERVAL_MINUTES {
                return Err(format!(
                    "a schedule runs at most every {MIN_INTERVAL_MINUTES} minutes; `{text}` is more often"
                ));
            }
        }
        Ok(schedule)
    }

    /// When the next run is due, given when the last one started (`None`: never ran, so now).
    pub fn next_due(&self, last_start: Option<DateTime<Utc>>, now: DateTime<Utc>) -> DateTime<Utc> {
        let Some(last) = last_start else { return now };
        match *self {
            Schedule::Every { minutes } => last + Duration::minutes(i64::from(minutes)),
            Schedule::DailyAt { hour, minute } => {
                let time = NaiveTime::from_hms_opt(hour, minute, 0).expect("a valid time");
                let same_day = last.date_naive().and_time(time).and_utc();
                if same_day > last {
                    same_day
                } else {
                    same_day + Duration::days(1)
                }
            }
        }
    }
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

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Schedule::Every { minutes } if minutes % (24 * 60) == 0 => {
                write!(f, "every {}d", minutes / (24 * 60))
            }
            Schedule::Every { minutes } if minutes % 60 == 0 => {
                write!(f, "every {}h", minutes / 60)
            }
            Schedule::Every { minutes } => write!(f, "every {minutes}m"),
            Schedule::DailyAt { hour, minute } => write!(f, "daily at {hour:02}:{minute:02}"),
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
        ] {
            let problem = Schedule::parse(text).unwrap_err();
            assert!(
                problem.contains("every") || problem.contains("minutes"),
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
    fn a_schedule_is_a_string_in_json() {
        let schedule: Schedule = serde_json::from_str("\"every 2h\"").unwrap();
        assert_eq!(serde_json::to_string(&schedule).unwrap(), "\"every 2h\"");
        assert!(serde_json::from_str::<Schedule>("\"sometimes\"").is_err());
    }
}
