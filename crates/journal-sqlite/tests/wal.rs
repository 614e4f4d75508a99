//! The write-ahead log under sustained appends: checkpoints run on their
//! own thread, and the log still starts over instead of growing.

use std::path::PathBuf;

use journal_core::journal_entry::Entry;
use journal_core::{JournalEntry, JournalStorage};
use journal_sqlite::SqliteJournalStorage;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_stays_bounded_while_appends_run() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("journal-sqlite-wal");
    std::fs::create_dir_all(&dir).expect("temporary directory");
    let path = dir.join(format!("{}.db", journal_core::new_entry_id()));
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    let storage = SqliteJournalStorage::new(&path).await.expect("create");

    // 300 commits of 48 entries of 4 KiB: about 60 MiB through the log.
    let (batches, per_batch, size) = (300_u64, 48_u64, 4096);
    let mut largest = 0;
    for b in 0..batches {
        let actor = format!("writer-{}", b % 4);
        let first = b / 4 * per_batch + 1;
        let batch: Vec<_> = (first..first + per_batch)
            .map(|s| {
                JournalEntry::new(
                    actor.as_str(),
                    s,
                    Entry::message_received(format!("m-{b}-{s}"), "T", vec![(s % 251) as u8; size]),
                )
            })
            .collect();
        storage.append_batch(&batch).await.expect("append");
        largest = largest.max(std::fs::metadata(&wal).expect("the log").len());
    }
    let written = batches * per_batch * size as u64;
    // The checkpointer is kicked at 1,000 frames (of 4 KiB plus a 24-byte
    // header); the writer checkpoints itself at 4,000 if the log has not
    // started over by then. One transaction may pass that: a group commit
    // (at most 512 operations), or an indexing, which writes only keys
    // (about 14 bytes per waiting entry, 4 MiB of entries at most).
    let bound = 5_500 * (4096 + 24);
    assert!(
        largest <= bound,
        "the log reached {largest} bytes ({written} bytes appended), more than {bound}"
    );
    for a in 0..4 {
        let actor = format!("writer-{a}");
        let stored = storage.replay_from(&actor, 1).await.expect("replay");
        assert_eq!(stored.len() as u64, batches / 4 * per_batch);
        assert!(stored.iter().zip(1..).all(|(e, s)| e.sequence == s));
    }
    assert_eq!(
        storage.integrity_check().await.expect("check"),
        Vec::<String>::new()
    );
    storage.close().await;
    // The last connection folded the log into the file and removed it.
    assert!(!wal.exists());
}
