//! A feed over all actors, or over one tag (contract rule 28): every stored
//! entry once, each actor's in sequence order, with an offset the reader
//! stores and resumes from.
//!
//! A backend offers it by implementing [`JournalFeed`], a capability of its
//! own beside [`JournalStorage`]. The one promise that is hard to keep is
//! the last of rule 28: an entry that commits after entries with higher
//! offsets (concurrent writers) is never skipped by a reader that resumes
//! from a stored offset. Each backend's implementation says how it keeps
//! it (one writer committing in offset order; offsets only handed out up to
//! where every earlier transaction has ended; ...).
//!
//! An entry's tags ([`entry_tags`]) are an event's own (`EventRecorded`,
//! from an event-sourced actor), or those a message listed under the
//! metadata key [`TAGS_KEY`].

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt};

use crate::error::{JournalError, JournalResult};
use crate::proto::{journal_entry::Entry, JournalEntry};
use crate::storage::JournalStorage;
use crate::subscribe::Backoff;

/// The metadata key of a message whose entries are tagged: tags separated
/// by commas (`"cart,eu"`), each trimmed; empty ones are ignored.
pub const TAGS_KEY: &str = "journal.tags";

/// The longest tag, in bytes.
pub const MAX_TAG_BYTES: usize = 255;

/// An entry's tags: for an `EventRecorded`, its own; for a
/// `MessageReceived`, the tags its metadata lists under [`TAGS_KEY`]; none
/// for other entries. Each trimmed, at most [`MAX_TAG_BYTES`] (longer and
/// empty ones are ignored). Sorted, without duplicates.
pub fn entry_tags(entry: &JournalEntry) -> Vec<String> {
    let listed: Vec<&str> = match &entry.entry {
        Some(Entry::EventRecorded(event)) => event.tags.iter().map(|t| t.trim()).collect(),
        Some(Entry::MessageReceived(message)) => match message.metadata.get(TAGS_KEY) {
            Some(listed) => listed.split(',').map(str::trim).collect(),
            None => return Vec::new(),
        },
        _ => return Vec::new(),
    };
    let mut tags: Vec<String> = listed
        .into_iter()
        .filter(|t| !t.is_empty() && t.len() <= MAX_TAG_BYTES)
        .map(str::to_owned)
        .collect();
    tags.sort_unstable();
    tags.dedup();
    tags
}

/// A reader's position in a feed: text the backend made, which the reader
/// stores (anywhere: it is plain text) and hands back to resume after it.
/// [`FeedOffset::start`] is before the first entry. An offset is only
/// meaningful to the backend that gave it: text it could not have made is
/// refused with [`JournalError::InvalidOffset`]. The memory, SQLite and
/// PostgreSQL backends number one order of the whole store, which all of
/// their feeds share: a tag's feed read after an offset of the all-actors
/// feed yields that tag's entries after that point. A Redis offset holds
/// positions in its feed's own streams, and a feed of the other kind (all
/// actors, or a tag) refuses it. Nothing tells one tag's offset from
/// another's: a reader (a projection) keeps to one feed, and a new filter
/// wants a new projection name, starting from the start.
///
/// A backend whose offsets are long (one position per shard of the
/// feed, say) may hand out [`FeedOffset::deferred`] ones, whose text is
/// made the first time it is asked for: a page of items then costs one
/// text for the item whose offset the reader stores, not one per item.
/// Offsets compare, hash and print by their text either way.
#[derive(Clone, Default)]
pub struct FeedOffset(Repr);

#[derive(Clone)]
enum Repr {
    Text(String),
    Deferred {
        texts: Arc<dyn OffsetTexts>,
        index: usize,
    },
}

impl Default for Repr {
    fn default() -> Self {
        Repr::Text(String::new())
    }
}

/// Makes the texts of a backend's [`FeedOffset::deferred`] offsets (those
/// of one page, say), on demand, and keeps each once made (the offsets
/// borrow them).
pub trait OffsetTexts: Send + Sync + std::panic::RefUnwindSafe {
    /// The text of offset `index`: the same text every time.
    fn text(&self, index: usize) -> &str;
}

impl FeedOffset {
    /// Before the first entry.
    #[must_use]
    pub fn start() -> Self {
        FeedOffset::default()
    }

    /// An offset as a backend wrote it, or as it was stored.
    pub fn new(text: impl Into<String>) -> Self {
        FeedOffset(Repr::Text(text.into()))
    }

    /// Offset `index` of `texts`, its text made when first asked for.
    /// The text must not be empty: that is [`FeedOffset::start`]. Such an
    /// offset keeps `texts` alive (for a Redis feed, its page's positions
    /// and moves): to keep many offsets for long, keep
    /// `FeedOffset::new(offset.as_str())` instead.
    pub fn deferred(texts: Arc<dyn OffsetTexts>, index: usize) -> Self {
        FeedOffset(Repr::Deferred { texts, index })
    }

    /// Whether this is [`FeedOffset::start`].
    #[must_use]
    pub fn is_start(&self) -> bool {
        self.as_str().is_empty()
    }

    /// The text to store.
    #[must_use]
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Text(text) => text,
            Repr::Deferred { texts, index } => texts.text(*index),
        }
    }
}

impl std::fmt::Debug for FeedOffset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("FeedOffset").field(&self.as_str()).finish()
    }
}

impl std::fmt::Display for FeedOffset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq for FeedOffset {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for FeedOffset {}

impl std::hash::Hash for FeedOffset {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl PartialOrd for FeedOffset {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for FeedOffset {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

/// An entry read from a feed, with the offset to resume after it.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedItem {
    /// Store this to resume after the entry.
    pub offset: FeedOffset,
    /// The entry.
    pub entry: JournalEntry,
}

/// Which entries a feed carries.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum FeedFilter {
    /// Every actor's.
    #[default]
    All,
    /// Those tagged with this ([`entry_tags`]). Backends find them through
    /// an index, never by scanning.
    Tag(String),
}

/// How a followed feed reads and waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedOptions {
    /// Entries read at once (and so at most held). Default 256.
    pub page: usize,
    /// The longest a caught-up feed waits without reading again, whatever
    /// the backend's wake-ups say. Default 1 s.
    pub poll_interval: Duration,
    /// How long retryable errors are retried before the stream yields one
    /// and ends (pauses of 10 ms doubled up to 1 s). Default 30 s.
    pub retry_for: Duration,
}

impl Default for FeedOptions {
    fn default() -> Self {
        FeedOptions {
            page: 256,
            poll_interval: Duration::from_secs(1),
            retry_for: Duration::from_secs(30),
        }
    }
}

/// A stream of feed items.
pub type FeedStream<'a> = BoxStream<'a, JournalResult<FeedItem>>;

/// A storage whose entries can be read as one feed over all actors (and
/// per tag), with offsets: contract rule 28.
#[async_trait]
pub trait JournalFeed: JournalStorage {
    /// At most `max` entries after `after`, in feed order: every entry the
    /// filter takes, once, each actor's in sequence order. An empty page
    /// means none is readable yet; a later call may return entries that
    /// committed since, never entries before an offset already returned.
    async fn read_feed(
        &self,
        filter: &FeedFilter,
        after: &FeedOffset,
        max: usize,
    ) -> JournalResult<Vec<FeedItem>>;

    /// Returns once the feed may have entries after `after`, or after
    /// `timeout`. Returning early is allowed. The default waits out the
    /// timeout: backends with a wake-up of their own override it.
    async fn wait_for_feed(
        &self,
        filter: &FeedFilter,
        after: &FeedOffset,
        timeout: Duration,
    ) -> JournalResult<()> {
        let _ = (filter, after);
        tokio::time::sleep(timeout).await;
        Ok(())
    }

    /// The feed from after `after`: the entries stored, then each new one
    /// as it commits, without end. Memory stays bounded by one page;
    /// nothing is read while the consumer does not poll.
    fn feed(&self, filter: FeedFilter, after: FeedOffset, options: FeedOptions) -> FeedStream<'_>
    where
        Self: Sized,
    {
        follow_feed(self, filter, after, options)
    }
}

/// [`JournalFeed::feed`] for any feed storage (`dyn` included).
pub fn follow_feed<S>(
    storage: &S,
    filter: FeedFilter,
    after: FeedOffset,
    options: FeedOptions,
) -> FeedStream<'_>
where
    S: JournalFeed + ?Sized,
{
    struct State {
        filter: FeedFilter,
        after: FeedOffset,
        caught_up: bool,
        buffer: VecDeque<FeedItem>,
        done: bool,
    }
    let page = options.page.max(1);
    let start = State {
        filter,
        after,
        caught_up: false,
        buffer: VecDeque::new(),
        done: false,
    };
    stream::unfold(start, move |mut state| {
        let options = options.clone();
        async move {
            if state.done {
                return None;
            }
            let mut backoff = Backoff::new(options.retry_for);
            loop {
                if let Some(item) = state.buffer.pop_front() {
                    state.after = item.offset.clone();
                    return Some((Ok(item), state));
                }
                let read = async {
                    if state.caught_up {
                        storage
                            .wait_for_feed(&state.filter, &state.after, options.poll_interval)
                            .await?;
                    }
                    storage.read_feed(&state.filter, &state.after, page).await
                };
                match read.await {
                    Ok(items) => {
                        backoff.reset();
                        state.caught_up = items.len() < page;
                        state.buffer = items.into();
                    }
                    Err(e) => {
                        if let Err(e) = backoff.retry(e).await {
                            state.done = true;
                            return Some((Err(e), state));
                        }
                    }
                }
            }
        }
    })
    .boxed()
}

/// The number of an offset written as `prefix` then decimal digits (as
/// the memory and SQLite backends write theirs), 0 for the start, or
/// [`JournalError::InvalidOffset`].
pub fn numbered_offset(backend: &str, offset: &FeedOffset, prefix: char) -> JournalResult<u64> {
    if offset.is_start() {
        return Ok(0);
    }
    offset
        .as_str()
        .strip_prefix(prefix)
        .filter(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|digits| digits.parse().ok())
        .ok_or_else(|| invalid_offset(backend, offset, &format!("expected {prefix}<position>")))
}

/// The error for an offset a backend did not make.
pub fn invalid_offset(backend: &str, offset: &FeedOffset, why: &str) -> JournalError {
    JournalError::InvalidOffset(format!(
        "{backend}: feed offset {:?} is not one this backend gave: {why}",
        offset.as_str()
    ))
}

/// What `FeedOffset` was before deferred offsets: plain data, safe to
/// send, share and hold across an unwind.
const _: () = {
    const fn plain<T: Send + Sync + std::panic::UnwindSafe + std::panic::RefUnwindSafe + Unpin>() {}
    plain::<FeedOffset>();
    plain::<FeedItem>();
};

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Offset `n` is `"o<n>"`; counts the texts made.
    struct Counted(AtomicUsize, Vec<std::sync::OnceLock<String>>);

    impl OffsetTexts for Counted {
        fn text(&self, index: usize) -> &str {
            self.1[index].get_or_init(|| {
                self.0.fetch_add(1, Ordering::Relaxed);
                format!("o{index}")
            })
        }
    }

    #[test]
    fn a_deferred_offset_is_its_text_made_once_when_asked() {
        let texts = Arc::new(Counted(
            AtomicUsize::new(0),
            (0..1_000).map(|_| std::sync::OnceLock::new()).collect(),
        ));
        let shared: Arc<dyn OffsetTexts> = texts.clone();
        let items: Vec<FeedOffset> = (0..1_000)
            .map(|n| FeedOffset::deferred(Arc::clone(&shared), n))
            .collect();
        assert_eq!(texts.0.load(Ordering::Relaxed), 0, "nothing made yet");
        let last = &items[999];
        assert_eq!(last.as_str(), "o999");
        assert_eq!(last.as_str(), "o999");
        assert_eq!(texts.0.load(Ordering::Relaxed), 1, "made once");
        // Compared, hashed, printed and cloned as its text.
        assert_eq!(*last, FeedOffset::new("o999"));
        assert!(items[1] > FeedOffset::new("o0"));
        let set: HashSet<FeedOffset> = [FeedOffset::new("o5"), items[5].clone()].into();
        assert_eq!(set.len(), 1);
        assert_eq!(
            format!("{last:?}"),
            format!("{:?}", FeedOffset::new("o999"))
        );
        assert_eq!(last.to_string(), "o999");
        assert!(!last.is_start());
        assert!(FeedOffset::start().is_start());
        assert_eq!(FeedOffset::start(), FeedOffset::new(""));
    }
}
