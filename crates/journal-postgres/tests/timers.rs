//! The due-timer index on the real server, beyond the shared suite: the
//! upgrade of a schema written before timers existed.

mod common;

use std::time::Duration;

use journal_core::journal_entry::Entry;
use journal_core::{JournalEntry, JournalStorage, TimerRecord, TimerStore};
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
