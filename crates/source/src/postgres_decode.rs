//! Decodes PostgreSQL's binary wire format into ferry [`Value`]s.
//!
//! tokio-postgres asks for every result column in binary, and its own `FromSql` types stop at
//! the common ones (no NUMERIC without extra crates, an error for `infinity` dates). So ferry
//! reads each cell's raw bytes through [`RawPostgresValue`], which accepts any type, and decodes
//! them here. The decoder for each column is chosen once from the column's type, before the
//! first row, so an unreadable type is reported up front.

use crate::text_forms::{
    date_from_days, float_value_from_real, interval_text, postgres_epoch, time_of_day_text,
    time_with_offset_text, timestamp_from_ticks,
};
use ferry_core::Value;
use std::net::{Ipv4Addr, Ipv6Addr};
use tokio_postgres::types::{FromSql, Kind, Type};

/// How to decode one column (or one array element).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PostgresDecoder {
    /// A function returning `void` (`SELECT pg_sleep(1)`): no value at all.
    Void,
    Bool,
    Int2,
    Int4,
    Int8,
    Oid,
    Float4,
    Float8,
    Numeric,
    /// text, varchar, bpchar, name, xml, citext, enum labels: the bytes are UTF-8 text.
    Text,
    /// The one-byte `"char"` type.
    SingleByteChar,
    Bytea,
    Date,
    Time,
    TimeWithTimeZone,
    Timestamp,
    TimestampWithTimeZone,
    Interval,
    Json,
    Jsonb,
    Uuid,
    /// inet and cidr share a format; cidr always shows its prefix length.
    NetworkAddress,
    MacAddress,
    Array(Box<PostgresDecoder>),
}

/// The decoder for a column type, or `None` when ferry has no way to read it.
pub(crate) fn decoder_for_type(column_type: &Type) -> Option<PostgresDecoder> {
    let decoder = match *column_type {
        Type::VOID => PostgresDecoder::Void,
        Type::BOOL => PostgresDecoder::Bool,
        Type::INT2 => PostgresDecoder::Int2,
        Type::INT4 => PostgresDecoder::Int4,
        Type::INT8 => PostgresDecoder::Int8,
        Type::OID => PostgresDecoder::Oid,
        Type::FLOAT4 => PostgresDecoder::Float4,
        Type::FLOAT8 => PostgresDecoder::Float8,
        Type::NUMERIC => PostgresDecoder::Numeric,
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::XML | Type::UNKNOWN => {
            PostgresDecoder::Text
        }
        Type::CHAR => PostgresDecoder::SingleByteChar,
        Type::BYTEA => PostgresDecoder::Bytea,
        Type::DATE => PostgresDecoder::Date,
        Type::TIME => PostgresDecoder::Time,
        Type::TIMETZ => PostgresDecoder::TimeWithTimeZone,
        Type::TIMESTAMP => PostgresDecoder::Timestamp,
        Type::TIMESTAMPTZ => PostgresDecoder::TimestampWithTimeZone,
        Type::INTERVAL => PostgresDecoder::Interval,
        Type::JSON => PostgresDecoder::Json,
        Type::JSONB => PostgresDecoder::Jsonb,
        Type::UUID => PostgresDecoder::Uuid,
        Type::INET | Type::CIDR => PostgresDecoder::NetworkAddress,
        Type::MACADDR | Type::MACADDR8 => PostgresDecoder::MacAddress,
        _ => match column_type.kind() {
            Kind::Array(element_type) => {
                PostgresDecoder::Array(Box::new(decoder_for_type(element_type)?))
            }
            Kind::Domain(base_type) => decoder_for_type(base_type)?,
            Kind::Enum(_) => PostgresDecoder::Text,
            // citext is an extension type, so it has no fixed OID; its binary form is its text.
            _ if column_type.name() == "citext" => PostgresDecoder::Text,
            _ => return None,
        },
    };
    Some(decoder)
}

/// One cell's raw bytes, whatever the column's type: the way around tokio-postgres' fixed set
/// of `FromSql` types. `None` is SQL NULL.
pub(crate) struct RawPostgresValue<'row>(pub(crate) Option<&'row [u8]>);

impl<'row> FromSql<'row> for RawPostgresValue<'row> {
    fn from_sql(
        _column_type: &Type,
        raw: &'row [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(RawPostgresValue(Some(raw)))
    }

    fn from_sql_null(
        _column_type: &Type,
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(RawPostgresValue(None))
    }

    fn accepts(_column_type: &Type) -> bool {
        true
    }
}

/// Decodes one non-NULL cell. The error is a reason for a person; the caller adds the column.
pub(crate) fn decode_value(decoder: &PostgresDecoder, raw: &[u8]) -> Result<Value, String> {
    let mut reader = BinaryReader::new(raw);
    let value = match decoder {
        PostgresDecoder::Void => Value::Null,
        PostgresDecoder::Bool => Value::Bool(reader.u8()? != 0),
        PostgresDecoder::Int2 => Value::Int(i64::from(reader.i16()?)),
        PostgresDecoder::Int4 => Value::Int(i64::from(reader.i32()?)),
        PostgresDecoder::Int8 => Value::Int(reader.i64()?),
        PostgresDecoder::Oid => Value::Int(i64::from(reader.u32()?)),
        PostgresDecoder::Float4 => float_value_from_real(f32::from_bits(reader.u32()?)),
        PostgresDecoder::Float8 => Value::Float(f64::from_bits(reader.u64()?)),
        PostgresDecoder::Numeric => return decode_numeric(raw),
        PostgresDecoder::Text => Value::Text(utf8_text(raw)?),
        PostgresDecoder::SingleByteChar => {
            let byte = reader.u8()?;
            // PostgreSQL prints a non-ASCII "char" as an octal escape.
            Value::Text(if byte.is_ascii() {
                char::from(byte).to_string()
            } else {
                format!("\\{byte:03o}")
            })
        }
        PostgresDecoder::Bytea => Value::Bytes(raw.to_vec()),
        PostgresDecoder::Date => match reader.i32()? {
            i32::MAX => Value::Text("infinity".into()),
            i32::MIN => Value::Text("-infinity".into()),
            days => Value::Date(
                date_from_days(postgres_epoch().date(), i64::from(days)).ok_or(
                    "the date is outside the years ferry can represent (-262143 to 262142)",
                )?,
            ),
        },
        PostgresDecoder::Time => Value::Text(time_of_day_text(reader.i64()?)),
        PostgresDecoder::TimeWithTimeZone => {
            let microseconds = reader.i64()?;
            // PostgreSQL stores the zone as seconds WEST of UTC.
            let seconds_west = reader.i32()?;
            Value::Text(time_with_offset_text(microseconds, -seconds_west))
        }
        PostgresDecoder::Timestamp | PostgresDecoder::TimestampWithTimeZone => {
            match reader.i64()? {
                i64::MAX => Value::Text("infinity".into()),
                i64::MIN => Value::Text("-infinity".into()),
                microseconds => {
                    let timestamp = timestamp_from_ticks(postgres_epoch(), microseconds, 1_000_000)
                        .ok_or("the timestamp is outside the years ferry can represent (-262143 to 262142)")?;
                    if *decoder == PostgresDecoder::Timestamp {
                        Value::Timestamp(timestamp)
                    } else {
                        Value::TimestampTz(timestamp.and_utc())
                    }
                }
            }
        }
        PostgresDecoder::Interval => {
            let microseconds = reader.i64()?;
            let days = reader.i32()?;
            let months = reader.i32()?;
            Value::Text(interval_text(months, days, microseconds))
        }
        PostgresDecoder::Json => Value::Json(parse_json(raw)?),
        PostgresDecoder::Jsonb => match raw.split_first() {
            Some((1, json)) => Value::Json(parse_json(json)?),
            Some((version, _)) => return Err(format!("unknown jsonb format version {version}")),
            None => return Err("empty jsonb value".to_string()),
        },
        PostgresDecoder::Uuid => Value::Text(uuid_text(reader.bytes(16)?)),
        PostgresDecoder::NetworkAddress => Value::Text(network_address_text(&mut reader)?),
        PostgresDecoder::MacAddress => {
            let parts: Vec<String> = raw.iter().map(|byte| format!("{byte:02x}")).collect();
            Value::Text(parts.join(":"))
        }
        PostgresDecoder::Array(element_decoder) => return decode_array(element_decoder, raw),
    };
    Ok(value)
}

/// NUMERIC's binary form: digit count, weight (of the first base-10000 digit), sign, display
/// scale, then the base-10000 digits. Decoded to the same text PostgreSQL prints, exactly,
/// however many digits; NaN and ±Infinity become floats.
fn decode_numeric(raw: &[u8]) -> Result<Value, String> {
    const POSITIVE: u16 = 0x0000;
    const NEGATIVE: u16 = 0x4000;
    const NOT_A_NUMBER: u16 = 0xC000;
    const POSITIVE_INFINITY: u16 = 0xD000;
    const NEGATIVE_INFINITY: u16 = 0xF000;

    let mut reader = BinaryReader::new(raw);
    let digit_count = usize::try_from(reader.i16()?).map_err(|_| "negative NUMERIC digit count")?;
    let weight = i64::from(reader.i16()?);
    let sign = reader.u16()?;
    let display_scale = usize::from(reader.u16()?);
    let mut digits = Vec::with_capacity(digit_count);
    for _ in 0..digit_count {
        let digit = reader.i16()?;
        if !(0..10_000).contains(&digit) {
            return Err(format!("invalid NUMERIC digit {digit}"));
        }
        digits.push(digit);
    }
    let negative = match sign {
        POSITIVE => false,
        NEGATIVE => true,
        NOT_A_NUMBER => return Ok(Value::Float(f64::NAN)),
        POSITIVE_INFINITY => return Ok(Value::Float(f64::INFINITY)),
        NEGATIVE_INFINITY => return Ok(Value::Float(f64::NEG_INFINITY)),
        other => return Err(format!("unknown NUMERIC sign {other:#x}")),
    };
    let digit_at = |index: i64| -> i16 {
        usize::try_from(index)
            .ok()
            .and_then(|index| digits.get(index).copied())
            .unwrap_or(0)
    };

    let mut text = String::new();
    if negative {
        text.push('-');
    }
    if weight < 0 {
        text.push('0');
    } else {
        text.push_str(&digit_at(0).to_string());
        for index in 1..=weight {
            text.push_str(&format!("{:04}", digit_at(index)));
        }
    }
    if display_scale > 0 {
        let mut fraction = String::with_capacity(display_scale + 4);
        let mut index = weight + 1;
        while fraction.len() < display_scale {
            fraction.push_str(&format!("{:04}", digit_at(index)));
            index += 1;
        }
        fraction.truncate(display_scale);
        text.push('.');
        text.push_str(&fraction);
    }
    Ok(Value::Decimal(text))
}

/// An array's binary form: dimension count, a has-nulls flag, the element type, each
/// dimension's length and lower bound, then each element as a length (-1 for NULL) and bytes.
/// Several dimensions become nested arrays.
fn decode_array(element_decoder: &PostgresDecoder, raw: &[u8]) -> Result<Value, String> {
    let mut reader = BinaryReader::new(raw);
    let dimension_count = reader.i32()?;
    let _has_nulls = reader.i32()?;
    let _element_type_oid = reader.u32()?;
    let mut dimension_lengths = Vec::new();
    for _ in 0..dimension_count {
        let length = usize::try_from(reader.i32()?).map_err(|_| "negative array length")?;
        let _lower_bound = reader.i32()?;
        dimension_lengths.push(length);
    }
    let element_count: usize = if dimension_lengths.is_empty() {
        0
    } else {
        dimension_lengths.iter().product()
    };
    let mut elements = Vec::with_capacity(element_count.min(raw.len()));
    for _ in 0..element_count {
        let length = reader.i32()?;
        let element = if length < 0 {
            Value::Null
        } else {
            let bytes = reader.bytes(usize::try_from(length).unwrap_or_default())?;
            decode_value(element_decoder, bytes)?
        };
        elements.push(element);
    }
    Ok(nest_dimensions(elements, &dimension_lengths))
}

/// Splits a flat list of elements into nested arrays, innermost dimension last.
fn nest_dimensions(elements: Vec<Value>, dimension_lengths: &[usize]) -> Value {
    if dimension_lengths.len() <= 1 {
        return Value::Array(elements);
    }
    let inner_lengths = &dimension_lengths[1..];
    let chunk_size: usize = inner_lengths.iter().product::<usize>().max(1);
    let mut outer = Vec::with_capacity(dimension_lengths[0]);
    let mut remaining = elements.into_iter();
    for _ in 0..dimension_lengths[0] {
        let chunk: Vec<Value> = remaining.by_ref().take(chunk_size).collect();
        outer.push(nest_dimensions(chunk, inner_lengths));
    }
    Value::Array(outer)
}

fn utf8_text(raw: &[u8]) -> Result<String, String> {
    String::from_utf8(raw.to_vec()).map_err(|_| "the text is not valid UTF-8".to_string())
}

fn parse_json(raw: &[u8]) -> Result<serde_json::Value, String> {
    serde_json::from_slice(raw).map_err(|error| format!("the JSON does not parse: {error}"))
}

fn uuid_text(bytes: &[u8]) -> String {
    let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// inet/cidr: family (2 = IPv4, 3 = IPv6), prefix bits, is-cidr flag, address length, address.
fn network_address_text(reader: &mut BinaryReader<'_>) -> Result<String, String> {
    let family = reader.u8()?;
    let prefix_bits = reader.u8()?;
    let is_cidr = reader.u8()? != 0;
    let address_length = usize::from(reader.u8()?);
    let address_bytes = reader.bytes(address_length)?;
    let (address, full_prefix) = match (family, address_bytes.len()) {
        (2, 4) => {
            let octets: [u8; 4] = address_bytes.try_into().map_err(|_| "bad IPv4 address")?;
            (Ipv4Addr::from(octets).to_string(), 32)
        }
        (3, 16) => {
            let octets: [u8; 16] = address_bytes.try_into().map_err(|_| "bad IPv6 address")?;
            (Ipv6Addr::from(octets).to_string(), 128)
        }
        _ => return Err(format!("unknown network address family {family}")),
    };
    Ok(if is_cidr || prefix_bits != full_prefix {
        format!("{address}/{prefix_bits}")
    } else {
        address
    })
}

/// Reads big-endian fields, failing (not panicking) on a short value.
struct BinaryReader<'bytes> {
    remaining: &'bytes [u8],
}

impl<'bytes> BinaryReader<'bytes> {
    fn new(bytes: &'bytes [u8]) -> Self {
        BinaryReader { remaining: bytes }
    }

    fn bytes(&mut self, count: usize) -> Result<&'bytes [u8], String> {
        if self.remaining.len() < count {
            return Err(format!(
                "the value is shorter than its type requires ({} bytes left, {count} needed)",
                self.remaining.len()
            ));
        }
        let (taken, rest) = self.remaining.split_at(count);
        self.remaining = rest;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut array = [0u8; N];
        array.copy_from_slice(self.bytes(N)?);
        Ok(array)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.array::<1>()?[0])
    }

    fn i16(&mut self) -> Result<i16, String> {
        Ok(i16::from_be_bytes(self.array()?))
    }

    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn i32(&mut self) -> Result<i32, String> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn i64(&mut self) -> Result<i64, String> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_be_bytes(self.array()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds NUMERIC's binary form from its parts.
    fn numeric_bytes(weight: i16, sign: u16, display_scale: u16, digits: &[i16]) -> Vec<u8> {
        let mut bytes = Vec::new();
        bytes.extend((digits.len() as i16).to_be_bytes());
        bytes.extend(weight.to_be_bytes());
        bytes.extend(sign.to_be_bytes());
        bytes.extend(display_scale.to_be_bytes());
        for digit in digits {
            bytes.extend(digit.to_be_bytes());
        }
        bytes
    }

    fn check_numeric(bytes: Vec<u8>, expected: &str) {
        let actual = match decode_numeric(&bytes) {
            Ok(Value::Decimal(text)) => text,
            Ok(other) => format!("{other:?}"),
            Err(error) => format!("error: {error}"),
        };
        assert_eq!(actual, expected);
    }

    #[test]
    fn numerics_decode_to_postgres_text() {
        check_numeric(numeric_bytes(0, 0, 2, &[19, 9900]), "19.99");
        check_numeric(numeric_bytes(0, 0x4000, 3, &[19, 9900]), "-19.990");
        check_numeric(numeric_bytes(-1, 0x4000, 1, &[5000]), "-0.5");
        check_numeric(numeric_bytes(-2, 0, 8, &[12]), "0.00000012");
        check_numeric(numeric_bytes(-1, 0, 6, &[12]), "0.001200");
        check_numeric(numeric_bytes(1, 0, 0, &[1]), "10000");
        check_numeric(numeric_bytes(0, 0, 0, &[]), "0");
        check_numeric(
            numeric_bytes(7, 0, 0, &[12, 3456, 7890, 1234, 5678, 9012, 3456, 7890]),
            "123456789012345678901234567890",
        );
        check_numeric(numeric_bytes(0, 0xC000, 0, &[]), "Float(NaN)");
        check_numeric(numeric_bytes(0, 0xD000, 0, &[]), "Float(inf)");
        check_numeric(numeric_bytes(0, 0xF000, 0, &[]), "Float(-inf)");
        check_numeric(
            vec![0, 1],
            "error: the value is shorter than its type requires (0 bytes left, 2 needed)",
        );
    }

    #[test]
    fn truncated_values_are_errors_not_panics() {
        assert!(decode_value(&PostgresDecoder::Int8, &[0, 1]).is_err());
        assert!(decode_value(&PostgresDecoder::Uuid, &[0; 3]).is_err());
        let array = decode_value(
            &PostgresDecoder::Array(Box::new(PostgresDecoder::Int4)),
            &[0, 0, 0, 1],
        );
        assert!(array.is_err());
    }
}
