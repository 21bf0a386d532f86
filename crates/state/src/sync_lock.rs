//! The guard that keeps a sync to one run at a time, across processes and machines.
//!
//! Both kinds of lock die with their holder, so a crashed or SIGKILLed run never leaves a sync
//! locked: an OS file lock (`flock`) is dropped by the kernel when the process exits, and a
//! PostgreSQL session-level advisory lock when its connection closes.

use std::fs::File;
use std::path::PathBuf;

/// Holds a sync's run lock until dropped (or [`SyncLock::release`]d).
#[must_use = "the sync is unlocked as soon as the guard is dropped"]
pub struct SyncLock {
    sync: String,
    held: HeldLock,
}

pub(crate) enum HeldLock {
    /// `DIR/locks/<sync uid>.lock`, locked with `flock(LOCK_EX)`.
    File { file: File, path: PathBuf },
    /// `pg_try_advisory_lock(key)` on a connection opened only for this lock.
    Postgres {
        client: tokio_postgres::Client,
        connection_task: tokio::task::JoinHandle<()>,
        key: i64,
    },
}

impl SyncLock {
    pub(crate) fn new(sync: &str, held: HeldLock) -> SyncLock {
        SyncLock {
            sync: sync.to_string(),
            held,
        }
    }

    /// The name of the locked sync.
    pub fn sync(&self) -> &str {
        &self.sync
    }

    /// False once the lock is known to be lost: a PostgreSQL lock dies with its session, so a
    /// server restart during a run frees it. The engine can check this before each commit and
    /// stop the run rather than race a second one. A file lock cannot be lost.
    pub fn is_still_held(&self) -> bool {
        match &self.held {
            HeldLock::File { .. } => true,
            HeldLock::Postgres { client, .. } => !client.is_closed(),
        }
    }

    /// Releases the lock and waits until it is released. Dropping the guard releases it too,
    /// but a PostgreSQL server notices a dropped connection a moment later; `release` makes
    /// the lock free by the time it returns.
    pub async fn release(mut self) {
        if let HeldLock::Postgres { client, key, .. } = &self.held {
            // If this fails the connection is gone, and with it the lock.
            let _ = client
                .execute("SELECT pg_advisory_unlock($1)", &[key])
                .await;
        }
        self.release_now();
    }

    fn release_now(&mut self) {
        match &self.held {
            HeldLock::File { file, path } => {
                if let Err(error) = file.unlock() {
                    tracing::warn!(sync = %self.sync, path = %path.display(), %error, "Could not unlock the sync lock file; it is released when ferry exits.");
                }
            }
            HeldLock::Postgres {
                connection_task, ..
            } => {
                // Closing the session releases its advisory locks on the server.
                connection_task.abort();
            }
        }
    }
}

impl Drop for SyncLock {
    fn drop(&mut self) {
        self.release_now();
    }
}

impl std::fmt::Debug for SyncLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.held {
            HeldLock::File { .. } => "file",
            HeldLock::Postgres { .. } => "postgres advisory lock",
        };
        f.debug_struct("SyncLock")
            .field("sync", &self.sync)
            .field("kind", &kind)
            .finish()
    }
}

/// The advisory lock key of a sync: its 64-bit uid, read as a signed integer.
pub(crate) fn advisory_lock_key(sync_uid: &str) -> i64 {
    match u64::from_str_radix(sync_uid, 16) {
        Ok(value) => i64::from_ne_bytes(value.to_ne_bytes()),
        // A uid is always 16 hex characters; anything else still gets a stable key.
        Err(_) => {
            use sha2::Digest as _;
            let digest = sha2::Sha256::digest(sync_uid.as_bytes());
            let mut first_eight = [0u8; 8];
            first_eight.copy_from_slice(&digest[..8]);
            i64::from_be_bytes(first_eight)
        }
    }
}
