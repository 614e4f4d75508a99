//! Input checks every backend runs before any I/O (contract rule 4 and 10).
//!
//! Backends call these and do storage, nothing else; the rules live here
//! once.
//!
//! # The largest sequence
//!
//! [`MAX_SEQUENCE`] is `2^53 - 1`, on every backend, so that any journal can
//! be copied to any backend. It is the largest integer below which every
//! integer is exactly representable as an IEEE-754 double, which is how
//! Redis compares numbers in its Lua scripts and how it keeps sorted-set
//! scores (the Redis backend's checkpoint index); and `highest + 1` at the
//! limit, `2^53`, is still exact. PostgreSQL's `BIGINT` and SQLite's
//! `INTEGER` (both `i64`) hold it with room to spare. A larger limit
//! (`i64::MAX`) would need Redis to compare sequences as strings and to drop
//! sorted-set scores, for journals nobody can write: at a million appends a
//! second, `2^53` appends take 285 years.
//!
//! Appends and checkpoints above the limit are refused here. Bounds of reads
//! and truncations are not: a bound above the limit, `u64::MAX` included,
//! means "to the end", and backends clamp it with [`clamp_sequence`] before
//! it reaches storage.

use prost::Message;

use crate::error::{JournalError, JournalResult};
use crate::proto::journal_entry::Entry;
use crate::proto::{Checkpoint, JournalEntry};

/// Longest actor id, in bytes.
pub const MAX_ACTOR_ID_BYTES: usize = 255;

/// Default largest encoded entry: 16 MiB.
pub const DEFAULT_MAX_ENTRY_BYTES: usize = 16 * 1024 * 1024;

/// Longest entry id, in bytes.
pub const MAX_ENTRY_ID_BYTES: usize = 255;

/// The largest sequence an entry or a checkpoint may carry: `2^53 - 1`, the
/// same on every backend (see the [module docs](self) for why).
pub const MAX_SEQUENCE: u64 = (1 << 53) - 1;

/// A bound of a read or a truncation as storage should compare it: at most
/// [`MAX_SEQUENCE`]. No stored sequence is above the limit, so a larger
/// bound (`u64::MAX`: "to the end") selects the same entries, and a backend
/// that stores sequences as `i64` or compares them as doubles never sees a
/// value it cannot represent exactly.
pub fn clamp_sequence(bound: u64) -> u64 {
    bound.min(MAX_SEQUENCE)
}

/// Checks a sequence is at most [`MAX_SEQUENCE`]; `what` names it in the
/// error.
fn sequence_limit(sequence: u64, what: &str) -> Result<(), String> {
    if sequence > MAX_SEQUENCE {
        return Err(format!(
            "{what} sequence {sequence} is above the limit MAX_SEQUENCE = {MAX_SEQUENCE}"
        ));
    }
    Ok(())
}

/// Size limits a backend enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest encoded entry, in bytes.
    pub max_entry_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_entry_bytes: DEFAULT_MAX_ENTRY_BYTES,
        }
    }
}

/// Checks an actor id: 1 to 255 bytes.
pub fn validate_actor_id(actor_id: &str) -> JournalResult<()> {
    if actor_id.is_empty() {
        return Err(JournalError::InvalidEntry("actor id is empty".into()));
    }
    if actor_id.len() > MAX_ACTOR_ID_BYTES {
        return Err(JournalError::InvalidEntry(format!(
            "actor id is {} bytes, the limit is {MAX_ACTOR_ID_BYTES}",
            actor_id.len()
        )));
    }
    Ok(())
}

/// Checks one entry: its actor id, a non-empty id, a sequence from 1 to
/// [`MAX_SEQUENCE`], a variant (a `MessageReceived` with a non-empty
/// `message_id`), and its encoded size.
pub fn validate_entry(entry: &JournalEntry, limits: &Limits) -> JournalResult<()> {
    validate_actor_id(&entry.actor_id)?;
    if entry.id.is_empty() {
        return Err(JournalError::InvalidEntry(format!(
            "entry at sequence {} has an empty id",
            entry.sequence
        )));
    }
    if entry.id.len() > MAX_ENTRY_ID_BYTES {
        return Err(JournalError::InvalidEntry(format!(
            "entry id is {} bytes, the limit is {MAX_ENTRY_ID_BYTES}",
            entry.id.len()
        )));
    }
    if entry.id.contains('\0') {
        // PostgreSQL's text cannot hold it: refused everywhere, so that
        // every journal can be copied to every backend.
        return Err(JournalError::InvalidEntry(format!(
            "entry id at sequence {} holds a NUL character",
            entry.sequence
        )));
    }
    if entry.sequence == 0 {
        return Err(JournalError::InvalidEntry(
            "sequence 0: sequences start at 1".into(),
        ));
    }
    sequence_limit(entry.sequence, "entry").map_err(JournalError::InvalidEntry)?;
    match &entry.entry {
        None => {
            return Err(JournalError::InvalidEntry(format!(
                "entry at sequence {} has no entry variant",
                entry.sequence
            )))
        }
        Some(Entry::MessageReceived(received)) if received.message_id.is_empty() => {
            return Err(JournalError::InvalidEntry(format!(
                "MessageReceived at sequence {} has an empty message_id",
                entry.sequence
            )))
        }
        Some(Entry::EventRecorded(event)) if event.event_type.is_empty() => {
            return Err(JournalError::InvalidEntry(format!(
                "EventRecorded at sequence {} has an empty event_type",
                entry.sequence
            )))
        }
        Some(_) => {}
    }
    let size = entry.encoded_len();
    if size > limits.max_entry_bytes {
        return Err(JournalError::InvalidEntry(format!(
            "entry at sequence {} is {size} bytes, the limit is {}",
            entry.sequence, limits.max_entry_bytes
        )));
    }
    Ok(())
}

/// Checks a batch: every entry valid, one actor, contiguous sequences.
/// An empty batch is valid (and a no-op).
pub fn validate_batch(entries: &[JournalEntry], limits: &Limits) -> JournalResult<()> {
    let Some(first) = entries.first() else {
        return Ok(());
    };
    for (offset, entry) in entries.iter().enumerate() {
        validate_entry(entry, limits)?;
        if entry.actor_id != first.actor_id {
            return Err(JournalError::InvalidEntry(format!(
                "batch mixes actors {:?} and {:?}",
                first.actor_id, entry.actor_id
            )));
        }
        let want = first.sequence.checked_add(offset as u64);
        if want != Some(entry.sequence) {
            return Err(JournalError::InvalidEntry(format!(
                "batch is not contiguous: sequence {} at position {offset} after {}",
                entry.sequence, first.sequence
            )));
        }
    }
    Ok(())
}

/// Checks a checkpoint's own fields: actor id and a sequence from 1 to
/// [`MAX_SEQUENCE`].
/// Whether the sequence is at most the actor's highest is the backend's
/// check, made atomically with the save.
pub fn validate_checkpoint(checkpoint: &Checkpoint) -> JournalResult<()> {
    validate_actor_id(&checkpoint.actor_id)
        .map_err(|e| JournalError::InvalidCheckpoint(e.to_string()))?;
    if checkpoint.sequence == 0 {
        return Err(JournalError::InvalidCheckpoint(
            "sequence 0: a checkpoint follows at least entry 1".into(),
        ));
    }
    sequence_limit(checkpoint.sequence, "checkpoint").map_err(JournalError::InvalidCheckpoint)?;
    Ok(())
}

/// The error for a checkpoint beyond the journal's end.
pub fn checkpoint_beyond_highest(checkpoint: &Checkpoint, highest: u64) -> JournalError {
    JournalError::InvalidCheckpoint(format!(
        "checkpoint at sequence {} of actor {:?} is beyond its highest sequence {highest}",
        checkpoint.sequence, checkpoint.actor_id
    ))
}

/// What a backend should do with an append whose first sequence is `first`
/// when the actor's highest sequence is `highest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendCheck {
    /// `first == highest + 1`: write it.
    Write,
    /// `first <= highest`: write nothing; the append is an idempotent retry
    /// if every entry is stored with the same id, otherwise a conflict.
    CompareStored,
    /// `first > highest + 1`: a gap.
    Conflict,
}

impl AppendCheck {
    /// Classifies an append.
    pub fn of(first: u64, highest: u64) -> Self {
        match first.cmp(&highest.saturating_add(1)) {
            std::cmp::Ordering::Equal => AppendCheck::Write,
            std::cmp::Ordering::Less => AppendCheck::CompareStored,
            std::cmp::Ordering::Greater => AppendCheck::Conflict,
        }
    }
}

/// The conflict error for an append of `actual` when `highest` is stored.
pub fn sequence_conflict(actor_id: &str, highest: u64, actual: u64) -> JournalError {
    JournalError::SequenceConflict {
        actor_id: actor_id.to_owned(),
        expected: highest.saturating_add(1),
        actual,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(actor: &str, seq: u64) -> JournalEntry {
        JournalEntry::new(actor, seq, Entry::message_received("m", "t", vec![]))
    }

    #[test]
    fn entries() {
        let limits = Limits::default();
        assert!(validate_entry(&entry("a", 1), &limits).is_ok());
        assert!(validate_entry(&entry(&"x".repeat(255), 1), &limits).is_ok());
        for bad in [
            entry("", 1),
            entry(&"x".repeat(256), 1),
            entry("a", 0),
            JournalEntry {
                entry: None,
                ..entry("a", 1)
            },
            JournalEntry {
                id: String::new(),
                ..entry("a", 1)
            },
        ] {
            assert!(
                matches!(
                    validate_entry(&bad, &limits),
                    Err(JournalError::InvalidEntry(_))
                ),
                "{bad:?}"
            );
        }
        let tight = Limits {
            max_entry_bytes: 10,
        };
        assert!(matches!(
            validate_entry(&entry("a", 1), &tight),
            Err(JournalError::InvalidEntry(_))
        ));
    }

    #[test]
    fn batches() {
        let limits = Limits::default();
        assert!(validate_batch(&[], &limits).is_ok());
        assert!(validate_batch(&[entry("a", 3), entry("a", 4)], &limits).is_ok());
        assert!(validate_batch(&[entry("a", 3), entry("a", 5)], &limits).is_err());
        assert!(validate_batch(&[entry("a", 3), entry("a", 3)], &limits).is_err());
        assert!(validate_batch(&[entry("a", 3), entry("b", 4)], &limits).is_err());
        assert!(validate_batch(&[entry("a", u64::MAX), entry("a", 0)], &limits).is_err());
    }

    #[test]
    fn sequence_limit_names_the_value_and_the_limit() {
        let limits = Limits::default();
        for ok in [MAX_SEQUENCE - 1, MAX_SEQUENCE] {
            assert!(validate_entry(&entry("a", ok), &limits).is_ok(), "{ok}");
            assert!(validate_checkpoint(&Checkpoint::new("a", ok, vec![])).is_ok());
        }
        for bad in [MAX_SEQUENCE + 1, u64::MAX] {
            match validate_entry(&entry("a", bad), &limits) {
                Err(JournalError::InvalidEntry(reason)) => {
                    assert!(reason.contains(&bad.to_string()), "{reason}");
                    assert!(reason.contains(&MAX_SEQUENCE.to_string()), "{reason}");
                }
                other => panic!("sequence {bad}: {other:?}"),
            }
            match validate_checkpoint(&Checkpoint::new("a", bad, vec![])) {
                Err(JournalError::InvalidCheckpoint(reason)) => {
                    assert!(reason.contains(&bad.to_string()), "{reason}");
                }
                other => panic!("checkpoint at {bad}: {other:?}"),
            }
        }
        // A batch that runs past the limit is refused as a whole.
        assert!(matches!(
            validate_batch(
                &[entry("a", MAX_SEQUENCE), entry("a", MAX_SEQUENCE + 1)],
                &limits
            ),
            Err(JournalError::InvalidEntry(_))
        ));
        assert_eq!(clamp_sequence(u64::MAX), MAX_SEQUENCE);
        assert_eq!(clamp_sequence(7), 7);
        // The limit and the limit + 1 are exact as doubles (what the Redis
        // backend's Lua scripts and sorted-set scores rely on); one more is
        // not, which is why the limit is where it is.
        let as_double = |n: u64| n.to_string().parse::<f64>().expect("parse").to_string();
        assert_eq!(as_double(MAX_SEQUENCE), MAX_SEQUENCE.to_string());
        assert_eq!(as_double(MAX_SEQUENCE + 1), (MAX_SEQUENCE + 1).to_string());
        assert_ne!(as_double(MAX_SEQUENCE + 2), (MAX_SEQUENCE + 2).to_string());
        assert!(i64::try_from(MAX_SEQUENCE).is_ok());
    }

    #[test]
    fn message_received_needs_a_message_id() {
        let bad = JournalEntry::new("a", 1, Entry::message_received("", "t", vec![]));
        match validate_entry(&bad, &Limits::default()) {
            Err(JournalError::InvalidEntry(reason)) => {
                assert!(reason.contains("message_id"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn append_check() {
        assert_eq!(AppendCheck::of(1, 0), AppendCheck::Write);
        assert_eq!(AppendCheck::of(1, 1), AppendCheck::CompareStored);
        assert_eq!(AppendCheck::of(3, 1), AppendCheck::Conflict);
    }
}
