//! A sync lock held by a process that is SIGKILLed (no destructor, no cleanup) is released by
//! the operating system or the database, so a crashed `ferry sync run` never blocks the next.
//!
//! Each test re-runs its own test binary as the child process that takes the lock.

mod common;

use common::{Backend, TestWorkspace};
use ferry_state::{StateError, StateStore, WorkspaceOptions};
use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CHILD_DIR: &str = "FERRY_STATE_LOCK_CHILD_DIR";
const CHILD_STATE_URL: &str = "FERRY_STATE_LOCK_CHILD_STATE_URL";

#[tokio::test]
async fn sqlite_lock_of_a_killed_process_is_released() {
    check_lock_released_after_sigkill(
        Backend::Sqlite,
        "sqlite_lock_of_a_killed_process_is_released",
    )
    .await;
}

#[tokio::test]
async fn postgres_lock_of_a_killed_process_is_released() {
    check_lock_released_after_sigkill(
        Backend::Postgres,
        "postgres_lock_of_a_killed_process_is_released",
    )
    .await;
}

async fn check_lock_released_after_sigkill(backend: Backend, test_name: &'static str) {
    if let Some(dir) = std::env::var_os(CHILD_DIR) {
        hold_lock_until_killed(WorkspaceOptions {
            dir: dir.into(),
            state_url: std::env::var(CHILD_STATE_URL).ok(),
            master_key: None,
        })
        .await;
        return;
    }

    let workspace = TestWorkspace::new(backend, test_name).await;
    let sync = workspace.seed_customers_sync().await;
    let mut child = Command::new(std::env::current_exe().unwrap());
    child
        .args(["--exact", test_name, "--nocapture"])
        .env(CHILD_DIR, &workspace.options.dir)
        .stdout(Stdio::piped());
    if let Some(url) = &workspace.options.state_url {
        child.env(CHILD_STATE_URL, url);
    }
    let mut child = child.spawn().expect("spawn the child process");
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let locked = stdout
        .lines()
        .map_while(Result::ok)
        .any(|line| line == "LOCKED");
    assert!(locked, "the child did not take the lock");

    assert!(matches!(
        workspace.store.lock_sync(&sync).await,
        Err(StateError::SyncLocked { .. })
    ));
    if backend == Backend::Sqlite {
        // The lock is a plain flock(2): other tools see it too.
        let lock_file = workspace
            .options
            .dir
            .join(ferry_state::LOCKS_DIR_NAME)
            .join(format!("{}.lock", sync.uid));
        let status = Command::new("flock")
            .arg("--nonblock")
            .arg(&lock_file)
            .arg("true")
            .status()
            .expect("run flock(1)");
        assert_eq!(status.code(), Some(1), "flock(1) sees the lock as held");
    }

    child.kill().expect("SIGKILL the child");
    child.wait().unwrap();

    // The kernel releases a flock at once; PostgreSQL when it notices the closed socket.
    let deadline = Instant::now() + Duration::from_secs(10);
    let guard = loop {
        match workspace.store.lock_sync(&sync).await {
            Ok(guard) => break guard,
            Err(StateError::SyncLocked { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => panic!("the lock was not released: {error}"),
        }
    };
    assert_eq!(guard.sync(), "customers");
}

/// The child's side: take the lock, say so, and wait to be killed.
async fn hold_lock_until_killed(options: WorkspaceOptions) {
    let store = StateStore::open_existing(&options).await.unwrap();
    let sync = store.get_sync("customers").await.unwrap().unwrap();
    let _guard = store.lock_sync(&sync).await.unwrap();
    println!("LOCKED");
    tokio::time::sleep(Duration::from_secs(120)).await;
}
