//! Replay reads a page's rows and nothing else, whatever the table's
//! statistics: on a schema just filled, never analysed, the page query's
//! plan has no sort and touches only the page's rows; and a gap in a
//! damaged journal does not end a page early.

mod common;

use futures::TryStreamExt;
use journal_core::{journal_entry::Entry, JournalEntry, JournalStorage};
use journal_postgres::PostgresJournalStorage;

fn entry(actor: &str, sequence: u64) -> JournalEntry {
    JournalEntry::new(
        actor,
        sequence,
        Entry::message_received(format!("m{sequence}"), "T", vec![7u8; 300]),
    )
}

async fn fill(storage: &PostgresJournalStorage, actor: &str, n: u64) -> Vec<JournalEntry> {
    let entries: Vec<JournalEntry> = (1..=n).map(|s| entry(actor, s)).collect();
    for chunk in entries.chunks(1_000) {
        storage.append_batch(chunk).await.expect("append");
    }
    entries
}

/// `EXPLAIN ANALYZE` of the replay page query, as the
/// storage prepares it, for a page from the middle of the journal.
async fn plan(storage: &PostgresJournalStorage, actor: &str, from: i64, page: i64) -> String {
    let client = storage.pool().get().await.expect("a connection");
    let sql = format!("EXPLAIN ANALYZE {}", storage.replay_page_query());
    let rows = client
        .query(&sql, &[&actor.as_bytes(), &from, &i64::MAX, &page])
        .await
        .expect("explain");
    rows.iter()
        .map(|row| row.get::<_, String>(0))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_schema_reads_pages_without_sorting() {
    let Some(storage) = common::storage(common::test_options()).await else {
        return;
    };
    {
        let client = storage.pool().get().await.expect("a connection");
        client
            .batch_execute(&format!(
                "ALTER TABLE {}.entries SET (autovacuum_enabled = false)",
                storage.schema()
            ))
            .await
            .expect("no autovacuum: no statistics");
    }
    let written = fill(&storage, "big", 30_000).await;
    let plan = plan(&storage, "big", 10_000, 5_000).await;
    assert!(!plan.contains("Sort"), "no sort: {plan}");
    // Every node returns at most the page's rows, not the 20,000 after it
    // (`actual time=.. rows=N`).
    let rows: Vec<u64> = plan
        .split("actual time=")
        .skip(1)
        .filter_map(|rest| {
            let after = rest.split("rows=").nth(1)?;
            after
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .collect();
    assert!(!rows.is_empty(), "{plan}");
    assert!(rows.iter().all(|&r| r <= 5_000), "{rows:?} in {plan}");

    let replayed: Vec<JournalEntry> = storage
        .replay_stream("big", 1)
        .try_collect()
        .await
        .expect("replay");
    assert!(replayed == written, "every entry, in order, as written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_in_a_damaged_journal_does_not_end_a_page() {
    let Some(storage) = common::storage(common::test_options()).await else {
        return;
    };
    fill(&storage, "gappy", 12).await;
    {
        let client = storage.pool().get().await.expect("a connection");
        client
            .execute(
                &format!(
                    "DELETE FROM {}.entries WHERE actor_id = $1 AND sequence BETWEEN 4 AND 6",
                    storage.schema()
                ),
                &[&"gappy".as_bytes()],
            )
            .await
            .expect("damage the journal");
    }
    let sequences = |entries: Vec<JournalEntry>| -> Vec<u64> {
        entries.into_iter().map(|e| e.sequence).collect()
    };
    let page = storage
        .replay_range("gappy", 1, u64::MAX, 5)
        .await
        .expect("page");
    assert_eq!(sequences(page), [1, 2, 3, 7, 8]);
    let page = storage
        .replay_range("gappy", 2, 9, 100)
        .await
        .expect("page");
    assert_eq!(sequences(page), [2, 3, 7, 8, 9]);
    let all = storage.replay_from("gappy", 0).await.expect("all");
    assert_eq!(sequences(all), [1, 2, 3, 7, 8, 9, 10, 11, 12]);
}
