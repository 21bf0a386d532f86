//! Type mapping: models of literals (and, where a type exists only as a column, small tables)
//! and the ferry values they become, type by type.

use crate::warehouse::{Backend, Dialect, Sql, TestWarehouse};
use crate::{check, date, decimal, error_of, quick_options, text, texts, timestamp};
use chrono::{TimeZone, Utc};
use ferry_core::Value;

pub async fn text_values(warehouse: TestWarehouse) {
    check(
        &warehouse,
        warehouse.sql(
            Sql::standard(
                "SELECT CAST('hello' AS VARCHAR), CAST('naïve ✓' AS TEXT), CAST(NULL AS VARCHAR), ''",
            )
            .mysql("SELECT CAST('hello' AS CHAR), 'naïve ✓', CAST(NULL AS CHAR), ''")
            .bigquery("SELECT CAST('hello' AS STRING), 'naïve ✓', CAST(NULL AS STRING), ''"),
        ),
        vec![text("hello"), text("naïve ✓"), Value::Null, text("")],
    )
    .await;
    match warehouse.backend {
        Backend::Mysql => {
            // Stored in utf8mb4 columns: 4-byte characters (emoji) survive, empty is not NULL,
            // a long TEXT comes whole. CHAR(3) loses its padding: MySQL strips trailing spaces
            // of CHAR values when it reads them (unless PAD_CHAR_TO_FULL_LENGTH), unlike
            // PostgreSQL.
            let long_text = "ferry ".repeat(2000) + "🚢";
            warehouse
                .setup(&format!(
                    "CREATE TABLE people (name VARCHAR(100), bio TEXT, code CHAR(3), \
                     mood ENUM('happy', 'sad'), tags SET('a', 'b', 'c'), nothing VARCHAR(10), \
                     blank TEXT, id INT) CHARACTER SET utf8mb4; \
                     INSERT INTO people VALUES ('Zoë 🚀 李', '{long_text}', 'ab', 'happy', 'a,c', \
                     NULL, '', 1)"
                ))
                .await;
            check(
                &warehouse,
                "SELECT `name`, bio, code, mood, tags, nothing, blank FROM `people`",
                vec![
                    text("Zoë 🚀 李"),
                    text(&long_text),
                    text("ab"),
                    text("happy"),
                    text("a,c"),
                    Value::Null,
                    text(""),
                ],
            )
            .await;
            assert_eq!(long_text.chars().count(), 12_001);
        }
        Backend::Postgres => {
            // char(n) pads, "char" is one byte, name and citext-like types are text; an enum's
            // label is its text.
            warehouse
                .setup("CREATE TYPE mood AS ENUM ('happy', 'sad'); CREATE DOMAIN email AS text;")
                .await;
            check(
                &warehouse,
                "SELECT 'ab'::char(3), 'x'::\"char\", 'pg'::name, 'happy'::mood, 'a@b.c'::email",
                vec![
                    text("ab "),
                    text("x"),
                    text("pg"),
                    text("happy"),
                    text("a@b.c"),
                ],
            )
            .await;
        }
        Backend::DuckDb => {
            warehouse
                .setup("CREATE TYPE mood AS ENUM ('happy', 'sad');")
                .await;
            check(
                &warehouse,
                "SELECT CAST('happy' AS mood)",
                vec![text("happy")],
            )
            .await;
        }
        Backend::Files => {
            // A file has no types of its own to declare: an enum column written to Parquet
            // keeps its label, which reads as text.
            warehouse
                .setup(
                    "CREATE TYPE mood AS ENUM ('happy', 'sad'); \
                     CREATE TABLE moods AS SELECT CAST('happy' AS mood) AS mood;",
                )
                .await;
            check(&warehouse, "SELECT mood FROM moods", vec![text("happy")]).await;
        }
        Backend::Snowflake => {
            // Snowflake has no enums, and its CHAR(n) is a VARCHAR that is not padded.
            check(
                &warehouse,
                "SELECT 'ab'::CHAR(3), REPEAT('é', 10000)",
                vec![text("ab"), text(&"é".repeat(10_000))],
            )
            .await;
        }
        Backend::BigQuery => {
            // STRING is BigQuery's only text type: no CHAR(n), no enums.
            check(
                &warehouse,
                "SELECT 'Zoë 🚀 李', REPEAT('é', 10000)",
                vec![text("Zoë 🚀 李"), text(&"é".repeat(10_000))],
            )
            .await;
        }
    }
}

pub async fn integer_values(warehouse: TestWarehouse) {
    if warehouse.backend == Backend::Mysql {
        // MySQL's CAST knows no SMALLINT or BIGINT: the integers come from a table's columns.
        warehouse
            .setup(
                "CREATE TABLE integers (a SMALLINT, b INT, c BIGINT, d BIGINT, e BIGINT); \
                 INSERT INTO integers VALUES \
                 (1, -2, 9223372036854775807, -9223372036854775808, NULL)",
            )
            .await;
    }
    let sql = warehouse.sql(
        Sql::standard(
            "SELECT CAST(1 AS SMALLINT), CAST(-2 AS INTEGER), CAST(9223372036854775807 AS BIGINT), \
             CAST('-9223372036854775808' AS BIGINT), CAST(NULL AS BIGINT)",
        )
        .mysql("SELECT a, b, c, d, e FROM integers")
        // Snowflake's integers are NUMBER(38,0) under other names; snowduck refuses a SMALLINT
        // column, so the model says INT and NUMBER.
        .snowflake(
            "SELECT 1::INT, -2::INTEGER, 9223372036854775807::NUMBER(19,0), \
             '-9223372036854775808'::NUMBER(38,0), NULL::BIGINT",
        )
        .bigquery(
            "SELECT 1, -2, 9223372036854775807, CAST('-9223372036854775808' AS INT64), \
             CAST(NULL AS INT64)",
        ),
    );
    let expected = vec![
        Value::Int(1),
        Value::Int(-2),
        Value::Int(i64::MAX),
        Value::Int(i64::MIN),
        Value::Null,
    ];
    if warehouse.backend == Backend::Snowflake {
        check(
            &warehouse,
            sql,
            texts(&[
                Some("1"),
                Some("-2"),
                Some("9223372036854775807"),
                Some("-9223372036854775808"),
                None,
            ]),
        )
        .await;
    } else {
        check(&warehouse, sql, expected).await;
    }
    match warehouse.dialect() {
        Dialect::DuckDb => {
            // Unsigned and 128-bit integers: Int while they fit in i64, exact Decimal text
            // beyond.
            check(
                &warehouse,
                "SELECT CAST(-128 AS TINYINT), CAST(255 AS UTINYINT), CAST(65535 AS USMALLINT), \
                 CAST(4294967295 AS UINTEGER), CAST(9223372036854775807 AS UBIGINT), \
                 CAST(18446744073709551615 AS UBIGINT), CAST(42 AS HUGEINT), \
                 CAST('-170141183460469231731687303715884105728' AS HUGEINT), \
                 CAST('340282366920938463463374607431768211455' AS UHUGEINT)",
                vec![
                    Value::Int(-128),
                    Value::Int(255),
                    Value::Int(65535),
                    Value::Int(4_294_967_295),
                    Value::Int(i64::MAX),
                    decimal("18446744073709551615"),
                    Value::Int(42),
                    decimal("-170141183460469231731687303715884105728"),
                    decimal("340282366920938463463374607431768211455"),
                ],
            )
            .await;
        }
        Dialect::Mysql => {
            // Unsigned integers: Int while they fit in i64, exact Decimal text beyond (BIGINT
            // UNSIGNED's maximum); TINYINT wider than one digit is a number, not a boolean; YEAR
            // is its number.
            warehouse
                .setup(
                    "CREATE TABLE unsigned_integers (a TINYINT, b TINYINT UNSIGNED, \
                     c SMALLINT UNSIGNED, d MEDIUMINT, e INT UNSIGNED, f BIGINT UNSIGNED, \
                     g BIGINT UNSIGNED, h YEAR); \
                     INSERT INTO unsigned_integers VALUES (-128, 255, 65535, -8388608, 4294967295, \
                     9223372036854775807, 18446744073709551615, 2024)",
                )
                .await;
            check(
                &warehouse,
                "SELECT a, b, c, d, e, f, g, h FROM unsigned_integers",
                vec![
                    Value::Int(-128),
                    Value::Int(255),
                    Value::Int(65535),
                    Value::Int(-8_388_608),
                    Value::Int(4_294_967_295),
                    Value::Int(i64::MAX),
                    decimal("18446744073709551615"),
                    Value::Int(2024),
                ],
            )
            .await;
        }
        Dialect::Postgres => {
            check(&warehouse, "SELECT CAST(42 AS oid)", vec![Value::Int(42)]).await;
        }
        Dialect::Snowflake => {
            // An integer column holds 38 digits.
            check(
                &warehouse,
                "SELECT 99999999999999999999999999999999999999::NUMBER(38,0)",
                vec![text("99999999999999999999999999999999999999")],
            )
            .await;
        }
        // INT64 is BigQuery's one integer type, checked above at both ends.
        Dialect::BigQuery => {}
    }
}

pub async fn exact_numerics(warehouse: TestWarehouse) {
    let standard = "SELECT 19.99, CAST('-19.990' AS NUMERIC(10,3)), CAST('-0.5' AS NUMERIC(3,1)), \
         CAST('0.000012' AS NUMERIC(10,6)), CAST(0 AS NUMERIC(5,2)), \
         CAST('123456789012345678901234567890' AS NUMERIC(30,0)), \
         CAST('-123456789012345678901234567890' AS NUMERIC(30,0)), \
         CAST('12345678901234567890.1234567890' AS NUMERIC(30,10)), \
         CAST('10000' AS NUMERIC(10,0)), CAST(NULL AS NUMERIC(10,2))";
    let digits = [
        Some("19.99"),
        Some("-19.990"),
        Some("-0.5"),
        Some("0.000012"),
        Some("0.00"),
        Some("123456789012345678901234567890"),
        Some("-123456789012345678901234567890"),
        Some("12345678901234567890.1234567890"),
        Some("10000"),
        None,
    ];
    let decimals: Vec<Value> = digits
        .iter()
        .map(|digits| digits.map_or(Value::Null, decimal))
        .collect();
    match warehouse.dialect() {
        Dialect::DuckDb | Dialect::Postgres => check(&warehouse, standard, decimals).await,
        // MySQL casts to DECIMAL only.
        Dialect::Mysql => {
            check(
                &warehouse,
                &standard.replace("NUMERIC", "DECIMAL"),
                decimals,
            )
            .await
        }
        // The same digits, as text (snowduck).
        Dialect::Snowflake => check(&warehouse, standard, texts(&digits)).await,
        Dialect::BigQuery => {
            // NUMERIC is BigQuery's fixed NUMERIC(38,9) (29 digits before the point, 9 after):
            // no precision of its own per column, and its text drops trailing zeros. The last
            // value has 38 digits: crucible rounds it to 28 significant digits (Python's Decimal
            // context), where BigQuery sends all 38; `tests/bigquery.rs` reads 38 and 76 digits
            // exactly.
            check(
                &warehouse,
                "SELECT NUMERIC '19.99', CAST('-19.990' AS NUMERIC), NUMERIC '-0.5', \
                 CAST('0.000012' AS NUMERIC), CAST(0 AS NUMERIC), \
                 NUMERIC '1234567890123456789.123456789', \
                 NUMERIC '-1234567890123456789.123456789', CAST('10000' AS NUMERIC), \
                 CAST(NULL AS NUMERIC), NUMERIC '12345678901234567890123456789.123456789'",
                vec![
                    decimal("19.99"),
                    decimal("-19.99"),
                    decimal("-0.5"),
                    decimal("0.000012"),
                    decimal("0"),
                    decimal("1234567890123456789.123456789"),
                    decimal("-1234567890123456789.123456789"),
                    decimal("10000"),
                    Value::Null,
                    decimal("12345678901234567890123456790"),
                ],
            )
            .await;
        }
    }
    if warehouse.backend == Backend::Postgres {
        // Unconstrained NUMERIC goes past DuckDB's 38 digits, and has NaN and infinities.
        check(
            &warehouse,
            "SELECT CAST('1e40' AS numeric), CAST('-0.0000000000000000000000000000000000000001' AS numeric), \
             CAST('NaN' AS numeric), CAST('Infinity' AS numeric), CAST('-Infinity' AS numeric), \
             CAST('1.50' AS numeric)",
            vec![
                decimal("10000000000000000000000000000000000000000"),
                decimal("-0.0000000000000000000000000000000000000001"),
                Value::Float(f64::NAN),
                Value::Float(f64::INFINITY),
                Value::Float(f64::NEG_INFINITY),
                decimal("1.50"),
            ],
        )
        .await;
    }
    if warehouse.backend == Backend::Mysql {
        // DECIMAL(65,30), MySQL's widest, at both ends: every digit kept, never through f64.
        warehouse
            .setup(
                "CREATE TABLE money (widest DECIMAL(65,30), smallest DECIMAL(65,30), \
                 unsigned_amount DECIMAL(10,2) UNSIGNED); \
                 INSERT INTO money VALUES \
                 ('-99999999999999999999999999999999999.999999999999999999999999999999', \
                 '0.000000000000000000000000000001', 19.99)",
            )
            .await;
        check(
            &warehouse,
            "SELECT widest, smallest, unsigned_amount FROM money",
            vec![
                decimal("-99999999999999999999999999999999999.999999999999999999999999999999"),
                decimal("0.000000000000000000000000000001"),
                decimal("19.99"),
            ],
        )
        .await;
    }
}

pub async fn float_values(warehouse: TestWarehouse) {
    match warehouse.dialect() {
        Dialect::Mysql => {
            // MySQL has no NaN or infinities (nor a way to write them): only finite values.
            warehouse
                .setup(
                    "CREATE TABLE floats (a FLOAT, b DOUBLE, c DOUBLE, d DOUBLE, e FLOAT); \
                     INSERT INTO floats VALUES (0.1, 0.1, -2.5, 1e300, NULL)",
                )
                .await;
            check(
                &warehouse,
                "SELECT a, b, c, d, e, b + 0.2e0 FROM floats",
                vec![
                    // A FLOAT keeps the digits it was written with, not its f32 rounding error.
                    Value::Float(0.1),
                    Value::Float(0.1),
                    Value::Float(-2.5),
                    Value::Float(1e300),
                    Value::Null,
                    // Every bit of a DOUBLE arrives (the binary protocol does not print it).
                    Value::Float(0.1 + 0.2),
                ],
            )
            .await;
        }
        Dialect::DuckDb | Dialect::Postgres => {
            check(
                &warehouse,
                "SELECT CAST(0.1 AS FLOAT4), CAST(0.1 AS FLOAT8), CAST(-2.5 AS FLOAT8), \
                 CAST('NaN' AS FLOAT8), CAST('Infinity' AS FLOAT8), CAST('-Infinity' AS FLOAT8), \
                 CAST('NaN' AS FLOAT4), CAST('-Infinity' AS FLOAT4), CAST(1e300 AS FLOAT8)",
                vec![
                    // A REAL keeps the digits it was written with, not its f32 rounding error.
                    Value::Float(0.1),
                    Value::Float(0.1),
                    Value::Float(-2.5),
                    Value::Float(f64::NAN),
                    Value::Float(f64::INFINITY),
                    Value::Float(f64::NEG_INFINITY),
                    Value::Float(f64::NAN),
                    Value::Float(f64::NEG_INFINITY),
                    Value::Float(1e300),
                ],
            )
            .await;
        }
        Dialect::Snowflake => {
            // Snowflake's FLOAT is always a double (snowduck refuses a REAL column); Python
            // prints the specials as nan and inf.
            check(
                &warehouse,
                "SELECT 0.1::FLOAT, -2.5::FLOAT, 'NaN'::FLOAT, 'inf'::FLOAT, '-inf'::FLOAT, \
                 1e300::FLOAT, 0.1::FLOAT + 0.2::FLOAT",
                texts(&[
                    Some("0.1"),
                    Some("-2.5"),
                    Some("nan"),
                    Some("inf"),
                    Some("-inf"),
                    Some("1e+300"),
                    Some("0.30000000000000004"),
                ]),
            )
            .await;
        }
        Dialect::BigQuery => {
            // FLOAT64 only; every bit arrives (BigQuery prints the shortest exact form).
            check(
                &warehouse,
                "SELECT CAST(0.1 AS FLOAT64), -2.5, CAST('NaN' AS FLOAT64), \
                 CAST('inf' AS FLOAT64), CAST('-inf' AS FLOAT64), 1e300, 0.1 + 0.2",
                vec![
                    Value::Float(0.1),
                    Value::Float(-2.5),
                    Value::Float(f64::NAN),
                    Value::Float(f64::INFINITY),
                    Value::Float(f64::NEG_INFINITY),
                    Value::Float(1e300),
                    Value::Float(0.1 + 0.2),
                ],
            )
            .await;
        }
    }
}

pub async fn boolean_values(warehouse: TestWarehouse) {
    if warehouse.backend == Backend::Mysql {
        // MySQL's BOOLEAN is TINYINT(1), a column type: the booleans come from a table.
        warehouse
            .setup(
                "CREATE TABLE flags (yes BOOLEAN, no BOOL, unknown BOOLEAN, bit_flag BIT(1), \
                 bits BIT(12), number TINYINT); \
                 INSERT INTO flags VALUES (true, false, NULL, b'1', b'100000000001', 1)",
            )
            .await;
    }
    let sql = warehouse.sql(
        Sql::standard("SELECT true, false, CAST(NULL AS BOOLEAN)")
            .mysql("SELECT yes, no, unknown FROM flags")
            .bigquery("SELECT true, false, CAST(NULL AS BOOL)"),
    );
    if warehouse.backend == Backend::Snowflake {
        // Python's words for them (snowduck).
        check(&warehouse, sql, texts(&[Some("True"), Some("False"), None])).await;
    } else {
        check(
            &warehouse,
            sql,
            vec![Value::Bool(true), Value::Bool(false), Value::Null],
        )
        .await;
    }
    if warehouse.backend == Backend::Mysql {
        // BIT(1) is a flag, wider BITs a number; a TINYINT of default width and the literal
        // `true` (an integer in MySQL) stay numbers.
        check(
            &warehouse,
            "SELECT bit_flag, bits, number, true FROM flags",
            vec![
                Value::Bool(true),
                Value::Int(2049),
                Value::Int(1),
                Value::Int(1),
            ],
        )
        .await;
    }
}

pub async fn dates_and_times(warehouse: TestWarehouse) {
    match warehouse.dialect() {
        Dialect::Mysql => return mysql_dates_and_times(warehouse).await,
        Dialect::Snowflake => {
            // Snowflake has neither infinite dates nor INTERVAL columns (snowduck refuses
            // one), and its years end in 9999. TIME is text everywhere.
            return check(
                &warehouse,
                "SELECT '1969-07-20'::DATE, '2024-02-29'::DATE, '0001-01-01'::DATE, \
                 '9999-12-31'::DATE, '04:05:06.5'::TIME, '23:59:59'::TIME, NULL::DATE",
                texts(&[
                    Some("1969-07-20"),
                    Some("2024-02-29"),
                    Some("0001-01-01"),
                    Some("9999-12-31"),
                    Some("04:05:06.500000"),
                    Some("23:59:59"),
                    None,
                ]),
            )
            .await;
        }
        Dialect::BigQuery => {
            // BigQuery's dates run from 0001-01-01 to 9999-12-31, without infinities; its
            // INTERVAL (which ferry reads as text) is one crucible cannot return.
            return check(
                &warehouse,
                "SELECT DATE '1969-07-20', DATE '2024-02-29', DATE '0001-01-01', \
                 DATE '9999-12-31', TIME '04:05:06.5', TIME '23:59:59', CAST(NULL AS DATE)",
                vec![
                    Value::Date(date(1969, 7, 20)),
                    Value::Date(date(2024, 2, 29)),
                    Value::Date(date(1, 1, 1)),
                    Value::Date(date(9999, 12, 31)),
                    text("04:05:06.5"),
                    text("23:59:59"),
                    Value::Null,
                ],
            )
            .await;
        }
        Dialect::DuckDb | Dialect::Postgres => {}
    }
    check(
        &warehouse,
        "SELECT DATE '1969-07-20', DATE '2024-02-29', DATE '0001-01-01', DATE '10000-01-01', \
         CAST('infinity' AS DATE), CAST('-infinity' AS DATE), \
         TIME '04:05:06.5', TIME '23:59:59', \
         CAST('1 year 2 months 3 days 04:05:06' AS INTERVAL), CAST('-1 days' AS INTERVAL)",
        vec![
            Value::Date(date(1969, 7, 20)),
            Value::Date(date(2024, 2, 29)),
            Value::Date(date(1, 1, 1)),
            Value::Date(date(10000, 1, 1)),
            text("infinity"),
            text("-infinity"),
            text("04:05:06.5"),
            text("23:59:59"),
            text("1 year 2 mons 3 days 04:05:06"),
            text("-1 days"),
        ],
    )
    .await;
    // Both warehouses store dates far past chrono's range (year 262142): an error that names
    // the column, never a panic or a wrong date.
    let error = error_of(
        &warehouse,
        "SELECT CAST('1000000-01-01' AS DATE) AS far_future",
        &quick_options(),
    )
    .await;
    let (type_name, reason) = match warehouse.dialect() {
        Dialect::Postgres => (
            "date",
            "the date is outside the years ferry can represent (-262143 to 262142)",
        ),
        _ => (
            "DATE",
            "it is outside the years ferry can represent (-262143 to 262142)",
        ),
    };
    assert_eq!(
        error.to_string(),
        format!(
            "column `far_future` (type `{type_name}`) has a value ferry cannot read: {reason}; \
             cast it in the model, e.g. `{cast}`",
            cast =
                warehouse.sql(Sql::standard("far_future::text").mysql("CAST(far_future AS CHAR)"))
        )
    );
    if warehouse.backend == Backend::Postgres {
        check(
            &warehouse,
            "SELECT DATE '0044-03-15 BC', TIME WITH TIME ZONE '04:05:06+02', \
             CAST('192.168.0.1/24' AS inet), CAST('10.0.0.0/8' AS cidr), CAST('::1' AS inet), \
             CAST('08:00:2b:01:02:03' AS macaddr)",
            vec![
                Value::Date(date(-43, 3, 15)),
                text("04:05:06+02"),
                text("192.168.0.1/24"),
                text("10.0.0.0/8"),
                text("::1"),
                text("08:00:2b:01:02:03"),
            ],
        )
        .await;
    }
}

/// MySQL's dates run from 1000 to 9999 (earlier ones work, unsupported), without infinities
/// or intervals; in their place it has zero dates, and TIMEs past a day.
async fn mysql_dates_and_times(warehouse: TestWarehouse) {
    check(
        &warehouse,
        "SELECT DATE '1969-07-20', DATE '2024-02-29', DATE '0001-01-01', DATE '9999-12-31', \
         TIME '04:05:06.5', TIME '23:59:59', TIME '-838:59:59', TIME '838:59:59', \
         CAST(NULL AS DATE)",
        vec![
            Value::Date(date(1969, 7, 20)),
            Value::Date(date(2024, 2, 29)),
            Value::Date(date(1, 1, 1)),
            Value::Date(date(9999, 12, 31)),
            text("04:05:06.5"),
            text("23:59:59"),
            text("-838:59:59"),
            text("838:59:59"),
            Value::Null,
        ],
    )
    .await;
    // Zero dates (MySQL's "no date", allowed unless sql_mode has NO_ZERO_DATE) read as NULL,
    // as Connector/J's zeroDateTimeBehavior=CONVERT_TO_NULL does: there is no day to give.
    warehouse
        .setup(
            "SET SESSION sql_mode = ''; \
             CREATE TABLE events (day DATE, moment DATETIME, stamp TIMESTAMP NULL, \
             half DATE); \
             INSERT INTO events VALUES ('0000-00-00', '0000-00-00 00:00:00', \
             '0000-00-00 00:00:00', '2024-00-00')",
        )
        .await;
    check(
        &warehouse,
        "SELECT day, moment, stamp FROM events",
        vec![Value::Null, Value::Null, Value::Null],
    )
    .await;
    // Half a zero date names no day either, but it is half a value: refused, with the column.
    let error = error_of(&warehouse, "SELECT half FROM events", &quick_options()).await;
    assert_eq!(
        error.to_string(),
        "column `half` (type `DATE`) has a value ferry cannot read: 2024-00-00 is not a calendar \
         date (a zero month or day); write NULLIF or a CASE in the model to say what it means; \
         cast it in the model, e.g. `CAST(half AS CHAR)`"
    );
}

pub async fn timestamps(warehouse: TestWarehouse) {
    match warehouse.dialect() {
        Dialect::Mysql => mysql_timestamps(warehouse).await,
        Dialect::DuckDb | Dialect::Postgres => {
            check(
                &warehouse,
                "SELECT TIMESTAMP '1969-07-20 20:17:40.5', TIMESTAMP '2024-01-02 03:04:05', \
                 TIMESTAMP '10000-01-01 00:00:00', \
                 CAST('2024-01-02 03:04:05+02' AS TIMESTAMPTZ), CAST('1960-06-01 12:00:00+00' AS TIMESTAMPTZ), \
                 CAST('infinity' AS TIMESTAMP), CAST('-infinity' AS TIMESTAMP), CAST('infinity' AS TIMESTAMPTZ)",
                vec![
                    Value::Timestamp(timestamp("1969-07-20 20:17:40.5")),
                    Value::Timestamp(timestamp("2024-01-02 03:04:05")),
                    Value::Timestamp(date(10000, 1, 1).and_hms_opt(0, 0, 0).unwrap()),
                    Value::TimestampTz(Utc.with_ymd_and_hms(2024, 1, 2, 1, 4, 5).unwrap()),
                    Value::TimestampTz(Utc.with_ymd_and_hms(1960, 6, 1, 12, 0, 0).unwrap()),
                    text("infinity"),
                    text("-infinity"),
                    text("infinity"),
                ],
            )
            .await;
        }
        Dialect::Snowflake => {
            // TIMESTAMP_NTZ is a wall-clock time; _TZ and _LTZ are instants, in the session's
            // zone, which ferry pins to UTC (snowduck prints them with their offset).
            check(
                &warehouse,
                "SELECT '1969-07-20 20:17:40.5'::TIMESTAMP_NTZ, '2024-01-02 03:04:05'::TIMESTAMP_NTZ, \
                 '2024-01-02 03:04:05 +02:00'::TIMESTAMP_TZ, \
                 '1960-06-01 12:00:00 +00:00'::TIMESTAMP_TZ, '2024-01-02 03:04:05'::TIMESTAMP_LTZ",
                texts(&[
                    Some("1969-07-20 20:17:40.500000"),
                    Some("2024-01-02 03:04:05"),
                    Some("2024-01-02 01:04:05+00:00"),
                    Some("1960-06-01 12:00:00+00:00"),
                    Some("2024-01-02 03:04:05+00:00"),
                ]),
            )
            .await;
        }
        Dialect::BigQuery => {
            // DATETIME is a wall-clock time, TIMESTAMP an instant in microseconds; both end at
            // years 1 and 9999, without infinities.
            check(
                &warehouse,
                "SELECT DATETIME '1969-07-20 20:17:40.5', DATETIME '2024-01-02 03:04:05', \
                 TIMESTAMP '2024-01-02 03:04:05+02', TIMESTAMP '1960-06-01 12:00:00+00', \
                 TIMESTAMP '9999-12-31 23:59:59.999999+00', TIMESTAMP '0001-01-01 00:00:00+00'",
                vec![
                    Value::Timestamp(timestamp("1969-07-20 20:17:40.5")),
                    Value::Timestamp(timestamp("2024-01-02 03:04:05")),
                    Value::TimestampTz(Utc.with_ymd_and_hms(2024, 1, 2, 1, 4, 5).unwrap()),
                    Value::TimestampTz(Utc.with_ymd_and_hms(1960, 6, 1, 12, 0, 0).unwrap()),
                    Value::TimestampTz(timestamp("9999-12-31 23:59:59.999999").and_utc()),
                    Value::TimestampTz(timestamp("0001-01-01 00:00:00").and_utc()),
                ],
            )
            .await;
        }
    }
}

/// DATETIME is a wall-clock time (Timestamp); TIMESTAMP is stored in UTC and shown in the
/// session's zone, which ferry pins to UTC (TimestampTz). TIMESTAMP's range is 1970 to 2038.
async fn mysql_timestamps(warehouse: TestWarehouse) {
    // Written from a session two hours east of UTC: stored as 01:04:05 UTC.
    warehouse
        .setup(
            "CREATE TABLE moments (local_time DATETIME(6), stamp TIMESTAMP(6) NULL, \
             latest TIMESTAMP NULL); \
             SET time_zone = '+02:00'; \
             INSERT INTO moments VALUES ('1969-07-20 20:17:40.5', '2024-01-02 03:04:05', \
             '2038-01-19 05:14:07')",
        )
        .await;
    check(
        &warehouse,
        "SELECT TIMESTAMP '1969-07-20 20:17:40.5', TIMESTAMP '2024-01-02 03:04:05', \
         CAST('9999-12-31 23:59:59.999999' AS DATETIME(6)), local_time, stamp, latest \
         FROM moments",
        vec![
            Value::Timestamp(timestamp("1969-07-20 20:17:40.5")),
            Value::Timestamp(timestamp("2024-01-02 03:04:05")),
            Value::Timestamp(timestamp("9999-12-31 23:59:59.999999")),
            Value::Timestamp(timestamp("1969-07-20 20:17:40.5")),
            Value::TimestampTz(Utc.with_ymd_and_hms(2024, 1, 2, 1, 4, 5).unwrap()),
            Value::TimestampTz(Utc.with_ymd_and_hms(2038, 1, 19, 3, 14, 7).unwrap()),
        ],
    )
    .await;
}

pub async fn json_values(warehouse: TestWarehouse) {
    let document = serde_json::json!({"a": [1, "b", null], "c": {"d": true}});
    match warehouse.dialect() {
        Dialect::Mysql => {
            // MariaDB's JSON is LONGTEXT with a JSON_VALID check, and says nothing more to a
            // client: it arrives as the text stored. (MySQL's own JSON type has a wire type of
            // its own, which ferry reads as Json; this suite runs MariaDB only.)
            warehouse
                .setup(
                    r#"CREATE TABLE documents (doc JSON); INSERT INTO documents VALUES ('{"a": [1, "b", null], "c": {"d": true}}')"#,
                )
                .await;
            check(
                &warehouse,
                "SELECT doc, JSON_OBJECT('k', 1) FROM documents",
                vec![
                    text(r#"{"a": [1, "b", null], "c": {"d": true}}"#),
                    text(r#"{"k": 1}"#),
                ],
            )
            .await;
        }
        Dialect::Postgres => {
            check(
                &warehouse,
                r#"SELECT '{"a": [1, "b", null], "c": {"d": true}}'::json,
                          '{"a": [1, "b", null], "c": {"d": true}}'::jsonb,
                          'null'::jsonb, '"text"'::json"#,
                vec![
                    Value::Json(document.clone()),
                    Value::Json(document),
                    Value::Json(serde_json::Value::Null),
                    Value::Json(serde_json::json!("text")),
                ],
            )
            .await;
        }
        Dialect::DuckDb => {
            // Structs and maps have no ferry type of their own: they arrive as JSON objects.
            check(
                &warehouse,
                "SELECT {'name': 'Ada', 'tags': ['a', 'b'], 'score': 1.5}, MAP {'k': 1}",
                vec![
                    Value::Json(
                        serde_json::json!({"name": "Ada", "tags": ["a", "b"], "score": "1.5"}),
                    ),
                    Value::Json(serde_json::json!({"k": 1})),
                ],
            )
            .await;
        }
        Dialect::Snowflake => {
            // VARIANT and OBJECT arrive as JSON from Snowflake; snowduck sends the JSON's text.
            check(
                &warehouse,
                r#"SELECT PARSE_JSON('{"a": [1, "b", null], "c": {"d": true}}'),
                          PARSE_JSON('null'), PARSE_JSON('"text"'), OBJECT_CONSTRUCT('k', 1)"#,
                texts(&[
                    Some(r#"{"a": [1, "b", null], "c": {"d": true}}"#),
                    Some("null"),
                    Some(r#""text""#),
                    Some(r#"{"k":1}"#),
                ]),
            )
            .await;
        }
        Dialect::BigQuery => {
            // JSON values, and STRUCTs as JSON objects (their NUMERICs as text, exact).
            check(
                &warehouse,
                r#"SELECT JSON '{"a": [1, "b", null], "c": {"d": true}}', JSON 'null',
                          JSON '"text"', STRUCT('Ada' AS name, ['a', 'b'] AS tags, 1.5 AS score,
                          NUMERIC '19.99' AS price)"#,
                vec![
                    Value::Json(document),
                    Value::Json(serde_json::Value::Null),
                    Value::Json(serde_json::json!("text")),
                    Value::Json(serde_json::json!(
                        {"name": "Ada", "tags": ["a", "b"], "score": 1.5, "price": "19.99"}
                    )),
                ],
            )
            .await;
        }
    }
}

pub async fn array_values(warehouse: TestWarehouse) {
    match warehouse.dialect() {
        Dialect::Mysql => {
            // MySQL has no array type; a list is a JSON array, which MariaDB sends as text.
            check(
                &warehouse,
                "SELECT JSON_ARRAY('a', 'b', NULL)",
                vec![text(r#"["a", "b", null]"#)],
            )
            .await;
        }
        Dialect::DuckDb | Dialect::Postgres => {
            check(
                &warehouse,
                warehouse.sql(
                    Sql::standard(
                        "SELECT ARRAY['a', 'b', NULL], ARRAY[1, 2, 3], CAST('{}' AS int4[]), \
                         ARRAY[[1, 2], [3, 4]], ARRAY[CAST('1.50' AS NUMERIC(5,2))], \
                         ARRAY[DATE '2024-01-01']",
                    )
                    .duckdb(
                        "SELECT ['a', 'b', NULL], [1, 2, 3], CAST([] AS INTEGER[]), \
                         [[1, 2], [3, 4]], [CAST('1.50' AS DECIMAL(5,2))], [DATE '2024-01-01']",
                    ),
                ),
                vec![
                    Value::Array(vec![text("a"), text("b"), Value::Null]),
                    Value::Array(vec![Value::Int(1), Value::Int(2), Value::Int(3)]),
                    Value::Array(vec![]),
                    Value::Array(vec![
                        Value::Array(vec![Value::Int(1), Value::Int(2)]),
                        Value::Array(vec![Value::Int(3), Value::Int(4)]),
                    ]),
                    Value::Array(vec![decimal("1.50")]),
                    Value::Array(vec![Value::Date(date(2024, 1, 1))]),
                ],
            )
            .await;
        }
        Dialect::Snowflake => {
            // Snowflake's ARRAY arrives as JSON (decoded by src/snowflake/decode.rs's tests);
            // snowduck cannot describe a list column, and refuses the model in its words.
            let error = error_of(
                &warehouse,
                "SELECT ARRAY_CONSTRUCT(1, 2, 3)",
                &quick_options(),
            )
            .await;
            assert_eq!(
                error.to_string(),
                "the model failed in the warehouse: Unsupported column type: INTEGER[]"
            );
        }
        Dialect::BigQuery => {
            // Arrays of one type, never of arrays, never holding NULL (BigQuery refuses the
            // model).
            check(
                &warehouse,
                "SELECT ['a', 'b'], [1, 2, 3], CAST([] AS ARRAY<INT64>), [NUMERIC '1.50'], \
                 [DATE '2024-01-01']",
                vec![
                    Value::Array(vec![text("a"), text("b")]),
                    Value::Array(vec![Value::Int(1), Value::Int(2), Value::Int(3)]),
                    Value::Array(vec![]),
                    Value::Array(vec![decimal("1.5")]),
                    Value::Array(vec![Value::Date(date(2024, 1, 1))]),
                ],
            )
            .await;
            let error = error_of(&warehouse, "SELECT ['a', NULL]", &quick_options()).await;
            assert_eq!(
                error.to_string(),
                "the model failed in the warehouse: Array cannot have a null element; error in \
                 writing field f0_"
            );
        }
    }
}

pub async fn binary_values(warehouse: TestWarehouse) {
    let sql = warehouse.sql(
        Sql::standard(r"SELECT CAST('\xdeadbeef' AS bytea), CAST('' AS bytea)")
            .duckdb(r"SELECT CAST('\xDE\xAD\xBE\xEF' AS BLOB), CAST('' AS BLOB)")
            .mysql("SELECT X'DEADBEEF', CAST('' AS BINARY)")
            .snowflake("SELECT TO_BINARY('DEADBEEF', 'HEX'), TO_BINARY('', 'HEX')")
            .bigquery("SELECT FROM_HEX('deadbeef'), FROM_HEX('')"),
    );
    if warehouse.backend == Backend::Snowflake {
        // BINARY arrives as hex from Snowflake (ferry pins BINARY_OUTPUT_FORMAT); snowduck
        // sends Python's repr of the bytes.
        check(
            &warehouse,
            sql,
            texts(&[Some(r"b'\xde\xad\xbe\xef'"), Some("b''")]),
        )
        .await;
        return;
    }
    check(
        &warehouse,
        sql,
        vec![
            Value::Bytes(vec![0xde, 0xad, 0xbe, 0xef]),
            Value::Bytes(vec![]),
        ],
    )
    .await;
}

pub async fn uuid_values(warehouse: TestWarehouse) {
    match warehouse.dialect() {
        // MariaDB has a UUID type (10.7 and later); it is sent as its text.
        Dialect::DuckDb | Dialect::Postgres | Dialect::Mysql => {
            check(
                &warehouse,
                "SELECT CAST('A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11' AS UUID)",
                vec![text("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")],
            )
            .await;
        }
        // No UUID type: a UUID is a string, as the warehouse makes it.
        Dialect::Snowflake | Dialect::BigQuery => {
            let sql = warehouse
                .sql(Sql::standard("SELECT UUID_STRING()").bigquery("SELECT GENERATE_UUID()"));
            let rows = crate::rows_of(&warehouse, sql).await;
            let [row] = rows.as_slice() else {
                panic!("one row: {rows:?}");
            };
            let [Value::Text(uuid)] = row.as_slice() else {
                panic!("one text: {row:?}");
            };
            let shape: String = uuid
                .chars()
                .map(|c| if c.is_ascii_hexdigit() { 'x' } else { c })
                .collect();
            assert_eq!(shape, "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx", "{uuid}");
        }
    }
}
