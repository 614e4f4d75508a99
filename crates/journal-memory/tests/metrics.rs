//! The metrics every backend and the durability facet record, read back
//! through a recorder installed for this thread.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use journal_core::journal_entry::Entry;
use journal_core::{
    Actor, DurabilityConfig, DurabilityFacet, DurableActor, ExecutionContext, HandlerResult,
    JournalEntry, JournalStorage, MessageReceived,
};
use journal_memory::MemoryJournalStorage;
use metrics::{
    Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};

/// Values by `name{label=value,...}`.
#[derive(Default)]
struct Captured {
    counters: Mutex<BTreeMap<String, Arc<AtomicU64>>>,
    histograms: Mutex<BTreeMap<String, Arc<Samples>>>,
}

#[derive(Default)]
struct Samples(Mutex<Vec<f64>>);

impl HistogramFn for Samples {
    fn record(&self, value: f64) {
        self.0.lock().expect("not poisoned").push(value);
    }
}

fn name(key: &Key) -> String {
    let mut labels: Vec<String> = key
        .labels()
        .map(|l| format!("{}={}", l.key(), l.value()))
        .collect();
    labels.sort();
    format!("{}{{{}}}", key.name(), labels.join(","))
}

#[derive(Clone, Default)]
struct Test(Arc<Captured>);

impl Recorder for Test {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let counter = Arc::clone(
            self.0
                .counters
                .lock()
                .expect("not poisoned")
                .entry(name(key))
                .or_default(),
        );
        Counter::from_arc(counter)
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        let samples = Arc::clone(
            self.0
                .histograms
                .lock()
                .expect("not poisoned")
                .entry(name(key))
                .or_default(),
        );
        Histogram::from_arc(samples)
    }
}

impl Test {
    fn counter(&self, key: &str) -> u64 {
        self.0
            .counters
            .lock()
            .expect("not poisoned")
            .get(key)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }
    fn samples(&self, key: &str) -> Vec<f64> {
        self.0
            .histograms
            .lock()
            .expect("not poisoned")
            .get(key)
            .map_or_else(Vec::new, |h| h.0.lock().expect("not poisoned").clone())
    }
}

/// Counts its messages.
#[derive(Default)]
struct Tally(u64);

#[async_trait]
impl DurableActor for Tally {
    async fn handle(&mut self, _: &MessageReceived, _: &mut ExecutionContext) -> HandlerResult {
        self.0 += 1;
        Ok(self.0.to_le_bytes().to_vec())
    }
    fn snapshot(&self) -> Result<Vec<u8>, String> {
        Ok(vec![0; 4096])
    }
    fn restore(&mut self, _: &[u8]) -> Result<(), String> {
        Ok(())
    }
}

#[test]
fn appends_reads_recoveries_and_checkpoints_are_measured() {
    let recorder = Test::default();
    let _guard = metrics::set_default_local_recorder(&recorder);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(async {
            let storage = MemoryJournalStorage::new();
            let entry = |s: u64| {
                JournalEntry::new(
                    "m",
                    s,
                    Entry::message_received(format!("m{s}"), "T", vec![]),
                )
            };
            storage.append_entry(&entry(1)).await.expect("append");
            storage
                .append_batch(&[entry(2), entry(3)])
                .await
                .expect("batch");
            assert!(storage.append_entry(&entry(2)).await.is_err(), "a conflict");
            storage.replay_range("m", 1, 3, 10).await.expect("read");

            let config = DurabilityConfig {
                checkpoint_interval: 2,
                ..DurabilityConfig::default()
            };
            let mut actor = Actor::new("tally", Tally::default());
            actor
                .facets()
                .attach(Box::new(DurabilityFacet::new(storage.clone(), config)))
                .expect("facet");
            for i in 0..3 {
                actor
                    .send(MessageReceived {
                        message_id: format!("t{i}"),
                        ..MessageReceived::default()
                    })
                    .await
                    .expect("send");
            }
        });
    assert!(recorder.counter("journal_appends_total{backend=memory,outcome=ok}") >= 2);
    assert_eq!(
        recorder.counter("journal_appends_total{backend=memory,outcome=sequence_conflict}"),
        1
    );
    assert!(recorder.counter("journal_appended_entries_total{backend=memory}") >= 3);
    assert!(!recorder
        .samples("journal_append_seconds{backend=memory}")
        .is_empty());
    assert!(recorder.counter("journal_replayed_entries_total{backend=memory}") >= 3);
    assert_eq!(
        recorder.counter("journal_recoveries_total{backend=memory,outcome=ok}"),
        1
    );
    assert_eq!(
        recorder
            .samples("journal_recovery_seconds{backend=memory}")
            .len(),
        1
    );
    let raw = recorder.samples("journal_checkpoint_bytes{form=raw}");
    let stored = recorder.samples("journal_checkpoint_bytes{form=stored}");
    assert!(
        !raw.is_empty() && raw.len() == stored.len(),
        "{raw:?} {stored:?}"
    );
    assert!(
        stored[0] < raw[0],
        "zstd made the zeros smaller: {raw:?} {stored:?}"
    );
}
