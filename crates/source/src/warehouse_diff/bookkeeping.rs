//! One connection to the warehouse for ferry's own tables (the schema, `ferry_syncs`, a sync's
//! table of acknowledged rows), whatever the warehouse: what to open, how to ask whether a
//! schema, a table or a row is there, how to run statements and upsert acknowledged rows, and
//! how a refused right is put in words (the GRANT to run). The SQL itself comes from
//! [`Dialect`].
//!
//! PostgreSQL, DuckDB and MySQL keep one connection open (MySQL's outside the read-only
//! transaction models run in). Snowflake and BigQuery are reached one statement at a time
//! through their sources' own HTTP clients, each statement committed on its own.

use super::dialect::{Dialect, MYSQL_LONGEST_KEY};
use super::{not_available, REGISTRY_TABLE, TURN_OFF};
use crate::duckdb_source::is_duckdb_file;
use crate::mysql_source::MysqlBookkeeping;
use crate::postgres_source::PostgresConnection;
use crate::{QueryOptions, SourceConfig, SourceError, ValidatedModelSql};
use ferry_core::{Secret, Value};
use mysql_async::prelude::Queryable as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_postgres::error::SqlState;

/// Whether the connection may write: a run creates tables and acknowledges rows, a preview
/// only reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Access {
    Read,
    Write,
}

/// A connection for ferry's bookkeeping in one schema.
pub(super) struct Bookkeeper {
    dialect: Dialect,
    schema: String,
    connection: Connection,
}

enum Connection {
    Postgres {
        connection: PostgresConnection,
        url: Secret,
    },
    DuckDb {
        connection: Arc<Mutex<duckdb::Connection>>,
        path: PathBuf,
    },
    Mysql {
        session: MysqlBookkeeping,
        /// `'ferry'@'%'`, as `CURRENT_USER()` names the account, for the GRANT to run.
        account: Option<String>,
    },
    /// Snowflake and BigQuery: a statement per request.
    Requests(SourceConfig),
}

/// What BigQuery's answer to [`Dialect::existence_probe`] says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probed {
    Found,
    NoTable,
    NoSchema,
}

impl Bookkeeper {
    pub(super) async fn open(
        config: &SourceConfig,
        dialect: Dialect,
        schema: &str,
        access: Access,
    ) -> Result<Bookkeeper, SourceError> {
        let connection = match config {
            SourceConfig::Postgres { url } => Connection::Postgres {
                connection: PostgresConnection::open(url).await?,
                url: url.clone(),
            },
            SourceConfig::DuckDb { path } => {
                let opened_path = path.clone();
                let opened_schema = schema.to_string();
                let connection = blocking(move || match access {
                    Access::Write => open_read_write(&opened_path, &opened_schema),
                    Access::Read => crate::duckdb_source::open_read_only(&opened_path),
                })
                .await?;
                Connection::DuckDb {
                    connection: Arc::new(Mutex::new(connection)),
                    path: path.clone(),
                }
            }
            SourceConfig::Mysql { url } => {
                let mut session = MysqlBookkeeping::open(url).await?;
                let account = session
                    .connection
                    .query_first::<String, _>("SELECT CURRENT_USER()")
                    .await
                    .ok()
                    .flatten()
                    .and_then(|account| {
                        let (user, host) = account.rsplit_once('@')?;
                        Some(format!("'{user}'@'{host}'"))
                    });
                Connection::Mysql { session, account }
            }
            SourceConfig::Snowflake(_) | SourceConfig::BigQuery(_) => {
                Connection::Requests(config.clone())
            }
            other => return Err(not_available(other)),
        };
        Ok(Bookkeeper {
            dialect,
            schema: schema.to_string(),
            connection,
        })
    }

    /// Whether ferry's schema exists (and, on MySQL, is visible to the user: a database the
    /// user has no right on is refused here with the GRANT, rather than called missing).
    pub(super) async fn schema_exists(&mut self) -> Result<bool, SourceError> {
        let Some(query) = self.dialect.schema_exists(&self.schema) else {
            return Ok(self.probe(REGISTRY_TABLE).await? != Probed::NoSchema);
        };
        if self.returns_a_row(&query).await? {
            return Ok(true);
        }
        if matches!(self.connection, Connection::Mysql { .. }) {
            // Refused (the GRANT to run) or missing (an error that is only dropped here).
            let probe = self.dialect.existence_probe(&self.schema, REGISTRY_TABLE);
            if let Err(error @ SourceError::ChangeDetection { .. }) =
                self.returns_a_row(&probe).await
            {
                return Err(error);
            }
        }
        Ok(false)
    }

    /// Whether a table of ferry's schema exists.
    pub(super) async fn table_exists(&mut self, table: &str) -> Result<bool, SourceError> {
        match self.dialect.table_exists(&self.schema, table) {
            Some(query) => self.returns_a_row(&query).await,
            None => Ok(self.probe(table).await? == Probed::Found),
        }
    }

    /// Whether the query returns a row.
    pub(super) async fn returns_a_row(&mut self, sql: &str) -> Result<bool, SourceError> {
        let schema = self.schema.clone();
        match &mut self.connection {
            Connection::Postgres { connection, url } => connection
                .client
                .query(sql, &[])
                .await
                .map(|rows| !rows.is_empty())
                .map_err(|error| postgres_error(connection, url, &schema, &error)),
            Connection::DuckDb { connection, path } => {
                let (connection, path, sql) =
                    (Arc::clone(connection), path.clone(), sql.to_string());
                blocking(move || {
                    let connection = lock(&connection)?;
                    let failed = |error: duckdb::Error| duckdb_error(&path, &schema, &error);
                    let mut statement = connection.prepare(&sql).map_err(failed)?;
                    let mut rows = statement.query([]).map_err(failed)?;
                    Ok(rows.next().map_err(failed)?.is_some())
                })
                .await
            }
            Connection::Mysql { session, account } => {
                match session
                    .connection
                    .query_first::<mysql_async::Row, _>(sql)
                    .await
                {
                    Ok(row) => Ok(row.is_some()),
                    Err(error) => Err(mysql_error(session, account.as_deref(), &schema, error)),
                }
            }
            Connection::Requests(config) => {
                let rows = request(config, &self.dialect, &schema, sql).await?;
                Ok(!rows.is_empty())
            }
        }
    }

    /// Runs the statements in order, in one transaction where the warehouse's DDL allows it
    /// (PostgreSQL, DuckDB); elsewhere each commits on its own, so callers order them such
    /// that a crash between two leaves nothing a later run cannot finish.
    pub(super) async fn execute(&mut self, statements: &[String]) -> Result<(), SourceError> {
        let schema = self.schema.clone();
        let batch = match statements {
            [one] => one.clone(),
            many => format!("BEGIN; {}; COMMIT", many.join("; ")),
        };
        match &mut self.connection {
            Connection::Postgres { connection, url } => connection
                .client
                .batch_execute(&batch)
                .await
                .map_err(|error| postgres_error(connection, url, &schema, &error)),
            Connection::DuckDb { connection, path } => {
                let (connection, path) = (Arc::clone(connection), path.clone());
                blocking(move || {
                    lock(&connection)?
                        .execute_batch(&batch)
                        .map_err(|error| duckdb_error(&path, &schema, &error))
                })
                .await
            }
            Connection::Mysql { session, account } => {
                for statement in statements {
                    if let Err(error) = session.connection.query_drop(statement).await {
                        return Err(mysql_error(session, account.as_deref(), &schema, error));
                    }
                }
                Ok(())
            }
            Connection::Requests(config) => {
                for statement in statements {
                    request(config, &self.dialect, &schema, statement).await?;
                }
                Ok(())
            }
        }
    }

    /// Writes `(key, row hash)` pairs, one per key, to `table`: a new key is inserted, a known
    /// one gets the new hash.
    pub(super) async fn upsert(
        &mut self,
        table: &str,
        rows: Vec<(String, String)>,
    ) -> Result<(), SourceError> {
        let schema = self.schema.clone();
        match &mut self.connection {
            Connection::Postgres { connection, url } => {
                let (keys, hashes): (Vec<String>, Vec<String>) = rows.into_iter().unzip();
                let statement = format!(
                    "INSERT INTO {table} (key, row_hash) SELECT k, h FROM unnest($1::text[], \
                     $2::text[]) AS u(k, h) ON CONFLICT (key) DO UPDATE SET row_hash = \
                     EXCLUDED.row_hash"
                );
                connection
                    .client
                    .execute(&statement, &[&keys, &hashes])
                    .await
                    .map(|_| ())
                    .map_err(|error| postgres_error(connection, url, &schema, &error))
            }
            Connection::DuckDb { connection, path } => {
                let (connection, path, table) =
                    (Arc::clone(connection), path.clone(), table.to_string());
                blocking(move || {
                    let connection = lock(&connection)?;
                    let failed = |error: duckdb::Error| duckdb_error(&path, &schema, &error);
                    // Appended to a temporary table, then moved over in one statement: DuckDB's
                    // appender is the fast way in, and cannot upsert itself.
                    connection
                        .execute_batch(
                            "CREATE TEMP TABLE IF NOT EXISTS ferry_acknowledged \
                             (key VARCHAR, row_hash VARCHAR)",
                        )
                        .map_err(failed)?;
                    {
                        let mut appender = connection
                            .appender_to_catalog_and_db("ferry_acknowledged", "temp", "main")
                            .map_err(failed)?;
                        for (key, hash) in &rows {
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
            Connection::Mysql { session, account } => {
                let rows: Vec<(String, String)> = rows
                    .into_iter()
                    .filter(|(key, _)| key.chars().count() <= MYSQL_LONGEST_KEY)
                    .collect();
                let written = mysql_upsert(session, &self.dialect, table, &rows).await;
                written.map_err(|error| mysql_error(session, account.as_deref(), &schema, error))
            }
            Connection::Requests(config) => {
                for statement in self.dialect.upsert_statements(table, &rows) {
                    request(config, &self.dialect, &schema, &statement).await?;
                }
                Ok(())
            }
        }
    }

    /// Closes the connection; DuckDB's file is then free for the model's reader.
    pub(super) async fn close(self) -> Result<(), SourceError> {
        match self.connection {
            Connection::Postgres { .. } | Connection::Requests(_) => Ok(()),
            Connection::Mysql { session, .. } => {
                session.close().await;
                Ok(())
            }
            Connection::DuckDb { connection, path } => {
                let schema = self.schema;
                blocking(move || {
                    let Ok(connection) = Arc::try_unwrap(connection) else {
                        return Ok(());
                    };
                    let connection = connection.into_inner().map_err(|_| writer_failed())?;
                    connection
                        .close()
                        .map_err(|(_, error)| duckdb_error(&path, &schema, &error))
                })
                .await
            }
        }
    }

    /// BigQuery: whether `table` of ferry's dataset, or the dataset itself, is there.
    async fn probe(&mut self, table: &str) -> Result<Probed, SourceError> {
        let probe = self.dialect.existence_probe(&self.schema, table);
        match self.returns_a_row(&probe).await {
            Ok(_) => Ok(Probed::Found),
            Err(SourceError::Sql { message, .. }) if message.contains("Not found: Dataset") => {
                Ok(Probed::NoSchema)
            }
            Err(SourceError::Sql { message, .. }) if message.contains("Not found: Table") => {
                Ok(Probed::NoTable)
            }
            Err(error) => Err(error),
        }
    }
}

/// MySQL's upsert, a thousand rows a statement, in one transaction.
async fn mysql_upsert(
    session: &mut MysqlBookkeeping,
    dialect: &Dialect,
    table: &str,
    rows: &[(String, String)],
) -> Result<(), mysql_async::Error> {
    let mut transaction = session
        .connection
        .start_transaction(mysql_async::TxOpts::default())
        .await?;
    for chunk in rows.chunks(1000) {
        let values: Vec<mysql_async::Value> = chunk
            .iter()
            .flat_map(|(key, hash)| [key.as_str().into(), hash.as_str().into()])
            .collect();
        transaction
            .exec_drop(dialect.mysql_upsert(table, chunk.len()), values)
            .await?;
    }
    transaction.commit().await
}

/// Runs one statement through the Snowflake or BigQuery source's client and returns its rows.
async fn request(
    config: &SourceConfig,
    dialect: &Dialect,
    schema: &str,
    sql: &str,
) -> Result<Vec<Vec<Value>>, SourceError> {
    let collect = async {
        let statement = ValidatedModelSql::trusted(sql.to_string());
        let mut stream = crate::start_query(config, statement, &QueryOptions::default()).await?;
        let mut rows = Vec::new();
        while let Some(row) = stream.next_row().await {
            rows.push(row?);
        }
        Ok(rows)
    };
    collect
        .await
        .map_err(|error| request_error(config, dialect, schema, error))
}

/// Snowflake and BigQuery refusing a right, said with the GRANT to run; other errors as they
/// are.
fn request_error(
    config: &SourceConfig,
    dialect: &Dialect,
    schema: &str,
    error: SourceError,
) -> SourceError {
    let said = error.to_string();
    let advice = match config {
        // "Insufficient privileges to operate on schema 'FERRY'" (003001), or an object the
        // role may not see: "Schema 'DB.FERRY' does not exist or not authorized" (002003),
        // after ferry saw it exist.
        SourceConfig::Snowflake(snowflake)
            if said.contains("Insufficient privileges") || said.contains("not authorized") =>
        {
            let database = snowflake
                .database
                .clone()
                .unwrap_or_else(|| "<database>".to_string());
            let role = snowflake
                .role
                .clone()
                .unwrap_or_else(|| "<ferry's role>".to_string());
            // Upper case, as Snowflake stores the unquoted name ferry's are made as.
            let schema = format!("{database}.{}", schema.to_uppercase());
            format!(
                "`CREATE SCHEMA IF NOT EXISTS {schema}; GRANT USAGE, CREATE TABLE ON SCHEMA \
                 {schema} TO ROLE {role};` (or `GRANT CREATE SCHEMA ON DATABASE {database} TO \
                 ROLE {role};` for ferry to create the schema itself)"
            )
        }
        // "Access Denied: Dataset p:ferry: Permission bigquery.tables.create denied …" (403).
        SourceConfig::BigQuery(bigquery) if said.contains("Access Denied") => {
            let account = match &bigquery.credential {
                crate::BigQueryCredential::ServiceAccountKey(key) => {
                    serde_json::from_str::<serde_json::Value>(key.expose())
                        .ok()
                        .and_then(|key| key["client_email"].as_str().map(str::to_string))
                }
                crate::BigQueryCredential::ApplicationDefault => None,
            }
            .unwrap_or_else(|| "<ferry's service account>".to_string());
            format!(
                "`{}; GRANT `roles/bigquery.dataEditor` ON SCHEMA {} TO \
                 \"serviceAccount:{account}\";` (BigQuery Data Editor on that dataset only)",
                dialect.create_schema(schema),
                dialect.schema(schema)
            )
        }
        _ => return error,
    };
    refused(schema, &said, &advice)
}

/// A refused right: what the warehouse said, and what to grant.
fn refused(schema: &str, said: &str, advice: &str) -> SourceError {
    SourceError::ChangeDetection {
        problem: format!(
            "the warehouse refused ferry's bookkeeping in schema `{schema}` ({said}); let an \
             administrator run {advice} (ferry needs to create and write tables there, nowhere \
             else), or {TURN_OFF}"
        ),
    }
}

/// MySQL's "access denied" errors: to a database (1044), a table (1142), a column (1143), an
/// operation (1227).
fn is_access_denied(code: u16) -> bool {
    matches!(code, 1044 | 1142 | 1143 | 1227)
}

/// A MySQL error during ferry's bookkeeping; a refused right says what to grant.
fn mysql_error(
    session: &MysqlBookkeeping,
    account: Option<&str>,
    schema: &str,
    error: mysql_async::Error,
) -> SourceError {
    if let mysql_async::Error::Server(server) = &error {
        if is_access_denied(server.code) {
            let account = account.unwrap_or("<ferry's user>");
            // `_` is a wildcard in a GRANT's database name; `\_` is the name itself.
            let database = format!("`{}`", schema.replace('_', "\\_"));
            return refused(
                schema,
                &server.message,
                &format!(
                    "`GRANT CREATE, SELECT, INSERT, UPDATE ON {database}.* TO {account};` (a \
                     schema is a database in MySQL: this lets ferry create it)"
                ),
            );
        }
    }
    session.error(error)
}

/// A PostgreSQL error while writing ferry's bookkeeping; a refused right says what to grant.
fn postgres_error(
    connection: &PostgresConnection,
    url: &Secret,
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
        return refused(
            schema,
            &message,
            &format!(
                "`CREATE SCHEMA IF NOT EXISTS {schema}; GRANT USAGE, CREATE ON SCHEMA {schema} TO \
                 {user};`"
            ),
        );
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
             meanwhile), or {TURN_OFF}",
            path.display()
        ),
    })
}

fn duckdb_error(path: &Path, schema: &str, error: &duckdb::Error) -> SourceError {
    SourceError::ChangeDetection {
        problem: format!(
            "DuckDB at {} failed on ferry's bookkeeping in schema `{schema}`: {error}",
            path.display()
        ),
    }
}

fn lock(
    connection: &Mutex<duckdb::Connection>,
) -> Result<std::sync::MutexGuard<'_, duckdb::Connection>, SourceError> {
    connection.lock().map_err(|_| writer_failed())
}

fn writer_failed() -> SourceError {
    SourceError::Warehouse {
        reason: "the DuckDB writer failed earlier".to_string(),
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
    use crate::{BigQueryConfig, BigQueryCredential, SnowflakeConfig, SnowflakeCredential};

    #[test]
    fn a_refused_right_on_snowflake_or_bigquery_names_the_grant() {
        let snowflake = SourceConfig::Snowflake(SnowflakeConfig {
            account: "myorg-myaccount".into(),
            user: "FERRY".into(),
            warehouse: "SYNC_WH".into(),
            database: Some("ANALYTICS".into()),
            schema: None,
            role: Some("FERRY_READER".into()),
            credential: SnowflakeCredential::OAuthToken(Secret::new("token")),
            base_url: None,
        });
        let refused_by_snowflake = SourceError::Sql {
            message: "SQL access control error:\nInsufficient privileges to operate on schema \
                      'FERRY'"
                .into(),
            position: None,
        };
        let said = request_error(
            &snowflake,
            &Dialect::Snowflake,
            "ferry",
            refused_by_snowflake,
        )
        .to_string();
        assert!(
            said.contains(
                "`CREATE SCHEMA IF NOT EXISTS ANALYTICS.FERRY; GRANT USAGE, CREATE TABLE ON \
                 SCHEMA ANALYTICS.FERRY TO ROLE FERRY_READER;`"
            ),
            "{said}"
        );
        assert!(said.contains("Insufficient privileges"), "{said}");
        let syntax = SourceError::Sql {
            message: "syntax error line 1 at position 0".into(),
            position: None,
        };
        assert!(matches!(
            request_error(&snowflake, &Dialect::Snowflake, "ferry", syntax),
            SourceError::Sql { .. }
        ));

        let bigquery = SourceConfig::BigQuery(BigQueryConfig {
            project_id: "my-project".into(),
            location: "EU".into(),
            default_dataset: None,
            maximum_bytes_billed: None,
            credential: BigQueryCredential::ServiceAccountKey(Secret::new(
                r#"{"type": "service_account", "client_email": "ferry@my-project.iam.gserviceaccount.com"}"#,
            )),
            api_base: crate::BIGQUERY_API_BASE.into(),
            token_endpoint: None,
        });
        let dialect = Dialect::BigQuery {
            project: "my-project".into(),
            location: "EU".into(),
        };
        let refused_by_bigquery = SourceError::AuthenticationFailed {
            target: "BigQuery project `my-project` (EU)".into(),
            reason: "Access Denied: Dataset my-project:ferry: Permission bigquery.tables.create \
                     denied on dataset my-project:ferry"
                .into(),
            fix: "check the service account key".into(),
        };
        let said = request_error(&bigquery, &dialect, "ferry", refused_by_bigquery).to_string();
        assert!(
            said.contains(
                "`CREATE SCHEMA IF NOT EXISTS `my-project`.`ferry` OPTIONS (location = 'EU'); \
                 GRANT `roles/bigquery.dataEditor` ON SCHEMA `my-project`.`ferry` TO \
                 \"serviceAccount:ferry@my-project.iam.gserviceaccount.com\";`"
            ),
            "{said}"
        );
    }
}
