//! The SQL of each operation, run on a connection thread.

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
}

/// A sequence as SQLite stores it (sequences beyond `i64::MAX` cannot be
/// stored, so bounds saturate).
pub(crate) fn seq(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn unseq(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// The key `recent` is indexed by: FNV-1a (32 bits) of the actor id's
/// UTF-8 bytes, shifted right by one so that SQLite stores it in 4 bytes.
/// It is part of the file format: changing it needs a schema version.
/// Different actors may share a key, so every query on `recent` also
/// compares `actor_id`.
pub(crate) fn actor_key(actor_id: &str) -> i64 {
    let hash = actor_id.bytes().fold(0x811c_9dc5_u32, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    });
    i64::from(hash >> 1)
}

pub(crate) fn highest(conn: &Connection, actor_id: &str) -> JournalResult<u64> {
    stored_highest(conn, actor_id).map_err(sql)
}

pub(crate) fn stored_highest(conn: &Connection, actor_id: &str) -> rusqlite::Result<u64> {
    let highest: Option<i64> = conn
        .prepare_cached("SELECT highest FROM actors WHERE actor_id = ?1")?
        .query_row([actor_id], |r| r.get(0))
        .optional()?;
    Ok(highest.map_or(0, unseq))
}

/// Appends a validated batch of one actor (contract rules 1, 2, 5).
pub(crate) fn append(conn: &Connection, actor_id: &str, rows: &[Row]) -> JournalResult<()> {
    let highest = highest(conn, actor_id)?;
    append_checked(conn, actor_id, rows, highest).map_err(sql)?
}

/// Appends a validated batch of one actor whose highest sequence is
/// `highest`. The outer error is SQLite's (the statement failed); the inner
/// result is the caller's (a sequence conflict writes nothing).
pub(crate) fn append_checked(
    conn: &Connection,
    actor_id: &str,
    rows: &[Row],
    highest: u64,
) -> rusqlite::Result<JournalResult<()>> {
    let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
        return Ok(Ok(()));
    };
    match AppendCheck::of(first.sequence, highest) {
        AppendCheck::Write => {
            let mut insert = conn.prepare_cached(
                "INSERT INTO recent (actor_key, actor_id, sequence, entry_id, entry) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            let key = actor_key(actor_id);
            for row in rows {
                insert.execute(params![key, actor_id, seq(row.sequence), row.id, row.bytes])?;
            }
            conn.prepare_cached(
                "INSERT INTO actors (actor_id, highest) VALUES (?1, ?2)
                 ON CONFLICT (actor_id) DO UPDATE SET highest = excluded.highest",
            )?
            .execute(params![actor_id, seq(last.sequence)])?;
            Ok(Ok(()))
        }
        AppendCheck::CompareStored => {
            let mut stmt = conn.prepare_cached(
                "SELECT sequence, entry_id FROM entries WHERE actor_id = ?1 AND sequence BETWEEN ?2 AND ?3
                 UNION ALL
                 SELECT sequence, entry_id FROM recent WHERE actor_key = ?4 AND actor_id = ?1 AND sequence BETWEEN ?2 AND ?3
                 ORDER BY 1",
            )?;
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
                Ok(())
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
/// (emptied first, its buffers reused).
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
    let limit = i64::try_from(max).unwrap_or(i64::MAX);
    let mut stmt = conn
        .prepare_cached(
            "SELECT sequence, entry FROM entries WHERE actor_id = ?1 AND sequence BETWEEN ?2 AND ?3
             UNION ALL
             SELECT sequence, entry FROM recent WHERE actor_key = ?5 AND actor_id = ?1 AND sequence BETWEEN ?2 AND ?3
             ORDER BY 1 LIMIT ?4",
        )
        .map_err(sql)?;
    let mut rows = stmt
        .query(params![
            actor_id,
            seq(from),
            seq(to),
            limit,
            actor_key(actor_id)
        ])
        .map_err(sql)?;
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
    Ok(page)
}

pub(crate) fn truncate(conn: &Connection, actor_id: &str, to: u64) -> JournalResult<()> {
    conn.prepare_cached("DELETE FROM entries WHERE actor_id = ?1 AND sequence <= ?2")
        .and_then(|mut s| s.execute(params![actor_id, seq(to)]))
        .map_err(sql)?;
    conn.prepare_cached(
        "DELETE FROM recent WHERE actor_key = ?3 AND actor_id = ?1 AND sequence <= ?2",
    )
    .and_then(|mut s| s.execute(params![actor_id, seq(to), actor_key(actor_id)]))
    .map_err(sql)?;
    Ok(())
}

/// Rows and entry bytes waiting in `recent` (the rows are an estimate:
/// rowids count up from 1 after each compaction, and a truncation does not
/// lower them).
pub(crate) fn recent_waiting(conn: &Connection) -> rusqlite::Result<(u64, u64)> {
    conn.prepare_cached("SELECT ifnull(max(rowid), 0), ifnull(sum(length(entry)), 0) FROM recent")?
        .query_row([], |r| Ok((unseq(r.get(0)?), unseq(r.get(1)?))))
}

/// Moves every row of `recent` into `entries`, in key order, in one
/// transaction.
///
/// Appends insert into `recent`: its rows lie in insertion order and its
/// index stays small, so a commit of appends to hundreds of actors writes a
/// few dozen pages. Inserting straight into `entries` would write one index
/// page per actor per commit. Here each actor's page is written once per
/// compaction, for all its rows since the last one. For each actor every
/// row in `recent` has a higher sequence than every row in `entries`
/// (appends only go to `highest + 1`, and this moves all rows at once), and
/// reads see the union of both tables in one statement, so one snapshot.
pub(crate) fn compact(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let moved = conn
        .prepare_cached(
            "INSERT INTO entries (actor_id, sequence, entry_id, entry)
             SELECT actor_id, sequence, entry_id, entry FROM recent ORDER BY actor_id, sequence",
        )
        .and_then(|mut s| s.execute([]))
        .and_then(|_| conn.prepare_cached("DELETE FROM recent")?.execute([]));
    match moved {
        Ok(_) => conn.execute_batch("COMMIT"),
        Err(e) => {
            crate::threads::rollback_open(conn);
            Err(e)
        }
    }
}

pub(crate) fn delete_actor(conn: &Connection, actor_id: &str) -> JournalResult<()> {
    conn.prepare_cached("DELETE FROM recent WHERE actor_key = ?2 AND actor_id = ?1")
        .and_then(|mut s| s.execute(params![actor_id, actor_key(actor_id)]))
        .map_err(sql)?;
    for statement in [
        "DELETE FROM entries WHERE actor_id = ?1",
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
    let limit_sql = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut stmt = conn
        .prepare_cached("SELECT actor_id FROM actors WHERE ?1 IS NULL OR actor_id > ?1 ORDER BY actor_id LIMIT ?2")
        .map_err(sql)?;
    let actors: Vec<String> = stmt
        .query_map(params![cursor, limit_sql], |r| r.get(0))
        .and_then(Iterator::collect)
        .map_err(sql)?;
    Ok(ActorPage::new(actors, limit))
}

pub(crate) fn actor_summary(conn: &Connection, actor_id: &str) -> JournalResult<ActorSummary> {
    let count = |statement: &str, params: &[&dyn rusqlite::ToSql]| -> JournalResult<u64> {
        let n: i64 = conn
            .prepare_cached(statement)
            .and_then(|mut s| s.query_row(params, |r| r.get(0)))
            .map_err(sql)?;
        Ok(unseq(n))
    };
    Ok(ActorSummary {
        highest_sequence: highest(conn, actor_id)?,
        // One statement, so one snapshot: a compaction moves rows between
        // the two tables.
        entries: count(
            "SELECT (SELECT count(*) FROM entries WHERE actor_id = ?1)
                  + (SELECT count(*) FROM recent WHERE actor_key = ?2 AND actor_id = ?1)",
            params![actor_id, actor_key(actor_id)],
        )?,
        checkpoints: count(
            "SELECT count(*) FROM checkpoints WHERE actor_id = ?1",
            params![actor_id],
        )?,
    })
}

pub(crate) fn stats(conn: &Connection) -> JournalResult<JournalStats> {
    conn.query_row(
        "SELECT (SELECT count(*) FROM actors), (SELECT count(*) FROM entries) + (SELECT count(*) FROM recent), (SELECT count(*) FROM checkpoints)",
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

#[cfg(test)]
mod tests {
    use super::actor_key;

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
