//! Journals of thousands of entries, read back every way the trait offers
//! and compared with what was written (contract rules 6, 7 and 14).
//!
//! The small journals of the other tests fit in one page of every backend;
//! a replay that stops after a few hundred entries, a stream that skips an
//! entry now and then, or two entries in the wrong order only show on
//! journals longer than a page. These tests write about 4,200 entries over
//! three actors, as single appends and batches of many sizes, truncate two
//! of the journals in the middle and go on writing, and then compare every
//! list, range and stream with the entries kept: count, order and every
//! field of every entry. The writes go in batches of at most 513 entries,
//! so the tests stay fast over the network too.

use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use journal_core::{JournalEntry, JournalStorage};

use crate::fixture::{assert_entries, collect_stream, entries, fresh_actor, rich_entry};

/// How an actor's journal is written, in turn: chunks of these sizes, as
/// one batch (`true`) or as single appends (`false`).
const CHUNKS: [(u64, bool); 10] = [
    (1, false),
    (3, false),
    (2, true),
    (64, true),
    (1, true),
    (511, true),
    (7, false),
    (513, true),
    (200, true),
    (97, true),
];

/// One actor of a written journal: what it holds now.
struct Journal {
    actor: String,
    /// The entries not truncated, ascending.
    kept: Vec<JournalEntry>,
    highest: u64,
    /// Where in [`CHUNKS`] the next write continues.
    turn: usize,
}

impl Journal {
    fn new(actor: String) -> Self {
        Journal {
            actor,
            kept: Vec::new(),
            highest: 0,
            turn: 0,
        }
    }

    /// Writes the next chunk, no further than `target`; false when the
    /// journal has reached it.
    async fn write_chunk(&mut self, storage: &dyn JournalStorage, target: u64) -> bool {
        if self.highest >= target {
            return false;
        }
        let (size, as_batch) = CHUNKS[self.turn % CHUNKS.len()];
        self.turn += 1;
        let start = self.highest + 1;
        let end = (start + size - 1).min(target);
        let chunk: Vec<_> = (start..=end).map(|s| rich_entry(&self.actor, s)).collect();
        if as_batch {
            storage
                .append_batch(&chunk)
                .await
                .unwrap_or_else(|e| panic!("batch {start}..={end} of {}: {e}", self.actor));
        } else {
            for e in &chunk {
                storage
                    .append_entry(e)
                    .await
                    .unwrap_or_else(|err| panic!("append {} of {}: {err}", e.sequence, self.actor));
            }
        }
        self.highest = end;
        self.kept.extend(chunk);
        true
    }

    async fn truncate(&mut self, storage: &dyn JournalStorage, to: u64) {
        storage
            .truncate_to(&self.actor, to)
            .await
            .unwrap_or_else(|e| panic!("truncate {} to {to}: {e}", self.actor));
        self.kept.retain(|e| e.sequence > to);
    }

    /// The first sequence still stored (`highest + 1` when none is).
    fn first_kept(&self) -> u64 {
        self.kept.first().map_or(self.highest + 1, |e| e.sequence)
    }

    /// What `replay_range(from, to, max)` must give.
    fn range(&self, from: u64, to: u64, max: usize) -> Vec<JournalEntry> {
        self.kept
            .iter()
            .filter(|e| from <= e.sequence && e.sequence <= to)
            .take(max)
            .cloned()
            .collect()
    }

    /// Starting points worth reading from: the ends of the journal, of
    /// the truncated part and of the first pages.
    fn starts(&self, page: u64) -> Vec<u64> {
        let (first, highest) = (self.first_kept(), self.highest);
        let mut starts = vec![
            0,
            1,
            first - 1,
            first,
            first + 1,
            first + page - 1,
            first + page,
            first + page + 1,
            first.midpoint(highest),
            highest.saturating_sub(1),
            highest,
            highest + 1,
            u64::MAX,
        ];
        starts.sort_unstable();
        starts.dedup();
        starts
    }
}

/// Writes three interleaved journals: one of 2,700 entries truncated to
/// 777 after its first 1,600, one of 1,200 truncated to 1,024 after its
/// first 1,100, and one of 300 left whole. A stored chunk is appended again
/// on the way (an idempotent retry, rule 5).
async fn write_journals(storage: &dyn JournalStorage, tag: &str) -> Vec<Journal> {
    let prefix = fresh_actor(tag);
    let mut journals: Vec<Journal> = ["long", "it's \"second\" {b}", "short:c"]
        .iter()
        .map(|name| Journal::new(format!("{prefix}/{name}")))
        .collect();
    let mut more = true;
    while more {
        more = false;
        for (journal, target) in journals.iter_mut().zip([1_600, 1_100, 300]) {
            more |= journal.write_chunk(storage, target).await;
        }
    }
    journals[0].truncate(storage, 777).await;
    journals[1].truncate(storage, 1_024).await;
    let retry: Vec<_> = journals[0].kept[100..160].to_vec();
    storage
        .append_batch(&retry)
        .await
        .expect("retry of a stored chunk");
    more = true;
    while more {
        more = false;
        for (journal, target) in journals.iter_mut().zip([2_700, 1_200, 300]) {
            more |= journal.write_chunk(storage, target).await;
        }
    }
    journals
}

/// Every `replay_from` and every `replay_stream`, from the ends of each
/// journal, of its truncated part and of its first pages, gives exactly
/// the entries kept from there on; the highest sequence is the last
/// appended.
pub async fn volume_lists_and_streams_match_written(storage: Arc<dyn JournalStorage>) {
    let journals = write_journals(&*storage, "vol-lists").await;
    let page = storage.replay_page_size().max(1) as u64;
    for j in &journals {
        assert_eq!(
            storage.highest_sequence(&j.actor).await.expect("highest"),
            j.highest,
            "highest sequence of {:?}",
            j.actor
        );
        for from in j.starts(page) {
            let want = j.range(from, u64::MAX, usize::MAX);
            let listed = storage.replay_from(&j.actor, from).await.expect("replay");
            assert_entries(
                &format!("replay_from({from}) of {:?}", j.actor),
                &listed,
                &want,
            );
            let streamed = collect_stream(&*storage, &j.actor, from).await;
            assert_entries(
                &format!("replay_stream({from}) of {:?}", j.actor),
                &streamed,
                &want,
            );
        }
    }
}

/// `replay_range` over a grid of bounds (empty, one entry, one page, many
/// pages, open-ended) and limits (none, 0, 1, around the page size, and
/// hundreds to thousands), on every journal, gives exactly the entries
/// kept within the bounds, at most `max` of them.
pub async fn volume_ranges_match_written(storage: Arc<dyn JournalStorage>) {
    let journals = write_journals(&*storage, "vol-ranges").await;
    let page = storage.replay_page_size().max(1);
    let p = page as u64;
    let limits = [
        usize::MAX,
        0,
        1,
        2,
        page - 1,
        page,
        page + 1,
        2 * page + 3,
        300,
        301,
        1_000,
        5_000,
    ];
    let mut turn = 0;
    for j in &journals {
        let (first, highest) = (j.first_kept(), j.highest);
        for from in [
            0,
            first,
            first + 1,
            first + p - 1,
            first.midpoint(highest),
            highest,
        ] {
            let tos = [
                from,
                from + 1,
                from + p,
                from + 2 * p + 1,
                highest - 1,
                highest,
                u64::MAX,
            ];
            for to in tos {
                turn += 7;
                let max = limits[turn % limits.len()];
                let got = storage
                    .replay_range(&j.actor, from, to, max)
                    .await
                    .expect("replay_range");
                let want = j.range(from, to, max);
                assert_entries(
                    &format!("replay_range({from}, {to}, {max}) of {:?}", j.actor),
                    &got,
                    &want,
                );
                // An unlimited range is the same read with every limit
                // that is not smaller than its size.
                if max == usize::MAX && want.len() > 1 {
                    let exact = storage
                        .replay_range(&j.actor, from, to, want.len())
                        .await
                        .expect("replay_range");
                    assert_entries(
                        &format!(
                            "replay_range({from}, {to}, {}) of {:?}",
                            want.len(),
                            j.actor
                        ),
                        &exact,
                        &want,
                    );
                }
            }
        }
    }
}

/// The replay stream holds a bounded number of entries: it reads the
/// journal page by page as it is consumed (contract rule 7).
///
/// How this is observed without measuring memory: the journal holds
/// three and a half pages (`replay_page_size()`). The test takes the
/// stream's first entry, then appends more than a page to the journal, and
/// then consumes the rest. A stream holding at most three pages at any time
/// (the page being consumed and up to two read ahead) has not yet read the
/// end of the journal when the first entry comes out, so the pages it reads
/// later include the new entries, and it yields every entry, old and new,
/// once, in order. A stream that read the whole journal before yielding its
/// first entry (`stream::iter(replay_from(..))`, or one page as large as the
/// journal) misses the new entries and fails.
///
/// This relies on the backend reading each page when it asks for it (as
/// every backend of this workspace does), not from a snapshot of the whole
/// journal taken when the stream started.
pub async fn volume_stream_reads_page_by_page(storage: Arc<dyn JournalStorage>) {
    let actor = fresh_actor("vol-lazy");
    let page = storage.replay_page_size().max(1) as u64;
    let old = page * 3 + page / 2;
    let all = entries(&actor, 1, old + page + 1);
    let (before, after) = all.split_at(usize::try_from(old).expect("a small journal"));
    for chunk in before.chunks(1_000) {
        storage.append_batch(chunk).await.expect("batch");
    }
    let mut stream = storage.replay_stream(&actor, 1);
    let first = stream
        .next()
        .await
        .expect("the stream yields the first entry")
        .expect("the first entry");
    assert_eq!(first, all[0], "the stream's first entry");
    for chunk in after.chunks(1_000) {
        storage.append_batch(chunk).await.expect("batch");
    }
    let mut streamed = vec![first];
    streamed.extend(
        stream
            .try_collect::<Vec<_>>()
            .await
            .expect("the rest of the stream"),
    );
    assert_entries(
        &format!(
            "a stream of {old} entries (page {page}) consumed while {} more were appended",
            after.len()
        ),
        &streamed,
        &all,
    );
}
