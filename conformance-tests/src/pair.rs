//! Two storage values on one store (two connections, two pools, two
//! clients; for the memory backend two clones of one store), as two
//! processes of an application see it: what one writes the other reads,
//! and their writers race under the same rules as one value's (contract
//! rules 1, 5, 9 and 20). Run with [`crate::pair_suite`].

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::TryStreamExt;
use journal_core::{JournalEntry, JournalError, JournalStorage};

use crate::fixture::{
    assert_conflict, assert_entries, assert_no_checkpoints, checkpoint, collect_stream, entries,
    entry, fresh_actor, rich_entry, seqs,
};

/// Appends, batches, checkpoints, truncation and deletion through one
/// value are read, whole and field by field, through the other, and the
/// other's next append needs the first's highest + 1.
pub async fn pair_writes_through_one_read_through_the_other(
    one: Arc<dyn JournalStorage>,
    other: Arc<dyn JournalStorage>,
) {
    let actor = fresh_actor("pair-rw");
    let all: Vec<JournalEntry> = (1..=30).map(|s| rich_entry(&actor, s)).collect();
    for e in &all[..3] {
        one.append_entry(e).await.expect("append through one");
    }
    other
        .append_batch(&all[3..20])
        .await
        .expect("batch through the other");
    one.append_batch(&all[20..])
        .await
        .expect("batch through one");
    for (name, storage) in [("one", &one), ("other", &other)] {
        let what = |read: &str| format!("{read} through {name}");
        assert_entries(
            &what("replay_from(1)"),
            &storage.replay_from(&actor, 1).await.expect("replay"),
            &all,
        );
        assert_entries(
            &what("replay_stream(4)"),
            &collect_stream(&**storage, &actor, 4).await,
            &all[3..],
        );
        assert_entries(
            &what("replay_range(3, 21, 10)"),
            &storage
                .replay_range(&actor, 3, 21, 10)
                .await
                .expect("range"),
            &all[2..12],
        );
        assert_eq!(
            storage.highest_sequence(&actor).await.expect("highest"),
            30,
            "{}",
            what("highest")
        );
    }
    assert_conflict(other.append_entry(&entry(&actor, 30)).await, 31, 30);
    assert_eq!(
        other
            .append_entry(&all[29])
            .await
            .expect("retry through the other"),
        30,
        "a retry of what one stored is Ok through the other"
    );
    let c = checkpoint(&actor, 20);
    other.save_checkpoint(&c).await.expect("checkpoint");
    assert_eq!(
        one.get_latest_checkpoint(&actor).await.expect("latest"),
        Some(c)
    );
    one.truncate_to(&actor, 25).await.expect("truncate");
    assert_eq!(
        seqs(&other.replay_from(&actor, 0).await.expect("replay")),
        (26..=30).collect::<Vec<_>>()
    );
    assert_eq!(other.highest_sequence(&actor).await.expect("highest"), 30);
    let listed: Vec<String> = other.list_actors().try_collect().await.expect("list");
    assert!(listed.contains(&actor), "the other lists what one wrote");
    other.delete_actor(&actor).await.expect("delete");
    assert!(one.replay_from(&actor, 0).await.expect("replay").is_empty());
    assert_eq!(one.highest_sequence(&actor).await.expect("highest"), 0);
    assert_no_checkpoints(&*one, &actor).await;
}

/// Rule 1 across values: writers on both race for the same sequences, by
/// single appends and then by batches; exactly one wins each, and the
/// journal holds the winners' entries, contiguous.
pub async fn pair_racing_writers_one_wins_each_sequence(
    one: Arc<dyn JournalStorage>,
    other: Arc<dyn JournalStorage>,
) {
    const SINGLES: u64 = 30;
    const BATCH: u64 = 4;
    let actor = fresh_actor("pair-race");
    let mut tasks = Vec::new();
    for w in 0..8 {
        let storage = Arc::clone(if w % 2 == 0 { &one } else { &other });
        let actor = actor.clone();
        tasks.push(tokio::spawn(async move {
            let mut won = Vec::new();
            for seq in 1..=SINGLES {
                let e = entry(&actor, seq);
                match storage.append_entry(&e).await {
                    Ok(_) => won.push(e),
                    Err(JournalError::SequenceConflict { .. }) => {}
                    Err(other) => panic!("unexpected error racing for {seq}: {other}"),
                }
            }
            // Then one batch each, all at the same sequences.
            let batch = entries(&actor, SINGLES + 1, SINGLES + BATCH);
            match storage.append_batch(&batch).await {
                Ok(()) => won.extend(batch),
                Err(JournalError::SequenceConflict { .. }) => {}
                Err(other) => panic!("unexpected error racing with a batch: {other}"),
            }
            won
        }));
    }
    let mut winners = BTreeMap::new();
    for task in tasks {
        for e in task.await.expect("writer task") {
            let seq = e.sequence;
            assert!(
                winners.insert(seq, e).is_none(),
                "two writers won sequence {seq}"
            );
        }
    }
    let want: Vec<JournalEntry> = winners.into_values().collect();
    assert_eq!(
        seqs(&want),
        (1..=SINGLES + BATCH).collect::<Vec<_>>(),
        "every sequence has exactly one winner"
    );
    for storage in [&one, &other] {
        assert_entries(
            "the journal after the race",
            &storage.replay_from(&actor, 1).await.expect("replay"),
            &want,
        );
    }
}

/// Rule 5 across values: the same entry retried at once through both
/// values succeeds everywhere and is stored once.
pub async fn pair_concurrent_retries_store_one_copy(
    one: Arc<dyn JournalStorage>,
    other: Arc<dyn JournalStorage>,
) {
    let actor = fresh_actor("pair-retry");
    let stored = entries(&actor, 1, 2);
    one.append_entry(&stored[0]).await.expect("append");
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let storage = Arc::clone(if i % 2 == 0 { &one } else { &other });
            let e = stored[1].clone();
            tokio::spawn(async move { storage.append_entry(&e).await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.expect("task").expect("every retry succeeds"), 2);
    }
    assert_entries(
        "the journal after concurrent retries",
        &other.replay_from(&actor, 1).await.expect("replay"),
        &stored,
    );
}

/// Rule 9 across values: while a batch is appended through one value,
/// reads through the other between polls of the append (as in
/// [`crate::rules::rule09_reads_between_polls_of_a_batch_see_it_whole`])
/// show none or all of it.
pub async fn pair_reads_through_the_other_see_whole_batches(
    one: Arc<dyn JournalStorage>,
    other: Arc<dyn JournalStorage>,
) {
    let actor = fresh_actor("pair-atomic");
    let mut written: Vec<JournalEntry> = Vec::new();
    for b in 0..20u64 {
        let before = written.len() as u64;
        let batch = entries(&actor, before + 1, before + 2 + b % 6);
        {
            let mut write = std::pin::pin!(one.append_batch(&batch));
            loop {
                if let std::task::Poll::Ready(result) = futures::poll!(write.as_mut()) {
                    result.expect("batch");
                    break;
                }
                crate::rules::assert_whole_batches(&*other, &actor, &written, &batch).await;
            }
        }
        written.extend(batch);
        crate::rules::assert_whole_batches(&*other, &actor, &written, &[]).await;
    }
}
