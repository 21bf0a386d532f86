//! The Snowflake source, end to end through its public API, in three settings:
//!
//! - against **snowduck** (a Snowflake SQL API server backed by DuckDB, started per test):
//!   statements, results of several partitions, SQL errors, the connection test. snowduck
//!   accepts any credential, sends no gzip, executes nothing submitted with `async=true`, and
//!   reports every column as TEXT with Python's own text for values, so the encodings are
//!   tested by the fixture tests in `src/snowflake/decode.rs` instead;
//! - against a **tiny local server** that answers as Snowflake's documentation says, for what
//!   snowduck does not do: 202 and polling, gzip-encoded partitions, cancel on drop and on
//!   timeout, 408, 429 with the same request id, refused credentials, an unknown warehouse;
//! - against **real Snowflake** when `SNOWFLAKE_ACCOUNT` and friends are set (skipped with a
//!   printed reason otherwise).

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use ferry_core::{Secret, Value};
use ferry_source::{
    preview, query, test_connection, QueryOptions, SnowflakeConfig, SnowflakeCredential,
    SourceConfig, SourceError,
};
use ferry_testkit::SnowduckServer;
use serde_json::{json, Value as Json};
use std::collections::VecDeque;
use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const PRIVATE_KEY: &str = include_str!("../src/snowflake/test_keys/rsa_key.p8");
const ENCRYPTED_PRIVATE_KEY: &str = include_str!("../src/snowflake/test_keys/rsa_key_encrypted.p8");
const PASSPHRASE: &str = "fixture-passphrase-5e2b";
const FINGERPRINT: &str = include_str!("../src/snowflake/test_keys/rsa_key.pub.fingerprint");
const TOKEN: &str = "pat-secret-token-3f9a1c7d";

fn key_pair() -> SnowflakeCredential {
    SnowflakeCredential::KeyPair {
        private_key_pem: Secret::new(ENCRYPTED_PRIVATE_KEY),
        passphrase: Some(Secret::new(PASSPHRASE)),
    }
}

fn config(base_url: &str, credential: SnowflakeCredential) -> SourceConfig {
    SourceConfig::Snowflake(SnowflakeConfig {
        account: "myorg-myaccount".into(),
        user: "ferry".into(),
        warehouse: "SYNC_WH".into(),
        database: Some("ANALYTICS".into()),
        schema: Some("PUBLIC".into()),
        role: Some("FERRY_READER".into()),
        credential,
        base_url: Some(base_url.to_string()),
    })
}

async fn read_all(config: &SourceConfig, sql: &str) -> Result<Vec<Vec<Value>>, SourceError> {
    let mut stream = query(config, sql, &QueryOptions::default()).await?;
    let mut rows = Vec::new();
    while let Some(row) = stream.next_row().await {
        rows.push(row?);
    }
    Ok(rows)
}

fn text(value: &str) -> Value {
    Value::Text(value.to_string())
}

// ---------------------------------------------------------------------------------------------
// Against snowduck.

fn snowduck() -> SnowduckServer {
    SnowduckServer::start().unwrap_or_else(|error| panic!("{error:#}"))
}

#[tokio::test]
async fn snowduck_runs_a_statement_and_returns_its_columns_and_rows() {
    let server = snowduck();
    let config = config(&server.base_url(), key_pair());
    let mut stream = query(
        &config,
        "SELECT 1 AS id, 'ada' AS name UNION ALL SELECT 2, NULL ORDER BY id",
        &QueryOptions::default(),
    )
    .await
    .unwrap();
    let names: Vec<&str> = stream.columns().iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["ID", "NAME"]);
    let mut rows = Vec::new();
    while let Some(row) = stream.next_row().await {
        rows.push(row.unwrap());
    }
    // snowduck calls every column TEXT, so the values arrive as text (see the module comment).
    assert_eq!(
        rows,
        [vec![text("1"), text("ada")], vec![text("2"), Value::Null]]
    );
}

#[tokio::test]
async fn snowduck_results_of_several_partitions_stream_every_row_in_order() {
    let server = snowduck();
    let config = config(&server.base_url(), key_pair());
    // snowduck cuts results into partitions of 10,000 rows: this one has three.
    let options = QueryOptions {
        batch_size: 500,
        ..QueryOptions::default()
    };
    let mut stream = query(
        &config,
        "SELECT seq4() AS n FROM TABLE(GENERATOR(ROWCOUNT => 25000)) ORDER BY n",
        &options,
    )
    .await
    .unwrap();
    let mut expected = 0u64;
    let mut most_buffered = 0;
    while let Some(row) = stream.next_row().await {
        assert_eq!(row.unwrap(), vec![text(&expected.to_string())]);
        expected += 1;
        most_buffered = most_buffered.max(stream.buffered_rows());
    }
    assert_eq!(expected, 25_000);
    assert!(
        most_buffered <= 500,
        "{most_buffered} rows waited in memory"
    );
}

#[tokio::test]
async fn snowduck_sql_errors_keep_snowflakes_message() {
    let server = snowduck();
    let config = config(&server.base_url(), key_pair());
    let error = read_all(&config, "SELECT * FROM missing_table")
        .await
        .unwrap_err();
    match &error {
        SourceError::Sql { message, .. } => {
            assert!(
                message.contains("MISSING_TABLE does not exist"),
                "{message}"
            )
        }
        other => panic!("expected an SQL error, got {other:?}"),
    }
}

#[tokio::test]
async fn snowduck_answers_the_connection_test_and_a_preview() {
    let server = snowduck();
    let config = config(
        &server.base_url(),
        SnowflakeCredential::ProgrammaticAccessToken(Secret::new(TOKEN)),
    );
    test_connection(&config).await.unwrap();
    let (columns, rows) = preview(
        &config,
        "SELECT seq4() AS n FROM TABLE(GENERATOR(ROWCOUNT => 100))",
        3,
        &QueryOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(columns[0].name, "N");
    assert_eq!(rows.len(), 3);
}

#[tokio::test]
async fn a_model_that_writes_never_reaches_snowflake() {
    // No server at this address: the model is refused before any request.
    let config = config("http://127.0.0.1:9", key_pair());
    for sql in [
        "DELETE FROM customers",
        "SELECT 1; DROP TABLE customers",
        "CREATE TABLE t AS SELECT 1",
    ] {
        let error = read_all(&config, sql).await.unwrap_err();
        assert!(
            matches!(error, SourceError::NotAQuery { .. }),
            "{sql}: {error:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Against a local server that answers as Snowflake's documentation says.

/// One request the fake server received.
#[derive(Debug, Clone)]
struct Received {
    method: Method,
    path: String,
    query: String,
    headers: HeaderMap,
    body: String,
}

impl Received {
    fn query_param(&self, name: &str) -> Option<String> {
        url_params(&self.query)
            .into_iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value)
    }
}

fn url_params(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect()
}

/// What the fake answers: submissions and status requests from their queues (the last answer
/// repeats), partitions 1.. gzip-encoded.
#[derive(Default)]
struct Script {
    submissions: VecDeque<(u16, Json)>,
    statuses: VecDeque<(u16, Json)>,
    /// `data` of partitions 1, 2, …
    partitions: Vec<Json>,
    received: Vec<Received>,
}

type Fake = Arc<Mutex<Script>>;

struct FakeSnowflake {
    script: Fake,
    base_url: String,
}

impl FakeSnowflake {
    async fn start(script: Script) -> FakeSnowflake {
        let script = Arc::new(Mutex::new(script));
        let router = axum::Router::new()
            .fallback(answer)
            .with_state(Arc::clone(&script));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        FakeSnowflake { script, base_url }
    }

    fn received(&self) -> Vec<Received> {
        self.script.lock().unwrap().received.clone()
    }

    /// Waits (a few seconds at most) for a cancel request, which is sent after the stream is
    /// dropped, by the task that ran the statement.
    async fn wait_for_cancel(&self) -> Received {
        for _ in 0..100 {
            if let Some(cancel) = self
                .received()
                .into_iter()
                .find(|request| request.path.ends_with("/cancel"))
            {
                return cancel;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no cancel request; received: {:#?}", self.received());
    }
}

async fn answer(State(script): State<Fake>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    let received = Received {
        method: parts.method.clone(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or_default().to_string(),
        headers: parts.headers.clone(),
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    let mut script = script.lock().unwrap();
    script.received.push(received.clone());
    let next = |queue: &mut VecDeque<(u16, Json)>| {
        if queue.len() > 1 {
            queue.pop_front().unwrap()
        } else {
            queue.front().cloned().expect("the script has an answer")
        }
    };
    if received.path.ends_with("/cancel") {
        return json_response(200, &json!({"code": "000000", "message": "cancelled"}));
    }
    if received.method == Method::POST {
        let (status, body) = next(&mut script.submissions);
        return json_response(status, &body);
    }
    match received
        .query_param("partition")
        .map(|n| n.parse::<usize>().unwrap())
    {
        Some(partition) if partition > 0 => {
            let data = script.partitions[partition - 1].clone();
            gzip_response(&json!({"data": data}))
        }
        _ => {
            let (status, body) = next(&mut script.statuses);
            json_response(status, &body)
        }
    }
}

fn json_response(status: u16, body: &Json) -> Response {
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap())
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

fn gzip_response(body: &Json) -> Response {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(body.to_string().as_bytes()).unwrap();
    Response::builder()
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(Body::from(encoder.finish().unwrap()))
        .unwrap()
}

const HANDLE: &str = "01b2c3d4-0000-5a5a-0000-00012c3f4e5b";

/// A `ResultSet` with one FIXED column `N`, `partitions` partitions, and partition 0's rows.
fn result_set(partition_0: &[i64], partitions: usize) -> Json {
    json!({
        "code": "090001",
        "sqlState": "00000",
        "message": "Statement executed successfully.",
        "statementHandle": HANDLE,
        "statementStatusUrl": format!("/api/v2/statements/{HANDLE}"),
        "resultSetMetaData": {
            "numRows": 0,
            "format": "jsonv2",
            "rowType": [{"name": "N", "type": "fixed", "precision": 38, "scale": 0, "nullable": false}],
            "partitionInfo": vec![json!({"rowCount": 1, "uncompressedSize": 10}); partitions],
        },
        "data": rows_of(partition_0),
    })
}

fn rows_of(numbers: &[i64]) -> Json {
    numbers.iter().map(|n| json!([n.to_string()])).collect()
}

fn query_status(code: &str, message: &str) -> Json {
    json!({
        "code": code,
        "sqlState": "00000",
        "message": message,
        "statementHandle": HANDLE,
        "statementStatusUrl": format!("/api/v2/statements/{HANDLE}"),
    })
}

fn running() -> (u16, Json) {
    (
        202,
        query_status("333334", "Asynchronous execution in progress."),
    )
}

fn ints(rows: &[Vec<Value>]) -> Vec<i64> {
    rows.iter()
        .map(|row| match row.as_slice() {
            [Value::Int(n)] => *n,
            other => panic!("{other:?}"),
        })
        .collect()
}

#[tokio::test]
async fn a_statement_snowflake_is_still_running_is_polled_until_done() {
    let fake = FakeSnowflake::start(Script {
        submissions: [running()].into(),
        statuses: [running(), running(), (200, result_set(&[7, 8], 1))].into(),
        ..Script::default()
    })
    .await;
    let rows = read_all(&config(&fake.base_url, key_pair()), "SELECT n FROM t")
        .await
        .unwrap();
    assert_eq!(ints(&rows), [7, 8]);
    let statuses: Vec<String> = fake
        .received()
        .iter()
        .filter(|request| request.method == Method::GET)
        .map(|request| request.path.clone())
        .collect();
    assert_eq!(statuses, vec![format!("/api/v2/statements/{HANDLE}"); 3]);
}

#[tokio::test]
async fn later_partitions_are_fetched_one_by_one_and_arrive_gzip_encoded() {
    let fake = FakeSnowflake::start(Script {
        submissions: [(200, result_set(&[1, 2], 3))].into(),
        partitions: vec![rows_of(&[3, 4, 5]), rows_of(&[6])],
        ..Script::default()
    })
    .await;
    let rows = read_all(&config(&fake.base_url, key_pair()), "SELECT n FROM t")
        .await
        .unwrap();
    assert_eq!(ints(&rows), [1, 2, 3, 4, 5, 6]);
    let partitions: Vec<Option<String>> = fake
        .received()
        .iter()
        .filter(|request| request.method == Method::GET)
        .map(|request| request.query_param("partition"))
        .collect();
    assert_eq!(partitions, [Some("1".into()), Some("2".into())]);
}

#[tokio::test]
async fn the_submission_carries_the_session_the_timeout_and_a_signed_token() {
    let fake = FakeSnowflake::start(Script {
        submissions: [(200, result_set(&[1], 1))].into(),
        ..Script::default()
    })
    .await;
    let options = QueryOptions {
        statement_timeout: Duration::from_millis(1500),
        ..QueryOptions::default()
    };
    let mut stream = query(
        &config(&fake.base_url, key_pair()),
        "SELECT n FROM t",
        &options,
    )
    .await
    .unwrap();
    while stream.next_row().await.is_some() {}
    let submission = fake.received().remove(0);
    assert_eq!(submission.path, "/api/v2/statements");
    let body: Json = serde_json::from_str(&submission.body).unwrap();
    assert_eq!(
        body,
        json!({
            "statement": "SELECT n FROM t",
            "timeout": 2,
            "warehouse": "SYNC_WH",
            "database": "ANALYTICS",
            "schema": "PUBLIC",
            "role": "FERRY_READER",
            "resultSetMetaData": {"format": "jsonv2"},
            "parameters": {
                "TIMEZONE": "UTC",
                "BINARY_OUTPUT_FORMAT": "HEX",
                "MULTI_STATEMENT_COUNT": "1",
                "QUERY_TAG": "ferry",
            },
        })
    );
    let request_id = submission.query_param("requestId").unwrap();
    assert_eq!(request_id.len(), 36, "{request_id}");
    assert_eq!(submission.query_param("retry").as_deref(), Some("true"));
    let header = |name: &str| submission.headers[name].to_str().unwrap().to_string();
    assert_eq!(
        header("x-snowflake-authorization-token-type"),
        "KEYPAIR_JWT"
    );
    let token = header("authorization");
    let claims = token
        .strip_prefix("Bearer ")
        .and_then(|jwt| jwt.split('.').nth(1))
        .map(|claims| {
            use base64::Engine as _;
            let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(claims)
                .unwrap();
            serde_json::from_slice::<Json>(&bytes).unwrap()
        })
        .unwrap();
    assert_eq!(claims["sub"], "MYORG-MYACCOUNT.FERRY");
    assert_eq!(
        claims["iss"],
        format!("MYORG-MYACCOUNT.FERRY.SHA256:{}", FINGERPRINT.trim())
    );
}

#[tokio::test]
async fn a_rate_limited_submission_is_sent_again_under_the_same_request_id() {
    let fake = FakeSnowflake::start(Script {
        submissions: [
            (429, query_status("000429", "Too many requests")),
            (200, result_set(&[1], 1)),
        ]
        .into(),
        ..Script::default()
    })
    .await;
    let rows = read_all(&config(&fake.base_url, key_pair()), "SELECT n FROM t")
        .await
        .unwrap();
    assert_eq!(ints(&rows), [1]);
    let ids: Vec<Option<String>> = fake
        .received()
        .iter()
        .map(|request| request.query_param("requestId"))
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(ids[0].is_some());
    assert_eq!(ids[0], ids[1]);
}

#[tokio::test]
async fn a_dropped_stream_cancels_the_statement() {
    let many: Vec<i64> = (0..5000).collect();
    let fake = FakeSnowflake::start(Script {
        submissions: [(200, result_set(&many, 2))].into(),
        partitions: vec![rows_of(&many)],
        ..Script::default()
    })
    .await;
    let options = QueryOptions {
        batch_size: 10,
        ..QueryOptions::default()
    };
    let mut stream = query(
        &config(&fake.base_url, key_pair()),
        "SELECT n FROM t",
        &options,
    )
    .await
    .unwrap();
    assert_eq!(
        stream.next_row().await.unwrap().unwrap(),
        vec![Value::Int(0)]
    );
    drop(stream);
    let cancel = fake.wait_for_cancel().await;
    assert_eq!(cancel.method, Method::POST);
    assert_eq!(cancel.path, format!("/api/v2/statements/{HANDLE}/cancel"));
}

#[tokio::test]
async fn a_statement_past_its_timeout_is_cancelled_and_names_the_setting() {
    // Snowflake never finishes (nor answers 408 itself): ferry gives up and cancels.
    let fake = FakeSnowflake::start(Script {
        submissions: [running()].into(),
        statuses: [running()].into(),
        ..Script::default()
    })
    .await;
    let options = QueryOptions {
        statement_timeout: Duration::from_secs(1),
        ..QueryOptions::default()
    };
    let error = query(
        &config(&fake.base_url, key_pair()),
        "SELECT n FROM t",
        &options,
    )
    .await
    .err()
    .expect("timed out");
    assert!(
        matches!(error, SourceError::StatementTimeout { timeout, .. } if timeout == Duration::from_secs(1)),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("statement_timeout_seconds"),
        "{error}"
    );
    fake.wait_for_cancel().await;
}

#[tokio::test]
async fn snowflakes_own_timeout_answer_is_a_statement_timeout() {
    let fake = FakeSnowflake::start(Script {
        submissions: [(
            408,
            query_status("000630", "Statement reached its statement or warehouse timeout of 1 second(s) and was canceled."),
        )]
        .into(),
        ..Script::default()
    })
    .await;
    let options = QueryOptions {
        statement_timeout: Duration::from_secs(1),
        ..QueryOptions::default()
    };
    let error = query(
        &config(&fake.base_url, key_pair()),
        "SELECT n FROM t",
        &options,
    )
    .await
    .err()
    .expect("timed out");
    assert!(
        matches!(error, SourceError::StatementTimeout { .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn refused_credentials_say_what_to_check_without_the_secret() {
    let refusal = (
        401,
        json!({"code": "390144", "message": "JWT token is invalid."}),
    );
    let fake = FakeSnowflake::start(Script {
        submissions: [refusal].into(),
        ..Script::default()
    })
    .await;
    let error = read_all(&config(&fake.base_url, key_pair()), "SELECT 1")
        .await
        .unwrap_err();
    assert!(
        matches!(error, SourceError::AuthenticationFailed { .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains("JWT token is invalid."), "{message}");
    assert!(message.contains(FINGERPRINT.trim()), "{message}");
    assert!(message.contains("RSA_PUBLIC_KEY"), "{message}");

    let pat = config(
        &fake.base_url,
        SnowflakeCredential::ProgrammaticAccessToken(Secret::new(TOKEN)),
    );
    let error = read_all(&pat, "SELECT 1").await.unwrap_err();
    let message = error.to_string();
    assert!(message.contains("programmatic access token"), "{message}");
    assert_no_secret(&format!("{message} {error:?}"));
    let sent = fake.received().pop().unwrap();
    assert_eq!(
        sent.headers["x-snowflake-authorization-token-type"],
        "PROGRAMMATIC_ACCESS_TOKEN"
    );
    assert_eq!(
        sent.headers["authorization"],
        format!("Bearer {TOKEN}").as_str()
    );
}

#[tokio::test]
async fn an_unknown_warehouse_names_the_setting() {
    let fake = FakeSnowflake::start(Script {
        submissions: [(
            422,
            json!({
                "code": "000606",
                "sqlState": "57P03",
                "message": "No active warehouse selected in the current session.  Select an active warehouse with the 'use warehouse' command.\n",
                "statementHandle": HANDLE,
            }),
        )]
        .into(),
        ..Script::default()
    })
    .await;
    let error = read_all(&config(&fake.base_url, key_pair()), "SELECT 1")
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("No active warehouse selected"),
        "{message}"
    );
    assert!(message.contains("`warehouse` (`SYNC_WH`)"), "{message}");
}

#[tokio::test]
async fn a_wrong_passphrase_is_refused_before_any_request() {
    let config = config(
        "http://127.0.0.1:9",
        SnowflakeCredential::KeyPair {
            private_key_pem: Secret::new(ENCRYPTED_PRIVATE_KEY),
            passphrase: Some(Secret::new("wrong-passphrase-8d2e")),
        },
    );
    let error = read_all(&config, "SELECT 1").await.unwrap_err();
    let message = error.to_string();
    assert!(message.contains("check the passphrase"), "{message}");
    assert!(!message.contains("8d2e") && !format!("{error:?}").contains("8d2e"));
}

/// No part of any credential of these tests appears in `output`.
fn assert_no_secret(output: &str) {
    let key_body: String = PRIVATE_KEY.lines().nth(1).unwrap().to_string();
    let encrypted_body: String = ENCRYPTED_PRIVATE_KEY.lines().nth(1).unwrap().to_string();
    for secret in [TOKEN, PASSPHRASE, &key_body, &encrypted_body] {
        assert!(!output.contains(secret), "a secret leaked into: {output}");
    }
}

#[test]
fn configurations_never_print_their_credential() {
    let configs = [
        config("http://127.0.0.1:9", key_pair()),
        config(
            "http://127.0.0.1:9",
            SnowflakeCredential::KeyPair {
                private_key_pem: Secret::new(PRIVATE_KEY),
                passphrase: None,
            },
        ),
        config(
            "http://127.0.0.1:9",
            SnowflakeCredential::OAuthToken(Secret::new(TOKEN)),
        ),
        config(
            "http://127.0.0.1:9",
            SnowflakeCredential::ProgrammaticAccessToken(Secret::new(TOKEN)),
        ),
    ];
    for config in configs {
        assert_no_secret(&format!("{config:?} {}", config.describe()));
    }
}

// ---------------------------------------------------------------------------------------------
// Against real Snowflake.

/// The account from `SNOWFLAKE_ACCOUNT`, `SNOWFLAKE_USER`, `SNOWFLAKE_WAREHOUSE` (and optional
/// `SNOWFLAKE_ROLE`, `SNOWFLAKE_DATABASE`, `SNOWFLAKE_SCHEMA`), signed in with the key in
/// `SNOWFLAKE_PRIVATE_KEY_PATH` (and `SNOWFLAKE_PRIVATE_KEY_PASSPHRASE`) or the token in
/// `SNOWFLAKE_PAT`; without them, why the live test is skipped. A key file that is named but
/// cannot be read fails the test: credentials were meant to be there.
fn live_config() -> Result<SourceConfig, String> {
    let var = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
    let required =
        |name: &str| var(name).ok_or_else(|| format!("set {name} to run against real Snowflake"));
    let account = required("SNOWFLAKE_ACCOUNT")?;
    let credential = if let Some(path) = var("SNOWFLAKE_PRIVATE_KEY_PATH") {
        let pem = std::fs::read_to_string(&path)
            .unwrap_or_else(|error| panic!("SNOWFLAKE_PRIVATE_KEY_PATH={path}: {error}"));
        SnowflakeCredential::KeyPair {
            private_key_pem: Secret::new(pem),
            passphrase: var("SNOWFLAKE_PRIVATE_KEY_PASSPHRASE").map(Secret::new),
        }
    } else if let Some(token) = var("SNOWFLAKE_PAT") {
        SnowflakeCredential::ProgrammaticAccessToken(Secret::new(token))
    } else {
        return Err(
            "set SNOWFLAKE_PRIVATE_KEY_PATH or SNOWFLAKE_PAT to run against real Snowflake".into(),
        );
    };
    Ok(SourceConfig::Snowflake(SnowflakeConfig {
        account,
        user: required("SNOWFLAKE_USER")?,
        warehouse: required("SNOWFLAKE_WAREHOUSE")?,
        database: var("SNOWFLAKE_DATABASE"),
        schema: var("SNOWFLAKE_SCHEMA"),
        role: var("SNOWFLAKE_ROLE"),
        credential,
        base_url: None,
    }))
}

#[tokio::test]
async fn live_snowflake_decodes_every_type_and_streams_partitions() {
    let config = match live_config() {
        Ok(config) => config,
        Err(reason) => {
            println!("skipped: {reason}");
            return;
        }
    };
    test_connection(&config).await.unwrap();
    let rows = read_all(
        &config,
        "SELECT 42::NUMBER(38,0) AS i, 12345678901234567890123::NUMBER(38,0) AS big, \
         19.9::NUMBER(10,2) AS d, 1.5::FLOAT AS f, 'ada' AS t, TRUE AS b, \
         '2020-01-01'::DATE AS dt, '12:34:56.789'::TIME AS tm, \
         '2020-01-02 03:04:05.123'::TIMESTAMP_NTZ AS ntz, \
         '2020-01-02 05:04:05 +02:00'::TIMESTAMP_TZ AS tz, \
         '2020-01-02 03:04:05'::TIMESTAMP_LTZ AS ltz, \
         PARSE_JSON('{\"a\": [1, null]}') AS v, TO_BINARY('48656C6C6F', 'HEX') AS bin, \
         NULL::VARCHAR AS nothing",
    )
    .await
    .unwrap();
    let instant = chrono::DateTime::parse_from_rfc3339("2020-01-02T03:04:05Z")
        .unwrap()
        .to_utc();
    assert_eq!(
        rows,
        [vec![
            Value::Int(42),
            Value::Decimal("12345678901234567890123".into()),
            Value::Decimal("19.90".into()),
            Value::Float(1.5),
            text("ada"),
            Value::Bool(true),
            Value::Date(chrono::NaiveDate::from_ymd_opt(2020, 1, 1).unwrap()),
            text("12:34:56.789"),
            Value::Timestamp(
                chrono::NaiveDateTime::parse_from_str(
                    "2020-01-02 03:04:05.123",
                    "%Y-%m-%d %H:%M:%S%.f"
                )
                .unwrap()
            ),
            Value::TimestampTz(instant),
            Value::TimestampTz(instant),
            Value::Json(json!({"a": [1, null]})),
            Value::Bytes(b"Hello".to_vec()),
            Value::Null,
        ]]
    );
    // Large enough that Snowflake cuts it into several partitions.
    let options = QueryOptions {
        batch_size: 1000,
        ..QueryOptions::default()
    };
    let mut stream = query(
        &config,
        "SELECT seq8() AS n, randstr(64, random()) AS padding \
         FROM TABLE(GENERATOR(ROWCOUNT => 300000))",
        &options,
    )
    .await
    .unwrap();
    let mut count = 0u64;
    while let Some(row) = stream.next_row().await {
        row.unwrap();
        count += 1;
        assert!(stream.buffered_rows() <= 1000);
    }
    assert_eq!(count, 300_000);
    let error = read_all(&config, "SELECT * FROM ferry_no_such_table_4f1c")
        .await
        .unwrap_err();
    assert!(matches!(error, SourceError::Sql { .. }), "{error:?}");
}
