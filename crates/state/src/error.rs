//! The errors of the workspace store. Each message says what went wrong and what to do next;
//! none of them ever contains a secret, a ciphertext or a database password.

use std::path::PathBuf;

/// The kinds of objects a workspace holds, for messages and hints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectType {
    Connection,
    Model,
    Sync,
    Run,
    ApiToken,
    /// One event's delivery to an alert channel.
    Delivery,
    /// A named, ordered list of syncs run one after another.
    Sequence,
}

impl ObjectType {
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectType::Connection => "connection",
            ObjectType::Model => "model",
            ObjectType::Sync => "sync",
            ObjectType::Run => "run",
            ObjectType::ApiToken => "API token",
            ObjectType::Delivery => "delivery",
            ObjectType::Sequence => "sequence",
        }
    }

    /// Where to look instead, for "does not exist" errors: the command that lists objects of
    /// this type.
    fn not_found_hint(self) -> &'static str {
        match self {
            ObjectType::Connection => "see `ferry connection list`",
            ObjectType::Model => "see `ferry model list`",
            ObjectType::Sync => "see `ferry sync list`",
            ObjectType::Run => "see `ferry runs list`",
            ObjectType::ApiToken => "see `ferry token list`",
            // No command lists deliveries (yet); a finished one goes when old runs are pruned.
            ObjectType::Delivery => "finished deliveries are removed with old runs",
            ObjectType::Sequence => "see `ferry sequence list`",
        }
    }

    /// What to do when a new object's name is taken, for "already exists" errors.
    fn taken_name_hint(self, name: &str) -> String {
        match self {
            ObjectType::ApiToken => {
                format!("revoke it first with `ferry token revoke {name}` or choose another name")
            }
            ObjectType::Connection
            | ObjectType::Model
            | ObjectType::Sync
            | ObjectType::Run
            | ObjectType::Delivery
            | ObjectType::Sequence => "choose another name".to_string(),
        }
    }
}

impl std::fmt::Display for ObjectType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("no ferry workspace at {location}; run `ferry init` first")]
    NoWorkspace { location: String },

    #[error("invalid {what} name {name:?}: {}", crate::names::NAME_RULE)]
    InvalidName { what: ObjectType, name: String },

    #[error("{0}")]
    InvalidInput(String),

    #[error("{what} '{name}' does not exist; {}", what.not_found_hint())]
    NotFound { what: ObjectType, name: String },

    #[error("{what} '{name}' already exists; {}", what.taken_name_hint(name))]
    AlreadyExists { what: ObjectType, name: String },

    /// A new name that differs only in case from an existing one of the same kind.
    #[error(
        "{what} '{name}' cannot be created: {what} '{existing}' already exists, and names must \
         differ by more than case; use '{existing}' or choose another name"
    )]
    NameTakenIgnoringCase {
        what: ObjectType,
        name: String,
        existing: String,
    },

    #[error("{what} '{name}' is used by {}; remove or change those first", used_by.join(", "))]
    InUse {
        what: ObjectType,
        name: String,
        /// "model 'signups'", "sync 'customers'", …
        used_by: Vec<String>,
    },

    #[error(
        "sync '{sync}' is already running (another `ferry sync run` holds its lock); wait for it to finish"
    )]
    SyncLocked { sync: String },

    #[error(
        "{origin} is not a valid master key: it must be the base64 of 32 random bytes \
         (make one with `openssl rand -base64 32`)"
    )]
    InvalidMasterKey { origin: String },

    #[error(
        "the master key file {} is missing, so the secrets of this workspace cannot be read; \
         restore the file or set FERRY_MASTER_KEY to the key it held",
        path.display()
    )]
    MissingMasterKey { path: PathBuf },

    #[error(
        "cannot decrypt the secret of connection '{connection}': the master key differs from the \
         one it was saved with (FERRY_MASTER_KEY or {})",
        key_file.display()
    )]
    WrongMasterKey {
        connection: String,
        key_file: PathBuf,
    },

    #[error(
        "the stored secret of connection '{connection}' is damaged; add the connection again with \
         its secret"
    )]
    DamagedSecret { connection: String },

    #[error(
        "environment variable {variable} is not set; export it or reconnect with --api-key-env"
    )]
    EnvVarNotSet { variable: String },

    #[error(
        "the workspace database has schema version {found}, but this ferry only knows versions up \
         to {known}; it was written by a newer ferry, so upgrade ferry"
    )]
    NewerSchema { found: i64, known: i64 },

    #[error("the workspace database holds {0}; was it edited by hand or by a newer ferry?")]
    Corrupt(String),

    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("the SQLite workspace database failed while {doing}: {source}")]
    Sqlite {
        doing: &'static str,
        #[source]
        source: rusqlite::Error,
    },

    #[error(
        "cannot connect to the PostgreSQL state store at {location}: {message}; check --state-url \
         and that the server is running"
    )]
    PostgresConnect { location: String, message: String },

    /// TLS could not be set up as the state URL's `sslmode` asks: a setting to change, not an
    /// outage. `message` names the fix.
    #[error("cannot connect to the PostgreSQL state store at {location} over TLS: {message}")]
    PostgresTls { location: String, message: String },

    /// `message` is the server's own text when there is one (tokio-postgres' Display of a server
    /// error is only "db error").
    #[error("the PostgreSQL state store failed while {doing}: {message}")]
    Postgres {
        doing: &'static str,
        message: String,
        #[source]
        source: tokio_postgres::Error,
    },

    #[error("an internal task of the state store failed: {0}")]
    Internal(String),
}

impl StateError {
    /// Whether this means "the database is not reachable right now" rather than "this is
    /// wrong": a failed connect, a closed session, a dropped socket, or PostgreSQL's classes 08
    /// (connection exception) and 57P (shutting down, starting up, terminated).
    pub fn is_unreachable(&self) -> bool {
        match self {
            StateError::PostgresConnect { .. } => true,
            StateError::Postgres { source, .. } => {
                source.is_closed()
                    || source.code().is_some_and(|state| {
                        let code = state.code();
                        code.starts_with("08") || code.starts_with("57P")
                    })
                    || std::error::Error::source(source)
                        .is_some_and(|cause| cause.downcast_ref::<std::io::Error>().is_some())
            }
            _ => false,
        }
    }
}

impl StateError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        StateError::Io {
            action,
            path: path.into(),
            source,
        }
    }

    /// Whether a PostgreSQL call failed because its session was already closed.
    pub(crate) fn is_closed_connection(&self) -> bool {
        matches!(self, StateError::Postgres { source, .. } if source.is_closed())
    }

    pub(crate) fn sqlite(doing: &'static str) -> impl FnOnce(rusqlite::Error) -> StateError {
        move |source| StateError::Sqlite { doing, source }
    }

    pub(crate) fn postgres(
        doing: &'static str,
    ) -> impl FnOnce(tokio_postgres::Error) -> StateError {
        move |source| StateError::Postgres {
            doing,
            message: postgres_error_text(&source),
            source,
        }
    }
}

/// The most useful text of a tokio-postgres error: the server's message when the server
/// answered, the client-side cause otherwise. The server's `detail` is left out on purpose: for
/// a failing row it quotes the row, ciphertext included.
pub(crate) fn postgres_error_text(error: &tokio_postgres::Error) -> String {
    if let Some(db_error) = error.as_db_error() {
        return db_error.message().to_string();
    }
    match std::error::Error::source(error) {
        Some(cause) => format!("{error}: {cause}"),
        None => error.to_string(),
    }
}
