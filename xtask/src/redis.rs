//! Redis for the tests: the standalone server (checked, started when it
//! can be, this run's keys deleted after), and a throwaway Redis Cluster of
//! three primaries with a replica each, started from the machine's
//! `redis-server` on free loopback ports and stopped after the run.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

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

/// A running test cluster; dropping it stops the servers and removes
/// their files.
pub(crate) struct RedisCluster {
    servers: Vec<Child>,
    dir: PathBuf,
    /// `redis-cluster://...` naming the primaries.
    pub(crate) url: String,
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for server in &mut self.servers {
            let _ = server.kill();
            let _ = server.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A loopback port that is free, and whose cluster bus port (+10,000) is
/// free too.
fn free_port(taken: &[u16]) -> Option<u16> {
    for _ in 0..100 {
        let listener = TcpListener::bind("127.0.0.1:0").ok()?;
        let port = listener.local_addr().ok()?.port();
        let Some(bus) = port.checked_add(10_000) else {
            continue;
        };
        if taken.contains(&port) || TcpListener::bind(("127.0.0.1", bus)).is_err() {
            continue;
        }
        return Some(port);
    }
    None
}

fn cli(port: u16, args: &[&str]) -> Option<String> {
    let output = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Starts a cluster of 3 primaries and 3 replicas under `root`. `Err`
/// says what went wrong.
pub(crate) fn start_cluster(root: &Path) -> Result<RedisCluster, String> {
    let missing = |what: &str| {
        format!(
            "cannot start a Redis Cluster for the tests: {what}. The cluster tests need \
             redis-server and redis-cli on the PATH (Debian: `apt-get install redis-server`), \
             or JOURNAL_REDIS_CLUSTER_URL pointing at a cluster"
        )
    };
    let dir = root.join(format!("redis-cluster-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| missing(&format!("{}: {e}", dir.display())))?;
    // Absolute: redis-server changes into `--dir` before it opens the log.
    let dir = dir.canonicalize().map_err(|e| missing(&e.to_string()))?;
    let mut cluster = RedisCluster {
        servers: Vec::new(),
        dir: dir.clone(),
        url: String::new(),
    };
    let mut ports = Vec::new();
    for _ in 0..6 {
        let port = free_port(&ports).ok_or_else(|| missing("no free loopback ports"))?;
        ports.push(port);
        let node_dir = dir.join(port.to_string());
        std::fs::create_dir_all(&node_dir).map_err(|e| missing(&e.to_string()))?;
        let server = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "5000"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&node_dir)
            .arg("--logfile")
            .arg(node_dir.join("redis.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| missing(&format!("redis-server: {e}")))?;
        cluster.servers.push(server);
    }
    let all_up = wait_until(Duration::from_secs(15), || {
        ports
            .iter()
            .all(|p| cli(*p, &["ping"]).is_some_and(|r| r.trim() == "PONG"))
    });
    if !all_up {
        return Err(missing("the servers did not answer within 15 s"));
    }
    let nodes: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let mut create = Command::new("redis-cli");
    create.arg("--cluster").arg("create").args(&nodes).args([
        "--cluster-replicas",
        "1",
        "--cluster-yes",
    ]);
    if !quietly(create) {
        return Err(missing("`redis-cli --cluster create` failed"));
    }
    // Ready: every node sees the cluster as ok, and every replica is in
    // sync with its primary (the WAIT tests need them).
    let ready = wait_until(Duration::from_secs(60), || {
        ports.iter().all(|p| {
            let state_ok =
                cli(*p, &["cluster", "info"]).is_some_and(|info| info.contains("cluster_state:ok"));
            let replication = cli(*p, &["info", "replication"]).unwrap_or_default();
            let synced = !replication.contains("role:slave")
                || replication.contains("master_link_status:up");
            state_ok && synced
        })
    });
    if !ready {
        return Err(missing("the cluster did not become ready within 60 s"));
    }
    cluster.url = format!(
        "redis-cluster://{}?{}",
        nodes[0],
        nodes[1..3]
            .iter()
            .map(|n| format!("node={n}"))
            .collect::<Vec<_>>()
            .join("&")
    );
    Ok(cluster)
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
    eprintln!("xtask: Redis Cluster at {}", cluster.url);
    let status = Command::new(program)
        .args(args)
        .env("JOURNAL_REDIS_CLUSTER_URL", &cluster.url)
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
