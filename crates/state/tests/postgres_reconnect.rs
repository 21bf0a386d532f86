//! The PostgreSQL state store outlives a PostgreSQL restart: the next call after the restart
//! opens a new session instead of failing forever (a long-running `ferry server` relies on it),
//! and a sync lock whose session the restart ended reports itself lost.

use ferry_state::{ConnectionKind, NewConnection, StateStore, WorkspaceOptions};
use ferry_testkit::PgServer;
use std::time::{Duration, Instant};

#[tokio::test]
async fn store_reconnects_after_postgres_restarts() {
    // A server of its own: restarting the shared one would cut other tests' sessions.
    let server = PgServer::start().expect("start PostgreSQL");
    let dir = tempfile::tempdir().unwrap();
    let options = WorkspaceOptions {
        state_url: Some(server.url()),
        ..WorkspaceOptions::in_dir(dir.path().join("workspace"))
    };
    let store = StateStore::initialize(&options).await.unwrap();
    let warehouse = |path: &str| NewConnection {
        name: "warehouse".to_string(),
        kind: ConnectionKind::Duckdb,
        config: serde_json::json!({ "path": path }),
        secret: None,
    };
    store
        .put_connection(&warehouse("before.duckdb"))
        .await
        .unwrap();
    let sync = seed_sync(&store).await;
    let lock = store.lock_sync(&sync).await.unwrap();
    assert!(lock.is_still_held());

    server.restart().expect("restart PostgreSQL");

    // The restart ended the lock's session, and with it the lock; the guard says so.
    let deadline = Instant::now() + Duration::from_secs(5);
    while lock.is_still_held() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!lock.is_still_held());
    let relocked = store.lock_sync(&sync).await.unwrap();
    assert!(relocked.is_still_held());
    drop((lock, relocked));

    store
        .put_connection(&warehouse("after.duckdb"))
        .await
        .unwrap();
    let record = store.get_connection("warehouse").await.unwrap().unwrap();
    assert_eq!(record.config, serde_json::json!({"path": "after.duckdb"}));

    // While the server is down, calls fail with a message that says what to check.
    server.stop_temporarily().unwrap();
    let error = store.list_connections().await.unwrap_err().to_string();
    assert!(
        error.starts_with("cannot connect to the PostgreSQL state store at host="),
        "{error}"
    );
    assert!(
        error.ends_with("; check --state-url and that the server is running"),
        "{error}"
    );
    server.start_again().unwrap();
    assert_eq!(store.list_connections().await.unwrap().len(), 3);
}

async fn seed_sync(store: &StateStore) -> ferry_state::SyncRecord {
    store
        .put_connection(&NewConnection {
            name: "stripe".to_string(),
            kind: ConnectionKind::Stripe,
            config: serde_json::json!({}),
            secret: None,
        })
        .await
        .unwrap();
    store
        .put_connection(&NewConnection {
            name: "source".to_string(),
            kind: ConnectionKind::Duckdb,
            config: serde_json::json!({}),
            secret: None,
        })
        .await
        .unwrap();
    store
        .put_model("signups", "source", "SELECT 1")
        .await
        .unwrap();
    let spec = ferry_core::SyncSpec {
        invoice: None,
        model: "signups".to_string(),
        destination: "stripe".to_string(),
        object: ferry_core::ObjectKind::Customer,
        behavior: ferry_core::Behavior::UpdateOrCreate,
        key: ferry_core::KeyMapping {
            column: "email".to_string(),
            field: "email".to_string(),
        },
        mappings: vec![],
        nulls: ferry_core::NullPolicy::Skip,
        schedule: None,
        mirror: Default::default(),
        alerts: None,
    };
    store.put_sync("customers", &spec).await.unwrap()
}
