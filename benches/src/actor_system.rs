//! Workloads through the actor system (`journal-actors`): messages per
//! second through typed actors, activation of many actors from their
//! checkpoints with and without a bound on actors in memory, and many
//! timers due at once, live and after a restart. Each figure beside a
//! baseline from the same run.
//!
//! Peak memory is the counting allocator's ([`crate::alloc`]): Rust
//! allocations of every thread, beyond what was live when counting began
//! (SQLite's own page cache is allocated by C and not counted).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use journal_actors::{ActorSystem, Context, SystemConfig, TypedActor};
use journal_core::checkpoint::CheckpointPolicy;
use journal_core::{
    ActorPage, ActorStream, ActorSummary, Checkpoint, ClaimedTimer, DurabilityConfig, EntryStream,
    FacetSnapshot, HandlerError, JournalBackend, JournalEntry, JournalResult, JournalStats,
    JournalStorage, Limits, TimerRecord, TimerScheduled, TimerStore,
};
use prost::Message as _;
use serde::{Deserialize, Serialize};

use crate::workloads::{bench_entry, unique};
use crate::{alloc, Baseline, Better, Figure};

/// A storage the actor system runs on: a journal and a due-timer index,
/// whose clones share one store.
pub trait SystemStore: JournalStorage + TimerStore + Clone + 'static {}

impl<T: JournalStorage + TimerStore + Clone + 'static> SystemStore for T {}

/// How long each run of the messages figure lasts (both sides).
pub const MESSAGE_RUN: Duration = Duration::from_secs(1);

/// Runs of the messages figure, alternating with the raw appends; the best
/// of each is reported.
pub const MESSAGE_RUNS: usize = 3;

/// Actors activated from their checkpoints in the activation figures.
pub const ACTIVATED: usize = 10_000;

/// The bound on actors in memory of the passivating activation run.
pub const BOUND: usize = 1_000;

/// Messages (activations, raw reads) in flight at once in the activation
/// figures.
pub const ACTIVATION_CONCURRENCY: usize = 256;

/// Timers due at once in the timer figures.
pub const TIMERS: u64 = 100_000;

/// Actors that schedule them (and receive them), [`TIMERS`]` / TIMER_OWNERS`
/// each.
pub const TIMER_OWNERS: usize = 1_000;

/// MiB, from bytes.
fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn millis_since_epoch(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

// ---------------------------------------------------------------------------
// Messages per second.

/// The messages figure's actor: each charge runs one side effect (its
/// receipt journaled) and adds it up, so the system journals three entries
/// per message: `MessageReceived`, `SideEffectExecuted`, `MessageProcessed`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Biller {
    charged: u64,
}

/// What a [`Biller`] is sent: an amount and a 100-byte memo (the raw
/// baseline's entries carry 100 bytes too).
#[derive(Debug, Serialize, Deserialize)]
pub struct Charge {
    amount: u64,
    memo: String,
}

impl Charge {
    fn new(amount: u64) -> Self {
        Charge {
            amount,
            memo: "x".repeat(100),
        }
    }
}

impl TypedActor for Biller {
    const TYPE: &'static str = "bench.biller";
    type Message = Charge;
    type Reply = u64;

    async fn handle(
        &mut self,
        charge: Charge,
        ctx: &mut Context<'_, Self>,
    ) -> Result<u64, HandlerError> {
        let amount = charge.amount;
        let receipt: u64 = ctx
            .side_effect("charge", &charge, || async move { Ok::<_, String>(amount) })
            .await??;
        self.charged += receipt;
        Ok(self.charged)
    }
}

/// Messages per second through the system: `actors` typed actors (fresh
/// ids, activated before the clock starts), each sent charges one after
/// another for [`MESSAGE_RUN`], one side effect each (three entries per
/// message), default configuration of the backend; against the raw
/// backend's single-entry appends per second with as many clients at once,
/// each appending one after another for as long. The best of
/// [`MESSAGE_RUNS`] runs of each, alternating. Two figures of the runs:
/// messages per second, and the entries they journaled per second.
pub async fn messages<S: SystemStore>(
    storage: S,
    baseline: Arc<dyn Baseline>,
    backend: JournalBackend,
    actors: usize,
) -> Vec<Figure> {
    let system = ActorSystem::builder(storage)
        .register::<Biller>(DurabilityConfig::recommended(backend), |_| {
            Biller::default()
        })
        .start();
    let (mut ours, mut raw) = (0.0f64, 0.0f64);
    for _ in 0..MESSAGE_RUNS {
        ours = ours.max(message_rate(&system, actors).await);
        raw = raw.max(raw_append_rate(&baseline, actors).await);
    }
    system.shutdown().await;
    let who = if actors == 1 { "actor" } else { "actors" };
    let messages = against_raw_appends(
        format!("system messages/s (typed, 1 effect), {actors} {who}"),
        ("messages/s", ours),
        raw,
        &*baseline,
        actors,
    );
    // The same run counted in entries: each message journals three, each
    // an append of the same kind as the baseline's.
    let entries = against_raw_appends(
        format!("system entries/s (3 per message), {actors} {who}"),
        ("entries/s", 3.0 * ours),
        raw,
        &*baseline,
        actors,
    );
    vec![messages, entries]
}

/// A figure of `value` in `unit` against `raw`, the raw backend's best
/// single-entry appends per second with `clients` at once.
pub(crate) fn against_raw_appends(
    name: String,
    (unit, value): (&'static str, f64),
    raw: f64,
    baseline: &dyn Baseline,
    clients: usize,
) -> Figure {
    Figure {
        name,
        value,
        unit,
        baseline: raw,
        baseline_name: format!(
            "appends/s: {}, {clients} client(s), one entry per append (best of {MESSAGE_RUNS})",
            baseline.describe()
        ),
        better: Better::Higher,
        target: String::new(),
        met: None,
    }
}

/// One run of the messages figure; messages per second.
async fn message_rate<S: SystemStore>(system: &ActorSystem<S>, actors: usize) -> f64 {
    let ids: Vec<String> = (0..actors).map(|_| unique("biller")).collect();
    let refs: Vec<_> = ids
        .iter()
        .map(|id| system.actor::<Biller>(id.as_str()))
        .collect();
    // Activated (and their first message journaled) before the clock starts.
    futures::future::try_join_all(refs.iter().map(|actor| actor.send(Charge::new(0))))
        .await
        .expect("first charge");
    let (counts, elapsed) = send_for_a_run(refs, |actor, n| async move {
        actor.send(Charge::new(n)).await.expect("charge");
        actor
    })
    .await;
    // Three entries per message, the first one's included.
    let (first, sent) = (&ids[0], counts[0]);
    let highest = system
        .storage()
        .highest_sequence(first)
        .await
        .expect("highest");
    assert_eq!(highest, 3 * (sent + 1), "entries of {first}");
    counts.iter().sum::<u64>() as f64 / elapsed.as_secs_f64()
}

/// Each of `handles` sends one message after another on a task of its
/// own until [`MESSAGE_RUN`] has passed: `send(handle, n)` sends the
/// `n`th and hands the handle back. The messages each sent, and how long
/// the run took.
pub(crate) async fn send_for_a_run<H, F, Fut>(handles: Vec<H>, send: F) -> (Vec<u64>, Duration)
where
    H: Send + 'static,
    F: Fn(H, u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = H> + Send,
{
    let started = Instant::now();
    let deadline = started + MESSAGE_RUN;
    let tasks: Vec<_> = handles
        .into_iter()
        .map(|handle| {
            let send = send.clone();
            tokio::spawn(async move {
                let (mut handle, mut count) = (handle, 0u64);
                while Instant::now() < deadline {
                    count += 1;
                    handle = send(handle, count).await;
                }
                count
            })
        })
        .collect();
    let mut counts = Vec::with_capacity(tasks.len());
    for task in tasks {
        counts.push(task.await.expect("task"));
    }
    (counts, started.elapsed())
}

/// Single-entry appends per second of the raw backend, `clients` at once
/// (each its own actor, one append after another) for [`MESSAGE_RUN`].
pub(crate) async fn raw_append_rate(baseline: &Arc<dyn Baseline>, clients: usize) -> f64 {
    let started = Instant::now();
    let deadline = started + MESSAGE_RUN;
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (baseline, actor) = (Arc::clone(baseline), unique("system-raw"));
            tokio::spawn(async move {
                let mut appended = 0u64;
                while Instant::now() < deadline {
                    appended += 1;
                    baseline.append(&bench_entry(&actor, appended)).await;
                }
                appended
            })
        })
        .collect();
    let mut appended = 0;
    for task in tasks {
        appended += task.await.expect("task");
    }
    appended as f64 / started.elapsed().as_secs_f64()
}

// ---------------------------------------------------------------------------
// Activation from checkpoints.

/// The activation figures' actor: an account with 64 balances (about 1 KB
/// of JSON, 0.5 KB in memory), opened by its first message.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Account {
    owner: String,
    balances: Vec<i64>,
}

/// Opens an [`Account`] (again: a redelivery is answered from the dedup
/// window, without being handled or journaled).
#[derive(Debug, Serialize, Deserialize)]
pub struct Open;

impl TypedActor for Account {
    const TYPE: &'static str = "bench.account";
    type Message = Open;
    type Reply = usize;

    async fn handle(
        &mut self,
        _: Open,
        ctx: &mut Context<'_, Self>,
    ) -> Result<usize, HandlerError> {
        ctx.actor_id().clone_into(&mut self.owner);
        // Balances that differ per account, so that checkpoints are not
        // all alike.
        let mut x = self.owner.bytes().fold(0x9e37_79b9_7f4a_7c15_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        self.balances = (0..64)
            .map(|_| {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                i64::try_from(x >> 40).unwrap_or_default()
            })
            .collect();
        Ok(self.balances.len())
    }
}

/// The message id every account was opened with: sending it again
/// activates the account (recovery from its checkpoint) and is answered
/// as a duplicate, with nothing journaled.
const OPEN_ID: &str = "open";

fn account_system<S: SystemStore>(
    storage: S,
    backend: JournalBackend,
    max_actors: usize,
) -> ActorSystem<S> {
    ActorSystem::builder(storage)
        .config(SystemConfig {
            max_actors,
            ..SystemConfig::default()
        })
        .register::<Account>(DurabilityConfig::recommended(backend), |_| {
            Account::default()
        })
        .start()
}

/// Sends [`Open`] (id [`OPEN_ID`]) to every account, [`ACTIVATION_CONCURRENCY`]
/// at once.
async fn open_all<S: SystemStore>(system: &ActorSystem<S>, ids: &[String]) {
    futures::stream::iter(ids)
        .for_each_concurrent(ACTIVATION_CONCURRENCY, |id| {
            let account = system.actor::<Account>(id.as_str());
            async move {
                account.send_with_id(OPEN_ID, Open).await.expect("open");
            }
        })
        .await;
}

/// Activation of [`ACTIVATED`] actors from their checkpoints: each was
/// opened (one message) and checkpointed by the shutdown of the system
/// that opened it; a new system is then sent that message again for each
/// ([`ACTIVATION_CONCURRENCY`] at once), which activates the actor
/// (checkpoint loaded, nothing after it to replay) and is answered as a
/// duplicate, so that nothing is written. Time and peak memory, without a
/// bound on actors in memory (all stay) and with [`BOUND`] (the least
/// recently used idle ones are passivated).
///
/// Baselines: the same reads on the storage directly (highest sequence,
/// newest checkpoint, its state decompressed and decoded into the actor's
/// type, the journal after it), as many at once, the states kept in a
/// `Vec`; and, for the bounded run, the unbounded one.
pub async fn activation<S: SystemStore>(storage: S, backend: JournalBackend) -> Vec<Figure> {
    let prefix = unique("account");
    let ids: Vec<String> = (0..ACTIVATED).map(|i| format!("{prefix}-{i}")).collect();
    let opener = account_system(storage.clone(), backend, usize::MAX);
    open_all(&opener, &ids).await;
    opener.shutdown().await;
    drop(opener);

    let (raw_time, raw_peak) = read_checkpoints(&storage, &ids).await;
    let (unbounded_time, unbounded_peak) =
        activate_all(storage.clone(), backend, &ids, usize::MAX).await;
    let (bounded_time, bounded_peak) = activate_all(storage.clone(), backend, &ids, BOUND).await;
    // Activations wrote nothing: the opening message's two entries only.
    for id in [&ids[0], &ids[ACTIVATED - 1]] {
        let highest = storage.highest_sequence(id).await.expect("highest");
        assert_eq!(highest, 2, "entries of {id}");
    }

    let figure = |name: String, value: f64, unit, baseline: f64, baseline_name: String| Figure {
        name,
        value,
        unit,
        baseline,
        baseline_name,
        better: Better::Lower,
        target: String::new(),
        met: None,
    };
    let reads = format!(
        "the same reads and decoding on the storage directly, {ACTIVATION_CONCURRENCY} at once, \
         states kept in a Vec"
    );
    vec![
        figure(
            format!("system activation of {ACTIVATED} actors from checkpoints"),
            unbounded_time.as_secs_f64() * 1e3,
            "ms",
            raw_time.as_secs_f64() * 1e3,
            reads.clone(),
        ),
        figure(
            format!("system activation peak memory, {ACTIVATED} actors"),
            mib(unbounded_peak),
            "MiB",
            mib(raw_peak),
            reads,
        ),
        figure(
            format!("system activation of {ACTIVATED} actors, max_actors {BOUND}"),
            bounded_time.as_secs_f64() * 1e3,
            "ms",
            unbounded_time.as_secs_f64() * 1e3,
            "the same activations without a bound (all in memory)".into(),
        ),
        figure(
            format!("system activation peak memory, {ACTIVATED} actors, max_actors {BOUND}"),
            mib(bounded_peak),
            "MiB",
            mib(unbounded_peak),
            "the same activations without a bound (all in memory)".into(),
        ),
    ]
}

/// One activation run: a new system with `max_actors`, every account sent
/// its opening message again; the time and the peak memory until the last
/// reply (the system's shutdown is not counted).
async fn activate_all<S: SystemStore>(
    storage: S,
    backend: JournalBackend,
    ids: &[String],
    max_actors: usize,
) -> (Duration, usize) {
    let system = account_system(storage, backend, max_actors);
    alloc::start();
    let started = Instant::now();
    open_all(&system, ids).await;
    let elapsed = started.elapsed();
    let peak = alloc::stop();
    let resident = system.actors_in_memory();
    assert!(
        resident <= max_actors.min(ids.len()),
        "{resident} actors in memory, bound {max_actors}"
    );
    system.shutdown().await;
    (elapsed, peak)
}

/// The activation baseline: per actor, what recovery reads and decodes,
/// without the system: highest sequence, newest checkpoint, its state
/// (zstd, then the facet's snapshot, then the actor's JSON), and the
/// journal after it, streamed. The states are kept until the end, as the
/// unbounded system keeps its actors.
async fn read_checkpoints<S: SystemStore>(storage: &S, ids: &[String]) -> (Duration, usize) {
    let policy = CheckpointPolicy::default();
    alloc::start();
    let started = Instant::now();
    let states: Vec<Account> = futures::stream::iter(ids)
        .map(|id| {
            let policy = &policy;
            async move {
                let highest = storage.highest_sequence(id).await.expect("highest");
                let checkpoint = storage
                    .get_latest_checkpoint(id)
                    .await
                    .expect("checkpoint")
                    .expect("a checkpoint");
                let after = checkpoint.sequence + 1;
                let state = policy.decode(&checkpoint).expect("decode");
                let snapshot = FacetSnapshot::decode(state.as_slice()).expect("snapshot");
                let account: Account =
                    serde_json::from_slice(&snapshot.actor_state).expect("account");
                let tail = storage
                    .replay_stream(id, after)
                    .try_fold(0u64, |n, _| async move { Ok(n + 1) })
                    .await
                    .expect("replay");
                assert_eq!(after + tail, highest + 1);
                account
            }
        })
        .buffer_unordered(ACTIVATION_CONCURRENCY)
        .collect()
        .await;
    let elapsed = started.elapsed();
    let peak = alloc::stop();
    assert_eq!(states.len(), ids.len());
    (elapsed, peak)
}

// ---------------------------------------------------------------------------
// Timers due at once.

/// The timer figures' actor: arms timers to itself, and counts the ones it
/// receives (outside replay, in `fired`, shared with the bench).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Alarm {
    rung: u64,
    #[serde(skip)]
    fired: Arc<AtomicU64>,
}

/// What an [`Alarm`] is sent.
#[derive(Debug, Serialize, Deserialize)]
pub enum AlarmMessage {
    /// Schedule `timers` timers to itself, due at `due_at_ms`.
    Arm {
        /// How many.
        timers: u64,
        /// When, in milliseconds since the Unix epoch.
        due_at_ms: u64,
    },
    /// A timer fired.
    Ring,
}

impl TypedActor for Alarm {
    const TYPE: &'static str = "bench.alarm";
    type Message = AlarmMessage;
    type Reply = u64;

    async fn handle(
        &mut self,
        message: AlarmMessage,
        ctx: &mut Context<'_, Self>,
    ) -> Result<u64, HandlerError> {
        match message {
            AlarmMessage::Arm { timers, due_at_ms } => {
                let due = UNIX_EPOCH + Duration::from_millis(due_at_ms);
                for _ in 0..timers {
                    ctx.schedule(due, AlarmMessage::Ring).await?;
                }
            }
            AlarmMessage::Ring => {
                self.rung += 1;
                if !ctx.is_replaying() {
                    self.fired.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        Ok(self.rung)
    }

    fn restore_from(&mut self, recovered: Self) {
        self.rung = recovered.rung;
    }
}

/// A store whose due timers cannot be claimed until it is opened: the
/// timer figures arm their timers behind it, all due at once, then open it.
/// Every other call goes to the store unchanged (through one more boxed
/// future per call, some 1% of a fired timer on the memory backend).
/// While closed, `next_due` says "in a millisecond", so that the system's
/// timer loop looks again within one once it is opened.
#[derive(Debug, Clone)]
pub struct Gated<S> {
    store: S,
    open: Arc<AtomicBool>,
}

impl<S> Gated<S> {
    fn new(store: S) -> Self {
        Gated {
            store,
            open: Arc::new(AtomicBool::new(false)),
        }
    }

    fn open(&self) {
        self.open.store(true, Ordering::Release);
    }

    fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }
}

#[async_trait]
impl<S: JournalStorage> JournalStorage for Gated<S> {
    fn backend_name(&self) -> &'static str {
        self.store.backend_name()
    }
    async fn append_entry(&self, entry: &JournalEntry) -> JournalResult<u64> {
        self.store.append_entry(entry).await
    }
    async fn append_batch(&self, entries: &[JournalEntry]) -> JournalResult<()> {
        self.store.append_batch(entries).await
    }
    async fn replay_range(
        &self,
        actor_id: &str,
        from: u64,
        to: u64,
        max: usize,
    ) -> JournalResult<Vec<JournalEntry>> {
        self.store.replay_range(actor_id, from, to, max).await
    }
    async fn highest_sequence(&self, actor_id: &str) -> JournalResult<u64> {
        self.store.highest_sequence(actor_id).await
    }
    async fn truncate_to(&self, actor_id: &str, to: u64) -> JournalResult<()> {
        self.store.truncate_to(actor_id, to).await
    }
    async fn delete_actor(&self, actor_id: &str) -> JournalResult<()> {
        self.store.delete_actor(actor_id).await
    }
    async fn save_checkpoint(&self, checkpoint: &Checkpoint) -> JournalResult<()> {
        self.store.save_checkpoint(checkpoint).await
    }
    async fn get_latest_checkpoint(&self, actor_id: &str) -> JournalResult<Option<Checkpoint>> {
        self.store.get_latest_checkpoint(actor_id).await
    }
    async fn get_checkpoint(
        &self,
        actor_id: &str,
        sequence: u64,
    ) -> JournalResult<Option<Checkpoint>> {
        self.store.get_checkpoint(actor_id, sequence).await
    }
    async fn list_checkpoints(&self, actor_id: &str) -> JournalResult<Vec<u64>> {
        self.store.list_checkpoints(actor_id).await
    }
    async fn delete_checkpoints_before(&self, actor_id: &str, before: u64) -> JournalResult<u64> {
        self.store.delete_checkpoints_before(actor_id, before).await
    }
    async fn list_actors_page(
        &self,
        cursor: Option<&str>,
        limit: usize,
    ) -> JournalResult<ActorPage> {
        self.store.list_actors_page(cursor, limit).await
    }
    async fn actor_summary(&self, actor_id: &str) -> JournalResult<ActorSummary> {
        self.store.actor_summary(actor_id).await
    }
    async fn stats(&self) -> JournalResult<JournalStats> {
        self.store.stats().await
    }
    async fn replay_from(&self, actor_id: &str, from: u64) -> JournalResult<Vec<JournalEntry>> {
        self.store.replay_from(actor_id, from).await
    }
    fn replay_page_size(&self) -> usize {
        self.store.replay_page_size()
    }
    fn replay_stream<'a>(&'a self, actor_id: &'a str, from: u64) -> EntryStream<'a> {
        self.store.replay_stream(actor_id, from)
    }
    fn list_actors(&self) -> ActorStream<'_> {
        self.store.list_actors()
    }
    fn limits(&self) -> Limits {
        self.store.limits()
    }
}

#[async_trait]
impl<S: TimerStore> TimerStore for Gated<S> {
    async fn schedule_timer(&self, timer: &TimerRecord) -> JournalResult<()> {
        self.store.schedule_timer(timer).await
    }
    async fn cancel_timer(&self, timer_id: &str, now_ms: u64) -> JournalResult<bool> {
        self.store.cancel_timer(timer_id, now_ms).await
    }
    async fn claim_due_timers(
        &self,
        now_ms: u64,
        lease: Duration,
        claim: &str,
        max: usize,
    ) -> JournalResult<Vec<ClaimedTimer>> {
        if !self.is_open() {
            return Ok(Vec::new());
        }
        self.store.claim_due_timers(now_ms, lease, claim, max).await
    }
    async fn complete_timer(&self, timer_id: &str, claim: &str) -> JournalResult<bool> {
        self.store.complete_timer(timer_id, claim).await
    }
    async fn next_due(&self, now_ms: u64) -> JournalResult<Option<u64>> {
        if !self.is_open() {
            return Ok(Some(now_ms + 1));
        }
        self.store.next_due(now_ms).await
    }
    async fn get_timer(&self, timer_id: &str) -> JournalResult<Option<TimerRecord>> {
        self.store.get_timer(timer_id).await
    }
    fn max_timer_payload(&self) -> usize {
        self.store.max_timer_payload()
    }
}

fn alarm_system<S: SystemStore>(
    storage: Gated<S>,
    backend: JournalBackend,
    fired: &Arc<AtomicU64>,
) -> ActorSystem<Gated<S>> {
    let fired = Arc::clone(fired);
    ActorSystem::builder(storage)
        .register::<Alarm>(DurabilityConfig::recommended(backend), move |_| Alarm {
            rung: 0,
            fired: Arc::clone(&fired),
        })
        .start()
}

/// Has [`TIMER_OWNERS`] fresh alarms arm [`TIMERS`] timers in all, due
/// now (the store must be closed, so that none fires yet).
async fn arm<S: SystemStore>(system: &ActorSystem<Gated<S>>) {
    assert!(!system.storage().is_open());
    let due_at_ms = millis_since_epoch(SystemTime::now());
    let prefix = unique("alarm");
    let each = TIMERS / TIMER_OWNERS as u64;
    futures::stream::iter(0..TIMER_OWNERS)
        .for_each_concurrent(ACTIVATION_CONCURRENCY, |i| {
            let alarm = system.actor::<Alarm>(format!("{prefix}-{i}"));
            async move {
                alarm
                    .send(AlarmMessage::Arm {
                        timers: each,
                        due_at_ms,
                    })
                    .await
                    .expect("arm");
            }
        })
        .await;
}

/// Waits until `fired` reaches `n` and the store's timer index is empty
/// (the last deliveries completed).
async fn wait_fired<S: SystemStore>(storage: &S, fired: &AtomicU64, n: u64) {
    loop {
        if fired.load(Ordering::Relaxed) >= n {
            let now = millis_since_epoch(SystemTime::now());
            if storage.next_due(now).await.expect("next due").is_none() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// One measured stretch of firing: time, peak memory, and the memory still
/// held once the system is shut down (what the store kept).
struct Firing {
    elapsed: Duration,
    peak: usize,
    held: isize,
}

/// [`TIMERS`] timers due at once (armed by [`TIMER_OWNERS`] actors behind
/// a closed [`Gated`] store, due when armed), fired by the system: while
/// it runs (the store opened, the owners still in memory from arming), and
/// after a restart (the arming system dropped as in a crash, a new one
/// started on the same store: it recovers each owner from its journal as
/// its first timer fires). Fired per second and peak memory of each, from
/// the opening (after a restart: from the new system's start) to the last
/// timer delivered and completed.
///
/// Baseline: the raw timer index of the same store, without delivery:
/// [`TIMERS`] records due already, claimed 256 at a time and completed 64
/// at once (the system's default batch and concurrency), for rate and
/// peak memory.
pub async fn timers<S: SystemStore>(storage: S, backend: JournalBackend) -> Vec<Figure> {
    let raw = raw_claims(&storage).await;

    let fired = Arc::new(AtomicU64::new(0));
    let system = alarm_system(Gated::new(storage.clone()), backend, &fired);
    arm(&system).await;
    assert_eq!(fired.load(Ordering::Relaxed), 0, "fired before the opening");
    alloc::start();
    let started = Instant::now();
    system.storage().open();
    wait_fired(&storage, &fired, TIMERS).await;
    let (elapsed, peak) = (started.elapsed(), alloc::peak());
    system.shutdown().await;
    drop(system);
    let live = Firing {
        elapsed,
        peak,
        held: alloc::held(),
    };
    alloc::stop();

    let fired = Arc::new(AtomicU64::new(0));
    let first = alarm_system(Gated::new(storage.clone()), backend, &fired);
    arm(&first).await;
    assert_eq!(fired.load(Ordering::Relaxed), 0, "fired before the restart");
    // A crash: no shutdown, nothing checkpointed beyond what the
    // checkpoint interval took. Its tasks end at their next poll.
    drop(first);
    tokio::time::sleep(Duration::from_millis(100)).await;
    alloc::start();
    let started = Instant::now();
    let opened = Gated::new(storage.clone());
    opened.open();
    let second = alarm_system(opened, backend, &fired);
    wait_fired(&storage, &fired, TIMERS).await;
    let (elapsed, peak) = (started.elapsed(), alloc::peak());
    second.shutdown().await;
    drop(second);
    let restarted = Firing {
        elapsed,
        peak,
        held: alloc::held(),
    };
    alloc::stop();

    for (what, firing) in [("live", &live), ("after a restart", &restarted)] {
        println!(
            "timers ({what}): peak {:.1} MiB; after the shutdown {:+.1} MiB against the start \
             (the store's growth, where it keeps entries in memory; raw: {:+.1} MiB)",
            mib(firing.peak),
            firing.held as f64 / (1024.0 * 1024.0),
            raw.held as f64 / (1024.0 * 1024.0),
        );
    }
    let raw_rate = TIMERS as f64 / raw.elapsed.as_secs_f64();
    let raw_name = "the store's timer index: claim 256 due, complete 64 at once, no delivery";
    let mut figures = Vec::new();
    for (what, firing) in [("", &live), (", after a restart", &restarted)] {
        figures.push(Figure {
            name: format!("system timers fired/s, {TIMERS} due at once{what}"),
            value: TIMERS as f64 / firing.elapsed.as_secs_f64(),
            unit: "timers/s",
            baseline: raw_rate,
            baseline_name: raw_name.into(),
            better: Better::Higher,
            target: String::new(),
            met: None,
        });
        figures.push(Figure {
            name: format!("system timers peak memory, {TIMERS} due at once{what}"),
            value: mib(firing.peak),
            unit: "MiB",
            baseline: mib(raw.peak),
            baseline_name: raw_name.into(),
            better: Better::Lower,
            target: String::new(),
            met: None,
        });
    }
    figures
}

/// The timer baseline: [`TIMERS`] index records like the system's (due
/// already, to one of [`TIMER_OWNERS`] actors, the same payload), claimed
/// and completed as the system's loop does, with no delivery. Run while no
/// system uses the store.
async fn raw_claims<S: SystemStore>(storage: &S) -> Firing {
    let due_at_ms = millis_since_epoch(SystemTime::now()).saturating_sub(1_000);
    let prefix = unique("raw-alarm");
    futures::stream::iter(0..TIMERS)
        .for_each_concurrent(ACTIVATION_CONCURRENCY, |i| {
            let owner = format!("{prefix}-{}", i % TIMER_OWNERS as u64);
            let timer_id = format!("{prefix}-t{i}");
            let payload = TimerScheduled {
                timer_id: timer_id.clone(),
                target_actor_type: Alarm::TYPE.into(),
                message_type: "AlarmMessage::Ring".into(),
                timer_data: b"\"Ring\"".to_vec(),
                ..TimerScheduled::default()
            }
            .encode_to_vec();
            let record = TimerRecord {
                timer_id,
                owner_actor: owner.clone(),
                target_actor: owner,
                target_type: Alarm::TYPE.into(),
                due_at_ms,
                payload,
            };
            async move { storage.schedule_timer(&record).await.expect("schedule") }
        })
        .await;
    let config = SystemConfig::default();
    let claim = unique("raw-claim");
    alloc::start();
    let started = Instant::now();
    let mut completed = 0u64;
    loop {
        let now = millis_since_epoch(SystemTime::now());
        let claimed = storage
            .claim_due_timers(now, config.timer_lease, &claim, config.timer_batch)
            .await
            .expect("claim");
        if claimed.is_empty() {
            break;
        }
        completed += claimed.len() as u64;
        futures::stream::iter(claimed)
            .for_each_concurrent(config.timer_concurrency, |timer| async move {
                let done = storage
                    .complete_timer(&timer.timer.timer_id, &timer.claim)
                    .await
                    .expect("complete");
                assert!(done, "lost a lease");
            })
            .await;
    }
    let firing = Firing {
        elapsed: started.elapsed(),
        held: alloc::held(),
        peak: alloc::stop(),
    };
    assert_eq!(completed, TIMERS);
    assert_eq!(storage.next_due(u64::MAX).await.expect("next due"), None);
    firing
}
