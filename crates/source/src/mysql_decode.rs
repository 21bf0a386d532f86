//! Turns MySQL / MariaDB result values (binary protocol, as `mysql_async` parses them) into
//! ferry [`Value`]s with the same text forms as the other warehouses.
//!
//! The decoder of each column is chosen once from the column's definition (its type, flags,
//! length and character set), before the first row, so an unreadable type is refused up front.
//! Rows come through the binary protocol of a prepared statement: integers, floats, dates and
//! times arrive as numbers (a DOUBLE keeps all its bits, where the text protocol would print
//! it), DECIMAL and strings as bytes.

use crate::text_forms::{float_value_from_real, time_of_day_text, unsigned_integer_value};
use chrono::NaiveDate;
use ferry_core::Value;
use mysql_async::consts::{ColumnFlags, ColumnType};
use mysql_async::Column as MysqlColumn;

/// The character set number MySQL gives binary strings (BINARY, VARBINARY, BLOB).
const BINARY_CHARACTER_SET: u16 = 63;

/// How to decode one column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MysqlDecoder {
    /// `SELECT NULL`: a column of type NULL.
    Null,
    /// TINYINT(1): MySQL has no boolean type, `BOOLEAN` and `BOOL` are aliases of TINYINT(1),
    /// so a TINYINT column of display width 1 is what a boolean column looks like on the wire
    /// (Connector/J's `tinyInt1isBit` reads it the same way). Any non-zero value is true.
    Bool,
    /// Every other integer type and YEAR; BIGINT UNSIGNED past i64 becomes exact Decimal text.
    Integer,
    /// DECIMAL: MySQL sends the exact text (`-19.990`), kept as it is.
    Decimal,
    Float,
    Double,
    Date,
    /// DATETIME: a wall-clock time without zone.
    DateTime,
    /// TIMESTAMP: stored as UTC and shown in the session's zone, which ferry pins to UTC.
    Timestamp,
    /// TIME is a duration as much as a time of day (-838:59:59 to 838:59:59): text.
    Time,
    Json,
    /// CHAR, VARCHAR, TEXT, ENUM, SET in a text character set (the session's is utf8mb4).
    Text,
    /// BINARY, VARBINARY, BLOB.
    Bytes,
    /// BIT(1) is a flag: Bool.
    SingleBit,
    /// BIT(n) for n > 1: the bits as an unsigned integer, as `SELECT b + 0` shows them.
    Bits,
}

/// The decoder for a column, or `None` when ferry has no way to read its type (GEOMETRY,
/// VECTOR).
pub(crate) fn decoder_for_column(column: &MysqlColumn) -> Option<MysqlDecoder> {
    let binary = column.character_set() == BINARY_CHARACTER_SET;
    let decoder = match column.column_type() {
        ColumnType::MYSQL_TYPE_NULL => MysqlDecoder::Null,
        ColumnType::MYSQL_TYPE_TINY if column.column_length() == 1 => MysqlDecoder::Bool,
        ColumnType::MYSQL_TYPE_TINY
        | ColumnType::MYSQL_TYPE_SHORT
        | ColumnType::MYSQL_TYPE_INT24
        | ColumnType::MYSQL_TYPE_LONG
        | ColumnType::MYSQL_TYPE_LONGLONG
        | ColumnType::MYSQL_TYPE_YEAR => MysqlDecoder::Integer,
        ColumnType::MYSQL_TYPE_DECIMAL | ColumnType::MYSQL_TYPE_NEWDECIMAL => MysqlDecoder::Decimal,
        ColumnType::MYSQL_TYPE_FLOAT => MysqlDecoder::Float,
        ColumnType::MYSQL_TYPE_DOUBLE => MysqlDecoder::Double,
        ColumnType::MYSQL_TYPE_DATE | ColumnType::MYSQL_TYPE_NEWDATE => MysqlDecoder::Date,
        ColumnType::MYSQL_TYPE_DATETIME | ColumnType::MYSQL_TYPE_DATETIME2 => {
            MysqlDecoder::DateTime
        }
        ColumnType::MYSQL_TYPE_TIMESTAMP | ColumnType::MYSQL_TYPE_TIMESTAMP2 => {
            MysqlDecoder::Timestamp
        }
        ColumnType::MYSQL_TYPE_TIME | ColumnType::MYSQL_TYPE_TIME2 => MysqlDecoder::Time,
        ColumnType::MYSQL_TYPE_JSON => MysqlDecoder::Json,
        ColumnType::MYSQL_TYPE_ENUM | ColumnType::MYSQL_TYPE_SET => MysqlDecoder::Text,
        ColumnType::MYSQL_TYPE_STRING
        | ColumnType::MYSQL_TYPE_VAR_STRING
        | ColumnType::MYSQL_TYPE_VARCHAR
        | ColumnType::MYSQL_TYPE_TINY_BLOB
        | ColumnType::MYSQL_TYPE_MEDIUM_BLOB
        | ColumnType::MYSQL_TYPE_LONG_BLOB
        | ColumnType::MYSQL_TYPE_BLOB => {
            if binary {
                MysqlDecoder::Bytes
            } else {
                MysqlDecoder::Text
            }
        }
        ColumnType::MYSQL_TYPE_BIT if column.column_length() == 1 => MysqlDecoder::SingleBit,
        ColumnType::MYSQL_TYPE_BIT => MysqlDecoder::Bits,
        ColumnType::MYSQL_TYPE_GEOMETRY
        | ColumnType::MYSQL_TYPE_VECTOR
        | ColumnType::MYSQL_TYPE_TYPED_ARRAY
        | ColumnType::MYSQL_TYPE_UNKNOWN => return None,
    };
    Some(decoder)
}

/// The column's type in MySQL's words (`BIGINT UNSIGNED`, `VARCHAR`, `TINYINT(1)`), for
/// [`crate::Column::type_name`] and messages. The wire carries no precision for DECIMAL nor the
/// difference between TEXT and LONGTEXT worth showing, so neither is shown.
pub(crate) fn type_name(column: &MysqlColumn) -> String {
    let flags = column.flags();
    let binary = column.character_set() == BINARY_CHARACTER_SET;
    let name = match column.column_type() {
        ColumnType::MYSQL_TYPE_TINY if column.column_length() == 1 => "TINYINT(1)",
        ColumnType::MYSQL_TYPE_TINY => "TINYINT",
        ColumnType::MYSQL_TYPE_SHORT => "SMALLINT",
        ColumnType::MYSQL_TYPE_INT24 => "MEDIUMINT",
        ColumnType::MYSQL_TYPE_LONG => "INT",
        ColumnType::MYSQL_TYPE_LONGLONG => "BIGINT",
        ColumnType::MYSQL_TYPE_YEAR => "YEAR",
        ColumnType::MYSQL_TYPE_DECIMAL | ColumnType::MYSQL_TYPE_NEWDECIMAL => "DECIMAL",
        ColumnType::MYSQL_TYPE_FLOAT => "FLOAT",
        ColumnType::MYSQL_TYPE_DOUBLE => "DOUBLE",
        ColumnType::MYSQL_TYPE_NULL => "NULL",
        ColumnType::MYSQL_TYPE_DATE | ColumnType::MYSQL_TYPE_NEWDATE => "DATE",
        ColumnType::MYSQL_TYPE_DATETIME | ColumnType::MYSQL_TYPE_DATETIME2 => "DATETIME",
        ColumnType::MYSQL_TYPE_TIMESTAMP | ColumnType::MYSQL_TYPE_TIMESTAMP2 => "TIMESTAMP",
        ColumnType::MYSQL_TYPE_TIME | ColumnType::MYSQL_TYPE_TIME2 => "TIME",
        ColumnType::MYSQL_TYPE_JSON => "JSON",
        ColumnType::MYSQL_TYPE_BIT => "BIT",
        ColumnType::MYSQL_TYPE_ENUM => "ENUM",
        ColumnType::MYSQL_TYPE_SET => "SET",
        ColumnType::MYSQL_TYPE_STRING if flags.contains(ColumnFlags::ENUM_FLAG) => "ENUM",
        ColumnType::MYSQL_TYPE_STRING if flags.contains(ColumnFlags::SET_FLAG) => "SET",
        ColumnType::MYSQL_TYPE_STRING if binary => "BINARY",
        ColumnType::MYSQL_TYPE_STRING => "CHAR",
        ColumnType::MYSQL_TYPE_VAR_STRING | ColumnType::MYSQL_TYPE_VARCHAR if binary => "VARBINARY",
        ColumnType::MYSQL_TYPE_VAR_STRING | ColumnType::MYSQL_TYPE_VARCHAR => "VARCHAR",
        ColumnType::MYSQL_TYPE_TINY_BLOB
        | ColumnType::MYSQL_TYPE_MEDIUM_BLOB
        | ColumnType::MYSQL_TYPE_LONG_BLOB
        | ColumnType::MYSQL_TYPE_BLOB
            if binary =>
        {
            "BLOB"
        }
        ColumnType::MYSQL_TYPE_TINY_BLOB
        | ColumnType::MYSQL_TYPE_MEDIUM_BLOB
        | ColumnType::MYSQL_TYPE_LONG_BLOB
        | ColumnType::MYSQL_TYPE_BLOB => "TEXT",
        ColumnType::MYSQL_TYPE_GEOMETRY => "GEOMETRY",
        ColumnType::MYSQL_TYPE_VECTOR => "VECTOR",
        ColumnType::MYSQL_TYPE_TYPED_ARRAY | ColumnType::MYSQL_TYPE_UNKNOWN => "UNKNOWN",
    };
    let is_number = matches!(
        column.column_type(),
        ColumnType::MYSQL_TYPE_TINY
            | ColumnType::MYSQL_TYPE_SHORT
            | ColumnType::MYSQL_TYPE_INT24
            | ColumnType::MYSQL_TYPE_LONG
            | ColumnType::MYSQL_TYPE_LONGLONG
            | ColumnType::MYSQL_TYPE_DECIMAL
            | ColumnType::MYSQL_TYPE_NEWDECIMAL
    );
    if is_number && flags.contains(ColumnFlags::UNSIGNED_FLAG) {
        format!("{name} UNSIGNED")
    } else {
        name.to_string()
    }
}

/// Decodes one cell. The error is a reason for a person; the caller adds the column.
pub(crate) fn decode_value(
    decoder: MysqlDecoder,
    value: mysql_async::Value,
) -> Result<Value, String> {
    use mysql_async::Value as Wire;
    let decoded = match (decoder, value) {
        (_, Wire::NULL) | (MysqlDecoder::Null, _) => Value::Null,
        (MysqlDecoder::Bool, Wire::Int(number)) => Value::Bool(number != 0),
        (MysqlDecoder::Bool, Wire::UInt(number)) => Value::Bool(number != 0),
        (MysqlDecoder::Integer, Wire::Int(number)) => Value::Int(number),
        (MysqlDecoder::Integer, Wire::UInt(number)) => unsigned_integer_value(u128::from(number)),
        (MysqlDecoder::Decimal, Wire::Bytes(bytes)) => Value::Decimal(decimal_text(bytes)?),
        (MysqlDecoder::Float, Wire::Float(number)) => float_value_from_real(number),
        (MysqlDecoder::Float, Wire::Double(number))
        | (MysqlDecoder::Double, Wire::Double(number)) => Value::Float(number),
        (MysqlDecoder::Double, Wire::Float(number)) => float_value_from_real(number),
        (MysqlDecoder::Date, Wire::Date(year, month, day, ..)) => {
            match calendar_date(year, month, day)? {
                Some(date) => Value::Date(date),
                None => Value::Null,
            }
        }
        (
            MysqlDecoder::DateTime | MysqlDecoder::Timestamp,
            Wire::Date(year, month, day, hour, minute, second, microsecond),
        ) => {
            let Some(date) = calendar_date(year, month, day)? else {
                return Ok(Value::Null);
            };
            let timestamp = date
                .and_hms_micro_opt(
                    u32::from(hour),
                    u32::from(minute),
                    u32::from(second),
                    microsecond,
                )
                .ok_or_else(|| {
                    format!(
                        "{hour:02}:{minute:02}:{second:02}.{microsecond:06} is not a time of day"
                    )
                })?;
            if decoder == MysqlDecoder::Timestamp {
                Value::TimestampTz(timestamp.and_utc())
            } else {
                Value::Timestamp(timestamp)
            }
        }
        (MysqlDecoder::Time, Wire::Time(negative, days, hours, minutes, seconds, microseconds)) => {
            let total_microseconds = ((i64::from(days) * 24 + i64::from(hours)) * 3600
                + i64::from(minutes) * 60
                + i64::from(seconds))
                * 1_000_000
                + i64::from(microseconds);
            let text = time_of_day_text(total_microseconds);
            Value::Text(if negative && total_microseconds != 0 {
                format!("-{text}")
            } else {
                text
            })
        }
        (MysqlDecoder::Json, Wire::Bytes(bytes)) => Value::Json(
            serde_json::from_slice(&bytes)
                .map_err(|error| format!("the JSON does not parse: {error}"))?,
        ),
        (MysqlDecoder::Text, Wire::Bytes(bytes)) => Value::Text(
            String::from_utf8(bytes).map_err(|_| "the text is not valid UTF-8".to_string())?,
        ),
        (MysqlDecoder::Bytes, Wire::Bytes(bytes)) => Value::Bytes(bytes),
        (MysqlDecoder::SingleBit, Wire::Bytes(bytes)) => {
            Value::Bool(bytes.iter().any(|byte| *byte != 0))
        }
        (MysqlDecoder::Bits, Wire::Bytes(bytes)) => {
            if bytes.len() > 8 {
                return Err(format!("a BIT value of {} bytes", bytes.len()));
            }
            let number = bytes
                .iter()
                .fold(0u64, |number, byte| (number << 8) | u64::from(*byte));
            unsigned_integer_value(u128::from(number))
        }
        (decoder, other) => {
            return Err(format!(
                "the server sent {} for a column read as {decoder:?}",
                wire_kind(&other)
            ))
        }
    };
    Ok(decoded)
}

/// A date from MySQL's parts. `0000-00-00` (a "zero date", which MySQL stores where a date is
/// unknown unless `NO_ZERO_DATE` forbids it) is `None`, read as NULL, as Connector/J's
/// `zeroDateTimeBehavior=CONVERT_TO_NULL` does: it is no date at all. A date with only a zero
/// month or day (`2024-00-00`, allowed without `NO_ZERO_IN_DATE`) names no day either, but it
/// is half a value, so it is refused rather than silently dropped.
fn calendar_date(year: u16, month: u8, day: u8) -> Result<Option<NaiveDate>, String> {
    if year == 0 && month == 0 && day == 0 {
        return Ok(None);
    }
    NaiveDate::from_ymd_opt(i32::from(year), u32::from(month), u32::from(day))
        .map(Some)
        .ok_or_else(|| {
            format!(
                "{year:04}-{month:02}-{day:02} is not a calendar date (a zero month or day); \
                 write NULLIF or a CASE in the model to say what it means"
            )
        })
}

/// DECIMAL's text as MySQL sends it, checked to be a plain decimal number: exact, never
/// through f64.
fn decimal_text(bytes: Vec<u8>) -> Result<String, String> {
    let text = String::from_utf8(bytes).map_err(|_| "the DECIMAL is not text".to_string())?;
    let digits = text.strip_prefix('-').unwrap_or(&text);
    let mut parts = digits.splitn(2, '.');
    let whole = parts.next().unwrap_or_default();
    let fraction = parts.next().unwrap_or("0");
    let all_digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(whole) || !all_digits(fraction) {
        return Err(format!("`{text}` is not a decimal number"));
    }
    Ok(text)
}

fn wire_kind(value: &mysql_async::Value) -> &'static str {
    use mysql_async::Value as Wire;
    match value {
        Wire::NULL => "NULL",
        Wire::Bytes(_) => "bytes",
        Wire::Int(_) => "a signed integer",
        Wire::UInt(_) => "an unsigned integer",
        Wire::Float(_) => "a FLOAT",
        Wire::Double(_) => "a DOUBLE",
        Wire::Date(..) => "a date",
        Wire::Time(..) => "a time",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDateTime;
    use mysql_async::Value as Wire;

    fn timestamp(text: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f").unwrap()
    }

    fn check(decoder: MysqlDecoder, wire: Wire, expected: &str) {
        let actual = match decode_value(decoder, wire) {
            Ok(value) => format!("{value:?}"),
            Err(error) => format!("error: {error}"),
        };
        assert_eq!(actual, expected);
    }

    #[test]
    fn zero_dates_are_null_and_half_zero_dates_are_refused() {
        check(MysqlDecoder::Date, Wire::Date(0, 0, 0, 0, 0, 0, 0), "Null");
        check(
            MysqlDecoder::DateTime,
            Wire::Date(0, 0, 0, 0, 0, 0, 0),
            "Null",
        );
        check(
            MysqlDecoder::Timestamp,
            Wire::Date(0, 0, 0, 0, 0, 0, 0),
            "Null",
        );
        check(
            MysqlDecoder::Date,
            Wire::Date(2024, 0, 0, 0, 0, 0, 0),
            "error: 2024-00-00 is not a calendar date (a zero month or day); write NULLIF or a \
             CASE in the model to say what it means",
        );
        check(
            MysqlDecoder::DateTime,
            Wire::Date(2024, 1, 2, 3, 4, 5, 500_000),
            &format!("Timestamp({:?})", timestamp("2024-01-02 03:04:05.5")),
        );
    }

    #[test]
    fn times_are_durations_in_text() {
        check(
            MysqlDecoder::Time,
            Wire::Time(true, 34, 22, 59, 59, 0),
            "Text(\"-838:59:59\")",
        );
        check(
            MysqlDecoder::Time,
            Wire::Time(false, 0, 4, 5, 6, 500_000),
            "Text(\"04:05:06.5\")",
        );
    }

    #[test]
    fn decimals_stay_exact_text_and_bits_are_numbers() {
        check(
            MysqlDecoder::Decimal,
            Wire::Bytes(b"-0.000000000000000000000000000001".to_vec()),
            "Decimal(\"-0.000000000000000000000000000001\")",
        );
        check(
            MysqlDecoder::Decimal,
            Wire::Bytes(b"1e5".to_vec()),
            "error: `1e5` is not a decimal number",
        );
        check(MysqlDecoder::Bits, Wire::Bytes(vec![1, 0]), "Int(256)");
        check(
            MysqlDecoder::Bits,
            Wire::Bytes(vec![0xff; 8]),
            "Decimal(\"18446744073709551615\")",
        );
        check(MysqlDecoder::SingleBit, Wire::Bytes(vec![1]), "Bool(true)");
        check(
            MysqlDecoder::Integer,
            Wire::Bytes(b"1".to_vec()),
            "error: the server sent bytes for a column read as Integer",
        );
    }
}
