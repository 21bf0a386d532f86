//! Snowflake's JSON result encodings (SQL API, `jsonv2`) to ferry [`Value`]s.
//!
//! Every value arrives as a string (or JSON null), and its meaning comes from the column's
//! `rowType` entry: `fixed` is decimal text with the column's scale, `date` days since the
//! epoch, `time` seconds since midnight, `timestamp_ntz`/`_ltz` seconds since the epoch,
//! `timestamp_tz` seconds since the epoch then the offset in minutes plus 1440, `binary` hex,
//! `variant`/`object`/`array` JSON text. Numbers are never routed through f64 unless the column
//! is a float: NUMBER(38,0) past i64 stays exact `Decimal` text.

use crate::text_forms::{date_from_days, integer_value};
use crate::{Column, SourceError, SqlFlavor};
use chrono::DateTime;
use ferry_core::Value;
use serde::Deserialize;

/// One column of `resultSetMetaData.rowType`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub(crate) struct RowType {
    pub(crate) name: String,
    #[serde(rename = "type")]
    pub(crate) type_name: String,
    #[serde(default)]
    pub(crate) precision: Option<i64>,
    #[serde(default)]
    pub(crate) scale: Option<i64>,
}

/// How one column's strings become values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SnowflakeDecoder {
    /// `fixed` with scale 0: `Int`, or `Decimal` past i64.
    Integer,
    /// `fixed` with a scale: `Decimal` text with exactly `scale` digits after the point.
    Decimal {
        scale: u32,
    },
    Real,
    Text,
    Boolean,
    Date,
    /// Text `HH:MM:SS[.fraction]`: ferry has no time-of-day value.
    Time,
    TimestampNtz,
    /// `timestamp_ltz`: an instant, sent as UTC epoch seconds.
    TimestampLtz,
    /// `timestamp_tz`: an instant plus its offset; the instant is kept, in UTC.
    TimestampTz,
    Json,
    Binary,
}

/// The column and its decoder, or the error that names a type ferry cannot read.
pub(crate) fn column_for(row_type: &RowType) -> Result<(Column, SnowflakeDecoder), SourceError> {
    let kind = row_type.type_name.to_ascii_lowercase();
    let scale = row_type.scale.unwrap_or(0);
    let (type_name, decoder) = match kind.as_str() {
        "fixed" => {
            let type_name = format!("NUMBER({},{})", row_type.precision.unwrap_or(38), scale);
            let decoder = match u32::try_from(scale) {
                Ok(0) => SnowflakeDecoder::Integer,
                Ok(scale) => SnowflakeDecoder::Decimal { scale },
                Err(_) => {
                    return Err(SourceError::UnsupportedColumnType {
                        column: row_type.name.clone(),
                        type_name,
                        flavor: SqlFlavor::Snowflake,
                    })
                }
            };
            (type_name, decoder)
        }
        "real" => ("FLOAT".to_string(), SnowflakeDecoder::Real),
        "text" => ("VARCHAR".to_string(), SnowflakeDecoder::Text),
        "boolean" => ("BOOLEAN".to_string(), SnowflakeDecoder::Boolean),
        "date" => ("DATE".to_string(), SnowflakeDecoder::Date),
        "time" => ("TIME".to_string(), SnowflakeDecoder::Time),
        "timestamp_ntz" => ("TIMESTAMP_NTZ".to_string(), SnowflakeDecoder::TimestampNtz),
        "timestamp_ltz" => ("TIMESTAMP_LTZ".to_string(), SnowflakeDecoder::TimestampLtz),
        "timestamp_tz" => ("TIMESTAMP_TZ".to_string(), SnowflakeDecoder::TimestampTz),
        "variant" | "object" | "array" => (kind.to_uppercase(), SnowflakeDecoder::Json),
        "binary" => ("BINARY".to_string(), SnowflakeDecoder::Binary),
        _ => {
            return Err(SourceError::UnsupportedColumnType {
                column: row_type.name.clone(),
                type_name: row_type.type_name.to_uppercase(),
                flavor: SqlFlavor::Snowflake,
            })
        }
    };
    Ok((
        Column {
            name: row_type.name.clone(),
            type_name,
        },
        decoder,
    ))
}

/// One row of a partition, decoded column by column.
pub(crate) fn decode_row(
    columns: &[Column],
    decoders: &[SnowflakeDecoder],
    raw: Vec<Option<String>>,
) -> Result<Vec<Value>, SourceError> {
    if raw.len() != decoders.len() {
        return Err(SourceError::Warehouse {
            reason: format!(
                "Snowflake sent a row of {} values for {} columns",
                raw.len(),
                decoders.len()
            ),
        });
    }
    raw.into_iter()
        .zip(decoders.iter().zip(columns))
        .map(|(text, (decoder, column))| {
            decode_value(*decoder, text).map_err(|reason| SourceError::UnreadableValue {
                column: column.name.clone(),
                type_name: column.type_name.clone(),
                reason,
                flavor: SqlFlavor::Snowflake,
            })
        })
        .collect()
}

/// One value; the error says what was wrong with the text.
pub(crate) fn decode_value(
    decoder: SnowflakeDecoder,
    text: Option<String>,
) -> Result<Value, String> {
    let Some(text) = text else {
        return Ok(Value::Null);
    };
    let unreadable = || format!("`{text}` is not in Snowflake's encoding of this type");
    Ok(match decoder {
        SnowflakeDecoder::Text => Value::Text(text),
        SnowflakeDecoder::Integer => match text.parse::<i128>() {
            Ok(integer) => integer_value(integer),
            // NUMBER(38,0) always fits i128; anything else is still exact as decimal text.
            Err(_) => Value::Decimal(canonical_decimal(&text, 0).ok_or_else(unreadable)?),
        },
        SnowflakeDecoder::Decimal { scale } => {
            Value::Decimal(canonical_decimal(&text, scale).ok_or_else(unreadable)?)
        }
        SnowflakeDecoder::Real => Value::Float(text.parse::<f64>().map_err(|_| unreadable())?),
        SnowflakeDecoder::Boolean => match text.to_ascii_lowercase().as_str() {
            "true" | "1" => Value::Bool(true),
            "false" | "0" => Value::Bool(false),
            _ => return Err(unreadable()),
        },
        SnowflakeDecoder::Date => {
            let days = text.parse::<i64>().map_err(|_| unreadable())?;
            Value::Date(
                date_from_days(DateTime::UNIX_EPOCH.date_naive(), days)
                    .ok_or_else(|| format!("day {days} is outside the dates ferry can hold"))?,
            )
        }
        SnowflakeDecoder::Time => {
            let nanoseconds = epoch_nanoseconds(&text).ok_or_else(unreadable)?;
            time_of_day_text(nanoseconds).ok_or_else(unreadable)?
        }
        SnowflakeDecoder::TimestampNtz => {
            let nanoseconds = epoch_nanoseconds(&text).ok_or_else(unreadable)?;
            Value::Timestamp(instant(nanoseconds).ok_or_else(unreadable)?.naive_utc())
        }
        SnowflakeDecoder::TimestampLtz => {
            let nanoseconds = epoch_nanoseconds(&text).ok_or_else(unreadable)?;
            Value::TimestampTz(instant(nanoseconds).ok_or_else(unreadable)?)
        }
        SnowflakeDecoder::TimestampTz => {
            // The seconds are the instant in UTC; the offset only says how it was written.
            let (seconds, offset) = text.split_once(' ').ok_or_else(unreadable)?;
            let offset = offset.parse::<i64>().map_err(|_| unreadable())?;
            if !(0..=2880).contains(&offset) {
                return Err(unreadable());
            }
            let nanoseconds = epoch_nanoseconds(seconds).ok_or_else(unreadable)?;
            Value::TimestampTz(instant(nanoseconds).ok_or_else(unreadable)?)
        }
        SnowflakeDecoder::Json => {
            Value::Json(serde_json::from_str(&text).map_err(|error| format!("not JSON ({error})"))?)
        }
        SnowflakeDecoder::Binary => Value::Bytes(hex::decode(&text).map_err(|_| unreadable())?),
    })
}

/// `-12.5` with scale 3 → `-12.500`: the digits Snowflake sent, the fraction padded to the
/// column's scale, so the same number always has the same text. `None` if it is not a plain
/// decimal number.
fn canonical_decimal(text: &str, scale: u32) -> Option<String> {
    let (sign, unsigned) = match text.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", text.strip_prefix('+').unwrap_or(text)),
    };
    let (whole, fraction) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    let all_digits = |part: &str| part.bytes().all(|byte| byte.is_ascii_digit());
    if whole.is_empty() || !all_digits(whole) || !all_digits(fraction) {
        return None;
    }
    let whole = whole.trim_start_matches('0');
    let whole = if whole.is_empty() { "0" } else { whole };
    let mut fraction = fraction.to_string();
    while fraction.len() < scale as usize {
        fraction.push('0');
    }
    let is_zero = whole == "0" && fraction.bytes().all(|byte| byte == b'0');
    let sign = if is_zero { "" } else { sign };
    Some(if fraction.is_empty() {
        format!("{sign}{whole}")
    } else {
        format!("{sign}{whole}.{fraction}")
    })
}

/// `seconds[.fraction]` (up to nanoseconds, possibly negative) as nanoseconds.
fn epoch_nanoseconds(text: &str) -> Option<i128> {
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, fraction) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    let all_digits = |part: &str| part.bytes().all(|byte| byte.is_ascii_digit());
    if whole.is_empty() || !all_digits(whole) || !all_digits(fraction) || fraction.len() > 9 {
        return None;
    }
    let seconds: i128 = whole.parse().ok()?;
    let fraction_nanoseconds: i128 = format!("{fraction:0<9}").parse().ok()?;
    let magnitude = seconds.checked_mul(1_000_000_000)? + fraction_nanoseconds;
    Some(if negative { -magnitude } else { magnitude })
}

fn instant(nanoseconds_since_epoch: i128) -> Option<DateTime<chrono::Utc>> {
    let seconds = i64::try_from(nanoseconds_since_epoch.div_euclid(1_000_000_000)).ok()?;
    let nanoseconds = u32::try_from(nanoseconds_since_epoch.rem_euclid(1_000_000_000)).ok()?;
    DateTime::from_timestamp(seconds, nanoseconds)
}

/// `HH:MM:SS[.fraction]`, the fraction's trailing zeros dropped, as PostgreSQL and DuckDB
/// print a TIME (Snowflake's TIME(9) may carry nanoseconds, kept here).
fn time_of_day_text(nanoseconds_since_midnight: i128) -> Option<Value> {
    if !(0..86_400 * 1_000_000_000).contains(&nanoseconds_since_midnight) {
        return None;
    }
    let seconds = nanoseconds_since_midnight / 1_000_000_000;
    let fraction = nanoseconds_since_midnight % 1_000_000_000;
    let mut text = format!(
        "{:02}:{:02}:{:02}",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    );
    if fraction != 0 {
        let digits = format!("{fraction:09}");
        text.push('.');
        text.push_str(digits.trim_end_matches('0'));
    }
    Some(Value::Text(text))
}

#[cfg(test)]
mod tests {
    //! Fixture tests: result bodies shaped as Snowflake's SQL API reference shows them (its
    //! `rowType` fields, values as strings or null), decoded with no server.

    use super::*;
    use crate::snowflake::client::ResultSet;
    use chrono::{NaiveDate, NaiveDateTime, TimeZone as _, Utc};

    /// Decodes `data` under one `rowType` entry per column, as a ResultSet body would carry.
    fn decode_body(row_types: serde_json::Value, data: serde_json::Value) -> Vec<Vec<Value>> {
        let body = serde_json::json!({
            "code": "090001",
            "sqlState": "00000",
            "message": "Statement executed successfully.",
            "statementHandle": "01a2b3c4-0000-0001-0000-000100020003",
            "statementStatusUrl": "/api/v2/statements/01a2b3c4-0000-0001-0000-000100020003",
            "createdOn": 1_620_151_693_299u64,
            "resultSetMetaData": {
                "numRows": data.as_array().unwrap().len(),
                "format": "jsonv2",
                "partitionInfo": [{"rowCount": 1, "uncompressedSize": 1024}],
                "rowType": row_types,
            },
            "data": data,
        });
        let result: ResultSet = serde_json::from_value(body).unwrap();
        let meta = result.result_set_meta_data.unwrap();
        let (columns, decoders): (Vec<Column>, Vec<SnowflakeDecoder>) = meta
            .row_type
            .iter()
            .map(|row_type| column_for(row_type).unwrap())
            .unzip();
        result
            .data
            .into_iter()
            .map(|raw| decode_row(&columns, &decoders, raw).unwrap())
            .collect()
    }

    /// One column of `type` (with `precision`/`scale`), its `values` decoded in order.
    fn check(
        type_name: &str,
        precision: Option<i64>,
        scale: Option<i64>,
        values: &[Option<&str>],
        expected: &[Value],
    ) {
        let row_types = serde_json::json!([{
            "name": "C", "database": "DB", "schema": "PUBLIC", "table": "T",
            "type": type_name, "precision": precision, "scale": scale,
            "nullable": true, "byteLength": null, "length": null, "collation": null,
        }]);
        let data: Vec<serde_json::Value> = values
            .iter()
            .map(|value| serde_json::json!([value]))
            .collect();
        let decoded: Vec<Value> = decode_body(row_types, serde_json::Value::Array(data))
            .into_iter()
            .map(|mut row| row.remove(0))
            .collect();
        assert_eq!(decoded, expected, "{type_name}");
    }

    fn decimal(text: &str) -> Value {
        Value::Decimal(text.to_string())
    }

    fn timestamp(text: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f").unwrap()
    }

    #[test]
    fn integers_stay_exact_past_i64() {
        check(
            "fixed",
            Some(38),
            Some(0),
            &[
                Some("42"),
                Some("-9223372036854775808"),
                Some("9223372036854775808"),
                Some("99999999999999999999999999999999999999"),
                None,
            ],
            &[
                Value::Int(42),
                Value::Int(i64::MIN),
                decimal("9223372036854775808"),
                decimal("99999999999999999999999999999999999999"),
                Value::Null,
            ],
        );
    }

    #[test]
    fn decimals_keep_the_column_scale() {
        check(
            "fixed",
            Some(10),
            Some(2),
            &[
                Some("19.99"),
                Some("-0.50"),
                Some("5"),
                Some("0.1"),
                Some("-0.00"),
            ],
            &[
                decimal("19.99"),
                decimal("-0.50"),
                decimal("5.00"),
                decimal("0.10"),
                decimal("0.00"),
            ],
        );
        check(
            "fixed",
            Some(38),
            Some(37),
            &[Some("1.2345678901234567890123456789012345678")],
            &[decimal("1.2345678901234567890123456789012345678")],
        );
    }

    #[test]
    fn floats_text_booleans_and_binary() {
        check(
            "real",
            None,
            None,
            &[Some("1.5"), Some("-2.5e-3"), Some("inf"), Some("-inf")],
            &[
                Value::Float(1.5),
                Value::Float(-0.0025),
                Value::Float(f64::INFINITY),
                Value::Float(f64::NEG_INFINITY),
            ],
        );
        check(
            "text",
            None,
            None,
            &[Some("héllo"), Some("")],
            &[Value::Text("héllo".into()), Value::Text(String::new())],
        );
        check(
            "boolean",
            None,
            None,
            &[Some("true"), Some("false")],
            &[Value::Bool(true), Value::Bool(false)],
        );
        check(
            "binary",
            None,
            None,
            &[Some("48656C6C6F"), Some("")],
            &[Value::Bytes(b"Hello".to_vec()), Value::Bytes(Vec::new())],
        );
    }

    #[test]
    fn dates_and_times_count_from_the_epoch() {
        check(
            "date",
            None,
            None,
            &[Some("18262"), Some("-1"), Some("0")],
            &[
                Value::Date(NaiveDate::from_ymd_opt(2020, 1, 1).unwrap()),
                Value::Date(NaiveDate::from_ymd_opt(1969, 12, 31).unwrap()),
                Value::Date(NaiveDate::from_ymd_opt(1970, 1, 1).unwrap()),
            ],
        );
        check(
            "time",
            None,
            Some(9),
            &[
                Some("45296.789000000"),
                Some("0.000000000"),
                Some("86399.000000001"),
            ],
            &[
                Value::Text("12:34:56.789".into()),
                Value::Text("00:00:00".into()),
                Value::Text("23:59:59.000000001".into()),
            ],
        );
    }

    #[test]
    fn timestamps_without_zone_are_wall_clock_and_the_others_utc_instants() {
        check(
            "timestamp_ntz",
            None,
            Some(9),
            &[Some("1577934245.123456789"), Some("-1.500000000")],
            &[
                Value::Timestamp(timestamp("2020-01-02 03:04:05.123456789")),
                Value::Timestamp(timestamp("1969-12-31 23:59:58.5")),
            ],
        );
        let instant = Value::TimestampTz(Utc.with_ymd_and_hms(2020, 1, 2, 3, 4, 5).unwrap());
        check(
            "timestamp_ltz",
            None,
            Some(9),
            &[Some("1577934245.000000000")],
            std::slice::from_ref(&instant),
        );
        // 1560 = +02:00 (120 + 1440), 1440 = UTC, 960 = -08:00: the same instant each time.
        check(
            "timestamp_tz",
            None,
            Some(9),
            &[
                Some("1577934245.000000000 1560"),
                Some("1577934245.000000000 1440"),
                Some("1577934245 960"),
            ],
            &[instant.clone(), instant.clone(), instant],
        );
    }

    #[test]
    fn semi_structured_values_are_json() {
        let json = |text: &str| Value::Json(serde_json::from_str(text).unwrap());
        for type_name in ["variant", "object", "array"] {
            check(
                type_name,
                None,
                None,
                &[
                    Some("{\n  \"a\": 1,\n  \"b\": [true, null]\n}"),
                    Some("[\n  1,\n  2\n]"),
                    Some("\"text\""),
                ],
                &[
                    json(r#"{"a":1,"b":[true,null]}"#),
                    json("[1,2]"),
                    json(r#""text""#),
                ],
            );
        }
    }

    #[test]
    fn unreadable_values_and_types_name_the_column() {
        let (column, decoder) = column_for(&RowType {
            name: "AMOUNT".into(),
            type_name: "fixed".into(),
            precision: Some(10),
            scale: Some(2),
        })
        .unwrap();
        let error = decode_row(&[column], &[decoder], vec![Some("12,5".into())]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "column `AMOUNT` (type `NUMBER(10,2)`) has a value ferry cannot read: `12,5` is not \
             in Snowflake's encoding of this type; cast it in the model, e.g. `AMOUNT::text`"
        );
        let unsupported = column_for(&RowType {
            name: "PLACE".into(),
            type_name: "geography".into(),
            precision: None,
            scale: None,
        })
        .unwrap_err();
        assert_eq!(
            unsupported.to_string(),
            "column `PLACE` has type `GEOGRAPHY`, which ferry cannot read; cast it in the \
             model, e.g. `PLACE::text`"
        );
    }
}
