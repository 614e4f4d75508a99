//! The due-timer index on the standalone server and on the cluster,
//! beyond the shared suite (`timer_suite!` in conformance.rs and
//! cluster.rs): what order a claim across shards keeps, claims larger than
//! one round, and where the keys are.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use journal_core::{TimerRecord, TimerStore};
use journal_redis::keys::{timer_shard_of, Keys, TIMER_SHARDS};
use journal_redis::timers::CLAIM_ROUND;
use journal_redis::RedisJournalStorage;

fn timer(id: &str, due: u64) -> TimerRecord {
    TimerRecord {
        timer_id: id.to_owned(),
        owner_actor: "owner".into(),
        target_actor: "target".into(),
        target_type: "Kind".into(),
        due_at_ms: due,
        payload: id.as_bytes().to_vec(),
    }
}

/// `n` timers with distinct due times 1..=n, in a scrambled order, over
/// every shard.
async fn schedule_spread(store: &RedisJournalStorage, n: u64) {
    let timers: Vec<TimerRecord> = (1..=n)
        .map(|i| timer(&format!("x-{i}"), (i * 7_919) % n + 1))
        .collect();
    let shards: BTreeSet<u16> = timers.iter().map(|t| timer_shard_of(&t.timer_id)).collect();
    assert_eq!(shards.len(), usize::from(TIMER_SHARDS));
    futures::stream::iter(&timers)
        .map(|t| store.schedule_timer(t))
        .buffer_unordered(32)
        .try_collect::<Vec<()>>()
        .await
        .expect("schedule");
}

/// A claim of `max` among timers on every shard gets the `max` earliest
/// of all of them, in due order, when nobody else claims meanwhile; a
/// claim larger than [`CLAIM_ROUND`] takes several rounds and keeps that
/// order across them; the leased ones are skipped by later claims and
/// found again after the lease.
async fn claim_across_shards_in_order(store: RedisJournalStorage) {
    let n = 2 * CLAIM_ROUND as u64 + 250;
    schedule_spread(&store, n).await;
    let lease = Duration::from_secs(1);
    let first = store
        .claim_due_timers(10_000, lease, "h1", 25)
        .await
        .expect("claim");
    let dues: Vec<u64> = first.iter().map(|c| c.timer.due_at_ms).collect();
    assert_eq!(dues, (1..=25).collect::<Vec<_>>());
    assert_eq!(store.next_due(10_000).await.expect("next"), Some(26));
    let rest = store
        .claim_due_timers(10_000, lease, "h2", usize::MAX)
        .await
        .expect("claim");
    let dues: Vec<u64> = rest.iter().map(|c| c.timer.due_at_ms).collect();
    assert_eq!(dues, (26..=n).collect::<Vec<_>>());
    assert_eq!(store.next_due(10_000).await.expect("next"), Some(11_000));
    let again = store
        .claim_due_timers(11_000, lease, "h3", 3)
        .await
        .expect("claim");
    let dues: Vec<u64> = again.iter().map(|c| c.timer.due_at_ms).collect();
    assert_eq!(dues, [1, 2, 3]);
    let done: Vec<bool> = futures::stream::iter(first.iter().skip(3).chain(&rest).chain(&again))
        .map(|c| store.complete_timer(&c.timer.timer_id, &c.claim))
        .buffer_unordered(32)
        .try_collect()
        .await
        .expect("complete");
    assert!(done.iter().all(|&d| d));
    assert_eq!(store.next_due(0).await.expect("next"), None);
}

#[tokio::test]
async fn claims_across_shards_take_the_earliest_overall() {
    if let Some(store) = common::storage(common::test_options()).await {
        claim_across_shards_in_order(store).await;
    }
}

#[tokio::test]
async fn claims_across_shards_take_the_earliest_overall_on_the_cluster() {
    if let Some(store) = common::cluster_storage(common::test_options()).await {
        claim_across_shards_in_order(store).await;
    }
}

/// The keys are where the crate docs say, one set per shard; a record
/// that does not decode is an error, never a panic.
#[tokio::test]
async fn timers_are_kept_under_their_shards_keys() {
    let Some(store) = common::storage(common::test_options()).await else {
        return;
    };
    store
        .schedule_timer(&timer("k", 5))
        .await
        .expect("schedule");
    let keys = Keys::new(store.key_prefix());
    let shard = keys.timer_shard(timer_shard_of("k"));
    let raw = common::raw_client().await;
    let due_score: f64 = common::raw(&raw, redis::cmd("ZSCORE").arg(shard.due()).arg("k")).await;
    assert!((due_score - 5.0).abs() < f64::EPSILON);
    let present: bool =
        common::raw(&raw, redis::cmd("HEXISTS").arg(shard.records()).arg("k")).await;
    assert!(present);
    let () = common::raw(
        &raw,
        redis::cmd("HSET")
            .arg(shard.records())
            .arg("k")
            .arg("garbage"),
    )
    .await;
    assert!(store.get_timer("k").await.is_err());
    assert!(store
        .claim_due_timers(10, Duration::from_secs(1), "h", 1)
        .await
        .is_err());
}
