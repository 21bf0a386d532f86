//! End-to-end: `ferry connect duckdb|postgres … --change-detection-schema SCHEMA` drives the
//! real binary. Assertions read what the workspace saved and what the warehouse holds
//! afterwards (the schema and its `ferry_syncs` table), not only what ferry printed.

mod common;

use common::{people_sql, postgres_execute, Scene};
use ferry_state::{StateStore, WorkspaceOptions};
use ferry_testkit::PgServer;

async fn saved_config(scene: &Scene, name: &str) -> Option<serde_json::Value> {
    let store = StateStore::open_existing(&WorkspaceOptions::in_dir(scene.workspace()))
        .await
        .expect("the workspace opens");
    store
        .get_connection(name)
        .await
        .unwrap()
        .map(|connection| connection.config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_duckdb_with_a_change_detection_schema_creates_it_and_a_bad_name_is_refused() {
    let scene = Scene::new().await;
    scene.warehouse_sql(&people_sql(3));
    let path = scene.warehouse().display().to_string();
    let registry = "select sync_uid, sync_name, created_at from ferry.ferry_syncs";
    assert!(ferry_source::duckdb_execute(&scene.warehouse(), registry).is_err());

    // Refused by the flag's check, before anything is saved or the file is touched.
    for (bad, problem) in [
        ("1x", "`1x` is not a schema name ferry accepts"),
        ("Bad-Name", "`Bad-Name` is not a schema name ferry accepts"),
        ("", "`` is not a schema name ferry accepts"),
    ] {
        let ran = scene
            .ferry(&[
                "connect",
                "duckdb",
                "w",
                "--path",
                &path,
                "--change-detection-schema",
                bad,
            ])
            .await;
        assert_eq!(ran.code, 2, "{bad}: {}{}", ran.stdout, ran.stderr);
        assert!(
            ran.stderr.contains("--change-detection-schema <SCHEMA>")
                && ran.stderr.contains(problem)
                && ran.stderr.contains("for example `ferry`"),
            "{bad}: {}",
            ran.stderr
        );
    }
    let listed = scene.ferry(&["connections"]).await.ok().stdout;
    assert!(listed.contains("No connections yet."), "{listed}");
    assert!(ferry_source::duckdb_execute(&scene.warehouse(), registry).is_err());

    let ran = scene
        .ferry(&[
            "connect",
            "duckdb",
            "w",
            "--path",
            &path,
            "--change-detection-schema",
            "ferry",
            "--statement-timeout",
            "60",
        ])
        .await
        .ok();
    assert!(ran.stdout.contains("Connected DuckDB as"), "{}", ran.stdout);
    let config = saved_config(&scene, "w").await.expect("saved");
    assert_eq!(config["change_detection_schema"], "ferry", "{config}");
    assert_eq!(config["statement_timeout_seconds"], 60, "{config}");
    ferry_source::duckdb_execute(&scene.warehouse(), registry)
        .expect("connecting created ferry.ferry_syncs in the warehouse");
    let listed = scene.ferry(&["connections"]).await.ok().stdout;
    assert!(
        listed.contains("statement timeout 60s  change detection in schema ferry"),
        "{listed}"
    );

    // Connecting again without the flag turns it off (and leaves the warehouse's table alone).
    scene
        .ferry(&["connect", "duckdb", "w", "--path", &path])
        .await
        .ok();
    let config = saved_config(&scene, "w").await.expect("saved");
    assert!(config.get("change_detection_schema").is_none(), "{config}");
    let listed = scene.ferry(&["connections"]).await.ok().stdout;
    assert!(!listed.contains("change detection"), "{listed}");
}

async fn registry_exists(url: &str) -> bool {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connects");
    tokio::spawn(connection);
    let row = client
        .query_one("select to_regclass('ferry.ferry_syncs') is not null", &[])
        .await
        .expect("the query runs");
    row.get(0)
}

/// On PostgreSQL the setting needs rights: a user without them is refused with the GRANT to
/// run, and nothing is saved; once granted, connecting creates the table in the schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_postgres_with_a_change_detection_schema_needs_the_rights_it_names() {
    let pg = tokio::task::spawn_blocking(|| PgServer::start().expect("PostgreSQL starts"))
        .await
        .unwrap();
    let admin_url = pg.create_database("warehouse").unwrap();
    postgres_execute(
        &admin_url,
        "create role reader login; grant select on all tables in schema public to reader;",
    )
    .await;
    let reader_url = admin_url.replace("user=postgres", "user=reader");
    assert_ne!(reader_url, admin_url);

    let scene = Scene::new().await;
    let connect = [
        "connect",
        "postgres",
        "pgw",
        "--url",
        &reader_url,
        "--change-detection-schema",
        "ferry",
    ];
    let refused = scene.ferry(&connect).await;
    assert_eq!(refused.code, 1, "{}{}", refused.stdout, refused.stderr);
    assert!(
        refused
            .stderr
            .contains("GRANT USAGE, CREATE ON SCHEMA ferry TO reader"),
        "{}",
        refused.stderr
    );
    assert!(saved_config(&scene, "pgw").await.is_none(), "nothing saved");
    assert!(!registry_exists(&admin_url).await);

    postgres_execute(
        &admin_url,
        "create schema ferry; grant usage, create on schema ferry to reader;",
    )
    .await;
    scene.ferry(&connect).await.ok();
    let config = saved_config(&scene, "pgw").await.expect("saved");
    assert_eq!(config["change_detection_schema"], "ferry", "{config}");
    assert!(
        registry_exists(&admin_url).await,
        "ferry.ferry_syncs created"
    );
}

/// A workspace edited by hand (or written by a newer ferry) may hold a setting this ferry cannot
/// read: every use names the connection, the setting and the fix, the listing still shows the
/// other connections, and connecting again repairs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_stored_setting_is_named_with_its_fix_and_connecting_again_repairs_it() {
    let scene = Scene::new().await;
    scene.warehouse_sql(&people_sql(3));
    let path = scene.warehouse().display().to_string();
    scene
        .ferry(&["connect", "duckdb", "w", "--path", &path])
        .await
        .ok();
    scene
        .ferry(&["connect", "duckdb", "good", "--path", &path])
        .await
        .ok();
    let store = StateStore::open_existing(&WorkspaceOptions::in_dir(scene.workspace()))
        .await
        .expect("the workspace opens");
    for (stored, problem) in [
        (
            serde_json::json!({"path": path, "statement_timeout_seconds": "30"}),
            "connection 'w': statement_timeout_seconds must be a whole number of seconds between \
             0 (no limit) and 86400; reconnect it with a valid --statement-timeout",
        ),
        (
            serde_json::json!({"path": path, "threads": 4}),
            "connection 'w': `threads` is not a setting of a duckdb connection, which takes \
             `path`, `statement_timeout_seconds`, `preview_timeout_seconds`, \
             `change_detection_schema`; connect it again with `ferry connect duckdb w …` to \
             replace its settings",
        ),
    ] {
        store
            .put_connection(&ferry_state::NewConnection {
                name: "w".to_string(),
                kind: ferry_state::ConnectionKind::Duckdb,
                config: stored,
                secret: None,
            })
            .await
            .unwrap();
        let listed = scene.ferry(&["connections"]).await.ok().stdout;
        assert!(
            listed.contains(problem) && listed.contains("good"),
            "{listed}"
        );
        for command in [&["connections", "test", "w"][..], &["export"]] {
            let ran = scene.ferry(command).await;
            assert_ne!(ran.code, 0, "{command:?}: {}", ran.stdout);
            assert!(ran.stderr.contains(problem), "{command:?}: {}", ran.stderr);
        }
    }
    scene
        .ferry(&["connect", "duckdb", "w", "--path", &path])
        .await
        .ok();
    scene.ferry(&["connections", "test", "w"]).await.ok();
    assert_eq!(
        saved_config(&scene, "w").await,
        Some(serde_json::json!({"path": path}))
    );
}
