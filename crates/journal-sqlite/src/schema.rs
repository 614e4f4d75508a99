//! Opening connections, checking what a file is, and versioned migrations
//! (`PRAGMA user_version`).

use std::path::Path;

use journal_core::{JournalError, JournalResult};
use rusqlite::{params, Connection, OpenFlags};

use crate::error::db_error;
use crate::options::SqliteOptions;

/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: i64 = 7;
/// `PRAGMA application_id` of a journal file: "JRNL".
pub const APPLICATION_ID: i64 = 0x4A52_4E4C;

/// The start of a migration that rebuilds `recent`: the rows waiting there
/// move into `entries`, and the table goes.
macro_rules! retire_recent {
    () => {
        "INSERT INTO entries (actor_id, sequence, entry_id, entry)
             SELECT actor_id, sequence, entry_id, entry FROM recent ORDER BY actor_id, sequence;
         DROP TABLE recent;
         "
    };
}

/// One step of the schema: SQL, or code where SQL alone cannot do it.
enum Migration {
    Sql(&'static str),
    Code(fn(&Connection) -> rusqlite::Result<()>),
}

const MIGRATIONS: &[Migration] = &[
    // Version 1.
    Migration::Sql(
        "CREATE TABLE IF NOT EXISTS actors (
         actor_id TEXT PRIMARY KEY NOT NULL,
         highest  INTEGER NOT NULL
     ) WITHOUT ROWID;
     CREATE TABLE IF NOT EXISTS entries (
         actor_id TEXT NOT NULL,
         sequence INTEGER NOT NULL,
         entry_id TEXT NOT NULL,
         entry    BLOB NOT NULL,
         PRIMARY KEY (actor_id, sequence)
     );
     CREATE TABLE IF NOT EXISTS checkpoints (
         actor_id   TEXT NOT NULL,
         sequence   INTEGER NOT NULL,
         checkpoint BLOB NOT NULL,
         PRIMARY KEY (actor_id, sequence)
     );",
    ),
    // Version 2: appends land in `recent`, a small table whose pages are
    // written together, and the writer moves them into `entries` in bulk
    // (until version 5).
    Migration::Sql(
        "CREATE TABLE IF NOT EXISTS recent (
         actor_id TEXT NOT NULL,
         sequence INTEGER NOT NULL,
         entry_id TEXT NOT NULL,
         entry    BLOB NOT NULL,
         PRIMARY KEY (actor_id, sequence)
     );",
    ),
    // Version 3: `recent` is indexed by (actor_key, sequence), `actor_key`
    // being a 31-bit hash of the actor id (`ops::actor_key`), instead of by
    // (actor_id, sequence): its index entries take about 14 bytes instead of
    // the actor id's length plus 15, so the index pages a commit scatters its
    // appends over are a third as many. The sequence keeps a replay's rows
    // from `recent` in order, so a replay merges both tables without
    // sorting. Rows waiting in the old table move into `entries` first.
    Migration::Sql(concat!(
        retire_recent!(),
        "CREATE TABLE recent (
         actor_key INTEGER NOT NULL,
         actor_id  TEXT NOT NULL,
         sequence  INTEGER NOT NULL,
         entry_id  TEXT NOT NULL,
         entry     BLOB NOT NULL
     );
     CREATE INDEX recent_by_actor_key ON recent (actor_key, sequence);"
    )),
    // Version 4: `recent`, renamed `recent_entries` (so that a version 3
    // build still running on the file fails instead of moving rows without
    // updating the actors' rows), is indexed by (epoch, actor_key,
    // sequence), the epoch being a number the writer raises every 128 rows: a
    // commit's index entries then go at the end of the index, next to each
    // other, instead of one index page per actor. A lookup seeks once per
    // epoch (`ops::with_epochs`). Appends no longer rewrite the actor's row
    // in `actors` (a scattered page per actor per commit): it is written on
    // the actor's first append and brought up to date when entries move to
    // `entries` or are truncated, so the highest sequence is the larger of
    // the row's and the actor's last row in `recent_entries`. Version 3
    // kept the rows exact, so the waiting rows just move first.
    Migration::Sql(concat!(
        retire_recent!(),
        "CREATE TABLE recent_entries (
         epoch     INTEGER NOT NULL,
         actor_key INTEGER NOT NULL,
         actor_id  TEXT NOT NULL,
         sequence  INTEGER NOT NULL,
         entry_id  TEXT NOT NULL,
         entry     BLOB NOT NULL
     );
     CREATE INDEX recent_by_epoch ON recent_entries (epoch, actor_key, sequence);"
    )),
    // Version 5: an entry is written once. Every entry is a row of
    // `entry_log`, which keeps version 4's epochs and epoch index; instead
    // of moving the waiting rows, the writer adds their keys to
    // `entry_index` (actor key, sequence, log position) and marks their epochs
    // indexed in `log_state`, which moves a few bytes per entry instead of
    // the entry. `entries` and `recent_entries` go (so that a version 4
    // build still running on the file fails instead of writing where this
    // one does not look). `actors` gains each actor's key, indexed, so that a
    // read knows whether another actor shares it.
    Migration::Code(into_log),
    // Version 6: the due-timer index (contract rules 23 and 24). A timer
    // is one row; `timers_by_due` orders them by due time and carries the
    // lease's end, so a claim walks it from the earliest and skips those
    // under a running lease without reading their rows; `timers_by_lease`
    // holds the claimed ones, for the next lease to end. `claim` is the
    // latest claim's token (`NULL` once rescheduled).
    Migration::Sql(
        "CREATE TABLE timers (
         timer_id     TEXT PRIMARY KEY NOT NULL,
         owner_actor  TEXT NOT NULL,
         target_actor TEXT NOT NULL,
         target_type  TEXT NOT NULL,
         due_at       INTEGER NOT NULL,
         payload      BLOB NOT NULL,
         claim        TEXT,
         lease_until  INTEGER
     );
     CREATE INDEX timers_by_due ON timers (due_at, lease_until);
     CREATE INDEX timers_by_lease ON timers (lease_until) WHERE lease_until IS NOT NULL;",
    ),
    // Version 7: the feed over all actors (contract rule 28). An entry's
    // `position` is its feed position: the one writer hands positions out
    // in commit order, so readers never see one before an earlier one.
    // `entry_log` is rebuilt with AUTOINCREMENT so that a position is never
    // handed out twice, also after the newest rows were deleted (a reader
    // holding that position would skip the new rows). `entry_tags` indexes
    // tagged entries by tag (and by position, for the trigger that forgets
    // them with their entries). `projection_offsets` holds each projection's
    // offset (contract rule 29), written in the same transaction as what
    // the projection wrote when it runs exactly-once.
    Migration::Sql(
        "CREATE TABLE entry_log_v7 (
             position  INTEGER PRIMARY KEY AUTOINCREMENT,
             epoch     INTEGER NOT NULL,
             actor_key INTEGER NOT NULL,
             actor_id  TEXT NOT NULL,
             sequence  INTEGER NOT NULL,
             entry_id  TEXT NOT NULL,
             entry     BLOB NOT NULL
         );
         INSERT INTO entry_log_v7 (position, epoch, actor_key, actor_id, sequence, entry_id, entry)
             SELECT position, epoch, actor_key, actor_id, sequence, entry_id, entry
             FROM entry_log ORDER BY position;
         DROP TABLE entry_log;
         ALTER TABLE entry_log_v7 RENAME TO entry_log;
         CREATE INDEX entry_log_by_epoch ON entry_log (epoch, actor_key, sequence);
         CREATE TABLE entry_tags (
             position INTEGER NOT NULL,
             tag      TEXT NOT NULL,
             PRIMARY KEY (position, tag)
         ) WITHOUT ROWID;
         CREATE INDEX entry_tags_by_tag ON entry_tags (tag, position);
         CREATE TRIGGER entry_log_forgets_tags AFTER DELETE ON entry_log
         BEGIN
             DELETE FROM entry_tags WHERE position = old.position;
         END;
         CREATE TABLE projection_offsets (
             name     TEXT PRIMARY KEY NOT NULL,
             position TEXT NOT NULL
         ) WITHOUT ROWID;",
    ),
];

/// Migration 5: see [`MIGRATIONS`]. The rows of `entries` go into epoch 0,
/// indexed; those waiting in `recent_entries` keep their epochs and wait.
fn into_log(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "CREATE TABLE entry_log (
             position  INTEGER PRIMARY KEY,
             epoch     INTEGER NOT NULL,
             actor_key INTEGER NOT NULL,
             actor_id  TEXT NOT NULL,
             sequence  INTEGER NOT NULL,
             entry_id  TEXT NOT NULL,
             entry     BLOB NOT NULL
         );
         CREATE TABLE entry_index (
             actor_key INTEGER NOT NULL,
             sequence  INTEGER NOT NULL,
             position  INTEGER NOT NULL,
             PRIMARY KEY (actor_key, sequence, position)
         ) WITHOUT ROWID;
         CREATE TABLE log_state (
             id            INTEGER PRIMARY KEY CHECK (id = 1),
             indexed_epoch INTEGER NOT NULL
         );
         INSERT INTO log_state (id, indexed_epoch) VALUES (1, 0);
         ALTER TABLE actors ADD COLUMN actor_key INTEGER NOT NULL DEFAULT -1;
         INSERT INTO actors (actor_id, highest)
             SELECT actor_id, max(sequence) FROM (
                 SELECT actor_id, sequence FROM entries
                 UNION ALL SELECT actor_id, sequence FROM recent_entries)
             GROUP BY actor_id
             ON CONFLICT (actor_id) DO NOTHING;",
    )?;
    // Every actor with entries has its row now (reads rely on it to know
    // whether a key is shared; earlier versions wrote it on an actor's
    // first append). Its key is computed here, not in SQL, a page of actors
    // at a time: `actors` is not changed under an open statement that reads
    // it.
    let mut keyed = conn.prepare("UPDATE actors SET actor_key = ?2 WHERE actor_id = ?1")?;
    let mut after: Option<String> = None;
    loop {
        let page = crate::ops::actor_ids_after(conn, after.as_deref(), 1000)?;
        let Some(last) = page.last() else {
            break;
        };
        after = Some(last.clone());
        for actor_id in &page {
            keyed.execute(params![actor_id, crate::ops::actor_key(actor_id)])?;
        }
    }
    conn.execute_batch(
        "INSERT INTO entry_log (epoch, actor_key, actor_id, sequence, entry_id, entry)
             SELECT 0, a.actor_key, e.actor_id, e.sequence, e.entry_id, e.entry
             FROM entries AS e JOIN actors AS a ON a.actor_id = e.actor_id
             ORDER BY e.actor_id, e.sequence;
         INSERT INTO entry_index (actor_key, sequence, position)
             SELECT actor_key, sequence, position FROM entry_log ORDER BY actor_key, sequence;
         INSERT INTO entry_log (epoch, actor_key, actor_id, sequence, entry_id, entry)
             SELECT epoch, actor_key, actor_id, sequence, entry_id, entry FROM recent_entries
             ORDER BY rowid;
         DROP TABLE entries;
         DROP TABLE recent_entries;
         CREATE INDEX entry_log_by_epoch ON entry_log (epoch, actor_key, sequence);
         CREATE INDEX actors_by_key ON actors (actor_key);",
    )
}

fn invalid(path: &Path, why: &str) -> JournalError {
    JournalError::storage("sqlite", format!("{}: {why}", path.display()))
}

pub(crate) fn is_memory(path: &Path) -> bool {
    path.as_os_str() == ":memory:"
}

/// Opens a connection with the journal's pragmas.
pub(crate) fn connect(
    path: &Path,
    options: &SqliteOptions,
    read_only: bool,
) -> JournalResult<Connection> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags).map_err(|e| db_error(&e))?;
    conn.busy_timeout(options.busy_timeout)
        .map_err(|e| db_error(&e))?;
    conn.set_prepared_statement_cache_capacity(32);
    Ok(conn)
}

/// Checks that `conn` holds a journal of a version this build reads (or an
/// empty database), before anything is written, then sets WAL mode and
/// migrates.
pub(crate) fn prepare_writer(
    conn: &Connection,
    path: &Path,
    options: &SqliteOptions,
) -> JournalResult<()> {
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| invalid(path, &format!("not an SQLite database ({e})")))?;
    check_identity(conn, path, version)?;

    if !is_memory(path) {
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(|e| db_error(&e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(invalid(path, &format!("cannot use WAL mode (got {mode})")));
        }
    }
    apply_pragmas(conn, options)?;
    if let Some(pages) = options.max_page_count {
        conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))
            .map_err(|e| db_error(&e))?;
    }
    migrate(conn, path)
}

/// Pragmas every connection gets.
pub(crate) fn apply_pragmas(conn: &Connection, options: &SqliteOptions) -> JournalResult<()> {
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {};
         PRAGMA cache_size = -{};
         PRAGMA temp_store = MEMORY;
         PRAGMA mmap_size = {};
         PRAGMA foreign_keys = OFF;",
        options.synchronous.pragma(),
        options.cache_size_kib,
        options.mmap_size
    ))
    .map_err(|e| db_error(&e))
}

fn check_identity(conn: &Connection, path: &Path, version: i64) -> JournalResult<()> {
    if version > SCHEMA_VERSION {
        return Err(invalid(
            path,
            &format!("journal schema version {version} was written by a newer journal-sqlite (this one reads up to {SCHEMA_VERSION})"),
        ));
    }
    let application_id: i64 = conn
        .query_row("PRAGMA application_id", [], |r| r.get(0))
        .map_err(|e| db_error(&e))?;
    let objects: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
        .map_err(|e| invalid(path, &format!("not an SQLite database ({e})")))?;
    let ours = application_id == APPLICATION_ID;
    if (version > 0 && !ours) || (version == 0 && objects > 0) {
        return Err(invalid(path, "an SQLite database, but not a journal"));
    }
    Ok(())
}

fn migrate(conn: &Connection, path: &Path) -> JournalResult<()> {
    conn.execute_batch("BEGIN IMMEDIATE")
        .map_err(|e| db_error(&e))?;
    let result = (|| {
        // Checked again under the write lock: another process may have
        // migrated meanwhile.
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| db_error(&e))?;
        check_identity(conn, path, version)?;
        let start = usize::try_from(version).unwrap_or(0);
        for (i, migration) in MIGRATIONS.iter().enumerate().skip(start) {
            match migration {
                Migration::Sql(sql) => conn.execute_batch(sql),
                Migration::Code(code) => code(conn),
            }
            .map_err(|e| db_error(&e))?;
            conn.execute_batch(&format!(
                "PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = {};",
                i + 1
            ))
            .map_err(|e| db_error(&e))?;
        }
        Ok(())
    })();
    match result {
        Ok(()) => conn.execute_batch("COMMIT").map_err(|e| db_error(&e)),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}
