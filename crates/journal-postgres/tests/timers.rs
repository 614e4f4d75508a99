//! The due-timer index on the real server, beyond the shared suite: the
//! upgrade of a schema written before timers existed.

mod common;

use std::time::Duration;

use journal_core::journal_entry::Entry;
use journal_core::{JournalEntry, JournalError, JournalStorage, TimerRecord, TimerStore};
use journal_postgres::{PostgresJournalStorage, PostgresOptions};

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

/// A schema at version 2 (as journal-postgres wrote it before timers) is
/// upgraded on open: its entries stay, and timers work at once.
#[tokio::test]
async fn version_2_schema_is_upgraded_and_gets_timers() {
    let Some(storage) = common::storage(common::test_options()).await else {
        return;
    };
    let schema = common::fresh_schema();
    let client = storage.pool().get().await.expect("client");
    let migrations = journal_postgres::migrate::migrations(&schema);
    client
        .batch_execute(&format!(
            "CREATE SCHEMA {schema};
             CREATE TABLE {schema}.journal_schema (version INT NOT NULL);
             INSERT INTO {schema}.journal_schema VALUES (1), (2);
             {}
             {}",
            migrations[0], migrations[1]
        ))
        .await
        .expect("version 2 schema");
    let old = JournalEntry::new("veteran", 1, Entry::message_received("m-1", "T", vec![7]));
    client
        .query(
            &format!("SELECT * FROM {schema}.append($1, $2, $3, $4)"),
            &[
                &old.actor_id.as_bytes(),
                &vec![1_i64],
                &vec![old.id.as_str()],
                &vec![prost::Message::encode_to_vec(&old)],
            ],
        )
        .await
        .expect("version 2 append");
    let upgraded = PostgresJournalStorage::open(
        &common::url(),
        PostgresOptions {
            schema: schema.clone(),
            ..common::test_options()
        },
    )
    .await
    .expect("open upgrades");
    assert_eq!(
        upgraded.replay_from("veteran", 1).await.expect("replay"),
        vec![old]
    );
    let version: i32 = client
        .query_one(
            &format!("SELECT max(version) FROM {schema}.journal_schema"),
            &[],
        )
        .await
        .expect("version")
        .get(0);
    assert_eq!(version, journal_postgres::SCHEMA_VERSION);

    upgraded
        .schedule_timer(&timer("t-late", 2_000))
        .await
        .expect("schedule");
    upgraded
        .schedule_timer(&timer("t-early", 1_000))
        .await
        .expect("schedule");
    assert_eq!(upgraded.next_due(0).await.expect("next"), Some(1_000));
    let claimed = upgraded
        .claim_due_timers(5_000, Duration::from_secs(30), "host-a", 10)
        .await
        .expect("claim");
    let ids: Vec<&str> = claimed.iter().map(|c| c.timer.timer_id.as_str()).collect();
    assert_eq!(ids, ["t-early", "t-late"]);
    assert_eq!(claimed[0].timer, timer("t-early", 1_000));
    assert_eq!(claimed[0].lease_until_ms, 35_000);
    for c in &claimed {
        assert!(upgraded
            .complete_timer(&c.timer.timer_id, "host-a")
            .await
            .expect("complete"));
    }
    assert_eq!(upgraded.next_due(0).await.expect("next"), None);
}

/// The semantics of each call, on one store.
#[tokio::test]
async fn timers_are_claimed_in_due_order_under_a_lease() {
    let Some(store) = common::storage(common::test_options()).await else {
        return;
    };
    let odd = "t \u{0}'\"{}; DROP TABLE x; --\u{1F980}";
    for (id, due) in [("a", 300), ("b", 100), (odd, 200), ("later", 10_000)] {
        store
            .schedule_timer(&timer(id, due))
            .await
            .expect("schedule");
    }
    assert_eq!(
        store.get_timer(odd).await.expect("get"),
        Some(timer(odd, 200))
    );
    assert_eq!(store.get_timer("none").await.expect("get"), None);
    assert_eq!(store.next_due(0).await.expect("next"), Some(100));

    let lease = Duration::from_millis(500);
    let first = store
        .claim_due_timers(1_000, lease, "h1", 2)
        .await
        .expect("claim");
    let ids: Vec<&str> = first.iter().map(|c| c.timer.timer_id.as_str()).collect();
    assert_eq!(ids, ["b", odd]);
    assert!(first
        .iter()
        .all(|c| c.claim == "h1" && c.lease_until_ms == 1_500));
    // The earliest unleased due time is now "a"'s.
    assert_eq!(store.next_due(1_000).await.expect("next"), Some(300));
    let second = store
        .claim_due_timers(1_000, lease, "h2", 10)
        .await
        .expect("claim");
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].timer.timer_id, "a");
    // Everything due is leased: look again when the first lease ends.
    assert_eq!(store.next_due(1_000).await.expect("next"), Some(1_500));
    assert!(store
        .claim_due_timers(1_000, lease, "h3", 10)
        .await
        .expect("claim")
        .is_empty());
    // Leased timers are not cancelled; a wrong claim completes nothing.
    assert!(!store.cancel_timer("b", 1_000).await.expect("cancel"));
    assert!(!store.complete_timer("b", "h2").await.expect("complete"));
    assert!(store.complete_timer("b", "h1").await.expect("complete"));
    assert!(!store.complete_timer("b", "h1").await.expect("again"));
    // After the lease, another host claims; the first one's claim is lost.
    let again = store
        .claim_due_timers(1_600, lease, "h4", 10)
        .await
        .expect("claim");
    let ids: Vec<&str> = again.iter().map(|c| c.timer.timer_id.as_str()).collect();
    assert_eq!(ids, [odd, "a"]);
    assert!(!store.complete_timer(odd, "h1").await.expect("lost"));
    assert!(store.complete_timer(odd, "h4").await.expect("complete"));
    // An expired lease may be cancelled; rescheduling drops the claim.
    assert!(store.cancel_timer("a", 2_100).await.expect("cancel"));
    assert!(!store.cancel_timer("a", 2_100).await.expect("gone"));
    assert!(store.cancel_timer("later", 0).await.expect("cancel"));
    assert_eq!(store.next_due(0).await.expect("next"), None);
    store
        .schedule_timer(&timer("r", 100))
        .await
        .expect("schedule");
    let claimed = store
        .claim_due_timers(100, lease, "h5", 1)
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1);
    store
        .schedule_timer(&timer("r", 150))
        .await
        .expect("replace");
    assert!(!store.complete_timer("r", "h5").await.expect("replaced"));
    assert!(store.cancel_timer("r", 100).await.expect("cancel"));
    assert!(store
        .claim_due_timers(100, lease, "h6", 0)
        .await
        .expect("max 0")
        .is_empty());

    match store.schedule_timer(&timer("", 1)).await {
        Err(JournalError::InvalidEntry(_)) => {}
        other => panic!("an empty id must be refused, got {other:?}"),
    }
}

/// Hosts claiming at once never get one timer twice, and together get all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claims_share_the_due_timers() {
    let Some(store) = common::storage(common::test_options()).await else {
        return;
    };
    for i in 0..300u64 {
        store
            .schedule_timer(&timer(&format!("c-{i}"), i))
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
