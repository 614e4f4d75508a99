#![doc = include_str!("../README.md")]

mod error;
mod feed;
mod ops;
mod options;
mod schema;
mod stream;
mod threads;
mod timers;
mod wal;
mod watch;

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use journal_core::validate::{self, Limits};
use journal_core::{
    ActorPage, ActorSummary, Checkpoint, EntryStream, JournalEntry, JournalResult, JournalStats,
    JournalStorage,
};
use prost::Message;
use rusqlite::Connection;

pub use options::{SqliteOptions, Synchronous};
pub use schema::{APPLICATION_ID, SCHEMA_VERSION};
pub use threads::{EPOCH_ROWS, MAX_EPOCHS};
pub use watch::FILE_CHECK;

use threads::{append_job, job, read_job, send_write, stopped, ReadJob, Work};

const BACKEND: &str = "sqlite";

/// Rows a streaming replay reads per page: each page costs a hand-off to a
/// reader thread and back, so pages are large (about 200 KiB for 100-byte
/// payloads); a stream holds at most two, and reuses their buffers.
pub const REPLAY_PAGE: usize = 1024;

/// How the writer has grouped operations into transactions so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// Transactions committed (or attempted).
    pub transactions: u64,
    /// Write operations (appends, truncations, checkpoint saves, ...)
    /// they carried.
    pub operations: u64,
}

impl CommitStats {
    /// Average operations per transaction: how much group commit saves.
    #[allow(clippy::cast_precision_loss)] // a ratio for people to read
    pub fn average_group(&self) -> f64 {
        if self.transactions == 0 {
            0.0
        } else {
            self.operations as f64 / self.transactions as f64
        }
    }
}

/// The writer's counters behind [`CommitStats`].
#[derive(Debug, Default)]
pub(crate) struct CommitCounters {
    transactions: std::sync::atomic::AtomicU64,
    operations: std::sync::atomic::AtomicU64,
}

impl CommitCounters {
    pub(crate) fn record(&self, operations: usize) {
        use std::sync::atomic::Ordering::Relaxed;
        self.transactions.fetch_add(1, Relaxed);
        self.operations.fetch_add(operations as u64, Relaxed);
    }
}

/// A journal in one SQLite file (or in memory), with the whole contract.
///
/// Cheap to clone: clones share the connections. The threads and
/// connections close when the last clone is dropped.
#[derive(Clone)]
pub struct SqliteJournalStorage {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    limits: Limits,
    writer: Sender<Work>,
    /// `None` for an in-memory journal: the writer serves reads.
    readers: Option<Sender<ReadJob>>,
    /// Resolve when the connection threads have closed their connections.
    closed: Vec<tokio::sync::oneshot::Receiver<()>>,
    commits: Arc<CommitCounters>,
    /// Subscribers waiting for appends (see [`JournalWatch`]).
    watchers: journal_core::Watchers,
    /// Whether the task watching the files for other processes' commits
    /// runs.
    file_watch: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for SqliteJournalStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteJournalStorage")
            .field("path", &self.inner.path)
            .field("readers", &self.inner.readers.is_some())
            .finish_non_exhaustive()
    }
}

impl SqliteJournalStorage {
    /// Opens (or creates) the journal at `path` with the default options:
    /// WAL, `synchronous=FULL`. `":memory:"` gives an in-memory journal.
    /// The `journal` command's URL form works too: `sqlite:PATH` or
    /// `sqlite://PATH` is the file at `PATH`.
    pub async fn new(path: impl AsRef<Path>) -> JournalResult<Self> {
        Self::open(path, SqliteOptions::default()).await
    }

    /// Opens (or creates) the journal at `path`.
    ///
    /// A file of a newer schema version, or an SQLite database that is not a
    /// journal, is refused and left unchanged.
    pub async fn open(path: impl AsRef<Path>, options: SqliteOptions) -> JournalResult<Self> {
        let path = without_scheme(path.as_ref());
        let memory = schema::is_memory(&path);
        let (writer, jobs) = mpsc::channel::<Work>();
        let (open_path, open_options, writer_path, writer_options) =
            (path.clone(), options.clone(), path.clone(), options.clone());
        let commits = Arc::new(CommitCounters::default());
        let writer_commits = Arc::clone(&commits);
        let mut closed = Vec::new();
        closed.push(
            threads::spawn_with_connection(
                "journal-sqlite-writer".into(),
                move || {
                    let conn = schema::connect(&open_path, &open_options, false)?;
                    schema::prepare_writer(&conn, &open_path, &open_options)?;
                    ops::warm(&conn)?;
                    Ok(conn)
                },
                move |conn| {
                    let checkpointer = (!memory)
                        .then(|| wal::Checkpointer::start(conn, &writer_path, &writer_options))
                        .flatten();
                    threads::writer_loop(conn, &jobs, &writer_options, &writer_commits);
                    if let Some(checkpointer) = checkpointer {
                        checkpointer.stop(conn);
                    }
                },
            )
            .await?,
        );

        let readers = if memory || options.readers == 0 {
            None
        } else {
            let (sender, jobs) = mpsc::channel::<ReadJob>();
            let jobs = Arc::new(Mutex::new(jobs));
            for i in 0..options.readers {
                let (jobs, path, options) = (Arc::clone(&jobs), path.clone(), options.clone());
                closed.push(
                    threads::spawn_with_connection(
                        format!("journal-sqlite-reader-{i}"),
                        move || {
                            let conn = schema::connect(&path, &options, true)?;
                            schema::apply_pragmas(&conn, &options)?;
                            ops::warm(&conn)?;
                            Ok(conn)
                        },
                        move |conn| threads::reader_loop(conn, &jobs),
                    )
                    .await?,
                );
            }
            Some(sender)
        };
        Ok(SqliteJournalStorage {
            inner: Arc::new(Inner {
                path,
                limits: Limits {
                    max_entry_bytes: options.max_entry_bytes,
                },
                writer,
                readers,
                closed,
                commits,
                watchers: journal_core::Watchers::new(),
                file_watch: std::sync::atomic::AtomicBool::new(false),
            }),
        })
    }

    /// How many transactions the writer committed, carrying how many
    /// operations.
    pub fn commit_stats(&self) -> CommitStats {
        use std::sync::atomic::Ordering::Relaxed;
        CommitStats {
            transactions: self.inner.commits.transactions.load(Relaxed),
            operations: self.inner.commits.operations.load(Relaxed),
        }
    }

    /// The path the journal was opened at.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Closes the journal once this is its last handle, and waits until the
    /// connections are closed (the WAL is then folded into the file, which
    /// can be copied). With other clones alive it only drops this handle.
    pub async fn close(self) {
        if let Ok(inner) = Arc::try_unwrap(self.inner) {
            let Inner {
                writer,
                readers,
                mut closed,
                ..
            } = inner;
            // Readers first: the last connection to close folds the WAL
            // into the file, and only the writer's can.
            let writer_closed = closed.remove(0);
            drop(readers);
            for done in closed {
                let _ = done.await;
            }
            drop(writer);
            let _ = writer_closed.await;
        }
    }

    /// Runs `work` in the writer's next group transaction. `work` must not
    /// lower any actor's highest sequence (see [`Self::write_forgetting`]).
    async fn write<T, F>(&self, work: F) -> JournalResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> JournalResult<T> + Send + 'static,
    {
        self.submit(job(work, false)).await
    }

    /// [`Self::write`] for work that may lower an actor's highest sequence
    /// (a deletion): the writer then drops its cache of them.
    async fn write_forgetting<T, F>(&self, work: F) -> JournalResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> JournalResult<T> + Send + 'static,
    {
        self.submit(job(work, true)).await
    }

    /// Sends a validated append of one actor to the writer.
    async fn append(&self, actor_id: String, rows: Vec<ops::Row>) -> JournalResult<()> {
        let (job, done) = append_job(actor_id, rows);
        send_write(&self.inner.writer, job)?;
        let appended = done.await.map_err(stopped)?;
        // The buffers are freed here, off the writer thread.
        drop(appended.buffers);
        appended.result
    }

    /// Sends `job` to the writer and waits for its result.
    async fn submit<T>(
        &self,
        (job, result): (Work, tokio::sync::oneshot::Receiver<JournalResult<T>>),
    ) -> JournalResult<T> {
        send_write(&self.inner.writer, job)?;
        result.await.map_err(stopped)?
    }

    /// Runs `work` on a reader connection (the writer's, in memory).
    pub(crate) async fn read<T, F>(&self, work: F) -> JournalResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> JournalResult<T> + Send + 'static,
    {
        self.read_now(work).await
    }

    /// Hands `work` to a reader connection at once, not when the returned
    /// future is first polled (a replay stream asks for its next page
    /// before it consumes the one it has); the future yields the result.
    pub(crate) fn read_now<T, F>(&self, work: F) -> threads::Pending<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> JournalResult<T> + Send + 'static,
    {
        if let Some(readers) = &self.inner.readers {
            let (job, result) = read_job(work);
            let sent = readers.send(job).map_err(stopped);
            Box::pin(async move {
                sent?;
                result.await.map_err(stopped)?
            })
        } else {
            // In memory the writer's connection serves reads: the job is
            // sent now by a task of its own.
            let storage = self.clone();
            let done = tokio::spawn(async move { storage.write(work).await });
            Box::pin(async move { done.await.map_err(stopped)? })
        }
    }

    /// Writes a consistent copy of the journal to `target`, a new file,
    /// while the journal stays in use: `VACUUM INTO` in one read
    /// transaction, so the copy is the whole journal as of one moment
    /// (appends that commit meanwhile are in the journal, not in the copy),
    /// compacted. A target that exists already is refused. The copy opens
    /// with [`SqliteJournalStorage::new`] like the original.
    pub async fn backup_to(&self, target: impl AsRef<Path>) -> JournalResult<()> {
        let target = target.as_ref();
        if target.exists() {
            return Err(journal_core::JournalError::storage(
                BACKEND,
                format!("{} exists: a backup goes to a new file", target.display()),
            ));
        }
        let Some(path) = target.to_str().map(str::to_owned) else {
            return Err(journal_core::JournalError::storage(
                BACKEND,
                format!("{} is not a UTF-8 path", target.display()),
            ));
        };
        if self.inner.readers.is_none() {
            // In memory: the writer's connection holds the only copy.
            return self
                .write(move |conn| {
                    conn.execute("VACUUM INTO ?1", [path])
                        .map(drop)
                        .map_err(threads::sql)
                })
                .await;
        }
        // A connection of its own, read-only, outside the readers' open
        // transactions (VACUUM runs in none), on a blocking thread.
        let source = self.path().to_path_buf();
        tokio::task::spawn_blocking(move || {
            let conn = rusqlite::Connection::open_with_flags(
                &source,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                    | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(threads::sql)?;
            conn.busy_timeout(std::time::Duration::from_secs(5))
                .map_err(threads::sql)?;
            conn.execute("VACUUM INTO ?1", [path])
                .map(drop)
                .map_err(threads::sql)
        })
        .await
        .map_err(|e| journal_core::JournalError::storage(BACKEND, e))?
    }

    /// Runs `PRAGMA integrity_check`; `Ok` with SQLite's findings, empty
    /// when the file is sound.
    pub async fn integrity_check(&self) -> JournalResult<Vec<String>> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare("PRAGMA integrity_check")
                .map_err(threads::sql)?;
            let lines: Vec<String> = stmt
                .query_map([], |r| r.get(0))
                .and_then(Iterator::collect)
                .map_err(threads::sql)?;
            Ok(lines.into_iter().filter(|l| l != "ok").collect())
        })
        .await
    }
}

/// `path` without a `sqlite:` or `sqlite://` prefix (the URL form the
/// `journal` command reads).
fn without_scheme(path: &Path) -> PathBuf {
    match path.to_str() {
        Some(text) => PathBuf::from(
            text.strip_prefix("sqlite://")
                .or_else(|| text.strip_prefix("sqlite:"))
                .filter(|rest| !rest.is_empty())
                .unwrap_or(text),
        ),
        None => path.to_path_buf(),
    }
}

fn rows(entries: &[JournalEntry]) -> Vec<ops::Row> {
    entries
        .iter()
        .map(|e| ops::Row {
            sequence: e.sequence,
            id: e.id.clone(),
            bytes: e.encode_to_vec(),
            tags: journal_core::feed::entry_tags(e),
        })
        .collect()
}

#[async_trait]
impl JournalStorage for SqliteJournalStorage {
    fn backend_name(&self) -> &'static str {
        BACKEND
    }

    #[tracing::instrument(level = "debug", skip_all, fields(backend = BACKEND, actor_id = %entry.actor_id, sequence = entry.sequence))]
    async fn append_entry(&self, entry: &JournalEntry) -> JournalResult<u64> {
        let work = async {
            validate::validate_entry(entry, &self.inner.limits)?;
            self.append(entry.actor_id.clone(), rows(std::slice::from_ref(entry)))
                .await?;
            self.inner.watchers.notify(&entry.actor_id);
            self.inner.watchers.notify(feed::WAIT_KEY);
            Ok(entry.sequence)
        };
        journal_core::metrics::timed_append(BACKEND, 1, work).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(backend = BACKEND, actor_id = entries.first().map(|e| e.actor_id.as_str()), sequence = entries.first().map(|e| e.sequence), count = entries.len()))]
    async fn append_batch(&self, entries: &[JournalEntry]) -> JournalResult<()> {
        let work = async {
            validate::validate_batch(entries, &self.inner.limits)?;
            let Some(first) = entries.first() else {
                return Ok(());
            };
            self.append(first.actor_id.clone(), rows(entries)).await?;
            self.inner.watchers.notify(&first.actor_id);
            self.inner.watchers.notify(feed::WAIT_KEY);
            Ok(())
        };
        journal_core::metrics::timed_append(BACKEND, entries.len(), work).await
    }

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn replay_range(
        &self,
        actor_id: &str,
        from: u64,
        to: u64,
        max: usize,
    ) -> JournalResult<Vec<JournalEntry>> {
        let work = async {
            let owned = actor_id.to_owned();
            let page = self
                .read(move |conn| {
                    ops::replay_range(conn, &owned, from, to, max, ops::RawPage::default())
                })
                .await?;
            page.decode_all(actor_id)
        };
        journal_core::metrics::timed_page(BACKEND, work).await
    }

    fn replay_page_size(&self) -> usize {
        REPLAY_PAGE
    }

    fn limits(&self) -> Limits {
        self.inner.limits
    }

    /// Pages of [`REPLAY_PAGE`] rows, the next one read while this one is
    /// consumed; entries are decoded one by one as the stream is polled, on
    /// the consumer's thread. At most two pages are held.
    fn replay_stream<'a>(&'a self, actor_id: &'a str, from: u64) -> EntryStream<'a> {
        stream::replay(self.clone(), actor_id, from, REPLAY_PAGE)
    }

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn highest_sequence(&self, actor_id: &str) -> JournalResult<u64> {
        let actor_id = actor_id.to_owned();
        self.read(move |conn| ops::highest(conn, &actor_id)).await
    }

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn truncate_to(&self, actor_id: &str, to: u64) -> JournalResult<()> {
        let actor_id = actor_id.to_owned();
        self.write(move |conn| ops::truncate(conn, &actor_id, to))
            .await
    }

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn delete_actor(&self, actor_id: &str) -> JournalResult<()> {
        let owned = actor_id.to_owned();
        self.write_forgetting(move |conn| ops::delete_actor(conn, &owned))
            .await?;
        // Its subscribers read again, and find it gone.
        self.inner.watchers.notify(actor_id);
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(backend = BACKEND, actor_id = %checkpoint.actor_id, sequence = checkpoint.sequence))]
    async fn save_checkpoint(&self, checkpoint: &Checkpoint) -> JournalResult<()> {
        validate::validate_checkpoint(checkpoint)?;
        // The writer needs only where it goes (and the encoded bytes): no
        // second copy of the state.
        let bytes = checkpoint.encode_to_vec();
        let checkpoint = Checkpoint {
            actor_id: checkpoint.actor_id.clone(),
            sequence: checkpoint.sequence,
            ..Checkpoint::default()
        };
        self.write(move |conn| ops::save_checkpoint(conn, &checkpoint, &bytes))
            .await
    }

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn get_latest_checkpoint(&self, actor_id: &str) -> JournalResult<Option<Checkpoint>> {
        let actor_id = actor_id.to_owned();
        self.read(move |conn| ops::get_checkpoint(conn, &actor_id, None))
            .await
    }

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn get_checkpoint(
        &self,
        actor_id: &str,
        sequence: u64,
    ) -> JournalResult<Option<Checkpoint>> {
        let actor_id = actor_id.to_owned();
        self.read(move |conn| ops::get_checkpoint(conn, &actor_id, Some(sequence)))
            .await
    }

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn list_checkpoints(&self, actor_id: &str) -> JournalResult<Vec<u64>> {
        let actor_id = actor_id.to_owned();
        self.read(move |conn| ops::list_checkpoints(conn, &actor_id))
            .await
    }

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn delete_checkpoints_before(&self, actor_id: &str, before: u64) -> JournalResult<u64> {
        let actor_id = actor_id.to_owned();
        self.write(move |conn| ops::delete_checkpoints_before(conn, &actor_id, before))
            .await
    }

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn list_actors_page(
        &self,
        cursor: Option<&str>,
        limit: usize,
    ) -> JournalResult<ActorPage> {
        let cursor = cursor.map(str::to_owned);
        self.read(move |conn| ops::list_actors_page(conn, cursor.as_deref(), limit))
            .await
    }

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn actor_summary(&self, actor_id: &str) -> JournalResult<ActorSummary> {
        let actor_id = actor_id.to_owned();
        self.read(move |conn| ops::actor_summary(conn, &actor_id))
            .await
    }

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn stats(&self) -> JournalResult<JournalStats> {
        self.read(ops::stats).await
    }
}
