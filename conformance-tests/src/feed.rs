//! The feed over all actors and per tag (contract rule 28): what every
//! [`JournalFeed`] promises.
//!
//! A feed over all actors carries every actor of the store, so each test
//! needs a store of its own (a new file, schema or key prefix), as
//! [`feed_suite!`](crate::feed_suite) gives it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use journal_core::feed::{
    follow_feed, FeedFilter, FeedItem, FeedOffset, FeedOptions, JournalFeed, TAGS_KEY,
};
use journal_core::journal_entry::Entry;
use journal_core::{JournalEntry, JournalError};

use crate::fixture::{append_each, entries, entry, fresh_actor};

/// How long a test waits for the feed to show an entry before it fails.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// An entry of a message tagged with `tags` (comma-separated).
pub fn tagged(actor_id: &str, sequence: u64, tags: &str) -> JournalEntry {
    let mut message = journal_core::MessageReceived {
        message_id: format!("msg-{sequence}"),
        message_type: "Tagged".into(),
        payload: format!("payload {sequence}").into_bytes(),
        ..Default::default()
    };
    message.metadata.insert(TAGS_KEY.into(), tags.into());
    JournalEntry::new(actor_id, sequence, Entry::MessageReceived(message))
}

/// Reads the whole feed after `after` through pages of `page`, returning
/// the items and the last offset.
pub async fn read_all(
    store: &dyn JournalFeed,
    filter: &FeedFilter,
    after: FeedOffset,
    page: usize,
) -> (Vec<FeedItem>, FeedOffset) {
    let mut items = Vec::new();
    let mut at = after;
    loop {
        let got = store
            .read_feed(filter, &at, page)
            .await
            .expect("read the feed");
        assert!(got.len() <= page, "a page of {} holds {}", page, got.len());
        let Some(last) = got.last() else {
            return (items, at);
        };
        at = last.offset.clone();
        items.extend(got);
    }
}

/// Asserts `items` hold each of `want` exactly once (and nothing else),
/// each actor's in sequence order, each equal to what was appended.
pub fn assert_feed(what: &str, items: &[FeedItem], want: &[JournalEntry]) {
    let mut by_key: HashMap<(&str, u64), &JournalEntry> = HashMap::new();
    for e in want {
        by_key.insert((e.actor_id.as_str(), e.sequence), e);
    }
    let mut seen = HashSet::new();
    let mut last: BTreeMap<&str, u64> = BTreeMap::new();
    for item in items {
        let e = &item.entry;
        let key = (e.actor_id.as_str(), e.sequence);
        let Some(expected) = by_key.get(&key) else {
            panic!("{what}: the feed gave {key:?}, which was not appended (or not for this feed)");
        };
        assert_eq!(e, *expected, "{what}: {key:?} came back different");
        assert!(seen.insert(key), "{what}: {key:?} came twice");
        let previous = last.insert(e.actor_id.as_str(), e.sequence).unwrap_or(0);
        assert!(
            previous < e.sequence,
            "{what}: {} came after {} for {}",
            e.sequence,
            previous,
            e.actor_id
        );
    }
    let missing: Vec<_> = by_key
        .keys()
        .filter(|k| !seen.contains(*k))
        .take(5)
        .collect();
    assert!(
        missing.is_empty(),
        "{what}: the feed never gave {missing:?} (and maybe more)"
    );
}

/// Every entry once, each actor's in sequence order, through pages of any
/// size; an empty store gives an empty feed; `max = 0` gives nothing.
pub async fn feed_every_entry_once_in_actor_order(store: Arc<dyn JournalFeed>) {
    let (empty, at) = read_all(&*store, &FeedFilter::All, FeedOffset::start(), 5).await;
    assert!(empty.is_empty(), "a fresh store's feed: {empty:?}");
    assert!(at.is_start());
    let actors: Vec<String> = (0..4).map(|_| fresh_actor("feed")).collect();
    let mut written = Vec::new();
    for round in 0..5u64 {
        for (i, actor) in actors.iter().enumerate() {
            if i % 2 == 0 {
                let batch = entries(actor, round * 3 + 1, round * 3 + 3);
                store.append_batch(&batch).await.expect("a batch");
                written.extend(batch);
            } else {
                let single = entries(actor, round * 3 + 1, round * 3 + 3);
                append_each(&*store, &single).await;
                written.extend(single);
            }
        }
    }
    for page in [1, 7, 1000] {
        let (items, _) = read_all(&*store, &FeedFilter::All, FeedOffset::start(), page).await;
        assert_feed(&format!("pages of {page}"), &items, &written);
    }
    let none = store
        .read_feed(&FeedFilter::All, &FeedOffset::start(), 0)
        .await
        .expect("max 0");
    assert!(none.is_empty());
}

/// A reader that stores its offset as text and resumes from it gets the
/// rest: no gap, no duplicate; resuming from the last offset gives nothing
/// until more is written.
pub async fn feed_resumes_from_a_stored_offset(store: Arc<dyn JournalFeed>) {
    let actor = fresh_actor("feed-resume");
    let first = entries(&actor, 1, 10);
    append_each(&*store, &first).await;
    let page = store
        .read_feed(&FeedFilter::All, &FeedOffset::start(), 4)
        .await
        .expect("a page");
    assert_eq!(page.len(), 4);
    let stored: String = page[3].offset.as_str().to_owned();
    let (rest, last) = read_all(&*store, &FeedFilter::All, FeedOffset::new(stored), 3).await;
    let mut all = page.clone();
    all.extend(rest);
    assert_feed("resumed", &all, &first);
    let nothing = store
        .read_feed(&FeedFilter::All, &last, 10)
        .await
        .expect("after the end");
    assert!(nothing.is_empty(), "after the last offset: {nothing:?}");
    let more = entries(&actor, 11, 12);
    store.append_batch(&more).await.expect("more");
    let (got, _) = read_all(&*store, &FeedFilter::All, last, 10).await;
    assert_feed("written after", &got, &more);
}

/// Followed live: stored entries, then new ones as they commit.
pub async fn feed_follows_new_entries(store: Arc<dyn JournalFeed>) {
    let (one, two) = (fresh_actor("feed-live"), fresh_actor("feed-live"));
    let stored = entries(&one, 1, 3);
    append_each(&*store, &stored).await;
    let options = FeedOptions {
        page: 2,
        poll_interval: Duration::from_millis(100),
        ..FeedOptions::default()
    };
    let mut feed = follow_feed(&*store, FeedFilter::All, FeedOffset::start(), options);
    let mut want = stored;
    let more = [entries(&two, 1, 2), entries(&one, 4, 5)].concat();
    for e in &more {
        store.append_entry(e).await.expect("append");
    }
    want.extend(more);
    let mut got = Vec::new();
    while got.len() < want.len() {
        match tokio::time::timeout(PATIENCE, feed.next()).await {
            Ok(Some(Ok(item))) => got.push(item),
            other => panic!("the feed after {} items: {other:?}", got.len()),
        }
    }
    assert_feed("followed", &got, &want);
}

/// Many writers at once on many actors while a reader follows the feed and
/// another resumes from its stored offset page after page: each sees every
/// entry once (no entry committed late is skipped).
pub async fn feed_concurrent_writers_never_skip(store: Arc<dyn JournalFeed>) {
    const ACTORS: usize = 16;
    const PER_ACTOR: u64 = 30;
    let actors: Vec<String> = (0..ACTORS).map(|_| fresh_actor("feed-race")).collect();
    let writers: Vec<_> = actors
        .iter()
        .enumerate()
        .map(|(i, actor)| {
            let (store, actor) = (Arc::clone(&store), actor.clone());
            tokio::spawn(async move {
                let mut written = Vec::new();
                let mut next = 1;
                while next <= PER_ACTOR {
                    let size = ((next as usize + i) % 3 + 1) as u64;
                    let batch = entries(&actor, next, (next + size - 1).min(PER_ACTOR));
                    if batch.len() == 1 {
                        store.append_entry(&batch[0]).await.expect("append");
                    } else {
                        store.append_batch(&batch).await.expect("a batch");
                    }
                    next += batch.len() as u64;
                    written.extend(batch);
                }
                written
            })
        })
        .collect();
    // The resuming reader: a page, its offset stored as text, a new read
    // from that text, while the writers run.
    let resumer = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            let total = ACTORS * PER_ACTOR as usize;
            let mut stored = String::new();
            let mut got = Vec::new();
            let deadline = tokio::time::Instant::now() + PATIENCE;
            while got.len() < total {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "resumer: {} of {total}",
                    got.len()
                );
                let page = store
                    .read_feed(&FeedFilter::All, &FeedOffset::new(stored.clone()), 7)
                    .await
                    .expect("read");
                if let Some(last) = page.last() {
                    stored = last.offset.as_str().to_owned();
                } else {
                    tokio::task::yield_now().await;
                }
                got.extend(page);
            }
            got
        })
    };
    let mut written = Vec::new();
    for writer in writers {
        written.extend(writer.await.expect("a writer"));
    }
    let paged = resumer.await.expect("the resumer");
    assert_feed(
        "resumed page by page under concurrent writers",
        &paged,
        &written,
    );
    let (all, _) = read_all(&*store, &FeedFilter::All, FeedOffset::start(), 50).await;
    assert_feed("read afterwards", &all, &written);
}

/// A tag's feed: only the entries tagged with it, each once, in order;
/// hostile tag text is data.
pub async fn feed_by_tag(store: Arc<dyn JournalFeed>) {
    let (a, b) = (fresh_actor("feed-tag"), fresh_actor("feed-tag"));
    let odd_tag = "eu'; DROP TABLE x; --\u{e9}";
    let written = [
        tagged(&a, 1, "cart, eu"),
        entry(&a, 2),
        tagged(&b, 1, "cart"),
        tagged(&a, 3, odd_tag),
        tagged(&b, 2, " eu ,cart,eu"),
    ];
    append_each(&*store, &written[..2]).await;
    append_each(&*store, &written[2..3]).await;
    append_each(&*store, &written[3..4]).await;
    append_each(&*store, &written[4..]).await;
    let cart = FeedFilter::Tag("cart".into());
    let (got, _) = read_all(&*store, &cart, FeedOffset::start(), 2).await;
    assert_feed(
        "tag cart",
        &got,
        &[written[0].clone(), written[2].clone(), written[4].clone()],
    );
    let eu = FeedFilter::Tag("eu".into());
    let (got, at) = read_all(&*store, &eu, FeedOffset::start(), 1).await;
    assert_feed("tag eu", &got, &[written[0].clone(), written[4].clone()]);
    let (got, _) = read_all(
        &*store,
        &FeedFilter::Tag(odd_tag.into()),
        FeedOffset::start(),
        5,
    )
    .await;
    assert_feed("a hostile tag", &got, &written[3..4]);
    let (got, _) = read_all(
        &*store,
        &FeedFilter::Tag("none".into()),
        FeedOffset::start(),
        5,
    )
    .await;
    assert!(got.is_empty(), "an unused tag: {got:?}");
    // Resumed from its offset: only what came since.
    let later = tagged(&b, 3, "eu");
    store.append_entry(&later).await.expect("append");
    let (got, _) = read_all(&*store, &eu, at, 5).await;
    assert_feed("tag eu, resumed", &got, &[later]);
}

/// Offsets a backend did not give are refused with a typed error, and the
/// feed still reads afterwards.
pub async fn feed_refuses_foreign_offsets(store: Arc<dyn JournalFeed>) {
    let actor = fresh_actor("feed-bad");
    append_each(&*store, &entries(&actor, 1, 2)).await;
    for bad in [
        "not an offset",
        "-1",
        "\u{0}",
        "99999999999999999999999999999",
    ] {
        match store
            .read_feed(&FeedFilter::All, &FeedOffset::new(bad), 10)
            .await
        {
            Err(JournalError::InvalidOffset(_)) => {}
            other => panic!("offset {bad:?}: expected InvalidOffset, got {other:?}"),
        }
    }
    let (got, _) = read_all(&*store, &FeedFilter::All, FeedOffset::start(), 10).await;
    assert_eq!(got.len(), 2);
}

/// A tag's feed, as the feed over all actors: truncated and deleted
/// entries leave it, the rest stays, and an actor created again comes
/// once, after the offsets already given (rule 28).
pub async fn feed_tag_after_truncation_and_deletion(store: Arc<dyn JournalFeed>) {
    let (kept, gone) = (fresh_actor("tag-trunc"), fresh_actor("tag-del"));
    let filter = FeedFilter::Tag("kept-and-gone".into());
    let tagged_run = |actor: &str, to: u64| -> Vec<JournalEntry> {
        (1..=to)
            .map(|s| tagged(actor, s, "kept-and-gone"))
            .collect()
    };
    let first = tagged_run(&kept, 6);
    append_each(&*store, &first).await;
    append_each(&*store, &tagged_run(&gone, 3)).await;
    let (_, at) = read_all(&*store, &filter, FeedOffset::start(), 4).await;
    store.truncate_to(&kept, 4).await.expect("truncate");
    store.delete_actor(&gone).await.expect("delete");
    let (got, _) = read_all(&*store, &filter, FeedOffset::start(), 4).await;
    assert_feed("tag, after truncation and deletion", &got, &first[4..]);
    let again = tagged_run(&gone, 2);
    append_each(&*store, &again).await;
    let (got, _) = read_all(&*store, &filter, at, 4).await;
    assert_feed("tag, written after the deletion", &got, &again);
    let (got, _) = read_all(&*store, &filter, FeedOffset::start(), 4).await;
    let mut now = first[4..].to_vec();
    now.extend(again);
    assert_feed("tag, from the start, the actor created again", &got, &now);
}

/// Truncated and deleted entries leave the feed; the rest stays, and later
/// entries come after the offsets already given.
pub async fn feed_after_truncation_and_deletion(store: Arc<dyn JournalFeed>) {
    let (kept, gone) = (fresh_actor("feed-trunc"), fresh_actor("feed-del"));
    let first = entries(&kept, 1, 6);
    append_each(&*store, &first).await;
    append_each(&*store, &entries(&gone, 1, 3)).await;
    let (_, at) = read_all(&*store, &FeedFilter::All, FeedOffset::start(), 4).await;
    store.truncate_to(&kept, 4).await.expect("truncate");
    store.delete_actor(&gone).await.expect("delete");
    let (got, _) = read_all(&*store, &FeedFilter::All, FeedOffset::start(), 4).await;
    assert_feed("after truncation and deletion", &got, &first[4..]);
    // The newest rows were deleted: what comes next still comes after the
    // offset a reader holds.
    let again = entries(&gone, 1, 2);
    append_each(&*store, &again).await;
    let (got, _) = read_all(&*store, &FeedFilter::All, at, 4).await;
    assert_feed("written after the deletion", &got, &again);
    // From the start: the deleted actor's old entries are gone, and its new
    // ones come once (whatever named the old ones names nothing now).
    let (got, _) = read_all(&*store, &FeedFilter::All, FeedOffset::start(), 4).await;
    let mut now = first[4..].to_vec();
    now.extend(again);
    assert_feed("from the start, the actor created again", &got, &now);
}
