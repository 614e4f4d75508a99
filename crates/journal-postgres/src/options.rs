//! How the storage connects and where its tables live.

use std::time::Duration;

use journal_core::validate::DEFAULT_MAX_ENTRY_BYTES;

/// Options of [`PostgresJournalStorage::open`](crate::PostgresJournalStorage::open).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresOptions {
    /// Schema holding the journal's tables (default `journal`). Lower-case
    /// letters, digits and `_`, starting with a letter or `_`, at most 63
    /// bytes: it becomes part of SQL text, so nothing else is accepted.
    pub schema: String,
    /// Connections in the pool (default 16).
    pub pool_size: usize,
    /// Server-side `statement_timeout` of every connection (default 30 s;
    /// `None`: the server's setting).
    pub statement_timeout: Option<Duration>,
    /// How long to wait for a connection to open (default 5 s).
    pub connect_timeout: Duration,
    /// How long a call waits for a free pooled connection before failing
    /// with `Unavailable` (default 10 s).
    pub pool_wait_timeout: Duration,
    /// Create or upgrade the schema when connecting (default `true`).
    /// Off, the schema must already be at this build's version: opening
    /// checks it and refuses a schema that is missing, older or newer.
    pub run_migrations: bool,
    /// `application_name` of the connections (default `journal`), as seen
    /// in `pg_stat_activity`.
    pub application_name: String,
    /// Largest encoded entry accepted (default 16 MiB).
    pub max_entry_bytes: usize,
    /// Send concurrent single appends together, in one round trip and one
    /// transaction per group (default `true`). Each caller still gets its
    /// own result.
    pub group_commit: bool,
    /// Most groups sent at once, each on a connection of its own (default
    /// 4, at most `pool_size`). While they are in flight the next appends
    /// queue, and the next group takes them all: fewer groups in flight
    /// make bigger groups, and the server's work per append falls with the
    /// size of a group. On a 2-core server with 256 actors appending, 4
    /// gave 41-42k appends/s (p99 24-32 ms) where 16 gave 32-33k (p99
    /// 35-48 ms) (`cargo xtask bench --backend postgres --only
    /// group-commit`); a server with many cores, or one far away, may do
    /// better with more.
    pub group_commit_in_flight: usize,
    /// How long a feed read waits, at most, for transactions that hold the
    /// feed's horizon back when committed entries lie beyond it (default
    /// 1 s): enough for in-flight appends of any schema to end, so a
    /// reader sees what committed before its read. Zero returns at once
    /// with what is readable. Never changes what is returned, only when.
    pub feed_settle: Duration,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions {
            schema: "journal".into(),
            pool_size: 16,
            statement_timeout: Some(Duration::from_secs(30)),
            connect_timeout: Duration::from_secs(5),
            pool_wait_timeout: Duration::from_secs(10),
            run_migrations: true,
            application_name: "journal".into(),
            max_entry_bytes: DEFAULT_MAX_ENTRY_BYTES,
            group_commit: true,
            group_commit_in_flight: 4,
            feed_settle: Duration::from_secs(1),
        }
    }
}

/// Checks a schema name: `[a-z_][a-z0-9_]*`, 1 to 63 bytes.
pub(crate) fn valid_schema(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some('a'..='z' | '_'))
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
        && name.len() <= 63
}
