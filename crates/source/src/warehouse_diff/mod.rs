//! Change detection inside the warehouse (opt-in per connection): ferry keeps, in one schema of
//! the warehouse, a table per sync of the rows Stripe acknowledged (the row's match key and a
//! hash of the columns the sync reads), and the warehouse itself finds the rows that are new,
//! changed or duplicated, so only those travel to ferry. The rest are only counted.
//!
//! The bookkeeping, in the connection's `change_detection_schema` (say `ferry`; a database on
//! MySQL, a dataset on BigQuery, `FERRY` on Snowflake):
//! - `ferry.ferry_syncs (sync_uid, sync_name, created_at)`: one line per sync whose table was
//!   created. A line without its table means the table was dropped: ferry says so and stops,
//!   rather than reading (and comparing) the whole model again without being asked.
//! - `ferry.sync_<uid> (key, row_hash)`: acknowledged rows. A row is written there only after
//!   ferry's workspace committed Stripe's answer for it, one batch at a time, so a crash loses
//!   acknowledgements (those rows travel again and are found unchanged) but never claims one.
//!
//! PostgreSQL, DuckDB, MySQL/MariaDB, Snowflake and BigQuery have it. The flow here (which
//! checks, in which order, the change query's anti-join and window) is the same for all; what
//! differs is written once per warehouse: the SQL in [`dialect`] (quoting, the key's text form,
//! the row hash, the tables' definitions, the upsert) and the connection in [`bookkeeping`]
//! (what to open, how to run a statement, the GRANT a refused right asks for).

mod bookkeeping;
mod dialect;

use crate::{model_sql::ValidatedModelSql, QueryOptions, RowStream, SourceConfig, SourceError};
use bookkeeping::{Access, Bookkeeper};
use dialect::Dialect;
use std::time::Duration;

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

/// The registry of syncs that have a table, in ferry's schema.
const REGISTRY_TABLE: &str = "ferry_syncs";

/// The end of every message that offers to switch the mode off.
const TURN_OFF: &str = "turn change detection in the warehouse off (connect again without \
                        --change-detection-schema)";

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
/// exists (one that exists needs no right to create schemas) and the registry of syncs in it.
/// Errors say what to grant.
pub async fn prepare_schema(config: &SourceConfig, schema: &str) -> Result<(), SourceError> {
    check_schema_name(schema).map_err(|problem| SourceError::ChangeDetection { problem })?;
    let dialect = dialect(config)?;
    let mut bookkeeper = Bookkeeper::open(config, dialect.clone(), schema, Access::Write).await?;
    let mut statements = Vec::new();
    if !bookkeeper.schema_exists().await? {
        statements.push(dialect.create_schema(schema));
    }
    statements.push(dialect.create_registry(schema));
    bookkeeper.execute(&statements).await?;
    bookkeeper.close().await
}

/// Checks the sync's table before its model is read. With `create` (a run), a sync that has
/// none yet gets it; without (a preview), nothing is written.
pub async fn open_table(
    config: &SourceConfig,
    spec: &DiffSpec,
    create: bool,
) -> Result<DiffTable, SourceError> {
    let dialect = dialect(config)?;
    let access = if create { Access::Write } else { Access::Read };
    let mut bookkeeper = Bookkeeper::open(config, dialect.clone(), &spec.schema, access).await?;
    if !bookkeeper.schema_exists().await? {
        return Err(missing_schema(&dialect, spec, false));
    }
    if !bookkeeper.table_exists(REGISTRY_TABLE).await? {
        return Err(missing_schema(&dialect, spec, true));
    }
    let registered = bookkeeper.returns_a_row(&dialect.registered(spec)).await?;
    let table_exists = bookkeeper.table_exists(&spec.table_name()).await?;
    decide(&dialect, spec, registered, table_exists)?;
    let table = if create && !(registered && table_exists) {
        // The table first: a crash between the two leaves a table without its line, which the
        // next run registers, never a line without its table.
        let mut statements = vec![dialect.create_sync_table(spec)];
        if !registered {
            statements.push(dialect.register(spec));
        }
        bookkeeper.execute(&statements).await?;
        DiffTable::Ready
    } else if table_exists {
        DiffTable::Ready
    } else {
        DiffTable::NotCreated
    };
    bookkeeper.close().await?;
    Ok(table)
}

/// The dialect of a warehouse that has change detection, or why it has none.
fn dialect(config: &SourceConfig) -> Result<Dialect, SourceError> {
    match config {
        SourceConfig::Postgres { .. } => Ok(Dialect::Postgres),
        SourceConfig::DuckDb { .. } => Ok(Dialect::DuckDb),
        SourceConfig::Mysql { .. } => Ok(Dialect::Mysql),
        SourceConfig::Snowflake(_) => Ok(Dialect::Snowflake),
        SourceConfig::BigQuery(bigquery) => Ok(Dialect::BigQuery {
            project: bigquery.project_id.clone(),
            location: bigquery.location.clone(),
        }),
        SourceConfig::Files { .. } => Err(files_are_read_only()),
        other => Err(not_available(other)),
    }
}

/// Change detection on a warehouse that does not have it (yet): said when the connection is
/// saved, which is also what keeps runs from reaching here.
fn not_available(config: &SourceConfig) -> SourceError {
    SourceError::ChangeDetection {
        problem: format!(
            "change detection inside the warehouse is not available for {}; leave \
             change_detection_schema out, and ferry compares the rows with its workspace",
            config.describe()
        ),
    }
}

/// Files are read, never written: there is no schema to keep acknowledged rows in. ferry's
/// own change detection (in its workspace) still sends Stripe only what changed.
fn files_are_read_only() -> SourceError {
    SourceError::ChangeDetection {
        problem: "a files connection is read-only, so the warehouse cannot keep the rows Stripe \
                  acknowledged; connect without --change-detection-schema (ferry still sends \
                  Stripe only the rows that changed, comparing them in its workspace)"
            .to_string(),
    }
}

/// A registered sync whose table is gone: its acknowledgements are lost, and ferry does not
/// read the whole model again unless asked to.
fn decide(
    dialect: &Dialect,
    spec: &DiffSpec,
    registered: bool,
    table_exists: bool,
) -> Result<(), SourceError> {
    if registered && !table_exists {
        return Err(SourceError::ChangeDetection {
            problem: format!(
                "the table {} that holds the rows of sync '{}' Stripe acknowledged is gone \
                 (dropped?), so the warehouse cannot tell which rows changed; ferry does not read \
                 and compare the whole model again unless asked. To rebuild it, run `{}` in the \
                 warehouse: the next run then reads the whole model once and sends Stripe only \
                 what differs from ferry's workspace. Or {TURN_OFF}",
                dialect.sync_table(spec),
                spec.sync_name,
                dialect.unregister(spec)
            ),
        });
    }
    Ok(())
}

fn missing_schema(dialect: &Dialect, spec: &DiffSpec, only_registry: bool) -> SourceError {
    let what = if only_registry {
        format!(
            "the table {} that change detection keeps in schema `{}` does not exist",
            dialect.registry(&spec.schema),
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
             or the connection's form) to create it, or {TURN_OFF}",
            spec.schema
        ),
    }
}

/// The model wrapped so that the warehouse returns only the rows that need ferry: rows whose
/// key has no acknowledged hash or another one, and every copy of a key the model holds more
/// than once (ferry rejects those). Each row carries [`ADDED_COLUMNS`]; when no row needs ferry,
/// one row of NULLs still carries the model's row count. With `all_rows` (a full resync) every
/// row comes back, keys and hashes computed alike.
///
/// A warehouse without change detection gets PostgreSQL's SQL; [`query_changes`] refuses them
/// before this is reached.
pub fn change_query(config: &SourceConfig, model: &str, spec: &DiffSpec, all_rows: bool) -> String {
    let dialect = dialect(config).unwrap_or(Dialect::Postgres);
    let key = dialect.key_text(
        &format!("q.{}", dialect.column(&spec.key_column)),
        spec.key_ignores_case,
    );
    let fields: Vec<String> = spec
        .columns
        .iter()
        .map(|column| format!("q.{}", dialect.column(column)))
        .collect();
    let hash = dialect.row_hash(&spec.fingerprint, &fields);
    let row_number = dialect.row_number();
    let table = dialect.sync_table(spec);
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
    dialect(config)?;
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
    bookkeeper: Option<Bookkeeper>,
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
            bookkeeper: None,
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
        let rows: Vec<(String, String)> = unique
            .into_iter()
            .map(|(key, hash)| (key.to_string(), hash.to_string()))
            .collect();
        let dialect = dialect(&self.config)?;
        let table = dialect.sync_table(&self.spec);
        let write = async {
            if self.bookkeeper.is_none() {
                self.bookkeeper = Some(
                    Bookkeeper::open(&self.config, dialect, &self.spec.schema, Access::Write)
                        .await?,
                );
            }
            let bookkeeper = self.bookkeeper.as_mut().expect("opened above");
            bookkeeper.upsert(&table, rows).await
        };
        tokio::time::timeout(ACKNOWLEDGE_TIMEOUT, write)
            .await
            .map_err(|_| SourceError::ChangeDetection {
                problem: format!(
                    "writing acknowledged rows to {table} took longer than {}",
                    crate::human_duration(ACKNOWLEDGE_TIMEOUT)
                ),
            })?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sync keyed on emails, reading a column whose name needs quoting.
    pub(super) fn spec() -> DiffSpec {
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
