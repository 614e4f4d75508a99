//! How a journal file is opened.

use std::time::Duration;

use journal_core::validate::DEFAULT_MAX_ENTRY_BYTES;

/// SQLite's `synchronous` setting, in WAL mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Synchronous {
    /// Every commit is fsynced before the append returns: an `Ok` survives
    /// power loss. The default.
    #[default]
    Full,
    /// The WAL is fsynced only at checkpoints: an `Ok` survives a crash of
    /// the process, but the last commits may be lost on power loss or an OS
    /// crash. Appends are faster.
    Normal,
}

impl Synchronous {
    pub(crate) fn pragma(self) -> &'static str {
        match self {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        }
    }
}

/// Options of
/// [`SqliteJournalStorage::open`](crate::SqliteJournalStorage::open).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteOptions {
    /// Durability of a commit (default: [`Synchronous::Full`]).
    pub synchronous: Synchronous,
    /// How long to wait for another process's lock before giving up with
    /// `Unavailable` (default: 5 s).
    pub busy_timeout: Duration,
    /// Largest encoded entry accepted (default: 16 MiB).
    pub max_entry_bytes: usize,
    /// Page cache per connection, in KiB (default: 8 MiB).
    pub cache_size_kib: u32,
    /// Reader connections, each on its own thread (default: 3). An
    /// in-memory journal has none: its one connection serves reads too.
    pub readers: usize,
    /// Most operations committed in one transaction (default: 512).
    pub max_group: usize,
    /// Largest database size in pages, if limited (`PRAGMA max_page_count`):
    /// beyond it writes fail as on a full disk.
    pub max_page_count: Option<u32>,
    /// Appended entries left waiting (found through the epoch index only)
    /// before the writer indexes them by actor in one transaction (default:
    /// 16,384; see the crate docs, "Schema"). Larger values make indexing
    /// rarer and cheaper per entry, but make lookups of waiting entries (a
    /// replay's last page, a highest sequence) seek more epochs. Indexing
    /// also happens once 4 MiB of entries wait, or 256 epochs, whatever this
    /// says.
    pub compact_after: u64,
    /// Bytes of the file SQLite maps into memory for reading
    /// (`PRAGMA mmap_size`; default: 256 MiB, 0 turns it off). Reads of
    /// mapped pages skip a copy through the kernel.
    pub mmap_size: u64,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            synchronous: Synchronous::Full,
            busy_timeout: Duration::from_secs(5),
            max_entry_bytes: DEFAULT_MAX_ENTRY_BYTES,
            cache_size_kib: 8 * 1024,
            readers: 3,
            max_group: 512,
            max_page_count: None,
            compact_after: 16_384,
            mmap_size: 256 * 1024 * 1024,
        }
    }
}
