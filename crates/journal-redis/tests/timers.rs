//! The due-timer index on the standalone server and on the cluster,
//! beyond the shared suite: how the shards spread and what order a claim
//! across shards keeps.

mod common;

use std::time::Duration;

use journal_core::{TimerRecord, TimerStore};
use journal_redis::keys::{timer_shard_of, Keys, TIMER_SHARDS};
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

/// Ids of `n` timers with distinct, shuffled due times over every shard:
/// `(id, due)`, due from 1 to `n`.
fn spread(prefix: &str, n: u64) -> Vec<(String, u64)> {
    (1..=n)
        .map(|i| (format!("{prefix}-{i}"), (i * 7_919) % n + 1))
        .collect()
}

/// A claim of `max` among timers on every shard gets the `max` earliest
/// of all of them, in due order, when nobody else claims meanwhile; the
/// leased ones are skipped by later claims and found again after the
/// lease.
async fn claims_across_shards_take_the_earliest_overall(store: RedisJournalStorage) {
    let timers = spread("x", 400);
    let shards: std::collections::BTreeSet<u16> =
        timers.iter().map(|(id, _)| timer_shard_of(id)).collect();
    assert_eq!(shards.len(), usize::from(TIMER_SHARDS));
    for (id, due) in &timers {
        store
            .schedule_timer(&timer(id, *due))
            .await
            .expect("schedule");
    }
    let lease = Duration::from_millis(1_000);
    let first = store
        .claim_due_timers(10_000, lease, "h1", 25)
        .await
        .expect("claim");
    let dues: Vec<u64> = first.iter().map(|c| c.timer.due_at_ms).collect();
    assert_eq!(dues, (1..=25).collect::<Vec<_>>());
    assert_eq!(store.next_due(10_000).await.expect("next"), Some(26));
    // Rounds of CLAIM_ROUND: one call claims the rest, in order.
    let rest = store
        .claim_due_timers(10_000, lease, "h2", usize::MAX)
        .await
        .expect("claim");
    let dues: Vec<u64> = rest.iter().map(|c| c.timer.due_at_ms).collect();
    assert_eq!(dues, (26..=400).collect::<Vec<_>>());
    assert_eq!(store.next_due(10_000).await.expect("next"), Some(11_000));
    let again = store
        .claim_due_timers(11_000, lease, "h3", 3)
        .await
        .expect("claim");
    let dues: Vec<u64> = again.iter().map(|c| c.timer.due_at_ms).collect();
    assert_eq!(dues, [1, 2, 3]);
    for c in first.iter().skip(3).chain(&rest) {
        assert!(store
            .complete_timer(&c.timer.timer_id, &c.claim)
            .await
            .expect("complete"));
    }
    for c in &again {
        assert!(store
            .complete_timer(&c.timer.timer_id, "h3")
            .await
            .expect("complete"));
    }
    assert_eq!(store.next_due(0).await.expect("next"), None);
}

/// Hosts claiming at once never get one timer twice, and together get all.
async fn concurrent_claims_share_the_due_timers(store: RedisJournalStorage) {
    for (id, due) in spread("c", 300) {
        store
            .schedule_timer(&timer(&id, due))
            .await
            .expect("schedule");
    }
    let hosts: Vec<_> = (0..6)
        .map(|h| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let got = store
                        .claim_due_timers(1_000, Duration::from_secs(60), &format!("h{h}"), 7)
                        .await
                        .expect("claim");
                    if got.is_empty() {
                        return mine;
                    }
                    mine.extend(got.into_iter().map(|c| c.timer.timer_id));
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for host in hosts {
        all.extend(host.await.expect("host"));
    }
    all.sort();
    let before = all.len();
    all.dedup();
    assert_eq!(before, all.len(), "a timer was claimed twice");
    assert_eq!(all.len(), 300);
}

/// The semantics of each call on one shard, with ids that are Lua and
/// Redis metacharacters.
async fn one_timer_through_its_life(store: RedisJournalStorage) {
    let odd = "t \u{0}'\"{}]) redis.call('FLUSHALL') --\u{1F980}";
    let lease = Duration::from_millis(500);
    store
        .schedule_timer(&timer(odd, 200))
        .await
        .expect("schedule");
    assert_eq!(
        store.get_timer(odd).await.expect("get"),
        Some(timer(odd, 200))
    );
    assert!(store
        .claim_due_timers(199, lease, "h1", 5)
        .await
        .expect("not due")
        .is_empty());
    let claimed = store
        .claim_due_timers(200, lease, "h1", 5)
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].lease_until_ms, 700);
    assert_eq!(
        store.get_timer(odd).await.expect("get"),
        Some(timer(odd, 200))
    );
    assert!(!store.cancel_timer(odd, 699).await.expect("leased"));
    assert_eq!(store.next_due(300).await.expect("next"), Some(700));
    assert_eq!(store.next_due(700).await.expect("next"), Some(200));
    assert!(!store.complete_timer(odd, "h2").await.expect("not h2's"));
    let again = store
        .claim_due_timers(700, lease, "h2", 5)
        .await
        .expect("claim");
    assert_eq!(again.len(), 1);
    assert!(!store.complete_timer(odd, "h1").await.expect("lost"));
    store
        .schedule_timer(&timer(odd, 900))
        .await
        .expect("replace");
    assert!(!store.complete_timer(odd, "h2").await.expect("replaced"));
    assert_eq!(
        store.get_timer(odd).await.expect("get"),
        Some(timer(odd, 900))
    );
    assert!(store.cancel_timer(odd, 0).await.expect("cancel"));
    assert_eq!(store.get_timer(odd).await.expect("get"), None);
    assert_eq!(store.next_due(0).await.expect("next"), None);
}

mod standalone {
    use super::*;

    #[tokio::test]
    async fn claims_across_shards_take_the_earliest_overall() {
        if let Some(store) = common::storage(common::test_options()).await {
            super::claims_across_shards_take_the_earliest_overall(store).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_claims_share_the_due_timers() {
        if let Some(store) = common::storage(common::test_options()).await {
            super::concurrent_claims_share_the_due_timers(store).await;
        }
    }

    #[tokio::test]
    async fn one_timer_through_its_life() {
        if let Some(store) = common::storage(common::test_options()).await {
            super::one_timer_through_its_life(store).await;
        }
    }

    /// The keys are where the crate docs say, one set per shard.
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
        let score: f64 = common::raw(&raw, redis::cmd("ZSCORE").arg(shard.due()).arg("k")).await;
        assert!((score - 5.0).abs() < f64::EPSILON);
        let present: bool =
            common::raw(&raw, redis::cmd("HEXISTS").arg(shard.records()).arg("k")).await;
        assert!(present);
        // A record that does not decode is an error, not a panic.
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
}

mod cluster {
    use super::*;

    #[tokio::test]
    async fn claims_across_shards_take_the_earliest_overall() {
        if let Some(store) = common::cluster_storage(common::test_options()).await {
            super::claims_across_shards_take_the_earliest_overall(store).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_claims_share_the_due_timers() {
        if let Some(store) = common::cluster_storage(common::test_options()).await {
            super::concurrent_claims_share_the_due_timers(store).await;
        }
    }

    #[tokio::test]
    async fn one_timer_through_its_life() {
        if let Some(store) = common::cluster_storage(common::test_options()).await {
            super::one_timer_through_its_life(store).await;
        }
    }
}
