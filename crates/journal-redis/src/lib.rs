#![doc = include_str!("../README.md")]

mod connection;
mod error;
mod feed;
pub mod keys;
mod options;
mod persistence;
pub mod scripts;
pub mod timers;
mod watch;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::stream::{StreamExt, TryStreamExt};
use journal_core::validate::{self, Limits};
use journal_core::{
    ActorPage, ActorSummary, Checkpoint, EntryStream, JournalEntry, JournalError, JournalResult,
    JournalStats, JournalStorage, JournalWatch,
};
use prost::Message;
use redis::Value;

use connection::{Lease, Pool};
use error::{bad_reply, is_noscript, redis_error, BACKEND};
use keys::{Keys, BUCKETS};
pub use options::{PersistenceCheck, RedisOptions, ReplicaWait};
pub use persistence::NodePersistence;
use scripts::Script;
use watch::Watchers;

/// Entries a streaming replay fetches per `XRANGE`.
pub const REPLAY_PAGE: usize = 1_000;

/// Buckets whose index is read at once when listing actors or adding up
/// totals.
const BUCKET_WINDOW: u16 = 64;

/// Actors summed at once by [`JournalStorage::stats`].
const STATS_CONCURRENCY: usize = 256;

/// How long a shard found short of replicas is checked before each write
/// instead of being written to and waited on.
const SHORT_OF_REPLICAS_RECHECK: Duration = Duration::from_secs(30);

/// A journal in Redis or a Redis Cluster, shared by any number of
/// processes.
///
/// Cheap to clone: clones share the connections.
#[derive(Clone)]
pub struct RedisJournalStorage {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    keys: Keys,
    prefix: String,
    limits: Limits,
    wait: Option<ReplicaWait>,
    command_timeout: Duration,
    /// Slots whose primary had too few replicas at the last `WAIT`, and
    /// when that was seen: their writes check the replicas first.
    short_of_replicas: Mutex<HashMap<u16, Instant>>,
    persistence: Vec<NodePersistence>,
    /// Dedicated connections for `XREAD BLOCK` (live subscriptions).
    watchers: Watchers,
    /// The cluster's slot map, for grouping feed reads per node.
    feed_nodes: Mutex<feed::NodeMap>,
    /// On one server: the buckets known to have a feed, and at which count.
    feed_buckets: Mutex<Option<feed::KnownBuckets>>,
    /// Appends count the buckets with a feed (`Keys::feed_buckets`): on a
    /// server without slots only, where a script may name a key of
    /// another slot.
    count_feeds: bool,
    closed: AtomicBool,
}

impl std::fmt::Debug for RedisJournalStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisJournalStorage")
            .field("key_prefix", &self.inner.prefix)
            .field("pool_size", &self.inner.pool.size())
            .field("clustered", &self.inner.pool.is_clustered())
            .field("wait_for_replicas", &self.inner.wait)
            .finish_non_exhaustive()
    }
}

impl RedisJournalStorage {
    /// Connects with the default options (the seed's constructor). `url`
    /// is `redis://host:port/db` for one server, `redis-cluster://host:port`
    /// (more nodes as `?node=host:port`) or a comma-separated list of
    /// `redis://host:port` for a cluster; `rediss://` needs the
    /// `tls-rustls` feature. `?prefix=P` (on any node) sets the key prefix,
    /// as the `journal` command reads it; `?protocol=` is the driver's; any
    /// other parameter is refused.
    pub async fn new(url: &str) -> JournalResult<Self> {
        Self::open(url, RedisOptions::default()).await
    }

    /// Connects with `options` and reads the servers' persistence settings
    /// (see [`RedisOptions::persistence_check`]).
    ///
    /// A server that cannot be reached is `Unavailable`; a bad URL or bad
    /// options are `Storage` errors. Neither message carries a password.
    #[tracing::instrument(level = "debug", skip_all, fields(backend = BACKEND, servers = %connection::servers_of(url)))]
    pub async fn open(url: &str, mut options: RedisOptions) -> JournalResult<Self> {
        let (url, prefix) = journal_core::url::take_param(url, "prefix");
        if let Some(prefix) = prefix {
            options.key_prefix = prefix;
        }
        let url = url.as_str();
        options::validate(&options)?;
        let target = connection::parse_url(url)?;
        let pool = Pool::connect(&target, &options).await?;
        let watchers = Watchers::new(&target, &options)?;
        let count_feeds = persistence::slots_are_free(&pool).await;
        let persistence = match options.persistence_check {
            PersistenceCheck::Skip => Vec::new(),
            check => {
                let nodes = persistence::read(&pool).await;
                persistence::judge(&nodes, check)?;
                nodes
            }
        };
        Ok(RedisJournalStorage {
            inner: Arc::new(Inner {
                pool,
                keys: Keys::new(&options.key_prefix),
                prefix: options.key_prefix,
                limits: Limits {
                    max_entry_bytes: options.max_entry_bytes,
                },
                wait: options.wait_for_replicas,
                command_timeout: options.command_timeout,
                short_of_replicas: Mutex::new(HashMap::new()),
                persistence,
                watchers,
                feed_nodes: Mutex::new(None),
                feed_buckets: Mutex::new(None),
                count_feeds,
                closed: AtomicBool::new(false),
            }),
        })
    }

    /// Whether the storage talks to a Redis Cluster.
    pub fn is_clustered(&self) -> bool {
        self.inner.pool.is_clustered()
    }

    /// The key prefix.
    pub fn key_prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// The persistence settings each server reported at open (empty with
    /// [`PersistenceCheck::Skip`]).
    pub fn persistence(&self) -> &[NodePersistence] {
        &self.inner.persistence
    }

    /// Stops using the connections: calls made afterwards fail with
    /// `Unavailable`. The connections close when the last clone of the
    /// storage is dropped. (`async` as it was with the first driver, whose
    /// close sent `QUIT`: callers keep their `.await`.)
    #[allow(clippy::unused_async)]
    pub async fn close(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        self.inner.pool.close();
        self.inner.watchers.close();
    }

    async fn lease(&self) -> JournalResult<Lease<'_>> {
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(JournalError::unavailable(BACKEND, "the storage was closed"));
        }
        self.inner.pool.lease().await
    }

    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> JournalResult<T> {
        self.lease().await?.query(cmd).await.map_err(redis_error)
    }

    /// Runs a script by SHA, sending its text when the server lost it
    /// (`EVAL` caches it again on whichever node serves the keys).
    async fn script(
        &self,
        script: Script,
        keys: &[Vec<u8>],
        args: &[Vec<u8>],
    ) -> JournalResult<Value> {
        let mut connection = self.lease().await?;
        let call = |by: &str, body: &str| {
            let mut cmd = redis::cmd(by);
            cmd.arg(body).arg(keys.len()).arg(keys).arg(args);
            cmd
        };
        let sha = scripts::sha(script);
        match connection.query(&call("EVALSHA", sha)).await {
            Err(e) if is_noscript(&e) => connection
                .query(&call("EVAL", scripts::ALL[script as usize]))
                .await
                .map_err(redis_error),
            result => result.map_err(redis_error),
        }
    }

    /// Runs a write script; with [`RedisOptions::wait_for_replicas`], the
    /// script and a `WAIT` go out together to the slot's primary, so the
    /// `WAIT` covers this write on the node that made it.
    async fn write_script(
        &self,
        script: Script,
        slot: u16,
        keys: &[Vec<u8>],
        args: &[Vec<u8>],
    ) -> JournalResult<Value> {
        let Some(wait) = self.inner.wait else {
            return self.script(script, keys, args).await;
        };
        self.check_replicas(slot, wait).await?;
        let waited = wait.timeout.min(self.inner.command_timeout);
        let timeout_ms = u64::try_from(waited.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut connection = self.lease().await?;
        let pipeline = |by: &str, body: &str| {
            let mut pipe = redis::pipe();
            pipe.cmd(by).arg(body).arg(keys.len()).arg(keys).arg(args);
            pipe.cmd("WAIT").arg(wait.replicas).arg(timeout_ms);
            pipe
        };
        let sha = scripts::sha(script);
        let replies: Vec<Value> = match connection.query_pipe(&pipeline("EVALSHA", sha), slot).await
        {
            Err(e) if is_noscript(&e) => connection
                .query_pipe(&pipeline("EVAL", scripts::ALL[script as usize]), slot)
                .await
                .map_err(redis_error)?,
            result => result.map_err(redis_error)?,
        };
        let mut replies = replies.into_iter();
        let (Some(reply), Some(acknowledged)) = (replies.next(), replies.next()) else {
            return Err(bad_reply("a script and WAIT"));
        };
        let acknowledged = reply_u64(&acknowledged, "WAIT")?;
        // A refusal (a conflict, a checkpoint beyond the highest) wrote
        // nothing worth waiting for: the caller gets the refusal.
        if acknowledged < u64::from(wait.replicas) && !scripts::refused(script, &reply) {
            self.mark_short_of_replicas(slot);
            return Err(JournalError::unavailable(
                BACKEND,
                format!(
                    "the write is on the primary of slot {slot} but only {acknowledged} of {} \
                     replicas acknowledged it within {waited:?}; retrying it is safe",
                    wait.replicas
                ),
            ));
        }
        Ok(reply)
    }

    fn mark_short_of_replicas(&self, slot: u16) {
        if let Ok(mut short) = self.inner.short_of_replicas.lock() {
            short.insert(slot, Instant::now());
        }
    }

    /// A slot whose primary lately had too few replicas: asks the primary
    /// how many it has before writing, and fails at once while it has too
    /// few, rather than writing and waiting out the timeout on every call.
    async fn check_replicas(&self, slot: u16, wait: ReplicaWait) -> JournalResult<()> {
        let seen = self
            .inner
            .short_of_replicas
            .lock()
            .ok()
            .and_then(|short| short.get(&slot).copied());
        let Some(seen) = seen else {
            return Ok(());
        };
        if seen.elapsed() > SHORT_OF_REPLICAS_RECHECK {
            // Long enough ago: try a write and its WAIT again.
            if let Ok(mut short) = self.inner.short_of_replicas.lock() {
                short.remove(&slot);
            }
            return Ok(());
        }
        let info: String = self
            .lease()
            .await?
            .query_slot(redis::cmd("INFO").arg("replication"), slot)
            .await
            .map_err(redis_error)?;
        let connected = persistence::info_field(&info, "connected_slaves")
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or(0);
        if connected >= wait.replicas {
            if let Ok(mut short) = self.inner.short_of_replicas.lock() {
                short.remove(&slot);
            }
            return Ok(());
        }
        Err(JournalError::unavailable(
            BACKEND,
            format!(
                "the primary of slot {slot} has {connected} connected replicas and \
                 wait_for_replicas needs {}: nothing was written. Writes to this shard \
                 fail until a replica is attached to it",
                wait.replicas
            ),
        ))
    }

    /// Appends a validated, non-empty batch of one actor.
    async fn append_validated(&self, batch: &[JournalEntry]) -> JournalResult<()> {
        let Some(first) = batch.first() else {
            return Ok(());
        };
        let keys = self.inner.keys.actor(&first.actor_id);
        let reply = self
            .write_script(
                Script::Append,
                keys.slot(),
                &scripts::append_keys(&keys, batch, !self.inner.count_feeds),
                &scripts::append_args(batch),
            )
            .await?;
        let reply = into_array(reply);
        match reply.first().and_then(as_i64) {
            // Written, or already stored with the same ids (a retry):
            // either way the caller's entries are there.
            Some(0 | 1) => Ok(()),
            Some(2) => {
                let highest = reply.get(1).map_or(Ok(0), |v| reply_u64(v, "append"))?;
                Err(validate::sequence_conflict(
                    &first.actor_id,
                    highest,
                    first.sequence,
                ))
            }
            _ => Err(bad_reply("append")),
        }
    }

    /// An actor's counts for [`JournalStorage::stats`], each read on its
    /// own: `highest_sequence` is 1 when the actor exists, 0 when not.
    async fn actor_counts(&self, actor_id: &str) -> JournalResult<ActorSummary> {
        let keys = self.inner.keys.actor(actor_id);
        let one = |name: &str, key: Vec<u8>| {
            let mut cmd = redis::cmd(name);
            cmd.arg(key);
            cmd
        };
        let (exists, entries, checkpoints) = (
            one("EXISTS", keys.highest()),
            one("XLEN", keys.entries()),
            one("ZCARD", keys.checkpoint_index()),
        );
        let (exists, entries, checkpoints) = futures::try_join!(
            self.query::<u64>(&exists),
            self.query::<u64>(&entries),
            self.query::<u64>(&checkpoints),
        )?;
        Ok(ActorSummary {
            highest_sequence: exists,
            entries,
            checkpoints,
        })
    }

    async fn bucket_actors(
        &self,
        bucket: u16,
        after: Option<&str>,
        limit: usize,
    ) -> JournalResult<Vec<String>> {
        let actors = self.inner.keys.bucket(bucket).actors();
        // Bounds are built here: an id that starts with `(` or `[` must not
        // be taken for a bound marker.
        let min = after.map_or_else(
            || b"-".to_vec(),
            |after| {
                let mut bound = Vec::with_capacity(after.len() + 1);
                bound.push(b'(');
                bound.extend_from_slice(after.as_bytes());
                bound
            },
        );
        let mut cmd = redis::cmd("ZRANGEBYLEX");
        cmd.arg(actors)
            .arg(min)
            .arg("+")
            .arg("LIMIT")
            .arg(0)
            .arg(limit.min(i64::MAX as usize));
        let ids: Vec<Vec<u8>> = self.query(&cmd).await?;
        ids.into_iter()
            .map(|id| String::from_utf8(id).map_err(|_| bad_reply("an actor id that is not UTF-8")))
            .collect()
    }
}

/// The elements of an array reply; any other reply is one element.
fn into_array(value: Value) -> Vec<Value> {
    match value {
        Value::Array(items) | Value::Set(items) => items,
        Value::Nil => Vec::new(),
        other => vec![other],
    }
}

/// An integer reply, or a bulk string holding a decimal integer.
fn as_i64(value: &Value) -> Option<i64> {
    match value {
        Value::Int(n) => Some(*n),
        Value::BulkString(bytes) => std::str::from_utf8(bytes).ok()?.parse().ok(),
        Value::SimpleString(text) => text.parse().ok(),
        _ => None,
    }
}

/// Reads a decimal or integer reply as a `u64` (`nil` is 0).
fn reply_u64(value: &Value, what: &str) -> JournalResult<u64> {
    match value {
        Value::Nil => Ok(0),
        other => as_i64(other)
            .and_then(|n| u64::try_from(n).ok())
            .ok_or_else(|| bad_reply(what)),
    }
}

/// Decodes `XRANGE` replies: `[[id, [field, value, ...]], ...]`.
fn decode_entries(actor_id: &str, reply: Value) -> JournalResult<Vec<JournalEntry>> {
    let corrupt = |sequence: u64, reason: &str| JournalError::CorruptEntry {
        actor_id: actor_id.to_owned(),
        sequence,
        reason: reason.to_owned(),
    };
    let items = into_array(reply);
    let mut entries = Vec::with_capacity(items.len());
    for item in items {
        let mut parts = into_array(item).into_iter();
        let (Some(Value::BulkString(id)), Some(fields)) = (parts.next(), parts.next()) else {
            return Err(corrupt(0, "a stream entry without id or fields"));
        };
        let sequence = std::str::from_utf8(&id)
            .ok()
            .and_then(|id| id.strip_suffix("-0"))
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| corrupt(0, "a stream entry id that is not <sequence>-0"))?;
        let fields = into_array(fields);
        let bytes = fields
            .chunks_exact(2)
            .find(|pair| matches!(&pair[0], Value::BulkString(name) if name.as_slice() == b"d"))
            .and_then(|pair| match &pair[1] {
                Value::BulkString(bytes) => Some(bytes),
                _ => None,
            })
            .ok_or_else(|| corrupt(sequence, "a stream entry without its bytes"))?;
        entries.push(JournalEntry::decode_stored(actor_id, sequence, bytes)?);
    }
    Ok(entries)
}

#[async_trait]
impl JournalStorage for RedisJournalStorage {
    fn backend_name(&self) -> &'static str {
        BACKEND
    }

    #[tracing::instrument(level = "debug", skip_all, fields(backend = BACKEND, actor_id = %entry.actor_id, sequence = entry.sequence))]
    async fn append_entry(&self, entry: &JournalEntry) -> JournalResult<u64> {
        let work = async {
            validate::validate_entry(entry, &self.inner.limits)?;
            self.append_validated(std::slice::from_ref(entry)).await?;
            Ok(entry.sequence)
        };
        journal_core::metrics::timed_append(BACKEND, 1, work).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(backend = BACKEND, actor_id = entries.first().map(|e| e.actor_id.as_str()), sequence = entries.first().map(|e| e.sequence), count = entries.len()))]
    async fn append_batch(&self, entries: &[JournalEntry]) -> JournalResult<()> {
        let work = async {
            validate::validate_batch(entries, &self.inner.limits)?;
            self.append_validated(entries).await
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
            let from = from.max(1);
            // Nothing is stored above MAX_SEQUENCE: a larger `to` (u64::MAX,
            // "to the end") means the limit.
            let to = validate::clamp_sequence(to);
            if max == 0 || from > to {
                return Ok(Vec::new());
            }
            let keys = self.inner.keys.actor(actor_id);
            // Stream ids are `<sequence>-0`; a bare number as the end bound
            // means `<number>-<max>`, so `to` is included. A count beyond
            // i64::MAX is no limit for one reply.
            let mut cmd = redis::cmd("XRANGE");
            cmd.arg(keys.entries())
                .arg(format!("{from}-0"))
                .arg(to)
                .arg("COUNT")
                .arg(i64::try_from(max).unwrap_or(i64::MAX));
            let reply: Value = self.query(&cmd).await?;
            decode_entries(actor_id, reply)
        };
        journal_core::metrics::timed_page(BACKEND, work).await
    }

    fn replay_page_size(&self) -> usize {
        REPLAY_PAGE
    }

    fn limits(&self) -> Limits {
        self.inner.limits
    }

    /// Pages of [`REPLAY_PAGE`] entries, the next two fetched while this
    /// one is consumed ([`journal_core::prefetched_replay`]).
    fn replay_stream<'a>(&'a self, actor_id: &'a str, from: u64) -> EntryStream<'a> {
        journal_core::prefetched_replay(self.clone(), actor_id, from, REPLAY_PAGE)
    }

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn highest_sequence(&self, actor_id: &str) -> JournalResult<u64> {
        let keys = self.inner.keys.actor(actor_id);
        let value: Value = self.query(redis::cmd("GET").arg(keys.highest())).await?;
        reply_u64(&value, "highest sequence")
    }

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn truncate_to(&self, actor_id: &str, to: u64) -> JournalResult<()> {
        // The script compares `to` as a Lua number: clamped, it is exact.
        let to = validate::clamp_sequence(to);
        let keys = self.inner.keys.actor(actor_id);
        self.write_script(
            Script::Truncate,
            keys.slot(),
            &[keys.highest(), keys.entries()],
            &[
                to.to_string().into_bytes(),
                format!("{}-0", to.saturating_add(1)).into_bytes(),
            ],
        )
        .await?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn delete_actor(&self, actor_id: &str) -> JournalResult<()> {
        let keys = self.inner.keys.actor(actor_id);
        self.write_script(
            Script::Delete,
            keys.slot(),
            &[
                keys.highest(),
                keys.entries(),
                keys.checkpoint_index(),
                keys.checkpoints(),
                keys.bucket().actors(),
                keys.bucket().incarnations(),
            ],
            &[actor_id.as_bytes().to_vec()],
        )
        .await?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(backend = BACKEND, actor_id = %checkpoint.actor_id, sequence = checkpoint.sequence))]
    async fn save_checkpoint(&self, checkpoint: &Checkpoint) -> JournalResult<()> {
        validate::validate_checkpoint(checkpoint)?;
        let keys = self.inner.keys.actor(&checkpoint.actor_id);
        let reply = self
            .write_script(
                Script::SaveCheckpoint,
                keys.slot(),
                &[keys.highest(), keys.checkpoint_index(), keys.checkpoints()],
                &[
                    checkpoint.sequence.to_string().into_bytes(),
                    checkpoint.encode_to_vec(),
                ],
            )
            .await?;
        let reply = into_array(reply);
        match reply.first().and_then(as_i64) {
            Some(1) => Ok(()),
            Some(0) => {
                let highest = reply
                    .get(1)
                    .map_or(Ok(0), |v| reply_u64(v, "save checkpoint"))?;
                Err(validate::checkpoint_beyond_highest(checkpoint, highest))
            }
            _ => Err(bad_reply("save checkpoint")),
        }
    }

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn get_latest_checkpoint(&self, actor_id: &str) -> JournalResult<Option<Checkpoint>> {
        let keys = self.inner.keys.actor(actor_id);
        let reply = self
            .script(
                Script::LatestCheckpoint,
                &[keys.checkpoint_index(), keys.checkpoints()],
                &[],
            )
            .await?;
        let mut reply = into_array(reply).into_iter();
        let (Some(sequence), Some(bytes)) = (reply.next(), reply.next()) else {
            return Ok(None);
        };
        let sequence = reply_u64(&sequence, "checkpoint sequence")?;
        let Value::BulkString(bytes) = bytes else {
            return Err(bad_reply("checkpoint bytes"));
        };
        Checkpoint::decode_stored(actor_id, sequence, &bytes).map(Some)
    }

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn get_checkpoint(
        &self,
        actor_id: &str,
        sequence: u64,
    ) -> JournalResult<Option<Checkpoint>> {
        let keys = self.inner.keys.actor(actor_id);
        let value: Value = self
            .query(redis::cmd("HGET").arg(keys.checkpoints()).arg(sequence))
            .await?;
        match value {
            Value::Nil => Ok(None),
            Value::BulkString(bytes) => {
                Checkpoint::decode_stored(actor_id, sequence, &bytes).map(Some)
            }
            _ => Err(bad_reply("checkpoint bytes")),
        }
    }

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn list_checkpoints(&self, actor_id: &str) -> JournalResult<Vec<u64>> {
        let keys = self.inner.keys.actor(actor_id);
        let values: Vec<Value> = self
            .query(
                redis::cmd("ZRANGE")
                    .arg(keys.checkpoint_index())
                    .arg(0)
                    .arg(-1),
            )
            .await?;
        values
            .iter()
            .map(|v| reply_u64(v, "checkpoint sequence"))
            .collect()
    }

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn delete_checkpoints_before(&self, actor_id: &str, before: u64) -> JournalResult<u64> {
        // Compared with sorted-set scores (doubles): at most
        // MAX_SEQUENCE + 1 = 2^53, which is exact and still removes every
        // checkpoint.
        let before = before.min(validate::MAX_SEQUENCE + 1);
        let keys = self.inner.keys.actor(actor_id);
        let removed = self
            .write_script(
                Script::DeleteCheckpointsBefore,
                keys.slot(),
                &[keys.highest(), keys.checkpoint_index(), keys.checkpoints()],
                &[before.to_string().into_bytes()],
            )
            .await?;
        reply_u64(&removed, "checkpoints removed")
    }

    /// Actors in bucket order, then by id within a bucket (see the crate
    /// docs): the cursor, an actor id, tells both where to go on.
    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn list_actors_page(
        &self,
        cursor: Option<&str>,
        limit: usize,
    ) -> JournalResult<ActorPage> {
        let mut page = Vec::new();
        let mut bucket = cursor.map_or(0, keys::bucket_of);
        // The cursor bounds its own bucket only: the first bucket of the
        // first window.
        let mut after = cursor;
        while limit > 0 && bucket < BUCKETS && page.len() < limit {
            let end = (bucket + BUCKET_WINDOW).min(BUCKETS);
            let need = limit - page.len();
            let first = bucket;
            let windows = futures::future::try_join_all(
                (bucket..end)
                    .map(|b| self.bucket_actors(b, if b == first { after } else { None }, need)),
            )
            .await?;
            for actors in windows {
                let room = limit - page.len();
                page.extend(actors.into_iter().take(room));
            }
            after = None;
            bucket = end;
        }
        Ok(ActorPage::new(page, limit))
    }

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn actor_summary(&self, actor_id: &str) -> JournalResult<ActorSummary> {
        let keys = self.inner.keys.actor(actor_id);
        let reply = self
            .script(
                Script::Summary,
                &[keys.highest(), keys.entries(), keys.checkpoint_index()],
                &[],
            )
            .await?;
        let reply = into_array(reply);
        let field = |i: usize| {
            reply
                .get(i)
                .ok_or_else(|| bad_reply("actor summary"))
                .and_then(|v| reply_u64(v, "actor summary"))
        };
        Ok(ActorSummary {
            highest_sequence: field(0)?,
            entries: field(1)?,
            checkpoints: field(2)?,
        })
    }

    /// Adds up every actor's entries and checkpoints: one round of reads
    /// per listed page, many at once. An append never writes a key shared
    /// with other actors, so the totals are summed here rather than kept
    /// (see the crate docs). Each read names one key, so it is served
    /// wherever that key is, also while the actor's slot is half moved.
    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn stats(&self) -> JournalResult<JournalStats> {
        let mut total = JournalStats::default();
        let mut cursor: Option<String> = None;
        loop {
            let page = self.list_actors_page(cursor.as_deref(), 1_000).await?;
            let next = page.next_cursor;
            let summaries: Vec<ActorSummary> = futures::stream::iter(page.actors)
                .map(|actor| {
                    let storage = self.clone();
                    async move { storage.actor_counts(&actor).await }
                })
                .buffer_unordered(STATS_CONCURRENCY)
                .try_collect()
                .await?;
            for summary in summaries {
                // An actor deleted between the listing and its summary is
                // not counted.
                if summary.highest_sequence > 0 {
                    total.actors += 1;
                }
                total.entries += summary.entries;
                total.checkpoints += summary.checkpoints;
            }
            match next {
                Some(next) => cursor = Some(next),
                None => return Ok(total),
            }
        }
    }
}

/// Live subscriptions: `XREAD BLOCK` on the actor's entries stream, on a
/// dedicated connection (see the crate docs).
#[async_trait]
impl JournalWatch for RedisJournalStorage {
    /// Waits with `XREAD COUNT 1 BLOCK <ms> STREAMS <entries> <after>-0`:
    /// the server answers as soon as an entry above `after` is stored (at
    /// once when one already is), whoever appended it, or with nil after
    /// the timeout. The wait is at most five minutes at a time and
    /// at least a millisecond (`BLOCK 0` would wait for ever).
    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn wait_for_entries(
        &self,
        actor_id: &str,
        after: u64,
        timeout: Duration,
    ) -> JournalResult<()> {
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(JournalError::unavailable(BACKEND, "the storage was closed"));
        }
        let block = timeout.min(watch::MAX_BLOCK);
        let block_ms = u64::try_from(block.as_millis()).unwrap_or(u64::MAX).max(1);
        let keys = self.inner.keys.actor(actor_id);
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT")
            .arg(1)
            .arg("BLOCK")
            .arg(block_ms)
            .arg("STREAMS")
            .arg(keys.entries())
            .arg(format!("{after}-0"));
        // Nil: the time passed; anything else: an entry is there. Its
        // content is not needed: the caller reads through the replay.
        self.inner
            .watchers
            .blocking(&cmd, keys.slot(), Duration::from_millis(block_ms))
            .await?;
        Ok(())
    }
}
