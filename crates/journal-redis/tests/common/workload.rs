//! The workload of the resharding and failover tests (issue 17): many
//! actors appending through one storage while the cluster under it is
//! reshaped with `redis-cli`, everything each writer saw kept for the
//! checks afterwards. Only the public storage API is used, so the tests
//! hold whatever driver is inside.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use journal_core::{journal_entry::Entry, JournalEntry, JournalError, JournalStorage};
use journal_redis::RedisJournalStorage;
use prost::Message;
use redis_test_cluster::{check_binaries, ClusterSpec, TestCluster};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// Starts a throwaway cluster for one test under the workspace's
/// `target/tmp`, or `None` (locally; under `CI=true` a failure) when
/// `redis-server` or `redis-cli` is missing.
pub fn start_cluster(spec: ClusterSpec) -> Option<Arc<TestCluster>> {
    if let Err(advice) = check_binaries() {
        super::skip_or_fail(&format!("cannot start a Redis Cluster: {advice}"));
        return None;
    }
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    match TestCluster::start(&root, spec) {
        Ok(cluster) => Some(Arc::new(cluster)),
        Err(e) => panic!("{e}"),
    }
}

/// The entry `sequence` of `actor`: its message id and payload name both,
/// so a stray entry says whose it is.
pub fn entry(actor: &str, sequence: u64) -> JournalEntry {
    JournalEntry::new(
        actor,
        sequence,
        Entry::message_received(
            format!("{actor}#{sequence}"),
            "Tick",
            format!("payload of {actor} at {sequence}").into_bytes(),
        ),
    )
}

/// One kind of trouble a writer met, with its first occurrence.
#[derive(Debug, Clone)]
pub struct Problem {
    /// How many times.
    pub count: u64,
    /// The first one, in full, with the actor, sequence and time.
    pub first: String,
}

/// What the writers share with the test driving them.
pub struct Shared {
    /// Event clock: every call's start and every ack takes a tick, so the
    /// test can order its own actions (a kill) against the writers'
    /// events without comparing times.
    clock: AtomicU64,
    progress: Notify,
    stop: AtomicBool,
    /// Appends acknowledged, all actors.
    pub acks: AtomicU64,
    /// Per actor: append calls started.
    pub started_calls: Vec<AtomicU64>,
    /// Per actor: append calls finished, `Ok` or `Err`.
    pub calls: Vec<AtomicU64>,
    /// Per actor: appends acknowledged.
    pub acked: Vec<AtomicU64>,
    /// Per actor: the tick at which the last acknowledged append was sent.
    pub last_ack_sent_tick: Vec<AtomicU64>,
    /// Per actor: calls failed since its last ack.
    failing: Vec<AtomicU64>,
    /// The actors, for reports.
    actors: Vec<String>,
    /// Errors and wrong replies by kind: `"<op> <variant>: <message>"`,
    /// digits folded.
    problems: Mutex<BTreeMap<String, Problem>>,
    /// What the test is doing, for the report when it is stuck.
    phase: Mutex<String>,
    /// When the writers started.
    pub started: Instant,
}

impl Shared {
    fn new(actors: Vec<String>) -> Self {
        let counters = || (0..actors.len()).map(|_| AtomicU64::new(0)).collect();
        Shared {
            clock: AtomicU64::new(0),
            progress: Notify::new(),
            stop: AtomicBool::new(false),
            acks: AtomicU64::new(0),
            started_calls: counters(),
            calls: counters(),
            acked: counters(),
            last_ack_sent_tick: counters(),
            failing: counters(),
            actors,
            problems: Mutex::new(BTreeMap::new()),
            phase: Mutex::new("starting".into()),
            started: Instant::now(),
        }
    }

    /// The next tick of the event clock.
    pub fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Says what the test is doing now (shown if it gets stuck).
    pub fn set_phase(&self, phase: impl Into<String>) {
        let phase = phase.into();
        eprintln!("[{:>6.2}s] {phase}", self.started.elapsed().as_secs_f64());
        *self.phase.lock().expect("phase") = phase;
    }

    /// What the test was doing.
    pub fn phase(&self) -> String {
        self.phase.lock().expect("phase").clone()
    }

    /// Waits, without polling, until `ready` holds; it is checked again
    /// after each call any writer finishes.
    pub async fn wait_until(&self, mut ready: impl FnMut(&Self) -> bool) {
        loop {
            let notified = self.progress.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if ready(self) {
                return;
            }
            notified.await;
        }
    }

    /// A snapshot of each actor's finished calls.
    pub fn calls_now(&self) -> Vec<u64> {
        self.calls
            .iter()
            .map(|c| c.load(Ordering::SeqCst))
            .collect()
    }

    /// A snapshot of each actor's acks.
    pub fn acked_now(&self) -> Vec<u64> {
        self.acked
            .iter()
            .map(|c| c.load(Ordering::SeqCst))
            .collect()
    }

    fn record(&self, kind: String, detail: &str) {
        let mut problems = self.problems.lock().expect("problems");
        problems
            .entry(kind)
            .and_modify(|p| p.count += 1)
            .or_insert(Problem {
                count: 1,
                first: format!("{detail} (at {:.2}s)", self.started.elapsed().as_secs_f64()),
            });
    }

    fn record_error(&self, op: &str, error: &JournalError, detail: &str) {
        self.record(kind_of(op, error), &format!("{detail}: {error}"));
    }

    /// Every kind of trouble seen so far.
    pub fn problems(&self) -> BTreeMap<String, Problem> {
        self.problems.lock().expect("problems").clone()
    }

    /// Calls of each actor, acks and troubles, for a report.
    pub fn describe(&self) -> String {
        let mut text = format!(
            "phase: {}; {} appends acknowledged after {:.1}s\n",
            self.phase(),
            self.acks.load(Ordering::SeqCst),
            self.started.elapsed().as_secs_f64()
        );
        let failing: Vec<String> = self
            .failing
            .iter()
            .zip(&self.actors)
            .filter_map(|(n, actor)| {
                let n = n.load(Ordering::SeqCst);
                (n > 0).then(|| {
                    let bucket = journal_redis::keys::bucket_of(actor);
                    format!(
                        "{actor} (slot {}): {n}",
                        journal_redis::keys::slot_of_bucket(bucket)
                    )
                })
            })
            .collect();
        if !failing.is_empty() {
            let _ = writeln!(
                text,
                "{} actors' last calls failed (failures since their last ack): {}",
                failing.len(),
                failing.join(", ")
            );
        }
        let problems = self.problems();
        if problems.is_empty() {
            text.push_str("no errors, no wrong replies\n");
        }
        for (kind, problem) in problems {
            let _ = writeln!(
                text,
                "  {:>6} x {kind}\n         first: {}",
                problem.count, problem.first
            );
        }
        text
    }
}

/// `"<op> <variant>: <message>"` with runs of digits folded to `#` and the
/// message cut, so errors of one kind count together.
fn kind_of(op: &str, error: &JournalError) -> String {
    let debug = format!("{error:?}");
    let variant: String = debug
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    let mut message = String::new();
    for c in error.to_string().chars() {
        if c.is_ascii_digit() {
            if !message.ends_with('#') {
                message.push('#');
            }
        } else {
            message.push(c);
        }
        if message.len() > 150 {
            message.push_str("...");
            break;
        }
    }
    format!("{op} {variant}: {message}")
}

/// One acknowledged append.
#[derive(Debug, Clone, Copy)]
pub struct Ack {
    /// Its sequence.
    pub sequence: u64,
    /// When the call that succeeded was made.
    pub sent: Instant,
    /// When it returned `Ok`.
    pub done: Instant,
    /// The clock's tick when that call was made.
    pub sent_tick: u64,
    /// The clock's tick when it returned `Ok`.
    pub done_tick: u64,
}

impl Ack {
    /// How long the call took.
    pub fn latency(&self) -> Duration {
        self.done - self.sent
    }
}

/// What one writer did.
#[derive(Debug)]
pub struct WriterLog {
    /// Its actor.
    pub actor: String,
    /// Every entry acknowledged, in order: sequences 1, 2, ...
    pub acked: Vec<JournalEntry>,
    /// When each was acknowledged.
    pub acks: Vec<Ack>,
    /// The entry it was still sending when told to stop (never
    /// acknowledged: it may or may not be stored).
    pub pending: Option<JournalEntry>,
    /// Failed calls, each followed by a resend of the same entry.
    pub retries: u64,
    /// Each failed call: when it was made, and how long it took to fail.
    pub failures: Vec<(Instant, Duration)>,
}

/// Writers appending to their actors until stopped.
pub struct Workload {
    /// What they share with the test.
    pub shared: Arc<Shared>,
    /// The actors, writer `i` writing to `actors[i]`.
    pub actors: Vec<String>,
    writers: Vec<JoinHandle<WriterLog>>,
}

/// Pause before a failed call is made again: keeps 64 writers that get
/// an immediate error from spinning the 2 cores the servers need. Not
/// synchronisation: the entry is resent whatever happened meanwhile.
const RESEND_PAUSE: Duration = Duration::from_millis(5);

/// Every this many acks, a writer reads its actor's highest sequence back:
/// it must be the one just acknowledged (no one else writes that actor),
/// so another call's reply, or a lost write, shows.
const PROBE_EVERY: u64 = 8;

impl Workload {
    /// Starts one writer per actor, all through `storage`.
    pub fn start(storage: &RedisJournalStorage, actors: Vec<String>) -> Self {
        let shared = Arc::new(Shared::new(actors.clone()));
        let writers = actors
            .iter()
            .enumerate()
            .map(|(index, actor)| {
                tokio::spawn(write(storage.clone(), shared.clone(), index, actor.clone()))
            })
            .collect();
        Workload {
            shared,
            actors,
            writers,
        }
    }

    /// [`stop`](Self::stop), failing the test if a writer is still in a
    /// call after `limit` (a call that never returns).
    pub async fn stop_within(self, limit: Duration) -> Vec<WriterLog> {
        let shared = self.shared.clone();
        let Ok(logs) = tokio::time::timeout(limit, self.stop()).await else {
            panic!(
                "the writers did not stop within {limit:?}: a call never returned\n{}",
                shared.describe()
            )
        };
        logs
    }

    /// Tells the writers to stop after their current call, and collects
    /// what they did.
    pub async fn stop(self) -> Vec<WriterLog> {
        self.shared.stop.store(true, Ordering::SeqCst);
        let mut logs = Vec::with_capacity(self.writers.len());
        for writer in self.writers {
            logs.push(writer.await.expect("a writer task panicked"));
        }
        logs
    }
}

async fn write(
    storage: RedisJournalStorage,
    shared: Arc<Shared>,
    index: usize,
    actor: String,
) -> WriterLog {
    let mut log = WriterLog {
        actor: actor.clone(),
        acked: Vec::new(),
        acks: Vec::new(),
        pending: None,
        retries: 0,
        failures: Vec::new(),
    };
    let mut sequence = 1;
    while !shared.stop.load(Ordering::SeqCst) {
        let next = entry(&actor, sequence);
        loop {
            shared.started_calls[index].fetch_add(1, Ordering::SeqCst);
            let sent_tick = shared.tick();
            let sent = Instant::now();
            let result = storage.append_entry(&next).await;
            let done = Instant::now();
            shared.calls[index].fetch_add(1, Ordering::SeqCst);
            match result {
                Ok(_) => {
                    let done_tick = shared.tick();
                    log.acks.push(Ack {
                        sequence,
                        sent,
                        done,
                        sent_tick,
                        done_tick,
                    });
                    shared.acked[index].fetch_add(1, Ordering::SeqCst);
                    shared.failing[index].store(0, Ordering::SeqCst);
                    shared.last_ack_sent_tick[index].store(sent_tick, Ordering::SeqCst);
                    shared.acks.fetch_add(1, Ordering::SeqCst);
                    shared.progress.notify_waiters();
                    break;
                }
                Err(e) => {
                    shared.record_error("append", &e, &format!("append {actor} #{sequence}"));
                    log.retries += 1;
                    log.failures.push((sent, done - sent));
                    shared.failing[index].fetch_add(1, Ordering::SeqCst);
                    shared.progress.notify_waiters();
                    if shared.stop.load(Ordering::SeqCst) {
                        log.pending = Some(next);
                        return log;
                    }
                    tokio::time::sleep(RESEND_PAUSE).await;
                }
            }
        }
        log.acked.push(next);
        if sequence % PROBE_EVERY == 0 {
            match storage.highest_sequence(&actor).await {
                Ok(highest) if highest == sequence => {}
                Ok(highest) => shared.record(
                    "read WRONG REPLY: highest_sequence is not the sequence just acknowledged"
                        .into(),
                    &format!(
                        "highest_sequence({actor}) = {highest} right after #{sequence} was \
                         acknowledged"
                    ),
                ),
                Err(e) => shared.record_error(
                    "read",
                    &e,
                    &format!("highest_sequence({actor}) after #{sequence}"),
                ),
            }
        }
        sequence += 1;
    }
    log
}

/// Replays every writer's actor with `storage` and compares with what was
/// acknowledged: every acknowledged entry present and byte-identical, in
/// order, no gap, no duplicate, nothing of another actor, and at most the
/// one entry sent but never acknowledged after them. `Unavailable` reads
/// are made again when `retry_unavailable` (counted in `retried`). Returns
/// the problems found, one line each.
pub async fn check_journals(
    storage: &RedisJournalStorage,
    logs: &[WriterLog],
    retry_unavailable: bool,
    retried: &AtomicU64,
) -> Vec<String> {
    use futures::StreamExt;
    // 16 actors at a time: a client that times out every call still
    // finishes within the tests' bounds.
    futures::stream::iter(logs)
        .map(|log| check_journal(storage, log, retry_unavailable, retried))
        .buffered(16)
        .collect::<Vec<Vec<String>>>()
        .await
        .into_iter()
        .flatten()
        .collect()
}

async fn check_journal(
    storage: &RedisJournalStorage,
    log: &WriterLog,
    retry_unavailable: bool,
    retried: &AtomicU64,
) -> Vec<String> {
    let mut problems = Vec::new();
    let actor = log.actor.as_str();
    let stored = loop {
        match storage.replay_from(actor, 1).await {
            Ok(stored) => break stored,
            Err(JournalError::Unavailable { .. }) if retry_unavailable => {
                retried.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(RESEND_PAUSE).await;
            }
            Err(e) => {
                problems.push(format!("replay of {actor} failed: {e}"));
                return problems;
            }
        }
    };
    if let Some(stray) = stored.iter().find(|e| e.actor_id != actor) {
        problems.push(format!(
            "replay of {actor} returned an entry of {:?} (sequence {})",
            stray.actor_id, stray.sequence
        ));
    }
    let sequences: Vec<u64> = stored.iter().map(|e| e.sequence).collect();
    if sequences
        .iter()
        .zip(1..)
        .any(|(s, expected)| *s != expected)
    {
        problems.push(format!(
            "{actor}: stored sequences are not 1..={} (gap or duplicate): {:?}",
            stored.len(),
            sequences.windows(2).find(|w| w[1] != w[0] + 1)
        ));
    }
    let bytes = |e: &JournalEntry| e.encode_to_vec();
    if let Some(i) = log
        .acked
        .iter()
        .zip(&stored)
        .position(|(a, s)| bytes(a) != bytes(s))
    {
        problems.push(format!(
            "{actor}: stored entry {} differs from the acknowledged one",
            i + 1
        ));
    }
    if stored.len() < log.acked.len() {
        problems.push(format!(
            "{actor}: LOST acknowledged entries: {} acknowledged, {} stored",
            log.acked.len(),
            stored.len()
        ));
    }
    let extra = &stored[log.acked.len().min(stored.len())..];
    let pending_ok = match (extra, &log.pending) {
        ([], _) => true,
        ([one], Some(pending)) => bytes(one) == bytes(pending),
        _ => false,
    };
    if !pending_ok {
        problems.push(format!(
            "{actor}: {} stored entries beyond the {} acknowledged that are not the one \
             pending entry",
            extra.len(),
            log.acked.len()
        ));
    }
    let highest = loop {
        match storage.highest_sequence(actor).await {
            Err(JournalError::Unavailable { .. }) if retry_unavailable => {
                retried.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(RESEND_PAUSE).await;
            }
            other => break other,
        }
    };
    match highest {
        Ok(h) if h == stored.len() as u64 => {}
        Ok(h) => problems.push(format!(
            "{actor}: highest_sequence {h}, but {} entries stored",
            stored.len()
        )),
        Err(e) => problems.push(format!("highest_sequence of {actor} failed: {e}")),
    }
    problems
}

/// Prints `lines`, at most `max` of them, then how many were left out.
pub fn print_some(title: &str, lines: &[String], max: usize) {
    if lines.is_empty() {
        return;
    }
    eprintln!("{title} ({}):", lines.len());
    for line in lines.iter().take(max) {
        eprintln!("  {line}");
    }
    if lines.len() > max {
        eprintln!("  ... and {} more", lines.len() - max);
    }
}

/// One line on the servers: whether each running node answers and says
/// `cluster_state:ok`, to tell a wedged client from a broken cluster.
pub async fn server_health(cluster: &Arc<TestCluster>) -> String {
    let cluster = cluster.clone();
    tokio::task::spawn_blocking(move || {
        let nodes: Vec<String> = cluster
            .live_ports()
            .into_iter()
            .map(|port| {
                let state = redis_test_cluster::cli(port, &["CLUSTER", "INFO"]).map(|info| {
                    info.lines()
                        .find_map(|l| l.trim().strip_prefix("cluster_state:"))
                        .unwrap_or("?")
                        .to_owned()
                });
                match state {
                    Ok(state) => format!(":{port} {state}"),
                    Err(e) => format!(":{port} DOWN ({e})"),
                }
            })
            .collect();
        format!("servers (redis-cli): {}", nodes.join(", "))
    })
    .await
    .expect("the admin thread panicked")
}

/// The 99th percentile (nearest rank).
pub fn p99(mut latencies: Vec<Duration>) -> Option<Duration> {
    if latencies.is_empty() {
        return None;
    }
    latencies.sort_unstable();
    let rank = (latencies.len() * 99).div_ceil(100);
    Some(latencies[rank.saturating_sub(1)])
}

/// The longest time one actor went without an ack within `from..to`:
/// between two consecutive acks where the later is at or after `from` and
/// the earlier before `to`, or from its last ack until `to` when nothing
/// came after it.
pub fn longest_gap(acks: &[Ack], from: Instant, to: Instant) -> Duration {
    let tail = acks
        .last()
        .filter(|last| last.done < to)
        .map(|last| to - last.done);
    acks.windows(2)
        .filter(|w| w[1].done >= from && w[0].done < to)
        .map(|w| w[1].done - w[0].done)
        .chain(tail)
        .max()
        .unwrap_or_default()
}

/// Runs a blocking admin call (redis-cli) off the runtime's threads;
/// panics with the workload's state when it fails.
pub async fn admin<T, F>(cluster: &Arc<TestCluster>, shared: &Shared, what: &str, call: F) -> T
where
    T: Send + 'static,
    F: FnOnce(&TestCluster) -> Result<T, String> + Send + 'static,
{
    let cluster = cluster.clone();
    match tokio::task::spawn_blocking(move || call(&cluster))
        .await
        .expect("the admin thread panicked")
    {
        Ok(value) => value,
        Err(e) => panic!("{what}: {e}\n{}", shared.describe()),
    }
}

/// Actor ids `<prefix>-<n>` for `count` actors: the first `in_bucket`
/// ids of each bucket in `buckets`, then ids of distinct other buckets.
pub fn actors_in_buckets(
    prefix: &str,
    count: usize,
    buckets: &[u16],
    in_bucket: usize,
) -> Vec<String> {
    use journal_redis::keys::bucket_of;
    let mut chosen = Vec::new();
    let mut per_bucket: BTreeMap<u16, usize> = BTreeMap::new();
    let wanted = buckets.len() * in_bucket;
    let mut n = 0u64;
    while chosen.len() < count {
        let id = format!("{prefix}-{n}");
        n += 1;
        let bucket = bucket_of(&id);
        let seen = per_bucket.entry(bucket).or_default();
        let special = buckets.contains(&bucket);
        let take = if special {
            *seen < in_bucket
        } else {
            // Spread the others: one per bucket, and only once the special
            // buckets have their share or there is room left for them.
            *seen == 0 && count - chosen.len() > wanted - chosen_in(&chosen, buckets)
        };
        if take {
            *seen += 1;
            chosen.push(id);
        }
    }
    chosen
}

fn chosen_in(chosen: &[String], buckets: &[u16]) -> usize {
    chosen
        .iter()
        .filter(|id| buckets.contains(&journal_redis::keys::bucket_of(id)))
        .count()
}
