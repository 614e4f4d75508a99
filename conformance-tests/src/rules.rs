//! One or more tests per storage rule of the contract; each name starts with
//! its rule number (`rule05_...` is rule 5).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use futures::TryStreamExt;
use journal_core::journal_entry::Entry;
use journal_core::{JournalEntry, JournalError, JournalStorage};

use crate::fixture::{
    append_each, assert_conflict, assert_invalid_checkpoint, assert_invalid_entry,
    assert_no_checkpoints, checkpoint, collect_stream, entries, entry, fresh_actor, pattern,
    rich_entry, save_checkpoints, seqs,
};

/// Rule 1: the first append of an actor carries sequence 1.
pub async fn rule01_first_append_is_sequence_one(storage: Arc<dyn JournalStorage>) {
    let actor = fresh_actor("r01-first");
    assert_conflict(storage.append_entry(&entry(&actor, 2)).await, 1, 2);
    assert_eq!(
        storage
            .append_entry(&entry(&actor, 1))
            .await
            .expect("append 1"),
        1
    );
    assert_eq!(storage.highest_sequence(&actor).await.expect("highest"), 1);
}

/// Rule 1: only `highest + 1` is accepted; repeats and gaps are conflicts
/// naming the expected and the actual sequence.
pub async fn rule01_append_needs_highest_plus_one(storage: Arc<dyn JournalStorage>) {
    let actor = fresh_actor("r01-next");
    append_each(&*storage, &entries(&actor, 1, 3)).await;
    assert_conflict(storage.append_entry(&entry(&actor, 5)).await, 4, 5);
    assert_conflict(storage.append_entry(&entry(&actor, 3)).await, 4, 3);
    assert_conflict(storage.append_entry(&entry(&actor, 1)).await, 4, 1);
    match storage.append_entry(&entry(&actor, 9)).await {
        Err(JournalError::SequenceConflict { actor_id, .. }) => assert_eq!(actor_id, actor),
        other => panic!("expected a conflict naming the actor, got {other:?}"),
    }
    append_each(&*storage, &[entry(&actor, 4)]).await;
}

/// Rule 1: a conflicting append writes nothing.
pub async fn rule01_conflict_writes_nothing(storage: Arc<dyn JournalStorage>) {
    let actor = fresh_actor("r01-nothing");
    let stored = entries(&actor, 1, 2);
    append_each(&*storage, &stored).await;
    assert!(storage.append_entry(&entry(&actor, 2)).await.is_err());
    assert!(storage.append_entry(&entry(&actor, 4)).await.is_err());
    assert_eq!(
        storage.replay_from(&actor, 1).await.expect("replay"),
        stored
    );
    assert_eq!(storage.highest_sequence(&actor).await.expect("highest"), 2);
}

/// Rule 1: sequences of different actors are independent.
pub async fn rule01_sequences_are_per_actor(storage: Arc<dyn JournalStorage>) {
    let a = fresh_actor("r01-a");
    let b = fresh_actor("r01-b");
    append_each(&*storage, &entries(&a, 1, 3)).await;
    append_each(&*storage, &entries(&b, 1, 1)).await;
    assert_eq!(storage.highest_sequence(&a).await.expect("highest a"), 3);
    assert_eq!(storage.highest_sequence(&b).await.expect("highest b"), 1);
    assert_eq!(
        seqs(&storage.replay_from(&b, 1).await.expect("replay b")),
        vec![1]
    );
}

/// Rule 1: of writers racing for the same sequences of one actor, exactly one
/// wins each sequence; the journal has no gap and no duplicate, and each
/// stored entry is the winner's.
pub async fn rule01_racing_writers_one_wins_each_sequence(storage: Arc<dyn JournalStorage>) {
    const WRITERS: usize = 8;
    const SEQUENCES: u64 = 40;
    let actor = fresh_actor("r01-race");
    let mut tasks = Vec::new();
    for _ in 0..WRITERS {
        let storage = Arc::clone(&storage);
        let actor = actor.clone();
        tasks.push(tokio::spawn(async move {
            let mut won = Vec::new();
            for seq in 1..=SEQUENCES {
                let e = entry(&actor, seq);
                match storage.append_entry(&e).await {
                    Ok(_) => won.push((seq, e.id)),
                    Err(JournalError::SequenceConflict { .. }) => {}
                    Err(other) => panic!("unexpected error racing for {seq}: {other}"),
                }
            }
            won
        }));
    }
    let mut winners = std::collections::BTreeMap::new();
    for task in tasks {
        for (seq, id) in task.await.expect("writer task") {
            assert!(
                winners.insert(seq, id).is_none(),
                "two writers won sequence {seq}"
            );
        }
    }
    let stored = storage.replay_from(&actor, 1).await.expect("replay");
    assert_eq!(seqs(&stored), (1..=SEQUENCES).collect::<Vec<_>>());
    assert_eq!(
        winners.len() as u64,
        SEQUENCES,
        "every sequence has exactly one winner"
    );
    for e in stored {
        assert_eq!(
            Some(&e.id),
            winners.get(&e.sequence),
            "stored entry {} is the winner's",
            e.sequence
        );
    }
}

/// Rule 2: a batch appends contiguous entries after single appends.
pub async fn rule02_batch_appends_contiguous_entries(storage: Arc<dyn JournalStorage>) {
    let actor = fresh_actor("r02-batch");
    append_each(&*storage, &entries(&actor, 1, 2)).await;
    let batch = entries(&actor, 3, 7);
    storage.append_batch(&batch).await.expect("batch");
    let stored = storage.replay_from(&actor, 3).await.expect("replay");
    assert_eq!(stored, batch);
    assert_eq!(storage.highest_sequence(&actor).await.expect("highest"), 7);
    append_each(&*storage, &[entry(&actor, 8)]).await;
}

/// Rule 2: after a failed batch none of its entries is visible.
pub async fn rule02_batch_is_all_or_nothing(storage: Arc<dyn JournalStorage>) {
    let actor = fresh_actor("r02-atomic");
    append_each(&*storage, &entries(&actor, 1, 3)).await;
    // Overlaps the stored 3 with another id: the whole batch fails.
    let overlapping = entries(&actor, 3, 6);
    assert_conflict(storage.append_batch(&overlapping).await, 4, 3);
    assert_eq!(
        seqs(&storage.replay_from(&actor, 1).await.expect("replay")),
        vec![1, 2, 3]
    );
    assert_eq!(storage.highest_sequence(&actor).await.expect("highest"), 3);
    // The same batch with an invalid last entry fails whole too.
    let mut bad = entries(&actor, 4, 6);
    bad[2].entry = None;
    assert_invalid_entry(storage.append_batch(&bad).await);
    assert_eq!(storage.highest_sequence(&actor).await.expect("highest"), 3);
}

/// Rule 2: an empty batch is a no-op.
pub async fn rule02_empty_batch_is_a_noop(storage: Arc<dyn JournalStorage>) {
    let actor = fresh_actor("r02-empty");
    storage.append_batch(&[]).await.expect("empty batch");
    append_each(&*storage, &entries(&actor, 1, 1)).await;
    storage.append_batch(&[]).await.expect("empty batch");
    assert_eq!(storage.highest_sequence(&actor).await.expect("highest"), 1);
}

/// Rule 2: a batch must start at `highest + 1`.
pub async fn rule02_batch_must_start_at_highest_plus_one(storage: Arc<dyn JournalStorage>) {
    let actor = fresh_actor("r02-start");
    assert_conflict(storage.append_batch(&entries(&actor, 2, 4)).await, 1, 2);
    storage
        .append_batch(&entries(&actor, 1, 2))
        .await
        .expect("batch at 1");
    assert_conflict(storage.append_batch(&entries(&actor, 4, 5)).await, 3, 4);
    assert_eq!(storage.highest_sequence(&actor).await.expect("highest"), 2);
}

/// Rule 4: an empty actor id is rejected.
pub async fn rule04_empty_actor_id_rejected(storage: Arc<dyn JournalStorage>) {
    assert_invalid_entry(storage.append_entry(&entry("", 1)).await);
    assert_invalid_entry(storage.append_batch(&entries("", 1, 2)).await);
}

/// Rule 4: actor ids of 255 bytes are accepted, of 256 rejected.
pub async fn rule04_actor_id_byte_limit(storage: Arc<dyn JournalStorage>) {
    let base = fresh_actor("r04-len");
    // Multi-byte characters up to exactly 255 bytes.
    let mut id = base.clone();
    while id.len() + 'é'.len_utf8() <= 255 {
        id.push('é');
    }
    while id.len() < 255 {
        id.push('x');
    }
    assert_eq!(id.len(), 255);
    append_each(&*storage, &[entry(&id, 1)]).await;
    assert_eq!(storage.replay_from(&id, 1).await.expect("replay").len(), 1);
    let too_long = format!("{id}y");
    assert_invalid_entry(storage.append_entry(&entry(&too_long, 1)).await);
    assert_eq!(storage.highest_sequence(&too_long).await.unwrap_or(0), 0);
}

/// Rule 4: sequence 0 is rejected.
pub async fn rule04_sequence_zero_rejected(storage: Arc<dyn JournalStorage>) {
    let actor = fresh_actor("r04-zero");
    assert_invalid_entry(storage.append_entry(&entry(&actor, 0)).await);
    assert_invalid_entry(storage.append_batch(&entries(&actor, 0, 2)).await);
    assert_eq!(storage.highest_sequence(&actor).await.expect("highest"), 0);
}

/// Rule 4: an entry without a variant is rejected.
pub async fn rule04_missing_variant_rejected(storage: Arc<dyn JournalStorage>) {
    let actor = fresh_actor("r04-variant");
    let mut e = entry(&actor, 1);
    e.entry = None;
    assert_invalid_entry(storage.append_entry(&e).await);
    assert_eq!(
        storage.replay_from(&actor, 0).await.expect("replay"),
        vec![]
    );
}

/// Rule 4: an entry over the default 16 MiB limit is rejected.
pub async fn rule04_oversized_entry_rejected(storage: Arc<dyn JournalStorage>) {
    let actor = fresh_actor("r04-size");
    let big = JournalEntry::new(
        &actor,
        1,
        Entry::message_received("m", "Big", vec![7u8; 16 * 1024 * 1024 + 1]),
    );
    assert_invalid_entry(storage.append_entry(&big).await);
    assert_invalid_entry(storage.append_batch(&[big]).await);
    assert_eq!(storage.highest_sequence(&actor).await.expect("highest"), 0);
}

/// Rule 4: a batch mixing actors is rejected, and writes nothing.
pub async fn rule04_batch_mixing_actors_rejected(storage: Arc<dyn JournalStorage>) {
    let a = fresh_actor("r04-mix-a");
    let b = fresh_actor("r04-mix-b");
    assert_invalid_entry(storage.append_batch(&[entry(&a, 1), entry(&b, 2)]).await);
    assert_eq!(storage.highest_sequence(&a).await.expect("highest"), 0);
    assert_eq!(storage.highest_sequence(&b).await.expect("highest"), 0);
}

/// Rule 4: a batch with a gap or a repeated sequence is rejected.
pub async fn rule04_batch_with_gap_rejected(storage: Arc<dyn JournalStorage>) {
    let actor = fresh_actor("r04-gap");
    assert_invalid_entry(
        storage
            .append_batch(&[entry(&actor, 1), entry(&actor, 3)])
            .await,
    );
    assert_invalid_entry(
        storage
            .append_batch(&[entry(&actor, 1), entry(&actor, 1)])
            .await,
    );
    assert_invalid_entry(
        storage
            .append_batch(&[entry(&actor, 2), entry(&actor, 1)])
            .await,
    );
    assert_eq!(storage.highest_sequence(&actor).await.expect("highest"), 0);
}

/// Rule 5: re-appending a stored entry returns `Ok` and stores nothing new.
pub async fn rule05_retry_of_stored_entry_is_ok(storage: Arc<dyn JournalStorage>) {
    let actor = fresh_actor("r05-retry");
    let stored = entries(&actor, 1, 3);
    append_each(&*storage, &stored).await;
    for e in &stored {
        assert_eq!(storage.append_entry(e).await.expect("retry"), e.sequence);
    }
    assert_eq!(
        storage.replay_from(&actor, 1).await.expect("replay"),
        stored
    );
    assert_eq!(storage.highest_sequence(&actor).await.expect("highest"), 3);
}

/// Rule 5: the same sequence with another id is a conflict.
pub async fn rule05_same_sequence_other_id_conflicts(storage: Arc<dyn JournalStorage>) {
    let actor = fresh_actor("r05-other");
    let stored = entries(&actor, 1, 2);
    append_each(&*storage, &stored).await;
    let impostor = JournalEntry {
        id: journal_core::new_entry_id(),
        ..stored[1].clone()
    };
    assert_conflict(storage.append_entry(&impostor).await, 3, 2);
    assert_eq!(
        storage.replay_from(&actor, 1).await.expect("replay"),
        stored
    );
}

/// Rule 5: re-appending a stored batch is `Ok`; one differing id makes it a
/// conflict.
pub async fn rule05_retry_of_stored_batch_is_ok(storage: Arc<dyn JournalStorage>) {
    let actor = fresh_actor("r05-batch");
    let batch = entries(&actor, 1, 4);
    storage.append_batch(&batch).await.expect("batch");
    storage.append_batch(&batch).await.expect("batch retry");
    storage
        .append_batch(&batch[1..3])
        .await
        .expect("retry of a stored slice");
    let mut changed = batch.clone();
    changed[3].id = journal_core::new_entry_id();
    assert_conflict(storage.append_batch(&changed).await, 5, 1);
    // A retry running past the end is no retry: it is a conflict.
    let mut longer = batch.clone();
    longer.push(entry(&actor, 5));
    assert_conflict(storage.append_batch(&longer).await, 5, 1);
    assert_eq!(storage.replay_from(&actor, 1).await.expect("replay"), batch);
}

/// Rule 5: many tasks retrying the same entry at once all succeed and one
/// copy is stored.
pub async fn rule05_concurrent_retries_store_one_copy(storage: Arc<dyn JournalStorage>) {
    let actor = fresh_actor("r05-concurrent");
    let e = entry(&actor, 1);
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let storage = Arc::clone(&storage);
            let e = e.clone();
            tokio::spawn(async move { storage.append_entry(&e).await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.expect("task").expect("every retry succeeds"), 1);
    }
    assert_eq!(
        storage.replay_from(&actor, 1).await.expect("replay"),
        vec![e]
    );
}

/// Rule 5: an entry removed by truncation is no longer stored, so appending
/// it again is a conflict (never a second copy).
pub async fn rule05_retry_of_truncated_entry_conflicts(storage: Arc<dyn JournalStorage>) {
    let actor = fresh_actor("r05-truncated");
    let stored = entries(&actor, 1, 3);
    append_each(&*storage, &stored).await;
    storage.truncate_to(&actor, 2).await.expect("truncate");
    assert_conflict(storage.append_entry(&stored[0]).await, 4, 1);
    assert_eq!(
        storage
            .append_entry(&stored[2])
            .await
            .expect("retry of kept entry"),
        3
    );
    assert_eq!(
        seqs(&storage.replay_from(&actor, 1).await.expect("replay")),
        vec![3]
    );
}

/// Rule 6: replay returns each entry as appended, field by field, for every
/// variant.
pub async fn rule06_replay_returns_entries_field_by_field(storage: Arc<dyn JournalStorage>) {
    let actor = fresh_actor("r06-fields");
    let written: Vec<_> = (1..=16).map(|s| rich_entry(&actor, s)).collect();
    append_each(&*storage, &written[..8]).await;
    storage.append_batch(&written[8..]).await.expect("batch");
    let read = storage.replay_from(&actor, 1).await.expect("replay");
    assert_eq!(read.len(), written.len());
    for (w, r) in written.iter().zip(&read) {
        assert_eq!(w, r, "entry {} differs after a round trip", w.sequence);
    }
}

/// Rule 6: `from = 0` and `from = 1` mean the same.
pub async fn rule06_from_zero_equals_from_one(storage: Arc<dyn JournalStorage>) {
    let actor = fresh_actor("r06-zero");
    append_each(&*storage, &entries(&actor, 1, 4)).await;
    let zero = storage.replay_from(&actor, 0).await.expect("replay 0");
    assert_eq!(
        zero,
        storage.replay_from(&actor, 1).await.expect("replay 1")
    );
    assert_eq!(zero.len(), 4);
}

/// Rule 6: `from > highest` gives an empty list.
pub async fn rule06_from_past_highest_is_empty(storage: Arc<dyn JournalStorage>) {
    let actor = fresh_actor("r06-past");
    append_each(&*storage, &entries(&actor, 1, 3)).await;
    assert_eq!(
        seqs(&storage.replay_from(&actor, 3).await.expect("replay")),
        vec![3]
    );
    assert!(storage
        .replay_from(&actor, 4)
        .await
        .expect("replay")
        .is_empty());
    assert!(storage
        .replay_from(&actor, u64::MAX)
        .await
        .expect("replay")
        .is_empty());
}

/// Rule 6: an unknown actor replays as an empty list, not an error.
pub async fn rule06_unknown_actor_is_empty(storage: Arc<dyn JournalStorage>) {
    let actor = fresh_actor("r06-unknown");
    assert!(storage
        .replay_from(&actor, 1)
        .await
        .expect("replay")
        .is_empty());
    assert!(storage
        .replay_range(&actor, 1, 10, 10)
        .await
        .expect("range")
        .is_empty());
}

/// Rule 6: an 8 MiB payload round-trips byte for byte.
pub async fn rule06_eight_mib_payload_round_trips(storage: Arc<dyn JournalStorage>) {
    let actor = fresh_actor("r06-8mib");
    let big = JournalEntry::new(
        &actor,
        1,
        Entry::message_received("m", "Big", pattern(8 * 1024 * 1024, 11)),
    );
    append_each(&*storage, std::slice::from_ref(&big)).await;
    assert_eq!(
        storage.replay_from(&actor, 1).await.expect("replay"),
        vec![big]
    );
}

/// Rule 7: the streaming replay agrees with `replay_from` on a journal of
/// many pages, from several starting points.
pub async fn rule07_stream_agrees_with_list(storage: Arc<dyn JournalStorage>) {
    let actor = fresh_actor("r07-stream");
    let page = storage.replay_page_size().max(1) as u64;
    let total = (page * 3 + page / 2).clamp(50, 3_000);
    let all = entries(&actor, 1, total);
    for chunk in all.chunks(500) {
        storage.append_batch(chunk).await.expect("batch");
    }
    for from in [0, 1, 2, page, page + 1, total - 1, total, total + 1] {
        let streamed = collect_stream(&*storage, &actor, from).await;
        let listed = storage.replay_from(&actor, from).await.expect("replay");
        assert_eq!(seqs(&streamed), seqs(&listed), "stream vs list from {from}");
        assert_eq!(streamed, listed);
    }
}

/// Rule 7: streaming an unknown actor yields nothing.
pub async fn rule07_stream_of_unknown_actor_is_empty(storage: Arc<dyn JournalStorage>) {
    let actor = fresh_actor("r07-unknown");
    assert!(collect_stream(&*storage, &actor, 1).await.is_empty());
}

/// Rule 7 and 14: after truncation the stream starts after the truncated
/// part.
pub async fn rule07_stream_starts_after_truncation(storage: Arc<dyn JournalStorage>) {
    let actor = fresh_actor("r07-trunc");
    storage
        .append_batch(&entries(&actor, 1, 20))
        .await
        .expect("batch");
    storage.truncate_to(&actor, 12).await.expect("truncate");
    assert_eq!(
        seqs(&collect_stream(&*storage, &actor, 1).await),
        (13..=20).collect::<Vec<_>>()
    );
    assert_eq!(
        seqs(&collect_stream(&*storage, &actor, 15).await),
        (15..=20).collect::<Vec<_>>()
    );
}

/// Rule 8: an unknown actor's highest sequence is 0.
pub async fn rule08_highest_of_unknown_actor_is_zero(storage: Arc<dyn JournalStorage>) {
    assert_eq!(
        storage
            .highest_sequence(&fresh_actor("r08-unknown"))
            .await
            .expect("highest"),
        0
    );
}

/// Rule 8: the highest sequence follows single and batch appends.
pub async fn rule08_highest_tracks_appends_and_batches(storage: Arc<dyn JournalStorage>) {
    let actor = fresh_actor("r08-tracks");
    append_each(&*storage, &entries(&actor, 1, 1)).await;
    assert_eq!(storage.highest_sequence(&actor).await.expect("highest"), 1);
    storage
        .append_batch(&entries(&actor, 2, 9))
        .await
        .expect("batch");
    assert_eq!(storage.highest_sequence(&actor).await.expect("highest"), 9);
    assert!(storage.append_entry(&entry(&actor, 11)).await.is_err());
    assert_eq!(storage.highest_sequence(&actor).await.expect("highest"), 9);
}

/// Rule 9: readers running beside a writer of 5-entry batches only ever see
/// whole batches.
pub async fn rule09_readers_never_see_partial_batch(storage: Arc<dyn JournalStorage>) {
    const BATCH: u64 = 5;
    const BATCHES: u64 = 60;
    let actor = fresh_actor("r09-partial");
    let done = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (storage, actor, done, reads) = (
                Arc::clone(&storage),
                actor.clone(),
                Arc::clone(&done),
                Arc::clone(&reads),
            );
            tokio::spawn(async move {
                // Keep reading until the writer is done, and at least a few times.
                let mut own_reads = 0;
                while !done.load(Ordering::Acquire) || own_reads < 3 {
                    let seen = storage.replay_from(&actor, 1).await.expect("replay");
                    assert_eq!(
                        seen.len() as u64 % BATCH,
                        0,
                        "a reader saw {} entries",
                        seen.len()
                    );
                    let highest = storage.highest_sequence(&actor).await.expect("highest");
                    assert_eq!(highest % BATCH, 0, "a reader saw highest {highest}");
                    own_reads += 1;
                    tokio::task::yield_now().await;
                }
                reads.fetch_add(own_reads, Ordering::Relaxed);
            })
        })
        .collect();
    for b in 0..BATCHES {
        let start = b * BATCH + 1;
        storage
            .append_batch(&entries(&actor, start, start + BATCH - 1))
            .await
            .expect("batch");
    }
    done.store(true, Ordering::Release);
    for r in readers {
        r.await.expect("reader task");
    }
    assert!(reads.load(Ordering::Relaxed) >= 6);
    assert_eq!(
        storage.highest_sequence(&actor).await.expect("highest"),
        BATCH * BATCHES
    );
}

/// Rule 9, deterministically: every time a batch's append is not finished
/// after a poll, the test reads the journal (highest sequence, `replay_from`,
/// `replay_range` and a stream) before polling it again, and each read must
/// show the journal either without the batch or with all of it. A backend
/// that writes a batch entry by entry and yields to the runtime in between
/// (or waits on I/O in between) is caught at its first yield, every run,
/// not by a lucky schedule. Over 40 batches of 2 to 9 entries.
pub async fn rule09_reads_between_polls_of_a_batch_see_it_whole(storage: Arc<dyn JournalStorage>) {
    let actor = fresh_actor("r09-polled");
    let mut written: Vec<JournalEntry> = Vec::new();
    for b in 0..40u64 {
        let before = written.len() as u64;
        let batch = entries(&actor, before + 1, before + 2 + b % 8);
        {
            let mut write = std::pin::pin!(storage.append_batch(&batch));
            loop {
                if let std::task::Poll::Ready(result) = futures::poll!(write.as_mut()) {
                    result.expect("batch");
                    break;
                }
                assert_whole_batches(&*storage, &actor, &written, &batch).await;
            }
        }
        written.extend(batch);
        assert_whole_batches(&*storage, &actor, &written, &[]).await;
    }
}

/// Asserts that every read of `actor` shows `written` followed by none or
/// all of `batch`.
pub(crate) async fn assert_whole_batches(
    storage: &dyn JournalStorage,
    actor: &str,
    written: &[JournalEntry],
    batch: &[JournalEntry],
) {
    let before = written.len() as u64;
    let after = before + batch.len() as u64;
    let whole = |what: &str, seen: &[JournalEntry], from: u64| {
        let from = usize::try_from(from.max(1) - 1).expect("a small journal");
        let len = seen.len();
        let all: Vec<&JournalEntry> = written.iter().chain(batch).skip(from).collect();
        assert!(
            len + from == before as usize || len + from == after as usize,
            "{what} shows a batch in part: sequences up to {:?}, the batch is {}..={after}",
            seen.last().map(|e| e.sequence),
            before + 1
        );
        assert!(
            seen.iter().zip(all).all(|(s, w)| s == w),
            "{what} differs from what was written"
        );
    };
    let highest = storage.highest_sequence(actor).await.expect("highest");
    assert!(
        highest == before || highest == after,
        "highest sequence {highest} while the batch {}..={after} is written",
        before + 1
    );
    let from_one = storage.replay_from(actor, 1).await.expect("replay");
    whole("replay_from(1)", &from_one, 1);
    let tail = before.saturating_sub(1).max(1);
    let range = storage
        .replay_range(actor, tail, u64::MAX, usize::MAX)
        .await
        .expect("replay_range");
    whole(&format!("replay_range({tail}, ..)"), &range, tail);
    let streamed = collect_stream(storage, actor, tail).await;
    whole(&format!("replay_stream({tail})"), &streamed, tail);
}

/// Rule 10: a checkpoint's sequence must be within `1..=highest`.
pub async fn rule10_checkpoint_sequence_must_be_in_range(storage: Arc<dyn JournalStorage>) {
    let actor = fresh_actor("r10-range");
    append_each(&*storage, &entries(&actor, 1, 3)).await;
    assert_invalid_checkpoint(storage.save_checkpoint(&checkpoint(&actor, 0)).await);
    assert_invalid_checkpoint(storage.save_checkpoint(&checkpoint(&actor, 4)).await);
    assert!(storage
        .get_latest_checkpoint(&actor)
        .await
        .expect("latest")
        .is_none());
    save_checkpoints(&*storage, &actor, &[1, 3]).await;
    assert_invalid_checkpoint(storage.save_checkpoint(&checkpoint("", 1)).await);
}

/// Rule 10: saving twice at one sequence replaces the first.
pub async fn rule10_checkpoint_save_is_idempotent(storage: Arc<dyn JournalStorage>) {
    let actor = fresh_actor("r10-twice");
    append_each(&*storage, &entries(&actor, 1, 2)).await;
    let first = checkpoint(&actor, 2);
    storage.save_checkpoint(&first).await.expect("save");
    storage.save_checkpoint(&first).await.expect("save again");
    assert_eq!(
        storage.list_checkpoints(&actor).await.expect("list"),
        vec![2]
    );
    let mut second = checkpoint(&actor, 2);
    second.state_data = b"replaced".to_vec();
    storage.save_checkpoint(&second).await.expect("replace");
    assert_eq!(
        storage.get_latest_checkpoint(&actor).await.expect("latest"),
        Some(second)
    );
    assert_eq!(
        storage.list_checkpoints(&actor).await.expect("list"),
        vec![2]
    );
}

/// Rule 10: an actor with no entries has no valid checkpoint sequence.
pub async fn rule10_checkpoint_for_unknown_actor_rejected(storage: Arc<dyn JournalStorage>) {
    let actor = fresh_actor("r10-unknown");
    assert_invalid_checkpoint(storage.save_checkpoint(&checkpoint(&actor, 1)).await);
    assert!(storage
        .get_latest_checkpoint(&actor)
        .await
        .expect("latest")
        .is_none());
    assert_eq!(storage.highest_sequence(&actor).await.expect("highest"), 0);
}

/// Rule 11: no checkpoint gives `None`.
pub async fn rule11_no_checkpoint_is_none(storage: Arc<dyn JournalStorage>) {
    let actor = fresh_actor("r11-none");
    assert!(storage
        .get_latest_checkpoint(&actor)
        .await
        .expect("latest")
        .is_none());
    append_each(&*storage, &entries(&actor, 1, 2)).await;
    assert_no_checkpoints(&*storage, &actor).await;
}

/// Rule 11: the latest checkpoint is the one with the highest sequence, not
/// the last saved.
pub async fn rule11_latest_is_highest_sequence(storage: Arc<dyn JournalStorage>) {
    let actor = fresh_actor("r11-latest");
    append_each(&*storage, &entries(&actor, 1, 10)).await;
    let saved: Vec<_> = [4, 9, 2]
        .iter()
        .map(|&seq| checkpoint(&actor, seq))
        .collect();
    for c in &saved {
        storage.save_checkpoint(c).await.expect("save");
    }
    let latest = storage.get_latest_checkpoint(&actor).await.expect("latest");
    assert_eq!(latest.as_ref(), Some(&saved[1]));
    assert_eq!(
        storage.list_checkpoints(&actor).await.expect("list"),
        vec![2, 4, 9]
    );
}

/// Rule 12: checkpoint state is stored as opaque bytes: claims of
/// compression and size, and bytes that are no valid zstd, come back as they
/// were.
pub async fn rule12_checkpoint_bytes_are_opaque(storage: Arc<dyn JournalStorage>) {
    let actor = fresh_actor("r12-opaque");
    append_each(&*storage, &entries(&actor, 1, 1)).await;
    let mut c = checkpoint(&actor, 1);
    c.state_data = vec![0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0xff, 0x00, 0x80];
    c.compression = journal_core::CompressionType::Zstd.into();
    c.uncompressed_size = u64::MAX;
    c.state_schema_version = 42;
    c.metadata.insert("k'\"{".into(), "v\0".into());
    storage.save_checkpoint(&c).await.expect("save");
    assert_eq!(
        storage.get_latest_checkpoint(&actor).await.expect("latest"),
        Some(c.clone())
    );
    assert_eq!(
        storage.get_checkpoint(&actor, 1).await.expect("get"),
        Some(c)
    );
}

/// Rule 13: retention removes the checkpoints below a sequence and keeps the
/// newest.
pub async fn rule13_pruning_keeps_newest_checkpoints(storage: Arc<dyn JournalStorage>) {
    let actor = fresh_actor("r13-retention");
    append_each(&*storage, &entries(&actor, 1, 10)).await;
    for seq in [2, 4, 6, 8] {
        storage
            .save_checkpoint(&checkpoint(&actor, seq))
            .await
            .expect("save");
    }
    assert_eq!(
        storage
            .delete_checkpoints_before(&actor, 6)
            .await
            .expect("prune"),
        2
    );
    assert_eq!(
        storage.list_checkpoints(&actor).await.expect("list"),
        vec![6, 8]
    );
    assert_eq!(
        storage
            .delete_checkpoints_before(&actor, 6)
            .await
            .expect("prune again"),
        0
    );
    assert!(storage
        .get_checkpoint(&actor, 4)
        .await
        .expect("get")
        .is_none());
    assert_eq!(
        storage
            .get_latest_checkpoint(&actor)
            .await
            .expect("latest")
            .map(|c| c.sequence),
        Some(8)
    );
}

/// Rule 14: truncation removes entries up to `s`, keeps the highest, and the
/// next append still needs `highest + 1`.
pub async fn rule14_truncate_keeps_highest_and_next_append(storage: Arc<dyn JournalStorage>) {
    let actor = fresh_actor("r14-truncate");
    append_each(&*storage, &entries(&actor, 1, 6)).await;
    storage.truncate_to(&actor, 4).await.expect("truncate");
    assert_eq!(
        seqs(&storage.replay_from(&actor, 1).await.expect("replay")),
        vec![5, 6]
    );
    assert_eq!(storage.highest_sequence(&actor).await.expect("highest"), 6);
    assert_conflict(storage.append_entry(&entry(&actor, 1)).await, 7, 1);
    append_each(&*storage, &[entry(&actor, 7)]).await;
    assert_eq!(
        seqs(&storage.replay_from(&actor, 0).await.expect("replay")),
        vec![5, 6, 7]
    );
}

/// Rule 14: truncating past the highest removes everything, keeps the
/// highest.
pub async fn rule14_truncate_past_highest_keeps_highest(storage: Arc<dyn JournalStorage>) {
    let actor = fresh_actor("r14-past");
    append_each(&*storage, &entries(&actor, 1, 3)).await;
    storage
        .truncate_to(&actor, u64::MAX)
        .await
        .expect("truncate");
    assert!(storage
        .replay_from(&actor, 1)
        .await
        .expect("replay")
        .is_empty());
    assert_eq!(storage.highest_sequence(&actor).await.expect("highest"), 3);
    assert_conflict(storage.append_entry(&entry(&actor, 1)).await, 4, 1);
    storage
        .append_batch(&entries(&actor, 4, 5))
        .await
        .expect("batch after truncation");
    assert_eq!(
        seqs(&storage.replay_from(&actor, 1).await.expect("replay")),
        vec![4, 5]
    );
}

/// Rule 14: truncating to 0, below what is already truncated, or an unknown
/// actor changes nothing.
pub async fn rule14_truncate_zero_and_repeat_are_noops(storage: Arc<dyn JournalStorage>) {
    let actor = fresh_actor("r14-noop");
    append_each(&*storage, &entries(&actor, 1, 5)).await;
    storage.truncate_to(&actor, 0).await.expect("truncate 0");
    assert_eq!(
        storage.replay_from(&actor, 1).await.expect("replay").len(),
        5
    );
    storage.truncate_to(&actor, 3).await.expect("truncate 3");
    storage.truncate_to(&actor, 2).await.expect("truncate 2");
    storage
        .truncate_to(&actor, 3)
        .await
        .expect("truncate 3 again");
    assert_eq!(
        seqs(&storage.replay_from(&actor, 1).await.expect("replay")),
        vec![4, 5]
    );
    let unknown = fresh_actor("r14-unknown");
    storage
        .truncate_to(&unknown, 10)
        .await
        .expect("truncate unknown");
    assert_eq!(
        storage.highest_sequence(&unknown).await.expect("highest"),
        0
    );
}

/// Rule 14: checkpoints stay when the journal behind them is truncated, and
/// can still be saved up to the highest sequence.
pub async fn rule14_checkpoints_survive_truncation(storage: Arc<dyn JournalStorage>) {
    let actor = fresh_actor("r14-checkpoints");
    append_each(&*storage, &entries(&actor, 1, 8)).await;
    save_checkpoints(&*storage, &actor, &[5]).await;
    storage.truncate_to(&actor, 8).await.expect("truncate");
    assert_eq!(
        storage
            .get_latest_checkpoint(&actor)
            .await
            .expect("latest")
            .map(|c| c.sequence),
        Some(5)
    );
    save_checkpoints(&*storage, &actor, &[8]).await;
    assert_eq!(
        storage.list_checkpoints(&actor).await.expect("list"),
        vec![5, 8]
    );
}

/// Rule 15: deleting an actor leaves nothing readable: entries, checkpoints,
/// highest sequence, listing.
pub async fn rule15_delete_forgets_everything(storage: Arc<dyn JournalStorage>) {
    let actor = fresh_actor("r15-delete");
    append_each(&*storage, &entries(&actor, 1, 4)).await;
    save_checkpoints(&*storage, &actor, &[2, 4]).await;
    storage.delete_actor(&actor).await.expect("delete");
    assert!(storage
        .replay_from(&actor, 0)
        .await
        .expect("replay")
        .is_empty());
    assert!(collect_stream(&*storage, &actor, 0).await.is_empty());
    assert_no_checkpoints(&*storage, &actor).await;
    assert_eq!(storage.highest_sequence(&actor).await.expect("highest"), 0);
    assert_eq!(
        storage.actor_summary(&actor).await.expect("summary"),
        journal_core::ActorSummary::default()
    );
    let listed: Vec<String> = storage
        .list_actors()
        .try_collect()
        .await
        .expect("list actors");
    assert!(!listed.contains(&actor), "a deleted actor is still listed");
    storage
        .delete_actor(&actor)
        .await
        .expect("deleting again is a no-op");
}

/// Rule 15: deleting one actor leaves the others as they were.
pub async fn rule15_delete_leaves_other_actors_alone(storage: Arc<dyn JournalStorage>) {
    let gone = fresh_actor("r15-gone");
    let kept = fresh_actor("r15-kept");
    append_each(&*storage, &entries(&gone, 1, 3)).await;
    let kept_entries = entries(&kept, 1, 3);
    append_each(&*storage, &kept_entries).await;
    save_checkpoints(&*storage, &kept, &[3]).await;
    storage.delete_actor(&gone).await.expect("delete");
    assert_eq!(
        storage.replay_from(&kept, 1).await.expect("replay"),
        kept_entries
    );
    assert_eq!(
        storage.list_checkpoints(&kept).await.expect("list"),
        vec![3]
    );
}

/// Rule 15: after deletion the actor starts over at sequence 1.
pub async fn rule15_deleted_actor_starts_over_at_one(storage: Arc<dyn JournalStorage>) {
    let actor = fresh_actor("r15-again");
    append_each(&*storage, &entries(&actor, 1, 3)).await;
    storage.delete_actor(&actor).await.expect("delete");
    let fresh = entries(&actor, 1, 2);
    append_each(&*storage, &fresh).await;
    assert_eq!(storage.replay_from(&actor, 1).await.expect("replay"), fresh);
}

/// Rule 20: many tasks appending to many actors at once all succeed, each
/// journal contiguous.
pub async fn rule20_concurrent_appends_of_many_actors(storage: Arc<dyn JournalStorage>) {
    const ACTORS: usize = 24;
    const PER_ACTOR: u64 = 30;
    let prefix = fresh_actor("r20-many");
    let tasks: Vec<_> = (0..ACTORS)
        .map(|i| {
            let storage = Arc::clone(&storage);
            let actor = format!("{prefix}-{i}");
            tokio::spawn(async move {
                for seq in 1..=PER_ACTOR {
                    let e = entry(&actor, seq);
                    if seq % 10 == 0 {
                        storage
                            .append_batch(std::slice::from_ref(&e))
                            .await
                            .expect("batch");
                    } else {
                        storage.append_entry(&e).await.expect("append");
                    }
                }
                actor
            })
        })
        .collect();
    for task in tasks {
        let actor = task.await.expect("task");
        let stored = storage.replay_from(&actor, 1).await.expect("replay");
        assert_eq!(
            seqs(&stored),
            (1..=PER_ACTOR).collect::<Vec<_>>(),
            "journal of {actor}"
        );
    }
}

/// Rule 20: checkpoint saves and appends of one actor, from separate tasks,
/// interleave without losing either.
pub async fn rule20_checkpoints_and_appends_interleave(storage: Arc<dyn JournalStorage>) {
    let actor = fresh_actor("r20-interleave");
    append_each(&*storage, &entries(&actor, 1, 1)).await;
    let writer = {
        let (storage, actor) = (Arc::clone(&storage), actor.clone());
        tokio::spawn(async move {
            for seq in 2..=60 {
                storage
                    .append_entry(&entry(&actor, seq))
                    .await
                    .expect("append");
            }
        })
    };
    let checkpointer = {
        let (storage, actor) = (Arc::clone(&storage), actor.clone());
        tokio::spawn(async move {
            let mut saved = BTreeSet::new();
            for _ in 0..30 {
                let highest = storage.highest_sequence(&actor).await.expect("highest");
                storage
                    .save_checkpoint(&checkpoint(&actor, highest))
                    .await
                    .expect("save");
                saved.insert(highest);
            }
            saved
        })
    };
    writer.await.expect("writer");
    let saved = checkpointer.await.expect("checkpointer");
    assert_eq!(storage.highest_sequence(&actor).await.expect("highest"), 60);
    let listed: BTreeSet<u64> = storage
        .list_checkpoints(&actor)
        .await
        .expect("list")
        .into_iter()
        .collect();
    assert_eq!(listed, saved);
}

/// Listing: the actor stream yields every actor once, and none that was
/// deleted or never appended to.
pub async fn listing_streams_every_actor(storage: Arc<dyn JournalStorage>) {
    let prefix = fresh_actor("list");
    let mut want = BTreeSet::new();
    for i in 0..30 {
        let actor = format!("{prefix}-{i:02}");
        append_each(&*storage, &entries(&actor, 1, 1)).await;
        want.insert(actor);
    }
    let deleted = format!("{prefix}-deleted");
    append_each(&*storage, &entries(&deleted, 1, 1)).await;
    storage.delete_actor(&deleted).await.expect("delete");
    // A failed append creates no actor.
    let _ = storage
        .append_entry(&entry(&format!("{prefix}-never"), 3))
        .await;
    let listed: Vec<String> = storage.list_actors().try_collect().await.expect("list");
    let ours: Vec<&String> = listed.iter().filter(|a| a.starts_with(&prefix)).collect();
    assert_eq!(ours.len(), want.len(), "each actor exactly once: {ours:?}");
    assert_eq!(ours.into_iter().cloned().collect::<BTreeSet<_>>(), want);
}

/// Listing: pages resume after their cursor, cover every actor once, and end
/// with no cursor.
pub async fn listing_pages_resume_at_cursor(storage: Arc<dyn JournalStorage>) {
    let prefix = fresh_actor("pages");
    for i in 0..17 {
        append_each(&*storage, &entries(&format!("{prefix}-{i}"), 1, 1)).await;
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for round in 0.. {
        assert!(round < 10_000, "listing does not end");
        let page = storage
            .list_actors_page(cursor.as_deref(), 4)
            .await
            .expect("page");
        assert!(page.actors.len() <= 4, "a page holds at most its limit");
        seen.extend(page.actors);
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let ours: Vec<_> = seen.iter().filter(|a| a.starts_with(&prefix)).collect();
    let unique: BTreeSet<_> = ours.iter().collect();
    assert_eq!(ours.len(), 17);
    assert_eq!(unique.len(), 17);
}

/// Stats: totals follow appends, truncation, checkpoints and deletion. The
/// store must be the test's own (see [`crate::suite`]).
pub async fn stats_count_actors_entries_checkpoints(storage: Arc<dyn JournalStorage>) {
    let before = storage.stats().await.expect("stats");
    let a = fresh_actor("stats-a");
    let b = fresh_actor("stats-b");
    append_each(&*storage, &entries(&a, 1, 5)).await;
    append_each(&*storage, &entries(&b, 1, 2)).await;
    save_checkpoints(&*storage, &a, &[3]).await;
    storage.truncate_to(&a, 2).await.expect("truncate");
    let after = storage.stats().await.expect("stats");
    assert_eq!(after.actors - before.actors, 2);
    assert_eq!(after.entries - before.entries, 5);
    assert_eq!(after.checkpoints - before.checkpoints, 1);
    storage.delete_actor(&a).await.expect("delete");
    let deleted = storage.stats().await.expect("stats");
    assert_eq!(deleted.actors - before.actors, 1);
    assert_eq!(deleted.entries - before.entries, 2);
    assert_eq!(deleted.checkpoints, before.checkpoints);
}

/// Summary: one actor's highest sequence, stored entries and checkpoints.
pub async fn summary_describes_one_actor(storage: Arc<dyn JournalStorage>) {
    let actor = fresh_actor("summary");
    assert_eq!(
        storage.actor_summary(&actor).await.expect("summary"),
        journal_core::ActorSummary::default()
    );
    append_each(&*storage, &entries(&actor, 1, 9)).await;
    save_checkpoints(&*storage, &actor, &[4, 8]).await;
    storage.truncate_to(&actor, 4).await.expect("truncate");
    let summary = storage.actor_summary(&actor).await.expect("summary");
    assert_eq!(
        (
            summary.highest_sequence,
            summary.entries,
            summary.checkpoints
        ),
        (9, 5, 2)
    );
}
