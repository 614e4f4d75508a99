//! The feed over all actors and per tag (contract rule 28).
//!
//! Each entry row holds `feed_pos`: the id of the transaction that wrote
//! it, raised to at least the actor's previous entry's. A page returns
//! rows in `(feed_pos, actor_id, sequence)` order, and only those whose
//! `feed_pos` is below the `xmin` of the statement's snapshot: every
//! transaction with a smaller id has ended, so no row can still commit
//! below an offset once it was handed out. See the crate README.

use std::fmt::Write as _;
use std::time::Duration;

use async_trait::async_trait;
use journal_core::feed::{invalid_offset, FeedFilter, FeedItem, FeedOffset, JournalFeed};
use journal_core::JournalResult;
use tokio_postgres::Row;

use crate::error::pg_error;
use crate::{decode_entry, PostgresJournalStorage, BACKEND};

/// The prefix of this backend's offsets (its version of their format).
const PREFIX: &str = "pg1.";

/// The feed's statements, with the schema name in them.
pub(crate) struct FeedSql {
    all: String,
    tag: String,
    /// Whether committed rows lie at or beyond the horizon (held back).
    all_held: String,
    tag_held: String,
}

/// Below this no transaction is still running: every row with a smaller
/// `feed_pos` has committed (or never will).
const HORIZON: &str = "pg_snapshot_xmin(pg_current_snapshot())::text::bigint";

impl FeedSql {
    pub(crate) fn new(s: &str) -> Self {
        FeedSql {
            all: format!(
                "SELECT e.feed_pos, e.actor_id, e.sequence, e.entry FROM {s}.entries e
                 WHERE (e.feed_pos, e.actor_id, e.sequence) > ($1, $2, $3)
                   AND e.feed_pos < {HORIZON}
                 ORDER BY e.feed_pos, e.actor_id, e.sequence LIMIT $4"
            ),
            tag: format!(
                "SELECT t.feed_pos, t.actor_id, t.sequence, e.entry FROM {s}.entry_tags t
                 JOIN {s}.entries e ON e.actor_id = t.actor_id AND e.sequence = t.sequence
                                   AND e.feed_pos = t.feed_pos
                 WHERE t.tag = $5 AND (t.feed_pos, t.actor_id, t.sequence) > ($1, $2, $3)
                   AND t.feed_pos < {HORIZON}
                 ORDER BY t.feed_pos, t.actor_id, t.sequence LIMIT $4"
            ),
            all_held: format!(
                "SELECT EXISTS (SELECT 1 FROM {s}.entries WHERE feed_pos >= {HORIZON})"
            ),
            tag_held: format!(
                "SELECT EXISTS (SELECT 1 FROM {s}.entry_tags WHERE tag = $1 AND feed_pos >= {HORIZON})"
            ),
        }
    }

    /// The statement of a filter, for `EXPLAIN` in tests.
    pub(crate) fn statement(&self, filter: &FeedFilter) -> &str {
        match filter {
            FeedFilter::All => &self.all,
            FeedFilter::Tag(_) => &self.tag,
        }
    }
}

/// Tags of entries as the append functions take them: `items[k]` is the
/// 1-based index of the entry `tags[k]` belongs to.
pub(crate) fn tag_arrays(
    per_entry: impl IntoIterator<Item = Vec<String>>,
) -> (Vec<i32>, Vec<Vec<u8>>) {
    let mut items = Vec::new();
    let mut tags = Vec::new();
    for (i, entry_tags) in per_entry.into_iter().enumerate() {
        let Ok(index) = i32::try_from(i + 1) else {
            break;
        };
        for tag in entry_tags {
            items.push(index);
            tags.push(tag.into_bytes());
        }
    }
    (items, tags)
}

/// A position in feed order: `(feed_pos, actor_id, sequence)`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Position {
    feed_pos: i64,
    actor_id: Vec<u8>,
    sequence: i64,
}

impl Position {
    /// Before every row (positions are never negative).
    fn start() -> Self {
        Position {
            feed_pos: -1,
            actor_id: Vec::new(),
            sequence: 0,
        }
    }

    /// `pg1.<feed_pos>.<sequence>.<actor id in lower-case hex>`.
    fn encode(&self) -> FeedOffset {
        let mut text = format!("{PREFIX}{}.{}.", self.feed_pos, self.sequence);
        for byte in &self.actor_id {
            let _ = write!(text, "{byte:02x}");
        }
        FeedOffset::new(text)
    }

    /// The position of an offset this backend gave, or `InvalidOffset`.
    fn decode(offset: &FeedOffset) -> JournalResult<Self> {
        if offset.is_start() {
            return Ok(Position::start());
        }
        let bad = |why: &str| invalid_offset(BACKEND, offset, why);
        let rest = offset
            .as_str()
            .strip_prefix(PREFIX)
            .ok_or_else(|| bad("it does not start with \"pg1.\""))?;
        let mut parts = rest.splitn(3, '.');
        let (Some(pos), Some(sequence), Some(actor)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("it does not have three parts"));
        };
        let number = |text: &str| -> Option<i64> {
            if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            text.parse::<i64>().ok()
        };
        let feed_pos = number(pos).ok_or_else(|| bad("the position is not a number"))?;
        let sequence = number(sequence).ok_or_else(|| bad("the sequence is not a number"))?;
        if actor.len() % 2 != 0 {
            return Err(bad("the actor id is not hex"));
        }
        let actor_id = (0..actor.len())
            .step_by(2)
            .map(|i| {
                actor
                    .get(i..i + 2)
                    .filter(|h| h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
            })
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(|| bad("the actor id is not hex"))?;
        Ok(Position {
            feed_pos,
            actor_id,
            sequence,
        })
    }
}

fn item(row: &Row) -> JournalResult<FeedItem> {
    let feed_pos: i64 = row.try_get(0).map_err(pg_error)?;
    let actor_id: Vec<u8> = row.try_get(1).map_err(pg_error)?;
    let sequence: i64 = row.try_get(2).map_err(pg_error)?;
    let bytes: &[u8] = row.try_get(3).map_err(pg_error)?;
    let actor = String::from_utf8(actor_id.clone()).map_err(|e| {
        journal_core::JournalError::storage(BACKEND, format!("an actor id is not UTF-8: {e}"))
    })?;
    let entry = decode_entry(&actor, sequence, bytes)?;
    let offset = Position {
        feed_pos,
        actor_id,
        sequence,
    }
    .encode();
    Ok(FeedItem { offset, entry })
}

impl PostgresJournalStorage {
    /// The statement a feed page runs (for `EXPLAIN`): `$1..$3` the
    /// position after which to read (`feed_pos` bigint, `actor_id` bytea,
    /// `sequence` bigint), `$4` the limit, `$5` the tag (bytea) for a tag
    /// feed.
    #[must_use]
    pub fn feed_statement(&self, filter: &FeedFilter) -> &str {
        self.sql.feed.statement(filter)
    }
}

#[async_trait]
impl JournalFeed for PostgresJournalStorage {
    /// One keyset query: the rows after the offset in
    /// `(feed_pos, actor_id, sequence)` order whose `feed_pos` is below the
    /// snapshot's `xmin` (a tag's through the `entry_tags` index).
    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn read_feed(
        &self,
        filter: &FeedFilter,
        after: &FeedOffset,
        max: usize,
    ) -> JournalResult<Vec<FeedItem>> {
        let at = Position::decode(after)?;
        if max == 0 {
            return Ok(Vec::new());
        }
        let limit = i64::try_from(max).unwrap_or(i64::MAX);
        let deadline = tokio::time::Instant::now().checked_add(self.feed_settle);
        let mut pause = SETTLE_PAUSE;
        loop {
            let rows = self.feed_page(filter, &at, limit).await?;
            // A short page may be short because transactions still running
            // (of any schema: the horizon is the server's) hold committed
            // entries back; give them a moment to end.
            let settled = deadline.is_none_or(|d| tokio::time::Instant::now() >= d);
            if rows.len() >= max || settled {
                return rows.iter().map(item).collect();
            }
            if !self.feed_held_back(filter).await? {
                // Nothing committed is held back now. The page above may
                // still have been short because of a transaction that
                // ended since (its snapshot is older than this check's):
                // read it again, which sees everything committed before
                // the check, acknowledged appends among them.
                let rows = self.feed_page(filter, &at, limit).await?;
                return rows.iter().map(item).collect();
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_SETTLE_PAUSE);
        }
    }

    /// Returns once the feed may have entries after `after`, or after
    /// `timeout`: registers a waiter of every announcement, then reads; an
    /// append committed after that read is announced. Entries that become
    /// readable without an announcement (a transaction of someone else's
    /// that held the horizon back ends) are found when `timeout` is over.
    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn wait_for_feed(
        &self,
        filter: &FeedFilter,
        after: &FeedOffset,
        timeout: Duration,
    ) -> JournalResult<()> {
        let deadline = tokio::time::Instant::now().checked_add(timeout);
        let mut waiter = self.watch.register_any();
        let at = Position::decode(after)?;
        if !self.feed_page(filter, &at, 1).await?.is_empty() {
            return Ok(());
        }
        match deadline {
            Some(deadline) => {
                let _ = tokio::time::timeout_at(deadline, waiter.woken()).await;
            }
            None => waiter.woken().await,
        }
        Ok(())
    }
}

/// First pause of a feed read waiting for the horizon; it doubles up to
/// [`MAX_SETTLE_PAUSE`].
const SETTLE_PAUSE: Duration = Duration::from_millis(1);
const MAX_SETTLE_PAUSE: Duration = Duration::from_millis(50);

impl PostgresJournalStorage {
    /// One page query: the readable rows after `at`.
    async fn feed_page(
        &self,
        filter: &FeedFilter,
        at: &Position,
        limit: i64,
    ) -> JournalResult<Vec<Row>> {
        match filter {
            FeedFilter::All => {
                self.query(
                    &self.sql.feed.all,
                    &[&at.feed_pos, &at.actor_id, &at.sequence, &limit],
                )
                .await
            }
            FeedFilter::Tag(tag) => {
                self.query(
                    &self.sql.feed.tag,
                    &[
                        &at.feed_pos,
                        &at.actor_id,
                        &at.sequence,
                        &limit,
                        &tag.as_bytes(),
                    ],
                )
                .await
            }
        }
    }

    /// Whether committed rows of the feed lie at or beyond the horizon.
    async fn feed_held_back(&self, filter: &FeedFilter) -> JournalResult<bool> {
        let rows = match filter {
            FeedFilter::All => self.query(&self.sql.feed.all_held, &[]).await?,
            FeedFilter::Tag(tag) => {
                self.query(&self.sql.feed.tag_held, &[&tag.as_bytes()])
                    .await?
            }
        };
        match rows.first() {
            Some(row) => row.try_get(0).map_err(pg_error),
            None => Ok(false),
        }
    }
}

/// Stores `offset` for `projection` through `client` (in its transaction,
/// if one is open).
async fn store_offset(
    client: &impl tokio_postgres::GenericClient,
    schema: &str,
    projection: &str,
    offset: &FeedOffset,
) -> JournalResult<()> {
    let sql = format!(
        "INSERT INTO {schema}.projection_offsets (name, position) VALUES ($1, $2)
         ON CONFLICT (name) DO UPDATE SET position = excluded.position"
    );
    client
        .execute(&sql, &[&projection.as_bytes(), &offset.as_str()])
        .await
        .map_err(pg_error)?;
    Ok(())
}

/// Projections' offsets in `projection_offsets`.
#[async_trait]
impl journal_core::ProjectionStore for PostgresJournalStorage {
    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn load_offset(&self, projection: &str) -> JournalResult<Option<FeedOffset>> {
        journal_core::projection::validate_projection_name(projection)?;
        let sql = format!(
            "SELECT position FROM {}.projection_offsets WHERE name = $1",
            self.schema()
        );
        let rows = self.query(&sql, &[&projection.as_bytes()]).await?;
        Ok(rows
            .first()
            .map(|row| row.try_get::<_, String>(0))
            .transpose()
            .map_err(pg_error)?
            .map(FeedOffset::new))
    }

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn save_offset(&self, projection: &str, offset: &FeedOffset) -> JournalResult<()> {
        journal_core::projection::validate_projection_name(projection)?;
        Position::decode(offset)?;
        let client = self.client().await?;
        store_offset(&**client, self.schema(), projection, offset).await
    }
}

/// What an exactly-once projection's apply step gets: the transaction its
/// writes go in (the offset is stored in it too) and the batch.
pub type ApplyFuture<'t> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<(), journal_core::BoxError>> + Send + 't>,
>;

/// Helps the compiler see a closure as an exactly-once projection's apply
/// step (a closure whose future borrows the transaction needs the hint):
///
/// ```
/// let apply = journal_postgres::apply_step(|tx, batch| {
///     Box::pin(async move {
///         for item in batch {
///             tx.execute("SELECT $1::bigint", &[&(item.entry.sequence as i64)]).await?;
///         }
///         Ok(())
///     })
/// });
/// # let _ = apply;
/// ```
pub fn apply_step<A>(apply: A) -> A
where
    A: for<'t> Fn(&'t tokio_postgres::Transaction<'t>, &'t [FeedItem]) -> ApplyFuture<'t>
        + Send
        + Sync,
{
    apply
}

impl PostgresJournalStorage {
    /// Runs `projection` exactly-once into this same database: each batch
    /// is applied by `apply` in a transaction, and the projection's offset
    /// stored in that same transaction before it commits, so a crash leaves
    /// both or neither. An error from `apply` rolls its batch back and ends
    /// the run with that error (as
    /// [`JournalError::Storage`](journal_core::JournalError::Storage)).
    /// Runs until an error; drop the future to stop it.
    pub async fn run_projection_in_transaction<A>(
        &self,
        projection: &journal_core::Projection,
        apply: A,
    ) -> JournalResult<()>
    where
        A: for<'t> Fn(&'t tokio_postgres::Transaction<'t>, &'t [FeedItem]) -> ApplyFuture<'t>
            + Send
            + Sync,
    {
        let name = projection.name.as_str();
        let apply = &apply;
        projection
            .run_with(self, |batch, last| async move {
                let mut client = self.client().await?;
                let transaction = client.transaction().await.map_err(pg_error)?;
                apply(&transaction, &batch)
                    .await
                    .map_err(|e| journal_core::JournalError::storage("projection", e))?;
                store_offset(&*transaction, self.schema(), name, &last).await?;
                transaction.commit().await.map_err(pg_error)
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_round_trip() {
        for position in [
            Position {
                feed_pos: 0,
                actor_id: b"a.b\0\xff".to_vec(),
                sequence: 7,
            },
            Position {
                feed_pos: i64::MAX,
                actor_id: Vec::new(),
                sequence: i64::MAX,
            },
        ] {
            let offset = position.encode();
            assert_eq!(Position::decode(&offset).ok(), Some(position));
        }
        assert_eq!(
            Position::decode(&FeedOffset::start()).ok(),
            Some(Position::start())
        );
    }

    #[test]
    fn foreign_offsets_are_refused() {
        for bad in [
            "x",
            "pg1.",
            "pg1.1.2",
            "pg1.-1.2.61",
            "pg1.+1.2.61",
            "pg1.1.2.6",
            "pg1.1.2.6G",
            "pg1.1.2.6A",
            "pg1.1.2.é1",
            "pg1.99999999999999999999.2.61",
            "pg1.1.99999999999999999999.61",
            "\u{0}",
        ] {
            assert!(
                matches!(
                    Position::decode(&FeedOffset::new(bad)),
                    Err(journal_core::JournalError::InvalidOffset(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn tag_arrays_index_entries_from_one() {
        let (items, tags) = tag_arrays([vec!["a".into(), "b".into()], vec![], vec!["c".into()]]);
        assert_eq!(items, [1, 1, 3]);
        assert_eq!(tags, [b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
    }
}
