//! Timers scheduled from handlers: journaled within the message, put into
//! the due-timer index when it completes (also when recovery completes an
//! interrupted one), dropped when it fails, never journaled twice on
//! replay, and a divergence when replay asks for one the journal lacks.

use async_trait::async_trait;
use journal_core::journal_entry::Entry;
use journal_core::{
    timer_id, Actor, Delivery, DurabilityConfig, DurabilityFacet, DurableActor, ExecutionContext,
    HandlerError, HandlerResult, JournalEntry, JournalError, JournalStorage, MessageReceived,
    TimerScheduled, TimerStore,
};
use journal_memory::MemoryJournalStorage;

/// Schedules a timer for every message; fails those whose payload is
/// "fail" after scheduling.
#[derive(Default)]
struct Scheduler {
    handled: u64,
}

#[async_trait]
impl DurableActor for Scheduler {
    async fn handle(&mut self, m: &MessageReceived, ctx: &mut ExecutionContext) -> HandlerResult {
        let id = ctx
            .schedule_timer(TimerScheduled {
                target_actor_type: "scheduler".into(),
                message_type: "Tick".into(),
                timer_data: m.payload.clone(),
                delay: Some(prost_types::Duration {
                    seconds: 60,
                    nanos: 0,
                }),
                ..TimerScheduled::default()
            })
            .await?;
        if m.payload == b"fail" {
            return Err(HandlerError::failed("failed after scheduling"));
        }
        self.handled += 1;
        Ok(id.into_bytes())
    }
    fn snapshot(&self) -> Result<Vec<u8>, String> {
        Ok(self.handled.to_le_bytes().to_vec())
    }
    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        self.handled = u64::from_le_bytes(state.try_into().map_err(|_| "8 bytes")?);
        Ok(())
    }
}

fn actor(storage: &MemoryJournalStorage, id: &str) -> Actor<Scheduler> {
    let mut actor = Actor::new(id, Scheduler::default());
    let facet = DurabilityFacet::new(storage.clone(), DurabilityConfig::default())
        .with_timer_store(storage.clone());
    actor.facets().attach(Box::new(facet)).expect("one facet");
    actor
}

fn message(id: &str, payload: &[u8]) -> MessageReceived {
    MessageReceived {
        message_id: id.into(),
        payload: payload.to_vec(),
        ..MessageReceived::default()
    }
}

async fn timers_journaled(storage: &MemoryJournalStorage, actor: &str) -> Vec<TimerScheduled> {
    storage
        .replay_from(actor, 1)
        .await
        .expect("replays")
        .into_iter()
        .filter_map(|e| match e.entry {
            Some(Entry::TimerScheduled(t)) => Some(t),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn completed_messages_index_their_timers_and_failed_ones_drop_them() {
    let storage = MemoryJournalStorage::new();
    let mut a = actor(&storage, "a");
    let Delivery::Replied(id) = a.send(message("m-1", b"ok")).await.expect("sent") else {
        panic!("replied");
    };
    let id = String::from_utf8(id).expect("utf-8");
    assert_eq!(id, timer_id("a", "m-1", 0));
    let indexed = storage
        .get_timer(&id)
        .await
        .expect("read")
        .expect("indexed");
    assert_eq!(
        (indexed.owner_actor.as_str(), indexed.target_actor.as_str()),
        ("a", "a")
    );
    assert_eq!(indexed.target_type, "scheduler");

    let failed = a.send(message("m-2", b"fail")).await.expect("sent");
    assert!(matches!(failed, Delivery::Failed(_)));
    let dropped = timer_id("a", "m-2", 0);
    assert!(storage.get_timer(&dropped).await.expect("read").is_none());
    assert_eq!(timers_journaled(&storage, "a").await.len(), 2);

    // Recovery replays both messages without journaling their timers again.
    let highest = storage.highest_sequence("a").await.expect("read");
    let mut again = actor(&storage, "a");
    again.activate().await.expect("recovers");
    assert_eq!(again.behavior().handled, 1);
    assert_eq!(storage.highest_sequence("a").await.expect("read"), highest);
    assert!(storage.get_timer(&dropped).await.expect("read").is_none());
}

#[tokio::test]
async fn recovery_indexes_the_timers_of_an_interrupted_message() {
    let storage = MemoryJournalStorage::new();
    // The process died after journaling the timer, before indexing it.
    let id = timer_id("b", "m-1", 0);
    let due = prost_types::Timestamp {
        seconds: 4_000_000_000,
        nanos: 0,
    };
    let recorded = TimerScheduled {
        timer_id: id.clone(),
        target_actor_type: "scheduler".into(),
        message_type: "Tick".into(),
        due_at: Some(due),
        delay: Some(prost_types::Duration {
            seconds: 60,
            nanos: 0,
        }),
        ..TimerScheduled::default()
    };
    storage
        .append_batch(&[
            JournalEntry::new("b", 1, Entry::MessageReceived(message("m-1", b"ok"))),
            JournalEntry::new("b", 2, Entry::TimerScheduled(recorded)),
        ])
        .await
        .expect("appends");
    let mut b = actor(&storage, "b");
    b.activate().await.expect("recovers");
    let indexed = storage
        .get_timer(&id)
        .await
        .expect("read")
        .expect("indexed");
    // The recorded due time, not a new one.
    assert_eq!(indexed.due_at_ms, 4_000_000_000_000);
    let kinds: Vec<_> = storage
        .replay_from("b", 1)
        .await
        .expect("replays")
        .iter()
        .map(JournalEntry::kind)
        .collect();
    assert_eq!(
        kinds,
        ["message_received", "timer_scheduled", "message_processed"]
    );
}

#[tokio::test]
async fn replay_asking_for_a_timer_the_journal_lacks_diverges() {
    let storage = MemoryJournalStorage::new();
    storage
        .append_batch(&[
            JournalEntry::new("c", 1, Entry::MessageReceived(message("m-1", b"ok"))),
            JournalEntry::new(
                "c",
                2,
                Entry::message_processed(
                    "m-1",
                    journal_core::ProcessingResult::Success,
                    "",
                    Vec::new(),
                ),
            ),
        ])
        .await
        .expect("appends");
    let mut c = actor(&storage, "c");
    let error = c.activate().await.expect_err("diverges");
    assert!(
        matches!(&error, JournalError::ReplayDivergence { requested, .. } if requested.starts_with("timer scheduled")),
        "{error:?}"
    );
}
