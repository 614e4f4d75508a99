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

/// A timer index that notes, for each timer put in or taken out, whether
/// the journal already held what scheduled or cancelled it.
#[derive(Clone)]
struct JournalFirst {
    storage: MemoryJournalStorage,
    seen: std::sync::Arc<std::sync::Mutex<Vec<(String, bool)>>>,
}

impl JournalFirst {
    async fn note(&self, what: &str, owner: &str, timer_id: &str) {
        let journaled = self
            .storage
            .replay_from(owner, 1)
            .await
            .expect("replays")
            .into_iter()
            .any(|e| match e.entry {
                Some(Entry::TimerScheduled(t)) => what == "schedule" && t.timer_id == timer_id,
                Some(Entry::TimerCancelled(c)) => what == "cancel" && c.timer_id == timer_id,
                _ => false,
            });
        self.seen
            .lock()
            .expect("not poisoned")
            .push((what.to_owned(), journaled));
    }
}

#[async_trait]
impl TimerStore for JournalFirst {
    async fn schedule_timer(
        &self,
        timer: &journal_core::TimerRecord,
    ) -> journal_core::JournalResult<()> {
        self.note("schedule", &timer.owner_actor, &timer.timer_id)
            .await;
        self.storage.schedule_timer(timer).await
    }
    async fn cancel_timer(&self, timer_id: &str, now_ms: u64) -> journal_core::JournalResult<bool> {
        self.note("cancel", "batched", timer_id).await;
        self.storage.cancel_timer(timer_id, now_ms).await
    }
    async fn claim_due_timers(
        &self,
        now_ms: u64,
        lease: std::time::Duration,
        claim: &str,
        max: usize,
    ) -> journal_core::JournalResult<Vec<journal_core::ClaimedTimer>> {
        self.storage
            .claim_due_timers(now_ms, lease, claim, max)
            .await
    }
    async fn complete_timer(
        &self,
        timer_id: &str,
        claim: &str,
    ) -> journal_core::JournalResult<bool> {
        self.storage.complete_timer(timer_id, claim).await
    }
    async fn next_due(&self, now_ms: u64) -> journal_core::JournalResult<Option<u64>> {
        self.storage.next_due(now_ms).await
    }
    async fn get_timer(
        &self,
        timer_id: &str,
    ) -> journal_core::JournalResult<Option<journal_core::TimerRecord>> {
        self.storage.get_timer(timer_id).await
    }
}

/// Schedules a timer, or cancels the one it scheduled last.
#[derive(Default)]
struct Canceller {
    last: Option<String>,
}

#[async_trait]
impl DurableActor for Canceller {
    async fn handle(&mut self, m: &MessageReceived, ctx: &mut ExecutionContext) -> HandlerResult {
        if m.payload == b"cancel" {
            if let Some(id) = self.last.take() {
                ctx.cancel_timer(&id).await?;
            }
        } else {
            let id = ctx
                .schedule_timer(TimerScheduled {
                    target_actor_type: "canceller".into(),
                    message_type: "Tick".into(),
                    delay: Some(prost_types::Duration {
                        seconds: 60,
                        nanos: 0,
                    }),
                    ..TimerScheduled::default()
                })
                .await?;
            self.last = Some(id);
        }
        Ok(Vec::new())
    }
    fn snapshot(&self) -> Result<Vec<u8>, String> {
        Ok(self.last.clone().unwrap_or_default().into_bytes())
    }
    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        let last = String::from_utf8(state.to_vec()).map_err(|e| e.to_string())?;
        self.last = Some(last).filter(|l| !l.is_empty());
        Ok(())
    }
}

/// With batched writes, a message's timers still go into (and out of) the
/// index only once the journal holds what scheduled (or cancelled) them: a
/// message whose entries never reached the journal leaves no timer behind,
/// and none it cancelled is lost.
#[tokio::test]
async fn batched_writes_journal_a_timer_before_the_index_hears_of_it() {
    let storage = MemoryJournalStorage::new();
    let index = JournalFirst {
        storage: storage.clone(),
        seen: std::sync::Arc::default(),
    };
    let config = DurabilityConfig {
        batch_journal_writes: true,
        ..DurabilityConfig::default()
    };
    let mut actor = Actor::new("batched", Canceller::default());
    let facet = DurabilityFacet::new(storage.clone(), config).with_timer_store(index.clone());
    actor.facets().attach(Box::new(facet)).expect("one facet");
    actor.activate().await.expect("activates");
    for (id, payload) in [("m-1", &b"schedule"[..]), ("m-2", b"cancel")] {
        assert!(matches!(
            actor.send(message(id, payload)).await.expect("handled"),
            Delivery::Replied(_)
        ));
    }
    assert_eq!(
        *index.seen.lock().expect("not poisoned"),
        vec![("schedule".to_owned(), true), ("cancel".to_owned(), true)]
    );
    // Two appends a message: its beginning with the timer, then its end.
    assert_eq!(storage.highest_sequence("batched").await.expect("reads"), 6);
}

/// Calls an effect, then (from its second version on) schedules a timer.
struct Pinger {
    schedules: bool,
}

#[async_trait]
impl DurableActor for Pinger {
    async fn handle(&mut self, _: &MessageReceived, ctx: &mut ExecutionContext) -> HandlerResult {
        ctx.side_effect("ping", || async { Ok::<_, String>(b"pong".to_vec()) })
            .await??;
        if self.schedules {
            ctx.schedule_timer(TimerScheduled {
                target_actor_type: "pinger".into(),
                message_type: "Tick".into(),
                delay: Some(prost_types::Duration {
                    seconds: 60,
                    nanos: 0,
                }),
                ..TimerScheduled::default()
            })
            .await?;
        }
        Ok(Vec::new())
    }
    fn snapshot(&self) -> Result<Vec<u8>, String> {
        Ok(Vec::new())
    }
    fn restore(&mut self, _: &[u8]) -> Result<(), String> {
        Ok(())
    }
}

/// With `cache_side_effects` off the effect runs again on replay; a timer
/// the completed message did not schedule is still a divergence, never a
/// new entry written into the journal during recovery.
#[tokio::test]
async fn a_timer_a_completed_message_lacks_diverges_also_without_cached_effects() {
    let storage = MemoryJournalStorage::new();
    let config = DurabilityConfig {
        cache_side_effects: false,
        checkpoint_interval: 0,
        ..DurabilityConfig::default()
    };
    let pinger = |schedules: bool| {
        let mut actor = Actor::new("pinger", Pinger { schedules });
        let facet =
            DurabilityFacet::new(storage.clone(), config.clone()).with_timer_store(storage.clone());
        actor.facets().attach(Box::new(facet)).expect("one facet");
        actor
    };
    let mut first = pinger(false);
    first.send(message("m1", b"")).await.expect("handled");
    drop(first);
    let highest = storage.highest_sequence("pinger").await.expect("reads");
    let mut changed = pinger(true);
    assert!(matches!(
        changed.activate().await,
        Err(JournalError::ReplayDivergence { .. })
    ));
    assert_eq!(
        storage.highest_sequence("pinger").await.expect("reads"),
        highest
    );
}
