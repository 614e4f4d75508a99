//! The threads that own the connections: one writer that commits whatever
//! has queued up in one transaction (group commit), and readers that serve
//! replays while commits are in flight. Async callers only ever wait on a
//! channel, never on SQLite.

use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex, PoisonError};

use journal_core::{JournalError, JournalResult};
use rusqlite::Connection;
use tokio::sync::oneshot;

use crate::error::{db_error, Failure};

/// Work for the writer: it runs inside a savepoint of the group's
/// transaction, and learns after `COMMIT` whether it is durable.
pub(crate) trait WriterJob: Send {
    /// Runs the job; `false` when it failed (its savepoint is rolled back).
    fn run(&mut self, conn: &Connection) -> bool;
    /// Reports the outcome: the job's own, or the commit's failure.
    fn complete(self: Box<Self>, commit: Result<(), Failure>);
}

struct Job<T, F> {
    work: Option<F>,
    result: Option<JournalResult<T>>,
    reply: oneshot::Sender<JournalResult<T>>,
}

impl<T, F> WriterJob for Job<T, F>
where
    T: Send,
    F: FnOnce(&Connection) -> JournalResult<T> + Send,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let result = match self.work.take() {
            Some(work) => work(conn),
            None => Err(JournalError::storage("sqlite", "a writer job ran twice")),
        };
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn complete(self: Box<Self>, commit: Result<(), Failure>) {
        let result = match (commit, self.result) {
            (_, Some(Err(own))) => Err(own),
            (Ok(()), Some(Ok(value))) => Ok(value),
            (Err(failure), _) => Err(failure.to_error()),
            (Ok(()), None) => Err(Failure::stopped().to_error()),
        };
        let _ = self.reply.send(result);
    }
}

/// A boxed job and the receiver of its result.
pub(crate) fn job<T, F>(work: F) -> (Box<dyn WriterJob>, oneshot::Receiver<JournalResult<T>>)
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> JournalResult<T> + Send + 'static,
{
    let (reply, receiver) = oneshot::channel();
    let job = Job {
        work: Some(work),
        result: None,
        reply,
    };
    (Box::new(job), receiver)
}

/// The writer's loop: wait for one job, take every job queued behind it (up
/// to `max_group`), run them in one transaction, each in its own savepoint,
/// commit once, then answer each caller.
pub(crate) fn writer_loop(
    conn: &Connection,
    jobs: &Receiver<Box<dyn WriterJob>>,
    max_group: usize,
    stats: &crate::CommitCounters,
) {
    while let Ok(first) = jobs.recv() {
        let mut group = vec![first];
        while group.len() < max_group.max(1) {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        stats.record(group.len());
        commit_group(conn, group);
    }
}

fn commit_group(conn: &Connection, group: Vec<Box<dyn WriterJob>>) {
    let mut pending = std::collections::VecDeque::from(group);
    while !pending.is_empty() {
        if let Err(e) = run_cached(conn, "BEGIN IMMEDIATE") {
            let failure = Failure::of(&e);
            for job in pending {
                job.complete(Err(failure.clone()));
            }
            return;
        }
        // A job alone in its transaction needs no savepoint: if it fails,
        // the whole transaction is rolled back.
        let alone = pending.len() == 1;
        let mut done = Vec::with_capacity(pending.len());
        let mut aborted = None;
        let mut rolled_back = false;
        while let Some(mut job) = pending.pop_front() {
            if !alone {
                if let Err(e) = run_cached(conn, "SAVEPOINT job") {
                    aborted = Some(fail(job, &e));
                    break;
                }
            }
            let ok = job.run(conn);
            if conn.is_autocommit() {
                // SQLite rolled the whole transaction back (a full disk, an
                // I/O error): nothing of this group so far is stored. This job
                // reports its own error; the others may retry.
                let failure = Failure::rolled_back_with_group();
                job.complete(Err(failure.clone()));
                aborted = Some(failure);
                break;
            }
            let undo = match (alone, ok) {
                (true, true) => Ok(()),
                (true, false) => {
                    rolled_back = true;
                    run_cached(conn, "ROLLBACK")
                }
                (false, true) => run_cached(conn, "RELEASE job"),
                (false, false) => run_cached(conn, "ROLLBACK TO job")
                    .and_then(|()| run_cached(conn, "RELEASE job")),
            };
            if let Err(e) = undo {
                aborted = Some(fail(job, &e));
                break;
            }
            done.push(job);
        }
        let outcome = match aborted {
            Some(failure) => {
                if !conn.is_autocommit() {
                    let _ = run_cached(conn, "ROLLBACK");
                }
                Err(failure)
            }
            // The lone job failed and was rolled back: it reports its own error.
            None if rolled_back => Ok(()),
            None => run_cached(conn, "COMMIT").map_err(|e| {
                let failure = Failure::of(&e);
                if !conn.is_autocommit() {
                    let _ = run_cached(conn, "ROLLBACK");
                }
                failure
            }),
        };
        for job in done {
            job.complete(outcome.clone());
        }
    }
}

/// Fails `job` with SQLite's error `e`, which aborts its group.
fn fail(job: Box<dyn WriterJob>, e: &rusqlite::Error) -> Failure {
    let failure = Failure::of(e);
    job.complete(Err(failure.clone()));
    failure
}

/// Runs a statement from the connection's statement cache (no re-parse).
fn run_cached(conn: &Connection, statement: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(statement)?.execute([]).map(drop)
}

/// A read: runs on a reader thread with its connection.
pub(crate) type ReadJob = Box<dyn FnOnce(&Connection) + Send>;

/// Reader threads sharing one queue of read jobs.
pub(crate) fn reader_loop(conn: &Connection, jobs: &Arc<Mutex<Receiver<ReadJob>>>) {
    loop {
        let next = jobs.lock().unwrap_or_else(PoisonError::into_inner).recv();
        match next {
            Ok(job) => job(conn),
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
    B: FnOnce(&Connection) + Send + 'static,
{
    let (ready, opened) = oneshot::channel::<JournalResult<()>>();
    let (closed, on_close) = oneshot::channel::<()>();
    std::thread::Builder::new()
        .name(name)
        .spawn(move || match open() {
            Ok(conn) => {
                let _ = ready.send(Ok(()));
                body(&conn);
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
pub(crate) fn send_write(
    writer: &Sender<Box<dyn WriterJob>>,
    job: Box<dyn WriterJob>,
) -> JournalResult<()> {
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
