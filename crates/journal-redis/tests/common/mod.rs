//! Connecting the tests to real servers: the standalone Redis
//! (`JOURNAL_REDIS_URL`, default `redis://127.0.0.1:6379`) and the Redis
//! Cluster `cargo xtask ci` starts (`JOURNAL_REDIS_CLUSTER_URL`). Each call
//! uses a key prefix of its own under the run's prefix
//! (`JOURNAL_TEST_KEY_PREFIX`), whose keys `cargo xtask ci` deletes after
//! the run. A missing server skips locally and fails under `CI=true`.
//! `workload` holds the writers of the resharding and failover tests, which
//! start clusters of their own (redis-test-cluster).

#![allow(dead_code)]

pub mod faults;
pub mod workload;

use journal_core::redact_url;
use journal_redis::{RedisJournalStorage, RedisOptions};

/// The standalone server's URL.
pub fn url() -> String {
    std::env::var("JOURNAL_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// The cluster's URL, when the tooling started one.
pub fn cluster_url() -> Option<String> {
    std::env::var("JOURNAL_REDIS_CLUSTER_URL")
        .ok()
        .filter(|u| !u.is_empty())
}

/// A fresh key prefix under the run's prefix.
pub fn fresh_prefix() -> String {
    let run = std::env::var("JOURNAL_TEST_KEY_PREFIX").unwrap_or_else(|_| "jt_".into());
    format!("{run}{}", journal_core::new_entry_id().to_lowercase())
}

/// Skips with `advice` locally; fails with it under `CI=true`.
pub fn skip_or_fail(advice: &str) {
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{advice}");
    eprintln!("SKIPPED: {advice}");
}

/// Small pools: many tests run at once against one server.
pub fn test_options() -> RedisOptions {
    RedisOptions {
        key_prefix: fresh_prefix(),
        pool_size: 2,
        ..RedisOptions::default()
    }
}

async fn open(url: &str, options: RedisOptions, advice: &str) -> Option<RedisJournalStorage> {
    match RedisJournalStorage::open(url, options).await {
        Ok(storage) => Some(storage),
        Err(e) if e.is_retryable() => {
            skip_or_fail(&format!(
                "Redis is not reachable at {} ({e}). {advice}",
                redact_url(url)
            ));
            None
        }
        Err(e) => panic!("cannot open the test journal at {}: {e}", redact_url(url)),
    }
}

/// A storage on the standalone server with a fresh prefix, or `None`
/// (locally) when the server is down.
pub async fn storage(options: RedisOptions) -> Option<RedisJournalStorage> {
    open(
        &url(),
        options,
        "Start it with `redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save \"\" \
         --appendonly no`, or point JOURNAL_REDIS_URL at a server.",
    )
    .await
}

/// A storage on the test cluster with a fresh prefix, or `None` (locally)
/// when no cluster was started.
pub async fn cluster_storage(options: RedisOptions) -> Option<RedisJournalStorage> {
    let advice = "Run the tests through `cargo xtask ci`, which starts a 3-primary Redis \
                  Cluster from the machine's redis-server and sets JOURNAL_REDIS_CLUSTER_URL, \
                  or set it to a cluster of your own.";
    let Some(url) = cluster_url() else {
        skip_or_fail(&format!(
            "no Redis Cluster: JOURNAL_REDIS_CLUSTER_URL is not set. {advice}"
        ));
        return None;
    };
    open(&url, options, advice).await
}

/// A plain connection to the standalone server, to look at and tamper
/// with what the storage wrote.
pub async fn raw_client() -> redis::aio::MultiplexedConnection {
    redis::Client::open(url().as_str())
        .expect("the test URL parses")
        .get_multiplexed_async_connection()
        .await
        .expect("the raw client connects")
}

/// Runs one command on a raw connection.
pub async fn raw<T: redis::FromRedisValue>(
    connection: &redis::aio::MultiplexedConnection,
    cmd: &mut redis::Cmd,
) -> T {
    cmd.query_async(&mut connection.clone())
        .await
        .expect("a raw command")
}
