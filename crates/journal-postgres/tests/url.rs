//! The URL grammar the `journal` command reads, read by the library too:
//! `?schema=` picks the schema, the URL's `options` are kept beside the
//! statement timeout, and a parameter nobody knows is an error.

mod common;

use journal_core::{journal_entry::Entry, JournalEntry, JournalStorage};
use journal_postgres::{PostgresJournalStorage, PostgresOptions};

fn with_params(params: &str) -> String {
    let url = common::url();
    let joiner = if url.contains('?') { '&' } else { '?' };
    format!("{url}{joiner}{params}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schema_parameter_picks_the_schema() {
    // Reachable at all? (Skips locally when the server is down.)
    let Some(probe) = common::storage(common::test_options()).await else {
        return;
    };
    let schema = common::fresh_schema();
    let storage = PostgresJournalStorage::new(&with_params(&format!("schema={schema}")))
        .await
        .expect("a URL with ?schema= opens");
    assert_eq!(storage.schema(), schema);
    storage
        .append_entry(&JournalEntry::new(
            "a",
            1,
            Entry::message_received("m", "T", vec![]),
        ))
        .await
        .expect("append");
    let client = probe.pool().get().await.expect("a connection");
    let rows = client
        .query(&format!("SELECT count(*) FROM {schema}.entries"), &[])
        .await
        .expect("the entry is in that schema");
    assert_eq!(rows[0].get::<_, i64>(0), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_options_are_kept_beside_the_statement_timeout() {
    if common::storage(common::test_options()).await.is_none() {
        return;
    }
    let options = PostgresOptions {
        schema: common::fresh_schema(),
        pool_size: 1,
        ..PostgresOptions::default()
    };
    assert!(options.statement_timeout.is_some(), "set by default");
    let storage =
        PostgresJournalStorage::open(&with_params("options=-c%20work_mem%3D7MB"), options)
            .await
            .expect("opens");
    let client = storage.pool().get().await.expect("a connection");
    let work_mem: String = client
        .query_one("SHOW work_mem", &[])
        .await
        .expect("show")
        .get(0);
    assert_eq!(work_mem, "7MB");
    let timeout: String = client
        .query_one("SHOW statement_timeout", &[])
        .await
        .expect("show")
        .get(0);
    assert_ne!(timeout, "0", "the statement timeout is set too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_parameter_is_an_error() {
    match PostgresJournalStorage::new(&with_params("schema=x&shema=y")).await {
        Err(e) => assert!(e.to_string().contains("invalid PostgreSQL URL"), "{e}"),
        Ok(_) => panic!("a misspelt parameter must not be ignored"),
    }
}
