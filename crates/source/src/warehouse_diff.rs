//! Change detection inside the warehouse (opt-in per connection): ferry keeps, in one schema of
//! the warehouse, a table per sync of the rows Stripe acknowledged (the row's match key and a
//! hash of the columns the sync reads), and the warehouse itself finds the rows that are new,
//! changed or duplicated, so only those travel to ferry. The rest are only counted.
//!
//! The bookkeeping, in the connection's `change_detection_schema` (say `ferry`):
//! - `ferry.ferry_syncs (sync_uid, sync_name, created_at)`: one line per sync whose table was
//!   created. A line without its table means the table was dropped: ferry says so and stops,
//!   rather than reading (and comparing) the whole model again without being asked.
//! - `ferry.sync_<uid> (key, row_hash)`: acknowledged rows. A row is written there only after
//!   ferry's workspace committed Stripe's answer for it, one batch at a time, so a crash loses
//!   acknowledgements (those rows travel again and are found unchanged) but never claims one.
//!
//! The SQL differs per warehouse only in a few expressions ([`Dialect`]): the key's text form,
//! the row hash, and how to upsert; the anti-join and window are standard SQL that Snowflake,
//! BigQuery, Redshift and Databricks run as well.

use crate::duckdb_source::is_duckdb_file;
use crate::postgres_source::PostgresConnection;
use crate::{model_sql::ValidatedModelSql, QueryOptions, RowStream, SourceConfig, SourceError};
use std::path::Path;
use std::time::Duration;
use tokio_postgres::error::SqlState;

/// Columns the change query adds after the model's own, in this order: the row's position in
/// the model, its key as the warehouse matched it, its hash, how many rows of the model share
/// the key, and how many rows the model has in all.
pub const ADDED_COLUMNS: [&str; 5] = [
    "__ferry_row",
    "__ferry_key",
    "__ferry_hash",
    "__ferry_copies",
    "__ferry_total",
];

/// What a sync's change detection needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffSpec {
    /// The connection's `change_detection_schema`.
    pub schema: String,
    /// The sync's stable id (names its table) and its name (for people reading `ferry_syncs`).
    pub sync_uid: String,
    pub sync_name: String,
    /// The model column holding the match key, and whether keys match ignoring case.
    pub key_column: String,
    pub key_ignores_case: bool,
    /// The model columns the sync reads (the key's too): only a change in one of them makes a
    /// row travel.
    pub columns: Vec<String>,
    /// Changes whenever the sync's mapping or behaviour does, so that every row travels once
    /// after such a change.
    pub fingerprint: String,
}

impl DiffSpec {
    fn table_name(&self) -> String {
        format!("sync_{}", self.sync_uid)
    }

    fn table(&self) -> String {
        format!("{}.{}", quote(&self.schema), quote(&self.table_name()))
    }

    fn registry(&self) -> String {
        registry_table(&self.schema)
    }
}

fn registry_table(schema: &str) -> String {
    format!("{}.{}", quote(schema), quote("ferry_syncs"))
}

/// A schema name every warehouse accepts: lower-case letters, digits and `_`, at most 63
/// characters, not starting with a digit.
pub fn check_schema_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a schema name ferry accepts: use lower-case letters, digits and `_` \
             (at most 63 characters, not starting with a digit), for example `ferry`"
        ))
    }
}

/// Whether a sync's table is there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiffTable {
    /// The table exists: the warehouse can compare the model with it.
    Ready,
    /// The sync never ran with change detection (a preview does not create the table): the
    /// whole model is read.
    NotCreated,
}

/// Sets a connection up for change detection when it is saved: creates the schema unless it
/// exists and the registry of syncs in it. Errors say what to grant.
pub async fn prepare_schema(config: &SourceConfig, schema: &str) -> Result<(), SourceError> {
    check_schema_name(schema).map_err(|problem| SourceError::ChangeDetection { problem })?;
    let statements = [
        format!("CREATE SCHEMA IF NOT EXISTS {}", quote(schema)),
        format!(
            "CREATE TABLE IF NOT EXISTS {} (sync_uid VARCHAR(64) PRIMARY KEY, sync_name \
             VARCHAR(200) NOT NULL, created_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT \
             CURRENT_TIMESTAMP)",
            registry_table(schema)
        ),
    ];
    match config {
        SourceConfig::Postgres { url } => {
            let connection = PostgresConnection::open(url).await?;
            // A schema that exists needs no CREATE right on the database.
            let exists = postgres_schema_exists(&connection, schema).await?;
            for statement in statements.iter().skip(usize::from(exists)) {
                connection
                    .client
                    .batch_execute(statement)
                    .await
                    .map_err(|error| postgres_error(&connection, url, schema, &error))?;
            }
            Ok(())
        }
        SourceConfig::DuckDb { path } => {
            let path = path.clone();
            let schema = schema.to_string();
            blocking(move || {
                let connection = open_read_write(&path, &schema)?;
                connection
                    .execute_batch(&statements.join(";\n"))
                    .map_err(|error| duckdb_error(&path, &schema, &error))?;
                close(connection, &path, &schema)
            })
            .await
        }
        other => Err(not_available(other)),
    }
}

/// Change detection keeps its bookkeeping tables with DuckDB and PostgreSQL only so far.
fn not_available(config: &SourceConfig) -> SourceError {
    SourceError::ChangeDetection {
        problem: format!(
            "change detection in the warehouse is not available for {} yet; turn it off for \
             this connection (ferry then compares rows with its own snapshot)",
            config.describe()
        ),
    }
}

/// Checks the sync's table before its model is read. With `create` (a run), a sync that has
/// none yet gets it; without (a preview), nothing is written.
pub async fn open_table(
    config: &SourceConfig,
    spec: &DiffSpec,
    create: bool,
) -> Result<DiffTable, SourceError> {
    let table = spec.table();
    let register = format!(
        "INSERT INTO {} (sync_uid, sync_name) VALUES ('{}', '{}')",
        spec.registry(),
        spec.sync_uid,
        spec.sync_name.replace('\'', "''")
    );
    let create_table = format!(
        "CREATE TABLE IF NOT EXISTS {table} (key VARCHAR PRIMARY KEY, row_hash VARCHAR NOT NULL)"
    );
    match config {
        SourceConfig::Postgres { url } => {
            let connection = PostgresConnection::open(url).await?;
            let failed = |error: tokio_postgres::Error| {
                postgres_error(&connection, url, &spec.schema, &error)
            };
            if !postgres_schema_exists(&connection, &spec.schema).await? {
                return Err(missing_schema(spec, false));
            }
            let exists = |name: String| {
                let client = &connection.client;
                async move {
                    client
                        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&name])
                        .await
                        .map(|row| row.get::<_, bool>(0))
                }
            };
            if !exists(spec.registry()).await.map_err(failed)? {
                return Err(missing_schema(spec, true));
            }
            let registered = connection
                .client
                .query_opt(
                    &format!("SELECT 1 FROM {} WHERE sync_uid = $1", spec.registry()),
                    &[&spec.sync_uid],
                )
                .await
                .map_err(failed)?
                .is_some();
            let table_exists = exists(table.clone()).await.map_err(failed)?;
            decide(spec, registered, table_exists)?;
            if create && !(registered && table_exists) {
                let mut statements = vec![create_table];
                if !registered {
                    statements.push(register);
                }
                connection
                    .client
                    .batch_execute(&format!("BEGIN; {}; COMMIT", statements.join("; ")))
                    .await
                    .map_err(failed)?;
                return Ok(DiffTable::Ready);
            }
            Ok(if table_exists {
                DiffTable::Ready
            } else {
                DiffTable::NotCreated
            })
        }
        SourceConfig::DuckDb { path } => {
            let path = path.clone();
            let spec = spec.clone();
            blocking(move || {
                let connection = if create {
                    open_read_write(&path, &spec.schema)?
                } else {
                    crate::duckdb_source::open_read_only(&path)?
                };
                let failed = |error: duckdb::Error| duckdb_error(&path, &spec.schema, &error);
                let count = |sql: &str, params: &[&str]| -> Result<bool, SourceError> {
                    let params: Vec<&dyn duckdb::ToSql> =
                        params.iter().map(|p| p as &dyn duckdb::ToSql).collect();
                    connection
                        .query_row(sql, params.as_slice(), |row| row.get::<_, i64>(0))
                        .map(|n| n > 0)
                        .map_err(failed)
                };
                let table_exists = |name: &str| {
                    count(
                        "SELECT count(*) FROM information_schema.tables \
                         WHERE table_schema = ? AND table_name = ?",
                        &[&spec.schema, name],
                    )
                };
                if !count(
                    "SELECT count(*) FROM information_schema.schemata WHERE schema_name = ?",
                    &[&spec.schema],
                )? {
                    return Err(missing_schema(&spec, false));
                }
                if !table_exists("ferry_syncs")? {
                    return Err(missing_schema(&spec, true));
                }
                let registered = count(
                    &format!(
                        "SELECT count(*) FROM {} WHERE sync_uid = ?",
                        spec.registry()
                    ),
                    &[&spec.sync_uid],
                )?;
                let exists = table_exists(&spec.table_name())?;
                decide(&spec, registered, exists)?;
                if create && !(registered && exists) {
                    let mut statements = vec![create_table];
                    if !registered {
                        statements.push(register);
                    }
                    connection
                        .execute_batch(&format!("BEGIN; {}; COMMIT", statements.join("; ")))
                        .map_err(failed)?;
                    close(connection, &path, &spec.schema)?;
                    return Ok(DiffTable::Ready);
                }
                Ok(if exists {
                    DiffTable::Ready
                } else {
                    DiffTable::NotCreated
                })
            })
            .await
        }
        other => Err(not_available(other)),
    }
}

/// A registered sync whose table is gone: its acknowledgements are lost, and ferry does not
/// read the whole model again unless asked to.
fn decide(spec: &DiffSpec, registered: bool, table_exists: bool) -> Result<(), SourceError> {
    if registered && !table_exists {
        return Err(SourceError::ChangeDetection {
            problem: format!(
                "the table {} that holds the rows of sync '{}' Stripe acknowledged is gone \
                 (dropped?), so the warehouse cannot tell which rows changed; ferry does not read \
                 and compare the whole model again unless asked. To rebuild it, run `DELETE FROM \
                 {} WHERE sync_uid = '{}'` in the warehouse: the next run then reads the whole \
                 model once and sends Stripe only what differs from ferry's workspace. Or turn \
                 change detection in the warehouse off (connect again without \
                 --change-detection-schema)",
                spec.table(),
                spec.sync_name,
                spec.registry(),
                spec.sync_uid
            ),
        });
    }
    Ok(())
}

fn missing_schema(spec: &DiffSpec, only_registry: bool) -> SourceError {
    let what = if only_registry {
        format!(
            "the table {} that change detection keeps in schema `{}` does not exist",
            spec.registry(),
            spec.schema
        )
    } else {
        format!(
            "the schema `{}` does not exist in the warehouse",
            spec.schema
        )
    };
    SourceError::ChangeDetection {
        problem: format!(
            "{what}; save the connection again (`ferry connect … --change-detection-schema {}`, \
             or the connection's form) to create it, or turn change detection in the warehouse \
             off (connect again without --change-detection-schema)",
            spec.schema
        ),
    }
}

/// The model wrapped so that the warehouse returns only the rows that need ferry: rows whose
/// key has no acknowledged hash or another one, and every copy of a key the model holds more
/// than once (ferry rejects those). Each row carries [`ADDED_COLUMNS`]; when no row needs ferry,
/// one row of NULLs still carries the model's row count. With `all_rows` (a full resync) every
/// row comes back, keys and hashes computed alike.
pub fn change_query(config: &SourceConfig, model: &str, spec: &DiffSpec, all_rows: bool) -> String {
    let dialect = Dialect::of(config);
    let key = dialect.key_text(
        &format!("q.{}", quote(&spec.key_column)),
        spec.key_ignores_case,
    );
    let fields: Vec<String> = spec
        .columns
        .iter()
        .map(|column| format!("q.{}", quote(column)))
        .collect();
    let hash = dialect.row_hash(&spec.fingerprint, &fields);
    let row_number = dialect.row_number();
    let table = spec.table();
    let condition = if all_rows {
        "TRUE"
    } else {
        "w.__ferry_copies > 1 OR a.key IS NULL OR a.row_hash <> w.__ferry_hash"
    };
    // The model ends on a line of its own: it may end with a `--` comment.
    format!(
        "SELECT d.*, t.__ferry_total FROM (SELECT count(*) AS __ferry_total FROM (\n{model}\n) AS c) AS t \
         LEFT JOIN (SELECT w.* FROM (SELECT m.*, count(*) OVER (PARTITION BY m.__ferry_key ORDER BY m.__ferry_hash \
         ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) AS __ferry_copies \
         FROM (SELECT q.*, {row_number} AS __ferry_row, {key} AS __ferry_key, {hash} AS __ferry_hash \
         FROM (\n{model}\n) AS q) AS m) AS w LEFT JOIN {table} AS a ON a.key = w.__ferry_key \
         WHERE {condition}) AS d ON TRUE"
    )
}

/// Runs the model through [`change_query`] (read-only, like any model).
pub async fn query_changes(
    config: &SourceConfig,
    model_sql: &str,
    spec: &DiffSpec,
    all_rows: bool,
    options: &QueryOptions,
) -> Result<RowStream, SourceError> {
    let model = crate::validate_model_sql(model_sql)?;
    let wrapped =
        ValidatedModelSql::trusted(change_query(config, model.statement(), spec, all_rows));
    crate::start_query(config, wrapped, options).await
}

/// Writes acknowledged rows to a sync's table, batch by batch, over one connection kept for
/// the run.
pub struct Acknowledger {
    spec: DiffSpec,
    config: SourceConfig,
    writer: Option<Writer>,
}

enum Writer {
    Postgres(PostgresConnection),
    DuckDb(std::sync::Arc<std::sync::Mutex<duckdb::Connection>>),
}

/// How long one batch of acknowledgements may take before it is given up (the rows then
/// travel again next run).
const ACKNOWLEDGE_TIMEOUT: Duration = Duration::from_secs(120);

impl Acknowledger {
    /// Opens nothing yet: the connection is made at the first batch, after the model was read
    /// (DuckDB allows one writer, and the model reads the same file).
    pub fn new(config: &SourceConfig, spec: &DiffSpec) -> Acknowledger {
        Acknowledger {
            spec: spec.clone(),
            config: config.clone(),
            writer: None,
        }
    }

    /// Records `(key, row hash)` pairs as acknowledged; a later pair for the same key wins.
    pub async fn acknowledge(&mut self, rows: &[(String, String)]) -> Result<(), SourceError> {
        if rows.is_empty() {
            return Ok(());
        }
        // One pair per key: an upsert may not touch a row twice.
        let mut unique: std::collections::HashMap<&str, &str> =
            std::collections::HashMap::with_capacity(rows.len());
        for (key, hash) in rows {
            unique.insert(key, hash);
        }
        let (keys, hashes): (Vec<String>, Vec<String>) = unique
            .into_iter()
            .map(|(k, h)| (k.to_string(), h.to_string()))
            .unzip();
        let write = self.write(keys, hashes);
        tokio::time::timeout(ACKNOWLEDGE_TIMEOUT, write)
            .await
            .map_err(|_| SourceError::ChangeDetection {
                problem: format!(
                    "writing acknowledged rows to {} took longer than {}",
                    self.spec.table(),
                    crate::human_duration(ACKNOWLEDGE_TIMEOUT)
                ),
            })?
    }

    async fn write(&mut self, keys: Vec<String>, hashes: Vec<String>) -> Result<(), SourceError> {
        let table = self.spec.table();
        let schema = self.spec.schema.clone();
        if self.writer.is_none() {
            self.writer = Some(match &self.config {
                SourceConfig::Postgres { url } => {
                    Writer::Postgres(PostgresConnection::open(url).await?)
                }
                SourceConfig::DuckDb { path } => {
                    let path = path.clone();
                    let schema = schema.clone();
                    let connection = blocking(move || {
                        let connection = open_read_write(&path, &schema)?;
                        connection
                            .execute_batch(
                                "CREATE TEMP TABLE IF NOT EXISTS ferry_acknowledged \
                                 (key VARCHAR, row_hash VARCHAR)",
                            )
                            .map_err(|error| duckdb_error(&path, &schema, &error))?;
                        Ok(connection)
                    })
                    .await?;
                    Writer::DuckDb(std::sync::Arc::new(std::sync::Mutex::new(connection)))
                }
                other => return Err(not_available(other)),
            });
        }
        match (self.writer.as_ref().expect("opened above"), &self.config) {
            (Writer::Postgres(connection), SourceConfig::Postgres { url }) => {
                let statement = format!(
                    "INSERT INTO {table} (key, row_hash) SELECT k, h FROM unnest($1::text[], \
                     $2::text[]) AS u(k, h) ON CONFLICT (key) DO UPDATE SET row_hash = \
                     EXCLUDED.row_hash"
                );
                connection
                    .client
                    .execute(&statement, &[&keys, &hashes])
                    .await
                    .map_err(|error| postgres_error(connection, url, &schema, &error))?;
                Ok(())
            }
            (Writer::DuckDb(connection), SourceConfig::DuckDb { path }) => {
                let connection = std::sync::Arc::clone(connection);
                let path = path.clone();
                blocking(move || {
                    let connection = connection.lock().map_err(|_| SourceError::Warehouse {
                        reason: "the DuckDB writer failed earlier".to_string(),
                    })?;
                    let failed = |error: duckdb::Error| duckdb_error(&path, &schema, &error);
                    {
                        let mut appender = connection
                            .appender_to_catalog_and_db("ferry_acknowledged", "temp", "main")
                            .map_err(failed)?;
                        for (key, hash) in keys.iter().zip(&hashes) {
                            appender.append_row([key, hash]).map_err(failed)?;
                        }
                        appender.flush().map_err(failed)?;
                    }
                    connection
                        .execute_batch(&format!(
                            "BEGIN; INSERT OR REPLACE INTO {table} SELECT key, row_hash FROM \
                             temp.main.ferry_acknowledged; DELETE FROM \
                             temp.main.ferry_acknowledged; COMMIT"
                        ))
                        .map_err(failed)
                })
                .await
            }
            _ => unreachable!("the writer matches the connection"),
        }
    }
}

/// The few expressions each warehouse writes its own way.
enum Dialect {
    Postgres,
    DuckDb,
}

impl Dialect {
    fn of(config: &SourceConfig) -> Dialect {
        match config {
            SourceConfig::Postgres { .. } => Dialect::Postgres,
            SourceConfig::DuckDb { .. } => Dialect::DuckDb,
            // Never used: `prepare_schema` and `open_table` refuse the others first.
            _ => Dialect::DuckDb,
        }
    }

    /// The key as text, trimmed, lower-cased when keys ignore case.
    fn key_text(&self, column: &str, ignore_case: bool) -> String {
        let text = match self {
            Dialect::Postgres => format!("btrim(CAST({column} AS text))"),
            Dialect::DuckDb => format!("trim(CAST({column} AS VARCHAR))"),
        };
        if ignore_case {
            format!("lower({text})")
        } else {
            text
        }
    }

    /// The row's position in the model, where it costs nothing. PostgreSQL computes a window
    /// function in one process, which would keep the hashing below it from running in parallel
    /// workers: there ferry numbers the rows that travel itself.
    fn row_number(&self) -> &'static str {
        match self {
            Dialect::Postgres => "CAST(NULL AS bigint)",
            Dialect::DuckDb => "row_number() OVER ()",
        }
    }

    /// A hash of the fingerprint and of the row's values, unambiguous (NULL is not the text
    /// `NULL`, and no two rows of values hash the same text).
    ///
    /// PostgreSQL: the row's own text form (`ROW(…)::text` quotes what needs quoting and writes
    /// NULL as nothing), hashed by `hashtextextended` to 64 bits: twice as fast as `md5` there,
    /// and stable across versions (hash partitioning relies on it). DuckDB: each value as `n`
    /// (NULL) or `v`, its length, `:` and its text, hashed by `md5` (in SQL every build has; no
    /// JSON extension needed).
    fn row_hash(&self, fingerprint: &str, fields: &[String]) -> String {
        let fingerprint = fingerprint.replace('\'', "''");
        match self {
            Dialect::Postgres => format!(
                "CAST(hashtextextended('{fingerprint}' || CAST(ROW({}) AS text), 0) AS text)",
                fields.join(", ")
            ),
            Dialect::DuckDb => {
                let parts: Vec<String> = fields
                    .iter()
                    .map(|field| {
                        let text = format!("CAST({field} AS VARCHAR)");
                        format!(
                            "(CASE WHEN {field} IS NULL THEN 'n' ELSE 'v' || CAST(length({text}) \
                             AS VARCHAR) || ':' || {text} END)"
                        )
                    })
                    .collect();
                format!("md5('{fingerprint}' || {})", parts.join(" || "))
            }
        }
    }
}

/// `"name"`, with inner quotes doubled.
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

async fn postgres_schema_exists(
    connection: &PostgresConnection,
    schema: &str,
) -> Result<bool, SourceError> {
    connection
        .client
        .query_opt("SELECT 1 FROM pg_namespace WHERE nspname = $1", &[&schema])
        .await
        .map(|row| row.is_some())
        .map_err(|error| SourceError::Warehouse {
            reason: error.to_string(),
        })
}

/// A PostgreSQL error while writing ferry's bookkeeping; a refused right says what to grant.
fn postgres_error(
    connection: &PostgresConnection,
    url: &ferry_core::Secret,
    schema: &str,
    error: &tokio_postgres::Error,
) -> SourceError {
    if error.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) {
        let user = ferry_postgres_connect::PostgresTarget::parse(url.expose())
            .ok()
            .and_then(|target| target.config().get_user().map(str::to_string))
            .unwrap_or_else(|| "the connection's user".to_string());
        let message = error
            .as_db_error()
            .map(|e| e.message().to_string())
            .unwrap_or_else(|| error.to_string());
        return SourceError::ChangeDetection {
            problem: format!(
                "the warehouse refused ferry's bookkeeping in schema `{schema}` ({message}); \
                 let an administrator run `CREATE SCHEMA IF NOT EXISTS {schema}; GRANT USAGE, \
                 CREATE ON SCHEMA {schema} TO {user};` (ferry needs to create and write tables \
                 there, nowhere else), or turn change detection in the warehouse off (connect \
                 again without --change-detection-schema)"
            ),
        };
    }
    connection.model_error(
        error,
        "",
        Duration::ZERO,
        crate::TimeoutSetting::Statement,
        0,
    )
}

fn open_read_write(path: &Path, schema: &str) -> Result<duckdb::Connection, SourceError> {
    if !is_duckdb_file(path) {
        return Err(SourceError::DuckDbNotUsable {
            path: path.to_path_buf(),
        });
    }
    duckdb::Connection::open(path).map_err(|error| SourceError::ChangeDetection {
        problem: format!(
            "cannot open the DuckDB file {} for writing ({error}); change detection in schema \
             `{schema}` needs to write to it (and no other process may have it open for writing \
             meanwhile), or turn change detection in the warehouse off (connect again without \
             --change-detection-schema)",
            path.display()
        ),
    })
}

fn close(connection: duckdb::Connection, path: &Path, schema: &str) -> Result<(), SourceError> {
    connection
        .close()
        .map_err(|(_, error)| duckdb_error(path, schema, &error))
}

fn duckdb_error(path: &Path, schema: &str, error: &duckdb::Error) -> SourceError {
    SourceError::ChangeDetection {
        problem: format!(
            "DuckDB at {} failed on ferry's bookkeeping in schema `{schema}`: {error}",
            path.display()
        ),
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, SourceError> + Send + 'static,
) -> Result<T, SourceError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| SourceError::Warehouse {
            reason: format!("the DuckDB task stopped unexpectedly: {error}"),
        })?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> DiffSpec {
        DiffSpec {
            schema: "ferry".into(),
            sync_uid: "00ab".into(),
            sync_name: "customers".into(),
            key_column: "email".into(),
            key_ignores_case: true,
            columns: vec!["email".into(), "full name".into()],
            fingerprint: "f1".into(),
        }
    }

    #[test]
    fn schema_names_are_plain_lower_case_words() {
        for good in ["ferry", "_x", "ferry_2"] {
            assert!(check_schema_name(good).is_ok(), "{good}");
        }
        for bad in ["", "Ferry", "1ferry", "fe-rry", "a\"b", &"a".repeat(64)] {
            assert!(check_schema_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_change_query_hashes_the_read_columns_and_keeps_duplicates() {
        let postgres = SourceConfig::Postgres {
            url: ferry_core::Secret::new("postgres://x@h/db"),
        };
        let sql = change_query(&postgres, "SELECT * FROM people -- all", &spec(), false);
        assert!(
            sql.contains("FROM (\nSELECT * FROM people -- all\n) AS q"),
            "{sql}"
        );
        assert!(sql.contains("lower(btrim(CAST(q.\"email\" AS text))) AS __ferry_key"));
        assert!(
            sql.contains(
                "CAST(hashtextextended('f1' || CAST(ROW(q.\"email\", q.\"full name\") AS text), \
                 0) AS text) AS __ferry_hash"
            ),
            "{sql}"
        );
        assert!(sql.contains("CAST(NULL AS bigint) AS __ferry_row"), "{sql}");
        assert!(sql.contains("LEFT JOIN \"ferry\".\"sync_00ab\" AS a ON a.key = w.__ferry_key"));
        assert!(
            sql.contains("w.__ferry_copies > 1 OR a.key IS NULL OR a.row_hash <> w.__ferry_hash")
        );
        let duckdb = SourceConfig::DuckDb {
            path: "/w.duckdb".into(),
        };
        let sql = change_query(&duckdb, "SELECT 1", &spec(), true);
        assert!(
            sql.contains("CAST(q.\"full name\" AS VARCHAR) END))"),
            "{sql}"
        );
        assert!(sql.contains("WHERE TRUE) AS d ON TRUE"), "{sql}");
        assert!(sql.contains("row_number() OVER () AS __ferry_row"), "{sql}");
        assert!(
            sql.contains("md5('f1' || (CASE WHEN q.\"email\" IS NULL THEN 'n' ELSE 'v' ||"),
            "{sql}"
        );
    }
}
