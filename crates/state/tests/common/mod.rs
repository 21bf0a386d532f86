//! The test workspace shared by the state store's test files: a fresh store on either backend,
//! plus raw access to its database so tests check what is really stored.

#![allow(dead_code)] // Each test file uses a different part of this module.

use ferry_core::{Behavior, FieldMapping, KeyMapping, NullPolicy, ObjectKind, SyncSpec};
use ferry_state::{
    ConnectionKind, NewConnection, SecretInput, StateStore, SyncRecord, WorkspaceOptions,
};
use ferry_testkit::PgServer;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use tempfile::TempDir;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A store on a backend of its own (a temporary directory, and for PostgreSQL a new database
/// on the test binary's one server), and the options that opened it.
pub struct TestWorkspace {
    pub store: StateStore,
    pub options: WorkspaceOptions,
    pub backend: Backend,
    test_name: &'static str,
    /// Deleted with the workspace.
    _dir: TempDir,
}

impl TestWorkspace {
    pub async fn new(backend: Backend, test_name: &'static str) -> TestWorkspace {
        let (options, dir) = fresh_options(backend, test_name).await;
        let store = StateStore::initialize(&options)
            .await
            .expect("initialize a test workspace");
        assert_eq!(
            store.backend_name(),
            match backend {
                Backend::Sqlite => "sqlite",
                Backend::Postgres => "postgres",
            }
        );
        TestWorkspace {
            store,
            options,
            backend,
            test_name,
            _dir: dir,
        }
    }

    /// Options for another, not yet initialised workspace on the same backend.
    pub async fn fresh_options(&self) -> (WorkspaceOptions, TempDir) {
        fresh_options(self.backend, self.test_name).await
    }

    /// The first column of the first row, as text (`CAST(… AS TEXT)` it in the query).
    pub async fn raw_text(&self, sql: &str) -> Option<String> {
        raw_text(&self.options, sql).await
    }

    /// The first column of every row, as text (`CAST(… AS TEXT)` it in the query).
    pub async fn raw_texts(&self, sql: &str) -> Vec<Option<String>> {
        raw_texts(&self.options, sql).await
    }

    pub async fn raw_count(&self, sql: &str) -> i64 {
        raw_count(&self.options, sql).await
    }

    pub async fn raw_execute(&self, sql: &str) {
        raw_execute(&self.options, sql).await
    }

    /// A Stripe connection, a DuckDB warehouse, a model and a sync "customers" over them.
    pub async fn seed_customers_sync(&self) -> SyncRecord {
        self.store
            .put_connection(&stripe_connection("stripe"))
            .await
            .unwrap();
        self.store
            .put_connection(&NewConnection {
                name: "warehouse".to_string(),
                kind: ConnectionKind::Duckdb,
                config: serde_json::json!({"path": "warehouse.duckdb"}),
                secret: None,
            })
            .await
            .unwrap();
        self.store
            .put_model("signups", "warehouse", "SELECT email, name FROM signups")
            .await
            .unwrap();
        self.store
            .put_sync("customers", &customer_spec("signups", "stripe"))
            .await
            .unwrap()
    }
}

pub fn stripe_connection(name: &str) -> NewConnection {
    NewConnection {
        name: name.to_string(),
        kind: ConnectionKind::Stripe,
        config: serde_json::json!({"api_base": "http://127.0.0.1:12111", "max_rps": 25}),
        secret: Some(SecretInput::EnvVar("STRIPE_API_KEY".to_string())),
    }
}

pub fn customer_spec(model: &str, destination: &str) -> SyncSpec {
    SyncSpec {
        invoice: None,
        model: model.to_string(),
        destination: destination.to_string(),
        object: ObjectKind::Customer,
        behavior: Behavior::UpdateOrCreate,
        key: KeyMapping {
            column: "email".to_string(),
            field: "email".to_string(),
        },
        mappings: vec![FieldMapping {
            column: "name".to_string(),
            field: "name".to_string(),
        }],
        nulls: NullPolicy::Skip,
        schedule: None,
        mirror: Default::default(),
        alerts: None,
    }
}

/// The first column of the first row of the workspace's database, as text.
pub async fn raw_text(options: &WorkspaceOptions, sql: &str) -> Option<String> {
    raw_texts(options, sql).await.into_iter().next().flatten()
}

/// The first column of every row of the workspace's database, as text.
pub async fn raw_texts(options: &WorkspaceOptions, sql: &str) -> Vec<Option<String>> {
    match &options.state_url {
        None => {
            let connection = rusqlite::Connection::open(options.database_file()).unwrap();
            let mut statement = connection.prepare(sql).unwrap();
            let rows = statement
                .query_map([], |row| row.get::<_, Option<String>>(0))
                .unwrap();
            rows.map(Result::unwrap).collect()
        }
        Some(_) => {
            let client = postgres_client(options).await;
            let rows = client.query(sql, &[]).await.unwrap();
            rows.iter().map(|row| row.get(0)).collect()
        }
    }
}

pub async fn raw_count(options: &WorkspaceOptions, sql: &str) -> i64 {
    match &options.state_url {
        None => {
            let connection = rusqlite::Connection::open(options.database_file()).unwrap();
            connection.query_row(sql, [], |row| row.get(0)).unwrap()
        }
        Some(_) => {
            let client = postgres_client(options).await;
            client.query_one(sql, &[]).await.unwrap().get(0)
        }
    }
}

/// Runs SQL statements on the workspace's database (creating the SQLite file, and its
/// directory, when they do not exist yet).
pub async fn raw_execute(options: &WorkspaceOptions, sql: &str) {
    match &options.state_url {
        None => {
            if !options.dir.exists() {
                use std::os::unix::fs::DirBuilderExt as _;
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&options.dir)
                    .unwrap();
            }
            let connection = rusqlite::Connection::open(options.database_file()).unwrap();
            connection.execute_batch(sql).unwrap();
        }
        Some(_) => {
            let client = postgres_client(options).await;
            client.batch_execute(sql).await.unwrap();
        }
    }
}

/// The one PostgreSQL server of this test binary; each test gets its own database on it.
pub fn postgres_server() -> &'static PgServer {
    static SERVER: OnceLock<PgServer> = OnceLock::new();
    SERVER.get_or_init(|| PgServer::start().expect("start the test PostgreSQL server"))
}

/// A new temporary directory, and for PostgreSQL a new database on the test server.
///
/// The server is initialised with the C locale, but production databases usually sort text by
/// a language's rules (`en_US.UTF-8`). Each test database therefore gets the ICU `en-US`
/// collation as its default, so that a query which sorts or compares keys without saying
/// `COLLATE "C"` gets the order users would get, and a test can see that it is not byte order.
async fn fresh_options(backend: Backend, test_name: &str) -> (WorkspaceOptions, TempDir) {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let mut options = WorkspaceOptions::in_dir(dir.path().join("workspace"));
    if backend == Backend::Postgres {
        static DATABASE_COUNTER: AtomicUsize = AtomicUsize::new(0);
        let number = DATABASE_COUNTER.fetch_add(1, Ordering::SeqCst);
        let short_name: String = test_name.chars().take(40).collect();
        let database = format!("t{number}_{}_{short_name}", std::process::id()).to_lowercase();
        let server = postgres_server();
        let (admin, connection) = tokio_postgres::connect(&server.url(), tokio_postgres::NoTls)
            .await
            .expect("connect to the test PostgreSQL server");
        tokio::spawn(connection);
        admin
            .batch_execute(&format!(
                "CREATE DATABASE {database} TEMPLATE template0 \
                 LOCALE_PROVIDER icu ICU_LOCALE 'en-US'"
            ))
            .await
            .expect("create a test database");
        options.state_url = Some(server.url_for_db(&database));
    }
    (options, dir)
}

async fn postgres_client(options: &WorkspaceOptions) -> tokio_postgres::Client {
    let url = options
        .state_url
        .as_deref()
        .expect("a PostgreSQL workspace");
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}
