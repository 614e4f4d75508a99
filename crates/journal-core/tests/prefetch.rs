//! `prefetched_replay`: pages asked for ahead, two at once, the second a
//! guess from where the first will end; every entry once, in order, from
//! wherever the journal starts, whether it ends on a page boundary or not.

use futures::TryStreamExt;
use journal_core::journal_entry::Entry;
use journal_core::{prefetched_replay, JournalEntry, JournalStorage};
use journal_memory::MemoryJournalStorage;

async fn journal(actor: &str, n: u64) -> MemoryJournalStorage {
    let storage = MemoryJournalStorage::new();
    let entries: Vec<JournalEntry> = (1..=n)
        .map(|q| {
            JournalEntry::new(
                actor,
                q,
                Entry::message_received(format!("m-{q}"), "T", vec![]),
            )
        })
        .collect();
    storage.append_batch(&entries).await.expect("append");
    storage
}

async fn sequences(
    storage: &MemoryJournalStorage,
    actor: &str,
    from: u64,
    page: usize,
) -> Vec<u64> {
    prefetched_replay(storage.clone(), actor, from, page)
        .map_ok(|e| e.sequence)
        .try_collect()
        .await
        .expect("replay")
}

#[tokio::test]
async fn every_entry_once_in_order_from_anywhere() {
    for n in [0u64, 1, 4, 5, 6, 20, 23] {
        let storage = journal("a", n).await;
        for page in [1usize, 5, 7, 100] {
            for from in [0u64, 1, 3, 6, n, n + 1] {
                let want: Vec<u64> = (from.max(1)..=n).collect();
                assert_eq!(
                    sequences(&storage, "a", from, page).await,
                    want,
                    "{n} entries, pages of {page}, from {from}"
                );
            }
        }
    }
}

/// A journal whose first stored entry is past where the replay starts (a
/// truncated prefix): the first page starts there, so the page guessed
/// beside it is wrong, dropped, and asked for again.
#[tokio::test]
async fn a_truncated_prefix_is_no_gap_and_no_duplicate() {
    let storage = journal("t", 23).await;
    storage.truncate_to("t", 7).await.expect("truncate");
    for page in [1usize, 3, 5, 16] {
        assert_eq!(
            sequences(&storage, "t", 1, page).await,
            (8..=23).collect::<Vec<_>>(),
            "pages of {page}"
        );
    }
}
