//! End-to-end on PostgreSQL: a PostgreSQL warehouse as the model's source, and the workspace
//! state kept in PostgreSQL instead of SQLite. Both servers are throwaway ones the test starts.

mod common;

use common::{Scene, KEY};
use ferry_testkit::PgServer;

async fn execute(url: &str, sql: &str) {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connects");
    tokio::spawn(connection);
    client.batch_execute(sql).await.expect("SQL runs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_model_syncs_with_state_in_postgres() {
    let pg = tokio::task::spawn_blocking(|| PgServer::start().expect("PostgreSQL starts"))
        .await
        .unwrap();
    let warehouse_url = pg.create_database("warehouse").unwrap();
    let state_url = pg.create_database("ferry_state").unwrap();
    execute(
        &warehouse_url,
        "create table people (id int primary key, email text, name text, ltv numeric(30, 2), tags text[], signed_up date);
         insert into people select i, 'pg' || i || '@example.com', 'PG ' || i, 123456789012345678901234567.89 + i, array['a', 'b'], date '1969-07-20' + i
         from generate_series(1, 25) i;",
    )
    .await;

    let mut scene = Scene::new().await;
    scene
        .env
        .push(("FERRY_STATE_URL".into(), state_url.clone()));
    let url = scene.emulator.url();
    scene
        .ferry(&[
            "connect",
            "stripe",
            "stripe",
            "--api-key",
            KEY,
            "--api-base",
            &url,
        ])
        .await
        .ok();
    scene
        .ferry(&["connect", "postgres", "warehouse", "--url", &warehouse_url])
        .await
        .ok();
    scene
        .ferry(&[
            "model",
            "create",
            "people",
            "--connection",
            "warehouse",
            "--sql",
            "select * from people order by id",
        ])
        .await
        .ok();
    scene
        .ferry(&[
            "sync",
            "create",
            "pg",
            "--model",
            "people",
            "--destination",
            "stripe",
            "--key",
            "email=email",
            "--map",
            "name=name",
            "--map",
            "ltv=metadata.ltv",
            "--map",
            "tags=metadata.tags",
            "--map",
            "signed_up=metadata.signed_up",
        ])
        .await
        .ok();
    let run = scene
        .ferry(&["sync", "run", "pg", "--format", "json"])
        .await
        .ok()
        .json();
    assert_eq!(run["created"], 25, "{run}");
    let three = &scene.customers_with_email("pg3@example.com")[0];
    assert_eq!(three["name"], "PG 3");
    assert_eq!(
        three["metadata"]["ltv"], "123456789012345678901234570.89",
        "30-digit numerics stay exact"
    );
    assert_eq!(three["metadata"]["tags"], r#"["a","b"]"#);
    assert_eq!(three["metadata"]["signed_up"], "1969-07-23");

    // The state really is in PostgreSQL: no SQLite file, and the runs table has the run.
    assert!(!scene.workspace().join("ferry.db").exists());
    let (client, connection) = tokio_postgres::connect(&state_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let snapshot_rows: i64 = client
        .query_one("select count(*) from snapshot", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(snapshot_rows, 25);

    execute(
        &warehouse_url,
        "update people set name = 'Changed' where id = 4",
    )
    .await;
    let run = scene
        .ferry(&["sync", "run", "pg", "--format", "json"])
        .await
        .ok()
        .json();
    assert_eq!(
        (run["updated"].as_u64(), run["unchanged"].as_u64()),
        (Some(1), Some(24))
    );

    // A model that tries to write is stopped by the read-only transaction.
    scene
        .ferry(&[
            "model",
            "create",
            "sneaky",
            "--connection",
            "warehouse",
            "--sql",
            "select * from people",
        ])
        .await
        .ok();
    let sneaky = scene
        .ferry(&[
            "model",
            "create",
            "sneaky",
            "--connection",
            "warehouse",
            "--sql",
            "with gone as (delete from people returning *) select * from gone",
        ])
        .await;
    assert_eq!(sneaky.code, 2, "{}", sneaky.stderr);
    assert!(sneaky.stderr.contains("read-only"), "{}", sneaky.stderr);
    assert!(!sneaky.stderr.contains(&warehouse_url));
}
