//! A typed value read from a warehouse, and its stable text form for Stripe.
//!
//! Sources convert their native column types into [`Value`]; everything downstream (mapping,
//! validation, diffing) sees only this type, so DuckDB and PostgreSQL behave the same.

use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, Utc};
use std::fmt;

/// One cell of a model's result.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    /// Exact numbers that do not fit `Int`: integers past i64 (HUGEINT, NUMERIC(30)) and decimals,
    /// kept as their canonical decimal text (`"19.99"`, `"-123456789012345678901234567890"`).
    Decimal(String),
    Float(f64),
    Text(String),
    /// Bytes that are not known to be text (BYTEA, BLOB).
    Bytes(Vec<u8>),
    Date(NaiveDate),
    /// A timestamp without time zone.
    Timestamp(NaiveDateTime),
    /// A point in time (TIMESTAMPTZ), normalised to UTC.
    TimestampTz(DateTime<Utc>),
    Json(serde_json::Value),
    Array(Vec<Value>),
}

/// Why a value cannot become the text or number Stripe needs. The message is for a person.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("is not a finite number ({0})")]
    NotFinite(String),
    #[error("is binary data that is not UTF-8 text")]
    NotText,
    #[error("is not a whole number: {0}")]
    NotInteger(String),
    #[error("is outside the range of a 64-bit integer: {0}")]
    IntegerOutOfRange(String),
    #[error("is a {0}, which cannot be used as text here")]
    NotScalar(&'static str),
}

impl Value {
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The kind of value, in words, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Int(_) | Value::Decimal(_) | Value::Float(_) => "number",
            Value::Text(_) => "text",
            Value::Bytes(_) => "binary value",
            Value::Date(_) => "date",
            Value::Timestamp(_) | Value::TimestampTz(_) => "timestamp",
            Value::Json(_) => "JSON value",
            Value::Array(_) => "array",
        }
    }

    /// The stable text form used for Stripe string fields and metadata values.
    ///
    /// The same value always gives the same text, whichever warehouse it came from: booleans
    /// are `true`/`false`, floats use the shortest form that reads back exactly, dates are ISO
    /// 8601, timestamps RFC 3339, JSON and arrays compact JSON. `Null` gives `None`.
    pub fn to_text(&self) -> Result<Option<String>, ValueError> {
        Ok(Some(match self {
            Value::Null => return Ok(None),
            Value::Bool(b) => b.to_string(),
            Value::Int(i) => i.to_string(),
            Value::Decimal(d) => d.clone(),
            Value::Float(f) => float_text(*f)?,
            Value::Text(s) => s.clone(),
            Value::Bytes(bytes) => match std::str::from_utf8(bytes) {
                Ok(s) => s.to_string(),
                Err(_) => return Err(ValueError::NotText),
            },
            Value::Date(d) => d.format("%Y-%m-%d").to_string(),
            Value::Timestamp(ts) => ts.format("%Y-%m-%dT%H:%M:%S%.f").to_string(),
            Value::TimestampTz(ts) => ts.to_rfc3339_opts(SecondsFormat::AutoSi, true),
            Value::Json(_) | Value::Array(_) => self.to_json()?.to_string(),
        }))
    }

    /// Text for a field that takes one scalar (an email, a name): JSON objects and arrays are
    /// refused rather than sent as their JSON text, which is almost never what the user meant.
    pub fn to_scalar_text(&self) -> Result<Option<String>, ValueError> {
        match self {
            Value::Json(serde_json::Value::Object(_)) => Err(ValueError::NotScalar("JSON object")),
            Value::Json(serde_json::Value::Array(_)) | Value::Array(_) => {
                Err(ValueError::NotScalar("list"))
            }
            Value::Json(serde_json::Value::String(s)) => Ok(Some(s.clone())),
            Value::Json(serde_json::Value::Null) => Ok(None),
            _ => self.to_text(),
        }
    }

    /// The value as a 64-bit integer (Stripe's `balance`, `next_invoice_sequence`).
    pub fn to_integer(&self) -> Result<Option<i64>, ValueError> {
        let text = match self {
            Value::Null => return Ok(None),
            Value::Int(i) => return Ok(Some(*i)),
            Value::Float(f) => {
                let text = float_text(*f)?;
                if f.fract() != 0.0 {
                    return Err(ValueError::NotInteger(text));
                }
                if *f < i64::MIN as f64 || *f >= i64::MAX as f64 {
                    return Err(ValueError::IntegerOutOfRange(text));
                }
                return Ok(Some(*f as i64));
            }
            Value::Decimal(d) => d.clone(),
            Value::Text(s) => s.trim().to_string(),
            Value::Json(serde_json::Value::Number(n)) => n.to_string(),
            other => return Err(ValueError::NotInteger(other.kind().to_string())),
        };
        parse_integer(&text).map(Some)
    }

    /// The value as JSON, for previews, snapshots and `--format json`.
    pub fn to_json(&self) -> Result<serde_json::Value, ValueError> {
        use serde_json::Value as J;
        Ok(match self {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => {
                float_text(*f)?;
                J::from(*f)
            }
            Value::Json(j) => j.clone(),
            Value::Array(items) => J::Array(
                items
                    .iter()
                    .map(Value::to_json)
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            other => J::String(other.to_text()?.unwrap_or_default()),
        })
    }
}

impl fmt::Display for Value {
    /// A short human form for tables and previews; never fails.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_text() {
            Ok(Some(text)) => f.write_str(&text),
            Ok(None) => f.write_str("NULL"),
            Err(_) => match self {
                Value::Float(x) => write!(f, "{x}"),
                Value::Bytes(b) => write!(f, "<{} bytes>", b.len()),
                other => f.write_str(other.kind()),
            },
        }
    }
}

fn float_text(f: f64) -> Result<String, ValueError> {
    if f.is_finite() {
        // Rust's `Display` for f64 is the shortest text that parses back to the same number.
        Ok(f.to_string())
    } else {
        Err(ValueError::NotFinite(f.to_string()))
    }
}

fn parse_integer(text: &str) -> Result<i64, ValueError> {
    if let Ok(i) = text.parse::<i64>() {
        return Ok(i);
    }
    // "100.00" is a whole number written as a decimal; "100.5" is not.
    if let Some((whole, fraction)) = text.split_once('.') {
        if !whole.is_empty() && fraction.chars().all(|c| c == '0') {
            return parse_integer(whole);
        }
        return Err(ValueError::NotInteger(text.to_string()));
    }
    let digits = text.strip_prefix('-').unwrap_or(text);
    if !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit()) {
        Err(ValueError::IntegerOutOfRange(text.to_string()))
    } else {
        Err(ValueError::NotInteger(text.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(v: Value) -> String {
        match v.to_text() {
            Ok(Some(t)) => t,
            Ok(None) => "<null>".into(),
            Err(e) => format!("error: {e}"),
        }
    }

    #[test]
    fn text_forms_are_stable() {
        assert_eq!(text(Value::Bool(true)), "true");
        assert_eq!(text(Value::Int(-42)), "-42");
        assert_eq!(text(Value::Float(0.1)), "0.1");
        assert_eq!(text(Value::Float(1.0)), "1");
        assert_eq!(
            text(Value::Float(f64::NAN)),
            "error: is not a finite number (NaN)"
        );
        assert_eq!(
            text(Value::Float(f64::INFINITY)),
            "error: is not a finite number (inf)"
        );
        assert_eq!(text(Value::Decimal("19.990".into())), "19.990");
        let date = NaiveDate::from_ymd_opt(1969, 7, 20).unwrap();
        assert_eq!(text(Value::Date(date)), "1969-07-20");
        let ts = date.and_hms_micro_opt(20, 17, 40, 500).unwrap();
        assert_eq!(text(Value::Timestamp(ts)), "1969-07-20T20:17:40.000500");
        assert_eq!(
            text(Value::TimestampTz(ts.and_utc())),
            "1969-07-20T20:17:40.000500Z"
        );
        assert_eq!(
            text(Value::Json(serde_json::json!({"a": [1, "b"]}))),
            r#"{"a":[1,"b"]}"#
        );
        assert_eq!(
            text(Value::Array(vec![Value::Int(1), Value::Text("x".into())])),
            r#"[1,"x"]"#
        );
        assert_eq!(
            text(Value::Bytes(vec![0xff, 0xfe])),
            "error: is binary data that is not UTF-8 text"
        );
        assert_eq!(text(Value::Null), "<null>");
    }

    #[test]
    fn integers_accept_whole_numbers_only() {
        let int = |v: Value| match v.to_integer() {
            Ok(i) => format!("{i:?}"),
            Err(e) => format!("error: {e}"),
        };
        assert_eq!(int(Value::Int(7)), "Some(7)");
        assert_eq!(int(Value::Decimal("100.00".into())), "Some(100)");
        assert_eq!(
            int(Value::Decimal("100.5".into())),
            "error: is not a whole number: 100.5"
        );
        assert_eq!(
            int(Value::Decimal("123456789012345678901234567890".into())),
            "error: is outside the range of a 64-bit integer: 123456789012345678901234567890"
        );
        assert_eq!(int(Value::Text(" -5 ".into())), "Some(-5)");
        assert_eq!(
            int(Value::Text("five".into())),
            "error: is not a whole number: five"
        );
        assert_eq!(int(Value::Float(2.5)), "error: is not a whole number: 2.5");
        assert_eq!(
            int(Value::Float(1e30)),
            "error: is outside the range of a 64-bit integer: 1000000000000000000000000000000"
        );
        assert_eq!(int(Value::Null), "None");
    }

    #[test]
    fn scalar_fields_refuse_structures() {
        assert!(Value::Json(serde_json::json!({"a": 1}))
            .to_scalar_text()
            .is_err());
        assert!(Value::Array(vec![]).to_scalar_text().is_err());
        assert_eq!(
            Value::Json(serde_json::json!("plain")).to_scalar_text(),
            Ok(Some("plain".into()))
        );
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn any_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Int),
            "-?[0-9]{1,40}(\\.[0-9]{1,10})?".prop_map(Value::Decimal),
            any::<f64>().prop_map(Value::Float),
            any::<String>().prop_map(Value::Text),
            proptest::collection::vec(any::<u8>(), 0..16).prop_map(Value::Bytes),
            (-300_000i32..300_000).prop_map(|d| Value::Date(
                NaiveDate::from_num_days_from_ce_opt(d).unwrap_or_default()
            )),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            proptest::collection::vec(inner, 0..4).prop_map(Value::Array)
        })
    }

    proptest! {
        /// Conversions never panic, and the same value always gives the same text.
        #[test]
        fn conversions_are_total_and_stable(value in any_value()) {
            let first = value.to_text();
            prop_assert_eq!(&first, &value.clone().to_text());
            let _ = value.to_scalar_text();
            let _ = value.to_json();
            let _ = value.to_string();
            match value.to_integer() {
                Ok(Some(i)) => {
                    // A whole number reads back as the same integer from its text form.
                    let again = Value::Text(i.to_string()).to_integer();
                    prop_assert_eq!(again, Ok(Some(i)));
                }
                Ok(None) => prop_assert!(value.is_null()),
                Err(e) => prop_assert!(!e.to_string().is_empty()),
            }
        }

        /// Integers in text survive the trip through `to_integer` exactly.
        #[test]
        fn integer_text_round_trips(i in any::<i64>()) {
            prop_assert_eq!(Value::Decimal(i.to_string()).to_integer(), Ok(Some(i)));
            prop_assert_eq!(Value::Text(format!(" {i} ")).to_integer(), Ok(Some(i)));
        }
    }
}
