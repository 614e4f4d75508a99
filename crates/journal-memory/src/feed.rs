//! The feed over all actors (contract rule 28), in memory.
//!
//! Every new entry takes the next position while its actor's lock is held
//! and the entry is already stored: positions follow each actor's sequence
//! order, and one exists only once its entry is readable, so a reader can
//! never see a position before an earlier one (nothing is ever filled in
//! behind it). Positions are never reused. Offsets are `m<position>`.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use journal_core::feed::{entry_tags, FeedFilter, FeedItem, FeedOffset, JournalFeed};
use journal_core::{JournalEntry, JournalResult};

use crate::{cooperate, MemoryJournalStorage, BACKEND};

pub(crate) use journal_core::subscribe::FEED_WAIT_KEY as WAIT_KEY;

/// Where each position's entry is, and the tag index.
#[derive(Debug, Default)]
pub(crate) struct FeedLog {
    /// Position of `refs[0]`, the first position still referenced, from 1.
    base: u64,
    /// `(actor, sequence)` of positions `base..`; `None` once truncated or
    /// deleted.
    refs: VecDeque<Option<(Arc<str>, u64)>>,
    /// Positions by tag.
    tags: HashMap<String, BTreeSet<u64>>,
    /// The tags of tagged positions, to drop them from `tags`.
    tags_of: HashMap<u64, Vec<String>>,
}

pub(crate) fn lock(feed: &Mutex<FeedLog>) -> MutexGuard<'_, FeedLog> {
    feed.lock().unwrap_or_else(PoisonError::into_inner)
}

impl FeedLog {
    /// The next position.
    fn next(&self) -> u64 {
        self.base.max(1) + self.refs.len() as u64
    }

    /// Gives `batch` (one actor's, just stored) the next positions.
    pub(crate) fn add(&mut self, actor: &Arc<str>, batch: &[JournalEntry]) -> Vec<u64> {
        if self.base == 0 {
            self.base = 1;
        }
        let mut positions = Vec::with_capacity(batch.len());
        for entry in batch {
            let position = self.next();
            self.refs
                .push_back(Some((Arc::clone(actor), entry.sequence)));
            let tags = entry_tags(entry);
            if !tags.is_empty() {
                for tag in &tags {
                    self.tags.entry(tag.clone()).or_default().insert(position);
                }
                self.tags_of.insert(position, tags);
            }
            positions.push(position);
        }
        positions
    }

    /// Forgets `positions` (truncated or deleted entries).
    pub(crate) fn remove(&mut self, positions: &[u64]) {
        for &position in positions {
            if let Some(slot) = position
                .checked_sub(self.base)
                .and_then(|i| usize::try_from(i).ok())
                .and_then(|i| self.refs.get_mut(i))
            {
                *slot = None;
            }
            for tag in self.tags_of.remove(&position).unwrap_or_default() {
                if let Some(set) = self.tags.get_mut(&tag) {
                    set.remove(&position);
                    if set.is_empty() {
                        self.tags.remove(&tag);
                    }
                }
            }
        }
        while matches!(self.refs.front(), Some(None)) {
            self.refs.pop_front();
            self.base += 1;
        }
    }

    /// Up to `max` references after `after`, with their positions.
    fn page(&self, filter: &FeedFilter, after: u64, max: usize) -> Vec<(u64, Arc<str>, u64)> {
        let at = |position: u64| {
            let index = usize::try_from(position.checked_sub(self.base)?).ok()?;
            self.refs.get(index)?.as_ref()
        };
        match filter {
            FeedFilter::All => {
                let from = after.saturating_add(1).max(self.base);
                (from..self.next())
                    .filter_map(|p| at(p).map(|(actor, s)| (p, Arc::clone(actor), *s)))
                    .take(max)
                    .collect()
            }
            FeedFilter::Tag(tag) => self.tags.get(tag).map_or_else(Vec::new, |set| {
                set.range(after.saturating_add(1)..)
                    .filter_map(|&p| at(p).map(|(actor, s)| (p, Arc::clone(actor), *s)))
                    .take(max)
                    .collect()
            }),
        }
    }
}

/// The position an offset names (0 for the start).
fn position(offset: &FeedOffset) -> JournalResult<u64> {
    journal_core::feed::numbered_offset(BACKEND, offset, 'm')
}

/// The feed over every actor of this store (and its clones), and per tag.
#[async_trait]
impl JournalFeed for MemoryJournalStorage {
    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn read_feed(
        &self,
        filter: &FeedFilter,
        after: &FeedOffset,
        max: usize,
    ) -> JournalResult<Vec<FeedItem>> {
        cooperate().await;
        let after = position(after)?;
        if max == 0 {
            return Ok(Vec::new());
        }
        let mut items = Vec::new();
        let mut from = after;
        // References to entries truncated since are left out; read on until
        // the page is full or the feed ends.
        loop {
            let refs = lock(&self.inner.feed).page(filter, from, max - items.len());
            let Some(&(last, _, _)) = refs.last() else {
                return Ok(items);
            };
            for (position, actor, sequence) in refs {
                let entry = self.with_actor(&actor, |j| j.stored_at(sequence, position).cloned());
                if let Some(entry) = entry.flatten() {
                    items.push(FeedItem {
                        offset: FeedOffset::new(format!("m{position}")),
                        entry,
                    });
                }
            }
            if items.len() == max {
                return Ok(items);
            }
            from = last;
        }
    }

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn wait_for_feed(
        &self,
        filter: &FeedFilter,
        after: &FeedOffset,
        timeout: Duration,
    ) -> JournalResult<()> {
        let after = position(after)?;
        let ready = async { Ok(!lock(&self.inner.feed).page(filter, after, 1).is_empty()) };
        self.inner.watchers.wait(WAIT_KEY, timeout, ready).await
    }
}

/// Projections' offsets, kept with the journals (and as durable as they).
#[async_trait]
impl journal_core::ProjectionStore for MemoryJournalStorage {
    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn load_offset(&self, projection: &str) -> JournalResult<Option<FeedOffset>> {
        cooperate().await;
        journal_core::projection::validate_projection_name(projection)?;
        let offsets = self
            .inner
            .projections
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Ok(offsets.get(projection).cloned())
    }

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn save_offset(&self, projection: &str, offset: &FeedOffset) -> JournalResult<()> {
        cooperate().await;
        journal_core::projection::validate_projection_name(projection)?;
        position(offset)?;
        let mut offsets = self
            .inner
            .projections
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        offsets.insert(projection.to_owned(), offset.clone());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use journal_core::{FeedFilter, JournalEntry, JournalStorage};

    use crate::MemoryJournalStorage;

    fn entry(actor: &str, sequence: u64) -> JournalEntry {
        JournalEntry::new(
            actor,
            sequence,
            journal_core::journal_entry::Entry::message_received(
                format!("m-{sequence}"),
                "Test",
                Vec::new(),
            ),
        )
    }

    /// A reference a reader took from the feed before its actor was
    /// deleted and begun again names the old entry: it finds nothing, not
    /// the new entry of that sequence (which comes at its own position).
    #[tokio::test]
    async fn a_reference_to_a_deleted_entry_finds_nothing_after_the_actor_begins_again() {
        let storage = MemoryJournalStorage::new();
        storage.append_entry(&entry("a", 1)).await.expect("appends");
        let refs = super::lock(&storage.inner.feed).page(&FeedFilter::All, 0, 10);
        assert_eq!(refs.len(), 1);
        let (position, actor, sequence) = refs[0].clone();
        let found = |position| {
            storage
                .with_actor(&actor, |j| j.stored_at(sequence, position).cloned())
                .flatten()
        };
        assert!(found(position).is_some());
        storage.delete_actor("a").await.expect("deletes");
        let again = entry("a", 1);
        storage.append_entry(&again).await.expect("appends");
        assert!(found(position).is_none());
        let refs = super::lock(&storage.inner.feed).page(&FeedFilter::All, 0, 10);
        assert_eq!(refs.len(), 1);
        assert_eq!(found(refs[0].0).map(|e| e.id), Some(again.id));
    }
}
