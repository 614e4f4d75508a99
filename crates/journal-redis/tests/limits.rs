//! Appends, retries and conflicts at the top of the sequence range
//! (`MAX_SEQUENCE` = 2^53 - 1, where the scripts' Lua numbers and the
//! checkpoint index's scores are still exact), with the actor's highest
//! sequence seeded in its `h:` key.

mod common;

use std::sync::Arc;

use journal_core::JournalStorage;
use journal_redis::keys::Keys;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn near_the_top() {
    let options = common::test_options();
    let keys = Keys::new(&options.key_prefix);
    let Some(storage) = common::storage(options).await else {
        return;
    };
    let raw = common::raw_client().await;
    let storage: Arc<dyn JournalStorage> = Arc::new(storage);
    journal_conformance::limits::near_the_top(storage, |actor, highest| {
        let (raw, keys) = (raw.clone(), keys.clone());
        async move {
            // The highest sequence is a string holding the decimal number,
            // as APPEND's `SET` writes it.
            let () = common::raw(
                &raw,
                redis::cmd("SET")
                    .arg(keys.actor(&actor).highest())
                    .arg(highest.to_string()),
            )
            .await;
        }
    })
    .await;
}
