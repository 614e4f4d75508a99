#![doc = include_str!("../README.md")]

pub mod checkpoint;
pub mod config;
pub mod context;
pub mod durability;
pub mod entry;
pub mod error;
pub mod facet;
pub mod feed;
pub mod host;
pub mod metrics;
pub mod projection;
pub mod proto;
pub mod redact;
pub mod storage;
pub mod subscribe;
pub mod timers;
pub mod url;
pub mod validate;

pub use checkpoint::{CheckpointManager, CheckpointPolicy};
pub use config::DurabilityConfig;
pub use context::{timer_id, EffectRetry, ExecutionContext, MessageFailure, Retry, TimerOp};
pub use durability::{
    rebuild_at, DurabilityFacet, DurabilityObserver, DurabilityStats, Rebuilt, OWNER_METADATA,
};
pub use entry::{new_entry_id, now_timestamp};
pub use error::{BoxError, JournalError, JournalResult};
pub use facet::{
    panic_text, Admission, DurableActor, Facet, HandlerError, HandlerResult, MessageOutcome,
};
pub use feed::{FeedFilter, FeedItem, FeedOffset, FeedOptions, JournalFeed, OffsetTexts};
pub use host::{Actor, Delivery, Facets};
pub use projection::{Projection, ProjectionStore};
pub use proto::{
    durability_config, journal_entry, Checkpoint, CompressionType, DurabilityConfigMessage,
    EventRecorded, FacetSnapshot, JournalBackend, JournalEntry, MessageProcessed, MessageReceived,
    PostgresConfig, ProcessedMessage, ProcessingResult, PromiseCreated, PromiseResolved,
    RedisConfig, SideEffectExecuted, SqliteConfig, StateChanged, TimerCancelled, TimerFired,
    TimerScheduled,
};
pub use redact::redact_url;
pub use storage::{
    prefetched_replay, ActorPage, ActorStream, ActorSummary, EntryStream, JournalStats,
    JournalStorage,
};
pub use subscribe::{follow, JournalWatch, SubscribeOptions, Watchers};
pub use timers::{ClaimedTimer, TimerRecord, TimerStore};
pub use validate::{Limits, MAX_SEQUENCE};

/// Re-exported so users build timestamps and durations without naming
/// `prost-types` themselves.
pub use prost_types;
