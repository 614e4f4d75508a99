//! Connecting the tests to the real server: each call makes a schema of
//! its own (dropped by `cargo xtask ci` after the run). A missing server
//! skips locally and fails under `CI=true`.

use journal_core::redact_url;
use journal_postgres::{PostgresJournalStorage, PostgresOptions};

/// `JOURNAL_POSTGRES_URL`, or the local test server.
pub fn url() -> String {
    std::env::var("JOURNAL_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A fresh schema name under the run's prefix.
pub fn fresh_schema() -> String {
    let prefix = std::env::var("JOURNAL_TEST_SCHEMA_PREFIX").unwrap_or_else(|_| "jt_".into());
    format!("{prefix}{}", journal_core::new_entry_id().to_lowercase())
}

/// A storage in a fresh schema, or `None` (locally) when the server is
/// down.
pub async fn storage(options: PostgresOptions) -> Option<PostgresJournalStorage> {
    let url = url();
    let options = PostgresOptions {
        schema: fresh_schema(),
        ..options
    };
    match PostgresJournalStorage::open(&url, options).await {
        Ok(storage) => Some(storage),
        Err(e) if e.is_retryable() => {
            let advice = format!(
                "PostgreSQL is not reachable at {} ({e}). Start it with \
                 `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`, \
                 or point JOURNAL_POSTGRES_URL at a server.",
                redact_url(&url)
            );
            assert!(std::env::var("CI").as_deref() != Ok("true"), "{advice}");
            eprintln!("SKIPPED: {advice}");
            None
        }
        Err(e) => panic!("cannot open the test journal at {}: {e}", redact_url(&url)),
    }
}

/// Small pools: the suite runs many tests at once against one server.
/// The feed waits up to 20 s (not 1 s) for transactions holding its
/// horizon back: the horizon is the whole database's, and other tests
/// running at once hold transactions open on purpose (in schemas of their
/// own), for longer than a second on a loaded machine. The wait never
/// changes what a read returns, only when.
pub fn test_options() -> PostgresOptions {
    PostgresOptions {
        pool_size: 4,
        feed_settle: std::time::Duration::from_secs(20),
        ..PostgresOptions::default()
    }
}

/// Creates `projected (actor_id, sequence)` in the storage's schema: the
/// table the exactly-once projection tests write into.
#[allow(dead_code)] // used by the projection tests only
pub async fn create_projected_table(storage: &PostgresJournalStorage) {
    let client = storage.pool().get().await.expect("client");
    client
        .batch_execute(&format!(
            "CREATE TABLE {}.projected (actor_id TEXT NOT NULL, sequence BIGINT NOT NULL)",
            storage.schema()
        ))
        .await
        .expect("the projection's table");
}
