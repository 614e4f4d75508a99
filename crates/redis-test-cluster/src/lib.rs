#![doc = include_str!("../README.md")]

mod cli;
mod migration;
mod nodes;

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub use cli::{check_binaries, cli};
pub use nodes::{Node, Role};

use cli::INSTALL_ADVICE;
use nodes::parse_cluster_nodes;

/// Slots of a Redis Cluster.
pub const SLOTS: u16 = 16_384;

/// The shape of a cluster to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterSpec {
    /// Primaries; at least 3 (what `redis-cli --cluster create` accepts).
    pub primaries: usize,
    /// Replicas of each primary.
    pub replicas_per_primary: usize,
    /// `cluster-node-timeout` in milliseconds: how long a node may be
    /// unreachable before it is flagged as failing, and so roughly how
    /// long a failover takes.
    pub node_timeout_ms: u64,
}

impl Default for ClusterSpec {
    /// Three primaries with a replica each, node timeout 5 s.
    fn default() -> Self {
        ClusterSpec {
            primaries: 3,
            replicas_per_primary: 1,
            node_timeout_ms: 5_000,
        }
    }
}

/// One server process of the cluster.
struct Server {
    port: u16,
    dir: PathBuf,
    /// `None` once killed.
    child: Option<Child>,
}

/// A running throwaway Redis Cluster on 127.0.0.1. Dropping it kills every
/// server and removes their files.
pub struct TestCluster {
    spec: ClusterSpec,
    dir: PathBuf,
    servers: Mutex<Vec<Server>>,
    /// Node id by port, as created.
    ids: HashMap<u16, String>,
    /// The primaries at creation, in port order of creation.
    primaries: Vec<u16>,
    url: String,
    /// Killed nodes as the cluster saw them just before the kill.
    killed: Mutex<HashMap<u16, Node>>,
}

impl std::fmt::Debug for TestCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCluster")
            .field("spec", &self.spec)
            .field("dir", &self.dir)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        let servers = self
            .servers
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for server in servers.iter_mut() {
            if let Some(mut child) = server.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Polls `ready` every 50 ms until it holds or `limit` passes.
fn wait_until(limit: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if ready() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
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

fn answers_ping(port: u16) -> bool {
    cli(port, &["PING"]).is_ok_and(|r| r.trim() == "PONG")
}

/// Starts one cluster-enabled server on `port`, its files in `dir`.
fn spawn_server(port: u16, dir: &Path, node_timeout_ms: u64) -> Result<Child, String> {
    Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args([
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
        ])
        .args(["--cluster-node-timeout", &node_timeout_ms.to_string()])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        // A replica (re)joining syncs at once, not after the default 5 s
        // wait for more replicas.
        .args(["--repl-diskless-sync-delay", "0"])
        .arg("--dir")
        .arg(dir)
        .arg("--logfile")
        .arg(dir.join("redis.log"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run redis-server: {e}; {INSTALL_ADVICE}"))
}

/// Waits until the server answers, or has exited (`false`).
fn wait_for_server(port: u16, child: &mut Child, limit: Duration) -> bool {
    let mut exited = false;
    let up = wait_until(limit, || {
        exited = matches!(child.try_wait(), Ok(Some(_)));
        exited || answers_ping(port)
    });
    up && !exited
}

/// Starts a server on a free port under `root`, trying other ports when
/// one was taken in the meantime.
fn start_server(root: &Path, taken: &[u16], node_timeout_ms: u64) -> Result<Server, String> {
    for _ in 0..5 {
        let port = free_port(taken).ok_or("no free loopback ports")?;
        let dir = root.join(port.to_string());
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut child = spawn_server(port, &dir, node_timeout_ms)?;
        if wait_for_server(port, &mut child, Duration::from_secs(15)) {
            return Ok(Server {
                port,
                dir,
                child: Some(child),
            });
        }
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_dir_all(&dir);
    }
    Err("redis-server did not start on 5 ports in a row (see its redis.log)".into())
}

/// A line of `INFO` or `CLUSTER INFO`: `key:value`.
fn info_field<'a>(info: &'a str, key: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|line| line.trim().strip_prefix(key)?.strip_prefix(':'))
}

impl TestCluster {
    /// Starts a cluster of `spec.primaries` primaries with
    /// `spec.replicas_per_primary` replicas each, on free loopback ports
    /// (each with its bus port free too), files under a directory of its
    /// own in `root`, no persistence. Returns once every node reports
    /// `cluster_state:ok`, knows every other node, and every replica's link
    /// to its primary is up.
    ///
    /// `Err` says what went wrong; without `redis-server` or `redis-cli`,
    /// what to install.
    pub fn start(root: &Path, spec: ClusterSpec) -> Result<Self, String> {
        static CLUSTERS: AtomicU32 = AtomicU32::new(0);
        let failed = |what: &str| format!("cannot start a Redis Cluster for the tests: {what}");
        if spec.primaries < 3 {
            return Err(failed("a Redis Cluster needs at least 3 primaries"));
        }
        check_binaries().map_err(|e| failed(&e))?;
        let dir = root.join(format!(
            "redis-cluster-{}-{}",
            std::process::id(),
            CLUSTERS.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).map_err(|e| failed(&format!("{}: {e}", dir.display())))?;
        // Absolute: redis-server changes into `--dir` before it opens the log.
        let dir = dir.canonicalize().map_err(|e| failed(&e.to_string()))?;
        let mut cluster = TestCluster {
            spec,
            dir: dir.clone(),
            servers: Mutex::new(Vec::new()),
            ids: HashMap::new(),
            primaries: Vec::new(),
            url: String::new(),
            killed: Mutex::new(HashMap::new()),
        };
        let total = spec.primaries * (1 + spec.replicas_per_primary);
        let mut ports = Vec::with_capacity(total);
        for _ in 0..total {
            let server =
                start_server(&dir, &ports, spec.node_timeout_ms).map_err(|e| failed(&e))?;
            ports.push(server.port);
            cluster.lock_servers().push(server);
        }
        let addresses: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let create = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", &spec.replicas_per_primary.to_string()])
            .arg("--cluster-yes")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| failed(&format!("redis-cli: {e}")))?;
        if !create.status.success() {
            let said = String::from_utf8_lossy(&create.stdout);
            let tail: Vec<&str> = said.lines().rev().take(5).collect();
            return Err(failed(&format!(
                "`redis-cli --cluster create` failed: {} {}",
                tail.into_iter().rev().collect::<Vec<_>>().join(" | "),
                String::from_utf8_lossy(&create.stderr).trim()
            )));
        }
        cluster
            .wait_until_ready(Duration::from_secs(60))
            .map_err(|e| failed(&e))?;
        let view = cluster.nodes().map_err(|e| failed(&e))?;
        cluster.ids = view.iter().map(|n| (n.port, n.id.clone())).collect();
        cluster.primaries = ports
            .iter()
            .copied()
            .filter(|p| {
                view.iter()
                    .any(|n| n.port == *p && n.is_primary() && !n.slots.is_empty())
            })
            .collect();
        let (first, rest) = cluster
            .primaries
            .split_first()
            .ok_or_else(|| failed("no primary after creation"))?;
        let others: Vec<String> = rest.iter().map(|p| format!("node=127.0.0.1:{p}")).collect();
        cluster.url = format!("redis-cluster://127.0.0.1:{first}?{}", others.join("&"));
        Ok(cluster)
    }

    fn lock_servers(&self) -> MutexGuard<'_, Vec<Server>> {
        self.servers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The shape it was started with.
    pub fn spec(&self) -> ClusterSpec {
        self.spec
    }

    /// `redis-cluster://127.0.0.1:<first primary>?node=127.0.0.1:<port>&...`,
    /// naming every primary the cluster was created with.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The directory holding the servers' files (`<port>/redis.log`,
    /// `<port>/nodes.conf`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The ports of every server started, killed ones included.
    pub fn ports(&self) -> Vec<u16> {
        self.lock_servers().iter().map(|s| s.port).collect()
    }

    /// The ports of the servers running (not killed).
    pub fn live_ports(&self) -> Vec<u16> {
        self.lock_servers()
            .iter()
            .filter(|s| s.child.is_some())
            .map(|s| s.port)
            .collect()
    }

    /// The node id of the server on `port`.
    pub fn id_of(&self, port: u16) -> Result<String, String> {
        self.ids
            .get(&port)
            .cloned()
            .ok_or_else(|| format!("no node of this cluster on port {port}"))
    }

    /// The port of the node with id `id`.
    pub fn port_of(&self, id: &str) -> Result<u16, String> {
        self.ids
            .iter()
            .find_map(|(port, known)| (known == id).then_some(*port))
            .ok_or_else(|| format!("no node of this cluster has id {id}"))
    }

    /// Every node as the node on `port` sees the cluster.
    pub fn nodes_seen_by(&self, port: u16) -> Result<Vec<Node>, String> {
        parse_cluster_nodes(&cli(port, &["CLUSTER", "NODES"])?)
    }

    /// Every node as the first running node that answers sees the cluster.
    pub fn nodes(&self) -> Result<Vec<Node>, String> {
        let mut last = String::from("no node is running");
        for port in self.live_ports() {
            match self.nodes_seen_by(port) {
                Ok(nodes) => return Ok(nodes),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// The port of the primary owning `slot`, as [`nodes`](Self::nodes)
    /// sees it.
    pub fn primary_of_slot(&self, slot: u16) -> Result<u16, String> {
        self.nodes()?
            .into_iter()
            .find(|n| n.is_primary() && n.owns(slot))
            .map(|n| n.port)
            .ok_or_else(|| format!("no primary owns slot {slot}"))
    }

    /// Kills the server on `port` with `SIGKILL` (no shutdown, no goodbye
    /// to the cluster) and waits for the process to end.
    pub fn kill(&self, port: u16) -> Result<(), String> {
        // How the cluster saw it, for `wait_for_failover`.
        let before = self
            .nodes()
            .ok()
            .and_then(|nodes| nodes.into_iter().find(|n| n.port == port));
        let mut servers = self.lock_servers();
        let server = servers
            .iter_mut()
            .find(|s| s.port == port)
            .ok_or_else(|| format!("no node of this cluster on port {port}"))?;
        let mut child = server
            .child
            .take()
            .ok_or_else(|| format!("the node on port {port} is not running"))?;
        child
            .kill()
            .map_err(|e| format!("cannot kill the node on port {port}: {e}"))?;
        let _ = child.wait();
        drop(servers);
        if let Some(node) = before {
            self.killed
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(port, node);
        }
        Ok(())
    }

    /// Starts the killed server on `port` again, with its files (its
    /// `nodes.conf`, so it rejoins as the node it was; a primary whose
    /// slots were taken over comes back as a replica of the new owner). Its
    /// data is gone (no persistence): a replica syncs it again.
    pub fn restart(&self, port: u16) -> Result<(), String> {
        let mut servers = self.lock_servers();
        let server = servers
            .iter_mut()
            .find(|s| s.port == port)
            .ok_or_else(|| format!("no node of this cluster on port {port}"))?;
        if server.child.is_some() {
            return Err(format!("the node on port {port} is running"));
        }
        let mut child = spawn_server(port, &server.dir, self.spec.node_timeout_ms)?;
        if !wait_for_server(port, &mut child, Duration::from_secs(15)) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "the node on port {port} did not come back (see {})",
                server.dir.join("redis.log").display()
            ));
        }
        server.child = Some(child);
        drop(servers);
        self.killed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&port);
        Ok(())
    }

    /// Why the running nodes are not all ready, or `None` when they are:
    /// each reports `cluster_state:ok` with every slot served, knows every
    /// server started, lists no node as a primary without slots (unless
    /// failed), is a primary owning slots or a replica whose link to its
    /// primary is up, and there are as many primaries as the spec says.
    fn not_ready(&self) -> Option<String> {
        let started = self.lock_servers().len();
        let mut primaries = 0;
        for port in self.live_ports() {
            let info = match cli(port, &["CLUSTER", "INFO"]) {
                Ok(info) => info,
                Err(e) => return Some(e),
            };
            if info_field(&info, "cluster_state") != Some("ok")
                || info_field(&info, "cluster_slots_ok") != Some("16384")
            {
                return Some(format!("node {port}: cluster_state is not ok"));
            }
            if info_field(&info, "cluster_known_nodes") != Some(started.to_string().as_str()) {
                return Some(format!("node {port} does not know every node yet"));
            }
            let nodes = match self.nodes_seen_by(port) {
                Ok(nodes) => nodes,
                Err(e) => return Some(e),
            };
            let Some(me) = nodes.iter().find(|n| n.myself) else {
                return Some(format!("node {port} does not list itself"));
            };
            // Every node's view agrees on the roles: a node that became a
            // replica may still be listed as a primary (without slots) by
            // others until gossip reaches them.
            if let Some(stale) = nodes
                .iter()
                .find(|n| n.is_primary() && n.slots.is_empty() && !n.failed)
            {
                return Some(format!(
                    "node {port} still lists :{} as a primary without slots",
                    stale.port
                ));
            }
            if me.is_primary() {
                if me.slots.is_empty() {
                    return Some(format!("node {port} is a primary without slots"));
                }
                primaries += 1;
            } else {
                let replication = cli(port, &["INFO", "replication"]).unwrap_or_default();
                if info_field(&replication, "master_link_status") != Some("up") {
                    return Some(format!("replica {port} is not in sync with its primary"));
                }
            }
        }
        (primaries != self.spec.primaries).then(|| {
            format!(
                "{primaries} running primaries own slots, expected {}",
                self.spec.primaries
            )
        })
    }

    /// Waits until every running node is ready: `cluster_state:ok`, every
    /// server known, every replica in sync, `spec.primaries` primaries.
    /// `Err` after `limit`, saying what was still missing.
    pub fn wait_until_ready(&self, limit: Duration) -> Result<(), String> {
        let mut why = None;
        if wait_until(limit, || {
            why = self.not_ready();
            why.is_none()
        }) {
            Ok(())
        } else {
            Err(format!(
                "the cluster was not ready within {limit:?}: {}",
                why.unwrap_or_default()
            ))
        }
    }

    /// After [`kill`](Self::kill) of the primary on `killed_port`: waits
    /// until, in the view of every surviving node, the killed node is
    /// flagged `fail`, another running node owns its slots (the same one
    /// for all), and `cluster_state` is `ok`. Returns the new owner's port
    /// (the promoted replica). `Err` after `limit`, with the last reason.
    pub fn wait_for_failover(&self, killed_port: u16, limit: Duration) -> Result<u16, String> {
        let killed = self
            .killed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&killed_port)
            .cloned()
            .ok_or_else(|| format!("the node on port {killed_port} was not killed"))?;
        let Some(slot) = killed.slots.first().map(|r| *r.start()) else {
            return Err(format!(
                "the node on port {killed_port} owned no slots: nothing fails over"
            ));
        };
        let mut why = String::new();
        let mut owner = None;
        let done = wait_until(limit, || {
            owner = None;
            for port in self.live_ports() {
                let state = cli(port, &["CLUSTER", "INFO"])
                    .ok()
                    .and_then(|info| info_field(&info, "cluster_state").map(str::to_owned));
                if state.as_deref() != Some("ok") {
                    why = format!("node {port}: cluster_state is {state:?}");
                    return false;
                }
                let nodes = match self.nodes_seen_by(port) {
                    Ok(nodes) => nodes,
                    Err(e) => {
                        why = e;
                        return false;
                    }
                };
                if !nodes.iter().any(|n| n.id == killed.id && n.failed) {
                    why = format!("node {port} does not flag {killed_port} as failed yet");
                    return false;
                }
                let seen = nodes
                    .iter()
                    .find(|n| n.is_primary() && n.owns(slot))
                    .map(|n| n.port);
                match (seen, owner) {
                    (Some(p), _) if p == killed_port => {
                        why = format!("node {port} still sees {killed_port} owning slot {slot}");
                        return false;
                    }
                    (None, _) => {
                        why = format!("node {port} sees no owner of slot {slot}");
                        return false;
                    }
                    (Some(p), Some(o)) if p != o => {
                        why = format!("nodes disagree on the owner of slot {slot}");
                        return false;
                    }
                    (Some(p), _) => owner = Some(p),
                }
            }
            true
        });
        match owner {
            Some(port) if done => Ok(port),
            _ => Err(format!(
                "no failover of the node on port {killed_port} within {limit:?}: {why}"
            )),
        }
    }
}
