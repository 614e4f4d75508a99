//! `journal tail URL ACTOR`: follows an actor's journal live, like
//! `tail -f`, until interrupted.

use futures::StreamExt;
use journal_core::subscribe::{follow, SubscribeOptions};

use crate::backend::{self, Access, Failure};
use crate::output::{self, Printer};
use crate::Outcome;

/// Entries shown before following when no `--from` is given, as `tail`.
const LAST: u64 = 10;

/// `journal tail`'s arguments.
#[derive(Debug, clap::Args)]
pub struct TailArgs {
    /// The journal's URL.
    url: String,
    /// The actor followed.
    actor: String,
    /// The first sequence shown (default: the last 10 entries).
    #[arg(long)]
    from: Option<u64>,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
}

/// `journal tail URL ACTOR [--from N] [--json]`: the actor's entries from
/// `N`, then each new one as it is appended, one line (or JSON object) per
/// entry, until interrupted (Ctrl-C), the reader goes away, or entries are
/// truncated or deleted before they were shown (reported, exit 1).
pub async fn run(args: TailArgs) -> Result<Outcome, Failure> {
    let journal = backend::open(&args.url, Access::Read).await?;
    let from = if let Some(from) = args.from {
        from
    } else {
        let highest = journal.storage.highest_sequence(&args.actor).await?;
        highest.saturating_sub(LAST - 1).max(1)
    };
    let mut out = Printer::eager();
    let outcome = {
        let mut entries = follow(
            &*journal.store,
            &args.actor,
            from,
            SubscribeOptions::default(),
        );
        let interrupted = tokio::signal::ctrl_c();
        tokio::pin!(interrupted);
        loop {
            tokio::select! {
                _ = &mut interrupted => break Outcome::Ok,
                next = entries.next() => match next {
                    Some(Ok(entry)) => {
                        if args.json {
                            out.line(output::entry_json(&entry))?;
                        } else {
                            out.line(output::entry_line(&entry))?;
                        }
                        if out.closed() {
                            break Outcome::Ok;
                        }
                    }
                    Some(Err(e)) => {
                        eprintln!("journal tail: {e}");
                        break Outcome::Problems;
                    }
                    None => break Outcome::Ok,
                },
            }
        }
    };
    out.flush()?;
    journal.close().await;
    Ok(outcome)
}
