//! Durable timers on the memory backend (contract rules 23, 24): after a
//! delay, at an instant, cancelled, to another actor, dropped with a failed
//! message, for a passivated actor, after a restart, with two systems on
//! one store, and the idle checkpoint riding on them. Tokio's clock is
//! paused: the runtime jumps to the next timer whenever every task waits.

mod probe;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use journal_actors::{
    timer_message_id, ActorSystem, SendError, SystemConfig, SystemEvent, TypedActor, TypedDurable,
    TIMER_ID_KEY,
};
use journal_core::{
    journal_entry::Entry, rebuild_at, DurabilityConfig, DurableActor, ExecutionContext,
    JournalStorage, MessageReceived, TimerOp, TimerScheduled, TimerStore,
};
use journal_memory::MemoryJournalStorage;
use probe::{Counter, CounterMessage, Probe};
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;

type Notes = mpsc::UnboundedReceiver<(String, String)>;

fn start(
    storage: &MemoryJournalStorage,
    probe: &Probe,
    config: SystemConfig,
    durability: DurabilityConfig,
) -> ActorSystem<MemoryJournalStorage> {
    let probe = probe.clone();
    ActorSystem::builder(storage.clone())
        .config(config)
        .register::<Counter>(durability, move |_| Counter::new(&probe))
        .start()
}

fn system(storage: &MemoryJournalStorage) -> (ActorSystem<MemoryJournalStorage>, Notes) {
    let (probe, notes) = Probe::new();
    let system = start(
        storage,
        &probe,
        SystemConfig::default(),
        DurabilityConfig::default(),
    );
    (system, notes)
}

/// The next note any counter handled (in virtual time: none coming fails
/// at once).
async fn next_note(notes: &mut Notes) -> (String, String) {
    tokio::time::timeout(Duration::from_secs(30 * 24 * 3600), notes.recv())
        .await
        .expect("a note came")
        .expect("the probe is open")
}

async fn event(
    events: &mut broadcast::Receiver<SystemEvent>,
    wanted: impl Fn(&SystemEvent) -> bool,
) -> SystemEvent {
    tokio::time::timeout(Duration::from_secs(30 * 24 * 3600), async {
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

fn remind(after: Duration, note: &str) -> CounterMessage {
    CounterMessage::Remind {
        after_ms: after.as_millis() as u64,
        note: note.into(),
    }
}

/// The timers an actor's journal scheduled, in order.
async fn scheduled(storage: &MemoryJournalStorage, actor: &str) -> Vec<TimerScheduled> {
    storage
        .replay_from(actor, 1)
        .await
        .expect("succeeds")
        .into_iter()
        .filter_map(|e| match e.entry {
            Some(Entry::TimerScheduled(t)) => Some(t),
            _ => None,
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_timer_fires_once_after_its_delay() {
    let storage = MemoryJournalStorage::new();
    let (system, mut notes) = system(&storage);
    let mut events = system.events();
    let started = Instant::now();
    let actor = system.actor::<Counter>("delay");
    actor
        .send(remind(Duration::from_secs(60), "hello"))
        .await
        .expect("succeeds");
    let timer = scheduled(&storage, "delay").await.remove(0);
    assert!(storage
        .get_timer(&timer.timer_id)
        .await
        .expect("succeeds")
        .is_some());

    assert_eq!(
        next_note(&mut notes).await,
        ("delay".into(), "hello".into())
    );
    assert!(
        started.elapsed() >= Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    event(
        &mut events,
        |e| matches!(e, SystemEvent::TimerFired { timer_id, .. } if *timer_id == timer.timer_id),
    )
    .await;
    assert!(storage
        .get_timer(&timer.timer_id)
        .await
        .expect("succeeds")
        .is_none());

    // Journaled: scheduled within the message, fired within the delivery,
    // whose id derives from the timer's.
    assert_eq!(
        probe::kinds(&storage, "delay").await,
        [
            "message_received",
            "timer_scheduled",
            "message_processed",
            "message_received",
            "timer_fired",
            "message_processed"
        ]
    );
    assert_eq!(timer.target_actor_type, "counter");
    assert_eq!(timer.message_type, "CounterMessage::Note");
    assert_eq!(
        timer.delay,
        Some(prost_types::Duration {
            seconds: 60,
            nanos: 0
        })
    );
    assert!(timer.due_at.is_some());
    let message_id = timer_message_id(&timer.timer_id);
    assert_eq!(probe::received(&storage, "delay", &message_id).await, 1);
    // Once: a day later, nothing more.
    tokio::time::advance(Duration::from_secs(24 * 3600)).await;
    assert_eq!(
        actor.send(CounterMessage::Add(0)).await.expect("succeeds"),
        0
    );
    assert!(notes.try_recv().is_err());
}

#[tokio::test(start_paused = true)]
async fn a_timer_fires_at_its_instant() {
    let storage = MemoryJournalStorage::new();
    let (system, mut notes) = system(&storage);
    let started = Instant::now();
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("present")
        .as_millis() as u64;
    let actor = system.actor::<Counter>("instant");
    actor
        .send(CounterMessage::RemindAt {
            at_ms: now_ms + 90_000,
            note: "at".into(),
        })
        .await
        .expect("succeeds");
    // One in the past fires at once.
    actor
        .send(CounterMessage::RemindAt {
            at_ms: now_ms - 1_000,
            note: "past".into(),
        })
        .await
        .expect("succeeds");
    assert_eq!(next_note(&mut notes).await.1, "past");
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(next_note(&mut notes).await.1, "at");
    assert!(
        started.elapsed() >= Duration::from_secs(89),
        "{:?}",
        started.elapsed()
    );
    let timers = scheduled(&storage, "instant").await;
    let due = timers[0].due_at.expect("present");
    assert_eq!(
        u64::try_from(due.seconds).expect("after 1970") * 1000
            + u64::try_from(due.nanos).expect("non-negative") / 1_000_000,
        now_ms + 90_000
    );
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_timer_never_fires() {
    let storage = MemoryJournalStorage::new();
    let (system, mut notes) = system(&storage);
    let actor = system.actor::<Counter>("cancel");
    actor
        .send(remind(Duration::from_secs(60), "cancelled"))
        .await
        .expect("succeeds");
    let timer = scheduled(&storage, "cancel").await.remove(0);
    actor
        .send(CounterMessage::CancelReminder)
        .await
        .expect("succeeds");
    assert!(storage
        .get_timer(&timer.timer_id)
        .await
        .expect("succeeds")
        .is_none());
    assert!(probe::kinds(&storage, "cancel")
        .await
        .contains(&"timer_cancelled"));
    // A later timer fires; the cancelled one never did before it.
    system
        .actor::<Counter>("sentinel")
        .send(remind(Duration::from_secs(3600), "sentinel"))
        .await
        .expect("succeeds");
    assert_eq!(
        next_note(&mut notes).await,
        ("sentinel".into(), "sentinel".into())
    );
    tokio::time::advance(Duration::from_secs(24 * 3600)).await;
    assert_eq!(
        actor.send(CounterMessage::Add(0)).await.expect("succeeds"),
        0
    );
    assert!(notes.try_recv().is_err());
}

#[tokio::test(start_paused = true)]
async fn a_timer_goes_to_another_actor() {
    let storage = MemoryJournalStorage::new();
    let (system, mut notes) = system(&storage);
    system
        .actor::<Counter>("sender")
        .send(CounterMessage::RemindOther {
            target: "receiver".into(),
            after_ms: 10_000,
            note: "for you".into(),
        })
        .await
        .expect("succeeds");
    let timer = scheduled(&storage, "sender").await.remove(0);
    assert_eq!(timer.target_actor_id, "receiver");
    assert_eq!(
        next_note(&mut notes).await,
        ("receiver".into(), "for you".into())
    );
    let delivered: Vec<MessageReceived> = storage
        .replay_from("receiver", 1)
        .await
        .expect("succeeds")
        .into_iter()
        .filter_map(|e| match e.entry {
            Some(Entry::MessageReceived(m)) => Some(m),
            _ => None,
        })
        .collect();
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].sender_id, "sender");
    assert_eq!(delivered[0].message_id, timer_message_id(&timer.timer_id));
    assert_eq!(
        system
            .actor::<Counter>("receiver")
            .send(CounterMessage::Add(0))
            .await
            .expect("succeeds"),
        0
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_message_drops_its_timers() {
    let storage = MemoryJournalStorage::new();
    let (system, mut notes) = system(&storage);
    let actor = system.actor::<Counter>("fails");
    let failed = actor
        .send(CounterMessage::RemindThenFail {
            after_ms: 10_000,
            note: "dropped".into(),
        })
        .await;
    assert!(matches!(failed, Err(SendError::Handler(_))), "{failed:?}");
    let timer = scheduled(&storage, "fails").await.remove(0);
    assert!(storage
        .get_timer(&timer.timer_id)
        .await
        .expect("succeeds")
        .is_none());
    system
        .actor::<Counter>("sentinel")
        .send(remind(Duration::from_secs(60), "sentinel"))
        .await
        .expect("succeeds");
    assert_eq!(next_note(&mut notes).await.1, "sentinel");
}

#[tokio::test(start_paused = true)]
async fn a_timer_fires_for_a_passivated_actor() {
    let storage = MemoryJournalStorage::new();
    let (probe, mut notes) = Probe::new();
    let config = SystemConfig {
        passivate_after: Duration::from_secs(10),
        ..SystemConfig::default()
    };
    let system = start(&storage, &probe, config, DurabilityConfig::default());
    let mut events = system.events();
    let actor = system.actor::<Counter>("sleeper");
    actor
        .send(remind(Duration::from_secs(600), "wake up"))
        .await
        .expect("succeeds");
    event(&mut events, |e| matches!(e, SystemEvent::Passivated { .. })).await;
    assert_eq!(system.actors_in_memory(), 0);
    assert_eq!(
        next_note(&mut notes).await,
        ("sleeper".into(), "wake up".into())
    );
    // Reactivated by the timer, with its state.
    assert_eq!(
        actor.send(CounterMessage::Add(2)).await.expect("succeeds"),
        2
    );
    assert_eq!(scheduled(&storage, "sleeper").await.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn timers_fire_after_the_system_restarts() {
    let storage = MemoryJournalStorage::new();
    let (first, mut first_notes) = system(&storage);
    for (id, after) in [("restart-a", 60), ("restart-b", 120)] {
        first
            .actor::<Counter>(id)
            .send(remind(Duration::from_secs(after), id))
            .await
            .expect("succeeds");
    }
    // The process dies: nothing checkpointed, its timer loop gone.
    drop(first);
    let (second, mut notes) = system(&storage);
    let mut got = vec![next_note(&mut notes).await, next_note(&mut notes).await];
    got.sort();
    assert_eq!(
        got,
        [
            ("restart-a".into(), "restart-a".into()),
            ("restart-b".into(), "restart-b".into())
        ]
    );
    assert!(first_notes.try_recv().is_err());
    // Recovery replayed the scheduling message without journaling its
    // timer again.
    for id in ["restart-a", "restart-b"] {
        assert_eq!(scheduled(&storage, id).await.len(), 1);
        assert_eq!(
            second
                .actor::<Counter>(id)
                .send(CounterMessage::Add(0))
                .await
                .expect("succeeds"),
            0
        );
    }
}

#[tokio::test(start_paused = true)]
async fn two_systems_on_one_store_fire_each_timer_once() {
    let storage = MemoryJournalStorage::new();
    let (probe, mut notes) = Probe::new();
    let config = SystemConfig {
        timer_poll_interval: Duration::from_millis(500),
        timer_lease: Duration::from_secs(30),
        ..SystemConfig::default()
    };
    let a = start(
        &storage,
        &probe,
        config.clone(),
        DurabilityConfig::default(),
    );
    let b = start(&storage, &probe, config, DurabilityConfig::default());
    let (mut events_a, mut events_b) = (a.events(), b.events());
    let started = Instant::now();
    let hub = a.actor::<Counter>("hub");
    for i in 0..20 {
        hub.send(CounterMessage::RemindOther {
            target: format!("target-{i}"),
            after_ms: 30_000,
            note: format!("n{i}"),
        })
        .await
        .expect("succeeds");
    }
    // A dead process claimed one more timer when it was due, and never
    // fired it: another system fires it when the lease ends.
    hub.send(CounterMessage::RemindOther {
        target: "orphan".into(),
        after_ms: 10_000,
        note: "orphan".into(),
    })
    .await
    .expect("succeeds");
    let timers = scheduled(&storage, "hub").await;
    let orphan = &timers[20];
    let due = storage
        .get_timer(&orphan.timer_id)
        .await
        .expect("succeeds")
        .expect("present")
        .due_at_ms;
    let claimed = storage
        .claim_due_timers(due, Duration::from_secs(60), "dead-process", 10)
        .await
        .expect("succeeds");
    assert_eq!(claimed.len(), 1);
    // Another died after delivering one and before completing it: it fires
    // again, and the target's journal recognises the message.
    hub.send(CounterMessage::RemindOther {
        target: "delivered".into(),
        after_ms: 20_000,
        note: "delivered".into(),
    })
    .await
    .expect("succeeds");
    let delivered = &scheduled(&storage, "hub").await[21];
    let early = MessageReceived {
        message_id: timer_message_id(&delivered.timer_id),
        message_type: delivered.message_type.clone(),
        payload: delivered.timer_data.clone(),
        ..MessageReceived::default()
    };
    b.send("counter", "delivered", early)
        .await
        .expect("succeeds");
    assert_eq!(next_note(&mut notes).await.0, "delivered");

    let mut got = Vec::new();
    for _ in 0..21 {
        got.push(next_note(&mut notes).await);
    }
    let orphan_at = got
        .iter()
        .position(|(actor, _)| actor == "orphan")
        .expect("present");
    assert_eq!(orphan_at, 20, "the orphan waits for its lease: {got:?}");
    assert!(started.elapsed() >= Duration::from_secs(60));
    got.sort();
    got.dedup();
    assert_eq!(got.len(), 21, "each timer once: {got:?}");
    // Every timer completed, by one system or the other; the early
    // delivery too (recognised as a duplicate).
    let mut fired = std::collections::HashSet::new();
    while fired.len() < 22 {
        let event = tokio::select! {
            e = event(&mut events_a, |e| matches!(e, SystemEvent::TimerFired { .. })) => e,
            e = event(&mut events_b, |e| matches!(e, SystemEvent::TimerFired { .. })) => e,
        };
        if let SystemEvent::TimerFired { timer_id, .. } = event {
            fired.insert(timer_id);
        }
    }
    for timer in scheduled(&storage, "hub").await {
        let target = &timer.target_actor_id;
        let id = timer_message_id(&timer.timer_id);
        assert_eq!(probe::received(&storage, target, &id).await, 1, "{target}");
        assert!(storage
            .get_timer(&timer.timer_id)
            .await
            .expect("succeeds")
            .is_none());
    }
    tokio::time::advance(Duration::from_secs(3600)).await;
    hub.send(CounterMessage::Add(0)).await.expect("succeeds");
    assert!(notes.try_recv().is_err());
}

/// A checkpoint timeout past the timer index's range is due at its end:
/// the sum neither overflows (a panic in the actor's task) nor wraps
/// around to a timer due at once.
#[tokio::test(start_paused = true)]
async fn a_checkpoint_timeout_beyond_range_never_fires_early() {
    let storage = MemoryJournalStorage::new();
    let (probe, _notes) = Probe::new();
    let durability = DurabilityConfig {
        checkpoint_interval: 1_000,
        checkpoint_timeout: Some(prost_types::Duration {
            seconds: i64::MAX,
            nanos: 0,
        }),
        ..DurabilityConfig::default()
    };
    let system = start(&storage, &probe, SystemConfig::default(), durability);
    let actor = system.actor::<Counter>("far");
    actor.send(CounterMessage::Add(1)).await.expect("succeeds");
    actor.send(CounterMessage::Add(2)).await.expect("succeeds");
    assert_eq!(
        storage.next_due(0).await.expect("succeeds"),
        Some(journal_core::MAX_SEQUENCE),
        "the checkpoint timer is due at the end of the index's range"
    );
}

#[tokio::test(start_paused = true)]
async fn an_idle_actor_checkpoints_after_its_checkpoint_timeout() {
    let storage = MemoryJournalStorage::new();
    let (probe, _notes) = Probe::new();
    let durability = DurabilityConfig {
        checkpoint_interval: 1_000,
        checkpoint_timeout: Some(prost_types::Duration {
            seconds: 10,
            nanos: 0,
        }),
        ..DurabilityConfig::default()
    };
    let system = start(
        &storage,
        &probe,
        SystemConfig::default(),
        durability.clone(),
    );
    let mut events = system.events();
    let started = Instant::now();
    let actor = system.actor::<Counter>("idle");
    actor.send(CounterMessage::Add(1)).await.expect("succeeds");
    actor.send(CounterMessage::Add(2)).await.expect("succeeds");
    assert!(storage
        .get_latest_checkpoint("idle")
        .await
        .expect("succeeds")
        .is_none());
    event(
        &mut events,
        |e| matches!(e, SystemEvent::IdleCheckpoint { actor_id, .. } if actor_id == "idle"),
    )
    .await;
    assert!(started.elapsed() >= Duration::from_secs(10));
    assert!(
        started.elapsed() < Duration::from_secs(300),
        "before passivation"
    );
    let checkpoint = storage
        .get_latest_checkpoint("idle")
        .await
        .expect("succeeds")
        .expect("present");
    assert_eq!(
        checkpoint.sequence,
        storage.highest_sequence("idle").await.expect("succeeds")
    );
    assert_eq!(system.actors_in_memory(), 1);

    // After a crash, the checkpoint timer brings the actor back to
    // checkpoint what the crash left unsaved.
    actor.send(CounterMessage::Add(3)).await.expect("succeeds");
    drop((actor, system));
    let second = start(&storage, &probe, SystemConfig::default(), durability);
    let mut events = second.events();
    event(
        &mut events,
        |e| matches!(e, SystemEvent::IdleCheckpoint { actor_id, .. } if actor_id == "idle"),
    )
    .await;
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
        second
            .actor::<Counter>("idle")
            .send(CounterMessage::Add(0))
            .await
            .expect("succeeds"),
        6
    );
}

/// `CounterMessage` `message` under `id`, as the system delivers it (a
/// timer's delivery carries the timer's id).
fn delivered(id: &str, message: &CounterMessage, timer: Option<&str>) -> MessageReceived {
    MessageReceived {
        message_id: id.into(),
        message_type: Counter::message_type(message),
        payload: serde_json::to_vec(message).expect("encodes"),
        metadata: timer
            .map(|t| (TIMER_ID_KEY.to_owned(), t.to_owned()))
            .into_iter()
            .collect(),
        ..MessageReceived::default()
    }
}

#[tokio::test(start_paused = true)]
async fn a_typed_journal_with_timers_is_rebuilt_and_rerun_outside_the_system() {
    let storage = MemoryJournalStorage::new();
    let (system, mut notes) = system(&storage);
    let actor = system.actor::<Counter>("outside");
    actor
        .send_with_id("m-1", CounterMessage::Add(3))
        .await
        .expect("succeeds");
    actor
        .send_with_id("m-2", remind(Duration::from_secs(5), "fired"))
        .await
        .expect("succeeds");
    next_note(&mut notes).await;
    actor
        .send_with_id("m-3", CounterMessage::Add(4))
        .await
        .expect("succeeds");
    let timer = scheduled(&storage, "outside").await.remove(0);
    let highest = storage.highest_sequence("outside").await.expect("reads");

    // Time travel: the delivery's `TimerFired` replays as the system
    // journaled it.
    let mut rebuilt = TypedDurable::new(Counter::default());
    let report = rebuild_at(
        storage.clone(),
        &DurabilityConfig::default(),
        "outside",
        &mut rebuilt,
        highest,
        false,
    )
    .await
    .expect("rebuilds");
    assert_eq!(report.replayed_messages, 4);
    assert_eq!(rebuilt.actor().total, 7);
    assert_eq!(rebuilt.actor().notes, ["fired"]);

    // A run without a journal: ephemeral contexts, the timer delivered by
    // hand. Its id derives from the message, as the live one did.
    let mut reference = TypedDurable::new(Counter::default());
    let mut timers = Vec::new();
    for (id, message) in [
        ("m-1", CounterMessage::Add(3)),
        ("m-2", remind(Duration::from_secs(5), "fired")),
    ] {
        let mut ctx = ExecutionContext::ephemeral("outside", id);
        reference
            .handle(&delivered(id, &message, None), &mut ctx)
            .await
            .expect("handled");
        timers.extend(ctx.timer_ops().iter().filter_map(|op| match op {
            TimerOp::Scheduled(t) => Some(t.timer_id.clone()),
            _ => None,
        }));
    }
    assert_eq!(timers, std::slice::from_ref(&timer.timer_id));
    let fired = timer_message_id(&timer.timer_id);
    let note = CounterMessage::Note("fired".into());
    let mut ctx = ExecutionContext::ephemeral("outside", fired.as_str());
    let reply = reference
        .handle(&delivered(&fired, &note, Some(&timer.timer_id)), &mut ctx)
        .await
        .expect("handled");
    assert_eq!(reply, b"1");
    assert!(matches!(ctx.timer_ops(), [TimerOp::Fired(id)] if *id == timer.timer_id));
    let (id, message) = ("m-3", CounterMessage::Add(4));
    let mut ctx = ExecutionContext::ephemeral("outside", id);
    reference
        .handle(&delivered(id, &message, None), &mut ctx)
        .await
        .expect("handled");
    assert_eq!(
        reference.snapshot().expect("encodes"),
        rebuilt.snapshot().expect("encodes")
    );
}

/// A timer cancelled once it was claimed, its delivery possibly queued
/// behind the cancelling message, never reaches the handler.
#[tokio::test(start_paused = true)]
async fn a_timer_cancelled_after_its_claim_is_never_delivered() {
    let storage = MemoryJournalStorage::new();
    let (system, mut notes) = system(&storage);
    let mut events = system.events();
    let actor = system.actor::<Counter>("late");
    actor
        .send(remind(Duration::from_secs(60), "cancelled"))
        .await
        .expect("succeeds");
    let timer = scheduled(&storage, "late").await.remove(0);
    let due = storage
        .get_timer(&timer.timer_id)
        .await
        .expect("succeeds")
        .expect("present")
        .due_at_ms;
    // Claimed when due, as by a fire loop whose delivery is on its way
    // (here a process that died with it: the system's own loop claims it
    // again when the lease ends, 10 s after it was due).
    let claimed = storage
        .claim_due_timers(due, Duration::from_secs(10), "in-flight", 10)
        .await
        .expect("succeeds");
    assert_eq!(claimed.len(), 1);
    // Cancelled now: the index leaves a claimed timer alone.
    actor
        .send(CounterMessage::CancelReminder)
        .await
        .expect("succeeds");
    assert!(storage
        .get_timer(&timer.timer_id)
        .await
        .expect("succeeds")
        .is_some());
    // A sentinel due after the lease ends comes, and the cancelled timer
    // never did, nor did it reach the journal; its claim was completed.
    system
        .actor::<Counter>("sentinel")
        .send(remind(Duration::from_secs(3600), "sentinel"))
        .await
        .expect("succeeds");
    assert_eq!(
        next_note(&mut notes).await,
        ("sentinel".into(), "sentinel".into())
    );
    assert!(notes.try_recv().is_err());
    assert!(!probe::kinds(&storage, "late")
        .await
        .contains(&"timer_fired"));
    assert!(storage
        .get_timer(&timer.timer_id)
        .await
        .expect("succeeds")
        .is_none());
    while let Ok(event) = events.try_recv() {
        assert!(
            !matches!(&event, SystemEvent::TimerFired { actor_id, .. } if actor_id == "late"),
            "{event:?}"
        );
    }
    // A timer scheduled afterwards fires as usual.
    actor
        .send(remind(Duration::from_secs(60), "again"))
        .await
        .expect("succeeds");
    assert_eq!(next_note(&mut notes).await, ("late".into(), "again".into()));
    system.shutdown().await;
}

/// A timer whose target is busy for long holds up that timer alone.
#[tokio::test(start_paused = true)]
async fn a_slow_delivery_holds_up_no_other_timer() {
    let storage = MemoryJournalStorage::new();
    let (probe, mut notes) = Probe::new();
    let system = start(
        &storage,
        &probe,
        SystemConfig::default(),
        DurabilityConfig::default(),
    );
    let (slow, quick) = (
        system.actor::<Counter>("slow"),
        system.actor::<Counter>("quick"),
    );
    slow.send(remind(Duration::from_secs(60), "held"))
        .await
        .expect("succeeds");
    quick
        .send(remind(Duration::from_secs(61), "free"))
        .await
        .expect("succeeds");
    // The slow actor waits at its gate: the first timer's delivery waits
    // behind it, and the second timer, due a second later, comes all the
    // same.
    let waiting = {
        let slow = slow.clone();
        tokio::spawn(async move { slow.send(CounterMessage::Wait).await })
    };
    probe.waiting.notified().await;
    assert_eq!(next_note(&mut notes).await, ("quick".into(), "free".into()));
    probe.gate.notify_one();
    waiting.await.expect("ran").expect("succeeds");
    assert_eq!(next_note(&mut notes).await, ("slow".into(), "held".into()));
    system.shutdown().await;
}
