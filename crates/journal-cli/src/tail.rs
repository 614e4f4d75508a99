//! `journal tail URL [ACTOR] [--tag T]`: follows an actor's journal, or the
//! feed over every actor (or one tag), live, like `tail -f`, until
//! interrupted.

use futures::StreamExt;
use journal_core::feed::{follow_feed, FeedFilter, FeedOffset, FeedOptions};
use journal_core::subscribe::{follow, SubscribeOptions};

use crate::backend::{self, Access, Failure};
use crate::output::{self, Printer};
use crate::Outcome;

/// Entries of an actor shown before following when no `--from` is given,
/// as `tail`.
const LAST: u64 = 10;

/// `journal tail`'s arguments.
#[derive(clap::Args)]
pub struct TailArgs {
    /// The journal's URL.
    url: String,
    /// The actor followed; without it, the feed over every actor.
    actor: Option<String>,
    /// Only entries tagged with this (the feed; not with ACTOR).
    #[arg(long, conflicts_with = "actor")]
    tag: Option<String>,
    /// Where to start: with ACTOR, the first sequence shown (default: its
    /// last 10 entries); for the feed, the offset to resume after (as an
    /// earlier `--json` line gave it; default: the feed's start).
    #[arg(long)]
    from: Option<String>,
    /// One JSON object per line (the feed's carry their `offset`).
    #[arg(long)]
    json: bool,
}

/// `journal tail URL [ACTOR] [--tag T] [--from N|OFFSET] [--json]`: the
/// entries from there, then each new one as it is appended, one line (or
/// JSON object) per entry, until interrupted (Ctrl-C) or the reader goes
/// away. Entries of an actor truncated or deleted before they were shown
/// end it with exit status 1.
pub async fn run(args: TailArgs) -> Result<Outcome, Failure> {
    let journal = backend::open(&args.url, Access::Read).await?;
    let mut out = Printer::eager();
    let store = &*journal.store;
    let mut entries = if let Some(actor) = args.actor.as_deref() {
        let from = if let Some(text) = args.from.as_deref() {
            text.parse::<u64>().map_err(|_| {
                Failure::new(format!("--from with an actor is a sequence, got {text:?}"))
            })?
        } else {
            let highest = journal.storage.highest_sequence(actor).await?;
            highest.saturating_sub(LAST - 1).max(1)
        };
        follow(store, actor, from, SubscribeOptions::default())
            .map(|item| item.map(|entry| (None, entry)))
            .boxed()
    } else {
        let filter = args.tag.clone().map_or(FeedFilter::All, FeedFilter::Tag);
        let after = args
            .from
            .clone()
            .map_or_else(FeedOffset::start, FeedOffset::new);
        follow_feed(store, filter, after, FeedOptions::default())
            .map(|item| item.map(|item| (Some(item.offset), item.entry)))
            .boxed()
    };
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    let outcome = loop {
        tokio::select! {
            _ = &mut interrupted => break Outcome::Ok,
            next = entries.next() => match next {
                Some(Ok((offset, entry))) => {
                    if args.json {
                        let mut object = output::entry_json(&entry);
                        if let (Some(offset), Some(fields)) = (offset, object.as_object_mut()) {
                            fields.insert("offset".into(), offset.as_str().into());
                        }
                        out.line(object)?;
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
    };
    drop(entries);
    out.flush()?;
    journal.close().await;
    Ok(outcome)
}
