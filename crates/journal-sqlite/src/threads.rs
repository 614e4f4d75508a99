//! The threads that own the connections: one writer that commits whatever
//! has queued up in one transaction (group commit), and readers that serve
//! replays while commits are in flight. Async callers only ever wait on a
//! channel, never on SQLite.

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex, PoisonError};

use journal_core::{JournalError, JournalResult};
use rusqlite::Connection;
use tokio::sync::oneshot;

use crate::error::{db_error, Failure};
use crate::ops;

/// Work for the writer: it runs inside a savepoint of the group's
/// transaction, and learns after `COMMIT` whether it is durable.
pub(crate) trait WriterJob: Send {
    /// Runs the job; `false` when it failed (its savepoint is rolled back).
    /// Rows it adds to `entry_log` go in `epoch`.
    fn run(&mut self, conn: &Connection, epoch: i64) -> bool;
    /// Reports the outcome: the job's own, or the commit's failure.
    fn complete(self: Box<Self>, commit: Result<(), Failure>);
    /// What the job added to `entry_log`, once it has run: the actor, its
    /// new highest sequence, and the rows.
    fn appended(&self) -> Option<(&str, u64, Waiting)> {
        None
    }
    /// Whether the job may lower an actor's highest sequence (a deletion),
    /// so that the writer's cache of them must be dropped.
    fn forgets(&self) -> bool {
        false
    }
}

/// Rows and entry bytes waiting in `entry_log` to be indexed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Waiting {
    rows: u64,
    bytes: u64,
}

/// Rows an epoch of `entry_log` takes before the next commit starts a new
/// one. Under load every commit starts one (a group is larger), so a commit's
/// index entries go after all others; a lone writer's commits share one, and
/// its index entries still fall in the last page or two of the index.
pub const EPOCH_ROWS: u64 = 128;

/// Waiting epochs at which the writer indexes them, whatever `compact_after`
/// says: a lookup of waiting rows seeks the epoch index once per
/// epoch.
pub const MAX_EPOCHS: u64 = 256;

/// What the writer knows of `entry_log`: what waits there, and the epoch
/// its next rows go in.
#[derive(Debug, Clone, Copy)]
struct Recent {
    waiting: Waiting,
    /// The epoch of the next commit's rows, and the rows it holds so far.
    epoch: i64,
    epoch_rows: u64,
    /// The oldest epoch holding a waiting row (`epoch` when none waits).
    oldest: i64,
}

impl Recent {
    /// Reads the table (after opening); what cannot be read stays as
    /// `known` says.
    fn read(conn: &Connection, known: Recent) -> Recent {
        let mut recent = known;
        if let Ok((rows, bytes)) = ops::recent_waiting(conn) {
            recent.waiting = Waiting { rows, bytes };
        }
        recent.sync_epochs(conn);
        recent
    }

    /// Catches up with the table (on opening, and after another connection
    /// committed): the next rows go in a new epoch after the newest, and the
    /// oldest waiting epoch is read again, from two lookups in the index.
    /// `false` if the table could not be read.
    fn sync_epochs(&mut self, conn: &Connection) -> bool {
        match ops::epoch_bounds(conn) {
            Ok(bounds) => {
                self.epoch = self.epoch.max(bounds.newest.saturating_add(1));
                self.epoch_rows = 0;
                self.oldest = bounds.oldest_waiting.unwrap_or(self.epoch);
                true
            }
            Err(_) => false,
        }
    }

    /// The epoch of the next commit's rows: a new one if the last is full.
    fn next_epoch(&mut self) -> i64 {
        if self.epoch_rows >= EPOCH_ROWS {
            self.epoch = self.epoch.saturating_add(1);
            self.epoch_rows = 0;
        }
        self.epoch
    }

    fn add(&mut self, added: Waiting) {
        self.waiting.add(added);
        self.epoch_rows += added.rows;
    }

    fn due(&self, options: &crate::SqliteOptions) -> bool {
        let epochs = self.epoch.saturating_sub(self.oldest).saturating_add(1);
        self.waiting.due(options) || u64::try_from(epochs).unwrap_or(u64::MAX) >= MAX_EPOCHS
    }

    /// After indexing up to epoch `indexed`: nothing waits, and the next
    /// rows go in a later epoch.
    fn emptied(self, indexed: i64) -> Recent {
        let epoch = self.epoch.max(indexed).saturating_add(1);
        Recent {
            waiting: Waiting::default(),
            epoch,
            epoch_rows: 0,
            oldest: epoch,
        }
    }
}

/// Waiting entry bytes at which the writer indexes them, whatever
/// `compact_after` says: large entries gain nothing from waiting, which makes
/// their lookups seek more epochs.
pub(crate) const COMPACT_BYTES: u64 = 4 << 20;

impl Waiting {
    fn of(rows: &[ops::Row]) -> Waiting {
        Waiting {
            rows: rows.len() as u64,
            bytes: rows.iter().map(|r| r.bytes.len() as u64).sum(),
        }
    }

    fn add(&mut self, more: Waiting) {
        self.rows += more.rows;
        self.bytes += more.bytes;
    }

    fn due(self, options: &crate::SqliteOptions) -> bool {
        self.rows >= options.compact_after.max(1) || self.bytes >= COMPACT_BYTES
    }
}

struct Job<T, F> {
    work: Option<F>,
    result: Option<JournalResult<T>>,
    reply: oneshot::Sender<JournalResult<T>>,
    forgets: bool,
}

impl<T, F> WriterJob for Job<T, F>
where
    T: Send,
    F: FnOnce(&Connection) -> JournalResult<T> + Send,
{
    fn run(&mut self, conn: &Connection, _epoch: i64) -> bool {
        let result = match self.work.take() {
            // A job may run the caller's code (a projection's `apply`): its
            // panic fails that job alone (rolled back to its savepoint)
            // instead of ending the writer thread and every write after it.
            Some(work) => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(conn)))
                .unwrap_or_else(|panic| {
                    Err(JournalError::storage(
                        "sqlite",
                        format!(
                            "a write job panicked: {}",
                            journal_core::panic_text(panic.as_ref())
                        ),
                    ))
                }),
            None => Err(JournalError::storage("sqlite", "a writer job ran twice")),
        };
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn complete(self: Box<Self>, commit: Result<(), Failure>) {
        let _ = self.reply.send(outcome(commit, self.result));
    }

    fn forgets(&self) -> bool {
        self.forgets
    }
}

/// What a job's caller learns: the job's own error, else the commit's.
fn outcome<T>(commit: Result<(), Failure>, own: Option<JournalResult<T>>) -> JournalResult<T> {
    match (commit, own) {
        (_, Some(Err(own))) => Err(own),
        (Ok(()), Some(Ok(value))) => Ok(value),
        (Err(failure), _) => Err(failure.to_error()),
        (Ok(()), None) => Err(Failure::stopped().to_error()),
    }
}

/// A boxed job and the receiver of its result. `forgets`: the job may
/// lower an actor's highest sequence (see [`WriterJob::forgets`]).
pub(crate) fn job<T, F>(work: F, forgets: bool) -> (Work, oneshot::Receiver<JournalResult<T>>)
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> JournalResult<T> + Send + 'static,
{
    let (reply, receiver) = oneshot::channel();
    let job = Job {
        work: Some(work),
        result: None,
        reply,
        forgets,
    };
    (Work::Other(Box::new(job)), receiver)
}

/// An append of one actor's entries. It is kept as data, not as a closure,
/// so that the writer can check it against its cache of highest sequences
/// and run it again if its group has to be replayed one job at a time.
pub(crate) struct AppendJob {
    actor_id: String,
    rows: Vec<ops::Row>,
    /// Whether `run` wrote the rows (a retry of stored ones writes nothing).
    wrote: bool,
    result: Option<JournalResult<()>>,
    reply: oneshot::Sender<Appended>,
}

/// What the writer hands back for an append: its result, and its rows
/// and actor id, so that the caller frees them. The one writer thread is
/// what every append waits on; freeing a group's buffers (allocated by
/// the callers' threads) took it about a tenth of its time.
pub(crate) struct Appended {
    pub(crate) result: JournalResult<()>,
    /// Dropped by the caller.
    pub(crate) buffers: (String, Vec<ops::Row>),
}

/// An append job and the receiver of its result.
pub(crate) fn append_job(
    actor_id: String,
    rows: Vec<ops::Row>,
) -> (Work, oneshot::Receiver<Appended>) {
    let (reply, receiver) = oneshot::channel();
    let job = AppendJob {
        actor_id,
        rows,
        wrote: false,
        result: None,
        reply,
    };
    (Work::Append(Box::new(job)), receiver)
}

impl AppendJob {
    /// Keeps the outcome of [`ops::append_checked`] (or [`ops::append`]);
    /// `false` when the append failed.
    fn record(&mut self, result: JournalResult<bool>) -> bool {
        self.wrote = matches!(result, Ok(true));
        let ok = result.is_ok();
        self.result = Some(result.map(drop));
        ok
    }
}

impl WriterJob for AppendJob {
    fn run(&mut self, conn: &Connection, epoch: i64) -> bool {
        let result = ops::append(conn, &self.actor_id, &self.rows, epoch);
        self.record(result)
    }

    fn complete(self: Box<Self>, commit: Result<(), Failure>) {
        let AppendJob {
            actor_id,
            rows,
            result,
            reply,
            ..
        } = *self;
        let _ = reply.send(Appended {
            result: outcome(commit, result),
            buffers: (actor_id, rows),
        });
    }

    fn appended(&self) -> Option<(&str, u64, Waiting)> {
        match (self.wrote, self.rows.last()) {
            (true, Some(last)) => Some((&self.actor_id, last.sequence, Waiting::of(&self.rows))),
            _ => None,
        }
    }
}

/// What the writer is sent.
pub(crate) enum Work {
    /// An append: may take the fast path.
    Append(Box<AppendJob>),
    /// Anything else: runs in its own savepoint.
    Other(Box<dyn WriterJob>),
}

/// The writer's cache of each actor's highest sequence, so that an append needs
/// no lookup (a lookup seeks the epoch index once per epoch). It is dropped
/// whenever another connection may have written (`PRAGMA data_version`
/// changed), whenever a transaction fails, and after an operation that may
/// lower a highest sequence (a deletion). An actor it knows has its row in
/// `actors`.
#[derive(Default)]
struct HighestCache {
    known: HashMap<String, u64>,
    data_version: Option<i64>,
    /// Another connection wrote since the writer last counted epochs, or
    /// holds a newer epoch than the writer's.
    others_wrote: bool,
    /// Each actor's highest sequence among the rows waiting in `entry_log`,
    /// while every waiting row is this writer's own (since its last
    /// indexing, with no other connection writing, no deletion and no
    /// failed transaction); `None` when unknown. Indexing then raises
    /// those actors' rows in `actors` directly, instead of grouping every
    /// waiting row by actor id (which took as long as indexing the rows).
    unindexed: Option<HashMap<String, u64>>,
}

/// Actors remembered at most; beyond it the cache starts over.
const CACHED_ACTORS: usize = 100_000;

impl HighestCache {
    fn clear(&mut self) {
        self.known.clear();
        self.data_version = None;
        self.unindexed = None;
    }

    /// Forgets everything if another connection committed since the last
    /// call, and returns the epoch this transaction's rows go in: `epoch`,
    /// or the newest in the table if another connection wrote a newer one
    /// (epochs never go down from one commit to the next, which lookups rely
    /// on). Runs inside the write transaction, so nobody else can write
    /// until it ends.
    fn revalidate(&mut self, conn: &Connection, epoch: i64) -> rusqlite::Result<i64> {
        let version: i64 = conn
            .prepare_cached("PRAGMA data_version")?
            .query_row([], |r| r.get(0))?;
        if self.data_version == Some(version) {
            return Ok(epoch);
        }
        self.known.clear();
        self.unindexed = None;
        let known_version = self.data_version.replace(version);
        let newest = ops::epoch_bounds(conn)?.open().max(epoch);
        // The writer's own count of epochs must catch up too, after this
        // group (or the next commit would go back to its old epoch).
        self.others_wrote |= known_version.is_some() || newest != epoch;
        Ok(newest)
    }

    fn get(&self, conn: &Connection, actor_id: &str) -> rusqlite::Result<ops::Stored> {
        match self.known.get(actor_id) {
            Some(&highest) => Ok(ops::Stored {
                highest,
                listed: true,
            }),
            None => ops::stored(conn, actor_id),
        }
    }

    fn set(&mut self, actor_id: &str, highest: u64) {
        if let Some(unindexed) = &mut self.unindexed {
            if let Some(known) = unindexed.get_mut(actor_id) {
                *known = (*known).max(highest);
            } else if unindexed.len() < CACHED_ACTORS {
                unindexed.insert(actor_id.to_owned(), highest);
            } else {
                self.unindexed = None;
            }
        }
        if let Some(known) = self.known.get_mut(actor_id) {
            *known = highest;
            return;
        }
        if self.known.len() >= CACHED_ACTORS {
            self.known.clear();
        }
        self.known.insert(actor_id.to_owned(), highest);
    }
}

/// The writer's loop: wait for one job, take every job queued behind it (up
/// to `max_group`), run them in one transaction, commit once, then answer
/// each caller. A group of appends only takes the fast path
/// ([`commit_appends`]); any other group runs each job in its own savepoint
/// ([`commit_group`]).
pub(crate) fn writer_loop(
    conn: &Connection,
    jobs: &Receiver<Work>,
    options: &crate::SqliteOptions,
    stats: &crate::CommitCounters,
) {
    let mut cache = HighestCache::default();
    // What waits in `entry_log`: read from the file, then counted up by each
    // commit (an estimate: truncations remove rows, other processes add
    // some; it only decides when to index them). The epochs are read again
    // when another process has written.
    let start = Recent {
        waiting: Waiting::default(),
        epoch: 1,
        epoch_rows: 0,
        oldest: 1,
    };
    let mut recent = Recent::read(conn, start);
    while let Ok(first) = jobs.recv() {
        let mut group = vec![first];
        while group.len() < options.max_group.max(1) {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        stats.record(group.len());
        journal_core::metrics::group_commit("sqlite", group.len());
        let epoch = recent.next_epoch();
        // The jobs of a group were queued by concurrent callers (a caller
        // waits for each answer before it sends its next job), so any order
        // of them is one the callers could have seen: the appends go first,
        // on the fast path, and the rest (checkpoints, truncations) after,
        // one savepoint each, in the same transaction (one fsync). Without
        // the split, one checkpoint in a group put every append of it on the
        // savepoint path (with 256 actors that checkpoint now and then,
        // nearly every group).
        let (appends, mut others) = split_appends(group);
        if !appends.is_empty() {
            match commit_appends(conn, &mut cache, appends, others, epoch) {
                FastPath::Committed { written, left } => {
                    recent.add(written);
                    others = left;
                }
                FastPath::Failed { appends, left } => {
                    cache.clear();
                    let group = appends.into_iter().map(|job| job as _).collect();
                    recent.add(commit_group(conn, &mut cache, group, epoch));
                    others = left;
                }
            }
        }
        if !others.is_empty() {
            recent.add(commit_group(conn, &mut cache, others, epoch));
        }
        if std::mem::take(&mut cache.others_wrote) && !recent.sync_epochs(conn) {
            // The next commit reads the newest epoch again.
            cache.clear();
        }
        if recent.due(options) {
            recent = compact(conn, recent, &mut cache);
        }
    }
    // Closing: leave every entry indexed, other processes' too.
    if ops::epoch_bounds(conn).map_or(true, |bounds| bounds.oldest_waiting.is_some()) {
        compact(conn, recent, &mut cache);
    }
}

/// The group's appends, and its other jobs, each in the order queued.
#[allow(clippy::vec_box)] // the boxes go on to `commit_group` as they are
fn split_appends(group: Vec<Work>) -> (Vec<Box<AppendJob>>, Vec<Box<dyn WriterJob>>) {
    let mut appends = Vec::with_capacity(group.len());
    let mut others = Vec::new();
    for work in group {
        match work {
            Work::Append(job) => appends.push(job),
            Work::Other(job) => others.push(job),
        }
    }
    (appends, others)
}

/// What [`commit_appends`] did with a group's appends and its other jobs.
#[allow(clippy::vec_box)] // the boxes go on to `commit_group` as they are
enum FastPath {
    /// Committed (or failed at `BEGIN` or `COMMIT`, each job told): what
    /// the committed appends added, and the other jobs not run.
    Committed {
        written: Waiting,
        left: Vec<Box<dyn WriterJob>>,
    },
    /// Nothing is stored: the appends, untouched in the file, to run again
    /// one savepoint each, and the other jobs not run (those that had run
    /// were told the failure).
    Failed {
        appends: Vec<Box<AppendJob>>,
        left: Vec<Box<dyn WriterJob>>,
    },
}

/// The fast path: a group of appends, checked against the cache of highest
/// sequences, written without savepoints, then the group's other jobs in
/// the same transaction, one savepoint each. A sequence conflict writes
/// nothing, so it needs no savepoint; if SQLite fails an append's
/// statement, or a failure of another job ends the transaction, nothing is
/// stored and the appends are returned to run again one savepoint each.
#[allow(clippy::vec_box)] // the boxes go on to `commit_group` as they are
fn commit_appends(
    conn: &Connection,
    cache: &mut HighestCache,
    mut jobs: Vec<Box<AppendJob>>,
    others: Vec<Box<dyn WriterJob>>,
    epoch: i64,
) -> FastPath {
    if let Err(e) = run_cached(conn, "BEGIN IMMEDIATE") {
        let failure = Failure::of(&e);
        for job in jobs {
            job.complete(Err(failure.clone()));
        }
        return FastPath::Committed {
            written: Waiting::default(),
            left: others,
        };
    }
    let written = (|| -> rusqlite::Result<i64> {
        let epoch = cache.revalidate(conn, epoch)?;
        for job in &mut jobs {
            let stored = cache.get(conn, &job.actor_id)?;
            let result = ops::append_checked(conn, &job.actor_id, &job.rows, stored, epoch)?;
            job.record(result);
            if let Some((actor_id, last, _)) = job.appended() {
                cache.set(actor_id, last);
            }
        }
        Ok(epoch)
    })();
    let Ok(epoch) = written else {
        rollback_open(conn);
        return FastPath::Failed {
            appends: jobs,
            left: others,
        };
    };
    let (done, left) = match run_in_savepoints(conn, others, epoch) {
        Ok(done) => (done, Vec::new()),
        Err((failure, ran, left)) => {
            rollback_open(conn);
            for job in ran {
                job.complete(Err(failure.clone()));
            }
            return FastPath::Failed {
                appends: jobs,
                left,
            };
        }
    };
    let outcome = run_cached(conn, "COMMIT").map_err(|e| {
        rollback_open(conn);
        cache.clear();
        Failure::of(&e)
    });
    // A deletion may come after an append of the same actor: the cache
    // learns nothing from such a group.
    if done.iter().any(|job| job.forgets()) {
        cache.clear();
    }
    let mut committed = Waiting::default();
    for job in jobs {
        if let (Ok(()), Some((_, _, rows))) = (&outcome, job.appended()) {
            committed.add(rows);
        }
        job.complete(outcome.clone());
    }
    for job in done {
        if let (Ok(()), Some((_, _, rows))) = (&outcome, job.appended()) {
            committed.add(rows);
        }
        job.complete(outcome.clone());
    }
    FastPath::Committed {
        written: committed,
        left,
    }
}

/// The jobs that ran, each in a savepoint of its own within the open
/// transaction (a failed one rolled back to it); or, when one ended the
/// transaction (SQLite rolled it back: a full disk, an I/O error) or a
/// savepoint could not be made or ended, the failure, the jobs that ran
/// before it (that one was told already) and those not run.
#[allow(clippy::vec_box, clippy::type_complexity)]
fn run_in_savepoints(
    conn: &Connection,
    jobs: Vec<Box<dyn WriterJob>>,
    epoch: i64,
) -> Result<Vec<Box<dyn WriterJob>>, (Failure, Vec<Box<dyn WriterJob>>, Vec<Box<dyn WriterJob>>)> {
    let mut done = Vec::with_capacity(jobs.len());
    let mut pending = std::collections::VecDeque::from(jobs);
    while let Some(mut job) = pending.pop_front() {
        if let Err(e) = run_cached(conn, "SAVEPOINT job") {
            return Err((fail(job, &e), done, pending.into()));
        }
        let ok = job.run(conn, epoch);
        if conn.is_autocommit() {
            let failure = Failure::rolled_back_with_group();
            job.complete(Err(failure.clone()));
            return Err((failure, done, pending.into()));
        }
        let undo = if ok {
            run_cached(conn, "RELEASE job")
        } else {
            run_cached(conn, "ROLLBACK TO job").and_then(|()| run_cached(conn, "RELEASE job"))
        };
        if let Err(e) = undo {
            return Err((fail(job, &e), done, pending.into()));
        }
        done.push(job);
    }
    Ok(done)
}

/// Indexes the waiting rows; returns what is left waiting. A failure (a full
/// disk) loses nothing: the rows stay waiting, and the next group tries
/// again.
fn compact(conn: &Connection, recent: Recent, cache: &mut HighestCache) -> Recent {
    let own = cache.unindexed.take();
    let own = own.as_ref().zip(cache.data_version);
    match ops::compact(conn, own) {
        Ok(indexed) => {
            // Nothing waits now; what the writer commits next is all there
            // will be, as long as it alone writes.
            cache.unindexed = cache.data_version.map(|_| HashMap::new());
            recent.emptied(indexed)
        }
        Err(e) => {
            tracing::warn!(backend = "sqlite", error = %e, "indexing the waiting entries failed; they stay waiting");
            recent
        }
    }
}

/// Runs each job in its own savepoint; returns what the committed jobs
/// added to `entry_log`, and tells `cache` of their new highest sequences.
fn commit_group(
    conn: &Connection,
    cache: &mut HighestCache,
    group: Vec<Box<dyn WriterJob>>,
    epoch: i64,
) -> Waiting {
    let mut added = Waiting::default();
    let mut pending = std::collections::VecDeque::from(group);
    while !pending.is_empty() {
        let begun = run_cached(conn, "BEGIN IMMEDIATE").and_then(|()| {
            // Without the newest epoch, rows could go in an older one:
            // nothing is written.
            cache.revalidate(conn, epoch).inspect_err(|_| {
                cache.clear();
                rollback_open(conn);
            })
        });
        let epoch = match begun {
            Ok(epoch) => epoch,
            Err(e) => {
                let failure = Failure::of(&e);
                for job in pending {
                    job.complete(Err(failure.clone()));
                }
                return added;
            }
        };
        let lone = if pending.len() == 1 {
            pending.pop_front()
        } else {
            None
        };
        let (done, outcome) = if let Some(job) = lone {
            // A job alone in its transaction needs no savepoint: if it
            // fails, the whole transaction is rolled back.
            run_alone(conn, job, epoch)
        } else {
            match run_in_savepoints(conn, pending.drain(..).collect(), epoch) {
                Ok(done) => {
                    let committed = run_cached(conn, "COMMIT").map_err(|e| {
                        rollback_open(conn);
                        Failure::of(&e)
                    });
                    (done, committed)
                }
                Err((failure, ran, left)) => {
                    rollback_open(conn);
                    // What was not run gets a transaction of its own.
                    pending.extend(left);
                    (ran, Err(failure))
                }
            }
        };
        // A deletion may come after an append of the same actor: the
        // cache learns nothing from such a group.
        let forget = outcome.is_err() || done.iter().any(|job| job.forgets());
        if forget {
            cache.clear();
        }
        for job in done {
            if outcome.is_ok() {
                if let Some((actor_id, last, rows)) = job.appended() {
                    added.add(rows);
                    if !forget {
                        cache.set(actor_id, last);
                    }
                }
            }
            job.complete(outcome.clone());
        }
    }
    added
}

/// Runs `job` alone in the open transaction and commits it, or rolls it
/// back when it failed (it reports its own error then, and the outcome is
/// `Ok`). The job once it ran, and the transaction's outcome.
#[allow(clippy::vec_box)]
fn run_alone(
    conn: &Connection,
    mut job: Box<dyn WriterJob>,
    epoch: i64,
) -> (Vec<Box<dyn WriterJob>>, Result<(), Failure>) {
    let ok = job.run(conn, epoch);
    if conn.is_autocommit() {
        // SQLite rolled the transaction back (a full disk, an I/O error):
        // the job reports its own error.
        let failure = Failure::rolled_back_with_group();
        job.complete(Err(failure.clone()));
        return (Vec::new(), Err(failure));
    }
    match run_cached(conn, if ok { "COMMIT" } else { "ROLLBACK" }) {
        Ok(()) => (vec![job], Ok(())),
        Err(e) => {
            rollback_open(conn);
            let failure = fail(job, &e);
            (Vec::new(), Err(failure))
        }
    }
}

/// Fails `job` with SQLite's error `e`, which aborts its group.
fn fail(job: Box<dyn WriterJob>, e: &rusqlite::Error) -> Failure {
    let failure = Failure::of(e);
    job.complete(Err(failure.clone()));
    failure
}

/// Rolls back the transaction SQLite still holds open, if any (after some
/// errors SQLite has already rolled it back itself).
pub(crate) fn rollback_open(conn: &Connection) {
    if !conn.is_autocommit() {
        let _ = run_cached(conn, "ROLLBACK");
    }
}

/// Runs a statement from the connection's statement cache (no re-parse).
fn run_cached(conn: &Connection, statement: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(statement)?.execute([]).map(drop)
}

/// The result of a job already handed to a connection's thread.
pub(crate) type Pending<T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = JournalResult<T>> + Send>>;

/// A read: runs on a reader thread with its connection.
pub(crate) type ReadJob = Box<dyn FnOnce(&Connection) + Send>;

/// Reader threads sharing one queue of read jobs. Each job runs in a read
/// transaction of its own, so that its statements see one snapshot (an
/// indexing turns waiting entries into indexed ones in one commit).
pub(crate) fn reader_loop(conn: &Connection, jobs: &Arc<Mutex<Receiver<ReadJob>>>) {
    loop {
        let next = jobs.lock().unwrap_or_else(PoisonError::into_inner).recv();
        match next {
            Ok(job) => {
                // If `BEGIN` fails, the job's own statements report it.
                let _ = run_cached(conn, "BEGIN");
                job(conn);
                if !conn.is_autocommit() {
                    let _ = run_cached(conn, "COMMIT");
                    // A snapshot must not outlive its job.
                    rollback_open(conn);
                }
            }
            Err(_) => return,
        }
    }
}

/// A read job and the receiver of its result.
pub(crate) fn read_job<T, F>(work: F) -> (ReadJob, oneshot::Receiver<JournalResult<T>>)
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> JournalResult<T> + Send + 'static,
{
    let (reply, receiver) = oneshot::channel();
    let job: ReadJob = Box::new(move |conn| {
        let _ = reply.send(work(conn));
    });
    (job, receiver)
}

/// Spawns a named thread that opens its connection with `open` and then
/// runs `body`; resolves once the connection is open (or failed to).
/// The returned receiver resolves once the thread has closed its
/// connection.
pub(crate) async fn spawn_with_connection<O, B>(
    name: String,
    open: O,
    body: B,
) -> JournalResult<oneshot::Receiver<()>>
where
    O: FnOnce() -> JournalResult<Connection> + Send + 'static,
    B: FnOnce(&mut Connection) + Send + 'static,
{
    let (ready, opened) = oneshot::channel::<JournalResult<()>>();
    let (closed, on_close) = oneshot::channel::<()>();
    std::thread::Builder::new()
        .name(name)
        .spawn(move || match open() {
            Ok(mut conn) => {
                let _ = ready.send(Ok(()));
                body(&mut conn);
                // Closing the last connection folds the WAL into the file.
                drop(conn);
                let _ = closed.send(());
            }
            Err(e) => {
                let _ = ready.send(Err(e));
            }
        })
        .map_err(|e| JournalError::storage("sqlite", e))?;
    opened
        .await
        .map_err(|_| JournalError::storage("sqlite", "a connection thread died while opening"))??;
    Ok(on_close)
}

/// Sends `job` to the writer.
pub(crate) fn send_write(writer: &Sender<Work>, job: Work) -> JournalResult<()> {
    writer.send(job).map_err(|_| Failure::stopped().to_error())
}

/// Maps a dropped reply channel (the thread died) to an error.
pub(crate) fn stopped<T>(_: T) -> JournalError {
    Failure::stopped().to_error()
}

/// `db_error` for use in closures.
#[allow(clippy::needless_pass_by_value)] // its shape is `map_err`'s
pub(crate) fn sql(e: rusqlite::Error) -> JournalError {
    db_error(&e)
}
