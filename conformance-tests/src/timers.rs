//! The due-timer index (contract rules 23 and 24): what every
//! [`TimerStore`] promises, checked with explicit clocks (`now_ms` values,
//! never sleeps).
//!
//! Claims take every due timer of the store, whoever scheduled it, so each
//! test needs a store of its own (a new file, schema or key prefix), as
//! [`timer_suite!`](crate::timer_suite) gives it; every test also makes its
//! timer ids from a fresh ULID, and the property test starts each case by
//! draining the store. A test that finds timers it did not schedule says
//! so.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use journal_core::timers::{lease_until, ClaimedTimer, TimerRecord, TimerStore};
use journal_core::validate::{MAX_ACTOR_ID_BYTES, MAX_SEQUENCE};
use journal_core::{JournalError, JournalResult};
use proptest::collection::vec;
use proptest::prelude::*;

use crate::fixture::fresh_actor;

/// The clock the tests start from: 2023-11-14, in milliseconds.
pub const T0: u64 = 1_700_000_000_000;

/// The lease the tests take when the lease's length does not matter.
pub const LEASE: Duration = Duration::from_secs(30);

/// Timers scheduled, or completed, at once by the tests that handle many.
const IN_FLIGHT: usize = 32;

/// A timer with every field set: the owner and target are actor names with
/// quotes and non-ASCII characters, and the payload holds every byte value
/// and the id.
pub fn timer(timer_id: &str, due_at_ms: u64) -> TimerRecord {
    let mut payload: Vec<u8> = (0..=255u8).collect();
    payload.extend_from_slice(timer_id.as_bytes());
    payload.extend_from_slice(&due_at_ms.to_be_bytes());
    TimerRecord {
        timer_id: timer_id.to_owned(),
        owner_actor: "owner \"cart\" ü".to_owned(),
        target_actor: "target {cart}:7 🦀".to_owned(),
        target_type: "Cart".to_owned(),
        due_at_ms,
        payload,
    }
}

/// `count` timers named `<prefix>/<i>`, the `i`-th due at `due(i)`.
pub fn timers(prefix: &str, count: u64, due: impl Fn(u64) -> u64) -> Vec<TimerRecord> {
    (0..count)
        .map(|i| timer(&format!("{prefix}/{i}"), due(i)))
        .collect()
}

/// Schedules every timer, 32 at a time, and panics on an error.
pub async fn schedule_all(store: &dyn TimerStore, timers: &[TimerRecord]) {
    futures::stream::iter(timers)
        .map(|t| async move {
            store
                .schedule_timer(t)
                .await
                .map_err(|e| format!("schedule {:?}: {e}", t.timer_id))
        })
        .buffer_unordered(IN_FLIGHT)
        .try_collect::<Vec<()>>()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

/// Completes every claimed timer with its claim, 32 at a time,
/// and panics unless each was still held.
pub async fn complete_all(store: &dyn TimerStore, claimed: &[ClaimedTimer]) {
    let results: Vec<(String, bool)> = futures::stream::iter(claimed)
        .map(|c| async move {
            let done = store
                .complete_timer(&c.timer.timer_id, &c.claim)
                .await
                .unwrap_or_else(|e| panic!("complete {:?}: {e}", c.timer.timer_id));
            (c.timer.timer_id.clone(), done)
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    for (id, done) in results {
        assert!(
            done,
            "completing {id:?} with the claim that holds it failed"
        );
    }
}

async fn claim(
    store: &dyn TimerStore,
    now_ms: u64,
    lease: Duration,
    token: &str,
    max: usize,
) -> Vec<ClaimedTimer> {
    store
        .claim_due_timers(now_ms, lease, token, max)
        .await
        .unwrap_or_else(|e| panic!("claim at {now_ms} by {token:?}: {e}"))
}

async fn get(store: &dyn TimerStore, id: &str) -> Option<TimerRecord> {
    store
        .get_timer(id)
        .await
        .unwrap_or_else(|e| panic!("get {id:?}: {e}"))
}

async fn cancel(store: &dyn TimerStore, id: &str, now_ms: u64) -> bool {
    store
        .cancel_timer(id, now_ms)
        .await
        .unwrap_or_else(|e| panic!("cancel {id:?} at {now_ms}: {e}"))
}

async fn complete(store: &dyn TimerStore, id: &str, token: &str) -> bool {
    store
        .complete_timer(id, token)
        .await
        .unwrap_or_else(|e| panic!("complete {id:?} by {token:?}: {e}"))
}

async fn next_due(store: &dyn TimerStore, now_ms: u64) -> Option<u64> {
    store
        .next_due(now_ms)
        .await
        .unwrap_or_else(|e| panic!("next_due at {now_ms}: {e}"))
}

fn ids(claimed: &[ClaimedTimer]) -> Vec<&str> {
    claimed.iter().map(|c| c.timer.timer_id.as_str()).collect()
}

fn dues(claimed: &[ClaimedTimer]) -> Vec<u64> {
    claimed.iter().map(|c| c.timer.due_at_ms).collect()
}

/// Asserts the store holds no timer at all: the tests count on a store of
/// their own.
async fn assert_empty(store: &dyn TimerStore, when: &str) {
    assert_eq!(
        next_due(store, 0).await,
        None,
        "{when}: the store still holds timers (each timer test needs a store of its own)"
    );
}

/// Asserts `claimed` is exactly `want`, in that order, each under `token`
/// until `lease_until(now_ms, lease)`.
fn assert_claimed(
    claimed: &[ClaimedTimer],
    want: &[&TimerRecord],
    token: &str,
    now_ms: u64,
    lease: Duration,
) {
    assert_eq!(
        ids(claimed),
        want.iter().map(|t| t.timer_id.as_str()).collect::<Vec<_>>(),
        "claimed at {now_ms} by {token:?}"
    );
    for (c, t) in claimed.iter().zip(want) {
        assert_eq!(&c.timer, *t, "the claimed timer is not the one scheduled");
        assert_eq!(c.claim, token, "claim token of {:?}", t.timer_id);
        assert_eq!(
            c.lease_until_ms,
            lease_until(now_ms, lease),
            "lease end of {:?} claimed at {now_ms} for {lease:?}",
            t.timer_id
        );
    }
}

/// A scheduled timer reads back field by field (every byte of its
/// payload), an unknown id reads as `None`, and scheduling the same timer
/// again keeps one timer.
pub async fn timers_schedule_then_get(store: Arc<dyn TimerStore>) {
    let store = &*store;
    assert_empty(store, "before the test").await;
    let p = fresh_actor("timer");
    let a = timer(&format!("{p}/a"), T0 + 500);
    let mut big = timer(&format!("{p}/big"), T0 + 700);
    big.payload = crate::fixture::pattern(256 * 1024, 7);
    let mut empty = timer(&format!("{p}/empty"), T0 + 600);
    empty.payload.clear();
    for t in [&a, &big, &empty] {
        store.schedule_timer(t).await.expect("schedule");
    }
    store.schedule_timer(&a).await.expect("schedule again");
    assert_eq!(get(store, &a.timer_id).await.as_ref(), Some(&a));
    assert_eq!(get(store, &big.timer_id).await.as_ref(), Some(&big));
    assert_eq!(get(store, &empty.timer_id).await.as_ref(), Some(&empty));
    assert_eq!(get(store, &format!("{p}/unknown")).await, None);
    assert_eq!(get(store, &format!("{p}/A")).await, None, "ids are exact");
    assert_eq!(next_due(store, T0).await, Some(T0 + 500));
    let claimed = claim(store, T0 + 1_000, LEASE, "c1", 10).await;
    assert_claimed(&claimed, &[&a, &empty, &big], "c1", T0 + 1_000, LEASE);
    assert_eq!(
        get(store, &a.timer_id).await.as_ref(),
        Some(&a),
        "a claimed timer is still there"
    );
    complete_all(store, &claimed).await;
    assert_empty(store, "after completing every timer").await;
}

/// Scheduling an id again replaces the timer (its due time and payload)
/// and drops the claim on it: the old claimant cannot complete it, and it
/// is claimable at its new due time although the old lease would still
/// run.
pub async fn timers_reschedule_replaces_and_drops_claim(store: Arc<dyn TimerStore>) {
    let store = &*store;
    let p = fresh_actor("timer-reschedule");
    let first = timer(&format!("{p}/a"), T0);
    store.schedule_timer(&first).await.expect("schedule");
    let claimed = claim(store, T0, LEASE, "c1", 10).await;
    assert_claimed(&claimed, &[&first], "c1", T0, LEASE);

    let mut second = timer(&first.timer_id, T0 + 10);
    second.payload = b"second".to_vec();
    second.target_type = "Other".into();
    store.schedule_timer(&second).await.expect("reschedule");
    assert_eq!(get(store, &first.timer_id).await.as_ref(), Some(&second));
    assert_eq!(
        next_due(store, T0 + 1).await,
        Some(T0 + 10),
        "the rescheduled timer is due at its new time, not at the old lease's end"
    );
    assert!(
        claim(store, T0 + 9, LEASE, "c2", 10).await.is_empty(),
        "claimed before its new due time"
    );
    assert!(
        !complete(store, &first.timer_id, "c1").await,
        "the claim on the old timer completed the rescheduled one"
    );
    assert_eq!(get(store, &first.timer_id).await.as_ref(), Some(&second));
    let reclaimed = claim(store, T0 + 10, LEASE, "c2", 10).await;
    assert_claimed(&reclaimed, &[&second], "c2", T0 + 10, LEASE);
    assert!(complete(store, &second.timer_id, "c2").await);

    // An unclaimed timer moved earlier and later.
    let b = timer(&format!("{p}/b"), T0 + 1_000);
    store.schedule_timer(&b).await.expect("schedule");
    let earlier = timer(&b.timer_id, T0 + 100);
    store.schedule_timer(&earlier).await.expect("earlier");
    assert_eq!(next_due(store, T0).await, Some(T0 + 100));
    let later = timer(&b.timer_id, T0 + 5_000);
    store.schedule_timer(&later).await.expect("later");
    assert_eq!(next_due(store, T0).await, Some(T0 + 5_000));
    assert!(claim(store, T0 + 4_999, LEASE, "c3", 10).await.is_empty());
    let fired = claim(store, T0 + 5_000, LEASE, "c3", 10).await;
    assert_claimed(&fired, &[&later], "c3", T0 + 5_000, LEASE);
    complete_all(store, &fired).await;
    assert_empty(store, "after completing every timer").await;
}

/// A timer cancelled before it is claimed is gone and is never claimed;
/// cancelling it again, or an unknown id, is `false`. A due timer nobody
/// claimed can be cancelled too.
pub async fn timers_cancel_before_due_never_fires(store: Arc<dyn TimerStore>) {
    let store = &*store;
    let p = fresh_actor("timer-cancel");
    let [a, b, c] = [100, 200, 50].map(|d| timer(&format!("{p}/{d}"), T0 + d));
    for t in [&a, &b, &c] {
        store.schedule_timer(t).await.expect("schedule");
    }
    assert!(cancel(store, &a.timer_id, T0).await, "cancel before due");
    assert_eq!(get(store, &a.timer_id).await, None);
    assert!(!cancel(store, &a.timer_id, T0).await, "cancelled twice");
    assert!(!cancel(store, &format!("{p}/unknown"), T0).await);
    assert!(
        cancel(store, &c.timer_id, T0 + 60).await,
        "a due timer nobody claimed is cancelled"
    );
    assert_eq!(next_due(store, T0).await, Some(T0 + 200));
    let claimed = claim(store, T0 + 1_000, LEASE, "c1", 10).await;
    assert_claimed(&claimed, &[&b], "c1", T0 + 1_000, LEASE);
    complete_all(store, &claimed).await;
    assert!(claim(store, T0 + 1_000_000, LEASE, "c2", 10)
        .await
        .is_empty());
    assert_empty(store, "after completing every timer").await;
}

/// A timer being fired (claimed, lease running) cannot be cancelled: the
/// cancel is `false`, the timer stays, and its claimant completes it. Once
/// the lease has run out (at its very end) a cancel removes it, and the
/// old claimant's completion is then `false`.
pub async fn timers_cancel_under_lease_is_refused(store: Arc<dyn TimerStore>) {
    let store = &*store;
    let p = fresh_actor("timer-cancel-claimed");
    let lease = Duration::from_secs(1);
    let a = timer(&format!("{p}/a"), T0);
    let b = timer(&format!("{p}/b"), T0 + 1);
    store.schedule_timer(&a).await.expect("schedule");
    store.schedule_timer(&b).await.expect("schedule");
    let claimed = claim(store, T0 + 1, lease, "c1", 10).await;
    assert_claimed(&claimed, &[&a, &b], "c1", T0 + 1, lease);
    assert!(!cancel(store, &a.timer_id, T0 + 1).await);
    assert!(
        !cancel(store, &a.timer_id, T0 + 1_000).await,
        "cancelled in the lease's last millisecond"
    );
    assert_eq!(get(store, &a.timer_id).await.as_ref(), Some(&a));
    assert!(
        claim(store, T0 + 1_000, lease, "c2", 10).await.is_empty(),
        "a refused cancel released the lease"
    );
    assert!(complete(store, &a.timer_id, "c1").await, "it still fires");
    assert_eq!(get(store, &a.timer_id).await, None);

    assert!(
        cancel(store, &b.timer_id, T0 + 1_001).await,
        "cancel when the lease has just run out"
    );
    assert_eq!(get(store, &b.timer_id).await, None);
    assert!(!complete(store, &b.timer_id, "c1").await);
    assert_empty(store, "after the test").await;
}

/// A claim takes only timers due at `now_ms` (due exactly then included),
/// earliest due first whatever the order they were scheduled in, at most
/// `max` of them; `max = 0` takes none. Each comes with the claim's token
/// and lease.
pub async fn timers_claim_due_earliest_first_at_most_max(store: Arc<dyn TimerStore>) {
    let store = &*store;
    let p = fresh_actor("timer-claim");
    // Due at T0 + 10k, scheduled in a scrambled order.
    let all = timers(&p, 20, |i| T0 + 10 * i);
    let scrambled: Vec<_> = (0..20).map(|i| all[(i * 7) % 20].clone()).collect();
    for t in &scrambled {
        store.schedule_timer(t).await.expect("schedule");
    }
    let now = T0 + 90;
    let want: Vec<&TimerRecord> = all.iter().collect();
    assert!(claim(store, T0 - 1, LEASE, "early", 10).await.is_empty());
    assert!(claim(store, now, LEASE, "none", 0).await.is_empty());
    let first = claim(store, now, LEASE, "c1", 4).await;
    assert_claimed(&first, &want[..4], "c1", now, LEASE);
    let lease = Duration::from_millis(1_234);
    let rest = claim(store, now, lease, "c2", 100).await;
    assert_claimed(&rest, &want[4..10], "c2", now, lease);
    assert!(
        claim(store, now, LEASE, "c3", 100).await.is_empty(),
        "claimed what was claimed already, or what is not due"
    );
    let one = claim(store, now + 1, LEASE, "c3", 100).await;
    assert!(
        one.is_empty(),
        "T0 + 100 is not due at T0 + 91: {:?}",
        ids(&one)
    );
    let later = claim(store, T0 + 125, LEASE, "c3", 100).await;
    assert_claimed(&later, &want[10..13], "c3", T0 + 125, LEASE);
    complete_all(store, &first).await;
    complete_all(store, &rest).await;
    complete_all(store, &later).await;
    let last = claim(store, T0 + 10_000, LEASE, "c4", 100).await;
    assert_claimed(&last, &want[13..], "c4", T0 + 10_000, LEASE);
    complete_all(store, &last).await;
    assert_empty(store, "after completing every timer").await;
}

/// While a claim's lease runs nobody claims its timers again; from the
/// lease's end on (`now_ms == lease_until_ms` included) another claim
/// takes them, under a lease of its own, and the first claimant can no
/// longer complete them.
pub async fn timers_lease_blocks_then_expires(store: Arc<dyn TimerStore>) {
    let store = &*store;
    let p = fresh_actor("timer-lease");
    let lease = Duration::from_secs(1);
    let all = timers(&p, 3, |i| T0 + i);
    for t in &all {
        store.schedule_timer(t).await.expect("schedule");
    }
    let want: Vec<&TimerRecord> = all.iter().collect();
    let first = claim(store, T0 + 2, lease, "c1", 10).await;
    assert_claimed(&first, &want, "c1", T0 + 2, lease);
    assert!(claim(store, T0 + 2, lease, "c2", 10).await.is_empty());
    assert!(
        claim(store, T0 + 1_001, lease, "c2", 10).await.is_empty(),
        "claimed again in the lease's last millisecond"
    );
    assert_eq!(
        next_due(store, T0 + 1_001).await,
        Some(T0 + 1_002),
        "while the lease runs, look again at its end"
    );
    let second = claim(store, T0 + 1_002, lease, "c2", 10).await;
    assert_claimed(&second, &want, "c2", T0 + 1_002, lease);
    assert!(
        claim(store, T0 + 1_500, lease, "c3", 10).await.is_empty(),
        "the second lease is not honoured"
    );
    for t in &all {
        assert!(
            !complete(store, &t.timer_id, "c1").await,
            "the expired claim completed a timer another claim holds"
        );
    }
    // Another claim's lease is not cut short by the failed completion.
    assert!(claim(store, T0 + 2_001, lease, "c3", 10).await.is_empty());
    complete_all(store, &second).await;
    assert_empty(store, "after completing every timer").await;
}

/// Completing needs the claim that holds the timer: a timer nobody claimed,
/// or another token, is `false` and leaves the timer and its lease as they
/// were; the holding claim removes it once (again is `false`). A claim that
/// expired but that nobody replaced still completes.
pub async fn timers_complete_needs_the_current_claim(store: Arc<dyn TimerStore>) {
    let store = &*store;
    let p = fresh_actor("timer-complete");
    let lease = Duration::from_millis(100);
    let a = timer(&format!("{p}/a"), T0);
    let b = timer(&format!("{p}/b"), T0);
    store.schedule_timer(&a).await.expect("schedule");
    assert!(
        !complete(store, &a.timer_id, "c1").await,
        "completed an unclaimed timer"
    );
    assert_eq!(get(store, &a.timer_id).await.as_ref(), Some(&a));
    let c1 = claim(store, T0, lease, "c1", 10).await;
    assert_claimed(&c1, &[&a], "c1", T0, lease);
    assert!(!complete(store, &a.timer_id, "c2").await);
    assert!(!complete(store, &a.timer_id, "").await);
    assert!(
        !complete(store, &a.timer_id, "C1").await,
        "tokens are exact"
    );
    assert_eq!(get(store, &a.timer_id).await.as_ref(), Some(&a));
    assert!(
        claim(store, T0 + 99, lease, "c2", 10).await.is_empty(),
        "a wrong token's completion released the lease"
    );
    let c2 = claim(store, T0 + 100, lease, "c2", 10).await;
    assert_claimed(&c2, &[&a], "c2", T0 + 100, lease);
    assert!(
        !complete(store, &a.timer_id, "c1").await,
        "a stale claim completed"
    );
    assert!(
        claim(store, T0 + 199, lease, "c3", 10).await.is_empty(),
        "a stale claim's completion released the new lease"
    );
    assert!(!cancel(store, &a.timer_id, T0 + 199).await);
    assert!(complete(store, &a.timer_id, "c2").await);
    assert!(!complete(store, &a.timer_id, "c2").await, "completed twice");
    assert_eq!(get(store, &a.timer_id).await, None);

    store.schedule_timer(&b).await.expect("schedule");
    let held = claim(store, T0, lease, "c1", 10).await;
    assert_claimed(&held, &[&b], "c1", T0, lease);
    assert!(
        complete(store, &b.timer_id, "c1").await,
        "an expired claim nobody replaced no longer completes"
    );
    assert_empty(store, "after the test").await;
}

/// `next_due` is the earliest due time among timers free at `now_ms`
/// (in the past when one is overdue), or the end of a running lease when
/// that comes first; `None` for an empty index.
pub async fn timers_next_due(store: Arc<dyn TimerStore>) {
    let store = &*store;
    assert_empty(store, "before the test").await;
    let p = fresh_actor("timer-next");
    let lease = Duration::from_secs(1);
    let a = timer(&format!("{p}/a"), T0 + 500);
    let b = timer(&format!("{p}/b"), T0 + 300);
    store.schedule_timer(&a).await.expect("schedule");
    assert_eq!(next_due(store, T0).await, Some(T0 + 500));
    store.schedule_timer(&b).await.expect("schedule");
    assert_eq!(next_due(store, T0).await, Some(T0 + 300));
    assert_eq!(
        next_due(store, T0 + 400).await,
        Some(T0 + 300),
        "an overdue timer is due now"
    );
    let got_b = claim(store, T0 + 300, lease, "c1", 1).await;
    assert_claimed(&got_b, &[&b], "c1", T0 + 300, lease);
    assert_eq!(
        next_due(store, T0 + 300).await,
        Some(T0 + 500),
        "a claimed timer is due again only at its lease's end"
    );
    let got_a = claim(store, T0 + 500, lease, "c1", 1).await;
    assert_claimed(&got_a, &[&a], "c1", T0 + 500, lease);
    assert_eq!(
        next_due(store, T0 + 500).await,
        Some(T0 + 1_300),
        "both claimed: the first lease's end"
    );
    assert_eq!(
        next_due(store, T0 + 1_300).await,
        Some(T0 + 300),
        "a lease that ran out leaves the timer due at its due time"
    );
    assert!(complete(store, &b.timer_id, "c1").await);
    assert_eq!(next_due(store, T0 + 1_300).await, Some(T0 + 1_500));
    assert!(complete(store, &a.timer_id, "c1").await);
    assert_eq!(next_due(store, T0 + 1_300).await, None);
}

fn assert_invalid<T: Debug>(result: JournalResult<T>, what: &str) {
    match result {
        Err(JournalError::InvalidEntry(reason)) => {
            assert!(!reason.is_empty(), "{what}: an InvalidEntry says why");
        }
        other => panic!("{what}: expected InvalidEntry, got {other:?}"),
    }
}

/// Timers with an empty or too long id, owner, target or type, a payload
/// above the store's limit, or a due time beyond `MAX_SEQUENCE` are
/// `InvalidEntry`, and nothing is stored: not the timer, and not over a
/// stored timer of the same id. Lookups of such ids find nothing (or are
/// `InvalidEntry`), and never fail otherwise.
pub async fn timers_invalid_rejected_nothing_stored(store: Arc<dyn TimerStore>) {
    let store = &*store;
    let p = fresh_actor("timer-invalid");
    let kept = timer(&format!("{p}/kept"), T0 + 5);
    store.schedule_timer(&kept).await.expect("schedule");
    let long = "x".repeat(MAX_ACTOR_ID_BYTES + 1);
    let id = |suffix: &str| format!("{p}/{suffix}");
    let mut cases: Vec<(&str, TimerRecord)> = vec![
        ("empty id", timer("", T0)),
        ("too long id", timer(&format!("{p}{long}"), T0)),
    ];
    let mut edit = |what: &'static str, change: &dyn Fn(&mut TimerRecord)| {
        let mut t = timer(&id(what), T0);
        change(&mut t);
        cases.push((what, t));
    };
    edit("empty owner", &|t| t.owner_actor.clear());
    edit("too long owner", &|t| t.owner_actor.clone_from(&long));
    edit("empty target", &|t| t.target_actor.clear());
    edit("too long target", &|t| t.target_actor.clone_from(&long));
    edit("empty target type", &|t| t.target_type.clear());
    edit("too long target type", &|t| t.target_type.clone_from(&long));
    edit("due beyond MAX_SEQUENCE", &|t| {
        t.due_at_ms = MAX_SEQUENCE + 1;
    });
    edit("due at u64::MAX", &|t| t.due_at_ms = u64::MAX);
    let mut oversized = timer(&kept.timer_id, T0);
    oversized.payload = vec![7; store.max_timer_payload() + 1];
    cases.push(("oversized payload over a stored timer", oversized));
    let mut replaced = timer(&kept.timer_id, T0);
    replaced.target_type.clear();
    cases.push(("invalid timer over a stored timer", replaced));
    for (what, t) in &cases {
        assert_invalid(store.schedule_timer(t).await, what);
        if t.timer_id != kept.timer_id {
            assert_eq!(
                store.get_timer(&t.timer_id).await.ok().flatten(),
                None,
                "{what}: stored"
            );
        }
    }
    assert_eq!(
        get(store, &kept.timer_id).await.as_ref(),
        Some(&kept),
        "a rejected timer replaced the stored one"
    );
    assert_eq!(next_due(store, 0).await, Some(kept.due_at_ms));
    let claimed = claim(store, MAX_SEQUENCE, LEASE, "c1", 100).await;
    assert_claimed(&claimed, &[&kept], "c1", MAX_SEQUENCE, LEASE);
    complete_all(store, &claimed).await;
    assert_empty(store, "after rejecting every invalid timer").await;

    for bad in [String::new(), format!("{p}{long}")] {
        match store.get_timer(&bad).await {
            Ok(None) | Err(JournalError::InvalidEntry(_)) => {}
            other => panic!("get_timer({} bytes): {other:?}", bad.len()),
        }
        match store.cancel_timer(&bad, T0).await {
            Ok(false) | Err(JournalError::InvalidEntry(_)) => {}
            other => panic!("cancel_timer({} bytes): {other:?}", bad.len()),
        }
        match store.complete_timer(&bad, "c1").await {
            Ok(false) | Err(JournalError::InvalidEntry(_)) => {}
            other => panic!("complete_timer({} bytes): {other:?}", bad.len()),
        }
    }
}

/// Hostile ids, also as owner and target actors and as claim tokens:
/// quotes, braces, `%`, `*`, `?`, SQL and Lua text, NUL, line breaks,
/// emoji, ids differing only in case, Unicode normalisation, surrounding
/// spaces or what follows a NUL, and ids of exactly 255 bytes. Each is stored, found, claimed, cancelled and
/// completed exactly, and no two collide.
pub async fn timers_hostile_ids_round_trip(store: Arc<dyn TimerStore>) {
    let store = &*store;
    let mut hostile = crate::adversarial::hostile_ids();
    let u = fresh_actor("timer-ids");
    hostile.extend([
        format!("{u}*"),
        format!("*{u}?[a-z]"),
        format!("{u}:a"),
        format!("{u}:A"),
        format!("{u}:a "),
        format!(" {u}:a"),
        u.clone(),
        format!("{u}\0after nul"),
        format!("{u}:\u{e9}"),
        format!("{u}:e\u{301}"),
        format!("{u}%2F"),
        format!("{u}/"),
        format!("{{{u}}}:timers"),
    ]);
    let all: Vec<TimerRecord> = hostile
        .iter()
        .zip(0u64..)
        .map(|(id, i)| TimerRecord {
            owner_actor: id.clone(),
            target_actor: id.clone(),
            ..timer(id, T0 + i)
        })
        .collect();
    assert!(all.iter().any(|t| t.timer_id.len() == MAX_ACTOR_ID_BYTES));
    for t in &all {
        store.schedule_timer(t).await.expect("schedule");
    }
    for t in &all {
        assert_eq!(
            get(store, &t.timer_id).await.as_ref(),
            Some(t),
            "{:?}",
            t.timer_id
        );
    }
    // Every other one cancelled; the rest claimed under a hostile token.
    let (cancelled, fired): (Vec<_>, Vec<_>) = all.iter().partition(|t| t.due_at_ms % 2 == 0);
    for t in &cancelled {
        assert!(cancel(store, &t.timer_id, T0).await, "{:?}", t.timer_id);
    }
    let token = format!("{u}'\"%*{{}}\0 🦀");
    let claimed = claim(store, T0 + 1_000, LEASE, &token, 1_000).await;
    assert_claimed(&claimed, &fired, &token, T0 + 1_000, LEASE);
    for t in &cancelled {
        assert_eq!(get(store, &t.timer_id).await, None, "{:?}", t.timer_id);
    }
    for t in &fired {
        assert!(
            !complete(store, &t.timer_id, &format!("{u}'\"%*{{}}")).await,
            "a token's prefix completed {:?}",
            t.timer_id
        );
    }
    complete_all(store, &claimed).await;
    for t in &all {
        assert_eq!(get(store, &t.timer_id).await, None, "{:?}", t.timer_id);
    }
    assert_empty(store, "after the test").await;
}

/// Claimers racing over one store: 8 tasks claim 1,000 due timers in small
/// batches until none is left; every timer is claimed exactly once, by
/// one claimer, which then completes it.
pub async fn timers_racing_claimers_claim_each_once(store: Arc<dyn TimerStore>) {
    const TIMERS: u64 = 1_000;
    const CLAIMERS: usize = 8;
    let p = fresh_actor("timer-race");
    let all = timers(&p, TIMERS, |i| T0 + i);
    schedule_all(&*store, &all).await;
    let now = T0 + TIMERS;
    let all_count = all.len();
    let racers: Vec<_> = (0..CLAIMERS)
        .map(|r| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let token = format!("racer-{r}");
                let mut mine = Vec::new();
                loop {
                    let batch = claim(&*store, now, LEASE, &token, 7).await;
                    if batch.is_empty() {
                        return mine;
                    }
                    assert!(
                        dues(&batch).is_sorted(),
                        "a batch is not earliest first: {:?}",
                        dues(&batch)
                    );
                    assert!(batch.iter().all(|c| c.claim == token));
                    mine.extend(batch);
                    assert!(
                        mine.len() <= all_count,
                        "{token} claimed more timers than there are"
                    );
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    let mut claimed = Vec::new();
    for racer in racers {
        claimed.extend(racer.await.expect("a racer panicked"));
    }
    let mut seen = BTreeMap::new();
    for c in &claimed {
        if let Some(other) = seen.insert(c.timer.timer_id.as_str(), c.claim.as_str()) {
            panic!(
                "{:?} was claimed twice, by {other:?} and {:?}",
                c.timer.timer_id, c.claim
            );
        }
    }
    let want: BTreeSet<&str> = all.iter().map(|t| t.timer_id.as_str()).collect();
    let got: BTreeSet<&str> = seen.keys().copied().collect();
    assert_eq!(
        got.len(),
        want.len(),
        "claimed {} of {TIMERS} timers",
        got.len()
    );
    assert_eq!(got, want);
    assert!(claim(&*store, now, LEASE, "late", 1_000).await.is_empty());
    complete_all(&*store, &claimed).await;
    assert_empty(&*store, "after completing every timer").await;
}

/// A claimer that dies (claims and never completes) leaves its timers to
/// another once its lease has run out, not before; the other claimer's
/// own timers are not held up meanwhile.
pub async fn timers_dead_claimer_leaves_timers_to_another(store: Arc<dyn TimerStore>) {
    let store = &*store;
    let p = fresh_actor("timer-dead");
    let lease = Duration::from_secs(5);
    let all = timers(&p, 50, |i| T0 + i);
    schedule_all(store, &all).await;
    let want: Vec<&TimerRecord> = all.iter().collect();
    let dead = claim(store, T0 + 100, lease, "dead", 20).await;
    assert_claimed(&dead, &want[..20], "dead", T0 + 100, lease);
    let live = claim(store, T0 + 100, lease, "live", 100).await;
    assert_claimed(&live, &want[20..], "live", T0 + 100, lease);
    complete_all(store, &live).await;
    assert!(claim(store, T0 + 5_099, lease, "live", 100)
        .await
        .is_empty());
    assert_eq!(next_due(store, T0 + 5_099).await, Some(T0 + 5_100));
    let taken_over = claim(store, T0 + 5_100, lease, "live", 100).await;
    assert_claimed(&taken_over, &want[..20], "live", T0 + 5_100, lease);
    for c in &dead {
        assert!(
            !complete(store, &c.timer.timer_id, "dead").await,
            "the dead claimer's late completion of {:?} succeeded",
            c.timer.timer_id
        );
    }
    complete_all(store, &taken_over).await;
    assert_empty(store, "after completing every timer").await;
}

/// 10,000 timers, scheduled in a scrambled order: claimed in pages of 500
/// (each page earliest first, and after the previous one) and completed,
/// page by page; every timer comes once, none is lost.
pub async fn timers_ten_thousand_claimed_in_pages(store: Arc<dyn TimerStore>) {
    const TIMERS: u64 = 10_000;
    const PAGE: usize = 500;
    let store = &*store;
    let p = fresh_actor("timer-volume");
    // 7,919 is prime, so `i * 7919 % TIMERS` visits every due time once.
    let all = timers(&p, TIMERS, |i| T0 + (i * 7_919) % TIMERS);
    schedule_all(store, &all).await;
    let now = T0 + TIMERS;
    let mut seen = BTreeSet::new();
    let mut last_due = 0;
    loop {
        let page = claim(store, now, LEASE, "pager", PAGE).await;
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= PAGE, "a page of {} timers", page.len());
        let page_dues = dues(&page);
        assert!(page_dues.is_sorted(), "a page is not earliest first");
        assert!(
            page_dues[0] >= last_due,
            "a page starts at {} after one that ended at {last_due}",
            page_dues[0]
        );
        last_due = page_dues[page_dues.len() - 1];
        for c in &page {
            assert!(
                seen.insert(c.timer.timer_id.clone()),
                "{:?} claimed twice",
                c.timer.timer_id
            );
        }
        complete_all(store, &page).await;
    }
    let want: BTreeSet<String> = all.iter().map(|t| t.timer_id.clone()).collect();
    assert_eq!(seen.len(), want.len(), "claimed {} timers", seen.len());
    assert_eq!(seen, want);
    assert_empty(store, "after completing every timer").await;
}

/// One operation of a generated run; numbers are raw and mapped onto the
/// run's state when it runs.
#[derive(Debug, Clone)]
pub enum TimerOp {
    /// Schedule (or reschedule) a timer due `due - 3` ms from the clock.
    Schedule {
        /// Which of the run's timer ids.
        slot: u8,
        /// Due time, from the clock minus 3 ms.
        due: u8,
        /// Payload length and byte.
        payload: u8,
    },
    /// Cancel at the clock.
    Cancel {
        /// Which of the run's timer ids.
        slot: u8,
    },
    /// Claim at the clock.
    Claim {
        /// Which of the run's claim tokens.
        claimer: u8,
        /// Most timers to claim.
        max: u8,
        /// Lease, in ms.
        lease: u8,
    },
    /// Complete with a claimer's token.
    Complete {
        /// Which of the run's timer ids.
        slot: u8,
        /// Which of the run's claim tokens.
        claimer: u8,
    },
    /// Move the clock on.
    Advance {
        /// Milliseconds.
        ms: u8,
    },
    /// `get_timer`.
    Get {
        /// Which of the run's timer ids.
        slot: u8,
    },
    /// `next_due` at the clock.
    NextDue,
}

fn timer_op_strategy() -> impl Strategy<Value = TimerOp> {
    let slot = 0u8..5;
    let claimer = 0u8..3;
    prop_oneof![
        5 => (slot.clone(), 0u8..16, 0u8..6)
            .prop_map(|(slot, due, payload)| TimerOp::Schedule { slot, due, payload }),
        2 => slot.clone().prop_map(|slot| TimerOp::Cancel { slot }),
        4 => (claimer.clone(), 0u8..5, 1u8..20)
            .prop_map(|(claimer, max, lease)| TimerOp::Claim { claimer, max, lease }),
        3 => (slot.clone(), claimer)
            .prop_map(|(slot, claimer)| TimerOp::Complete { slot, claimer }),
        3 => (0u8..16).prop_map(|ms| TimerOp::Advance { ms }),
        1 => slot.prop_map(|slot| TimerOp::Get { slot }),
        1 => Just(TimerOp::NextDue),
    ]
}

/// A timer of the reference model, with its claim and lease end.
#[derive(Debug, Clone)]
struct ModelTimer {
    record: TimerRecord,
    claim: Option<(String, u64)>,
}

impl ModelTimer {
    fn free_at(&self, now: u64) -> bool {
        self.claim.as_ref().is_none_or(|&(_, until)| until <= now)
    }
}

/// The reference model: the trait's documentation, in a few lines.
#[derive(Debug, Default)]
struct TimerModel {
    timers: BTreeMap<String, ModelTimer>,
}

impl TimerModel {
    fn cancel(&mut self, id: &str, now: u64) -> bool {
        let free = self.timers.get(id).is_some_and(|t| t.free_at(now));
        if free {
            self.timers.remove(id);
        }
        free
    }

    fn complete(&mut self, id: &str, token: &str) -> bool {
        let held = self
            .timers
            .get(id)
            .and_then(|t| t.claim.as_ref())
            .is_some_and(|(c, _)| c == token);
        if held {
            self.timers.remove(id);
        }
        held
    }

    /// Due and free timers, earliest first.
    fn claimable(&self, now: u64) -> Vec<&ModelTimer> {
        let mut due: Vec<_> = self
            .timers
            .values()
            .filter(|t| t.record.due_at_ms <= now && t.free_at(now))
            .collect();
        due.sort_by_key(|t| t.record.due_at_ms);
        due
    }

    fn next_due(&self, now: u64) -> Option<u64> {
        self.timers
            .values()
            .map(|t| match &t.claim {
                Some((_, until)) if *until > now => *until,
                _ => t.record.due_at_ms,
            })
            .min()
    }
}

fn ensure<T: PartialEq + Debug>(what: &str, done: usize, got: &T, want: &T) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!(
            "after {done} ops, {what}: the store gave {got:?}, the model says {want:?}"
        ))
    }
}

/// Claims and completes every timer in the store (all of them due and
/// free at `MAX_SEQUENCE`), then checks it is empty.
async fn drain(store: &dyn TimerStore) -> Result<(), String> {
    for round in 0.. {
        if round > 100 {
            return Err("drain: the store hands out timers without end".into());
        }
        let claimed = store
            .claim_due_timers(MAX_SEQUENCE, Duration::from_millis(1), "drain", 1_000)
            .await
            .map_err(|e| format!("drain: {e}"))?;
        if claimed.is_empty() {
            break;
        }
        for c in &claimed {
            let done = store
                .complete_timer(&c.timer.timer_id, &c.claim)
                .await
                .map_err(|e| format!("drain: {e}"))?;
            ensure("drain's completion", 0, &done, &true)?;
        }
    }
    let left = store.next_due(0).await.map_err(|e| format!("drain: {e}"))?;
    ensure("next_due after draining the store", 0, &left, &None)
}

/// Random runs of schedules, reschedules, cancels, claims by three
/// claimers, completions (current and stale), clock moves and reads over
/// five timer ids: every result, and the final state, equal a reference
/// model's. Timers due at the same time may be claimed in any order.
#[allow(clippy::unused_async)] // the suite's harness calls every test as an async fn
pub async fn prop_timers_match_model(store: Arc<dyn TimerStore>) {
    crate::model::run_property(32, vec(timer_op_strategy(), 1..40), |ops| {
        let store = Arc::clone(&store);
        async move { check_timer_model(&*store, &ops).await }
    });
}

async fn check_timer_model(store: &dyn TimerStore, ops: &[TimerOp]) -> Result<(), String> {
    drain(store).await?;
    let p = fresh_actor("prop-timer");
    let slots = [
        format!("{p}/a"),
        format!("{p}/b"),
        format!("{p} \"quoted\" {{x}}"),
        format!("{p}:%*😀"),
        format!("{p}/e"),
    ];
    let tokens = [format!("{p}#0"), format!("{p}#1 'x'"), format!("{p}#2")];
    let mut model = TimerModel::default();
    let mut clock = T0;
    let err = |e: JournalError| e.to_string();
    for (done, op) in ops.iter().enumerate() {
        let what = format!("{op:?} at {clock}");
        match *op {
            TimerOp::Schedule { slot, due, payload } => {
                let id = &slots[usize::from(slot)];
                let mut t = timer(id, (clock + u64::from(due)).saturating_sub(3));
                t.payload = vec![payload; usize::from(payload)];
                store.schedule_timer(&t).await.map_err(err)?;
                model.timers.insert(
                    id.clone(),
                    ModelTimer {
                        record: t,
                        claim: None,
                    },
                );
            }
            TimerOp::Cancel { slot } => {
                let id = &slots[usize::from(slot)];
                let got = store.cancel_timer(id, clock).await.map_err(err)?;
                ensure(&what, done, &got, &model.cancel(id, clock))?;
            }
            TimerOp::Claim {
                claimer,
                max,
                lease,
            } => {
                let token = &tokens[usize::from(claimer)];
                let lease = Duration::from_millis(u64::from(lease));
                let got = store
                    .claim_due_timers(clock, lease, token, usize::from(max))
                    .await
                    .map_err(err)?;
                check_claim(&mut model, &got, clock, lease, token, usize::from(max))
                    .map_err(|e| format!("after {done} ops, {what}: {e}"))?;
            }
            TimerOp::Complete { slot, claimer } => {
                let id = &slots[usize::from(slot)];
                let token = &tokens[usize::from(claimer)];
                let got = store.complete_timer(id, token).await.map_err(err)?;
                ensure(&what, done, &got, &model.complete(id, token))?;
            }
            TimerOp::Advance { ms } => clock += u64::from(ms),
            TimerOp::Get { slot } => {
                let id = &slots[usize::from(slot)];
                let got = store.get_timer(id).await.map_err(err)?;
                let want = model.timers.get(id).map(|t| t.record.clone());
                ensure(&what, done, &got, &want)?;
            }
            TimerOp::NextDue => {
                let got = store.next_due(clock).await.map_err(err)?;
                ensure(&what, done, &got, &model.next_due(clock))?;
            }
        }
    }
    for id in &slots {
        let got = store.get_timer(id).await.map_err(err)?;
        let want = model.timers.get(id).map(|t| t.record.clone());
        ensure(&format!("final get_timer({id:?})"), ops.len(), &got, &want)?;
    }
    let got = store.next_due(clock).await.map_err(err)?;
    ensure("final next_due", ops.len(), &got, &model.next_due(clock))
}

/// Checks a claim's result against the model, then records it there: as
/// many timers as are claimable (up to `max`), each claimable, with the
/// earliest due times (ties in any order), earliest first, each as stored
/// and under the claim's token and lease.
fn check_claim(
    model: &mut TimerModel,
    got: &[ClaimedTimer],
    now: u64,
    lease: Duration,
    token: &str,
    max: usize,
) -> Result<(), String> {
    let claimable = model.claimable(now);
    let want_dues: Vec<u64> = claimable
        .iter()
        .take(max)
        .map(|t| t.record.due_at_ms)
        .collect();
    if dues(got) != want_dues {
        return Err(format!(
            "claimed {:?} due at {:?}; the model has {:?} claimable, due at {:?}",
            ids(got),
            dues(got),
            claimable
                .iter()
                .map(|t| &t.record.timer_id)
                .collect::<Vec<_>>(),
            claimable
                .iter()
                .map(|t| t.record.due_at_ms)
                .collect::<Vec<_>>()
        ));
    }
    let until = lease_until(now, lease);
    let mut seen = BTreeSet::new();
    for c in got {
        let id = &c.timer.timer_id;
        if !seen.insert(id) {
            return Err(format!("{id:?} claimed twice in one claim"));
        }
        let Some(stored) = claimable.iter().find(|t| &t.record.timer_id == id) else {
            return Err(format!("claimed {id:?}, which is not claimable"));
        };
        if c.timer != stored.record || c.claim != token || c.lease_until_ms != until {
            return Err(format!(
                "claimed {c:?}; the model has {:?} under {token:?} until {until}",
                stored.record
            ));
        }
    }
    for c in got {
        if let Some(t) = model.timers.get_mut(&c.timer.timer_id) {
            t.claim = Some((token.to_owned(), until));
        }
    }
    Ok(())
}
