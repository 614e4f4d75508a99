//! The actor system: actors of registered types addressed by id, activated
//! on demand, one message at a time per actor, passivated when idle.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use journal_core::durability::ActivationReport;
use journal_core::{
    Actor, Delivery, DurabilityConfig, DurabilityFacet, DurableActor, EventRecorded,
    ExecutionContext, HandlerResult, JournalError, JournalStorage, MessageOutcome, MessageReceived,
    TimerStore,
};
use tokio::sync::{broadcast, mpsc, oneshot, Notify};
use tokio::task::{AbortHandle, JoinHandle};
use tokio_util::task::TaskTracker;

use crate::clock::Clock;
use crate::error::SendError;
use crate::timers::{self, NotifyingTimerStore};

/// The metadata key under which a delivered timer's message carries the
/// timer's id. The system sets it; it is removed from messages sent by
/// callers.
pub const TIMER_ID_KEY: &str = "journal.timer_id";

/// What happened in an [`ActorSystem`], for monitoring and tests: see
/// [`ActorSystem::events`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SystemEvent {
    /// An actor was activated (recovered from its journal).
    Activated {
        /// Its type.
        actor_type: String,
        /// Its id.
        actor_id: String,
        /// What recovery did: the checkpoint it started from, the entries
        /// and messages replayed, whether it completed an interrupted
        /// message, how long it took.
        recovery: ActivationReport,
    },
    /// An actor was passivated (checkpointed, dropped from memory).
    Passivated {
        /// Its type.
        actor_type: String,
        /// Its id.
        actor_id: String,
    },
    /// A timer's message was delivered by this system (or found delivered
    /// already), and the timer completed.
    TimerFired {
        /// The timer.
        timer_id: String,
        /// The target's type.
        actor_type: String,
        /// The target's id.
        actor_id: String,
    },
    /// An actor was checkpointed by its `checkpoint_timeout` timer.
    IdleCheckpoint {
        /// Its type.
        actor_type: String,
        /// Its id.
        actor_id: String,
    },
}

/// How an [`ActorSystem`] hosts its actors and fires its timers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemConfig {
    /// Most actors in memory. When an activation would pass it, the least
    /// recently used idle actors are passivated first; actors busy with a
    /// message are never passivated, so while more than this many are
    /// busy at once the bound is exceeded by the busy ones. Default 10,000.
    pub max_actors: usize,
    /// An actor that received nothing for this long is passivated: its
    /// unsaved entries checkpointed, then dropped from memory. Default 5
    /// minutes.
    pub passivate_after: Duration,
    /// How long a claimed due timer is reserved for this system while it
    /// fires it; after that another system may fire it again (delivery
    /// stays exactly-once through the message id). Default 30 s.
    pub timer_lease: Duration,
    /// Due timers claimed at once, and at most claimed and not yet
    /// delivered. Default 256.
    pub timer_batch: usize,
    /// Due timers delivered concurrently, each on a task of its own (a
    /// slow handler holds up its own timer only). Default 64.
    pub timer_concurrency: usize,
    /// The longest the firing loop waits without looking at the index: it
    /// wakes at the next due time and whenever this system schedules a
    /// timer, and at least this often to see timers other processes
    /// scheduled. Default 5 s.
    pub timer_poll_interval: Duration,
    /// Shards of the actor table (each a short-held lock). Default 64.
    pub shards: usize,
}

impl Default for SystemConfig {
    fn default() -> Self {
        SystemConfig {
            max_actors: 10_000,
            passivate_after: Duration::from_secs(300),
            timer_lease: Duration::from_secs(30),
            timer_batch: 256,
            timer_concurrency: 64,
            timer_poll_interval: Duration::from_secs(5),
            shards: 64,
        }
    }
}

/// Makes the actor of one id, in its initial state (recovery then replays
/// its journal into it).
pub type Factory = Box<dyn Fn(&str) -> Box<dyn DurableActor> + Send + Sync>;

/// A registered actor type.
pub(crate) struct Registration {
    pub(crate) name: String,
    pub(crate) config: DurabilityConfig,
    factory: Factory,
}

/// Builds an [`ActorSystem`]: the storage, the settings, and the actor
/// types, each under a name with its durability settings and a factory.
pub struct ActorSystemBuilder<S> {
    storage: S,
    config: SystemConfig,
    types: HashMap<String, Arc<Registration>>,
}

impl<S> std::fmt::Debug for ActorSystemBuilder<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActorSystemBuilder")
            .field("config", &self.config)
            .field("types", &self.types.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl<S> ActorSystemBuilder<S>
where
    S: JournalStorage + TimerStore + Clone + 'static,
{
    /// The system's settings.
    #[must_use]
    pub fn config(mut self, config: SystemConfig) -> Self {
        self.config = config;
        self
    }

    /// Registers an actor type working on bytes: `factory` makes the actor
    /// of an id in its initial state. Registering a name twice keeps the
    /// last.
    #[must_use]
    pub fn register_raw(
        mut self,
        name: impl Into<String>,
        config: DurabilityConfig,
        factory: impl Fn(&str) -> Box<dyn DurableActor> + Send + Sync + 'static,
    ) -> Self {
        let name = name.into();
        let registration = Registration {
            name: name.clone(),
            config,
            factory: Box::new(factory),
        };
        self.types.insert(name, Arc::new(registration));
        self
    }

    /// Starts the system: its timer loop begins firing due timers at once,
    /// those scheduled before a restart included. Call it within a Tokio
    /// runtime.
    pub fn start(self) -> ActorSystem<S> {
        let shards = self.config.shards.max(1);
        let wake = Arc::new(Notify::new());
        let inner = Arc::new(Inner {
            timer_store: NotifyingTimerStore::new(self.storage.clone(), Arc::clone(&wake)),
            storage: self.storage,
            types: self.types,
            shards: (0..shards).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            config: self.config,
            resident: AtomicUsize::new(0),
            clock: Clock::start(),
            started: std::time::Instant::now(),
            stopping: AtomicBool::new(false),
            wake,
            claim: format!("system-{}", ulid::Ulid::generate()),
            tasks: TaskTracker::new(),
            timer_loop: Mutex::new(None),
            events: broadcast::channel(1024).0,
        });
        let handle = tokio::spawn(timers::fire_loop(Arc::clone(&inner)));
        *inner
            .timer_loop
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(handle);
        ActorSystem {
            guard: Arc::new(Guard(Arc::clone(&inner))),
            inner,
        }
    }

    pub(crate) fn register_registration(mut self, registration: Registration) -> Self {
        self.types
            .insert(registration.name.clone(), Arc::new(registration));
        self
    }
}

impl Registration {
    pub(crate) fn new(name: String, config: DurabilityConfig, factory: Factory) -> Self {
        Registration {
            name,
            config,
            factory,
        }
    }
}

/// Many durable actors over one storage, addressed by type and id.
///
/// * [`ActorSystem::send`] activates the actor on demand (recovery from its
///   journal through the [`DurabilityFacet`]) and returns its reply. Each
///   actor handles one message at a time, in arrival order; different
///   actors run concurrently (a task each; the actor table is sharded and
///   its locks are held for a lookup only).
/// * Idle actors are passivated after [`SystemConfig::passivate_after`]
///   (checkpointed, dropped from memory), and at most
///   [`SystemConfig::max_actors`] stay in memory (least recently used
///   first out).
/// * Timers scheduled by handlers (contract rules 23, 24) are fired by a
///   loop per system, from the storage's [`TimerStore`] index, also for
///   actors not in memory and after a restart; any number of systems may
///   share one store. `checkpoint_timeout` rides on the same index.
/// * [`ActorSystem::shutdown`] finishes the messages in flight and
///   checkpoints every actor. Dropping the last handle without it stops
///   everything at once, as a crash would: the journal has what completed.
///
/// Clones share the system.
pub struct ActorSystem<S> {
    inner: Arc<Inner<S>>,
    guard: Arc<Guard<S>>,
}

impl<S> Clone for ActorSystem<S> {
    fn clone(&self) -> Self {
        ActorSystem {
            inner: Arc::clone(&self.inner),
            guard: Arc::clone(&self.guard),
        }
    }
}

impl<S> std::fmt::Debug for ActorSystem<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActorSystem")
            .field("claim", &self.inner.claim)
            .field("types", &self.inner.types.keys().collect::<Vec<_>>())
            .field(
                "actors_in_memory",
                &self.inner.resident.load(Ordering::Acquire),
            )
            .finish_non_exhaustive()
    }
}

impl<S> ActorSystem<S>
where
    S: JournalStorage + TimerStore + Clone + 'static,
{
    /// A builder over `storage` (clones share one store, as every backend's
    /// do), with the default [`SystemConfig`] and no actor type yet.
    pub fn builder(storage: S) -> ActorSystemBuilder<S> {
        ActorSystemBuilder {
            storage,
            config: SystemConfig::default(),
            types: HashMap::new(),
        }
    }

    /// Sends `message` to actor `actor_id` of type `actor_type` and waits
    /// for its reply: [`Delivery::Replied`], [`Delivery::Failed`] (the
    /// handler's error, journaled), or [`Delivery::Duplicate`] when its
    /// `message_id` was processed before. An empty `message_id` gets a
    /// fresh ULID (no exactly-once across retries then: pass your own id
    /// for that).
    pub async fn send(
        &self,
        actor_type: &str,
        actor_id: &str,
        mut message: MessageReceived,
    ) -> Result<Delivery, SendError> {
        if message.message_id.is_empty() {
            message.message_id = ulid::Ulid::generate().to_string();
        }
        message.metadata.remove(TIMER_ID_KEY);
        self.inner.deliver(actor_type, actor_id, message).await
    }

    /// What happens in the system from now on: activations,
    /// passivations, timers fired, idle checkpoints. A receiver that falls
    /// more than 1,024 events behind loses the oldest
    /// ([`broadcast::error::RecvError::Lagged`]).
    pub fn events(&self) -> broadcast::Receiver<SystemEvent> {
        self.inner.events.subscribe()
    }

    /// Actors in memory now (activated, not yet passivated).
    pub fn actors_in_memory(&self) -> usize {
        self.inner.resident.load(Ordering::Acquire)
    }

    /// This system's claim token on due timers (unique per start).
    pub fn claim_token(&self) -> &str {
        &self.inner.claim
    }

    /// The storage the system journals to.
    pub fn storage(&self) -> &S {
        &self.inner.storage
    }

    /// The system's clock, in milliseconds since the Unix epoch: the time
    /// timers are due by (Tokio's clock, so tests can pause and advance it).
    pub fn now_ms(&self) -> u64 {
        self.inner.clock.now_ms()
    }

    /// Stops taking messages, stops firing timers (a timer being fired is
    /// finished), lets every actor handle what was already sent to it, then
    /// checkpoints and drops each. Sends after this are
    /// [`SendError::ShuttingDown`].
    pub async fn shutdown(&self) {
        self.inner.stopping.store(true, Ordering::Release);
        self.inner.wake.notify_one();
        let timer_loop = self
            .inner
            .timer_loop
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(handle) = timer_loop {
            let _ = handle.await;
        }
        for shard in &self.inner.shards {
            let slots: Vec<Arc<Slot>> = shard
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .drain()
                .map(|(_, slot)| slot)
                .collect();
            for slot in slots {
                let _ = slot.tx.send(Command::Stop);
            }
        }
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }
}

/// Stops every task of the system when its last handle is dropped.
struct Guard<S>(Arc<Inner<S>>);

impl<S> Drop for Guard<S> {
    fn drop(&mut self) {
        let inner = &self.0;
        inner.stopping.store(true, Ordering::Release);
        if let Some(handle) = inner
            .timer_loop
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            handle.abort();
        }
        for shard in &inner.shards {
            for slot in shard
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .values()
            {
                if let Some(task) = slot.task.get() {
                    task.abort();
                }
            }
        }
    }
}

/// An actor's key in the table: its type and id.
type Key = (String, String);

/// One shard of the actor table.
type Shard = Mutex<HashMap<Key, Arc<Slot>>>;

/// What an actor's task is asked to do.
pub(crate) enum Command {
    /// Handle a message and reply.
    Deliver {
        message: MessageReceived,
        reply: oneshot::Sender<Result<Delivery, SendError>>,
    },
    /// Checkpoint what is unsaved (the actor's `checkpoint_timeout` ran out).
    Checkpoint {
        done: oneshot::Sender<Result<(), SendError>>,
    },
    /// Passivate if idle (to make room); answers whether it did.
    Passivate { done: oneshot::Sender<bool> },
    /// Shutdown: handle what is queued, checkpoint, stop.
    Stop,
}

impl Command {
    /// Answers a command the actor could not take.
    fn refuse(self, error: SendError) {
        match self {
            Command::Deliver { reply, .. } => {
                let _ = reply.send(Err(error));
            }
            Command::Checkpoint { done } => {
                let _ = done.send(Err(error));
            }
            Command::Passivate { done } => {
                let _ = done.send(true);
            }
            Command::Stop => {}
        }
    }
}

/// An actor's entry in the table.
struct Slot {
    tx: mpsc::UnboundedSender<Command>,
    /// Commands sent and not yet handled.
    queued: AtomicUsize,
    /// When it was last sent something: nanoseconds since the system
    /// started, on the monotonic clock (fine enough to order sends).
    last_used: AtomicU64,
    /// Activated (counted in `resident`).
    resident: AtomicBool,
    task: OnceLock<AbortHandle>,
}

pub(crate) struct Inner<S> {
    pub(crate) storage: S,
    pub(crate) timer_store: NotifyingTimerStore<S>,
    types: HashMap<String, Arc<Registration>>,
    shards: Box<[Shard]>,
    hasher: RandomState,
    pub(crate) config: SystemConfig,
    /// Actors activated or activating.
    resident: AtomicUsize,
    pub(crate) clock: Clock,
    /// The monotonic clock's reading at start (least recently used order).
    started: std::time::Instant,
    pub(crate) stopping: AtomicBool,
    /// Wakes the timer loop (a timer was scheduled, or shutdown).
    pub(crate) wake: Arc<Notify>,
    pub(crate) claim: String,
    tasks: TaskTracker,
    timer_loop: Mutex<Option<JoinHandle<()>>>,
    events: broadcast::Sender<SystemEvent>,
}

impl<S> Inner<S>
where
    S: JournalStorage + TimerStore + Clone + 'static,
{
    /// Delivers a message and waits for the reply.
    pub(crate) async fn deliver(
        self: &Arc<Self>,
        actor_type: &str,
        actor_id: &str,
        message: MessageReceived,
    ) -> Result<Delivery, SendError> {
        let (reply, answer) = oneshot::channel();
        self.enqueue(actor_type, actor_id, Command::Deliver { message, reply })?;
        answer.await.unwrap_or(Err(SendError::ShuttingDown))
    }

    /// Has the actor checkpoint what it has not saved.
    pub(crate) async fn checkpoint(
        self: &Arc<Self>,
        actor_type: &str,
        actor_id: &str,
    ) -> Result<(), SendError> {
        let (done, answer) = oneshot::channel();
        self.enqueue(actor_type, actor_id, Command::Checkpoint { done })?;
        answer.await.unwrap_or(Err(SendError::ShuttingDown))
    }

    /// Queues a command for an actor, starting its task if it has none.
    fn enqueue(
        self: &Arc<Self>,
        actor_type: &str,
        actor_id: &str,
        command: Command,
    ) -> Result<(), SendError> {
        let registration = self
            .types
            .get(actor_type)
            .ok_or_else(|| SendError::UnknownType(actor_type.to_owned()))?;
        journal_core::validate::validate_actor_id(actor_id)?;
        let key: Key = (actor_type.to_owned(), actor_id.to_owned());
        let mut shard = self
            .shard(&key)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Checked under the shard lock: shutdown drains each shard after
        // setting the flag, so nothing is queued behind its back.
        if self.stopping.load(Ordering::Acquire) {
            return Err(SendError::ShuttingDown);
        }
        let now = u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let mut command = command;
        if let Some(slot) = shard.get(&key) {
            slot.queued.fetch_add(1, Ordering::AcqRel);
            slot.last_used.store(now, Ordering::Release);
            match slot.tx.send(command) {
                Ok(()) => return Ok(()),
                // Its task ended without leaving the table (it panicked):
                // start another.
                Err(mpsc::error::SendError(returned)) => command = returned,
            }
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let slot = Arc::new(Slot {
            tx,
            queued: AtomicUsize::new(1),
            last_used: AtomicU64::new(now),
            resident: AtomicBool::new(false),
            task: OnceLock::new(),
        });
        let _ = slot.tx.send(command);
        let task = self.tasks.spawn(run_actor(
            Arc::clone(self),
            Arc::clone(registration),
            key.clone(),
            Arc::clone(&slot),
            rx,
        ));
        let _ = slot.task.set(task.abort_handle());
        shard.insert(key, slot);
        Ok(())
    }

    /// Removes the actor's slot from the table if nothing is queued for
    /// it: then no one can send to it any more. Whether it did.
    fn retire(&self, key: &Key, slot: &Arc<Slot>, rx: &mpsc::UnboundedReceiver<Command>) -> bool {
        let mut shard = self
            .shard(key)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if !rx.is_empty() {
            return false;
        }
        if shard.get(key).is_some_and(|s| Arc::ptr_eq(s, slot)) {
            shard.remove(key);
        }
        true
    }

    /// Makes room for one more actor: passivates the least recently used
    /// idle ones while more than `max_actors` are in memory (this one's
    /// place already counted).
    async fn make_room(&self, me: &Arc<Slot>) {
        let mut tries = 0;
        while self.resident.load(Ordering::Acquire) > self.config.max_actors.max(1) && tries < 8 {
            tries += 1;
            let Some(victim) = self.least_recently_used(me) else {
                return;
            };
            let (done, answer) = oneshot::channel();
            victim.queued.fetch_add(1, Ordering::AcqRel);
            if victim.tx.send(Command::Passivate { done }).is_ok() {
                // The victim may be leaving on its own meanwhile (another
                // activation passivated it): a command that reaches its
                // channel as its task drops the receiver stays in the
                // channel, which lives on in the slot held here, and is
                // never answered. The end of its task answers as well.
                tokio::select! {
                    _ = answer => {}
                    () = victim.tx.closed() => {}
                }
            }
        }
    }

    /// The idle actor in memory used longest ago, other than `me`.
    fn least_recently_used(&self, me: &Arc<Slot>) -> Option<Arc<Slot>> {
        let mut oldest: Option<(u64, Arc<Slot>)> = None;
        for shard in &self.shards {
            let shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            for slot in shard.values() {
                if Arc::ptr_eq(slot, me)
                    || !slot.resident.load(Ordering::Acquire)
                    || slot.queued.load(Ordering::Acquire) > 0
                {
                    continue;
                }
                let used = slot.last_used.load(Ordering::Acquire);
                if oldest.as_ref().is_none_or(|(at, _)| used < *at) {
                    oldest = Some((used, Arc::clone(slot)));
                }
            }
        }
        oldest.map(|(_, slot)| slot)
    }

    fn facet(&self, registration: &Registration) -> DurabilityFacet {
        DurabilityFacet::new(self.storage.clone(), registration.config.clone())
            .with_timer_store(self.timer_store.clone())
            .owned_by(registration.name.as_str())
    }
}

/// An actor of the system: the registered actor, plus the journaling of
/// the timer whose firing a message is.
struct Hosted(Box<dyn DurableActor>);

#[async_trait]
impl DurableActor for Hosted {
    async fn handle(
        &mut self,
        message: &MessageReceived,
        ctx: &mut ExecutionContext,
    ) -> HandlerResult {
        journal_timer_fired(message, ctx).await?;
        self.0.handle(message, ctx).await
    }

    fn snapshot(&self) -> Result<Vec<u8>, String> {
        self.0.snapshot()
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        self.0.restore(state)
    }

    fn migrate(&mut self, state: &[u8], stored: u32, current: u32) -> Result<(), String> {
        self.0.migrate(state, stored, current)
    }

    fn is_event_sourced(&self) -> bool {
        self.0.is_event_sourced()
    }

    fn apply_event(&mut self, event: &EventRecorded, sequence: u64) -> Result<(), String> {
        self.0.apply_event(event, sequence)
    }

    fn after_persist(&mut self, outcome: &MessageOutcome) {
        self.0.after_persist(outcome);
    }

    fn needs_recovery(&self) -> bool {
        self.0.needs_recovery()
    }
}

/// Journals `TimerFired` when `message` is a timer's delivery (it carries
/// [`TIMER_ID_KEY`]), before the handler runs, as every host of the
/// system's actors must for replays to agree.
pub(crate) async fn journal_timer_fired(
    message: &MessageReceived,
    ctx: &mut ExecutionContext,
) -> journal_core::JournalResult<()> {
    if let Some(timer_id) = message.metadata.get(TIMER_ID_KEY) {
        ctx.timer_fired(timer_id).await?;
    }
    Ok(())
}

/// What an actor's task does between two commands.
enum Next {
    Command(Command),
    Idle,
    Drained,
}

/// An actor's task: activates it, handles its commands one at a time,
/// passivates it when idle.
async fn run_actor<S>(
    inner: Arc<Inner<S>>,
    registration: Arc<Registration>,
    key: Key,
    slot: Arc<Slot>,
    mut rx: mpsc::UnboundedReceiver<Command>,
) where
    S: JournalStorage + TimerStore + Clone + 'static,
{
    // Counted in memory until this task ends, however it ends.
    let resident = Resident::enter(&inner.resident);
    inner.make_room(&slot).await;
    let mut actor = Actor::new(key.1.clone(), Hosted((registration.factory)(&key.1)));
    let facet = inner.facet(&registration);
    let observer = facet.observer();
    let attached = actor.facets().attach(Box::new(facet)).map(drop);
    if let Err(error) = attached.and(actor.activate().await) {
        tracing::warn!(actor_type = %key.0, actor_id = %key.1, %error, "activation failed");
        give_up(&inner, &key, &slot, &mut rx, error);
        return;
    }
    slot.resident.store(true, Ordering::Release);
    inner.emit(|| SystemEvent::Activated {
        actor_type: key.0.clone(),
        actor_id: key.1.clone(),
        recovery: observer.stats().activation,
    });
    let mut host = Host {
        inner: &inner,
        registration: &registration,
        key: &key,
        actor,
        checkpoint_timer: false,
        broken: false,
        stopping: false,
        passivated: None,
    };
    // One timer for idleness, moved on only when it runs out before the
    // actor was idle long enough (a timer per message cost more than the
    // clock read that replaces it).
    let passivate_after = inner.config.passivate_after;
    let mut last_busy = tokio::time::Instant::now();
    let idle = tokio::time::sleep(passivate_after);
    tokio::pin!(idle);
    loop {
        let next = if host.stopping {
            rx.try_recv().map_or(Next::Drained, Next::Command)
        } else {
            tokio::select! {
                command = rx.recv() => command.map_or(Next::Drained, Next::Command),
                () = &mut idle => Next::Idle,
            }
        };
        let retired = match next {
            Next::Command(command) => {
                let retired = host.command(command, &slot, &rx).await;
                slot.queued.fetch_sub(1, Ordering::AcqRel);
                last_busy = tokio::time::Instant::now();
                retired
            }
            Next::Idle => {
                let due = later(last_busy, passivate_after);
                if tokio::time::Instant::now() < due {
                    idle.as_mut().reset(due);
                    false
                } else {
                    let retired =
                        host.prepare_passivation().await && inner.retire(&key, &slot, &rx);
                    last_busy = tokio::time::Instant::now();
                    idle.as_mut().reset(later(last_busy, passivate_after));
                    retired
                }
            }
            Next::Drained => true,
        };
        if retired {
            break;
        }
        if host.broken {
            // It cannot be recovered in this task: the next send starts
            // afresh.
            let error = JournalError::RecoveryFailed {
                actor_id: key.1.clone(),
                reason: "its recovery failed at the previous message".into(),
            };
            give_up(&inner, &key, &slot, &mut rx, error);
            slot.resident.store(false, Ordering::Release);
            return;
        }
    }
    slot.resident.store(false, Ordering::Release);
    let passivated = host.passivated.take();
    host.passivate().await;
    drop(resident);
    inner.emit(|| SystemEvent::Passivated {
        actor_type: key.0.clone(),
        actor_id: key.1.clone(),
    });
    if let Some(done) = passivated {
        let _ = done.send(true);
    }
}

/// One actor task counted among the actors in memory, until it is dropped
/// (also when the task unwinds).
struct Resident<'a>(&'a AtomicUsize);

impl<'a> Resident<'a> {
    fn enter(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        Resident(count)
    }
}

impl Drop for Resident<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// `after` past `at`, or some thirty years past it if that is beyond the
/// clock (a `passivate_after` of `Duration::MAX`: never idle).
fn later(at: tokio::time::Instant, after: Duration) -> tokio::time::Instant {
    at.checked_add(after)
        .unwrap_or_else(|| at + Duration::from_secs(30 * 365 * 86_400))
}

/// Leaves the table and answers everything queued for an actor that could
/// not be activated with the activation's error (the first command gets it
/// as it is, later ones its text).
fn give_up<S>(
    inner: &Inner<S>,
    key: &Key,
    slot: &Arc<Slot>,
    rx: &mut mpsc::UnboundedReceiver<Command>,
    error: JournalError,
) {
    {
        let mut shard = inner
            .shard(key)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if shard.get(key).is_some_and(|s| Arc::ptr_eq(s, slot)) {
            shard.remove(key);
        }
    }
    rx.close();
    let text = error.to_string();
    let mut first = Some(error);
    while let Ok(command) = rx.try_recv() {
        let source = first
            .take()
            .unwrap_or_else(|| JournalError::RecoveryFailed {
                actor_id: key.1.clone(),
                reason: text.clone(),
            });
        command.refuse(SendError::Recovery {
            actor_type: key.0.clone(),
            actor_id: key.1.clone(),
            source: Box::new(source),
        });
        slot.queued.fetch_sub(1, Ordering::AcqRel);
    }
}

impl<S> Inner<S> {
    /// Sends an event, if anyone listens.
    pub(crate) fn emit(&self, event: impl FnOnce() -> SystemEvent) {
        if self.events.receiver_count() > 0 {
            let _ = self.events.send(event());
        }
    }

    fn shard(&self, key: &Key) -> &Shard {
        let index = self.hasher.hash_one(key) as usize % self.shards.len();
        &self.shards[index]
    }
}

/// An activated actor inside its task.
struct Host<'a, S> {
    inner: &'a Arc<Inner<S>>,
    registration: &'a Registration,
    key: &'a Key,
    actor: Actor<Hosted>,
    /// Whether its `checkpoint_timeout` timer is in the index.
    checkpoint_timer: bool,
    /// Its recovery failed: this task gives it up.
    broken: bool,
    /// Shutdown: handle what is queued, then stop.
    stopping: bool,
    /// Answered once the actor is gone, so that the bound holds when the
    /// asker activates another.
    passivated: Option<oneshot::Sender<bool>>,
}

impl<S> Host<'_, S>
where
    S: JournalStorage + TimerStore + Clone + 'static,
{
    /// Carries out one command; whether the actor left the table.
    async fn command(
        &mut self,
        command: Command,
        slot: &Arc<Slot>,
        rx: &mpsc::UnboundedReceiver<Command>,
    ) -> bool {
        match command {
            Command::Deliver { message, reply } => {
                let answer = self.handle(message).await;
                let _ = reply.send(answer);
                false
            }
            Command::Checkpoint { done } => {
                self.checkpoint_timer = false;
                let checkpointed = self.checkpoint().await;
                if checkpointed.is_ok() {
                    self.inner.emit(|| SystemEvent::IdleCheckpoint {
                        actor_type: self.key.0.clone(),
                        actor_id: self.key.1.clone(),
                    });
                }
                let _ = done.send(checkpointed);
                false
            }
            Command::Passivate { done } => {
                let retired =
                    self.prepare_passivation().await && self.inner.retire(self.key, slot, rx);
                if retired {
                    self.passivated = Some(done);
                } else {
                    let _ = done.send(false);
                }
                retired
            }
            Command::Stop => {
                self.stopping = true;
                false
            }
        }
    }

    /// Handles one message. A message that lost a race for its sequence to
    /// another system hosting the same actor is retried once, after the
    /// actor recovered what the other wrote (exactly-once by its id).
    async fn handle(&mut self, message: MessageReceived) -> Result<Delivery, SendError> {
        if let Some(timer_id) = message.metadata.get(TIMER_ID_KEY) {
            if self.inner.timer_store.was_cancelled(timer_id) {
                return Err(SendError::TimerCancelled);
            }
        }
        let mut retried = false;
        loop {
            if !self.actor.is_active() {
                if let Err(source) = self.actor.activate().await {
                    self.broken = true;
                    return Err(SendError::Recovery {
                        actor_type: self.key.0.clone(),
                        actor_id: self.key.1.clone(),
                        source: Box::new(source),
                    });
                }
            }
            match self.actor.send(message.clone()).await {
                Err(JournalError::SequenceConflict { .. }) if !retried => retried = true,
                Err(e) => return Err(SendError::Journal(e)),
                Ok(delivery) => {
                    self.after_message().await;
                    return Ok(delivery);
                }
            }
        }
    }

    /// Puts the actor's checkpoint timer into the index after a message,
    /// when it has a `checkpoint_timeout` and none is pending.
    async fn after_message(&mut self) {
        let Some(timeout) = self
            .registration
            .config
            .checkpoint_timeout
            .and_then(|t| Duration::try_from(t).ok())
        else {
            return;
        };
        if self.checkpoint_timer {
            return;
        }
        // A timeout beyond the index's range (due times go up to
        // MAX_SEQUENCE ms) is due at its end, never wrapped around to now.
        let due = self
            .inner
            .clock
            .now_ms()
            .saturating_add(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX))
            .min(journal_core::MAX_SEQUENCE);
        let record = timers::checkpoint_timer(&self.key.0, &self.key.1, due);
        match self.inner.timer_store.schedule_timer(&record).await {
            Ok(()) => self.checkpoint_timer = true,
            Err(error) => {
                tracing::warn!(actor_id = %self.key.1, %error, "checkpoint timer not scheduled");
            }
        }
    }

    async fn checkpoint(&mut self) -> Result<(), SendError> {
        self.actor
            .checkpoint_now()
            .await
            .map_err(SendError::Journal)
    }

    /// Checkpoints what is unsaved and takes its checkpoint timer out of the
    /// index, while the actor is still the one in the table: whether it may
    /// go.
    async fn prepare_passivation(&mut self) -> bool {
        if let Err(error) = self.actor.checkpoint_now().await {
            tracing::warn!(actor_id = %self.key.1, %error, "checkpoint before passivation failed");
            return false;
        }
        if self.checkpoint_timer {
            let id = timers::checkpoint_timer_id(&self.key.0, &self.key.1);
            let now = self.inner.clock.now_ms();
            if let Err(error) = self.inner.timer_store.cancel_timer(&id, now).await {
                tracing::warn!(actor_id = %self.key.1, %error, "checkpoint timer not cancelled");
                return false;
            }
            self.checkpoint_timer = false;
        }
        true
    }

    /// Drops the actor (after shutdown, checkpointed first).
    async fn passivate(mut self) {
        if !self.prepare_passivation().await {
            tracing::warn!(actor_id = %self.key.1, "passivated with unsaved entries");
        }
        let _ = self.actor.deactivate().await;
    }
}
