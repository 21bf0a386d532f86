//! The BigQuery source end to end, three ways:
//! - against crucible-emulator (`crucible serve`, started by the test): the REST flow, many
//!   pages, the types it has, missing datasets and tables, syntax errors;
//! - against a small fake of Google written here (axum), answering as BigQuery's REST reference
//!   says, for what the emulator cannot do: the OAuth token exchange (the signed assertion is
//!   checked with the test key pair's public key), a job that runs for a while
//!   (`jobComplete: false`), `jobs.cancel` on a timeout or a dropped query, BIGNUMERIC, refused
//!   credentials and permissions;
//! - against real BigQuery when `BIGQUERY_PROJECT` and credentials are in the environment.

use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::Json;
use base64::Engine as _;
use ferry_core::{Secret, Value};
use ferry_source::{
    preview, query, BigQueryConfig, BigQueryCredential, QueryOptions, SourceConfig, SourceError,
    TimeoutSetting,
};
use ferry_testkit::bigquery_emulator::BigQueryEmulator;
use serde_json::json;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const PRIVATE_KEY: &str = include_str!("../src/bigquery/test_keys/service_account_private.pem");
const PUBLIC_KEY_DER: &[u8] =
    include_bytes!("../src/bigquery/test_keys/service_account_public.der");
const CLIENT_EMAIL: &str = "ferry-reader@ferry-test.iam.gserviceaccount.com";
const PROJECT: &str = "ferry-test";

// ---------------------------------------------------------------------------------------------
// Against crucible-emulator
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_emulator_answers_a_query_with_every_type_it_has() {
    let google = FakeGoogle::start(|_| unreachable_bigquery()).await;
    let emulator = BigQueryEmulator::start().expect("the BigQuery emulator starts");
    let config = google.config_for(&emulator.api_base());
    let sql = "SELECT 1 AS id, NUMERIC '12.50' AS amount, 9223372036854775807 AS biggest, \
               CAST('NaN' AS FLOAT64) AS not_a_number, 1.5 AS ratio, TRUE AS active, \
               'naïve ☃' AS name, b'\\x00\\x01\\xff' AS raw, DATE '2024-01-02' AS day, \
               DATETIME '2024-01-02 03:04:05.123456' AS local_time, TIME '04:05:06.5' AS clock, \
               TIMESTAMP '2024-01-02 03:04:05.123456+00' AS seen, JSON '{\"plan\":\"pro\"}' AS \
               attributes, [1, 2, 3] AS ids, STRUCT(7 AS x, 'y' AS y) AS pair, \
               CAST(NULL AS STRING) AS nothing";
    let (columns, rows) = read_all(&config, sql, &QueryOptions::default())
        .await
        .unwrap();
    let types: Vec<String> = columns
        .iter()
        .map(|column| format!("{} {}", column.name, column.type_name))
        .collect();
    assert_eq!(
        types,
        [
            "id INT64",
            "amount NUMERIC",
            "biggest INT64",
            "not_a_number FLOAT64",
            "ratio FLOAT64",
            "active BOOL",
            "name STRING",
            "raw BYTES",
            "day DATE",
            "local_time DATETIME",
            "clock TIME",
            "seen TIMESTAMP",
            "attributes JSON",
            "ids ARRAY<INT64>",
            "pair STRUCT<x INT64, y STRING>",
            "nothing STRING",
        ]
    );
    let row = &rows[0];
    let expected = vec![
        Value::Int(1),
        Value::Decimal("12.5".into()),
        Value::Int(i64::MAX),
        Value::Float(f64::NAN),
        Value::Float(1.5),
        Value::Bool(true),
        Value::Text("naïve ☃".into()),
        Value::Bytes(vec![0, 1, 255]),
        Value::Date(chrono::NaiveDate::from_ymd_opt(2024, 1, 2).unwrap()),
        Value::Timestamp(datetime("2024-01-02 03:04:05.123456")),
        Value::Text("04:05:06.5".into()),
        Value::TimestampTz(datetime("2024-01-02 03:04:05.123456").and_utc()),
        Value::Json(json!({"plan": "pro"})),
        Value::Array(vec![Value::Int(1), Value::Int(2), Value::Int(3)]),
        Value::Json(json!({"x": 7, "y": "y"})),
        Value::Null,
    ];
    assert_eq!(row.len(), expected.len());
    for (index, (actual, expected)) in row.iter().zip(&expected).enumerate() {
        let same = match (actual, expected) {
            (Value::Float(a), Value::Float(b)) if a.is_nan() => b.is_nan(),
            _ => actual == expected,
        };
        assert!(
            same,
            "column {}: {actual:?} != {expected:?}",
            columns[index].name
        );
    }
}

#[tokio::test]
async fn the_emulator_result_is_read_a_page_at_a_time() {
    let google = FakeGoogle::start(|_| unreachable_bigquery()).await;
    let emulator = BigQueryEmulator::start().expect("the BigQuery emulator starts");
    let config = SourceConfig::BigQuery(google.config_for(&emulator.api_base()));
    let options = QueryOptions {
        batch_size: 100,
        ..QueryOptions::default()
    };
    let sql = "SELECT n, CONCAT('row ', CAST(n AS STRING)) AS label \
               FROM UNNEST(GENERATE_ARRAY(1, 2500)) AS n ORDER BY n";
    let mut stream = query(&config, sql, &options).await.unwrap();
    let mut expected = 1i64;
    while let Some(row) = stream.next_row().await {
        let row = row.unwrap();
        assert_eq!(
            row,
            vec![Value::Int(expected), Value::Text(format!("row {expected}"))]
        );
        // The producer reads the next page only when the channel has room: never more than
        // one batch waits in memory.
        assert!(stream.buffered_rows() <= options.batch_size);
        expected += 1;
    }
    assert_eq!(expected - 1, 2500, "every row of all 25 pages, in order");
    // One token for the whole stream of pages.
    assert_eq!(google.token_requests(), 1);
}

#[tokio::test]
async fn the_emulator_reads_the_default_dataset_and_previews() {
    let google = FakeGoogle::start(|_| unreachable_bigquery()).await;
    let emulator = BigQueryEmulator::start().expect("the BigQuery emulator starts");
    setup_emulator_table(&emulator.api_base()).await;
    let mut config = google.config_for(&emulator.api_base());
    config.default_dataset = Some("shop".into());
    let (columns, rows) = preview(
        &SourceConfig::BigQuery(config),
        "SELECT id, email FROM customers ORDER BY id",
        2,
        &QueryOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(columns.len(), 2);
    assert_eq!(
        rows,
        vec![
            vec![Value::Int(1), Value::Text("a@example.com".into())],
            vec![Value::Int(2), Value::Text("b@example.com".into())],
        ]
    );
}

#[tokio::test]
async fn the_emulator_says_which_dataset_or_table_is_missing_in_bigquerys_words() {
    let google = FakeGoogle::start(|_| unreachable_bigquery()).await;
    let emulator = BigQueryEmulator::start().expect("the BigQuery emulator starts");
    setup_emulator_table(&emulator.api_base()).await;
    let config = google.config_for(&emulator.api_base());
    ferry_source::test_connection(&SourceConfig::BigQuery(config.clone()))
        .await
        .expect("the connection test runs SELECT 1");
    let error = read_all(
        &config,
        "SELECT * FROM nowhere.customers",
        &QueryOptions::default(),
    )
    .await
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        "the model failed in the warehouse: Not found: Dataset ferry-test:nowhere was not found \
         in location EU"
    );
    let error = read_all(
        &config,
        "SELECT * FROM shop.nobody",
        &QueryOptions::default(),
    )
    .await
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        "the model failed in the warehouse: Not found: Table ferry-test:shop.nobody was not \
         found in location EU"
    );
    let error = read_all(
        &config,
        "SELECT id AS by FROM shop.customers",
        &QueryOptions::default(),
    )
    .await
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        "the model failed in the warehouse: Syntax error: Unexpected keyword BY (at line 1, \
         column 14)"
    );
}

// ---------------------------------------------------------------------------------------------
// Against a fake of Google, for what the emulator cannot do
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_token_exchange_sends_a_signed_assertion_and_the_token_is_reused() {
    let google = FakeGoogle::start(|request| match request.path.as_str() {
        path if path.ends_with("/queries") => ok(complete_result(&[("n", "INTEGER")], &[&["1"]])),
        _ => unreachable_bigquery(),
    })
    .await;
    let config = google.config();
    for _ in 0..2 {
        let (_, rows) = read_all(&config, "SELECT 1 AS n", &QueryOptions::default())
            .await
            .unwrap();
        assert_eq!(rows, vec![vec![Value::Int(1)]]);
    }
    // The fake checked the signature with the public key and the claims (see `token`); the
    // token it issued is what BigQuery received, and it was asked for once.
    assert_eq!(google.token_requests(), 1);
    let requests = google.requests();
    assert_eq!(requests.len(), 2);
    for request in &requests {
        assert_eq!(
            request.authorization,
            format!("Bearer {}", FakeGoogle::TOKEN)
        );
    }
    let assertion = google.last_assertion_claims();
    assert_eq!(assertion["iss"], CLIENT_EMAIL);
    assert_eq!(
        assertion["scope"],
        "https://www.googleapis.com/auth/bigquery"
    );
    assert_eq!(assertion["aud"], format!("{}/token", google.base()));
    let issued_at = assertion["iat"].as_u64().unwrap();
    assert_eq!(assertion["exp"].as_u64().unwrap() - issued_at, 3600);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(now.abs_diff(issued_at) < 60, "iat is now");
}

#[tokio::test]
async fn the_query_request_asks_for_what_the_source_needs() {
    let google = FakeGoogle::start(|_| ok(complete_result(&[("n", "INTEGER")], &[]))).await;
    let mut config = google.config();
    config.default_dataset = Some("other-project.shop".into());
    config.maximum_bytes_billed = Some(1_000_000_000);
    let options = QueryOptions {
        batch_size: 321,
        statement_timeout: Duration::from_secs(3),
        ..QueryOptions::default()
    };
    read_all(&config, "SELECT 1 AS n", &options).await.unwrap();
    let request = &google.requests()[0];
    assert_eq!(request.method, "POST");
    assert_eq!(
        request.path,
        format!("/bigquery/v2/projects/{PROJECT}/queries")
    );
    let body = &request.body;
    assert_eq!(body["query"], "SELECT 1 AS n");
    assert_eq!(body["useLegacySql"], false);
    assert_eq!(body["location"], "EU");
    assert_eq!(body["maxResults"], 321);
    assert_eq!(
        body["timeoutMs"], 3000,
        "no longer than the statement timeout"
    );
    assert_eq!(body["formatOptions"], json!({"useInt64Timestamp": true}));
    assert_eq!(body["jobCreationMode"], "JOB_CREATION_OPTIONAL");
    assert_eq!(
        body["defaultDataset"],
        json!({"projectId": "other-project", "datasetId": "shop"})
    );
    assert_eq!(body["maximumBytesBilled"], "1000000000");
    assert!(
        body["requestId"].as_str().unwrap().len() > 20,
        "an idempotent requestId"
    );
}

#[tokio::test]
async fn a_long_running_job_is_polled_until_complete_then_paged() {
    let polls = Arc::new(AtomicUsize::new(0));
    let polls_seen = Arc::clone(&polls);
    let google = FakeGoogle::start(move |request| {
        if request.path.ends_with("/queries") {
            return ok(running_job());
        }
        assert!(
            request.path.ends_with("/queries/job_slow"),
            "{}",
            request.path
        );
        assert_eq!(request.query["location"], "EU");
        assert_eq!(request.query["formatOptions.useInt64Timestamp"], "true");
        assert_eq!(request.query["maxResults"], "2");
        match request.query.get("pageToken").map(String::as_str) {
            None if polls_seen.fetch_add(1, Ordering::SeqCst) < 2 => ok(running_job()),
            None => {
                let mut page = complete_result(&[("n", "INTEGER")], &[&["1"], &["2"]]);
                page["pageToken"] = json!("page-2");
                ok(page)
            }
            Some("page-2") => ok(complete_result(&[("n", "INTEGER")], &[&["3"]])),
            Some(other) => panic!("unknown page token {other}"),
        }
    })
    .await;
    let options = QueryOptions {
        batch_size: 2,
        ..QueryOptions::default()
    };
    let (_, rows) = read_all(&google.config(), "SELECT n FROM t", &options)
        .await
        .unwrap();
    assert_eq!(
        rows,
        vec![
            vec![Value::Int(1)],
            vec![Value::Int(2)],
            vec![Value::Int(3)]
        ]
    );
    assert_eq!(
        polls.load(Ordering::SeqCst),
        3,
        "two answers `not complete`, then the result"
    );
    assert_eq!(google.cancels(), 0);
}

#[tokio::test]
async fn a_job_still_running_at_the_statement_timeout_is_cancelled() {
    let google = FakeGoogle::start(|request| {
        if request.path.ends_with("/cancel") {
            ok(json!({"kind": "bigquery#jobCancelResponse", "job": {}}))
        } else {
            ok(running_job())
        }
    })
    .await;
    let options = QueryOptions {
        statement_timeout: Duration::from_millis(800),
        timeout_setting: TimeoutSetting::Preview,
        ..QueryOptions::default()
    };
    let started = std::time::Instant::now();
    let error = read_all(&google.config(), "SELECT n FROM t", &options)
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            SourceError::StatementTimeout {
                setting: TimeoutSetting::Preview,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let cancel = google
        .requests()
        .into_iter()
        .find(|request| request.path.ends_with("/cancel"))
        .expect("the job was cancelled");
    assert_eq!(cancel.method, "POST");
    assert_eq!(
        cancel.path,
        format!("/bigquery/v2/projects/{PROJECT}/jobs/job_slow/cancel")
    );
    assert_eq!(cancel.query["location"], "EU");
}

#[tokio::test]
async fn a_query_dropped_while_its_job_runs_cancels_the_job() {
    let google = FakeGoogle::start(|request| {
        if request.path.ends_with("/cancel") {
            ok(json!({"kind": "bigquery#jobCancelResponse", "job": {}}))
        } else {
            ok(running_job())
        }
    })
    .await;
    let config = SourceConfig::BigQuery(google.config());
    let running = tokio::spawn(async move {
        let _ = query(&config, "SELECT n FROM t", &QueryOptions::default()).await;
    });
    wait_for(|| {
        google
            .requests()
            .iter()
            .any(|r| r.path.ends_with("/queries/job_slow"))
    })
    .await;
    running.abort();
    wait_for(|| google.cancels() == 1).await;
}

#[tokio::test]
async fn a_dropped_stream_asks_for_no_more_pages() {
    // A result with no end: every page names a next one.
    let google = FakeGoogle::start(|_| {
        let mut page = complete_result(&[("n", "INTEGER")], &[&["1"], &["2"]]);
        page["pageToken"] = json!("next");
        ok(page)
    })
    .await;
    let options = QueryOptions {
        batch_size: 2,
        ..QueryOptions::default()
    };
    let config = SourceConfig::BigQuery(google.config());
    let mut stream = query(&config, "SELECT n FROM t", &options).await.unwrap();
    assert_eq!(
        stream.next_row().await.unwrap().unwrap(),
        vec![Value::Int(1)]
    );
    drop(stream);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let asked = google.requests().len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        google.requests().len(),
        asked,
        "no page asked for after the drop"
    );
    // The bounded channel let the producer run at most a couple of pages ahead.
    assert!(asked <= 4, "{asked} requests");
}

#[tokio::test]
async fn bignumeric_and_the_ends_of_int64_arrive_exact() {
    // The emulator's DuckDB stops at 38 digits; BigQuery's BIGNUMERIC holds 76.
    const BIGNUMERIC_MAX: &str =
        "578960446186580977117854925043439539266.34992332820282019728792003956564819967";
    let google = FakeGoogle::start(|_| {
        ok(complete_result(
            &[
                ("big", "BIGNUMERIC"),
                ("most", "INTEGER"),
                ("least", "INTEGER"),
                ("ts", "TIMESTAMP"),
            ],
            &[
                &[
                    BIGNUMERIC_MAX,
                    "9223372036854775807",
                    "-9223372036854775808",
                    "-62135596800000000",
                ],
                &[
                    "-0.00000000000000000000000000000000000001",
                    "9007199254740993",
                    "0",
                    "0",
                ],
            ],
        ))
    })
    .await;
    let (_, rows) = read_all(
        &google.config(),
        "SELECT * FROM t",
        &QueryOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(
        rows,
        vec![
            vec![
                Value::Decimal(BIGNUMERIC_MAX.into()),
                Value::Int(i64::MAX),
                Value::Int(i64::MIN),
                Value::TimestampTz(datetime("0001-01-01 00:00:00").and_utc()),
            ],
            vec![
                Value::Decimal("-0.00000000000000000000000000000000000001".into()),
                Value::Int(9_007_199_254_740_993),
                Value::Int(0),
                Value::TimestampTz(chrono::DateTime::UNIX_EPOCH),
            ],
        ]
    );
}

#[tokio::test]
async fn refused_credentials_keep_googles_words_and_never_show_a_secret() {
    let google = FakeGoogle::start(|_| unreachable_bigquery()).await;
    google.refuse_tokens();
    let config = google.config();
    let error = read_all(&config, "SELECT 1", &QueryOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(error, SourceError::AuthenticationFailed { .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains(
            "Google refused service account ferry-reader@ferry-test.iam.gserviceaccount.com: \
             invalid_grant (Invalid JWT Signature.); check that the key is current"
        ),
        "{message}"
    );
    assert_no_secret(&message);
    assert_no_secret(&format!("{error:?}"));
    assert_no_secret(&format!("{config:?}"));
    assert_no_secret(&format!("{:?}", SourceConfig::BigQuery(config.clone())));
    assert_no_secret(&SourceConfig::BigQuery(config).describe());
}

#[tokio::test]
async fn a_key_that_is_not_a_key_is_refused_before_any_request() {
    let google = FakeGoogle::start(|_| unreachable_bigquery()).await;
    let mut config = google.config();
    config.credential = BigQueryCredential::ServiceAccountKey(Secret::new(PRIVATE_KEY));
    let error = read_all(&config, "SELECT 1", &QueryOptions::default())
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("the connection's service account key is not a Google credentials JSON file"),
        "{error}"
    );
    assert_no_secret(&error.to_string());
    assert_eq!(google.token_requests(), 0);
}

#[tokio::test]
async fn a_missing_permission_names_the_roles_to_grant() {
    let google = FakeGoogle::start(|_| {
        error_body(
            403,
            "accessDenied",
            "Access Denied: Project ferry-test: User does not have bigquery.jobs.create \
             permission in project ferry-test.",
        )
    })
    .await;
    let error = read_all(&google.config(), "SELECT 1", &QueryOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(error, SourceError::AuthenticationFailed { .. }),
        "{error:?}"
    );
    assert!(
        error.to_string().contains(
            "User does not have bigquery.jobs.create permission in project ferry-test.; give \
             the account the roles BigQuery Job User on project `ferry-test` and BigQuery Data \
             Viewer on the datasets the model reads"
        ),
        "{error}"
    );
    assert_no_secret(&error.to_string());
}

#[tokio::test]
async fn a_revoked_token_is_replaced_once_then_reported() {
    let google = FakeGoogle::start(|_| {
        error_body(
            401,
            "authError",
            "Request had invalid authentication credentials.",
        )
    })
    .await;
    let error = read_all(&google.config(), "SELECT 1", &QueryOptions::default())
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("BigQuery refused the access token: Request had invalid authentication"),
        "{error}"
    );
    assert_eq!(google.token_requests(), 2, "a fresh token was tried once");
    assert_eq!(google.requests().len(), 2);
    assert_no_secret(&format!("{error} {error:?}"));
}

// ---------------------------------------------------------------------------------------------
// Against real BigQuery
// ---------------------------------------------------------------------------------------------

/// Runs when `BIGQUERY_PROJECT` is set, with `BIGQUERY_LOCATION` (default `US`) and either
/// `BIGQUERY_SERVICE_ACCOUNT_KEY` (the key file's JSON) or application default credentials
/// (`GOOGLE_APPLICATION_CREDENTIALS`, gcloud's, or the metadata server). It reads a public
/// dataset and bills almost nothing (`maximum_bytes_billed` caps it).
#[tokio::test]
async fn live_bigquery_reads_types_and_pages() {
    let Ok(project_id) = std::env::var("BIGQUERY_PROJECT") else {
        eprintln!(
            "skipped: set BIGQUERY_PROJECT (and BIGQUERY_SERVICE_ACCOUNT_KEY or \
             GOOGLE_APPLICATION_CREDENTIALS) to run the BigQuery source against real BigQuery"
        );
        return;
    };
    let credential = match std::env::var("BIGQUERY_SERVICE_ACCOUNT_KEY") {
        Ok(json) => BigQueryCredential::ServiceAccountKey(Secret::new(json)),
        Err(_) => BigQueryCredential::ApplicationDefault,
    };
    let config = BigQueryConfig {
        project_id,
        location: std::env::var("BIGQUERY_LOCATION").unwrap_or_else(|_| "US".into()),
        default_dataset: None,
        maximum_bytes_billed: Some(100_000_000),
        credential,
        api_base: ferry_source::BIGQUERY_API_BASE.to_string(),
        token_endpoint: None,
    };
    ferry_source::test_connection(&SourceConfig::BigQuery(config.clone()))
        .await
        .unwrap();
    let sql = "SELECT 9223372036854775807 AS most, \
               CAST('578960446186580977117854925043439539266.34992332820282019728792003956564819967' \
               AS BIGNUMERIC) AS big, CAST('NaN' AS FLOAT64) AS nan, \
               TIMESTAMP '2024-01-02 03:04:05.123456+00' AS seen, [1, 2] AS ids, \
               STRUCT(1 AS a, [STRUCT('x' AS b)] AS c) AS nested, ST_GEOGPOINT(1, 2) AS place, \
               b'\\x00\\xff' AS raw, JSON '{\"a\": 1}' AS doc";
    let (_, rows) = read_all(&config, sql, &QueryOptions::default())
        .await
        .unwrap();
    let row = &rows[0];
    assert_eq!(row[0], Value::Int(i64::MAX));
    assert_eq!(
        row[1],
        Value::Decimal(
            "578960446186580977117854925043439539266.34992332820282019728792003956564819967".into()
        )
    );
    assert!(matches!(row[2], Value::Float(nan) if nan.is_nan()));
    assert_eq!(
        row[3],
        Value::TimestampTz(datetime("2024-01-02 03:04:05.123456").and_utc())
    );
    assert_eq!(row[4], Value::Array(vec![Value::Int(1), Value::Int(2)]));
    assert_eq!(row[5], Value::Json(json!({"a": 1, "c": [{"b": "x"}]})));
    assert_eq!(row[6], Value::Text("POINT(1 2)".into()));
    assert_eq!(row[7], Value::Bytes(vec![0, 255]));
    assert_eq!(row[8], Value::Json(json!({"a": 1})));
    // Many pages of a generated result.
    let options = QueryOptions {
        batch_size: 500,
        ..QueryOptions::default()
    };
    let (_, rows) = read_all(
        &config,
        "SELECT n FROM UNNEST(GENERATE_ARRAY(1, 5000)) AS n ORDER BY n",
        &options,
    )
    .await
    .unwrap();
    assert_eq!(rows.len(), 5000);
    assert_eq!(rows[4999], vec![Value::Int(5000)]);
    let error = read_all(
        &config,
        "SELECT * FROM ferry_no_such_dataset.t",
        &QueryOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(
        error.to_string().contains("ferry_no_such_dataset"),
        "{error}"
    );
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

async fn read_all(
    config: &BigQueryConfig,
    sql: &str,
    options: &QueryOptions,
) -> Result<(Vec<ferry_source::Column>, Vec<Vec<Value>>), SourceError> {
    let mut stream = query(&SourceConfig::BigQuery(config.clone()), sql, options).await?;
    let mut rows = Vec::new();
    while let Some(row) = stream.next_row().await {
        rows.push(row?);
    }
    Ok((stream.columns().to_vec(), rows))
}

fn datetime(text: &str) -> chrono::NaiveDateTime {
    chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f").unwrap()
}

fn key_file_json() -> Secret {
    Secret::new(
        json!({
            "type": "service_account",
            "project_id": PROJECT,
            "private_key_id": "test-key-1",
            "private_key": PRIVATE_KEY,
            "client_email": CLIENT_EMAIL,
            "client_id": "100000000000000000001",
            "token_uri": "https://oauth2.googleapis.com/token",
        })
        .to_string(),
    )
}

/// No text a person or a log sees may hold the private key, the token or the assertion.
fn assert_no_secret(text: &str) {
    let key_body = PRIVATE_KEY.lines().nth(2).unwrap();
    for secret in [key_body, "PRIVATE KEY", FakeGoogle::TOKEN, "eyJ"] {
        assert!(!text.contains(secret), "`{secret}` shown in: {text}");
    }
}

/// A dataset `shop` in EU with a table `customers` of two rows, made through the emulator's
/// API directly (a model may not write).
async fn setup_emulator_table(api_base: &str) {
    let client = reqwest::Client::new();
    let post = |path: &str, body: serde_json::Value| {
        client
            .post(format!("{api_base}/bigquery/v2/projects/{PROJECT}/{path}"))
            .bearer_auth("setup")
            .json(&body)
            .send()
    };
    let created = post(
        "datasets",
        json!({"datasetReference": {"projectId": PROJECT, "datasetId": "shop"}, "location": "EU"}),
    )
    .await
    .unwrap();
    assert!(created.status().is_success(), "{:?}", created.text().await);
    let created = post(
        "queries",
        json!({"query": "CREATE TABLE shop.customers AS SELECT 1 AS id, 'a@example.com' AS email \
                         UNION ALL SELECT 2, 'b@example.com' UNION ALL SELECT 3, 'c@example.com'",
               "useLegacySql": false, "location": "EU"}),
    )
    .await
    .unwrap();
    assert!(created.status().is_success(), "{:?}", created.text().await);
}

async fn wait_for(condition: impl Fn() -> bool) {
    for _ in 0..200 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the condition did not hold within 5s");
}

/// A complete `jobs.query` / `getQueryResults` answer with these columns and rows (each cell
/// as BigQuery encodes it: a string).
fn complete_result(columns: &[(&str, &str)], rows: &[&[&str]]) -> serde_json::Value {
    let fields: Vec<serde_json::Value> = columns
        .iter()
        .map(|(name, field_type)| json!({"name": name, "type": field_type, "mode": "NULLABLE"}))
        .collect();
    let rows: Vec<serde_json::Value> = rows
        .iter()
        .map(|row| json!({"f": row.iter().map(|cell| json!({"v": cell})).collect::<Vec<_>>()}))
        .collect();
    json!({
        "kind": "bigquery#queryResponse",
        "schema": {"fields": fields},
        "jobReference": {"projectId": PROJECT, "jobId": "job_slow", "location": "EU"},
        "totalRows": rows.len().to_string(),
        "rows": rows,
        "jobComplete": true,
    })
}

/// A job that has not finished: no schema, no rows (REST reference, jobs.getQueryResults).
fn running_job() -> serde_json::Value {
    json!({
        "kind": "bigquery#queryResponse",
        "jobReference": {"projectId": PROJECT, "jobId": "job_slow", "location": "EU"},
        "jobComplete": false,
    })
}

type Answer = (StatusCode, serde_json::Value);

fn ok(body: serde_json::Value) -> Answer {
    (StatusCode::OK, body)
}

fn error_body(status: u16, reason: &str, message: &str) -> Answer {
    (
        StatusCode::from_u16(status).unwrap(),
        json!({"error": {"code": status, "message": message,
            "errors": [{"message": message, "domain": "global", "reason": reason}],
            "status": "ERROR"}}),
    )
}

/// 418: an answer the client never retries, so that a test that calls it fails at once.
fn unreachable_bigquery() -> Answer {
    error_body(
        418,
        "test",
        "this test's fake BigQuery should not have been called",
    )
}

/// One request the fake's BigQuery side received.
#[derive(Debug, Clone)]
struct Recorded {
    method: String,
    path: String,
    query: HashMap<String, String>,
    body: serde_json::Value,
    authorization: String,
}

type Script = dyn Fn(&Recorded) -> Answer + Send + Sync;

/// Google's token endpoint (`POST /token`) and BigQuery's API (anything else, answered by the
/// test's script), on a loopback port.
struct FakeGoogle {
    state: Arc<FakeState>,
    base: String,
}

struct FakeState {
    script: Box<Script>,
    requests: Mutex<Vec<Recorded>>,
    token_requests: AtomicUsize,
    refuse_tokens: std::sync::atomic::AtomicBool,
    last_claims: Mutex<serde_json::Value>,
    base: Mutex<String>,
}

impl FakeGoogle {
    const TOKEN: &'static str = "ya29.fake-access-token-7d1e";

    async fn start(script: impl Fn(&Recorded) -> Answer + Send + Sync + 'static) -> FakeGoogle {
        let state = Arc::new(FakeState {
            script: Box::new(script),
            requests: Mutex::new(Vec::new()),
            token_requests: AtomicUsize::new(0),
            refuse_tokens: std::sync::atomic::AtomicBool::new(false),
            last_claims: Mutex::new(serde_json::Value::Null),
            base: Mutex::new(String::new()),
        });
        let router = axum::Router::new()
            .route("/token", axum::routing::post(token))
            .fallback(bigquery)
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        *state.base.lock().unwrap() = base.clone();
        tokio::spawn(async move { axum::serve(listener, router).await });
        FakeGoogle { state, base }
    }

    fn base(&self) -> &str {
        &self.base
    }

    /// A connection to this fake for both tokens and BigQuery.
    fn config(&self) -> BigQueryConfig {
        self.config_for(&self.base)
    }

    /// A connection that gets its tokens here and sends its queries to `api_base`.
    fn config_for(&self, api_base: &str) -> BigQueryConfig {
        BigQueryConfig {
            project_id: PROJECT.into(),
            location: "EU".into(),
            default_dataset: None,
            maximum_bytes_billed: None,
            credential: BigQueryCredential::ServiceAccountKey(key_file_json()),
            api_base: api_base.to_string(),
            token_endpoint: Some(format!("{}/token", self.base)),
        }
    }

    fn refuse_tokens(&self) {
        self.state.refuse_tokens.store(true, Ordering::SeqCst);
    }

    fn token_requests(&self) -> usize {
        self.state.token_requests.load(Ordering::SeqCst)
    }

    fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().unwrap().clone()
    }

    fn cancels(&self) -> usize {
        self.requests()
            .iter()
            .filter(|request| request.path.ends_with("/cancel"))
            .count()
    }

    fn last_assertion_claims(&self) -> serde_json::Value {
        self.state.last_claims.lock().unwrap().clone()
    }
}

/// Google's token endpoint for a JWT bearer grant: the assertion must verify with the test key
/// pair's public key and name this endpoint as its audience.
async fn token(
    State(state): State<Arc<FakeState>>,
    axum::Form(form): axum::Form<HashMap<String, String>>,
) -> (StatusCode, Json<serde_json::Value>) {
    let (status, body) = token_answer(&state, &form);
    (status, Json(body))
}

fn token_answer(state: &FakeState, form: &HashMap<String, String>) -> Answer {
    state.token_requests.fetch_add(1, Ordering::SeqCst);
    let invalid = |description: &str| {
        (
            StatusCode::BAD_REQUEST,
            json!({"error": "invalid_grant", "error_description": description}),
        )
    };
    if state.refuse_tokens.load(Ordering::SeqCst) {
        return invalid("Invalid JWT Signature.");
    }
    if form.get("grant_type").map(String::as_str)
        != Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
    {
        return invalid("unsupported grant_type");
    }
    let Some(assertion) = form.get("assertion") else {
        return invalid("no assertion");
    };
    let parts: Vec<&str> = assertion.split('.').collect();
    let base64url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let (Ok(header), Ok(claims), Ok(signature)) = (
        base64url.decode(parts[0]),
        base64url.decode(parts.get(1).copied().unwrap_or_default()),
        base64url.decode(parts.get(2).copied().unwrap_or_default()),
    ) else {
        return invalid("the assertion is not a JWT");
    };
    let public_key = ring::signature::UnparsedPublicKey::new(
        &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        PUBLIC_KEY_DER,
    );
    let signed = format!("{}.{}", parts[0], parts[1]);
    if public_key.verify(signed.as_bytes(), &signature).is_err() {
        return invalid("Invalid JWT Signature.");
    }
    let header: serde_json::Value = serde_json::from_slice(&header).unwrap();
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["kid"], "test-key-1");
    let claims: serde_json::Value = serde_json::from_slice(&claims).unwrap();
    if claims["aud"] != format!("{}/token", state.base.lock().unwrap()) {
        return invalid("Invalid JWT: audience");
    }
    *state.last_claims.lock().unwrap() = claims;
    ok(json!({"access_token": FakeGoogle::TOKEN, "expires_in": 3599, "token_type": "Bearer"}))
}

async fn bigquery(
    State(state): State<Arc<FakeState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, Json<serde_json::Value>) {
    let recorded = Recorded {
        method: method.to_string(),
        path: uri.path().to_string(),
        query: uri.query().map(form_urlencoded_pairs).unwrap_or_default(),
        body: serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
        authorization: headers
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_string(),
    };
    state.requests.lock().unwrap().push(recorded.clone());
    let (status, body) = (state.script)(&recorded);
    (status, Json(body))
}

fn form_urlencoded_pairs(query: &str) -> HashMap<String, String> {
    reqwest::Url::parse(&format!("http://x/?{query}"))
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect()
}
