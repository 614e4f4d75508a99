//! WAL checkpoints on a thread of their own.
//!
//! By default SQLite checkpoints in the connection that commits, right after
//! the commit: the writer would copy pages into the database file and fsync
//! it while the next group of appends waits. Here the writer only notices,
//! in its WAL hook, that the log has grown, and kicks a checkpointer thread
//! with its own connection, which copies the pages while the writer goes on
//! committing (SQLite's `PASSIVE` checkpoints never block the writer).
//!
//! SQLite starts the log over only when a write transaction begins after
//! every frame has been copied, which a checkpointer racing a busy writer
//! rarely sees. So once the checkpointer has copied the bulk, the writer's
//! next commit copies the tail (the frames committed meanwhile) itself, and
//! the log starts over. If the checkpointer falls behind, the writer
//! checkpoints itself once the log is [`INLINE_FRAMES`] long, as SQLite
//! would.

use std::ffi::c_int;
use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use rusqlite::hooks::Wal;
use rusqlite::Connection;

use crate::options::SqliteOptions;
use crate::schema;

/// Frames in the log at which the checkpointer is kicked (SQLite's own
/// autocheckpoint threshold).
pub(crate) const KICK_FRAMES: c_int = 1000;
/// Frames in the log at which the writer checkpoints itself, whatever the
/// checkpointer is doing.
pub(crate) const INLINE_FRAMES: c_int = 4 * KICK_FRAMES;

/// The checkpointer has not been kicked since the log started over.
const IDLE: u8 = 0;
/// The checkpointer is copying the log.
const COPYING: u8 = 1;
/// The checkpointer has copied what the log held when it was kicked.
const COPIED: u8 = 2;

/// The checkpointer thread, kicked by the writer's WAL hook.
pub(crate) struct Checkpointer {
    thread: JoinHandle<()>,
}

impl Checkpointer {
    /// Opens the checkpointer's connection, starts its thread, and hooks it
    /// to `writer`'s commits. `None` (the writer then checkpoints as SQLite
    /// does by default) if either fails.
    pub(crate) fn start(
        writer: &mut Connection,
        path: &Path,
        options: &SqliteOptions,
    ) -> Option<Checkpointer> {
        let conn = match schema::connect(path, options, false)
            .and_then(|conn| schema::apply_pragmas(&conn, options).map(|()| conn))
        {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(backend = "sqlite", error = %e, "no checkpointer connection; the writer checkpoints itself");
                return None;
            }
        };
        let (kick, kicks) = mpsc::sync_channel::<()>(1);
        let state = Arc::new(AtomicU8::new(IDLE));
        let thread_state = Arc::clone(&state);
        let thread = std::thread::Builder::new()
            .name("journal-sqlite-checkpointer".into())
            .spawn(move || {
                while kicks.recv().is_ok() {
                    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                    {
                        tracing::warn!(backend = "sqlite", error = %e, "checkpoint failed; the next one tries again");
                    }
                    // Unless the writer has started the log over meanwhile.
                    let _ = thread_state.compare_exchange(
                        COPYING,
                        COPIED,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    );
                }
            });
        let thread = match thread {
            Ok(thread) => thread,
            Err(e) => {
                tracing::warn!(backend = "sqlite", error = %e, "no checkpointer thread; the writer checkpoints itself");
                return None;
            }
        };
        let hooked = writer.wal_hook(Some(move |wal: &mut Wal, frames: c_int| {
            if frames < KICK_FRAMES {
                return Ok(());
            }
            let now = state.load(Ordering::Acquire);
            if now == COPIED || frames >= INLINE_FRAMES {
                // The tail (or, if the checkpointer fell behind, all of
                // it): the log starts over at the next transaction, and a
                // copy still running belongs to the old log. An error here
                // would fail the statement whose commit has already
                // happened, so a failed checkpoint is left to the next
                // commit.
                let _ = wal.checkpoint();
                state.store(IDLE, Ordering::Release);
            } else if now == IDLE {
                state.store(COPYING, Ordering::Release);
                // A kick already waiting covers this one.
                let _ = kick.try_send(());
            }
            Ok(())
        }));
        if let Err(e) = hooked {
            tracing::warn!(backend = "sqlite", error = %e, "no WAL hook; the writer checkpoints itself");
            // The hook, with its sender, was dropped: the thread ends on
            // its own.
            drop(thread);
            return None;
        }
        Some(Checkpointer { thread })
    }

    /// Unhooks the writer and waits for the checkpointer to close its
    /// connection, so that the writer's is the last to close and folds the
    /// log into the file.
    pub(crate) fn stop(self, writer: &mut Connection) {
        type Hook = fn(&mut Wal, c_int) -> rusqlite::Result<()>;
        // Dropping the hook drops the last sender: the thread's loop ends.
        let _ = writer.wal_hook(None::<Hook>);
        let _ = self.thread.join();
    }
}
