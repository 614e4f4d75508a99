//! How a durable actor journals and checkpoints: [`DurabilityConfig`], whose
//! `Default` is durable (contract rule 22).
//!
//! The seed design's configuration was a protobuf message, whose proto3
//! defaults are all `false`: `DurabilityConfig { checkpoint_interval: 4,
//! ..Default::default() }` turned off recovery, side-effect caching and
//! deduplication without a word. This type keeps the seed's field names and
//! types, so the seed's literals compile unchanged, but it is a plain Rust
//! struct with a hand-written `Default` that recovers, caches side effects,
//! journals time and randomness and deduplicates. Turning any of that off is
//! a field set to `false` in the code, where a reviewer sees it. The wire
//! form stays the proto message ([`DurabilityConfigMessage`]), converted with
//! `From` both ways; a hand-written `Default` on the generated type would not
//! do, because protobuf decoding starts from `Default` and would turn a
//! stored `false` into `true`.

use std::time::Duration;

use crate::proto::{
    durability_config::BackendConfig, CompressionType, DurabilityConfigMessage, JournalBackend,
};

/// Default number of processed messages whose replies are remembered.
pub const DEFAULT_DEDUP_WINDOW: u32 = 1_000;
/// Default attempts of a journal write that failed as `Unavailable`.
pub const DEFAULT_RETRY_ATTEMPTS: u32 = 5;
/// Default wait before the first retry of a journal write.
pub const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_millis(50);
/// Longest wait between two retries of a journal write.
pub const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(2);

/// How a durable actor journals, recovers, deduplicates and checkpoints.
///
/// `Default` is durable: recovery on activation, side effects (and time and
/// randomness read through the context) journaled and replayed from the
/// journal, exactly-once delivery, a zstd checkpoint every 100 entries, two
/// checkpoints kept, journal writes retried on `Unavailable`.
///
/// ```
/// use journal_core::{CompressionType, DurabilityConfig, JournalBackend};
///
/// // The seed's literal, with only the crate path changed.
/// let config = DurabilityConfig {
///     backend: JournalBackend::JournalBackendSqlite as i32,
///     checkpoint_interval: 100,
///     checkpoint_timeout: None,
///     replay_on_activation: true,
///     cache_side_effects: true,
///     compression: CompressionType::CompressionTypeZstd as i32,
///     backend_config: None,
///     ..Default::default()
/// };
/// assert_eq!(config, DurabilityConfig { backend: JournalBackend::Sqlite as i32, ..Default::default() });
///
/// // Typed, without `as i32`.
/// let typed = DurabilityConfig::default()
///     .with_backend(JournalBackend::Sqlite)
///     .with_compression(CompressionType::None);
/// assert_eq!(typed.backend_kind(), JournalBackend::Sqlite);
/// assert_eq!(typed.compression_type(), CompressionType::None);
///
/// // Ordinary Rust stays durable.
/// let short = DurabilityConfig { checkpoint_interval: 4, ..Default::default() };
/// assert!(short.replay_on_activation && short.cache_side_effects);
/// ```
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::struct_excessive_bools)] // the seed's fields
pub struct DurabilityConfig {
    /// Which storage backend is used (a [`JournalBackend`] as `i32`), for
    /// information: the facet journals to the storage it is given.
    pub backend: i32,
    /// Take a checkpoint every this many entries (0: never by count).
    pub checkpoint_interval: u64,
    /// Take a checkpoint when this long has passed since the last one, also
    /// when the actor is idle (`None`: never by time).
    pub checkpoint_timeout: Option<prost_types::Duration>,
    /// Recover the state on activation (newest checkpoint + replay).
    /// `false` starts every activation from the actor's initial state and
    /// with no memory of processed messages: exactly-once holds only within
    /// one activation.
    pub replay_on_activation: bool,
    /// Journal side effects (and time and randomness read through the
    /// context) and return the journaled results on replay. `false` runs
    /// effects again on every recovery and journals no time: a choice for
    /// actors whose effects are idempotent and whose state ignores time.
    /// Time travel never runs an effect either way.
    pub cache_side_effects: bool,
    /// How checkpoint state is compressed (a [`CompressionType`] as `i32`).
    pub compression: i32,
    /// zstd level (1-22; 0 means the default, 3).
    pub compression_level: i32,
    /// Version of the actor's state format written into checkpoints. A
    /// checkpoint of another version is handed to
    /// [`DurableActor::migrate`](crate::DurableActor::migrate).
    pub state_schema_version: u32,
    /// Checkpoints kept per actor (0 means the default, 2).
    pub checkpoints_to_keep: u32,
    /// After a checkpoint, truncate the journal up to the oldest kept one.
    pub truncate_after_checkpoint: bool,
    /// Largest checkpoint state accepted on load, in bytes, before and after
    /// decompression (0 means the default, 256 MiB).
    pub max_checkpoint_bytes: u64,
    /// Fail activation on an undecodable checkpoint instead of falling back
    /// to an older one.
    pub fail_on_corrupt_checkpoint: bool,
    /// Exactly-once retention by count: the replies of this many most
    /// recent messages are remembered, also after the journal behind them
    /// was truncated (0 means the default, 1,000). Messages still in the
    /// journal are recognised as processed whatever this says.
    pub dedup_window: u32,
    /// Exactly-once retention by age: messages processed within this long
    /// are remembered with their replies too (`None`: by count only).
    pub dedup_retention: Option<Duration>,
    /// Attempts of a journal write that failed as `Unavailable` (0 means the
    /// default, 5). Each retry re-appends the same entry (same id), so a
    /// write that landed before the error is not written twice.
    pub journal_retry_attempts: u32,
    /// Wait before the first retry, doubled for each next one up to 2 s.
    pub journal_retry_backoff: Duration,
    /// Write a message's entries in batches
    /// ([`ExecutionContext::with_batched_writes`](crate::ExecutionContext::with_batched_writes)):
    /// one append before each call to the outside world (a side effect,
    /// and the due-timer index of a message that scheduled or cancelled a
    /// timer) and one with the message's end, instead of one per entry (a
    /// message with one effect: 2 appends instead of 3). The price: an effect's result is durable
    /// only with the next call or the message's end, so a crash or storage
    /// failure in between runs that call again on recovery
    /// (at-least-once). Off by default: each result is journaled before the
    /// code sees it.
    pub batch_journal_writes: bool,
    /// Reserved, for information only: the settings of the chosen
    /// backend, as a deployment may record them beside the rest (in the
    /// protobuf form, say). Nothing reads it: a storage takes its settings
    /// when it is opened (`PostgresOptions`, `RedisOptions`, ...).
    pub backend_config: Option<BackendConfig>,
}

impl Default for DurabilityConfig {
    fn default() -> Self {
        DurabilityConfig {
            backend: JournalBackend::Unspecified as i32,
            checkpoint_interval: 100,
            checkpoint_timeout: None,
            replay_on_activation: true,
            cache_side_effects: true,
            compression: CompressionType::Zstd as i32,
            compression_level: 3,
            state_schema_version: 1,
            checkpoints_to_keep: 2,
            truncate_after_checkpoint: false,
            max_checkpoint_bytes: 0,
            fail_on_corrupt_checkpoint: false,
            dedup_window: DEFAULT_DEDUP_WINDOW,
            dedup_retention: None,
            journal_retry_attempts: DEFAULT_RETRY_ATTEMPTS,
            journal_retry_backoff: DEFAULT_RETRY_BACKOFF,
            batch_journal_writes: false,
            backend_config: None,
        }
    }
}

impl DurabilityConfig {
    /// The recommended settings (the `Default`) for `backend`.
    pub fn recommended(backend: JournalBackend) -> Self {
        DurabilityConfig {
            backend: backend.into(),
            ..DurabilityConfig::default()
        }
    }

    /// [`DurabilityConfig::backend`] as its enum (`Unspecified` for a
    /// value no variant has).
    pub fn backend_kind(&self) -> JournalBackend {
        JournalBackend::try_from(self.backend).unwrap_or(JournalBackend::Unspecified)
    }

    /// [`DurabilityConfig::compression`] as its enum (`None` for a value
    /// no variant has, as checkpoints read it).
    pub fn compression_type(&self) -> CompressionType {
        CompressionType::try_from(self.compression).unwrap_or(CompressionType::None)
    }

    /// The same configuration with `backend` (the `as i32` of the seed's
    /// literal, typed).
    #[must_use]
    pub fn with_backend(mut self, backend: JournalBackend) -> Self {
        self.backend = backend.into();
        self
    }

    /// The same configuration with `compression`.
    #[must_use]
    pub fn with_compression(mut self, compression: CompressionType) -> Self {
        self.compression = compression.into();
        self
    }

    /// Retained messages whose replies are kept, at least 1.
    pub(crate) fn dedup_count(&self) -> usize {
        match self.dedup_window {
            0 => DEFAULT_DEDUP_WINDOW as usize,
            n => n as usize,
        }
    }

    /// Attempts of a journal write, at least 1.
    pub(crate) fn retry_attempts(&self) -> u32 {
        match self.journal_retry_attempts {
            0 => DEFAULT_RETRY_ATTEMPTS,
            n => n,
        }
    }
}

fn to_proto_duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

fn from_proto_duration(d: Option<prost_types::Duration>) -> Option<Duration> {
    d.and_then(|d| Duration::try_from(d).ok())
}

impl From<DurabilityConfig> for DurabilityConfigMessage {
    fn from(c: DurabilityConfig) -> Self {
        DurabilityConfigMessage {
            backend: c.backend,
            checkpoint_interval: c.checkpoint_interval,
            checkpoint_timeout: c.checkpoint_timeout,
            replay_on_activation: c.replay_on_activation,
            cache_side_effects: c.cache_side_effects,
            compression: c.compression,
            compression_level: c.compression_level,
            state_schema_version: c.state_schema_version,
            checkpoints_to_keep: c.checkpoints_to_keep,
            truncate_after_checkpoint: c.truncate_after_checkpoint,
            max_checkpoint_bytes: c.max_checkpoint_bytes,
            fail_on_corrupt_checkpoint: c.fail_on_corrupt_checkpoint,
            dedup_window: c.dedup_window,
            dedup_retention: c.dedup_retention.map(to_proto_duration),
            journal_retry_attempts: c.journal_retry_attempts,
            journal_retry_backoff: Some(to_proto_duration(c.journal_retry_backoff)),
            batch_journal_writes: c.batch_journal_writes,
            backend_config: c.backend_config,
        }
    }
}

/// The message's fields as they are: an unset flag is `false`, as proto3
/// says; an unset retry backoff is the default.
impl From<DurabilityConfigMessage> for DurabilityConfig {
    fn from(m: DurabilityConfigMessage) -> Self {
        DurabilityConfig {
            backend: m.backend,
            checkpoint_interval: m.checkpoint_interval,
            checkpoint_timeout: m.checkpoint_timeout,
            replay_on_activation: m.replay_on_activation,
            cache_side_effects: m.cache_side_effects,
            compression: m.compression,
            compression_level: m.compression_level,
            state_schema_version: m.state_schema_version,
            checkpoints_to_keep: m.checkpoints_to_keep,
            truncate_after_checkpoint: m.truncate_after_checkpoint,
            max_checkpoint_bytes: m.max_checkpoint_bytes,
            fail_on_corrupt_checkpoint: m.fail_on_corrupt_checkpoint,
            dedup_window: m.dedup_window,
            dedup_retention: from_proto_duration(m.dedup_retention),
            journal_retry_attempts: m.journal_retry_attempts,
            journal_retry_backoff: from_proto_duration(m.journal_retry_backoff)
                .unwrap_or(DEFAULT_RETRY_BACKOFF),
            batch_journal_writes: m.batch_journal_writes,
            backend_config: m.backend_config,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_durable_and_round_trips_through_the_wire_form() {
        let c = DurabilityConfig {
            checkpoint_interval: 4,
            ..Default::default()
        };
        assert!(c.replay_on_activation && c.cache_side_effects);
        assert_eq!(c.compression, CompressionType::Zstd as i32);
        let message = DurabilityConfigMessage::from(c.clone());
        assert_eq!(DurabilityConfig::from(message), c);
        let off = DurabilityConfig {
            replay_on_activation: false,
            cache_side_effects: false,
            dedup_retention: Some(Duration::from_secs(60)),
            ..c
        };
        let message = DurabilityConfigMessage::from(off.clone());
        assert_eq!(DurabilityConfig::from(message), off);
    }

    #[test]
    fn the_seeds_long_enum_names_cast_like_the_short_ones() {
        assert_eq!(JournalBackend::JournalBackendSqlite as i32, 2);
        assert_eq!(CompressionType::CompressionTypeZstd as i32, 1);
        assert_eq!(CompressionType::CompressionTypeNone as i32, 0);
    }
}
