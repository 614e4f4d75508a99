//! The suite's self-test: deliberately broken storages, each the memory
//! backend behind a wrapper with one fault, must each fail at least one
//! storage-level test of the suite (every module but `facet`). A mutant
//! that passes them all is a hole in the suite, and fails this test by
//! name.
//!
//! The controls hold the other way: the same wrapper without a fault, a
//! `CutOff` that never cuts off and a `Recorder` pass every test, and each
//! of them forwards every method of the trait (provided ones included) to
//! the storage it wraps.
//!
//! Each suite test runs as the `suite!` macro runs it, on a runtime of its
//! own, under `catch_unwind` and a time limit; a mutant stops at the first
//! test that kills it. `JOURNAL_MUTANTS_ALL=1` runs every test against
//! every mutant and prints which tests kill it.
//!
//! The timer tests have a self-test of their own (`mutants/timers.rs`).

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::{self, StreamExt};
use journal_conformance::cutoff::CutOff;
use journal_conformance::forwarding::{assert_forwards_every_method, Recorder};
use journal_conformance::SuiteTest;
use journal_core::storage::{paged_actors, paged_replay, DEFAULT_ACTOR_PAGE, DEFAULT_REPLAY_PAGE};
use journal_core::validate::{self, Limits};
use journal_core::{
    ActorPage, ActorStream, ActorSummary, Checkpoint, EntryStream, JournalEntry, JournalError,
    JournalResult, JournalStats, JournalStorage,
};
use journal_memory::MemoryJournalStorage;

#[path = "mutants/timers.rs"]
mod timers;

/// One fault of a [`Mutant`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// No fault: forwards everything.
    None,
    /// `replay_range` returns at most 300 entries (lists and streams too).
    RangeCappedAt300,
    /// The native stream hides every 1000th entry.
    StreamHidesEvery1000th,
    /// Entries 1000 and 1001 swap places, in lists, ranges and streams.
    TwoEntriesSwapped,
    /// The stream reads the whole journal with `replay_from` first.
    StreamLoadsWholeJournal,
    /// A batch is written entry by entry, yielding in between.
    BatchEntryByEntry,
    /// `replay_range` treats `to` as exclusive.
    RangeToExclusive,
    /// `max = 0` gives one entry.
    RangeMaxZeroGivesOne,
    /// The highest sequence is the last stored entry's: truncating
    /// everything lowers it to 0.
    TruncationLowersHighest,
    /// `truncate_to(s)` removes `s + 1` too.
    TruncatesOneTooMany,
    /// Re-appending a stored entry stores a second copy.
    RetryStoresSecondCopy,
    /// A conflicting append reports the conflict but is stored anyway.
    ConflictWritesAnyway,
    /// The latest checkpoint is the oldest.
    LatestCheckpointIsOldest,
    /// Saving at a sequence that has a checkpoint keeps the old one.
    CheckpointOverwriteIgnored,
    /// Pruning removes the checkpoint at `before` too.
    PruneOneTooMany,
    /// Deleting an actor leaves its checkpoints readable.
    DeleteKeepsCheckpoints,
    /// The actor stream misses the third actor.
    ListingMissesAnActor,
    /// The stream drops the last entry.
    StreamDropsLast,
    /// The summary counts truncated entries as stored.
    SummaryCountsTruncated,
    /// `replay_from(actor, 0)` is empty.
    ReplayFromZeroIsEmpty,
    /// Behaves correctly but does not override the trait's provided
    /// methods (runs their defaults): only the forwarding check sees it.
    ForgetsProvidedMethods,
}

/// The memory backend (or any storage) with one [`Fault`].
struct Mutant {
    inner: Arc<dyn JournalStorage>,
    fault: Fault,
    /// Entries shown beside the stored ones (second copies, conflicting
    /// writes).
    phantoms: Mutex<Vec<JournalEntry>>,
    /// Checkpoints of deleted actors.
    ghosts: Mutex<BTreeMap<(String, u64), Checkpoint>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Mutant {
    fn new(inner: Arc<dyn JournalStorage>, fault: Fault) -> Self {
        Mutant {
            inner,
            fault,
            phantoms: Mutex::default(),
            ghosts: Mutex::default(),
        }
    }

    /// Whether lists and streams are built on this wrapper's own
    /// `replay_range`, so that its fault shows the same in all of them.
    fn reads_through_range(&self) -> bool {
        matches!(
            self.fault,
            Fault::RangeCappedAt300
                | Fault::TwoEntriesSwapped
                | Fault::RangeToExclusive
                | Fault::RangeMaxZeroGivesOne
                | Fault::RetryStoresSecondCopy
                | Fault::ConflictWritesAnyway
                | Fault::ForgetsProvidedMethods
        )
    }

    fn ghost_checkpoints(&self, actor_id: &str) -> Vec<Checkpoint> {
        lock(&self.ghosts)
            .iter()
            .filter(|((a, _), _)| a == actor_id)
            .map(|(_, c)| c.clone())
            .collect()
    }
}

#[async_trait]
impl JournalStorage for Mutant {
    fn backend_name(&self) -> &'static str {
        self.inner.backend_name()
    }

    async fn append_entry(&self, entry: &JournalEntry) -> JournalResult<u64> {
        match self.fault {
            Fault::RetryStoresSecondCopy => {
                let stored = self.inner.highest_sequence(&entry.actor_id).await? >= entry.sequence;
                let result = self.inner.append_entry(entry).await;
                if result.is_ok() && stored {
                    lock(&self.phantoms).push(entry.clone());
                }
                result
            }
            Fault::ConflictWritesAnyway => {
                let result = self.inner.append_entry(entry).await;
                if let Err(JournalError::SequenceConflict { .. }) = result {
                    lock(&self.phantoms).push(entry.clone());
                }
                result
            }
            _ => self.inner.append_entry(entry).await,
        }
    }

    async fn append_batch(&self, entries: &[JournalEntry]) -> JournalResult<()> {
        if self.fault != Fault::BatchEntryByEntry {
            return self.inner.append_batch(entries).await;
        }
        validate::validate_batch(entries, &Limits::default())?;
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let highest = self.inner.highest_sequence(&first.actor_id).await?;
        if first.sequence != highest + 1 {
            // Retries and conflicts as the backend handles them.
            return self.inner.append_batch(entries).await;
        }
        for e in entries {
            self.inner.append_entry(e).await?;
            tokio::task::yield_now().await;
        }
        Ok(())
    }

    async fn replay_range(
        &self,
        actor_id: &str,
        from: u64,
        to: u64,
        max: usize,
    ) -> JournalResult<Vec<JournalEntry>> {
        let to = match self.fault {
            Fault::RangeToExclusive if to < u64::MAX => to.saturating_sub(1),
            _ => to,
        };
        let max = match self.fault {
            Fault::RangeMaxZeroGivesOne if max == 0 => 1,
            _ => max,
        };
        let mut entries = self.inner.replay_range(actor_id, from, to, max).await?;
        match self.fault {
            Fault::RangeCappedAt300 => entries.truncate(300),
            Fault::TwoEntriesSwapped => {
                let at = |s: u64| entries.iter().position(|e| e.sequence == s);
                if let (Some(a), Some(b)) = (at(1000), at(1001)) {
                    entries.swap(a, b);
                }
            }
            Fault::RetryStoresSecondCopy | Fault::ConflictWritesAnyway => {
                entries.extend(
                    lock(&self.phantoms)
                        .iter()
                        .filter(|e| {
                            e.actor_id == actor_id && from.max(1) <= e.sequence && e.sequence <= to
                        })
                        .cloned(),
                );
                entries.sort_by_key(|e| e.sequence);
                entries.truncate(max);
            }
            _ => {}
        }
        Ok(entries)
    }

    async fn highest_sequence(&self, actor_id: &str) -> JournalResult<u64> {
        if self.fault == Fault::TruncationLowersHighest {
            let stored = self
                .inner
                .replay_range(actor_id, 1, u64::MAX, usize::MAX)
                .await?;
            return Ok(stored.last().map_or(0, |e| e.sequence));
        }
        self.inner.highest_sequence(actor_id).await
    }

    async fn truncate_to(&self, actor_id: &str, to: u64) -> JournalResult<()> {
        let to = match self.fault {
            Fault::TruncatesOneTooMany if to > 0 => to.saturating_add(1),
            _ => to,
        };
        self.inner.truncate_to(actor_id, to).await
    }

    async fn delete_actor(&self, actor_id: &str) -> JournalResult<()> {
        if self.fault == Fault::DeleteKeepsCheckpoints {
            for seq in self.inner.list_checkpoints(actor_id).await? {
                if let Some(c) = self.inner.get_checkpoint(actor_id, seq).await? {
                    lock(&self.ghosts).insert((actor_id.to_owned(), seq), c);
                }
            }
        }
        self.inner.delete_actor(actor_id).await
    }

    async fn save_checkpoint(&self, checkpoint: &Checkpoint) -> JournalResult<()> {
        if self.fault == Fault::CheckpointOverwriteIgnored
            && self
                .inner
                .get_checkpoint(&checkpoint.actor_id, checkpoint.sequence)
                .await?
                .is_some()
        {
            return Ok(());
        }
        self.inner.save_checkpoint(checkpoint).await
    }

    async fn get_latest_checkpoint(&self, actor_id: &str) -> JournalResult<Option<Checkpoint>> {
        match self.fault {
            Fault::LatestCheckpointIsOldest => {
                match self.inner.list_checkpoints(actor_id).await?.first() {
                    Some(&oldest) => self.inner.get_checkpoint(actor_id, oldest).await,
                    None => Ok(None),
                }
            }
            Fault::DeleteKeepsCheckpoints => Ok(self
                .inner
                .get_latest_checkpoint(actor_id)
                .await?
                .or_else(|| self.ghost_checkpoints(actor_id).pop())),
            _ => self.inner.get_latest_checkpoint(actor_id).await,
        }
    }

    async fn get_checkpoint(
        &self,
        actor_id: &str,
        sequence: u64,
    ) -> JournalResult<Option<Checkpoint>> {
        let found = self.inner.get_checkpoint(actor_id, sequence).await?;
        if self.fault == Fault::DeleteKeepsCheckpoints && found.is_none() {
            return Ok(lock(&self.ghosts)
                .get(&(actor_id.to_owned(), sequence))
                .cloned());
        }
        Ok(found)
    }

    async fn list_checkpoints(&self, actor_id: &str) -> JournalResult<Vec<u64>> {
        let listed = self.inner.list_checkpoints(actor_id).await?;
        if self.fault == Fault::DeleteKeepsCheckpoints && listed.is_empty() {
            return Ok(self
                .ghost_checkpoints(actor_id)
                .iter()
                .map(|c| c.sequence)
                .collect());
        }
        Ok(listed)
    }

    async fn delete_checkpoints_before(&self, actor_id: &str, before: u64) -> JournalResult<u64> {
        let before = match self.fault {
            Fault::PruneOneTooMany => before.saturating_add(1),
            _ => before,
        };
        self.inner.delete_checkpoints_before(actor_id, before).await
    }

    async fn list_actors_page(
        &self,
        cursor: Option<&str>,
        limit: usize,
    ) -> JournalResult<ActorPage> {
        self.inner.list_actors_page(cursor, limit).await
    }

    async fn actor_summary(&self, actor_id: &str) -> JournalResult<ActorSummary> {
        let mut summary = self.inner.actor_summary(actor_id).await?;
        if self.fault == Fault::SummaryCountsTruncated {
            summary.entries = summary.highest_sequence;
        }
        Ok(summary)
    }

    async fn stats(&self) -> JournalResult<JournalStats> {
        self.inner.stats().await
    }

    async fn replay_from(&self, actor_id: &str, from: u64) -> JournalResult<Vec<JournalEntry>> {
        if self.fault == Fault::ReplayFromZeroIsEmpty && from == 0 {
            return Ok(Vec::new());
        }
        if self.reads_through_range() {
            return self
                .replay_range(actor_id, from, u64::MAX, usize::MAX)
                .await;
        }
        self.inner.replay_from(actor_id, from).await
    }

    fn replay_page_size(&self) -> usize {
        if self.fault == Fault::ForgetsProvidedMethods {
            return DEFAULT_REPLAY_PAGE;
        }
        self.inner.replay_page_size()
    }

    fn limits(&self) -> Limits {
        if self.fault == Fault::ForgetsProvidedMethods {
            return Limits::default();
        }
        self.inner.limits()
    }

    fn replay_stream<'a>(&'a self, actor_id: &'a str, from: u64) -> EntryStream<'a> {
        if self.reads_through_range() {
            return paged_replay(self, actor_id, from, self.replay_page_size());
        }
        match self.fault {
            Fault::StreamHidesEvery1000th => self
                .inner
                .replay_stream(actor_id, from)
                .filter(|e| {
                    let hidden = e.as_ref().is_ok_and(|e| e.sequence % 1000 == 0);
                    futures::future::ready(!hidden)
                })
                .boxed(),
            Fault::StreamLoadsWholeJournal => stream::once(self.inner.replay_from(actor_id, from))
                .flat_map(|all| match all {
                    Ok(all) => stream::iter(all.into_iter().map(Ok)).left_stream(),
                    Err(e) => stream::iter([Err(e)]).right_stream(),
                })
                .boxed(),
            Fault::StreamDropsLast => {
                let inner = self.inner.replay_stream(actor_id, from).peekable();
                stream::unfold(inner, |mut inner| async move {
                    let item = inner.next().await?;
                    Pin::new(&mut inner).peek().await?;
                    Some((item, inner))
                })
                .boxed()
            }
            _ => self.inner.replay_stream(actor_id, from),
        }
    }

    fn list_actors(&self) -> ActorStream<'_> {
        match self.fault {
            Fault::ForgetsProvidedMethods => paged_actors(self, DEFAULT_ACTOR_PAGE),
            Fault::ListingMissesAnActor => self
                .inner
                .list_actors()
                .enumerate()
                .filter(|(i, _)| futures::future::ready(*i != 2))
                .map(|(_, actor)| actor)
                .boxed(),
            _ => self.inner.list_actors(),
        }
    }
}

/// The suite's storage-level tests, in the suite's order.
fn storage_tests() -> Vec<SuiteTest> {
    journal_conformance::suite_tests()
        .into_iter()
        .filter(|t| t.module != "facet")
        .collect()
}

/// Runs `test` against the storage `make` gives, as `suite!` does; true
/// when it passes within the time limit.
fn passes(test: SuiteTest, storage: Arc<dyn JournalStorage>) -> bool {
    let runtime = journal_conformance::__private::runtime();
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
        runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(60), (test.run)(storage)).await
        })
    }));
    runtime.shutdown_timeout(Duration::from_secs(5));
    matches!(outcome, Ok(Ok(())))
}

/// The tests that fail against what `make` gives: all of them with
/// `JOURNAL_MUTANTS_ALL` set, otherwise up to the first.
fn failing_tests(make: impl Fn() -> Arc<dyn JournalStorage>, stop_at_first: bool) -> Vec<String> {
    let mut failing = Vec::new();
    for test in storage_tests() {
        if !passes(test, make()) {
            failing.push(format!("{test:?}"));
            if stop_at_first {
                break;
            }
        }
    }
    failing
}

fn memory() -> Arc<dyn JournalStorage> {
    Arc::new(MemoryJournalStorage::new())
}

/// Panics unless some storage-level test of the suite fails against the
/// memory backend with `fault`.
fn assert_killed(fault: Fault) {
    let all = std::env::var_os("JOURNAL_MUTANTS_ALL").is_some();
    let killers = failing_tests(|| Arc::new(Mutant::new(memory(), fault)), !all);
    assert!(
        !killers.is_empty(),
        "the mutant {fault:?} passes every storage-level test of the suite: \
         the suite does not catch it"
    );
    println!("{fault:?} is killed by {}", killers.join(", "));
}

macro_rules! mutants {
    ($($name:ident: $fault:ident,)*) => {
        $(
            #[test]
            fn $name() {
                assert_killed(Fault::$fault);
            }
        )*
    };
}

mutants! {
    range_capped_at_300: RangeCappedAt300,
    stream_hides_every_1000th: StreamHidesEvery1000th,
    two_entries_swapped: TwoEntriesSwapped,
    stream_loads_whole_journal: StreamLoadsWholeJournal,
    batch_entry_by_entry: BatchEntryByEntry,
    range_to_exclusive: RangeToExclusive,
    range_max_zero_gives_one: RangeMaxZeroGivesOne,
    truncation_lowers_highest: TruncationLowersHighest,
    truncates_one_too_many: TruncatesOneTooMany,
    retry_stores_second_copy: RetryStoresSecondCopy,
    conflict_writes_anyway: ConflictWritesAnyway,
    latest_checkpoint_is_oldest: LatestCheckpointIsOldest,
    checkpoint_overwrite_ignored: CheckpointOverwriteIgnored,
    prune_one_too_many: PruneOneTooMany,
    delete_keeps_checkpoints: DeleteKeepsCheckpoints,
    listing_misses_an_actor: ListingMissesAnActor,
    stream_drops_last: StreamDropsLast,
    summary_counts_truncated: SummaryCountsTruncated,
    replay_from_zero_is_empty: ReplayFromZeroIsEmpty,
}

/// Panics naming the tests that fail against what `make` gives.
fn assert_passes_everything(what: &str, make: impl Fn() -> Arc<dyn JournalStorage>) {
    let failing = failing_tests(make, false);
    assert!(failing.is_empty(), "{what} fails {}", failing.join(", "));
}

#[test]
fn control_wrapper_without_fault_passes_everything() {
    assert_passes_everything("the wrapper without a fault", || {
        Arc::new(Mutant::new(memory(), Fault::None))
    });
}

#[test]
fn control_cutoff_that_never_cuts_off_passes_everything() {
    assert_passes_everything("a CutOff with an endless budget", || {
        Arc::new(CutOff::new(memory(), i64::MAX))
    });
}

#[test]
fn control_recorder_passes_everything() {
    assert_passes_everything("a Recorder", || Arc::new(Recorder::new(memory())));
}

/// Runs the forwarding check of `wrap` on a runtime of its own; the panic
/// message when it fails.
fn forwarding_failure<W: JournalStorage>(
    wrap: impl FnOnce(Arc<dyn JournalStorage>) -> W,
) -> Option<String> {
    let runtime = journal_conformance::__private::runtime();
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
        runtime.block_on(assert_forwards_every_method(memory(), wrap));
    }));
    outcome.err().map(|panic| {
        panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_default()
    })
}

#[test]
fn wrappers_forward_every_method() {
    for (name, failure) in [
        (
            "the mutant wrapper",
            forwarding_failure(|inner| Mutant::new(inner, Fault::None)),
        ),
        (
            "CutOff",
            forwarding_failure(|inner| CutOff::new(inner, 100)),
        ),
        ("Recorder", forwarding_failure(Recorder::new)),
        ("CutOff::faulty", forwarding_failure(CutOff::faulty)),
    ] {
        assert!(failure.is_none(), "{name}: {failure:?}");
    }
}

#[test]
fn forwarding_check_names_each_forgotten_method() {
    let failure = forwarding_failure(|inner| Mutant::new(inner, Fault::ForgetsProvidedMethods))
        .expect("the check fails for a wrapper running the trait's defaults");
    for method in [
        "replay_from",
        "replay_page_size",
        "replay_stream",
        "list_actors",
        "limits",
    ] {
        assert!(
            failure.contains(&format!("{method} (")),
            "{method} is not named in: {failure}"
        );
    }
}
