//! The boundary cases of the Akka/Pekko Persistence test kit (`JournalSpec`
//! and `SnapshotStoreSpec`), on our API (contract rules 7, 10, 11, 14).
//!
//! Journal fixture: sequences 1..5 written as `[1]`, `[2]`, `[3]`, `[4, 5]`.

use std::sync::Arc;

use journal_core::JournalStorage;

use crate::fixture::{append_each, checkpoint, entries, entry, fresh_actor, pattern, seqs};

const ALL: u64 = u64::MAX;
const NO_LIMIT: usize = usize::MAX;

/// Writes the fixture and returns the actor id.
async fn fixture(storage: &dyn JournalStorage, tag: &str) -> String {
    let actor = fresh_actor(tag);
    append_each(storage, &entries(&actor, 1, 3)).await;
    storage
        .append_batch(&entries(&actor, 4, 5))
        .await
        .expect("batch [4, 5]");
    actor
}

async fn range(
    storage: &dyn JournalStorage,
    actor: &str,
    from: u64,
    to: u64,
    max: usize,
) -> Vec<u64> {
    let listed = storage
        .replay_range(actor, from, to, max)
        .await
        .expect("replay_range");
    seqs(&listed)
}

/// Rule 7 (TCK "replay all messages"): 1..=5.
pub async fn tck_replay_all(storage: Arc<dyn JournalStorage>) {
    let actor = fixture(&*storage, "tck-all").await;
    assert_eq!(
        range(&*storage, &actor, 1, ALL, NO_LIMIT).await,
        vec![1, 2, 3, 4, 5]
    );
    assert_eq!(
        range(&*storage, &actor, 0, ALL, NO_LIMIT).await,
        vec![1, 2, 3, 4, 5]
    );
    assert_eq!(range(&*storage, &actor, 1, 5, 5).await, vec![1, 2, 3, 4, 5]);
}

/// Rule 7 (TCK "replay messages using a lower sequence number bound").
pub async fn tck_replay_from_lower_bound(storage: Arc<dyn JournalStorage>) {
    let actor = fixture(&*storage, "tck-lower").await;
    assert_eq!(
        range(&*storage, &actor, 3, ALL, NO_LIMIT).await,
        vec![3, 4, 5]
    );
    assert_eq!(range(&*storage, &actor, 5, ALL, NO_LIMIT).await, vec![5]);
}

/// Rule 7 (TCK "replay messages using an upper sequence number bound").
pub async fn tck_replay_to_upper_bound(storage: Arc<dyn JournalStorage>) {
    let actor = fixture(&*storage, "tck-upper").await;
    assert_eq!(
        range(&*storage, &actor, 1, 3, NO_LIMIT).await,
        vec![1, 2, 3]
    );
    assert_eq!(range(&*storage, &actor, 1, 1, NO_LIMIT).await, vec![1]);
    assert_eq!(
        range(&*storage, &actor, 1, 100, NO_LIMIT).await,
        vec![1, 2, 3, 4, 5]
    );
}

/// Rule 7 (TCK "replay messages using lower and upper bounds").
pub async fn tck_replay_between_bounds(storage: Arc<dyn JournalStorage>) {
    let actor = fixture(&*storage, "tck-between").await;
    assert_eq!(range(&*storage, &actor, 2, 3, NO_LIMIT).await, vec![2, 3]);
    assert_eq!(range(&*storage, &actor, 3, 3, NO_LIMIT).await, vec![3]);
    assert_eq!(
        range(&*storage, &actor, 2, 5, NO_LIMIT).await,
        vec![2, 3, 4, 5]
    );
}

/// Rule 7 (TCK "replay a bounded number of messages", and "not replay more
/// than max even with a higher upper bound").
pub async fn tck_replay_with_max(storage: Arc<dyn JournalStorage>) {
    let actor = fixture(&*storage, "tck-max").await;
    assert_eq!(range(&*storage, &actor, 2, 3, 1).await, vec![2]);
    assert_eq!(range(&*storage, &actor, 1, ALL, 3).await, vec![1, 2, 3]);
    assert_eq!(range(&*storage, &actor, 2, 5, 2).await, vec![2, 3]);
    assert_eq!(range(&*storage, &actor, 4, ALL, 1).await, vec![4]);
}

/// Rule 7 (TCK "not replay messages if count limit equals zero", "if lower
/// bound is greater than upper bound", "if the lower bound is greater than
/// the highest").
pub async fn tck_replay_nothing(storage: Arc<dyn JournalStorage>) {
    let actor = fixture(&*storage, "tck-none").await;
    assert!(range(&*storage, &actor, 2, 4, 0).await.is_empty());
    assert!(range(&*storage, &actor, 3, 2, NO_LIMIT).await.is_empty());
    assert!(range(&*storage, &actor, 6, ALL, NO_LIMIT).await.is_empty());
    assert!(range(&*storage, &actor, ALL, ALL, NO_LIMIT)
        .await
        .is_empty());
    assert!(range(
        &*storage,
        &fresh_actor("tck-none-unknown"),
        1,
        ALL,
        NO_LIMIT
    )
    .await
    .is_empty());
}

/// Rule 7 (TCK "replay messages up to a sequence inside an atomic write"):
/// reading may stop inside the batch `[4, 5]`.
pub async fn tck_replay_stops_inside_batch(storage: Arc<dyn JournalStorage>) {
    let actor = fixture(&*storage, "tck-inside").await;
    assert_eq!(
        range(&*storage, &actor, 1, 4, NO_LIMIT).await,
        vec![1, 2, 3, 4]
    );
    assert_eq!(range(&*storage, &actor, 1, ALL, 4).await, vec![1, 2, 3, 4]);
    assert_eq!(range(&*storage, &actor, 5, 5, NO_LIMIT).await, vec![5]);
}

/// Rule 7 and 14 (TCK "not replay permanently deleted messages"): the
/// boundary cases after truncating to 2.
pub async fn tck_after_truncation(storage: Arc<dyn JournalStorage>) {
    let actor = fixture(&*storage, "tck-truncated").await;
    storage.truncate_to(&actor, 2).await.expect("truncate");
    assert_eq!(
        range(&*storage, &actor, 1, ALL, NO_LIMIT).await,
        vec![3, 4, 5]
    );
    assert_eq!(range(&*storage, &actor, 1, 3, NO_LIMIT).await, vec![3]);
    assert_eq!(
        range(&*storage, &actor, 1, 2, NO_LIMIT).await,
        Vec::<u64>::new()
    );
    assert_eq!(range(&*storage, &actor, 1, ALL, 1).await, vec![3]);
    assert_eq!(range(&*storage, &actor, 4, 4, NO_LIMIT).await, vec![4]);
    assert_eq!(range(&*storage, &actor, 2, 5, 2).await, vec![3, 4]);
    assert_eq!(storage.highest_sequence(&actor).await.expect("highest"), 5);
    // Truncating into the batch [4, 5] is allowed.
    storage
        .truncate_to(&actor, 4)
        .await
        .expect("truncate into batch");
    assert_eq!(range(&*storage, &actor, 1, ALL, NO_LIMIT).await, vec![5]);
}

/// Rule 14 (TCK "not reset highestSequenceNr after message deletion" and
/// "after journal cleanup"): truncating everything keeps 5 as the highest,
/// and the next write is 6.
pub async fn tck_truncate_everything_keeps_highest(storage: Arc<dyn JournalStorage>) {
    let actor = fixture(&*storage, "tck-cleanup").await;
    storage.truncate_to(&actor, 5).await.expect("truncate");
    assert_eq!(storage.highest_sequence(&actor).await.expect("highest"), 5);
    assert!(range(&*storage, &actor, 1, ALL, NO_LIMIT).await.is_empty());
    storage
        .truncate_to(&actor, ALL)
        .await
        .expect("truncate all");
    assert_eq!(storage.highest_sequence(&actor).await.expect("highest"), 5);
    append_each(&*storage, &[entry(&actor, 6)]).await;
    assert_eq!(range(&*storage, &actor, 1, ALL, NO_LIMIT).await, vec![6]);
}

/// Writes 15 entries and checkpoints at 11..=15, as the snapshot TCK does.
async fn snapshot_fixture(
    storage: &dyn JournalStorage,
    tag: &str,
) -> (String, Vec<journal_core::Checkpoint>) {
    let actor = fresh_actor(tag);
    storage
        .append_batch(&entries(&actor, 1, 15))
        .await
        .expect("batch");
    let mut saved = Vec::new();
    for seq in 11..=15 {
        let c = checkpoint(&actor, seq);
        storage.save_checkpoint(&c).await.expect("save");
        saved.push(c);
    }
    (actor, saved)
}

/// Rule 11 (snapshot TCK "load the most recent snapshot", "load a snapshot
/// by sequence", "not load a snapshot when none exists").
pub async fn tck_snapshots_latest_and_by_sequence(storage: Arc<dyn JournalStorage>) {
    let (actor, saved) = snapshot_fixture(&*storage, "tck-snap").await;
    assert_eq!(
        storage
            .get_latest_checkpoint(&actor)
            .await
            .expect("latest")
            .as_ref(),
        saved.last()
    );
    assert_eq!(
        storage
            .get_checkpoint(&actor, 13)
            .await
            .expect("get")
            .as_ref(),
        Some(&saved[2])
    );
    assert!(storage
        .get_checkpoint(&actor, 10)
        .await
        .expect("get")
        .is_none());
    assert_eq!(
        storage.list_checkpoints(&actor).await.expect("list"),
        (11..=15).collect::<Vec<_>>()
    );
    assert!(storage
        .get_latest_checkpoint(&fresh_actor("tck-snap-none"))
        .await
        .expect("latest")
        .is_none());
}

/// Rule 10 (snapshot TCK "save and overwrite a snapshot with the same
/// sequence number").
pub async fn tck_snapshot_overwrite(storage: Arc<dyn JournalStorage>) {
    let (actor, _) = snapshot_fixture(&*storage, "tck-overwrite").await;
    let mut replacement = checkpoint(&actor, 15);
    replacement.state_data = b"overwritten".to_vec();
    storage
        .save_checkpoint(&replacement)
        .await
        .expect("overwrite");
    assert_eq!(
        storage.get_latest_checkpoint(&actor).await.expect("latest"),
        Some(replacement)
    );
    assert_eq!(
        storage.list_checkpoints(&actor).await.expect("list").len(),
        5
    );
}

/// Rule 11 (snapshot TCK "serialize a 10,000 byte snapshot", plus 10 MiB):
/// states come back byte-identical.
pub async fn tck_snapshot_sizes(storage: Arc<dyn JournalStorage>) {
    let actor = fresh_actor("tck-sizes");
    storage
        .append_batch(&entries(&actor, 1, 2))
        .await
        .expect("batch");
    for (seq, size) in [(1u64, 10_000usize), (2, 10 * 1024 * 1024)] {
        let mut c = checkpoint(&actor, seq);
        c.state_data = pattern(size, seq as u8);
        c.uncompressed_size = size as u64;
        storage.save_checkpoint(&c).await.expect("save");
        assert_eq!(
            storage.get_checkpoint(&actor, seq).await.expect("get"),
            Some(c)
        );
    }
    let latest = storage
        .get_latest_checkpoint(&actor)
        .await
        .expect("latest")
        .expect("some");
    assert_eq!(latest.state_data.len(), 10 * 1024 * 1024);
}
