//! Helper of the projection kill test (`tests/projection.rs`), not a user
//! tool: runs a projection of every entry of the journal at DB_PATH until
//! the stored offset reaches the feed's end, then exits 0.
//!
//! `exact`: exactly-once, into the table `projected (actor_id, sequence)`
//! of the same file, in the transaction that stores the offset.
//! `atleast`: at-least-once, lines `actor_id sequence` appended to OUT.
//! In both, at the PAUSE-th batch (0: never) it prints `between` once the
//! batch's effect is written and before its offset is, and waits for a
//! line on stdin: the test kills it there.
//!
//! usage: `journal-sqlite-projection-child DB_PATH exact|atleast PAUSE [OUT]`

use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use journal_core::feed::{FeedFilter, FeedItem, FeedOffset, JournalFeed};
use journal_core::projection::{Projection, ProjectionStore};
use journal_sqlite::SqliteJournalStorage;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(path), Some(mode), Some(pause)) = (args.first(), args.get(1), args.get(2)) else {
        eprintln!("usage: journal-sqlite-projection-child DB_PATH exact|atleast PAUSE [OUT]");
        return ExitCode::from(2);
    };
    let Ok(pause) = pause.parse::<usize>() else {
        eprintln!("PAUSE: a number");
        return ExitCode::from(2);
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let out = args.get(3).cloned();
    match runtime.block_on(project(path, mode, pause, out)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("projection child: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Prints `between` and waits for stdin (the test kills the process).
fn pause_here() {
    println!("between");
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
}

async fn project(
    path: &str,
    mode: &str,
    pause: usize,
    out: Option<String>,
) -> Result<(), Box<dyn std::error::Error>> {
    let storage = SqliteJournalStorage::new(path).await?;
    // Where the feed ends: the projection is done once its offset is there.
    let mut end = FeedOffset::start();
    loop {
        let page = storage.read_feed(&FeedFilter::All, &end, 500).await?;
        let Some(last) = page.last() else { break };
        end = last.offset.clone();
    }
    let mut projection = Projection::new(format!("kill-{mode}"));
    projection.batch = 7;
    projection.feed.poll_interval = Duration::from_millis(20);
    let batches = Arc::new(AtomicUsize::new(0));
    let run = async {
        if mode == "exact" {
            let batches = Arc::clone(&batches);
            storage
                    .run_projection_in_transaction(&projection, move |conn, batch: &[FeedItem]| {
                        conn.execute(
                            "CREATE TABLE IF NOT EXISTS projected (actor_id TEXT NOT NULL, sequence INTEGER NOT NULL)",
                            [],
                        )?;
                        for item in batch {
                            conn.execute(
                                "INSERT INTO projected (actor_id, sequence) VALUES (?1, ?2)",
                                rusqlite::params![item.entry.actor_id, i64::try_from(item.entry.sequence)?],
                            )?;
                        }
                        if batches.fetch_add(1, Ordering::SeqCst) + 1 == pause {
                            pause_here();
                        }
                        Ok(())
                    })
                    .await
        } else {
            let out = out.clone().unwrap_or_default();
            let batches = Arc::clone(&batches);
            projection
                .run(&storage, move |batch: Vec<FeedItem>| {
                    let result = (|| -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
                        let mut file = std::fs::OpenOptions::new()
                            .create(true)
                            .append(true)
                            .open(&out)?;
                        for item in &batch {
                            writeln!(file, "{} {}", item.entry.actor_id, item.entry.sequence)?;
                        }
                        file.flush()?;
                        Ok(())
                    })();
                    if result.is_ok() && batches.fetch_add(1, Ordering::SeqCst) + 1 == pause {
                        pause_here();
                    }
                    async move { result }
                })
                .await
        }
    };
    let done = async {
        loop {
            if storage.load_offset(&projection.name).await? == Some(end.clone()) {
                return Ok::<(), journal_core::JournalError>(());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    futures::pin_mut!(run, done);
    match futures::future::select(run, done).await {
        futures::future::Either::Left((ended, _)) => ended?,
        futures::future::Either::Right((caught_up, _)) => caught_up?,
    }
    Ok(())
}
