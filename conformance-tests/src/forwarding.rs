//! Checking that a storage wrapper (such as [`crate::cutoff::CutOff`])
//! hands every method of [`JournalStorage`] to the storage it wraps.
//!
//! A wrapper that forgets a provided method (`replay_from`,
//! `replay_page_size`, `replay_stream`, `list_actors`, `limits`) still compiles and
//! still mostly works: the trait's default runs on top of the wrapper's
//! other methods, and the wrapped storage's own, native version is silently
//! skipped (its page size, its prefetching stream, its single-query
//! listing). The suite's tests cannot see that; a [`Recorder`] under the
//! wrapper can.

use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use futures::TryStreamExt;
use journal_core::{
    ActorPage, ActorSummary, Checkpoint, EntryStream, JournalEntry, JournalResult, JournalStats,
    JournalStorage,
};

use crate::fixture::{checkpoint, entries, fresh_actor};

/// Forwards every method to `inner` and records the name of each method
/// called on it, in order.
pub struct Recorder {
    inner: Arc<dyn JournalStorage>,
    calls: Mutex<Vec<&'static str>>,
}

impl Recorder {
    /// Wraps `inner`, with nothing recorded yet.
    pub fn new(inner: Arc<dyn JournalStorage>) -> Self {
        Recorder {
            inner,
            calls: Mutex::default(),
        }
    }

    /// The methods called since the last `take`, in order.
    pub fn take(&self) -> Vec<&'static str> {
        std::mem::take(&mut *self.calls.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn record(&self, method: &'static str) {
        self.calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(method);
    }
}

#[async_trait]
impl JournalStorage for Recorder {
    fn backend_name(&self) -> &'static str {
        self.record("backend_name");
        self.inner.backend_name()
    }
    async fn append_entry(&self, entry: &JournalEntry) -> JournalResult<u64> {
        self.record("append_entry");
        self.inner.append_entry(entry).await
    }
    async fn append_batch(&self, entries: &[JournalEntry]) -> JournalResult<()> {
        self.record("append_batch");
        self.inner.append_batch(entries).await
    }
    async fn replay_range(
        &self,
        actor_id: &str,
        from: u64,
        to: u64,
        max: usize,
    ) -> JournalResult<Vec<JournalEntry>> {
        self.record("replay_range");
        self.inner.replay_range(actor_id, from, to, max).await
    }
    async fn highest_sequence(&self, actor_id: &str) -> JournalResult<u64> {
        self.record("highest_sequence");
        self.inner.highest_sequence(actor_id).await
    }
    async fn truncate_to(&self, actor_id: &str, to: u64) -> JournalResult<()> {
        self.record("truncate_to");
        self.inner.truncate_to(actor_id, to).await
    }
    async fn delete_actor(&self, actor_id: &str) -> JournalResult<()> {
        self.record("delete_actor");
        self.inner.delete_actor(actor_id).await
    }
    async fn save_checkpoint(&self, checkpoint: &Checkpoint) -> JournalResult<()> {
        self.record("save_checkpoint");
        self.inner.save_checkpoint(checkpoint).await
    }
    async fn get_latest_checkpoint(&self, actor_id: &str) -> JournalResult<Option<Checkpoint>> {
        self.record("get_latest_checkpoint");
        self.inner.get_latest_checkpoint(actor_id).await
    }
    async fn get_checkpoint(
        &self,
        actor_id: &str,
        sequence: u64,
    ) -> JournalResult<Option<Checkpoint>> {
        self.record("get_checkpoint");
        self.inner.get_checkpoint(actor_id, sequence).await
    }
    async fn list_checkpoints(&self, actor_id: &str) -> JournalResult<Vec<u64>> {
        self.record("list_checkpoints");
        self.inner.list_checkpoints(actor_id).await
    }
    async fn delete_checkpoints_before(&self, actor_id: &str, before: u64) -> JournalResult<u64> {
        self.record("delete_checkpoints_before");
        self.inner.delete_checkpoints_before(actor_id, before).await
    }
    async fn list_actors_page(
        &self,
        cursor: Option<&str>,
        limit: usize,
    ) -> JournalResult<ActorPage> {
        self.record("list_actors_page");
        self.inner.list_actors_page(cursor, limit).await
    }
    async fn actor_summary(&self, actor_id: &str) -> JournalResult<ActorSummary> {
        self.record("actor_summary");
        self.inner.actor_summary(actor_id).await
    }
    async fn stats(&self) -> JournalResult<JournalStats> {
        self.record("stats");
        self.inner.stats().await
    }
    async fn replay_from(&self, actor_id: &str, from: u64) -> JournalResult<Vec<JournalEntry>> {
        self.record("replay_from");
        self.inner.replay_from(actor_id, from).await
    }
    fn replay_page_size(&self) -> usize {
        self.record("replay_page_size");
        self.inner.replay_page_size()
    }
    fn limits(&self) -> journal_core::Limits {
        self.record("limits");
        self.inner.limits()
    }
    fn replay_stream<'a>(&'a self, actor_id: &'a str, from: u64) -> EntryStream<'a> {
        self.record("replay_stream");
        self.inner.replay_stream(actor_id, from)
    }
    fn list_actors(&self) -> journal_core::ActorStream<'_> {
        self.record("list_actors");
        self.inner.list_actors()
    }
}

/// Every method of [`JournalStorage`], required and provided, by name.
/// A method added to the trait must be added here, to [`Recorder`] and to
/// [`assert_forwards_every_method`].
pub const METHODS: [&str; 20] = [
    "backend_name",
    "append_entry",
    "append_batch",
    "replay_range",
    "highest_sequence",
    "truncate_to",
    "delete_actor",
    "save_checkpoint",
    "get_latest_checkpoint",
    "get_checkpoint",
    "list_checkpoints",
    "delete_checkpoints_before",
    "list_actors_page",
    "actor_summary",
    "stats",
    "replay_from",
    "replay_page_size",
    "replay_stream",
    "list_actors",
    "limits",
];

/// Calls every method of [`JournalStorage`] on the wrapper `wrap` builds
/// around a [`Recorder`] of `inner`, and panics naming each method whose
/// call did not reach the wrapped storage as the same method (a provided
/// method the wrapper does not override reaches it as other methods, or
/// not at all). `inner` should be an empty store of its own; the check
/// writes one actor.
pub async fn assert_forwards_every_method<W, F>(inner: Arc<dyn JournalStorage>, wrap: F)
where
    W: JournalStorage,
    F: FnOnce(Arc<dyn JournalStorage>) -> W,
{
    let recorder = Arc::new(Recorder::new(inner));
    let wrapper = wrap(Arc::clone(&recorder) as Arc<dyn JournalStorage>);
    let actor = fresh_actor("forwarding");
    let written = entries(&actor, 1, 4);
    let mut missed = Vec::new();
    let mut checked = Vec::new();
    let mut check = |method: &'static str| {
        checked.push(method);
        let calls = recorder.take();
        if !calls.contains(&method) {
            missed.push(format!(
                "{method} (reached the wrapped storage as {calls:?})"
            ));
        }
    };
    let _ = wrapper.backend_name();
    check("backend_name");
    let _ = wrapper.append_entry(&written[0]).await;
    check("append_entry");
    let _ = wrapper.append_batch(&written[1..]).await;
    check("append_batch");
    let _ = wrapper.replay_range(&actor, 1, 4, 10).await;
    check("replay_range");
    let _ = wrapper.highest_sequence(&actor).await;
    check("highest_sequence");
    let _ = wrapper.save_checkpoint(&checkpoint(&actor, 2)).await;
    check("save_checkpoint");
    let _ = wrapper.get_latest_checkpoint(&actor).await;
    check("get_latest_checkpoint");
    let _ = wrapper.get_checkpoint(&actor, 2).await;
    check("get_checkpoint");
    let _ = wrapper.list_checkpoints(&actor).await;
    check("list_checkpoints");
    let _ = wrapper.delete_checkpoints_before(&actor, 1).await;
    check("delete_checkpoints_before");
    let _ = wrapper.list_actors_page(None, 10).await;
    check("list_actors_page");
    let _ = wrapper.actor_summary(&actor).await;
    check("actor_summary");
    let _ = wrapper.stats().await;
    check("stats");
    let _ = wrapper.replay_from(&actor, 1).await;
    check("replay_from");
    let _ = wrapper.replay_page_size();
    check("replay_page_size");
    let _ = wrapper.limits();
    check("limits");
    let _ = wrapper
        .replay_stream(&actor, 1)
        .try_collect::<Vec<_>>()
        .await;
    check("replay_stream");
    let _ = wrapper.list_actors().try_collect::<Vec<_>>().await;
    check("list_actors");
    let _ = wrapper.truncate_to(&actor, 1).await;
    check("truncate_to");
    let _ = wrapper.delete_actor(&actor).await;
    check("delete_actor");
    checked.sort_unstable();
    let mut all = METHODS.to_vec();
    all.sort_unstable();
    assert_eq!(checked, all, "the check calls every method once");
    assert!(
        missed.is_empty(),
        "the wrapper does not forward {} of the {} methods: {}",
        missed.len(),
        METHODS.len(),
        missed.join("; ")
    );
}
