//! Files as a warehouse: CSV, Parquet and JSON files in folders the connection names, read by an
//! in-memory DuckDB that may read those folders and nothing else.
//!
//! Each model gets a fresh in-memory DuckDB: the files are the data, so there is nothing to keep
//! between runs. Before the model runs, ferry
//! - lets DuckDB read only the folders, resolved through any link (`allowed_directories`, then
//!   `enable_external_access` off), keeps extensions from being installed or loaded (parquet
//!   and json are linked into ferry), and locks the configuration, so that the model cannot
//!   undo any of it. DuckDB resolves links (`realpath`) before it checks a path, so a link in a
//!   folder that leads elsewhere is refused like the path it leads to. A relative path is
//!   checked against ferry's working directory, so DuckDB refuses it: models write `~/` for the
//!   first folder (DuckDB's `home_directory`), or a full path;
//! - makes one view per data file directly in a folder, named after the file (`customers.csv`
//!   → `customers`), bound only when a model reads it, so an unreadable file fails only the
//!   models that read it, and a model pays only for the files it reads;
//! - refuses a model whose WITH clause writes: DuckDB runs `WITH x AS (COPY … TO …) SELECT …`,
//!   and a COPY into a named folder is a write its access rule allows.
//!
//! Rows are then read, timed and cancelled exactly as from a DuckDB file
//! ([`crate::duckdb_source::start_model_thread`]).

use crate::duckdb_source::{start_model_thread, with_memory_limit, FilesHints, ModelConnection};
use crate::{QueryOptions, RowStream, SourceError, ValidatedModelSql};
use duckdb::{Config, Connection};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The folders a files connection lets a model read, as DuckDB will see them: absolute, links
/// resolved, each once. Fails, naming the folder and the fix, when one is missing, is not a
/// folder, cannot be read, or is the root of the file system.
///
/// The engine compares these with ferry's own workspace: a model must never read (and so open
/// and close) the workspace's database, which would drop SQLite's locks on it.
pub fn files_readable_folders(folders: &[PathBuf]) -> Result<Vec<PathBuf>, SourceError> {
    if folders.is_empty() {
        return Err(not_usable(
            "it names no folder; give the folder that holds the CSV, Parquet or JSON files",
        ));
    }
    let mut readable: Vec<PathBuf> = Vec::with_capacity(folders.len());
    for folder in folders {
        let canonical = readable_folder(folder)?;
        if !readable.contains(&canonical) {
            readable.push(canonical);
        }
    }
    Ok(readable)
}

/// Checks that every folder can be read and that DuckDB opens on them, as a model would.
pub(crate) async fn test_files_connection(folders: &[PathBuf]) -> Result<(), SourceError> {
    let folders = folders.to_vec();
    tokio::task::spawn_blocking(move || {
        let session = open_files_database(&folders)?;
        session
            .connection
            .query_row("SELECT 1", [], |row| row.get::<_, i64>(0))
            .map_err(|error| SourceError::Warehouse {
                reason: format!("DuckDB cannot run a query on the files: {error}"),
            })?;
        Ok(())
    })
    .await
    .map_err(|error| SourceError::Warehouse {
        reason: format!("the files check stopped unexpectedly: {error}"),
    })?
}

/// Starts the model on its own thread over a fresh, confined in-memory DuckDB and returns once
/// the result's columns are known.
pub(crate) async fn start_files_query(
    folders: &[PathBuf],
    model: ValidatedModelSql,
    options: &QueryOptions,
) -> Result<RowStream, SourceError> {
    let folders = folders.to_vec();
    let statement = model.statement().to_string();
    let open = move || {
        let session = open_files_database(&folders)?;
        refuse_writing_ctes(&session.connection, &statement)?;
        Ok(session)
    };
    start_model_thread("ferry-files-model", open, model, options).await
}

/// `files in /data/exports (3 data files)`: what a files connection reads, for logs and messages.
pub(crate) fn describe_files_target(folders: &[PathBuf]) -> String {
    let names: Vec<String> = folders
        .iter()
        .map(|folder| folder.display().to_string())
        .collect();
    let count = folders
        .iter()
        .map(|folder| data_files_in(folder).map(|files| files.len()))
        .sum::<Option<usize>>();
    match count {
        Some(1) => format!("files in {} (1 data file)", names.join(", ")),
        Some(count) => format!("files in {} ({count} data files)", names.join(", ")),
        None => format!("files in {}", names.join(", ")),
    }
}

// ----- private helpers -----

fn not_usable(problem: impl Into<String>) -> SourceError {
    SourceError::FilesNotUsable {
        problem: problem.into(),
    }
}

/// One folder as [`files_readable_folders`] checks it.
fn readable_folder(folder: &Path) -> Result<PathBuf, SourceError> {
    let shown = folder.display();
    if !folder.is_absolute() {
        return Err(not_usable(format!(
            "`{shown}` is not an absolute path; give the folder's full path (such as \
             /data/exports): ferry's commands and its server may run from different directories"
        )));
    }
    // Missing, a file, or closed to ferry: one sentence for all, so that a caller of the
    // server's API cannot learn which paths exist on the server's machine (as with
    // `DuckDbNotUsable`).
    let no_readable_folder = || {
        not_usable(format!(
            "there is no folder ferry can read at {shown}; check the path, that it names a \
             folder (not a file), and that the user ferry runs as may read and enter it"
        ))
    };
    let metadata = std::fs::metadata(folder).map_err(|_| no_readable_folder())?;
    if !metadata.is_dir() {
        return Err(no_readable_folder());
    }
    std::fs::read_dir(folder).map_err(|_| no_readable_folder())?;
    let canonical = std::fs::canonicalize(folder).map_err(|_| no_readable_folder())?;
    if canonical.parent().is_none() {
        return Err(not_usable(format!(
            "{shown} is the root of the file system; name the folder that holds the data files, \
             so that a model cannot read every file on this machine"
        )));
    }
    Ok(canonical)
}

fn describe_folders(folders: &[PathBuf]) -> String {
    folders
        .iter()
        .map(|folder| folder.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// How DuckDB reads a data file, chosen by its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileFormat {
    Csv,
    Tsv,
    Parquet,
    Json,
    NewlineDelimitedJson,
}

/// The extensions ferry makes views for, longest first so that `.csv.gz` wins over `.gz`
/// (which is not one): DuckDB decompresses `.gz` itself.
const DATA_FILE_EXTENSIONS: [(&str, FileFormat); 11] = [
    (".ndjson.gz", FileFormat::NewlineDelimitedJson),
    (".jsonl.gz", FileFormat::NewlineDelimitedJson),
    (".json.gz", FileFormat::Json),
    (".csv.gz", FileFormat::Csv),
    (".tsv.gz", FileFormat::Tsv),
    (".parquet", FileFormat::Parquet),
    (".ndjson", FileFormat::NewlineDelimitedJson),
    (".jsonl", FileFormat::NewlineDelimitedJson),
    (".json", FileFormat::Json),
    (".csv", FileFormat::Csv),
    (".tsv", FileFormat::Tsv),
];

/// A data file directly in a named folder, and the view it gets.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DataFile {
    path: PathBuf,
    format: FileFormat,
    view_name: String,
}

/// The data files directly in `folder` (not in its subfolders), by name; `None` when the folder
/// cannot be listed. Hidden files (`.name`) are left out, and so are names DuckDB would read as
/// a pattern (`*`, `?`, `[`, `{`): a model can still read those with `read_csv`.
fn data_files_in(folder: &Path) -> Option<Vec<DataFile>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(folder).ok()?.flatten() {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        if file_name.starts_with('.') || file_name.contains(['*', '?', '[', '{']) {
            continue;
        }
        // `metadata` follows links: a link to a file inside the folders is a data file too.
        if !std::fs::metadata(entry.path()).is_ok_and(|metadata| metadata.is_file()) {
            continue;
        }
        let lower_name = file_name.to_lowercase();
        let Some((extension, format)) = DATA_FILE_EXTENSIONS
            .iter()
            .find(|(extension, _)| lower_name.ends_with(extension))
        else {
            continue;
        };
        let stem = &lower_name[..lower_name.len() - extension.len()];
        if stem.is_empty() {
            continue;
        }
        files.push(DataFile {
            path: entry.path(),
            format: *format,
            view_name: view_name(stem),
        });
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Some(files)
}

/// `Customers 2024-06` → `customers_2024_06`: lower case, every character but a letter, a digit
/// or `_` replaced by `_`.
fn view_name(stem: &str) -> String {
    stem.chars()
        .map(|character| {
            if character.is_alphanumeric() || character == '_' {
                character
            } else {
                '_'
            }
        })
        .collect()
}

/// The in-memory DuckDB a files model runs on: confined to the folders, with a view per data
/// file, and its configuration locked.
fn open_files_database(folders: &[PathBuf]) -> Result<ModelConnection, SourceError> {
    let folders = files_readable_folders(folders)?;
    let mut files = Vec::new();
    for folder in &folders {
        files.extend(data_files_in(folder).unwrap_or_default());
    }

    let open_failed = |error: duckdb::Error| SourceError::Warehouse {
        reason: format!("cannot start DuckDB to read the files: {error}"),
    };
    // Spilled blocks go to the system's temporary folder rather than `.tmp` in whatever
    // directory ferry was started from (DuckDB's default for an in-memory database); DuckDB
    // removes the folder when it created it and the database closes.
    let spill_directory = std::env::temp_dir().join(format!("ferry-duckdb-{}", std::process::id()));
    let config = Config::default()
        .enable_autoload_extension(false)
        .and_then(|config| config.with("autoinstall_known_extensions", "false"))
        .and_then(|config| config.with("allow_community_extensions", "false"))
        .and_then(|config| {
            config.with("temp_directory", spill_directory.to_string_lossy().as_ref())
        })
        .map_err(open_failed)?;
    let config = with_memory_limit(config).map_err(|reason| SourceError::Warehouse { reason })?;
    let connection = Connection::open_in_memory_with_flags(config).map_err(open_failed)?;

    let folder_list = folders
        .iter()
        .map(|folder| sql_string(&folder.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(", ");
    // `allowed_directories` can only be set while external access is on, and external access
    // cannot be turned back on once off: the order matters. The lock comes last, so that the
    // model can change no setting at all (not `allowed_directories`, not `home_directory`).
    let mut setup = vec![
        format!("SET allowed_directories = [{folder_list}]"),
        format!(
            "SET home_directory = {}",
            sql_string(&folders[0].to_string_lossy())
        ),
        "SET enable_external_access = false".to_string(),
    ];
    setup.extend(view_statements(&files, &folders));
    setup.push("SET lock_configuration = true".to_string());
    connection
        .execute_batch(&setup.join(";\n"))
        .map_err(open_failed)?;

    Ok(ModelConnection {
        connection,
        files_hints: Some(FilesHints {
            outside_folders: format!(
                "a model of this connection reads only files in {}; copy the file there, or add \
                 its folder to the connection",
                describe_folders(&folders)
            ),
            missing_table: format!(
                "(the tables of a files connection are the data files in {}, each named after \
                 its file: `people.csv` is `people`); check the name, or put the file there",
                describe_folders(&folders)
            ),
        }),
    })
}

/// One `CREATE VIEW` per view name. Views are bound when a model reads them, not here
/// (`DEFER_BINDING`): reading the first rows of every CSV in the folder for every model would
/// be slow, and an unreadable file would fail models that never read it.
fn view_statements(files: &[DataFile], folders: &[PathBuf]) -> Vec<String> {
    let mut files_by_view: BTreeMap<&str, Vec<&DataFile>> = BTreeMap::new();
    for file in files {
        files_by_view
            .entry(file.view_name.as_str())
            .or_default()
            .push(file);
    }
    files_by_view
        .into_iter()
        .map(|(name, clashing)| {
            let query = match clashing.as_slice() {
                [file] => format!("SELECT * FROM {}", read_function(file)),
                // A view that fails when read, with the reason: models that do not read this
                // name keep working.
                _ => {
                    let paths: Vec<String> = clashing
                        .iter()
                        .map(|file| file.path.display().to_string())
                        .collect();
                    let message = format!(
                        "`{name}` could be any of {}: files in {} whose names differ only in \
                         extension, case or punctuation all make the view `{name}`. Read the \
                         one you mean by its path, such as {}, or rename the others",
                        paths.join(" and "),
                        describe_folders(folders),
                        read_function(clashing[0])
                    );
                    format!(
                        "SELECT * FROM range(1) WHERE error({}) IS NULL",
                        sql_string(&message)
                    )
                }
            };
            format!(
                "CREATE VIEW {} WITH (DEFER_BINDING) AS {query}",
                sql_identifier(name)
            )
        })
        .collect()
}

/// The DuckDB table function call that reads `file`.
///
/// A CSV file's dates, timestamps (with or without a zone) and booleans are detected as such,
/// but its numbers stay text, exactly as written: DuckDB would read the zip code `02139` as the
/// integer 2139, a 20-digit id as a float, and the amount `19.99` as a binary float, and a sync
/// would send the damage to Stripe without a word. Text loses nothing, ferry turns digits into
/// the integers Stripe wants, and DuckDB refuses to compare text with a number (`amount > 100`
/// asks for a cast) rather than compare it as text. A model casts where it needs a number
/// (`amount::DECIMAL(10,2)`, `quantity::INTEGER`), or reads the file with its own types:
/// `read_csv('orders.csv', types = {'amount': 'DECIMAL(10,2)'})`.
fn read_function(file: &DataFile) -> String {
    let path = sql_string(&file.path.to_string_lossy());
    match file.format {
        FileFormat::Csv => format!("read_csv({path}, {CSV_TYPE_CANDIDATES})"),
        FileFormat::Tsv => format!("read_csv({path}, delim = '\\t', {CSV_TYPE_CANDIDATES})"),
        FileFormat::Parquet => format!("read_parquet({path})"),
        FileFormat::Json => format!("read_json({path})"),
        FileFormat::NewlineDelimitedJson => {
            format!("read_json({path}, format = 'newline_delimited')")
        }
    }
}

/// The types DuckDB may detect in a CSV file's columns (see [`read_function`]).
const CSV_TYPE_CANDIDATES: &str =
    "auto_type_candidates = ['BOOLEAN', 'DATE', 'TIMESTAMP', 'TIMESTAMPTZ', 'VARCHAR']";

/// Refuses a model whose WITH clause writes (`WITH x AS (COPY (…) TO 'file') SELECT …`, or an
/// INSERT, UPDATE, DELETE or MERGE): DuckDB runs such a statement as a query, and the folders a
/// model may read are folders it could write to. DuckDB's own parser decides
/// (`json_serialize_sql`); DuckDB refuses such clauses below the top level itself.
fn refuse_writing_ctes(connection: &Connection, statement: &str) -> Result<(), SourceError> {
    const WRITING_NODES: [&str; 5] = [
        "COPY_QUERY_NODE",
        "INSERT_QUERY_NODE",
        "UPDATE_QUERY_NODE",
        "DELETE_QUERY_NODE",
        "MERGE_QUERY_NODE",
    ];
    let serialized: String = connection
        .query_row(
            "SELECT json_serialize_sql(?)",
            duckdb::params![statement],
            |row| row.get(0),
        )
        .map_err(|error| SourceError::Warehouse {
            reason: format!("DuckDB cannot read the model's SQL: {error}"),
        })?;
    let tree: serde_json::Value =
        serde_json::from_str(&serialized).map_err(|error| SourceError::Warehouse {
            reason: format!("DuckDB described the model's SQL in JSON ferry cannot read: {error}"),
        })?;
    // A model DuckDB cannot parse fails with DuckDB's own message when it is prepared.
    if tree.get("error").and_then(serde_json::Value::as_bool) == Some(true) {
        return Ok(());
    }
    match find_node_type(&tree, &WRITING_NODES) {
        Some(node) => Err(SourceError::ReadOnlyViolation {
            message: format!(
                "its WITH clause holds a {} statement",
                node.trim_end_matches("_QUERY_NODE")
            ),
        }),
        None => Ok(()),
    }
}

/// The first `"type"` anywhere in DuckDB's JSON form of a statement that is one of `wanted`.
fn find_node_type<'a>(tree: &'a serde_json::Value, wanted: &[&str]) -> Option<&'a str> {
    match tree {
        serde_json::Value::Object(object) => object.iter().find_map(|(key, value)| match value {
            serde_json::Value::String(text)
                if key.as_str() == "type" && wanted.contains(&text.as_str()) =>
            {
                Some(text.as_str())
            }
            _ => find_node_type(value, wanted),
        }),
        serde_json::Value::Array(items) => {
            items.iter().find_map(|item| find_node_type(item, wanted))
        }
        _ => None,
    }
}

fn sql_string(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn sql_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A confined database over a fresh folder holding one CSV file.
    fn confined() -> (tempfile::TempDir, ModelConnection) {
        let folder = tempfile::tempdir().expect("temporary folder");
        std::fs::write(folder.path().join("people.csv"), "id,name\n1,Ada\n").expect("CSV");
        let session = open_files_database(&[folder.path().to_path_buf()]).expect("opens");
        (folder, session)
    }

    /// DuckDB's refusal of `sql` on a confined database, or `ran` when it ran.
    fn refusal(session: &ModelConnection, sql: &str) -> String {
        match session.connection.execute_batch(sql) {
            Ok(()) => "ran".to_string(),
            Err(error) => error.to_string(),
        }
    }

    /// A missing folder, a file and a folder ferry may not enter get the same words, so the
    /// message tells nobody which paths exist.
    #[test]
    fn a_folder_that_cannot_be_read_does_not_say_whether_the_path_exists() {
        use std::os::unix::fs::PermissionsExt as _;
        let folder = tempfile::tempdir().expect("temporary folder");
        let file = folder.path().join("people.csv");
        std::fs::write(&file, "id\n1\n").expect("CSV");
        let closed = folder.path().join("closed");
        std::fs::create_dir(&closed).expect("folder");
        std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o000)).unwrap();
        let message = |path: &Path| {
            let error = readable_folder(path).expect_err("refused").to_string();
            error.replace(&path.display().to_string(), "PATH")
        };
        let expected = "the files connection cannot be used: there is no folder ferry can read \
                        at PATH; check the path, that it names a folder (not a file), and that \
                        the user ferry runs as may read and enter it";
        assert_eq!(message(&folder.path().join("missing")), expected);
        assert_eq!(message(&file), expected);
        assert_eq!(message(Path::new("/etc/passwd/nothing")), expected);
        // root reads every folder, so only a test run as another user sees the closed one.
        if std::fs::read_dir(&closed).is_err() {
            assert_eq!(message(&closed), expected);
        }
        std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn file_names_become_view_names() {
        assert_eq!(view_name("customers"), "customers");
        assert_eq!(view_name("customers 2024-06"), "customers_2024_06");
        assert_eq!(view_name("données"), "données");
        assert_eq!(view_name("a.b"), "a_b");
    }

    #[test]
    fn what_no_model_can_reach_even_past_ferrys_sql_check() {
        // Statements the model check refuses before DuckDB sees them; DuckDB refuses them too.
        let (folder, session) = confined();
        let inside = folder.path().join("written.csv");
        let cases = [
            "SET enable_external_access = true".to_string(),
            "SET allowed_directories = ['/']".to_string(),
            "SET home_directory = '/etc'".to_string(),
            "RESET lock_configuration".to_string(),
            "SET lock_configuration = false".to_string(),
            "LOAD httpfs".to_string(),
            "ATTACH '/tmp/ferry-attached.duckdb' AS other".to_string(),
            "COPY (SELECT 1) TO '/tmp/ferry-copied.csv'".to_string(),
        ];
        for sql in &cases {
            let refusal = refusal(&session, sql);
            assert_ne!(refusal, "ran", "{sql} ran");
        }
        assert!(!Path::new("/tmp/ferry-copied.csv").exists());
        assert!(!Path::new("/tmp/ferry-attached.duckdb").exists());
        // Inside the folder, DuckDB's access rule alone would let COPY write: ferry never runs
        // a COPY statement (it is not a query), and refuses one inside a WITH clause.
        let writing = format!(
            "WITH w AS (COPY (SELECT 1) TO {}) SELECT 1",
            sql_string(&inside.to_string_lossy())
        );
        let refused = refuse_writing_ctes(&session.connection, &writing)
            .expect_err("a writing WITH clause is refused");
        assert_eq!(
            refused.to_string(),
            "the model tried to write (its WITH clause holds a COPY statement); a model must be a \
             read-only SELECT"
        );
        assert!(!inside.exists());
        refuse_writing_ctes(&session.connection, "WITH c AS (SELECT 1) SELECT * FROM c")
            .expect("a reading WITH clause is fine");
    }
}
