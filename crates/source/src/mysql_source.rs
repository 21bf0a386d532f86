//! MySQL and MariaDB: runs a model in a `READ ONLY` transaction, the session pinned to UTC and
//! utf8mb4, with the server's own statement time limit, and streams its rows unbuffered
//! through `mysql_async`'s row stream.
//!
//! Each query gets its own connection, owned by a spawned task that sends rows over a bounded
//! channel. MySQL sends a result without waiting to be asked (there is no portal to fetch
//! from), so the bound works through TCP: while the channel is full the task stops reading and
//! the server blocks on its socket. When the reader drops the stream, the task kills the
//! connection from a second one (`KILL CONNECTION`): closing the socket alone would leave a
//! long query running on the server until it next tried to send.
//!
//! The model runs as a prepared statement: the binary protocol keeps a DOUBLE's every bit (the
//! text protocol prints it), and a prepared statement is always exactly one statement, whatever
//! MySQL's own SQL syntax (`#` comments, backslash escapes) makes of the model's text.
//!
//! The URL is `mysql://user:password@host:port/database`, with the TLS settings of MySQL's own
//! clients: `ssl-mode=DISABLED|PREFERRED|REQUIRED|VERIFY_CA|VERIFY_IDENTITY` (PREFERRED when
//! absent) and `ssl-ca=/path/ca.pem`. They are taken out before `mysql_async` reads the rest,
//! since it spells TLS differently and has no PREFERRED.

use crate::mysql_decode::{decode_value, decoder_for_column, type_name, MysqlDecoder};
use crate::{
    spawn_reader, Column, ColumnsSender, QueryOptions, RowBatcher, RowStream, SourceError,
    SqlFlavor, StreamMessage, TimeoutSetting, ValidatedModelSql,
};
use ferry_core::{Secret, Value};
use mysql_async::prelude::Queryable as _;
use mysql_async::{Conn, DriverError, IoError, Opts, OptsBuilder, SslOpts};
use std::path::PathBuf;
use std::time::Duration;
use tracing::debug;

/// How long reaching the server, TLS and the login may take together.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// How long the server waits for ferry to read before it drops the connection
/// (`net_write_timeout`, 60 s by default). A stream whose reader pauses (a slow sync writing to
/// disk) must not be cut for that; a reader gone for an hour is gone.
const NET_WRITE_TIMEOUT_SECONDS: u32 = 3600;

/// The URL parameters of MySQL's own clients that ferry reads itself.
const SSL_MODE_PARAMETER: &str = "ssl-mode";
const SSL_CA_PARAMETER: &str = "ssl-ca";

/// `mysql_async`'s own TLS parameters: refused, so that one URL never says two things.
const DRIVER_TLS_PARAMETERS: [&str; 4] = [
    "require_ssl",
    "verify_ca",
    "verify_identity",
    "built_in_roots",
];

/// Connects and runs `SELECT 1`.
pub(crate) async fn test_mysql_connection(url: &Secret) -> Result<(), SourceError> {
    let target = MysqlTarget::parse(url)?;
    let mut connection = target.connect().await?;
    let outcome = connection
        .query_drop("SELECT 1")
        .await
        .map_err(|error| target.model_error(error, (Duration::ZERO, TimeoutSetting::Statement), 0));
    let _ = connection.disconnect().await;
    outcome
}

/// Connects, sets the session up, starts the model and returns once its columns are known; the
/// rows follow through the stream.
pub(crate) async fn start_mysql_query(
    url: &Secret,
    model: ValidatedModelSql,
    options: &QueryOptions,
) -> Result<RowStream, SourceError> {
    let target = MysqlTarget::parse(url)?;
    let connection = target.connect().await?;
    let options_for_reader = options.clone();
    spawn_reader("MySQL", options, |columns_sender, rows_sender| {
        run_model_until_done_or_dropped(
            target,
            connection,
            model,
            options_for_reader,
            columns_sender,
            rows_sender,
        )
    })
    .await
}

/// `MySQL at db.example.com:3306, database `app`, user `ferry``, without the password.
pub(crate) fn describe_mysql_target(url: &Secret) -> String {
    match MysqlTarget::parse(url) {
        Ok(target) => target.description,
        Err(_) => "MySQL (connection URL not valid)".to_string(),
    }
}

/// How TLS is used, as MySQL's clients spell it (`--ssl-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SslMode {
    /// Never.
    Disabled,
    /// When the server offers it, without checking its certificate; else in the clear.
    Preferred,
    /// Always, without checking the certificate (but see `ssl-ca`).
    Required,
    /// Always, the certificate signed by a trusted CA (`ssl-ca`, else the public roots). For
    /// now the host name is checked too (see `connect_error`).
    VerifyCa,
    /// As VerifyCa, and the certificate names the host of the URL.
    VerifyIdentity,
}

impl SslMode {
    fn parse(text: &str) -> Result<SslMode, SourceError> {
        match text.to_ascii_uppercase().as_str() {
            "DISABLED" => Ok(SslMode::Disabled),
            "PREFERRED" => Ok(SslMode::Preferred),
            "REQUIRED" => Ok(SslMode::Required),
            "VERIFY_CA" => Ok(SslMode::VerifyCa),
            "VERIFY_IDENTITY" => Ok(SslMode::VerifyIdentity),
            _ => Err(SourceError::InvalidMysqlUrl {
                reason: format!(
                    "`ssl-mode={text}` is not a TLS mode; write one of DISABLED, PREFERRED, \
                     REQUIRED, VERIFY_CA, VERIFY_IDENTITY"
                ),
            }),
        }
    }
}

/// A parsed URL plus what connecting and error messages need to know about it.
struct MysqlTarget {
    /// The driver's options, TLS not set yet (see [`MysqlTarget::options`]).
    options: Opts,
    ssl_mode: SslMode,
    certificate_authority: Option<PathBuf>,
    description: String,
    /// The password as given and as percent-decoded, to scrub from any message.
    password_forms: Vec<String>,
}

impl MysqlTarget {
    fn parse(url: &Secret) -> Result<MysqlTarget, SourceError> {
        let invalid = |reason: String| SourceError::InvalidMysqlUrl { reason };
        let mut parsed = url::Url::parse(url.expose()).map_err(|error| {
            invalid(format!(
                "{error} (write mysql://user:password@host:port/database)"
            ))
        })?;
        if parsed.scheme() != "mysql" {
            return Err(invalid(format!(
                "it starts with `{}://`; write mysql://user:password@host:port/database (for \
                 MariaDB too)",
                parsed.scheme()
            )));
        }
        // As written (percent-encoded) and as the driver decodes it, below.
        let mut password_forms: Vec<String> = parsed
            .password()
            .filter(|password| !password.is_empty())
            .map(str::to_string)
            .into_iter()
            .collect();

        let mut ssl_mode = SslMode::Preferred;
        let mut certificate_authority = None;
        let mut passed_on = Vec::new();
        for (key, value) in parsed.query_pairs() {
            if key == SSL_MODE_PARAMETER {
                ssl_mode = SslMode::parse(&value)?;
            } else if key == SSL_CA_PARAMETER {
                certificate_authority = Some(PathBuf::from(value.as_ref()));
            } else if DRIVER_TLS_PARAMETERS.contains(&key.as_ref()) {
                return Err(invalid(format!(
                    "`{key}` is not how ferry sets TLS; use `ssl-mode` \
                     (DISABLED, PREFERRED, REQUIRED, VERIFY_CA, VERIFY_IDENTITY) and `ssl-ca`"
                )));
            } else {
                passed_on.push((key.into_owned(), value.into_owned()));
            }
        }
        if passed_on.is_empty() {
            parsed.set_query(None);
        } else {
            parsed.query_pairs_mut().clear().extend_pairs(passed_on);
        }
        let options = Opts::from_url(parsed.as_str())
            .map_err(|error| invalid(redact(error.to_string(), &password_forms)))?;
        if let Some(decoded) = options.pass().filter(|pass| !pass.is_empty()) {
            if !password_forms.iter().any(|form| form == decoded) {
                password_forms.push(decoded.to_string());
            }
        }
        let options = OptsBuilder::from_opts(options)
            // mysql_async moves a connection to 127.0.0.1 onto the server's unix socket; ferry
            // keeps the transport the URL names, so that its TLS settings mean what they say.
            .prefer_socket(false)
            .into();
        Ok(MysqlTarget {
            description: describe(&options),
            options,
            ssl_mode,
            certificate_authority,
            password_forms,
        })
    }

    /// The driver's options with TLS as `ssl_mode` asks (`with_tls` false: in the clear).
    fn options(&self, with_tls: bool) -> Opts {
        let builder = OptsBuilder::from_opts(self.options.clone());
        if !with_tls {
            return builder.ssl_opts(None::<SslOpts>).into();
        }
        let mut tls = SslOpts::default();
        // ssl-ca: trust that CA alone, as MySQL's clients do (and, as they do, check the
        // certificate against it even under REQUIRED).
        if let Some(path) = &self.certificate_authority {
            tls = tls
                .with_root_certs(vec![path.clone().into()])
                .with_disable_built_in_roots(true);
        }
        let check_signer = match self.ssl_mode {
            SslMode::VerifyCa | SslMode::VerifyIdentity => true,
            SslMode::Required => self.certificate_authority.is_some(),
            SslMode::Disabled | SslMode::Preferred => false,
        };
        tls = tls
            .with_danger_accept_invalid_certs(!check_signer)
            .with_danger_skip_domain_validation(self.ssl_mode != SslMode::VerifyIdentity);
        builder.ssl_opts(tls).into()
    }

    /// Opens a connection as the URL says, TLS per `ssl-mode`.
    async fn connect(&self) -> Result<Conn, SourceError> {
        if let Some(path) = &self.certificate_authority {
            if let Err(error) = std::fs::read(path) {
                return Err(SourceError::TlsFailed {
                    target: self.description.clone(),
                    reason: format!(
                        "cannot read the CA certificate `ssl-ca={}`: {error}; give the path of a \
                         PEM file that ferry can read",
                        path.display()
                    ),
                });
            }
        }
        match self.ssl_mode {
            SslMode::Disabled => self.connect_with(false).await,
            SslMode::Preferred => match self.connect_with(true).await {
                // The server offers no TLS: PREFERRED goes on in the clear, as MySQL's do.
                Err(ConnectFailure::ServerWithoutTls) => self.connect_with(false).await,
                other => other,
            },
            SslMode::Required | SslMode::VerifyCa | SslMode::VerifyIdentity => {
                self.connect_with(true).await
            }
        }
        .map_err(|failure| match failure {
            ConnectFailure::ServerWithoutTls => SourceError::TlsFailed {
                target: self.description.clone(),
                reason: "the server does not offer TLS; turn TLS on in the server (its \
                         ssl_cert and ssl_key settings) or set `ssl-mode=PREFERRED` or \
                         `ssl-mode=DISABLED` in the URL"
                    .to_string(),
            },
            ConnectFailure::Error(error) => error,
        })
    }

    async fn connect_with(&self, with_tls: bool) -> Result<Conn, ConnectFailure> {
        let attempt = tokio::time::timeout(CONNECT_TIMEOUT, Conn::new(self.options(with_tls)));
        match attempt.await {
            Err(_) => Err(ConnectFailure::Error(
                SourceError::unreachable_by_connection_string(
                    self.description.clone(),
                    format!(
                        "no answer within {}",
                        crate::human_duration(CONNECT_TIMEOUT)
                    ),
                ),
            )),
            Ok(Ok(connection)) => Ok(connection),
            Ok(Err(mysql_async::Error::Driver(DriverError::NoClientSslFlagFromServer))) => {
                Err(ConnectFailure::ServerWithoutTls)
            }
            Ok(Err(error)) => Err(ConnectFailure::Error(self.connect_error(error, with_tls))),
        }
    }

    fn connect_error(&self, error: mysql_async::Error, with_tls: bool) -> SourceError {
        let target = self.description.clone();
        let tls_hint = match self.ssl_mode {
            SslMode::VerifyIdentity => {
                "check that `ssl-ca` names the CA that signed the server's certificate and that \
                 the certificate names the URL's host"
            }
            _ => "check that `ssl-ca` names the CA that signed the server's certificate",
        };
        let source_error = match error {
            mysql_async::Error::Server(server_error) => {
                let reason = server_error.message.clone();
                if is_refused_login(server_error.code) {
                    SourceError::login_refused_by_connection_string(target, reason)
                } else {
                    SourceError::unreachable_by_connection_string(target, reason)
                }
            }
            mysql_async::Error::Io(IoError::Tls(tls_error)) => SourceError::TlsFailed {
                target,
                reason: format!("{tls_error}; {tls_hint}"),
            },
            // The TLS handshake's own failures (a certificate refused) reach mysql_async as
            // I/O errors of kind InvalidData, rustls' error inside.
            mysql_async::Error::Io(IoError::Io(io_error))
                if with_tls && io_error.kind() == std::io::ErrorKind::InvalidData =>
            {
                let reason = io_error.to_string();
                // mysql_async 0.37 cannot leave the name out of the check: it recognizes a name
                // mismatch by rustls' old wording (its issue #404, fixed after 0.37.1), so
                // VERIFY_CA (and REQUIRED with ssl-ca) check the host name as well, for now.
                let hint = if reason.contains("not valid for name")
                    && self.ssl_mode != SslMode::VerifyIdentity
                {
                    "the certificate does not name the URL's host, and ferry's MySQL driver checks \
                     the name under VERIFY_CA too; connect by a name the certificate holds, or \
                     use `ssl-mode=REQUIRED` without `ssl-ca` to encrypt without any check"
                } else {
                    tls_hint
                };
                SourceError::TlsFailed {
                    target,
                    reason: format!("{reason}; {hint}"),
                }
            }
            mysql_async::Error::Io(IoError::Io(io_error)) => {
                SourceError::unreachable_by_connection_string(target, io_error.to_string())
            }
            mysql_async::Error::Url(url_error) => SourceError::InvalidMysqlUrl {
                reason: url_error.to_string(),
            },
            other => {
                SourceError::unreachable_by_connection_string(target, describe_driver_error(&other))
            }
        };
        redact_source_error(source_error, &self.password_forms)
    }

    /// Turns a driver error during the model into the `SourceError` a person should read.
    fn model_error(
        &self,
        error: mysql_async::Error,
        (statement_timeout, timeout_setting): (Duration, TimeoutSetting),
        rows_read: u64,
    ) -> SourceError {
        let source_error = match error {
            mysql_async::Error::Server(server_error) => match server_error.code {
                ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION => SourceError::ReadOnlyViolation {
                    message: server_error.message,
                },
                MARIADB_ER_STATEMENT_TIMEOUT | MYSQL_ER_QUERY_TIMEOUT => {
                    SourceError::StatementTimeout {
                        timeout: statement_timeout,
                        setting: timeout_setting,
                        flavor: SqlFlavor::Mysql,
                    }
                }
                // Killed by an operator, the server shutting down: the session is gone, the
                // SQL is not at fault.
                ER_CONNECTION_KILLED | ER_SERVER_SHUTDOWN | ER_QUERY_INTERRUPTED => {
                    SourceError::ConnectionLost {
                        rows_read,
                        reason: server_error.message,
                    }
                }
                ER_NO_SUCH_TABLE => SourceError::Sql {
                    message: format!(
                        "{}; check the table's name, and that it is in the connection URL's \
                         database or named with its own (`other_database.table`)",
                        server_error.message
                    ),
                    position: None,
                },
                _ => SourceError::Sql {
                    message: server_error.message,
                    position: None,
                },
            },
            // MariaDB closes a killed connection without a word: the driver only sees the
            // stream end in the middle of a result.
            mysql_async::Error::Io(io_error) => SourceError::ConnectionLost {
                rows_read,
                reason: format!(
                    "the server closed the connection or the network failed ({io_error})"
                ),
            },
            mysql_async::Error::Driver(DriverError::ConnectionClosed) => {
                SourceError::ConnectionLost {
                    rows_read,
                    reason: "the server closed the connection".to_string(),
                }
            }
            other => SourceError::Warehouse {
                reason: describe_driver_error(&other),
            },
        };
        redact_source_error(source_error, &self.password_forms)
    }

    /// Ends the connection `connection_id` from a new connection: the way to stop a statement
    /// the server is still working on. A user may always kill its own connections.
    async fn kill_connection(&self, connection_id: u32) {
        let outcome = async {
            let mut killer = self.connect().await.map_err(|error| error.to_string())?;
            let killed = killer
                .query_drop(format!("KILL CONNECTION {connection_id}"))
                .await
                .map_err(|error| describe_driver_error(&error));
            let _ = killer.disconnect().await;
            killed
        };
        if let Err(reason) = outcome.await {
            debug!(connection_id, reason = %reason, "Could not kill the MySQL connection.");
        }
    }
}

/// A read-write session for ferry's own bookkeeping tables (change detection in the warehouse,
/// `warehouse_diff`): the URL's server, TLS and user, in utf8mb4 and UTC, outside any read-only
/// transaction. Models never run in it.
pub(crate) struct MysqlBookkeeping {
    target: MysqlTarget,
    pub(crate) connection: Conn,
}

impl MysqlBookkeeping {
    pub(crate) async fn open(url: &Secret) -> Result<MysqlBookkeeping, SourceError> {
        let target = MysqlTarget::parse(url)?;
        let mut connection = target.connect().await?;
        let set_up = connection
            .query_drop("SET NAMES utf8mb4, time_zone = '+00:00'")
            .await;
        let session = MysqlBookkeeping { target, connection };
        match set_up {
            Ok(()) => Ok(session),
            Err(error) => Err(session.error(error)),
        }
    }

    /// A driver error in words, without the password.
    pub(crate) fn error(&self, error: mysql_async::Error) -> SourceError {
        self.target
            .model_error(error, (Duration::ZERO, TimeoutSetting::Statement), 0)
    }

    pub(crate) async fn close(self) {
        let _ = self.connection.disconnect().await;
    }
}

enum ConnectFailure {
    ServerWithoutTls,
    Error(SourceError),
}

// Server error codes (MySQL's and MariaDB's documented error lists).
const ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION: u16 = 1792;
/// MariaDB: `max_statement_time` exceeded.
const MARIADB_ER_STATEMENT_TIMEOUT: u16 = 1969;
/// MySQL: `max_execution_time` exceeded.
const MYSQL_ER_QUERY_TIMEOUT: u16 = 3024;
const ER_CONNECTION_KILLED: u16 = 1927;
const ER_SERVER_SHUTDOWN: u16 = 1053;
/// `Table 'db.t' doesn't exist`.
const ER_NO_SUCH_TABLE: u16 = 1146;
const ER_QUERY_INTERRUPTED: u16 = 1317;

/// Access denied (bad password, unknown user, no right to the database), and MySQL 8's
/// "no password given" and "must change password".
fn is_refused_login(code: u16) -> bool {
    matches!(code, 1044 | 1045 | 1698 | 1820 | 1862)
}

/// Which server answered: they spell the statement time limit differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServerFlavour {
    MySql,
    MariaDb,
}

impl ServerFlavour {
    /// MariaDB says so in its version (`10.11.14-MariaDB-0+deb12u2`); anything else is MySQL.
    fn from_version(version: &str) -> ServerFlavour {
        if version.to_ascii_lowercase().contains("mariadb") {
            ServerFlavour::MariaDb
        } else {
            ServerFlavour::MySql
        }
    }

    /// The session setting that limits each statement's time; zero means no limit on both.
    fn statement_timeout_setting(self, timeout: Duration) -> String {
        match self {
            // Seconds, with microseconds.
            ServerFlavour::MariaDb => {
                format!("max_statement_time = {:.6}", timeout.as_secs_f64())
            }
            // Milliseconds; SELECT statements only, which a model is.
            ServerFlavour::MySql => format!("max_execution_time = {}", timeout.as_millis()),
        }
    }
}

/// Runs the model; if the reader goes away first, kills the connection so the server stops.
async fn run_model_until_done_or_dropped(
    target: MysqlTarget,
    mut connection: Conn,
    model: ValidatedModelSql,
    options: QueryOptions,
    columns_sender: ColumnsSender,
    rows_sender: RowBatcher,
) {
    let connection_id = connection.id();
    let reader_watch = rows_sender.watch();
    let finished = tokio::select! {
        finished = read_model(&target, &mut connection, &model, &options, columns_sender, rows_sender) => finished,
        () = reader_watch.closed() => ReadEnd::ReaderGone,
    };
    match finished {
        ReadEnd::Done => {
            // The transaction only read: ending the session rolls it back and loses nothing.
            let _ = connection.disconnect().await;
        }
        ReadEnd::ReaderGone | ReadEnd::ResultLeftUnread => {
            debug!(
                connection_id,
                "Model stream dropped; killing the MySQL connection."
            );
            target.kill_connection(connection_id).await;
            drop(connection);
        }
    }
}

enum ReadEnd {
    /// Every row was sent, or the error that ended the model.
    Done,
    /// The stream was dropped; nobody is left to tell.
    ReaderGone,
    /// The model was refused after the server started sending rows.
    ResultLeftUnread,
}

/// Sends the columns (or the setup error) through `columns_sender`, then every row, then
/// `Finished` or `Failed` through `rows_sender`.
async fn read_model(
    target: &MysqlTarget,
    connection: &mut Conn,
    model: &ValidatedModelSql,
    options: &QueryOptions,
    columns_sender: ColumnsSender,
    mut rows_sender: RowBatcher,
) -> ReadEnd {
    let timeout = (options.statement_timeout, options.timeout_setting);
    let setup = async {
        let version: Option<String> = connection
            .query_first("SELECT VERSION()")
            .await
            .map_err(|error| target.model_error(error, timeout, 0))?;
        let flavour = ServerFlavour::from_version(version.as_deref().unwrap_or_default());
        // utf8mb4 for every string sent (emoji included), UTC for TIMESTAMP columns (stored in
        // UTC, shown in the session's zone), the statement time limit; then the read-only
        // transaction the model runs in, which refuses any write, functions' writes included.
        connection
            .query_drop(format!(
                "SET NAMES utf8mb4, time_zone = '+00:00', SESSION net_write_timeout = \
                 {NET_WRITE_TIMEOUT_SECONDS}, SESSION {}",
                flavour.statement_timeout_setting(options.statement_timeout)
            ))
            .await
            .map_err(|error| target.model_error(error, timeout, 0))?;
        connection
            .query_drop("START TRANSACTION READ ONLY")
            .await
            .map_err(|error| target.model_error(error, timeout, 0))?;
        // Prepared first, so a column ferry cannot read is refused before anything runs.
        let statement = connection
            .prep(model.statement())
            .await
            .map_err(|error| target.model_error(error, timeout, 0))?;
        check_column_types(&statement.columns())?;
        Ok::<_, SourceError>(statement)
    };
    let statement = match setup.await {
        Ok(statement) => statement,
        Err(error) => {
            let _ = columns_sender.send(Err(error));
            return ReadEnd::Done;
        }
    };
    let mut result = match connection.exec_iter(&statement, ()).await {
        Ok(result) => result,
        Err(error) => {
            let _ = columns_sender.send(Err(target.model_error(error, timeout, 0)));
            return ReadEnd::Done;
        }
    };
    // The executed statement's columns are the ones the rows follow.
    let mut columns = Vec::new();
    let mut decoders = Vec::new();
    for column in result.columns_ref() {
        let Some(decoder) = decoder_for_column(column) else {
            let _ = columns_sender.send(Err(unsupported(column)));
            return ReadEnd::ResultLeftUnread;
        };
        columns.push(Column {
            name: column.name_str().into_owned(),
            type_name: type_name(column),
        });
        decoders.push(decoder);
    }
    if columns_sender.send(Ok(columns.clone())).is_err() {
        return ReadEnd::ReaderGone;
    }

    let mut rows_read: u64 = 0;
    let outcome = loop {
        let row = match result.next().await {
            Ok(Some(row)) => row,
            Ok(None) => break Ok(()),
            Err(error) => break Err(target.model_error(error, timeout, rows_read)),
        };
        let values = match decode_row(row.unwrap(), &columns, &decoders) {
            Ok(values) => values,
            Err(error) => break Err(error),
        };
        if rows_sender.push(values).await.is_err() {
            return ReadEnd::ReaderGone;
        }
        rows_read += 1;
    };
    match outcome {
        Ok(()) => {
            drop(result);
            rows_sender.finish(StreamMessage::Finished).await;
            ReadEnd::Done
        }
        Err(error) => {
            // A value ferry cannot read stops the model with rows still coming.
            let left_unread = !matches!(
                error,
                SourceError::ConnectionLost { .. } | SourceError::StatementTimeout { .. }
            );
            drop(result);
            rows_sender.finish(StreamMessage::Failed(error)).await;
            if left_unread {
                ReadEnd::ResultLeftUnread
            } else {
                ReadEnd::Done
            }
        }
    }
}

fn check_column_types(columns: &[mysql_async::Column]) -> Result<(), SourceError> {
    match columns
        .iter()
        .find(|column| decoder_for_column(column).is_none())
    {
        Some(column) => Err(unsupported(column)),
        None => Ok(()),
    }
}

fn unsupported(column: &mysql_async::Column) -> SourceError {
    SourceError::UnsupportedColumnType {
        column: column.name_str().into_owned(),
        type_name: type_name(column),
        flavor: SqlFlavor::Mysql,
    }
}

fn decode_row(
    row: Vec<mysql_async::Value>,
    columns: &[Column],
    decoders: &[MysqlDecoder],
) -> Result<Vec<Value>, SourceError> {
    row.into_iter()
        .zip(decoders.iter().zip(columns))
        .map(|(raw, (decoder, column))| {
            decode_value(*decoder, raw).map_err(|reason| SourceError::UnreadableValue {
                column: column.name.clone(),
                type_name: column.type_name.clone(),
                reason,
                flavor: SqlFlavor::Mysql,
            })
        })
        .collect()
}

/// `MySQL at db:3306, database `app`, user `ferry`` (or `socket /run/mysqld/mysqld.sock`).
fn describe(options: &Opts) -> String {
    let mut description = match options.socket() {
        Some(socket) => format!("MySQL at socket {socket}"),
        None => format!(
            "MySQL at {}:{}",
            options.ip_or_hostname(),
            options.tcp_port()
        ),
    };
    if let Some(database) = options.db_name() {
        description.push_str(&format!(", database `{database}`"));
    }
    if let Some(user) = options.user() {
        description.push_str(&format!(", user `{user}`"));
    }
    description
}

/// The driver's message with its causes.
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

fn redact(text: String, password_forms: &[String]) -> String {
    password_forms
        .iter()
        .fold(text, |text, password| text.replace(password.as_str(), "…"))
}

/// Removes the password from every text field of an error, in case a server or driver message
/// ever echoes it.
fn redact_source_error(error: SourceError, password_forms: &[String]) -> SourceError {
    if password_forms.is_empty() {
        return error;
    }
    error.with_text_scrubbed(|text| redact(text, password_forms))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> Result<MysqlTarget, String> {
        MysqlTarget::parse(&Secret::new(url.to_string())).map_err(|error| error.to_string())
    }

    #[test]
    fn urls_are_described_without_the_password() {
        let target = parse("mysql://ferry:p%40ss@db.example.com:3307/app?ssl-mode=verify_identity&ssl-ca=/etc/ca.pem")
            .unwrap();
        assert_eq!(
            target.description,
            "MySQL at db.example.com:3307, database `app`, user `ferry`"
        );
        assert_eq!(target.ssl_mode, SslMode::VerifyIdentity);
        assert_eq!(
            target.certificate_authority,
            Some(PathBuf::from("/etc/ca.pem"))
        );
        assert_eq!(
            target.password_forms,
            vec!["p%40ss".to_string(), "p@ss".to_string()]
        );
        assert_eq!(
            parse("mysql://ferry@db/app").unwrap().description,
            "MySQL at db:3306, database `app`, user `ferry`"
        );
        assert_eq!(parse("mysql://db").unwrap().ssl_mode, SslMode::Preferred);
    }

    #[test]
    fn bad_urls_say_how_to_write_them_without_the_password() {
        assert_eq!(
            parse("postgres://ferry:secret@db/app").err().unwrap(),
            "the MySQL connection URL is not valid: it starts with `postgres://`; write \
             mysql://user:password@host:port/database (for MariaDB too)"
        );
        assert_eq!(
            parse("mysql://ferry:secret@db/app?ssl-mode=ALWAYS")
                .err()
                .unwrap(),
            "the MySQL connection URL is not valid: `ssl-mode=ALWAYS` is not a TLS mode; write \
             one of DISABLED, PREFERRED, REQUIRED, VERIFY_CA, VERIFY_IDENTITY"
        );
        assert_eq!(
            parse("mysql://ferry:secret@db/app?require_ssl=true")
                .err()
                .unwrap(),
            "the MySQL connection URL is not valid: `require_ssl` is not how ferry sets TLS; use \
             `ssl-mode` (DISABLED, PREFERRED, REQUIRED, VERIFY_CA, VERIFY_IDENTITY) and `ssl-ca`"
        );
        let error = parse("mysql://ferry:secret@db/app?pool_min=secret")
            .err()
            .unwrap();
        assert!(!error.contains("secret"), "{error}");
        assert!(
            error.starts_with("the MySQL connection URL is not valid: "),
            "{error}"
        );
    }

    #[test]
    fn the_statement_time_limit_is_spelled_per_server() {
        assert_eq!(
            ServerFlavour::from_version("10.11.14-MariaDB-0+deb12u2"),
            ServerFlavour::MariaDb
        );
        assert_eq!(ServerFlavour::from_version("8.0.36"), ServerFlavour::MySql);
        assert_eq!(
            ServerFlavour::MariaDb.statement_timeout_setting(Duration::from_millis(1500)),
            "max_statement_time = 1.500000"
        );
        assert_eq!(
            ServerFlavour::MySql.statement_timeout_setting(Duration::from_millis(1500)),
            "max_execution_time = 1500"
        );
    }
}
