//! What an operator sees at `info`: a summary of each recovery, and a
//! warning when a side effect may run a second time after a crash.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use journal_core::journal_entry::Entry;
use journal_core::{
    Actor, DurabilityConfig, DurabilityFacet, DurableActor, ExecutionContext, HandlerResult,
    JournalEntry, JournalStorage, MessageReceived,
};
use journal_memory::MemoryJournalStorage;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// Every event at `info` or above: its level and fields as text.
#[derive(Clone, Default)]
struct Events(Arc<Mutex<Vec<(Level, String)>>>);

struct Text(String);

impl Visit for Text {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write as _;
        let _ = write!(self.0, "{}={value:?} ", field.name());
    }
}

impl Subscriber for Events {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        *metadata.level() <= Level::INFO
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut text = Text(String::new());
        event.record(&mut text);
        self.0
            .lock()
            .expect("not poisoned")
            .push((*event.metadata().level(), text.0));
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

/// Calls the bank once per message.
#[derive(Default)]
struct Payer;

#[async_trait]
impl DurableActor for Payer {
    async fn handle(&mut self, _: &MessageReceived, ctx: &mut ExecutionContext) -> HandlerResult {
        let receipt = ctx
            .side_effect_with("bank.pay", b"10 to bob", || async {
                Ok::<_, String>(b"paid".to_vec())
            })
            .await??;
        Ok(receipt)
    }
    fn snapshot(&self) -> Result<Vec<u8>, String> {
        Ok(Vec::new())
    }
    fn restore(&mut self, _: &[u8]) -> Result<(), String> {
        Ok(())
    }
}

#[test]
fn recovery_is_summarised_and_a_possible_second_run_is_a_warning() {
    let events = Events::default();
    let seen = events.clone();
    tracing::subscriber::with_default(events, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(async {
                let storage = MemoryJournalStorage::new();
                // A crash after the message was journaled, before the
                // effect's result was.
                storage
                    .append_entry(&JournalEntry::new(
                        "payer-1",
                        1,
                        Entry::message_received("m-1", "Pay", b"10".to_vec()),
                    ))
                    .await
                    .expect("append");
                let mut actor = Actor::new("payer-1", Payer);
                actor
                    .facets()
                    .attach(Box::new(DurabilityFacet::new(
                        storage,
                        DurabilityConfig::default(),
                    )))
                    .expect("facet");
                actor.activate().await.expect("recovers");
            });
    });
    let events = seen.0.lock().expect("not poisoned").clone();
    let warning = events
        .iter()
        .find(|(level, _)| *level == Level::WARN)
        .unwrap_or_else(|| panic!("a warning: {events:?}"));
    assert!(warning.1.contains("may run a second time"), "{warning:?}");
    assert!(
        warning.1.contains("payer-1") && warning.1.contains("bank.pay"),
        "{warning:?}"
    );
    let summary = events
        .iter()
        .find(|(level, text)| *level == Level::INFO && text.contains("actor recovered"))
        .unwrap_or_else(|| panic!("a recovery summary: {events:?}"));
    assert!(summary.1.contains("actor_id=\"payer-1\""), "{summary:?}");
    assert!(
        summary.1.contains("completed_interrupted_message=true"),
        "{summary:?}"
    );
}
