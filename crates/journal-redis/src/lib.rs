#![doc = include_str!("../README.md")]

mod error;
pub mod keys;
mod options;
pub mod scripts;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use fred::bytes::Bytes;
use fred::bytes_utils::Str;
use fred::prelude::{
    Builder, Client, ClientLike, Config, HashesInterface, KeysInterface, LuaInterface, Pool,
    ReconnectPolicy, Server, ServerConfig, ServerInterface, SortedSetsInterface, StreamsInterface,
};
use fred::types::config::{ClusterDiscoveryPolicy, Options};
use fred::types::sorted_sets::{ZRange, ZRangeBound, ZRangeKind};
use fred::types::{ClusterHash, Key, Value};
use futures::future::try_join_all;
use journal_core::validate::{self, Limits};
use journal_core::{
    ActorPage, ActorSummary, Checkpoint, EntryStream, JournalEntry, JournalError, JournalResult,
    JournalStats, JournalStorage,
};
use prost::Message;

use error::{bad_reply, is_noscript, redis_error, BACKEND};
use keys::{Keys, BUCKETS};
pub use options::{RedisOptions, ReplicaWait};
use scripts::Script;

/// Entries a streaming replay fetches per `XRANGE`.
pub const REPLAY_PAGE: usize = 1_000;

/// Buckets whose index or totals are read at once when listing actors or
/// adding up totals.
const BUCKET_WINDOW: u16 = 64;

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
    /// SHA-1 of each script of [`scripts::ALL`], as the server named it.
    shas: Vec<Str>,
    limits: Limits,
    wait: Option<ReplicaWait>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Close the connections in the background when a runtime is there
        // to do it; otherwise they close with the runtime.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let pool = self.pool.clone();
            handle.spawn(async move {
                let _ = pool.quit().await;
            });
        }
    }
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

/// The servers a URL names, as `host:port` only: no user, no password, no
/// path; `?` for a part that is not a URL. For errors and spans.
fn servers_of(url: &str) -> String {
    url.split(',')
        .map(|part| {
            part.split_once("://")
                .map(|(_, rest)| rest)
                .and_then(|rest| rest.split(['/', '?']).next())
                .map(|authority| authority.rsplit('@').next().unwrap_or_default())
                .filter(|host| !host.is_empty())
                .unwrap_or("?")
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Reads `url` as one server (`redis://`, `rediss://`), a cluster
/// (`redis-cluster://host:port?node=host:port`), or a comma-separated list
/// of `redis://host:port` cluster nodes.
fn parse_url(url: &str) -> JournalResult<Config> {
    // The URL itself is not repeated: one that does not parse cannot be
    // redacted reliably.
    let invalid = |e: fred::error::Error| {
        JournalError::storage(BACKEND, format!("invalid Redis URL: {}", e.details()))
    };
    // Each part's scheme, once: every one must be known, and TLS is all or
    // nothing.
    let schemes: Vec<Option<String>> = url
        .split(',')
        .map(|part| {
            part.trim_start()
                .split_once("://")
                .map(|(scheme, _)| scheme.to_ascii_lowercase())
        })
        .collect();
    let known = ["redis", "rediss", "redis-cluster", "rediss-cluster"];
    if !schemes
        .iter()
        .all(|s| s.as_deref().is_some_and(|s| known.contains(&s)))
    {
        return Err(JournalError::storage(
            BACKEND,
            "invalid Redis URL: use redis://, rediss://, redis-cluster:// or a list of redis:// nodes",
        ));
    }
    let is_tls = |s: &Option<String>| s.as_deref().is_some_and(|s| s.starts_with("rediss"));
    let tls = schemes.iter().any(is_tls);
    if tls && !schemes.iter().all(is_tls) {
        return Err(JournalError::storage(
            BACKEND,
            "invalid Redis URL: a node list mixes rediss:// and redis://",
        ));
    }
    if tls && !cfg!(feature = "tls-rustls") {
        // Without the feature the driver would connect in plain text.
        return Err(JournalError::storage(
            BACKEND,
            "a rediss:// URL needs journal-redis's `tls-rustls` feature",
        ));
    }
    if !url.contains(',') {
        return Config::from_url(url).map_err(invalid);
    }
    let mut nodes = Vec::new();
    let mut first: Option<Config> = None;
    for part in url.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let config = Config::from_url_centralized(part).map_err(invalid)?;
        if let ServerConfig::Centralized { server } = &config.server {
            nodes.push(Server::new(server.host.to_string(), server.port));
        }
        first.get_or_insert(config);
    }
    let mut config = first
        .ok_or_else(|| JournalError::storage(BACKEND, "invalid Redis URL: no node in the list"))?;
    config.server = ServerConfig::Clustered {
        hosts: nodes,
        policy: ClusterDiscoveryPolicy::default(),
    };
    Ok(config)
}

impl RedisJournalStorage {
    /// Connects with the default options (the seed's constructor). `url`
    /// is `redis://host:port/db` for one server, `redis-cluster://host:port`
    /// (more nodes as `?node=host:port`) or a comma-separated list of
    /// `redis://host:port` for a cluster; `rediss://` needs the
    /// `tls-rustls` feature.
    pub async fn new(url: &str) -> JournalResult<Self> {
        Self::open(url, RedisOptions::default()).await
    }

    /// Connects with `options` and loads the scripts.
    ///
    /// A server that cannot be reached is `Unavailable`; a bad URL or bad
    /// options are `Storage` errors. Neither message carries a password.
    #[tracing::instrument(level = "debug", skip_all, fields(backend = BACKEND, servers = %servers_of(url)))]
    pub async fn open(url: &str, options: RedisOptions) -> JournalResult<Self> {
        if !options::valid_prefix(&options.key_prefix) {
            return Err(JournalError::storage(
                BACKEND,
                format!(
                    "invalid key prefix {:?}: use 1 to 64 of A-Z a-z 0-9 _ - . :",
                    options.key_prefix
                ),
            ));
        }
        if options.pool_size == 0 {
            return Err(JournalError::storage(
                BACKEND,
                "pool_size must be at least 1",
            ));
        }
        if options.wait_for_replicas.is_some_and(|w| w.replicas == 0) {
            return Err(JournalError::storage(
                BACKEND,
                "wait_for_replicas needs at least 1 replica",
            ));
        }
        let config = parse_url(url)?;
        let pool = Builder::from_config(config)
            .with_connection_config(|c| {
                c.connection_timeout = options.connect_timeout;
                c.internal_command_timeout = options.connect_timeout;
                // Connections carry the client's name, so operators (and
                // the tests) can tell ours apart in CLIENT LIST.
                c.auto_client_setname = true;
            })
            .with_performance_config(|p| {
                p.default_command_timeout = options.command_timeout;
            })
            .set_policy(ReconnectPolicy::new_exponential(0, 20, 2_000, 2))
            .build_pool(options.pool_size)
            .map_err(redis_error)?;
        if let Err(e) = pool.init().await {
            let _ = pool.quit().await;
            return Err(JournalError::unavailable(
                BACKEND,
                format!("cannot connect to {}: {e}", servers_of(url)),
            ));
        }
        let mut shas = Vec::with_capacity(scripts::ALL.len());
        for lua in scripts::ALL {
            match load_script(&pool, lua).await {
                Ok(sha) => shas.push(sha),
                Err(e) => {
                    let _ = pool.quit().await;
                    return Err(e);
                }
            }
        }
        Ok(RedisJournalStorage {
            inner: Arc::new(Inner {
                pool,
                keys: Keys::new(&options.key_prefix),
                prefix: options.key_prefix,
                shas,
                limits: Limits {
                    max_entry_bytes: options.max_entry_bytes,
                },
                wait: options.wait_for_replicas,
            }),
        })
    }

    /// The names the storage's connections carry (`CLIENT SETNAME`), as
    /// `CLIENT LIST` shows them.
    pub fn connection_names(&self) -> Vec<String> {
        self.inner
            .pool
            .clients()
            .iter()
            .map(|c| c.id().to_owned())
            .collect()
    }

    /// Whether the storage talks to a Redis Cluster.
    pub fn is_clustered(&self) -> bool {
        self.inner.pool.is_clustered()
    }

    /// The key prefix.
    pub fn key_prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// Closes the connections. Calls made afterwards fail.
    pub async fn close(&self) {
        let _ = self.inner.pool.quit().await;
    }

    fn client(&self) -> &Client {
        self.inner.pool.next()
    }

    /// Runs a script by SHA on `client`, loading it again if the server
    /// lost it.
    ///
    /// `args` builds the arguments: a second time only for that retry, so
    /// the usual call copies nothing.
    async fn script(
        &self,
        client: &Client,
        script: Script,
        keys: &[Bytes],
        args: impl Fn() -> Vec<Value> + Send + Sync,
    ) -> JournalResult<Value> {
        let sha = &self.inner.shas[script as usize];
        let key_list = || keys.iter().cloned().map(Key::from).collect::<Vec<_>>();
        match client
            .evalsha::<Value, _, _, _>(sha.clone(), key_list(), args())
            .await
        {
            Err(e) if is_noscript(&e) => {
                load_script(&self.inner.pool, scripts::ALL[script as usize]).await?;
                client
                    .evalsha(sha.clone(), key_list(), args())
                    .await
                    .map_err(redis_error)
            }
            result => result.map_err(redis_error),
        }
    }

    /// With [`RedisOptions::wait_for_replicas`], waits until enough
    /// replicas acknowledge the writes `client` made to `slot`.
    async fn wait_for_replicas(&self, client: &Client, slot: u16) -> JournalResult<()> {
        let Some(wait) = self.inner.wait else {
            return Ok(());
        };
        // The wait is part of the call: it never outlasts the command
        // timeout, whatever the configured replica timeout.
        let command_timeout = self.inner.pool.perf_config().default_command_timeout;
        let waited = wait.timeout.min(command_timeout);
        let options = Options {
            cluster_hash: Some(ClusterHash::Custom(slot)),
            timeout: Some(command_timeout.saturating_add(Duration::from_secs(1))),
            ..Options::default()
        };
        let timeout_ms = i64::try_from(waited.as_millis()).unwrap_or(i64::MAX).max(1);
        let acknowledged: i64 = client
            .with_options(&options)
            .wait(i64::from(wait.replicas), timeout_ms)
            .await
            .map_err(redis_error)?;
        if acknowledged < i64::from(wait.replicas) {
            return Err(JournalError::unavailable(
                BACKEND,
                format!(
                    "the write is on the primary but only {acknowledged} of {} replicas \
                     acknowledged it within {:?}; retrying it is safe",
                    wait.replicas, waited
                ),
            ));
        }
        Ok(())
    }

    /// Appends a validated, non-empty batch of one actor.
    async fn append_validated(&self, batch: &[JournalEntry]) -> JournalResult<()> {
        let Some(first) = batch.first() else {
            return Ok(());
        };
        let keys = self.inner.keys.actor(&first.actor_id);
        let client = self.client();
        let reply = self
            .script(client, Script::Append, &scripts::append_keys(&keys), || {
                scripts::append_args(batch)
            })
            .await?;
        let reply = reply.into_array();
        match reply.first().and_then(Value::as_i64) {
            // Written, or already stored with the same ids (a retry):
            // either way the caller's entries are there.
            Some(0 | 1) => self.wait_for_replicas(client, keys.slot()).await,
            Some(2) => {
                let highest = reply.get(1).and_then(Value::as_u64).unwrap_or(0);
                Err(validate::sequence_conflict(
                    &first.actor_id,
                    highest,
                    first.sequence,
                ))
            }
            _ => Err(bad_reply("append")),
        }
    }

    async fn bucket_totals(&self, bucket: u16) -> JournalResult<JournalStats> {
        let stats = self.inner.keys.bucket(bucket).stats();
        let values: Vec<Value> = self
            .client()
            .hmget(stats, vec!["a", "e", "c"])
            .await
            .map_err(redis_error)?;
        let count = |i: usize| {
            values
                .get(i)
                .and_then(Value::as_i64)
                .map_or(0, |v| u64::try_from(v).unwrap_or(0))
        };
        Ok(JournalStats {
            actors: count(0),
            entries: count(1),
            checkpoints: count(2),
        })
    }

    async fn bucket_actors(
        &self,
        bucket: u16,
        after: Option<&str>,
        limit: usize,
    ) -> JournalResult<Vec<String>> {
        let actors = self.inner.keys.bucket(bucket).actors();
        // Bounds are formatted here: an id that starts with `(` or `[` must
        // not be taken for a bound marker.
        let min = after.map_or(
            ZRange {
                kind: ZRangeKind::Inclusive,
                range: ZRangeBound::NegInfinityLex,
            },
            |after| ZRange {
                kind: ZRangeKind::Exclusive,
                range: ZRangeBound::Lex(format!("({after}")),
            },
        );
        let max = ZRange {
            kind: ZRangeKind::Inclusive,
            range: ZRangeBound::InfiniteLex,
        };
        let count = i64::try_from(limit).unwrap_or(i64::MAX);
        self.client()
            .zrangebylex(actors, min, max, Some((0, count)))
            .await
            .map_err(redis_error)
    }
}

/// Loads a script on every primary and returns its SHA-1.
async fn load_script(pool: &Pool, lua: &str) -> JournalResult<Str> {
    let client = pool.next();
    let sha: Str = if client.is_clustered() {
        client.script_load_cluster(lua).await
    } else {
        client.script_load(lua).await
    }
    .map_err(redis_error)?;
    Ok(sha)
}

/// Reads a decimal or integer reply as a `u64` (`nil` is 0).
fn reply_u64(value: &Value, what: &str) -> JournalResult<u64> {
    match value {
        Value::Null => Ok(0),
        other => other.as_u64().ok_or_else(|| bad_reply(what)),
    }
}

/// Decodes `XRANGE` replies: `[[id, [field, value, ...]], ...]`.
fn decode_entries(actor_id: &str, reply: Value) -> JournalResult<Vec<JournalEntry>> {
    let corrupt = |sequence: u64, reason: &str| JournalError::CorruptEntry {
        actor_id: actor_id.to_owned(),
        sequence,
        reason: reason.to_owned(),
    };
    let items = reply.into_array();
    let mut entries = Vec::with_capacity(items.len());
    for item in items {
        let mut parts = item.into_array().into_iter();
        let (Some(id), Some(fields)) = (parts.next(), parts.next()) else {
            return Err(corrupt(0, "a stream entry without id or fields"));
        };
        let sequence = id
            .as_str()
            .and_then(|id| id.strip_suffix("-0").and_then(|s| s.parse::<u64>().ok()))
            .ok_or_else(|| corrupt(0, "a stream entry id that is not <sequence>-0"))?;
        let fields = fields.into_array();
        let bytes = fields
            .chunks_exact(2)
            .find(|pair| pair[0].as_str().as_deref() == Some("d"))
            .and_then(|pair| pair[1].as_bytes())
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
        validate::validate_entry(entry, &self.inner.limits)?;
        self.append_validated(std::slice::from_ref(entry)).await?;
        Ok(entry.sequence)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(backend = BACKEND, actor_id = entries.first().map(|e| e.actor_id.as_str()), sequence = entries.first().map(|e| e.sequence), count = entries.len()))]
    async fn append_batch(&self, entries: &[JournalEntry]) -> JournalResult<()> {
        validate::validate_batch(entries, &self.inner.limits)?;
        self.append_validated(entries).await
    }

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn replay_range(
        &self,
        actor_id: &str,
        from: u64,
        to: u64,
        max: usize,
    ) -> JournalResult<Vec<JournalEntry>> {
        let from = from.max(1);
        // Nothing is stored above MAX_SEQUENCE: a larger `to` (u64::MAX,
        // "to the end") means the limit.
        let to = validate::clamp_sequence(to);
        if max == 0 || from > to {
            return Ok(Vec::new());
        }
        let keys = self.inner.keys.actor(actor_id);
        // Stream ids are `<sequence>-0`; a bare number as the end bound
        // means `<number>-<max>`, so `to` is included.
        // The driver refuses COUNTs near i64::MAX; a limit of four billion
        // entries or more is no limit for one reply.
        let count = u32::try_from(max).ok().map(u64::from);
        let reply: Value = self
            .client()
            .xrange(keys.entries(), format!("{from}-0"), to.to_string(), count)
            .await
            .map_err(redis_error)?;
        decode_entries(actor_id, reply)
    }

    fn replay_page_size(&self) -> usize {
        REPLAY_PAGE
    }

    fn limits(&self) -> Limits {
        self.inner.limits
    }

    /// Pages of [`REPLAY_PAGE`] entries, the next one fetched while this
    /// one is consumed.
    fn replay_stream<'a>(&'a self, actor_id: &'a str, from: u64) -> EntryStream<'a> {
        journal_core::prefetched_replay(self.clone(), actor_id, from, REPLAY_PAGE)
    }

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn highest_sequence(&self, actor_id: &str) -> JournalResult<u64> {
        let keys = self.inner.keys.actor(actor_id);
        let value: Value = self
            .client()
            .get(keys.highest())
            .await
            .map_err(redis_error)?;
        reply_u64(&value, "highest sequence")
    }

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn truncate_to(&self, actor_id: &str, to: u64) -> JournalResult<()> {
        // The script compares `to` as a Lua number: clamped, it is exact.
        let to = validate::clamp_sequence(to);
        let keys = self.inner.keys.actor(actor_id);
        let client = self.client();
        self.script(
            client,
            Script::Truncate,
            &[keys.highest(), keys.entries(), keys.bucket().stats()],
            || {
                vec![
                    to.to_string().into(),
                    format!("{}-0", to.saturating_add(1)).into(),
                ]
            },
        )
        .await?;
        self.wait_for_replicas(client, keys.slot()).await
    }

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn delete_actor(&self, actor_id: &str) -> JournalResult<()> {
        let keys = self.inner.keys.actor(actor_id);
        let client = self.client();
        self.script(
            client,
            Script::Delete,
            &[
                keys.highest(),
                keys.entries(),
                keys.checkpoint_index(),
                keys.checkpoints(),
                keys.bucket().actors(),
                keys.bucket().stats(),
            ],
            || vec![actor_id.to_owned().into()],
        )
        .await?;
        self.wait_for_replicas(client, keys.slot()).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(backend = BACKEND, actor_id = %checkpoint.actor_id, sequence = checkpoint.sequence))]
    async fn save_checkpoint(&self, checkpoint: &Checkpoint) -> JournalResult<()> {
        validate::validate_checkpoint(checkpoint)?;
        let keys = self.inner.keys.actor(&checkpoint.actor_id);
        let client = self.client();
        let reply = self
            .script(
                client,
                Script::SaveCheckpoint,
                &[
                    keys.highest(),
                    keys.checkpoint_index(),
                    keys.checkpoints(),
                    keys.bucket().stats(),
                ],
                || {
                    vec![
                        checkpoint.sequence.to_string().into(),
                        Value::Bytes(Bytes::from(checkpoint.encode_to_vec())),
                    ]
                },
            )
            .await?
            .into_array();
        match reply.first().and_then(Value::as_i64) {
            Some(1) => self.wait_for_replicas(client, keys.slot()).await,
            Some(0) => {
                let highest = reply.get(1).and_then(Value::as_u64).unwrap_or(0);
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
                self.client(),
                Script::LatestCheckpoint,
                &[keys.checkpoint_index(), keys.checkpoints()],
                Vec::new,
            )
            .await?
            .into_array();
        let (Some(sequence), Some(bytes)) = (reply.first(), reply.get(1)) else {
            return Ok(None);
        };
        let sequence = reply_u64(sequence, "checkpoint sequence")?;
        let bytes = bytes
            .as_bytes()
            .ok_or_else(|| bad_reply("checkpoint bytes"))?;
        Checkpoint::decode_stored(actor_id, sequence, bytes).map(Some)
    }

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn get_checkpoint(
        &self,
        actor_id: &str,
        sequence: u64,
    ) -> JournalResult<Option<Checkpoint>> {
        let keys = self.inner.keys.actor(actor_id);
        let value: Value = self
            .client()
            .hget(keys.checkpoints(), sequence.to_string())
            .await
            .map_err(redis_error)?;
        match value {
            Value::Null => Ok(None),
            other => {
                let bytes = other
                    .as_bytes()
                    .ok_or_else(|| bad_reply("checkpoint bytes"))?;
                Checkpoint::decode_stored(actor_id, sequence, bytes).map(Some)
            }
        }
    }

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn list_checkpoints(&self, actor_id: &str) -> JournalResult<Vec<u64>> {
        let keys = self.inner.keys.actor(actor_id);
        let values: Vec<Value> = self
            .client()
            .zrange(keys.checkpoint_index(), 0, -1, None, false, None, false)
            .await
            .map_err(redis_error)?;
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
        let client = self.client();
        let removed = self
            .script(
                client,
                Script::DeleteCheckpointsBefore,
                &[
                    keys.checkpoint_index(),
                    keys.checkpoints(),
                    keys.bucket().stats(),
                ],
                || vec![before.to_string().into()],
            )
            .await?;
        let removed = reply_u64(&removed, "checkpoints removed")?;
        self.wait_for_replicas(client, keys.slot()).await?;
        Ok(removed)
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
            let windows = try_join_all(
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
                self.client(),
                Script::Summary,
                &[keys.highest(), keys.entries(), keys.checkpoint_index()],
                Vec::new,
            )
            .await?
            .into_array();
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

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn stats(&self) -> JournalResult<JournalStats> {
        let mut total = JournalStats::default();
        let mut bucket = 0;
        while bucket < BUCKETS {
            let end = (bucket + BUCKET_WINDOW).min(BUCKETS);
            for stats in try_join_all((bucket..end).map(|b| self.bucket_totals(b))).await? {
                total.actors += stats.actors;
                total.entries += stats.entries;
                total.checkpoints += stats.checkpoints;
            }
            bucket = end;
        }
        Ok(total)
    }
}
