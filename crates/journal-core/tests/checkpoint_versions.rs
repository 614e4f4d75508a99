//! `CheckpointManager::load_latest` and a checkpoint of another state
//! schema version: reported, never dropped (contract rule 16).

use std::sync::Arc;

use journal_core::{CheckpointManager, CheckpointPolicy, JournalError, JournalStorage};
use journal_memory::MemoryJournalStorage;

#[tokio::test]
async fn a_checkpoint_of_another_schema_version_is_reported_not_dropped() {
    let storage: Arc<dyn JournalStorage> = Arc::new(MemoryJournalStorage::new());
    let manager = |version: u32| {
        CheckpointManager::new(
            Arc::clone(&storage),
            CheckpointPolicy {
                schema_version: version,
                ..CheckpointPolicy::default()
            },
        )
    };
    for sequence in 1..=5 {
        let entry = journal_core::JournalEntry::new(
            "a",
            sequence,
            journal_core::journal_entry::Entry::message_received(
                format!("m{sequence}"),
                "T",
                Vec::new(),
            ),
        );
        storage.append_entry(&entry).await.expect("appended");
    }
    manager(1)
        .save("a", 5, b"state v1".to_vec())
        .await
        .expect("saved");
    let loaded = manager(1)
        .load_latest("a", Ok::<_, String>)
        .await
        .expect("loads")
        .expect("one checkpoint");
    assert_eq!((loaded.sequence, loaded.value), (5, b"state v1".to_vec()));
    match manager(2).load_latest("a", Ok::<_, String>).await {
        Err(JournalError::RecoveryFailed { reason, .. }) => {
            assert!(reason.contains("schema version 1"), "{reason}");
            assert!(reason.contains("version 2"), "{reason}");
        }
        other => panic!("expected the version reported, got {other:?}"),
    }
    // Loaded with its version, to migrate.
    let migrated = manager(2)
        .load_newest_at("a", u64::MAX, |state, version| {
            Ok::<_, journal_core::checkpoint::CheckpointRejection>((version, state))
        })
        .await
        .expect("loads")
        .expect("one checkpoint");
    assert_eq!(migrated.value, (1, b"state v1".to_vec()));
}
