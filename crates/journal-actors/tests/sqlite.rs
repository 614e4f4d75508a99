//! The actor system on an SQLite file in a temporary directory: keyed
//! concurrency, passivation, and timers across a restart of the process's
//! system and a reopening of the file. Real time (SQLite works on threads
//! of its own): waits are on notifications, bounded by a timeout.

mod probe;

use std::time::Duration;

use journal_actors::{ActorSystem, SystemConfig, SystemEvent};
use journal_core::{DurabilityConfig, JournalStorage, TimerStore};
use journal_sqlite::SqliteJournalStorage;
use probe::{Counter, CounterMessage, Probe};
use tokio::sync::broadcast;

const PATIENCE: Duration = Duration::from_secs(20);

fn start(
    storage: &SqliteJournalStorage,
    probe: &Probe,
    config: SystemConfig,
) -> ActorSystem<SqliteJournalStorage> {
    let probe = probe.clone();
    ActorSystem::builder(storage.clone())
        .config(config)
        .register::<Counter>(DurabilityConfig::default(), move |_| Counter::new(&probe))
        .start()
}

async fn event(
    events: &mut broadcast::Receiver<SystemEvent>,
    wanted: impl Fn(&SystemEvent) -> bool,
) -> SystemEvent {
    tokio::time::timeout(PATIENCE, async {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_concurrency_and_passivation_on_sqlite() {
    let dir = tempfile::tempdir().expect("temp dir");
    let storage = SqliteJournalStorage::new(dir.path().join("actors.db"))
        .await
        .expect("opens");
    let (probe, _) = Probe::new();
    let config = SystemConfig {
        passivate_after: Duration::from_millis(200),
        ..SystemConfig::default()
    };
    let system = start(&storage, &probe, config);
    let mut events = system.events();
    let sends: Vec<_> = (0..8_u64)
        .flat_map(|actor| (1..=5_u64).map(move |n| (actor, n)))
        .map(|(actor, n)| {
            let actor = system.actor::<Counter>(format!("sq-{actor}"));
            tokio::spawn(async move { actor.send(CounterMessage::Slow(n)).await })
        })
        .collect();
    for send in sends {
        send.await.expect("the task ran").expect("replied");
    }
    let log = probe.log.lock().expect("not poisoned").clone();
    assert_eq!(log.len(), 80);
    for actor in 0..8 {
        let id = format!("sq-{actor}");
        let total = system
            .actor::<Counter>(id.as_str())
            .send(CounterMessage::Add(0))
            .await
            .expect("replied");
        assert_eq!(total, 15, "{id}");
    }
    // Idle: passivated with a checkpoint, then back with the state.
    for _ in 0..8 {
        event(&mut events, |e| matches!(e, SystemEvent::Passivated { .. })).await;
    }
    assert_eq!(system.actors_in_memory(), 0);
    let checkpoint = storage
        .get_latest_checkpoint("sq-3")
        .await
        .expect("read")
        .expect("checkpointed at passivation");
    assert_eq!(
        checkpoint.sequence,
        storage.highest_sequence("sq-3").await.expect("read")
    );
    let again = system
        .actor::<Counter>("sq-3")
        .send(CounterMessage::Add(1))
        .await
        .expect("replied");
    assert_eq!(again, 16);
    system.shutdown().await;
    storage.close().await;
}

// One thread: the new system's events are subscribed to before its timer
// loop first runs.
#[tokio::test(flavor = "current_thread")]
async fn timers_fire_across_a_restart_on_sqlite() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("timers.db");
    let storage = SqliteJournalStorage::new(&path).await.expect("opens");
    let (probe, mut first_notes) = Probe::new();
    let system = start(&storage, &probe, SystemConfig::default());
    let actor = system.actor::<Counter>("sq-timer");
    actor
        .send(CounterMessage::Remind {
            after_ms: 300,
            note: "after restart".into(),
        })
        .await
        .expect("scheduled");
    actor
        .send(CounterMessage::Remind {
            after_ms: 200,
            note: "cancelled".into(),
        })
        .await
        .expect("scheduled");
    actor
        .send(CounterMessage::CancelReminder)
        .await
        .expect("cancelled");
    // The process goes away before either is due; the file is reopened.
    drop((actor, system));
    storage.close().await;
    let storage = SqliteJournalStorage::new(&path).await.expect("reopens");
    let (probe, mut notes) = Probe::new();
    let system = start(&storage, &probe, SystemConfig::default());
    let mut events = system.events();
    let note = tokio::time::timeout(PATIENCE, notes.recv())
        .await
        .expect("fired in time")
        .expect("a note");
    assert_eq!(note, ("sq-timer".into(), "after restart".into()));
    // Its timer completed; the cancelled one never came.
    let next = storage.next_due(system.now_ms()).await.expect("read");
    if next.is_some() {
        event(&mut events, |e| matches!(e, SystemEvent::TimerFired { .. })).await;
    }
    assert_eq!(storage.next_due(system.now_ms()).await.expect("read"), None);
    let notes_now = system
        .actor::<Counter>("sq-timer")
        .send(CounterMessage::Note("last".into()))
        .await
        .expect("replied");
    assert_eq!(notes_now, 2, "only the first reminder and this note");
    assert!(first_notes.try_recv().is_err());
    system.shutdown().await;
    storage.close().await;
}
