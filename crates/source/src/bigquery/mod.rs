//! BigQuery: runs a model as a query job over the REST API v2 and streams its result a page at
//! a time.
//!
//! `jobs.query` starts the job (standard SQL, in the connection's location, timestamps as int64
//! microseconds, `JOB_CREATION_OPTIONAL` so a small result comes back in one round trip; a
//! `requestId` makes a retried call return the same job instead of starting another). While
//! `jobComplete` is false, `jobs.getQueryResults` is polled with a growing pause. Then the pages
//! are read one at a time by `pageToken`, each decoded and handed to the [`RowStream`]'s bounded
//! channel before the next is asked for, so memory holds one page whatever the result's size.
//! A dropped stream, or a job still running when the statement timeout passes, is cancelled
//! with `jobs.cancel`.
//!
//! Read-only is the credential's business on BigQuery (no read-only session exists): models
//! are checked by `validate_model_sql` like every source's, and ferry recommends a service
//! account with only BigQuery Data Viewer (on the datasets) and BigQuery Job User (on the
//! project).

mod auth;
mod client;
mod decode;

pub use auth::DEFAULT_TOKEN_ENDPOINT;

use crate::error::SqlPosition;
use crate::{
    read_to_end, spawn_reader, Column, ColumnsSender, QueryOptions, RowBatcher, RowStream,
    SourceError, SqlFlavor, StreamMessage, ValidatedModelSql,
};
use auth::{AuthError, TokenSource};
use client::{BigQueryClient, CallError, JobReference, QueryResults, LONGEST_SERVER_WAIT};
use decode::{decode_cell, decoder_for_field, standard_type_name, wrapped_value, FieldDecoder};
use ferry_core::{Secret, Value};
use std::time::Duration;
use tokio::time::Instant;
use tracing::debug;

/// BigQuery's API root.
pub const DEFAULT_API_BASE: &str = "https://bigquery.googleapis.com";

/// A BigQuery connection: where jobs run and who runs them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BigQueryConfig {
    /// The project query jobs run in and are billed to (`my-project`). Tables of other
    /// projects are read by their full name, `other-project.dataset.table`.
    pub project_id: String,
    /// Where the datasets the model reads live, and so where its jobs run: `US`, `EU`,
    /// `us-central1`. A job cannot read a dataset of another location.
    pub location: String,
    /// The dataset that unqualified table names in the model resolve to: `analytics`, or
    /// `other-project.analytics`.
    pub default_dataset: Option<String>,
    /// Refuse to run a model that would bill more bytes than this (BigQuery fails the job
    /// before it reads anything). `None` leaves the project's own limit.
    pub maximum_bytes_billed: Option<u64>,
    pub credential: BigQueryCredential,
    /// BigQuery's API root, [`DEFAULT_API_BASE`]; tests point it at an emulator.
    pub api_base: String,
    /// The OAuth 2.0 token endpoint; `None` for the key file's `token_uri`, else
    /// [`DEFAULT_TOKEN_ENDPOINT`]. Tests point it at a local server.
    pub token_endpoint: Option<String>,
}

/// Who the queries run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BigQueryCredential {
    /// A service account's JSON key file, as downloaded from IAM → Service accounts → Keys
    /// (`"type": "service_account"`, with its private key).
    ServiceAccountKey(Secret),
    /// Application default credentials: the file `GOOGLE_APPLICATION_CREDENTIALS` names (a
    /// service account key, or gcloud's `authorized_user`), else gcloud's own
    /// (`gcloud auth application-default login`), else the GCE/GKE metadata server (the
    /// instance's service account, or the workload identity of a GKE pod).
    ApplicationDefault,
}

impl BigQueryConfig {
    /// `BigQuery project `my-project` (EU)`, for logs and messages; holds no secret.
    pub fn describe(&self) -> String {
        format!("BigQuery project `{}` ({})", self.project_id, self.location)
    }
}

/// Runs `SELECT 1` as the connection's credential: checks the credential, the project, the
/// location and the right to run jobs there.
pub(crate) async fn test_bigquery_connection(config: &BigQueryConfig) -> Result<(), SourceError> {
    let model = crate::validate_model_sql("SELECT 1")?;
    let stream = start_bigquery_query(config, model, &QueryOptions::default()).await?;
    read_to_end(stream).await
}

/// Starts the model's job and returns once it is complete and its columns are known; the rows
/// follow through the stream.
pub(crate) async fn start_bigquery_query(
    config: &BigQueryConfig,
    model: ValidatedModelSql,
    options: &QueryOptions,
) -> Result<RowStream, SourceError> {
    let session = Session::open(config)?;
    let options_for_reader = options.clone();
    spawn_reader("BigQuery", options, |columns_sender, rows_sender| {
        read_model(
            session,
            model,
            options_for_reader,
            columns_sender,
            rows_sender,
        )
    })
    .await
}

/// A client plus what its errors need to say.
struct Session {
    client: BigQueryClient,
    config: BigQueryConfig,
    /// `BigQuery project `p` (EU) as service account x@p.iam.gserviceaccount.com`.
    target: String,
}

impl Session {
    fn open(config: &BigQueryConfig) -> Result<Session, SourceError> {
        let tokens =
            TokenSource::resolve(&config.credential, config.token_endpoint.as_deref(), None)
                .map_err(|error| auth_error(config, config.describe(), error))?;
        let target = format!("{} as {}", config.describe(), tokens.describe());
        let client = BigQueryClient::new(config, tokens).map_err(|reason| {
            SourceError::ConnectionFailed {
                target: target.clone(),
                reason,
                fix: "correct the connection's api_base (`--api-base`)".to_string(),
            }
        })?;
        Ok(Session {
            client,
            config: config.clone(),
            target,
        })
    }

    /// The `jobs.query` request for the model.
    fn query_request(
        &self,
        sql: &str,
        page_size: usize,
        wait: Duration,
        request_id: &str,
    ) -> serde_json::Value {
        let mut body = serde_json::json!({
            "query": sql,
            "useLegacySql": false,
            "maxResults": page_size,
            "timeoutMs": wait.as_millis() as u64,
            "formatOptions": {"useInt64Timestamp": true},
            // A small result comes back without a job; a larger or slower one still gets a
            // job (jobCreationReason LARGE_RESULTS or LONG_RUNNING) to page through or cancel.
            "jobCreationMode": "JOB_CREATION_OPTIONAL",
            "requestId": request_id,
        });
        // Without a location BigQuery guesses it from the tables the query names (US for
        // none); a job in the wrong one cannot see the datasets.
        if !self.config.location.is_empty() {
            body["location"] = serde_json::Value::String(self.config.location.clone());
        }
        if let Some(dataset) = &self.config.default_dataset {
            let (project_id, dataset_id) = match dataset.rsplit_once('.') {
                Some((project_id, dataset_id)) => (project_id, dataset_id),
                None => (self.config.project_id.as_str(), dataset.as_str()),
            };
            body["defaultDataset"] =
                serde_json::json!({"projectId": project_id, "datasetId": dataset_id});
        }
        if let Some(bytes) = self.config.maximum_bytes_billed {
            // An int64, which the API's JSON carries as a string.
            body["maximumBytesBilled"] = serde_json::Value::String(bytes.to_string());
        }
        body
    }

    /// Puts a failed call in words for the model being read.
    fn error(&self, error: CallError, sql: &str, rows_read: u64) -> SourceError {
        match error {
            CallError::Auth(error) => auth_error(&self.config, self.target.clone(), error),
            CallError::Unreachable(reason) if rows_read == 0 => SourceError::ConnectionFailed {
                target: self.target.clone(),
                reason,
                fix: reach_fix(&self.config),
            },
            CallError::Unreachable(reason) => SourceError::ConnectionLost { rows_read, reason },
            CallError::Unexpected(reason) => SourceError::Warehouse { reason },
            CallError::Api {
                status,
                reason,
                message,
            } => match (status, reason.as_str()) {
                (401, _) => SourceError::AuthenticationFailed {
                    target: self.target.clone(),
                    reason: format!("BigQuery refused the access token: {message}"),
                    fix: "check the credential (a service account key that was deleted, or a \
                          metadata server of another project)"
                        .to_string(),
                },
                (403, "accessDenied") | (403, "") | (403, "PERMISSION_DENIED") => {
                    SourceError::AuthenticationFailed {
                        target: self.target.clone(),
                        reason: message,
                        fix: roles_fix(&self.config),
                    }
                }
                (_, "rateLimitExceeded" | "quotaExceeded" | "backendError") => {
                    SourceError::Warehouse {
                        reason: format!("BigQuery: {message} ({reason})"),
                    }
                }
                (_, "bytesBilledLimitExceeded") => SourceError::Sql {
                    message: format!(
                        "{message}; raise the connection's maximum bytes billed or make the \
                         model read less"
                    ),
                    position: None,
                },
                (_, "notFound") if message.contains("Job") => SourceError::Warehouse {
                    reason: format!(
                        "{message}; the job is gone (BigQuery keeps results a day), run the \
                         model again"
                    ),
                },
                // invalidQuery, notFound (a dataset or table), invalid, … : the model's own
                // problem, in BigQuery's words.
                _ => {
                    let (message, position) = split_position(&message, sql);
                    SourceError::Sql { message, position }
                }
            },
        }
    }

    /// Cancels the job, logging (not failing) when it cannot: the reader has left already.
    async fn cancel(&self, job: &JobReference) {
        debug!(job = %job.job_id, "Cancelling the BigQuery job.");
        if let Err(error) = self.client.cancel(job).await {
            debug!(job = %job.job_id, error = ?error, "Could not cancel the BigQuery job.");
        }
    }
}

/// Why the producer stopped early.
enum Stop {
    /// The reader dropped the stream; nobody is left to tell.
    ReaderGone,
    Failed(SourceError),
}

/// Runs the job, sends the columns (or the error) through `columns_sender`, then every row and
/// `Finished` or `Failed` through `rows`.
async fn read_model(
    session: Session,
    model: ValidatedModelSql,
    options: QueryOptions,
    columns_sender: ColumnsSender,
    mut rows: RowBatcher,
) {
    let page_size = options.batch_size.max(1);
    let (first_page, job) = match run_job(&session, &model, &options, page_size, &rows).await {
        Ok(done) => done,
        Err(Stop::ReaderGone) => return,
        Err(Stop::Failed(error)) => {
            let _ = columns_sender.send(Err(error));
            return;
        }
    };
    let schema = first_page.schema.clone().unwrap_or_default();
    let mut columns = Vec::with_capacity(schema.fields.len());
    let mut decoders = Vec::with_capacity(schema.fields.len());
    for field in &schema.fields {
        let type_name = standard_type_name(field);
        match decoder_for_field(field) {
            Ok(decoder) => decoders.push(decoder),
            Err(_) => {
                let _ = columns_sender.send(Err(SourceError::UnsupportedColumnType {
                    column: field.name.clone(),
                    type_name,
                    flavor: SqlFlavor::BigQuery,
                }));
                return;
            }
        }
        columns.push(Column {
            name: field.name.clone(),
            type_name,
        });
    }
    if columns_sender.send(Ok(columns.clone())).is_err() {
        return;
    }
    let outcome = stream_pages(
        &session,
        &model,
        &options,
        page_size,
        first_page,
        job.as_ref(),
        &columns,
        &decoders,
        &mut rows,
    )
    .await;
    match outcome {
        Ok(()) => rows.finish(StreamMessage::Finished).await,
        Err(Stop::ReaderGone) => {}
        Err(Stop::Failed(error)) => rows.finish(StreamMessage::Failed(error)).await,
    }
}

/// Starts the job and waits for it to complete, within the statement timeout; returns the
/// first page (with the schema) and the job, if BigQuery made one. A job still running when the
/// timeout passes or the reader leaves is cancelled.
async fn run_job(
    session: &Session,
    model: &ValidatedModelSql,
    options: &QueryOptions,
    page_size: usize,
    rows: &RowBatcher,
) -> Result<(QueryResults, Option<JobReference>), Stop> {
    let sql = model.statement();
    let started = Instant::now();
    let timeout = options.statement_timeout;
    let deadline = (!timeout.is_zero()).then(|| started + timeout);
    let timed_out = || {
        Stop::Failed(SourceError::StatementTimeout {
            timeout,
            setting: options.timeout_setting,
            flavor: SqlFlavor::BigQuery,
        })
    };
    let wait = |now: Instant| match deadline {
        Some(deadline) => deadline
            .saturating_duration_since(now)
            .min(LONGEST_SERVER_WAIT),
        None => LONGEST_SERVER_WAIT,
    };
    let request_id = request_id();
    let body = session.query_request(sql, page_size, wait(started), &request_id);
    // Not raced against the reader or the deadline: the call answers within `wait`, and only
    // its answer names the job to cancel.
    let mut response = session
        .client
        .jobs_query(&body)
        .await
        .map_err(|error| Stop::Failed(session.error(error, sql, 0)))?;
    let job = response.job_reference.clone();
    let reader_watch = rows.watch();
    let mut pause = Duration::from_millis(100);
    while !response.job_complete {
        let Some(job) = job.as_ref() else {
            return Err(Stop::Failed(SourceError::Warehouse {
                reason: "BigQuery neither finished the query nor named a job to wait for".into(),
            }));
        };
        if reader_watch.is_closed() {
            session.cancel(job).await;
            return Err(Stop::ReaderGone);
        }
        let now = Instant::now();
        if deadline.is_some_and(|deadline| now >= deadline) {
            session.cancel(job).await;
            return Err(timed_out());
        }
        // getQueryResults itself waits on BigQuery's side; the pause matters for an answer
        // that came back at once (a server that does not wait).
        let poll = async {
            tokio::time::sleep(pause).await;
            session
                .client
                .get_query_results(job, None, page_size, wait(Instant::now()))
                .await
        };
        let until_deadline = async {
            match deadline {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            polled = poll => {
                response = polled.map_err(|error| Stop::Failed(session.error(error, sql, 0)))?;
            }
            () = until_deadline => {
                session.cancel(job).await;
                return Err(timed_out());
            }
            () = reader_watch.closed() => {
                session.cancel(job).await;
                return Err(Stop::ReaderGone);
            }
        }
        pause = (pause * 2).min(Duration::from_secs(2));
    }
    debug!(
        job = job
            .as_ref()
            .map(|job| job.job_id.as_str())
            .unwrap_or("(none)"),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "BigQuery job complete."
    );
    Ok((response, job))
}

/// Sends the rows of `page`, then of each following page, one page in memory at a time. Each
/// page fetch is bounded by the statement timeout; waiting for the reader is not.
#[allow(clippy::too_many_arguments)]
async fn stream_pages(
    session: &Session,
    model: &ValidatedModelSql,
    options: &QueryOptions,
    page_size: usize,
    mut page: QueryResults,
    job: Option<&JobReference>,
    columns: &[Column],
    decoders: &[FieldDecoder],
    rows: &mut RowBatcher,
) -> Result<(), Stop> {
    let sql = model.statement();
    let mut rows_read: u64 = 0;
    loop {
        for row in std::mem::take(&mut page.rows) {
            let values = decode_row(&row.f, columns, decoders).map_err(Stop::Failed)?;
            rows.push(values).await.map_err(|_| Stop::ReaderGone)?;
            rows_read += 1;
        }
        let Some(token) = page.page_token.take() else {
            return Ok(());
        };
        let Some(job) = job else {
            return Err(Stop::Failed(SourceError::Warehouse {
                reason: "BigQuery sent a page token without a job to page through".into(),
            }));
        };
        let reader_watch = rows.watch();
        let fetch =
            session
                .client
                .get_query_results(job, Some(&token), page_size, LONGEST_SERVER_WAIT);
        let step_limit = async {
            if options.statement_timeout.is_zero() {
                std::future::pending().await
            } else {
                tokio::time::sleep(options.statement_timeout).await
            }
        };
        page = tokio::select! {
            fetched = fetch => fetched
                .map_err(|error| Stop::Failed(session.error(error, sql, rows_read)))?,
            () = step_limit => {
                return Err(Stop::Failed(SourceError::StatementTimeout {
                    timeout: options.statement_timeout,
                    setting: options.timeout_setting,
                    flavor: SqlFlavor::BigQuery,
                }));
            }
            () = reader_watch.closed() => return Err(Stop::ReaderGone),
        };
        if !page.job_complete {
            // The job finished before the first page; a page of a finished job is complete.
            return Err(Stop::Failed(SourceError::Warehouse {
                reason: "BigQuery answered a result page as not complete".into(),
            }));
        }
    }
}

fn decode_row(
    cells: &[serde_json::Value],
    columns: &[Column],
    decoders: &[FieldDecoder],
) -> Result<Vec<Value>, SourceError> {
    if cells.len() != decoders.len() {
        return Err(SourceError::Warehouse {
            reason: format!(
                "BigQuery sent a row of {} cells for {} columns",
                cells.len(),
                decoders.len()
            ),
        });
    }
    let mut values = Vec::with_capacity(decoders.len());
    for ((cell, decoder), column) in cells.iter().zip(decoders).zip(columns) {
        let value = wrapped_value(cell)
            .and_then(|value| decode_cell(decoder, value))
            .map_err(|reason| SourceError::UnreadableValue {
                column: column.name.clone(),
                type_name: column.type_name.clone(),
                reason,
                flavor: SqlFlavor::BigQuery,
            })?;
        values.push(value);
    }
    Ok(values)
}

/// No token: Google's token endpoint or metadata server could not be reached, or refused the
/// credential. `error.reason` already says what is wrong with the credential itself; the fix
/// adds what the account needs once it signs in.
fn auth_error(config: &BigQueryConfig, target: String, error: AuthError) -> SourceError {
    if error.unreachable {
        SourceError::ConnectionFailed {
            target,
            reason: error.reason,
            fix: reach_fix(config),
        }
    } else {
        SourceError::AuthenticationFailed {
            target,
            reason: error.reason,
            fix: format!(
                "ferry signs in with the connection's service account key (or, without one, \
                 application default credentials); {}",
                roles_fix(config)
            ),
        }
    }
}

/// What a service account needs to run a model: BigQuery's own two roles.
fn roles_fix(config: &BigQueryConfig) -> String {
    format!(
        "give the account the roles BigQuery Job User on project `{}` and BigQuery Data Viewer \
         on the datasets the model reads",
        config.project_id
    )
}

/// What to check when BigQuery's API (or Google's token endpoint) cannot be reached.
fn reach_fix(config: &BigQueryConfig) -> String {
    format!(
        "check that this machine can reach {} and Google's token endpoint over HTTPS (a proxy \
         or firewall in the way?), and the connection's api_base if it sets one",
        config.api_base
    )
}

/// BigQuery ends a message that points into the SQL with `at [line:column]`; the position is
/// kept apart so that the message reads like every other source's.
fn split_position(message: &str, sql: &str) -> (String, Option<SqlPosition>) {
    let parsed = message.strip_suffix(']').and_then(|rest| {
        let (before, position) = rest.rsplit_once(" at [")?;
        let (line, column) = position.split_once(':')?;
        Some((
            before,
            line.parse::<usize>().ok()?,
            column.parse::<usize>().ok()?,
        ))
    });
    match parsed {
        Some((before, line, column)) if line >= 1 && line <= sql.lines().count().max(1) => {
            (before.to_string(), Some(SqlPosition { line, column }))
        }
        _ => (message.to_string(), None),
    }
}

/// A fresh `requestId`: BigQuery answers a retried `jobs.query` with the same id from the job
/// the first attempt started, instead of starting a second one.
fn request_id() -> String {
    use rand::Rng as _;
    let bytes: [u8; 16] = rand::rng().random();
    let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("ferry-{hex}")
}
