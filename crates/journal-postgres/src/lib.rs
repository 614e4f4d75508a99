#![doc = include_str!("../README.md")]

mod error;
mod feed;
mod group;
mod listen;
pub mod migrate;
mod options;
mod timers;
#[cfg(feature = "tls-rustls")]
mod tls;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use journal_core::validate::{self, Limits};
use journal_core::{
    redact_url, ActorPage, ActorSummary, Checkpoint, EntryStream, JournalEntry, JournalError,
    JournalResult, JournalStats, JournalStorage, JournalWatch,
};
use prost::Message;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

use error::{pg_error, pool_error};
pub use feed::{apply_step, ApplyFuture};
pub use migrate::SCHEMA_VERSION;
pub use options::PostgresOptions;
/// The rustls version the `tls-rustls` feature uses, to build a
/// `ClientConfig` for [`PostgresJournalStorage::open_with_tls`].
#[cfg(feature = "tls-rustls")]
pub use rustls;

const BACKEND: &str = "postgres";

/// Entries a streaming replay fetches per query. Replay streams page by
/// page (keyset on the sequence), each page its own short query: one
/// long-running query would be cancelled by `statement_timeout` when the
/// consumer is slow, and would hold a pooled connection throughout.
pub const REPLAY_PAGE: usize = 5_000;

/// A journal in PostgreSQL tables, shared by any number of processes.
///
/// Cheap to clone: clones share the connection pool.
#[derive(Clone)]
pub struct PostgresJournalStorage {
    pool: Pool,
    /// The group-commit dispatcher, when enabled.
    group: Option<tokio::sync::mpsc::UnboundedSender<group::Queued>>,
    sql: std::sync::Arc<Sql>,
    limits: Limits,
    /// [`PostgresOptions::feed_settle`].
    feed_settle: std::time::Duration,
    /// Waiters of live subscriptions, and the listener that wakes them.
    watch: std::sync::Arc<listen::Watch>,
    /// Announces committed appends to listeners.
    notifier: listen::Notifier,
}

impl std::fmt::Debug for PostgresJournalStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let status = self.pool.status();
        f.debug_struct("PostgresJournalStorage")
            .field("schema", &self.sql.schema)
            .field("pool_size", &status.max_size)
            .field("pool_available", &status.available)
            .finish_non_exhaustive()
    }
}

/// The statements, with the schema name in them.
struct Sql {
    schema: String,
    /// The channel appends announce themselves on.
    channel: String,
    append: String,
    append_many: String,
    append_group: String,
    append_items: String,
    replay_range: String,
    highest: String,
    truncate: String,
    delete_actor: String,
    save_checkpoint: String,
    latest_checkpoint: String,
    get_checkpoint: String,
    list_checkpoints: String,
    delete_checkpoints_before: String,
    list_actors: String,
    actor_summary: String,
    stats: String,
    timers: timers::TimerSql,
    feed: feed::FeedSql,
}

impl Sql {
    fn new(s: &str) -> Self {
        // Each append statement announces itself once, whatever the number
        // of rows: `pg_notify($5, $6)` in a materialized CTE runs once, and
        // the server delivers it on commit only.
        Sql {
            schema: s.to_owned(),
            channel: listen::channel(s),
            append: format!(
                "SELECT r.o_outcome, r.o_highest FROM {s}.append($1, $2, $3, $4, $5, $6) r"
            ),
            append_many: format!(
                "SELECT r.o_index, r.o_outcome, r.o_highest
                 FROM {s}.append_many($1, $2, $3, $4, $5, $6) r"
            ),
            append_group: group::append_group_sql(s),
            append_items: group::append_items_sql(s),
            // A page is the `$4` sequences from the first stored at or
            // after `$2` (stored sequences are contiguous: appends need
            // highest + 1, truncation takes a prefix), so the scan reads
            // that page's rows and nothing else whatever plan the table's
            // statistics (or their absence, on a schema just filled) lead
            // to; without ORDER BY no plan sorts (the rows are sorted here).
            // With `ORDER BY .. LIMIT` and no statistics, PostgreSQL took a
            // bitmap scan of every row after `$2` and sorted them all
            // (36 ms instead of 1.7 ms a page of 5,000 from the middle of
            // 100,000, spilling to disk). The bounds cannot overflow:
            // `lo - 1 + least($4, $3 - lo + 1) <= $3`, added in that order.
            replay_range: format!(
                "SELECT e.sequence, e.entry
                 FROM (SELECT min(sequence) AS lo FROM {s}.entries
                       WHERE actor_id = $1 AND sequence >= $2) b
                 JOIN {s}.entries e ON e.actor_id = $1
                  AND e.sequence BETWEEN b.lo AND b.lo - 1 + LEAST($4, $3 - b.lo + 1)"
            ),
            highest: format!("SELECT highest FROM {s}.actors WHERE actor_id = $1"),
            truncate: format!(
                "WITH t AS (DELETE FROM {s}.entry_tags WHERE actor_id = $1 AND sequence <= $2)
                 DELETE FROM {s}.entries WHERE actor_id = $1 AND sequence <= $2"
            ),
            delete_actor: format!("SELECT {s}.delete_actor($1)"),
            save_checkpoint: format!(
                "INSERT INTO {s}.checkpoints (actor_id, sequence, checkpoint)
                 SELECT $1, $2, $3 WHERE EXISTS (
                     SELECT 1 FROM {s}.actors WHERE actor_id = $1 AND highest >= $2 FOR SHARE)
                 ON CONFLICT (actor_id, sequence) DO UPDATE SET checkpoint = excluded.checkpoint
                 RETURNING 1"
            ),
            latest_checkpoint: format!(
                "SELECT sequence, checkpoint FROM {s}.checkpoints WHERE actor_id = $1 ORDER BY sequence DESC LIMIT 1"
            ),
            get_checkpoint: format!(
                "SELECT sequence, checkpoint FROM {s}.checkpoints WHERE actor_id = $1 AND sequence = $2"
            ),
            list_checkpoints: format!("SELECT sequence FROM {s}.checkpoints WHERE actor_id = $1 ORDER BY sequence"),
            delete_checkpoints_before: format!("DELETE FROM {s}.checkpoints WHERE actor_id = $1 AND sequence < $2"),
            list_actors: format!(
                "SELECT actor_id FROM {s}.actors WHERE $1::bytea IS NULL OR actor_id > $1 ORDER BY actor_id LIMIT $2"
            ),
            actor_summary: format!(
                "SELECT (SELECT highest FROM {s}.actors WHERE actor_id = $1),
                        (SELECT count(*) FROM {s}.entries WHERE actor_id = $1),
                        (SELECT count(*) FROM {s}.checkpoints WHERE actor_id = $1)"
            ),
            stats: format!(
                "SELECT (SELECT count(*) FROM {s}.actors), (SELECT count(*) FROM {s}.entries),
                        (SELECT count(*) FROM {s}.checkpoints)"
            ),
            timers: timers::TimerSql::new(s),
            feed: feed::FeedSql::new(s),
        }
    }
}

/// A sequence as Postgres stores it (`BIGINT`). Entries and checkpoints
/// are validated to at most `MAX_SEQUENCE`, so only bounds of reads,
/// truncations and lookups go beyond `i64::MAX`; they saturate (never
/// wrap), which selects the same rows: nothing is stored above the limit.
fn seq(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A sequence read from a `BIGINT` column (never negative; 0 if it were).
fn unseq(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

pub(crate) fn decode_entry(
    actor_id: &str,
    sequence: i64,
    bytes: &[u8],
) -> JournalResult<JournalEntry> {
    JournalEntry::decode_stored(actor_id, unseq(sequence), bytes)
}

fn decode_checkpoint(actor_id: &str, row: &Row) -> JournalResult<Checkpoint> {
    let sequence: i64 = row.try_get(0).map_err(pg_error)?;
    let bytes: &[u8] = row.try_get(1).map_err(pg_error)?;
    Checkpoint::decode_stored(actor_id, unseq(sequence), bytes)
}

impl PostgresJournalStorage {
    /// Connects to `url` (`postgres://user:password@host:port/db`, with
    /// `?schema=NAME` for a schema other than `journal`, as the `journal`
    /// command reads it) with the default options, running the migrations.
    pub async fn new(url: &str) -> JournalResult<Self> {
        Self::open(url, PostgresOptions::default()).await
    }

    /// Connects to `url` with `options`. With `sslmode=require` in the URL
    /// and the `tls-rustls` feature, connections use TLS verified against
    /// the Mozilla root certificates; without the feature, `sslmode=require`
    /// is refused with an error saying so. Other modes connect in plain
    /// text.
    ///
    /// The URL's `schema` parameter, when present, replaces
    /// `options.schema`; every other parameter is the driver's
    /// (`sslmode`, `options`, `connect_timeout`, ...), and one it does not
    /// know is an error. The URL's `options` (such as `-c work_mem=8MB`)
    /// are kept beside the statement timeout.
    pub async fn open(url: &str, options: PostgresOptions) -> JournalResult<Self> {
        let (url, options) = Self::take_schema(url, options);
        let url = url.as_str();
        let config = Self::config(url, &options)?;
        #[cfg(feature = "tls-rustls")]
        if config.get_ssl_mode() == tokio_postgres::config::SslMode::Require {
            return Self::open_with_tls(url, options, tls::default_client_config()?).await;
        }
        #[cfg(not(feature = "tls-rustls"))]
        if config.get_ssl_mode() == tokio_postgres::config::SslMode::Require {
            return Err(JournalError::storage(
                BACKEND,
                format!(
                    "{} asks for TLS (sslmode=require), but journal-postgres was built without its `tls-rustls` feature",
                    redact_url(url)
                ),
            ));
        }
        let listener = listen::connector(config.clone(), NoTls);
        let manager = Manager::from_config(config, NoTls, Self::manager_config());
        Self::with_manager(manager, options, listener).await
    }

    /// Connects to `url` over TLS configured by `tls` (your roots, client
    /// certificates, ...).
    #[cfg(feature = "tls-rustls")]
    pub async fn open_with_tls(
        url: &str,
        options: PostgresOptions,
        tls: rustls::ClientConfig,
    ) -> JournalResult<Self> {
        let (url, options) = Self::take_schema(url, options);
        let url = url.as_str();
        let config = Self::config(url, &options)?;
        let connector = tokio_postgres_rustls::MakeRustlsConnect::new(tls);
        let listener = listen::connector(config.clone(), connector.clone());
        let manager = Manager::from_config(config, connector, Self::manager_config());
        Self::with_manager(manager, options, listener).await
    }

    /// `url` without its `schema` parameter, and `options` with it.
    fn take_schema(url: &str, mut options: PostgresOptions) -> (String, PostgresOptions) {
        let (url, schema) = journal_core::url::take_param(url, "schema");
        if let Some(schema) = schema {
            options.schema = schema;
        }
        (url, options)
    }

    fn config(url: &str, options: &PostgresOptions) -> JournalResult<tokio_postgres::Config> {
        let mut config: tokio_postgres::Config = url.parse().map_err(|e| {
            JournalError::storage(
                BACKEND,
                format!("invalid PostgreSQL URL {}: {e}", redact_url(url)),
            )
        })?;
        config.application_name(&options.application_name);
        config.connect_timeout(options.connect_timeout);
        if let Some(timeout) = options.statement_timeout {
            let timeout = format!("-c statement_timeout={}", timeout.as_millis());
            let all = match config.get_options() {
                Some(given) if !given.trim().is_empty() => format!("{given} {timeout}"),
                _ => timeout,
            };
            config.options(all);
        }
        Ok(config)
    }

    fn manager_config() -> ManagerConfig {
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        }
    }

    async fn with_manager(
        manager: Manager,
        options: PostgresOptions,
        listener: listen::Connector,
    ) -> JournalResult<Self> {
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(options.pool_wait_timeout))
            .create_timeout(Some(options.connect_timeout))
            .build()
            .map_err(|e| JournalError::storage(BACKEND, e.to_string()))?;
        Self::build(pool, options, Some(listener)).await
    }

    /// Uses an existing pool (deadpool-postgres over tokio-postgres). Of
    /// `options`, `schema`, `run_migrations`, `max_entry_bytes`,
    /// `group_commit` and `feed_settle` apply; the pool's own settings stay as they are.
    ///
    /// A pool does not tell how it connects, so such a storage has no
    /// listener of its own: its [`JournalWatch::wait_for_entries`] waits
    /// out its timeout (subscriptions then read at their poll interval)
    /// until [`with_listener`](Self::with_listener) gives it one.
    pub async fn from_pool(pool: Pool, options: PostgresOptions) -> JournalResult<Self> {
        Self::build(pool, options, None).await
    }

    /// The same storage with a listener for live subscriptions that
    /// connects with `config` and `tls` (the settings of the pool, as a
    /// rule): one connection of its own, opened on the first
    /// [`JournalWatch::wait_for_entries`]. Clones made before keep the
    /// listener they had.
    #[must_use]
    pub fn with_listener<T>(mut self, config: tokio_postgres::Config, tls: T) -> Self
    where
        T: tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket>
            + Clone
            + Sync
            + Send
            + 'static,
        T::Stream: Sync + Send,
        T::TlsConnect: Sync + Send,
        <T::TlsConnect as tokio_postgres::tls::TlsConnect<tokio_postgres::Socket>>::Future: Send,
    {
        self.watch = std::sync::Arc::new(listen::Watch::new(
            &self.sql.channel,
            Some(listen::connector(config, tls)),
        ));
        self
    }

    async fn build(
        pool: Pool,
        options: PostgresOptions,
        listener: Option<listen::Connector>,
    ) -> JournalResult<Self> {
        if !options::valid_schema(&options.schema) {
            return Err(JournalError::storage(
                BACKEND,
                format!(
                    "invalid schema name {:?}: use lower-case letters, digits and _, at most 63 bytes",
                    options.schema
                ),
            ));
        }
        let sql = Sql::new(&options.schema);
        let notifier = listen::Notifier::spawn(pool.clone(), sql.channel.clone());
        let group = options.group_commit.then(|| {
            let slots = options
                .group_commit_in_flight
                .clamp(1, pool.status().max_size.max(1));
            let statements = group::GroupSql {
                append_many: sql.append_many.clone(),
                append_group: sql.append_group.clone(),
                append_items: sql.append_items.clone(),
                append_one: sql.append.clone(),
                notifier: notifier.clone(),
            };
            group::spawn(pool.clone(), statements, slots, 1024)
        });
        let watch = std::sync::Arc::new(listen::Watch::new(&sql.channel, listener));
        let storage = PostgresJournalStorage {
            pool,
            group,
            watch,
            notifier,
            sql: std::sync::Arc::new(sql),
            limits: Limits {
                max_entry_bytes: options.max_entry_bytes,
            },
            feed_settle: options.feed_settle,
        };
        let mut client = storage.client().await?;
        if options.run_migrations {
            migrate::migrate(&mut client, &options.schema).await?;
        } else {
            // Never write to a schema of another version (an older build
            // appending to a newer schema would skip what it does not know).
            migrate::check(&client, &options.schema).await?;
        }
        Ok(storage)
    }

    /// The schema the tables live in.
    pub fn schema(&self) -> &str {
        &self.sql.schema
    }

    /// The query a replay page runs (parameters: actor id, from, to,
    /// most rows), to examine its plan (`EXPLAIN`).
    #[doc(hidden)]
    pub fn replay_page_query(&self) -> &str {
        &self.sql.replay_range
    }

    /// The connection pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    async fn client(&self) -> JournalResult<Object> {
        self.pool.get().await.map_err(pool_error)
    }

    async fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> JournalResult<Vec<Row>> {
        let client = self.client().await?;
        let statement = client.prepare_cached(sql).await.map_err(pg_error)?;
        client.query(&statement, params).await.map_err(pg_error)
    }

    async fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> JournalResult<u64> {
        let client = self.client().await?;
        let statement = client.prepare_cached(sql).await.map_err(pg_error)?;
        client.execute(&statement, params).await.map_err(pg_error)
    }

    async fn append(&self, entries: &[JournalEntry]) -> JournalResult<()> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let sequences: Vec<i64> = entries.iter().map(|e| seq(e.sequence)).collect();
        let ids: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
        let bytes: Vec<Vec<u8>> = entries.iter().map(Message::encode_to_vec).collect();
        let actor = first.actor_id.as_bytes();
        let announce = listen::payload([first.actor_id.as_str()]);
        let (tag_items, tags) =
            feed::tag_arrays(entries.iter().map(journal_core::feed::entry_tags));
        let rows = self
            .query(
                &self.sql.append,
                &[&actor, &sequences, &ids, &bytes, &tag_items, &tags],
            )
            .await?;
        let row = rows
            .first()
            .ok_or_else(|| JournalError::storage(BACKEND, "append returned no row"))?;
        let outcome: i32 = row.try_get(0).map_err(pg_error)?;
        let highest: i64 = row.try_get(1).map_err(pg_error)?;
        match outcome {
            0 | 1 => {
                self.notifier.notify(announce);
                Ok(())
            }
            _ => Err(validate::sequence_conflict(
                &first.actor_id,
                unseq(highest),
                first.sequence,
            )),
        }
    }
}

/// Hands `queued` to the group-commit task and waits for its result.
async fn queue(
    group: &tokio::sync::mpsc::UnboundedSender<group::Queued>,
    queued: group::Queued,
    outcome: tokio::sync::oneshot::Receiver<JournalResult<()>>,
) -> JournalResult<()> {
    let stopped = || JournalError::unavailable(BACKEND, "the group-commit task has stopped");
    group.send(queued).map_err(|_| stopped())?;
    outcome.await.map_err(|_| stopped())?
}

#[async_trait]
impl JournalStorage for PostgresJournalStorage {
    fn backend_name(&self) -> &'static str {
        BACKEND
    }

    #[tracing::instrument(level = "debug", skip_all, fields(backend = BACKEND, actor_id = %entry.actor_id, sequence = entry.sequence))]
    async fn append_entry(&self, entry: &JournalEntry) -> JournalResult<u64> {
        let work = async {
            validate::validate_entry(entry, &self.limits)?;
            match &self.group {
                Some(group) => {
                    let (reply, outcome) = tokio::sync::oneshot::channel();
                    let pending = group::Pending {
                        actor_id: entry.actor_id.clone(),
                        sequence: entry.sequence,
                        id: entry.id.clone(),
                        bytes: entry.encode_to_vec(),
                        tags: journal_core::feed::entry_tags(entry),
                        reply,
                    };
                    queue(group, group::Queued::One(pending), outcome).await?;
                }
                None => self.append(std::slice::from_ref(entry)).await?,
            }
            Ok(entry.sequence)
        };
        journal_core::metrics::timed_append(BACKEND, 1, work).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(backend = BACKEND, actor_id = entries.first().map(|e| e.actor_id.as_str()), sequence = entries.first().map(|e| e.sequence), count = entries.len()))]
    async fn append_batch(&self, entries: &[JournalEntry]) -> JournalResult<()> {
        let work = async {
            validate::validate_batch(entries, &self.limits)?;
            match (&self.group, entries.first()) {
                // Committed with the concurrent appends of other actors,
                // still all or nothing (see `group`).
                (Some(group), Some(first)) => {
                    let (tag_items, tags) =
                        feed::tag_arrays(entries.iter().map(journal_core::feed::entry_tags));
                    let (reply, outcome) = tokio::sync::oneshot::channel();
                    let batch = group::PendingBatch {
                        actor_id: first.actor_id.clone(),
                        first: first.sequence,
                        sequences: entries.iter().map(|e| seq(e.sequence)).collect(),
                        ids: entries.iter().map(|e| e.id.clone()).collect(),
                        bytes: entries.iter().map(Message::encode_to_vec).collect(),
                        tag_items,
                        tags,
                        reply,
                    };
                    queue(group, group::Queued::Batch(batch), outcome).await
                }
                _ => self.append(entries).await,
            }
        };
        journal_core::metrics::timed_append(BACKEND, entries.len(), work).await
    }

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn replay_range(
        &self,
        actor_id: &str,
        from: u64,
        to: u64,
        max: usize,
    ) -> JournalResult<Vec<JournalEntry>> {
        let work = async {
            let mut entries: Vec<JournalEntry> = Vec::new();
            let mut from = from;
            // One query for a contiguous journal; one more after each gap (a
            // damaged journal), so a gap never ends a page early.
            while entries.len() < max && from <= to {
                let wanted = max - entries.len();
                let limit = i64::try_from(wanted).unwrap_or(i64::MAX);
                let rows = self
                    .query(
                        &self.sql.replay_range,
                        &[&actor_id.as_bytes(), &seq(from), &seq(to), &limit],
                    )
                    .await?;
                let mut page = rows
                    .iter()
                    .map(|row| {
                        let sequence: i64 = row.try_get(0).map_err(pg_error)?;
                        let bytes: &[u8] = row.try_get(1).map_err(pg_error)?;
                        decode_entry(actor_id, sequence, bytes)
                    })
                    .collect::<JournalResult<Vec<_>>>()?;
                // In table order; mostly sorted already.
                page.sort_unstable_by_key(|e| e.sequence);
                let Some(lo) = page.first().map(|e| e.sequence) else {
                    break;
                };
                // The page's last sequence, as the query computed it.
                // Saturating: a damaged row outside the range asked for
                // must not overflow (it ends the loop instead).
                let span = u64::try_from(wanted)
                    .unwrap_or(u64::MAX)
                    .min(to.saturating_sub(lo).saturating_add(1));
                let hi = lo.saturating_add(span.saturating_sub(1));
                let full = page.len() == wanted;
                entries.append(&mut page);
                if full || hi >= to {
                    break;
                }
                from = hi + 1;
            }
            Ok(entries)
        };
        journal_core::metrics::timed_page(BACKEND, work).await
    }

    fn replay_page_size(&self) -> usize {
        REPLAY_PAGE
    }

    fn limits(&self) -> Limits {
        self.limits
    }

    /// Pages of [`REPLAY_PAGE`] entries, each its own short query; the
    /// next two pages are fetched and decoded on tasks of their own while
    /// this one is consumed ([`journal_core::prefetched_replay`]). At most
    /// three pages are held.
    fn replay_stream<'a>(&'a self, actor_id: &'a str, from: u64) -> EntryStream<'a> {
        journal_core::prefetched_replay(self.clone(), actor_id, from, REPLAY_PAGE)
    }

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn highest_sequence(&self, actor_id: &str) -> JournalResult<u64> {
        let rows = self
            .query(&self.sql.highest, &[&actor_id.as_bytes()])
            .await?;
        match rows.first() {
            Some(row) => Ok(unseq(row.try_get(0).map_err(pg_error)?)),
            None => Ok(0),
        }
    }

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn truncate_to(&self, actor_id: &str, to: u64) -> JournalResult<()> {
        self.execute(&self.sql.truncate, &[&actor_id.as_bytes(), &seq(to)])
            .await
            .map(drop)
    }

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn delete_actor(&self, actor_id: &str) -> JournalResult<()> {
        self.execute(&self.sql.delete_actor, &[&actor_id.as_bytes()])
            .await
            .map(drop)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(backend = BACKEND, actor_id = %checkpoint.actor_id, sequence = checkpoint.sequence))]
    async fn save_checkpoint(&self, checkpoint: &Checkpoint) -> JournalResult<()> {
        validate::validate_checkpoint(checkpoint)?;
        let actor = checkpoint.actor_id.as_bytes();
        let bytes = checkpoint.encode_to_vec();
        let saved = self
            .query(
                &self.sql.save_checkpoint,
                &[&actor, &seq(checkpoint.sequence), &bytes],
            )
            .await?;
        if saved.is_empty() {
            let highest = self.highest_sequence(&checkpoint.actor_id).await?;
            return Err(validate::checkpoint_beyond_highest(checkpoint, highest));
        }
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn get_latest_checkpoint(&self, actor_id: &str) -> JournalResult<Option<Checkpoint>> {
        let rows = self
            .query(&self.sql.latest_checkpoint, &[&actor_id.as_bytes()])
            .await?;
        rows.first()
            .map(|row| decode_checkpoint(actor_id, row))
            .transpose()
    }

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn get_checkpoint(
        &self,
        actor_id: &str,
        sequence: u64,
    ) -> JournalResult<Option<Checkpoint>> {
        let rows = self
            .query(
                &self.sql.get_checkpoint,
                &[&actor_id.as_bytes(), &seq(sequence)],
            )
            .await?;
        rows.first()
            .map(|row| decode_checkpoint(actor_id, row))
            .transpose()
    }

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn list_checkpoints(&self, actor_id: &str) -> JournalResult<Vec<u64>> {
        let rows = self
            .query(&self.sql.list_checkpoints, &[&actor_id.as_bytes()])
            .await?;
        rows.iter()
            .map(|row| row.try_get::<_, i64>(0).map(unseq).map_err(pg_error))
            .collect()
    }

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn delete_checkpoints_before(&self, actor_id: &str, before: u64) -> JournalResult<u64> {
        self.execute(
            &self.sql.delete_checkpoints_before,
            &[&actor_id.as_bytes(), &seq(before)],
        )
        .await
    }

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn list_actors_page(
        &self,
        cursor: Option<&str>,
        limit: usize,
    ) -> JournalResult<ActorPage> {
        let cursor = cursor.map(str::as_bytes);
        let limit_sql = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .query(&self.sql.list_actors, &[&cursor, &limit_sql])
            .await?;
        let actors = rows
            .iter()
            .map(|row| {
                let bytes: Vec<u8> = row.try_get(0).map_err(pg_error)?;
                String::from_utf8(bytes).map_err(|e| {
                    JournalError::storage(BACKEND, format!("an actor id is not UTF-8: {e}"))
                })
            })
            .collect::<JournalResult<Vec<_>>>()?;
        Ok(ActorPage::new(actors, limit))
    }

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn actor_summary(&self, actor_id: &str) -> JournalResult<ActorSummary> {
        let rows = self
            .query(&self.sql.actor_summary, &[&actor_id.as_bytes()])
            .await?;
        let row = rows
            .first()
            .ok_or_else(|| JournalError::storage(BACKEND, "no summary row"))?;
        let highest: Option<i64> = row.try_get(0).map_err(pg_error)?;
        let entries: i64 = row.try_get(1).map_err(pg_error)?;
        let checkpoints: i64 = row.try_get(2).map_err(pg_error)?;
        Ok(ActorSummary {
            highest_sequence: highest.map_or(0, unseq),
            entries: unseq(entries),
            checkpoints: unseq(checkpoints),
        })
    }

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn stats(&self) -> JournalResult<JournalStats> {
        let rows = self.query(&self.sql.stats, &[]).await?;
        let row = rows
            .first()
            .ok_or_else(|| JournalError::storage(BACKEND, "no stats row"))?;
        let get = |i: usize| row.try_get::<_, i64>(i).map(unseq).map_err(pg_error);
        Ok(JournalStats {
            actors: get(0)?,
            entries: get(1)?,
            checkpoints: get(2)?,
        })
    }
}

#[async_trait]
impl JournalWatch for PostgresJournalStorage {
    /// Registers the waiter, makes sure the listener runs, then reads the
    /// actor's highest sequence: an append committed after that read is
    /// announced to the listener, or (committed before its `LISTEN` took
    /// effect) answered by the wake-up of every waiter that follows each
    /// `LISTEN`. Without a listener (down, or none for a pool of the
    /// caller's), it waits out `timeout`.
    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn wait_for_entries(
        &self,
        actor_id: &str,
        after: u64,
        timeout: std::time::Duration,
    ) -> JournalResult<()> {
        let deadline = tokio::time::Instant::now().checked_add(timeout);
        let mut waiter = self.watch.register(actor_id);
        if self.highest_sequence(actor_id).await? > after {
            return Ok(());
        }
        match deadline {
            Some(deadline) => {
                // Timing out is an answer too: the caller reads again.
                let _ = tokio::time::timeout_at(deadline, waiter.woken()).await;
            }
            None => waiter.woken().await,
        }
        Ok(())
    }
}
