//! The timer tests' self-test: a second, deliberately plain `TimerStore`
//! (a list under a lock) with one fault at a time must fail at least one
//! test of `timer_suite!`; without a fault, it and the memory backend pass
//! them all.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use journal_conformance::TimerSuiteTest;
use journal_core::timers::{lease_until, validate_timer};
use journal_core::validate::DEFAULT_MAX_ENTRY_BYTES;
use journal_core::{ClaimedTimer, JournalResult, TimerRecord, TimerStore};

/// One fault of a [`PlainTimers`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimerFault {
    /// No fault.
    None,
    /// A claim takes timers under a running lease.
    ClaimIgnoresLease,
    /// A lease still runs at `now_ms == lease_until_ms`.
    LeaseEndsOneLate,
    /// A timer is due only after its due time, not at it.
    DueOneLate,
    /// A claim takes every claimable timer, whatever `max`.
    ClaimIgnoresMax,
    /// A claim takes timers by id, not earliest due first.
    ClaimOrderedById,
    /// A claim takes timers that are not due yet.
    ClaimTakesFutureTimers,
    /// A claim's lease ends 1 ms early.
    LeaseOneMsShort,
    /// A claim reads the claimable timers, waits, then leases them without
    /// looking again: two claims may get one timer.
    ClaimNotAtomic,
    /// A claim of `max` timers leases one more than it returns (lost until
    /// the lease ends).
    ClaimLeasesOneMore,
    /// A cancel removes a timer being fired.
    CancelIgnoresLease,
    /// A completion removes the timer whatever the claim.
    CompleteIgnoresClaim,
    /// A completion says `true` but leaves the timer.
    CompleteKeepsTimer,
    /// Scheduling an id again keeps its claim.
    RescheduleKeepsClaim,
    /// Scheduling an id again keeps the old due time.
    RescheduleKeepsDueTime,
    /// `next_due` ignores leases: the earliest due time.
    NextDueIgnoresLeases,
    /// `next_due` ignores claimed timers altogether.
    NextDueSkipsClaimed,
    /// Invalid timers are stored.
    NoValidation,
    /// Ids are compared without case.
    IdsIgnoreCase,
    /// Ids are trimmed of spaces.
    IdsTrimmed,
    /// The payload comes back empty from `get_timer`.
    GetDropsPayload,
}

#[derive(Debug)]
struct Slot {
    record: TimerRecord,
    claim: Option<(String, u64)>,
}

/// Every timer in a map by (possibly faulty) key; a claim sorts them all.
struct PlainTimers {
    fault: TimerFault,
    slots: Mutex<HashMap<String, Slot>>,
}

impl PlainTimers {
    fn new(fault: TimerFault) -> Self {
        PlainTimers {
            fault,
            slots: Mutex::default(),
        }
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn key(&self, id: &str) -> String {
        match self.fault {
            TimerFault::IdsIgnoreCase => id.to_lowercase(),
            TimerFault::IdsTrimmed => id.trim().to_owned(),
            _ => id.to_owned(),
        }
    }

    fn free_at(&self, slot: &Slot, now: u64) -> bool {
        match (&slot.claim, self.fault) {
            (None, _) | (Some(_), TimerFault::ClaimIgnoresLease) => true,
            (Some((_, until)), TimerFault::LeaseEndsOneLate) => *until < now,
            (Some((_, until)), _) => *until <= now,
        }
    }

    fn due_at(&self, slot: &Slot, now: u64) -> bool {
        match self.fault {
            TimerFault::DueOneLate => slot.record.due_at_ms < now,
            TimerFault::ClaimTakesFutureTimers => slot.record.due_at_ms <= now.saturating_add(5),
            _ => slot.record.due_at_ms <= now,
        }
    }

    /// Ids of the timers a claim at `now` takes, in its order.
    fn claimable(&self, slots: &HashMap<String, Slot>, now: u64, max: usize) -> Vec<String> {
        let mut due: Vec<&Slot> = slots
            .values()
            .filter(|s| self.due_at(s, now) && self.free_at(s, now))
            .collect();
        if self.fault == TimerFault::ClaimOrderedById {
            due.sort_by(|a, b| a.record.timer_id.cmp(&b.record.timer_id));
        } else {
            due.sort_by_key(|s| s.record.due_at_ms);
        }
        let take = match self.fault {
            TimerFault::ClaimIgnoresMax => usize::MAX,
            TimerFault::ClaimLeasesOneMore => max.saturating_add(1),
            _ => max,
        };
        due.iter()
            .take(take)
            .map(|s| s.record.timer_id.clone())
            .collect()
    }

    fn lease(
        &self,
        slots: &mut HashMap<String, Slot>,
        ids: &[String],
        token: &str,
        until: u64,
    ) -> Vec<ClaimedTimer> {
        let mut claimed = Vec::new();
        for id in ids {
            if let Some(slot) = slots.get_mut(&self.key(id)) {
                slot.claim = Some((token.to_owned(), until));
                claimed.push(ClaimedTimer {
                    timer: slot.record.clone(),
                    claim: token.to_owned(),
                    lease_until_ms: until,
                });
            }
        }
        claimed
    }
}

#[async_trait]
impl TimerStore for PlainTimers {
    async fn schedule_timer(&self, timer: &TimerRecord) -> JournalResult<()> {
        if self.fault != TimerFault::NoValidation {
            validate_timer(timer, self.max_timer_payload())?;
        }
        let mut slots = self.slots();
        match slots.get_mut(&self.key(&timer.timer_id)) {
            Some(old) => {
                let due_at_ms = if self.fault == TimerFault::RescheduleKeepsDueTime {
                    old.record.due_at_ms
                } else {
                    timer.due_at_ms
                };
                old.record = TimerRecord {
                    due_at_ms,
                    ..timer.clone()
                };
                if self.fault != TimerFault::RescheduleKeepsClaim {
                    old.claim = None;
                }
            }
            None => {
                slots.insert(
                    self.key(&timer.timer_id),
                    Slot {
                        record: timer.clone(),
                        claim: None,
                    },
                );
            }
        }
        Ok(())
    }

    async fn cancel_timer(&self, timer_id: &str, now_ms: u64) -> JournalResult<bool> {
        let mut slots = self.slots();
        let key = self.key(timer_id);
        let Some(slot) = slots.get(&key) else {
            return Ok(false);
        };
        if self.fault == TimerFault::CancelIgnoresLease || self.free_at(slot, now_ms) {
            slots.remove(&key);
            return Ok(true);
        }
        Ok(false)
    }

    async fn claim_due_timers(
        &self,
        now_ms: u64,
        lease: Duration,
        claim: &str,
        max: usize,
    ) -> JournalResult<Vec<ClaimedTimer>> {
        let until = if self.fault == TimerFault::LeaseOneMsShort {
            lease_until(now_ms, lease).saturating_sub(1)
        } else {
            lease_until(now_ms, lease)
        };
        let mut claimed = if self.fault == TimerFault::ClaimNotAtomic {
            let ids = self.claimable(&self.slots(), now_ms, max);
            tokio::time::sleep(Duration::from_millis(2)).await;
            self.lease(&mut self.slots(), &ids, claim, until)
        } else {
            let mut slots = self.slots();
            let ids = self.claimable(&slots, now_ms, max);
            self.lease(&mut slots, &ids, claim, until)
        };
        if self.fault == TimerFault::ClaimLeasesOneMore {
            claimed.truncate(max);
        }
        Ok(claimed)
    }

    async fn complete_timer(&self, timer_id: &str, claim: &str) -> JournalResult<bool> {
        let mut slots = self.slots();
        let key = self.key(timer_id);
        let Some(slot) = slots.get(&key) else {
            return Ok(false);
        };
        let held = slot.claim.as_ref().is_some_and(|(c, _)| c == claim);
        if held || self.fault == TimerFault::CompleteIgnoresClaim {
            if self.fault != TimerFault::CompleteKeepsTimer {
                slots.remove(&key);
            }
            return Ok(true);
        }
        Ok(false)
    }

    async fn next_due(&self, now_ms: u64) -> JournalResult<Option<u64>> {
        let slots = self.slots();
        Ok(slots
            .values()
            .filter_map(|s| match (&s.claim, self.fault) {
                (_, TimerFault::NextDueIgnoresLeases) => Some(s.record.due_at_ms),
                (Some(_), TimerFault::NextDueSkipsClaimed) => None,
                (Some((_, until)), _) if !self.free_at(s, now_ms) => Some(*until),
                _ => Some(s.record.due_at_ms),
            })
            .min())
    }

    async fn get_timer(&self, timer_id: &str) -> JournalResult<Option<TimerRecord>> {
        let slots = self.slots();
        Ok(slots.get(&self.key(timer_id)).map(|slot| {
            let mut record = slot.record.clone();
            if self.fault == TimerFault::GetDropsPayload {
                record.payload.clear();
            }
            record
        }))
    }

    fn max_timer_payload(&self) -> usize {
        DEFAULT_MAX_ENTRY_BYTES
    }
}

/// Runs `test` on a store of its own, as `timer_suite!` does; true when it
/// passes within the time limit.
fn passes(test: TimerSuiteTest, store: Arc<dyn TimerStore>) -> bool {
    let runtime = journal_conformance::__private::runtime();
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
        runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(60), (test.run)(store)).await
        })
    }));
    runtime.shutdown_timeout(Duration::from_secs(5));
    matches!(outcome, Ok(Ok(())))
}

/// The timer tests that fail against what `make` gives: all of them with
/// `JOURNAL_MUTANTS_ALL` set, otherwise up to the first.
fn failing(make: impl Fn() -> Arc<dyn TimerStore>, stop_at_first: bool) -> Vec<String> {
    let mut failing = Vec::new();
    for test in journal_conformance::timer_suite_tests() {
        if !passes(test, make()) {
            failing.push(format!("{test:?}"));
            if stop_at_first {
                break;
            }
        }
    }
    failing
}

fn assert_killed(fault: TimerFault) {
    let all = std::env::var_os("JOURNAL_MUTANTS_ALL").is_some();
    let killers = failing(|| Arc::new(PlainTimers::new(fault)), !all);
    assert!(
        !killers.is_empty(),
        "the timer mutant {fault:?} passes every timer test: the suite does not catch it"
    );
    println!("{fault:?} is killed by {}", killers.join(", "));
}

macro_rules! timer_mutants {
    ($($name:ident: $fault:ident,)*) => {
        $(
            #[test]
            fn $name() {
                assert_killed(TimerFault::$fault);
            }
        )*
    };
}

timer_mutants! {
    timer_claim_ignores_lease: ClaimIgnoresLease,
    timer_lease_ends_one_late: LeaseEndsOneLate,
    timer_due_one_late: DueOneLate,
    timer_claim_ignores_max: ClaimIgnoresMax,
    timer_claim_ordered_by_id: ClaimOrderedById,
    timer_claim_takes_future_timers: ClaimTakesFutureTimers,
    timer_lease_one_ms_short: LeaseOneMsShort,
    timer_claim_not_atomic: ClaimNotAtomic,
    timer_claim_leases_one_more: ClaimLeasesOneMore,
    timer_cancel_ignores_lease: CancelIgnoresLease,
    timer_complete_ignores_claim: CompleteIgnoresClaim,
    timer_complete_keeps_timer: CompleteKeepsTimer,
    timer_reschedule_keeps_claim: RescheduleKeepsClaim,
    timer_reschedule_keeps_due_time: RescheduleKeepsDueTime,
    timer_next_due_ignores_leases: NextDueIgnoresLeases,
    timer_next_due_skips_claimed: NextDueSkipsClaimed,
    timer_no_validation: NoValidation,
    timer_ids_ignore_case: IdsIgnoreCase,
    timer_ids_trimmed: IdsTrimmed,
    timer_get_drops_payload: GetDropsPayload,
}

#[test]
fn timer_controls_pass_everything() {
    for (what, make) in [
        (
            "the plain store without a fault",
            (|| Arc::new(PlainTimers::new(TimerFault::None)) as Arc<dyn TimerStore>)
                as fn() -> Arc<dyn TimerStore>,
        ),
        ("the memory backend", || {
            Arc::new(journal_memory::MemoryJournalStorage::new())
        }),
    ] {
        let failing = failing(make, false);
        assert!(failing.is_empty(), "{what} fails {}", failing.join(", "));
    }
}
