//! The raw baselines: each backend's driver doing the same I/O as the
//! journal, with nothing of the journal around it.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, PoisonError};

use async_trait::async_trait;
use journal_core::JournalEntry;
use prost::Message;
use rusqlite::{params, Connection};

use crate::Baseline;

/// Memory: a map of vectors behind one mutex; no validation, no trait
/// object, no async layer.
#[derive(Debug, Default)]
pub struct RawMemory(Mutex<HashMap<String, Vec<JournalEntry>>>);

#[async_trait]
impl Baseline for RawMemory {
    fn describe(&self) -> String {
        "Mutex<HashMap<actor, Vec<entry>>>".into()
    }
    async fn append(&self, entry: &JournalEntry) {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        map.entry(entry.actor_id.clone())
            .or_default()
            .push(entry.clone());
    }
    async fn replay(&self, actor_id: &str) -> usize {
        let map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(actor_id).map_or(0, |entries| entries.clone().len())
    }
}

/// SQLite: one rusqlite connection with the journal's pragmas (WAL,
/// `synchronous=FULL`) and the same table, inserting one row per commit;
/// replay is `SELECT` plus protobuf decoding.
pub struct RawSqlite(Mutex<Connection>);

impl RawSqlite {
    /// Creates the baseline's own database file at `path`.
    pub fn create(path: &Path) -> rusqlite::Result<Self> {
        let conn = Connection::open(path)?;
        conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))?;
        conn.execute_batch(
            "PRAGMA synchronous = FULL;
             PRAGMA cache_size = -8192;
             PRAGMA mmap_size = 268435456;
             CREATE TABLE entries (
                 actor_id TEXT NOT NULL, sequence INTEGER NOT NULL, entry_id TEXT NOT NULL, entry BLOB NOT NULL,
                 PRIMARY KEY (actor_id, sequence));",
        )?;
        Ok(RawSqlite(Mutex::new(conn)))
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> T) -> T {
        tokio::task::block_in_place(|| f(&self.0.lock().unwrap_or_else(PoisonError::into_inner)))
    }
}

fn insert(conn: &Connection, e: &JournalEntry) -> rusqlite::Result<usize> {
    conn.prepare_cached(
        "INSERT INTO entries (actor_id, sequence, entry_id, entry) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![
        e.actor_id,
        i64::try_from(e.sequence).unwrap_or(i64::MAX),
        e.id,
        e.encode_to_vec()
    ])
}

#[async_trait]
impl Baseline for RawSqlite {
    fn describe(&self) -> String {
        "rusqlite, same pragmas and table".into()
    }
    fn batch_shape(&self) -> String {
        "100 rows per commit".into()
    }
    async fn append(&self, entry: &JournalEntry) {
        self.with(|conn| insert(conn, entry).expect("raw insert"));
    }
    async fn append_many(&self, entries: &[JournalEntry]) {
        self.with(|conn| {
            for chunk in entries.chunks(100) {
                conn.execute_batch("BEGIN").expect("begin");
                for e in chunk {
                    insert(conn, e).expect("raw insert");
                }
                conn.execute_batch("COMMIT").expect("commit");
            }
        });
    }
    async fn replay(&self, actor_id: &str) -> usize {
        self.with(|conn| {
            let mut stmt = conn
                .prepare_cached("SELECT entry FROM entries WHERE actor_id = ?1 ORDER BY sequence")
                .expect("prepare");
            let mut rows = stmt.query([actor_id]).expect("query");
            let mut n = 0;
            while let Some(row) = rows.next().expect("row") {
                let bytes = row.get_ref(0).expect("column").as_blob().expect("blob");
                std::hint::black_box(JournalEntry::decode(bytes).expect("decode"));
                n += 1;
            }
            n
        })
    }
}

/// PostgreSQL: one tokio-postgres connection, the journal's table layout in
/// its own schema, one `INSERT` per commit; 1,000-row `unnest` inserts for
/// the batch figure; replay is `SELECT` plus protobuf decoding.
pub struct RawPostgres {
    client: tokio_postgres::Client,
    schema: String,
}

impl RawPostgres {
    /// Connects and creates the baseline's schema `schema` (dropped by
    /// [`RawPostgres::drop_schema`]).
    pub async fn create(url: &str, schema: &str) -> Result<Self, tokio_postgres::Error> {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        client
            .batch_execute(&format!(
                "CREATE SCHEMA {schema};
                 CREATE TABLE {schema}.entries (actor_id BYTEA NOT NULL, sequence BIGINT NOT NULL,
                     entry_id TEXT NOT NULL, entry BYTEA NOT NULL, PRIMARY KEY (actor_id, sequence));"
            ))
            .await?;
        Ok(RawPostgres {
            client,
            schema: schema.to_owned(),
        })
    }

    /// Drops the baseline's schema.
    pub async fn drop_schema(&self) -> Result<(), tokio_postgres::Error> {
        self.client
            .batch_execute(&format!("DROP SCHEMA {} CASCADE", self.schema))
            .await
    }
}

#[async_trait]
impl Baseline for RawPostgres {
    fn describe(&self) -> String {
        "tokio-postgres, same table".into()
    }
    fn batch_shape(&self) -> String {
        "1,000-row unnest insert per commit".into()
    }
    async fn append(&self, e: &JournalEntry) {
        let sql = format!(
            "INSERT INTO {}.entries VALUES ($1, $2, $3, $4)",
            self.schema
        );
        let statement = self.client.prepare(&sql).await.expect("prepare");
        let sequence = i64::try_from(e.sequence).unwrap_or(i64::MAX);
        self.client
            .execute(
                &statement,
                &[&e.actor_id.as_bytes(), &sequence, &e.id, &e.encode_to_vec()],
            )
            .await
            .expect("raw insert");
    }
    async fn append_many(&self, entries: &[JournalEntry]) {
        let sql = format!(
            "INSERT INTO {}.entries SELECT * FROM unnest($1::bytea[], $2::bigint[], $3::text[], $4::bytea[])",
            self.schema
        );
        let statement = self.client.prepare(&sql).await.expect("prepare");
        for chunk in entries.chunks(1000) {
            let actors: Vec<&[u8]> = chunk.iter().map(|e| e.actor_id.as_bytes()).collect();
            let sequences: Vec<i64> = chunk
                .iter()
                .map(|e| i64::try_from(e.sequence).unwrap_or(i64::MAX))
                .collect();
            let ids: Vec<&str> = chunk.iter().map(|e| e.id.as_str()).collect();
            let bytes: Vec<Vec<u8>> = chunk.iter().map(Message::encode_to_vec).collect();
            self.client
                .execute(&statement, &[&actors, &sequences, &ids, &bytes])
                .await
                .expect("raw unnest insert");
        }
    }
    async fn replay(&self, actor_id: &str) -> usize {
        let sql = format!(
            "SELECT entry FROM {}.entries WHERE actor_id = $1 ORDER BY sequence",
            self.schema
        );
        let rows = self
            .client
            .query(&sql, &[&actor_id.as_bytes()])
            .await
            .expect("raw select");
        for row in &rows {
            let bytes: &[u8] = row.get(0);
            std::hint::black_box(JournalEntry::decode(bytes).expect("decode"));
        }
        rows.len()
    }
}

/// Redis: one multiplexed redis-rs connection calling the journal's own
/// append script directly (`EVALSHA`, same keys, same arguments), 1,000
/// entries per call for the batch figure; replay is one `XRANGE` plus
/// protobuf decoding.
pub struct RawRedis {
    connection: redis::aio::MultiplexedConnection,
    keys: journal_redis::keys::Keys,
    append_sha: String,
    prefix: String,
}

impl RawRedis {
    /// Connects to `url` and loads the append script; keys go under
    /// `prefix` (deleted by [`RawRedis::delete_keys`]).
    pub async fn create(url: &str, prefix: &str) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let mut connection = client.get_multiplexed_async_connection().await?;
        let append_sha: String = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(journal_redis::scripts::APPEND)
            .query_async(&mut connection)
            .await?;
        Ok(RawRedis {
            connection,
            keys: journal_redis::keys::Keys::new(prefix),
            append_sha,
            prefix: prefix.to_owned(),
        })
    }

    /// Round-trip times of `n` plain `SET`s of a 100-byte value.
    pub async fn set_round_trips(&self, n: usize) -> Vec<std::time::Duration> {
        let key = format!("{}:set-probe", self.prefix);
        let mut connection = self.connection.clone();
        let mut times = Vec::with_capacity(n);
        for _ in 0..n {
            let started = std::time::Instant::now();
            let () = redis::cmd("SET")
                .arg(&key)
                .arg(vec![b'x'; 100])
                .query_async(&mut connection)
                .await
                .expect("raw SET");
            times.push(started.elapsed());
        }
        times
    }

    /// Deletes every key under the prefix, server-side.
    pub async fn delete_keys(&self, prefix: &str) -> Result<(), redis::RedisError> {
        let script = "local cursor = '0' repeat \
            local r = redis.call('SCAN', cursor, 'MATCH', ARGV[1], 'COUNT', 1000) \
            cursor = r[1] \
            for _, k in ipairs(r[2]) do redis.call('UNLINK', k) end \
            until cursor == '0' return 0";
        let _: i64 = redis::cmd("EVAL")
            .arg(script)
            .arg(0)
            .arg(format!("{prefix}*"))
            .query_async(&mut self.connection.clone())
            .await?;
        Ok(())
    }

    /// `MEMORY USAGE` of a key, every element counted (`SAMPLES 0`).
    pub async fn memory_usage(&self, key: &[u8]) -> Result<u64, redis::RedisError> {
        redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(key)
            .arg("SAMPLES")
            .arg(0)
            .query_async(&mut self.connection.clone())
            .await
    }

    /// A server setting (`CONFIG GET`), `None` when the server has no
    /// such setting.
    pub async fn config_get(&self, name: &str) -> Result<Option<String>, redis::RedisError> {
        let pair: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg(name)
            .query_async(&mut self.connection.clone())
            .await?;
        Ok(pair.into_iter().nth(1))
    }

    /// Changes a server setting (`CONFIG SET`).
    pub async fn config_set(&self, name: &str, value: &str) -> Result<(), redis::RedisError> {
        redis::cmd("CONFIG")
            .arg("SET")
            .arg(name)
            .arg(value)
            .query_async(&mut self.connection.clone())
            .await
    }

    /// The server's `used_memory` (`INFO memory`).
    pub async fn used_memory(&self) -> Result<u64, redis::RedisError> {
        let info: String = redis::cmd("INFO")
            .arg("memory")
            .query_async(&mut self.connection.clone())
            .await?;
        Ok(info
            .lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0))
    }

    async fn call_append(&self, batch: &[JournalEntry]) {
        let Some(first) = batch.first() else {
            return;
        };
        let keys =
            journal_redis::scripts::append_keys(&self.keys.actor(&first.actor_id), batch, false);
        let _: redis::Value = redis::cmd("EVALSHA")
            .arg(&self.append_sha)
            .arg(keys.len())
            .arg(keys)
            .arg(journal_redis::scripts::append_args(batch))
            .query_async(&mut self.connection.clone())
            .await
            .expect("raw EVALSHA");
    }
}

#[async_trait]
impl Baseline for RawRedis {
    fn describe(&self) -> String {
        "redis-rs, the append script called directly".into()
    }
    fn batch_shape(&self) -> String {
        "1,000 entries per script call".into()
    }
    async fn append(&self, entry: &JournalEntry) {
        self.call_append(std::slice::from_ref(entry)).await;
    }
    async fn append_many(&self, entries: &[JournalEntry]) {
        // The script appends to one actor: one call per run of an actor's
        // entries (every entry, when actors take turns).
        for run in entries.chunk_by(|a, b| a.actor_id == b.actor_id) {
            for chunk in run.chunks(1000) {
                self.call_append(chunk).await;
            }
        }
    }
    async fn replay(&self, actor_id: &str) -> usize {
        use redis::Value;
        let reply: Value = redis::cmd("XRANGE")
            .arg(self.keys.actor(actor_id).entries())
            .arg("-")
            .arg("+")
            .query_async(&mut self.connection.clone())
            .await
            .expect("raw XRANGE");
        let Value::Array(items) = reply else {
            panic!("XRANGE reply")
        };
        for item in &items {
            let Value::Array(parts) = item else {
                panic!("XRANGE item")
            };
            let Some(Value::Array(fields)) = parts.get(1) else {
                panic!("XRANGE fields")
            };
            // The field `d`: the only one (entries of the first layout
            // also had `i` before it).
            let Some(Value::BulkString(bytes)) = fields.last() else {
                panic!("entry bytes")
            };
            std::hint::black_box(JournalEntry::decode(bytes.as_slice()).expect("decode"));
        }
        items.len()
    }
}
