//! PostgreSQL: runs a model in a `READ ONLY` transaction with a `statement_timeout`, and streams
//! its rows through a portal, `batch_size` rows per round trip.
//!
//! Each query gets its own connection, owned by a spawned task that sends rows over a bounded
//! channel; when the reader drops the stream the task cancels the running statement on the
//! server (a dropped socket alone would leave a long query running until it tried to send).

use crate::error::SqlPosition;
use crate::postgres_decode::{decode_value, decoder_for_type, PostgresDecoder, RawPostgresValue};
use crate::{
    spawn_reader, Column, ColumnsSender, QueryOptions, RowBatcher, RowStream, SourceError,
    SqlFlavor, StreamMessage, TimeoutSetting, ValidatedModelSql,
};
use ferry_core::{Secret, Value};
use ferry_postgres_connect::{
    ConnectError, ConnectionStringError, Defaults, PostgresTarget, TlsConnector,
};
use std::error::Error as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_postgres::config::Host;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Row};
use tracing::debug;

/// How long to wait for a server that does not answer, unless the connection string says.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the PostgreSQL handshake (TLS, authentication, startup) may take once connected.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects and runs `SELECT 1`.
pub(crate) async fn test_postgres_connection(
    url: &Secret,
    defaults: &Defaults,
) -> Result<(), SourceError> {
    let connection = PostgresConnection::open_with(url, defaults).await?;
    connection
        .client
        .simple_query("SELECT 1")
        .await
        .map_err(|error| {
            connection.model_error(
                &error,
                "SELECT 1",
                Duration::ZERO,
                TimeoutSetting::Statement,
                0,
            )
        })?;
    Ok(())
}

/// Connects, opens the read-only transaction, prepares the model and returns once its columns
/// are known; the rows follow through the stream.
pub(crate) async fn start_postgres_query(
    url: &Secret,
    defaults: &Defaults,
    model: ValidatedModelSql,
    options: &QueryOptions,
) -> Result<RowStream, SourceError> {
    let connection = PostgresConnection::open_with(url, defaults).await?;
    let options_for_reader = options.clone();
    spawn_reader("PostgreSQL", options, |columns_sender, rows_sender| {
        run_model_until_done_or_dropped(
            connection,
            model,
            options_for_reader,
            columns_sender,
            rows_sender,
        )
    })
    .await
}

/// Describes a connection string for messages and logs, without its password.
pub(crate) fn describe_postgres_target(url: &Secret, defaults: &Defaults) -> String {
    match PostgresTarget::parse_with(url.expose(), defaults) {
        Ok(target) => describe_target(target.config()),
        Err(_) => "PostgreSQL (connection string not valid)".to_string(),
    }
}

/// Reads the connection string, libpq's TLS settings included.
pub(crate) fn parse_target(
    url: &Secret,
    defaults: &Defaults,
) -> Result<PostgresTarget, SourceError> {
    PostgresTarget::parse_with(url.expose(), defaults).map_err(|error| {
        SourceError::InvalidConnectionString {
            reason: match &error {
                ConnectionStringError::Driver(driver_error) => describe_driver_error(driver_error),
                other => other.to_string(),
            },
        }
    })
}

/// A client plus what error messages need to know about it.
pub(crate) struct PostgresConnection {
    pub(crate) client: Client,
    /// How a cancel request reaches the server: the same way as the connection.
    tls: TlsConnector,
    password: Option<String>,
    /// The reason the connection task ended with an error, if it did: it says more than the
    /// client's own "connection closed" (e.g. "terminating connection due to administrator
    /// command").
    connection_failure: Arc<Mutex<Option<String>>>,
}

impl PostgresConnection {
    pub(crate) async fn open(url: &Secret) -> Result<PostgresConnection, SourceError> {
        PostgresConnection::open_with(url, &Defaults::POSTGRES).await
    }

    /// [`PostgresConnection::open`] with another server's defaults (Redshift's).
    pub(crate) async fn open_with(
        url: &Secret,
        defaults: &Defaults,
    ) -> Result<PostgresConnection, SourceError> {
        let mut target = parse_target(url, defaults)?;
        if target.config().get_connect_timeout().is_none() {
            target.config_mut().connect_timeout(DEFAULT_CONNECT_TIMEOUT);
        }
        let config = target.config();
        let description = describe_target(config);
        let password = config
            .get_password()
            .map(|password| String::from_utf8_lossy(password).into_owned());
        // `connect_timeout` covers reaching the server; a server that accepts the connection
        // and then never answers (a wrong port, a proxy) is cut off by the handshake limit.
        let handshake_limit = config
            .get_connect_timeout()
            .copied()
            .unwrap_or(DEFAULT_CONNECT_TIMEOUT)
            + HANDSHAKE_TIMEOUT;
        let tls = target
            .tls_connector()
            .map_err(|error| connect_error(&error.into(), &description, password.as_deref()))?;
        let (client, connection) = tokio::time::timeout(handshake_limit, target.connect(&tls))
            .await
            .map_err(|_| {
                SourceError::unreachable_by_connection_string(
                    description.clone(),
                    format!(
                        "the server accepted the connection but did not answer within {}",
                        crate::human_duration(handshake_limit)
                    ),
                )
            })?
            .map_err(|error| connect_error(&error, &description, password.as_deref()))?;
        let connection_failure = Arc::new(Mutex::new(None));
        let failure_slot = Arc::clone(&connection_failure);
        tokio::spawn(async move {
            let mut connection = connection;
            // Polled by hand rather than awaited so the failure is recorded while the
            // connection still exists: the client only sees "closed" once it is dropped, and by
            // then the reason must be in the slot.
            while let Some(message) =
                futures::future::poll_fn(|context| connection.poll_message(context)).await
            {
                if let Err(error) = message {
                    let reason = database_message_or_description(&error);
                    debug!(reason = %reason, "PostgreSQL connection ended with an error.");
                    if let Ok(mut slot) = failure_slot.lock() {
                        *slot = Some(reason);
                    }
                    break;
                }
            }
        });
        Ok(PostgresConnection {
            client,
            tls,
            password,
            connection_failure,
        })
    }

    /// Turns a driver error during the model into the `SourceError` a person should read.
    pub(crate) fn model_error(
        &self,
        error: &tokio_postgres::Error,
        sql: &str,
        statement_timeout: Duration,
        timeout_setting: TimeoutSetting,
        rows_read: u64,
    ) -> SourceError {
        let source_error = classify_model_error(
            error,
            sql,
            (statement_timeout, timeout_setting),
            rows_read,
            self.connection_failure_reason(),
        );
        redact_source_error(source_error, self.password.as_deref())
    }

    fn connection_failure_reason(&self) -> Option<String> {
        self.connection_failure
            .lock()
            .ok()
            .and_then(|slot| slot.clone())
    }
}

/// Runs the model; if the reader goes away first, cancels the statement on the server.
async fn run_model_until_done_or_dropped(
    mut connection: PostgresConnection,
    model: ValidatedModelSql,
    options: QueryOptions,
    columns_sender: ColumnsSender,
    rows_sender: RowBatcher,
) {
    let cancel_token = connection.client.cancel_token();
    let tls = connection.tls.clone();
    let reader_watch = rows_sender.watch();
    tokio::select! {
        () = read_model(&mut connection, &model, &options, columns_sender, rows_sender) => {}
        () = reader_watch.closed() => {
            debug!("Model stream dropped; cancelling the PostgreSQL statement.");
            if let Err(error) = cancel_token.cancel_query(tls).await {
                debug!(error = %describe_driver_error(&error), "Could not cancel the PostgreSQL statement.");
            }
        }
    }
}

/// Sends the columns (or the setup error) through `columns_sender`, then every row, then
/// `Finished` or `Failed` through `rows_sender`.
async fn read_model(
    connection: &mut PostgresConnection,
    model: &ValidatedModelSql,
    options: &QueryOptions,
    columns_sender: ColumnsSender,
    mut rows_sender: RowBatcher,
) {
    let sql = model.statement();
    let timeout = options.statement_timeout;
    let timeout_setting = options.timeout_setting;
    // Errors need `connection` while the transaction borrows its client, so classify them from
    // parts cloned up front.
    let password = connection.password.clone();
    let connection_failure = Arc::clone(&connection.connection_failure);
    let model_error = |error: &tokio_postgres::Error, rows_read: u64| {
        let failure = connection_failure.lock().ok().and_then(|slot| slot.clone());
        let source_error =
            classify_model_error(error, sql, (timeout, timeout_setting), rows_read, failure);
        redact_source_error(source_error, password.as_deref())
    };

    let setup = async {
        let transaction = connection
            .client
            .build_transaction()
            .read_only(true)
            .start()
            .await
            .map_err(|error| model_error(&error, 0))?;
        // SET LOCAL lasts until the transaction ends. PostgreSQL restarts the timer for every
        // portal fetch, so the limit applies to the database's work, not to a slow reader.
        transaction
            .batch_execute(&format!(
                "SET LOCAL statement_timeout = {}",
                timeout.as_millis()
            ))
            .await
            .map_err(|error| model_error(&error, 0))?;
        let statement = transaction
            .prepare(sql)
            .await
            .map_err(|error| model_error(&error, 0))?;
        let mut columns = Vec::new();
        let mut decoders = Vec::new();
        for column in statement.columns() {
            let type_name = column.type_().name().to_string();
            let decoder = decoder_for_type(column.type_()).ok_or_else(|| {
                SourceError::UnsupportedColumnType {
                    column: column.name().to_string(),
                    type_name: type_name.clone(),
                    flavor: SqlFlavor::Postgres,
                }
            })?;
            columns.push(Column {
                name: column.name().to_string(),
                type_name,
            });
            decoders.push(decoder);
        }
        Ok::<_, SourceError>((transaction, statement, columns, decoders))
    };
    let (transaction, statement, columns, decoders) = match setup.await {
        Ok(prepared) => prepared,
        Err(error) => {
            let _ = columns_sender.send(Err(error));
            return;
        }
    };
    if columns_sender.send(Ok(columns.clone())).is_err() {
        return;
    }

    let batch_size = i32::try_from(options.batch_size.max(1)).unwrap_or(i32::MAX);
    let mut rows_read: u64 = 0;
    let outcome = async {
        let portal = transaction
            .bind(&statement, &[])
            .await
            .map_err(|error| model_error(&error, rows_read))?;
        loop {
            let batch = transaction
                .query_portal(&portal, batch_size)
                .await
                .map_err(|error| model_error(&error, rows_read))?;
            // A short batch means the portal is exhausted.
            let portal_exhausted = batch.len() < batch_size as usize;
            for row in batch {
                let values = decode_row(&row, &columns, &decoders)?;
                if rows_sender.push(values).await.is_err() {
                    return Ok(RowLoopEnd::ReaderGone);
                }
                rows_read += 1;
            }
            if portal_exhausted {
                return Ok(RowLoopEnd::AllRowsSent);
            }
        }
    }
    .await;
    let final_message = match outcome {
        Ok(RowLoopEnd::AllRowsSent) => StreamMessage::Finished,
        Ok(RowLoopEnd::ReaderGone) => return,
        Err(error) => StreamMessage::Failed(error),
    };
    rows_sender.finish(final_message).await;
    // The transaction only read, so ending it by rollback (on drop) loses nothing.
    drop(transaction);
}

enum RowLoopEnd {
    AllRowsSent,
    /// The stream was dropped; nobody is left to tell.
    ReaderGone,
}

fn decode_row(
    row: &Row,
    columns: &[Column],
    decoders: &[PostgresDecoder],
) -> Result<Vec<Value>, SourceError> {
    let mut values = Vec::with_capacity(decoders.len());
    for (index, (decoder, column)) in decoders.iter().zip(columns).enumerate() {
        let unreadable = |reason: String| SourceError::UnreadableValue {
            column: column.name.clone(),
            type_name: column.type_name.clone(),
            reason,
            flavor: SqlFlavor::Postgres,
        };
        let raw: RawPostgresValue<'_> = row
            .try_get(index)
            .map_err(|error| unreadable(describe_driver_error(&error)))?;
        values.push(match raw.0 {
            None => Value::Null,
            Some(bytes) => decode_value(decoder, bytes).map_err(unreadable)?,
        });
    }
    Ok(values)
}

fn classify_model_error(
    error: &tokio_postgres::Error,
    sql: &str,
    (statement_timeout, timeout_setting): (Duration, TimeoutSetting),
    rows_read: u64,
    connection_failure: Option<String>,
) -> SourceError {
    if let Some(database_error) = error.as_db_error() {
        let code = database_error.code();
        let message = database_error.message().to_string();
        if *code == SqlState::READ_ONLY_SQL_TRANSACTION {
            return SourceError::ReadOnlyViolation { message };
        }
        if *code == SqlState::QUERY_CANCELED && message.contains("statement timeout") {
            return SourceError::StatementTimeout {
                timeout: statement_timeout,
                setting: timeout_setting,
                flavor: SqlFlavor::Postgres,
            };
        }
        // Class 57P (operator intervention: terminated, shutdown) and 08 (connection
        // exception) mean the session is gone, not that the SQL is wrong.
        if code.code().starts_with("57P") || code.code().starts_with("08") {
            return SourceError::ConnectionLost {
                rows_read,
                reason: message,
            };
        }
        let mut full_message = message;
        if let Some(detail) = database_error.detail() {
            full_message.push_str(&format!("; {detail}"));
        }
        if let Some(hint) = database_error.hint() {
            full_message.push_str(&format!("; hint: {hint}"));
        }
        let position = match database_error.position() {
            Some(tokio_postgres::error::ErrorPosition::Original(character_number)) => Some(
                SqlPosition::from_character_number(sql, *character_number as usize),
            ),
            _ => None,
        };
        return SourceError::Sql {
            message: full_message,
            position,
        };
    }
    let lost_connection = error.is_closed()
        || error
            .source()
            .is_some_and(|source| source.downcast_ref::<std::io::Error>().is_some());
    if lost_connection {
        return SourceError::ConnectionLost {
            rows_read,
            reason: connection_failure.unwrap_or_else(|| describe_driver_error(error)),
        };
    }
    SourceError::Warehouse {
        reason: describe_driver_error(error),
    }
}

fn connect_error(error: &ConnectError, target: &str, password: Option<&str>) -> SourceError {
    let error = match error {
        ConnectError::Tls(tls_error) => {
            let source_error = SourceError::TlsFailed {
                target: target.to_string(),
                reason: tls_error.to_string(),
            };
            return redact_source_error(source_error, password);
        }
        ConnectError::Postgres(error) => error,
    };
    let reason = database_message_or_description(error);
    // Class 28 is "invalid authorization specification": bad password, unknown role, a
    // pg_hba.conf rule. The driver's own "authentication error" covers a missing password.
    let refused_login = error
        .code()
        .is_some_and(|code| code.code().starts_with("28"))
        || error.to_string().starts_with("authentication error");
    let source_error = if refused_login {
        SourceError::login_refused_by_connection_string(target, reason)
    } else {
        SourceError::unreachable_by_connection_string(target, reason)
    };
    redact_source_error(source_error, password)
}

/// `PostgreSQL at db.example.com:5432, database `app`, user `ferry``.
fn describe_target(config: &tokio_postgres::Config) -> String {
    let ports = config.get_ports();
    let port_for = |index: usize| {
        ports
            .get(index)
            .or_else(|| ports.first())
            .copied()
            .unwrap_or(5432)
    };
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(index, host)| match host {
            Host::Tcp(name) => format!("{name}:{}", port_for(index)),
            Host::Unix(directory) => format!(
                "socket {}/.s.PGSQL.{}",
                directory.display(),
                port_for(index)
            ),
        })
        .collect();
    let hosts = if hosts.is_empty() {
        "(no host given)".to_string()
    } else {
        hosts.join(", ")
    };
    let mut description = format!("PostgreSQL at {hosts}");
    if let Some(database) = config.get_dbname() {
        description.push_str(&format!(", database `{database}`"));
    }
    if let Some(user) = config.get_user() {
        description.push_str(&format!(", user `{user}`"));
    }
    description
}

/// The server's own words for a database error, else the driver's description.
fn database_message_or_description(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(database_error) => database_error.message().to_string(),
        None => describe_driver_error(error),
    }
}

/// The driver's message with its causes: tokio-postgres' own `Display` is only the outer
/// kind ("db error", "error connecting to server"), the useful part is in the sources.
fn describe_driver_error(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![error.to_string()];
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !parts.iter().any(|part| part.contains(&text)) {
            parts.push(text);
        }
        source = cause.source();
    }
    parts.join(": ")
}

/// Removes the password from every text field of an error, in case a server or driver message
/// ever echoes it.
fn redact_source_error(error: SourceError, password: Option<&str>) -> SourceError {
    let Some(password) = password.filter(|password| !password.is_empty()) else {
        return error;
    };
    error.with_text_scrubbed(|text| text.replace(password, "…"))
}
