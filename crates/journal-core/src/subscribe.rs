//! Following an actor's journal live (contract rule 27): every stored entry
//! from a sequence on, then each new one as it is appended.
//!
//! A backend offers it by implementing [`JournalWatch`], a capability of its
//! own beside [`JournalStorage`]: one method that waits until an actor's
//! journal may have grown, woken by the backend's own mechanism (an
//! in-process notification, `LISTEN/NOTIFY`, `XREAD BLOCK`). The reading
//! itself is the storage's ordinary paged replay, so a lost or spurious
//! wake-up costs latency, never an entry: [`JournalWatch::subscribe`] reads
//! again after every wake-up and at least every
//! [`SubscribeOptions::poll_interval`].

use std::collections::VecDeque;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::{self, StreamExt};

use crate::error::{JournalError, JournalResult};
use crate::proto::JournalEntry;
use crate::storage::{EntryStream, JournalStorage};

/// How a subscription reads and waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeOptions {
    /// Entries read at once (and so at most held in memory, beside the one
    /// the consumer holds). 0 means the storage's replay page size.
    pub page: usize,
    /// The longest a caught-up subscription waits without reading again,
    /// whatever the backend's wake-ups say: a wake-up the backend lost
    /// (another process's write it did not hear of, a dropped connection)
    /// costs at most this much latency. Default 1 s.
    pub poll_interval: Duration,
    /// How long the subscription keeps retrying a read or wait that failed
    /// with a retryable error ([`JournalError::is_retryable`]: a lost
    /// connection, a timeout) before it yields the error and ends: pauses
    /// of 10 ms, doubled up to 1 s, from where it was, so a reconnect of the
    /// backend costs latency, not an entry. Default 30 s.
    pub retry_for: Duration,
}

impl Default for SubscribeOptions {
    fn default() -> Self {
        SubscribeOptions {
            page: 0,
            poll_interval: Duration::from_secs(1),
            retry_for: Duration::from_secs(30),
        }
    }
}

/// A storage that can wait for an actor's journal to grow: the capability
/// behind live subscriptions (contract rule 27).
#[async_trait]
pub trait JournalWatch: JournalStorage {
    /// Returns once `actor_id`'s journal may hold an entry with a sequence
    /// above `after`, or once `timeout` has passed, whichever comes first.
    /// It returns at once when such an entry is already stored. Returning
    /// early is allowed (the caller reads and finds nothing); waiting past
    /// an append that the backend was told of is not.
    async fn wait_for_entries(
        &self,
        actor_id: &str,
        after: u64,
        timeout: Duration,
    ) -> JournalResult<()>;

    /// Every entry of `actor_id` with a sequence of at least `from` (0 and 1
    /// both mean the first), in order: those stored, then each new one as
    /// it is appended, without end. No gap and no duplicate: each entry is
    /// checked to carry the next sequence. If entries the subscription has
    /// not yet yielded are truncated or deleted, or the actor was deleted
    /// and its journal begun again (the entry before the next one is read
    /// again and must be the one yielded), it yields
    /// [`JournalError::Truncated`] and ends; any other error ends it too
    /// (subscribe again from the next sequence to go on). Memory stays
    /// bounded by one page, and nothing is read while the consumer does not
    /// poll (backpressure).
    fn subscribe<'a>(
        &'a self,
        actor_id: &'a str,
        from: u64,
        options: SubscribeOptions,
    ) -> EntryStream<'a>
    where
        Self: Sized,
    {
        follow(self, actor_id, from, options)
    }
}

/// [`JournalWatch::subscribe`] for any watchable storage (`dyn` included).
pub fn follow<'a, S>(
    storage: &'a S,
    actor_id: &'a str,
    from: u64,
    options: SubscribeOptions,
) -> EntryStream<'a>
where
    S: JournalWatch + ?Sized,
{
    struct State {
        cursor: Cursor,
        buffer: VecDeque<JournalEntry>,
        done: bool,
    }
    let page = if options.page == 0 {
        storage.replay_page_size().max(1)
    } else {
        options.page
    };
    let start = State {
        cursor: Cursor {
            next: from.max(1),
            seen: 0,
            caught_up: false,
            last_id: None,
        },
        buffer: VecDeque::new(),
        done: false,
    };
    stream::unfold(start, move |mut state| {
        let options = options.clone();
        async move {
            if state.done {
                return None;
            }
            loop {
                if let Some(entry) = state.buffer.pop_front() {
                    state.cursor.next = entry.sequence + 1;
                    return Some((Ok(entry), state));
                }
                let mut backoff = Backoff::new(options.retry_for);
                let entries = loop {
                    let read = read_next(storage, actor_id, &mut state.cursor, page, &options);
                    match read.await {
                        Ok(entries) => break entries,
                        Err(e) => {
                            if let Err(e) = backoff.retry(e).await {
                                state.done = true;
                                return Some((Err(e), state));
                            }
                        }
                    }
                };
                state.cursor.caught_up = entries.len() < page;
                state.buffer = entries;
            }
        }
    })
    .boxed()
}

/// Where a subscription is.
struct Cursor {
    /// The sequence it yields next.
    next: u64,
    /// The highest sequence the journal was seen to hold.
    seen: u64,
    /// The id of the last entry read (the one before `next`): a journal
    /// that holds another entry there was deleted and begun again.
    last_id: Option<String>,
    /// Whether the last read found everything stored: the next one waits
    /// first.
    caught_up: bool,
}

/// The next page of entries from `next` on, waiting (woken by the backend,
/// or after the poll interval) while there is none. Checks that the page
/// starts at `next` and has no gap.
async fn read_next<S>(
    storage: &S,
    actor_id: &str,
    cursor: &mut Cursor,
    page: usize,
    options: &SubscribeOptions,
) -> JournalResult<VecDeque<JournalEntry>>
where
    S: JournalWatch + ?Sized,
{
    let next = cursor.next;
    // Set when the journal was seen to reach `next` after a read found
    // nothing there: another read that finds nothing means it is gone.
    let mut reached = false;
    loop {
        if cursor.caught_up {
            storage
                .wait_for_entries(actor_id, next - 1, options.poll_interval)
                .await?;
        }
        cursor.caught_up = false;
        // The entry before `next` is read too, when one was: the same one
        // still there (or none, truncated) is the same journal.
        let from = if cursor.last_id.is_some() {
            next - 1
        } else {
            next
        };
        let mut entries: VecDeque<JournalEntry> = storage
            .replay_range(
                actor_id,
                from,
                u64::MAX,
                page.saturating_add(usize::from(from < next)),
            )
            .await?
            .into();
        if let Some(before) = entries.front().filter(|e| e.sequence < next) {
            if Some(&before.id) != cursor.last_id.as_ref() {
                return Err(truncated(actor_id, next, 0));
            }
            entries.pop_front();
        }
        if let Some(first) = entries.front() {
            if first.sequence != next {
                return Err(truncated(actor_id, next, first.sequence));
            }
            for (offset, entry) in entries.iter().enumerate() {
                if entry.sequence != next + offset as u64 {
                    return Err(JournalError::storage(
                        storage.backend_name(),
                        format!(
                            "the journal of {actor_id:?} skipped from {} to {}",
                            next + offset as u64 - 1,
                            entry.sequence
                        ),
                    ));
                }
            }
            if let Some(last) = entries.back() {
                cursor.seen = cursor.seen.max(last.sequence);
                cursor.last_id = Some(last.id.clone());
            }
            return Ok(entries);
        }
        // Nothing from `next` on: caught up, or the entries are gone.
        // (Deleted, when the journal is now shorter than it was seen.)
        if reached {
            return Err(truncated(actor_id, next, 0));
        }
        let highest = storage.highest_sequence(actor_id).await?;
        if highest < cursor.seen {
            return Err(truncated(actor_id, next, 0));
        }
        cursor.seen = highest;
        if highest >= next {
            // Appended since the read (or truncated): read again.
            reached = true;
            continue;
        }
        cursor.caught_up = true;
    }
}

/// The first pause before a retry, and the longest.
const RETRY_PAUSE: Duration = Duration::from_millis(10);
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(1);

/// Retries of a followed stream (a subscription, a feed): retryable errors
/// are waited out, pauses doubling from [`RETRY_PAUSE`] to
/// [`MAX_RETRY_PAUSE`], for at most the budget since the first of a run of
/// failures.
pub(crate) struct Backoff {
    budget: Duration,
    failing: Option<(std::time::Instant, Duration)>,
}

impl Backoff {
    pub(crate) fn new(budget: Duration) -> Self {
        Backoff {
            budget,
            failing: None,
        }
    }

    /// Waits before the next try after `error`, or gives it back when it
    /// is not retryable or the budget is spent.
    pub(crate) async fn retry(&mut self, error: JournalError) -> JournalResult<()> {
        if !error.is_retryable() {
            return Err(error);
        }
        let (since, pause) = self
            .failing
            .get_or_insert((std::time::Instant::now(), RETRY_PAUSE));
        if since.elapsed() >= self.budget {
            return Err(error);
        }
        tracing::debug!(error = %error, "retrying");
        tokio::time::sleep(*pause).await;
        *pause = (*pause * 2).min(MAX_RETRY_PAUSE);
        Ok(())
    }

    /// A try succeeded: the next failure starts a new run.
    pub(crate) fn reset(&mut self) {
        self.failing = None;
    }
}

fn truncated(actor_id: &str, wanted: u64, first_stored: u64) -> JournalError {
    JournalError::Truncated {
        actor_id: actor_id.to_owned(),
        wanted,
        first_stored,
    }
}

/// The key [`Watchers`] wait under for a feed (rule 28) rather than an
/// actor: no actor has an empty id.
pub const FEED_WAIT_KEY: &str = "";

/// Wake-ups per actor for the waiters of one process: a backend keeps one,
/// calls [`Watchers::notify`] after each append commits (and
/// [`Watchers::notify_all`] when it cannot say which actors changed), and
/// waits through [`Watchers::wait`]. An append costs one atomic load while
/// nobody waits.
#[derive(Debug, Default)]
pub struct Watchers {
    /// Actors waited on, with how many waiters each.
    waiting: std::sync::Mutex<
        std::collections::HashMap<String, (tokio::sync::watch::Sender<u64>, usize)>,
    >,
    /// Waiters in all.
    count: std::sync::atomic::AtomicUsize,
}

impl Watchers {
    /// No waiters yet.
    #[must_use]
    pub fn new() -> Self {
        Watchers::default()
    }

    /// Whether anyone waits now.
    pub fn is_waited_on(&self) -> bool {
        self.count.load(std::sync::atomic::Ordering::Acquire) > 0
    }

    /// Wakes the waiters of `actor_id`, if any.
    pub fn notify(&self, actor_id: &str) {
        if !self.is_waited_on() {
            return;
        }
        if let Some((sender, _)) = self.lock().get(actor_id) {
            sender.send_modify(|version| *version = version.wrapping_add(1));
        }
    }

    /// Wakes every waiter.
    pub fn notify_all(&self) {
        if !self.is_waited_on() {
            return;
        }
        for (sender, _) in self.lock().values() {
            sender.send_modify(|version| *version = version.wrapping_add(1));
        }
    }

    /// Waits for [`Watchers::notify`] of `actor_id` (or
    /// [`Watchers::notify_all`]) or for `timeout`, unless `ready` (run once
    /// the waiter is registered, so no wake-up in between is lost) says
    /// there is no need: the shape of [`JournalWatch::wait_for_entries`].
    pub async fn wait<F>(&self, actor_id: &str, timeout: Duration, ready: F) -> JournalResult<()>
    where
        F: std::future::Future<Output = JournalResult<bool>>,
    {
        let mut receiver = self.register(actor_id);
        let _registered = Registered {
            watchers: self,
            actor_id,
        };
        if ready.await? {
            return Ok(());
        }
        // Woken, timed out or the sender gone: the caller reads again.
        let _ = tokio::time::timeout(timeout, receiver.changed()).await;
        Ok(())
    }

    fn register(&self, actor_id: &str) -> tokio::sync::watch::Receiver<u64> {
        let mut waiting = self.lock();
        self.count.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        let (sender, waiters) = waiting
            .entry(actor_id.to_owned())
            .or_insert_with(|| (tokio::sync::watch::channel(0).0, 0));
        *waiters += 1;
        sender.subscribe()
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<
        '_,
        std::collections::HashMap<String, (tokio::sync::watch::Sender<u64>, usize)>,
    > {
        self.waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Takes a waiter off [`Watchers`] when its wait ends (or is dropped).
struct Registered<'a> {
    watchers: &'a Watchers,
    actor_id: &'a str,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        let mut waiting = self.watchers.lock();
        if let Some((_, waiters)) = waiting.get_mut(self.actor_id) {
            *waiters -= 1;
            if *waiters == 0 {
                waiting.remove(self.actor_id);
            }
        }
        self.watchers
            .count
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}
