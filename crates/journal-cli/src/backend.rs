//! Opening a journal by URL, and the one-line failures commands end with.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use journal_core::{redact_url, ActorSummary, JournalError, JournalStorage, TimerStore};
use journal_memory::MemoryJournalStorage;
use journal_postgres::{PostgresJournalStorage, PostgresOptions};
use journal_redis::{RedisJournalStorage, RedisOptions};
use journal_sqlite::SqliteJournalStorage;

/// Why a command could not run: one line, never a credential.
#[derive(Debug)]
pub struct Failure(String);

impl Failure {
    /// A failure with this text (control characters escaped).
    pub fn new(text: impl Into<String>) -> Self {
        let text: String = text.into();
        Failure(crate::output::clean(&text).into_owned())
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<JournalError> for Failure {
    fn from(e: JournalError) -> Self {
        Failure::new(e.to_string())
    }
}

/// What a command does with a journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Reads it: an SQLite file must exist, a PostgreSQL schema is not
    /// created.
    Read,
    /// Writes it: created when missing.
    Write,
}

/// Where a journal is, parsed from its URL.
#[derive(Clone, PartialEq, Eq)]
enum Location {
    Memory,
    Sqlite(PathBuf),
    Postgres { url: String, schema: Option<String> },
    Redis { url: String, prefix: Option<String> },
}

/// Server URLs shown with any password as `***`.
impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Memory => f.write_str("Memory"),
            Location::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
            Location::Postgres { url, schema } => f
                .debug_struct("Postgres")
                .field("url", &redact_url(url))
                .field("schema", schema)
                .finish(),
            Location::Redis { url, prefix } => f
                .debug_struct("Redis")
                .field("url", &redact_url(url))
                .field("prefix", prefix)
                .finish(),
        }
    }
}

/// A journal storage with its due-timer index, live subscriptions and
/// feed: what an actor system runs on, and what `journal tail` follows
/// (every backend is all of these).
pub trait Store:
    JournalStorage + TimerStore + journal_core::JournalWatch + journal_core::ProjectionStore
{
}

impl<T> Store for T where
    T: JournalStorage
        + TimerStore
        + journal_core::JournalWatch
        + journal_core::ProjectionStore
        + ?Sized
{
}

/// An open journal.
pub struct Journal {
    /// The storage, shared by the command's tasks.
    pub storage: Arc<dyn JournalStorage>,
    /// The same storage with its due-timer index, for the demo's actor
    /// system.
    pub store: Arc<dyn Store>,
    /// The URL as it may be shown: password redacted.
    pub shown: String,
    location: Location,
    closer: Closer,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("url", &self.shown)
            .finish_non_exhaustive()
    }
}

enum Closer {
    None,
    Sqlite(Arc<SqliteJournalStorage>),
    Redis(Arc<RedisJournalStorage>),
}

impl Journal {
    /// Whether `other` is the same store (same file, database schema or
    /// key prefix).
    pub fn same_store(&self, other: &Journal) -> bool {
        match (&self.location, &other.location) {
            (Location::Sqlite(a), Location::Sqlite(b)) => {
                let canonical = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
                canonical(a) == canonical(b)
            }
            (Location::Memory, Location::Memory) => false,
            (a, b) => a == b,
        }
    }

    /// Whether the backend lists actors in id order (Redis lists them
    /// bucket by bucket).
    pub fn lists_sorted(&self) -> bool {
        !matches!(self.location, Location::Redis { .. })
    }

    /// The SQLite storage, when it is one.
    pub fn sqlite(&self) -> Option<&SqliteJournalStorage> {
        match &self.closer {
            Closer::Sqlite(sqlite) => Some(sqlite),
            _ => None,
        }
    }

    /// The SQLite file, when it is one.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match &self.location {
            Location::Sqlite(path) => Some(path),
            _ => None,
        }
    }

    /// Closes connections and, for SQLite, the file (its threads end).
    pub async fn close(self) {
        let Journal {
            storage,
            store,
            closer,
            ..
        } = self;
        drop((storage, store));
        match closer {
            Closer::None => {}
            Closer::Sqlite(sqlite) => {
                if let Ok(sqlite) = Arc::try_unwrap(sqlite) {
                    sqlite.close().await;
                }
            }
            Closer::Redis(redis) => redis.close().await,
        }
    }
}

fn parse(url: &str) -> Result<Location, Failure> {
    let lower = url.to_ascii_lowercase();
    if lower == "memory:" || lower == "memory://" {
        return Ok(Location::Memory);
    }
    if let Some(path) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        if path.is_empty() {
            return Err(Failure::new(
                "sqlite: needs a path, as in sqlite:journal.db",
            ));
        }
        return Ok(Location::Sqlite(PathBuf::from(path)));
    }
    if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
        let (url, schema) = journal_core::url::take_param(url, "schema");
        return Ok(Location::Postgres { url, schema });
    }
    if lower.starts_with("redis://")
        || lower.starts_with("rediss://")
        || lower.starts_with("redis-cluster://")
        || lower.starts_with("rediss-cluster://")
    {
        let (url, prefix) = journal_core::url::take_param(url, "prefix");
        return Ok(Location::Redis { url, prefix });
    }
    Err(Failure::new(
        "unknown kind of journal URL: use sqlite:PATH, postgres://..., redis://..., redis-cluster://... or memory:",
    ))
}

/// Opens the journal at `url`.
pub async fn open(url: &str, access: Access) -> Result<Journal, Failure> {
    let shown = redact_url(url);
    connect(url, access, shown.clone())
        .await
        .map_err(|e| Failure::new(format!("{shown}: {e}")))
}

async fn connect(url: &str, access: Access, shown: String) -> Result<Journal, Failure> {
    let location = parse(url)?;
    let (store, closer): (Arc<dyn Store>, Closer) = match &location {
        Location::Memory => (Arc::new(MemoryJournalStorage::new()), Closer::None),
        Location::Sqlite(path) => {
            if access == Access::Read && !path.exists() {
                return Err(Failure::new("no such journal file"));
            }
            let sqlite = Arc::new(SqliteJournalStorage::new(path).await?);
            (sqlite.clone(), Closer::Sqlite(sqlite))
        }
        Location::Postgres { url, schema } => {
            let mut options = PostgresOptions {
                pool_size: 4,
                run_migrations: access == Access::Write,
                application_name: "journal-cli".into(),
                ..PostgresOptions::default()
            };
            if let Some(schema) = schema {
                options.schema.clone_from(schema);
            }
            let postgres = PostgresJournalStorage::open(url, options).await?;
            (Arc::new(postgres), Closer::None)
        }
        Location::Redis { url, prefix } => {
            let mut options = RedisOptions::default();
            if let Some(prefix) = prefix {
                options.key_prefix.clone_from(prefix);
            }
            let redis = Arc::new(RedisJournalStorage::open(url, options).await?);
            (redis.clone(), Closer::Redis(redis))
        }
    };
    let storage: Arc<dyn JournalStorage> = store.clone();
    // Connections are made lazily: try one now, so an unreachable server
    // or a missing schema fails before anything is printed.
    storage.list_actors_page(None, 1).await?;
    Ok(Journal {
        storage,
        store,
        shown,
        location,
        closer,
    })
}

/// Where `actor`'s journal stands; "unknown actor" when it has nothing
/// stored.
pub async fn known_actor(journal: &Journal, actor: &str) -> Result<ActorSummary, Failure> {
    let summary = journal.storage.actor_summary(actor).await?;
    if summary.highest_sequence == 0 && summary.entries == 0 && summary.checkpoints == 0 {
        return Err(Failure::new(format!(
            "unknown actor {actor:?} in {}",
            journal.shown
        )));
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_recognised_and_unknown_ones_refused_without_the_password() {
        assert_eq!(
            parse("sqlite:j.db").ok(),
            Some(Location::Sqlite("j.db".into()))
        );
        assert_eq!(
            parse("sqlite:///tmp/j.db").ok(),
            Some(Location::Sqlite("/tmp/j.db".into()))
        );
        assert_eq!(parse("memory:").ok(), Some(Location::Memory));
        assert!(parse("sqlite:").is_err());
        assert!(parse("mysql://app:hunter2@db/x").is_err());
    }
}
