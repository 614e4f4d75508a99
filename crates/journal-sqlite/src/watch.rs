//! Live subscriptions (contract rule 27) on SQLite.
//!
//! Appends through this storage value (and its clones) wake the subscribers
//! of their actor at once. Commits by other processes, or by other storage
//! values on the same file, are seen by one task per storage value that
//! looks at the database file and its WAL every [`FILE_CHECK`] while anyone
//! waits: a change in either's size or modification time wakes every
//! subscriber, who reads again. Either way the reading is the ordinary
//! replay, so a missed change costs latency (at most the subscription's
//! poll interval), never an entry.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use journal_core::{JournalResult, JournalStorage, JournalWatch};

use crate::{Inner, SqliteJournalStorage, BACKEND};

/// How often the files are looked at while anyone waits.
pub const FILE_CHECK: Duration = Duration::from_millis(10);

#[async_trait]
impl JournalWatch for SqliteJournalStorage {
    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn wait_for_entries(
        &self,
        actor_id: &str,
        after: u64,
        timeout: Duration,
    ) -> JournalResult<()> {
        let ready = async { Ok(self.highest_sequence(actor_id).await? > after) };
        let waiting = self.inner.watchers.wait(actor_id, timeout, ready);
        // The watcher first looks after FILE_CHECK: the wait is registered by then.
        self.watch_files();
        waiting.await
    }
}

impl SqliteJournalStorage {
    /// Starts the file watcher unless it runs (not for an in-memory
    /// journal: no other process reaches it).
    fn watch_files(&self) {
        if crate::schema::is_memory(&self.inner.path)
            || self.inner.file_watch.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let files = [self.inner.path.clone(), wal_path(&self.inner.path)];
        tokio::spawn(file_watch(Arc::downgrade(&self.inner), files));
    }
}

fn wal_path(path: &std::path::Path) -> PathBuf {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    PathBuf::from(wal)
}

/// What is looked at of a file: its size and modification time (`None`
/// when it is missing).
type Seen = Option<(u64, Option<SystemTime>)>;

async fn look(files: &[PathBuf; 2]) -> [Seen; 2] {
    let files = files.clone();
    tokio::task::spawn_blocking(move || {
        files.map(|file| {
            std::fs::metadata(&file)
                .ok()
                .map(|m| (m.len(), m.modified().ok()))
        })
    })
    .await
    .unwrap_or([None, None])
}

/// Wakes every subscriber when the files change, while anyone waits; ends
/// when nobody does (the next wait starts it again) or the storage is gone.
async fn file_watch(inner: Weak<Inner>, files: [PathBuf; 2]) {
    let mut last = look(&files).await;
    loop {
        tokio::time::sleep(FILE_CHECK).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        if !inner.watchers.is_waited_on() {
            inner.file_watch.store(false, Ordering::Release);
            // A waiter that came in between found the flag still set.
            if !inner.watchers.is_waited_on() || inner.file_watch.swap(true, Ordering::AcqRel) {
                return;
            }
        }
        let now = look(&files).await;
        if now != last {
            last = now;
            inner.watchers.notify_all();
        }
    }
}
