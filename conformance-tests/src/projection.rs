//! Projections (contract rule 29): offsets stored durably in the journal's
//! own store, and a run that resumes from them, at-least-once.
//!
//! Each test needs a store of its own (the feed carries every actor), as
//! [`projection_suite!`](crate::projection_suite) gives it.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use journal_core::feed::{FeedItem, FeedOffset};
use journal_core::projection::{Projection, ProjectionStore};
use journal_core::{JournalEntry, JournalError};

use crate::feed::{assert_feed, read_all};
use crate::fixture::{append_each, entries, fresh_actor};

/// How long a test waits for a projection to catch up before it fails.
pub const PATIENCE: Duration = Duration::from_secs(20);

type Seen = Arc<Mutex<Vec<FeedItem>>>;

fn seen(items: &Seen) -> Vec<FeedItem> {
    items.lock().unwrap_or_else(PoisonError::into_inner).clone()
}

/// A projection of `name` reading small batches, polling often.
fn projection(name: &str) -> Projection {
    let mut projection = Projection::new(name);
    projection.batch = 4;
    projection.feed.poll_interval = Duration::from_millis(50);
    projection
}

/// Runs `projection` on `store` (recording every item) until the stored
/// offset is `until`.
async fn run_until(
    store: &Arc<dyn ProjectionStore>,
    projection: &Projection,
    until: &FeedOffset,
    items: &Seen,
) {
    let record = {
        let items = Arc::clone(items);
        move |batch: Vec<FeedItem>| {
            items
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend(batch);
            async { Ok(()) }
        }
    };
    let run = projection.run(&**store, record);
    let caught_up = async {
        loop {
            let stored = store.load_offset(&projection.name).await.expect("load");
            if stored.as_ref() == Some(until) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::select! {
        ended = run => panic!("the projection ended: {ended:?}"),
        () = async { tokio::time::timeout(PATIENCE, caught_up).await.expect("caught up in time") } => {}
    }
}

/// Offsets round-trip per name (names are data); bad names and foreign
/// offsets are refused with typed errors.
pub async fn projection_offsets_round_trip(store: Arc<dyn ProjectionStore>) {
    let actor = fresh_actor("proj-offsets");
    append_each(&*store, &entries(&actor, 1, 3)).await;
    let (items, last) = read_all(
        &*store,
        &journal_core::FeedFilter::All,
        FeedOffset::start(),
        2,
    )
    .await;
    assert_eq!(items.len(), 3);
    let names = [
        "orders",
        "o'; DROP TABLE projection_offsets; --",
        "ünïcode {tag}",
    ];
    for name in names {
        assert_eq!(store.load_offset(name).await.expect("load"), None, "{name}");
    }
    store
        .save_offset(names[0], &items[0].offset)
        .await
        .expect("save");
    store.save_offset(names[1], &last).await.expect("save");
    store
        .save_offset(names[0], &items[1].offset)
        .await
        .expect("save again");
    assert_eq!(
        store.load_offset(names[0]).await.expect("load"),
        Some(items[1].offset.clone())
    );
    assert_eq!(store.load_offset(names[1]).await.expect("load"), Some(last));
    assert_eq!(store.load_offset(names[2]).await.expect("load"), None);
    for bad in ["", &"x".repeat(256)] {
        assert!(
            matches!(
                store.load_offset(bad).await,
                Err(JournalError::InvalidEntry(_))
            ),
            "name of {} bytes",
            bad.len()
        );
    }
    assert!(matches!(
        store
            .save_offset("orders", &FeedOffset::new("not an offset"))
            .await,
        Err(JournalError::InvalidOffset(_))
    ));
}

/// A run hands every entry over (each actor's in order); stopped and run
/// again, it resumes from its stored offset with what came since.
pub async fn projection_resumes_from_its_stored_offset(store: Arc<dyn ProjectionStore>) {
    let (a, b) = (fresh_actor("proj-a"), fresh_actor("proj-b"));
    let mut first = entries(&a, 1, 5);
    first.extend(entries(&b, 1, 6));
    append_each(&*store, &first[..5]).await;
    store.append_batch(&first[5..]).await.expect("a batch");
    let (_, end) = read_all(
        &*store,
        &journal_core::FeedFilter::All,
        FeedOffset::start(),
        100,
    )
    .await;
    let projection = projection("resume");
    let items: Seen = Arc::default();
    run_until(&store, &projection, &end, &items).await;
    assert_feed("the first run", &seen(&items), &first);

    let more: Vec<JournalEntry> = [entries(&a, 6, 8), entries(&b, 7, 7)].concat();
    append_each(&*store, &more).await;
    let (_, end) = read_all(
        &*store,
        &journal_core::FeedFilter::All,
        FeedOffset::start(),
        100,
    )
    .await;
    let again: Seen = Arc::default();
    run_until(&store, &projection, &end, &again).await;
    assert_feed("the second run: only what came since", &seen(&again), &more);
}

/// A handler that fails after doing its work (a crash between the effect
/// and the offset): the run ends with its error, the offset stays, and the
/// next run hands the same entries over again: at-least-once, nothing lost.
pub async fn projection_failure_before_the_offset_redelivers(store: Arc<dyn ProjectionStore>) {
    let actor = fresh_actor("proj-fail");
    let written = entries(&actor, 1, 10);
    append_each(&*store, &written).await;
    let projection = projection("redeliver");
    let items: Seen = Arc::default();
    let calls = Arc::new(Mutex::new(0usize));
    let failing = {
        let (items, calls) = (Arc::clone(&items), Arc::clone(&calls));
        move |batch: Vec<FeedItem>| {
            let mut calls = calls.lock().unwrap_or_else(PoisonError::into_inner);
            *calls += 1;
            items
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend(batch);
            let fail = *calls == 2;
            async move {
                if fail {
                    Err("crashed after its effect".into())
                } else {
                    Ok(())
                }
            }
        }
    };
    let ended = tokio::time::timeout(PATIENCE, projection.run(&*store, failing))
        .await
        .expect("the run ends");
    assert!(
        matches!(ended, Err(JournalError::Storage { .. })),
        "the handler's error: {ended:?}"
    );
    let before = seen(&items);
    let stored = store.load_offset("redeliver").await.expect("load");
    // The first batch's offset only: the failed batch's is not stored.
    let first_batch = before
        .iter()
        .position(|i| Some(&i.offset) == stored.as_ref())
        .map_or(0, |at| at + 1);
    assert!(
        first_batch >= 1 && first_batch < before.len(),
        "stored {stored:?} of {before:?}"
    );
    let (_, end) = read_all(
        &*store,
        &journal_core::FeedFilter::All,
        FeedOffset::start(),
        100,
    )
    .await;
    let again: Seen = Arc::default();
    run_until(&store, &projection, &end, &again).await;
    let again = seen(&again);
    assert_feed("the run after the failure", &again, &written[first_batch..]);
    let mut all = before[..first_batch].to_vec();
    all.extend(again);
    assert_feed(
        "everything, once the failed batch came again",
        &all,
        &written,
    );
}
