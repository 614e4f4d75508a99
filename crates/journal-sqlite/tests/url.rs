//! The `journal` command's URL form opens the same file as the path.

use std::path::PathBuf;

use journal_core::journal_entry::Entry;
use journal_core::{JournalEntry, JournalStorage};
use journal_sqlite::SqliteJournalStorage;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_urls_open_the_file_they_name() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("journal-sqlite-url");
    std::fs::create_dir_all(&dir).expect("temporary directory");
    let path = dir.join(format!("{}.db", journal_core::new_entry_id()));
    let url = format!("sqlite:{}", path.display());
    let storage = SqliteJournalStorage::new(&url).await.expect("open by URL");
    storage
        .append_entry(&JournalEntry::new(
            "a",
            1,
            Entry::message_received("m", "T", vec![]),
        ))
        .await
        .expect("append");
    storage.close().await;
    assert!(path.exists(), "the file the URL names");
    let by_path = SqliteJournalStorage::new(&path)
        .await
        .expect("open by path");
    assert_eq!(by_path.highest_sequence("a").await.expect("read"), 1);
    by_path.close().await;
    let long_form = SqliteJournalStorage::new(format!("sqlite://{}", path.display()))
        .await
        .expect("open by sqlite://");
    assert_eq!(long_form.highest_sequence("a").await.expect("read"), 1);
    long_form.close().await;
}
