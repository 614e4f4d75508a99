//! The project's tracing promise, beyond the contract: every storage call
//! opens a span naming the backend and the actor, and the sequence where
//! the call has one. Not part of [`suite!`](crate::suite) (a backend of
//! your own need not use `tracing`); each built-in backend calls
//! [`storage_calls_carry_spans`] from its own tests.

use std::sync::{Arc, Mutex};

use futures::StreamExt as _;
use journal_core::{Checkpoint, JournalStorage};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

use crate::fixture::{entry, fresh_actor};

/// One span as opened: its name and its fields as `name=value ` text
/// (fields recorded later appended).
#[derive(Clone)]
struct Opened {
    name: &'static str,
    fields: String,
}

/// Records every span opened on the thread it is the default of.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Opened>>>);

impl Capture {
    fn count(&self) -> usize {
        self.0.lock().map_or(0, |spans| spans.len())
    }

    fn since(&self, start: usize) -> Vec<Opened> {
        self.0
            .lock()
            .map(|spans| spans.get(start..).unwrap_or_default().to_vec())
            .unwrap_or_default()
    }
}

struct Fields<'a>(&'a mut String);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        use std::fmt::Write as _;
        let _ = write!(self.0, "{}={value} ", field.name());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write as _;
        let _ = write!(self.0, "{}={value:?} ", field.name());
    }
}

impl Subscriber for Capture {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, attributes: &Attributes<'_>) -> Id {
        let mut fields = String::new();
        attributes.record(&mut Fields(&mut fields));
        let Ok(mut spans) = self.0.lock() else {
            return Id::from_u64(u64::MAX);
        };
        spans.push(Opened {
            name: attributes.metadata().name(),
            fields,
        });
        Id::from_u64(spans.len() as u64)
    }
    fn record(&self, id: &Id, values: &Record<'_>) {
        if let Ok(mut spans) = self.0.lock() {
            let index = usize::try_from(id.into_u64()).unwrap_or(usize::MAX);
            if let Some(span) = index.checked_sub(1).and_then(|i| spans.get_mut(i)) {
                values.record(&mut Fields(&mut span.fields));
            }
        }
    }
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, _: &Event<'_>) {}
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

/// Asserts that among `spans` one names `backend`, the actor (its id as
/// `actor_id`) and, when given, `sequence` (as the field `sequence`).
fn assert_named(call: &str, spans: &[Opened], backend: &str, actor: &str, sequence: Option<u64>) {
    let found = spans.iter().any(|span| {
        span.fields.contains(&format!("backend={backend} "))
            && (span.fields.contains(&format!("actor_id={actor} "))
                || span.fields.contains(&format!("actor_id={actor:?} ")))
            && sequence.is_none_or(|s| {
                span.fields.contains(&format!("sequence={s} "))
                    || span.fields.contains(&format!("sequence=Some({s}) "))
            })
    });
    let opened: Vec<String> = spans
        .iter()
        .map(|span| format!("{}({})", span.name, span.fields.trim_end()))
        .collect();
    assert!(
        found,
        "{call}: no span names backend {backend:?}, actor {actor:?}{}; spans opened: {opened:?}",
        sequence.map_or(String::new(), |s| format!(" and sequence {s}"))
    );
}

/// Every storage call opens a span with the backend's name and the actor
/// id (its `actor_id` field), and with the sequence (its `sequence` field)
/// for appends and checkpoints. Spans are seen on the thread that makes
/// the call, so the call's own span must be opened there (as
/// `#[tracing::instrument]` on the method does), not only on a task or
/// thread it hands the work to.
pub async fn storage_calls_carry_spans(storage: Arc<dyn JournalStorage>) {
    let capture = Capture::default();
    let _default = tracing::subscriber::set_default(capture.clone());
    let backend = storage.backend_name();
    let actor = fresh_actor("spans \"quoted\" ünï");

    macro_rules! call {
        ($name:literal, $sequence:expr, $call:expr) => {{
            let start = capture.count();
            let value = $call;
            assert_named($name, &capture.since(start), backend, &actor, $sequence);
            value
        }};
    }
    call!(
        "append_entry",
        Some(1),
        storage
            .append_entry(&entry(&actor, 1))
            .await
            .expect("append")
    );
    call!(
        "append_batch",
        Some(2),
        storage
            .append_batch(&[entry(&actor, 2), entry(&actor, 3)])
            .await
            .expect("batch")
    );
    call!(
        "highest_sequence",
        None,
        storage.highest_sequence(&actor).await.expect("highest")
    );
    let replayed = call!(
        "replay_from",
        None,
        storage.replay_from(&actor, 1).await.expect("replay")
    );
    assert_eq!(replayed.len(), 3);
    let streamed = call!(
        "replay_stream",
        None,
        storage.replay_stream(&actor, 1).collect::<Vec<_>>().await
    );
    assert_eq!(streamed.len(), 3);
    call!(
        "replay_range",
        None,
        storage.replay_range(&actor, 1, 2, 10).await.expect("range")
    );
    call!(
        "save_checkpoint",
        Some(2),
        storage
            .save_checkpoint(&Checkpoint::new(&actor, 2, b"state".to_vec()))
            .await
            .expect("checkpoint")
    );
    call!(
        "get_latest_checkpoint",
        None,
        storage
            .get_latest_checkpoint(&actor)
            .await
            .expect("checkpoint")
    );
    call!(
        "truncate_to",
        None,
        storage.truncate_to(&actor, 2).await.expect("truncate")
    );
}
