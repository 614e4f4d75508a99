//! An online backup: a consistent copy of a journal in use, which opens
//! like the original and holds every entry acknowledged before it began.

use std::path::PathBuf;
use std::sync::Arc;

use futures::future::join_all;
use journal_core::journal_entry::Entry;
use journal_core::{JournalEntry, JournalStorage};
use journal_sqlite::SqliteJournalStorage;

fn file(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("journal-sqlite-backup");
    std::fs::create_dir_all(&dir).expect("temporary directory");
    dir.join(format!("{name}-{}.db", journal_core::new_entry_id()))
}

fn entry(actor: &str, sequence: u64) -> JournalEntry {
    JournalEntry::new(
        actor,
        sequence,
        Entry::message_received(format!("m{sequence}"), "T", vec![7; 200]),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_appends_run_is_a_whole_journal() {
    let (source, copy) = (file("source"), file("copy"));
    let storage = Arc::new(SqliteJournalStorage::new(&source).await.expect("create"));
    for actor in ["a", "b", "c"] {
        let batch: Vec<_> = (1..=500).map(|s| entry(actor, s)).collect();
        storage.append_batch(&batch).await.expect("fill");
    }
    // Appends keep coming while the copy is made.
    let writers: Vec<_> = ["a", "b", "c"]
        .into_iter()
        .map(|actor| {
            let storage = Arc::clone(&storage);
            tokio::spawn(async move {
                for s in 501..=900 {
                    storage
                        .append_entry(&entry(actor, s))
                        .await
                        .expect("append");
                }
            })
        })
        .collect();
    storage.backup_to(&copy).await.expect("backup");
    for writer in join_all(writers).await {
        writer.expect("writer");
    }
    let refused = storage.backup_to(&copy).await;
    assert!(refused.is_err(), "an existing file is not overwritten");

    let restored = SqliteJournalStorage::new(&copy)
        .await
        .expect("the copy opens");
    assert!(restored.integrity_check().await.expect("check").is_empty());
    for actor in ["a", "b", "c"] {
        let highest = restored.highest_sequence(actor).await.expect("highest");
        assert!((500..=900).contains(&highest), "{actor}: {highest}");
        let entries = restored.replay_from(actor, 1).await.expect("replay");
        // Whole: every entry up to its highest, as the source holds it.
        assert_eq!(entries.len() as u64, highest, "{actor}");
        let original = storage
            .replay_range(actor, 1, highest, usize::MAX)
            .await
            .expect("source");
        assert!(
            entries == original,
            "{actor}: the copy holds what the source did"
        );
    }
    restored.close().await;
    if let Ok(storage) = Arc::try_unwrap(storage) {
        storage.close().await;
    }
}
