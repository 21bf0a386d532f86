//! Warehouses ferry reads models from (DuckDB, PostgreSQL, Redshift, MySQL/MariaDB, Snowflake,
//! BigQuery, files): run a model's SQL
//! read-only and stream its rows as typed ferry [`Value`]s.
//!
//! Every backend follows the same shape: validate the SQL ([`model_sql`]), open a read-only
//! session, learn the columns, then produce rows on a task or thread of its own and send them
//! through a bounded channel to a [`RowStream`]. The channel bound is what keeps a million-row
//! model from being held in memory, and dropping the stream cancels the query.
//!
//! This crate knows nothing about syncs, mappings or the state store: it turns SQL into rows.

mod bigquery;
mod duckdb_source;
mod duckdb_write;
mod error;
mod files_source;
pub mod model_sql;
mod mysql_decode;
mod mysql_source;
mod postgres_decode;
mod postgres_source;
mod snowflake;
mod text_forms;
pub mod warehouse_diff;

pub use bigquery::{
    BigQueryConfig, BigQueryCredential, DEFAULT_API_BASE as BIGQUERY_API_BASE,
    DEFAULT_TOKEN_ENDPOINT as BIGQUERY_TOKEN_ENDPOINT,
};
pub use duckdb_write::duckdb_execute;
pub use error::{human_duration, SourceError, SqlFlavor, SqlPosition, TimeoutSetting};
pub use files_source::files_readable_folders;
pub use model_sql::{validate_model_sql, ValidatedModelSql};
pub use snowflake::{SnowflakeConfig, SnowflakeCredential};

use duckdb::InterruptHandle;
use ferry_core::{Secret, Value};
use ferry_postgres_connect::Defaults;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Where a model's data lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceConfig {
    /// A DuckDB database file, opened read-only; it must already exist.
    DuckDb { path: PathBuf },
    /// A PostgreSQL connection string (`postgres://user:password@host/db` or
    /// `host=… user=… dbname=…`). It may hold a password, so it is a [`Secret`].
    Postgres { url: Secret },
    /// An Amazon Redshift connection string: PostgreSQL's, with Redshift's defaults (port
    /// 5439, `sslmode=verify-full`) for what it leaves out.
    Redshift { url: Secret },
    /// CSV, Parquet and JSON files in these folders (absolute paths), read by an in-memory
    /// DuckDB that may read nothing else; each data file directly in a folder is a view named
    /// after it (`customers.csv` → `customers`). Read-only: no change detection in it.
    Files { folders: Vec<PathBuf> },
    /// A MySQL or MariaDB URL, `mysql://user:password@host:port/database`, with TLS as
    /// `ssl-mode` (DISABLED, PREFERRED (the default), REQUIRED, VERIFY_CA, VERIFY_IDENTITY)
    /// and `ssl-ca` say. It holds a password, so it is a [`Secret`].
    Mysql { url: Secret },
    /// A Snowflake account, read through its SQL API.
    Snowflake(SnowflakeConfig),
    /// A BigQuery project, read through its REST API as a service account or with application
    /// default credentials.
    BigQuery(BigQueryConfig),
}

impl SourceConfig {
    /// The warehouse in words for logs and messages, without any password:
    /// `DuckDB file ./warehouse.duckdb`, `PostgreSQL at db:5432, database `app`, user `ferry``.
    pub fn describe(&self) -> String {
        match self {
            SourceConfig::DuckDb { path } => duckdb_source::describe_duckdb_target(path),
            SourceConfig::Postgres { url } => {
                postgres_source::describe_postgres_target(url, &Defaults::POSTGRES)
            }
            SourceConfig::Redshift { url } => format!(
                "Redshift {}",
                postgres_source::describe_postgres_target(url, &Defaults::REDSHIFT)
            ),
            SourceConfig::Files { folders } => files_source::describe_files_target(folders),
            SourceConfig::Mysql { url } => mysql_source::describe_mysql_target(url),
            SourceConfig::Snowflake(config) => config.describe(),
            SourceConfig::BigQuery(config) => config.describe(),
        }
    }
}

/// How long a run's query may run by default (`statement_timeout_seconds`).
pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// How a model runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryOptions {
    /// The longest the warehouse may work on one step of the model (running it, or fetching
    /// the next batch) before it is cancelled. Time spent waiting for a slow reader does not
    /// count. Zero means no limit.
    pub statement_timeout: Duration,
    /// The connection setting `statement_timeout` comes from, named by a timeout error.
    pub timeout_setting: TimeoutSetting,
    /// Rows fetched per round trip, and how many rows may wait in memory for the reader.
    pub batch_size: usize,
}

impl Default for QueryOptions {
    fn default() -> Self {
        QueryOptions {
            statement_timeout: DEFAULT_STATEMENT_TIMEOUT,
            timeout_setting: TimeoutSetting::Statement,
            batch_size: 1000,
        }
    }
}

/// One column of a model's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    /// The warehouse's own name for the type: `int4`, `numeric`, `_text` on PostgreSQL;
    /// `INTEGER`, `DECIMAL(18,2)`, `VARCHAR[]` on DuckDB.
    pub type_name: String,
}

/// Checks that the warehouse can be reached and read (`SELECT 1`); errors say what was tried,
/// without the password.
pub async fn test_connection(config: &SourceConfig) -> Result<(), SourceError> {
    match config {
        SourceConfig::DuckDb { path } => duckdb_source::test_duckdb_connection(path).await,
        SourceConfig::Postgres { url } => {
            postgres_source::test_postgres_connection(url, &Defaults::POSTGRES).await
        }
        SourceConfig::Redshift { url } => {
            postgres_source::test_postgres_connection(url, &Defaults::REDSHIFT).await
        }
        SourceConfig::Files { folders } => files_source::test_files_connection(folders).await,
        SourceConfig::Mysql { url } => mysql_source::test_mysql_connection(url).await,
        SourceConfig::Snowflake(config) => snowflake::test_snowflake_connection(config).await,
        SourceConfig::BigQuery(config) => bigquery::test_bigquery_connection(config).await,
    }
}

/// Starts the model query and returns once the columns are known. A model that is not a single
/// read-only query is refused before anything runs.
pub async fn query(
    config: &SourceConfig,
    sql: &str,
    options: &QueryOptions,
) -> Result<RowStream, SourceError> {
    let model = validate_model_sql(sql)?;
    start_query(config, model, options).await
}

pub(crate) async fn start_query(
    config: &SourceConfig,
    model: ValidatedModelSql,
    options: &QueryOptions,
) -> Result<RowStream, SourceError> {
    match config {
        SourceConfig::DuckDb { path } => {
            duckdb_source::start_duckdb_query(path, model, options).await
        }
        SourceConfig::Postgres { url } => {
            postgres_source::start_postgres_query(url, &Defaults::POSTGRES, model, options).await
        }
        SourceConfig::Redshift { url } => {
            postgres_source::start_postgres_query(url, &Defaults::REDSHIFT, model, options).await
        }
        SourceConfig::Files { folders } => {
            files_source::start_files_query(folders, model, options).await
        }
        SourceConfig::Mysql { url } => mysql_source::start_mysql_query(url, model, options).await,
        SourceConfig::Snowflake(config) => {
            snowflake::start_snowflake_query(config, model, options).await
        }
        SourceConfig::BigQuery(config) => {
            bigquery::start_bigquery_query(config, model, options).await
        }
    }
}

/// How long a preview's query may run by default (`preview_timeout_seconds`): a person is
/// waiting for it.
pub const PREVIEW_STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

/// The first `limit` rows, for `ferry model show` and the UI. Only about `limit` rows are
/// fetched; the rest of the query is cancelled, and so is a query that runs longer than
/// `options.statement_timeout` (the connection's preview timeout when a person waits for it).
/// `options.batch_size` is set from `limit`.
pub async fn preview(
    config: &SourceConfig,
    sql: &str,
    limit: usize,
    options: &QueryOptions,
) -> Result<(Vec<Column>, Vec<Vec<Value>>), SourceError> {
    let options = QueryOptions {
        batch_size: limit.clamp(1, QueryOptions::default().batch_size),
        ..options.clone()
    };
    let mut stream = query(config, sql, &options).await?;
    let mut rows = Vec::with_capacity(limit.min(options.batch_size));
    while rows.len() < limit {
        match stream.next_row().await {
            Some(row) => rows.push(row?),
            None => break,
        }
    }
    Ok((stream.columns().to_vec(), rows))
}

/// Rows handed from a backend's producer to its [`RowStream`] in one message, at most. Handing
/// them over one by one woke the reader's thread for every row: a fifth of a preview's CPU time
/// went to thread wake-ups.
const ROWS_PER_MESSAGE: usize = 256;

/// The channel between a backend's producer and its [`RowStream`], and how many rows go in one
/// message: together at most `options.batch_size` rows wait in the channel.
pub(crate) fn row_channel(
    options: &QueryOptions,
) -> (RowBatcher, mpsc::Receiver<StreamMessage>, usize) {
    let rows_per_message = options.batch_size.clamp(1, ROWS_PER_MESSAGE);
    let messages = (options.batch_size / rows_per_message).max(1);
    let (sender, receiver) = mpsc::channel(messages);
    (
        RowBatcher {
            sender,
            rows: Vec::with_capacity(rows_per_message),
            rows_per_message,
        },
        receiver,
        rows_per_message,
    )
}

/// Where a backend's producer sends the model's columns, or the error that stopped it first.
pub(crate) type ColumnsSender = oneshot::Sender<Result<Vec<Column>, SourceError>>;

/// Starts a backend's producer as a task of its own and returns once it sent the columns: the
/// shape PostgreSQL, MySQL, Snowflake and BigQuery share (DuckDB and files run on a thread,
/// since DuckDB blocks). `warehouse` names the backend in the error of a producer that stopped
/// without a word.
pub(crate) async fn spawn_reader<Producer>(
    warehouse: &str,
    options: &QueryOptions,
    producer: impl FnOnce(ColumnsSender, RowBatcher) -> Producer,
) -> Result<RowStream, SourceError>
where
    Producer: std::future::Future + Send + 'static,
    Producer::Output: Send + 'static,
{
    let (columns_sender, columns_receiver) = oneshot::channel();
    let (rows_sender, messages_receiver, rows_per_message) = row_channel(options);
    // In the caller's span, so that the reader's log lines name the run and sync too.
    tokio::spawn(tracing::Instrument::in_current_span(producer(
        columns_sender,
        rows_sender,
    )));
    let columns = columns_receiver
        .await
        .map_err(|_| SourceError::Warehouse {
            reason: format!("the {warehouse} reader stopped before the model's columns were known"),
        })??;
    Ok(RowStream::new(
        columns,
        messages_receiver,
        rows_per_message,
        None,
    ))
}

/// Reads a stream to its end, for connection tests that run `SELECT 1` as a model.
pub(crate) async fn read_to_end(mut stream: RowStream) -> Result<(), SourceError> {
    while let Some(row) = stream.next_row().await {
        row?;
    }
    Ok(())
}

/// The producer's end of a [`row_channel`]: collects rows into messages.
pub(crate) struct RowBatcher {
    sender: mpsc::Sender<StreamMessage>,
    rows: Vec<Vec<Value>>,
    rows_per_message: usize,
}

/// The reader dropped the stream: the producer stops.
pub(crate) struct ReaderGone;

impl RowBatcher {
    /// Adds a row; a full message goes out (waiting while the channel is full).
    pub(crate) async fn push(&mut self, row: Vec<Value>) -> Result<(), ReaderGone> {
        self.rows.push(row);
        if self.rows.len() >= self.rows_per_message {
            self.send_rows().await?;
        }
        Ok(())
    }

    /// [`RowBatcher::push`] from a thread outside the async runtime.
    pub(crate) fn blocking_push(&mut self, row: Vec<Value>) -> Result<(), ReaderGone> {
        self.rows.push(row);
        if self.rows.len() >= self.rows_per_message {
            self.blocking_send_rows()?;
        }
        Ok(())
    }

    /// Sends the rows collected so far, then `last` (`Finished` or `Failed`).
    pub(crate) async fn finish(mut self, last: StreamMessage) {
        if self.send_rows().await.is_ok() {
            let _ = self.sender.send(last).await;
        }
    }

    /// [`RowBatcher::finish`] from a thread outside the async runtime.
    pub(crate) fn blocking_finish(mut self, last: StreamMessage) {
        if self.blocking_send_rows().is_ok() {
            let _ = self.sender.blocking_send(last);
        }
    }

    /// A sender that only watches for the reader to drop the stream (`closed()`).
    pub(crate) fn watch(&self) -> mpsc::Sender<StreamMessage> {
        self.sender.clone()
    }

    async fn send_rows(&mut self) -> Result<(), ReaderGone> {
        if self.rows.is_empty() {
            return Ok(());
        }
        let rows = std::mem::replace(&mut self.rows, Vec::with_capacity(self.rows_per_message));
        self.sender
            .send(StreamMessage::Rows(rows))
            .await
            .map_err(|_| ReaderGone)
    }

    fn blocking_send_rows(&mut self) -> Result<(), ReaderGone> {
        if self.rows.is_empty() {
            return Ok(());
        }
        let rows = std::mem::replace(&mut self.rows, Vec::with_capacity(self.rows_per_message));
        self.sender
            .blocking_send(StreamMessage::Rows(rows))
            .map_err(|_| ReaderGone)
    }
}

/// The rows of a running model, in order. Dropping it cancels the query.
pub struct RowStream {
    columns: Vec<Column>,
    messages: mpsc::Receiver<StreamMessage>,
    /// The rows of the last message not read yet.
    pending: std::vec::IntoIter<Vec<Value>>,
    rows_per_message: usize,
    rows_received: u64,
    ended: bool,
    /// DuckDB only: interrupts the query on drop, since its thread may be busy inside DuckDB
    /// rather than waiting on the channel. (PostgreSQL's task notices the closed channel and
    /// cancels the statement on the server.)
    duckdb_interrupt: Option<Arc<InterruptHandle>>,
}

impl RowStream {
    pub(crate) fn new(
        columns: Vec<Column>,
        messages: mpsc::Receiver<StreamMessage>,
        rows_per_message: usize,
        duckdb_interrupt: Option<Arc<InterruptHandle>>,
    ) -> RowStream {
        RowStream {
            columns,
            messages,
            pending: Vec::new().into_iter(),
            rows_per_message,
            rows_received: 0,
            ended: false,
            duckdb_interrupt,
        }
    }

    /// The result's columns, known before the first row.
    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    /// The next row, `None` after the last one. After an error the stream is over.
    pub async fn next_row(&mut self) -> Option<Result<Vec<Value>, SourceError>> {
        loop {
            if let Some(values) = self.pending.next() {
                self.rows_received += 1;
                return Some(Ok(values));
            }
            if self.ended {
                return None;
            }
            match self.messages.recv().await {
                Some(StreamMessage::Rows(rows)) => self.pending = rows.into_iter(),
                Some(StreamMessage::Finished) => {
                    self.ended = true;
                    return None;
                }
                Some(StreamMessage::Failed(error)) => {
                    self.ended = true;
                    return Some(Err(error));
                }
                // The producer always ends with `Finished` or `Failed`; a channel that closes
                // without either means it died, and the rows so far may not be all of them.
                None => {
                    self.ended = true;
                    return Some(Err(SourceError::Warehouse {
                        reason: format!(
                            "the warehouse reader stopped unexpectedly after {} rows",
                            self.rows_received
                        ),
                    }));
                }
            }
        }
    }

    /// How many rows wait in the channel, at most (messages are full but for the last). Never
    /// more than [`QueryOptions::batch_size`]: the producer waits for the reader beyond that.
    pub fn buffered_rows(&self) -> usize {
        self.messages.len() * self.rows_per_message
    }
}

impl Drop for RowStream {
    fn drop(&mut self) {
        if !self.ended {
            if let Some(interrupt) = &self.duckdb_interrupt {
                interrupt.interrupt();
            }
        }
    }
}

/// What a backend's producer sends to its [`RowStream`].
pub(crate) enum StreamMessage {
    Rows(Vec<Vec<Value>>),
    Finished,
    Failed(SourceError),
}
