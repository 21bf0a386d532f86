//! Where a workspace lives and how it is opened: the directory and its files, the choice of
//! backend from `--state-url`, and the master key.

use crate::error::StateError;
use crate::master_key::MasterKey;
use crate::{postgres, sqlite, StateStore};
use ferry_core::Secret;
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

/// The SQLite database inside the workspace directory.
pub const DATABASE_FILE_NAME: &str = "ferry.db";
/// The master key file inside the workspace directory (unless `FERRY_MASTER_KEY` is used).
pub const KEY_FILE_NAME: &str = "master.key";
/// The directory of per-sync lock files (SQLite backend).
pub const LOCKS_DIR_NAME: &str = "locks";

/// How to find a workspace.
#[derive(Debug, Clone)]
pub struct WorkspaceOptions {
    /// The workspace directory (default `./.ferry`). It always holds the key file unless a
    /// master key is given, and with the SQLite backend the database and lock files.
    pub dir: PathBuf,
    /// `postgres://…` or a `host=… dbname=…` connection string: keep the state in PostgreSQL
    /// instead of `DIR/ferry.db`.
    pub state_url: Option<String>,
    /// The master key (base64 of 32 bytes), from `FERRY_MASTER_KEY`; read by the CLI. When
    /// absent the key file `DIR/master.key` is used (and created by `initialize`).
    pub master_key: Option<Secret>,
}

impl WorkspaceOptions {
    /// A workspace in `dir` with the SQLite backend and the key file.
    pub fn in_dir(dir: impl Into<PathBuf>) -> WorkspaceOptions {
        WorkspaceOptions {
            dir: dir.into(),
            state_url: None,
            master_key: None,
        }
    }

    pub fn key_file(&self) -> PathBuf {
        self.dir.join(KEY_FILE_NAME)
    }

    pub fn database_file(&self) -> PathBuf {
        self.dir.join(DATABASE_FILE_NAME)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpenMode {
    CreateIfMissing,
    MustExist,
}

pub(crate) async fn open(
    options: &WorkspaceOptions,
    mode: OpenMode,
) -> Result<StateStore, StateError> {
    match &options.state_url {
        None => open_sqlite(options, mode).await,
        Some(state_url) => {
            let state_url = parse_postgres_url(state_url)?;
            // Connect first: a missing PostgreSQL workspace is reported as such, before any
            // complaint about the key file.
            let session = postgres::PostgresStore::connect(state_url.clone(), mode).await?;
            if mode == OpenMode::CreateIfMissing {
                create_workspace_dir(&options.dir)?;
            }
            let master_key = load_master_key(options, mode)?;
            let store = postgres::PostgresStore::new(state_url, &options.dir, session, master_key);
            Ok(StateStore::Postgres(store))
        }
    }
}

async fn open_sqlite(options: &WorkspaceOptions, mode: OpenMode) -> Result<StateStore, StateError> {
    let database_file = options.database_file();
    match mode {
        OpenMode::MustExist if !database_file.exists() => {
            return Err(StateError::NoWorkspace {
                location: options.dir.display().to_string(),
            });
        }
        OpenMode::MustExist => {}
        OpenMode::CreateIfMissing => create_workspace_dir(&options.dir)?,
    }
    let master_key = load_master_key(options, mode)?;
    let store = sqlite::SqliteStore::open(&options.dir, master_key).await?;
    Ok(StateStore::Sqlite(store))
}

/// Creates the directory with mode 0700 when it does not exist. An existing directory keeps
/// its mode: it may be one the user chose on purpose.
fn create_workspace_dir(dir: &Path) -> Result<(), StateError> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|error| StateError::io("create the workspace directory", dir, error))?;
    // DirBuilder's mode is filtered by the umask; set it exactly.
    set_mode(dir, 0o700)
}

fn load_master_key(options: &WorkspaceOptions, mode: OpenMode) -> Result<MasterKey, StateError> {
    let key_file = options.key_file();
    match &options.master_key {
        Some(key) => MasterKey::from_base64(key.expose(), "FERRY_MASTER_KEY", key_file),
        None => MasterKey::from_key_file(&key_file, mode == OpenMode::CreateIfMissing),
    }
}

/// Whether `candidate` is the workspace directory or anything in it: the database, its `-wal`
/// and `-shm` files, the key file, the lock files. Symbolic links are followed, and a hard link
/// elsewhere to one of those files counts too. Nothing is opened to find out: opening and then
/// closing the workspace database in this process would drop SQLite's POSIX locks on it.
pub(crate) fn is_inside(dir: &Path, candidate: &Path) -> bool {
    let Ok(dir) = dir.canonicalize() else {
        return false;
    };
    let candidate = std::path::absolute(candidate).unwrap_or_else(|_| candidate.to_path_buf());
    if resolve_existing_prefix(&candidate).starts_with(&dir) {
        return true;
    }
    use std::os::unix::fs::MetadataExt as _;
    let Ok(target) = std::fs::metadata(&candidate) else {
        return false;
    };
    let same_file = |path: &Path| {
        std::fs::symlink_metadata(path)
            .is_ok_and(|m| m.dev() == target.dev() && m.ino() == target.ino())
    };
    let mut folders = vec![(dir, 0)];
    while let Some((folder, depth)) = folders.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if same_file(&path) {
                return true;
            }
            if depth < 2 && entry.file_type().is_ok_and(|t| t.is_dir()) {
                folders.push((path, depth + 1));
            }
        }
    }
    false
}

/// The path with every symbolic link in its longest existing prefix resolved.
fn resolve_existing_prefix(path: &Path) -> PathBuf {
    let mut rest = Vec::new();
    let mut prefix = path.to_path_buf();
    loop {
        if let Ok(resolved) = prefix.canonicalize() {
            return rest.iter().rev().fold(resolved, |acc, part| acc.join(part));
        }
        match (
            prefix.file_name().map(|n| n.to_os_string()),
            prefix.parent(),
        ) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                prefix = parent.to_path_buf();
            }
            _ => return path.to_path_buf(),
        }
    }
}

pub(crate) fn set_mode(path: &Path, mode: u32) -> Result<(), StateError> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|error| StateError::io("set the permissions of", path, error))
}

/// A PostgreSQL connection string as the user gave it, with its redacted form for messages.
#[derive(Clone)]
pub(crate) struct PostgresUrl {
    pub(crate) connection_string: String,
    pub(crate) redacted: String,
}

fn parse_postgres_url(state_url: &str) -> Result<PostgresUrl, StateError> {
    let is_url = state_url.starts_with("postgres://") || state_url.starts_with("postgresql://");
    let is_key_value = !state_url.contains("://") && state_url.contains('=');
    if !is_url && !is_key_value {
        return Err(StateError::InvalidInput(format!(
            "--state-url {} is not a PostgreSQL connection string; use \
             postgres://USER@HOST:PORT/DATABASE (or host=… dbname=…), or leave it out to keep \
             the state in the workspace directory",
            redact_connection_string(state_url)
        )));
    }
    Ok(PostgresUrl {
        connection_string: state_url.to_string(),
        redacted: redact_connection_string(state_url),
    })
}

/// Replaces the password of a `postgres://user:password@host/db` URL or of a
/// `password=… host=…` string with `***`.
pub(crate) fn redact_connection_string(text: &str) -> String {
    if let Some((scheme, rest)) = text.split_once("://") {
        // The authority ends at the first '/', '?' or '#'; credentials end at its last '@'.
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        if let Some((credentials, host)) = authority.rsplit_once('@') {
            if let Some((user, _password)) = credentials.split_once(':') {
                return format!("{scheme}://{user}:***@{host}{tail}");
            }
        }
        return redact_query_password(text);
    }
    text.split_whitespace()
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if key.eq_ignore_ascii_case("password") => "password=***".to_string(),
            _ => pair.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `postgres://host/db?password=x` is accepted too.
fn redact_query_password(url: &str) -> String {
    let Some((base, query)) = url.split_once('?') else {
        return url.to_string();
    };
    let query = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if key.eq_ignore_ascii_case("password") => "password=***".to_string(),
            _ => pair.to_string(),
        })
        .collect::<Vec<_>>()
        .join("&");
    format!("{base}?{query}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact_connection_string("postgres://ferry:hunter2@db.internal:5432/state"),
            "postgres://ferry:***@db.internal:5432/state"
        );
        assert_eq!(
            redact_connection_string("postgresql://ferry:p@ss@db/state?sslmode=disable"),
            "postgresql://ferry:***@db/state?sslmode=disable"
        );
        assert_eq!(
            redact_connection_string("postgres://db/state?user=ferry&password=hunter2"),
            "postgres://db/state?user=ferry&password=***"
        );
        assert_eq!(
            redact_connection_string("host=/tmp port=5432 user=ferry password=hunter2 dbname=s"),
            "host=/tmp port=5432 user=ferry password=*** dbname=s"
        );
        assert_eq!(
            redact_connection_string("postgres://ferry@db/state"),
            "postgres://ferry@db/state"
        );
    }

    #[test]
    fn paths_inside_the_workspace_are_recognised_through_links() {
        let root = tempfile::tempdir().unwrap();
        let workspace = root.path().join("ws");
        std::fs::create_dir_all(workspace.join("locks")).unwrap();
        std::fs::write(workspace.join("ferry.db"), "db").unwrap();
        std::fs::write(workspace.join("locks/a.lock"), "").unwrap();
        let outside = root.path().join("warehouse.duckdb");
        std::fs::write(&outside, "duck").unwrap();
        std::os::unix::fs::symlink(workspace.join("ferry.db"), root.path().join("link.db"))
            .unwrap();
        std::fs::hard_link(workspace.join("ferry.db"), root.path().join("hard.db")).unwrap();
        std::os::unix::fs::symlink(&workspace, root.path().join("ws-link")).unwrap();
        let inside = |p: &str| is_inside(&workspace, &root.path().join(p));
        assert!(inside("ws"));
        assert!(inside("ws/ferry.db"));
        assert!(inside("ws/ferry.db-wal"), "a file SQLite has not made yet");
        assert!(inside("ws/../ws/master.key"));
        assert!(inside("link.db"));
        assert!(inside("hard.db"));
        assert!(inside("ws-link/ferry.db"));
        assert!(!inside("warehouse.duckdb"));
        assert!(!inside("missing.duckdb"));
        assert!(!inside("ws2/ferry.db"));
    }

    #[test]
    fn state_urls_must_be_postgres() {
        assert!(parse_postgres_url("postgres://db/state").is_ok());
        assert!(parse_postgres_url("host=/tmp dbname=state").is_ok());
        assert_eq!(
            parse_postgres_url("mysql://root:secret@db/state")
                .err()
                .unwrap()
                .to_string(),
            "--state-url mysql://root:***@db/state is not a PostgreSQL connection string; use \
             postgres://USER@HOST:PORT/DATABASE (or host=… dbname=…), or leave it out to keep \
             the state in the workspace directory"
        );
    }
}
