//! How the storage connects and where its keys live.

use std::time::Duration;

use journal_core::validate::DEFAULT_MAX_ENTRY_BYTES;
use journal_core::{JournalError, JournalResult};

use crate::error::BACKEND;

/// Options of [`RedisJournalStorage::open`](crate::RedisJournalStorage::open).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisOptions {
    /// Prefix of every key (default `journal`): 1 to 64 characters among
    /// ASCII letters, digits, `_`, `-`, `.` and `:`. Two journals with
    /// different prefixes share a server without seeing each other.
    pub key_prefix: String,
    /// Connections to one server (default 4). Each one pipelines:
    /// concurrent calls share it without waiting for each other's replies.
    pub pool_size: usize,
    /// On a cluster: how many calls may be under way at once (default 32).
    /// Each holds a cluster connection (one connection to each node it
    /// talks to) for its duration; they are opened as needed, and further
    /// calls wait for one to come free. Size it for the calls you run at
    /// once: a call to a shard that is failing over holds its connection
    /// until it fails or the shard is back.
    pub cluster_connections: usize,
    /// How long to wait for a connection to open (default 5 s).
    pub connect_timeout: Duration,
    /// How long a call waits for its reply before failing with
    /// `Unavailable` (default 10 s). A write that timed out may have landed;
    /// retrying it is safe (contract rule 5).
    pub command_timeout: Duration,
    /// After each write, wait until this many replicas have it (`WAIT`).
    /// `None` (the default): an `Ok` means the primary has it, as durable
    /// as the server's persistence settings make it (see the crate docs).
    pub wait_for_replicas: Option<ReplicaWait>,
    /// Largest encoded entry accepted (default 16 MiB).
    pub max_entry_bytes: usize,
    /// What [`open`](crate::RedisJournalStorage::open) does about servers
    /// whose persistence settings lose acknowledged writes on a restart
    /// (default [`PersistenceCheck::Warn`]).
    pub persistence_check: PersistenceCheck,
}

/// At open, the storage reads every node's `appendonly`, `appendfsync` and
/// `save` settings (`CONFIG GET`) and judges what a restart would lose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PersistenceCheck {
    /// Log a warning (`tracing`, target `journal_redis`) for each node
    /// where a restart loses acknowledged writes (no append-only file), or
    /// whose settings cannot be read (`CONFIG` renamed or refused).
    #[default]
    Warn,
    /// Refuse to open (a `Storage` error naming the nodes) unless every
    /// node runs with `appendonly yes`, so that a server restart keeps
    /// every acknowledged write (up to a second on power loss with
    /// `appendfsync everysec`; see the crate docs).
    Require,
    /// Read nothing: for servers where `CONFIG` is not allowed and the
    /// operator vouches for persistence.
    Skip,
}

/// Waiting for replicas after each write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaWait {
    /// Replicas that must acknowledge the write (at least 1).
    pub replicas: u32,
    /// How long to wait for them, at most [`RedisOptions::command_timeout`].
    /// When fewer acknowledge in time the call
    /// fails with `Unavailable`: the write is on the primary, and retrying
    /// it is safe.
    pub timeout: Duration,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            key_prefix: "journal".into(),
            pool_size: 4,
            cluster_connections: 32,
            connect_timeout: Duration::from_secs(5),
            command_timeout: Duration::from_secs(10),
            wait_for_replicas: None,
            max_entry_bytes: DEFAULT_MAX_ENTRY_BYTES,
            persistence_check: PersistenceCheck::Warn,
        }
    }
}

/// Checks a key prefix: 1 to 64 of `[A-Za-z0-9_.:-]`. No braces (a hash tag
/// in the prefix would put every actor in one slot) and no glob characters.
pub(crate) fn valid_prefix(prefix: &str) -> bool {
    (1..=64).contains(&prefix.len())
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
}

/// Checks the options before anything connects.
pub(crate) fn validate(options: &RedisOptions) -> JournalResult<()> {
    if !valid_prefix(&options.key_prefix) {
        return Err(JournalError::storage(
            BACKEND,
            format!(
                "invalid key prefix {:?}: use 1 to 64 of A-Z a-z 0-9 _ - . :",
                options.key_prefix
            ),
        ));
    }
    if options.pool_size == 0 || options.cluster_connections == 0 {
        return Err(JournalError::storage(
            BACKEND,
            "pool_size and cluster_connections must be at least 1",
        ));
    }
    if options.wait_for_replicas.is_some_and(|w| w.replicas == 0) {
        return Err(JournalError::storage(
            BACKEND,
            "wait_for_replicas needs at least 1 replica",
        ));
    }
    if options.command_timeout.is_zero() || options.connect_timeout.is_zero() {
        return Err(JournalError::storage(
            BACKEND,
            "connect_timeout and command_timeout must be above zero",
        ));
    }
    Ok(())
}
