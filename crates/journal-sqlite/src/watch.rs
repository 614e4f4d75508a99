//! Live subscriptions (contract rule 27) on SQLite.
//!
//! Appends through this storage value (and its clones) wake the subscribers
//! of their actor at once. Commits by other processes, or by other storage
//! values on the same file, are seen by one task per storage value that asks
//! the writer's connection for `PRAGMA data_version` every [`FILE_CHECK`]
//! while anyone waits: it changes when another connection commits (never
//! for the writer's own commits), and then every subscriber is woken and
//! reads again. Either way the reading is the ordinary replay, so a missed
//! change costs latency (at most the subscription's poll interval), never
//! an entry.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use journal_core::{JournalResult, JournalStorage, JournalWatch};

use crate::{Inner, SqliteJournalStorage, BACKEND};

/// How often the writer's `data_version` is asked for while anyone waits.
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
        self.watch_files();
        waiting.await
    }
}

impl SqliteJournalStorage {
    /// Starts the watcher of other connections' commits unless it runs
    /// (not for an in-memory journal: no other process reaches it).
    pub(crate) fn watch_files(&self) {
        if crate::schema::is_memory(&self.inner.path)
            || self.inner.file_watch.swap(true, Ordering::AcqRel)
        {
            return;
        }
        tokio::spawn(file_watch(Arc::downgrade(&self.inner)));
    }
}

/// `PRAGMA data_version` of the writer's connection: it changes when
/// another connection commits.
async fn data_version(storage: &SqliteJournalStorage) -> Option<i64> {
    storage
        .write(|conn| {
            conn.query_row("PRAGMA data_version", [], |row| row.get::<_, i64>(0))
                .map_err(|e| journal_core::JournalError::storage(BACKEND, e))
        })
        .await
        .ok()
}

/// Wakes every subscriber when another connection commits, while anyone
/// waits; ends when nobody does (the next wait starts it again) or the
/// storage is gone.
async fn file_watch(inner: Weak<Inner>) {
    let mut last: Option<i64> = None;
    let mut first = true;
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        // (The first turn takes the version the next ones compare with,
        // while the wait that started this task registers.)
        if !first && !strong.watchers.is_waited_on() {
            strong.file_watch.store(false, Ordering::Release);
            // A waiter that came in between found the flag still set.
            if !strong.watchers.is_waited_on() || strong.file_watch.swap(true, Ordering::AcqRel) {
                return;
            }
        }
        let storage = SqliteJournalStorage { inner: strong };
        if let Some(now) = data_version(&storage).await {
            if last.is_some_and(|last| last != now) {
                storage.inner.watchers.notify_all();
            }
            last = Some(now);
        }
        drop(storage);
        first = false;
        tokio::time::sleep(FILE_CHECK).await;
    }
}
