//! The `JournalStorage` trait every backend implements.

use std::collections::VecDeque;

use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt};
use tracing::Instrument as _;

use crate::error::{JournalError, JournalResult};
use crate::proto::{Checkpoint, JournalEntry};

/// A stream of journal entries, ascending by sequence.
pub type EntryStream<'a> = BoxStream<'a, JournalResult<JournalEntry>>;

/// A stream of actor ids.
pub type ActorStream<'a> = BoxStream<'a, JournalResult<String>>;

/// Entries a streaming replay fetches per page unless the backend says
/// otherwise: the most a replay stream holds in memory at once.
pub const DEFAULT_REPLAY_PAGE: usize = 512;

/// Actor ids an actor listing fetches per page.
pub const DEFAULT_ACTOR_PAGE: usize = 1_000;

/// One page of an actor listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActorPage {
    /// Actor ids of this page.
    pub actors: Vec<String>,
    /// Where the next page starts: pass it back as `cursor`. `None` when the
    /// listing is complete.
    pub next_cursor: Option<String>,
}

impl ActorPage {
    /// A page of at most `limit` ids: when it is full, its last id is where
    /// the next page starts; otherwise the listing is complete.
    pub fn new(actors: Vec<String>, limit: usize) -> Self {
        let next_cursor = (limit > 0 && actors.len() >= limit)
            .then(|| actors.last().cloned())
            .flatten();
        ActorPage {
            actors,
            next_cursor,
        }
    }
}

/// Totals of a whole journal store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JournalStats {
    /// Actors with at least one append (and not deleted since).
    pub actors: u64,
    /// Entries stored (truncated ones not counted).
    pub entries: u64,
    /// Checkpoints stored.
    pub checkpoints: u64,
}

/// Where an actor's journal stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ActorSummary {
    /// The highest sequence ever appended (0 for an unknown actor).
    pub highest_sequence: u64,
    /// Entries stored (those not truncated).
    pub entries: u64,
    /// Checkpoints stored.
    pub checkpoints: u64,
}

/// An append-only, per-actor journal with checkpoints.
///
/// Every backend keeps the contract (`shared/design/contract.md`), which the
/// `journal-conformance` suite checks rule by rule. In short:
///
/// * an append succeeds only at `highest_sequence + 1`, otherwise it is a
///   [`SequenceConflict`](crate::JournalError::SequenceConflict) and writes
///   nothing; re-appending a stored entry (same sequence and id) is `Ok`;
/// * a batch is all or nothing;
/// * replays are ascending and return exactly what was appended;
/// * truncation never lowers the highest sequence;
/// * a value is `Send + Sync` and shared by any number of tasks.
///
/// Input is validated with [`crate::validate`] before any I/O.
///
/// The required methods are the storage primitives; streaming replay, the
/// actor stream and `replay_from` are provided on top of them, and a backend
/// may override them with native versions.
#[async_trait]
pub trait JournalStorage: Send + Sync {
    /// The backend's short name ("memory", "sqlite", ...), used in errors
    /// and tracing spans.
    fn backend_name(&self) -> &'static str;

    /// Appends one entry at `highest_sequence + 1` and returns its sequence.
    ///
    /// Re-appending an entry already stored (same actor, sequence and id)
    /// returns `Ok` and stores nothing new (contract rules 1, 4, 5).
    async fn append_entry(&self, entry: &JournalEntry) -> JournalResult<u64>;

    /// Appends entries of one actor with contiguous sequences starting at
    /// `highest_sequence + 1`, all or nothing. An empty batch is a no-op; a
    /// batch whose entries are all stored already with the same ids is an
    /// idempotent retry (contract rules 2, 4, 5).
    async fn append_batch(&self, entries: &[JournalEntry]) -> JournalResult<()>;

    /// At most `max` entries with `from <= sequence <= to`, ascending.
    /// `max = 0` or `from > to` give nothing (contract rule 7).
    async fn replay_range(
        &self,
        actor_id: &str,
        from: u64,
        to: u64,
        max: usize,
    ) -> JournalResult<Vec<JournalEntry>>;

    /// The highest sequence ever appended for the actor, or 0. Truncation
    /// never lowers it (contract rule 8).
    async fn highest_sequence(&self, actor_id: &str) -> JournalResult<u64>;

    /// Removes the actor's entries with `sequence <= to`; the highest
    /// sequence stays (contract rule 14).
    async fn truncate_to(&self, actor_id: &str, to: u64) -> JournalResult<()>;

    /// Removes every entry, checkpoint and the highest sequence of the actor
    /// (right to be forgotten, contract rule 15). Unknown actors are a no-op.
    async fn delete_actor(&self, actor_id: &str) -> JournalResult<()>;

    /// Stores a checkpoint; `1 <= sequence <= highest_sequence` or
    /// [`InvalidCheckpoint`](crate::JournalError::InvalidCheckpoint). A second
    /// save at the same sequence replaces the first (contract rule 10).
    async fn save_checkpoint(&self, checkpoint: &Checkpoint) -> JournalResult<()>;

    /// The checkpoint with the highest sequence, byte-identical to what was
    /// saved, or `None` (contract rule 11).
    async fn get_latest_checkpoint(&self, actor_id: &str) -> JournalResult<Option<Checkpoint>>;

    /// The checkpoint at exactly `sequence`, or `None`.
    async fn get_checkpoint(
        &self,
        actor_id: &str,
        sequence: u64,
    ) -> JournalResult<Option<Checkpoint>>;

    /// Sequences of the actor's stored checkpoints, ascending.
    async fn list_checkpoints(&self, actor_id: &str) -> JournalResult<Vec<u64>>;

    /// Removes the actor's checkpoints with `sequence < before` (retention,
    /// contract rule 13). Returns how many were removed.
    async fn delete_checkpoints_before(&self, actor_id: &str, before: u64) -> JournalResult<u64>;

    /// One page of actor ids, ascending in the backend's own order, starting
    /// after `cursor` (`None`: from the beginning).
    async fn list_actors_page(
        &self,
        cursor: Option<&str>,
        limit: usize,
    ) -> JournalResult<ActorPage>;

    /// Where one actor's journal stands.
    async fn actor_summary(&self, actor_id: &str) -> JournalResult<ActorSummary>;

    /// Totals of the whole store.
    async fn stats(&self) -> JournalResult<JournalStats>;

    /// Every stored entry with `sequence >= from`, ascending (contract rule
    /// 6). For long journals prefer [`JournalStorage::replay_stream`].
    async fn replay_from(&self, actor_id: &str, from: u64) -> JournalResult<Vec<JournalEntry>> {
        self.replay_range(actor_id, from, u64::MAX, usize::MAX)
            .await
    }

    /// Entries a streaming replay fetches at once.
    fn replay_page_size(&self) -> usize {
        DEFAULT_REPLAY_PAGE
    }

    /// Every stored entry with `sequence >= from`, ascending, as a stream
    /// holding at most [`JournalStorage::replay_page_size`] entries in memory
    /// whatever the journal's length. Agrees with `replay_from`.
    fn replay_stream<'a>(&'a self, actor_id: &'a str, from: u64) -> EntryStream<'a> {
        paged_replay(self, actor_id, from, self.replay_page_size())
    }

    /// Every actor id, as a stream fetched page by page.
    fn list_actors(&self) -> ActorStream<'_> {
        paged_actors(self, DEFAULT_ACTOR_PAGE)
    }

    /// The size limits this storage enforces (contract rule 4), so that a
    /// caller can check an entry before it acts on it: the durability facet
    /// checks a message and a side effect's result here before writing them
    /// in one batch with others.
    fn limits(&self) -> crate::validate::Limits {
        crate::validate::Limits::default()
    }
}

/// A shared storage is a storage: `Arc<S>` and `Arc<dyn JournalStorage>`
/// can be passed wherever a storage is taken by value, and every call goes to
/// the shared value (its own overrides included).
#[async_trait]
impl<T: JournalStorage + ?Sized> JournalStorage for std::sync::Arc<T> {
    fn backend_name(&self) -> &'static str {
        (**self).backend_name()
    }
    async fn append_entry(&self, entry: &JournalEntry) -> JournalResult<u64> {
        (**self).append_entry(entry).await
    }
    async fn append_batch(&self, entries: &[JournalEntry]) -> JournalResult<()> {
        (**self).append_batch(entries).await
    }
    async fn replay_range(
        &self,
        actor_id: &str,
        from: u64,
        to: u64,
        max: usize,
    ) -> JournalResult<Vec<JournalEntry>> {
        (**self).replay_range(actor_id, from, to, max).await
    }
    async fn highest_sequence(&self, actor_id: &str) -> JournalResult<u64> {
        (**self).highest_sequence(actor_id).await
    }
    async fn truncate_to(&self, actor_id: &str, to: u64) -> JournalResult<()> {
        (**self).truncate_to(actor_id, to).await
    }
    async fn delete_actor(&self, actor_id: &str) -> JournalResult<()> {
        (**self).delete_actor(actor_id).await
    }
    async fn save_checkpoint(&self, checkpoint: &Checkpoint) -> JournalResult<()> {
        (**self).save_checkpoint(checkpoint).await
    }
    async fn get_latest_checkpoint(&self, actor_id: &str) -> JournalResult<Option<Checkpoint>> {
        (**self).get_latest_checkpoint(actor_id).await
    }
    async fn get_checkpoint(
        &self,
        actor_id: &str,
        sequence: u64,
    ) -> JournalResult<Option<Checkpoint>> {
        (**self).get_checkpoint(actor_id, sequence).await
    }
    async fn list_checkpoints(&self, actor_id: &str) -> JournalResult<Vec<u64>> {
        (**self).list_checkpoints(actor_id).await
    }
    async fn delete_checkpoints_before(&self, actor_id: &str, before: u64) -> JournalResult<u64> {
        (**self).delete_checkpoints_before(actor_id, before).await
    }
    async fn list_actors_page(
        &self,
        cursor: Option<&str>,
        limit: usize,
    ) -> JournalResult<ActorPage> {
        (**self).list_actors_page(cursor, limit).await
    }
    async fn actor_summary(&self, actor_id: &str) -> JournalResult<ActorSummary> {
        (**self).actor_summary(actor_id).await
    }
    async fn stats(&self) -> JournalResult<JournalStats> {
        (**self).stats().await
    }
    async fn replay_from(&self, actor_id: &str, from: u64) -> JournalResult<Vec<JournalEntry>> {
        (**self).replay_from(actor_id, from).await
    }
    fn replay_page_size(&self) -> usize {
        (**self).replay_page_size()
    }
    fn replay_stream<'a>(&'a self, actor_id: &'a str, from: u64) -> EntryStream<'a> {
        (**self).replay_stream(actor_id, from)
    }
    fn list_actors(&self) -> ActorStream<'_> {
        (**self).list_actors()
    }
    fn limits(&self) -> crate::validate::Limits {
        (**self).limits()
    }
}

/// A replay stream built from [`JournalStorage::replay_range`] pages of
/// `page` entries: the default of [`JournalStorage::replay_stream`].
pub fn paged_replay<'a, S>(
    storage: &'a S,
    actor_id: &'a str,
    from: u64,
    page: usize,
) -> EntryStream<'a>
where
    S: JournalStorage + ?Sized,
{
    struct State {
        next: Option<u64>,
        buffer: VecDeque<JournalEntry>,
    }
    let page = page.max(1);
    let start = State {
        next: Some(from.max(1)),
        buffer: VecDeque::new(),
    };
    stream::unfold(start, move |mut state| async move {
        if state.buffer.is_empty() {
            let from = state.next?;
            match storage.replay_range(actor_id, from, u64::MAX, page).await {
                Ok(entries) => {
                    state.next = match entries.last() {
                        Some(last) if entries.len() == page => last.sequence.checked_add(1),
                        _ => None,
                    };
                    state.buffer = entries.into();
                }
                Err(e) => {
                    state.next = None;
                    return Some((Err(e), state));
                }
            }
        }
        let entry = state.buffer.pop_front()?;
        Some((Ok(entry), state))
    })
    .boxed()
}

/// A replay stream of [`JournalStorage::replay_range`] pages of `page`
/// entries, like [`paged_replay`], with the next pages asked for on tasks
/// of their own while this one is consumed: two at once, the second from
/// where the first will end if it is full and contiguous (an actor's stored
/// sequences are), so that one page's query runs while another is decoded.
/// A guess that turns out wrong (a journal with a gap, or that ended) is
/// dropped and the right page asked for. At most three pages are held. For
/// storages that are cheap to clone (a shared pool); must be polled on a
/// tokio runtime.
pub fn prefetched_replay<S>(
    storage: S,
    actor_id: &str,
    from: u64,
    page: usize,
) -> EntryStream<'static>
where
    S: JournalStorage + Clone + 'static,
{
    /// Pages asked for at once.
    const AHEAD: usize = 2;
    /// A page asked for: where it starts, and its task.
    type Fetch = (
        u64,
        tokio::task::JoinHandle<JournalResult<Vec<JournalEntry>>>,
    );
    struct State<S> {
        storage: S,
        actor_id: String,
        /// The page to fetch first; taken on the first poll, so that
        /// creating the stream spawns nothing.
        start: Option<u64>,
        ahead: VecDeque<Fetch>,
        current: std::vec::IntoIter<JournalEntry>,
    }
    impl<S: JournalStorage + Clone + 'static> State<S> {
        fn fetch(&mut self, from: u64, page: usize) {
            let (storage, actor_id) = (self.storage.clone(), self.actor_id.clone());
            // The page's span (the backend's `replay_range`) stays under the
            // caller's span, though it runs on a task of its own.
            let task = tokio::spawn(
                async move { storage.replay_range(&actor_id, from, u64::MAX, page).await }
                    .in_current_span(),
            );
            self.ahead.push_back((from, task));
        }
        /// Asks for pages after `from` until [`AHEAD`] are asked for, each
        /// where the one before would end if full.
        fn fill(&mut self, mut from: u64, page: usize) {
            while self.ahead.len() < AHEAD {
                self.fetch(from, page);
                match from.checked_add(page as u64) {
                    Some(next) => from = next,
                    None => break,
                }
            }
        }
    }
    impl<S> State<S> {
        fn drop_ahead(&mut self) {
            for (_, task) in self.ahead.drain(..) {
                task.abort();
            }
        }
    }
    impl<S> Drop for State<S> {
        fn drop(&mut self) {
            self.drop_ahead();
        }
    }
    let page = page.max(1);
    let start = State {
        storage,
        actor_id: actor_id.to_owned(),
        start: Some(from.max(1)),
        ahead: VecDeque::new(),
        current: Vec::new().into_iter(),
    };
    stream::unfold(start, move |mut state| async move {
        loop {
            if let Some(entry) = state.current.next() {
                return Some((Ok(entry), state));
            }
            if let Some(from) = state.start.take() {
                state.fill(from, page);
            }
            let (_, task) = state.ahead.pop_front()?;
            let entries = match task.await {
                Ok(Ok(entries)) => entries,
                Ok(Err(e)) => {
                    state.drop_ahead();
                    return Some((Err(e), state));
                }
                Err(e) => {
                    state.drop_ahead();
                    let e = JournalError::storage(
                        state.storage.backend_name(),
                        format!("a replay page task failed: {e}"),
                    );
                    return Some((Err(e), state));
                }
            };
            let after = entries.last().and_then(|last| last.sequence.checked_add(1));
            match after {
                // A full page: the journal may go on after it.
                Some(after) if entries.len() == page => {
                    if state.ahead.front().is_some_and(|(from, _)| *from != after) {
                        // A guess from before a gap: ask again from here.
                        state.drop_ahead();
                    }
                    let next = state
                        .ahead
                        .back()
                        .and_then(|(from, _)| from.checked_add(page as u64))
                        .unwrap_or(after);
                    state.fill(next, page);
                }
                _ => state.drop_ahead(),
            }
            state.current = entries.into_iter();
        }
    })
    .boxed()
}

/// An actor stream built from [`JournalStorage::list_actors_page`]: the
/// default of [`JournalStorage::list_actors`].
pub fn paged_actors<S>(storage: &S, page: usize) -> ActorStream<'_>
where
    S: JournalStorage + ?Sized,
{
    struct State {
        cursor: Option<String>,
        started: bool,
        buffer: VecDeque<String>,
    }
    let page = page.max(1);
    let start = State {
        cursor: None,
        started: false,
        buffer: VecDeque::new(),
    };
    stream::unfold(start, move |mut state| async move {
        while state.buffer.is_empty() {
            if state.started && state.cursor.is_none() {
                return None;
            }
            state.started = true;
            match storage
                .list_actors_page(state.cursor.as_deref(), page)
                .await
            {
                Ok(ActorPage {
                    actors,
                    next_cursor,
                }) => {
                    state.cursor = next_cursor;
                    state.buffer = actors.into();
                }
                Err(e) => {
                    state.cursor = None;
                    return Some((Err(e), state));
                }
            }
        }
        let actor = state.buffer.pop_front()?;
        Some((Ok(actor), state))
    })
    .boxed()
}
