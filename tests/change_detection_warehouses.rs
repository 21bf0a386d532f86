//! End-to-end: change detection in the warehouse on MySQL/MariaDB, BigQuery and Snowflake.
//!
//! - MariaDB: a real server the test starts, driven through the real `ferry` binary: the GRANT
//!   a reader lacks (run as ferry prints it), rows that travel, what Stripe received, the
//!   bookkeeping tables' contents, a dropped table and a right taken away.
//! - BigQuery: crucible-emulator, through the real binary (a local token endpoint stands in for
//!   Google's): the dataset and tables made at connect time, then only changed rows travel.
//! - Snowflake: snowduck (DuckDB behind Snowflake's SQL API). It answers every column as TEXT,
//!   where the engine reads the row count as a number, so a run cannot finish on it: the
//!   binary saves the connection (creating the schema), and the flow below the engine (tables,
//!   the change query, acknowledgements, a dropped table) runs through `ferry_source`.
//!
//! What the emulators cannot show (refused rights, real type names) is unit-tested on the SQL
//! and the error texts in `crates/source/src/warehouse_diff/`.

mod common;

use common::{rows_travelled, Scene};
use ferry_core::{Secret, Value};
use ferry_source::warehouse_diff::{self, Acknowledger, DiffSpec, DiffTable, ADDED_COLUMNS};
use ferry_source::{QueryOptions, SnowflakeConfig, SnowflakeCredential, SourceConfig};
use ferry_testkit::bigquery_emulator::BigQueryEmulator;
use ferry_testkit::{MariaDbServer, SnowduckServer};
use serde_json::{json, Value as Json};
use std::io::{Read as _, Write as _};

/// Runs sync `people-to-stripe` with `-v`; returns the counts of its report (rows, created,
/// updated, unchanged, rejected) and the rows that travelled.
async fn run(scene: &Scene) -> ([u64; 5], u64) {
    let ran = scene
        .ferry(&["-v", "sync", "run", "people-to-stripe", "--format", "json"])
        .await
        .ok();
    let report = ran.json();
    let counts = ["rows", "created", "updated", "unchanged", "rejected"]
        .map(|k| report[k].as_u64().unwrap());
    (counts, rows_travelled(&ran.stderr))
}

/// The first value of a query on `connection`, through `ferry model show`.
async fn first_value(scene: &Scene, connection: &str, sql: &str) -> String {
    scene
        .ferry(&[
            "model",
            "create",
            "peek",
            "--connection",
            connection,
            "--sql",
            sql,
        ])
        .await
        .ok();
    let shown = scene.ferry(&["model", "show", "peek"]).await.ok().stdout;
    shown.lines().nth(1).unwrap_or_default().trim().to_string()
}

// ---------------------------------------------------------------------------------------------
// MariaDB

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_says_what_to_grant_then_only_changed_rows_travel_and_are_acknowledged() {
    let server = tokio::task::spawn_blocking(|| MariaDbServer::start().expect("MariaDB starts"))
        .await
        .unwrap();
    let admin_url = server.create_database("app").unwrap();
    // Row 5's key has spaces and capitals; row 6 has no name (NULL), which becomes '' later.
    let rows: Vec<String> = (1..=30)
        .map(|i| {
            let email = if i == 5 {
                " Person5@Example.COM ".to_string()
            } else {
                format!("person{i}@example.com")
            };
            let name = if i == 6 {
                "NULL".to_string()
            } else {
                format!("'Person {i}'")
            };
            let plan = if i % 2 == 0 { "pro" } else { "free" };
            format!("({i}, '{email}', {name}, '+1 555 {i:04}', '{plan}')")
        })
        .collect();
    server
        .run_sql(&format!(
            "CREATE TABLE app.people (id INT PRIMARY KEY, email VARCHAR(200), name VARCHAR(200), \
             phone VARCHAR(30), plan VARCHAR(20)); INSERT INTO app.people VALUES {}; CREATE \
             USER 'reader'@'%' IDENTIFIED BY 'reader-secret-77'; GRANT SELECT ON app.* TO \
             'reader'@'%';",
            rows.join(", ")
        ))
        .unwrap();
    let reader_url = format!(
        "mysql://reader:reader-secret-77@127.0.0.1:{}/app",
        server.port()
    );
    let connect_reader = [
        "connect",
        "mysql",
        "warehouse",
        "--url",
        &reader_url,
        "--change-detection-schema",
        "ferry",
    ];

    let scene = Scene::new().await;
    scene.connect_stripe(&[]).await;
    // The reader may not create the database: connecting says what to grant, and saves nothing.
    let refused = scene.ferry(&connect_reader).await;
    assert_ne!(refused.code, 0);
    let grant = "GRANT CREATE, SELECT, INSERT, UPDATE ON `ferry`.* TO 'reader'@'%';";
    assert!(refused.stderr.contains(grant), "{}", refused.stderr);
    assert!(!refused.stderr.contains("reader-secret"));
    let listed = scene.ferry(&["connections"]).await.ok().stdout;
    assert!(!listed.contains("warehouse"), "{listed}");

    // The statement as ferry printed it is enough.
    server.run_sql(grant).unwrap();
    scene.ferry(&connect_reader).await.ok();
    scene
        .ferry(&["connect", "mysql", "admin", "--url", &admin_url])
        .await
        .ok();
    scene.email_sync(&[]).await;

    assert_eq!(run(&scene).await, ([30, 30, 0, 0, 0], 30));
    let uid = first_value(&scene, "admin", "select sync_uid from ferry.ferry_syncs").await;
    assert_eq!(uid.len(), 16, "one registered sync: {uid:?}");
    let table = format!("ferry.sync_{uid}");
    assert_eq!(
        first_value(&scene, "admin", &format!("select count(*) from {table}")).await,
        "30",
        "every created row is acknowledged"
    );
    assert_eq!(
        first_value(
            &scene,
            "admin",
            &format!("select `key` from {table} where `key` like '%person5@%'")
        )
        .await,
        "person5@example.com",
        "the key as matched: trimmed and lower-cased"
    );

    // Nothing changed: nothing travels, no request.
    let before = scene.stripe().requests().len();
    assert_eq!(run(&scene).await, ([30, 0, 0, 30, 0], 0));
    assert_eq!(scene.stripe().requests().len(), before);

    // Two plans change, one is set to itself, a column the sync does not read appears and
    // changes, a NULL name becomes '' (the hash tells them apart, and so does ferry: the name
    // is sent empty), a row is new, and a key gets a second copy differing in case: both
    // copies travel and are rejected.
    server
        .run_sql(
            "ALTER TABLE app.people ADD COLUMN note VARCHAR(50);
             UPDATE app.people SET note = 'not synced' WHERE id = 9;
             UPDATE app.people SET plan = 'gold' WHERE id IN (4, 5);
             UPDATE app.people SET plan = plan WHERE id = 10;
             UPDATE app.people SET name = '' WHERE id = 6;
             INSERT INTO app.people (id, email, name, plan) VALUES
               (31, 'person31@example.com', 'Person 31', 'free'),
               (32, 'PERSON7@example.com', 'Someone else', 'free');",
        )
        .unwrap();
    let before = scene.posts();
    assert_eq!(run(&scene).await, ([32, 1, 3, 26, 2], 6));
    assert_eq!(scene.posts() - before, 4, "three updates, one create");
    assert_eq!(
        scene.customers_with_email("Person5@Example.COM")[0]["metadata"]["plan"],
        "gold"
    );
    assert_eq!(scene.customers_with_email("person31@example.com").len(), 1);
    // The rejected copies travel again until fixed; the rest stays in the warehouse.
    assert_eq!(run(&scene).await, ([32, 0, 0, 30, 2], 2));

    // A dropped table stops the run with the statement that rebuilds it, in MySQL's quoting.
    server.run_sql(&format!("DROP TABLE {table}")).unwrap();
    let before = scene.stripe().requests().len();
    let failed = scene.ferry(&["sync", "run", "people-to-stripe"]).await;
    assert_eq!(failed.code, 1, "{}", failed.stderr);
    let said = format!("{}{}", failed.stdout, failed.stderr);
    let fix = format!("DELETE FROM `ferry`.`ferry_syncs` WHERE sync_uid = '{uid}'");
    assert!(
        said.contains("is gone (dropped?)") && said.contains(&fix),
        "{said}"
    );
    server.run_sql(&fix).unwrap();
    assert_eq!(run(&scene).await, ([32, 0, 0, 30, 2], 32));
    assert_eq!(run(&scene).await, ([32, 0, 0, 30, 2], 2));
    assert_eq!(scene.stripe().requests().len(), before, "nothing sent");

    // A right taken away: the run stops before anything is sent, with what to grant.
    server
        .run_sql("REVOKE ALL PRIVILEGES ON `ferry`.* FROM 'reader'@'%';")
        .unwrap();
    let failed = scene.ferry(&["sync", "run", "people-to-stripe"]).await;
    assert_eq!(failed.code, 1);
    let said = format!("{}{}", failed.stdout, failed.stderr);
    assert!(said.contains(grant), "{said}");
    assert!(!said.contains("reader-secret"));
    assert_eq!(scene.stripe().requests().len(), before, "nothing sent");
}

// ---------------------------------------------------------------------------------------------
// BigQuery (crucible-emulator)

const BIGQUERY_PROJECT: &str = "ferry-test";

/// Runs one statement on the emulator as another client would; its rows' first values.
async fn bigquery_sql(emulator: &BigQueryEmulator, sql: &str) -> Vec<String> {
    let answer: Json = reqwest::Client::new()
        .post(format!(
            "{}/bigquery/v2/projects/{BIGQUERY_PROJECT}/queries",
            emulator.api_base()
        ))
        .bearer_auth("test")
        .json(&json!({"query": sql, "useLegacySql": false}))
        .send()
        .await
        .expect("the emulator answers")
        .json()
        .await
        .expect("a JSON answer");
    assert!(answer.get("error").is_none(), "{sql}: {answer}");
    answer["rows"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .map(|row| row["f"][0]["v"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// A token endpoint that gives every caller a token: the emulator takes any.
fn fake_token_endpoint() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = Vec::new();
            let mut chunk = [0u8; 4096];
            // The request line, headers and form body (small): read until the body is in.
            while let Ok(read) = stream.read(&mut chunk) {
                request.extend_from_slice(&chunk[..read]);
                let text = String::from_utf8_lossy(&request).to_string();
                let Some(end) = text.find("\r\n\r\n") else {
                    if read == 0 {
                        break;
                    }
                    continue;
                };
                let length: usize = text
                    .lines()
                    .find_map(|line| {
                        let (name, value) = line.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                if read == 0 || request.len() >= end + 4 + length {
                    break;
                }
            }
            let body =
                r#"{"access_token": "emulator-token", "expires_in": 3600, "token_type": "Bearer"}"#;
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    format!("http://{address}/token")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bigquery_connect_creates_the_dataset_then_only_changed_rows_travel() {
    let emulator = tokio::task::spawn_blocking(|| {
        BigQueryEmulator::start().expect("the BigQuery emulator starts")
    })
    .await
    .unwrap();
    let rows: Vec<String> = (1..=20)
        .map(|i| {
            let email = if i == 5 {
                " Person5@Example.COM ".to_string()
            } else {
                format!("person{i}@example.com")
            };
            let plan = if i % 2 == 0 { "pro" } else { "free" };
            format!("({i}, '{email}', 'Person {i}', '+1 555 {i:04}', '{plan}')")
        })
        .collect();
    for statement in [
        format!("CREATE SCHEMA `{BIGQUERY_PROJECT}`.`app`"),
        format!(
            "CREATE TABLE `{BIGQUERY_PROJECT}`.`app`.`people` (id INT64, email STRING, name \
             STRING, phone STRING, plan STRING)"
        ),
        format!(
            "INSERT INTO `{BIGQUERY_PROJECT}`.`app`.`people` VALUES {}",
            rows.join(", ")
        ),
    ] {
        bigquery_sql(&emulator, &statement).await;
    }
    let credentials = json!({
        "type": "authorized_user",
        "client_id": "ferry-test-client",
        "client_secret": "client-secret",
        "refresh_token": "refresh-token",
        "token_uri": fake_token_endpoint(),
    });
    let mut scene = Scene::new().await;
    scene
        .env
        .push(("BQ_CREDENTIALS".into(), credentials.to_string()));
    scene.connect_stripe(&[]).await;
    let api_base = emulator.api_base();
    scene
        .ferry(&[
            "connect",
            "bigquery",
            "warehouse",
            "--project-id",
            BIGQUERY_PROJECT,
            "--location",
            "EU",
            "--default-dataset",
            "app",
            "--api-base",
            &api_base,
            "--service-account-key-env",
            "BQ_CREDENTIALS",
            "--change-detection-schema",
            "ferry",
        ])
        .await
        .ok();
    let registry = format!("`{BIGQUERY_PROJECT}`.`ferry`.`ferry_syncs`");
    assert!(
        bigquery_sql(&emulator, &format!("SELECT sync_uid FROM {registry}"))
            .await
            .is_empty(),
        "connecting made the dataset and its empty registry"
    );
    scene.email_sync(&[]).await;

    assert_eq!(run(&scene).await, ([20, 20, 0, 0, 0], 20));
    let uid = bigquery_sql(&emulator, &format!("SELECT sync_uid FROM {registry}")).await;
    assert_eq!(uid.len(), 1, "{uid:?}");
    let table = format!("`{BIGQUERY_PROJECT}`.`ferry`.`sync_{}`", uid[0]);
    assert_eq!(
        bigquery_sql(&emulator, &format!("SELECT count(*) FROM {table}")).await,
        ["20"]
    );
    assert_eq!(
        bigquery_sql(
            &emulator,
            &format!("SELECT key FROM {table} WHERE key LIKE '%person5@%'")
        )
        .await,
        ["person5@example.com"]
    );

    let before = scene.stripe().requests().len();
    assert_eq!(run(&scene).await, ([20, 0, 0, 20, 0], 0));
    assert_eq!(scene.stripe().requests().len(), before);

    // The emulator has no UPDATE statement; its MERGE updates as well.
    bigquery_sql(
        &emulator,
        &format!(
            "MERGE `{BIGQUERY_PROJECT}`.`app`.`people` AS t USING (SELECT * FROM \
             UNNEST([STRUCT(3 AS id), STRUCT(4 AS id)])) AS s ON t.id = s.id WHEN MATCHED THEN \
             UPDATE SET plan = 'gold'"
        ),
    )
    .await;
    let before = scene.posts();
    assert_eq!(run(&scene).await, ([20, 0, 2, 18, 0], 2));
    assert_eq!(scene.posts() - before, 2);
    assert_eq!(
        scene.customers_with_email("person3@example.com")[0]["metadata"]["plan"],
        "gold"
    );
    assert_eq!(run(&scene).await, ([20, 0, 0, 20, 0], 0));
}

// ---------------------------------------------------------------------------------------------
// Snowflake (snowduck)

/// Runs one statement on snowduck as another client would; its rows.
async fn snowduck_sql(server: &SnowduckServer, sql: &str) -> Vec<Vec<Option<String>>> {
    let answer: Json = reqwest::Client::new()
        .post(format!("{}/api/v2/statements", server.base_url()))
        .bearer_auth("test")
        .header("X-Snowflake-Authorization-Token-Type", "OAUTH")
        .json(&json!({
            "statement": sql,
            "warehouse": "SYNC_WH",
            "database": "ANALYTICS",
            "schema": "PUBLIC",
        }))
        .send()
        .await
        .expect("snowduck answers")
        .json()
        .await
        .expect("a JSON answer");
    assert!(answer.get("data").is_some(), "{sql}: {answer}");
    serde_json::from_value(answer["data"].clone()).unwrap()
}

fn snowflake_config(server: &SnowduckServer) -> SourceConfig {
    SourceConfig::Snowflake(SnowflakeConfig {
        account: "myorg-myaccount".into(),
        user: "FERRY".into(),
        warehouse: "SYNC_WH".into(),
        database: Some("ANALYTICS".into()),
        schema: Some("PUBLIC".into()),
        role: None,
        credential: SnowflakeCredential::OAuthToken(Secret::new("test-token")),
        base_url: Some(server.base_url()),
    })
}

/// The `(key, hash)` of every row of the change query that needs ferry, and the model's row
/// count as the query carried it.
async fn changed_rows(config: &SourceConfig, spec: &DiffSpec) -> (Vec<(String, String)>, String) {
    let model = "SELECT * FROM people ORDER BY id";
    let mut stream =
        warehouse_diff::query_changes(config, model, spec, false, &QueryOptions::default())
            .await
            .unwrap();
    let mut changed = Vec::new();
    let mut total = String::new();
    while let Some(row) = stream.next_row().await {
        let row = row.unwrap();
        let added = &row[row.len() - ADDED_COLUMNS.len()..];
        total = format!("{:?}", added[4]);
        if let (Value::Text(key), Value::Text(hash)) = (&added[1], &added[2]) {
            changed.push((key.clone(), hash.clone()));
        }
    }
    changed.sort();
    (changed, total)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snowflake_keeps_acknowledged_rows_and_returns_only_changed_ones() {
    let server = tokio::task::spawn_blocking(|| SnowduckServer::start().expect("snowduck starts"))
        .await
        .unwrap();
    snowduck_sql(
        &server,
        "CREATE TABLE people (id INT, email VARCHAR, name VARCHAR, plan VARCHAR)",
    )
    .await;
    snowduck_sql(
        &server,
        "INSERT INTO people VALUES (1, ' Ada@Example.COM ', 'Ada', 'pro'), (2, \
         'bob@example.com', NULL, 'free'), (3, 'cy@example.com', 'Cy', 'free'), (4, \
         'it''s\\\\me@example.com', 'Back Slash', 'free')",
    )
    .await;

    // Saving the connection through the binary creates the schema and its registry, named in
    // upper case as Snowflake names unquoted objects.
    let mut scene = Scene::new().await;
    scene
        .env
        .push(("SNOWFLAKE_TOKEN".into(), "test-token".into()));
    let base_url = server.base_url();
    scene
        .ferry(&[
            "connect",
            "snowflake",
            "warehouse",
            "--account",
            "myorg-myaccount",
            "--user",
            "FERRY",
            "--warehouse",
            "SYNC_WH",
            "--database",
            "ANALYTICS",
            "--schema",
            "PUBLIC",
            "--authentication",
            "oauth",
            "--credential-env",
            "SNOWFLAKE_TOKEN",
            "--base-url",
            &base_url,
            "--change-detection-schema",
            "ferry",
        ])
        .await
        .ok();
    assert_eq!(
        snowduck_sql(
            &server,
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'FERRY'"
        )
        .await,
        [[Some("FERRY_SYNCS".to_string())]]
    );

    let config = snowflake_config(&server);
    let spec = DiffSpec {
        schema: "ferry".into(),
        sync_uid: "00ab12cd34ef5678".into(),
        sync_name: "people-to-stripe".into(),
        key_column: "EMAIL".into(),
        key_ignores_case: true,
        columns: vec!["EMAIL".into(), "NAME".into(), "PLAN".into()],
        fingerprint: "fingerprint-1".into(),
    };
    // A preview writes nothing; a run creates the table and registers the sync.
    assert_eq!(
        warehouse_diff::open_table(&config, &spec, false)
            .await
            .unwrap(),
        DiffTable::NotCreated
    );
    assert_eq!(
        warehouse_diff::open_table(&config, &spec, true)
            .await
            .unwrap(),
        DiffTable::Ready
    );
    assert_eq!(
        snowduck_sql(&server, "SELECT sync_name FROM FERRY.FERRY_SYNCS").await,
        [[Some("people-to-stripe".to_string())]]
    );

    let (first, total) = changed_rows(&config, &spec).await;
    let keys: Vec<&str> = first.iter().map(|(key, _)| key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "ada@example.com",
            "bob@example.com",
            "cy@example.com",
            "it's\\me@example.com"
        ]
    );
    // snowduck sends numbers as text.
    assert_eq!(total, "Text(\"4\")");
    let mut acknowledger = Acknowledger::new(&config, &spec);
    acknowledger.acknowledge(&first).await.unwrap();
    assert_eq!(
        snowduck_sql(&server, "SELECT count(*) FROM FERRY.SYNC_00AB12CD34EF5678").await,
        [[Some("4".to_string())]]
    );
    let (none, total) = changed_rows(&config, &spec).await;
    assert!(none.is_empty(), "{none:?}");
    assert_eq!(total, "Text(\"4\")", "the count still comes");

    // A plan changes, a NULL name becomes '' (the hash tells them apart): those two travel.
    snowduck_sql(&server, "UPDATE people SET plan = 'gold' WHERE id = 3").await;
    snowduck_sql(&server, "UPDATE people SET name = '' WHERE id = 2").await;
    let (changed, _) = changed_rows(&config, &spec).await;
    let keys: Vec<&str> = changed.iter().map(|(key, _)| key.as_str()).collect();
    assert_eq!(keys, ["bob@example.com", "cy@example.com"]);
    acknowledger.acknowledge(&changed).await.unwrap();
    assert!(changed_rows(&config, &spec).await.0.is_empty());

    // A dropped table: the error gives the statement that rebuilds it, which works as given.
    snowduck_sql(&server, "DROP TABLE FERRY.SYNC_00AB12CD34EF5678").await;
    let error = warehouse_diff::open_table(&config, &spec, true)
        .await
        .unwrap_err()
        .to_string();
    let fix = "DELETE FROM \"FERRY\".\"FERRY_SYNCS\" WHERE sync_uid = '00ab12cd34ef5678'";
    assert!(
        error.contains("is gone (dropped?)") && error.contains(fix),
        "{error}"
    );
    snowduck_sql(&server, fix).await;
    assert_eq!(
        warehouse_diff::open_table(&config, &spec, true)
            .await
            .unwrap(),
        DiffTable::Ready
    );
    assert_eq!(changed_rows(&config, &spec).await.0.len(), 4);
}
