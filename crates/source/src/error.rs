//! What can go wrong while reaching a warehouse or reading a model, in words for people.
//!
//! No variant ever holds a connection string or a password: targets are described by host,
//! port, user and database only, and driver messages are scrubbed of the password before they
//! are stored here (see `postgres_source::redact_source_error`).

use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    #[error("the PostgreSQL connection string is not valid: {reason}")]
    InvalidConnectionString { reason: String },

    /// The MySQL URL cannot be read; `reason` says what to write instead.
    #[error("the MySQL connection URL is not valid: {reason}")]
    InvalidMysqlUrl { reason: String },

    /// The server could not be reached (refused, no such socket, DNS, timeout). `fix` says
    /// what to check in this warehouse's terms.
    #[error("cannot connect to {target}: {reason}; {fix}")]
    ConnectionFailed {
        target: String,
        reason: String,
        fix: String,
    },

    /// TLS could not be set up as the connection string's `sslmode` asks; `reason` says why
    /// and what to change (sslmode, sslrootcert, or the server's settings).
    #[error("cannot connect to {target} over TLS: {reason}")]
    TlsFailed { target: String, reason: String },

    /// The server answered but refused the login (bad password, unknown role, pg_hba rule, a
    /// Snowflake user without this public key, a deleted service account key). `fix` says what
    /// to check in this warehouse's terms: a user and password are only PostgreSQL's and
    /// MySQL's.
    #[error("the warehouse refused the login to {target}: {reason}; {fix}")]
    AuthenticationFailed {
        target: String,
        reason: String,
        fix: String,
    },

    /// Missing, unreadable, or not a DuckDB database: one sentence for all three, so that a
    /// caller of the server's API cannot tell which files exist on the server's machine.
    #[error(
        "cannot open {} as a DuckDB database: there is no readable DuckDB file at that path; \
         check the path (ferry opens the file read-only and never creates it)",
        path.display()
    )]
    DuckDbNotUsable { path: PathBuf },

    #[error("cannot open the DuckDB file at {}: {reason}", path.display())]
    DuckDbOpenFailed { path: PathBuf, reason: String },

    /// A files connection cannot read what it names; `problem` names the folder or file and
    /// the fix.
    #[error("the files connection cannot be used: {problem}")]
    FilesNotUsable { problem: String },

    /// Refused before running: the model is not one read-only query.
    #[error("the model is not a single read-only query: {problem}")]
    NotAQuery { problem: String },

    /// The database rejected the model's SQL; `message` is the database's own words.
    #[error("the model failed in the warehouse: {message}{}", describe_position(.position))]
    Sql {
        message: String,
        position: Option<SqlPosition>,
    },

    #[error("the model tried to write ({message}); a model must be a read-only SELECT")]
    ReadOnlyViolation { message: String },

    /// `setting` is the connection setting the timeout came from: the one to raise.
    #[error(
        "the model ran longer than {} and was cancelled; make the query faster ({}) or raise {}",
        human_duration(*.timeout),
        .flavor.how_to_speed_up(),
        .setting.hint()
    )]
    StatementTimeout {
        timeout: Duration,
        setting: TimeoutSetting,
        flavor: SqlFlavor,
    },

    #[error("the warehouse connection was lost after {rows_read} rows: {reason}")]
    ConnectionLost { rows_read: u64, reason: String },

    /// Known before the first row: the column's type has no ferry value.
    #[error(
        "column `{column}` has type `{type_name}`, which ferry cannot read; cast it in the \
         model, e.g. `{}`",
        .flavor.cast_to_text(column)
    )]
    UnsupportedColumnType {
        column: String,
        type_name: String,
        flavor: SqlFlavor,
    },

    /// One value of a readable type that still has no ferry form (a date past year 262143).
    #[error(
        "column `{column}` (type `{type_name}`) has a value ferry cannot read: {reason}; cast it \
         in the model, e.g. `{}`",
        .flavor.cast_to_text(column)
    )]
    UnreadableValue {
        column: String,
        type_name: String,
        reason: String,
        flavor: SqlFlavor,
    },

    /// Change detection inside the warehouse cannot work as set up; `problem` says what to
    /// grant, create or turn off.
    #[error("change detection in the warehouse: {problem}")]
    ChangeDetection { problem: String },

    /// Anything else the warehouse or driver reported.
    #[error("the warehouse failed: {reason}")]
    Warehouse { reason: String },
}

impl SourceError {
    /// A warehouse reached through a connection string (PostgreSQL, Redshift, MySQL) could
    /// not be reached.
    pub(crate) fn unreachable_by_connection_string(
        target: impl Into<String>,
        reason: impl Into<String>,
    ) -> SourceError {
        SourceError::ConnectionFailed {
            target: target.into(),
            reason: reason.into(),
            fix: CONNECTION_STRING_REACH_FIX.to_string(),
        }
    }

    /// The same error with `scrub` applied to every text it holds that a driver or server
    /// wrote (and to the target, which names a user), so that a password echoed in one never
    /// reaches a log or a person.
    pub(crate) fn with_text_scrubbed(self, scrub: impl Fn(String) -> String) -> SourceError {
        match self {
            SourceError::InvalidConnectionString { reason } => {
                SourceError::InvalidConnectionString {
                    reason: scrub(reason),
                }
            }
            SourceError::InvalidMysqlUrl { reason } => SourceError::InvalidMysqlUrl {
                reason: scrub(reason),
            },
            SourceError::ConnectionFailed {
                target,
                reason,
                fix,
            } => SourceError::ConnectionFailed {
                target: scrub(target),
                reason: scrub(reason),
                fix,
            },
            SourceError::AuthenticationFailed {
                target,
                reason,
                fix,
            } => SourceError::AuthenticationFailed {
                target: scrub(target),
                reason: scrub(reason),
                fix,
            },
            SourceError::TlsFailed { target, reason } => SourceError::TlsFailed {
                target: scrub(target),
                reason: scrub(reason),
            },
            SourceError::Sql { message, position } => SourceError::Sql {
                message: scrub(message),
                position,
            },
            SourceError::ReadOnlyViolation { message } => SourceError::ReadOnlyViolation {
                message: scrub(message),
            },
            SourceError::ConnectionLost { rows_read, reason } => SourceError::ConnectionLost {
                rows_read,
                reason: scrub(reason),
            },
            SourceError::Warehouse { reason } => SourceError::Warehouse {
                reason: scrub(reason),
            },
            other => other,
        }
    }

    /// A warehouse reached through a connection string refused the login.
    pub(crate) fn login_refused_by_connection_string(
        target: impl Into<String>,
        reason: impl Into<String>,
    ) -> SourceError {
        SourceError::AuthenticationFailed {
            target: target.into(),
            reason: reason.into(),
            fix: CONNECTION_STRING_LOGIN_FIX.to_string(),
        }
    }

    /// Whether the warehouse could not be reached or stopped answering (an outage to wait out),
    /// rather than refusing the model or its settings (something for the user to fix).
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            SourceError::ConnectionFailed { .. }
                | SourceError::ConnectionLost { .. }
                | SourceError::StatementTimeout { .. }
                | SourceError::Warehouse { .. }
        )
    }
}

/// What to check when a warehouse reached through a connection string (PostgreSQL, Redshift,
/// MySQL) refuses the login.
const CONNECTION_STRING_LOGIN_FIX: &str =
    "check the user name and password in the connection string";

/// What to check when a warehouse reached through a connection string cannot be reached.
const CONNECTION_STRING_REACH_FIX: &str =
    "check that the warehouse is running and that the connection string points at it";

/// Whose SQL a model is written in, so that a hint shows SQL that warehouse runs: BigQuery has
/// no `::` cast, and neither it nor Snowflake has indexes to add.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlFlavor {
    /// PostgreSQL, Redshift and DuckDB (and the files connections DuckDB reads).
    Postgres,
    /// MySQL and MariaDB.
    Mysql,
    Snowflake,
    BigQuery,
}

impl SqlFlavor {
    /// A cast of `column` to text in this warehouse's SQL.
    pub fn cast_to_text(self, column: &str) -> String {
        match self {
            SqlFlavor::Postgres | SqlFlavor::Snowflake => format!("{column}::text"),
            // MySQL has no `::`, and CAST takes CHAR where others take TEXT.
            SqlFlavor::Mysql => format!("CAST({column} AS CHAR)"),
            SqlFlavor::BigQuery => format!("CAST({column} AS STRING)"),
        }
    }

    /// How a model in this warehouse is usually made faster.
    fn how_to_speed_up(self) -> &'static str {
        match self {
            SqlFlavor::Postgres | SqlFlavor::Mysql => "filter or aggregate earlier, add an index",
            SqlFlavor::Snowflake => {
                "filter or aggregate earlier, read fewer columns, or give the connection a \
                 larger warehouse"
            }
            SqlFlavor::BigQuery => {
                "filter or aggregate earlier, read fewer columns, and filter on the tables' \
                 partitioning columns"
            }
        }
    }
}

/// Which setting of a warehouse connection a query's timeout comes from, so that a timeout
/// error names the one to raise.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TimeoutSetting {
    /// `statement_timeout_seconds`: runs, sync previews and finding a model's columns.
    #[default]
    Statement,
    /// `preview_timeout_seconds`: model previews, which a person waits for.
    Preview,
}

impl TimeoutSetting {
    /// The connection setting's name, as stored and as written in ferry.yaml and the API.
    pub fn key(self) -> &'static str {
        match self {
            TimeoutSetting::Statement => "statement_timeout_seconds",
            TimeoutSetting::Preview => "preview_timeout_seconds",
        }
    }

    /// The `ferry connect duckdb|postgres` option that sets it.
    pub fn flag(self) -> &'static str {
        match self {
            TimeoutSetting::Statement => "--statement-timeout",
            TimeoutSetting::Preview => "--preview-timeout",
        }
    }

    fn hint(self) -> String {
        format!(
            "the connection's `{}` (`{} SECONDS` on `ferry connect`; 0 means no limit)",
            self.key(),
            self.flag()
        )
    }
}

/// Where in the model's SQL an error is, counted from 1 like editors do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqlPosition {
    pub line: usize,
    pub column: usize,
}

impl SqlPosition {
    /// The line and column of the `character_number`-th character (1-based, as PostgreSQL
    /// reports it) of `sql`.
    pub fn from_character_number(sql: &str, character_number: usize) -> SqlPosition {
        let mut position = SqlPosition { line: 1, column: 1 };
        for character in sql.chars().take(character_number.saturating_sub(1)) {
            if character == '\n' {
                position.line += 1;
                position.column = 1;
            } else {
                position.column += 1;
            }
        }
        position
    }
}

fn describe_position(position: &Option<SqlPosition>) -> String {
    match position {
        Some(SqlPosition { line, column }) => format!(" (at line {line}, column {column})"),
        None => String::new(),
    }
}

/// `5m0s`, `1s`, `1.5s`, `250ms`, `1h0m0s`: short and unambiguous.
pub fn human_duration(duration: Duration) -> String {
    let total_millis = duration.as_millis();
    if total_millis < 1000 {
        return format!("{total_millis}ms");
    }
    let hours = total_millis / 3_600_000;
    let minutes = total_millis / 60_000 % 60;
    let millis_in_minute = total_millis % 60_000;
    let seconds = if millis_in_minute.is_multiple_of(1000) {
        format!("{}s", millis_in_minute / 1000)
    } else {
        let text = format!("{:.3}", millis_in_minute as f64 / 1000.0);
        format!("{}s", text.trim_end_matches('0'))
    };
    match (hours, minutes) {
        (0, 0) => seconds,
        (0, minutes) => format!("{minutes}m{seconds}"),
        (hours, minutes) => format!("{hours}h{minutes}m{seconds}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_go() {
        let text = |millis| human_duration(Duration::from_millis(millis));
        assert_eq!(text(300_000), "5m0s");
        assert_eq!(text(1_000), "1s");
        assert_eq!(text(1_500), "1.5s");
        assert_eq!(text(250), "250ms");
        assert_eq!(text(3_600_000), "1h0m0s");
        assert_eq!(text(90_000), "1m30s");
    }

    #[test]
    fn a_timeout_names_the_setting_to_raise() {
        let error = |setting| {
            SourceError::StatementTimeout {
                timeout: Duration::from_secs(1),
                setting,
                flavor: SqlFlavor::Postgres,
            }
            .to_string()
        };
        assert_eq!(
            error(TimeoutSetting::Statement),
            "the model ran longer than 1s and was cancelled; make the query faster (filter or \
             aggregate earlier, add an index) or raise the connection's \
             `statement_timeout_seconds` (`--statement-timeout SECONDS` on `ferry connect`; 0 \
             means no limit)"
        );
        assert!(
            error(TimeoutSetting::Preview).ends_with(
                "or raise the connection's `preview_timeout_seconds` (`--preview-timeout \
                 SECONDS` on `ferry connect`; 0 means no limit)"
            ),
            "{}",
            error(TimeoutSetting::Preview)
        );
    }

    #[test]
    fn positions_count_lines_and_columns() {
        let sql = "SELECT\n  nme\nFROM t";
        assert_eq!(
            SqlPosition::from_character_number(sql, 10),
            SqlPosition { line: 2, column: 3 }
        );
        let error = SourceError::Sql {
            message: "column \"nme\" does not exist".into(),
            position: Some(SqlPosition { line: 2, column: 3 }),
        };
        assert_eq!(
            error.to_string(),
            "the model failed in the warehouse: column \"nme\" does not exist (at line 2, column 3)"
        );
    }
}
