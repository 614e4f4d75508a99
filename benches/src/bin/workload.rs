//! The workload runner: `cargo xtask bench [--backend NAME]`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use journal_benches::workloads::{self, Sizes};
use journal_benches::{alloc::Counting, report, Baseline, Figure};
use journal_core::{JournalEntry, JournalStorage};
use journal_memory::MemoryJournalStorage;

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const BACKENDS: &[&str] = &["memory"];

/// The memory baseline: a map of vectors behind one mutex, no validation,
/// no trait object, no async storage layer.
#[derive(Default)]
struct RawMemory(Mutex<std::collections::HashMap<String, Vec<JournalEntry>>>);

#[async_trait]
impl Baseline for RawMemory {
    fn describe(&self) -> String {
        "Mutex<HashMap<actor, Vec<entry>>>".into()
    }
    async fn append(&self, entry: &JournalEntry) {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        map.entry(entry.actor_id.clone())
            .or_default()
            .push(entry.clone());
    }
    async fn replay(&self, actor_id: &str) -> usize {
        let map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(actor_id).map_or(0, |entries| entries.clone().len())
    }
}

/// Marks each figure against the memory backend's targets.
fn memory_targets(figures: &mut [Figure]) {
    for f in figures {
        let (target, met) = match f.name.as_str() {
            "append latency p50" => ("<= 2 us", f.value <= 2.0),
            n if n.starts_with("replay of") => (">= 1,000,000/s", f.value >= 1_000_000.0),
            n if n.starts_with("recovery of") => (">= 100x faster", f.ratio() <= 0.01),
            n if n.starts_with("checkpoint size") => ("<= 10% of raw", f.ratio() <= 0.10),
            n if n.starts_with("peak memory") => ("< 64 MiB", f.value < 64.0),
            _ => continue,
        };
        f.target = target.into();
        f.met = Some(met);
    }
}

async fn run_memory() -> Vec<Figure> {
    let sizes = Sizes::FULL;
    let storage: Arc<dyn JournalStorage> = Arc::new(MemoryJournalStorage::new());
    let baseline: Arc<dyn Baseline> = Arc::new(RawMemory::default());
    let mut figures = workloads::append_latency(&*storage, &*baseline, sizes.latency_appends).await;
    for actors in [1, 16, 256] {
        figures.push(
            workloads::throughput(
                Arc::clone(&storage),
                Arc::clone(&baseline),
                actors,
                sizes.throughput_appends,
            )
            .await,
        );
    }
    figures.push(workloads::replay_rate(&*storage, &*baseline, sizes.replay_entries).await);
    figures.push(workloads::recovery(Arc::clone(&storage), sizes.recovery_entries).await);
    figures.push(workloads::checkpoint_size());
    // A store of its own, so the other workloads' journals are not counted.
    let fresh = MemoryJournalStorage::new();
    figures.push(workloads::stream_memory(&fresh, sizes.stream_entries).await);
    memory_targets(&mut figures);
    figures
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: workload [--backend {}] [--out DIR]",
        BACKENDS.join("|")
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut backends: Vec<String> = BACKENDS.iter().map(|b| (*b).to_owned()).collect();
    let mut out = PathBuf::from("target/bench");
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--backend", Some(name)) if BACKENDS.contains(&name.as_str()) => backends = vec![name],
            ("--backend", Some(name)) => {
                eprintln!(
                    "workload: unknown backend {name:?}; known: {}",
                    BACKENDS.join(", ")
                );
                return ExitCode::from(2);
            }
            ("--out", Some(dir)) => out = PathBuf::from(dir),
            _ => return usage(),
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("workload: no tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    for backend in backends {
        let figures = match backend.as_str() {
            "memory" => runtime.block_on(run_memory()),
            _ => unreachable!("checked above"),
        };
        print!("{}", report::table(&backend, &figures));
        if let Err(e) = report::write(&out, &backend, now, &figures) {
            eprintln!("workload: cannot write under {}: {e}", out.display());
            return ExitCode::FAILURE;
        }
        println!(
            "written: {0}/{backend}.json, {0}/{backend}.svg",
            out.display()
        );
    }
    ExitCode::SUCCESS
}
