//! The due-timer index (contract rules 23 and 24): the `timers` table,
//! indexed by due time, in the journal's file.
//!
//! Changes go through the writer, each in its savepoint of the writer's
//! group transaction (`BEGIN IMMEDIATE`), so a claim's read of the due
//! timers and its update of their leases are one step, also against other
//! processes on the file. Lookups go to the readers.

use std::time::Duration;

use async_trait::async_trait;
use journal_core::timers::{lease_until, validate_timer};
use journal_core::{ClaimedTimer, JournalResult, TimerRecord, TimerStore};
use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::ops::seq;
use crate::threads::sql;
use crate::{SqliteJournalStorage, BACKEND};

/// The claim: the earliest due timers free at `?1`, at most `?2`. It walks
/// `timers_by_due` from the earliest due time and reads `lease_until` from
/// the index itself, so timers under a running lease (at most those in
/// flight) are skipped without reading their rows, and only the rows it
/// returns are read.
pub(crate) const CLAIMABLE: &str =
    "SELECT timer_id, owner_actor, target_actor, target_type, due_at, payload FROM timers
     WHERE due_at <= ?1 AND (lease_until IS NULL OR lease_until <= ?1)
     ORDER BY due_at LIMIT ?2";

/// The earliest due time of a timer free at `?1`, and the earliest end of
/// a lease running at `?1` (through the partial index `timers_by_lease`).
pub(crate) const NEXT_DUE: &str = "SELECT (SELECT due_at FROM timers
             WHERE lease_until IS NULL OR lease_until <= ?1 ORDER BY due_at LIMIT 1),
            (SELECT min(lease_until) FROM timers WHERE lease_until > ?1)";

/// A bound or a time as SQLite stores it (beyond `i64::MAX` it saturates:
/// no stored due time is that late, `MAX_SEQUENCE` being the limit).
fn ms(v: u64) -> i64 {
    seq(v)
}

fn unms(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn record(row: &Row<'_>) -> rusqlite::Result<TimerRecord> {
    Ok(TimerRecord {
        timer_id: row.get(0)?,
        owner_actor: row.get(1)?,
        target_actor: row.get(2)?,
        target_type: row.get(3)?,
        due_at_ms: unms(row.get(4)?),
        payload: row.get(5)?,
    })
}

/// Adds or replaces a timer; a replaced timer loses its claim.
fn schedule(conn: &Connection, timer: &TimerRecord) -> JournalResult<()> {
    conn.prepare_cached(
        "INSERT INTO timers (timer_id, owner_actor, target_actor, target_type, due_at, payload)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (timer_id) DO UPDATE SET
             owner_actor = excluded.owner_actor, target_actor = excluded.target_actor,
             target_type = excluded.target_type, due_at = excluded.due_at,
             payload = excluded.payload, claim = NULL, lease_until = NULL",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            timer.timer_id,
            timer.owner_actor,
            timer.target_actor,
            timer.target_type,
            ms(timer.due_at_ms),
            timer.payload
        ])
    })
    .map(drop)
    .map_err(sql)
}

fn cancel(conn: &Connection, timer_id: &str, now_ms: u64) -> JournalResult<bool> {
    conn.prepare_cached(
        "DELETE FROM timers
         WHERE timer_id = ?1 AND (lease_until IS NULL OR lease_until <= ?2)",
    )
    .and_then(|mut stmt| stmt.execute(params![timer_id, ms(now_ms)]))
    .map(|deleted| deleted > 0)
    .map_err(sql)
}

fn claim_due(
    conn: &Connection,
    now_ms: u64,
    until: u64,
    token: &str,
    max: usize,
) -> JournalResult<Vec<ClaimedTimer>> {
    let due: Vec<TimerRecord> = conn
        .prepare_cached(CLAIMABLE)
        .and_then(|mut stmt| {
            stmt.query_map(
                params![ms(now_ms), i64::try_from(max).unwrap_or(i64::MAX)],
                record,
            )?
            .collect()
        })
        .map_err(sql)?;
    let mut lease = conn
        .prepare_cached("UPDATE timers SET claim = ?2, lease_until = ?3 WHERE timer_id = ?1")
        .map_err(sql)?;
    due.into_iter()
        .map(|timer| {
            lease
                .execute(params![timer.timer_id, token, ms(until)])
                .map_err(sql)?;
            Ok(ClaimedTimer {
                timer,
                claim: token.to_owned(),
                lease_until_ms: until,
            })
        })
        .collect()
}

fn complete(conn: &Connection, timer_id: &str, token: &str) -> JournalResult<bool> {
    conn.prepare_cached("DELETE FROM timers WHERE timer_id = ?1 AND claim = ?2")
        .and_then(|mut stmt| stmt.execute(params![timer_id, token]))
        .map(|deleted| deleted > 0)
        .map_err(sql)
}

fn next_due(conn: &Connection, now_ms: u64) -> JournalResult<Option<u64>> {
    let (free, leased): (Option<i64>, Option<i64>) = conn
        .prepare_cached(NEXT_DUE)
        .and_then(|mut stmt| stmt.query_row([ms(now_ms)], |r| Ok((r.get(0)?, r.get(1)?))))
        .map_err(sql)?;
    Ok(free.into_iter().chain(leased).min().map(unms))
}

fn get(conn: &Connection, timer_id: &str) -> JournalResult<Option<TimerRecord>> {
    conn.prepare_cached(
        "SELECT timer_id, owner_actor, target_actor, target_type, due_at, payload FROM timers
         WHERE timer_id = ?1",
    )
    .and_then(|mut stmt| stmt.query_row([timer_id], record).optional())
    .map_err(sql)
}

/// The due-timer index in the journal's file (schema version 6, table
/// `timers`).
#[async_trait]
impl TimerStore for SqliteJournalStorage {
    #[tracing::instrument(level = "debug", skip_all, fields(backend = BACKEND, actor_id = %timer.owner_actor, target_actor = %timer.target_actor, timer_id = %timer.timer_id, due_at_ms = timer.due_at_ms))]
    async fn schedule_timer(&self, timer: &TimerRecord) -> JournalResult<()> {
        validate_timer(timer, self.max_timer_payload())?;
        let timer = timer.clone();
        self.write(move |conn| schedule(conn, &timer)).await
    }

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn cancel_timer(&self, timer_id: &str, now_ms: u64) -> JournalResult<bool> {
        let timer_id = timer_id.to_owned();
        self.write(move |conn| cancel(conn, &timer_id, now_ms))
            .await
    }

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn claim_due_timers(
        &self,
        now_ms: u64,
        lease: Duration,
        claim: &str,
        max: usize,
    ) -> JournalResult<Vec<ClaimedTimer>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let until = lease_until(now_ms, lease);
        let token = claim.to_owned();
        self.write(move |conn| claim_due(conn, now_ms, until, &token, max))
            .await
    }

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn complete_timer(&self, timer_id: &str, claim: &str) -> JournalResult<bool> {
        let (timer_id, token) = (timer_id.to_owned(), claim.to_owned());
        self.write(move |conn| complete(conn, &timer_id, &token))
            .await
    }

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn next_due(&self, now_ms: u64) -> JournalResult<Option<u64>> {
        self.read(move |conn| next_due(conn, now_ms)).await
    }

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn get_timer(&self, timer_id: &str) -> JournalResult<Option<TimerRecord>> {
        let timer_id = timer_id.to_owned();
        self.read(move |conn| get(conn, &timer_id)).await
    }

    fn max_timer_payload(&self) -> usize {
        self.inner.limits.max_entry_bytes
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// Lines of SQLite's plan for `statement`.
    fn plan(conn: &Connection, statement: &str) -> Vec<String> {
        let mut stmt = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {statement}"))
            .expect("explain");
        let values = [1_i64, 10];
        let params = &values[..stmt.parameter_count()];
        stmt.query_map(rusqlite::params_from_iter(params), |r| {
            r.get::<_, String>(3)
        })
        .and_then(Iterator::collect)
        .expect("plan")
    }

    /// Rule 24: due timers are found through the index by due time, in its
    /// order (no scan of the table, no sort), and the next lease to end
    /// through the index of leases.
    #[test]
    fn due_timers_are_found_through_the_index() {
        let conn = Connection::open_in_memory().expect("sqlite");
        crate::schema::prepare_writer(
            &conn,
            Path::new(":memory:"),
            &crate::SqliteOptions::default(),
        )
        .expect("schema");
        for statement in [CLAIMABLE, NEXT_DUE] {
            let lines = plan(&conn, statement);
            let text = lines.join("\n");
            assert!(
                !text.contains("SCAN timers\n") && !text.ends_with("SCAN timers"),
                "{statement}\nscans the table:\n{text}"
            );
            assert!(!text.contains("TEMP B-TREE"), "{statement}\nsorts:\n{text}");
            assert!(
                text.contains("timers_by_due"),
                "{statement}\ndoes not use timers_by_due:\n{text}"
            );
        }
        let text = plan(&conn, NEXT_DUE).join("\n");
        assert!(
            text.contains("timers_by_lease"),
            "the next lease's end is not read from timers_by_lease:\n{text}"
        );
    }
}
