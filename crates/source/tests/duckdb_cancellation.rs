//! Dropping a DuckDB row stream stops the query instead of letting it run to the end.
//!
//! It lives in its own test binary (its own process) because it watches the process's threads
//! by name: no other test may be running DuckDB models at the same time.

use ferry_source::{query, QueryOptions, SourceConfig};
use std::time::{Duration, Instant};

/// Linux truncates thread names to 15 bytes: this is `ferry-duckdb-model` (and the DuckDB
/// worker threads it starts, which inherit the name and end when its database closes).
const MODEL_THREAD_NAME: &str = "ferry-duckdb-mo";

fn model_threads_running() -> usize {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|task| std::fs::read_to_string(task.path().join("comm")).ok())
        .filter(|name| name.trim_end() == MODEL_THREAD_NAME)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_duckdb_stream_interrupts_the_query() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let path = directory.path().join("warehouse.duckdb");
    duckdb::Connection::open(&path)
        .and_then(|connection| connection.execute_batch("SELECT 1"))
        .expect("create the DuckDB file");
    let config = SourceConfig::DuckDb { path };

    // About 10^10 row pairs: minutes of work, far longer than the test waits.
    let mut stream = query(
        &config,
        "SELECT sum(a.range * b.range) FROM range(100000) AS a, range(100000) AS b",
        &QueryOptions::default(),
    )
    .await
    .expect("query starts");
    // DuckDB's own worker threads inherit the model thread's name, so there are several.
    assert!(model_threads_running() >= 1);
    // Let DuckDB get busy computing the first (and only) row.
    let first_row = tokio::time::timeout(Duration::from_millis(500), stream.next_row()).await;
    assert!(first_row.is_err(), "the query should still be running");

    drop(stream);
    let deadline = Instant::now() + Duration::from_secs(5);
    while model_threads_running() > 0 {
        assert!(
            Instant::now() < deadline,
            "the DuckDB query still runs 5 s after its stream was dropped"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
