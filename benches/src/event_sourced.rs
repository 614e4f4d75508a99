//! Event-sourced actors (issue 20): events persisted per second through
//! the actor system, beside the raw backend's single-entry appends; and
//! recovery of one actor with [`RECOVERY_EVENTS`] events, from its latest
//! snapshot plus the tail, against a full fold from the first entry and
//! against a durable-execution actor's recovery of the same history.
//!
//! Both actors hold the same state ([`Till`]: the sum and count of its
//! deposits), changed the same way ([`Till::credit`]): by applying a
//! [`TillEvent::Deposited`] event for the event-sourced one, by handling
//! a [`Deposit`] message for the durable-execution one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use journal_actors::{
    ActorSystem, Context, Decision, EventSourced, EventSourcedDurable, TypedActor, TypedDurable,
};
use journal_core::durability::ActivationReport;
use journal_core::journal_entry::Entry;
use journal_core::{
    rebuild_at, Actor, Delivery, DurabilityConfig, DurabilityFacet, DurableActor, HandlerError,
    JournalBackend, JournalEntry, JournalStorage, MessageProcessed, MessageReceived,
    ProcessingResult,
};
use serde::{Deserialize, Serialize};

use crate::actor_system::{
    against_raw_appends, raw_append_rate, send_for_a_run, SystemStore, MESSAGE_RUNS,
};
use crate::workloads::unique;
use crate::{Baseline, Better, Figure};

/// Events of the recovered actor (and messages of its durable-execution
/// counterpart).
pub const RECOVERY_EVENTS: u64 = 100_000;

/// Events each command of the recovered event-sourced actor decides:
/// [`RECOVERY_EVENTS`]` / EVENTS_PER_COMMAND` commands of
/// `EVENTS_PER_COMMAND + 2` entries each. With the default checkpoint
/// interval (100 entries) a snapshot follows every third command, and the
/// last command (40 events) is the tail after the latest snapshot.
pub const EVENTS_PER_COMMAND: u32 = 40;

/// Runs of each recovery; the best of each is reported (recoveries write
/// nothing, so every run reads the same journal).
pub const RECOVERY_RUNS: usize = 3;

/// Messages of the durable-execution actor's journal per `append_batch`
/// (two entries each).
const WRITE_BATCH: u64 = 500;

/// The 100-byte memo every event and message carries (the raw baseline's
/// entries carry 100 bytes too).
fn memo() -> String {
    "x".repeat(100)
}

// ---------------------------------------------------------------------------
// The actors.

/// The event-sourced figures' actor: a till, its state the sum and count
/// of its deposits.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Till {
    balance: u64,
    deposits: u64,
}

impl Till {
    /// The one state change both actors make: a deposit of `amount`.
    pub fn credit(&mut self, amount: u64) {
        self.balance += amount;
        self.deposits += 1;
    }
}

/// What a [`Till`] is sent.
#[derive(Debug, Serialize, Deserialize)]
pub enum TillCommand {
    /// Deposit `amount`, `events` times: one event each.
    Deposit {
        /// Each deposit's amount.
        amount: u64,
        /// How many deposits (events).
        events: u32,
        /// Carried by each event.
        memo: String,
    },
}

/// What a [`Till`]'s commands decide.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum TillEvent {
    /// `amount` was deposited.
    Deposited {
        /// The amount.
        amount: u64,
        /// 100 bytes of memo.
        memo: String,
    },
}

impl EventSourced for Till {
    const TYPE: &'static str = "bench.till";
    type Command = TillCommand;
    type Event = TillEvent;
    type Reply = u64;

    async fn handle(
        &self,
        command: TillCommand,
        _: &mut Context<'_, Self>,
    ) -> Result<Decision<Self>, HandlerError> {
        let TillCommand::Deposit {
            amount,
            events,
            memo,
        } = command;
        let events = (0..events).map(|_| TillEvent::Deposited {
            amount,
            memo: memo.clone(),
        });
        Ok(Decision::persist(events).reply_with(|till: &Till| till.balance))
    }

    fn apply(&mut self, event: &TillEvent) {
        let TillEvent::Deposited { amount, .. } = event;
        self.credit(*amount);
    }
}

/// The durable-execution (command-sourced) counterpart of [`Till`]: one
/// [`Deposit`] message per state change, its handler doing what applying
/// one [`TillEvent::Deposited`] does. Recovery runs the handler again over
/// each journaled message after the checkpoint.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct DurableTill(Till);

/// What a [`DurableTill`] is sent: one deposit.
#[derive(Debug, Serialize, Deserialize)]
pub struct Deposit {
    /// The amount.
    pub amount: u64,
    /// 100 bytes of memo.
    pub memo: String,
}

impl TypedActor for DurableTill {
    const TYPE: &'static str = "bench.durable-till";
    type Message = Deposit;
    type Reply = u64;

    async fn handle(
        &mut self,
        deposit: Deposit,
        _: &mut Context<'_, Self>,
    ) -> Result<u64, HandlerError> {
        self.0.credit(deposit.amount);
        Ok(self.0.balance)
    }
}

// ---------------------------------------------------------------------------
// Events persisted per second.

/// Events persisted per second through the system: `actors` event-sourced
/// [`Till`]s (fresh ids, activated by a first command before the clock
/// starts), each sent commands one after another for [`MESSAGE_RUN`](crate::actor_system::MESSAGE_RUN),
/// each command deciding `per_command` events (a command journals
/// `per_command + 2` entries in two appends: its `MessageReceived`, then
/// its events with its `MessageProcessed` in one batch), default
/// configuration of the backend (a snapshot every 100 entries);
/// against the raw backend's single-entry appends per second with as many
/// clients at once, as the messages figure measures them. The best of
/// [`MESSAGE_RUNS`] runs of each, alternating.
pub async fn persisted<S: SystemStore>(
    storage: S,
    baseline: Arc<dyn Baseline>,
    backend: JournalBackend,
    actors: usize,
    per_command: u32,
) -> Figure {
    let system = ActorSystem::builder(storage)
        .register_event_sourced::<Till>(DurabilityConfig::recommended(backend), |_| Till::default())
        .start();
    let (mut ours, mut raw) = (0.0f64, 0.0f64);
    for _ in 0..MESSAGE_RUNS {
        ours = ours.max(event_rate(&system, actors, per_command).await);
        raw = raw.max(raw_append_rate(&baseline, actors).await);
    }
    system.shutdown().await;
    let events = if per_command == 1 { "event" } else { "events" };
    let who = if actors == 1 { "actor" } else { "actors" };
    against_raw_appends(
        format!("events persisted/s, {per_command} {events} per command, {actors} {who}"),
        ("events/s", ours),
        raw,
        &*baseline,
        actors,
    )
}

/// One run of the persisted figure; events per second.
async fn event_rate<S: SystemStore>(
    system: &ActorSystem<S>,
    actors: usize,
    per_command: u32,
) -> f64 {
    let deposit = move || TillCommand::Deposit {
        amount: 1,
        events: per_command,
        memo: memo(),
    };
    let ids: Vec<String> = (0..actors).map(|_| unique("till")).collect();
    let refs: Vec<_> = ids
        .iter()
        .map(|id| system.event_sourced::<Till>(id.as_str()))
        .collect();
    // Activated (and their first command journaled) before the clock starts.
    futures::future::try_join_all(refs.iter().map(|till| till.send(deposit())))
        .await
        .expect("first deposit");
    let (commands, elapsed) = send_for_a_run(refs, move |till, _| async move {
        till.send(deposit()).await.expect("deposit");
        till
    })
    .await;
    // `per_command + 2` entries per command, the first one's included.
    let (first, sent) = (&ids[0], commands[0]);
    let highest = system
        .storage()
        .highest_sequence(first)
        .await
        .expect("highest");
    assert_eq!(
        highest,
        (u64::from(per_command) + 2) * (sent + 1),
        "entries of {first}"
    );
    (commands.iter().sum::<u64>() * u64::from(per_command)) as f64 / elapsed.as_secs_f64()
}

// ---------------------------------------------------------------------------
// Recovery.

/// The amount of the `i`-th deposit (from 0) of either history: command
/// `i / EVENTS_PER_COMMAND` of the event-sourced one decides it, message
/// `i` of the durable-execution one makes it.
fn amount(i: u64) -> u64 {
    i / u64::from(EVENTS_PER_COMMAND) + 1
}

/// The balance after the first `n` deposits.
fn balance_after(n: u64) -> u64 {
    (0..n).map(amount).sum()
}

/// The event-sourced actor's journal, as the system would write it.
struct EventJournal {
    actor_id: String,
    highest: u64,
    /// The latest snapshot's sequence.
    snapshot: u64,
    /// Events after it.
    tail_events: u64,
}

/// Writes [`RECOVERY_EVENTS`] events to a fresh [`Till`]'s journal through
/// the durability facet (a `journal_core::Actor`, as the system hosts it,
/// default configuration of the backend): commands of
/// [`EVENTS_PER_COMMAND`] events each, snapshots where the facet takes
/// them. Deactivating the host takes no snapshot, so the commands after
/// the last one the interval called for stay a tail.
async fn write_event_journal<S: JournalStorage + Clone + 'static>(
    storage: &S,
    config: &DurabilityConfig,
) -> EventJournal {
    let actor_id = unique("till-es");
    let (mut host, _) = durable_host(
        storage,
        config,
        &actor_id,
        EventSourcedDurable::new(Till::default()),
    );
    let commands = RECOVERY_EVENTS / u64::from(EVENTS_PER_COMMAND);
    for c in 0..commands {
        let command = TillCommand::Deposit {
            amount: amount(c * u64::from(EVENTS_PER_COMMAND)),
            events: EVENTS_PER_COMMAND,
            memo: memo(),
        };
        let message = MessageReceived {
            message_id: format!("c-{c}"),
            message_type: "Deposit".into(),
            payload: serde_json::to_vec(&command).expect("command"),
            ..MessageReceived::default()
        };
        let delivery = host.send(message).await.expect("command");
        assert!(matches!(delivery, Delivery::Replied(_)), "{delivery:?}");
    }
    let till = host.deactivate().await.expect("deactivate").into_inner();
    assert_eq!(till.balance, balance_after(RECOVERY_EVENTS));

    let per_command = u64::from(EVENTS_PER_COMMAND) + 2;
    let highest = storage.highest_sequence(&actor_id).await.expect("highest");
    assert_eq!(highest, commands * per_command);
    let snapshot = storage
        .get_latest_checkpoint(&actor_id)
        .await
        .expect("checkpoint")
        .expect("a snapshot")
        .sequence;
    let tail = highest - snapshot;
    assert_eq!(tail % per_command, 0, "the snapshot follows a command");
    EventJournal {
        actor_id,
        highest,
        snapshot,
        tail_events: tail / per_command * u64::from(EVENTS_PER_COMMAND),
    }
}

/// The durable-execution actor's journal.
struct MessageJournal {
    actor_id: String,
    highest: u64,
    /// Its checkpoint's sequence.
    checkpoint: u64,
}

/// The message of the `n`-th deposit (from 0) of the durable-execution
/// history, as the system sends it.
fn deposit_message(n: u64) -> MessageReceived {
    let deposit = Deposit {
        amount: amount(n),
        memo: memo(),
    };
    MessageReceived {
        message_id: format!("m-{n}"),
        message_type: "Deposit".into(),
        payload: serde_json::to_vec(&deposit).expect("deposit"),
        ..MessageReceived::default()
    }
}

/// The entries the durability facet journals for the `n`-th deposit (from
/// 0), which leaves `balance`: its `MessageReceived` and its
/// `MessageProcessed` (success, the balance as reply), both under the
/// message id as correlation id.
fn deposit_entries(actor_id: &str, n: u64, balance: u64) -> [JournalEntry; 2] {
    let message = deposit_message(n);
    let id = message.message_id.clone();
    let processed = MessageProcessed {
        message_id: id.clone(),
        result: ProcessingResult::Success.into(),
        error_message: String::new(),
        response_payload: serde_json::to_vec(&balance).expect("reply"),
        reply_dropped: false,
    };
    [
        JournalEntry::new(actor_id, 2 * n + 1, Entry::MessageReceived(message))
            .with_correlation_id(&id),
        JournalEntry::new(actor_id, 2 * n + 2, Entry::MessageProcessed(processed))
            .with_correlation_id(&id),
    ]
}

/// Appends deposits `from..to` (from 0) with `append_batch`,
/// [`WRITE_BATCH`] messages at a time.
async fn append_deposits<S: JournalStorage>(storage: &S, actor_id: &str, from: u64, to: u64) {
    let mut balance = balance_after(from);
    let mut start = from;
    while start < to {
        let end = (start + WRITE_BATCH).min(to);
        let mut batch = Vec::with_capacity(2 * (end - start) as usize);
        for n in start..end {
            balance += amount(n);
            batch.extend(deposit_entries(actor_id, n, balance));
        }
        storage.append_batch(&batch).await.expect("append batch");
        start = end;
    }
}

/// `actor` hosted as the system hosts it: a `journal_core::Actor` with a
/// durability facet of `config` on `storage`; and the facet's observer.
fn durable_host<S: JournalStorage + Clone + 'static, A: DurableActor>(
    storage: &S,
    config: &DurabilityConfig,
    actor_id: &str,
    actor: A,
) -> (Actor<A>, journal_core::DurabilityObserver) {
    let facet = DurabilityFacet::new(storage.clone(), config.clone());
    let observer = facet.observer();
    let mut host = Actor::new(actor_id, actor);
    host.facets().attach(Box::new(facet)).expect("attach");
    (host, observer)
}

/// Writes the durable-execution history of the same [`RECOVERY_EVENTS`]
/// deposits: one [`Deposit`] message each, two entries each. The first
/// message goes through the durability facet, and the entries of the rest
/// are built as it built those (checked) and written with `append_batch`,
/// [`WRITE_BATCH`] messages at a time: 100,000 messages one after another
/// are 200,000 commits, minutes on a server. The checkpoint is placed
/// so that the same `tail` deposits follow it as follow the event-sourced
/// actor's snapshot: the journal up to there is written, an activation
/// (a full replay) takes the checkpoint the default interval calls for,
/// and the tail is appended after it.
async fn write_message_journal<S: JournalStorage + Clone + 'static>(
    storage: &S,
    config: &DurabilityConfig,
    tail: u64,
) -> MessageJournal {
    let actor_id = unique("till-de");
    let (mut host, _) = durable_host(
        storage,
        config,
        &actor_id,
        TypedDurable::new(DurableTill::default()),
    );
    let delivery = host.send(deposit_message(0)).await.expect("deposit");
    assert!(matches!(delivery, Delivery::Replied(_)), "{delivery:?}");
    host.deactivate().await.expect("deactivate");
    let written = storage
        .replay_range(&actor_id, 1, 2, 2)
        .await
        .expect("replay");
    for (facet, mut built) in written
        .into_iter()
        .zip(deposit_entries(&actor_id, 0, amount(0)))
    {
        built.id.clone_from(&facet.id);
        built.timestamp.clone_from(&facet.timestamp);
        assert_eq!(facet, built, "entries built as the facet writes them");
    }

    let split = RECOVERY_EVENTS - tail;
    append_deposits(storage, &actor_id, 1, split).await;
    let (mut host, observer) = durable_host(
        storage,
        config,
        &actor_id,
        TypedDurable::new(DurableTill::default()),
    );
    host.activate().await.expect("activate");
    let saved = observer.stats().last_checkpoint.expect("a checkpoint");
    assert_eq!(saved.sequence, 2 * split);
    host.deactivate().await.expect("deactivate");
    append_deposits(storage, &actor_id, split, RECOVERY_EVENTS).await;

    let highest = storage.highest_sequence(&actor_id).await.expect("highest");
    assert_eq!(highest, 2 * RECOVERY_EVENTS);
    MessageJournal {
        actor_id,
        highest,
        checkpoint: saved.sequence,
    }
}

/// One activation of `actor` (a fresh host, so a full recovery): its time,
/// the facet's report, and the recovered actor.
async fn activate<S: JournalStorage + Clone + 'static, A: DurableActor>(
    storage: &S,
    config: &DurabilityConfig,
    actor_id: &str,
    actor: A,
) -> (Duration, ActivationReport, A) {
    let (mut host, observer) = durable_host(storage, config, actor_id, actor);
    let started = Instant::now();
    host.activate().await.expect("activate");
    let elapsed = started.elapsed();
    let report = observer.stats().activation;
    (
        elapsed,
        report,
        host.deactivate().await.expect("deactivate"),
    )
}

/// One full rebuild of `actor` from the first entry to `highest`
/// (`rebuild_at` without a checkpoint): its time and the recovered actor.
async fn fold<S: JournalStorage + Clone + 'static, A: DurableActor>(
    storage: &S,
    config: &DurabilityConfig,
    actor_id: &str,
    highest: u64,
    mut actor: A,
) -> (Duration, A) {
    let started = Instant::now();
    let rebuilt = rebuild_at(
        storage.clone(),
        config,
        actor_id,
        &mut actor,
        highest,
        false,
    )
    .await
    .expect("rebuild");
    let elapsed = started.elapsed();
    assert_eq!(rebuilt.checkpoint_sequence, None);
    assert_eq!(rebuilt.replayed_entries, highest);
    (elapsed, actor)
}

/// The recovery times, best of [`RECOVERY_RUNS`] each: (a) the
/// event-sourced activation, (b) its full fold, (c) the durable-execution
/// activation and its full replay; each run's state checked.
async fn measure<S: JournalStorage + Clone + 'static>(
    storage: &S,
    config: &DurabilityConfig,
    events: &EventJournal,
    messages: &MessageJournal,
) -> [Duration; 4] {
    let expected = balance_after(RECOVERY_EVENTS);
    let check = |till: &Till| {
        assert_eq!(
            (till.balance, till.deposits),
            (expected, RECOVERY_EVENTS),
            "recovered state"
        );
    };
    // Activations first, then full rebuilds: on PostgreSQL, the
    // event-sourced activation right after a full rebuild took 4 ms where
    // back to back it took 1.3 ms (the cause was not pinned down), which
    // measured the order of the runs; each kind now runs beside its
    // counterpart only.
    let mut best = [Duration::MAX; 4];
    for _ in 0..RECOVERY_RUNS {
        let (took, report, till) = activate(
            storage,
            config,
            &events.actor_id,
            EventSourcedDurable::new(Till::default()),
        )
        .await;
        assert_eq!(report.checkpoint_sequence, Some(events.snapshot));
        assert_eq!(report.replayed_entries, events.highest - events.snapshot);
        check(till.actor());
        best[0] = best[0].min(took);

        let (took, report, till) = activate(
            storage,
            config,
            &messages.actor_id,
            TypedDurable::new(DurableTill::default()),
        )
        .await;
        assert_eq!(report.checkpoint_sequence, Some(messages.checkpoint));
        assert_eq!(report.replayed_messages, events.tail_events);
        check(&till.actor().0);
        best[2] = best[2].min(took);
    }
    for _ in 0..RECOVERY_RUNS {
        let (took, till) = fold(
            storage,
            config,
            &events.actor_id,
            events.highest,
            EventSourcedDurable::new(Till::default()),
        )
        .await;
        check(till.actor());
        best[1] = best[1].min(took);

        let (took, till) = fold(
            storage,
            config,
            &messages.actor_id,
            messages.highest,
            TypedDurable::new(DurableTill::default()),
        )
        .await;
        check(&till.actor().0);
        best[3] = best[3].min(took);
    }
    best
}

/// Recovery of one actor with [`RECOVERY_EVENTS`] events, default
/// configuration of the backend (a snapshot every 100 entries, none
/// truncating the journal):
///
/// - (a) the event-sourced [`Till`]'s activation (a `journal_core::Actor`
///   with a durability facet, as the system hosts it): its latest snapshot,
///   then the events of the last command applied;
/// - (b) a full fold of the same journal from the first entry (`rebuild_at`
///   without a checkpoint: every event applied);
/// - (c) a durable-execution [`DurableTill`] with the same deposits as
///   messages, one each: its activation from a checkpoint followed by as
///   many deposits as (a)'s tail (their handlers run again), and its full
///   replay from the first entry (`rebuild_at` without a checkpoint: every
///   handler run again).
///
/// Figures: (a) against (b); (a) against (c)'s activation; (b) against
/// (c)'s full replay. Times are the best of [`RECOVERY_RUNS`] runs of
/// each, the two activations taking turns, then the two full rebuilds;
/// every run checks the state it recovered.
///
/// The event-sourced journal is written through the facet, commands of
/// [`EVENTS_PER_COMMAND`] events; the durable-execution one mostly with
/// `append_batch`, 500 messages at a time (100,000 messages one after
/// another would be 200,000 commits: minutes on a server), its entries
/// built as the facet writes them (checked against the first message's,
/// which goes through it). A history of one event per command would hold
/// two more entries per event for the full fold to read (300,000 entries
/// instead of 105,000, more than the durable-execution actor's 200,000);
/// it is not measured.
pub async fn recovery<S: JournalStorage + Clone + 'static>(
    storage: S,
    backend: JournalBackend,
) -> Vec<Figure> {
    let config = DurabilityConfig::recommended(backend);
    let events = write_event_journal(&storage, &config).await;
    let messages = write_message_journal(&storage, &config, events.tail_events).await;

    let best = measure(&storage, &config, &events, &messages).await;
    let [snapshot, full, durable_snapshot, durable_full] = best.map(|d| d.as_secs_f64() * 1e3);

    let figure = |name: String, value: f64, baseline: f64, baseline_name: String| Figure {
        name,
        value,
        unit: "ms",
        baseline,
        baseline_name,
        better: Better::Lower,
        target: String::new(),
        met: None,
    };
    let n = RECOVERY_EVENTS;
    let tail = events.tail_events;
    vec![
        figure(
            format!("events recovery of {n}: snapshot + tail"),
            snapshot,
            full,
            format!(
                "the same journal folded from the first entry ({} entries, rebuild_at), \
                 best of {RECOVERY_RUNS}",
                events.highest
            ),
        ),
        figure(
            format!("events recovery of {n}: snapshot + tail, vs messages"),
            snapshot,
            durable_snapshot,
            format!(
                "durable-execution actor, {n} messages of one deposit: checkpoint + the last \
                 {tail} run again, best of {RECOVERY_RUNS}"
            ),
        ),
        figure(
            format!("events full fold of {n}, vs messages"),
            full,
            durable_full,
            format!(
                "durable-execution actor, {n} messages run again from the first entry ({} \
                 entries, rebuild_at), best of {RECOVERY_RUNS}",
                messages.highest
            ),
        ),
    ]
}
