//! Live subscriptions (contract rule 27): what every [`JournalWatch`]
//! promises.
//!
//! The subscriptions here wait with a poll interval of [`NO_POLL`] (a
//! minute): an entry must reach them through the backend's own wake-up, and
//! a test that waits [`PATIENCE`] for it fails instead. Only the test of a
//! deletion, which no append announces, polls.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use journal_core::storage::EntryStream;
use journal_core::subscribe::{follow, JournalWatch, SubscribeOptions};
use journal_core::{JournalEntry, JournalError, JournalStorage};

use crate::fixture::{append_each, assert_entries, entries, entry, fresh_actor, rich_entry, seqs};

/// A poll interval no test waits for: entries come through wake-ups.
pub const NO_POLL: Duration = Duration::from_secs(60);

/// How long a test waits for an entry before it fails.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Options of a subscription that only wakes up when told.
pub fn woken(page: usize) -> SubscribeOptions {
    SubscribeOptions {
        page,
        poll_interval: NO_POLL,
        ..SubscribeOptions::default()
    }
}

/// The next item of `stream`, failing the test after [`PATIENCE`].
async fn next_item(stream: &mut EntryStream<'_>, what: &str) -> Option<JournalEntry> {
    match tokio::time::timeout(PATIENCE, stream.next()).await {
        Ok(Some(Ok(entry))) => Some(entry),
        Ok(Some(Err(e))) => panic!("{what}: the subscription failed: {e}"),
        Ok(None) => None,
        Err(elapsed) => panic!("{what}: nothing came within {PATIENCE:?} ({elapsed})"),
    }
}

/// The next `n` entries of `stream`.
async fn take(stream: &mut EntryStream<'_>, n: usize, what: &str) -> Vec<JournalEntry> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        match next_item(stream, what).await {
            Some(entry) => got.push(entry),
            None => panic!("{what}: the subscription ended after {} entries", got.len()),
        }
    }
    got
}

/// Asserts nothing more is ready on `stream` now: it is waiting.
async fn assert_waiting(stream: &mut EntryStream<'_>, what: &str) {
    // One turn of reading: the subscription reads, finds nothing, waits.
    let polled = tokio::time::timeout(Duration::from_millis(200), stream.next()).await;
    if let Ok(item) = polled {
        panic!("{what}: expected the subscription to wait, it gave {item:?}");
    }
}

/// Stored entries first, then each new one as it is appended, in order,
/// each equal to what was appended.
pub async fn subscribe_stored_then_live(store: Arc<dyn JournalWatch>) {
    let actor = fresh_actor("sub-live");
    let stored: Vec<_> = (1..=5).map(|s| rich_entry(&actor, s)).collect();
    append_each(&*store, &stored).await;
    let mut stream = follow(&*store, &actor, 1, woken(0));
    let got = take(&mut stream, 5, "stored").await;
    assert_entries("stored entries", &got, &stored);

    let live: Vec<_> = (6..=40).map(|s| rich_entry(&actor, s)).collect();
    let writer = {
        let (store, live) = (Arc::clone(&store), live.clone());
        tokio::spawn(async move { append_each(&*store, &live).await })
    };
    let got = take(&mut stream, live.len(), "live").await;
    writer.await.expect("the writer");
    assert_entries("live entries", &got, &live);
    assert_waiting(&mut stream, "after the last entry").await;
}

/// From the middle, and from a sequence not yet written: only entries at or
/// above it, none before.
pub async fn subscribe_from_middle_and_future(store: Arc<dyn JournalWatch>) {
    let actor = fresh_actor("sub-from");
    let stored = entries(&actor, 1, 5);
    append_each(&*store, &stored).await;
    let mut middle = follow(&*store, &actor, 3, woken(0));
    let got = take(&mut middle, 3, "from 3").await;
    assert_entries("from 3", &got, &stored[2..]);

    let mut future = follow(&*store, &actor, 9, woken(0));
    assert_waiting(&mut future, "from 9 with 5 stored").await;
    let more = entries(&actor, 6, 12);
    append_each(&*store, &more).await;
    let got = take(&mut future, 4, "from 9").await;
    assert_entries("from 9", &got, &more[3..]);
    let got = take(&mut middle, 7, "from 3, live").await;
    assert_entries("from 3, live", &got, &more);
}

/// An actor with no journal yet: the subscription waits, then follows it
/// from its first entry. `from = 0` means the first.
pub async fn subscribe_unknown_actor_waits(store: Arc<dyn JournalWatch>) {
    let actor = fresh_actor("sub-new");
    let mut stream = follow(&*store, &actor, 0, woken(0));
    assert_waiting(&mut stream, "an actor without entries").await;
    let written = entries(&actor, 1, 3);
    append_each(&*store, &written).await;
    let got = take(&mut stream, 3, "the new actor").await;
    assert_entries("the new actor", &got, &written);
}

/// Batches arrive whole and in order, through pages smaller than them.
pub async fn subscribe_batches_through_small_pages(store: Arc<dyn JournalWatch>) {
    let actor = fresh_actor("sub-batch");
    let mut stream = follow(&*store, &actor, 1, woken(3));
    let mut want = Vec::new();
    let mut next = 1;
    for size in [1u64, 7, 2, 30, 5] {
        let batch = entries(&actor, next, next + size - 1);
        store.append_batch(&batch).await.expect("a batch");
        want.extend(batch);
        next += size;
    }
    let got = take(&mut stream, want.len(), "batches").await;
    assert_entries("batches", &got, &want);
}

/// A subscriber of one actor sees none of another's entries, and is woken
/// for its own while others are written too.
pub async fn subscribe_sees_only_its_actor(store: Arc<dyn JournalWatch>) {
    let (mine, other) = (fresh_actor("sub-mine"), fresh_actor("sub-other"));
    let mut stream = follow(&*store, &mine, 1, woken(0));
    append_each(&*store, &entries(&other, 1, 20)).await;
    assert_waiting(&mut stream, "only the other actor written").await;
    let writer = {
        let (store, other) = (Arc::clone(&store), other.clone());
        tokio::spawn(async move { append_each(&*store, &entries(&other, 21, 60)).await })
    };
    let written = entries(&mine, 1, 10);
    append_each(&*store, &written).await;
    let got = take(&mut stream, 10, "mine").await;
    assert_entries("mine", &got, &written);
    writer.await.expect("the other writer");
    assert_waiting(&mut stream, "after mine").await;
}

/// Many subscribers of one actor, and subscribers of many actors written at
/// once: each gets all of its actor's entries, in order.
pub async fn subscribe_many_subscribers_and_writers(store: Arc<dyn JournalWatch>) {
    const ACTORS: usize = 8;
    const PER_ACTOR: u64 = 40;
    const SUBSCRIBERS: usize = 3;
    let actors: Vec<String> = (0..ACTORS).map(|_| fresh_actor("sub-many")).collect();
    let mut readers = Vec::new();
    for actor in &actors {
        for _ in 0..SUBSCRIBERS {
            let (store, actor) = (Arc::clone(&store), actor.clone());
            readers.push(tokio::spawn(async move {
                let mut stream = follow(&*store, &actor, 1, woken(0));
                let got = take(&mut stream, PER_ACTOR as usize, "many").await;
                let want: Vec<u64> = (1..=PER_ACTOR).collect();
                assert_eq!(seqs(&got), want, "the sequences of {actor}");
                assert!(got.iter().all(|e| e.actor_id == actor), "only {actor}'s");
            }));
        }
    }
    let writers: Vec<_> = actors
        .iter()
        .map(|actor| {
            let (store, actor) = (Arc::clone(&store), actor.clone());
            tokio::spawn(async move {
                for s in 1..=PER_ACTOR {
                    store.append_entry(&entry(&actor, s)).await.expect("append");
                }
            })
        })
        .collect();
    for task in writers.into_iter().chain(readers) {
        task.await.expect("a writer or reader");
    }
}

/// Entries truncated before the subscriber read them are reported, not
/// skipped; entries it read before stay read.
pub async fn subscribe_truncation_is_reported(store: Arc<dyn JournalWatch>) {
    let actor = fresh_actor("sub-trunc");
    let stored = entries(&actor, 1, 10);
    append_each(&*store, &stored).await;
    let mut stream = follow(&*store, &actor, 1, woken(2));
    let got = take(&mut stream, 2, "before truncation").await;
    assert_entries("before truncation", &got, &stored[..2]);
    store.truncate_to(&actor, 6).await.expect("truncate");
    match tokio::time::timeout(PATIENCE, stream.next()).await {
        Ok(Some(Err(JournalError::Truncated {
            actor_id,
            wanted,
            first_stored,
        }))) => {
            assert_eq!(actor_id, actor);
            assert_eq!((wanted, first_stored), (3, 7));
        }
        other => panic!("expected Truncated at 3 (first stored 7), got {other:?}"),
    }
    assert!(stream.next().await.is_none(), "the subscription ends");

    // From a sequence already truncated: reported at once.
    let mut late = follow(&*store, &actor, 4, woken(0));
    match late.next().await {
        Some(Err(JournalError::Truncated {
            wanted: 4,
            first_stored: 7,
            ..
        })) => {}
        other => panic!("expected Truncated at 4, got {other:?}"),
    }
    // From the first stored one: all there.
    let mut resumed = follow(&*store, &actor, 7, woken(0));
    let got = take(&mut resumed, 4, "resumed").await;
    assert_entries("resumed", &got, &stored[6..]);
}

/// An actor deleted under a waiting subscriber: reported (found by the poll
/// interval: no append announces it).
pub async fn subscribe_deletion_is_reported(store: Arc<dyn JournalWatch>) {
    let actor = fresh_actor("sub-del");
    append_each(&*store, &entries(&actor, 1, 3)).await;
    let options = SubscribeOptions {
        poll_interval: Duration::from_millis(50),
        ..SubscribeOptions::default()
    };
    let mut stream = follow(&*store, &actor, 1, options);
    take(&mut stream, 3, "before deletion").await;
    store.delete_actor(&actor).await.expect("delete");
    match tokio::time::timeout(PATIENCE, stream.next()).await {
        Ok(Some(Err(JournalError::Truncated { wanted: 4, .. }))) => {}
        other => panic!("expected Truncated after the deletion, got {other:?}"),
    }
}

/// An actor deleted and begun again past where a subscriber was, between
/// two of its reads: reported, never read on into the new journal as if
/// it went on from the old one (rule 27: no gap, no entry of another
/// journal).
pub async fn subscribe_recreation_is_reported(store: Arc<dyn JournalWatch>) {
    let actor = fresh_actor("sub-again");
    append_each(&*store, &entries(&actor, 1, 3)).await;
    let mut stream = follow(&*store, &actor, 1, woken(0));
    take(&mut stream, 3, "before deletion").await;
    // Not polled meanwhile: the next read finds 5 entries, its next one
    // (4) among them.
    store.delete_actor(&actor).await.expect("delete");
    append_each(&*store, &entries(&actor, 1, 5)).await;
    match tokio::time::timeout(PATIENCE, stream.next()).await {
        Ok(Some(Err(JournalError::Truncated { wanted: 4, .. }))) => {}
        other => panic!("expected Truncated after the deletion, got {other:?}"),
    }
    // Truncation below the next entry is no deletion: read on.
    let more = entries(&actor, 6, 8);
    let mut stream = follow(&*store, &actor, 5, woken(1));
    take(&mut stream, 1, "the fifth").await;
    store.truncate_to(&actor, 5).await.expect("truncate");
    append_each(&*store, &more).await;
    let got = take(&mut stream, 3, "after truncation").await;
    assert_entries("after truncation", &got, &more);
}

/// A consumer that stops polling holds the subscription where it is: it
/// reads nothing more (one page at most), and resumes in order.
pub async fn subscribe_backpressure_resumes_in_order(store: Arc<dyn JournalWatch>) {
    let actor = fresh_actor("sub-slow");
    let mut stream = follow(&*store, &actor, 1, woken(4));
    let mut written = entries(&actor, 1, 3);
    append_each(&*store, &written).await;
    let got = take(&mut stream, 1, "first").await;
    assert_entries("first", &got, &written[..1]);
    // Written while the consumer does not poll.
    let more = entries(&actor, 4, 60);
    store.append_batch(&more).await.expect("a batch");
    written.extend(more);
    let got = take(&mut stream, 59, "the rest").await;
    assert_entries("the rest", &got, &written[1..]);
}

/// Through another storage value on the same store (another pool, another
/// connection, as another process would): appends there wake subscribers
/// here.
pub async fn subscribe_sees_another_writer(
    store: Arc<dyn JournalWatch>,
    other: Arc<dyn JournalStorage>,
) {
    let actor = fresh_actor("sub-pair");
    let mut stream = follow(&*store, &actor, 1, woken(0));
    assert_waiting(&mut stream, "nothing written yet").await;
    for s in 1..=5 {
        let written = entry(&actor, s);
        other.append_entry(&written).await.expect("append there");
        let got = take(&mut stream, 1, "written there").await;
        assert_entries("written there", &got, &[written]);
    }
}
