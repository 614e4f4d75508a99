//! The limits of contract rule 4 and "Words": sequences up to
//! [`MAX_SEQUENCE`] and no further, bounds of reads and truncations beyond
//! it (`u64::MAX`: "to the end"), and a `MessageReceived` without a
//! `message_id`.
//!
//! No test can append 2^53 entries, so the appends near the top are checked
//! through what the backend reports: an append at `MAX_SEQUENCE` on a fresh
//! actor passes validation and reaches storage, which answers with a
//! `SequenceConflict` naming the sequence exactly as given. The backends
//! that store the highest sequence in a server (PostgreSQL, Redis) also
//! test appends at the limit with a highest sequence seeded there, in their
//! own crates.

use std::future::Future;
use std::sync::Arc;

use journal_core::journal_entry::Entry;
use journal_core::validate::MAX_SEQUENCE;
use journal_core::{JournalEntry, JournalError, JournalResult, JournalStorage};

use crate::fixture::{
    append_each, assert_conflict, assert_invalid_entry, checkpoint, collect_stream, entries, entry,
    fresh_actor, save_checkpoints, seqs,
};

/// Asserts an `InvalidEntry` whose reason names `number` and the limit.
#[track_caller]
fn assert_invalid_entry_naming<T: std::fmt::Debug>(result: JournalResult<T>, number: u64) {
    match result {
        Err(JournalError::InvalidEntry(reason)) => {
            for named in [number, MAX_SEQUENCE] {
                assert!(
                    reason.contains(&named.to_string()),
                    "the reason should name {named}: {reason:?}"
                );
            }
        }
        other => panic!("expected InvalidEntry naming {number}, got {other:?}"),
    }
}

/// Rule 4: a sequence above `MAX_SEQUENCE` is `InvalidEntry`, naming the
/// sequence as given and the limit, alone or in a batch, and writes
/// nothing.
pub async fn limits_sequence_above_max_rejected(storage: Arc<dyn JournalStorage>) {
    let actor = fresh_actor("lim-above");
    for bad in [MAX_SEQUENCE + 1, MAX_SEQUENCE + 2, u64::MAX] {
        let result = storage.append_entry(&entry(&actor, bad)).await;
        assert_invalid_entry_naming(result, bad);
    }
    let running_past = [entry(&actor, MAX_SEQUENCE), entry(&actor, MAX_SEQUENCE + 1)];
    assert_invalid_entry_naming(storage.append_batch(&running_past).await, MAX_SEQUENCE + 1);
    let starting_past = entries(&actor, u64::MAX - 1, u64::MAX);
    assert_invalid_entry_naming(storage.append_batch(&starting_past).await, u64::MAX - 1);
    assert_eq!(storage.highest_sequence(&actor).await.expect("highest"), 0);
    assert!(storage
        .replay_from(&actor, 0)
        .await
        .expect("replay")
        .is_empty());
    // The actor is still usable from 1.
    append_each(&*storage, &[entry(&actor, 1)]).await;
}

/// Rule 4: sequences up to `MAX_SEQUENCE` pass validation: on a fresh actor
/// they reach storage and come back as a `SequenceConflict` naming them
/// exactly as given (no clamping, no rounding through a double).
pub async fn limits_sequence_up_to_max_reaches_storage(storage: Arc<dyn JournalStorage>) {
    let actor = fresh_actor("lim-upto");
    for near in [MAX_SEQUENCE - 1, MAX_SEQUENCE] {
        assert_conflict(storage.append_entry(&entry(&actor, near)).await, 1, near);
        let batch = entries(&actor, near - 1, near);
        assert_conflict(storage.append_batch(&batch).await, 1, near - 1);
    }
    append_each(&*storage, &entries(&actor, 1, 2)).await;
    assert_conflict(
        storage.append_entry(&entry(&actor, MAX_SEQUENCE)).await,
        3,
        MAX_SEQUENCE,
    );
    assert_eq!(storage.highest_sequence(&actor).await.expect("highest"), 2);
}

/// Rules 6, 7 and 14: bounds beyond `MAX_SEQUENCE`, `u64::MAX` included,
/// mean "to the end": they neither fail nor wrap.
pub async fn limits_unbounded_reads_and_truncation(storage: Arc<dyn JournalStorage>) {
    let actor = fresh_actor("lim-bounds");
    let stored = entries(&actor, 1, 3);
    append_each(&*storage, &stored).await;
    let range = |from, to, max| {
        let storage = Arc::clone(&storage);
        let actor = actor.clone();
        async move {
            storage
                .replay_range(&actor, from, to, max)
                .await
                .unwrap_or_else(|e| panic!("replay_range({from}, {to}, {max}): {e}"))
        }
    };
    assert_eq!(range(0, u64::MAX, usize::MAX).await, stored);
    assert_eq!(range(2, u64::MAX, usize::MAX).await, stored[1..]);
    assert_eq!(range(1, MAX_SEQUENCE + 1, 2).await, stored[..2]);
    assert_eq!(range(1, u64::MAX, 1).await, stored[..1]);
    for from in [MAX_SEQUENCE, MAX_SEQUENCE + 1, u64::MAX] {
        assert!(range(from, u64::MAX, usize::MAX).await.is_empty(), "{from}");
        assert!(storage
            .replay_from(&actor, from)
            .await
            .expect("replay_from")
            .is_empty());
        assert!(collect_stream(&*storage, &actor, from).await.is_empty());
    }
    assert_eq!(collect_stream(&*storage, &actor, 1).await, stored);

    save_checkpoints(&*storage, &actor, &[1, 3]).await;
    assert!(storage
        .get_checkpoint(&actor, u64::MAX)
        .await
        .expect("get_checkpoint")
        .is_none());
    assert!(storage
        .get_checkpoint(&actor, MAX_SEQUENCE + 1)
        .await
        .expect("get_checkpoint")
        .is_none());

    storage
        .truncate_to(&actor, u64::MAX)
        .await
        .expect("truncate");
    assert!(storage
        .replay_from(&actor, 0)
        .await
        .expect("replay")
        .is_empty());
    assert_eq!(storage.highest_sequence(&actor).await.expect("highest"), 3);
    append_each(&*storage, &[entry(&actor, 4)]).await;
    assert_eq!(
        seqs(&range(0, u64::MAX, usize::MAX).await),
        vec![4],
        "after truncating to u64::MAX"
    );
    storage
        .truncate_to(&actor, MAX_SEQUENCE + 1)
        .await
        .expect("truncate past the limit");
    assert!(range(0, u64::MAX, usize::MAX).await.is_empty());
    assert_eq!(storage.highest_sequence(&actor).await.expect("highest"), 4);

    let removed = storage
        .delete_checkpoints_before(&actor, u64::MAX)
        .await
        .expect("delete checkpoints");
    assert_eq!(removed, 2);
    assert!(storage
        .list_checkpoints(&actor)
        .await
        .expect("list")
        .is_empty());
}

/// Rule 10: a checkpoint above `MAX_SEQUENCE` is `InvalidCheckpoint`, naming
/// the sequence, and is not stored.
pub async fn limits_checkpoint_above_max_rejected(storage: Arc<dyn JournalStorage>) {
    let actor = fresh_actor("lim-cp");
    append_each(&*storage, &entries(&actor, 1, 2)).await;
    for bad in [MAX_SEQUENCE + 1, u64::MAX] {
        match storage.save_checkpoint(&checkpoint(&actor, bad)).await {
            Err(JournalError::InvalidCheckpoint(reason)) => assert!(
                reason.contains(&bad.to_string()),
                "the reason should name {bad}: {reason:?}"
            ),
            other => panic!("checkpoint at {bad}: expected InvalidCheckpoint, got {other:?}"),
        }
    }
    // At the limit it passes validation and fails the backend's own check.
    match storage
        .save_checkpoint(&checkpoint(&actor, MAX_SEQUENCE))
        .await
    {
        Err(JournalError::InvalidCheckpoint(reason)) => assert!(
            reason.contains(&MAX_SEQUENCE.to_string()),
            "the reason should name {MAX_SEQUENCE}: {reason:?}"
        ),
        other => panic!("checkpoint at MAX_SEQUENCE: expected InvalidCheckpoint, got {other:?}"),
    }
    assert!(storage
        .list_checkpoints(&actor)
        .await
        .expect("list")
        .is_empty());
}

/// Rule 4: a `MessageReceived` with an empty `message_id` is
/// `InvalidEntry`, alone or in a batch, and writes nothing.
pub async fn rule04_message_received_without_message_id_rejected(storage: Arc<dyn JournalStorage>) {
    let actor = fresh_actor("r04-msgid");
    let nameless = JournalEntry::new(
        &actor,
        1,
        Entry::message_received("", "Deposit", b"100".to_vec()),
    );
    match storage.append_entry(&nameless).await {
        Err(JournalError::InvalidEntry(reason)) => {
            assert!(reason.contains("message_id"), "{reason:?}");
        }
        other => panic!("expected InvalidEntry, got {other:?}"),
    }
    let batch = [
        entry(&actor, 1),
        JournalEntry {
            sequence: 2,
            ..nameless.clone()
        },
    ];
    assert!(matches!(
        storage.append_batch(&batch).await,
        Err(JournalError::InvalidEntry(_))
    ));
    assert_eq!(storage.highest_sequence(&actor).await.expect("highest"), 0);
    append_each(&*storage, &[entry(&actor, 1)]).await;
}

/// Rule 4: an entry id holding a NUL character is `InvalidEntry` on every
/// backend (PostgreSQL's text cannot store one, and any journal must copy
/// to any backend), alone or in a batch, and writes nothing.
pub async fn rule04_entry_id_with_nul_rejected(storage: Arc<dyn JournalStorage>) {
    let actor = fresh_actor("r04-nul");
    let nul = JournalEntry {
        id: "01J\0X".into(),
        ..entry(&actor, 1)
    };
    match storage.append_entry(&nul).await {
        Err(JournalError::InvalidEntry(reason)) => {
            assert!(reason.contains("NUL"), "{reason:?}");
        }
        other => panic!("expected InvalidEntry, got {other:?}"),
    }
    let batch = [
        entry(&actor, 1),
        JournalEntry {
            sequence: 2,
            ..nul.clone()
        },
    ];
    assert!(matches!(
        storage.append_batch(&batch).await,
        Err(JournalError::InvalidEntry(_))
    ));
    assert_eq!(storage.highest_sequence(&actor).await.expect("highest"), 0);
    append_each(&*storage, &[entry(&actor, 1)]).await;
}

/// Rules 1, 5, 10 and 14 at the top of the range, for a backend that can
/// start an actor there: `seed(actor, highest)` must make `highest` the
/// actor's highest sequence, with no entry stored, the way the backend
/// itself stores it (in the server, bypassing the API). Not part of
/// [`suite!`](crate::suite): each backend that can seed calls it from its
/// own tests.
///
/// Checks that an append at `highest + 1 = MAX_SEQUENCE` succeeds, that its
/// retry is `Ok`, that conflicts report `expected` and `actual` exactly as
/// given, that a batch ending at the limit is atomic and retryable, and
/// that checkpoints, reads and truncation work at the limit.
pub async fn near_the_top<F, Fut>(storage: Arc<dyn JournalStorage>, seed: F)
where
    F: Fn(String, u64) -> Fut,
    Fut: Future<Output = ()>,
{
    let top = fresh_actor("lim-top");
    seed(top.clone(), MAX_SEQUENCE - 1).await;
    one_entry_at_the_top(&*storage, &top).await;

    // A gap below the limit names both sides exactly.
    let gap = fresh_actor("lim-gap");
    seed(gap.clone(), MAX_SEQUENCE - 3).await;
    assert_conflict(
        storage.append_entry(&entry(&gap, MAX_SEQUENCE)).await,
        MAX_SEQUENCE - 2,
        MAX_SEQUENCE,
    );
    assert_conflict(
        storage.append_entry(&entry(&gap, MAX_SEQUENCE - 4)).await,
        MAX_SEQUENCE - 2,
        MAX_SEQUENCE - 4,
    );
    assert_eq!(
        storage.highest_sequence(&gap).await.expect("highest"),
        MAX_SEQUENCE - 3
    );

    // A batch ending at the limit: atomic, and its retry is Ok.
    let batch_actor = fresh_actor("lim-batch");
    seed(batch_actor.clone(), MAX_SEQUENCE - 2).await;
    let batch = entries(&batch_actor, MAX_SEQUENCE - 1, MAX_SEQUENCE);
    let past = [
        batch[0].clone(),
        batch[1].clone(),
        entry(&batch_actor, MAX_SEQUENCE + 1),
    ];
    assert_invalid_entry(storage.append_batch(&past).await);
    storage.append_batch(&batch).await.expect("batch");
    storage.append_batch(&batch).await.expect("batch retry");
    assert_eq!(
        storage
            .replay_from(&batch_actor, MAX_SEQUENCE - 2)
            .await
            .expect("replay"),
        batch
    );
    assert_eq!(
        storage
            .highest_sequence(&batch_actor)
            .await
            .expect("highest"),
        MAX_SEQUENCE
    );
}

/// The first part of [`near_the_top`]: `actor`, seeded at
/// `MAX_SEQUENCE - 1`, gets its last entry, a retry, conflicts, checkpoints
/// and truncation.
async fn one_entry_at_the_top(storage: &dyn JournalStorage, actor: &str) {
    let actor = actor.to_owned();
    assert_eq!(
        storage.highest_sequence(&actor).await.expect("highest"),
        MAX_SEQUENCE - 1,
        "seeded"
    );
    let last = entry(&actor, MAX_SEQUENCE);
    assert_eq!(
        storage
            .append_entry(&last)
            .await
            .expect("append at the limit"),
        MAX_SEQUENCE
    );
    assert_eq!(
        storage
            .append_entry(&last)
            .await
            .expect("retry at the limit"),
        MAX_SEQUENCE
    );
    assert_conflict(
        storage.append_entry(&entry(&actor, MAX_SEQUENCE)).await,
        MAX_SEQUENCE + 1,
        MAX_SEQUENCE,
    );
    assert_conflict(
        storage.append_entry(&entry(&actor, MAX_SEQUENCE - 1)).await,
        MAX_SEQUENCE + 1,
        MAX_SEQUENCE - 1,
    );
    assert_invalid_entry(storage.append_entry(&entry(&actor, MAX_SEQUENCE + 1)).await);
    assert_eq!(
        storage.highest_sequence(&actor).await.expect("highest"),
        MAX_SEQUENCE
    );
    assert_eq!(
        storage.replay_from(&actor, 0).await.expect("replay"),
        vec![last.clone()]
    );
    assert_eq!(
        storage
            .replay_range(&actor, MAX_SEQUENCE, u64::MAX, 10)
            .await
            .expect("range"),
        vec![last.clone()]
    );
    assert!(storage
        .replay_range(&actor, MAX_SEQUENCE - 1, MAX_SEQUENCE - 1, 10)
        .await
        .expect("range")
        .is_empty());
    assert_eq!(
        collect_stream(storage, &actor, MAX_SEQUENCE).await,
        vec![last]
    );

    checkpoints_at_the_top(storage, &actor).await;
    storage
        .truncate_to(&actor, MAX_SEQUENCE - 1)
        .await
        .expect("truncate below");
    assert_eq!(
        storage.replay_from(&actor, 0).await.expect("replay").len(),
        1
    );
    storage
        .truncate_to(&actor, u64::MAX)
        .await
        .expect("truncate all");
    assert!(storage
        .replay_from(&actor, 0)
        .await
        .expect("replay")
        .is_empty());
    assert_eq!(
        storage.highest_sequence(&actor).await.expect("highest"),
        MAX_SEQUENCE
    );
    assert_conflict(
        storage.append_entry(&entry(&actor, MAX_SEQUENCE)).await,
        MAX_SEQUENCE + 1,
        MAX_SEQUENCE,
    );
}

/// Checkpoints of `actor`, whose highest is `MAX_SEQUENCE`, at the limit
/// and just below: ordered, pruned and read exactly.
async fn checkpoints_at_the_top(storage: &dyn JournalStorage, actor: &str) {
    let actor = actor.to_owned();
    save_checkpoints(storage, &actor, &[MAX_SEQUENCE - 1, MAX_SEQUENCE]).await;
    assert_eq!(
        storage.list_checkpoints(&actor).await.expect("list"),
        vec![MAX_SEQUENCE - 1, MAX_SEQUENCE]
    );
    let latest = storage
        .get_latest_checkpoint(&actor)
        .await
        .expect("latest")
        .expect("a checkpoint");
    assert_eq!(latest.sequence, MAX_SEQUENCE);
    assert_eq!(
        latest.state_data,
        checkpoint(&actor, MAX_SEQUENCE).state_data
    );
    assert_eq!(
        storage
            .delete_checkpoints_before(&actor, MAX_SEQUENCE)
            .await
            .expect("prune"),
        1
    );
    assert_eq!(
        storage.list_checkpoints(&actor).await.expect("list"),
        vec![MAX_SEQUENCE]
    );
}
