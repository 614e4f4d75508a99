//! Appends, retries and conflicts at the top of the sequence range
//! (`MAX_SEQUENCE`), with the actor's highest sequence seeded in the
//! `actors` table: through group commit and without it.

mod common;

use std::sync::Arc;

use journal_core::JournalStorage;
use journal_postgres::{PostgresJournalStorage, PostgresOptions};

/// Makes `highest` the actor's highest sequence, as the `append` functions
/// store it.
async fn seed(storage: &PostgresJournalStorage, actor: &str, highest: u64) {
    let client = storage.pool().get().await.expect("a pooled connection");
    let sql = format!(
        "INSERT INTO {}.actors (actor_id, highest) VALUES ($1, $2)",
        storage.schema()
    );
    let highest = i64::try_from(highest).expect("MAX_SEQUENCE fits a BIGINT");
    client
        .execute(&sql, &[&actor.as_bytes(), &highest])
        .await
        .expect("seed the highest sequence");
}

async fn near_the_top(group_commit: bool) {
    let options = PostgresOptions {
        group_commit,
        ..common::test_options()
    };
    let Some(storage) = common::storage(options).await else {
        return;
    };
    let shared: Arc<dyn JournalStorage> = Arc::new(storage.clone());
    journal_conformance::limits::near_the_top(shared, |actor, highest| {
        let storage = storage.clone();
        async move { seed(&storage, &actor, highest).await }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn near_the_top_with_group_commit() {
    near_the_top(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn near_the_top_without_group_commit() {
    near_the_top(false).await;
}
