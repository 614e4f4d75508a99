//! `journal actors`, `show`, `stats` and `at`: reading a journal.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use journal_actors::TypedDurable;
use journal_core::journal_entry::Entry;
use journal_core::{rebuild_at, JournalBackend, JournalStorage};
use prost::Message;
use serde_json::{json, Value};

use crate::account::{self, Account, Standing};
use crate::backend::{self, known_actor, Access, Failure, Journal};
use crate::output::{self, count, counted, progress, size, Printer};
use crate::Outcome;

/// Entries fetched per page when reading.
const PAGE: usize = 1_000;

/// `journal actors URL`.
pub async fn actors(url: &str, json: bool) -> Result<Outcome, Failure> {
    let journal = backend::open(url, Access::Read).await?;
    let mut out = Printer::new();
    if !json {
        out.line(format_args!(
            "{:<40} {:>12} {:>12} {:>12}",
            "actor", "entries", "highest", "checkpoints"
        ))?;
    }
    // Every backend's list in id order: Redis's is read whole and sorted
    // (ids only, some 50 bytes each).
    let mut actors = if journal.lists_sorted() {
        journal.storage.list_actors()
    } else {
        let mut all: Vec<String> = journal.storage.list_actors().try_collect().await?;
        all.sort_unstable();
        futures::stream::iter(all.into_iter().map(Ok::<_, journal_core::JournalError>)).boxed()
    };
    let mut number = 0u64;
    while let Some(actor) = actors.try_next().await? {
        if out.closed() {
            break;
        }
        let summary = journal.storage.actor_summary(&actor).await?;
        number += 1;
        if json {
            out.line(json!({
                "actor_id": actor,
                "entries": summary.entries,
                "highest_sequence": summary.highest_sequence,
                "checkpoints": summary.checkpoints,
            }))?;
        } else {
            out.line(format_args!(
                "{:<40} {:>12} {:>12} {:>12}",
                actor,
                count(summary.entries),
                count(summary.highest_sequence),
                summary.checkpoints
            ))?;
        }
    }
    drop(actors);
    if !json {
        out.line(format_args!("{}", counted(number, "actor", "actors")))?;
    }
    out.flush()?;
    journal.close().await;
    Ok(Outcome::Ok)
}

/// `journal show` options.
#[derive(clap::Args)]
pub struct ShowArgs {
    /// The journal's URL.
    url: String,
    /// The actor.
    actor: String,
    /// The first sequence shown.
    #[arg(long, default_value_t = 1)]
    from: u64,
    /// The last sequence shown.
    #[arg(long)]
    to: Option<u64>,
    /// At most this many entries.
    #[arg(long)]
    limit: Option<u64>,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
}

/// `journal show URL ACTOR`.
pub async fn show(args: ShowArgs) -> Result<Outcome, Failure> {
    if let Some(to) = args.to.filter(|&to| to < args.from) {
        return Err(Failure::new(format!(
            "--from {} is after --to {to}: nothing could be shown",
            args.from
        )));
    }
    let journal = backend::open(&args.url, Access::Read).await?;
    let highest = known_actor(&journal, &args.actor).await?.highest_sequence;
    let to = args.to.unwrap_or(highest).min(highest);
    let mut left = args.limit.unwrap_or(u64::MAX);
    let mut out = Printer::new();
    let mut from = args.from.max(1);
    while from <= to && left > 0 {
        let page = usize::try_from(left).unwrap_or(PAGE).min(PAGE);
        let entries = journal
            .storage
            .replay_range(&args.actor, from, to, page)
            .await?;
        let Some(last) = entries.last().map(|e| e.sequence) else {
            break;
        };
        for entry in &entries {
            if args.json {
                out.line(output::entry_json(entry))?;
            } else {
                out.line(output::entry_line(entry))?;
            }
        }
        if out.closed() {
            break;
        }
        left -= entries.len() as u64;
        let Some(next) = last.checked_add(1) else {
            break;
        };
        from = next;
    }
    out.flush()?;
    journal.close().await;
    Ok(Outcome::Ok)
}

/// Totals gathered by `journal stats`.
#[derive(Debug, Default)]
struct Totals {
    actors: u64,
    entries: u64,
    entry_bytes: u64,
    largest_entry: u64,
    kinds: BTreeMap<&'static str, u64>,
    checkpoints: u64,
    checkpoint_raw: u64,
    checkpoint_stored: u64,
    longest: Option<(String, u64)>,
}

/// `journal stats URL`: totals as the backend counts them, and sizes from
/// reading every entry and checkpoint.
pub async fn stats(url: &str, json: bool) -> Result<Outcome, Failure> {
    let journal = backend::open(url, Access::Read).await?;
    let counted = journal.storage.stats().await?;
    let bar = progress(counted.entries, "reading");
    let mut totals = Totals::default();
    let mut actors = journal.storage.list_actors();
    while let Some(actor) = actors.try_next().await? {
        totals.actors += 1;
        let mut entries = 0;
        let mut stream = journal.storage.replay_stream(&actor, 1);
        while let Some(entry) = stream.try_next().await? {
            let bytes = entry.encoded_len() as u64;
            entries += 1;
            totals.entry_bytes += bytes;
            totals.largest_entry = totals.largest_entry.max(bytes);
            *totals
                .kinds
                .entry(entry.entry.as_ref().map_or("none", Entry::kind))
                .or_default() += 1;
            bar.inc(1);
        }
        drop(stream);
        totals.entries += entries;
        if totals.longest.as_ref().is_none_or(|(_, n)| entries > *n) {
            totals.longest = Some((actor.clone(), entries));
        }
        for sequence in journal.storage.list_checkpoints(&actor).await? {
            if let Some(c) = journal.storage.get_checkpoint(&actor, sequence).await? {
                totals.checkpoints += 1;
                totals.checkpoint_raw += c.uncompressed_size;
                totals.checkpoint_stored += c.state_data.len() as u64;
            }
        }
    }
    drop(actors);
    bar.finish_and_clear();
    let mut out = Printer::new();
    if json {
        out.line(json!({
            "backend": journal.storage.backend_name(),
            "actors": totals.actors,
            "entries": totals.entries,
            "entry_bytes": totals.entry_bytes,
            "largest_entry_bytes": totals.largest_entry,
            "entries_by_kind": totals.kinds,
            "checkpoints": totals.checkpoints,
            "checkpoint_state_bytes": totals.checkpoint_raw,
            "checkpoint_stored_bytes": totals.checkpoint_stored,
            "longest_journal": totals.longest.as_ref().map(|(a, n)| json!({"actor_id": a, "entries": n})),
            "backend_counts": {
                "actors": counted.actors,
                "entries": counted.entries,
                "checkpoints": counted.checkpoints,
            },
        }))?;
    } else {
        out.line(format_args!(
            "{} ({})",
            journal.shown,
            journal.storage.backend_name()
        ))?;
        out.line(format_args!("actors       {}", count(totals.actors)))?;
        out.line(format_args!(
            "entries      {}, {} encoded (average {}, largest {})",
            count(totals.entries),
            size(totals.entry_bytes),
            size(totals.entry_bytes / totals.entries.max(1)),
            size(totals.largest_entry)
        ))?;
        for (kind, n) in &totals.kinds {
            out.line(format_args!("  {kind:<22} {}", count(*n)))?;
        }
        #[allow(clippy::cast_precision_loss)]
        let ratio = totals.checkpoint_raw as f64 / totals.checkpoint_stored.max(1) as f64;
        out.line(format_args!(
            "checkpoints  {}, state {} raw, {} stored ({ratio:.1}x)",
            count(totals.checkpoints),
            size(totals.checkpoint_raw),
            size(totals.checkpoint_stored)
        ))?;
        if let Some((actor, n)) = &totals.longest {
            out.line(format_args!("longest      {actor} ({} entries)", count(*n)))?;
        }
    }
    out.flush()?;
    journal.close().await;
    Ok(Outcome::Ok)
}

/// `journal backup URL OUT`: an SQLite journal copied while in use.
pub async fn backup(url: &str, out: &std::path::Path) -> Result<Outcome, Failure> {
    let journal = backend::open(url, Access::Read).await?;
    let Some(sqlite) = journal.sqlite() else {
        return Err(Failure::new(format!(
            "{}: backup copies SQLite files; for PostgreSQL use pg_dump, for Redis its own persistence (RDB, AOF)",
            journal.shown
        )));
    };
    let started = std::time::Instant::now();
    sqlite.backup_to(out).await?;
    let copy = journal_sqlite::SqliteJournalStorage::new(out).await?;
    let stats = copy.stats().await?;
    let problems = copy.integrity_check().await?;
    copy.close().await;
    let mut printer = Printer::new();
    printer.line(format_args!(
        "backed up {} ({}, {}) to {} in {:.1?}{}",
        journal.shown,
        counted(stats.actors, "actor", "actors"),
        counted(stats.entries, "entry", "entries"),
        out.display(),
        started.elapsed(),
        if problems.is_empty() {
            "; integrity check ok"
        } else {
            ""
        }
    ))?;
    printer.flush()?;
    journal.close().await;
    if problems.is_empty() {
        Ok(Outcome::Ok)
    } else {
        Err(Failure::new(format!(
            "the copy fails SQLite's integrity check: {}",
            problems.join("; ")
        )))
    }
}

/// `journal at` options.
#[derive(clap::Args)]
pub struct AtArgs {
    /// The journal's URL.
    url: String,
    /// The actor.
    actor: String,
    /// The entry to stand at.
    seq: u64,
    /// One JSON object.
    #[arg(long)]
    json: bool,
    /// Show the checkpoint and entries even for a demo account.
    #[arg(long)]
    raw: bool,
}

/// `journal at URL ACTOR SEQ`.
pub async fn at(args: AtArgs) -> Result<Outcome, Failure> {
    let journal = backend::open(&args.url, Access::Read).await?;
    let highest = known_actor(&journal, &args.actor).await?.highest_sequence;
    if args.seq > highest {
        return Err(Failure::new(format!(
            "{} has {} at most (its highest sequence is {highest}); there is no entry {}",
            args.actor,
            counted(highest, "entry", "entries"),
            args.seq
        )));
    }
    let mut out = Printer::new();
    if args.actor.starts_with(account::ACTOR_PREFIX) && !args.raw {
        account_at(&journal, &args, &mut out).await?;
    } else {
        entries_at(&journal, &args, &mut out).await?;
    }
    out.flush()?;
    journal.close().await;
    Ok(Outcome::Ok)
}

/// A demo account's state rebuilt at `args.seq`.
async fn account_at(journal: &Journal, args: &AtArgs, out: &mut Printer) -> Result<(), Failure> {
    let mut account = TypedDurable::new(Account::new(None, None));
    let config = account::config(JournalBackend::Unspecified);
    let rebuilt = rebuild_at(
        Arc::clone(&journal.storage),
        &config,
        &args.actor,
        &mut account,
        args.seq,
        true,
    )
    .await?;
    let state = account.actor();
    let in_flight = rebuilt.in_flight.as_ref().map(|m| m.message_id.clone());
    if args.json {
        let mut fields = serde_json::to_value(state).unwrap_or(Value::Null);
        if let Value::Object(map) = &mut fields {
            map.insert("held".into(), state.held().into());
        }
        out.line(json!({
            "actor_id": args.actor,
            "sequence": args.seq,
            "checkpoint_sequence": rebuilt.checkpoint_sequence,
            "replayed_entries": rebuilt.replayed_entries,
            "replayed_messages": rebuilt.replayed_messages,
            "in_flight": in_flight,
            "state": fields,
        }))?;
        return Ok(());
    }
    let from = rebuilt.checkpoint_sequence.map_or_else(
        || "the first entry".to_owned(),
        |c| format!("the checkpoint at {c}"),
    );
    out.line(format_args!(
        "{} after entry {}: rebuilt from {from} and {} ({}) in {:.1?}",
        args.actor,
        args.seq,
        counted(rebuilt.replayed_entries, "entry", "entries"),
        counted(rebuilt.replayed_messages, "message", "messages"),
        rebuilt.elapsed
    ))?;
    out.line(format_args!("  balance    {}", state.balance))?;
    out.line(format_args!(
        "  deposits   {} ({} in all), payments paid {} ({} in all), declined {}",
        state.deposits, state.deposited, state.payments, state.paid_out, state.declined
    ))?;
    for (id, sent) in &state.sent {
        let how = if sent.reversed { "reversed" } else { "sent" };
        out.line(format_args!(
            "  transfer   {id}: {} to {}, {how}",
            sent.amount, sent.to
        ))?;
    }
    for (id, received) in &state.received {
        let how = match received.standing {
            Standing::Held => "held until confirmed",
            Standing::Confirmed => "confirmed",
            Standing::Reversed => "not confirmed in time: reversed",
        };
        out.line(format_args!(
            "  transfer   {id}: {} from {}, {how}",
            received.amount, received.from
        ))?;
    }
    if let Some(id) = in_flight {
        out.line(format_args!(
            "  in flight  {id}: received, not yet completed at this entry (not applied)"
        ))?;
    }
    out.line("  last operations:")?;
    for line in state.statement.iter().rev().take(8) {
        out.line(format_args!("    {line}"))?;
    }
    Ok(())
}

/// Any actor at `args.seq`: the nearest checkpoint at or before it and the
/// entries from there to it.
async fn entries_at(journal: &Journal, args: &AtArgs, out: &mut Printer) -> Result<(), Failure> {
    let storage = &journal.storage;
    let nearest = storage
        .list_checkpoints(&args.actor)
        .await?
        .into_iter()
        .filter(|&c| c <= args.seq)
        .max();
    let checkpoint = match nearest {
        Some(sequence) => storage.get_checkpoint(&args.actor, sequence).await?,
        None => None,
    };
    let from = checkpoint.as_ref().map_or(1, |c| c.sequence + 1);
    let mut entries = Vec::new();
    let mut stream = storage.replay_stream(&args.actor, from);
    while let Some(entry) = stream.try_next().await? {
        if entry.sequence > args.seq {
            break;
        }
        entries.push(entry);
    }
    drop(stream);
    let mut expected = from;
    for entry in &entries {
        if entry.sequence != expected {
            break;
        }
        expected += 1;
    }
    if expected <= args.seq {
        return Err(Failure::new(format!(
            "entries {expected} to {} of {} are not in the journal (truncated or lost), so the way from {} to entry {} cannot be shown",
            args.seq,
            args.actor,
            checkpoint
                .as_ref()
                .map_or_else(|| "the start".to_owned(), |c| format!("the checkpoint at {}", c.sequence)),
            args.seq
        )));
    }
    // A typed actor's state is JSON: shown, so that the state at SEQ is
    // that state plus what follows (an event-sourced actor's events).
    let state = match &checkpoint {
        Some(c) => checkpoint_state(Arc::clone(&journal.storage), c.clone()).await,
        None => None,
    };
    let events = entries
        .iter()
        .filter(|e| {
            matches!(
                e.entry,
                Some(journal_core::journal_entry::Entry::EventRecorded(_))
            )
        })
        .count();
    if args.json {
        out.line(json!({
            "actor_id": args.actor,
            "sequence": args.seq,
            "checkpoint": checkpoint.as_ref().map(output::checkpoint_json),
            "checkpoint_state": state,
            "entries": entries.iter().map(output::entry_json).collect::<Vec<Value>>(),
        }))?;
        return Ok(());
    }
    match &checkpoint {
        Some(c) => out.line(format_args!(
            "{}: {}",
            args.actor,
            output::checkpoint_line(c)
        ))?,
        None => out.line(format_args!(
            "{}: no checkpoint at or before {}; the entries from the first:",
            args.actor, args.seq
        ))?,
    }
    if let Some(state) = &state {
        out.line(format_args!("  state      {state}"))?;
    }
    if events > 0 {
        out.line(format_args!(
            "  then {} to apply, in order:",
            counted(events as u64, "event", "events")
        ))?;
    }
    for entry in &entries {
        out.line(output::entry_line(entry))?;
    }
    Ok(())
}

/// The actor's own state in `checkpoint`, when it is JSON (a typed or
/// event-sourced actor's): decompressed, out of the facet's snapshot.
async fn checkpoint_state(
    storage: Arc<dyn journal_core::JournalStorage>,
    checkpoint: journal_core::Checkpoint,
) -> Option<Value> {
    use prost::Message as _;
    let state = journal_core::checkpoint::CheckpointManager::new(
        storage,
        journal_core::checkpoint::CheckpointPolicy::default(),
    )
    .decode_any_version(checkpoint)
    .await
    .ok()?;
    let snapshot = journal_core::FacetSnapshot::decode(state.as_slice()).ok()?;
    serde_json::from_slice(&snapshot.actor_state).ok()
}
