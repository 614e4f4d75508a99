//! A storage wrapper whose appends fail on demand, on top of a real
//! backend: after a budget (a crash at an exact point of a workload), for
//! one kind of entry, or with the reply lost after the write landed.

use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use journal_core::{
    ActorPage, ActorStream, ActorSummary, Checkpoint, EntryStream, JournalEntry, JournalError,
    JournalResult, JournalStats, JournalStorage,
};

/// Forwards everything to `inner`, but once `budget` appends have
/// succeeded, every further append fails with `Unavailable` and writes
/// nothing, as if the process had died just before it. Appends of entries
/// of one kind can be made to fail the same way
/// ([`CutOff::fail_kind`]), and appends to land but answer `Unavailable`
/// ([`CutOff::lose_replies`]).
pub struct CutOff {
    inner: Arc<dyn JournalStorage>,
    budget: AtomicI64,
    failing_kind: Mutex<Option<&'static str>>,
    lost_replies: AtomicU32,
}

impl CutOff {
    /// Allows `appends` more appends (single or batch) to `inner`.
    pub fn new(inner: Arc<dyn JournalStorage>, appends: i64) -> Self {
        CutOff {
            inner,
            budget: AtomicI64::new(appends),
            failing_kind: Mutex::new(None),
            lost_replies: AtomicU32::new(0),
        }
    }

    /// A wrapper that fails nothing until told to, shared.
    pub fn faulty(inner: Arc<dyn JournalStorage>) -> Arc<Self> {
        Arc::new(CutOff::new(inner, i64::MAX))
    }

    /// Appends of batches holding an entry of `kind` (as
    /// `JournalEntry::kind` names it) fail from now on; `None` heals.
    pub fn fail_kind(&self, kind: Option<&'static str>) {
        *self
            .failing_kind
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = kind;
    }

    /// The next `n` appends land but answer `Unavailable` (the reply lost on
    /// the way back).
    pub fn lose_replies(&self, n: u32) {
        self.lost_replies.store(n, Ordering::SeqCst);
    }

    fn take(&self, entries: &[JournalEntry]) -> JournalResult<()> {
        let kind = *self
            .failing_kind
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if kind.is_some_and(|kind| entries.iter().any(|e| e.kind() == kind)) {
            return Err(JournalError::unavailable("cutoff", "connection reset"));
        }
        if self.budget.fetch_sub(1, Ordering::SeqCst) > 0 {
            Ok(())
        } else {
            Err(JournalError::unavailable(
                "cutoff",
                "simulated crash: appends cut off",
            ))
        }
    }

    fn reply(&self) -> JournalResult<()> {
        let lost = self
            .lost_replies
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        match lost {
            Ok(_) => Err(JournalError::unavailable("cutoff", "reply lost")),
            Err(_) => Ok(()),
        }
    }
}

#[async_trait]
impl JournalStorage for CutOff {
    fn backend_name(&self) -> &'static str {
        self.inner.backend_name()
    }
    async fn append_entry(&self, entry: &JournalEntry) -> JournalResult<u64> {
        self.take(std::slice::from_ref(entry))?;
        let sequence = self.inner.append_entry(entry).await?;
        self.reply().map(|()| sequence)
    }
    async fn append_batch(&self, entries: &[JournalEntry]) -> JournalResult<()> {
        self.take(entries)?;
        self.inner.append_batch(entries).await?;
        self.reply()
    }
    async fn replay_range(
        &self,
        actor_id: &str,
        from: u64,
        to: u64,
        max: usize,
    ) -> JournalResult<Vec<JournalEntry>> {
        self.inner.replay_range(actor_id, from, to, max).await
    }
    async fn highest_sequence(&self, actor_id: &str) -> JournalResult<u64> {
        self.inner.highest_sequence(actor_id).await
    }
    async fn truncate_to(&self, actor_id: &str, to: u64) -> JournalResult<()> {
        self.inner.truncate_to(actor_id, to).await
    }
    async fn delete_actor(&self, actor_id: &str) -> JournalResult<()> {
        self.inner.delete_actor(actor_id).await
    }
    async fn save_checkpoint(&self, checkpoint: &Checkpoint) -> JournalResult<()> {
        self.inner.save_checkpoint(checkpoint).await
    }
    async fn get_latest_checkpoint(&self, actor_id: &str) -> JournalResult<Option<Checkpoint>> {
        self.inner.get_latest_checkpoint(actor_id).await
    }
    async fn get_checkpoint(
        &self,
        actor_id: &str,
        sequence: u64,
    ) -> JournalResult<Option<Checkpoint>> {
        self.inner.get_checkpoint(actor_id, sequence).await
    }
    async fn list_checkpoints(&self, actor_id: &str) -> JournalResult<Vec<u64>> {
        self.inner.list_checkpoints(actor_id).await
    }
    async fn delete_checkpoints_before(&self, actor_id: &str, before: u64) -> JournalResult<u64> {
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
        self.inner.actor_summary(actor_id).await
    }
    async fn stats(&self) -> JournalResult<JournalStats> {
        self.inner.stats().await
    }
    async fn replay_from(&self, actor_id: &str, from: u64) -> JournalResult<Vec<JournalEntry>> {
        self.inner.replay_from(actor_id, from).await
    }
    fn replay_page_size(&self) -> usize {
        self.inner.replay_page_size()
    }
    fn limits(&self) -> journal_core::Limits {
        self.inner.limits()
    }
    fn replay_stream<'a>(&'a self, actor_id: &'a str, from: u64) -> EntryStream<'a> {
        self.inner.replay_stream(actor_id, from)
    }
    fn list_actors(&self) -> ActorStream<'_> {
        self.inner.list_actors()
    }
}
