//! Snowflake, through its SQL API v2 over ferry's HTTP stack (no driver, no Arrow): submit the
//! model, wait for it while Snowflake answers 202, then stream its result one partition at a
//! time into the row channel, so memory holds one partition and the channel's rows at most.
//!
//! Snowflake has no read-only transaction. A model is still checked to be one query
//! (`validate_model_sql`), the session accepts a single statement (`MULTI_STATEMENT_COUNT`),
//! and the documentation asks for a role that can only read; that role is the boundary.
//!
//! `client` speaks the API, `jwt` signs key-pair tokens, `decode` reads the JSON encodings.

mod client;
mod decode;
mod jwt;

use crate::{
    read_to_end, spawn_reader, Column, ColumnsSender, QueryOptions, RowBatcher, RowStream,
    SourceError, SqlFlavor, StreamMessage, ValidatedModelSql,
};
use client::{Progress, ResultSet, SnowflakeClient};
use decode::{column_for, decode_row, SnowflakeDecoder};
use ferry_core::Secret;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::debug;

/// A Snowflake account and how ferry signs in to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnowflakeConfig {
    /// The account identifier: `myorg-myaccount` (organization and account name), or an account
    /// locator with its region (`xy12345.us-east-2.aws`). The API is reached at
    /// `https://<account>.snowflakecomputing.com` unless `base_url` says otherwise.
    pub account: String,
    /// The user ferry signs in as (a service user with a key pair, an OAuth or a programmatic
    /// access token).
    pub user: String,
    /// The warehouse that runs the model.
    pub warehouse: String,
    /// The database and schema unqualified names in the model refer to; the user's defaults
    /// when not set.
    pub database: Option<String>,
    pub schema: Option<String>,
    /// The role the model runs as: give it SELECT only. The user's default role when not set.
    pub role: Option<String>,
    pub credential: SnowflakeCredential,
    /// Another address for the API (private connectivity, tests), e.g. `http://127.0.0.1:8080`.
    pub base_url: Option<String>,
}

/// How ferry proves who it is. Password sign-in is not offered: Snowflake is retiring it for
/// programmatic access.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnowflakeCredential {
    /// Key-pair authentication: the user's RSA private key as PKCS#8 PEM (`-----BEGIN PRIVATE
    /// KEY-----`, or `ENCRYPTED PRIVATE KEY` with its passphrase). ferry signs a short-lived
    /// JWT with it for each request.
    KeyPair {
        private_key_pem: Secret,
        passphrase: Option<Secret>,
    },
    /// An OAuth access token issued for the user.
    OAuthToken(Secret),
    /// A programmatic access token (PAT) of the user.
    ProgrammaticAccessToken(Secret),
}

impl SnowflakeConfig {
    /// `Snowflake account `myorg-myaccount`, user `FERRY`, warehouse `SYNC_WH``: no credential.
    pub fn describe(&self) -> String {
        format!(
            "Snowflake account `{}`, user `{}`, warehouse `{}`",
            self.account, self.user, self.warehouse
        )
    }

    /// Where the SQL API lives: `base_url`, or the account's own host (an account name's
    /// underscores become hyphens there, as Snowflake's URLs require).
    pub fn base_url(&self) -> String {
        match &self.base_url {
            Some(base_url) => base_url.trim_end_matches('/').to_string(),
            None => format!(
                "https://{}.snowflakecomputing.com",
                self.account.to_ascii_lowercase().replace('_', "-")
            ),
        }
    }
}

/// Signs in and runs `SELECT 1`.
pub(crate) async fn test_snowflake_connection(config: &SnowflakeConfig) -> Result<(), SourceError> {
    let model = crate::validate_model_sql("SELECT 1")?;
    let stream = start_snowflake_query(config, model, &QueryOptions::default()).await?;
    read_to_end(stream).await
}

/// Submits the model and returns once its columns are known; the rows follow through the
/// stream, fetched one partition at a time as the reader takes them.
pub(crate) async fn start_snowflake_query(
    config: &SnowflakeConfig,
    model: ValidatedModelSql,
    options: &QueryOptions,
) -> Result<RowStream, SourceError> {
    let client = SnowflakeClient::new(config)?;
    let options_for_reader = options.clone();
    spawn_reader("Snowflake", options, |columns_sender, rows_sender| {
        run_model_until_done_or_dropped(
            client,
            model,
            options_for_reader,
            columns_sender,
            rows_sender,
        )
    })
    .await
}

/// How long to wait between status requests while the statement runs: from a quarter second
/// up to five, with jitter, so a quick model is seen done quickly and a long one is not
/// asked about too often.
fn status_poll_delays() -> ferry_http::RetryPolicy {
    ferry_http::RetryPolicy {
        max_attempts: u32::MAX,
        base_delay: Duration::from_millis(250),
        max_delay: Duration::from_secs(5),
        max_total: Duration::MAX,
        transient_answer: None,
    }
}

/// How long past the statement timeout ferry waits for Snowflake's own 408 before it cancels
/// the statement itself.
const TIMEOUT_GRACE: Duration = Duration::from_secs(2);

/// Why reading stopped early.
enum Stop {
    /// The reader dropped the stream.
    ReaderGone,
    /// Snowflake or the network failed; the error is for the reader.
    Failed(SourceError),
}

/// Runs the model; if the reader goes away first (or a timeout gives up on it), asks
/// Snowflake to cancel the statement.
async fn run_model_until_done_or_dropped(
    client: SnowflakeClient,
    model: ValidatedModelSql,
    options: QueryOptions,
    columns_sender: ColumnsSender,
    rows_sender: RowBatcher,
) {
    // The handle, once Snowflake gave one and until the statement is known to be over.
    let running_handle: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let reader_watch = rows_sender.watch();
    let cancel_needed = tokio::select! {
        outcome = read_model(&client, &model, &options, columns_sender, rows_sender, &running_handle) => outcome,
        () = reader_watch.closed() => true,
    };
    let handle = running_handle.lock().ok().and_then(|slot| slot.clone());
    if let (true, Some(handle)) = (cancel_needed, handle) {
        debug!(handle = %handle, "Cancelling the Snowflake statement.");
        client.cancel(&handle).await;
    }
}

/// Sends the columns (or the setup error), then every row, then `Finished` or `Failed`.
/// Returns whether the statement should be cancelled (the reader left, or it timed out).
async fn read_model(
    client: &SnowflakeClient,
    model: &ValidatedModelSql,
    options: &QueryOptions,
    columns_sender: ColumnsSender,
    mut rows_sender: RowBatcher,
    running_handle: &Mutex<Option<String>>,
) -> bool {
    let remember = |handle: Option<&str>| {
        if let Ok(mut slot) = running_handle.lock() {
            *slot = handle.map(str::to_string);
        }
    };
    let first = match run_statement(client, model, options, &remember).await {
        Ok(first) => first,
        Err(error) => {
            let timed_out = matches!(error, SourceError::StatementTimeout { .. });
            let _ = columns_sender.send(Err(error));
            return timed_out;
        }
    };
    let handle = first.statement_handle.clone().unwrap_or_default();
    remember(Some(&handle));
    let row_types = first
        .result_set_meta_data
        .as_ref()
        .map(|meta| meta.row_type.as_slice())
        .unwrap_or_default();
    let described: Result<Vec<(Column, SnowflakeDecoder)>, SourceError> =
        row_types.iter().map(column_for).collect();
    let (columns, decoders): (Vec<Column>, Vec<SnowflakeDecoder>) = match described {
        Ok(described) => described.into_iter().unzip(),
        Err(error) => {
            let _ = columns_sender.send(Err(error));
            return false;
        }
    };
    if columns_sender.send(Ok(columns.clone())).is_err() {
        return true;
    }

    let partitions = first.partition_count();
    let mut rows_read: u64 = 0;
    let stream_partitions = async {
        let mut data = first.data;
        for partition in 0..partitions {
            if partition > 0 {
                let fetch = client.partition(&handle, partition, rows_read);
                data = if options.statement_timeout.is_zero() {
                    fetch.await
                } else {
                    tokio::time::timeout(options.statement_timeout, fetch)
                        .await
                        .unwrap_or(Err(SourceError::StatementTimeout {
                            timeout: options.statement_timeout,
                            setting: options.timeout_setting,
                            flavor: SqlFlavor::Snowflake,
                        }))
                }
                .map_err(Stop::Failed)?;
            }
            // Taken out of `data` one row at a time, so a partition's text is freed as its
            // rows go into the channel.
            for raw in std::mem::take(&mut data) {
                let row = decode_row(&columns, &decoders, raw).map_err(Stop::Failed)?;
                rows_sender.push(row).await.map_err(|_| Stop::ReaderGone)?;
                rows_read += 1;
            }
        }
        Ok::<(), Stop>(())
    };
    let outcome = stream_partitions.await;
    match outcome {
        Ok(()) => {
            remember(None);
            rows_sender.finish(StreamMessage::Finished).await;
            false
        }
        Err(Stop::ReaderGone) => true,
        Err(Stop::Failed(error)) => {
            rows_sender.finish(StreamMessage::Failed(error)).await;
            false
        }
    }
}

/// Submits the statement and waits until Snowflake has its first partition, polling while it
/// answers 202; past the timeout (plus a grace for Snowflake's own 408) gives up.
async fn run_statement(
    client: &SnowflakeClient,
    model: &ValidatedModelSql,
    options: &QueryOptions,
    remember: &impl Fn(Option<&str>),
) -> Result<ResultSet, SourceError> {
    let sql = model.statement();
    let timeout = (options.statement_timeout, options.timeout_setting);
    let started = Instant::now();
    let deadline = (!options.statement_timeout.is_zero())
        .then(|| started + options.statement_timeout + TIMEOUT_GRACE);
    let mut progress = client
        .submit(sql, options.statement_timeout, options.timeout_setting)
        .await?;
    let delays = status_poll_delays();
    let mut polls = 0;
    loop {
        let handle = match progress {
            Progress::Done(result) => return Ok(*result),
            Progress::Running { handle } => handle,
        };
        remember(Some(&handle));
        polls += 1;
        let delay = delays.delay_before_attempt(polls + 1, &mut rand::rng());
        if let Some(deadline) = deadline {
            if Instant::now() + delay >= deadline {
                tokio::time::sleep_until(deadline.into()).await;
                return Err(SourceError::StatementTimeout {
                    timeout: options.statement_timeout,
                    setting: options.timeout_setting,
                    flavor: SqlFlavor::Snowflake,
                });
            }
        }
        tokio::time::sleep(delay).await;
        progress = client.status(&handle, sql, timeout).await?;
    }
}
