//! `journal verify`: is every journal whole?
//!
//! Per actor: the stored sequences are contiguous and end at the highest
//! sequence; entries truncated away are covered by a usable checkpoint;
//! every entry and checkpoint decodes and belongs to the actor; every
//! checkpoint lies in `1..=highest` and its state decompresses to the size
//! it claims; the backend's counts agree with what is stored. For a whole
//! store, its totals agree with the sum over actors too.

use std::sync::Arc;

use futures::TryStreamExt;
use indicatif::ProgressBar;
use journal_core::checkpoint::{CheckpointManager, CheckpointPolicy, DEFAULT_MAX_CHECKPOINT_BYTES};
use journal_core::{ActorSummary, JournalEntry, JournalError, JournalStorage};

use crate::backend::{self, known_actor, Access, Failure};
use crate::output::Printer;
use crate::output::{counted, progress};
use crate::Outcome;

/// Entries read per page.
const PAGE: usize = 1_000;

/// What one actor's check counted.
#[derive(Debug, Default)]
struct Counted {
    entries: u64,
    checkpoints: u64,
}

/// Checks of an actor found with problems, at most: a live journal's
/// appends, checkpoints and truncations racing the reads clear on a second
/// look; damage stays.
const ATTEMPTS: usize = 3;

/// `journal verify URL [ACTOR] [--json]`.
pub async fn run(url: &str, actor: Option<&str>, json: bool) -> Result<Outcome, Failure> {
    let journal = backend::open(url, Access::Read).await?;
    let storage = &journal.storage;
    let mut problems = Vec::new();
    let mut totals = Counted::default();
    let mut troubled = 0u64;
    let mut unreadable = false;
    // The store's totals (compared with the sum over actors at the end) or
    // the one actor's summary.
    let (ids, whole, bar) = if let Some(actor) = actor {
        let summary = known_actor(&journal, actor).await?;
        let bar = progress(summary.entries, "verifying");
        (vec![(actor.to_owned(), Some(summary))], None, bar)
    } else {
        let whole = storage.stats().await?;
        let (listed, unlisted) = list_actors(storage).await?;
        let ids = listed;
        if let Some(problem) = unlisted {
            problems.push(problem);
            unreadable = true;
        }
        (ids, Some(whole), progress(whole.entries, "verifying"))
    };
    let hidden = ProgressBar::hidden();
    for (id, summary) in &ids {
        let before = problems.len();
        let (mut found, counted) = check_actor(storage, id, *summary, [&bar, &hidden]).await?;
        problems.append(&mut found);
        totals.entries += counted.entries;
        totals.checkpoints += counted.checkpoints;
        troubled += u64::from(problems.len() > before);
    }
    bar.finish_and_clear();
    let actors = ids.len() as u64;
    // The totals are compared only when the store held still: read again,
    // they are the same as before the actors were.
    let mut live = false;
    if let Some(whole) = whole {
        let after = storage.stats().await?;
        let key = |w: &journal_core::JournalStats| (w.actors, w.entries, w.checkpoints);
        live = key(&after) != key(&whole) || unreadable;
        if !live && key(&whole) != (actors, totals.entries, totals.checkpoints) {
            problems.push(format!(
                "(store): the backend's totals say {} actors, {} entries, {} checkpoints; {actors}, {}, {} are stored",
                whole.actors, whole.entries, whole.checkpoints, totals.entries, totals.checkpoints
            ));
        }
    }
    let mut out = Printer::new();
    if json {
        out.line(serde_json::json!({
            "url": journal.shown,
            "ok": problems.is_empty(),
            "actors": actors,
            "actors_with_problems": troubled,
            "entries": totals.entries,
            "checkpoints": totals.checkpoints,
            "totals_compared": whole.is_some() && !live,
            "problems": problems,
        }))?;
        out.flush()?;
        journal.close().await;
        return Ok(if problems.is_empty() {
            Outcome::Ok
        } else {
            Outcome::Problems
        });
    }
    for problem in &problems {
        out.line(format_args!("PROBLEM {problem}"))?;
    }
    let checked = format!(
        "{}, {}, {} in {}",
        counted(actors, "actor", "actors"),
        counted(totals.entries, "entry", "entries"),
        counted(totals.checkpoints, "checkpoint", "checkpoints"),
        journal.shown
    );
    let outcome = if problems.is_empty() {
        let totals = if live {
            " (the store changed during the run: its totals were not compared)"
        } else {
            ""
        };
        out.line(format_args!(
            "verify ok: {checked}: contiguous, every entry and checkpoint decodable, counts consistent{totals}"
        ))?;
        Outcome::Ok
    } else {
        out.line(format_args!(
            "verify FAILED: {} in {troubled} of {checked}",
            counted(problems.len() as u64, "problem", "problems")
        ))?;
        Outcome::Problems
    };
    out.flush()?;
    journal.close().await;
    Ok(outcome)
}

/// Every actor of the store, for checking: a listing that fails on a
/// value it cannot read (an actor id that is not UTF-8, a damaged index
/// entry) is a problem of the store, and the actors listed before it are
/// still checked. Unavailability is no such problem.
async fn list_actors(
    storage: &Arc<dyn JournalStorage>,
) -> Result<(Vec<(String, Option<ActorSummary>)>, Option<String>), Failure> {
    let mut ids = Vec::new();
    let mut listing = storage.list_actors();
    loop {
        match listing.try_next().await {
            Ok(Some(id)) => ids.push((id, None)),
            Ok(None) => return Ok((ids, None)),
            Err(e) if e.is_retryable() => return Err(e.into()),
            Err(e) => {
                let after = ids
                    .last()
                    .map_or("its start", |(id, _): &(String, _)| id.as_str());
                let problem = format!("(store): the actor list cannot be read past {after}: {e}");
                return Ok((ids, Some(problem)));
            }
        }
    }
}

/// Checks `id` (at most [`ATTEMPTS`] times while problems are found);
/// its lasting problems and what the last check counted. Progress goes
/// to the first bar the first time, to the second after.
async fn check_actor(
    storage: &Arc<dyn JournalStorage>,
    id: &str,
    summary: Option<ActorSummary>,
    [bar, hidden]: [&ProgressBar; 2],
) -> Result<(Vec<String>, Counted), Failure> {
    let mut found = Vec::new();
    let mut counted = Counted::default();
    for attempt in 0..ATTEMPTS {
        found.clear();
        let summary = match summary.filter(|_| attempt == 0) {
            Some(summary) => summary,
            None => storage.actor_summary(id).await?,
        };
        let shown = if attempt == 0 { bar } else { hidden };
        counted = match verify_actor(storage, id, summary, &mut found, shown).await {
            Ok(counted) => counted,
            // The server went away: not a problem of the journal's.
            Err(e) if e.is_retryable() => return Err(e.into()),
            Err(e) => {
                found.push(format!("{id}: cannot be read: {e}"));
                Counted::default()
            }
        };
        if found.is_empty() {
            break;
        }
    }
    Ok((found, counted))
}

/// Tracks stored sequences as they arrive, ascending.
#[derive(Debug, Default)]
struct Sequences {
    first: Option<u64>,
    last: u64,
    stored: u64,
}

impl Sequences {
    fn see(&mut self, actor: &str, sequence: u64, problems: &mut Vec<String>) {
        if self.first.is_none() {
            self.first = Some(sequence);
        } else if sequence != self.last + 1 {
            problems.push(format!(
                "{actor}: {} (the journal goes from {} to {sequence})",
                missing(self.last + 1, sequence - 1),
                self.last
            ));
        }
        self.last = sequence;
        self.stored += 1;
    }
}

/// "entry 7 is missing", "entries 7 to 9 are missing".
fn missing(from: u64, to: u64) -> String {
    if from == to {
        format!("gap: entry {from} is missing")
    } else {
        format!("gap: entries {from} to {to} are missing")
    }
}

fn check_entry(actor: &str, entry: &JournalEntry, problems: &mut Vec<String>) {
    if entry.actor_id != actor {
        problems.push(format!(
            "{actor}: entry {} belongs to actor {:?}",
            entry.sequence, entry.actor_id
        ));
    }
    if entry.entry.is_none() {
        problems.push(format!("{actor}: entry {} has no body", entry.sequence));
    }
}

async fn verify_actor(
    storage: &Arc<dyn JournalStorage>,
    actor: &str,
    summary: ActorSummary,
    problems: &mut Vec<String>,
    bar: &ProgressBar,
) -> Result<Counted, JournalError> {
    let highest = summary.highest_sequence;
    let seen = read_entries(storage, actor, highest, problems, bar).await?;

    // An entry stored beyond the highest sequence: the first one after
    // the summary's, read before the actor's highest is read again (it
    // only grows), so a live append is never taken for one.
    let after = storage.replay_range(actor, highest + 1, u64::MAX, 1).await;
    let listed = storage.list_checkpoints(actor).await?;
    let now = storage.actor_summary(actor).await?;
    match after {
        Ok(beyond) => {
            if let Some(entry) = beyond.first().filter(|e| e.sequence > now.highest_sequence) {
                problems.push(format!(
                    "{actor}: entry {} is beyond the highest sequence {}",
                    entry.sequence, now.highest_sequence
                ));
            }
        }
        Err(JournalError::CorruptEntry { sequence, .. }) if sequence > now.highest_sequence => {
            problems.push(format!(
                "{actor}: entry {sequence} is beyond the highest sequence {}",
                now.highest_sequence
            ));
        }
        Err(JournalError::CorruptEntry { .. }) => {}
        Err(e) => return Err(e),
    }
    // Whether the actor held still during its check: then its counts must
    // agree with what was read.
    let still = now == summary;
    let mut usable = 0;
    let mut checked = 0u64;
    for &sequence in &listed {
        // Saved after the summary: checked, not counted.
        let newer = sequence > highest && sequence <= now.highest_sequence;
        let at = check_checkpoint(storage, actor, sequence, now.highest_sequence, problems).await?;
        if !newer {
            checked += 1;
            if let Some(at) = at {
                usable = usable.max(at);
            }
        }
    }

    match seen.first {
        None if highest > 0 && usable < highest => problems.push(format!(
            "{actor}: no entry is stored and no usable checkpoint is at the highest sequence {highest}: the actor cannot be recovered"
        )),
        Some(first) if first > 1 && usable < first - 1 => problems.push(format!(
            "{actor}: entries 1 to {} are missing (truncated) and no usable checkpoint covers them: the actor cannot be recovered",
            first - 1
        )),
        _ => {}
    }
    if seen.first.is_some() && seen.last < highest {
        problems.push(format!(
            "{actor}: {} (the journal ends at {}, its highest sequence is {highest})",
            missing(seen.last + 1, highest),
            seen.last
        ));
    }
    if still && summary.entries != seen.stored {
        problems.push(format!(
            "{actor}: the backend counts {} entries, {} are stored",
            summary.entries, seen.stored
        ));
    }
    if still && summary.checkpoints != checked {
        problems.push(format!(
            "{actor}: the backend counts {} checkpoints, {checked} are listed",
            summary.checkpoints,
        ));
    }
    Ok(Counted {
        entries: seen.stored,
        checkpoints: checked,
    })
}

/// Reads `actor`'s entries up to `highest` (the summary's: appends after
/// it are not this check's), checking each; a damaged one is named and
/// passed over.
async fn read_entries(
    storage: &Arc<dyn JournalStorage>,
    actor: &str,
    highest: u64,
    problems: &mut Vec<String>,
    bar: &ProgressBar,
) -> Result<Sequences, JournalError> {
    let mut seen = Sequences::default();
    let mut from = 1;
    loop {
        // Up to the highest sequence the summary gave: appends after it
        // are not this check's (a live journal keeps growing).
        if from > highest {
            break;
        }
        match storage.replay_range(actor, from, highest, PAGE).await {
            Ok(entries) => {
                let Some(last) = entries.last().map(|e| e.sequence) else {
                    break;
                };
                for entry in &entries {
                    seen.see(actor, entry.sequence, problems);
                    check_entry(actor, entry, problems);
                }
                bar.inc(entries.len() as u64);
                let Some(next) = last.checked_add(1) else {
                    break;
                };
                from = next;
            }
            Err(JournalError::CorruptEntry {
                sequence, reason, ..
            }) if sequence >= from => {
                // The page stopped at the damaged entry: check the ones
                // before it, name it, and go on after it.
                if sequence > from {
                    for entry in storage
                        .replay_range(actor, from, sequence - 1, usize::MAX)
                        .await?
                    {
                        seen.see(actor, entry.sequence, problems);
                        check_entry(actor, &entry, problems);
                        bar.inc(1);
                    }
                }
                seen.see(actor, sequence, problems);
                problems.push(format!(
                    "{actor}: entry {sequence} cannot be decoded: {reason}"
                ));
                let Some(next) = sequence.checked_add(1) else {
                    break;
                };
                from = next;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(seen)
}

/// Checks one checkpoint; returns its sequence when recovery could use it.
async fn check_checkpoint(
    storage: &Arc<dyn JournalStorage>,
    actor: &str,
    sequence: u64,
    highest: u64,
    problems: &mut Vec<String>,
) -> Result<Option<u64>, JournalError> {
    let checkpoint = match storage.get_checkpoint(actor, sequence).await {
        Ok(Some(checkpoint)) => checkpoint,
        Ok(None) => {
            // Pruned since it was listed (a live actor keeps K), or lost.
            if storage.list_checkpoints(actor).await?.contains(&sequence) {
                problems.push(format!(
                    "{actor}: checkpoint {sequence} is listed but cannot be read"
                ));
            }
            return Ok(None);
        }
        Err(JournalError::CorruptCheckpoint { reason, .. }) => {
            problems.push(format!(
                "{actor}: checkpoint {sequence} cannot be decoded: {reason}"
            ));
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let before = problems.len();
    if checkpoint.sequence != sequence || checkpoint.actor_id != actor {
        problems.push(format!(
            "{actor}: checkpoint {sequence} says it is actor {:?}'s at {}",
            checkpoint.actor_id, checkpoint.sequence
        ));
    }
    if sequence == 0 || sequence > highest {
        problems.push(format!(
            "{actor}: checkpoint {sequence} is outside 1..={highest}, the actor's entries"
        ));
    }
    // The state's own schema version: only the actor knows how to read the
    // state, but its compression and size claim are checked here.
    let policy = CheckpointPolicy {
        schema_version: checkpoint.state_schema_version,
        max_state_bytes: DEFAULT_MAX_CHECKPOINT_BYTES,
        ..CheckpointPolicy::default()
    };
    if let Err(e) = CheckpointManager::new(Arc::clone(storage), policy)
        .decode(checkpoint)
        .await
    {
        problems.push(format!(
            "{actor}: checkpoint {sequence}'s state cannot be read: {e}"
        ));
    }
    Ok((problems.len() == before).then_some(sequence))
}
