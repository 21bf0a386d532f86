//! End-to-end, through the real `ferry` binary: each warehouse ferry reads besides DuckDB and
//! PostgreSQL (MySQL/MariaDB, Snowflake, BigQuery, files) is connected with `ferry connect`,
//! a model and a sync run its rows into the Stripe emulator, and a bad credential, an
//! unreachable host, a missing table and a model that writes are refused with a message that
//! names the problem and the fix in that warehouse's terms.
//!
//! The warehouses are real servers started by the tests: MariaDB, snowduck (Snowflake's SQL API
//! over DuckDB) and crucible (BigQuery's REST API), and a folder with a CSV DuckDB wrote. Only
//! Google's token endpoint is played by a few lines here: the emulator takes any bearer token,
//! but ferry must first trade the service account key for one.

mod common;

use common::{path_str, Ran, Scene};
use ferry_testkit::bigquery_emulator::BigQueryEmulator;
use ferry_testkit::{MariaDbServer, SnowduckServer, MARIADB_PASSWORD, MARIADB_USER};
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpListener;

/// The two people every warehouse holds, in SQL that MySQL, DuckDB, Snowflake and BigQuery
/// all run.
const PEOPLE: &str = "SELECT 1 AS id, 'person1@example.com' AS email, 'Person 1' AS name, \
                      '+1 555 0001' AS phone, 'pro' AS plan \
                      UNION ALL SELECT 2, 'person2@example.com', 'Person 2', '+1 555 0002', 'free'";

/// Models that write, each refused before any warehouse sees it.
const WRITING_MODELS: [(&str, &str); 3] = [
    ("DELETE FROM people", "it starts with `DELETE`"),
    (
        "INSERT INTO people (id) VALUES (3)",
        "it starts with `INSERT`",
    ),
    (
        "CREATE TABLE copy AS SELECT * FROM people",
        "it starts with `CREATE`",
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_through_the_cli() {
    let server = tokio::task::spawn_blocking(|| MariaDbServer::start().expect("MariaDB starts"))
        .await
        .unwrap();
    let url = server.create_database("app").unwrap();
    server
        .run_sql(&format!("CREATE TABLE app.people AS {PEOPLE}"))
        .unwrap();
    let scene = Scene::new().await;
    scene.connect_stripe(&[]).await;
    scene
        .ferry(&["connect", "mysql", "shop", "--url", &url])
        .await
        .ok();
    sync_people(&scene, "shop", "SELECT * FROM people ORDER BY id").await;

    let wrong_password = url.replace(MARIADB_PASSWORD, "not-the-password-7c1e");
    let refused = scene
        .ferry(&["connect", "mysql", "bad", "--url", &wrong_password])
        .await;
    assert_refused(
        &refused,
        &[
            "the warehouse refused the login to MySQL at 127.0.0.1",
            &format!("Access denied for user '{MARIADB_USER}'"),
            "check the user name and password in the connection string",
        ],
    );
    assert!(!refused.stderr.contains("not-the-password-7c1e"));

    let port = server.port().to_string();
    let closed = url.replace(&format!(":{port}/"), &format!(":{}/", closed_port()));
    assert_refused(
        &scene
            .ferry(&["connect", "mysql", "gone", "--url", &closed])
            .await,
        &[
            "cannot connect to MySQL at 127.0.0.1",
            "Connection refused",
            "check that the warehouse is running and that the connection string points at it",
        ],
    );
    assert!(!listed(&scene).await.contains("gone"));

    assert_refused(
        &create_model(&scene, "shop", "SELECT * FROM missing_people").await,
        &[
            "the model failed in the warehouse: Table 'app.missing_people' doesn't exist",
            "check the table's name",
        ],
    );
    assert_writes_refused(&scene, "shop").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snowflake_through_the_cli() {
    let server = SnowduckServer::start().unwrap_or_else(|error| panic!("{error:#}"));
    let mut scene = Scene::new().await;
    scene.env.push((
        "SNOWFLAKE_PRIVATE_KEY".to_string(),
        SNOWFLAKE_PRIVATE_KEY.to_string(),
    ));
    scene.env.push((
        "NOT_A_KEY".to_string(),
        "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n".to_string(),
    ));
    scene.connect_stripe(&[]).await;
    let base_url = server.base_url();
    let connect = |name: &'static str, key_env: &'static str, base_url: String| {
        let scene = &scene;
        async move {
            scene
                .ferry(&[
                    "connect",
                    "snowflake",
                    name,
                    "--account",
                    "myorg-myaccount",
                    "--user",
                    "FERRY",
                    "--warehouse",
                    "SYNC_WH",
                    "--credential-env",
                    key_env,
                    "--base-url",
                    &base_url,
                ])
                .await
        }
    };
    connect("snow", "SNOWFLAKE_PRIVATE_KEY", base_url.clone())
        .await
        .ok();
    // snowduck answers from an in-memory DuckDB: the model carries its rows itself. Snowflake
    // names unquoted columns in upper case, so the model names them as the sync maps them.
    let model = format!(
        "SELECT id AS \"id\", email AS \"email\", name AS \"name\", phone AS \"phone\", \
         plan AS \"plan\" FROM ({PEOPLE}) ORDER BY 1"
    );
    sync_people(&scene, "snow", &model).await;

    assert_refused(
        &connect("bad", "NOT_A_KEY", base_url.clone()).await,
        &[
            "the warehouse refused the login to Snowflake account `myorg-myaccount`, user \
             `FERRY`",
            "the private key is not an RSA key of 2048 bits or more that ferry can use",
            "give ferry the PKCS#8 PEM private key whose public key is registered on user \
             `FERRY` (`ALTER USER FERRY SET RSA_PUBLIC_KEY='…'`)",
        ],
    );
    assert_refused(
        &connect(
            "gone",
            "SNOWFLAKE_PRIVATE_KEY",
            format!("http://127.0.0.1:{}", closed_port()),
        )
        .await,
        &[
            "cannot connect to Snowflake account `myorg-myaccount`",
            "check the connection's account identifier (`myorg-myaccount`) and that this \
             machine can reach http://127.0.0.1:",
        ],
    );
    assert!(!listed(&scene).await.contains("gone"));

    assert_refused(
        &create_model(&scene, "snow", "SELECT * FROM missing_people").await,
        &[
            "the model failed in the warehouse:",
            "MISSING_PEOPLE does not exist",
            "check the table's name",
        ],
    );
    assert_writes_refused(&scene, "snow").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bigquery_through_the_cli() {
    let emulator = BigQueryEmulator::start().expect("the BigQuery emulator starts");
    let api_base = emulator.api_base();
    create_bigquery_table(&api_base, &format!("CREATE TABLE shop.people AS {PEOPLE}")).await;
    let google = TokenEndpoint::start();
    let mut scene = Scene::new().await;
    scene.env.push((
        "BIGQUERY_KEY".to_string(),
        service_account_key(&format!("{}/token", google.base)),
    ));
    scene.env.push((
        "REVOKED_KEY".to_string(),
        service_account_key(&format!("{}/revoked/token", google.base)),
    ));
    scene.connect_stripe(&[]).await;
    let connect = |name: &'static str, key_env: &'static str, api_base: String| {
        let scene = &scene;
        async move {
            scene
                .ferry(&[
                    "connect",
                    "bigquery",
                    name,
                    "--project-id",
                    BIGQUERY_PROJECT,
                    "--location",
                    "EU",
                    "--service-account-key-env",
                    key_env,
                    "--api-base",
                    &api_base,
                ])
                .await
        }
    };
    connect("bq", "BIGQUERY_KEY", api_base.clone()).await.ok();
    sync_people(&scene, "bq", "SELECT * FROM shop.people ORDER BY id").await;

    assert_refused(
        &connect("bad", "REVOKED_KEY", api_base.clone()).await,
        &[
            "the warehouse refused the login to BigQuery project `ferry-test`",
            "invalid_grant (Invalid JWT Signature.)",
            "check that the key is current",
            "give the account the roles BigQuery Job User on project `ferry-test` and BigQuery \
             Data Viewer on the datasets the model reads",
        ],
    );
    assert_refused(
        &connect(
            "gone",
            "BIGQUERY_KEY",
            format!("http://127.0.0.1:{}", closed_port()),
        )
        .await,
        &[
            "cannot connect to BigQuery project `ferry-test`",
            "check that this machine can reach http://127.0.0.1:",
        ],
    );
    assert!(!listed(&scene).await.contains("gone"));

    assert_refused(
        &create_model(&scene, "bq", "SELECT * FROM shop.missing_people").await,
        &["the model failed in the warehouse: Not found: Table \
             ferry-test:shop.missing_people was not found in location EU"],
    );
    assert_writes_refused(&scene, "bq").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_through_the_cli() {
    let scene = Scene::new().await;
    let folder = scene.dir.path().join("exports");
    std::fs::create_dir(&folder).unwrap();
    scene.warehouse_sql(&format!(
        "COPY ({PEOPLE}) TO '{}' (HEADER)",
        folder.join("people.csv").display()
    ));
    scene.connect_stripe(&[]).await;
    let folder = path_str(&folder);
    scene
        .ferry(&["connect", "files", "exports", "--folder", &folder])
        .await
        .ok();
    sync_people(&scene, "exports", "SELECT * FROM people ORDER BY id").await;

    // A folder that is missing, a file, or closed to ferry: the same words for each, so the
    // server's API tells nobody which paths exist.
    let csv = format!("{folder}/people.csv");
    let missing = format!("{folder}/missing");
    for (path, name) in [(&missing, "gone"), (&csv, "file")] {
        assert_refused(
            &scene
                .ferry(&["connect", "files", name, "--folder", path])
                .await,
            &[&format!(
                "the files connection cannot be used: there is no folder ferry can read at \
                 {path}; check the path, that it names a folder (not a file), and that the user \
                 ferry runs as may read and enter it"
            )],
        );
    }
    assert!(!listed(&scene).await.contains("gone"));

    assert_refused(
        &create_model(&scene, "exports", "SELECT * FROM missing_people").await,
        &[
            "the model failed in the warehouse:",
            "missing_people does not exist",
            &format!("the tables of a files connection are the data files in {folder}"),
        ],
    );
    assert_writes_refused(&scene, "exports").await;
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Model `people` over `connection`, sync `people-to-stripe` keyed on email, one run: both
/// people end up in the emulator as customers with their names and plans.
async fn sync_people(scene: &Scene, connection: &str, sql: &str) {
    scene
        .ferry(&[
            "model",
            "create",
            "people",
            "--connection",
            connection,
            "--sql",
            sql,
        ])
        .await
        .ok();
    scene.save_email_sync(&[]).await;
    let report = scene.run_sync_json("people-to-stripe", &[]).await;
    assert_eq!(
        (report["status"].as_str(), report["created"].as_u64()),
        (Some("completed"), Some(2)),
        "{report}"
    );
    for (email, name, plan) in [
        ("person1@example.com", "Person 1", "pro"),
        ("person2@example.com", "Person 2", "free"),
    ] {
        let customers = scene.customers_with_email(email);
        assert_eq!(customers.len(), 1, "{email}: {customers:?}");
        assert_eq!(customers[0]["name"], name);
        assert_eq!(customers[0]["metadata"]["plan"], plan);
    }
    assert_eq!(scene.stripe().customers().len(), 2);
}

async fn create_model(scene: &Scene, connection: &str, sql: &str) -> Ran {
    scene
        .ferry(&[
            "model",
            "create",
            "refused",
            "--connection",
            connection,
            "--sql",
            sql,
        ])
        .await
}

/// Every model of [`WRITING_MODELS`] is refused, naming the statement and what a model must be.
async fn assert_writes_refused(scene: &Scene, connection: &str) {
    for (sql, problem) in WRITING_MODELS {
        assert_refused(
            &create_model(scene, connection, sql).await,
            &[
                "the model is not a single read-only query",
                problem,
                "a model must be a read-only query starting with SELECT, WITH, VALUES, TABLE or \
                 FROM",
            ],
        );
    }
    let models = scene.ferry(&["model", "list"]).await.ok().stdout;
    assert!(!models.contains("refused"), "{models}");
}

/// `ferry` failed, and its error says each of `fragments`.
#[track_caller]
fn assert_refused(ran: &Ran, fragments: &[&str]) {
    assert_ne!(ran.code, 0, "ferry succeeded:\n{}", ran.stdout);
    for fragment in fragments {
        assert!(
            ran.stderr.contains(fragment),
            "the error does not say {fragment:?}:\n{}",
            ran.stderr
        );
    }
}

async fn listed(scene: &Scene) -> String {
    scene.ferry(&["connections"]).await.ok().stdout
}

/// A loopback port nothing listens on (taken from the OS, then let go).
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

const SNOWFLAKE_PRIVATE_KEY: &str =
    include_str!("../crates/source/src/snowflake/test_keys/rsa_key.p8");

const BIGQUERY_PROJECT: &str = "ferry-test";

/// A service account key file whose token endpoint is `token_uri`.
fn service_account_key(token_uri: &str) -> String {
    serde_json::json!({
        "type": "service_account",
        "project_id": BIGQUERY_PROJECT,
        "private_key_id": "test-key-1",
        "private_key": include_str!("../crates/source/src/bigquery/test_keys/service_account_private.pem"),
        "client_email": "ferry-reader@ferry-test.iam.gserviceaccount.com",
        "token_uri": token_uri,
    })
    .to_string()
}

/// A dataset `shop` in EU, then `create_table` run in it, through the emulator's API directly
/// (a model may not write).
async fn create_bigquery_table(api_base: &str, create_table: &str) {
    let client = reqwest::Client::new();
    let post = |path: &str, body: serde_json::Value| {
        client
            .post(format!(
                "{api_base}/bigquery/v2/projects/{BIGQUERY_PROJECT}/{path}"
            ))
            .bearer_auth("setup")
            .json(&body)
            .send()
    };
    for (path, body) in [
        (
            "datasets",
            serde_json::json!({"datasetReference": {"projectId": BIGQUERY_PROJECT, "datasetId": "shop"}, "location": "EU"}),
        ),
        (
            "queries",
            serde_json::json!({"query": create_table, "useLegacySql": false, "location": "EU"}),
        ),
    ] {
        let answer = post(path, body).await.unwrap();
        assert!(answer.status().is_success(), "{:?}", answer.text().await);
    }
}

/// Google's OAuth token endpoint as far as ferry needs it: `POST /token` grants a token;
/// `POST /revoked/token` refuses the key as Google does a deleted one.
struct TokenEndpoint {
    base: String,
}

impl TokenEndpoint {
    fn start() -> TokenEndpoint {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || answer_token_request(stream));
            }
        });
        TokenEndpoint { base }
    }
}

fn answer_token_request(stream: std::net::TcpStream) {
    let mut reader = BufReader::new(&stream);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut content_length = 0usize;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).unwrap_or(0) == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                content_length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; content_length];
    let _ = reader.read_exact(&mut body);
    let (status, answer) = if request_line.starts_with("POST /revoked/") {
        (
            "400 Bad Request",
            r#"{"error": "invalid_grant", "error_description": "Invalid JWT Signature."}"#,
        )
    } else {
        (
            "200 OK",
            r#"{"access_token": "test-access-token", "expires_in": 3600, "token_type": "Bearer"}"#,
        )
    };
    let mut stream = &stream;
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{answer}",
        answer.len()
    );
}
