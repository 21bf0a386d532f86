//! How models run, whatever their values: columns before rows, refusals, the warehouse's own
//! errors, streaming through a bounded buffer, previews, read-only sessions, the statement
//! timeout, a connection lost mid-stream and a stream dropped by its reader.

use crate::warehouse::{Backend, Dialect, ModelStream, Sql, TestWarehouse};
use crate::{check, error_of, integer_of, quick_options, texts};
use ferry_core::Value;
use ferry_source::{QueryOptions, SourceError};
use mysql_async::prelude::Queryable as _;
use std::time::{Duration, Instant};

pub async fn columns_are_known_before_the_first_row(warehouse: TestWarehouse) {
    let sql = warehouse.sql(
        Sql::standard(
            "SELECT 1 AS id, 'a@example.com' AS email, CAST(2.5 AS NUMERIC(4,1)) AS balance \
             WHERE false",
        )
        .mysql(
            "SELECT 1 AS id, 'a@example.com' AS email, CAST(2.5 AS DECIMAL(4,1)) AS balance \
             FROM DUAL WHERE false",
        )
        .bigquery("SELECT 1 AS id, 'a@example.com' AS email, NUMERIC '2.5' AS balance LIMIT 0"),
    );
    let mut stream = warehouse
        .query(sql, &quick_options())
        .await
        .expect("query starts");
    let columns: Vec<String> = stream
        .columns()
        .iter()
        .map(|column| format!("{} {}", column.name, column.type_name))
        .collect();
    let expected = match warehouse.backend {
        Backend::DuckDb | Backend::Files => ["id INTEGER", "email VARCHAR", "balance DECIMAL(4,1)"],
        Backend::Postgres => ["id int4", "email text", "balance numeric"],
        Backend::Mysql => ["id INT", "email VARCHAR", "balance DECIMAL"],
        // Snowflake names unquoted columns in capitals; snowduck calls every column TEXT,
        // which ferry names VARCHAR.
        Backend::Snowflake => ["ID VARCHAR", "EMAIL VARCHAR", "BALANCE VARCHAR"],
        Backend::BigQuery => ["id INT64", "email STRING", "balance NUMERIC"],
    };
    assert_eq!(columns, expected);
    assert!(stream.next_row().await.is_none(), "no rows");
}

pub async fn unreadable_types_are_refused_before_the_first_row(warehouse: TestWarehouse) {
    let sql = warehouse.sql(
        Sql::standard("SELECT CAST('101' AS BIT) AS flags")
            .postgres("SELECT to_tsvector('simple', 'hello') AS flags")
            .mysql("SELECT ST_GeomFromText('POINT(1 1)') AS flags")
            .snowflake("SELECT '1 day'::INTERVAL AS flags")
            .bigquery("SELECT ST_GEOGPOINT(1, 1) AS flags"),
    );
    let error = match warehouse.query(sql, &quick_options()).await {
        Ok(_) => panic!("a model with an unreadable column must be refused at query start"),
        Err(error) => error,
    };
    let message = match warehouse.dialect() {
        Dialect::DuckDb | Dialect::Postgres | Dialect::Mysql => {
            let type_name =
                warehouse.sql(Sql::standard("BIT").postgres("tsvector").mysql("GEOMETRY"));
            let cast = warehouse.sql(Sql::standard("flags::text").mysql("CAST(flags AS CHAR)"));
            format!(
                "column `flags` has type `{type_name}`, which ferry cannot read; cast it in the \
                 model, e.g. `{cast}`"
            )
        }
        // snowduck calls every column it can describe TEXT, so ferry meets no type it cannot
        // read there (its refusal of Snowflake types it does not know is tested in
        // src/snowflake/decode.rs); a column snowduck cannot describe is refused by snowduck,
        // before the first row too.
        Dialect::Snowflake => {
            "the model failed in the warehouse: Unsupported column type: INTERVAL".to_string()
        }
        // Every type crucible returns is one ferry reads (GEOGRAPHY and INTERVAL as text; the
        // refusal of others is tested in src/bigquery/decode.rs); crucible refuses GEOGRAPHY
        // itself, before the first row.
        Dialect::BigQuery => "the model failed in the warehouse: Not supported by Crucible: \
                              function ST_GEOGPOINT"
            .to_string(),
    };
    assert_eq!(error.to_string(), message);
}

pub async fn database_errors_keep_the_database_message(warehouse: TestWarehouse) {
    let error = error_of(
        &warehouse,
        "SELECT missing_column\nFROM (SELECT 1 AS name) AS people",
        &quick_options(),
    )
    .await;
    assert!(matches!(error, SourceError::Sql { .. }), "{error:?}");
    let message = error.to_string();
    let expected = match warehouse.backend {
        Backend::Postgres => {
            "the model failed in the warehouse: column \"missing_column\" does not exist \
             (at line 1, column 8)"
        }
        Backend::Mysql => {
            "the model failed in the warehouse: Unknown column 'missing_column' in 'SELECT'"
        }
        // DuckDB points at the column under the line, in its message.
        Backend::DuckDb | Backend::Files => {
            "the model failed in the warehouse: Binder Error: Referenced column \"missing_column\" \
             not found in FROM clause!\nCandidate bindings: \"name\"\n\nLINE 1: SELECT \
             missing_column\n               ^^^^^^^^^^^^^^"
        }
        // Snowflake's error code and SQL state lead its message; snowduck's is DuckDB's, about
        // the SQL as it was translated (unquoted names in capitals, on one line).
        Backend::Snowflake => {
            "the model failed in the warehouse: 002043 (02000): Binder Error: Referenced column \
             \"MISSING_COLUMN\" not found in FROM clause!\nCandidate bindings: \"NAME\"\n\n\
             LINE 1: SELECT MISSING_COLUMN FROM (SELECT 1 AS NAME) AS PEOPLE\n               ^"
        }
        // BigQuery ends such a message with ` at [1:8]`, which ferry turns into a position
        // (tests/bigquery.rs); crucible gives none.
        Backend::BigQuery => "the model failed in the warehouse: Unrecognized name: missing_column",
    };
    assert_eq!(message, expected);
}

pub async fn rows_stream_through_a_bounded_buffer(warehouse: TestWarehouse) {
    let options = QueryOptions {
        statement_timeout: Duration::from_secs(60),
        batch_size: 100,
        ..QueryOptions::default()
    };
    // crucible answers a page per request, slowly: 100 pages of 100 rows rather than 1000.
    let numbers: i64 = if warehouse.backend == Backend::BigQuery {
        10_000
    } else {
        100_000
    };
    let mut stream = warehouse
        .query(
            warehouse.sql(
                Sql::standard("SELECT g FROM generate_series(1, 100000) AS numbers(g) ORDER BY g")
                    // MariaDB's sequence engine: a table of the numbers its name says.
                    .mysql("SELECT seq AS g FROM seq_1_to_100000 ORDER BY seq")
                    // snowduck cuts the result into partitions of 10,000 rows.
                    .snowflake(
                        "SELECT seq4() + 1 AS g FROM TABLE(GENERATOR(ROWCOUNT => 100000)) \
                         ORDER BY g",
                    )
                    .bigquery("SELECT g FROM UNNEST(GENERATE_ARRAY(1, 10000)) AS g ORDER BY g"),
            ),
            &options,
        )
        .await
        .expect("query starts");
    let first = stream
        .next_row()
        .await
        .expect("a first row")
        .expect("no error");
    assert_eq!(integer_of(&first[0]), 1);
    // Give the producer time to run ahead as far as it can: the channel bound must stop it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let buffered = stream.buffered_rows();
    assert!(
        buffered <= options.batch_size,
        "{buffered} rows waiting in memory, more than the batch size {}",
        options.batch_size
    );
    let mut count: i64 = 1;
    let mut sum: i64 = 1;
    while let Some(row) = stream.next_row().await {
        let row = row.expect("no error mid-stream");
        count += 1;
        sum += integer_of(&row[0]);
    }
    assert_eq!(count, numbers);
    assert_eq!(sum, numbers * (numbers + 1) / 2);
    assert!(stream.next_row().await.is_none(), "the stream stays ended");
}

pub async fn preview_returns_the_first_rows(warehouse: TestWarehouse) {
    let (columns, rows) = warehouse
        .preview(
            warehouse.sql(
                Sql::standard(
                    "SELECT g AS n FROM generate_series(1, 100000) AS numbers(g) ORDER BY g",
                )
                .mysql("SELECT seq AS n FROM seq_1_to_100000 ORDER BY seq")
                .snowflake(
                    "SELECT seq4() + 1 AS n FROM TABLE(GENERATOR(ROWCOUNT => 100000)) ORDER BY n",
                )
                .bigquery("SELECT n FROM UNNEST(GENERATE_ARRAY(1, 100000)) AS n ORDER BY n"),
            ),
            3,
            &QueryOptions {
                statement_timeout: ferry_source::PREVIEW_STATEMENT_TIMEOUT,
                timeout_setting: ferry_source::TimeoutSetting::Preview,
                ..QueryOptions::default()
            },
        )
        .await
        .expect("preview");
    let names: Vec<&str> = columns.iter().map(|column| column.name.as_str()).collect();
    if warehouse.backend == Backend::Snowflake {
        assert_eq!(names, ["N"]);
        assert_eq!(
            rows,
            [
                texts(&[Some("1")]),
                texts(&[Some("2")]),
                texts(&[Some("3")])
            ]
        );
        return;
    }
    assert_eq!(names, ["n"]);
    assert_eq!(
        rows,
        vec![
            vec![Value::Int(1)],
            vec![Value::Int(2)],
            vec![Value::Int(3)]
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Safety: read-only, one query, bounded time
// ---------------------------------------------------------------------------------------------

pub async fn writes_are_refused_before_or_by_the_read_only_session(warehouse: TestWarehouse) {
    warehouse
        .setup("CREATE TABLE customers (id INTEGER); INSERT INTO customers VALUES (1);")
        .await;
    if warehouse.backend == Backend::Mysql {
        warehouse
            .setup(
                "CREATE FUNCTION add_customer() RETURNS INT MODIFIES SQL DATA \
                 BEGIN INSERT INTO customers VALUES (3); RETURN 3; END",
            )
            .await;
    }
    // A WITH clause feeding an INSERT is refused by ferry's check before it runs: Snowflake and
    // BigQuery have no read-only session to stop it. MySQL has no INSERT after WITH: there a
    // function writes, and only the read-only session stops it.
    if warehouse.backend == Backend::Mysql {
        let error = error_of(&warehouse, "SELECT add_customer()", &quick_options()).await;
        assert!(
            matches!(error, SourceError::ReadOnlyViolation { .. }),
            "{error:?}"
        );
        let message = error.to_string();
        assert!(
            message.starts_with("the model tried to write ("),
            "{message}"
        );
        assert!(
            message.ends_with("); a model must be a read-only SELECT"),
            "{message}"
        );
        mysql_refuses_statements_hidden_from_ferrys_check(&warehouse, &message).await;
    } else {
        let error = error_of(
            &warehouse,
            "WITH new_rows AS (SELECT 2 AS id) INSERT INTO customers SELECT id FROM new_rows",
            &quick_options(),
        )
        .await;
        assert_eq!(
            error.to_string(),
            "the model is not a single read-only query: its WITH clause is followed by \
             `INSERT`, which writes; a model must be a read-only query: end the WITH clause \
             with a SELECT"
        );
    }
    match warehouse.backend {
        // Writes that pass ferry's check, stopped by the read-only session.
        Backend::Postgres => postgres_refuses_writes_inside_a_select(&warehouse).await,
        Backend::Files => files_refuse_writes(&warehouse).await,
        _ => {}
    }
    assert_eq!(
        warehouse
            .admin_count("SELECT count(*) FROM customers")
            .await,
        1,
        "what the warehouse holds"
    );
}

/// The files source's DuckDB holds nothing to write into (every table is a view of a file).
/// What it could write to is the folders (with `COPY … TO`, which DuckDB runs inside a WITH
/// clause): the files source refuses a WITH clause that writes before running the model.
async fn files_refuse_writes(warehouse: &TestWarehouse) {
    let copy = format!(
        "WITH copied AS (COPY (SELECT 2 AS id) TO '{}/more.csv') SELECT 1",
        warehouse.folder().display()
    );
    let error = error_of(warehouse, &copy, &quick_options()).await;
    assert!(
        matches!(error, SourceError::ReadOnlyViolation { .. }),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "the model tried to write (its WITH clause holds a COPY statement); a model must be a \
         read-only SELECT"
    );
    assert!(!warehouse.folder().join("more.csv").exists());
}

/// A data-modifying CTE inside a SELECT, and a function that writes as a side effect.
async fn postgres_refuses_writes_inside_a_select(warehouse: &TestWarehouse) {
    warehouse
        .setup(
            "CREATE FUNCTION add_customer() RETURNS integer LANGUAGE plpgsql AS $$ \
             BEGIN INSERT INTO customers VALUES (3); RETURN 3; END $$;",
        )
        .await;
    // PostgreSQL names the statement it refused: the whole SELECT for a writing CTE, the
    // INSERT inside the function.
    for (sql, refused_statement) in [
        (
            "WITH inserted AS (INSERT INTO customers VALUES (4) RETURNING id) SELECT * FROM inserted",
            "SELECT",
        ),
        ("SELECT add_customer()", "INSERT"),
    ] {
        let error = error_of(warehouse, sql, &quick_options()).await;
        assert_eq!(
            error.to_string(),
            format!(
                "the model tried to write (cannot execute {refused_statement} in a read-only \
                 transaction); a model must be a read-only SELECT"
            ),
            "for {sql}"
        );
    }
}

async fn mysql_refuses_statements_hidden_from_ferrys_check(
    warehouse: &TestWarehouse,
    refusal: &str,
) {
    assert_eq!(
        refusal,
        "the model tried to write (Cannot execute statement in a READ ONLY transaction); a \
         model must be a read-only SELECT"
    );
    // MySQL's `#` comments and backslash escapes hide a second statement from ferry's query
    // check (which reads SQL the standard way); the prepared statement the model runs as is
    // one statement whatever its text says, so the server refuses it whole.
    for sql in [
        "SELECT 'a\\' , ' ; DROP TABLE customers; -- '",
        "SELECT 1 # '\n; DROP TABLE customers -- '",
    ] {
        ferry_source::validate_model_sql(sql).expect("looks like one query to ferry");
        let error = error_of(warehouse, sql, &quick_options()).await;
        assert!(
            error.to_string().starts_with(
                "the model failed in the warehouse: You have an error in your SQL syntax"
            ),
            "for {sql}: {error}"
        );
    }
    // Backtick-quoted names are MySQL's own quoting, and pass the query check.
    check(
        warehouse,
        "SELECT `id` AS `customer id` FROM `customers` WHERE `id` = 1",
        vec![Value::Int(1)],
    )
    .await;
}

pub async fn statements_other_than_one_query_are_refused_before_running(warehouse: TestWarehouse) {
    warehouse
        .setup("CREATE TABLE customers (id INTEGER); INSERT INTO customers VALUES (1);")
        .await;
    for (sql, problem) in [
        (
            "DELETE FROM customers",
            "it starts with `DELETE`, but a model must be a read-only query starting with \
             SELECT, WITH, VALUES, TABLE or FROM",
        ),
        (
            "SELECT 1; DROP TABLE customers",
            "it contains more than one statement (a `;` is followed by `DROP`); a model must be \
             one query, so remove everything after the first `;`",
        ),
        (
            "CREATE TABLE other AS SELECT 1",
            "it starts with `CREATE`, but a model must be a read-only query starting with \
             SELECT, WITH, VALUES, TABLE or FROM",
        ),
        (
            "INSERT INTO customers VALUES (2)",
            "it starts with `INSERT`, but a model must be a read-only query starting with \
             SELECT, WITH, VALUES, TABLE or FROM",
        ),
    ] {
        let error = error_of(&warehouse, sql, &quick_options()).await;
        assert_eq!(
            error.to_string(),
            format!("the model is not a single read-only query: {problem}")
        );
    }
    if matches!(warehouse.backend, Backend::Snowflake | Backend::BigQuery) {
        assert_eq!(
            warehouse.requests().len(),
            0,
            "nothing reached the warehouse"
        );
    }
    assert_eq!(
        warehouse
            .admin_count("SELECT count(*) FROM customers")
            .await,
        1,
        "nothing ran"
    );
}

/// What a warehouse says when a model passes its statement timeout of 1 s: the speed-up it
/// suggests is the warehouse's own (Snowflake has no indexes, but warehouses of larger sizes).
fn timed_out(backend: Backend) -> String {
    let speed_up = match backend {
        Backend::Snowflake => {
            "filter or aggregate earlier, read fewer columns, or give the connection a larger \
             warehouse"
        }
        _ => "filter or aggregate earlier, add an index",
    };
    format!(
        "the model ran longer than 1s and was cancelled; make the query faster ({speed_up}) or \
         raise the connection's `statement_timeout_seconds` (`--statement-timeout SECONDS` on \
         `ferry connect`; 0 means no limit)"
    )
}

pub async fn long_running_models_are_stopped_by_the_statement_timeout(warehouse: TestWarehouse) {
    let options = QueryOptions {
        statement_timeout: Duration::from_secs(1),
        batch_size: 100,
        ..QueryOptions::default()
    };
    if warehouse.backend == Backend::BigQuery {
        // crucible runs each job to its end inside the jobs.query call and ignores
        // `timeoutMs`: no job is ever still running for ferry to time out. (Against a fake
        // that answers as BigQuery does, `tests/bigquery.rs` checks that a job running at the
        // timeout is cancelled.) What it shows instead: a result that came back complete is
        // read, even past a timeout of 1 ms.
        let options = QueryOptions {
            statement_timeout: Duration::from_millis(1),
            ..options
        };
        let (_, rows) = crate::run_model(&warehouse, "SELECT 1 AS n", &options)
            .await
            .expect("the complete result is read");
        assert_eq!(rows, [[Value::Int(1)]]);
        return;
    }
    if warehouse.backend == Backend::Snowflake {
        // snowduck runs a statement to its end before it answers, and ignores the
        // submission's `timeout`; submitted asynchronously (as Snowflake answers a statement
        // still running after 45 s), it answers 202 and never runs it. ferry polls until the
        // timeout (plus its grace for Snowflake's own 408), then cancels the statement.
        warehouse.make_submissions_asynchronous();
    }
    let sql = warehouse.sql(
        // About 10^10 row pairs: minutes of work for DuckDB.
        Sql::standard("SELECT sum(a.range * b.range) FROM range(100000) AS a, range(100000) AS b")
            .postgres("SELECT pg_sleep(10)")
            // The same for MariaDB (SLEEP would end early and return 1 rather than fail).
            .mysql("SELECT sum(a.seq * b.seq) FROM seq_1_to_100000 AS a, seq_1_to_100000 AS b")
            .snowflake("SELECT 1 AS n"),
    );
    let started = Instant::now();
    let error = error_of(&warehouse, sql, &options).await;
    let elapsed = started.elapsed();
    assert_eq!(error.to_string(), timed_out(warehouse.backend));
    assert!(elapsed < Duration::from_secs(6), "took {elapsed:?}");
    if warehouse.backend == Backend::Snowflake {
        let handle = &cancelled_statements(&warehouse, 1).await[0];
        let status = warehouse.snowduck_statement_status(handle).await;
        assert_eq!(status["message"], "Statement was cancelled.", "{status}");
    }
}

pub async fn test_connection_reads_the_warehouse(warehouse: TestWarehouse) {
    warehouse
        .test_connection()
        .await
        .expect("the warehouse is reachable");
}

// ---------------------------------------------------------------------------------------------
// A lost connection, a dropped stream
// ---------------------------------------------------------------------------------------------

pub async fn a_connection_lost_mid_stream_says_after_how_many_rows(warehouse: TestWarehouse) {
    let mut warehouse = warehouse.on_a_server_of_its_own().await;
    let options = QueryOptions {
        statement_timeout: Duration::from_secs(60),
        batch_size: 100,
        ..QueryOptions::default()
    };
    if matches!(warehouse.backend, Backend::DuckDb | Backend::Files) {
        return embedded_data_removed_mid_stream(warehouse, &options).await;
    }
    let mut stream = warehouse
        .query(
            warehouse.sql(
                Sql::standard(
                    "SELECT g, 'ferry-lost-connection-test' AS marker \
                     FROM generate_series(1, 1000000) AS numbers(g)",
                )
                .mysql("SELECT seq, 'ferry-lost-connection-test' AS marker FROM seq_1_to_1000000")
                // Three partitions of 10,000 rows: ferry holds the first when the server dies.
                .snowflake("SELECT seq4() AS n FROM TABLE(GENERATOR(ROWCOUNT => 25000))")
                // 25 pages of 100 rows: ferry holds the first.
                .bigquery("SELECT n FROM UNNEST(GENERATE_ARRAY(1, 2500)) AS n"),
            ),
            &options,
        )
        .await
        .expect("query starts");
    let mut rows_read = read_rows(&mut stream, 10).await;
    match warehouse.backend {
        Backend::Postgres => {
            let terminated: i64 = warehouse
                .postgres_admin_client()
                .await
                .query_one(
                    "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) \
                     FROM pg_stat_activity WHERE query LIKE '%ferry-lost-connection-test%' \
                     AND pid <> pg_backend_pid()) AS t",
                    &[],
                )
                .await
                .expect("terminate the model's backend")
                .get(0);
            assert_eq!(terminated, 1);
        }
        Backend::Mysql => {
            let killed =
                kill_mysql_connections_running(&warehouse, "ferry-lost-connection-test").await;
            assert_eq!(killed, 1);
        }
        // The emulator's process is killed: its connections are gone, and nothing listens.
        _ => warehouse.kill_server(),
    }
    let error = loop {
        match stream.next_row().await {
            Some(Ok(_)) => rows_read += 1,
            Some(Err(error)) => break error,
            None => panic!("the stream ended normally after {rows_read} rows"),
        }
    };
    // The model has 1,000,000 rows on PostgreSQL and MySQL, where rows already in the socket's
    // buffers still arrive after the kill (tens of thousands under load); 25,000 or fewer on
    // the emulators, which serve whole partitions or pages.
    let rows_of_the_model = match warehouse.backend {
        Backend::Postgres | Backend::Mysql => 1_000_000,
        _ => 25_000,
    };
    assert!(rows_read < rows_of_the_model, "{rows_read} rows");
    assert!(
        matches!(error, SourceError::ConnectionLost { rows_read: lost_after, .. } if lost_after == rows_read),
        "{error:?}"
    );
    let message = error.to_string();
    let lost = format!("the warehouse connection was lost after {rows_read} rows: ");
    match warehouse.backend {
        Backend::Postgres => assert_eq!(
            message,
            format!("{lost}terminating connection due to administrator command")
        ),
        Backend::Mysql => assert_eq!(
            message,
            format!(
                "{lost}the server closed the connection or the network failed (Input/output \
                 error: bytes remaining on stream)"
            )
        ),
        // ferry's HTTP stack retries a request whose connection failed (about 45 s with the
        // default policy) before it gives up on the warehouse.
        _ => {
            assert!(message.starts_with(&lost), "{message}");
            assert!(message.contains("could not connect"), "{message}");
        }
    }
}

/// Reads `count` rows, which must come without an error; returns how many were read.
async fn read_rows(stream: &mut ModelStream, count: u64) -> u64 {
    for _ in 0..count {
        stream
            .next_row()
            .await
            .expect("a row")
            .expect("no error yet");
    }
    count
}

/// DuckDB and files have no connection to lose: the database is a file ferry opened, or files
/// it reads. What a lost connection becomes there: the file is deleted mid-stream, and the
/// rows keep coming from what is open.
async fn embedded_data_removed_mid_stream(warehouse: TestWarehouse, options: &QueryOptions) {
    warehouse
        .setup("CREATE TABLE numbers AS SELECT range AS n FROM range(100000)")
        .await;
    let mut stream = warehouse
        .query("SELECT n FROM numbers", options)
        .await
        .expect("query starts");
    let mut rows_read = read_rows(&mut stream, 10).await;
    let removed = match &warehouse.config {
        ferry_source::SourceConfig::DuckDb { path } => path.clone(),
        _ => warehouse.folder().join("numbers.parquet"),
    };
    std::fs::remove_file(&removed).expect("remove the file");
    while let Some(row) = stream.next_row().await {
        row.expect("the rows keep coming");
        rows_read += 1;
    }
    assert_eq!(rows_read, 100_000);
}

pub async fn dropping_the_stream_cancels_the_query(warehouse: TestWarehouse) {
    match warehouse.backend {
        Backend::Postgres => {
            let running = || postgres_queries_running(&warehouse, "ferry-drop-test");
            drop_once_running(
                &warehouse,
                "SELECT pg_sleep(60), 'ferry-drop-test' AS marker",
                running,
            )
            .await;
        }
        Backend::Mysql => {
            let running = || mysql_queries_running(&warehouse, "ferry-drop-test");
            drop_once_running(
                &warehouse,
                // MariaDB sends the columns with the first rows, once they fill its 16 KB
                // network buffer: 100 rows of 1 KB go at once, then the 101st sleeps.
                "SELECT seq, REPEAT('x', 1000) AS filler, SLEEP(IF(seq > 100, 60, 0)), \
                 'ferry-drop-test' AS marker FROM seq_1_to_1000",
                running,
            )
            .await;
        }
        Backend::DuckDb | Backend::Files => embedded_model_stops_when_dropped(warehouse).await,
        Backend::Snowflake => snowflake_statement_cancelled_when_dropped(warehouse).await,
        Backend::BigQuery => bigquery_pages_stop_when_dropped(warehouse).await,
    }
}

/// Starts `sql`, waits until the warehouse runs it, drops the stream, and waits (5 s at most)
/// until the warehouse no longer runs it.
async fn drop_once_running<F, Fut>(warehouse: &TestWarehouse, sql: &str, running: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = i64>,
{
    let stream = warehouse
        .query(sql, &QueryOptions::default())
        .await
        .expect("query starts");
    let deadline = Instant::now() + Duration::from_secs(10);
    while running().await == 0 {
        assert!(Instant::now() < deadline, "the model never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(stream);
    let deadline = Instant::now() + Duration::from_secs(5);
    while running().await > 0 {
        assert!(
            Instant::now() < deadline,
            "the model still runs 5 s after its stream was dropped"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// DuckDB runs in this process: the model's thread (and the DuckDB workers it starts, which
/// inherit its name) are counted by name, with no other DuckDB or files model running.
async fn embedded_model_stops_when_dropped(warehouse: TestWarehouse) {
    // Linux keeps 15 bytes of a thread's name: `ferry-duckdb-model`, `ferry-files-model`.
    let thread_name = match warehouse.backend {
        Backend::DuckDb => "ferry-duckdb-mo",
        _ => "ferry-files-mod",
    };
    let _alone = warehouse.no_other_embedded_models().await;
    // About 10^10 row pairs: minutes of work, far longer than the test waits. Run without
    // `TestWarehouse::query`, which would wait for the lock held here.
    let mut stream = ferry_source::query(
        &warehouse.config,
        "SELECT sum(a.range * b.range) FROM range(100000) AS a, range(100000) AS b",
        &QueryOptions::default(),
    )
    .await
    .expect("query starts");
    assert!(threads_named(thread_name) >= 1);
    // Let DuckDB get busy computing the first (and only) row.
    let first_row = tokio::time::timeout(Duration::from_millis(500), stream.next_row()).await;
    assert!(first_row.is_err(), "the query should still be running");
    drop(stream);
    let deadline = Instant::now() + Duration::from_secs(5);
    while threads_named(thread_name) > 0 {
        assert!(
            Instant::now() < deadline,
            "the DuckDB query still runs 5 s after its stream was dropped"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn threads_named(name: &str) -> usize {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|task| std::fs::read_to_string(task.path().join("comm")).ok())
        .filter(|comm| comm.trim_end() == name)
        .count()
}

/// Once a result streams, a dropped stream sends the cancel (snowduck answers that the
/// finished statement cannot be cancelled any more). While a statement runs (submitted
/// asynchronously, so snowduck keeps it running), a reader that leaves makes ferry send the
/// cancel too, and snowduck reports the statement cancelled.
async fn snowflake_statement_cancelled_when_dropped(warehouse: TestWarehouse) {
    let options = QueryOptions {
        batch_size: 10,
        ..QueryOptions::default()
    };
    let mut stream = warehouse
        .query(
            "SELECT seq4() AS n FROM TABLE(GENERATOR(ROWCOUNT => 25000))",
            &options,
        )
        .await
        .expect("query starts");
    stream.next_row().await.expect("a row").expect("no error");
    drop(stream);
    let finished = cancelled_statements(&warehouse, 1).await.remove(0);
    let status = warehouse.snowduck_statement_status(&finished).await;
    assert_eq!(
        status["message"], "Statement executed successfully.",
        "{status}"
    );

    warehouse.make_submissions_asynchronous();
    let config = warehouse.config.clone();
    let running = tokio::spawn(async move {
        let _ = ferry_source::query(&config, "SELECT 1 AS n", &QueryOptions::default()).await;
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while !warehouse
        .requests()
        .iter()
        .any(|request| request.method == "GET" && !request.path.contains(&finished))
    {
        assert!(
            Instant::now() < deadline,
            "ferry never polled the statement"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    running.abort();
    let cancelled = cancelled_statements(&warehouse, 2).await;
    let status = warehouse.snowduck_statement_status(&cancelled[1]).await;
    assert_eq!(status["message"], "Statement was cancelled.", "{status}");
}

/// The handles of the statements ferry asked snowduck to cancel, once there are `count` of
/// them, waiting 5 s at most (a cancel is sent by the task that ran the statement, after the
/// reader left).
async fn cancelled_statements(warehouse: &TestWarehouse, count: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let cancels: Vec<String> = warehouse
            .requests()
            .into_iter()
            .filter(|request| request.method == "POST")
            .filter_map(|request| {
                let handle = request
                    .path
                    .strip_prefix("/api/v2/statements/")?
                    .strip_suffix("/cancel")?;
                Some(handle.to_string())
            })
            .collect();
        if cancels.len() >= count {
            return cancels;
        }
        assert!(
            Instant::now() < deadline,
            "{} cancel requests of {count}; ferry sent {:#?}",
            cancels.len(),
            warehouse.requests()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// crucible completes every job inside jobs.query, so no job is running when the reader
/// leaves (`tests/bigquery.rs` checks jobs.cancel against a fake whose jobs run): a dropped
/// stream asks for no more pages.
async fn bigquery_pages_stop_when_dropped(warehouse: TestWarehouse) {
    let options = QueryOptions {
        batch_size: 100,
        ..QueryOptions::default()
    };
    let mut stream = warehouse
        .query(
            "SELECT n FROM UNNEST(GENERATE_ARRAY(1, 2500)) AS n ORDER BY n",
            &options,
        )
        .await
        .expect("query starts");
    assert_eq!(
        stream.next_row().await.expect("a row").expect("no error"),
        vec![Value::Int(1)]
    );
    drop(stream);
    let pages = || {
        warehouse
            .requests()
            .iter()
            .filter(|request| request.method == "GET" && request.path.contains("/queries/"))
            .count()
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let asked = pages();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(pages(), asked, "no page asked for after the drop");
    // The bounded channel let the producer run at most a couple of pages ahead of 25.
    assert!(asked <= 3, "{asked} pages asked for");
}

/// How many backends other than the asking one run a statement containing `marker`.
async fn postgres_queries_running(warehouse: &TestWarehouse, marker: &str) -> i64 {
    warehouse
        .postgres_admin_client()
        .await
        .query_one(
            &format!(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' \
                 AND query LIKE '%{marker}%' AND pid <> pg_backend_pid()"
            ),
            &[],
        )
        .await
        .expect("read pg_stat_activity")
        .get(0)
}

/// How many connections other than the asking one run a statement containing `marker`
/// (PROCESSLIST: a user sees its own connections).
async fn mysql_queries_running(warehouse: &TestWarehouse, marker: &str) -> i64 {
    let mut admin = warehouse.mysql_admin_connection().await;
    let count: Option<i64> = admin
        .query_first(format!(
            "SELECT count(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE '%{marker}%' \
             AND INFO NOT LIKE '%PROCESSLIST%' AND ID <> CONNECTION_ID()"
        ))
        .await
        .expect("read the process list");
    admin.disconnect().await.expect("disconnect");
    count.expect("a count")
}

/// Kills (as an operator would) the connections running a statement containing `marker`.
async fn kill_mysql_connections_running(warehouse: &TestWarehouse, marker: &str) -> usize {
    let mut admin = warehouse.mysql_admin_connection().await;
    let ids: Vec<u64> = admin
        .query(format!(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE INFO LIKE '%{marker}%' \
             AND INFO NOT LIKE '%PROCESSLIST%' AND ID <> CONNECTION_ID()"
        ))
        .await
        .expect("read the process list");
    for id in &ids {
        admin
            .query_drop(format!("KILL CONNECTION {id}"))
            .await
            .expect("kill the model's connection");
    }
    admin.disconnect().await.expect("disconnect");
    ids.len()
}
