//! The actor system on the memory backend: keyed concurrency, activation,
//! passivation, the bound on actors in memory, shutdown, per-send errors,
//! message ids. Tokio's clock is paused: idle times pass by
//! `tokio::time::advance`, never by sleeping.

mod probe;

use std::time::Duration;

use journal_actors::{ActorSystem, SendError, SystemConfig, SystemEvent, TypedActor};
use journal_core::{
    journal_entry::Entry, Delivery, DurabilityConfig, JournalEntry, JournalError, JournalStorage,
    MessageReceived,
};
use journal_memory::MemoryJournalStorage;
use probe::{Counter, CounterMessage, Probe};

fn system(
    storage: &MemoryJournalStorage,
    probe: &Probe,
    config: SystemConfig,
) -> ActorSystem<MemoryJournalStorage> {
    let probe = probe.clone();
    ActorSystem::builder(storage.clone())
        .config(config)
        .register::<Counter>(DurabilityConfig::default(), move |_| Counter::new(&probe))
        .start()
}

/// Waits for an event matching `wanted` (in virtual time: a missing event
/// fails at once instead of hanging).
async fn event(
    events: &mut tokio::sync::broadcast::Receiver<SystemEvent>,
    wanted: impl Fn(&SystemEvent) -> bool,
) -> SystemEvent {
    tokio::time::timeout(Duration::from_secs(24 * 3600), async {
        loop {
            let event = events.recv().await.expect("event");
            if wanted(&event) {
                return event;
            }
        }
    })
    .await
    .expect("the event came")
}

#[tokio::test(start_paused = true)]
async fn two_messages_to_one_id_never_interleave() {
    let storage = MemoryJournalStorage::new();
    let (probe, _) = Probe::new();
    let system = system(&storage, &probe, SystemConfig::default());
    let cart = system.actor::<Counter>("one");
    let sends: Vec<_> = (1..=20)
        .map(|n| {
            let cart = cart.clone();
            tokio::spawn(async move { cart.send(CounterMessage::Slow(n)).await })
        })
        .collect();
    for send in sends {
        send.await.expect("the task ran").expect("replied");
    }
    let log = probe.log.lock().expect("not poisoned").clone();
    assert_eq!(log.len(), 40);
    for pair in log.chunks(2) {
        let n = pair[0].strip_prefix("start ").expect("a start");
        assert_eq!(pair[1], format!("end {n}"), "interleaved: {log:?}");
    }
    assert_eq!(
        cart.send(CounterMessage::Add(0)).await.expect("succeeds"),
        210
    );
}

#[tokio::test(start_paused = true)]
async fn many_ids_run_concurrently() {
    let storage = MemoryJournalStorage::new();
    let (probe, _) = Probe::new();
    let system = system(&storage, &probe, SystemConfig::default());
    // "a" waits for a gate that only a message to "b" opens: with one lock
    // over all actors, "b" would wait for "a" forever.
    let a = system.actor::<Counter>("a");
    let waiting = tokio::spawn(async move { a.send(CounterMessage::Wait).await });
    probe.waiting.notified().await;
    let b = system.actor::<Counter>("b");
    tokio::time::timeout(Duration::from_secs(60), b.send(CounterMessage::Open))
        .await
        .expect("b was not held up by a")
        .expect("present");
    waiting.await.expect("the task ran").expect("replied");

    // And a hundred ids at once all complete.
    let sends: Vec<_> = (0..100)
        .map(|i| {
            let actor = system.actor::<Counter>(format!("many-{i}"));
            tokio::spawn(async move { actor.send(CounterMessage::Add(i)).await })
        })
        .collect();
    for (i, send) in sends.into_iter().enumerate() {
        assert_eq!(
            send.await.expect("the task ran").expect("replied"),
            i as u64
        );
    }
    assert_eq!(system.actors_in_memory(), 102);
}

#[tokio::test(start_paused = true)]
async fn idle_actors_are_passivated_and_reactivated_with_their_state() {
    let storage = MemoryJournalStorage::new();
    let (probe, _) = Probe::new();
    let config = SystemConfig {
        passivate_after: Duration::from_secs(60),
        ..SystemConfig::default()
    };
    let system = system(&storage, &probe, config);
    let mut events = system.events();
    let cart = system.actor::<Counter>("idle");
    assert_eq!(
        cart.send(CounterMessage::Add(5)).await.expect("succeeds"),
        5
    );
    assert_eq!(
        cart.send(CounterMessage::Add(2)).await.expect("succeeds"),
        7
    );
    assert!(storage
        .get_latest_checkpoint("idle")
        .await
        .expect("succeeds")
        .is_none());

    tokio::time::advance(Duration::from_secs(61)).await;
    event(
        &mut events,
        |e| matches!(e, SystemEvent::Passivated { actor_id, .. } if actor_id == "idle"),
    )
    .await;
    assert_eq!(system.actors_in_memory(), 0);
    // Checkpointed before it was dropped: reactivation replays nothing.
    let checkpoint = storage
        .get_latest_checkpoint("idle")
        .await
        .expect("succeeds")
        .expect("present");
    assert_eq!(
        checkpoint.sequence,
        storage.highest_sequence("idle").await.expect("succeeds")
    );

    assert_eq!(
        cart.send(CounterMessage::Add(1)).await.expect("succeeds"),
        8
    );
    // The event says what recovery did: the checkpoint, nothing replayed.
    let activated = event(
        &mut events,
        |e| matches!(e, SystemEvent::Activated { actor_id, .. } if actor_id == "idle"),
    )
    .await;
    let SystemEvent::Activated { recovery, .. } = activated else {
        unreachable!("matched above")
    };
    assert_eq!(recovery.checkpoint_sequence, Some(checkpoint.sequence));
    assert_eq!(
        (recovery.replayed_entries, recovery.replayed_messages),
        (0, 0)
    );
    assert!(!recovery.completed_interrupted_message);
    assert_eq!(system.actors_in_memory(), 1);
}

#[tokio::test(start_paused = true)]
async fn actors_in_memory_stay_within_the_bound() {
    let storage = MemoryJournalStorage::new();
    let (probe, _) = Probe::new();
    let config = SystemConfig {
        max_actors: 3,
        ..SystemConfig::default()
    };
    let system = system(&storage, &probe, config);
    for i in 0..10_u64 {
        let actor = system.actor::<Counter>(format!("bounded-{i}"));
        assert_eq!(
            actor
                .send(CounterMessage::Add(i + 1))
                .await
                .expect("succeeds"),
            i + 1
        );
        assert!(
            system.actors_in_memory() <= 3,
            "{} in memory",
            system.actors_in_memory()
        );
    }
    // The least recently used went first: the last three are still there,
    // the others come back with their state.
    for i in 0..10_u64 {
        let actor = system.actor::<Counter>(format!("bounded-{i}"));
        assert_eq!(
            actor.send(CounterMessage::Add(0)).await.expect("succeeds"),
            i + 1
        );
        assert!(system.actors_in_memory() <= 3);
    }
    for i in 0..7 {
        let id = format!("bounded-{i}");
        assert!(
            storage
                .get_latest_checkpoint(&id)
                .await
                .expect("succeeds")
                .is_some(),
            "{id}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn shutdown_finishes_messages_in_flight_and_checkpoints() {
    let storage = MemoryJournalStorage::new();
    let (probe, _) = Probe::new();
    let system = system(&storage, &probe, SystemConfig::default());
    let a = system.actor::<Counter>("shut-a");
    let waiting = tokio::spawn({
        let a = a.clone();
        async move { a.send(CounterMessage::Wait).await }
    });
    probe.waiting.notified().await;
    // Queued behind the waiting message.
    let queued: Vec<_> = (1..=5)
        .map(|n| {
            let a = a.clone();
            tokio::spawn(async move { a.send(CounterMessage::Add(n)).await })
        })
        .collect();
    let b = system.actor::<Counter>("shut-b");
    b.send(CounterMessage::Add(3)).await.expect("succeeds");
    tokio::task::yield_now().await;

    let shutdown = tokio::spawn({
        let system = system.clone();
        async move { system.shutdown().await }
    });
    tokio::task::yield_now().await;
    assert!(matches!(
        b.send(CounterMessage::Add(1)).await,
        Err(SendError::ShuttingDown)
    ));
    probe.gate.notify_one();
    shutdown.await.expect("succeeds");
    waiting.await.expect("the task ran").expect("replied");
    let mut totals = Vec::new();
    for send in queued {
        totals.push(send.await.expect("the task ran").expect("replied"));
    }
    totals.sort_unstable();
    assert_eq!(totals.last(), Some(&15));
    assert_eq!(system.actors_in_memory(), 0);
    for id in ["shut-a", "shut-b"] {
        let checkpoint = storage
            .get_latest_checkpoint(id)
            .await
            .expect("read")
            .expect("present");
        assert_eq!(
            checkpoint.sequence,
            storage.highest_sequence(id).await.expect("succeeds")
        );
    }
}

#[tokio::test(start_paused = true)]
async fn bad_sends_get_their_own_errors_and_the_system_goes_on() {
    let storage = MemoryJournalStorage::new();
    let (probe, _) = Probe::new();
    // A journal that cannot be recovered: it starts at 2 (truncated) and
    // has no checkpoint.
    for sequence in 1..=2 {
        let entry = JournalEntry::new(
            "broken",
            sequence,
            Entry::message_received(format!("m-{sequence}"), "Add", b"{\"Add\":1}".to_vec()),
        );
        storage.append_entry(&entry).await.expect("succeeds");
    }
    storage.truncate_to("broken", 1).await.expect("succeeds");
    let system = system(&storage, &probe, SystemConfig::default());

    let unknown = system.send("nobody", "x", MessageReceived::default()).await;
    assert!(matches!(unknown, Err(SendError::UnknownType(t)) if t == "nobody"));
    let empty_id = system
        .send(Counter::TYPE, "", MessageReceived::default())
        .await;
    assert!(matches!(
        empty_id,
        Err(SendError::Journal(JournalError::InvalidEntry(_)))
    ));
    for _ in 0..2 {
        let broken = system
            .actor::<Counter>("broken")
            .send(CounterMessage::Add(1))
            .await;
        assert!(
            matches!(&broken, Err(SendError::Recovery { actor_id, .. }) if actor_id == "broken"),
            "{broken:?}"
        );
    }
    let garbage = system
        .send(
            Counter::TYPE,
            "fine",
            MessageReceived {
                payload: b"not json".to_vec(),
                ..MessageReceived::default()
            },
        )
        .await
        .expect("succeeds");
    assert!(matches!(garbage, Delivery::Failed(reason) if reason.contains("counter")));
    let fine = system.actor::<Counter>("fine");
    assert_eq!(
        fine.send(CounterMessage::Add(4)).await.expect("succeeds"),
        4
    );
    assert_eq!(system.actors_in_memory(), 1);
}

#[tokio::test(start_paused = true)]
async fn caller_ids_are_exactly_once_and_missing_ids_are_generated() {
    let storage = MemoryJournalStorage::new();
    let (probe, _) = Probe::new();
    let system = system(&storage, &probe, SystemConfig::default());
    let actor = system.actor::<Counter>("ids");
    assert_eq!(
        actor
            .send_with_id("pay-1", CounterMessage::Add(5))
            .await
            .expect("succeeds"),
        5
    );
    assert_eq!(
        actor
            .send_with_id("pay-1", CounterMessage::Add(5))
            .await
            .expect("succeeds"),
        5
    );
    assert_eq!(
        actor.send(CounterMessage::Add(1)).await.expect("succeeds"),
        6
    );
    assert_eq!(
        actor.send(CounterMessage::Add(1)).await.expect("succeeds"),
        7
    );
    assert_eq!(probe::received(&storage, "ids", "pay-1").await, 1);
    // The message type is the variant's name.
    let entries = storage.replay_from("ids", 1).await.expect("succeeds");
    let types: Vec<_> = entries
        .iter()
        .filter_map(|e| match &e.entry {
            Some(Entry::MessageReceived(m)) => Some(m.message_type.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(types, ["CounterMessage::Add"; 3]);
    // After a restart of the system, the id is still recognised.
    system.shutdown().await;
    let again = self::system(&storage, &probe, SystemConfig::default());
    let actor = again.actor::<Counter>("ids");
    assert_eq!(
        actor
            .send_with_id("pay-1", CounterMessage::Add(5))
            .await
            .expect("succeeds"),
        5
    );
    assert_eq!(
        actor.send(CounterMessage::Add(0)).await.expect("succeeds"),
        7
    );
}

/// Many activations at once beyond the bound, on several threads: each
/// makes room by passivating the least recently used idle actor, and many
/// pick the same one as it leaves. An activation whose passivation
/// request reached that actor's channel just as its task ended waited
/// for an answer that never came (the request stayed in the channel,
/// which the waiter itself kept alive).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_activations_beyond_the_bound_never_wait_forever() {
    use futures::StreamExt;

    let storage = MemoryJournalStorage::new();
    let (probe, _) = Probe::new();
    let config = SystemConfig {
        max_actors: 200,
        ..SystemConfig::default()
    };
    let system = system(&storage, &probe, config);
    // A race: each round of 20,000 caught it about two times in five.
    for round in 0..3 {
        let activations = futures::stream::iter(0..20_000_u64).for_each_concurrent(64, |i| {
            let actor = system.actor::<Counter>(format!("crowd-{round}-{i}"));
            async move {
                assert_eq!(
                    actor.send(CounterMessage::Add(1)).await.expect("succeeds"),
                    1
                );
            }
        });
        tokio::time::timeout(Duration::from_secs(60), activations)
            .await
            .expect("every activation ended");
        assert!(
            system.actors_in_memory() <= 200,
            "{} in memory",
            system.actors_in_memory()
        );
    }
}

/// Two types whose messages and states look alike (a running total).
macro_rules! summing_actor {
    ($name:ident, $type:literal) => {
        #[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
        struct $name {
            total: u64,
        }

        impl TypedActor for $name {
            const TYPE: &'static str = $type;
            type Message = u64;
            type Reply = u64;

            async fn handle(
                &mut self,
                n: u64,
                _ctx: &mut journal_actors::Context<'_, Self>,
            ) -> Result<u64, journal_core::HandlerError> {
                self.total += n;
                Ok(self.total)
            }
        }
    };
}

summing_actor!(Savings, "savings");
summing_actor!(Loans, "loans");

fn two_types(storage: &MemoryJournalStorage) -> ActorSystem<MemoryJournalStorage> {
    ActorSystem::builder(storage.clone())
        .register::<Savings>(DurabilityConfig::default(), |_| Savings::default())
        .register::<Loans>(DurabilityConfig::default(), |_| Loans::default())
        .start()
}

fn refused_as_another_types(result: Result<u64, SendError>) {
    match result {
        Err(SendError::Recovery { source, .. }) => match *source {
            JournalError::RecoveryFailed { reason, .. } => {
                assert!(reason.contains("\"savings\""), "{reason}");
            }
            other => panic!("not a refusal: {other:?}"),
        },
        other => panic!("not a refusal: {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn an_id_of_one_type_is_refused_to_another_and_neither_history_mixes() {
    let storage = MemoryJournalStorage::new();
    let system = two_types(&storage);
    assert_eq!(system.actor::<Savings>("x").send(5).await.expect("sent"), 5);
    // While the savings actor is in memory, from its journal's first
    // message.
    refused_as_another_types(system.actor::<Loans>("x").send(7).await);
    assert_eq!(system.actor::<Savings>("x").send(1).await.expect("sent"), 6);
    system.shutdown().await;
    // After a restart, from its checkpoint (shutdown took one) and from
    // the journal.
    assert!(storage
        .get_latest_checkpoint("x")
        .await
        .expect("read")
        .is_some());
    let system = two_types(&storage);
    refused_as_another_types(system.actor::<Loans>("x").send(7).await);
    assert_eq!(system.actor::<Savings>("x").send(1).await.expect("sent"), 7);
    system.shutdown().await;
    storage
        .delete_checkpoints_before("x", u64::MAX)
        .await
        .expect("deleted");
    let system = two_types(&storage);
    refused_as_another_types(system.actor::<Loans>("x").send(7).await);
    assert_eq!(system.actor::<Savings>("x").send(1).await.expect("sent"), 8);
    // Nothing of the refused sends reached the journal, and the same id
    // is the loans actor's elsewhere: other ids are not affected.
    let journal = storage.replay_from("x", 1).await.expect("replay");
    assert_eq!(journal.len(), 8, "two entries for each of 4 messages");
    assert_eq!(system.actor::<Loans>("y").send(7).await.expect("sent"), 7);
    // The journal's first message carries the mark (replay takes it out
    // before the handler sees the message).
    let Some(Entry::MessageReceived(first)) = &journal[0].entry else {
        panic!("not a message: {:?}", journal[0]);
    };
    assert_eq!(
        first
            .metadata
            .get(journal_core::OWNER_METADATA)
            .map(String::as_str),
        Some("savings")
    );
    system.shutdown().await;
}

/// Adds what it is sent, and panics at 13 (after adding it).
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Touchy {
    total: u64,
}

impl TypedActor for Touchy {
    const TYPE: &'static str = "touchy";
    type Message = u64;
    type Reply = u64;

    async fn handle(
        &mut self,
        n: u64,
        _ctx: &mut journal_actors::Context<'_, Self>,
    ) -> Result<u64, journal_core::HandlerError> {
        self.total += n;
        assert!(n != 13, "unlucky number");
        Ok(self.total)
    }
}

#[tokio::test(start_paused = true)]
async fn a_panicking_handler_fails_its_message_alone_and_the_actor_goes_on() {
    let storage = MemoryJournalStorage::new();
    let start = || {
        ActorSystem::builder(storage.clone())
            .register::<Touchy>(DurabilityConfig::default(), |_| Touchy::default())
            .start()
    };
    let system = start();
    let touchy = system.actor::<Touchy>("t");
    assert_eq!(touchy.send(1).await.expect("sent"), 1);
    match touchy.send(13).await {
        Err(SendError::Handler(reason)) => {
            assert!(reason.contains("panicked: unlucky number"), "{reason}");
        }
        other => panic!("not the handler's failure: {other:?}"),
    }
    // The same actor, still in memory: its state is what the handler left,
    // as after a handler error.
    assert_eq!(touchy.send(2).await.expect("sent"), 16);
    system.shutdown().await;
    // Recovery from the journal alone meets the same panic and replays the
    // recorded failure.
    storage
        .delete_checkpoints_before("t", u64::MAX)
        .await
        .expect("deleted");
    let system = start();
    assert_eq!(system.actor::<Touchy>("t").send(4).await.expect("sent"), 20);
    system.shutdown().await;
}

/// Adds what a side effect gives back; the effect panics at 13.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Caller {
    total: u64,
}

impl TypedActor for Caller {
    const TYPE: &'static str = "caller";
    type Message = u64;
    type Reply = u64;

    async fn handle(
        &mut self,
        n: u64,
        ctx: &mut journal_actors::Context<'_, Self>,
    ) -> Result<u64, journal_core::HandlerError> {
        let got: u64 = ctx
            .side_effect("remote", &n, || async move {
                assert!(n != 13, "the remote call blew up");
                Ok::<_, String>(n)
            })
            .await??;
        self.total += got;
        Ok(self.total)
    }
}

#[tokio::test(start_paused = true)]
async fn a_side_effect_that_panics_is_its_journaled_failure() {
    let storage = MemoryJournalStorage::new();
    let start = || {
        ActorSystem::builder(storage.clone())
            .register::<Caller>(DurabilityConfig::default(), |_| Caller::default())
            .start()
    };
    let system = start();
    let caller = system.actor::<Caller>("c");
    assert_eq!(caller.send(1).await.expect("sent"), 1);
    match caller.send(13).await {
        Err(SendError::Handler(reason)) => {
            assert!(
                reason.contains("side effect panicked: the remote call blew up"),
                "{reason}"
            );
        }
        other => panic!("not the effect's failure: {other:?}"),
    }
    assert_eq!(caller.send(2).await.expect("sent"), 3);
    system.shutdown().await;
    // Replayed from the journal alone: the failure comes from the journal,
    // the effect does not run again, and nothing diverges.
    storage
        .delete_checkpoints_before("c", u64::MAX)
        .await
        .expect("deleted");
    let system = start();
    assert_eq!(system.actor::<Caller>("c").send(4).await.expect("sent"), 7);
    system.shutdown().await;
}
