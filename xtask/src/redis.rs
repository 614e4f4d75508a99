//! Redis for the tests: the standalone server (checked, started when it
//! can be, this run's keys deleted after), and a throwaway Redis Cluster of
//! three primaries with a replica each, started from the machine's
//! `redis-server` on free loopback ports and stopped after the run.

use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use redis_test_cluster::{ClusterSpec, TestCluster};

use crate::run::quietly;
use crate::services::{host_port, reachable};

/// The standalone server's URL.
pub(crate) fn redis_url() -> String {
    std::env::var("JOURNAL_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Polls `ready` every 100 ms until it holds or `limit` passes.
fn wait_until(limit: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if ready() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Makes sure the standalone Redis answers: starts the local one when it
/// does not and the machine has `redis-server`. `Err` says what to do.
pub(crate) fn ensure_redis() -> Result<&'static str, String> {
    let url = redis_url();
    let Some(address) = host_port(&url, 6379) else {
        return Err("JOURNAL_REDIS_URL is not a redis:// URL".into());
    };
    if reachable(&address) {
        return Ok("running");
    }
    let local = address == "127.0.0.1:6379";
    if local {
        let mut start = Command::new("redis-server");
        start.args([
            "--daemonize",
            "yes",
            "--bind",
            "127.0.0.1",
            "--port",
            "6379",
            "--save",
            "",
            "--appendonly",
            "no",
        ]);
        if quietly(start) && wait_until(Duration::from_secs(10), || reachable(&address)) {
            return Ok("started");
        }
    }
    Err(format!(
        "Redis is not reachable at {address}: start it with `redis-server --daemonize yes \
         --bind 127.0.0.1 --port 6379 --save \"\" --appendonly no`, or set JOURNAL_REDIS_URL \
         to a server the tests may write keys to"
    ))
}

/// Deletes every key that starts with `prefix` (this run's) on the
/// standalone server, server-side, so keys with any bytes in them go too.
pub(crate) fn delete_redis_keys(prefix: &str) -> Result<(), String> {
    const SCRIPT: &str = "local cursor = '0' repeat \
        local r = redis.call('SCAN', cursor, 'MATCH', ARGV[1], 'COUNT', 1000) \
        cursor = r[1] \
        for _, k in ipairs(r[2]) do redis.call('UNLINK', k) end \
        until cursor == '0' return 0";
    let mut cli = Command::new("redis-cli");
    cli.args([
        "-u",
        &redis_url(),
        "EVAL",
        SCRIPT,
        "0",
        &format!("{prefix}*"),
    ]);
    if quietly(cli) {
        Ok(())
    } else {
        Err(format!(
            "could not delete the test keys {prefix}* (is redis-cli installed?)"
        ))
    }
}

/// Starts the throwaway cluster of the tests: 3 primaries and 3 replicas
/// under `root` (see the redis-test-cluster crate). `Err` says what went
/// wrong, or what to install.
pub(crate) fn start_cluster(root: &Path) -> Result<TestCluster, String> {
    TestCluster::start(
        root,
        ClusterSpec {
            primaries: 3,
            replicas_per_primary: 1,
            node_timeout_ms: 5_000,
        },
    )
    .map_err(|e| format!("{e}; or set JOURNAL_REDIS_CLUSTER_URL to a cluster"))
}

/// `cargo xtask with-redis-cluster <command...>`.
pub(crate) fn with_cluster(command: &[String]) -> ExitCode {
    let Some((program, args)) = command.split_first() else {
        eprintln!("usage: cargo xtask with-redis-cluster <command...>");
        return ExitCode::from(2);
    };
    let _ = std::fs::create_dir_all("target/tmp");
    let cluster = match start_cluster(Path::new("target/tmp")) {
        Ok(cluster) => cluster,
        Err(advice) => {
            eprintln!("xtask: {advice}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!("xtask: Redis Cluster at {}", cluster.url());
    let status = Command::new(program)
        .args(args)
        .env("JOURNAL_REDIS_CLUSTER_URL", cluster.url())
        .status();
    drop(cluster);
    match status {
        Ok(status) if status.success() => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("xtask: cannot run {program}: {e}");
            ExitCode::FAILURE
        }
    }
}
