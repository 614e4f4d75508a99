//! `journal copy`: journals and checkpoints from one backend to another.
//!
//! Per actor, entries are appended to the destination in batches from its
//! highest sequence + 1, so a copy that stopped half-way continues where it
//! stopped, and a batch is all or nothing. Before continuing, the
//! destination's last entry must equal the source's at that sequence:
//! an actor whose journals differ is reported and left alone. Checkpoints
//! follow the entries. At the end every copied actor is compared entry by
//! entry and checkpoint by checkpoint.

use std::sync::Arc;

use futures::TryStreamExt;
use indicatif::ProgressBar;
use journal_core::{JournalError, JournalStorage};

use crate::backend::{self, known_actor, Access, Failure, Journal};
use crate::output::Printer;
use crate::output::{count, counted, progress};
use crate::Outcome;

/// `journal copy` options.
#[derive(clap::Args)]
pub struct CopyArgs {
    /// The journal to copy from.
    from: String,
    /// The journal to copy to (created when missing).
    to: String,
    /// Only this actor.
    #[arg(long)]
    actor: Option<String>,
    /// Entries per appended batch.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    batch: u64,
}

/// What copying one actor did.
#[derive(Debug, Default)]
struct Copied {
    entries: u64,
    checkpoints: u64,
}

/// One actor to copy, as both journals stood when the copy started.
#[derive(Debug)]
struct Plan {
    id: String,
    /// What is copied, and compared at the end (a live source may have
    /// grown since).
    source_highest: u64,
    destination_highest: u64,
}

/// `journal copy FROM TO`.
pub async fn run(args: CopyArgs) -> Result<Outcome, Failure> {
    let source = backend::open(&args.from, Access::Read).await?;
    let ids: Vec<String> = match &args.actor {
        Some(actor) => {
            known_actor(&source, actor).await?;
            vec![actor.clone()]
        }
        None => source.storage.list_actors().try_collect().await?,
    };
    let destination = backend::open(&args.to, Access::Write).await?;
    if source.same_store(&destination) {
        return Err(Failure::new(format!(
            "{} and {} are the same journal",
            source.shown, destination.shown
        )));
    }
    let mut plans = Vec::with_capacity(ids.len());
    for id in ids {
        plans.push(Plan {
            source_highest: source.storage.highest_sequence(&id).await?,
            destination_highest: destination.storage.highest_sequence(&id).await?,
            id,
        });
    }
    let total: u64 = plans
        .iter()
        .map(|p| p.source_highest.saturating_sub(p.destination_highest))
        .sum();
    let mut out = Printer::new();
    out.line(format_args!(
        "copying {} ({} to append) from {} to {}",
        counted(plans.len() as u64, "actor", "actors"),
        counted(total, "entry", "entries"),
        source.shown,
        destination.shown
    ))?;
    out.flush()?;
    let bar = progress(total, "copying");
    let batch = usize::try_from(args.batch).unwrap_or(500);
    let (mut problems, mut done, mut copied) = (Vec::new(), Vec::new(), Copied::default());
    for plan in &plans {
        match copy_actor(&source, &destination, plan, batch, &bar).await? {
            Ok(actor) => {
                copied.entries += actor.entries;
                copied.checkpoints += actor.checkpoints;
                done.push(plan);
            }
            Err(problem) => problems.push(format!("{}: {problem}", plan.id)),
        }
    }
    bar.finish_and_clear();
    out.line(format_args!(
        "copied {} and {}",
        counted(copied.entries, "entry", "entries"),
        counted(copied.checkpoints, "checkpoint", "checkpoints")
    ))?;
    let verify = progress(done.len() as u64, "verifying");
    for plan in &done {
        let (id, upto) = (&plan.id, plan.source_highest);
        if let Some(difference) = compare(&source.storage, &destination.storage, id, upto).await? {
            problems.push(format!("{id}: {difference}"));
        }
        verify.inc(1);
    }
    verify.finish_and_clear();
    for problem in &problems {
        out.line(format_args!("PROBLEM {problem}"))?;
    }
    let outcome = if problems.is_empty() {
        out.line(format_args!(
            "verified: the {} actors' entries and checkpoints are identical in both journals",
            count(done.len() as u64)
        ))?;
        Outcome::Ok
    } else {
        out.line(format_args!(
            "copy FAILED for {} of {}",
            count(problems.len() as u64),
            counted(plans.len() as u64, "actor", "actors")
        ))?;
        Outcome::Problems
    };
    out.flush()?;
    source.close().await;
    destination.close().await;
    Ok(outcome)
}

/// Copies one actor; `Ok(Err(problem))` when it cannot be.
async fn copy_actor(
    source: &Journal,
    destination: &Journal,
    plan: &Plan,
    batch: usize,
    bar: &ProgressBar,
) -> Result<Result<Copied, String>, Failure> {
    let (src, dst) = (&source.storage, &destination.storage);
    let (id, src_highest, dst_highest) = (
        plan.id.as_str(),
        plan.source_highest,
        plan.destination_highest,
    );
    if dst_highest > src_highest {
        return Ok(Err(format!(
            "the destination is ahead of the source (highest sequence {dst_highest} against {src_highest}); not touched"
        )));
    }
    if dst_highest > 0 {
        let theirs = dst.replay_range(id, dst_highest, dst_highest, 1).await?;
        let ours = match read(src, id, dst_highest, dst_highest, 1).await? {
            Ok(entries) => entries,
            Err(problem) => return Ok(Err(problem)),
        };
        if ours.is_empty() {
            // The source truncated that entry away (behind a checkpoint):
            // the copy can go on only where the source starts right after.
            let first = match read(src, id, 1, src_highest, 1).await? {
                Ok(entries) => entries.first().map(|e| e.sequence),
                Err(problem) => return Ok(Err(problem)),
            };
            if first.is_some_and(|first| first > dst_highest + 1)
                || (first.is_none() && src_highest > dst_highest)
            {
                return Ok(Err(format!(
                    "the source was truncated past the destination's end (entry {dst_highest}): \
                     the entries after it are no longer in the source; not touched"
                )));
            }
        } else if theirs != ours {
            return Ok(Err(format!(
                "the destination's entry {dst_highest} differs from the source's: a different journal; not touched"
            )));
        }
    }
    let mut copied = Copied::default();
    let mut from = dst_highest + 1;
    while from <= src_highest {
        let entries = match read(src, id, from, src_highest, batch).await? {
            Ok(entries) => entries,
            Err(problem) => return Ok(Err(problem)),
        };
        let Some(first) = entries.first().map(|e| e.sequence) else {
            return Ok(Err(format!(
                "the source's entries {from} to {src_highest} are missing"
            )));
        };
        if first != from {
            return Ok(Err(if from == 1 {
                format!(
                    "the source's journal starts at entry {first} (the ones before were truncated behind a checkpoint); \
                     a journal can only be appended to from entry 1, so it cannot be copied"
                )
            } else {
                format!("the source's entries {from} to {} are missing", first - 1)
            }));
        }
        // Only the contiguous part: a gap in the source stops the copy.
        let contiguous = entries
            .iter()
            .zip(from..)
            .take_while(|(e, expected)| e.sequence == *expected)
            .count();
        dst.append_batch(&entries[..contiguous]).await?;
        copied.entries += contiguous as u64;
        bar.inc(contiguous as u64);
        if contiguous < entries.len() {
            return Ok(Err(format!(
                "the source's journal has a gap after entry {}",
                entries[contiguous - 1].sequence
            )));
        }
        from = entries[contiguous - 1].sequence + 1;
    }
    let highest = dst.highest_sequence(id).await?;
    let theirs = dst.list_checkpoints(id).await?;
    for sequence in src.list_checkpoints(id).await? {
        if sequence > highest {
            continue;
        }
        let checkpoint = match src.get_checkpoint(id, sequence).await {
            Ok(Some(checkpoint)) => checkpoint,
            Ok(None) => continue,
            Err(e @ JournalError::CorruptCheckpoint { .. }) => return Ok(Err(e.to_string())),
            Err(e) => return Err(e.into()),
        };
        if theirs.contains(&sequence)
            && dst.get_checkpoint(id, sequence).await?.as_ref() == Some(&checkpoint)
        {
            continue;
        }
        dst.save_checkpoint(&checkpoint).await?;
        copied.checkpoints += 1;
    }
    Ok(Ok(copied))
}

/// Source entries `from..=to`, at most `max`; a damaged one is a problem of
/// this actor, not a failure of the command.
async fn read(
    storage: &Arc<dyn JournalStorage>,
    id: &str,
    from: u64,
    to: u64,
    max: usize,
) -> Result<Result<Vec<journal_core::JournalEntry>, String>, Failure> {
    match storage.replay_range(id, from, to, max).await {
        Ok(entries) => Ok(Ok(entries)),
        Err(e @ JournalError::CorruptEntry { .. }) => Ok(Err(format!("in the source, {e}"))),
        Err(e) => Err(e.into()),
    }
}

/// `None` when the actor's journal up to `upto`, and its checkpoints up to
/// there, are the same in the destination; otherwise the first difference.
/// Entries the source has truncated away are not compared.
async fn compare(
    source: &Arc<dyn JournalStorage>,
    destination: &Arc<dyn JournalStorage>,
    id: &str,
    upto: u64,
) -> Result<Option<String>, Failure> {
    let theirs = destination.highest_sequence(id).await?;
    if theirs < upto {
        return Ok(Some(format!(
            "the destination ends at entry {theirs}, the source at {upto}"
        )));
    }
    let mut a = source.replay_stream(id, 1);
    let first = a.try_next().await?;
    let from = first.as_ref().map_or(upto + 1, |e| e.sequence);
    let mut b = destination.replay_stream(id, from);
    let mut next = first;
    loop {
        let ours = next.take().filter(|e| e.sequence <= upto);
        let theirs = match &ours {
            Some(_) => b.try_next().await?,
            None => None,
        };
        match (ours, theirs) {
            (None, _) => break,
            (Some(x), Some(y)) if x == y => {}
            (Some(x), _) => {
                return Ok(Some(format!("the journals differ at entry {}", x.sequence)));
            }
        }
        next = a.try_next().await?;
    }
    drop((a, b));
    let theirs = destination.list_checkpoints(id).await?;
    for sequence in source.list_checkpoints(id).await? {
        if sequence > upto {
            continue;
        }
        let ours = source.get_checkpoint(id, sequence).await?;
        if ours.is_some()
            && (!theirs.contains(&sequence)
                || destination.get_checkpoint(id, sequence).await? != ours)
        {
            return Ok(Some(format!(
                "checkpoint {sequence} differs or is missing in the destination"
            )));
        }
    }
    Ok(None)
}
