//! The feed over all actors and per tag (contract rule 28) on SQLite.
//!
//! An entry's feed position is its row's `position` in `entry_log`. The
//! one writer commits transactions one after another and hands positions
//! out in that order (AUTOINCREMENT: never twice, also after the newest
//! rows were deleted), and a reader sees a transaction's rows all at once:
//! no row can appear behind a position a reader already passed. Tagged
//! entries are found through `entry_tags` (tag, position), never by
//! scanning. Offsets are `s<position>`.

use std::time::Duration;

use async_trait::async_trait;
use journal_core::feed::{invalid_offset, FeedFilter, FeedItem, FeedOffset, JournalFeed};
use journal_core::JournalResult;

use crate::{ops, SqliteJournalStorage, BACKEND};

/// The key the feed's waiters wait under (no actor has an empty id).
pub(crate) const WAIT_KEY: &str = "";

/// The position an offset names (0 for the start).
fn position(offset: &FeedOffset) -> JournalResult<i64> {
    if offset.is_start() {
        return Ok(0);
    }
    offset
        .as_str()
        .strip_prefix('s')
        .filter(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|digits| digits.parse().ok())
        .ok_or_else(|| invalid_offset(BACKEND, offset, "expected s<position>"))
}

#[async_trait]
impl JournalFeed for SqliteJournalStorage {
    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn read_feed(
        &self,
        filter: &FeedFilter,
        after: &FeedOffset,
        max: usize,
    ) -> JournalResult<Vec<FeedItem>> {
        let after = position(after)?;
        if max == 0 {
            return Ok(Vec::new());
        }
        let tag = match filter {
            FeedFilter::All => None,
            FeedFilter::Tag(tag) => Some(tag.clone()),
        };
        let rows = self
            .read(move |conn| ops::feed_page(conn, tag.as_deref(), after, max))
            .await?;
        rows.into_iter()
            .map(|(position, actor_id, sequence, bytes)| {
                Ok(FeedItem {
                    offset: FeedOffset::new(format!("s{position}")),
                    entry: ops::decode_feed_entry(&actor_id, sequence, &bytes)?,
                })
            })
            .collect()
    }

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn wait_for_feed(
        &self,
        filter: &FeedFilter,
        after: &FeedOffset,
        timeout: Duration,
    ) -> JournalResult<()> {
        position(after)?;
        let ready = async { Ok(!self.read_feed(filter, after, 1).await?.is_empty()) };
        let waiting = self.inner.watchers.wait(WAIT_KEY, timeout, ready);
        self.watch_files();
        waiting.await
    }
}
