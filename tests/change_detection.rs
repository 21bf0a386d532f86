//! End-to-end: change detection inside the warehouse (a connection's `change_detection_schema`).
//! The warehouse keeps the key and hash of every row Stripe acknowledged and returns only new,
//! changed and duplicated rows; every assertion reads what the emulator received, what the
//! run reported and logged, or what the warehouse's bookkeeping tables hold.

mod common;

use common::{people_sql, postgres_execute, rows_travelled, Scene};
use ferry_testkit::PgServer;

/// Runs the sync with `-v`; returns the JSON report and the rows that travelled.
async fn run(scene: &Scene, sync: &str) -> (serde_json::Value, u64) {
    let ran = scene
        .ferry(&["-v", "sync", "run", sync, "--format", "json"])
        .await
        .ok();
    let travelled = rows_travelled(&ran.stderr);
    (ran.json(), travelled)
}

fn counts(run: &serde_json::Value) -> [u64; 5] {
    ["rows", "created", "updated", "unchanged", "rejected"].map(|k| run[k].as_u64().unwrap())
}

/// The first row of a query on the scene's warehouse connection, through `ferry model show`.
async fn warehouse_row(scene: &Scene, name: &str, sql: &str) -> String {
    scene
        .ferry(&[
            "model",
            "create",
            name,
            "--connection",
            "warehouse",
            "--sql",
            sql,
        ])
        .await
        .ok();
    let shown = scene.ferry(&["model", "show", name]).await.ok().stdout;
    shown.lines().nth(1).unwrap_or_default().trim().to_string()
}

/// The scene's DuckDB warehouse connected with change detection in schema `ferry`, and sync
/// `people-to-stripe` over it.
async fn connect_duckdb_with_change_detection(scene: &Scene) {
    let warehouse = scene.warehouse().display().to_string();
    scene
        .ferry(&[
            "connect",
            "duckdb",
            "warehouse",
            "--path",
            &warehouse,
            "--change-detection-schema",
            "ferry",
        ])
        .await
        .ok();
    scene.email_sync(&[]).await;
}

async fn sync_uid(scene: &Scene) -> String {
    let row = warehouse_row(
        scene,
        "registry",
        "select sync_uid from ferry.ferry_syncs where sync_name = 'people-to-stripe'",
    )
    .await;
    assert_eq!(row.len(), 16, "one registered sync: {row:?}");
    row
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duckdb_only_new_changed_and_duplicated_rows_travel_and_each_is_acknowledged() {
    let scene = Scene::new().await;
    scene.warehouse_sql(&people_sql(50));
    scene.connect_stripe(&[]).await;
    connect_duckdb_with_change_detection(&scene).await;

    // A preview before the first run writes nothing to the warehouse and reads every row.
    let preview = scene
        .ferry(&["sync", "preview", "people-to-stripe", "--format", "json"])
        .await
        .ok()
        .json();
    assert_eq!(preview["create"], 50);

    let (first, travelled_first) = run(&scene, "people-to-stripe").await;
    assert_eq!(counts(&first), [50, 50, 0, 0, 0]);
    assert_eq!(travelled_first, 50);
    let uid = sync_uid(&scene).await;
    assert_eq!(
        warehouse_row(
            &scene,
            "acks",
            &format!("select count(*) from ferry.sync_{uid}")
        )
        .await,
        "50",
        "every created row is acknowledged in the warehouse"
    );

    // Nothing changed: nothing travels, no request.
    let before = scene.stripe().requests().len();
    let (second, travelled_second) = run(&scene, "people-to-stripe").await;
    assert_eq!(counts(&second), [50, 0, 0, 50, 0]);
    assert_eq!(travelled_second, 0);
    assert_eq!(scene.stripe().requests().len(), before);

    // One row changes, one is new, a column the sync does not read changes (nothing travels
    // for it), and one key gets a second copy: both copies travel and are rejected.
    scene.warehouse_sql(
        "alter table people add column note varchar;
         update people set note = 'not synced' where id = 9;
         update people set name = 'Renamed' where id = 3;
         insert into people values (51, 'person51@example.com', 'Person 51', '+1 555 0051', 'pro', null);
         insert into people values (52, 'PERSON7@example.com', 'Someone else', null, 'free', null);",
    );
    let before = scene.posts();
    let (third, travelled_third) = run(&scene, "people-to-stripe").await;
    assert_eq!(counts(&third), [52, 1, 1, 48, 2]);
    assert_eq!(
        travelled_third, 4,
        "the changed, the new and both copies of the duplicate"
    );
    assert_eq!(scene.posts() - before, 2, "one update, one create");
    assert_eq!(
        scene.customers_with_email("person3@example.com")[0]["name"],
        "Renamed"
    );
    assert_eq!(scene.customers_with_email("person51@example.com").len(), 1);

    // The rejected copies travel again until fixed; the rest stays in the warehouse.
    let (fourth, travelled_fourth) = run(&scene, "people-to-stripe").await;
    assert_eq!(counts(&fourth), [52, 0, 0, 50, 2]);
    assert_eq!(travelled_fourth, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duckdb_a_dropped_table_stops_the_run_with_the_fix_and_the_fix_rebuilds_it() {
    let scene = Scene::new().await;
    scene.warehouse_sql(&people_sql(20));
    scene.connect_stripe(&[]).await;
    connect_duckdb_with_change_detection(&scene).await;
    let (first, _) = run(&scene, "people-to-stripe").await;
    assert_eq!(counts(&first), [20, 20, 0, 0, 0]);
    let uid = sync_uid(&scene).await;

    scene.warehouse_sql(&format!("drop table ferry.sync_{uid}"));
    let before = scene.stripe().requests().len();
    let failed = scene.ferry(&["sync", "run", "people-to-stripe"]).await;
    assert_eq!(failed.code, 1, "{}", failed.stderr);
    let said = format!("{}{}", failed.stdout, failed.stderr);
    let fix = format!("DELETE FROM \"ferry\".\"ferry_syncs\" WHERE sync_uid = '{uid}'");
    assert!(
        said.contains("is gone (dropped?)") && said.contains(&fix),
        "the error says what happened and the statement that fixes it:\n{said}"
    );
    assert!(said.contains("--change-detection-schema"));
    assert_eq!(scene.stripe().requests().len(), before, "nothing sent");

    // The fix, as given: the next run reads every row once, sends nothing, and acknowledges all.
    scene.warehouse_sql(&fix);
    let (rebuilt, travelled_all) = run(&scene, "people-to-stripe").await;
    assert_eq!(counts(&rebuilt), [20, 0, 0, 20, 0]);
    assert_eq!(travelled_all, 20);
    assert_eq!(scene.stripe().requests().len(), before, "nothing sent");
    let (after, travelled_none) = run(&scene, "people-to-stripe").await;
    assert_eq!(counts(&after), [20, 0, 0, 20, 0]);
    assert_eq!(travelled_none, 0);

    // Without the schema, the error names what to do.
    scene.warehouse_sql("drop schema ferry cascade");
    let failed = scene.ferry(&["sync", "run", "people-to-stripe"]).await;
    assert_eq!(failed.code, 1);
    let said = format!("{}{}", failed.stdout, failed.stderr);
    assert!(
        said.contains("the schema `ferry` does not exist in the warehouse")
            && said.contains("--change-detection-schema ferry"),
        "{said}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_says_what_to_grant_then_only_changed_rows_travel() {
    let pg = tokio::task::spawn_blocking(|| PgServer::start().expect("PostgreSQL starts"))
        .await
        .unwrap();
    let admin_url = pg.create_database("warehouse").unwrap();
    postgres_execute(
        &admin_url,
        "create table people (id int primary key, email text, name text, plan text);
         insert into people select i, 'pg' || i || '@example.com', 'PG ' || i, 'free'
         from generate_series(1, 30) i;
         create role reader login password 'reader-secret';
         grant select on people to reader;
         revoke create on schema public from public;",
    )
    .await;
    // `host=… port=… user=… dbname=…`: the same server and database as the reader.
    let reader_url = admin_url
        .split(' ')
        .map(|part| {
            if part.starts_with("user=") {
                "user=reader password=reader-secret".to_string()
            } else {
                part.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ");

    let scene = Scene::new().await;
    scene.connect_stripe(&[]).await;
    // The reader may not create the schema: connecting says what to grant, and saves nothing.
    let refused = scene
        .ferry(&[
            "connect",
            "postgres",
            "warehouse",
            "--url",
            &reader_url,
            "--change-detection-schema",
            "ferry",
        ])
        .await;
    assert_ne!(refused.code, 0);
    assert!(
        refused
            .stderr
            .contains("GRANT USAGE, CREATE ON SCHEMA ferry TO reader"),
        "{}",
        refused.stderr
    );
    assert!(!refused.stderr.contains("reader-secret"));
    let listed = scene.ferry(&["connections"]).await.ok().stdout;
    assert!(!listed.contains("warehouse"), "{listed}");

    postgres_execute(
        &admin_url,
        "create schema ferry; grant usage, create on schema ferry to reader;",
    )
    .await;
    scene
        .ferry(&[
            "connect",
            "postgres",
            "warehouse",
            "--url",
            &reader_url,
            "--change-detection-schema",
            "ferry",
        ])
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
            "people-to-stripe",
            "--model",
            "people",
            "--destination",
            "stripe",
            "--key",
            "email=email",
            "--map",
            "name=name",
            "--map",
            "plan=metadata.plan",
        ])
        .await
        .ok();
    let (first, travelled_first) = run(&scene, "people-to-stripe").await;
    assert_eq!(counts(&first), [30, 30, 0, 0, 0]);
    assert_eq!(travelled_first, 30);

    postgres_execute(
        &admin_url,
        "update people set plan = 'pro' where id in (4, 5); update people set plan = plan where id = 6;",
    )
    .await;
    let before = scene.posts();
    let (second, travelled_second) = run(&scene, "people-to-stripe").await;
    assert_eq!(counts(&second), [30, 0, 2, 28, 0]);
    assert_eq!(travelled_second, 2);
    assert_eq!(scene.posts() - before, 2);
    assert_eq!(
        scene.customers_with_email("pg4@example.com")[0]["metadata"]["plan"],
        "pro"
    );

    // A right taken away mid-life: the run stops with what to grant, nothing is lost.
    postgres_execute(&admin_url, "revoke usage on schema ferry from reader;").await;
    let failed = scene.ferry(&["sync", "run", "people-to-stripe"]).await;
    assert_eq!(failed.code, 1);
    let said = format!("{}{}", failed.stdout, failed.stderr);
    assert!(
        said.contains("GRANT USAGE, CREATE ON SCHEMA ferry TO reader"),
        "{said}"
    );
    assert!(!said.contains("reader-secret"));
    pg.stop().unwrap();
}

/// A run that crashes between two chunks (an abort as sudden as SIGKILL): the rerun sends only
/// what the crash left undone, creates nothing twice, and leaves every row acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_chunks_leaves_only_the_unsent_rows_to_travel() {
    let scene = Scene::new().await;
    // Three chunks of 2,000 records.
    scene.warehouse_sql(&people_sql(5_000));
    scene
        .connect_stripe(&["--max-rps", "0", "--max-rps-per-endpoint", "0"])
        .await;
    connect_duckdb_with_change_detection(&scene).await;

    scene.crash_run_at("people-to-stripe", "chunk:1").await;
    let created_before_crash = scene.stripe().customers().len();
    assert_eq!(created_before_crash, 2_000, "the first chunk went out");

    let (rerun, travelled) = run(&scene, "people-to-stripe").await;
    assert_eq!(
        travelled, 3_000,
        "the first chunk's rows were acknowledged before the crash"
    );
    assert_eq!(counts(&rerun), [5_000, 3_000, 0, 2_000, 0]);
    assert_eq!(scene.stripe().customers().len(), 5_000, "no duplicate");
    let (after, travelled_none) = run(&scene, "people-to-stripe").await;
    assert_eq!(counts(&after), [5_000, 0, 0, 5_000, 0]);
    assert_eq!(travelled_none, 0);
}
