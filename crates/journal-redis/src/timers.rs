//! The due-timer index ([`TimerStore`]), sharded over [`TIMER_SHARDS`]
//! shards so that no one key (one slot, one node of a cluster) carries
//! every timer. Each shard's keys share a hash tag; every write is one
//! script on one shard. The layout and the order claims keep across shards
//! are in the crate docs.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use journal_core::timers::{lease_until, validate_timer};
use journal_core::validate::MAX_SEQUENCE;
use journal_core::{ClaimedTimer, JournalError, JournalResult, TimerRecord, TimerStore};
use redis::Value;

use crate::error::{bad_reply, BACKEND};
use crate::keys::{timer_shard_of, TIMER_SHARDS};
use crate::scripts::Script;
use crate::{as_i64, into_array, RedisJournalStorage};

/// Timers a claim takes in one round (one read and one script per shard):
/// a larger `max` is claimed round after round, so that no script runs
/// long on the server.
pub const CLAIM_ROUND: usize = 1_000;

/// Times as the scripts compare them: sorted-set scores and Lua numbers
/// are doubles, exact up to 2^53. Due times are validated to at most
/// `MAX_SEQUENCE` = 2^53 - 1; a `now` beyond 2^53 is taken as 2^53, which
/// compares the same against every due time, and so is a lease end beyond
/// it (a lease taken that late ends at 2^53 ms, in the year 287,396; the
/// claim still reports [`lease_until`]'s value).
const TIME_LIMIT: u64 = MAX_SEQUENCE + 1;

/// The first byte of an encoded record: the encoding's version.
const RECORD_V1: u8 = 1;

/// A timer's record as its shard's hash stores it (the id is the hash
/// field): version byte 1; owner actor, target actor and target type, each
/// a big-endian `u32` length and the UTF-8 bytes; the due time as a
/// big-endian `u64`; the payload, to the end.
pub fn encode(timer: &TimerRecord) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        1 + 12
            + timer.owner_actor.len()
            + timer.target_actor.len()
            + timer.target_type.len()
            + 8
            + timer.payload.len(),
    );
    out.push(RECORD_V1);
    for text in [&timer.owner_actor, &timer.target_actor, &timer.target_type] {
        // Validated to at most 255 bytes.
        out.extend_from_slice(&u32::try_from(text.len()).unwrap_or(u32::MAX).to_be_bytes());
        out.extend_from_slice(text.as_bytes());
    }
    out.extend_from_slice(&timer.due_at_ms.to_be_bytes());
    out.extend_from_slice(&timer.payload);
    out
}

/// Reads a record written by [`encode`]; `None` for bytes it did not write.
pub fn decode(timer_id: &str, bytes: &[u8]) -> Option<TimerRecord> {
    let (&version, mut rest) = bytes.split_first()?;
    if version != RECORD_V1 {
        return None;
    }
    let mut text = || -> Option<String> {
        let (len, tail) = rest.split_first_chunk::<4>()?;
        let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
        let (text, tail) = (tail.get(..len)?, tail.get(len..)?);
        rest = tail;
        String::from_utf8(text.to_vec()).ok()
    };
    let (owner_actor, target_actor, target_type) = (text()?, text()?, text()?);
    let (due, payload) = rest.split_first_chunk::<8>()?;
    Some(TimerRecord {
        timer_id: timer_id.to_owned(),
        owner_actor,
        target_actor,
        target_type,
        due_at_ms: u64::from_be_bytes(*due),
        payload: payload.to_vec(),
    })
}

fn corrupt(timer_id: &str) -> JournalError {
    JournalError::storage(
        BACKEND,
        format!("the stored record of timer {timer_id:?} does not decode"),
    )
}

fn bytes_of(value: Value, what: &str) -> JournalResult<Vec<u8>> {
    match value {
        Value::BulkString(bytes) => Ok(bytes),
        Value::SimpleString(text) => Ok(text.into_bytes()),
        _ => Err(bad_reply(what)),
    }
}

fn text_of(value: Value, what: &str) -> JournalResult<String> {
    String::from_utf8(bytes_of(value, what)?).map_err(|_| bad_reply(what))
}

/// A time as the scripts take it.
fn time_arg(ms: u64) -> Vec<u8> {
    ms.min(TIME_LIMIT).to_string().into_bytes()
}

/// A claimable timer a shard reported, before it is claimed: its due
/// time and its shard (a shard claims its own timers in due order, so
/// their ids are not needed to say which).
struct Candidate {
    due: u64,
    shard: u16,
}

impl RedisJournalStorage {
    /// The due times of up to `max` claimable timers of one shard,
    /// earliest first.
    async fn peek_shard(&self, shard: u16, now: u64, max: usize) -> JournalResult<Vec<Candidate>> {
        let keys = self.inner.keys.timer_shard(shard);
        let reply = self
            .script(
                Script::TimerPeek,
                &[keys.due(), keys.leases()],
                &[time_arg(now), max.to_string().into_bytes()],
            )
            .await?;
        into_array(reply)
            .iter()
            .map(|due| {
                as_i64(due)
                    .and_then(|due| u64::try_from(due).ok())
                    .map(|due| Candidate { due, shard })
                    .ok_or_else(|| bad_reply("timer due time"))
            })
            .collect()
    }

    /// Claims up to `max` timers of one shard.
    async fn claim_shard(
        &self,
        shard: u16,
        now: u64,
        until: u64,
        claim: &str,
        max: usize,
    ) -> JournalResult<Vec<ClaimedTimer>> {
        let keys = self.inner.keys.timer_shard(shard);
        let reply = self
            .write_script(
                Script::TimerClaim,
                keys.slot(),
                &keys.all(),
                &[
                    time_arg(now),
                    max.to_string().into_bytes(),
                    time_arg(until),
                    claim.as_bytes().to_vec(),
                ],
            )
            .await?;
        let mut items = into_array(reply).into_iter();
        let mut out = Vec::new();
        while let (Some(id), Some(record)) = (items.next(), items.next()) {
            let id = text_of(id, "timer id")?;
            let record = bytes_of(record, "timer record")?;
            let timer = decode(&id, &record).ok_or_else(|| corrupt(&id))?;
            out.push(ClaimedTimer {
                timer,
                claim: claim.to_owned(),
                lease_until_ms: until,
            });
        }
        Ok(out)
    }

    /// One round of a claim: every shard's earliest `want` claimable
    /// timers, merged; the `want` earliest of all claimed, each shard
    /// asked for as many as it contributed. Returns what was claimed and
    /// how many claimable timers the shards reported.
    async fn claim_round(
        &self,
        now: u64,
        until: u64,
        claim: &str,
        want: usize,
    ) -> JournalResult<(Vec<ClaimedTimer>, usize)> {
        let peeks = futures::future::try_join_all(
            (0..TIMER_SHARDS).map(|shard| self.peek_shard(shard, now, want)),
        )
        .await?;
        let mut candidates: Vec<Candidate> = peeks.into_iter().flatten().collect();
        let reported = candidates.len();
        candidates.sort_by_key(|c| (c.due, c.shard));
        candidates.truncate(want);
        let mut per_shard: HashMap<u16, usize> = HashMap::new();
        for candidate in &candidates {
            *per_shard.entry(candidate.shard).or_default() += 1;
        }
        let claimed = futures::future::try_join_all(
            per_shard
                .into_iter()
                .map(|(shard, n)| self.claim_shard(shard, now, until, claim, n)),
        )
        .await?;
        Ok((claimed.into_iter().flatten().collect(), reported))
    }
}

/// Times are milliseconds, compared as doubles by the scripts: exact, as
/// due times are at most 2^53 - 1, and `now` and lease ends are capped at
/// 2^53 (see the crate docs).
#[async_trait]
impl TimerStore for RedisJournalStorage {
    fn max_timer_payload(&self) -> usize {
        self.inner.limits.max_entry_bytes
    }

    #[tracing::instrument(level = "debug", skip_all, fields(backend = BACKEND, actor_id = %timer.owner_actor, target_actor = %timer.target_actor, timer_id = %timer.timer_id, due_at_ms = timer.due_at_ms))]
    async fn schedule_timer(&self, timer: &TimerRecord) -> JournalResult<()> {
        validate_timer(timer, self.max_timer_payload())?;
        let keys = self.inner.keys.timer_shard(timer_shard_of(&timer.timer_id));
        self.write_script(
            Script::TimerSchedule,
            keys.slot(),
            &keys.all(),
            &[
                timer.timer_id.as_bytes().to_vec(),
                time_arg(timer.due_at_ms),
                encode(timer),
            ],
        )
        .await?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn cancel_timer(&self, timer_id: &str, now_ms: u64) -> JournalResult<bool> {
        let keys = self.inner.keys.timer_shard(timer_shard_of(timer_id));
        let reply = self
            .write_script(
                Script::TimerCancel,
                keys.slot(),
                &keys.all(),
                &[timer_id.as_bytes().to_vec(), time_arg(now_ms)],
            )
            .await?;
        Ok(as_i64(&reply).ok_or_else(|| bad_reply("cancel timer"))? == 1)
    }

    /// Claims round by round, at most [`CLAIM_ROUND`] timers a round; see
    /// the crate docs for the order across shards.
    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND, claimed))]
    async fn claim_due_timers(
        &self,
        now_ms: u64,
        lease: Duration,
        claim: &str,
        max: usize,
    ) -> JournalResult<Vec<ClaimedTimer>> {
        let until = lease_until(now_ms, lease);
        let mut claimed: Vec<ClaimedTimer> = Vec::new();
        while claimed.len() < max {
            let want = (max - claimed.len()).min(CLAIM_ROUND);
            let (got, reported) = self.claim_round(now_ms, until, claim, want).await?;
            let progress = !got.is_empty();
            claimed.extend(got);
            // Every claimable timer was in this round, or other hosts took
            // what this one meant to: stop rather than spin.
            if reported <= want || !progress {
                break;
            }
        }
        claimed.sort_by(|a, b| {
            (a.timer.due_at_ms, a.timer.timer_id.as_bytes())
                .cmp(&(b.timer.due_at_ms, b.timer.timer_id.as_bytes()))
        });
        tracing::Span::current().record("claimed", claimed.len());
        Ok(claimed)
    }

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn complete_timer(&self, timer_id: &str, claim: &str) -> JournalResult<bool> {
        let keys = self.inner.keys.timer_shard(timer_shard_of(timer_id));
        let reply = self
            .write_script(
                Script::TimerComplete,
                keys.slot(),
                &keys.all(),
                &[timer_id.as_bytes().to_vec(), claim.as_bytes().to_vec()],
            )
            .await?;
        Ok(as_i64(&reply).ok_or_else(|| bad_reply("complete timer"))? == 1)
    }

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn next_due(&self, now_ms: u64) -> JournalResult<Option<u64>> {
        let replies = futures::future::try_join_all((0..TIMER_SHARDS).map(|shard| {
            let keys = self.inner.keys.timer_shard(shard);
            async move {
                self.script(
                    Script::TimerNextDue,
                    &[keys.due(), keys.leases()],
                    &[time_arg(now_ms)],
                )
                .await
            }
        }))
        .await?;
        let mut next: Option<u64> = None;
        for reply in replies {
            let reply = into_array(reply);
            if reply.len() != 2 {
                return Err(bad_reply("next due"));
            }
            for value in &reply {
                let time = as_i64(value).ok_or_else(|| bad_reply("next due"))?;
                // -1: none in this shard.
                if let Ok(time) = u64::try_from(time) {
                    next = Some(next.map_or(time, |n| n.min(time)));
                }
            }
        }
        Ok(next)
    }

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn get_timer(&self, timer_id: &str) -> JournalResult<Option<TimerRecord>> {
        let keys = self.inner.keys.timer_shard(timer_shard_of(timer_id));
        let value: Value = self
            .query(redis::cmd("HGET").arg(keys.records()).arg(timer_id))
            .await?;
        match value {
            Value::Nil => Ok(None),
            other => {
                let bytes = bytes_of(other, "timer record")?;
                decode(timer_id, &bytes)
                    .map(Some)
                    .ok_or_else(|| corrupt(timer_id))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_bad_bytes_are_refused() {
        let timer = TimerRecord {
            timer_id: "t\u{0}{x}".into(),
            owner_actor: "owner \u{1F980}".into(),
            target_actor: String::new(),
            target_type: "Kind".into(),
            due_at_ms: MAX_SEQUENCE,
            payload: vec![0, 1, 2, 255],
        };
        let bytes = encode(&timer);
        assert_eq!(decode(&timer.timer_id, &bytes), Some(timer.clone()));
        for cut in 0..bytes.len() - timer.payload.len() {
            assert_eq!(decode("x", &bytes[..cut]), None, "cut at {cut}");
        }
        let mut other = bytes.clone();
        other[0] = 2;
        assert_eq!(decode("x", &other), None);
        let mut huge = bytes;
        huge[1..5].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(decode("x", &huge), None);
    }
}
