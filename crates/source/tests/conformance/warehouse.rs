//! The warehouses under test: a fresh, empty one per test, set up with read-write access the
//! way each warehouse's users would load it, and read only through ferry's source API.
//!
//! - **DuckDB**: a new database file.
//! - **PostgreSQL**, **MySQL** (MariaDB): a new database on a server shared by the test binary.
//! - **Files**: a new folder. Setup SQL runs in a scratch DuckDB database beside the folder,
//!   and every table it leaves is written into the folder as `TABLE.parquet` (DuckDB's own
//!   `COPY … TO`), which the files source shows as a table of that name.
//! - **Snowflake**: a new database on a snowduck server shared by the test binary, reached
//!   through a [`RecordingProxy`] of the test's own; setup statements go to snowduck directly.
//! - **BigQuery**: a new dataset on a BigQuery emulator (crucible) shared by the test binary,
//!   likewise behind a proxy, which also issues the access tokens.

use crate::recording_proxy::{Recorded, RecordingProxy};
use ferry_core::{Secret, Value};
use ferry_source::{
    BigQueryConfig, BigQueryCredential, Column, QueryOptions, RowStream, SnowflakeConfig,
    SnowflakeCredential, SourceConfig, SourceError,
};
use ferry_testkit::{BigQueryEmulator, MariaDbServer, PgServer, SnowduckServer};
use mysql_async::prelude::Queryable as _;
use serde_json::json;
use std::ops::{Deref, DerefMut};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use tokio::sync::{RwLock, RwLockReadGuard};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    DuckDb,
    Postgres,
    Mysql,
    Files,
    Snowflake,
    BigQuery,
}

/// The SQL a backend's models are written in. The files source is DuckDB inside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    DuckDb,
    Postgres,
    Mysql,
    Snowflake,
    BigQuery,
}

impl Backend {
    pub fn dialect(self) -> Dialect {
        match self {
            Backend::DuckDb | Backend::Files => Dialect::DuckDb,
            Backend::Postgres => Dialect::Postgres,
            Backend::Mysql => Dialect::Mysql,
            Backend::Snowflake => Dialect::Snowflake,
            Backend::BigQuery => Dialect::BigQuery,
        }
    }
}

/// A model's SQL: one text for every dialect, or the text of one dialect where they differ.
#[derive(Debug, Clone, Copy)]
pub struct Sql<'a> {
    standard: &'a str,
    duckdb: Option<&'a str>,
    postgres: Option<&'a str>,
    mysql: Option<&'a str>,
    snowflake: Option<&'a str>,
    bigquery: Option<&'a str>,
}

impl<'a> Sql<'a> {
    pub fn standard(sql: &'a str) -> Sql<'a> {
        Sql {
            standard: sql,
            duckdb: None,
            postgres: None,
            mysql: None,
            snowflake: None,
            bigquery: None,
        }
    }

    /// DuckDB's, which the files source runs too.
    pub fn duckdb(self, sql: &'a str) -> Sql<'a> {
        Sql {
            duckdb: Some(sql),
            ..self
        }
    }

    pub fn postgres(self, sql: &'a str) -> Sql<'a> {
        Sql {
            postgres: Some(sql),
            ..self
        }
    }

    pub fn mysql(self, sql: &'a str) -> Sql<'a> {
        Sql {
            mysql: Some(sql),
            ..self
        }
    }

    pub fn snowflake(self, sql: &'a str) -> Sql<'a> {
        Sql {
            snowflake: Some(sql),
            ..self
        }
    }

    pub fn bigquery(self, sql: &'a str) -> Sql<'a> {
        Sql {
            bigquery: Some(sql),
            ..self
        }
    }

    fn for_dialect(self, dialect: Dialect) -> &'a str {
        let special = match dialect {
            Dialect::DuckDb => self.duckdb,
            Dialect::Postgres => self.postgres,
            Dialect::Mysql => self.mysql,
            Dialect::Snowflake => self.snowflake,
            Dialect::BigQuery => self.bigquery,
        };
        special.unwrap_or(self.standard)
    }
}

/// A fresh, empty warehouse for one test.
pub struct TestWarehouse {
    pub backend: Backend,
    pub config: SourceConfig,
    place: Place,
}

/// Where the warehouse's data is, for setup and checks.
enum Place {
    DuckDbFile {
        path: PathBuf,
        _directory: tempfile::TempDir,
    },
    Postgres {
        url: String,
    },
    Mysql {
        url: String,
    },
    Files {
        folder: PathBuf,
        scratch: PathBuf,
        _directory: tempfile::TempDir,
    },
    Snowflake {
        proxy: RecordingProxy,
        snowduck: String,
        database: String,
        own_server: Option<SnowduckServer>,
    },
    BigQuery {
        proxy: RecordingProxy,
        emulator: String,
        dataset: String,
        own_server: Option<BigQueryEmulator>,
    },
}

/// The project the BigQuery tests' jobs run in.
pub const BIGQUERY_PROJECT: &str = "ferry-test";

/// The key the BigQuery source signs its token requests with (the proxy does not check it).
const BIGQUERY_PRIVATE_KEY: &str =
    include_str!("../../src/bigquery/test_keys/service_account_private.pem");

/// One server per test binary for each of these; each test gets its own database on it.
pub fn shared_postgres_server() -> &'static PgServer {
    static SERVER: OnceLock<PgServer> = OnceLock::new();
    SERVER.get_or_init(|| PgServer::start().expect("start the test PostgreSQL server"))
}

pub fn shared_mariadb_server() -> &'static MariaDbServer {
    static SERVER: OnceLock<MariaDbServer> = OnceLock::new();
    SERVER.get_or_init(|| MariaDbServer::start().expect("start the test MariaDB server"))
}

fn shared_snowduck_server() -> &'static SnowduckServer {
    static SERVER: OnceLock<SnowduckServer> = OnceLock::new();
    SERVER.get_or_init(|| SnowduckServer::start().unwrap_or_else(|error| panic!("{error:#}")))
}

fn shared_bigquery_emulator() -> &'static BigQueryEmulator {
    static SERVER: OnceLock<BigQueryEmulator> = OnceLock::new();
    SERVER.get_or_init(|| BigQueryEmulator::start().unwrap_or_else(|error| panic!("{error:#}")))
}

static NEXT_DATABASE: AtomicUsize = AtomicUsize::new(0);

fn next_database_name() -> String {
    format!(
        "conformance_{}",
        NEXT_DATABASE.fetch_add(1, Ordering::SeqCst)
    )
}

/// Held for reading while a DuckDB or files model runs, and for writing by the cases that
/// count this process's DuckDB threads to see a dropped stream stop its query.
fn embedded_models() -> &'static RwLock<()> {
    static LOCK: RwLock<()> = RwLock::const_new(());
    &LOCK
}

impl TestWarehouse {
    pub async fn new(backend: Backend) -> TestWarehouse {
        match backend {
            Backend::DuckDb => {
                let directory = tempfile::tempdir().expect("temporary directory");
                let path = directory.path().join("warehouse.duckdb");
                // The test creates the file with a read-write connection, as a user would.
                duckdb::Connection::open(&path)
                    .and_then(|connection| connection.execute_batch("SELECT 1"))
                    .expect("create the DuckDB file");
                TestWarehouse {
                    backend,
                    config: SourceConfig::DuckDb { path: path.clone() },
                    place: Place::DuckDbFile {
                        path,
                        _directory: directory,
                    },
                }
            }
            Backend::Postgres => {
                let url = shared_postgres_server()
                    .create_database(&next_database_name())
                    .expect("create a test database");
                TestWarehouse {
                    backend,
                    config: SourceConfig::Postgres {
                        url: Secret::new(url.clone()),
                    },
                    place: Place::Postgres { url },
                }
            }
            Backend::Mysql => {
                let url = shared_mariadb_server()
                    .create_database(&next_database_name())
                    .expect("create a test database");
                TestWarehouse {
                    backend,
                    config: SourceConfig::Mysql {
                        url: Secret::new(url.clone()),
                    },
                    place: Place::Mysql { url },
                }
            }
            Backend::Files => {
                let directory = tempfile::tempdir().expect("temporary directory");
                let folder = directory.path().join("exports");
                std::fs::create_dir(&folder).expect("the files folder");
                TestWarehouse {
                    backend,
                    config: SourceConfig::Files {
                        folders: vec![folder.clone()],
                    },
                    place: Place::Files {
                        folder,
                        scratch: directory.path().join("scratch.duckdb"),
                        _directory: directory,
                    },
                }
            }
            Backend::Snowflake => {
                Self::on_snowduck(shared_snowduck_server().base_url(), None).await
            }
            Backend::BigQuery => {
                Self::on_bigquery_emulator(shared_bigquery_emulator().api_base(), None).await
            }
        }
    }

    /// The same kind of warehouse, on an emulator of its own that [`kill_server`] can stop
    /// (Snowflake, BigQuery); the others, whose servers are not stopped by the cases, are
    /// returned as they are.
    pub async fn on_a_server_of_its_own(self) -> TestWarehouse {
        match self.backend {
            Backend::Snowflake => {
                let server = SnowduckServer::start().unwrap_or_else(|error| panic!("{error:#}"));
                Self::on_snowduck(server.base_url(), Some(server)).await
            }
            Backend::BigQuery => {
                let server = BigQueryEmulator::start().unwrap_or_else(|error| panic!("{error:#}"));
                Self::on_bigquery_emulator(server.api_base(), Some(server)).await
            }
            _ => self,
        }
    }

    /// Kills the warehouse's own emulator process (see [`on_a_server_of_its_own`]) in the
    /// middle of whatever it is doing.
    pub fn kill_server(&mut self) {
        let own_server = match &mut self.place {
            Place::Snowflake { own_server, .. } => own_server.take().map(drop),
            Place::BigQuery { own_server, .. } => own_server.take().map(drop),
            _ => None,
        };
        assert!(
            own_server.is_some(),
            "{:?}: only a warehouse on a server of its own can be killed",
            self.backend
        );
    }

    async fn on_snowduck(snowduck: String, own_server: Option<SnowduckServer>) -> TestWarehouse {
        // snowduck makes a database, with its PUBLIC schema, the first time a request names it.
        let database = next_database_name().to_uppercase();
        let proxy = RecordingProxy::start(&snowduck).await;
        // A server of its own is reached directly, so that killing it cuts ferry's
        // connections rather than the proxy's.
        let base_url = match own_server {
            Some(_) => snowduck.clone(),
            None => proxy.base_url().to_string(),
        };
        TestWarehouse {
            backend: Backend::Snowflake,
            config: SourceConfig::Snowflake(SnowflakeConfig {
                account: "conformance".into(),
                user: "FERRY".into(),
                warehouse: "SYNC_WH".into(),
                database: Some(database.clone()),
                schema: Some("PUBLIC".into()),
                role: None,
                credential: SnowflakeCredential::ProgrammaticAccessToken(Secret::new(
                    "conformance-pat",
                )),
                base_url: Some(base_url),
            }),
            place: Place::Snowflake {
                proxy,
                snowduck,
                database,
                own_server,
            },
        }
    }

    async fn on_bigquery_emulator(
        emulator: String,
        own_server: Option<BigQueryEmulator>,
    ) -> TestWarehouse {
        let dataset = next_database_name();
        let proxy = RecordingProxy::start(&emulator).await;
        let api_base = match own_server {
            Some(_) => emulator.clone(),
            None => proxy.base_url().to_string(),
        };
        let key = json!({
            "type": "service_account",
            "project_id": BIGQUERY_PROJECT,
            "private_key_id": "conformance-key",
            "private_key": BIGQUERY_PRIVATE_KEY,
            "client_email": "ferry-reader@ferry-test.iam.gserviceaccount.com",
            "client_id": "100000000000000000001",
            "token_uri": "https://oauth2.googleapis.com/token",
        });
        let warehouse = TestWarehouse {
            backend: Backend::BigQuery,
            config: SourceConfig::BigQuery(BigQueryConfig {
                project_id: BIGQUERY_PROJECT.into(),
                location: "EU".into(),
                default_dataset: Some(dataset.clone()),
                maximum_bytes_billed: None,
                credential: BigQueryCredential::ServiceAccountKey(Secret::new(key.to_string())),
                api_base,
                token_endpoint: Some(format!("{}/token", proxy.base_url())),
            }),
            place: Place::BigQuery {
                proxy,
                emulator: emulator.clone(),
                dataset: dataset.clone(),
                own_server,
            },
        };
        let created = reqwest::Client::new()
            .post(format!(
                "{emulator}/bigquery/v2/projects/{BIGQUERY_PROJECT}/datasets"
            ))
            .bearer_auth("setup")
            .json(&json!({
                "datasetReference": {"projectId": BIGQUERY_PROJECT, "datasetId": dataset},
                "location": "EU",
            }))
            .send()
            .await
            .expect("the BigQuery emulator answers");
        assert!(
            created.status().is_success(),
            "create dataset {dataset}: {:?}",
            created.text().await
        );
        warehouse
    }

    pub fn dialect(&self) -> Dialect {
        self.backend.dialect()
    }

    /// The SQL for this warehouse's dialect.
    pub fn sql<'a>(&self, sql: Sql<'a>) -> &'a str {
        sql.for_dialect(self.dialect())
    }

    /// Runs a model through ferry's source: `ferry_source::query`, holding the embedded
    /// models' lock for a DuckDB or files model (see [`embedded_models`]).
    pub async fn query(
        &self,
        sql: &str,
        options: &QueryOptions,
    ) -> Result<ModelStream, SourceError> {
        let embedded = self.embedded_model_guard().await;
        let stream = ferry_source::query(&self.config, sql, options).await?;
        Ok(ModelStream {
            stream,
            _embedded: embedded,
        })
    }

    /// `ferry_source::preview`, likewise.
    pub async fn preview(
        &self,
        sql: &str,
        limit: usize,
        options: &QueryOptions,
    ) -> Result<(Vec<Column>, Vec<Vec<Value>>), SourceError> {
        let _embedded = self.embedded_model_guard().await;
        ferry_source::preview(&self.config, sql, limit, options).await
    }

    /// `ferry_source::test_connection`, likewise.
    pub async fn test_connection(&self) -> Result<(), SourceError> {
        let _embedded = self.embedded_model_guard().await;
        ferry_source::test_connection(&self.config).await
    }

    async fn embedded_model_guard(&self) -> Option<RwLockReadGuard<'static, ()>> {
        match self.backend {
            Backend::DuckDb | Backend::Files => Some(embedded_models().read().await),
            _ => None,
        }
    }

    /// Waits until no DuckDB or files model of this process runs, and keeps others from
    /// starting until the guard is dropped.
    pub async fn no_other_embedded_models(&self) -> tokio::sync::RwLockWriteGuard<'static, ()> {
        embedded_models().write().await
    }

    /// Runs setup statements (which may write) with read-write access. On files, every table
    /// the statements leave in the scratch database is then written into the folder as
    /// Parquet.
    pub async fn setup(&self, sql: &str) {
        match &self.place {
            Place::DuckDbFile { path, .. } => {
                let connection = duckdb::Connection::open(path).expect("open DuckDB");
                connection.execute_batch(sql).expect("DuckDB setup");
            }
            Place::Postgres { url } => {
                let client = postgres_client(url).await;
                client.batch_execute(sql).await.expect("PostgreSQL setup");
            }
            Place::Mysql { url } => {
                let mut connection = mysql_connection(url).await;
                connection.query_drop(sql).await.expect("MySQL setup");
                connection.disconnect().await.expect("MySQL disconnect");
            }
            Place::Files { .. } => {
                self.write_files(sql);
                let tables: Vec<String> = {
                    let connection = self.scratch_database();
                    let mut statement = connection
                        .prepare("SELECT table_name FROM duckdb_tables() ORDER BY table_name")
                        .expect("list the scratch tables");
                    statement
                        .query_map([], |row| row.get(0))
                        .expect("list the scratch tables")
                        .map(|name| name.expect("a table name"))
                        .collect()
                };
                for table in tables {
                    self.write_files(&format!(
                        "COPY {table} TO '{{folder}}/{table}.parquet' (FORMAT parquet)"
                    ));
                }
            }
            Place::Snowflake { .. } => {
                for statement in statements(sql) {
                    self.snowduck_statement(statement).await;
                }
            }
            Place::BigQuery { .. } => {
                for statement in statements(sql) {
                    self.bigquery_job(statement).await;
                }
            }
        }
    }

    /// Files only: runs `sql` in the scratch database, `{folder}` standing for the folder the
    /// files source reads, so that `COPY … TO '{folder}/…'` writes a fixture.
    pub fn write_files(&self, sql: &str) {
        let Place::Files { folder, .. } = &self.place else {
            panic!("{:?} has no files to write", self.backend);
        };
        let sql = sql.replace("{folder}", &folder.to_string_lossy());
        self.scratch_database()
            .execute_batch(&sql)
            .unwrap_or_else(|error| panic!("files setup {sql}: {error}"));
    }

    /// Files only: the folder the files source reads.
    pub fn folder(&self) -> PathBuf {
        match &self.place {
            Place::Files { folder, .. } => folder.clone(),
            _ => panic!("{:?} has no folder", self.backend),
        }
    }

    fn scratch_database(&self) -> duckdb::Connection {
        let Place::Files { scratch, .. } = &self.place else {
            panic!("{:?} has no scratch database", self.backend);
        };
        duckdb::Connection::open(scratch).expect("open the scratch database")
    }

    /// A single integer read with read-write access, to check what the warehouse holds.
    pub async fn admin_count(&self, sql: &str) -> i64 {
        match &self.place {
            Place::DuckDbFile { path, .. } => duckdb::Connection::open(path)
                .expect("open DuckDB")
                .query_row(sql, [], |row| row.get(0))
                .expect("DuckDB count"),
            Place::Files { .. } => self
                .scratch_database()
                .query_row(sql, [], |row| row.get(0))
                .expect("scratch count"),
            Place::Postgres { url } => postgres_client(url)
                .await
                .query_one(sql, &[])
                .await
                .expect("PostgreSQL count")
                .get(0),
            Place::Mysql { url } => {
                let mut connection = mysql_connection(url).await;
                let count: Option<i64> = connection.query_first(sql).await.expect("MySQL count");
                connection.disconnect().await.expect("MySQL disconnect");
                count.expect("a row")
            }
            Place::Snowflake { .. } => {
                let answer = self.snowduck_statement(sql).await;
                answer["data"][0][0]
                    .as_str()
                    .and_then(|count| count.parse().ok())
                    .unwrap_or_else(|| panic!("a count from snowduck: {answer}"))
            }
            Place::BigQuery { .. } => {
                let answer = self.bigquery_job(sql).await;
                answer["rows"][0]["f"][0]["v"]
                    .as_str()
                    .and_then(|count| count.parse().ok())
                    .unwrap_or_else(|| panic!("a count from the emulator: {answer}"))
            }
        }
    }

    /// PostgreSQL only: a read-write client of the test's database.
    pub async fn postgres_admin_client(&self) -> tokio_postgres::Client {
        match &self.place {
            Place::Postgres { url } => postgres_client(url).await,
            _ => panic!("{:?} is not PostgreSQL", self.backend),
        }
    }

    /// MySQL only: a read-write connection to the test's database.
    pub async fn mysql_admin_connection(&self) -> mysql_async::Conn {
        match &self.place {
            Place::Mysql { url } => mysql_connection(url).await,
            _ => panic!("{:?} is not MySQL", self.backend),
        }
    }

    /// Snowflake and BigQuery: the requests ferry sent through the test's proxy.
    pub fn requests(&self) -> Vec<Recorded> {
        match &self.place {
            Place::Snowflake { proxy, .. } | Place::BigQuery { proxy, .. } => proxy.requests(),
            _ => panic!("{:?} has no proxy", self.backend),
        }
    }

    /// Snowflake only: see [`RecordingProxy::make_submissions_asynchronous`].
    pub fn make_submissions_asynchronous(&self) {
        match &self.place {
            Place::Snowflake { proxy, .. } => proxy.make_submissions_asynchronous(),
            _ => panic!("{:?} is not Snowflake", self.backend),
        }
    }

    /// Snowflake only: what snowduck says about a statement now (`GET` its status).
    pub async fn snowduck_statement_status(&self, handle: &str) -> serde_json::Value {
        let Place::Snowflake { snowduck, .. } = &self.place else {
            panic!("{:?} is not Snowflake", self.backend);
        };
        reqwest::Client::new()
            .get(format!("{snowduck}/api/v2/statements/{handle}"))
            .bearer_auth("setup")
            .send()
            .await
            .expect("snowduck answers")
            .json()
            .await
            .expect("snowduck answers JSON")
    }

    /// Runs one statement on snowduck directly, in the test's database; panics on an error.
    async fn snowduck_statement(&self, sql: &str) -> serde_json::Value {
        let Place::Snowflake {
            snowduck, database, ..
        } = &self.place
        else {
            panic!("{:?} is not Snowflake", self.backend);
        };
        let response = reqwest::Client::new()
            .post(format!("{snowduck}/api/v2/statements"))
            .bearer_auth("setup")
            .json(&json!({
                "statement": sql,
                "database": database,
                "schema": "PUBLIC",
                "warehouse": "SETUP_WH",
            }))
            .send()
            .await
            .expect("snowduck answers");
        let status = response.status();
        let answer: serde_json::Value = response.json().await.expect("snowduck answers JSON");
        assert!(status.is_success(), "snowduck setup {sql}: {answer}");
        answer
    }

    /// Runs one statement as a job on the BigQuery emulator directly, in the test's dataset;
    /// panics on an error.
    async fn bigquery_job(&self, sql: &str) -> serde_json::Value {
        let Place::BigQuery {
            emulator, dataset, ..
        } = &self.place
        else {
            panic!("{:?} is not BigQuery", self.backend);
        };
        let response = reqwest::Client::new()
            .post(format!(
                "{emulator}/bigquery/v2/projects/{BIGQUERY_PROJECT}/queries"
            ))
            .bearer_auth("setup")
            .json(&json!({
                "query": sql,
                "useLegacySql": false,
                "location": "EU",
                "defaultDataset": {"projectId": BIGQUERY_PROJECT, "datasetId": dataset},
            }))
            .send()
            .await
            .expect("the BigQuery emulator answers");
        let status = response.status();
        let answer: serde_json::Value = response
            .json()
            .await
            .expect("the BigQuery emulator answers JSON");
        assert!(status.is_success(), "BigQuery setup {sql}: {answer}");
        answer
    }
}

/// A model's rows, and (for DuckDB and files) the embedded models' lock while it runs.
pub struct ModelStream {
    stream: RowStream,
    _embedded: Option<RwLockReadGuard<'static, ()>>,
}

impl Deref for ModelStream {
    type Target = RowStream;

    fn deref(&self) -> &RowStream {
        &self.stream
    }
}

impl DerefMut for ModelStream {
    fn deref_mut(&mut self) -> &mut RowStream {
        &mut self.stream
    }
}

async fn postgres_client(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to PostgreSQL");
    tokio::spawn(connection);
    client
}

async fn mysql_connection(url: &str) -> mysql_async::Conn {
    let options = mysql_async::Opts::from_url(url).expect("a MySQL URL");
    mysql_async::Conn::new(options)
        .await
        .expect("connect to MySQL")
}

/// The statements of a setup script, for the warehouses whose API takes one at a time: split
/// at the `;`s outside quotes.
fn statements(sql: &str) -> Vec<&str> {
    let mut statements = Vec::new();
    let mut start = 0;
    let mut quote: Option<char> = None;
    for (index, character) in sql.char_indices() {
        match (quote, character) {
            (None, '\'' | '"') => quote = Some(character),
            (Some(open), _) if character == open => quote = None,
            (None, ';') => {
                statements.push(&sql[start..index]);
                start = index + 1;
            }
            _ => {}
        }
    }
    statements.push(&sql[start..]);
    statements
        .into_iter()
        .map(str::trim)
        .filter(|statement| !statement.is_empty())
        .collect()
}
