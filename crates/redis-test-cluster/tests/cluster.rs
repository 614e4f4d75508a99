//! The tooling against real servers: a slot moved step by step keeps its
//! keys, and a killed primary's replica takes over its keys. Skips without
//! `redis-server` (fails under `CI=true`).

use std::path::PathBuf;
use std::time::Duration;

use redis_test_cluster::{check_binaries, cli, ClusterSpec, Role, TestCluster};

fn start(spec: ClusterSpec) -> Option<TestCluster> {
    if let Err(advice) = check_binaries() {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{advice}");
        eprintln!("SKIPPED: {advice}");
        return None;
    }
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    Some(TestCluster::start(&root, spec).expect("the cluster starts"))
}

#[test]
fn a_slot_moves_with_its_keys_and_a_replica_takes_over_a_killed_primary() {
    let Some(cluster) = start(ClusterSpec {
        primaries: 3,
        replicas_per_primary: 1,
        node_timeout_ms: 1_000,
    }) else {
        return;
    };
    let nodes = cluster.nodes().expect("nodes");
    assert_eq!(nodes.len(), 6);
    assert_eq!(nodes.iter().filter(|n| n.role == Role::Primary).count(), 3);
    assert!(cluster.url().starts_with("redis-cluster://127.0.0.1:"));

    // Keys with awkward bytes, all in the slot of the tag `{x}`.
    let slot: u16 = cli(nodes[0].port, &["CLUSTER", "KEYSLOT", "{x}"])
        .expect("KEYSLOT")
        .trim()
        .parse()
        .expect("a slot");
    let from = cluster.primary_of_slot(slot).expect("owner");
    let keys: Vec<String> = (0..7)
        .map(|i| format!("{{x}} key \"{i}\"\nwith\\odd bytes é"))
        .collect();
    for key in &keys {
        cli(from, &["SET", key.as_str(), "v"]).expect("SET");
    }
    let to = nodes
        .iter()
        .find(|n| n.is_primary() && n.port != from)
        .map(|n| n.port)
        .expect("another primary");
    assert_eq!(cluster.move_slot(slot, from, to, 3).expect("move"), 7);
    assert_eq!(cluster.primary_of_slot(slot).expect("owner"), to);
    for key in &keys {
        assert_eq!(cli(to, &["GET", key.as_str()]).expect("GET").trim(), "v");
    }
    let moved = cli(from, &["GET", keys[0].as_str()]).expect_err("the old owner redirects");
    assert!(moved.contains("MOVED"), "{moved}");

    // Replication is asynchronous: the keys survive the kill only once the
    // replica has them. Wait until its acknowledged offset reaches the
    // primary's (a condition, checked until a deadline).
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let info = cli(to, &["INFO", "replication"]).expect("INFO");
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.trim().strip_prefix(name))
                .map(str::to_owned)
        };
        let master = field("master_repl_offset:").and_then(|v| v.parse::<u64>().ok());
        let replica = field("slave0:").and_then(|v| {
            v.split(',')
                .find_map(|kv| kv.strip_prefix("offset="))
                .and_then(|o| o.parse::<u64>().ok())
        });
        if master.is_some() && master == replica {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the replica of :{to} did not catch up: {info}"
        );
    }
    cluster.kill(to).expect("kill");
    let promoted = cluster
        .wait_for_failover(to, Duration::from_secs(30))
        .expect("a replica takes over");
    assert_ne!(promoted, to);
    assert_eq!(cluster.primary_of_slot(slot).expect("owner"), promoted);
    for key in &keys {
        assert_eq!(
            cli(promoted, &["GET", key.as_str()]).expect("GET").trim(),
            "v"
        );
    }
    cluster.restart(to).expect("restart");
    cluster
        .wait_until_ready(Duration::from_secs(30))
        .expect("the old primary rejoins as a replica");
    let rejoined = cluster
        .nodes_seen_by(to)
        .expect("nodes")
        .into_iter()
        .find(|n| n.myself)
        .expect("myself");
    assert_eq!(rejoined.role, Role::Replica);
}
