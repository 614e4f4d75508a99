//! The workloads: append latency, concurrent throughput, replay rate,
//! recovery time, checkpoint size, streaming-replay memory, and messages
//! through the durability facet.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::TryStreamExt;
use journal_core::checkpoint::CheckpointPolicy;
use journal_core::journal_entry::Entry;
use journal_core::{
    Actor, DurabilityConfig, DurabilityFacet, DurableActor, ExecutionContext, HandlerResult,
    JournalBackend, JournalEntry, JournalStorage, MessageReceived,
};

use crate::{alloc, Baseline, Better, Figure};

/// Sizes of the workloads.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    /// Appends timed one by one for the latency percentiles.
    pub latency_appends: usize,
    /// Appends per concurrency level for the throughput figures.
    pub throughput_appends: usize,
    /// Entries of the replayed journal.
    pub replay_entries: u64,
    /// Entries of the recovered journal.
    pub recovery_entries: u64,
    /// Entries of the streamed journal (peak memory).
    pub stream_entries: u64,
    /// Entries per `append_batch` in the batch figure.
    pub batch: u64,
    /// Actors appending in turn for the interleaved replay, and entries
    /// each.
    pub interleaved: (usize, u64),
    /// Messages through the durability facet: of the one actor, and of
    /// each of the 256 actors.
    pub facet: (u64, u64),
}

impl Sizes {
    /// Sizes for a server backend where every facet message is two round
    /// trips: smaller setups, same workloads.
    pub const SERVER: Sizes = Sizes {
        latency_appends: 5_000,
        throughput_appends: 25_600,
        replay_entries: 100_000,
        recovery_entries: 20_000,
        stream_entries: 200_000,
        batch: 1_000,
        interleaved: (64, 500),
        facet: (500, 20),
    };

    /// The sizes the issue's targets are stated for.
    pub const FULL: Sizes = Sizes {
        latency_appends: 20_000,
        throughput_appends: 51_200,
        replay_entries: 100_000,
        recovery_entries: 100_000,
        stream_entries: 1_000_000,
        batch: 100,
        interleaved: (256, 1_000),
        facet: (1_000, 40),
    };
}

/// A 100-byte message entry.
pub fn bench_entry(actor_id: &str, sequence: u64) -> JournalEntry {
    JournalEntry::new(
        actor_id,
        sequence,
        Entry::message_received(format!("m-{sequence}"), "Credit", vec![b'x'; 100]),
    )
}

/// A fresh actor id: `bench-<tag>-<ULID>`.
pub fn unique(tag: &str) -> String {
    format!("bench-{tag}-{}", journal_core::new_entry_id())
}

/// The `p` quantile of `sorted`, in microseconds.
pub fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(index).map_or(0.0, |d| d.as_secs_f64() * 1e6)
}

/// Append latency of one actor, p50 and p99, against the baseline's
/// one-entry write.
pub async fn append_latency(
    storage: &dyn JournalStorage,
    baseline: &dyn Baseline,
    n: usize,
) -> Vec<Figure> {
    let actor = unique("latency");
    let raw_actor = unique("latency-raw");
    let mut ours = Vec::with_capacity(n);
    let mut raw = Vec::with_capacity(n);
    for i in 0..n as u64 {
        let e = bench_entry(&actor, i + 1);
        let started = Instant::now();
        storage.append_entry(&e).await.expect("append");
        ours.push(started.elapsed());
        let e = bench_entry(&raw_actor, i + 1);
        let started = Instant::now();
        baseline.append(&e).await;
        raw.push(started.elapsed());
    }
    ours.sort_unstable();
    raw.sort_unstable();
    vec![
        Figure {
            name: "append latency p50".into(),
            value: percentile(&ours, 0.5),
            unit: "us",
            baseline: percentile(&raw, 0.5),
            baseline_name: format!("{}, one row per commit", baseline.describe()),
            better: Better::Lower,
            target: String::new(),
            met: None,
        },
        Figure {
            name: "append latency p99".into(),
            value: percentile(&ours, 0.99),
            unit: "us",
            baseline: percentile(&raw, 0.99),
            baseline_name: format!("{}, one row per commit", baseline.describe()),
            better: Better::Lower,
            target: String::new(),
            met: None,
        },
    ]
}

/// Appends per second with `actors` actors appending at once, each its own
/// journal, `total` appends in all, against the baseline with
/// `baseline_actors` clients (the issue's targets compare with one).
pub async fn throughput(
    storage: Arc<dyn JournalStorage>,
    baseline: Arc<dyn Baseline>,
    actors: usize,
    baseline_actors: usize,
    total: usize,
) -> Figure {
    let run = |raw: bool| {
        let actors = if raw { baseline_actors } else { actors };
        let per_actor = (total / actors).max(1) as u64;
        let (storage, baseline) = (Arc::clone(&storage), Arc::clone(&baseline));
        let names: Vec<String> = (0..actors).map(|_| unique("tput")).collect();
        async move {
            let started = Instant::now();
            if raw {
                append_at_once(&names, per_actor, move |e| {
                    let baseline = Arc::clone(&baseline);
                    async move { baseline.append(&e).await }
                })
                .await;
            } else {
                append_at_once(&names, per_actor, move |e| {
                    let storage = Arc::clone(&storage);
                    async move {
                        storage.append_entry(&e).await.expect("append");
                    }
                })
                .await;
            }
            (per_actor * actors as u64) as f64 / started.elapsed().as_secs_f64()
        }
    };
    let ours = run(false).await;
    let raw = run(true).await;
    Figure {
        name: format!("appends/s, {actors} concurrent actors"),
        value: ours,
        unit: "appends/s",
        baseline: raw,
        baseline_name: format!("{}, {baseline_actors} client(s)", baseline.describe()),
        better: Better::Higher,
        target: String::new(),
        met: None,
    }
}

/// Each of `actors` appends its entries 1 to `n` through `append`, one at a
/// time, all actors at once (a task each); returns when all are done.
async fn append_at_once<F, Fut>(actors: &[String], n: u64, append: F)
where
    F: Fn(JournalEntry) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let tasks: Vec<_> = actors
        .iter()
        .map(|actor| {
            let (append, actor) = (append.clone(), actor.clone());
            tokio::spawn(async move {
                for seq in 1..=n {
                    append(bench_entry(&actor, seq)).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
}

/// Writes `n` entries of a fresh actor in batches of 1,000.
pub async fn fill(
    storage: &dyn JournalStorage,
    baseline: Option<&dyn Baseline>,
    tag: &str,
    n: u64,
) -> String {
    let actor = unique(tag);
    let mut seq = 1;
    while seq <= n {
        let end = (seq + 999).min(n);
        let batch: Vec<_> = (seq..=end).map(|s| bench_entry(&actor, s)).collect();
        match baseline {
            Some(raw) => raw.append_many(&batch).await,
            None => storage.append_batch(&batch).await.expect("batch"),
        }
        seq = end + 1;
    }
    actor
}

/// Entries replayed per second (streaming) from a journal of `n` entries:
/// the best of [`REPLAY_RUNS`] runs, alternating with the baseline's.
pub async fn replay_rate(storage: &dyn JournalStorage, baseline: &dyn Baseline, n: u64) -> Figure {
    let actor = fill(storage, None, "replay", n).await;
    let raw_actor = fill(storage, Some(baseline), "replay-raw", n).await;
    let (ours, raw) = best_replays(storage, baseline, &actor, &raw_actor, n).await;
    Figure {
        name: format!("replay of {n} entries (best of {REPLAY_RUNS})"),
        value: ours,
        unit: "entries/s",
        baseline: raw,
        baseline_name: format!("{}, read and decode", baseline.describe()),
        better: Better::Higher,
        target: String::new(),
        met: None,
    }
}

/// Entries replayed per second from one of `actors` actors that appended
/// in turn, `n` entries each, so that its entries lie among everyone's: the
/// best of [`REPLAY_RUNS`] runs, alternating with the baseline's, whose rows were
/// written in the same round-robin order.
pub async fn replay_interleaved(
    storage: Arc<dyn JournalStorage>,
    baseline: &dyn Baseline,
    actors: usize,
    n: u64,
) -> Figure {
    let names: Vec<String> = (0..actors).map(|_| unique("turns")).collect();
    // Group commits interleave the actors' entries.
    let writer = Arc::clone(&storage);
    append_at_once(&names, n, move |e| {
        let storage = Arc::clone(&writer);
        async move {
            storage.append_entry(&e).await.expect("append");
        }
    })
    .await;
    let raw_names: Vec<String> = (0..actors).map(|_| unique("turns-raw")).collect();
    let raw_rows: Vec<_> = (1..=n)
        .flat_map(|seq| raw_names.iter().map(move |a| bench_entry(a, seq)))
        .collect();
    baseline.append_many(&raw_rows).await;
    let (ours, raw) = best_replays(&*storage, baseline, &names[0], &raw_names[0], n).await;
    Figure {
        name: format!(
            "replay, one of {actors} actors appending in turn ({n} entries, best of {REPLAY_RUNS})"
        ),
        value: ours,
        unit: "entries/s",
        baseline: raw,
        baseline_name: format!("{}, same order, read and decode", baseline.describe()),
        better: Better::Higher,
        target: String::new(),
        met: None,
    }
}

/// Runs of each replay figure: the machine's background work (the
/// journal's WAL checkpointer, the raw file's own checkpoints after its
/// fill) slows some runs, and the best of many is the steadiest figure.
pub const REPLAY_RUNS: usize = 9;

/// The best replay rates of [`REPLAY_RUNS`] runs of `actor` and `raw_actor`
/// (`n` entries each), alternating.
async fn best_replays(
    storage: &dyn JournalStorage,
    baseline: &dyn Baseline,
    actor: &str,
    raw_actor: &str,
    n: u64,
) -> (f64, f64) {
    let (mut ours, mut raw) = (0.0f64, 0.0f64);
    for _ in 0..REPLAY_RUNS {
        let started = Instant::now();
        let count = storage
            .replay_stream(actor, 1)
            .try_fold(0u64, |n, _| async move { Ok(n + 1) })
            .await
            .expect("replay");
        ours = ours.max(count as f64 / started.elapsed().as_secs_f64());
        assert_eq!(count, n);
        let started = Instant::now();
        let raw_count = baseline.replay(raw_actor).await;
        raw = raw.max(raw_count as f64 / started.elapsed().as_secs_f64());
        assert_eq!(raw_count as u64, n);
    }
    (ours, raw)
}

/// The bench's actor: a ledger of accounts kept as JSON-like records, the
/// shape many actors' state has.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    balances: Vec<i64>,
}

impl Ledger {
    /// A ledger of `accounts` accounts.
    pub fn new(accounts: usize) -> Self {
        Ledger {
            balances: vec![1_000; accounts],
        }
    }

    /// The state as the actor snapshots it.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = String::with_capacity(self.balances.len() * 96);
        for (i, b) in self.balances.iter().enumerate() {
            let _ = writeln!(
                out,
                r#"{{"account":"acct-{i:05}","balance":{b},"currency":"EUR","status":"active","owner":"customer-{}"}}"#,
                i * 7919 % 100_000
            );
        }
        out.into_bytes()
    }
}

#[async_trait]
impl DurableActor for Ledger {
    async fn handle(
        &mut self,
        message: &MessageReceived,
        _ctx: &mut ExecutionContext,
    ) -> HandlerResult {
        let account =
            message.payload.first().map_or(0, |b| usize::from(*b)) % self.balances.len().max(1);
        if let Some(balance) = self.balances.get_mut(account) {
            *balance += 1;
        }
        Ok(Vec::new())
    }

    fn snapshot(&self) -> Result<Vec<u8>, String> {
        Ok(self.balances.iter().flat_map(|b| b.to_le_bytes()).collect())
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        if !state.len().is_multiple_of(8) {
            return Err("not a ledger".into());
        }
        self.balances = state
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap_or_default()))
            .collect();
        Ok(())
    }
}

/// Appends per second through `append_batch` in batches of `size`, against
/// the baseline's own multi-row commits (`Baseline::append_many`).
pub async fn batch_rate(
    storage: &dyn JournalStorage,
    baseline: &dyn Baseline,
    n: u64,
    size: u64,
) -> Figure {
    let (actor, raw_actor) = (unique("batch"), unique("batch-raw"));
    let batches: Vec<Vec<_>> = (0..n / size)
        .map(|b| {
            (b * size + 1..=b * size + size)
                .map(|s| bench_entry(&actor, s))
                .collect()
        })
        .collect();
    let started = Instant::now();
    for batch in &batches {
        storage.append_batch(batch).await.expect("batch");
    }
    let ours = n as f64 / started.elapsed().as_secs_f64();
    let raw_entries: Vec<_> = (1..=n).map(|s| bench_entry(&raw_actor, s)).collect();
    let started = Instant::now();
    baseline.append_many(&raw_entries).await;
    let raw = n as f64 / started.elapsed().as_secs_f64();
    Figure {
        name: format!("appends/s, batches of {size}"),
        value: ours,
        unit: "appends/s",
        baseline: raw,
        baseline_name: format!("{}, {}", baseline.describe(), baseline.batch_shape()),
        better: Better::Higher,
        target: String::new(),
        met: None,
    }
}

fn ledger_actor(storage: Arc<dyn JournalStorage>, id: &str, interval: u64) -> Actor<Ledger> {
    let config = DurabilityConfig {
        checkpoint_interval: interval,
        ..DurabilityConfig::recommended(JournalBackend::Memory)
    };
    let mut actor = Actor::new(id, Ledger::new(500));
    actor
        .facets()
        .attach(Box::new(DurabilityFacet::new(storage, config)))
        .expect("the only facet");
    actor
}

/// Recovery of an actor with a journal of `entries` entries: from its
/// checkpoints (taken every 1,000 entries) against a full replay of the
/// same journal.
pub async fn recovery(storage: Arc<dyn JournalStorage>, entries: u64) -> Figure {
    let id = unique("recovery");
    let mut actor = ledger_actor(Arc::clone(&storage), &id, 1_000);
    for i in 0..entries / 2 {
        let message = MessageReceived {
            message_id: format!("m-{i}"),
            message_type: "Credit".into(),
            payload: vec![(i % 251) as u8],
            ..MessageReceived::default()
        };
        actor.send(message).await.expect("send");
    }
    drop(actor);
    // Activation only reads: each run recovers the same journal.
    let activation = |interval: u64| {
        let (storage, id) = (Arc::clone(&storage), id.clone());
        async move {
            let started = Instant::now();
            ledger_actor(storage, &id, interval)
                .activate()
                .await
                .expect("recover");
            started.elapsed()
        }
    };
    let mut from_checkpoint = Duration::MAX;
    for _ in 0..5 {
        from_checkpoint = from_checkpoint.min(activation(1_000).await);
    }
    storage
        .delete_checkpoints_before(&id, u64::MAX)
        .await
        .expect("drop checkpoints");
    let mut full = Duration::MAX;
    for _ in 0..3 {
        full = full.min(activation(0).await);
    }
    Figure {
        name: format!("recovery of {entries} entries (checkpoint every 1,000, best of 5)"),
        value: from_checkpoint.as_secs_f64() * 1e3,
        unit: "ms",
        baseline: full.as_secs_f64() * 1e3,
        baseline_name: "full replay of the same journal (best of 3)".into(),
        better: Better::Lower,
        target: String::new(),
        met: None,
    }
}

/// Compressed against raw size of the bench actor's state (5,000 accounts
/// as JSON-like records), at the default zstd level.
pub fn checkpoint_size() -> Figure {
    let state = Ledger::new(5_000).encode();
    let checkpoint = CheckpointPolicy::default()
        .encode("bench", 1, &state)
        .expect("encode");
    Figure {
        name: "checkpoint size, zstd level 3".into(),
        value: checkpoint.state_data.len() as f64,
        unit: "bytes",
        baseline: state.len() as f64,
        baseline_name: "the raw state".into(),
        better: Better::Lower,
        target: String::new(),
        met: None,
    }
}

/// Peak memory a streaming replay of `n` entries adds, against collecting
/// the same replay into a list.
pub async fn stream_memory(storage: &dyn JournalStorage, n: u64) -> Figure {
    let actor = fill(storage, None, "stream", n).await;
    alloc::start();
    let count = storage
        .replay_stream(&actor, 1)
        .try_fold(0u64, |n, _| async move { Ok(n + 1) })
        .await
        .expect("stream");
    let streamed = alloc::stop();
    assert_eq!(count, n);
    alloc::start();
    let listed = storage.replay_from(&actor, 1).await.expect("replay").len() as u64;
    let collected = alloc::stop();
    assert_eq!(listed, n);
    storage.delete_actor(&actor).await.expect("delete");
    Figure {
        name: format!("peak memory of a streaming replay of {n} entries"),
        value: streamed as f64 / (1024.0 * 1024.0),
        unit: "MiB",
        baseline: collected as f64 / (1024.0 * 1024.0),
        baseline_name: "the same replay collected into a Vec".into(),
        better: Better::Lower,
        target: String::new(),
        met: None,
    }
}

/// The facet figure's actor: each message runs one side effect (a charge
/// whose receipt is the payload) and counts it, so the facet journals
/// three entries per message: `MessageReceived`, `SideEffectExecuted`,
/// `MessageProcessed`.
#[derive(Debug, Clone, Default)]
pub struct Charger {
    charged: u64,
}

#[async_trait]
impl DurableActor for Charger {
    async fn handle(
        &mut self,
        message: &MessageReceived,
        ctx: &mut ExecutionContext,
    ) -> HandlerResult {
        let receipt = message.payload.clone();
        let receipt = ctx
            .side_effect("charge", || async move { Ok::<_, String>(receipt) })
            .await??;
        self.charged += 1;
        Ok(receipt)
    }

    fn snapshot(&self) -> Result<Vec<u8>, String> {
        Ok(self.charged.to_le_bytes().to_vec())
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        let bytes: [u8; 8] = state.try_into().map_err(|_| "not a charger")?;
        self.charged = u64::from_le_bytes(bytes);
        Ok(())
    }
}

/// Runs of each facet figure, alternating with the raw appends; the best
/// of each is reported.
pub const FACET_RUNS: usize = 3;

/// Messages per second through the durability facet (default
/// configuration: recovery, cached effects, dedup, a checkpoint every 100
/// entries), each message running one side effect, with `actors` actors
/// at once (a task each, its `messages` messages one after another),
/// against single-entry `append_entry` calls per second on the same
/// storage with as many actors at once (three times as many entries each,
/// the facet's entries per message). The best of [`FACET_RUNS`] runs.
///
/// With `batched`, the facet runs with `batch_journal_writes` (2 appends
/// per message instead of 3).
pub async fn facet_throughput(
    storage: Arc<dyn JournalStorage>,
    backend: JournalBackend,
    actors: usize,
    messages: u64,
    batched: bool,
) -> Figure {
    let config = DurabilityConfig {
        batch_journal_writes: batched,
        ..DurabilityConfig::recommended(backend)
    };
    let (mut ours, mut raw) = (0.0f64, 0.0f64);
    for _ in 0..FACET_RUNS {
        ours = ours.max(facet_messages(&storage, &config, actors, messages).await);
        let names: Vec<String> = (0..actors).map(|_| unique("facet-raw")).collect();
        let writer = Arc::clone(&storage);
        let started = Instant::now();
        append_at_once(&names, 3 * messages, move |e| {
            let storage = Arc::clone(&writer);
            async move {
                storage.append_entry(&e).await.expect("append");
            }
        })
        .await;
        let appends = (3 * messages * actors as u64) as f64;
        raw = raw.max(appends / started.elapsed().as_secs_f64());
    }
    let who = if actors == 1 { "actor" } else { "actors" };
    let how = if batched { ", batched writes" } else { "" };
    Figure {
        name: format!("facet messages/s (1 effect{how}), {actors} {who}"),
        value: ours,
        unit: "messages/s",
        baseline: raw,
        baseline_name: format!(
            "appends/s: append_entry on the same storage, {actors} actor(s), one entry each \
             (best of {FACET_RUNS})"
        ),
        better: Better::Higher,
        target: String::new(),
        met: None,
    }
}

/// One run of the facet figure: `actors` fresh actors, activated before
/// the clock starts, each sent `messages` messages; returns messages per
/// second.
async fn facet_messages(
    storage: &Arc<dyn JournalStorage>,
    config: &DurabilityConfig,
    actors: usize,
    messages: u64,
) -> f64 {
    let mut hosts = Vec::with_capacity(actors);
    for _ in 0..actors {
        let mut actor = Actor::new(unique("facet"), Charger::default());
        actor
            .facets()
            .attach(Box::new(DurabilityFacet::new(
                Arc::clone(storage),
                config.clone(),
            )))
            .expect("the only facet");
        actor.activate().await.expect("activate");
        hosts.push(actor);
    }
    let started = Instant::now();
    let tasks: Vec<_> = hosts
        .into_iter()
        .map(|mut actor| {
            tokio::spawn(async move {
                for i in 0..messages {
                    let message = MessageReceived {
                        message_id: format!("m-{i}"),
                        message_type: "Charge".into(),
                        payload: vec![b'x'; 100],
                        ..MessageReceived::default()
                    };
                    actor.send(message).await.expect("send");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    (messages * actors as u64) as f64 / started.elapsed().as_secs_f64()
}
