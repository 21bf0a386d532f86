//! One suite, every warehouse: each case runs against a fresh DuckDB file, PostgreSQL database,
//! MariaDB database (MySQL's protocol), folder of files, Snowflake database (snowduck) and
//! BigQuery dataset (crucible-emulator), and asserts what a model actually returns, or how it is
//! refused, through ferry's source API.
//!
//! Cases are plain async functions taking a [`TestWarehouse`]; `on_every_warehouse!` turns each
//! into one test per backend. Where the SQL dialects differ, a case picks per dialect with
//! [`Sql`]; the expected ferry values are the same unless a comment says why. Where a backend
//! cannot express a case, the case says why and asserts what that backend does instead; no
//! case is skipped.
//!
//! What the emulators change, once for all cases:
//! - **snowduck** (Snowflake) reports every column as TEXT and sends Python's `str()` of each
//!   value, so on Snowflake the values arrive as text (`True`, `-1E-9`, `b'\xde'`). Snowflake's
//!   own encodings of each type are decoded by the fixture tests of `src/snowflake/decode.rs`
//!   and the live test in `tests/snowflake.rs`. snowduck also refuses some column types
//!   (SMALLINT, REAL, lists, INTERVAL) with `Unsupported column type`.
//! - **crucible** (BigQuery) runs every job inside the `jobs.query` call, so no job is ever
//!   still running for ferry to time out or cancel (`tests/bigquery.rs` covers those against a
//!   fake that answers as BigQuery's docs say), and it rounds NUMERIC values to 28 significant
//!   digits on the wire (BigQuery sends all 38).
//! - The **files** source is DuckDB inside: a model of literals runs as on DuckDB; tables are
//!   DuckDB's own Parquet, CSV and JSON files.

mod backend_specific;
mod behaviour;
mod hostile_table;
mod recording_proxy;
mod types;
mod warehouse;

use behaviour::*;
use chrono::{NaiveDate, NaiveDateTime};
use ferry_core::Value;
use ferry_source::{Column, QueryOptions, SourceError};
use hostile_table::*;
use std::time::Duration;
use types::*;
use warehouse::{Backend, TestWarehouse};

/// Turns each case into one test per warehouse.
macro_rules! on_every_warehouse {
    ($($case:ident),* $(,)?) => {
        on_every_warehouse!(@backend on_duckdb, DuckDb, $($case),*);
        on_every_warehouse!(@backend on_postgres, Postgres, $($case),*);
        on_every_warehouse!(@backend on_mysql, Mysql, $($case),*);
        on_every_warehouse!(@backend on_files, Files, $($case),*);
        on_every_warehouse!(@backend on_snowflake, Snowflake, $($case),*);
        on_every_warehouse!(@backend on_bigquery, BigQuery, $($case),*);
    };
    (@backend $module:ident, $backend:ident, $($case:ident),*) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let warehouse =
                        super::TestWarehouse::new(super::Backend::$backend).await;
                    super::$case(warehouse).await;
                }
            )*
        }
    };
}

on_every_warehouse!(
    hostile_values_read_alike_everywhere,
    text_values,
    integer_values,
    exact_numerics,
    float_values,
    boolean_values,
    dates_and_times,
    timestamps,
    json_values,
    array_values,
    binary_values,
    uuid_values,
    columns_are_known_before_the_first_row,
    unreadable_types_are_refused_before_the_first_row,
    database_errors_keep_the_database_message,
    rows_stream_through_a_bounded_buffer,
    preview_returns_the_first_rows,
    writes_are_refused_before_or_by_the_read_only_session,
    statements_other_than_one_query_are_refused_before_running,
    long_running_models_are_stopped_by_the_statement_timeout,
    a_connection_lost_mid_stream_says_after_how_many_rows,
    dropping_the_stream_cancels_the_query,
    test_connection_reads_the_warehouse,
);

// ---------------------------------------------------------------------------------------------
// Helpers shared by the cases
// ---------------------------------------------------------------------------------------------

fn quick_options() -> QueryOptions {
    QueryOptions {
        statement_timeout: Duration::from_secs(30),
        batch_size: 100,
        ..QueryOptions::default()
    }
}

/// Runs a model and returns its columns and all rows, or the first error.
async fn run_model(
    warehouse: &TestWarehouse,
    sql: &str,
    options: &QueryOptions,
) -> Result<(Vec<Column>, Vec<Vec<Value>>), SourceError> {
    let mut stream = warehouse.query(sql, options).await?;
    let mut rows = Vec::new();
    while let Some(row) = stream.next_row().await {
        rows.push(row?);
    }
    Ok((stream.columns().to_vec(), rows))
}

/// All rows of `sql`, which must succeed.
async fn rows_of(warehouse: &TestWarehouse, sql: &str) -> Vec<Vec<Value>> {
    match run_model(warehouse, sql, &quick_options()).await {
        Ok((_, rows)) => rows,
        Err(error) => panic!("{:?}: model {sql:?} failed: {error}", warehouse.backend),
    }
}

/// Asserts that `sql` returns exactly one row equal to `expected`. Compared through `Debug`
/// so that `Float(NaN)` equals itself.
async fn check(warehouse: &TestWarehouse, sql: &str, expected: Vec<Value>) {
    let rows = rows_of(warehouse, sql).await;
    assert_eq!(
        format!("{rows:?}"),
        format!("{:?}", vec![expected]),
        "{:?}: model {sql:?}",
        warehouse.backend
    );
}

/// The error `sql` ends with (at query start or mid-stream).
async fn error_of(warehouse: &TestWarehouse, sql: &str, options: &QueryOptions) -> SourceError {
    match run_model(warehouse, sql, options).await {
        Ok((_, rows)) => panic!(
            "{:?}: model {sql:?} should fail but returned {rows:?}",
            warehouse.backend
        ),
        Err(error) => error,
    }
}

fn text(value: &str) -> Value {
    Value::Text(value.to_string())
}

/// Text values, `None` for NULL: what snowduck sends for every type.
fn texts(values: &[Option<&str>]) -> Vec<Value> {
    values
        .iter()
        .map(|value| value.map_or(Value::Null, text))
        .collect()
}

fn decimal(value: &str) -> Value {
    Value::Decimal(value.to_string())
}

fn date(year: i32, month: u32, day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(year, month, day).expect("valid date")
}

fn timestamp(text: &str) -> NaiveDateTime {
    NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f").expect("valid timestamp")
}

/// An integer read from a model: `Int`, or on Snowflake (snowduck) its text.
fn integer_of(value: &Value) -> i64 {
    match value {
        Value::Int(number) => *number,
        Value::Text(digits) => digits
            .parse()
            .unwrap_or_else(|_| panic!("expected an integer, got {value:?}")),
        other => panic!("expected an integer, got {other:?}"),
    }
}
