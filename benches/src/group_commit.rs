//! Concurrent appends against the engine's ceiling (issue 22): 256 actors
//! appending through the journal's group commit, beside a raw writer that
//! does the same group commit with nothing of the journal around it. Both
//! sides see the same load: one task per actor, appending its own entries
//! ([`bench_entry`]) one after another, each waiting for its
//! acknowledgement, so at most one entry per actor is queued at a time.
//!
//! The raw writers mirror the library's grouping:
//!
//! - [`RawSqliteGroup`]: as `journal-sqlite`'s writer thread
//!   (`threads::writer_loop`), one thread with its own connection blocks on
//!   a channel for the first row, takes every row queued behind it (the
//!   journal takes up to 512, more than 256 actors can queue), and inserts
//!   them in one `BEGIN IMMEDIATE` ... `COMMIT`, then acknowledges each.
//!   Same pragmas as the journal's connections (`schema::connect`,
//!   `prepare_writer`, `apply_pragmas`): WAL, `synchronous=FULL`, 8 MiB page
//!   cache, `temp_store=MEMORY`, 256 MiB `mmap_size`. Its table is either
//!   the journal's own log layout (schema version 7's `entry_log`:
//!   `AUTOINCREMENT` position, the epoch index, a new epoch once the last
//!   holds 128 rows) or the plain `(actor_id, sequence)` table of
//!   [`RawSqlite`](crate::baselines::RawSqlite). What the journal does and
//!   this does not: validation, its cache of highest sequences, an actor's
//!   row in `actors` on its first append, indexing waiting rows into
//!   `entry_index` every 16,384 rows, and WAL checkpoints on a thread of
//!   its own (this one checkpoints as SQLite does by default, in the
//!   committing connection).
//! - [`RawPostgresGroup`]: as `journal-postgres`'s dispatcher
//!   (`group::spawn`), one task waits for the first row, then for a free
//!   connection (as many as the journal's pool: one group in flight per
//!   connection), takes every row queued meanwhile (up to 1,024, the
//!   journal's `max_group`) and sends them as one statement, in one round
//!   trip and one implicit transaction, on a task of its own; every caller
//!   is acknowledged when it returns. The statement is `INSERT INTO
//!   entries SELECT * FROM unnest($1::bytea[], $2::bigint[], $3::text[],
//!   $4::bytea[])` into [`RawPostgres`](crate::baselines::RawPostgres)'s
//!   table; the journal's is `append_many(...)`, a PL/pgSQL function that
//!   also locks and updates each actor's row in `actors` (sequence check,
//!   feed position), inserts into `entries` (with its feed index), and
//!   `pg_notify`s the group's actors. The journal also sorts a group by
//!   actor and sequence (its lock order); the raw writer does not need to.
//!   [`PgStatement`] also has the steps between the two statements, which
//!   the `pg_group_commit_probe` example runs one by one to find what
//!   costs what.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use journal_core::{JournalEntry, JournalStorage};
use prost::Message;
use rusqlite::{params, Connection};
use tokio::sync::{mpsc, oneshot};

use crate::workloads::{bench_entry, unique};
use crate::{Better, Figure};

/// Alternating rounds of each side; their appends and times are pooled.
pub const ROUNDS: usize = 3;

/// Entries each actor appends, untimed, before the first round (the
/// journal's pool opens its connections and prepares its statements).
pub const WARM_UP: u64 = 4;

/// Something that appends one entry and resolves once it is durable.
#[async_trait]
pub trait GroupWriter: Send + Sync {
    /// What it is, for the report.
    fn describe(&self) -> String;
    /// Appends `entry`; returns once its group has committed.
    async fn append(&self, entry: JournalEntry);
}

/// The journal's side: `append_entry` on a storage.
pub struct Journal(pub Arc<dyn JournalStorage>);

#[async_trait]
impl GroupWriter for Journal {
    fn describe(&self) -> String {
        format!("{} append_entry", self.0.backend_name())
    }
    async fn append(&self, entry: JournalEntry) {
        self.0.append_entry(&entry).await.expect("append");
    }
}

/// Commits and rows of a raw writer, counted by the writer itself.
#[derive(Debug, Default)]
pub struct CommitCount {
    commits: AtomicU64,
    rows: AtomicU64,
}

impl CommitCount {
    fn record(&self, rows: usize) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.rows.fetch_add(rows as u64, Ordering::Relaxed);
    }

    /// `(commits, rows)` so far.
    pub fn get(&self) -> (u64, u64) {
        (
            self.commits.load(Ordering::Relaxed),
            self.rows.load(Ordering::Relaxed),
        )
    }
}

/// One entry on its way to a raw writer, and the caller's acknowledgement.
struct Queued {
    actor_id: String,
    sequence: i64,
    id: String,
    bytes: Vec<u8>,
    ack: oneshot::Sender<()>,
}

impl Queued {
    fn of(entry: &JournalEntry) -> (Queued, oneshot::Receiver<()>) {
        let (ack, acked) = oneshot::channel();
        let queued = Queued {
            actor_id: entry.actor_id.clone(),
            sequence: i64::try_from(entry.sequence).unwrap_or(i64::MAX),
            id: entry.id.clone(),
            bytes: entry.encode_to_vec(),
            ack,
        };
        (queued, acked)
    }
}

/// The table a [`RawSqliteGroup`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqliteLayout {
    /// The journal's `entry_log` (schema version 7): rows in insertion
    /// order under an `AUTOINCREMENT` position, indexed by `(epoch,
    /// actor_key, sequence)`.
    JournalLog,
    /// One table keyed by `(actor_id, sequence)`, as
    /// [`RawSqlite`](crate::baselines::RawSqlite)'s.
    Plain,
}

/// Rows an epoch takes before the next commit starts a new one
/// (`journal_sqlite::threads::EPOCH_ROWS`).
const EPOCH_ROWS: usize = 128;

/// Raw SQLite group commit: one thread with a rusqlite connection on a file
/// of its own commits every queued row in one transaction (see the module
/// docs for what it mirrors). Dropping it stops the writer and closes its
/// connection.
pub struct RawSqliteGroup {
    sender: Option<std::sync::mpsc::Sender<Queued>>,
    thread: Option<std::thread::JoinHandle<()>>,
    layout: SqliteLayout,
    /// Commits and rows so far.
    pub count: Arc<CommitCount>,
}

impl RawSqliteGroup {
    /// Creates the file at `path` with `layout` and starts the writer.
    pub fn create(path: &std::path::Path, layout: SqliteLayout) -> rusqlite::Result<Self> {
        let conn = Connection::open(path)?;
        conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))?;
        conn.execute_batch(
            "PRAGMA synchronous = FULL;
             PRAGMA cache_size = -8192;
             PRAGMA temp_store = MEMORY;
             PRAGMA mmap_size = 268435456;
             PRAGMA foreign_keys = OFF;",
        )?;
        conn.execute_batch(match layout {
            SqliteLayout::JournalLog => {
                "CREATE TABLE entry_log (
                     position  INTEGER PRIMARY KEY AUTOINCREMENT,
                     epoch     INTEGER NOT NULL,
                     actor_key INTEGER NOT NULL,
                     actor_id  TEXT NOT NULL,
                     sequence  INTEGER NOT NULL,
                     entry_id  TEXT NOT NULL,
                     entry     BLOB NOT NULL
                 );
                 CREATE INDEX entry_log_by_epoch ON entry_log (epoch, actor_key, sequence);"
            }
            SqliteLayout::Plain => {
                "CREATE TABLE entries (
                     actor_id TEXT NOT NULL, sequence INTEGER NOT NULL, entry_id TEXT NOT NULL,
                     entry BLOB NOT NULL, PRIMARY KEY (actor_id, sequence));"
            }
        })?;
        let (sender, receiver) = std::sync::mpsc::channel::<Queued>();
        let count = Arc::new(CommitCount::default());
        let counted = Arc::clone(&count);
        let thread = std::thread::Builder::new()
            .name("raw-sqlite-group".into())
            .spawn(move || sqlite_writer(&conn, &receiver, layout, &counted))
            .expect("a writer thread");
        Ok(RawSqliteGroup {
            sender: Some(sender),
            thread: Some(thread),
            layout,
            count,
        })
    }
}

impl Drop for RawSqliteGroup {
    fn drop(&mut self) {
        drop(self.sender.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The raw writer's loop: the first row, every row queued behind it, one
/// transaction, then every acknowledgement.
fn sqlite_writer(
    conn: &Connection,
    rows: &std::sync::mpsc::Receiver<Queued>,
    layout: SqliteLayout,
    count: &CommitCount,
) {
    let (mut epoch, mut epoch_rows) = (1i64, 0usize);
    while let Ok(first) = rows.recv() {
        let mut group = vec![first];
        group.extend(rows.try_iter());
        if epoch_rows >= EPOCH_ROWS {
            epoch += 1;
            epoch_rows = 0;
        }
        conn.prepare_cached("BEGIN IMMEDIATE")
            .and_then(|mut s| s.execute([]))
            .expect("begin");
        for row in &group {
            match layout {
                SqliteLayout::JournalLog => conn
                    .prepare_cached(
                        "INSERT INTO entry_log (epoch, actor_key, actor_id, sequence, entry_id, entry)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    )
                    .and_then(|mut s| {
                        s.execute(params![
                            epoch,
                            actor_key(&row.actor_id),
                            row.actor_id,
                            row.sequence,
                            row.id,
                            row.bytes
                        ])
                    }),
                SqliteLayout::Plain => conn
                    .prepare_cached(
                        "INSERT INTO entries (actor_id, sequence, entry_id, entry)
                         VALUES (?1, ?2, ?3, ?4)",
                    )
                    .and_then(|mut s| {
                        s.execute(params![row.actor_id, row.sequence, row.id, row.bytes])
                    }),
            }
            .expect("raw insert");
        }
        conn.prepare_cached("COMMIT")
            .and_then(|mut s| s.execute([]))
            .expect("commit");
        epoch_rows += group.len();
        count.record(group.len());
        for row in group {
            let _ = row.ack.send(());
        }
    }
}

/// The journal's actor key (`journal_sqlite::ops::actor_key`): FNV-1a of
/// the actor id, shifted right by one.
fn actor_key(actor_id: &str) -> i64 {
    let hash = actor_id.bytes().fold(0x811c_9dc5_u32, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    });
    i64::from(hash >> 1)
}

#[async_trait]
impl GroupWriter for RawSqliteGroup {
    fn describe(&self) -> String {
        let table = match self.layout {
            SqliteLayout::JournalLog => "the journal's entry_log layout",
            SqliteLayout::Plain => "a plain (actor_id, sequence) table",
        };
        format!("rusqlite, one writer thread, all queued rows per transaction, {table}")
    }
    async fn append(&self, entry: JournalEntry) {
        let (queued, acked) = Queued::of(&entry);
        self.sender
            .as_ref()
            .expect("writer open")
            .send(queued)
            .expect("writer running");
        acked.await.expect("acknowledged");
    }
}

/// Most rows in one raw PostgreSQL group (the journal's `max_group`).
pub const PG_MAX_GROUP: usize = 1024;

/// What a [`RawPostgresGroup`] sends for each group: the baseline's plain
/// insert, or one step from it towards what the journal sends (for finding
/// which step costs what).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgStatement {
    /// `INSERT INTO entries SELECT * FROM unnest($1::bytea[], $2::bigint[],
    /// $3::text[], $4::bytea[])` into a table of its own, with
    /// [`RawPostgres`](crate::baselines::RawPostgres)'s layout: the
    /// baseline.
    Unnest,
    /// The same insert, plus `pg_notify` of the group's actors in the same
    /// statement (a materialized CTE), as the journal announces a group.
    UnnestNotify,
    /// The same insert into the `entries` table of a journal schema made
    /// by `PostgresJournalStorage` (its feed index and `feed_pos` column
    /// too).
    UnnestIntoJournal,
    /// The journal's own `append_many` function of a journal schema (actor
    /// rows locked and updated, sequences checked), without the
    /// announcement (`notify: false`), or exactly the journal's group
    /// statement (`notify: true`).
    AppendMany {
        /// With the journal's `pg_notify`.
        notify: bool,
    },
}

impl PgStatement {
    /// Whether the writer creates its own schema and table (else the
    /// schema is a journal's, made beforehand).
    fn owns_table(self) -> bool {
        matches!(self, PgStatement::Unnest | PgStatement::UnnestNotify)
    }

    fn sql(self, s: &str) -> String {
        let insert = format!(
            "INSERT INTO {s}.entries (actor_id, sequence, entry_id, entry)
             SELECT * FROM unnest($1::bytea[], $2::bigint[], $3::text[], $4::bytea[])"
        );
        match self {
            PgStatement::Unnest | PgStatement::UnnestIntoJournal => insert,
            PgStatement::UnnestNotify => format!(
                "WITH n AS MATERIALIZED (SELECT pg_notify($5, $6)), i AS ({insert})
                 SELECT 1 FROM n"
            ),
            PgStatement::AppendMany { notify: false } => format!(
                "SELECT r.o_index, r.o_outcome, r.o_highest
                 FROM {s}.append_many($1, $2, $3, $4, $5, $6) r"
            ),
            PgStatement::AppendMany { notify: true } => format!(
                "WITH n AS MATERIALIZED (SELECT pg_notify($7, $8))
                 SELECT r.o_index, r.o_outcome, r.o_highest
                 FROM {s}.append_many($1, $2, $3, $4, $5, $6) r CROSS JOIN n"
            ),
        }
    }
}

/// Raw PostgreSQL group commit: a dispatcher hands every queued row (up to
/// [`PG_MAX_GROUP`]) to one of `connections` tokio-postgres connections as
/// one statement (see the module docs for what it mirrors).
pub struct RawPostgresGroup {
    sender: mpsc::UnboundedSender<Queued>,
    admin: tokio_postgres::Client,
    schema: String,
    connections: usize,
    statement: PgStatement,
    /// Commits and rows so far.
    pub count: Arc<CommitCount>,
}

impl RawPostgresGroup {
    /// The baseline: creates schema `schema` with
    /// [`RawPostgres`](crate::baselines::RawPostgres)'s table, opens
    /// `connections` connections, each with the `unnest` insert prepared,
    /// and starts the dispatcher.
    pub async fn create(
        url: &str,
        schema: &str,
        connections: usize,
    ) -> Result<Self, tokio_postgres::Error> {
        Self::with_statement(url, schema, connections, PgStatement::Unnest).await
    }

    /// As [`RawPostgresGroup::create`], sending `statement` for each group;
    /// for the statements on a journal's tables, `schema` is a journal
    /// schema made beforehand.
    pub async fn with_statement(
        url: &str,
        schema: &str,
        connections: usize,
        statement: PgStatement,
    ) -> Result<Self, tokio_postgres::Error> {
        let admin = connect(url).await?;
        if statement.owns_table() {
            admin
                .batch_execute(&format!(
                    "CREATE SCHEMA {schema};
                     CREATE TABLE {schema}.entries (actor_id BYTEA NOT NULL, sequence BIGINT NOT NULL,
                         entry_id TEXT NOT NULL, entry BYTEA NOT NULL, PRIMARY KEY (actor_id, sequence));"
                ))
                .await?;
        }
        let sql = statement.sql(schema);
        let connections = connections.max(1);
        let (free, idle) = mpsc::channel(connections);
        for _ in 0..connections {
            let client = connect(url).await?;
            let prepared = client.prepare(&sql).await?;
            free.send((client, prepared))
                .await
                .expect("room for every connection");
        }
        let (sender, receiver) = mpsc::unbounded_channel();
        let count = Arc::new(CommitCount::default());
        let send = GroupSend {
            statement,
            channel: {
                // The journal's channel name (`listen::channel`).
                let mut channel = format!("journal_{schema}");
                channel.truncate(63);
                channel
            },
        };
        tokio::spawn(pg_dispatcher(
            receiver,
            free,
            idle,
            Arc::new(send),
            Arc::clone(&count),
        ));
        Ok(RawPostgresGroup {
            sender,
            admin,
            schema: schema.to_owned(),
            connections,
            statement,
            count,
        })
    }

    /// The connection that created the schema, for looking at its table.
    pub fn admin(&self) -> &tokio_postgres::Client {
        &self.admin
    }

    /// The schema holding the table.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// Drops the schema (a journal's too, for the statements on one).
    pub async fn drop_schema(&self) -> Result<(), tokio_postgres::Error> {
        self.admin
            .batch_execute(&format!("DROP SCHEMA {} CASCADE", self.schema))
            .await
    }
}

async fn connect(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

type Connected = (tokio_postgres::Client, tokio_postgres::Statement);

/// How a group is sent: the statement, and the channel it announces on.
struct GroupSend {
    statement: PgStatement,
    channel: String,
}

impl GroupSend {
    /// Sends `group` as one statement on `client`.
    async fn group(
        &self,
        client: &tokio_postgres::Client,
        prepared: &tokio_postgres::Statement,
        group: &mut [Queued],
    ) {
        if matches!(self.statement, PgStatement::AppendMany { .. }) {
            // The journal's lock order.
            group.sort_by(|a, b| {
                a.actor_id
                    .cmp(&b.actor_id)
                    .then(a.sequence.cmp(&b.sequence))
            });
        }
        let actors: Vec<&[u8]> = group.iter().map(|r| r.actor_id.as_bytes()).collect();
        let sequences: Vec<i64> = group.iter().map(|r| r.sequence).collect();
        let ids: Vec<&str> = group.iter().map(|r| r.id.as_str()).collect();
        let bytes: Vec<&[u8]> = group.iter().map(|r| r.bytes.as_slice()).collect();
        // No tags; the announcement as the journal's (`listen::payload`):
        // the distinct actors, one a line (the bench's ids need no
        // escaping), empty beyond 7,000 bytes.
        let (tag_items, tags): (Vec<i32>, Vec<&[u8]>) = (Vec::new(), Vec::new());
        let mut announce = String::new();
        for (i, row) in group.iter().enumerate() {
            if i > 0 && group[i - 1].actor_id == row.actor_id {
                continue;
            }
            if !announce.is_empty() {
                announce.push('\n');
            }
            announce.push_str(&row.actor_id);
        }
        if announce.len() > 7_000 {
            announce.clear();
        }
        let result = match self.statement {
            PgStatement::Unnest | PgStatement::UnnestIntoJournal => {
                client
                    .execute(prepared, &[&actors, &sequences, &ids, &bytes])
                    .await
            }
            PgStatement::UnnestNotify => {
                client
                    .execute(
                        prepared,
                        &[&actors, &sequences, &ids, &bytes, &self.channel, &announce],
                    )
                    .await
            }
            PgStatement::AppendMany { notify: false } => {
                client
                    .execute(
                        prepared,
                        &[&actors, &sequences, &ids, &bytes, &tag_items, &tags],
                    )
                    .await
            }
            PgStatement::AppendMany { notify: true } => {
                client
                    .execute(
                        prepared,
                        &[
                            &actors,
                            &sequences,
                            &ids,
                            &bytes,
                            &tag_items,
                            &tags,
                            &self.channel,
                            &announce,
                        ],
                    )
                    .await
            }
        };
        result.expect("raw group statement");
    }
}

/// Waits for the first row, then for a free connection, takes every row
/// queued meanwhile, and commits them on a task of its own.
async fn pg_dispatcher(
    mut rows: mpsc::UnboundedReceiver<Queued>,
    free: mpsc::Sender<Connected>,
    mut idle: mpsc::Receiver<Connected>,
    send: Arc<GroupSend>,
    count: Arc<CommitCount>,
) {
    while let Some(first) = rows.recv().await {
        let Some((client, prepared)) = idle.recv().await else {
            return;
        };
        let mut group = vec![first];
        while group.len() < PG_MAX_GROUP {
            match rows.try_recv() {
                Ok(row) => group.push(row),
                Err(_) => break,
            }
        }
        let (free, send, count) = (free.clone(), Arc::clone(&send), Arc::clone(&count));
        tokio::spawn(async move {
            send.group(&client, &prepared, &mut group).await;
            count.record(group.len());
            for row in group {
                let _ = row.ack.send(());
            }
            let _ = free.send((client, prepared)).await;
        });
    }
}

#[async_trait]
impl GroupWriter for RawPostgresGroup {
    fn describe(&self) -> String {
        let what = match self.statement {
            PgStatement::Unnest => "unnest insert",
            PgStatement::UnnestNotify => "unnest insert + pg_notify",
            PgStatement::UnnestIntoJournal => "unnest insert into the journal's entries",
            PgStatement::AppendMany { notify: false } => "the journal's append_many, no pg_notify",
            PgStatement::AppendMany { notify: true } => "the journal's append_many + pg_notify",
        };
        format!(
            "tokio-postgres, {} connections, all queued rows (up to {PG_MAX_GROUP}) per {what}",
            self.connections
        )
    }
    async fn append(&self, entry: JournalEntry) {
        let (queued, acked) = Queued::of(&entry);
        self.sender.send(queued).expect("dispatcher running");
        acked.await.expect("acknowledged");
    }
}

/// What one side did over every round: appends, time, and each append's
/// latency (sorted).
#[derive(Debug, Clone, Default)]
pub struct Side {
    /// Appends timed.
    pub appends: u64,
    /// Wall time of the rounds, added up.
    pub elapsed: Duration,
    /// Every append's latency, sorted.
    pub latencies: Vec<Duration>,
}

impl Side {
    /// Appends per second over every round.
    pub fn rate(&self) -> f64 {
        self.appends as f64 / self.elapsed.as_secs_f64()
    }

    /// The `q` quantile of the latencies, in milliseconds.
    pub fn latency_ms(&self, q: f64) -> f64 {
        crate::workloads::percentile(&self.latencies, q) / 1e3
    }
}

/// Runs each of `writers` for [`ROUNDS`] rounds, taking turns: in a round,
/// `actors` fresh actors append `per_actor` entries each, a task per actor,
/// each append awaited before the next. Each writer first appends
/// [`WARM_UP`] entries per actor, untimed. Returns one [`Side`] per writer.
pub async fn measure(writers: &[Arc<dyn GroupWriter>], actors: usize, per_actor: u64) -> Vec<Side> {
    for writer in writers {
        round(writer, actors, WARM_UP).await;
    }
    let mut sides = vec![Side::default(); writers.len()];
    for _ in 0..ROUNDS {
        for (writer, side) in writers.iter().zip(&mut sides) {
            let started = Instant::now();
            let latencies = round(writer, actors, per_actor).await;
            side.elapsed += started.elapsed();
            side.appends += latencies.len() as u64;
            side.latencies.extend(latencies);
        }
    }
    for side in &mut sides {
        side.latencies.sort_unstable();
    }
    sides
}

/// One round: `actors` fresh actors at once, `n` appends each; returns
/// every append's latency.
async fn round(writer: &Arc<dyn GroupWriter>, actors: usize, n: u64) -> Vec<Duration> {
    let tasks: Vec<_> = (0..actors)
        .map(|_| {
            let (writer, actor) = (Arc::clone(writer), unique("group"));
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(n as usize);
                for seq in 1..=n {
                    let entry = bench_entry(&actor, seq);
                    let started = Instant::now();
                    writer.append(entry).await;
                    latencies.push(started.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::with_capacity(actors * n as usize);
    for task in tasks {
        all.extend(task.await.expect("task"));
    }
    all
}

/// The figures of `ours` against `raw`, with `actors` actors: appends per
/// second, and latency p50 and p99.
pub fn figures(ours: &Side, raw: &Side, raw_name: &str, actors: usize) -> Vec<Figure> {
    let figure = |name: String, value: f64, unit, baseline: f64, better| Figure {
        name,
        value,
        unit,
        baseline,
        baseline_name: format!("{raw_name} (pooled over {ROUNDS} rounds)"),
        better,
        target: String::new(),
        met: None,
    };
    vec![
        figure(
            format!("group commit appends/s, {actors} concurrent actors"),
            ours.rate(),
            "appends/s",
            raw.rate(),
            Better::Higher,
        ),
        figure(
            format!("group commit latency p50, {actors} concurrent actors"),
            ours.latency_ms(0.5),
            "ms",
            raw.latency_ms(0.5),
            Better::Lower,
        ),
        figure(
            format!("group commit latency p99, {actors} concurrent actors"),
            ours.latency_ms(0.99),
            "ms",
            raw.latency_ms(0.99),
            Better::Lower,
        ),
    ]
}

/// Rows of `table` and the transactions that wrote them (distinct `xmin`):
/// rows per commit, read from the rows themselves.
pub async fn rows_per_transaction(
    client: &tokio_postgres::Client,
    table: &str,
) -> Result<(i64, i64), tokio_postgres::Error> {
    let row = client
        .query_one(
            &format!("SELECT count(*), count(DISTINCT xmin::text) FROM {table}"),
            &[],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}
