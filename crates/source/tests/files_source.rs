//! Files as a source: DuckDB writes its own CSV, Parquet and JSON fixtures into a temporary
//! folder, then models read them through `ferry_source::query` and `preview`, and each test
//! asserts the exact values, or how the model is refused.
//!
//! One test watches this process's threads by name to see a dropped stream stop its query; the
//! others take [`models_lock`] for reading so that none runs a model while it watches.

use chrono::{NaiveDate, TimeZone, Utc};
use ferry_core::Value;
use ferry_source::warehouse_diff;
use ferry_source::{
    files_readable_folders, preview, query, test_connection, Column, QueryOptions, SourceConfig,
    SourceError,
};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::sync::RwLock;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Held for reading by every test that runs models, for writing by the one that counts threads.
fn models_lock() -> &'static RwLock<()> {
    static LOCK: RwLock<()> = RwLock::const_new(());
    &LOCK
}

/// A temporary folder a files connection reads.
struct Folder {
    directory: tempfile::TempDir,
}

impl Folder {
    fn new() -> Folder {
        Folder {
            directory: tempfile::tempdir().expect("temporary folder"),
        }
    }

    fn path(&self) -> PathBuf {
        self.directory.path().to_path_buf()
    }

    /// Runs `sql` on a read-write in-memory DuckDB, `{dir}` standing for the folder: the
    /// fixtures are DuckDB's own `COPY … TO` output.
    fn write(&self, sql: &str) {
        let sql = sql.replace("{dir}", &self.path().to_string_lossy());
        let connection = duckdb::Connection::open_in_memory().expect("in-memory DuckDB");
        connection.execute_batch(&sql).expect("write the fixture");
    }

    fn config(&self) -> SourceConfig {
        SourceConfig::Files {
            folders: vec![self.path()],
        }
    }
}

fn options() -> QueryOptions {
    QueryOptions {
        statement_timeout: Duration::from_secs(30),
        batch_size: 100,
        ..QueryOptions::default()
    }
}

/// The model's columns and every row, or its first error.
async fn run(
    config: &SourceConfig,
    sql: &str,
) -> Result<(Vec<Column>, Vec<Vec<Value>>), SourceError> {
    let _models = models_lock().read().await;
    let mut stream = query(config, sql, &options()).await?;
    let mut rows = Vec::new();
    while let Some(row) = stream.next_row().await {
        rows.push(row?);
    }
    Ok((stream.columns().to_vec(), rows))
}

async fn rows(config: &SourceConfig, sql: &str) -> Vec<Vec<Value>> {
    match run(config, sql).await {
        Ok((_, rows)) => rows,
        Err(error) => panic!("{sql} failed: {error}"),
    }
}

/// `name TYPE` per column.
async fn column_types(config: &SourceConfig, sql: &str) -> Vec<String> {
    match run(config, sql).await {
        Ok((columns, _)) => columns
            .iter()
            .map(|column| format!("{} {}", column.name, column.type_name))
            .collect(),
        Err(error) => panic!("{sql} failed: {error}"),
    }
}

async fn error(config: &SourceConfig, sql: &str) -> SourceError {
    match run(config, sql).await {
        Ok((_, rows)) => panic!("{sql} should fail, but returned {rows:?}"),
        Err(error) => error,
    }
}

fn text(value: &str) -> Value {
    Value::Text(value.to_string())
}

fn decimal(value: &str) -> Value {
    Value::Decimal(value.to_string())
}

// ---------------------------------------------------------------------------------------------
// Values
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parquet_values_arrive_exact() {
    let folder = Folder::new();
    folder.write(
        "COPY (
             SELECT 1::INTEGER AS id, 'Zoë 🚢 東京'::VARCHAR AS name, NULL::VARCHAR AS missing,
                    ''::VARCHAR AS empty, 12345678901234567890.12::DECIMAL(38,2) AS amount,
                    19.99::DECIMAL(10,2) AS price, 1.5::DOUBLE AS ratio, true AS active,
                    DATE '2024-06-01' AS day, TIMESTAMP '2024-06-01 12:34:56.789' AS local_at,
                    TIMESTAMPTZ '2024-06-01 12:34:56+02:00' AS zoned_at,
                    repeat('x', 10000) AS long_text, 9007199254740993::BIGINT AS big,
                    [1, 2]::INTEGER[] AS list
             UNION ALL
             SELECT 2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
         ) TO '{dir}/customers.parquet' (FORMAT parquet);",
    );
    let config = folder.config();
    assert_eq!(
        column_types(&config, "SELECT * FROM customers").await,
        [
            "id INTEGER",
            "name VARCHAR",
            "missing VARCHAR",
            "empty VARCHAR",
            "amount DECIMAL(38,2)",
            "price DECIMAL(10,2)",
            "ratio DOUBLE",
            "active BOOLEAN",
            "day DATE",
            "local_at TIMESTAMP",
            "zoned_at TIMESTAMP WITH TIME ZONE",
            "long_text VARCHAR",
            "big BIGINT",
            "list INTEGER[]",
        ]
    );
    let rows = rows(&config, "SELECT * FROM customers ORDER BY id").await;
    assert_eq!(
        rows[0],
        [
            Value::Int(1),
            text("Zoë 🚢 東京"),
            Value::Null,
            text(""),
            decimal("12345678901234567890.12"),
            decimal("19.99"),
            Value::Float(1.5),
            Value::Bool(true),
            Value::Date(NaiveDate::from_ymd_opt(2024, 6, 1).unwrap()),
            Value::Timestamp(
                NaiveDate::from_ymd_opt(2024, 6, 1)
                    .unwrap()
                    .and_hms_milli_opt(12, 34, 56, 789)
                    .unwrap()
            ),
            Value::TimestampTz(Utc.with_ymd_and_hms(2024, 6, 1, 10, 34, 56).unwrap()),
            text(&"x".repeat(10_000)),
            Value::Int(9_007_199_254_740_993),
            Value::Array(vec![Value::Int(1), Value::Int(2)]),
        ]
    );
    let mut second = vec![Value::Int(2)];
    second.extend(std::iter::repeat_n(Value::Null, 13));
    assert_eq!(rows[1], second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_dates_and_booleans_are_detected_and_numbers_stay_as_written() {
    let folder = Folder::new();
    folder.write(
        "COPY (
             SELECT '1' AS id, 'Zoë, \"the\" 🚢' AS name, '02139' AS zip, '19.99' AS amount,
                    '12345678901234567890' AS account, DATE '2024-06-01' AS day,
                    TIMESTAMP '2024-06-01 12:34:56' AS local_at,
                    '2024-06-01 12:34:56+02:00' AS zoned_at, true AS active, '' AS empty,
                    NULL AS missing
             UNION ALL
             SELECT '2', 'Bo', '10001', '5.00', '7', DATE '2024-06-02',
                    TIMESTAMP '2024-06-02 00:00:00', '2024-06-02 00:00:00+00:00', false, 'x', NULL
         ) TO '{dir}/customers.csv' (HEADER);",
    );
    let config = folder.config();
    assert_eq!(
        column_types(&config, "SELECT * FROM customers").await,
        [
            "id VARCHAR",
            "name VARCHAR",
            "zip VARCHAR",
            "amount VARCHAR",
            "account VARCHAR",
            "day DATE",
            "local_at TIMESTAMP",
            "zoned_at TIMESTAMP WITH TIME ZONE",
            "active BOOLEAN",
            "empty VARCHAR",
            "missing VARCHAR",
        ]
    );
    assert_eq!(
        rows(&config, "SELECT * FROM customers ORDER BY id").await[0],
        [
            text("1"),
            text("Zoë, \"the\" 🚢"),
            text("02139"),
            text("19.99"),
            text("12345678901234567890"),
            Value::Date(NaiveDate::from_ymd_opt(2024, 6, 1).unwrap()),
            Value::Timestamp(
                NaiveDate::from_ymd_opt(2024, 6, 1)
                    .unwrap()
                    .and_hms_opt(12, 34, 56)
                    .unwrap()
            ),
            Value::TimestampTz(Utc.with_ymd_and_hms(2024, 6, 1, 10, 34, 56).unwrap()),
            Value::Bool(true),
            // CSV cannot tell an empty string from a missing value: both read as NULL.
            Value::Null,
            Value::Null,
        ]
    );
    // Numbers are cast where the model needs them, or read with the types it gives.
    assert_eq!(
        rows(
            &config,
            "SELECT id::INTEGER AS id, amount::DECIMAL(10,2) AS amount FROM customers ORDER BY id"
        )
        .await,
        [
            vec![Value::Int(1), decimal("19.99")],
            vec![Value::Int(2), decimal("5.00")]
        ]
    );
    let folder_path = folder.path();
    let typed = format!(
        "SELECT amount, zip FROM read_csv('{}/customers.csv', \
         types = {{'amount': 'DECIMAL(10,2)', 'zip': 'VARCHAR'}}) ORDER BY id",
        folder_path.display()
    );
    assert_eq!(
        rows(&config, &typed).await,
        [
            vec![decimal("19.99"), text("02139")],
            vec![decimal("5.00"), text("10001")]
        ]
    );
    // Comparing text with a number is refused, never done as text.
    let message = error(&config, "SELECT * FROM customers WHERE amount > 10")
        .await
        .to_string();
    assert!(message.contains("explicit cast"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_files_are_read_as_arrays_or_one_object_per_line() {
    let folder = Folder::new();
    folder.write(
        "COPY (SELECT 1 AS id, 'Zoë' AS name, {'city': 'Paris'} AS address)
             TO '{dir}/orders.json' (FORMAT json, ARRAY true);
         COPY (SELECT 2 AS id, 'Bo' AS name UNION ALL SELECT 3, NULL)
             TO '{dir}/events.ndjson' (FORMAT json);
         COPY (SELECT 4 AS id) TO '{dir}/clicks.jsonl' (FORMAT json);",
    );
    let config = folder.config();
    assert_eq!(
        rows(&config, "SELECT * FROM orders").await,
        [vec![
            Value::Int(1),
            text("Zoë"),
            Value::Json(serde_json::json!({"city": "Paris"}))
        ]]
    );
    assert_eq!(
        rows(&config, "SELECT * FROM events ORDER BY id").await,
        [
            vec![Value::Int(2), text("Bo")],
            vec![Value::Int(3), Value::Null]
        ]
    );
    assert_eq!(
        rows(&config, "SELECT * FROM clicks").await,
        [vec![Value::Int(4)]]
    );
}

// ---------------------------------------------------------------------------------------------
// Views and paths
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_data_file_in_the_folder_is_a_view_named_after_it() {
    let folder = Folder::new();
    folder.write(
        "COPY (SELECT 1 AS n) TO '{dir}/Customers 2024-06.csv' (HEADER);
         COPY (SELECT 2 AS n) TO '{dir}/orders.csv.gz' (HEADER, COMPRESSION gzip);
         COPY (SELECT 3 AS n) TO '{dir}/refunds.tsv' (HEADER, DELIMITER '\t');
         COPY (SELECT 4 AS n) TO '{dir}/.hidden.csv' (HEADER);
         COPY (SELECT 5 AS n) TO '{dir}/notes.txt' (HEADER);",
    );
    std::fs::create_dir(folder.path().join("archive")).unwrap();
    folder.write("COPY (SELECT 6 AS n) TO '{dir}/archive/old.csv' (HEADER);");
    let config = folder.config();
    assert_eq!(
        rows(
            &config,
            "SELECT view_name FROM duckdb_views() WHERE NOT internal ORDER BY view_name"
        )
        .await,
        [
            vec![text("customers_2024_06")],
            vec![text("orders")],
            vec![text("refunds")]
        ]
    );
    assert_eq!(
        rows(
            &config,
            "SELECT n FROM customers_2024_06 UNION ALL SELECT n FROM orders \
             UNION ALL SELECT n FROM refunds ORDER BY n"
        )
        .await,
        // The views read a CSV file's numbers as text (see the test above).
        [vec![text("1")], vec![text("2")], vec![text("3")]]
    );
    // Files in subfolders and other files are read by path.
    assert_eq!(
        rows(
            &config,
            "SELECT n FROM read_csv('~/archive/old.csv') UNION ALL \
             SELECT n FROM read_csv('~/.hidden.csv') ORDER BY n"
        )
        .await,
        [vec![Value::Int(4)], vec![Value::Int(6)]]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_whose_names_clash_fail_only_the_models_that_read_the_name() {
    let folder = Folder::new();
    folder.write(
        "COPY (SELECT 1 AS n) TO '{dir}/customers.csv' (HEADER);
         COPY (SELECT 2 AS n) TO '{dir}/Customers.parquet' (FORMAT parquet);
         COPY (SELECT 3 AS n) TO '{dir}/orders.csv' (HEADER);",
    );
    let config = folder.config();
    let dir = folder.path().canonicalize().unwrap();
    let message = error(&config, "SELECT * FROM customers").await.to_string();
    let expected = format!(
        "`customers` could be any of {dir}/Customers.parquet and {dir}/customers.csv: files in \
         {dir} whose names differ only in extension, case or punctuation all make the view \
         `customers`. Read the one you mean by its path, such as \
         read_parquet('{dir}/Customers.parquet'), or rename the others",
        dir = dir.display()
    );
    assert!(message.contains(&expected), "{message}");
    assert_eq!(
        rows(&config, "SELECT n FROM orders").await,
        [vec![text("3")]]
    );
    assert_eq!(
        rows(&config, "SELECT n FROM read_parquet('~/Customers.parquet')").await,
        [vec![Value::Int(2)]]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn globs_read_several_files_in_the_folders() {
    let folder = Folder::new();
    folder.write(
        "COPY (SELECT 1 AS id, 'a' AS name) TO '{dir}/orders_2024_01.csv' (HEADER);
         COPY (SELECT 2 AS id, 'b' AS name) TO '{dir}/orders_2024_02.csv' (HEADER);
         COPY (SELECT 3 AS id) TO '{dir}/orders_2024_03.parquet' (FORMAT parquet);",
    );
    let second = Folder::new();
    second.write("COPY (SELECT 4 AS id, 'd' AS name) TO '{dir}/orders_2024_04.csv' (HEADER);");
    let config = SourceConfig::Files {
        folders: vec![folder.path(), second.path()],
    };
    // `~/` is the first folder.
    assert_eq!(
        rows(
            &config,
            "SELECT id, name FROM read_csv('~/orders_*.csv') ORDER BY id"
        )
        .await,
        [
            vec![Value::Int(1), text("a")],
            vec![Value::Int(2), text("b")]
        ]
    );
    let absolute = format!(
        "SELECT id FROM read_parquet('{}/*.parquet') UNION ALL \
         SELECT id FROM read_csv('{}/*.csv') ORDER BY id",
        folder.path().display(),
        second.path().display()
    );
    assert_eq!(
        rows(&config, &absolute).await,
        [vec![Value::Int(3)], vec![Value::Int(4)]]
    );
    // The second folder's files are views too.
    assert_eq!(
        rows(&config, "SELECT id FROM orders_2024_04").await,
        [vec![text("4")]]
    );
}

// ---------------------------------------------------------------------------------------------
// Confinement
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_cannot_read_outside_the_folders() {
    let outside = Folder::new();
    outside.write("COPY (SELECT 'secret' AS s) TO '{dir}/secret.csv' (HEADER);");
    // The connection's folder is inside `outside`: `..` leads to the secret.
    let folder = outside.path().join("exports");
    std::fs::create_dir(&folder).unwrap();
    let config = SourceConfig::Files {
        folders: vec![folder.clone()],
    };
    let hint = format!(
        "a model of this connection reads only files in {}; copy the file there, or add its \
         folder to the connection",
        folder.canonicalize().unwrap().display()
    );
    let secret = outside.path().join("secret.csv");
    let secret_path = secret.display().to_string();
    let read_secret = format!("SELECT * FROM read_csv('{secret_path}')");
    let from_secret = format!("SELECT * FROM '{secret_path}'");
    for (sql, refused_path) in [
        ("SELECT * FROM read_csv('/etc/passwd')", "/etc/passwd"),
        ("SELECT * FROM read_text('/etc/hostname')", "/etc/hostname"),
        ("SELECT * FROM read_blob('/etc/hostname')", "/etc/hostname"),
        ("SELECT * FROM read_csv('/etc/*')", "/etc/*"),
        (read_secret.as_str(), secret_path.as_str()),
        (from_secret.as_str(), secret_path.as_str()),
        ("SELECT * FROM read_csv('~/../secret.csv')", "../secret.csv"),
        // DuckDB checks a relative path against ferry's working directory: refused too.
        ("SELECT * FROM read_csv('secret.csv')", "secret.csv"),
    ] {
        let message = error(&config, sql).await.to_string();
        assert!(
            message.contains("Permission Error") && message.contains(refused_path),
            "{sql}: {message}"
        );
        assert!(message.ends_with(&hint), "{sql}: {message}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urls_extensions_attach_and_writes_are_refused() {
    let folder = Folder::new();
    let config = folder.config();
    let message = error(
        &config,
        "SELECT * FROM read_parquet('https://example.com/x.parquet')",
    )
    .await
    .to_string();
    assert!(
        message.contains("https://example.com/x.parquet"),
        "{message}"
    );
    for (sql, first_word) in [
        ("INSTALL httpfs", "INSTALL"),
        ("LOAD httpfs", "LOAD"),
        ("ATTACH '/tmp/other.duckdb' AS other", "ATTACH"),
        ("COPY (SELECT 1) TO '/tmp/ferry-files-copy.csv'", "COPY"),
        ("SET enable_external_access = true", "SET"),
    ] {
        assert_eq!(
            error(&config, sql).await.to_string(),
            format!(
                "the model is not a single read-only query: it starts with `{first_word}`, but \
                 a model must be a read-only query starting with SELECT, WITH, VALUES, TABLE or \
                 FROM"
            )
        );
    }
    // DuckDB runs COPY inside a WITH clause as a query, and the folder is one it may write to.
    let written = folder.path().join("written.csv");
    let copy_in_cte = format!(
        "WITH w AS (COPY (SELECT 1 AS n) TO '{}') SELECT 1 AS n",
        written.display()
    );
    assert_eq!(
        error(&config, &copy_in_cte).await.to_string(),
        "the model tried to write (its WITH clause holds a COPY statement); a model must be a \
         read-only SELECT"
    );
    assert!(!written.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_leading_out_of_the_folder_is_refused_and_one_inside_is_read() {
    let outside = Folder::new();
    outside.write("COPY (SELECT 'secret' AS s) TO '{dir}/secret.csv' (HEADER);");
    let folder = Folder::new();
    folder.write("COPY (SELECT 1 AS n) TO '{dir}/numbers.csv' (HEADER);");
    std::os::unix::fs::symlink(
        folder.path().join("numbers.csv"),
        folder.path().join("same_numbers.csv"),
    )
    .unwrap();
    let leak = folder.path().join("leak.csv");
    std::os::unix::fs::symlink(outside.path().join("secret.csv"), &leak).unwrap();
    let config = folder.config();
    assert_eq!(
        rows(&config, "SELECT n FROM same_numbers").await,
        [vec![text("1")]]
    );
    // DuckDB resolves the link before it checks the path: the view of the link is refused,
    // and so is a pattern that matches it; the other files stay readable.
    let leak_in_folder = folder
        .path()
        .canonicalize()
        .unwrap()
        .join("leak.csv")
        .display()
        .to_string();
    for sql in [
        "SELECT * FROM leak".to_string(),
        format!("SELECT * FROM read_csv('{}')", leak.display()),
        "SELECT * FROM read_csv('~/*.csv')".to_string(),
    ] {
        let message = error(&config, &sql).await.to_string();
        assert!(
            message.contains("Permission Error") && message.contains("leak.csv"),
            "{sql}: {message}"
        );
        assert!(!message.contains("secret"), "{sql}: {message}");
    }
    assert!(error(&config, "SELECT * FROM leak")
        .await
        .to_string()
        .contains(&leak_in_folder));
    assert_eq!(
        rows(&config, "SELECT n FROM numbers").await,
        [vec![text("1")]]
    );
    test_connection(&config)
        .await
        .expect("the folder is usable");
}

// ---------------------------------------------------------------------------------------------
// Timeouts and cancellation
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_model_is_stopped_by_the_statement_timeout() {
    let folder = Folder::new();
    let options = QueryOptions {
        statement_timeout: Duration::from_millis(500),
        ..options()
    };
    let _models = models_lock().read().await;
    let started = Instant::now();
    let result = preview(
        &folder.config(),
        "SELECT sum(a.range * b.range) FROM range(100000) AS a, range(100000) AS b",
        10,
        &options,
    )
    .await;
    assert!(
        matches!(result, Err(SourceError::StatementTimeout { .. })),
        "{result:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// Linux keeps 15 bytes of a thread's name: `ferry-files-model`, and the DuckDB workers it
/// starts.
const FILES_MODEL_THREAD_NAME: &str = "ferry-files-mod";

fn files_model_threads() -> usize {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|task| std::fs::read_to_string(task.path().join("comm")).ok())
        .filter(|name| name.trim_end() == FILES_MODEL_THREAD_NAME)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_stream_stops_the_query() {
    let _alone = models_lock().write().await;
    let folder = Folder::new();
    let mut stream = query(
        &folder.config(),
        "SELECT sum(a.range * b.range) FROM range(100000) AS a, range(100000) AS b",
        &QueryOptions::default(),
    )
    .await
    .expect("query starts");
    assert!(files_model_threads() >= 1);
    let first_row = tokio::time::timeout(Duration::from_millis(500), stream.next_row()).await;
    assert!(first_row.is_err(), "the query should still be running");

    drop(stream);
    let deadline = Instant::now() + Duration::from_secs(5);
    while files_model_threads() > 0 {
        assert!(
            Instant::now() < deadline,
            "the files query still runs 5 s after its stream was dropped"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Folders and files that cannot be read
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn folders_that_cannot_be_read_are_named_with_the_fix() {
    let folder = Folder::new();
    folder.write("COPY (SELECT 1 AS n) TO '{dir}/numbers.csv' (HEADER);");
    let missing = folder.path().join("missing");
    let file = folder.path().join("numbers.csv");
    let check = |folders: Vec<PathBuf>| async move {
        test_connection(&SourceConfig::Files { folders })
            .await
            .map_err(|error| error.to_string())
    };
    assert_eq!(check(vec![folder.path()]).await, Ok(()));
    assert_eq!(
        check(vec![missing.clone()]).await,
        Err(format!(
            "the files connection cannot be used: there is no folder ferry can read at {}; check \
             the path, that it names a folder (not a file), and that the user ferry runs as may \
             read and enter it",
            missing.display()
        ))
    );
    assert_eq!(
        check(vec![file.clone()]).await,
        Err(format!(
            "the files connection cannot be used: there is no folder ferry can read at {}; check \
             the path, that it names a folder (not a file), and that the user ferry runs as may \
             read and enter it",
            file.display()
        ))
    );
    assert_eq!(
        check(vec![PathBuf::from("exports")]).await,
        Err(
            "the files connection cannot be used: `exports` is not an absolute path; give the \
             folder's full path (such as /data/exports): ferry's commands and its server may run \
             from different directories"
                .to_string()
        )
    );
    assert_eq!(
        check(vec![PathBuf::from("/")]).await,
        Err(
            "the files connection cannot be used: / is the root of the file system; name the \
             folder that holds the data files, so that a model cannot read every file on this \
             machine"
                .to_string()
        )
    );
    assert_eq!(
        check(vec![]).await,
        Err(
            "the files connection cannot be used: it names no folder; give the folder that \
             holds the CSV, Parquet or JSON files"
                .to_string()
        )
    );
    // A model fails the same way, before DuckDB starts.
    let config = SourceConfig::Files {
        folders: vec![missing.clone()],
    };
    assert!(matches!(
        error(&config, "SELECT 1").await,
        SourceError::FilesNotUsable { .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_file_fails_the_models_that_read_it_naming_the_file() {
    let folder = Folder::new();
    folder.write("COPY (SELECT 1 AS n) TO '{dir}/numbers.csv' (HEADER);");
    std::fs::write(folder.path().join("broken.parquet"), b"not a parquet file").unwrap();
    std::fs::write(folder.path().join("broken.json"), b"{\"a\": 1,,").unwrap();
    let config = folder.config();
    let dir = folder.path().canonicalize().unwrap();
    for (sql, file) in [
        ("SELECT * FROM broken", "broken.parquet"),
        ("SELECT * FROM read_json('~/broken.json')", "broken.json"),
    ] {
        let message = error(&config, sql).await.to_string();
        assert!(
            message.contains(&dir.join(file).display().to_string()),
            "{sql}: {message}"
        );
    }
    assert_eq!(
        rows(&config, "SELECT n FROM numbers").await,
        [vec![text("1")]]
    );
}

// ---------------------------------------------------------------------------------------------
// What the engine and the front ends use
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_describes_its_folders_and_files() {
    let folder = Folder::new();
    folder.write(
        "COPY (SELECT 1 AS n) TO '{dir}/a.csv' (HEADER);
         COPY (SELECT 1 AS n) TO '{dir}/b.parquet' (FORMAT parquet);
         COPY (SELECT 1 AS n) TO '{dir}/c.txt' (HEADER);",
    );
    assert_eq!(
        folder.config().describe(),
        format!("files in {} (2 data files)", folder.path().display())
    );
}

#[test]
fn readable_folders_are_resolved_through_links() {
    let folder = Folder::new();
    let real = folder.path().join("real");
    std::fs::create_dir(&real).unwrap();
    let link = folder.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    assert_eq!(
        files_readable_folders(&[link, real.clone()]).unwrap(),
        [real.canonicalize().unwrap()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_detection_in_the_warehouse_is_refused_for_files() {
    let folder = Folder::new();
    let message = warehouse_diff::prepare_schema(&folder.config(), "ferry")
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        message,
        "change detection in the warehouse: a files connection is read-only, so the warehouse \
         cannot keep the rows Stripe acknowledged; connect without --change-detection-schema \
         (ferry still sends Stripe only the rows that changed, comparing them in its workspace)"
    );
}
