//! The due-timer index ([`TimerStore`]) in the `timers` table of the
//! storage's schema (migration version 3): one row per timer, found by due
//! time through an index, claimed with `FOR UPDATE SKIP LOCKED` so that
//! concurrent hosts never wait on each other's rows nor get the same one.

use std::time::Duration;

use async_trait::async_trait;
use journal_core::timers::{lease_until, validate_timer};
use journal_core::{ClaimedTimer, JournalError, JournalResult, TimerRecord, TimerStore};
use tokio_postgres::Row;

use crate::error::pg_error;
use crate::{seq, unseq, PostgresJournalStorage, BACKEND};

/// The timer statements, with the schema name in them.
pub(crate) struct TimerSql {
    schedule: String,
    cancel: String,
    claim: String,
    complete: String,
    next_due: String,
    get: String,
}

impl TimerSql {
    pub(crate) fn new(s: &str) -> Self {
        TimerSql {
            // Replacing a timer also drops any claim on it.
            schedule: format!(
                "INSERT INTO {s}.timers (timer_id, owner_actor, target_actor, target_type, due_at, payload)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (timer_id) DO UPDATE SET
                     owner_actor = excluded.owner_actor, target_actor = excluded.target_actor,
                     target_type = excluded.target_type, due_at = excluded.due_at,
                     payload = excluded.payload, claim = NULL, lease_until = NULL"
            ),
            // A timer under an unexpired lease is being fired: left alone.
            cancel: format!(
                "DELETE FROM {s}.timers
                 WHERE timer_id = $1 AND (lease_until IS NULL OR lease_until <= $2)"
            ),
            // One statement: the subquery picks the earliest due rows that
            // nobody leases, locking each and skipping rows another claim
            // holds locked; a row claimed and committed meanwhile is
            // re-checked against the condition under its lock (READ
            // COMMITTED), so two claims never both get one timer.
            claim: format!(
                "UPDATE {s}.timers SET claim = $2, lease_until = $3
                 WHERE timer_id IN (
                     SELECT timer_id FROM {s}.timers
                     WHERE due_at <= $1 AND (lease_until IS NULL OR lease_until <= $1)
                     ORDER BY due_at, timer_id
                     LIMIT $4
                     FOR UPDATE SKIP LOCKED)
                 RETURNING timer_id, owner_actor, target_actor, target_type, due_at, payload"
            ),
            complete: format!("DELETE FROM {s}.timers WHERE timer_id = $1 AND claim = $2"),
            // Each half is one index scan: the earliest due among timers
            // not leased (skipping the few leased ones), the earliest end
            // of an unexpired lease (a partial index of leased rows).
            next_due: format!(
                "SELECT least(
                     (SELECT min(due_at) FROM {s}.timers
                      WHERE lease_until IS NULL OR lease_until <= $1),
                     (SELECT min(lease_until) FROM {s}.timers WHERE lease_until > $1))"
            ),
            get: format!(
                "SELECT timer_id, owner_actor, target_actor, target_type, due_at, payload
                 FROM {s}.timers WHERE timer_id = $1"
            ),
        }
    }
}

/// A text column stored as `bytea` (so any Rust string, NUL included,
/// round-trips), read back as UTF-8.
fn text(row: &Row, column: usize, what: &str) -> JournalResult<String> {
    let bytes: Vec<u8> = row.try_get(column).map_err(pg_error)?;
    String::from_utf8(bytes)
        .map_err(|e| JournalError::storage(BACKEND, format!("a timer's {what} is not UTF-8: {e}")))
}

/// A row of `timer_id, owner_actor, target_actor, target_type, due_at,
/// payload`.
fn record(row: &Row) -> JournalResult<TimerRecord> {
    Ok(TimerRecord {
        timer_id: text(row, 0, "id")?,
        owner_actor: text(row, 1, "owner actor")?,
        target_actor: text(row, 2, "target actor")?,
        target_type: text(row, 3, "target type")?,
        due_at_ms: unseq(row.try_get(4).map_err(pg_error)?),
        payload: row.try_get(5).map_err(pg_error)?,
    })
}

/// Times are `BIGINT` milliseconds. Due times are validated to at most
/// `MAX_SEQUENCE` (2^53 - 1); a `now` beyond `i64::MAX` is stored and
/// compared as `i64::MAX`, which compares the same against every due time,
/// and so is a lease end beyond it (a lease taken that late ends at
/// `i64::MAX`; the claim still reports [`lease_until`]'s value).
#[async_trait]
impl TimerStore for PostgresJournalStorage {
    fn max_timer_payload(&self) -> usize {
        self.limits.max_entry_bytes
    }

    #[tracing::instrument(level = "debug", skip_all, fields(backend = BACKEND, actor_id = %timer.owner_actor, target_actor = %timer.target_actor, timer_id = %timer.timer_id, due_at_ms = timer.due_at_ms))]
    async fn schedule_timer(&self, timer: &TimerRecord) -> JournalResult<()> {
        validate_timer(timer, self.max_timer_payload())?;
        self.execute(
            &self.sql.timers.schedule,
            &[
                &timer.timer_id.as_bytes(),
                &timer.owner_actor.as_bytes(),
                &timer.target_actor.as_bytes(),
                &timer.target_type.as_bytes(),
                &seq(timer.due_at_ms),
                &timer.payload,
            ],
        )
        .await
        .map(drop)
    }

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn cancel_timer(&self, timer_id: &str, now_ms: u64) -> JournalResult<bool> {
        let removed = self
            .execute(
                &self.sql.timers.cancel,
                &[&timer_id.as_bytes(), &seq(now_ms)],
            )
            .await?;
        Ok(removed > 0)
    }

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND, claimed))]
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
        let limit = i64::try_from(max).unwrap_or(i64::MAX);
        let rows = self
            .query(
                &self.sql.timers.claim,
                &[&seq(now_ms), &claim.as_bytes(), &seq(until), &limit],
            )
            .await?;
        let mut claimed = rows
            .iter()
            .map(|row| {
                Ok(ClaimedTimer {
                    timer: record(row)?,
                    claim: claim.to_owned(),
                    lease_until_ms: until,
                })
            })
            .collect::<JournalResult<Vec<_>>>()?;
        // RETURNING follows no order: earliest due first, as claimed.
        claimed.sort_by(|a, b| {
            (a.timer.due_at_ms, &a.timer.timer_id).cmp(&(b.timer.due_at_ms, &b.timer.timer_id))
        });
        tracing::Span::current().record("claimed", claimed.len());
        Ok(claimed)
    }

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn complete_timer(&self, timer_id: &str, claim: &str) -> JournalResult<bool> {
        let removed = self
            .execute(
                &self.sql.timers.complete,
                &[&timer_id.as_bytes(), &claim.as_bytes()],
            )
            .await?;
        Ok(removed > 0)
    }

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn next_due(&self, now_ms: u64) -> JournalResult<Option<u64>> {
        let rows = self
            .query(&self.sql.timers.next_due, &[&seq(now_ms)])
            .await?;
        let row = rows
            .first()
            .ok_or_else(|| JournalError::storage(BACKEND, "no next-due row"))?;
        let next: Option<i64> = row.try_get(0).map_err(pg_error)?;
        Ok(next.map(unseq))
    }

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn get_timer(&self, timer_id: &str) -> JournalResult<Option<TimerRecord>> {
        let rows = self
            .query(&self.sql.timers.get, &[&timer_id.as_bytes()])
            .await?;
        rows.first().map(record).transpose()
    }
}
