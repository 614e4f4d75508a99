//! The journal's metrics in Prometheus's text format: install a recorder
//! (here `metrics-exporter-prometheus`, rendering on demand; serve
//! `handle.render()` from your `/metrics` endpoint), describe the metrics
//! once, and every storage call and durable actor records into it.
//!
//! ```text
//! cargo run -p journal-memory --example prometheus
//! ```

use journal_core::journal_entry::Entry;
use journal_core::{JournalEntry, JournalError, JournalStorage};
use journal_memory::MemoryJournalStorage;
use metrics_exporter_prometheus::PrometheusBuilder;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), JournalError> {
    let handle = PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| JournalError::storage("prometheus", e))?;
    journal_core::metrics::describe();

    let storage = MemoryJournalStorage::new();
    for sequence in 1..=3 {
        let entry = JournalEntry::new(
            "order-1",
            sequence,
            Entry::message_received(format!("m-{sequence}"), "Step", vec![]),
        );
        storage.append_entry(&entry).await?;
    }
    // A stale writer: counted under outcome="sequence_conflict".
    let stale = JournalEntry::new("order-1", 2, Entry::message_received("m-x", "Step", vec![]));
    let _ = storage.append_entry(&stale).await;
    storage.replay_from("order-1", 1).await?;

    print!("{}", handle.render());
    Ok(())
}
