#![doc = include_str!("../README.md")]

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

mod feed;

use async_trait::async_trait;
use journal_core::timers::{lease_until, validate_timer};
use journal_core::validate::{self, AppendCheck, Limits};
use journal_core::{
    ActorPage, ActorSummary, Checkpoint, ClaimedTimer, JournalEntry, JournalResult, JournalStats,
    JournalStorage, TimerRecord, TimerStore,
};

const BACKEND: &str = "memory";

/// An in-memory journal store. Clones share the same store.
#[derive(Debug, Clone, Default)]
pub struct MemoryJournalStorage {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    limits: Limits,
    actors: RwLock<BTreeMap<String, Arc<Mutex<ActorJournal>>>>,
    timers: Mutex<TimerIndex>,
    /// Subscribers waiting for appends; the feed's wait under the actor id
    /// `""` (no actor's).
    watchers: journal_core::Watchers,
    /// The feed over all actors (contract rule 28).
    feed: Mutex<feed::FeedLog>,
    /// Projections' offsets (contract rule 29).
    projections: Mutex<HashMap<String, journal_core::FeedOffset>>,
}

/// The due-timer index: every timer by id, ordered by due time, and the
/// claimed ones ordered by the end of their lease.
#[derive(Debug, Default)]
struct TimerIndex {
    timers: HashMap<String, StoredTimer>,
    /// `(due_at_ms, timer_id)` of every timer.
    by_due: BTreeSet<(u64, String)>,
    /// `(lease_until_ms, timer_id)` of every claimed timer (expired leases
    /// included, until the timer is claimed again or removed).
    by_lease: BTreeSet<(u64, String)>,
}

#[derive(Debug)]
struct StoredTimer {
    record: TimerRecord,
    /// The latest claim's token and lease end.
    claim: Option<(String, u64)>,
}

impl StoredTimer {
    /// Whether nobody holds an unexpired lease on it at `now_ms`.
    fn free_at(&self, now_ms: u64) -> bool {
        self.claim
            .as_ref()
            .is_none_or(|&(_, until)| until <= now_ms)
    }
}

impl TimerIndex {
    fn remove(&mut self, timer_id: &str) -> Option<StoredTimer> {
        let stored = self.timers.remove(timer_id)?;
        let key = (stored.record.due_at_ms, timer_id.to_owned());
        self.by_due.remove(&key);
        if let Some((_, until)) = stored.claim {
            self.by_lease.remove(&(until, key.1));
        }
        Some(stored)
    }

    fn schedule(&mut self, timer: &TimerRecord) {
        self.remove(&timer.timer_id);
        self.by_due
            .insert((timer.due_at_ms, timer.timer_id.clone()));
        self.timers.insert(
            timer.timer_id.clone(),
            StoredTimer {
                record: timer.clone(),
                claim: None,
            },
        );
    }

    fn cancel(&mut self, timer_id: &str, now_ms: u64) -> bool {
        let free = self.timers.get(timer_id).is_some_and(|t| t.free_at(now_ms));
        free && self.remove(timer_id).is_some()
    }

    fn claim(&mut self, now_ms: u64, until: u64, claim: &str, max: usize) -> Vec<ClaimedTimer> {
        // Timers under a running lease are skipped: at most those in flight.
        let ids: Vec<String> = self
            .by_due
            .iter()
            .take_while(|(due, _)| *due <= now_ms)
            .filter(|(_, id)| self.timers.get(id).is_some_and(|t| t.free_at(now_ms)))
            .take(max)
            .map(|(_, id)| id.clone())
            .collect();
        let mut claimed = Vec::with_capacity(ids.len());
        for id in ids {
            let Some(stored) = self.timers.get_mut(&id) else {
                continue;
            };
            let previous = stored.claim.replace((claim.to_owned(), until));
            claimed.push(ClaimedTimer {
                timer: stored.record.clone(),
                claim: claim.to_owned(),
                lease_until_ms: until,
            });
            if let Some((_, old)) = previous {
                self.by_lease.remove(&(old, id.clone()));
            }
            self.by_lease.insert((until, id));
        }
        claimed
    }

    fn complete(&mut self, timer_id: &str, claim: &str) -> bool {
        let held = self
            .timers
            .get(timer_id)
            .and_then(|t| t.claim.as_ref())
            .is_some_and(|(token, _)| token == claim);
        held && self.remove(timer_id).is_some()
    }

    fn next_due(&self, now_ms: u64) -> Option<u64> {
        let free = self
            .by_due
            .iter()
            .find(|(_, id)| self.timers.get(id).is_some_and(|t| t.free_at(now_ms)))
            .map(|(due, _)| *due);
        let lease_end = now_ms
            .checked_add(1)
            .and_then(|after| self.by_lease.range((after, String::new())..).next())
            .map(|(until, _)| *until);
        free.into_iter().chain(lease_end).min()
    }
}

/// One actor's journal. `entries` holds sequences
/// `highest - entries.len() + 1 ..= highest`, contiguous.
#[derive(Debug, Default)]
struct ActorJournal {
    highest: u64,
    entries: VecDeque<JournalEntry>,
    /// The feed position of each of `entries`.
    positions: VecDeque<u64>,
    /// The actor's id, shared by its feed references.
    name: Option<Arc<str>>,
    checkpoints: BTreeMap<u64, Checkpoint>,
    /// Set when the actor was deleted while a caller held this journal: it
    /// must look the actor up again.
    deleted: bool,
}

impl ActorJournal {
    /// Sequence of `entries[0]` (or `highest + 1` when empty).
    fn first_stored(&self) -> u64 {
        self.highest + 1 - self.entries.len() as u64
    }

    fn stored(&self, sequence: u64) -> Option<&JournalEntry> {
        let index = sequence.checked_sub(self.first_stored())?;
        self.entries.get(usize::try_from(index).ok()?)
    }

    /// The entry of `sequence` if it holds feed position `position`: a
    /// reference read from the feed before the actor was deleted and begun
    /// again names an entry that is gone, not the new one of that sequence.
    fn stored_at(&self, sequence: u64, position: u64) -> Option<&JournalEntry> {
        let index = usize::try_from(sequence.checked_sub(self.first_stored())?).ok()?;
        (self.positions.get(index) == Some(&position))
            .then(|| self.entries.get(index))
            .flatten()
    }

    /// Appends `batch` (validated, one actor, contiguous) under rule 1 and
    /// 5; whether it wrote (a retry of stored entries does not). The caller
    /// gives the new entries their feed positions.
    fn append(&mut self, batch: &[JournalEntry]) -> JournalResult<bool> {
        let Some(first) = batch.first() else {
            return Ok(false);
        };
        match AppendCheck::of(first.sequence, self.highest) {
            AppendCheck::Write => {
                self.entries.extend(batch.iter().cloned());
                self.highest += batch.len() as u64;
                Ok(true)
            }
            AppendCheck::CompareStored
                if batch
                    .iter()
                    .all(|e| self.stored(e.sequence).is_some_and(|s| s.id == e.id)) =>
            {
                Ok(false)
            }
            AppendCheck::CompareStored | AppendCheck::Conflict => Err(validate::sequence_conflict(
                &first.actor_id,
                self.highest,
                first.sequence,
            )),
        }
    }
}

/// Spends a unit of the task's tokio budget, and yields to the runtime
/// when the budget is used up. Every call of this backend completes without
/// waiting on anything, so without this a loop of calls would never yield,
/// and on a current-thread runtime timers and other tasks would starve
/// until the loop ends. Outside a tokio runtime it does nothing.
async fn cooperate() {
    tokio::task::coop::consume_budget().await;
}

fn lock(journal: &Mutex<ActorJournal>) -> MutexGuard<'_, ActorJournal> {
    journal.lock().unwrap_or_else(PoisonError::into_inner)
}

impl MemoryJournalStorage {
    /// An empty store with the default limits.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store with the given limits.
    pub fn with_limits(limits: Limits) -> Self {
        MemoryJournalStorage {
            inner: Arc::new(Inner {
                limits,
                actors: RwLock::default(),
                timers: Mutex::default(),
                watchers: journal_core::Watchers::new(),
                feed: Mutex::default(),
                projections: Mutex::default(),
            }),
        }
    }

    fn find(&self, actor_id: &str) -> Option<Arc<Mutex<ActorJournal>>> {
        let actors = self
            .inner
            .actors
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        actors.get(actor_id).cloned()
    }

    fn find_or_create(&self, actor_id: &str) -> Arc<Mutex<ActorJournal>> {
        if let Some(journal) = self.find(actor_id) {
            return journal;
        }
        let mut actors = self
            .inner
            .actors
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        actors.entry(actor_id.to_owned()).or_default().clone()
    }

    /// Runs `f` on the actor's journal, if the actor exists.
    fn with_actor<T>(&self, actor_id: &str, f: impl FnOnce(&mut ActorJournal) -> T) -> Option<T> {
        let journal = self.find(actor_id)?;
        let mut guard = lock(&journal);
        // A journal deleted after `find` is as good as absent.
        (!guard.deleted).then(|| f(&mut guard))
    }

    fn append_validated(&self, batch: &[JournalEntry]) -> JournalResult<()> {
        let Some(first) = batch.first() else {
            return Ok(());
        };
        // Only an append at sequence 1 may create an actor; anything else on
        // an unknown actor is a conflict, and leaves no empty actor behind.
        loop {
            let journal = if first.sequence == 1 {
                self.find_or_create(&first.actor_id)
            } else if let Some(journal) = self.find(&first.actor_id) {
                journal
            } else {
                return Err(validate::sequence_conflict(
                    &first.actor_id,
                    0,
                    first.sequence,
                ));
            };
            let mut guard = lock(&journal);
            if !guard.deleted {
                if guard.append(batch)? {
                    // Still under the actor's lock: its entries take their
                    // positions in sequence order, and a position is
                    // readable from the moment it exists.
                    let name = Arc::clone(
                        guard
                            .name
                            .get_or_insert_with(|| Arc::from(first.actor_id.as_str())),
                    );
                    let positions = feed::lock(&self.inner.feed).add(&name, batch);
                    guard.positions.extend(positions);
                }
                return Ok(());
            }
        }
    }
}

#[async_trait]
impl JournalStorage for MemoryJournalStorage {
    fn backend_name(&self) -> &'static str {
        BACKEND
    }

    fn limits(&self) -> Limits {
        self.inner.limits
    }

    #[tracing::instrument(level = "debug", skip_all, fields(backend = BACKEND, actor_id = %entry.actor_id, sequence = entry.sequence))]
    async fn append_entry(&self, entry: &JournalEntry) -> JournalResult<u64> {
        let work = async {
            cooperate().await;
            validate::validate_entry(entry, &self.inner.limits)?;
            self.append_validated(std::slice::from_ref(entry))?;
            self.inner.watchers.notify(&entry.actor_id);
            self.inner.watchers.notify(feed::WAIT_KEY);
            Ok(entry.sequence)
        };
        journal_core::metrics::timed_append(BACKEND, 1, work).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(backend = BACKEND, actor_id = entries.first().map(|e| e.actor_id.as_str()), sequence = entries.first().map(|e| e.sequence), count = entries.len()))]
    async fn append_batch(&self, entries: &[JournalEntry]) -> JournalResult<()> {
        let work = async {
            cooperate().await;
            validate::validate_batch(entries, &self.inner.limits)?;
            self.append_validated(entries)?;
            if let Some(first) = entries.first() {
                self.inner.watchers.notify(&first.actor_id);
                self.inner.watchers.notify(feed::WAIT_KEY);
            }
            Ok(())
        };
        journal_core::metrics::timed_append(BACKEND, entries.len(), work).await
    }

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn replay_range(
        &self,
        actor_id: &str,
        from: u64,
        to: u64,
        max: usize,
    ) -> JournalResult<Vec<JournalEntry>> {
        let work = async {
            cooperate().await;
            let entries = self.with_actor(actor_id, |j| {
                let from = from.max(j.first_stored());
                let to = to.min(j.highest);
                if max == 0 || from > to {
                    return Vec::new();
                }
                let skip = usize::try_from(from - j.first_stored()).unwrap_or(usize::MAX);
                let count = usize::try_from(to - from + 1)
                    .unwrap_or(usize::MAX)
                    .min(max);
                j.entries.iter().skip(skip).take(count).cloned().collect()
            });
            Ok(entries.unwrap_or_default())
        };
        journal_core::metrics::timed_page(BACKEND, work).await
    }

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn highest_sequence(&self, actor_id: &str) -> JournalResult<u64> {
        cooperate().await;
        Ok(self.with_actor(actor_id, |j| j.highest).unwrap_or(0))
    }

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn truncate_to(&self, actor_id: &str, to: u64) -> JournalResult<()> {
        cooperate().await;
        self.with_actor(actor_id, |j| {
            let mut gone = Vec::new();
            while j.entries.front().is_some_and(|e| e.sequence <= to) {
                j.entries.pop_front();
                gone.extend(j.positions.pop_front());
            }
            feed::lock(&self.inner.feed).remove(&gone);
        });
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn delete_actor(&self, actor_id: &str) -> JournalResult<()> {
        cooperate().await;
        let removed = {
            let mut actors = self
                .inner
                .actors
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            actors.remove(actor_id)
        };
        if let Some(journal) = removed {
            let mut guard = lock(&journal);
            let gone: Vec<u64> = guard.positions.iter().copied().collect();
            feed::lock(&self.inner.feed).remove(&gone);
            *guard = ActorJournal {
                deleted: true,
                ..ActorJournal::default()
            };
        }
        // Its subscribers read again, and find it gone.
        self.inner.watchers.notify(actor_id);
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(backend = BACKEND, actor_id = %checkpoint.actor_id, sequence = checkpoint.sequence))]
    async fn save_checkpoint(&self, checkpoint: &Checkpoint) -> JournalResult<()> {
        cooperate().await;
        validate::validate_checkpoint(checkpoint)?;
        self.with_actor(&checkpoint.actor_id, |j| {
            if checkpoint.sequence > j.highest {
                return Err(validate::checkpoint_beyond_highest(checkpoint, j.highest));
            }
            j.checkpoints
                .insert(checkpoint.sequence, checkpoint.clone());
            Ok(())
        })
        .unwrap_or_else(|| Err(validate::checkpoint_beyond_highest(checkpoint, 0)))
    }

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn get_latest_checkpoint(&self, actor_id: &str) -> JournalResult<Option<Checkpoint>> {
        cooperate().await;
        Ok(self
            .with_actor(actor_id, |j| j.checkpoints.values().next_back().cloned())
            .flatten())
    }

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn get_checkpoint(
        &self,
        actor_id: &str,
        sequence: u64,
    ) -> JournalResult<Option<Checkpoint>> {
        cooperate().await;
        Ok(self
            .with_actor(actor_id, |j| j.checkpoints.get(&sequence).cloned())
            .flatten())
    }

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn list_checkpoints(&self, actor_id: &str) -> JournalResult<Vec<u64>> {
        cooperate().await;
        Ok(self
            .with_actor(actor_id, |j| j.checkpoints.keys().copied().collect())
            .unwrap_or_default())
    }

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn delete_checkpoints_before(&self, actor_id: &str, before: u64) -> JournalResult<u64> {
        cooperate().await;
        Ok(self
            .with_actor(actor_id, |j| {
                let kept = j.checkpoints.split_off(&before);
                let removed = j.checkpoints.len() as u64;
                j.checkpoints = kept;
                removed
            })
            .unwrap_or(0))
    }

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn list_actors_page(
        &self,
        cursor: Option<&str>,
        limit: usize,
    ) -> JournalResult<ActorPage> {
        cooperate().await;
        let actors = self
            .inner
            .actors
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let start = cursor.map_or(Bound::Unbounded, Bound::Excluded);
        let page: Vec<String> = actors
            .range::<str, _>((start, Bound::Unbounded))
            .take(limit)
            .map(|(id, _)| id.clone())
            .collect();
        Ok(ActorPage::new(page, limit))
    }

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn actor_summary(&self, actor_id: &str) -> JournalResult<ActorSummary> {
        cooperate().await;
        Ok(self
            .with_actor(actor_id, |j| ActorSummary {
                highest_sequence: j.highest,
                entries: j.entries.len() as u64,
                checkpoints: j.checkpoints.len() as u64,
            })
            .unwrap_or_default())
    }

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn stats(&self) -> JournalResult<JournalStats> {
        cooperate().await;
        let journals: Vec<_> = {
            let actors = self
                .inner
                .actors
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            actors.values().cloned().collect()
        };
        let mut stats = JournalStats::default();
        for journal in journals {
            let j = lock(&journal);
            if j.deleted {
                continue;
            }
            stats.actors += 1;
            stats.entries += j.entries.len() as u64;
            stats.checkpoints += j.checkpoints.len() as u64;
        }
        Ok(stats)
    }
}

impl MemoryJournalStorage {
    fn timers(&self) -> MutexGuard<'_, TimerIndex> {
        self.inner
            .timers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Live subscriptions (contract rule 27): an append wakes the subscribers
/// of its actor in this process. Clones share them, as they share the
/// journals.
#[async_trait]
impl journal_core::JournalWatch for MemoryJournalStorage {
    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn wait_for_entries(
        &self,
        actor_id: &str,
        after: u64,
        timeout: Duration,
    ) -> JournalResult<()> {
        let ready = async { Ok(self.with_actor(actor_id, |j| j.highest).unwrap_or(0) > after) };
        self.inner.watchers.wait(actor_id, timeout, ready).await
    }
}

/// The due-timer index, in memory: one lock over the index, so a claim is
/// atomic. Clones share it, as they share the journals.
#[async_trait]
impl TimerStore for MemoryJournalStorage {
    #[tracing::instrument(level = "debug", skip_all, fields(backend = BACKEND, actor_id = %timer.owner_actor, target_actor = %timer.target_actor, timer_id = %timer.timer_id, due_at_ms = timer.due_at_ms))]
    async fn schedule_timer(&self, timer: &TimerRecord) -> JournalResult<()> {
        cooperate().await;
        validate_timer(timer, self.max_timer_payload())?;
        self.timers().schedule(timer);
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn cancel_timer(&self, timer_id: &str, now_ms: u64) -> JournalResult<bool> {
        cooperate().await;
        Ok(self.timers().cancel(timer_id, now_ms))
    }

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn claim_due_timers(
        &self,
        now_ms: u64,
        lease: Duration,
        claim: &str,
        max: usize,
    ) -> JournalResult<Vec<ClaimedTimer>> {
        cooperate().await;
        let until = lease_until(now_ms, lease);
        Ok(self.timers().claim(now_ms, until, claim, max))
    }

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn complete_timer(&self, timer_id: &str, claim: &str) -> JournalResult<bool> {
        cooperate().await;
        Ok(self.timers().complete(timer_id, claim))
    }

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn next_due(&self, now_ms: u64) -> JournalResult<Option<u64>> {
        cooperate().await;
        Ok(self.timers().next_due(now_ms))
    }

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn get_timer(&self, timer_id: &str) -> JournalResult<Option<TimerRecord>> {
        cooperate().await;
        Ok(self.timers().timers.get(timer_id).map(|t| t.record.clone()))
    }

    fn max_timer_payload(&self) -> usize {
        self.inner.limits.max_entry_bytes
    }
}

/// The workspace README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct WorkspaceReadme;
