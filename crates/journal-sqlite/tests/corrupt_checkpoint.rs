//! A checkpoint whose stored bytes are damaged in the file (not only its
//! state): recovery reports and skips it, falling back to the previous
//! one, unless configured to fail (contract rule 16).

use std::path::PathBuf;

use journal_conformance::facet::{account_actor, message, OutsideWorld};
use journal_core::{DurabilityConfig, JournalError, JournalStorage};
use journal_sqlite::SqliteJournalStorage;

fn file() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("journal-sqlite-corrupt");
    std::fs::create_dir_all(&dir).expect("temporary directory");
    dir.join(format!("corrupt-{}.db", journal_core::new_entry_id()))
}

#[tokio::test]
async fn a_checkpoint_row_that_does_not_decode_is_skipped() {
    let path = file();
    let config = DurabilityConfig {
        checkpoint_interval: 4,
        ..DurabilityConfig::default()
    };
    let world = OutsideWorld::default();
    let storage = SqliteJournalStorage::new(&path).await.expect("opens");
    let (mut first, _) = account_actor(storage.clone(), "acct", config.clone(), &world);
    for n in 0..12 {
        first
            .send(message(&format!("m{n}"), "deposit", 10))
            .await
            .expect("handled");
    }
    let before = first.behavior().clone();
    drop(first);
    let checkpoints = storage.list_checkpoints("acct").await.expect("lists");
    assert!(checkpoints.len() >= 2, "{checkpoints:?}");
    let newest = *checkpoints.last().expect("newest");
    storage.close().await;
    // The newest checkpoint's row, damaged: no protobuf.
    let damaged = rusqlite::Connection::open(&path)
        .expect("opens the file")
        .execute(
            "UPDATE checkpoints SET checkpoint = x'0a0100ff' WHERE actor_id = 'acct' AND sequence = ?1",
            [i64::try_from(newest).expect("small")],
        )
        .expect("damages the row");
    assert_eq!(damaged, 1);

    let storage = SqliteJournalStorage::new(&path).await.expect("opens again");
    let strict = DurabilityConfig {
        fail_on_corrupt_checkpoint: true,
        ..config.clone()
    };
    let (mut failing, _) = account_actor(storage.clone(), "acct", strict, &world);
    assert!(matches!(
        failing.activate().await,
        Err(JournalError::CorruptCheckpoint { .. })
    ));
    let (mut recovered, observer) = account_actor(storage.clone(), "acct", config, &world);
    recovered.activate().await.expect("falls back");
    let report = observer.stats().activation;
    assert_eq!(report.skipped_checkpoints.len(), 1, "{report:?}");
    assert_eq!(report.skipped_checkpoints[0].sequence, newest);
    assert_eq!(
        report.checkpoint_sequence,
        Some(checkpoints[checkpoints.len() - 2])
    );
    assert_eq!(recovered.behavior(), &before);
}
