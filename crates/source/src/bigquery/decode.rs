//! Decodes BigQuery's REST result encoding into ferry [`Value`]s.
//!
//! `jobs.query` and `jobs.getQueryResults` send every cell as JSON: scalars as strings (INT64,
//! NUMERIC and BIGNUMERIC too, so no number ever passes through a float), NULL as `null`, a
//! REPEATED field as a list of `{"v": …}`, a RECORD as `{"f": [{"v": …}, …]}` in the order of
//! the schema's sub-fields. The decoder for each column is chosen once from the schema, before
//! the first row, so a type ferry cannot read is reported up front.

use crate::text_forms::{time_of_day_text, timestamp_from_ticks, unix_epoch};
use base64::Engine as _;
use chrono::{NaiveDate, NaiveDateTime, NaiveTime, Timelike};
use ferry_core::Value;
use serde::Deserialize;

/// A result schema, as `schema` in a query response.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct Schema {
    #[serde(default)]
    pub(crate) fields: Vec<SchemaField>,
}

/// One field of a schema; a RECORD has `fields` of its own.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct SchemaField {
    pub(crate) name: String,
    #[serde(rename = "type")]
    pub(crate) field_type: String,
    #[serde(default)]
    pub(crate) mode: Option<String>,
    #[serde(default)]
    pub(crate) fields: Vec<SchemaField>,
}

/// How to decode one field: its scalar kind, and whether it is REPEATED.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FieldDecoder {
    kind: ScalarKind,
    repeated: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum ScalarKind {
    Int64,
    Float64,
    /// NUMERIC and BIGNUMERIC: exact decimal text.
    Numeric,
    Bool,
    /// STRING, GEOGRAPHY (WKT) and INTERVAL: their text as BigQuery sends it.
    Text,
    Bytes,
    Date,
    Datetime,
    Time,
    Timestamp,
    Json,
    Record(Vec<(String, FieldDecoder)>),
}

/// The decoder of a schema field, or the standard SQL type name ferry cannot read.
pub(crate) fn decoder_for_field(field: &SchemaField) -> Result<FieldDecoder, String> {
    let kind = match field.field_type.to_ascii_uppercase().as_str() {
        "INTEGER" | "INT64" => ScalarKind::Int64,
        "FLOAT" | "FLOAT64" => ScalarKind::Float64,
        "NUMERIC" | "BIGNUMERIC" | "DECIMAL" | "BIGDECIMAL" => ScalarKind::Numeric,
        "BOOLEAN" | "BOOL" => ScalarKind::Bool,
        "STRING" | "GEOGRAPHY" | "INTERVAL" => ScalarKind::Text,
        "BYTES" => ScalarKind::Bytes,
        "DATE" => ScalarKind::Date,
        "DATETIME" => ScalarKind::Datetime,
        "TIME" => ScalarKind::Time,
        "TIMESTAMP" => ScalarKind::Timestamp,
        "JSON" => ScalarKind::Json,
        "RECORD" | "STRUCT" => ScalarKind::Record(
            field
                .fields
                .iter()
                .map(|sub_field| Ok((sub_field.name.clone(), decoder_for_field(sub_field)?)))
                .collect::<Result<_, String>>()?,
        ),
        _ => return Err(standard_type_name(field)),
    };
    Ok(FieldDecoder {
        kind,
        repeated: is_repeated(field),
    })
}

/// The field's type as BigQuery's standard SQL writes it (`INT64`, `ARRAY<STRUCT<a INT64>>`),
/// where the REST schema uses the legacy names (`INTEGER`, `RECORD`, mode REPEATED).
pub(crate) fn standard_type_name(field: &SchemaField) -> String {
    let upper = field.field_type.to_ascii_uppercase();
    let base = match upper.as_str() {
        "INTEGER" => "INT64".to_string(),
        "FLOAT" => "FLOAT64".to_string(),
        "BOOLEAN" => "BOOL".to_string(),
        "RECORD" | "STRUCT" => {
            let inner: Vec<String> = field
                .fields
                .iter()
                .map(|sub_field| format!("{} {}", sub_field.name, standard_type_name(sub_field)))
                .collect();
            format!("STRUCT<{}>", inner.join(", "))
        }
        _ => upper,
    };
    if is_repeated(field) {
        format!("ARRAY<{base}>")
    } else {
        base
    }
}

/// Decodes one cell's `v`. The error is a reason for a person; the caller adds the column.
pub(crate) fn decode_cell(
    decoder: &FieldDecoder,
    cell: &serde_json::Value,
) -> Result<Value, String> {
    if decoder.repeated {
        // BigQuery writes a NULL array as [] and never puts NULL inside an array.
        return match cell {
            serde_json::Value::Null => Ok(Value::Array(Vec::new())),
            serde_json::Value::Array(elements) => elements
                .iter()
                .map(|element| decode_scalar(&decoder.kind, wrapped_value(element)?))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array),
            other => Err(format!(
                "expected a list for a REPEATED field, got {}",
                json_kind(other)
            )),
        };
    }
    decode_scalar(&decoder.kind, cell)
}

fn decode_scalar(kind: &ScalarKind, cell: &serde_json::Value) -> Result<Value, String> {
    if cell.is_null() {
        return Ok(Value::Null);
    }
    if let ScalarKind::Record(fields) = kind {
        return decode_record(fields, cell);
    }
    let text = cell
        .as_str()
        .ok_or_else(|| format!("expected a string, got {}", json_kind(cell)))?;
    let value = match kind {
        ScalarKind::Int64 => Value::Int(
            text.parse()
                .map_err(|_| format!("`{text}` is not a 64-bit integer"))?,
        ),
        ScalarKind::Float64 => Value::Float(float_from_text(text)?),
        ScalarKind::Numeric => Value::Decimal(canonical_decimal(text)?),
        ScalarKind::Bool => match text {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            other => return Err(format!("`{other}` is not a boolean")),
        },
        ScalarKind::Text => Value::Text(text.to_string()),
        ScalarKind::Bytes => Value::Bytes(
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|error| format!("the bytes are not valid base64: {error}"))?,
        ),
        ScalarKind::Date => Value::Date(
            NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .map_err(|_| format!("`{text}` is not a date"))?,
        ),
        ScalarKind::Datetime => Value::Timestamp(datetime_from_text(text)?),
        ScalarKind::Time => {
            let time = NaiveTime::parse_from_str(text, "%H:%M:%S%.f")
                .map_err(|_| format!("`{text}` is not a time of day"))?;
            let microseconds = i64::from(time.num_seconds_from_midnight()) * 1_000_000
                + i64::from(time.nanosecond() / 1000);
            // The same text PostgreSQL and DuckDB give a TIME: trailing zeros of the fraction
            // dropped (BigQuery sends `04:05:06.500000`).
            Value::Text(time_of_day_text(microseconds))
        }
        ScalarKind::Timestamp => Value::TimestampTz(timestamp_from_text(text)?.and_utc()),
        ScalarKind::Json => Value::Json(
            serde_json::from_str(text)
                .map_err(|error| format!("the JSON does not parse: {error}"))?,
        ),
        ScalarKind::Record(_) => unreachable!("records are decoded above"),
    };
    Ok(value)
}

/// A RECORD (STRUCT) becomes a JSON object of its fields, in schema order. ferry has no struct
/// value; DuckDB's STRUCT becomes the same JSON object, so a model reads the same whichever
/// warehouse runs it, and every field stays reachable by name (`metadata.x` from a JSON object).
fn decode_record(
    fields: &[(String, FieldDecoder)],
    cell: &serde_json::Value,
) -> Result<Value, String> {
    let cells = cell
        .get("f")
        .and_then(serde_json::Value::as_array)
        .ok_or_else(|| format!("expected a record {{\"f\": […]}}, got {}", json_kind(cell)))?;
    if cells.len() != fields.len() {
        return Err(format!(
            "the record has {} fields where its schema has {}",
            cells.len(),
            fields.len()
        ));
    }
    let mut object = serde_json::Map::with_capacity(fields.len());
    for ((name, decoder), field_cell) in fields.iter().zip(cells) {
        let value = decode_cell(decoder, wrapped_value(field_cell)?)?;
        let json = value
            .to_json()
            .map_err(|error| format!("field `{name}` {error}"))?;
        object.insert(name.clone(), json);
    }
    Ok(Value::Json(serde_json::Value::Object(object)))
}

/// The `v` of a `{"v": …}` wrapper (an array element, a record field, a row cell).
pub(crate) fn wrapped_value(wrapper: &serde_json::Value) -> Result<&serde_json::Value, String> {
    wrapper
        .get("v")
        .ok_or_else(|| format!("expected {{\"v\": …}}, got {}", json_kind(wrapper)))
}

/// FLOAT64 as BigQuery writes it (Java's `Double.toString`): `1.5`, `1.0E-7`, `NaN`,
/// `Infinity`, `-Infinity`.
fn float_from_text(text: &str) -> Result<f64, String> {
    match text {
        "NaN" => Ok(f64::NAN),
        "Infinity" => Ok(f64::INFINITY),
        "-Infinity" => Ok(f64::NEG_INFINITY),
        _ => text
            .parse::<f64>()
            .ok()
            .filter(|number| number.is_finite())
            .ok_or_else(|| format!("`{text}` is not a number")),
    }
}

/// A decimal number in plain notation, exactly as written but for a needless sign, leading
/// zeros of the integer part and trailing zeros of the fraction (`-0.50` → `-0.5`, `007` → `7`,
/// `-0` → `0`); an exponent (`1.5E+3`) is written out (`1500`). BigQuery already sends NUMERIC
/// and BIGNUMERIC in this form; normalising keeps the text stable if it ever does not.
pub(crate) fn canonical_decimal(text: &str) -> Result<String, String> {
    let not_decimal = || format!("`{text}` is not a decimal number");
    let (negative, unsigned) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(at) => (
            &unsigned[..at],
            unsigned[at + 1..]
                .parse::<i32>()
                .map_err(|_| not_decimal())?,
        ),
        None => (unsigned, 0),
    };
    let (integer_part, fraction_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let all_digits = |part: &str| part.bytes().all(|byte| byte.is_ascii_digit());
    if integer_part.is_empty() && fraction_part.is_empty()
        || !all_digits(integer_part)
        || !all_digits(fraction_part)
        || exponent.unsigned_abs() > 1000
    {
        return Err(not_decimal());
    }
    // All digits, and where the decimal point falls among them once the exponent moved it.
    let digits = format!("{integer_part}{fraction_part}");
    let point = integer_part.len() as i64 + i64::from(exponent);
    let (integer_digits, fraction_digits) = if point <= 0 {
        (
            String::new(),
            "0".repeat(point.unsigned_abs() as usize) + &digits,
        )
    } else if point as usize >= digits.len() {
        (
            digits.clone() + &"0".repeat(point as usize - digits.len()),
            String::new(),
        )
    } else {
        let (integer, fraction) = digits.split_at(point as usize);
        (integer.to_string(), fraction.to_string())
    };
    let integer_digits = integer_digits.trim_start_matches('0');
    let fraction_digits = fraction_digits.trim_end_matches('0');
    let mut canonical = String::with_capacity(digits.len() + 3);
    let is_zero = integer_digits.is_empty() && fraction_digits.is_empty();
    if negative && !is_zero {
        canonical.push('-');
    }
    canonical.push_str(if integer_digits.is_empty() {
        "0"
    } else {
        integer_digits
    });
    if !fraction_digits.is_empty() {
        canonical.push('.');
        canonical.push_str(fraction_digits);
    }
    Ok(canonical)
}

/// DATETIME: `2024-01-02T03:04:05[.ffffff]` (a space instead of `T` is accepted as well).
fn datetime_from_text(text: &str) -> Result<NaiveDateTime, String> {
    NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f"))
        .map_err(|_| format!("`{text}` is not a date and time"))
}

/// TIMESTAMP: with `formatOptions.useInt64Timestamp`, microseconds since the Unix epoch
/// (`1704164645123456`). Without it BigQuery sends float seconds (`1.704164645123456E9`); that
/// form is read exactly too, through its decimal text, never through an f64.
fn timestamp_from_text(text: &str) -> Result<NaiveDateTime, String> {
    let out_of_range =
        || format!("`{text}` is outside the years ferry can represent (-262143 to 262142)");
    let microseconds: i64 = match text.parse::<i64>() {
        Ok(microseconds) => microseconds,
        Err(_) => {
            let seconds =
                canonical_decimal(text).map_err(|_| format!("`{text}` is not a timestamp"))?;
            let (whole, fraction) = seconds.split_once('.').unwrap_or((&seconds, ""));
            if fraction.len() > 6 {
                return Err(format!("`{text}` has more than microsecond precision"));
            }
            let fraction = format!("{fraction:0<6}");
            let negative = whole.starts_with('-');
            let whole: i64 = whole.parse().map_err(|_| out_of_range())?;
            let fraction: i64 = fraction.parse().map_err(|_| out_of_range())?;
            let fraction = if negative { -fraction } else { fraction };
            whole
                .checked_mul(1_000_000)
                .and_then(|micros| micros.checked_add(fraction))
                .ok_or_else(out_of_range)?
        }
    };
    timestamp_from_ticks(unix_epoch(), microseconds, 1_000_000).ok_or_else(out_of_range)
}

fn is_repeated(field: &SchemaField) -> bool {
    field
        .mode
        .as_deref()
        .is_some_and(|mode| mode.eq_ignore_ascii_case("REPEATED"))
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    //! Every encoding BigQuery's REST reference documents for `rows[].f[].v`, decoded from a
    //! fixture written as BigQuery sends it.

    use super::*;
    use chrono::{DateTime, NaiveDate};
    use serde_json::json;

    /// Decodes `cell` (a `v`) of a field with this schema.
    fn check(field: serde_json::Value, cell: serde_json::Value) -> Result<Value, String> {
        let field: SchemaField = serde_json::from_value(field).expect("a schema field");
        let decoder = decoder_for_field(&field)?;
        decode_cell(&decoder, &cell)
    }

    fn scalar(field_type: &str, cell: serde_json::Value) -> Result<Value, String> {
        check(
            json!({"name": "c", "type": field_type, "mode": "NULLABLE"}),
            cell,
        )
    }

    fn datetime(text: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f").unwrap()
    }

    #[test]
    fn integers_are_exact_to_the_ends_of_int64() {
        assert_eq!(
            scalar("INTEGER", json!("9223372036854775807")),
            Ok(Value::Int(i64::MAX))
        );
        assert_eq!(
            scalar("INT64", json!("-9223372036854775808")),
            Ok(Value::Int(i64::MIN))
        );
        // 2^53 + 1, which an f64 would round to 2^53.
        assert_eq!(
            scalar("INTEGER", json!("9007199254740993")),
            Ok(Value::Int(9_007_199_254_740_993))
        );
        assert!(scalar("INTEGER", json!("9223372036854775808")).is_err());
        assert!(
            scalar("INTEGER", json!(5)).is_err(),
            "BigQuery sends numbers as strings"
        );
    }

    #[test]
    fn numerics_keep_every_digit() {
        let decimal = |text: &str| Ok(Value::Decimal(text.to_string()));
        assert_eq!(
            scalar("NUMERIC", json!("99999999999999999999999999999.999999999")),
            decimal("99999999999999999999999999999.999999999")
        );
        assert_eq!(
            scalar("NUMERIC", json!("-0.000000001")),
            decimal("-0.000000001")
        );
        assert_eq!(scalar("NUMERIC", json!("19.90")), decimal("19.9"));
        assert_eq!(scalar("NUMERIC", json!("0")), decimal("0"));
        assert_eq!(scalar("NUMERIC", json!("-0")), decimal("0"));
        // BIGNUMERIC: 76 digits, past any f64 and past NUMERIC's 38.
        let big = "578960446186580977117854925043439539266.34992332820282019728792003956564819967";
        assert_eq!(scalar("BIGNUMERIC", json!(big)), decimal(big));
        let big_negative =
            "-57896044618658097711785492504343953926634992332820282019728792003956564819968";
        assert_eq!(
            scalar("BIGNUMERIC", json!(big_negative)),
            decimal(big_negative)
        );
        assert_eq!(scalar("BIGNUMERIC", json!("1.5E+3")), decimal("1500"));
        assert_eq!(scalar("BIGNUMERIC", json!("1.5e-3")), decimal("0.0015"));
        assert!(scalar("NUMERIC", json!("12abc")).is_err());
        assert!(scalar("NUMERIC", json!("")).is_err());
        assert!(scalar("NUMERIC", json!(".")).is_err());
    }

    #[test]
    fn floats_include_nan_and_infinities() {
        assert_eq!(scalar("FLOAT", json!("1.5")), Ok(Value::Float(1.5)));
        assert_eq!(scalar("FLOAT64", json!("1.0E-7")), Ok(Value::Float(1.0e-7)));
        assert_eq!(
            scalar("FLOAT", json!("Infinity")),
            Ok(Value::Float(f64::INFINITY))
        );
        assert_eq!(
            scalar("FLOAT", json!("-Infinity")),
            Ok(Value::Float(f64::NEG_INFINITY))
        );
        assert!(matches!(scalar("FLOAT", json!("NaN")), Ok(Value::Float(nan)) if nan.is_nan()));
        assert!(scalar("FLOAT", json!("fast")).is_err());
    }

    #[test]
    fn booleans_strings_bytes_json_and_geography() {
        assert_eq!(scalar("BOOLEAN", json!("true")), Ok(Value::Bool(true)));
        assert_eq!(scalar("BOOL", json!("false")), Ok(Value::Bool(false)));
        assert!(scalar("BOOLEAN", json!("yes")).is_err());
        assert_eq!(
            scalar("STRING", json!("naïve ☃")),
            Ok(Value::Text("naïve ☃".into()))
        );
        assert_eq!(scalar("STRING", json!("")), Ok(Value::Text(String::new())));
        assert_eq!(
            scalar("BYTES", json!("AAH/")),
            Ok(Value::Bytes(vec![0, 1, 255]))
        );
        assert!(scalar("BYTES", json!("not base64!")).is_err());
        assert_eq!(
            scalar("JSON", json!("{\"a\":[1,null]}")),
            Ok(Value::Json(json!({"a": [1, null]})))
        );
        // A JSON null is a value (the text `null`), not a SQL NULL.
        assert_eq!(
            scalar("JSON", json!("null")),
            Ok(Value::Json(serde_json::Value::Null))
        );
        assert_eq!(
            scalar("GEOGRAPHY", json!("POINT(1 2)")),
            Ok(Value::Text("POINT(1 2)".into()))
        );
        assert_eq!(
            scalar("INTERVAL", json!("1-2 3 4:5:6")),
            Ok(Value::Text("1-2 3 4:5:6".into()))
        );
    }

    #[test]
    fn dates_times_and_timestamps() {
        assert_eq!(
            scalar("DATE", json!("0001-01-01")),
            Ok(Value::Date(NaiveDate::from_ymd_opt(1, 1, 1).unwrap()))
        );
        assert_eq!(
            scalar("DATETIME", json!("2024-01-02T03:04:05.123456")),
            Ok(Value::Timestamp(datetime("2024-01-02 03:04:05.123456")))
        );
        assert_eq!(
            scalar("DATETIME", json!("9999-12-31T23:59:59.999999")),
            Ok(Value::Timestamp(datetime("9999-12-31 23:59:59.999999")))
        );
        assert_eq!(
            scalar("TIME", json!("04:05:06.500000")),
            Ok(Value::Text("04:05:06.5".into()))
        );
        assert_eq!(
            scalar("TIME", json!("00:00:00")),
            Ok(Value::Text("00:00:00".into()))
        );
        let utc = |text: &str| Ok(Value::TimestampTz(datetime(text).and_utc()));
        // formatOptions.useInt64Timestamp: microseconds since the epoch.
        assert_eq!(
            scalar("TIMESTAMP", json!("1704164645123456")),
            utc("2024-01-02 03:04:05.123456")
        );
        assert_eq!(
            scalar("TIMESTAMP", json!("-1500000")),
            utc("1969-12-31 23:59:58.500")
        );
        assert_eq!(
            scalar("TIMESTAMP", json!("253402300799999999")),
            utc("9999-12-31 23:59:59.999999")
        );
        assert_eq!(
            scalar("TIMESTAMP", json!("-62135596800000000")),
            utc("0001-01-01 00:00:00")
        );
        // Without it, float seconds: still read exactly.
        assert_eq!(
            scalar("TIMESTAMP", json!("1.704164645123456E9")),
            utc("2024-01-02 03:04:05.123456")
        );
        assert_eq!(
            scalar("TIMESTAMP", json!("0")),
            Ok(Value::TimestampTz(DateTime::UNIX_EPOCH))
        );
        assert!(scalar("DATE", json!("2024-13-01")).is_err());
    }

    #[test]
    fn nulls_are_null_and_a_null_array_is_empty() {
        for field_type in [
            "INTEGER",
            "NUMERIC",
            "BIGNUMERIC",
            "FLOAT",
            "BOOLEAN",
            "STRING",
            "BYTES",
            "DATE",
            "DATETIME",
            "TIME",
            "TIMESTAMP",
            "JSON",
            "GEOGRAPHY",
        ] {
            assert_eq!(
                scalar(field_type, serde_json::Value::Null),
                Ok(Value::Null),
                "{field_type}"
            );
        }
        let repeated = json!({"name": "tags", "type": "STRING", "mode": "REPEATED"});
        assert_eq!(check(repeated.clone(), json!([])), Ok(Value::Array(vec![])));
        assert_eq!(
            check(repeated, serde_json::Value::Null),
            Ok(Value::Array(vec![]))
        );
    }

    #[test]
    fn repeated_fields_become_arrays() {
        let field = json!({"name": "ids", "type": "INTEGER", "mode": "REPEATED"});
        assert_eq!(
            check(field, json!([{"v": "1"}, {"v": "9223372036854775807"}])),
            Ok(Value::Array(vec![Value::Int(1), Value::Int(i64::MAX)]))
        );
        let field = json!({"name": "prices", "type": "BIGNUMERIC", "mode": "REPEATED"});
        assert_eq!(
            check(field, json!([{"v": "0.1"}])),
            Ok(Value::Array(vec![Value::Decimal("0.1".into())]))
        );
    }

    #[test]
    fn records_become_json_objects_nested_as_deep_as_they_go() {
        let field = json!({
            "name": "customer", "type": "RECORD", "mode": "NULLABLE",
            "fields": [
                {"name": "id", "type": "INTEGER", "mode": "NULLABLE"},
                {"name": "address", "type": "RECORD", "mode": "NULLABLE", "fields": [
                    {"name": "city", "type": "STRING", "mode": "NULLABLE"},
                    {"name": "lines", "type": "STRING", "mode": "REPEATED"},
                ]},
                {"name": "seen", "type": "TIMESTAMP", "mode": "NULLABLE"},
                {"name": "balance", "type": "NUMERIC", "mode": "NULLABLE"},
                {"name": "note", "type": "STRING", "mode": "NULLABLE"},
            ]
        });
        let cell = json!({"f": [
            {"v": "42"},
            {"v": {"f": [{"v": "Paris"}, {"v": [{"v": "1 rue X"}, {"v": "Bât. B"}]}]}},
            {"v": "1704164645123456"},
            {"v": "12.50"},
            {"v": null},
        ]});
        assert_eq!(
            check(field.clone(), cell),
            Ok(Value::Json(json!({
                "id": 42,
                "address": {"city": "Paris", "lines": ["1 rue X", "Bât. B"]},
                "seen": "2024-01-02T03:04:05.123456Z",
                "balance": "12.5",
                "note": null,
            })))
        );
        assert_eq!(
            check(field.clone(), serde_json::Value::Null),
            Ok(Value::Null)
        );
        // A REPEATED RECORD: an array of objects.
        let mut repeated = field;
        repeated["mode"] = json!("REPEATED");
        repeated["fields"] = json!([{"name": "id", "type": "INTEGER"}]);
        assert_eq!(
            check(
                repeated,
                json!([{"v": {"f": [{"v": "1"}]}}, {"v": {"f": [{"v": "2"}]}}])
            ),
            Ok(Value::Array(vec![
                Value::Json(json!({"id": 1})),
                Value::Json(json!({"id": 2}))
            ]))
        );
    }

    #[test]
    fn type_names_are_standard_sql_and_unknown_types_are_refused_up_front() {
        let field: SchemaField = serde_json::from_value(json!({
            "name": "x", "type": "RECORD", "mode": "REPEATED",
            "fields": [{"name": "a", "type": "INTEGER"}, {"name": "b", "type": "FLOAT", "mode": "REPEATED"}]
        }))
        .unwrap();
        assert_eq!(
            standard_type_name(&field),
            "ARRAY<STRUCT<a INT64, b ARRAY<FLOAT64>>>"
        );
        let range: SchemaField =
            serde_json::from_value(json!({"name": "r", "type": "RANGE"})).unwrap();
        assert_eq!(decoder_for_field(&range), Err("RANGE".to_string()));
    }
}
