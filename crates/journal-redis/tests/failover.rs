//! Issue 17, failover: a primary killed under 64 writers loses nothing
//! they were told was stored, its actors resume on the promoted replica,
//! and the actors of the other primaries keep appending meanwhile.
//!
//! The test starts its own cluster: 3 primaries with a replica each,
//! `cluster-node-timeout` 1 s. The storage waits for one replica after each
//! write (`wait_for_replicas`): Redis replicates asynchronously, so without
//! it an acknowledged write can die with its primary, and the test would
//! blame the client for what the README documents. After some progress the
//! primary owning actor 0's slot is killed with `SIGKILL`; once its replica
//! is promoted the killed node is started again, so that the promoted
//! primary has a replica to wait for. Writers send the same entry again on
//! `Unavailable` (counted); any other error fails the test.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::workload::{self, Shared, Workload, WriterLog};
use journal_core::JournalStorage;
use journal_redis::keys::{bucket_of, slot_of_bucket};
use journal_redis::{RedisJournalStorage, RedisOptions, ReplicaWait};
use redis_test_cluster::{ClusterSpec, TestCluster};

/// Bounds, so that a wedged client fails the test rather than hanging
/// it: the workload from the first append until every actor has appended
/// again after the failover, stopping the writers, and the replays.
const WORKLOAD_BOUND: Duration = Duration::from_secs(60);
const STOP_BOUND: Duration = Duration::from_secs(15);
const CHECK_BOUND: Duration = Duration::from_secs(30);
/// Limits of the admin steps (`redis-cli` polls).
const FAILOVER_LIMIT: Duration = Duration::from_secs(30);
const ACTORS: usize = 64;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_appends_survive_a_killed_primary_and_other_primaries_keep_appending() {
    let Some(cluster) = workload::start_cluster(ClusterSpec {
        primaries: 3,
        replicas_per_primary: 1,
        node_timeout_ms: 1_000,
    }) else {
        return;
    };
    // As the README advises for journals: the other shards keep serving
    // while one has no primary. (With Redis's default, `yes`, every slot
    // refuses from the moment the primary is flagged as failed until its
    // replica is promoted.)
    for port in cluster.ports() {
        redis_test_cluster::cli(
            port,
            &["CONFIG", "SET", "cluster-require-full-coverage", "no"],
        )
        .expect("CONFIG SET");
    }
    let options = RedisOptions {
        key_prefix: common::fresh_prefix(),
        pool_size: 2,
        command_timeout: Duration::from_secs(2),
        wait_for_replicas: Some(ReplicaWait {
            replicas: 1,
            timeout: Duration::from_millis(500),
        }),
        ..RedisOptions::default()
    };
    let storage = RedisJournalStorage::open(cluster.url(), options)
        .await
        .expect("the storage opens on the test cluster");

    let actors: Vec<String> = (0..ACTORS).map(|i| format!("failover-{i}")).collect();
    let view = cluster.nodes().expect("the cluster's nodes");
    let owner_of = |actor: &str| {
        let slot = slot_of_bucket(bucket_of(actor));
        view.iter()
            .find(|n| n.is_primary() && n.owns(slot))
            .map(|n| n.port)
            .expect("every slot has an owner")
    };
    let victim = owner_of(&actors[0]);
    let (failed, healthy): (Vec<usize>, Vec<usize>) =
        (0..ACTORS).partition(|i| owner_of(&actors[*i]) == victim);
    eprintln!(
        "killing :{victim}, the primary of {} actors; {} actors on the other two",
        failed.len(),
        healthy.len()
    );

    let workload = Workload::start(&storage, actors);
    let shared = workload.shared.clone();
    let timeline = tokio::time::timeout(WORKLOAD_BOUND, drive(&cluster, &shared, victim)).await;
    shared.set_phase("stopping the writers");
    let logs = workload.stop_within(STOP_BOUND).await;
    let read_retries = AtomicU64::new(0);
    shared.set_phase("replaying every actor");
    let checks = tokio::time::timeout(
        CHECK_BOUND,
        workload::check_journals(&storage, &logs, true, &read_retries),
    )
    .await;
    shared.set_phase("done");

    let outcome = Outcome {
        timeline,
        logs,
        checks,
        read_retries: read_retries.load(Ordering::SeqCst),
    };
    eprintln!("{}", workload::server_health(&cluster).await);
    outcome.report_and_assert(&shared, &failed, &healthy);
}

/// Everything the run left.
struct Outcome {
    timeline: Result<Timeline, tokio::time::error::Elapsed>,
    logs: Vec<WriterLog>,
    checks: Result<Vec<String>, tokio::time::error::Elapsed>,
    read_retries: u64,
}

impl Outcome {
    /// Prints the figures, then fails the test on the first broken promise.
    fn report_and_assert(self, shared: &Shared, failed: &[usize], healthy: &[usize]) {
        let Outcome {
            timeline,
            logs,
            checks,
            read_retries,
        } = self;
        let retries: u64 = logs.iter().map(|l| l.retries).sum();
        let acked: usize = logs.iter().map(|l| l.acked.len()).sum();
        eprintln!(
            "{acked} appends acknowledged; {retries} failed calls resent; {read_retries} \
             replays or reads after the workload made again on Unavailable\n{}",
            shared.describe()
        );
        if let Ok(journal_problems) = &checks {
            workload::print_some("journal problems", journal_problems, 10);
        }
        let Ok(timeline) = timeline else {
            panic!(
                "the workload did not get every actor appending again after the failover \
                 within {WORKLOAD_BOUND:?}\n{}",
                shared.describe()
            );
        };
        let figures = Figures::of(&timeline, &logs, failed, healthy);
        figures.print(&timeline);

        let fatal: Vec<String> = shared
            .problems()
            .into_iter()
            .filter(|(kind, _)| {
                !kind.starts_with("append Unavailable") && !kind.starts_with("read Unavailable")
            })
            .map(|(kind, p)| format!("{} x {kind}; first: {}", p.count, p.first))
            .collect();
        assert!(
            fatal.is_empty(),
            "errors other than Unavailable, or wrong replies:\n{}",
            fatal.join("\n")
        );
        let Ok(journal_problems) = checks else {
            panic!("the replays did not finish within {CHECK_BOUND:?}");
        };
        assert!(
            journal_problems.is_empty(),
            "the journals differ from what was acknowledged:\n{}",
            journal_problems.join("\n")
        );
        let not_resumed: Vec<&str> = failed
            .iter()
            .map(|i| &logs[*i])
            .filter(|l| !l.acks.iter().any(|a| a.sent_tick > timeline.promoted_tick))
            .map(|l| l.actor.as_str())
            .collect();
        assert!(
            not_resumed.is_empty(),
            "actors of the killed primary acknowledged nothing sent after the promotion: \
             {not_resumed:?}"
        );
        assert!(
            figures.healthy_silent.is_empty(),
            "{} of the {} actors of the healthy primaries had no append sent after the kill \
             and acknowledged before the killed primary's actors first appended again (they \
             stalled with it): {:?}",
            figures.healthy_silent.len(),
            healthy.len(),
            figures.healthy_silent
        );
    }
}

/// What happened when, on the writers' event clock and in time.
struct Timeline {
    killed_tick: u64,
    killed_at: Instant,
    promoted: u16,
    promoted_tick: u64,
    promoted_at: Instant,
    rejoined_at: Instant,
}

/// Baseline, kill, failover, restart of the killed node, until every
/// actor has acknowledged an append sent after the promotion.
async fn drive(cluster: &Arc<TestCluster>, shared: &Arc<Shared>, victim: u16) -> Timeline {
    shared.set_phase("baseline: every actor appends");
    shared
        .wait_until(|s| s.acked_now().iter().all(|n| *n >= 20))
        .await;

    shared.set_phase(format!("killing :{victim}"));
    workload::admin(cluster, shared, "kill", move |c| c.kill(victim)).await;
    let killed_tick = shared.tick();
    let killed_at = Instant::now();

    shared.set_phase("waiting for a replica to take over");
    let promoted = workload::admin(cluster, shared, "failover", move |c| {
        c.wait_for_failover(victim, FAILOVER_LIMIT)
    })
    .await;
    let promoted_tick = shared.tick();
    let promoted_at = Instant::now();

    shared.set_phase(format!(
        ":{promoted} promoted; restarting :{victim} as its replica"
    ));
    workload::admin(cluster, shared, "restart", move |c| {
        c.restart(victim)?;
        c.wait_until_ready(FAILOVER_LIMIT)
    })
    .await;
    let rejoined_at = Instant::now();

    shared.set_phase("every actor acknowledges an append sent after the promotion");
    shared
        .wait_until(|s| {
            s.last_ack_sent_tick
                .iter()
                .all(|t| t.load(Ordering::SeqCst) > promoted_tick)
        })
        .await;
    Timeline {
        killed_tick,
        killed_at,
        promoted,
        promoted_tick,
        promoted_at,
        rejoined_at,
    }
}

/// What the logs say about the failover.
struct Figures {
    /// The first ack of an actor of the killed primary for an append sent
    /// after the kill (a reply the server wrote before it died may still
    /// be read after).
    resumed: Option<(u64, Instant)>,
    /// Appends of healthy actors sent after the kill and acknowledged
    /// before `resumed`.
    healthy_acks_meanwhile: usize,
    /// Healthy actors with no such append.
    healthy_silent: Vec<String>,
    /// Longest time between two acks of one healthy actor around the kill
    /// (from the kill until the killed primary's actors resumed), and
    /// before it.
    healthy_gap: Duration,
    healthy_gap_before: Duration,
    /// Longest and shortest time an actor of the killed primary went
    /// from its last ack before the kill to its first ack of an append sent
    /// after it.
    failed_stall: (Duration, Duration),
}

impl Figures {
    fn of(timeline: &Timeline, logs: &[WriterLog], failed: &[usize], healthy: &[usize]) -> Self {
        let resumed = failed
            .iter()
            .flat_map(|i| &logs[*i].acks)
            .filter(|a| a.sent_tick > timeline.killed_tick)
            .map(|a| (a.done_tick, a.done))
            .min_by_key(|(tick, _)| *tick);
        let (resumed_tick, resumed_at) = resumed.unwrap_or((u64::MAX, Instant::now()));
        let meanwhile = |log: &WriterLog| {
            log.acks
                .iter()
                .filter(|a| a.sent_tick > timeline.killed_tick && a.done_tick < resumed_tick)
                .count()
        };
        let healthy_acks_meanwhile = healthy.iter().map(|i| meanwhile(&logs[*i])).sum();
        let healthy_silent = healthy
            .iter()
            .filter(|i| meanwhile(&logs[**i]) == 0)
            .map(|i| logs[*i].actor.clone())
            .collect();
        let start = logs
            .iter()
            .filter_map(|l| l.acks.first().map(|a| a.done))
            .min()
            .unwrap_or(timeline.killed_at);
        let healthy_gap = healthy
            .iter()
            .map(|i| workload::longest_gap(&logs[*i].acks, timeline.killed_at, resumed_at))
            .max()
            .unwrap_or_default();
        let healthy_gap_before = healthy
            .iter()
            .map(|i| {
                let acks = &logs[*i].acks;
                let before = acks.partition_point(|a| a.done < timeline.killed_at);
                workload::longest_gap(&acks[..before], start, timeline.killed_at)
            })
            .max()
            .unwrap_or_default();
        let stalls: Vec<Duration> = failed
            .iter()
            .filter_map(|i| {
                let acks = &logs[*i].acks;
                let last = acks
                    .iter()
                    .rev()
                    .find(|a| a.done_tick < timeline.killed_tick)?;
                let next = acks.iter().find(|a| a.sent_tick > timeline.killed_tick)?;
                Some(next.done - last.done)
            })
            .collect();
        Figures {
            resumed,
            healthy_acks_meanwhile,
            healthy_silent,
            healthy_gap,
            healthy_gap_before,
            failed_stall: (
                stalls.iter().max().copied().unwrap_or_default(),
                stalls.iter().min().copied().unwrap_or_default(),
            ),
        }
    }

    fn print(&self, timeline: &Timeline) {
        let since_kill = |at: Instant| at.saturating_duration_since(timeline.killed_at);
        eprintln!(
            "after the kill: :{} promoted at +{:?}, the killed node back as a replica at +{:?}, \
             first ack of the killed primary's actors at +{:?}",
            timeline.promoted,
            since_kill(timeline.promoted_at),
            since_kill(timeline.rejoined_at),
            self.resumed.map(|(_, at)| since_kill(at)),
        );
        eprintln!(
            "healthy actors: {} appends sent after the kill and acknowledged before the killed \
             primary's actors resumed, {} healthy actors without any; longest time between two \
             acks of one healthy actor: {:?} around the kill, {:?} before it",
            self.healthy_acks_meanwhile,
            self.healthy_silent.len(),
            self.healthy_gap,
            self.healthy_gap_before
        );
        eprintln!(
            "actors of the killed primary went {:?} (longest) to {:?} (shortest) without an ack",
            self.failed_stall.0, self.failed_stall.1
        );
    }
}

/// With `wait_for_replicas`, the shard whose replica was promoted has no
/// replica until the dead node comes back: its writes fail at once with an
/// error that says so (after the first, which waited out the timeout),
/// write nothing, and leave the other shards alone; once a replica
/// attaches, they go through again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_left_without_replicas_fails_fast_and_says_why() {
    let Some(cluster) = workload::start_cluster(ClusterSpec {
        primaries: 3,
        replicas_per_primary: 1,
        node_timeout_ms: 1_000,
    }) else {
        return;
    };
    let storage = RedisJournalStorage::open(
        cluster.url(),
        RedisOptions {
            key_prefix: common::fresh_prefix(),
            command_timeout: Duration::from_secs(2),
            wait_for_replicas: Some(ReplicaWait {
                replicas: 1,
                timeout: Duration::from_millis(300),
            }),
            ..RedisOptions::default()
        },
    )
    .await
    .expect("the storage opens on the test cluster");
    let view = cluster.nodes().expect("the cluster's nodes");
    let owner_of = |actor: &str| {
        let slot = slot_of_bucket(bucket_of(actor));
        view.iter()
            .find(|n| n.is_primary() && n.owns(slot))
            .map(|n| n.port)
            .expect("every slot has an owner")
    };
    let lonely = "lonely-0".to_owned();
    let victim = owner_of(&lonely);
    let healthy = (1..10_000)
        .map(|i| format!("healthy-{i}"))
        .find(|a| owner_of(a) != victim)
        .expect("an actor on another primary");
    for actor in [&lonely, &healthy] {
        storage
            .append_entry(&workload::entry(actor, 1))
            .await
            .expect("a replica acknowledges");
    }
    cluster.kill(victim).expect("kill -9");
    cluster
        .wait_for_failover(victim, FAILOVER_LIMIT)
        .expect("a replica takes over");

    // Until the client has seen the shard short of replicas, calls may
    // time out or wait out the WAIT; then every call fails at once.
    let mut sequence = 2;
    let mut fast = 0;
    for _ in 0..40 {
        match storage
            .append_entry(&workload::entry(&lonely, sequence))
            .await
        {
            Ok(_) => sequence += 1,
            Err(e) if e.to_string().contains("0 connected replicas") => {
                assert!(e.is_retryable(), "{e:?}");
                assert!(e.to_string().contains("nothing was written"), "{e}");
                fast += 1;
                if fast == 3 {
                    break;
                }
            }
            Err(e) => assert!(e.is_retryable(), "{e:?}"),
        }
    }
    assert_eq!(
        fast, 3,
        "writes to the shard without replicas fail fast, naming the cause"
    );
    // Nothing of the refused calls was written: the highest sequence is
    // the last entry a write reached (the first short-of-replicas call
    // wrote it on the primary before its WAIT fell short).
    let highest = storage.highest_sequence(&lonely).await.expect("highest");
    assert!(highest <= sequence, "{highest} > {sequence}");
    // The other shards still have their replicas.
    storage
        .append_entry(&workload::entry(&healthy, 2))
        .await
        .expect("another shard is not affected");

    cluster.restart(victim).expect("the dead node comes back");
    cluster
        .wait_until_ready(FAILOVER_LIMIT)
        .expect("as the new primary's replica");
    let next = workload::entry(&lonely, highest + 1);
    let mut last = None;
    for _ in 0..100 {
        match storage.append_entry(&next).await {
            Ok(_) => {
                last = None;
                break;
            }
            Err(e) => {
                assert!(e.is_retryable(), "{e:?}");
                last = Some(e);
            }
        }
    }
    assert!(last.is_none(), "the shard takes writes again: {last:?}");
}
