//! The protobuf types of `proto/journal/v1/journal.proto`, generated at build
//! time, and constructors so that users do not fill them by hand.
//!
//! The message `DurabilityConfig` is here as [`DurabilityConfigMessage`], its
//! wire form: its proto3 defaults (every flag `false`) are not durable, so the
//! type actors are configured with is [`crate::DurabilityConfig`], whose
//! `Default` is.

#![allow(clippy::pedantic)]

#[allow(missing_docs)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/journal.v1.rs"));
}

pub use generated::{
    durability_config, journal_entry, Checkpoint, CompressionType, EventRecorded, FacetSnapshot,
    JournalBackend, JournalEntry, MessageProcessed, MessageReceived, PostgresConfig,
    ProcessedMessage, ProcessingResult, PromiseCreated, PromiseResolved, RedisConfig,
    SideEffectExecuted, SqliteConfig, StateChanged, TimerCancelled, TimerFired, TimerScheduled,
};

/// The wire form of [`crate::DurabilityConfig`] (the proto message
/// `journal.v1.DurabilityConfig`), for configurations stored or sent as
/// protobuf. Convert with `From` both ways.
pub use generated::DurabilityConfig as DurabilityConfigMessage;

/// The seed design's long variant names (`JournalBackend::JournalBackendSqlite
/// as i32`), as aliases of the short ones.
#[allow(non_upper_case_globals)]
impl JournalBackend {
    /// Alias of [`JournalBackend::Unspecified`].
    pub const JournalBackendUnspecified: JournalBackend = JournalBackend::Unspecified;
    /// Alias of [`JournalBackend::Memory`].
    pub const JournalBackendMemory: JournalBackend = JournalBackend::Memory;
    /// Alias of [`JournalBackend::Sqlite`].
    pub const JournalBackendSqlite: JournalBackend = JournalBackend::Sqlite;
    /// Alias of [`JournalBackend::Postgres`].
    pub const JournalBackendPostgres: JournalBackend = JournalBackend::Postgres;
    /// Alias of [`JournalBackend::Redis`].
    pub const JournalBackendRedis: JournalBackend = JournalBackend::Redis;
}

/// The seed design's long variant names (`CompressionType::CompressionTypeZstd
/// as i32`), as aliases of the short ones.
#[allow(non_upper_case_globals)]
impl CompressionType {
    /// Alias of [`CompressionType::None`].
    pub const CompressionTypeNone: CompressionType = CompressionType::None;
    /// Alias of [`CompressionType::Zstd`].
    pub const CompressionTypeZstd: CompressionType = CompressionType::Zstd;
}
