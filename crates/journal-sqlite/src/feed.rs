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
use journal_core::projection::{validate_projection_name, Projection, ProjectionStore};
use journal_core::JournalResult;
use rusqlite::OptionalExtension;

use crate::{ops, SqliteJournalStorage, BACKEND};

pub(crate) use journal_core::subscribe::FEED_WAIT_KEY as WAIT_KEY;

/// The position an offset names (0 for the start).
fn position(offset: &FeedOffset) -> JournalResult<i64> {
    let number = journal_core::feed::numbered_offset(BACKEND, offset, 's')?;
    i64::try_from(number).map_err(|_| invalid_offset(BACKEND, offset, "beyond any position"))
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

/// Stores `offset` for `projection` on `conn` (in the caller's
/// transaction).
pub(crate) fn store_offset(
    conn: &rusqlite::Connection,
    projection: &str,
    offset: &FeedOffset,
) -> JournalResult<()> {
    conn.prepare_cached(
        "INSERT INTO projection_offsets (name, position) VALUES (?1, ?2)
         ON CONFLICT (name) DO UPDATE SET position = excluded.position",
    )
    .and_then(|mut s| s.execute(rusqlite::params![projection, offset.as_str()]))
    .map_err(|e| journal_core::JournalError::storage(BACKEND, e))?;
    Ok(())
}

/// Projections' offsets in `projection_offsets`, written by the writer.
#[async_trait]
impl ProjectionStore for SqliteJournalStorage {
    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn load_offset(&self, projection: &str) -> JournalResult<Option<FeedOffset>> {
        validate_projection_name(projection)?;
        let name = projection.to_owned();
        self.read(move |conn| {
            conn.prepare_cached("SELECT position FROM projection_offsets WHERE name = ?1")
                .and_then(|mut s| s.query_row([name], |r| r.get::<_, String>(0)).optional())
                .map(|found| found.map(FeedOffset::new))
                .map_err(|e| journal_core::JournalError::storage(BACKEND, e))
        })
        .await
    }

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn save_offset(&self, projection: &str, offset: &FeedOffset) -> JournalResult<()> {
        validate_projection_name(projection)?;
        position(offset)?;
        let (name, offset) = (projection.to_owned(), offset.clone());
        self.write(move |conn| store_offset(conn, &name, &offset))
            .await
    }
}

impl SqliteJournalStorage {
    /// Runs `projection` exactly-once into this same file: each batch is
    /// applied by `apply` (given the writer's connection, inside its
    /// transaction) and the projection's offset stored in the same
    /// transaction, so a crash leaves both or neither. `apply` runs on the
    /// writer thread, between commits of appends: keep it short (it holds
    /// up every writer meanwhile). An error from `apply` rolls its batch
    /// back and ends the run with that error (as
    /// [`JournalError::Storage`](journal_core::JournalError::Storage)).
    /// Runs until an error; drop the future to stop it.
    pub async fn run_projection_in_transaction<A>(
        &self,
        projection: &Projection,
        apply: A,
    ) -> JournalResult<()>
    where
        A: Fn(&rusqlite::Connection, &[FeedItem]) -> Result<(), journal_core::BoxError>
            + Send
            + Sync
            + 'static,
    {
        let apply = std::sync::Arc::new(apply);
        let name = projection.name.clone();
        projection
            .run_with(self, |batch, last| {
                let (apply, name) = (std::sync::Arc::clone(&apply), name.clone());
                self.write(move |conn| {
                    apply(conn, &batch)
                        .map_err(|e| journal_core::JournalError::storage("projection", e))?;
                    store_offset(conn, &name, &last)
                })
            })
            .await
    }
}
