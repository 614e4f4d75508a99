//! Building blocks of the suite's tests: fresh actor ids, entries of every
//! variant, and assertions with useful messages.

use std::collections::BTreeMap;

use futures::TryStreamExt;
use journal_core::journal_entry::Entry;
use journal_core::prost_types::{Duration, Timestamp};
use journal_core::{
    Checkpoint, EventRecorded, JournalEntry, JournalError, JournalResult, JournalStorage,
    MessageProcessed, MessageReceived, ProcessingResult, PromiseCreated, PromiseResolved,
    SideEffectExecuted, StateChanged, TimerCancelled, TimerFired, TimerScheduled,
};

/// An actor id no other test uses: `tag` plus a ULID.
pub fn fresh_actor(tag: &str) -> String {
    format!("{tag}-{}", ulid::Ulid::generate())
}

/// A plain entry: a received message whose payload names its sequence.
pub fn entry(actor_id: &str, sequence: u64) -> JournalEntry {
    JournalEntry::new(
        actor_id,
        sequence,
        Entry::message_received(
            format!("msg-{sequence}"),
            "Test",
            format!("payload {sequence}").into_bytes(),
        ),
    )
}

/// Entries `from..=to` of `actor_id`, made by [`entry`].
pub fn entries(actor_id: &str, from: u64, to: u64) -> Vec<JournalEntry> {
    (from..=to).map(|s| entry(actor_id, s)).collect()
}

/// An entry exercising every field: the variant cycles through all ten by
/// sequence, with binary payloads (every byte value), metadata maps with
/// unusual keys, and a timestamp with nanoseconds.
pub fn rich_entry(actor_id: &str, sequence: u64) -> JournalEntry {
    let bytes: Vec<u8> = (0..=255u8)
        .cycle()
        .skip(sequence as usize % 256)
        .take(300)
        .collect();
    let mut metadata = BTreeMap::new();
    metadata.insert("trace-id".to_owned(), format!("t-{sequence}"));
    metadata.insert(String::new(), "empty key".to_owned());
    metadata.insert("ünïcödé ✓".to_owned(), "'\"\\{}%:".to_owned());
    let small = i64::try_from(sequence % 1_000_000).unwrap_or(0);
    let duration = Some(Duration {
        seconds: 30 + small,
        nanos: 250,
    });
    let variant = match sequence % 10 {
        0 => Entry::MessageReceived(MessageReceived {
            message_id: format!("m-{sequence}"),
            sender_id: "sender/1".into(),
            message_type: "Deposit".into(),
            payload: bytes,
            metadata,
        }),
        1 => Entry::MessageProcessed(MessageProcessed {
            message_id: format!("m-{sequence}"),
            result: ProcessingResult::Error.into(),
            error_message: "insufficient funds ✗".into(),
            response_payload: bytes,
            reply_dropped: sequence.is_multiple_of(5),
        }),
        2 => Entry::StateChanged(StateChanged {
            old_state: bytes.clone(),
            new_state: bytes.into_iter().rev().collect(),
            change_type: "balance".into(),
        }),
        3 => Entry::SideEffectExecuted(SideEffectExecuted {
            effect_id: format!("fx-{sequence}"),
            effect_type: "http".into(),
            request: bytes.clone(),
            response: bytes,
            error: String::new(),
            result_dropped: sequence.is_multiple_of(7),
        }),
        4 => Entry::TimerScheduled(TimerScheduled {
            timer_id: "t".into(),
            delay: duration,
            timer_data: bytes,
            target_actor_id: "target \u{1F980}".into(),
            target_actor_type: "Cart".into(),
            due_at: Some(Timestamp {
                seconds: 1_700_000_000,
                nanos: 999_999_999,
            }),
            message_type: "Abandon".into(),
        }),
        8 => Entry::TimerCancelled(TimerCancelled {
            timer_id: "t".into(),
        }),
        9 => Entry::EventRecorded(EventRecorded {
            event_type: "Deposited ✓".into(),
            schema_version: u32::try_from(sequence % 4).unwrap_or(1),
            payload: bytes,
            tags: vec!["account".into(), format!("region-{}", sequence % 3)],
            metadata,
        }),
        5 => Entry::TimerFired(TimerFired {
            timer_id: "t".into(),
        }),
        6 => Entry::PromiseCreated(PromiseCreated {
            promise_id: "p".into(),
            timeout: duration,
        }),
        _ => Entry::PromiseResolved(PromiseResolved {
            promise_id: "p".into(),
            result: bytes,
            error: "late".into(),
        }),
    };
    JournalEntry {
        timestamp: Some(Timestamp {
            seconds: 1_700_000_000 + small,
            nanos: 999_999_999 - i32::try_from(sequence % 1000).unwrap_or(0),
        }),
        correlation_id: format!("corr-{sequence}"),
        ..JournalEntry::new(actor_id, sequence, variant)
    }
}

/// Appends each entry on its own, panicking on the first error.
pub async fn append_each(storage: &dyn JournalStorage, entries: &[JournalEntry]) {
    for e in entries {
        let seq = storage
            .append_entry(e)
            .await
            .unwrap_or_else(|err| panic!("append of sequence {} failed: {err}", e.sequence));
        assert_eq!(seq, e.sequence, "append_entry returns the entry's sequence");
    }
}

/// The sequences of `entries`, in order.
pub fn seqs(entries: &[JournalEntry]) -> Vec<u64> {
    entries.iter().map(|e| e.sequence).collect()
}

/// The whole replay stream from `from`, collected.
pub async fn collect_stream(
    storage: &dyn JournalStorage,
    actor_id: &str,
    from: u64,
) -> Vec<JournalEntry> {
    storage
        .replay_stream(actor_id, from)
        .try_collect()
        .await
        .expect("streaming replay failed")
}

/// Asserts a `SequenceConflict` with these numbers.
#[track_caller]
pub fn assert_conflict<T: std::fmt::Debug>(result: JournalResult<T>, expected: u64, actual: u64) {
    match result {
        Err(JournalError::SequenceConflict {
            expected: e,
            actual: a,
            ..
        }) if e == expected && a == actual => {}
        other => panic!(
            "expected SequenceConflict {{ expected: {expected}, actual: {actual} }}, got {other:?}"
        ),
    }
}

/// Asserts an `InvalidEntry` error.
#[track_caller]
pub fn assert_invalid_entry<T: std::fmt::Debug>(result: JournalResult<T>) {
    match result {
        Err(JournalError::InvalidEntry(_)) => {}
        other => panic!("expected InvalidEntry, got {other:?}"),
    }
}

/// Asserts an `InvalidCheckpoint` error.
#[track_caller]
pub fn assert_invalid_checkpoint<T: std::fmt::Debug>(result: JournalResult<T>) {
    match result {
        Err(JournalError::InvalidCheckpoint(_)) => {}
        other => panic!("expected InvalidCheckpoint, got {other:?}"),
    }
}

/// A checkpoint whose state names its sequence.
pub fn checkpoint(actor_id: &str, sequence: u64) -> Checkpoint {
    Checkpoint::new(
        actor_id,
        sequence,
        format!("state at {sequence}").into_bytes(),
    )
}

/// `n` bytes of a repeating, non-trivial pattern.
pub fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Asserts the actor has no checkpoint by any of the three reads.
pub async fn assert_no_checkpoints(storage: &dyn JournalStorage, actor_id: &str) {
    let latest = storage
        .get_latest_checkpoint(actor_id)
        .await
        .expect("latest");
    assert!(
        latest.is_none(),
        "latest checkpoint of {actor_id:?}: {latest:?}"
    );
    let listed = storage.list_checkpoints(actor_id).await.expect("list");
    assert!(listed.is_empty(), "checkpoints of {actor_id:?}: {listed:?}");
    for seq in [1, 2] {
        let got = storage.get_checkpoint(actor_id, seq).await.expect("get");
        assert!(got.is_none(), "checkpoint {seq} of {actor_id:?}: {got:?}");
    }
}

/// Saves a [`checkpoint`] of `actor_id` at each of `sequences`, panicking
/// on the first failure.
pub async fn save_checkpoints(storage: &dyn JournalStorage, actor_id: &str, sequences: &[u64]) {
    for &seq in sequences {
        storage
            .save_checkpoint(&checkpoint(actor_id, seq))
            .await
            .unwrap_or_else(|e| panic!("checkpoint of {actor_id:?} at {seq}: {e}"));
    }
}

/// Asserts `got` equals `want` entry by entry (sequence, id and every
/// field), with a short message naming the first difference instead of
/// printing thousands of entries.
#[track_caller]
pub fn assert_entries(what: &str, got: &[JournalEntry], want: &[JournalEntry]) {
    if let Some(i) = (0..got.len().min(want.len())).find(|&i| got[i] != want[i]) {
        let (g, w) = (&got[i], &want[i]);
        let detail = if g.sequence == w.sequence && g.id == w.id {
            format!("entry {} came back with other contents", w.sequence)
        } else {
            format!(
                "sequence {} (id {}) where {} (id {}) was expected",
                g.sequence, g.id, w.sequence, w.id
            )
        };
        panic!(
            "{what}: {} entries, {} expected; position {i} holds {detail}",
            got.len(),
            want.len()
        );
    }
    assert!(
        got.len() == want.len(),
        "{what}: {} entries, {} expected (sequences {:?}..{:?} vs {:?}..{:?})",
        got.len(),
        want.len(),
        got.first().map(|e| e.sequence),
        got.last().map(|e| e.sequence),
        want.first().map(|e| e.sequence),
        want.last().map(|e| e.sequence),
    );
}
