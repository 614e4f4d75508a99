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
}

impl Default for SubscribeOptions {
    fn default() -> Self {
        SubscribeOptions {
            page: 0,
            poll_interval: Duration::from_secs(1),
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
    /// not yet yielded are truncated or deleted, it yields
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
        next: u64,
        /// The highest sequence the journal was seen to hold.
        seen: u64,
        buffer: VecDeque<JournalEntry>,
        done: bool,
    }
    let page = if options.page == 0 {
        storage.replay_page_size().max(1)
    } else {
        options.page
    };
    let start = State {
        next: from.max(1),
        seen: 0,
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
                    state.next = entry.sequence + 1;
                    return Some((Ok(entry), state));
                }
                let read = read_next(
                    storage,
                    actor_id,
                    state.next,
                    &mut state.seen,
                    page,
                    &options,
                );
                match read.await {
                    Ok(entries) => state.buffer = entries.into(),
                    Err(e) => {
                        state.done = true;
                        return Some((Err(e), state));
                    }
                }
            }
        }
    })
    .boxed()
}

/// The next page of entries from `next` on, waiting (woken by the backend,
/// or after the poll interval) while there is none. Checks that the page
/// starts at `next` and has no gap.
async fn read_next<S>(
    storage: &S,
    actor_id: &str,
    next: u64,
    seen: &mut u64,
    page: usize,
    options: &SubscribeOptions,
) -> JournalResult<Vec<JournalEntry>>
where
    S: JournalWatch + ?Sized,
{
    // Set once the journal was seen to reach `next` although the replay
    // before found nothing there: an append between the two reads, or
    // entries removed. A second replay tells which.
    let mut recheck = false;
    loop {
        let entries = storage.replay_range(actor_id, next, u64::MAX, page).await?;
        if let Some(first) = entries.first() {
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
            if let Some(last) = entries.last() {
                *seen = (*seen).max(last.sequence);
            }
            return Ok(entries);
        }
        // Nothing from `next` on: caught up, or the entries are gone.
        // (Deleted, when the journal is now shorter than it was seen.)
        let highest = storage.highest_sequence(actor_id).await?;
        if highest < *seen {
            return Err(truncated(actor_id, next, 0));
        }
        if highest >= next {
            // Appended since the replay (read again: an entry stored
            // before `highest` was read is there now), or removed.
            if recheck {
                return Err(truncated(actor_id, next, 0));
            }
            recheck = true;
            continue;
        }
        recheck = false;
        *seen = highest;
        storage
            .wait_for_entries(actor_id, next - 1, options.poll_interval)
            .await?;
    }
}

fn truncated(actor_id: &str, wanted: u64, first_stored: u64) -> JournalError {
    JournalError::Truncated {
        actor_id: actor_id.to_owned(),
        wanted,
        first_stored,
    }
}
