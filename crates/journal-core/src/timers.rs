//! The due-timer index: a storage capability of its own, beside
//! [`JournalStorage`](crate::JournalStorage) (contract rules 23 and 24).
//!
//! A timer is journaled as `TimerScheduled` in the actor that scheduled it;
//! this index is how a host finds the timers that are due without scanning
//! actors. Hosts (any number, in any number of processes) share one store:
//! each due timer is *claimed* by one of them under a lease, delivered, then
//! *completed*. A host that dies while firing leaves its claim to expire, and
//! another host claims the timer again; delivery is exactly-once because the
//! delivered message carries the timer's id as its message id, which the
//! target's journal deduplicates (rule 17).
//!
//! Times are milliseconds since the Unix epoch, as the host's clock reads
//! them: hosts sharing a store should keep their clocks in sync (leases
//! tolerate skew up to their length).
//!
//! # Leases
//!
//! A claim's lease runs while `now_ms < lease_until_ms`: at `now_ms ==
//! lease_until_ms` it has expired, and the timer may be claimed again (a
//! timer is due the same way: at `now_ms == due_at_ms`). A lease's end is
//! [`lease_until`]`(now_ms, lease)`, on every backend. An expired claim
//! stays the timer's until another claim takes it or the timer is
//! rescheduled: until then [`TimerStore::complete_timer`] with it still
//! succeeds (the store takes no clock there).

use std::time::Duration;

use async_trait::async_trait;

use crate::JournalResult;

/// A timer in the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimerRecord {
    /// Unique in the store (hosts use `<owner actor>/<name>` or a ULID).
    /// Scheduling a timer with an id already present replaces it.
    pub timer_id: String,
    /// The actor whose journal holds its `TimerScheduled`.
    pub owner_actor: String,
    /// The actor the timer's message goes to.
    pub target_actor: String,
    /// The target's actor type, as the host registered it.
    pub target_type: String,
    /// When it is due, in milliseconds since the Unix epoch.
    pub due_at_ms: u64,
    /// What the host delivers when it fires (opaque to the store).
    pub payload: Vec<u8>,
}

/// A timer a host holds the lease of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedTimer {
    /// The timer.
    pub timer: TimerRecord,
    /// The lease's token: [`TimerStore::complete_timer`] only removes the
    /// timer while the lease is still this one.
    pub claim: String,
    /// When the lease ends, in milliseconds since the Unix epoch; after
    /// that another host may claim the timer again.
    pub lease_until_ms: u64,
}

/// The due-timer index of a store.
///
/// Every backend implements it next to its `JournalStorage`, in the same
/// database, and `journal_conformance::timers` checks it on each.
#[async_trait]
pub trait TimerStore: Send + Sync {
    /// Adds a timer, or replaces the one with the same id (and with it any
    /// claim on it). Idempotent.
    async fn schedule_timer(&self, timer: &TimerRecord) -> JournalResult<()>;

    /// Removes a timer. `Ok(true)` when it was there and not claimed under
    /// an unexpired lease at `now_ms`; `Ok(false)` when it was not there, or
    /// is being fired (it is then left alone and will fire).
    async fn cancel_timer(&self, timer_id: &str, now_ms: u64) -> JournalResult<bool>;

    /// Claims up to `max` timers with `due_at_ms <= now_ms` that nobody
    /// holds an unexpired lease on, earliest due first (timers due at the
    /// same instant in any order), each under a new lease until
    /// [`lease_until`]`(now_ms, lease)` with the token `claim`. Two
    /// concurrent calls never both get one timer while its lease runs.
    /// `max = 0` claims nothing.
    async fn claim_due_timers(
        &self,
        now_ms: u64,
        lease: Duration,
        claim: &str,
        max: usize,
    ) -> JournalResult<Vec<ClaimedTimer>>;

    /// Removes a fired timer if `claim` still holds its lease (the timer's
    /// latest claim is `claim`, expired or not). `Ok(false)` when the lease
    /// was lost (it expired and another host claimed the timer, or it was
    /// rescheduled or cancelled), or the timer was never claimed: that host
    /// fires it, and delivery stays exactly-once through the message id.
    async fn complete_timer(&self, timer_id: &str, claim: &str) -> JournalResult<bool>;

    /// The earliest due time among timers nobody holds an unexpired lease
    /// on at `now_ms`, or, for claimed ones, the end of their lease: when
    /// a host should look again. `None` when the index is empty.
    async fn next_due(&self, now_ms: u64) -> JournalResult<Option<u64>>;

    /// A timer by id, claimed or not.
    async fn get_timer(&self, timer_id: &str) -> JournalResult<Option<TimerRecord>>;

    /// The largest payload [`TimerStore::schedule_timer`] accepts, in
    /// bytes ([`validate_timer`]'s `max_payload`): the storage's largest
    /// entry, 16 MiB by default. A timer's payload goes into the
    /// `TimerFired` entry and the delivered message, so it cannot be larger.
    fn max_timer_payload(&self) -> usize {
        crate::validate::DEFAULT_MAX_ENTRY_BYTES
    }
}

#[async_trait]
impl<T: TimerStore + ?Sized> TimerStore for std::sync::Arc<T> {
    async fn schedule_timer(&self, timer: &TimerRecord) -> JournalResult<()> {
        (**self).schedule_timer(timer).await
    }
    async fn cancel_timer(&self, timer_id: &str, now_ms: u64) -> JournalResult<bool> {
        (**self).cancel_timer(timer_id, now_ms).await
    }
    async fn claim_due_timers(
        &self,
        now_ms: u64,
        lease: Duration,
        claim: &str,
        max: usize,
    ) -> JournalResult<Vec<ClaimedTimer>> {
        (**self).claim_due_timers(now_ms, lease, claim, max).await
    }
    async fn complete_timer(&self, timer_id: &str, claim: &str) -> JournalResult<bool> {
        (**self).complete_timer(timer_id, claim).await
    }
    async fn next_due(&self, now_ms: u64) -> JournalResult<Option<u64>> {
        (**self).next_due(now_ms).await
    }
    async fn get_timer(&self, timer_id: &str) -> JournalResult<Option<TimerRecord>> {
        (**self).get_timer(timer_id).await
    }
    fn max_timer_payload(&self) -> usize {
        (**self).max_timer_payload()
    }
}

/// When a lease taken at `now_ms` for `lease` ends: `now_ms` plus the
/// lease in whole milliseconds, rounded up (a lease is never shorter than
/// asked), saturating at `u64::MAX`.
pub fn lease_until(now_ms: u64, lease: Duration) -> u64 {
    let millis = lease.as_nanos().div_ceil(1_000_000);
    now_ms.saturating_add(u64::try_from(millis).unwrap_or(u64::MAX))
}

/// Checks a timer before it is stored: ids and actor names non-empty and
/// at most 255 bytes (the journal's actor id limit), the payload within
/// `max_payload` bytes. `InvalidEntry` names what is wrong.
pub fn validate_timer(timer: &TimerRecord, max_payload: usize) -> JournalResult<()> {
    let check = |what: &str, value: &str| {
        if value.is_empty() || value.len() > crate::validate::MAX_ACTOR_ID_BYTES {
            Err(crate::JournalError::InvalidEntry(format!(
                "timer {what} must be 1 to {} bytes, got {}",
                crate::validate::MAX_ACTOR_ID_BYTES,
                value.len()
            )))
        } else {
            Ok(())
        }
    };
    check("id", &timer.timer_id)?;
    check("owner actor", &timer.owner_actor)?;
    check("target actor", &timer.target_actor)?;
    check("target type", &timer.target_type)?;
    if timer.payload.len() > max_payload {
        return Err(crate::JournalError::InvalidEntry(format!(
            "timer {} payload is {} bytes, above the limit of {max_payload}",
            timer.timer_id,
            timer.payload.len()
        )));
    }
    if timer.due_at_ms > crate::validate::MAX_SEQUENCE {
        return Err(crate::JournalError::InvalidEntry(format!(
            "timer {} is due at {} ms, beyond the representable range",
            timer.timer_id, timer.due_at_ms
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_until_rounds_up_and_saturates() {
        assert_eq!(lease_until(1_000, Duration::from_millis(250)), 1_250);
        assert_eq!(lease_until(1_000, Duration::from_micros(1)), 1_001);
        assert_eq!(lease_until(1_000, Duration::from_micros(1_500)), 1_002);
        assert_eq!(lease_until(1_000, Duration::ZERO), 1_000);
        assert_eq!(lease_until(u64::MAX - 1, Duration::from_secs(1)), u64::MAX);
        assert_eq!(lease_until(0, Duration::MAX), u64::MAX);
    }
}
