//! The one table of hostile values every warehouse holds the same way and every backend reads:
//! NULLs, unicode, quotes, a line break, the text `NULL`, empty and blank strings, 10,000
//! two-byte characters, 38-digit and tiny decimals, both ends of a 64-bit integer, a float that
//! binary cannot hold exactly, timestamps with and without a zone. The expected ferry values
//! and their text forms (`Value::to_text`, what Stripe is sent) are written once; where a
//! backend reads them otherwise, its case says so and why.

use crate::warehouse::{Backend, Dialect, TestWarehouse};
use crate::{date, decimal, rows_of, text, timestamp};
use chrono::{TimeZone, Utc};
use ferry_core::Value;

const NAME: &str = "Zoë 🚀 李 \"quoted\", comma";
const TWO_LINES: &str = "line one\nline two";

/// The table, in each dialect's types and literals, created and filled with read-write
/// access (on files: DuckDB's, then written as Parquet).
fn hostile_table_sql(dialect: Dialect) -> String {
    let types = match dialect {
        Dialect::DuckDb => {
            "id INTEGER, name VARCHAR, blank VARCHAR, long_text VARCHAR, amount DECIMAL(38,9), \
             big BIGINT, ratio DOUBLE, flag BOOLEAN, day DATE, local_at TIMESTAMP, \
             zoned_at TIMESTAMPTZ"
        }
        Dialect::Postgres => {
            "id integer, name text, blank text, long_text text, amount numeric(38,9), \
             big bigint, ratio double precision, flag boolean, day date, local_at timestamp, \
             zoned_at timestamptz"
        }
        Dialect::Mysql => {
            "id INT, name TEXT, blank TEXT, long_text TEXT, amount DECIMAL(38,9), big BIGINT, \
             ratio DOUBLE, flag BOOLEAN, day DATE, local_at DATETIME(6), \
             zoned_at TIMESTAMP(6) NULL"
        }
        Dialect::Snowflake => {
            "id INTEGER, name VARCHAR, blank VARCHAR, long_text VARCHAR, amount NUMBER(38,9), \
             big NUMBER(19,0), ratio FLOAT, flag BOOLEAN, day DATE, local_at TIMESTAMP_NTZ, \
             zoned_at TIMESTAMP_TZ"
        }
        Dialect::BigQuery => {
            "id INT64, name STRING, blank STRING, long_text STRING, amount NUMERIC, big INT64, \
             ratio FLOAT64, flag BOOL, day DATE, local_at DATETIME, zoned_at TIMESTAMP"
        }
    };
    let string = |value: &str| match dialect {
        // A GoogleSQL string literal cannot hold a line break; its escape can.
        Dialect::BigQuery => format!("'{}'", value.replace('\n', "\\n")),
        _ => format!("'{value}'"),
    };
    let amount = |digits: &str| match dialect {
        Dialect::BigQuery => format!("NUMERIC '{digits}'"),
        _ => digits.to_string(),
    };
    let local = |moment: &str| match dialect {
        Dialect::BigQuery => format!("DATETIME '{moment}'"),
        _ => format!("TIMESTAMP '{moment}'"),
    };
    // The instant as written with its offset; MySQL takes it in its session's zone, UTC here.
    let zoned = |moment: &str, offset: &str, utc: &str| match dialect {
        Dialect::DuckDb | Dialect::Postgres => format!("TIMESTAMPTZ '{moment}{offset}'"),
        Dialect::Mysql => format!("'{utc}'"),
        Dialect::Snowflake => format!("'{moment} {offset}:00'::TIMESTAMP_TZ"),
        Dialect::BigQuery => format!("TIMESTAMP '{moment}{offset}'"),
    };
    let mysql_session = match dialect {
        Dialect::Mysql => "SET time_zone = '+00:00'; ",
        _ => "",
    };
    let table_options = match dialect {
        Dialect::Mysql => " CHARACTER SET utf8mb4",
        _ => "",
    };
    format!(
        "CREATE TABLE hostile ({types}){table_options}; {mysql_session}\
         INSERT INTO hostile VALUES \
         (1, {name}, '', REPEAT('é', 10000), {amount_1}, 9223372036854775807, 0.1, TRUE, \
          DATE '2024-02-29', {local_1}, {zoned_1}), \
         (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL), \
         (3, {two_lines}, 'NULL', ' ', {amount_3}, -9223372036854775808, -2.5, FALSE, \
          DATE '1969-07-20', {local_3}, {zoned_3})",
        name = string(NAME),
        two_lines = string(TWO_LINES),
        amount_1 = amount("12345678901234567890123456789.123456789"),
        amount_3 = amount("-0.000000001"),
        local_1 = local("2024-01-02 03:04:05.123456"),
        local_3 = local("1969-07-20 20:17:40"),
        zoned_1 = zoned(
            "2024-01-02 03:04:05.123456",
            "+02",
            "2024-01-02 01:04:05.123456"
        ),
        zoned_3 = zoned("2038-01-19 03:14:07", "+00", "2038-01-19 03:14:07"),
    )
}

/// The values every typed warehouse gives, row by row.
fn hostile_values() -> Vec<Vec<Value>> {
    let mut null_row = vec![Value::Int(2)];
    null_row.extend(std::iter::repeat_n(Value::Null, 10));
    vec![
        vec![
            Value::Int(1),
            text(NAME),
            text(""),
            text(&"é".repeat(10_000)),
            decimal("12345678901234567890123456789.123456789"),
            Value::Int(i64::MAX),
            Value::Float(0.1),
            Value::Bool(true),
            Value::Date(date(2024, 2, 29)),
            Value::Timestamp(timestamp("2024-01-02 03:04:05.123456")),
            Value::TimestampTz(
                Utc.with_ymd_and_hms(2024, 1, 2, 1, 4, 5).unwrap()
                    + chrono::Duration::microseconds(123_456),
            ),
        ],
        null_row,
        vec![
            Value::Int(3),
            text(TWO_LINES),
            text("NULL"),
            text(" "),
            decimal("-0.000000001"),
            Value::Int(i64::MIN),
            Value::Float(-2.5),
            Value::Bool(false),
            Value::Date(date(1969, 7, 20)),
            Value::Timestamp(timestamp("1969-07-20 20:17:40")),
            Value::TimestampTz(Utc.with_ymd_and_hms(2038, 1, 19, 3, 14, 7).unwrap()),
        ],
    ]
}

/// The text forms of [`hostile_values`]: the same text from every warehouse.
fn hostile_text_forms() -> Vec<Vec<Option<String>>> {
    let row = |cells: &[Option<&str>]| cells.iter().map(|cell| cell.map(str::to_string)).collect();
    let long_text = "é".repeat(10_000);
    let mut null_row = vec![Some("2".to_string())];
    null_row.extend(std::iter::repeat_n(None, 10));
    vec![
        row(&[
            Some("1"),
            Some(NAME),
            Some(""),
            Some(&long_text),
            Some("12345678901234567890123456789.123456789"),
            Some("9223372036854775807"),
            Some("0.1"),
            Some("true"),
            Some("2024-02-29"),
            Some("2024-01-02T03:04:05.123456"),
            Some("2024-01-02T01:04:05.123456Z"),
        ]),
        null_row,
        row(&[
            Some("3"),
            Some(TWO_LINES),
            Some("NULL"),
            Some(" "),
            Some("-0.000000001"),
            Some("-9223372036854775808"),
            Some("-2.5"),
            Some("false"),
            Some("1969-07-20"),
            Some("1969-07-20T20:17:40"),
            Some("2038-01-19T03:14:07Z"),
        ]),
    ]
}

pub async fn hostile_values_read_alike_everywhere(warehouse: TestWarehouse) {
    warehouse
        .setup(&hostile_table_sql(warehouse.dialect()))
        .await;
    let rows = rows_of(&warehouse, "SELECT * FROM hostile ORDER BY id").await;
    let mut values = hostile_values();
    let mut text_forms = hostile_text_forms();
    match warehouse.backend {
        Backend::DuckDb | Backend::Postgres | Backend::Mysql | Backend::Files => {}
        Backend::Snowflake => {
            // snowduck sends every value as Python prints it: booleans as True and False, a
            // tiny Decimal in exponent form, timestamps with a space and an offset. Snowflake
            // itself sends each type's documented encoding (src/snowflake/decode.rs).
            for (row, column, python) in [
                (0, 7, "True"),
                (2, 7, "False"),
                (2, 4, "-1E-9"),
                (0, 9, "2024-01-02 03:04:05.123456"),
                (2, 9, "1969-07-20 20:17:40"),
                (0, 10, "2024-01-02 01:04:05.123456+00:00"),
                (2, 10, "2038-01-19 03:14:07+00:00"),
            ] {
                text_forms[row][column] = Some(python.to_string());
            }
            values = text_forms
                .iter()
                .map(|row| {
                    row.iter()
                        .map(|cell| cell.as_deref().map_or(Value::Null, text))
                        .collect()
                })
                .collect();
        }
        Backend::BigQuery => {
            // crucible rounds NUMERIC to 28 significant digits on the wire (BigQuery sends all
            // 38, which tests/bigquery.rs reads exactly).
            let rounded = "12345678901234567890123456790";
            values[0][4] = decimal(rounded);
            text_forms[0][4] = Some(rounded.to_string());
        }
    }
    assert_rows(&warehouse, "hostile", &rows, &values, &text_forms);
    if warehouse.backend == Backend::Files {
        hostile_values_in_csv_and_json(&warehouse).await;
    }
}

/// The same table written by DuckDB as CSV and as JSON lines: the formats say less than
/// Parquet, and the files source reads what they say.
async fn hostile_values_in_csv_and_json(warehouse: &TestWarehouse) {
    warehouse.write_files(
        "COPY hostile TO '{folder}/hostile_csv.csv' (HEADER); \
         COPY hostile TO '{folder}/hostile_json.json' (FORMAT json);",
    );
    let rows = rows_of(warehouse, "SELECT * FROM hostile_csv ORDER BY id").await;
    let mut values = hostile_values();
    let mut text_forms = hostile_text_forms();
    for row in values.iter_mut() {
        for column in [0, 4, 5, 6] {
            // CSV numbers stay text exactly as written (the README's promise): the id, the
            // decimal, the integer and the float.
            if let Some(written) = row[column].to_text().expect("a text form") {
                row[column] = text(&written);
            }
        }
    }
    // CSV cannot tell an empty string from a missing value: both read as NULL.
    values[0][2] = Value::Null;
    text_forms[0][2] = None;
    assert_rows(warehouse, "hostile_csv", &rows, &values, &text_forms);

    let rows = rows_of(warehouse, "SELECT * FROM hostile_json ORDER BY id").await;
    let mut values = hostile_values();
    let mut text_forms = hostile_text_forms();
    // JSON numbers without a fraction are integers; with one, doubles: a 38-digit decimal
    // loses its last digits, as any JSON reader's would.
    values[0][4] = Value::Float(12345678901234567890123456789.123456789);
    text_forms[0][4] = Some("12345678901234568000000000000".to_string());
    values[2][4] = Value::Float(-0.000000001);
    text_forms[2][4] = Some("-0.000000001".to_string());
    // JSON has no timestamps: DuckDB's reader looks for one format that fits a column's
    // strings. The instants (written with their offset) fit one; the wall-clock times, one with
    // a fraction of a second and one without, do not, and stay text: cast them in the model.
    for (row, written) in [
        (0, "2024-01-02 03:04:05.123456"),
        (2, "1969-07-20 20:17:40"),
    ] {
        values[row][9] = text(written);
        text_forms[row][9] = Some(written.to_string());
    }
    assert_rows(warehouse, "hostile_json", &rows, &values, &text_forms);
}

/// Compares the rows, then their text forms, cell by cell, naming the first that differs
/// (a 10,000-character cell would drown a whole-table diff).
fn assert_rows(
    warehouse: &TestWarehouse,
    table: &str,
    rows: &[Vec<Value>],
    values: &[Vec<Value>],
    text_forms: &[Vec<Option<String>>],
) {
    let backend = warehouse.backend;
    assert_eq!(rows.len(), values.len(), "{backend:?} {table}: {rows:?}");
    for (index, (row, expected)) in rows.iter().zip(values).enumerate() {
        assert_eq!(row.len(), expected.len(), "{backend:?} {table} row {index}");
        for (column, (actual, expected)) in row.iter().zip(expected).enumerate() {
            assert_eq!(
                format!("{actual:?}"),
                format!("{expected:?}"),
                "{backend:?} {table} row {index} column {column}"
            );
            let actual_text = actual.to_text().expect("a text form");
            assert_eq!(
                actual_text, text_forms[index][column],
                "{backend:?} {table} row {index} column {column}: text form"
            );
        }
    }
}
