//! Helper of the projection kill test (`tests/projection_kill.rs`), not a
//! user tool: runs an exactly-once projection of every entry of the journal
//! in SCHEMA, into the table `SCHEMA.projected (actor_id, sequence)`, until
//! the stored offset reaches the feed's end, then exits 0. At the PAUSE-th
//! batch (0: never) it prints `between` once the batch's rows are written,
//! before its offset is and before the transaction commits, and waits for
//! a line on stdin: the test kills it there.
//!
//! usage: journal-postgres-projection-child URL SCHEMA PAUSE

use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use journal_core::feed::{FeedFilter, FeedOffset, JournalFeed};
use journal_core::projection::{Projection, ProjectionStore};
use journal_postgres::{PostgresJournalStorage, PostgresOptions};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(url), Some(schema), Some(pause)) = (args.first(), args.get(1), args.get(2)) else {
        eprintln!("usage: journal-postgres-projection-child URL SCHEMA PAUSE");
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
    match runtime.block_on(project(url, schema, pause)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("projection child: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn project(url: &str, schema: &str, pause: usize) -> Result<(), Box<dyn std::error::Error>> {
    let options = PostgresOptions {
        schema: schema.to_owned(),
        pool_size: 2,
        ..PostgresOptions::default()
    };
    let storage = PostgresJournalStorage::open(url, options).await?;
    let mut end = FeedOffset::start();
    loop {
        let page = storage.read_feed(&FeedFilter::All, &end, 500).await?;
        let Some(last) = page.last() else { break };
        end = last.offset.clone();
    }
    let mut projection = Projection::new("kill-exact");
    projection.batch = 7;
    projection.feed.poll_interval = Duration::from_millis(20);
    let insert = format!("INSERT INTO {schema}.projected (actor_id, sequence) VALUES ($1, $2)");
    let batches = Arc::new(AtomicUsize::new(0));
    let apply = journal_postgres::apply_step(move |tx, batch| {
        let (insert, batches) = (insert.clone(), Arc::clone(&batches));
        Box::pin(async move {
            for item in batch {
                let sequence = i64::try_from(item.entry.sequence)?;
                tx.execute(&insert, &[&item.entry.actor_id, &sequence])
                    .await?;
            }
            if batches.fetch_add(1, Ordering::SeqCst) + 1 == pause {
                println!("between");
                std::io::stdout().flush()?;
                let mut line = String::new();
                std::io::stdin().lock().read_line(&mut line)?;
            }
            Ok(())
        })
    });
    let run = storage.run_projection_in_transaction(&projection, apply);
    let done = async {
        loop {
            if storage.load_offset(&projection.name).await? == Some(end.clone()) {
                return Ok::<(), journal_core::JournalError>(());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::select! {
        ended = run => ended?,
        caught_up = done => caught_up?,
    }
    Ok(())
}
