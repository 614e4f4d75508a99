//! The SQL of each operation, run on a connection thread.

use std::collections::HashMap;

use journal_core::validate::{self, AppendCheck};
use journal_core::{
    ActorPage, ActorSummary, Checkpoint, JournalEntry, JournalResult, JournalStats,
};
use rusqlite::{params, Connection, OptionalExtension};

use crate::threads::sql;

/// An entry ready to insert.
pub(crate) struct Row {
    pub(crate) sequence: u64,
    pub(crate) id: String,
    pub(crate) bytes: Vec<u8>,
    /// Its feed tags (`journal_core::feed::entry_tags`), mostly none.
    pub(crate) tags: Vec<String>,
}

/// A sequence as SQLite stores it (sequences beyond `i64::MAX` cannot be
/// stored, so bounds saturate).
pub(crate) fn seq(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn unseq(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// The key `entry_log` and `entry_index` are indexed by: FNV-1a (32 bits) of
/// the actor id's UTF-8 bytes, shifted right by one so that SQLite stores it
/// in 4 bytes. It is part of the file format: changing it needs a schema
/// version. Different actors may share a key, so every query also compares
/// the log row's `actor_id`.
pub(crate) fn actor_key(actor_id: &str) -> i64 {
    let hash = actor_id.bytes().fold(0x811c_9dc5_u32, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    });
    i64::from(hash >> 1)
}

/// The last epoch whose rows are in `entry_index`; the rows of later epochs
/// wait, found only through the log's epoch index.
macro_rules! indexed_epoch {
    () => {
        "(SELECT indexed_epoch FROM log_state)"
    };
}

/// The oldest epoch with waiting rows (`NULL` if none waits), read from the
/// epoch index.
macro_rules! oldest_waiting {
    () => {
        concat!(
            "(SELECT min(epoch) FROM entry_log WHERE epoch > ",
            indexed_epoch!(),
            ")"
        )
    };
}

/// The newest epoch with waiting rows (`NULL` if none waits).
macro_rules! newest_waiting {
    () => {
        concat!(
            "(SELECT max(epoch) FROM entry_log WHERE epoch > ",
            indexed_epoch!(),
            ")"
        )
    };
}

/// The start of every statement that finds one actor's waiting rows:
/// `epochs` lists each epoch from the oldest waiting to the newest, so that
/// `FROM epochs CROSS JOIN entry_log AS r WHERE r.epoch = epochs.epoch AND
/// r.actor_key = ? AND r.actor_id = ?` seeks the epoch index once per epoch
/// instead of reading every waiting row. Waiting epochs are few (the writer
/// indexes them at [`crate::MAX_EPOCHS`]), and both ends are found in the
/// index.
macro_rules! with_epochs {
    ($($sql:expr),+) => {
        concat!(
            "WITH RECURSIVE epochs(epoch) AS (
                 SELECT ", oldest_waiting!(), "
                 UNION ALL
                 SELECT epoch + 1 FROM epochs WHERE epoch < ", newest_waiting!(), "
             ) ",
            $($sql),+
        )
    };
}

/// The indexed rows of a key, `e` in `entry_index` joined to `l` in
/// `entry_log`, given `$key` (the placeholder of the key): every actor's
/// with that key.
macro_rules! indexed_rows_of_key {
    ($key:literal, $($sql:expr),+) => {
        concat!(
            "FROM entry_index AS e CROSS JOIN entry_log AS l
             WHERE e.actor_key = ", $key, " AND l.position = e.position ",
            $($sql),+
        )
    };
}

/// An actor's indexed rows: `indexed_rows_of_key` whose log row is `?1`'s
/// (the actor id).
macro_rules! indexed_rows {
    ($key:literal, $($sql:expr),+) => {
        indexed_rows_of_key!($key, "AND l.actor_id = ?1 ", $($sql),+)
    };
}

/// An actor's waiting rows, `r` in `entry_log`, given `?1` (the actor id)
/// and `$key` (the placeholder of its key), in a statement that starts
/// `with_epochs`.
macro_rules! waiting_rows {
    ($key:literal, $($sql:expr),+) => {
        concat!(
            "FROM epochs CROSS JOIN entry_log AS r
             WHERE r.epoch = epochs.epoch AND r.actor_key = ", $key, " AND r.actor_id = ?1 ",
            $($sql),+
        )
    };
}

/// What the file says about an actor's highest sequence.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stored {
    /// The highest sequence ever appended (0 for none).
    pub(crate) highest: u64,
    /// Whether the actor has its row in `actors`.
    pub(crate) listed: bool,
}

/// An actor's highest sequence: the larger of its row in `actors` (which is
/// written when the actor first appends, and brought up to date when its
/// rows are indexed or truncated) and its last waiting row.
pub(crate) fn stored(conn: &Connection, actor_id: &str) -> rusqlite::Result<Stored> {
    // An actor without a row in `actors` has no entries: its first append
    // writes the row in the same transaction as its rows (since schema
    // version 4; migrations write the rows of older stores), and only a
    // deletion, which removes its rows too, takes it out. Its waiting
    // rows are not looked for: that walked every waiting epoch, the
    // costliest part of a new actor's first append.
    let listed: Option<i64> = conn
        .prepare_cached("SELECT highest FROM actors WHERE actor_id = ?1")?
        .query_row(params![actor_id], |r| r.get(0))
        .optional()?;
    let Some(listed) = listed else {
        return Ok(Stored {
            highest: 0,
            listed: false,
        });
    };
    // The epochs from the newest down, stopping at the first that holds a
    // row of the actor (epochs never go down from one commit to the next,
    // so it holds the actor's last row): an actor that appends lately is
    // found at once.
    let recent: Option<i64> = conn
        .prepare_cached(concat!(
            "WITH RECURSIVE epochs(epoch) AS (
                 SELECT ",
            newest_waiting!(),
            "
                 UNION ALL
                 SELECT epoch - 1 FROM epochs WHERE epoch > ",
            oldest_waiting!(),
            "
             )
             SELECT (SELECT r.sequence FROM entry_log AS r
                     WHERE r.epoch = epochs.epoch AND r.actor_key = ?2 AND r.actor_id = ?1
                     ORDER BY r.sequence DESC LIMIT 1) AS last
             FROM epochs WHERE last IS NOT NULL LIMIT 1"
        ))?
        .query_row(params![actor_id, actor_key(actor_id)], |r| r.get(0))
        .optional()?;
    Ok(Stored {
        highest: unseq(listed.max(recent.unwrap_or(0))),
        listed: true,
    })
}

/// Prepares (and caches) the statements a connection runs most, by running them
/// once for no actor: the lookups of waiting rows take SQLite a few hundred
/// microseconds to compile, which the first recovery would otherwise pay.
pub(crate) fn warm(conn: &Connection) -> JournalResult<()> {
    stored(conn, "").map_err(sql)?;
    replay_range(conn, "", 1, 1, 1, RawPage::default()).map(drop)
}

pub(crate) fn highest(conn: &Connection, actor_id: &str) -> JournalResult<u64> {
    stored(conn, actor_id).map(|s| s.highest).map_err(sql)
}

/// Appends a validated batch of one actor (contract rules 1, 2, 5) to
/// `entry_log`, in `epoch`: see [`append_checked`].
pub(crate) fn append(
    conn: &Connection,
    actor_id: &str,
    rows: &[Row],
    epoch: i64,
) -> JournalResult<bool> {
    let stored = stored(conn, actor_id).map_err(sql)?;
    append_checked(conn, actor_id, rows, stored, epoch).map_err(sql)?
}

/// Appends a validated batch of one actor whose highest sequence is
/// `stored.highest`. The outer error is SQLite's (the statement failed);
/// the inner result is the caller's: `true` when the rows were written,
/// `false` when they were already stored (a retry); a sequence conflict
/// writes nothing. Only an actor's first append writes its row in `actors`.
pub(crate) fn append_checked(
    conn: &Connection,
    actor_id: &str,
    rows: &[Row],
    stored: Stored,
    epoch: i64,
) -> rusqlite::Result<JournalResult<bool>> {
    let highest = stored.highest;
    let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
        return Ok(Ok(false));
    };
    match AppendCheck::of(first.sequence, highest) {
        AppendCheck::Write => {
            let mut insert = conn.prepare_cached(
                "INSERT INTO entry_log (epoch, actor_key, actor_id, sequence, entry_id, entry)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            let key = actor_key(actor_id);
            for row in rows {
                insert.execute(params![
                    epoch,
                    key,
                    actor_id,
                    seq(row.sequence),
                    row.id,
                    row.bytes
                ])?;
                if !row.tags.is_empty() {
                    let position = conn.last_insert_rowid();
                    let mut tag = conn.prepare_cached(
                        "INSERT OR IGNORE INTO entry_tags (position, tag) VALUES (?1, ?2)",
                    )?;
                    for name in &row.tags {
                        tag.execute(params![position, name])?;
                    }
                }
            }
            if !stored.listed {
                conn.prepare_cached(
                    "INSERT INTO actors (actor_id, highest, actor_key) VALUES (?1, ?2, ?3)
                     ON CONFLICT (actor_id) DO UPDATE SET highest = max(highest, excluded.highest)",
                )?
                .execute(params![actor_id, seq(last.sequence), key])?;
            }
            Ok(Ok(true))
        }
        AppendCheck::CompareStored => {
            let mut stmt = conn.prepare_cached(with_epochs!(
                "SELECT e.sequence, l.entry_id ",
                indexed_rows!("?4", "AND e.sequence BETWEEN ?2 AND ?3"),
                " UNION ALL SELECT r.sequence, r.entry_id ",
                waiting_rows!("?4", "AND r.sequence BETWEEN ?2 AND ?3 ORDER BY 1")
            ))?;
            let stored: Vec<String> = stmt
                .query_map(
                    params![
                        actor_id,
                        seq(first.sequence),
                        seq(last.sequence),
                        actor_key(actor_id)
                    ],
                    |r| r.get(1),
                )
                .and_then(Iterator::collect)?;
            let same =
                stored.len() == rows.len() && stored.iter().zip(rows).all(|(s, r)| *s == r.id);
            Ok(if same {
                Ok(false)
            } else {
                Err(validate::sequence_conflict(
                    actor_id,
                    highest,
                    first.sequence,
                ))
            })
        }
        AppendCheck::Conflict => Ok(Err(validate::sequence_conflict(
            actor_id,
            highest,
            first.sequence,
        ))),
    }
}

fn decode_entry(actor_id: &str, sequence: i64, bytes: &[u8]) -> JournalResult<JournalEntry> {
    JournalEntry::decode_stored(actor_id, unseq(sequence), bytes)
}

/// A page of stored entries as raw bytes: one buffer for the whole page,
/// decoded by its consumer, and reused for the next page.
#[derive(Debug, Default)]
pub(crate) struct RawPage {
    buffer: Vec<u8>,
    /// Per row: its sequence and where its bytes end in `buffer`.
    rows: Vec<(i64, usize)>,
}

impl RawPage {
    pub(crate) fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether the rows from `index` on have rising sequences, each above
    /// the row before `index`.
    fn ascending_from(&self, index: usize) -> bool {
        let start = index.saturating_sub(1);
        self.rows
            .get(start..)
            .is_none_or(|rows| rows.windows(2).all(|w| w[0].0 < w[1].0))
    }

    /// Drops the rows from `index` on.
    fn truncate(&mut self, index: usize) {
        if let Some(&(_, end)) = index.checked_sub(1).and_then(|i| self.rows.get(i)) {
            self.buffer.truncate(end);
        } else {
            self.buffer.clear();
        }
        self.rows.truncate(index);
    }

    /// Sequence of the last row.
    pub(crate) fn last_sequence(&self) -> Option<u64> {
        self.rows.last().map(|&(s, _)| unseq(s))
    }

    /// Decodes row `index`.
    pub(crate) fn decode(
        &self,
        actor_id: &str,
        index: usize,
    ) -> Option<JournalResult<JournalEntry>> {
        let &(sequence, end) = self.rows.get(index)?;
        let start = index.checked_sub(1).map_or(0, |i| self.rows[i].1);
        Some(decode_entry(actor_id, sequence, &self.buffer[start..end]))
    }

    /// Decodes every row.
    pub(crate) fn decode_all(&self, actor_id: &str) -> JournalResult<Vec<JournalEntry>> {
        (0..self.len())
            .filter_map(|i| self.decode(actor_id, i))
            .collect()
    }
}

/// Reads at most `max` rows with `from <= sequence <= to` into `page`
/// (emptied first, its buffers reused). The indexed rows come first: each
/// actor's waiting rows follow all of its indexed ones, so the waiting rows
/// are looked at only once the indexed ones have run out. The caller runs
/// this in one read transaction, so both see the same snapshot.
///
/// For the waiting rows, see [`RECENT_IN_EPOCH_ORDER`].
pub(crate) fn replay_range(
    conn: &Connection,
    actor_id: &str,
    from: u64,
    to: u64,
    max: usize,
    mut page: RawPage,
) -> JournalResult<RawPage> {
    page.buffer.clear();
    page.rows.clear();
    if max == 0 || from > to {
        return Ok(page);
    }
    let limit = |page: &RawPage| i64::try_from(max - page.len()).unwrap_or(i64::MAX);
    let key = actor_key(actor_id);
    let indexed = conn
        .prepare_cached(if key_shared(conn, actor_id, key).map_err(sql)? {
            concat!(
                "SELECT e.sequence, l.entry ",
                indexed_rows!(
                    "?5",
                    "AND e.sequence BETWEEN ?2 AND ?3 ORDER BY e.sequence LIMIT ?4"
                )
            )
        } else {
            concat!(
                "SELECT e.sequence, l.entry ",
                indexed_rows_of_key!(
                    "?5",
                    "AND e.sequence BETWEEN ?2 AND ?3 ORDER BY e.sequence LIMIT ?4"
                )
            )
        })
        .map_err(sql)?;
    read_rows(
        indexed,
        params![actor_id, seq(from), seq(to), limit(&page), key],
        &mut page,
    )?;
    if page.len() < max {
        let params = params![actor_id, seq(from), seq(to), limit(&page), key];
        let before = page.len();
        let walk = conn.prepare_cached(RECENT_IN_EPOCH_ORDER).map_err(sql)?;
        read_rows(walk, params, &mut page)?;
        if !page.ascending_from(before) {
            // Never seen: SQLite returned the walk's rows out of loop
            // order. Read them again, sorted.
            page.truncate(before);
            let sorted = conn.prepare_cached(RECENT_SORTED).map_err(sql)?;
            read_rows(sorted, params, &mut page)?;
        }
    }
    Ok(page)
}

/// An actor's waiting rows with `?2 <= sequence <= ?3`, at most `?4`, in
/// sequence order without a sort. Epochs never go down from one commit
/// to the next, so an actor's rows in an older epoch all come before those in a
/// newer one. `down` walks from the newest epoch to the first holding a row of
/// the actor at or before `?2` (a recovery's tail: one or two), `up` walks back
/// from there, and for each epoch the index yields the rows in sequence order;
/// `LIMIT` ends the walk once the page is full. Without an `ORDER BY`, the
/// order is the nested loop's, which the caller checks.
const RECENT_IN_EPOCH_ORDER: &str = concat!(
    "WITH RECURSIVE
     down(epoch) AS (
         SELECT ",
    newest_waiting!(),
    "
         UNION ALL
         SELECT epoch - 1 FROM down
         WHERE epoch > ",
    oldest_waiting!(),
    "
           AND NOT EXISTS (
               SELECT 1 FROM entry_log AS r
               WHERE r.epoch = down.epoch AND r.actor_key = ?5 AND r.actor_id = ?1
                 AND r.sequence <= ?2)
     ),
     up(epoch) AS (
         SELECT min(epoch) FROM down
         UNION ALL
         SELECT epoch + 1 FROM up WHERE epoch < ",
    newest_waiting!(),
    "
     )
 SELECT r.sequence, r.entry FROM up CROSS JOIN entry_log AS r
 WHERE r.epoch = up.epoch AND r.actor_key = ?5 AND r.actor_id = ?1
   AND r.sequence BETWEEN ?2 AND ?3
 LIMIT ?4"
);

/// [`RECENT_IN_EPOCH_ORDER`]'s rows, sorted by SQLite.
const RECENT_SORTED: &str = with_epochs!(
    "SELECT r.sequence, r.entry ",
    waiting_rows!(
        "?5",
        "AND r.sequence BETWEEN ?2 AND ?3 ORDER BY r.sequence LIMIT ?4"
    )
);

/// Appends the `(sequence, entry)` rows of `stmt` to `page`.
fn read_rows(
    mut stmt: rusqlite::CachedStatement<'_>,
    params: &[&dyn rusqlite::ToSql],
    page: &mut RawPage,
) -> JournalResult<()> {
    let mut rows = stmt.query(params).map_err(sql)?;
    while let Some(row) = rows.next().map_err(sql)? {
        let sequence: i64 = row.get(0).map_err(sql)?;
        let bytes = row
            .get_ref(1)
            .map_err(sql)?
            .as_blob()
            .map_err(|e| sql(e.into()))?;
        page.buffer.extend_from_slice(bytes);
        page.rows.push((sequence, page.buffer.len()));
    }
    Ok(())
}

/// Deletes the actor's rows with `sequence <= to`: the indexed ones (log
/// rows first, then the index rows left pointing nowhere, which spares
/// another actor sharing the key), then the waiting ones.
fn delete_rows(conn: &Connection, actor_id: &str, to: i64) -> rusqlite::Result<()> {
    let params = params![actor_id, to, actor_key(actor_id)];
    for statement in [
        "DELETE FROM entry_log WHERE position IN (
             SELECT e.position FROM entry_index AS e WHERE e.actor_key = ?3 AND e.sequence <= ?2)
           AND actor_id = ?1",
        "DELETE FROM entry_index WHERE actor_key = ?3 AND sequence <= ?2
           AND NOT EXISTS (SELECT 1 FROM entry_log WHERE position = entry_index.position)",
        with_epochs!(
            "DELETE FROM entry_log WHERE position IN (SELECT r.position ",
            waiting_rows!("?3", "AND r.sequence <= ?2)")
        ),
    ] {
        conn.prepare_cached(statement)?.execute(params)?;
    }
    Ok(())
}

/// Deletes entries up to `to`; the actor's highest sequence stays (it is first
/// brought up to date in `actors`, since the waiting rows that held it may
/// go).
pub(crate) fn truncate(conn: &Connection, actor_id: &str, to: u64) -> JournalResult<()> {
    let highest = highest(conn, actor_id)?;
    conn.prepare_cached("UPDATE actors SET highest = ?2 WHERE actor_id = ?1 AND highest < ?2")
        .and_then(|mut s| s.execute(params![actor_id, seq(highest)]))
        .map_err(sql)?;
    delete_rows(conn, actor_id, seq(to)).map_err(sql)
}

/// Where the epochs stand, from the two ends of the epoch index.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EpochBounds {
    /// The oldest epoch holding a waiting row (`None` if no row waits).
    pub(crate) oldest_waiting: Option<i64>,
    /// The newest epoch in the log or indexed, whichever is later.
    pub(crate) newest: i64,
}

impl EpochBounds {
    /// The oldest epoch the next rows may go in: the newest, while its rows
    /// wait; once it is indexed, the one after it.
    pub(crate) fn open(self) -> i64 {
        if self.oldest_waiting.is_some() {
            self.newest
        } else {
            self.newest.saturating_add(1)
        }
    }
}

pub(crate) fn epoch_bounds(conn: &Connection) -> rusqlite::Result<EpochBounds> {
    conn.prepare_cached(concat!(
        "SELECT ",
        oldest_waiting!(),
        ", max(ifnull((SELECT max(epoch) FROM entry_log), 0), ",
        indexed_epoch!(),
        ")"
    ))?
    .query_row([], |r| {
        Ok(EpochBounds {
            oldest_waiting: r.get(0)?,
            newest: r.get(1)?,
        })
    })
}

/// Rows and entry bytes waiting to be indexed (read on opening and closing:
/// it reads every waiting row's header).
pub(crate) fn recent_waiting(conn: &Connection) -> rusqlite::Result<(u64, u64)> {
    conn.prepare_cached(concat!(
        "SELECT count(*), ifnull(sum(length(entry)), 0) FROM entry_log WHERE epoch > ",
        indexed_epoch!()
    ))?
    .query_row([], |r| Ok((unseq(r.get(0)?), unseq(r.get(1)?))))
}

/// Indexes every waiting row, in one transaction: adds the rows' keys to
/// `entry_index`, brings each actor's row in `actors` up to date, and marks
/// their epochs indexed. Returns the last indexed epoch; later rows must go
/// in a later one.
///
/// An entry is written once, into `entry_log`, whose rows and epoch index
/// both grow at their ends (the epoch index is by epoch first, and each
/// commit's rows are in the newest epoch), so a commit of appends to
/// hundreds of actors writes only the pages its rows fill. Keying each
/// entry by actor at once would write one index page per actor per commit.
/// Here each actor's index pages are written once per indexing, for all its
/// rows since the last, and only their keys move (14 bytes or so, not the
/// entry). For each actor every waiting row has a higher sequence than
/// every indexed one (appends only go to `highest + 1`, and this indexes
/// all waiting rows at once), and reads see both in one snapshot.
///
/// `own` is each actor's highest sequence among the waiting rows, when the
/// writer knows every waiting row is its own, with the `data_version` it
/// knew then: if no other connection committed since (checked inside this
/// transaction), those actors' rows in `actors` are raised one by one;
/// otherwise every waiting row is grouped by actor.
pub(crate) fn compact(
    conn: &Connection,
    own: Option<(&HashMap<String, u64>, i64)>,
) -> rusqlite::Result<i64> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let indexed = (|| {
        conn.prepare_cached(concat!(
            "INSERT INTO entry_index (actor_key, sequence, position)
             SELECT actor_key, sequence, position FROM entry_log WHERE epoch > ",
            indexed_epoch!(),
            " ORDER BY actor_key, sequence"
        ))?
        .execute([])?;
        let version: i64 = conn
            .prepare_cached("PRAGMA data_version")?
            .query_row([], |r| r.get(0))?;
        match own {
            Some((highest, known)) if known == version => {
                let mut raise = conn.prepare_cached(
                    "INSERT INTO actors (actor_id, highest, actor_key) VALUES (?1, ?2, ?3)
                     ON CONFLICT (actor_id) DO UPDATE SET highest = excluded.highest
                     WHERE excluded.highest > highest",
                )?;
                for (actor_id, &last) in highest {
                    raise.execute(params![actor_id, seq(last), actor_key(actor_id)])?;
                }
            }
            _ => {
                conn.prepare_cached(concat!(
                    "INSERT INTO actors (actor_id, highest, actor_key)
                     SELECT actor_id, max(sequence), actor_key FROM entry_log WHERE epoch > ",
                    indexed_epoch!(),
                    " GROUP BY actor_id
                     ON CONFLICT (actor_id) DO UPDATE SET highest = excluded.highest
                     WHERE excluded.highest > highest"
                ))?
                .execute([])?;
            }
        }
        conn.prepare_cached(
            "UPDATE log_state
             SET indexed_epoch = max(indexed_epoch, ifnull((SELECT max(epoch) FROM entry_log), 0))",
        )?
        .execute([])?;
        conn.prepare_cached("SELECT indexed_epoch FROM log_state")?
            .query_row([], |r| r.get(0))
    })();
    let committed = indexed.and_then(|epoch| conn.execute_batch("COMMIT").map(|()| epoch));
    if committed.is_err() {
        crate::threads::rollback_open(conn);
    }
    committed
}

pub(crate) fn delete_actor(conn: &Connection, actor_id: &str) -> JournalResult<()> {
    delete_rows(conn, actor_id, i64::MAX).map_err(sql)?;
    for statement in [
        "DELETE FROM checkpoints WHERE actor_id = ?1",
        "DELETE FROM actors WHERE actor_id = ?1",
    ] {
        conn.prepare_cached(statement)
            .and_then(|mut s| s.execute([actor_id]))
            .map_err(sql)?;
    }
    Ok(())
}

pub(crate) fn save_checkpoint(
    conn: &Connection,
    checkpoint: &Checkpoint,
    bytes: &[u8],
) -> JournalResult<()> {
    let highest = highest(conn, &checkpoint.actor_id)?;
    if checkpoint.sequence > highest {
        return Err(validate::checkpoint_beyond_highest(checkpoint, highest));
    }
    conn.prepare_cached(
        "INSERT OR REPLACE INTO checkpoints (actor_id, sequence, checkpoint) VALUES (?1, ?2, ?3)",
    )
    .and_then(|mut s| {
        s.execute(params![
            checkpoint.actor_id,
            seq(checkpoint.sequence),
            bytes
        ])
    })
    .map_err(sql)?;
    Ok(())
}

fn decode_checkpoint(actor_id: &str, sequence: i64, bytes: &[u8]) -> JournalResult<Checkpoint> {
    Checkpoint::decode_stored(actor_id, unseq(sequence), bytes)
}

/// The checkpoint at `sequence`, or the latest with `None`.
pub(crate) fn get_checkpoint(
    conn: &Connection,
    actor_id: &str,
    sequence: Option<u64>,
) -> JournalResult<Option<Checkpoint>> {
    let query =
        |mut stmt: rusqlite::CachedStatement<'_>| -> rusqlite::Result<Option<(i64, Vec<u8>)>> {
            match sequence {
                Some(s) => {
                    stmt.query_row(params![actor_id, seq(s)], |r| Ok((r.get(0)?, r.get(1)?)))
                }
                None => stmt.query_row(params![actor_id], |r| Ok((r.get(0)?, r.get(1)?))),
            }
            .optional()
        };
    let sql_text = if sequence.is_some() {
        "SELECT sequence, checkpoint FROM checkpoints WHERE actor_id = ?1 AND sequence = ?2"
    } else {
        "SELECT sequence, checkpoint FROM checkpoints WHERE actor_id = ?1 ORDER BY sequence DESC LIMIT 1"
    };
    let row = conn.prepare_cached(sql_text).and_then(query).map_err(sql)?;
    row.map(|(s, bytes)| decode_checkpoint(actor_id, s, &bytes))
        .transpose()
}

pub(crate) fn list_checkpoints(conn: &Connection, actor_id: &str) -> JournalResult<Vec<u64>> {
    let mut stmt = conn
        .prepare_cached("SELECT sequence FROM checkpoints WHERE actor_id = ?1 ORDER BY sequence")
        .map_err(sql)?;
    let sequences: Vec<i64> = stmt
        .query_map([actor_id], |r| r.get(0))
        .and_then(Iterator::collect)
        .map_err(sql)?;
    Ok(sequences.into_iter().map(unseq).collect())
}

pub(crate) fn delete_checkpoints_before(
    conn: &Connection,
    actor_id: &str,
    before: u64,
) -> JournalResult<u64> {
    let removed = conn
        .prepare_cached("DELETE FROM checkpoints WHERE actor_id = ?1 AND sequence < ?2")
        .and_then(|mut s| s.execute(params![actor_id, seq(before)]))
        .map_err(sql)?;
    Ok(removed as u64)
}

pub(crate) fn list_actors_page(
    conn: &Connection,
    cursor: Option<&str>,
    limit: usize,
) -> JournalResult<ActorPage> {
    let actors = actor_ids_after(conn, cursor, limit).map_err(sql)?;
    Ok(ActorPage::new(actors, limit))
}

/// At most `limit` actor ids after `cursor` (from the first without one), in
/// order; each page is one seek in the primary key.
pub(crate) fn actor_ids_after(
    conn: &Connection,
    cursor: Option<&str>,
    limit: usize,
) -> rusqlite::Result<Vec<String>> {
    // Two statements: `?1 IS NULL OR actor_id > ?1` would scan from the
    // first actor for every page.
    let statement = if cursor.is_some() {
        "SELECT actor_id FROM actors WHERE actor_id > ?1 ORDER BY actor_id LIMIT ?2"
    } else {
        "SELECT actor_id FROM actors ORDER BY actor_id LIMIT ?2"
    };
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    conn.prepare_cached(statement)?
        .query_map(params![cursor, limit], |r| r.get(0))?
        .collect()
}

/// Whether an actor other than `actor_id` has `key`: only then must a read
/// of indexed entries compare each log row's actor id (a tenth of a
/// replay's work), since every actor with entries has its row in `actors`.
fn key_shared(conn: &Connection, actor_id: &str, key: i64) -> rusqlite::Result<bool> {
    conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM actors WHERE actor_key = ?2 AND actor_id <> ?1)",
    )?
    .query_row(params![actor_id, key], |r| r.get(0))
}

pub(crate) fn actor_summary(conn: &Connection, actor_id: &str) -> JournalResult<ActorSummary> {
    let count = |statement: &str, params: &[&dyn rusqlite::ToSql]| -> JournalResult<u64> {
        let n: i64 = conn
            .prepare_cached(statement)
            .and_then(|mut s| s.query_row(params, |r| r.get(0)))
            .map_err(sql)?;
        Ok(unseq(n))
    };
    let key = actor_key(actor_id);
    // The indexed entries are counted in the index alone unless another
    // actor shares the key.
    let entries = if key_shared(conn, actor_id, key).map_err(sql)? {
        with_epochs!(
            "SELECT (SELECT count(*) ",
            indexed_rows!("?2", ")"),
            " + (SELECT count(*) ",
            waiting_rows!("?2", ")")
        )
    } else {
        with_epochs!(
            "SELECT (SELECT count(*) FROM entry_index WHERE actor_key = ?2)",
            " + (SELECT count(*) ",
            waiting_rows!("?2", ")")
        )
    };
    Ok(ActorSummary {
        highest_sequence: highest(conn, actor_id)?,
        entries: count(entries, params![actor_id, key])?,
        checkpoints: count(
            "SELECT count(*) FROM checkpoints WHERE actor_id = ?1",
            params![actor_id],
        )?,
    })
}

pub(crate) fn stats(conn: &Connection) -> JournalResult<JournalStats> {
    conn.query_row(
        "SELECT (SELECT count(*) FROM actors), (SELECT count(*) FROM entry_log), (SELECT count(*) FROM checkpoints)",
        [],
        |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?)),
    )
    .map(|(actors, entries, checkpoints)| JournalStats {
        actors: unseq(actors),
        entries: unseq(entries),
        checkpoints: unseq(checkpoints),
    })
    .map_err(sql)
}

/// A feed row: `(position, actor_id, sequence, entry bytes)`.
pub(crate) type FeedRow = (i64, String, i64, Vec<u8>);

/// Up to `max` rows of the feed after `after` (positions), all actors' or
/// those tagged `tag`.
pub(crate) fn feed_page(
    conn: &Connection,
    tag: Option<&str>,
    after: i64,
    max: usize,
) -> JournalResult<Vec<FeedRow>> {
    let max = i64::try_from(max).unwrap_or(i64::MAX);
    let map = |r: &rusqlite::Row<'_>| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?));
    let rows = match tag {
        None => conn
            .prepare_cached(
                "SELECT position, actor_id, sequence, entry FROM entry_log
                 WHERE position > ?1 ORDER BY position LIMIT ?2",
            )
            .and_then(|mut s| s.query_map(params![after, max], map)?.collect()),
        Some(tag) => conn
            .prepare_cached(
                "SELECT l.position, l.actor_id, l.sequence, l.entry
                 FROM entry_tags AS t JOIN entry_log AS l ON l.position = t.position
                 WHERE t.tag = ?1 AND t.position > ?2 ORDER BY t.position LIMIT ?3",
            )
            .and_then(|mut s| s.query_map(params![tag, after, max], map)?.collect()),
    };
    rows.map_err(sql)
}

/// Decodes a feed row's entry.
pub(crate) fn decode_feed_entry(
    actor_id: &str,
    sequence: i64,
    bytes: &[u8],
) -> JournalResult<JournalEntry> {
    decode_entry(actor_id, sequence, bytes)
}

#[cfg(test)]
mod tests {
    use super::{actor_key, RawPage};

    #[test]
    fn a_page_checks_and_drops_its_last_rows() {
        let mut page = RawPage::default();
        for (sequence, bytes) in [(4, &b"ab"[..]), (5, b"c"), (9, b"def"), (7, b"g")] {
            page.buffer.extend_from_slice(bytes);
            page.rows.push((sequence, page.buffer.len()));
        }
        // 9 then 7: a page read from index 0, 1 or 3 on is out of order;
        // from index 4 on it has no new rows.
        assert!(!page.ascending_from(0) && !page.ascending_from(1) && !page.ascending_from(3));
        assert!(page.ascending_from(4));
        page.truncate(3);
        assert!(page.ascending_from(0));
        assert_eq!((page.len(), page.buffer.as_slice()), (3, &b"abcdef"[..]));
        page.truncate(0);
        assert_eq!((page.len(), page.buffer.len()), (0, 0));
        assert!(page.ascending_from(0));
    }

    #[test]
    fn actor_key_is_the_documented_hash() {
        // FNV-1a 32 of the UTF-8 bytes, shifted right by one: files written
        // with these keys must keep being found.
        assert_eq!(actor_key(""), 1_083_068_130);
        assert_eq!(actor_key("a"), 1_913_001_110);
        assert_eq!(actor_key("order-17"), 1_779_966_551);
        // Two actors sharing a key (the faults test
        // `actors_sharing_a_key_stay_apart` relies on it).
        assert_eq!(actor_key("actor-81485"), actor_key("actor-241730"));
        assert!((0..=i64::from(i32::MAX)).contains(&actor_key("é🦀")));
    }
}
