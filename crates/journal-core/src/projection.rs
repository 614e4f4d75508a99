//! Projections (contract rule 29): a feed applied to a handler, its offset
//! stored durably in the journal's own store, resumed from there after a
//! crash.
//!
//! [`Projection::run`] is at-least-once: a batch is handed to the handler,
//! then its offset is stored; a crash in between hands the batch over again
//! on restart, so the handler must tolerate seeing entries twice (an upsert
//! keyed by actor and sequence does). Where the handler writes into the
//! journal's own SQL store, the backend crate offers a run that applies the
//! batch and stores the offset in one transaction (exactly-once), built on
//! [`Projection::run_with`].

use std::future::Future;

use async_trait::async_trait;
use futures::{FutureExt, StreamExt};

use crate::error::{BoxError, JournalError, JournalResult};
use crate::feed::{follow_feed, FeedFilter, FeedItem, FeedOffset, FeedOptions, JournalFeed};

/// The longest projection name, in bytes.
pub const MAX_PROJECTION_NAME_BYTES: usize = 255;

/// Where projections keep their offsets: a capability of its own beside
/// [`JournalFeed`], in the journal's own store.
#[async_trait]
pub trait ProjectionStore: JournalFeed {
    /// The offset `projection` stored last, if any.
    async fn load_offset(&self, projection: &str) -> JournalResult<Option<FeedOffset>>;

    /// Stores `offset` for `projection`, durably (as an append is).
    async fn save_offset(&self, projection: &str, offset: &FeedOffset) -> JournalResult<()>;
}

/// Checks a projection's name: 1 to [`MAX_PROJECTION_NAME_BYTES`] bytes.
pub fn validate_projection_name(name: &str) -> JournalResult<()> {
    if name.is_empty() || name.len() > MAX_PROJECTION_NAME_BYTES {
        return Err(JournalError::InvalidEntry(format!(
            "a projection name is 1 to {MAX_PROJECTION_NAME_BYTES} bytes, got {}",
            name.len()
        )));
    }
    Ok(())
}

/// A projection: a name (under which its offset is stored), the feed it
/// follows, and how many entries it hands over at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Projection {
    /// Its name.
    pub name: String,
    /// Which entries it follows.
    pub filter: FeedFilter,
    /// Entries handed over at once, at most: as many as are ready, up to
    /// this (the feed's page bounds what is ready at once: raise
    /// `feed.page` with it). Default 256.
    pub batch: usize,
    /// How the feed is read and waited on.
    pub feed: FeedOptions,
}

impl Projection {
    /// A projection of every actor's entries.
    pub fn new(name: impl Into<String>) -> Self {
        Projection {
            name: name.into(),
            filter: FeedFilter::All,
            batch: 256,
            feed: FeedOptions::default(),
        }
    }

    /// Only the entries tagged `tag`.
    #[must_use]
    pub fn tagged(mut self, tag: impl Into<String>) -> Self {
        self.filter = FeedFilter::Tag(tag.into());
        self
    }

    /// Runs the projection, at-least-once: from the stored offset (the
    /// start when none), each batch goes to `handler`, then its last offset
    /// is stored. Runs until an error (the handler's, as
    /// [`JournalError::Storage`] from "projection", or the store's); drop
    /// the future to stop it.
    pub async fn run<S, H, F>(&self, storage: &S, mut handler: H) -> JournalResult<()>
    where
        S: ProjectionStore + ?Sized,
        H: FnMut(Vec<FeedItem>) -> F + Send,
        F: Future<Output = Result<(), BoxError>> + Send,
    {
        let name = self.name.as_str();
        self.run_with(storage, |batch, last| {
            let applied = handler(batch);
            async move {
                applied
                    .await
                    .map_err(|e| JournalError::storage("projection", e))?;
                storage.save_offset(name, &last).await
            }
        })
        .await
    }

    /// Runs the projection with `commit`, which gets each batch and its
    /// last offset and must apply the batch and store the offset (both in
    /// one transaction, for exactly-once). Starts from the stored offset;
    /// runs until an error.
    pub async fn run_with<S, C, F>(&self, storage: &S, mut commit: C) -> JournalResult<()>
    where
        S: ProjectionStore + ?Sized,
        C: FnMut(Vec<FeedItem>, FeedOffset) -> F + Send,
        F: Future<Output = JournalResult<()>> + Send,
    {
        validate_projection_name(&self.name)?;
        let after = storage
            .load_offset(&self.name)
            .await?
            .unwrap_or_else(FeedOffset::start);
        tracing::info!(projection = %self.name, offset = %after, "projection starting");
        let batch_size = self.batch.max(1);
        let mut feed = follow_feed(storage, self.filter.clone(), after, self.feed.clone());
        // The feed's next item, read while the previous batch committed.
        let mut ahead: Option<Option<JournalResult<FeedItem>>> = None;
        loop {
            let next = match ahead.take() {
                Some(next) => next,
                None => feed.next().await,
            };
            let Some(first) = next else {
                return Ok(());
            };
            let mut batch = vec![first?];
            // As many more as are ready now.
            while batch.len() < batch_size {
                match feed.next().now_or_never() {
                    Some(Some(item)) => batch.push(item?),
                    _ => break,
                }
            }
            let last = batch
                .last()
                .map(|item| item.offset.clone())
                .unwrap_or_default();
            // The next page is read while this batch commits (an offset is
            // stored only once its batch is committed, in order; what was
            // read ahead of a failed commit is read again on the next run).
            let committing = commit(batch, last);
            futures::pin_mut!(committing);
            match futures::future::select(committing.as_mut(), feed.next()).await {
                futures::future::Either::Left((committed, _)) => committed?,
                futures::future::Either::Right((next, _)) => {
                    ahead = Some(next);
                    committing.await?;
                }
            }
        }
    }
}
