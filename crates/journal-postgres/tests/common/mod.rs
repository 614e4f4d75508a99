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
pub fn test_options() -> PostgresOptions {
    PostgresOptions {
        pool_size: 4,
        ..PostgresOptions::default()
    }
}
