//! Helper of the crash test (`tests/crash.rs`), not a user tool: appends to
//! one actor in a loop and prints `ack N` after each acknowledged append,
//! until it is killed or has made `LIMIT` appends.
//!
//! usage: journal-sqlite-crash-child DB_PATH ACTOR_ID

use std::io::Write;
use std::process::ExitCode;

use journal_core::journal_entry::Entry;
use journal_core::{JournalEntry, JournalStorage};
use journal_sqlite::{SqliteJournalStorage, SqliteOptions};

const LIMIT: u64 = 20_000;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(path), Some(actor)) = (args.next(), args.next()) else {
        eprintln!("usage: journal-sqlite-crash-child DB_PATH ACTOR_ID");
        return ExitCode::from(2);
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(append_forever(&path, &actor)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("crash child: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn append_forever(path: &str, actor: &str) -> Result<(), Box<dyn std::error::Error>> {
    // Entries are indexed every few appends, so that kills also land in
    // the middle of an indexing.
    let options = SqliteOptions {
        compact_after: 8,
        ..SqliteOptions::default()
    };
    let storage = SqliteJournalStorage::open(path, options).await?;
    let mut next = storage.highest_sequence(actor).await? + 1;
    let stdout = std::io::stdout();
    for round in 0..LIMIT {
        let entry = |seq: u64| {
            JournalEntry::new(
                actor,
                seq,
                Entry::message_received(format!("m-{seq}"), "Crash", vec![7; 200]),
            )
        };
        let last = if round % 5 == 4 {
            let batch: Vec<_> = (next..next + 3).map(entry).collect();
            storage.append_batch(&batch).await?;
            next + 2
        } else {
            storage.append_entry(&entry(next)).await?;
            next
        };
        let mut out = stdout.lock();
        writeln!(out, "ack {last}")?;
        out.flush()?;
        next = last + 1;
    }
    Ok(())
}
