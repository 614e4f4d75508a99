//! The URL grammar the `journal` command reads, read by the library too:
//! `?prefix=` sets the key prefix (the `journal actors` of that URL sees
//! what the storage wrote), and a parameter nobody knows is an error.

mod common;

use journal_core::{journal_entry::Entry, JournalEntry, JournalStorage};
use journal_redis::{RedisJournalStorage, RedisOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prefix_parameter_sets_the_key_prefix() {
    if common::storage(common::test_options()).await.is_none() {
        return;
    }
    let prefix = common::fresh_prefix();
    let url = format!("{}?prefix={prefix}", common::url());
    let storage = RedisJournalStorage::new(&url)
        .await
        .expect("a URL with ?prefix= opens");
    assert_eq!(storage.key_prefix(), prefix);
    storage
        .append_entry(&JournalEntry::new(
            "a",
            1,
            Entry::message_received("m", "T", vec![]),
        ))
        .await
        .expect("append");
    // The same store through options: it sees the entry.
    let same = RedisJournalStorage::open(
        &common::url(),
        RedisOptions {
            key_prefix: prefix,
            ..RedisOptions::default()
        },
    )
    .await
    .expect("opens");
    assert_eq!(same.highest_sequence("a").await.expect("read"), 1);
    storage.close().await;
    same.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_parameter_is_an_error() {
    let url = format!("{}?prefx=oops", common::url());
    match RedisJournalStorage::new(&url).await {
        Err(e) => assert!(e.to_string().contains("unknown URL parameter"), "{e}"),
        Ok(_) => panic!("a misspelt parameter must not be ignored"),
    }
}
