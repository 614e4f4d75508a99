//! The workload runner's workloads, over any [`JournalStorage`](journal_core::JournalStorage), each beside
//! a raw baseline doing the same I/O in the same run.
//!
//! `cargo xtask bench [--backend NAME]` runs them and prints, writes JSON and
//! draws an SVG chart under `target/bench/`.

pub mod actor_system;
pub mod alloc;
pub mod baselines;
pub mod event_sourced;
pub mod group_commit;
pub mod postgres;
pub mod report;
pub mod subscribe;
pub mod workloads;

use async_trait::async_trait;
use journal_core::JournalEntry;

/// The same I/O as a backend, done directly with its driver: what the
/// journal's figures are compared with.
#[async_trait]
pub trait Baseline: Send + Sync {
    /// What the baseline does, for the report.
    fn describe(&self) -> String;
    /// Stores one entry the plainest way (one commit).
    async fn append(&self, entry: &JournalEntry);
    /// Reads and decodes every entry of `actor_id`; returns how many.
    async fn replay(&self, actor_id: &str) -> usize;
    /// How [`Baseline::append_many`] commits, for the report.
    fn batch_shape(&self) -> String {
        "one row per commit".into()
    }
    /// Stores entries, in order, as fast as the driver allows (setup of
    /// read workloads, and the batch figure); they may be of several actors,
    /// taking turns. By default one by one.
    async fn append_many(&self, entries: &[JournalEntry]) {
        for e in entries {
            self.append(e).await;
        }
    }
}

/// Whether more or less is better for a figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    /// Throughputs, ratios of compression savings.
    Higher,
    /// Latencies, sizes, memory.
    Lower,
}

/// One measured figure and its baseline from the same run.
#[derive(Debug, Clone)]
pub struct Figure {
    /// What was measured.
    pub name: String,
    /// The journal's value.
    pub value: f64,
    /// Its unit.
    pub unit: &'static str,
    /// The baseline's value, in the same unit.
    pub baseline: f64,
    /// What the baseline is.
    pub baseline_name: String,
    /// Which direction is better.
    pub better: Better,
    /// The target, as text (empty when none).
    pub target: String,
    /// Whether the target holds (`None` when there is none).
    pub met: Option<bool>,
}

impl Figure {
    /// `value / baseline`.
    pub fn ratio(&self) -> f64 {
        if self.baseline == 0.0 {
            f64::NAN
        } else {
            self.value / self.baseline
        }
    }
}
