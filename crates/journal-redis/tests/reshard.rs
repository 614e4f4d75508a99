//! Issue 17, resharding: appends through one storage keep completing,
//! each exactly once, while slots move between the primaries under them.
//!
//! The test starts its own cluster (3 primaries, no replicas), and 64
//! writers append continuously, six of them in each of two buckets whose
//! slots (S1, S2) start on different primaries (A, B). While they run, S1
//! moves from A to B two keys per `MIGRATE` with appends between the steps,
//! S2 moves from B to A in one step, and S1 moves back to A three keys at a
//! time. The storage must absorb `ASK` and `TRYAGAIN` itself (waiting or
//! retrying inside the call): any error an append returns fails the test.
//! Writers send the same entry again after an error only to keep the
//! workload going and to see what else breaks; each error is counted.
//! Afterwards the same storage appends to one actor of every bucket.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::workload::{self, Shared, Workload, WriterLog};
use futures::StreamExt;
use journal_core::JournalStorage;
use journal_redis::keys::{bucket_of, slot_of_bucket, BUCKETS};
use journal_redis::{RedisJournalStorage, RedisOptions};
use redis_test_cluster::{ClusterSpec, TestCluster};

/// Bounds, so that a wedged client fails the test rather than hanging
/// it: the moves with the writers running, stopping the writers, and the
/// checks afterwards.
const MOVES_BOUND: Duration = Duration::from_secs(40);
const STOP_BOUND: Duration = Duration::from_secs(15);
const CHECK_BOUND: Duration = Duration::from_secs(30);
const ACTORS: usize = 64;
/// Actors in each of the two buckets whose slots move.
const PER_MOVED_BUCKET: usize = 6;
/// Appends acknowledged before the first move (about a second on 2 cores).
const BASELINE_ACKS: u64 = 10_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_complete_exactly_once_while_slots_move_between_primaries() {
    let Some(cluster) = workload::start_cluster(ClusterSpec {
        primaries: 3,
        replicas_per_primary: 0,
        node_timeout_ms: 5_000,
    }) else {
        return;
    };
    let options = RedisOptions {
        key_prefix: common::fresh_prefix(),
        pool_size: 2,
        command_timeout: Duration::from_secs(2),
        ..RedisOptions::default()
    };
    let storage = RedisJournalStorage::open(cluster.url(), options)
        .await
        .expect("the storage opens on the test cluster");

    let Plan {
        moves,
        actors,
        s1_actors,
        s2_actors,
    } = plan(&cluster);
    let workload = Workload::start(&storage, actors);
    let shared = workload.shared.clone();
    let timeline = Mutex::new(Timeline::default());
    let finished = tokio::time::timeout(
        MOVES_BOUND,
        drive(&cluster, &shared, &moves, &s1_actors, &s2_actors, &timeline),
    )
    .await;
    let bound_hit_at = Instant::now();
    let timeline = timeline.into_inner().expect("timeline");
    // Whatever happened, stop the writers and look at what is stored.
    shared.set_phase("stopping the writers");
    let logs = workload.stop_within(STOP_BOUND).await;
    let checks = tokio::time::timeout(CHECK_BOUND, async {
        shared.set_phase("replaying every actor");
        let journals = workload::check_journals(&storage, &logs, false, &AtomicU64::new(0)).await;
        shared.set_phase("one append to an actor of every bucket");
        let buckets = every_bucket(&storage).await;
        (journals, buckets)
    })
    .await;

    let in_moved_slots: Vec<usize> = s1_actors.iter().chain(&s2_actors).copied().collect();
    print_figures(&timeline, bound_hit_at, &logs, &in_moved_slots, &shared);
    let acked: usize = logs.iter().map(|l| l.acked.len()).sum();
    let retries: u64 = logs.iter().map(|l| l.retries).sum();
    eprintln!(
        "{acked} appends acknowledged, {retries} failed calls resent\n{}",
        shared.describe()
    );
    eprintln!("{}", workload::server_health(&cluster).await);
    if let Ok((journals, buckets)) = &checks {
        workload::print_some("journal problems", journals, 10);
        workload::print_some("every-bucket problems", buckets, 10);
        if !journals.is_empty() {
            check_with_fresh_storage(&cluster, &storage, &logs).await;
        }
    }

    assert!(
        finished.is_ok(),
        "the moves with the writers running did not finish within {MOVES_BOUND:?} (stuck \
         calls, or calls that keep failing)\n{}",
        shared.describe()
    );
    let problems = shared.problems();
    assert!(
        problems.is_empty(),
        "appends or reads failed or got wrong replies while slots moved ({} kinds; the storage \
         must absorb ASK/TRYAGAIN itself):\n{}",
        problems.len(),
        shared.describe()
    );
    let silent: Vec<&str> = logs
        .iter()
        .filter(|l| !l.acks.iter().any(|a| a.sent_tick > timeline.moves_end_tick))
        .map(|l| l.actor.as_str())
        .collect();
    assert!(
        silent.is_empty(),
        "actors acknowledged nothing after the moves: {silent:?}"
    );
    let Ok((journal_problems, bucket_problems)) = checks else {
        panic!("the replays and the appends to every bucket did not finish within {CHECK_BOUND:?}");
    };
    assert!(
        journal_problems.is_empty(),
        "the journals differ from what was acknowledged:\n{}",
        journal_problems.join("\n")
    );
    assert!(
        bucket_problems.is_empty(),
        "after the moves, appends to every bucket did not all succeed:\n{}",
        bucket_problems.join("\n")
    );
}

/// Evidence only, when the storage's replays fail: does a fresh storage
/// on the same cluster find what was acknowledged? Tells lost data from
/// broken connections.
async fn check_with_fresh_storage(
    cluster: &TestCluster,
    storage: &RedisJournalStorage,
    logs: &[WriterLog],
) {
    let fresh = tokio::time::timeout(CHECK_BOUND, async {
        let options = RedisOptions {
            key_prefix: storage.key_prefix().to_owned(),
            ..RedisOptions::default()
        };
        let fresh = RedisJournalStorage::open(cluster.url(), options).await?;
        Ok::<_, journal_core::JournalError>(
            workload::check_journals(&fresh, logs, false, &AtomicU64::new(0)).await,
        )
    })
    .await;
    match fresh {
        Ok(Ok(problems)) if problems.is_empty() => eprintln!(
            "a fresh storage on the same cluster finds every journal exactly as acknowledged"
        ),
        Ok(Ok(problems)) => {
            workload::print_some("journal problems seen by a fresh storage", &problems, 10);
        }
        Ok(Err(e)) => eprintln!("a fresh storage does not open: {e}"),
        Err(_) => eprintln!("a fresh storage's replays did not finish"),
    }
}

/// Where the test's actors are and which slots move.
struct Plan {
    moves: Moves,
    actors: Vec<String>,
    s1_actors: Vec<usize>,
    s2_actors: Vec<usize>,
}

/// Picks two buckets on different primaries and the actors: six in each
/// of them, the rest one per bucket.
fn plan(cluster: &TestCluster) -> Plan {
    // Two buckets on different primaries: S1 on A, S2 on B.
    let view = cluster.nodes().expect("the cluster's nodes");
    let owner = |bucket: u16| {
        view.iter()
            .find(|n| n.is_primary() && n.owns(slot_of_bucket(bucket)))
            .map(|n| n.port)
            .expect("every slot has an owner")
    };
    let b1: u16 = 10;
    let b2 = (0..BUCKETS)
        .find(|b| owner(*b) != owner(b1))
        .expect("a bucket on another primary");
    let moves = Moves {
        s1: slot_of_bucket(b1),
        s2: slot_of_bucket(b2),
        a: owner(b1),
        b: owner(b2),
    };
    let actors = workload::actors_in_buckets("reshard", ACTORS, &[b1, b2], PER_MOVED_BUCKET);
    let in_moved_slots: Vec<usize> = (0..ACTORS)
        .filter(|i| [b1, b2].contains(&bucket_of(&actors[*i])))
        .collect();
    let s1_actors: Vec<usize> = in_moved_slots
        .iter()
        .copied()
        .filter(|i| bucket_of(&actors[*i]) == b1)
        .collect();
    let s2_actors: Vec<usize> = in_moved_slots
        .iter()
        .copied()
        .filter(|i| bucket_of(&actors[*i]) == b2)
        .collect();
    assert!(s1_actors.len() >= 4 && s2_actors.len() >= 4);
    eprintln!(
        "S1 = slot {} (bucket {b1}, {} actors) on :{}; S2 = slot {} (bucket {b2}, {} actors) on :{}; \
         {} actors in {} buckets",
        moves.s1,
        s1_actors.len(),
        moves.a,
        moves.s2,
        s2_actors.len(),
        moves.b,
        actors.len(),
        actors
            .iter()
            .map(|a| bucket_of(a))
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    );

    Plan {
        moves,
        actors,
        s1_actors,
        s2_actors,
    }
}

/// Prints the figures of a run: latencies of the actors whose slots never
/// move, during the moves and during as long a period just before the
/// first one (or as much of it as the writers ran), and the longest time
/// an actor waited between two acks during the moves.
fn print_figures(
    timeline: &Timeline,
    bound_hit_at: Instant,
    logs: &[WriterLog],
    in_moved_slots: &[usize],
    shared: &Shared,
) {
    let Some(moves_start) = timeline.moves_start else {
        eprintln!("no move was made");
        return;
    };
    let moves_end = timeline.moves_end.unwrap_or(bound_hit_at);
    let unfinished = if timeline.moves_end.is_some() {
        ""
    } else {
        " (UNFINISHED: cut by the bound)"
    };
    let moving = moves_end - moves_start;
    let baseline_start = moves_start
        .checked_sub(moving)
        .unwrap_or(shared.started)
        .max(shared.started);
    let mut during = Vec::new();
    let mut before = Vec::new();
    let mut stalls = (Duration::ZERO, Duration::ZERO);
    let mut failed = (0, 0);
    for (i, log) in logs.iter().enumerate() {
        let gap = workload::longest_gap(&log.acks, moves_start, moves_end);
        if in_moved_slots.contains(&i) {
            stalls.0 = stalls.0.max(gap);
            continue;
        }
        stalls.1 = stalls.1.max(gap);
        // Every call counts, failed ones with the time they took to fail.
        let calls = log.acks.iter().map(|a| (a.sent, a.latency(), true)).chain(
            log.failures
                .iter()
                .map(|(sent, took)| (*sent, *took, false)),
        );
        for (sent, took, ok) in calls {
            if (moves_start..moves_end).contains(&sent) {
                during.push(took);
                failed.1 += usize::from(!ok);
            } else if (baseline_start..moves_start).contains(&sent) {
                before.push(took);
                failed.0 += usize::from(!ok);
            }
        }
    }
    eprintln!(
        "moves took {moving:?}{unfinished} ({} keys in {} MIGRATE steps); append calls of the actors \
         whose slots never move: p99 {:?} over {} calls ({} failed) in the {:?} before the \
         moves, p99 {:?} over {} calls ({} failed) during them",
        timeline.keys_moved,
        timeline.steps,
        workload::p99(before.clone()),
        before.len(),
        failed.0,
        moves_start - baseline_start,
        workload::p99(during.clone()),
        during.len(),
        failed.1,
    );
    eprintln!(
        "longest time between two acks of one actor during the moves: {:?} (actors of S1/S2), \
         {:?} (the others)",
        stalls.0, stalls.1
    );
}

/// The slots and primaries of the test.
struct Moves {
    s1: u16,
    s2: u16,
    a: u16,
    b: u16,
}

/// When the moves happened, filled in as they go (so that a run cut short
/// by the bound still has its figures).
#[derive(Default)]
struct Timeline {
    moves_start: Option<Instant>,
    moves_end: Option<Instant>,
    /// The event clock when the last move was finished.
    moves_end_tick: u64,
    keys_moved: usize,
    steps: usize,
}

/// The moves, with the writers running: S1 from A to B two keys at a time,
/// S2 from B to A at once, S1 back three keys at a time; then every actor
/// finishes two more calls.
async fn drive(
    cluster: &Arc<TestCluster>,
    shared: &Arc<Shared>,
    moves: &Moves,
    s1_actors: &[usize],
    s2_actors: &[usize],
    timeline: &Mutex<Timeline>,
) {
    shared.set_phase("baseline: every actor appends, nothing moves");
    shared
        .wait_until(|s| {
            s.acks.load(Ordering::SeqCst) >= BASELINE_ACKS && s.acked_now().iter().all(|n| *n >= 50)
        })
        .await;

    timeline.lock().expect("timeline").moves_start = Some(Instant::now());
    let s1_slot = (moves.s1, s1_actors);
    step_by_step(cluster, shared, s1_slot, (moves.a, moves.b), 2, timeline).await;

    shared.set_phase(format!(
        "S2 (slot {}) from :{} to :{} in one step",
        moves.s2, moves.b, moves.a
    ));
    wait_for_appends(shared, s2_actors).await;
    let (slot, from, to) = (moves.s2, moves.b, moves.a);
    let keys = workload::admin(cluster, shared, "moving S2", move |c| {
        c.move_slot(slot, from, to, 10_000)
    })
    .await;
    {
        let mut timeline = timeline.lock().expect("timeline");
        timeline.keys_moved += keys;
        timeline.steps += 1;
    }
    wait_for_appends(shared, s2_actors).await;

    step_by_step(cluster, shared, s1_slot, (moves.b, moves.a), 3, timeline).await;
    {
        let mut timeline = timeline.lock().expect("timeline");
        timeline.moves_end = Some(Instant::now());
        timeline.moves_end_tick = shared.tick();
    }

    let (s1, s2, a) = (moves.s1, moves.s2, moves.a);
    let owners = workload::admin(cluster, shared, "owners", move |c| {
        Ok((c.primary_of_slot(s1)?, c.primary_of_slot(s2)?))
    })
    .await;
    assert_eq!(owners, (a, a), "both slots end on A");

    shared.set_phase("after the moves: every actor finishes two more calls");
    let all: Vec<usize> = (0..shared.calls.len()).collect();
    wait_for_calls(shared, &all).await;
    wait_for_calls(shared, &all).await;
}

/// Waits until each of `actors` has finished one more append call.
async fn wait_for_calls(shared: &Shared, actors: &[usize]) {
    let before = shared.calls_now();
    shared
        .wait_until(|s| {
            let now = s.calls_now();
            actors.iter().all(|i| now[*i] > before[*i])
        })
        .await;
}

/// Waits until appends have happened since the last step: 64 more acks in
/// all, and each of `actors` (those of the moving slot) has an append in
/// flight or finished since. Their appends cannot be required to finish:
/// every append also writes its bucket's index and totals, so while a
/// slot's keys are split between two primaries every append of that slot
/// gets `TRYAGAIN` from the servers until the last step; a sound storage
/// waits inside the call.
async fn wait_for_appends(shared: &Shared, actors: &[usize]) {
    let finished = shared.calls_now();
    let acks = shared.acks.load(Ordering::SeqCst);
    shared
        .wait_until(|s| {
            s.acks.load(Ordering::SeqCst) >= acks + 64
                && actors
                    .iter()
                    .all(|i| s.started_calls[*i].load(Ordering::SeqCst) > finished[*i])
        })
        .await;
}

/// Moves `slot` from `from` to `to`, `per_step` keys per `MIGRATE`, with
/// appends happening between two steps (see [`wait_for_appends`]);
/// `slot` is the slot with its actors. Counts keys and steps in `timeline`.
async fn step_by_step(
    cluster: &Arc<TestCluster>,
    shared: &Arc<Shared>,
    (slot, actors): (u16, &[usize]),
    (from, to): (u16, u16),
    per_step: usize,
    timeline: &Mutex<Timeline>,
) {
    shared.set_phase(format!(
        "slot {slot} from :{from} to :{to}, {per_step} keys per step"
    ));
    workload::admin(cluster, shared, "begin_migration", move |c| {
        c.begin_migration(slot, from, to)
    })
    .await;
    let (mut keys, mut steps) = (0, 0);
    loop {
        wait_for_appends(shared, actors).await;
        let sent = workload::admin(cluster, shared, "migrate_keys", move |c| {
            c.migrate_keys(slot, from, to, per_step)
        })
        .await;
        if sent == 0 {
            break;
        }
        keys += sent;
        steps += 1;
        {
            let mut timeline = timeline.lock().expect("timeline");
            timeline.keys_moved += sent;
            timeline.steps += 1;
        }
        shared.set_phase(format!(
            "slot {slot} from :{from} to :{to}: {keys} keys moved in {steps} steps"
        ));
    }
    wait_for_appends(shared, actors).await;
    workload::admin(cluster, shared, "finish_migration", move |c| {
        c.finish_migration(slot, to)
    })
    .await;
}

/// One append to an actor of each of the 1,024 buckets, then its replay.
async fn every_bucket(storage: &RedisJournalStorage) -> Vec<String> {
    let mut ids: BTreeMap<u16, String> = BTreeMap::new();
    let mut n = 0u64;
    while ids.len() < usize::from(BUCKETS) {
        let id = format!("every-{n}");
        n += 1;
        ids.entry(bucket_of(&id)).or_insert(id);
    }
    let results: Vec<Option<String>> = futures::stream::iter(ids)
        .map(|(bucket, id)| async move {
            let entry = workload::entry(&id, 1);
            if let Err(e) = storage.append_entry(&entry).await {
                return Some(format!("bucket {bucket} ({id}): append failed: {e}"));
            }
            match storage.replay_from(&id, 1).await {
                Ok(stored) if stored == vec![entry] => None,
                Ok(stored) => Some(format!(
                    "bucket {bucket} ({id}): replay returned {} entries, not the one appended",
                    stored.len()
                )),
                Err(e) => Some(format!("bucket {bucket} ({id}): replay failed: {e}")),
            }
        })
        .buffer_unordered(128)
        .collect()
        .await;
    results.into_iter().flatten().collect()
}

/// Every state a slot passes through while it moves one key at a time:
/// after each `MIGRATE`, a paged listing holds every actor exactly once,
/// and the totals count every actor and entry, both with the bucket's
/// index on either side of the move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_and_totals_hold_in_every_state_of_a_slot_move() {
    let Some(cluster) = workload::start_cluster(ClusterSpec {
        primaries: 3,
        replicas_per_primary: 0,
        node_timeout_ms: 5_000,
    }) else {
        return;
    };
    let storage = RedisJournalStorage::open(
        cluster.url(),
        RedisOptions {
            key_prefix: common::fresh_prefix(),
            ..RedisOptions::default()
        },
    )
    .await
    .expect("the storage opens on the test cluster");
    // Five actors in one bucket, whose slot moves, and 60 elsewhere.
    let moving_bucket = bucket_of("list-0");
    let mut actors: Vec<String> = (0..1_000_000)
        .map(|i| format!("list-{i}"))
        .filter(|a| bucket_of(a) == moving_bucket)
        .take(5)
        .collect();
    actors.extend((0..60).map(|i| format!("other-{i}")));
    actors.sort();
    actors.dedup();
    for actor in &actors {
        storage
            .append_batch(&[workload::entry(actor, 1), workload::entry(actor, 2)])
            .await
            .expect("append");
    }
    let slot = slot_of_bucket(moving_bucket);
    let nodes = cluster.nodes().expect("nodes");
    let from = nodes
        .iter()
        .find(|n| n.is_primary() && n.owns(slot))
        .map(|n| n.port)
        .expect("the slot's owner");
    let to = nodes
        .iter()
        .find(|n| n.is_primary() && n.port != from)
        .map(|n| n.port)
        .expect("another primary");
    let check = |when: String| {
        let storage = storage.clone();
        let actors = actors.clone();
        async move {
            let mut listed = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let page = storage
                    .list_actors_page(cursor.as_deref(), 7)
                    .await
                    .unwrap_or_else(|e| panic!("{when}: listing: {e}"));
                listed.extend(page.actors);
                match page.next_cursor {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
            let mut sorted = listed.clone();
            sorted.sort();
            assert_eq!(sorted, actors, "{when}: an actor lost or repeated");
            let stats = storage
                .stats()
                .await
                .unwrap_or_else(|e| panic!("{when}: stats: {e}"));
            assert_eq!(
                (stats.actors, stats.entries),
                (actors.len() as u64, 2 * actors.len() as u64),
                "{when}"
            );
        }
    };
    check("before the move".into()).await;
    cluster.begin_migration(slot, from, to).expect("begin");
    for step in 1.. {
        let moved = cluster.migrate_keys(slot, from, to, 1).expect("MIGRATE");
        if moved == 0 {
            break;
        }
        check(format!("after MIGRATE step {step}")).await;
    }
    cluster.finish_migration(slot, to).expect("finish");
    check("after the move".into()).await;
}
