//! The one error type every backend returns.

use std::error::Error as StdError;

/// A boxed error from a backend's driver, kept as the source of
/// [`JournalError::Unavailable`] and [`JournalError::Storage`].
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// Result of every journal operation.
pub type JournalResult<T> = Result<T, JournalError>;

/// Everything that can go wrong in a journal, for every backend.
///
/// The variants are semantic, so callers (and the conformance suite) can act
/// on them without knowing the backend. [`JournalError::is_retryable`] tells
/// which ones are worth retrying.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JournalError {
    /// An append did not carry the next sequence of the actor (contract rule
    /// 1): another writer got there first, or the caller is out of date.
    /// Nothing was written.
    #[error(
        "sequence conflict for actor {actor_id:?}: expected sequence {expected}, got {actual}"
    )]
    SequenceConflict {
        /// The actor whose journal was appended to.
        actor_id: String,
        /// The sequence the journal would have accepted (highest + 1).
        expected: u64,
        /// The sequence the append carried.
        actual: u64,
    },

    /// Something with this id was already journaled (for example a
    /// redelivered message whose id is in the journal).
    #[error(
        "duplicate {what} {id:?} for actor {actor_id:?}, already journaled at sequence {sequence}"
    )]
    DuplicateEntry {
        /// The actor concerned.
        actor_id: String,
        /// What the id names ("message", "entry").
        what: &'static str,
        /// The duplicated id.
        id: String,
        /// Where the original is journaled.
        sequence: u64,
    },

    /// The entry or batch was rejected before any I/O (contract rule 4).
    #[error("invalid entry: {0}")]
    InvalidEntry(String),

    /// The checkpoint was rejected before being stored (contract rule 10).
    #[error("invalid checkpoint: {0}")]
    InvalidCheckpoint(String),

    /// Stored entry bytes could not be decoded.
    #[error("corrupt entry of actor {actor_id:?} at sequence {sequence}: {reason}")]
    CorruptEntry {
        /// The actor concerned.
        actor_id: String,
        /// The sequence of the undecodable entry (0 when unknown).
        sequence: u64,
        /// What is wrong with the bytes.
        reason: String,
    },

    /// Stored checkpoint bytes could not be decoded, decompressed within the
    /// configured limit, or are of an unknown state schema version.
    #[error("corrupt checkpoint of actor {actor_id:?} at sequence {sequence}: {reason}")]
    CorruptCheckpoint {
        /// The actor concerned.
        actor_id: String,
        /// The checkpoint's sequence (0 when unknown).
        sequence: u64,
        /// What is wrong with it.
        reason: String,
    },

    /// A feed offset this backend did not give (contract rule 28): made by
    /// another backend or feed, or damaged. Nothing was read.
    #[error("invalid feed offset: {0}")]
    InvalidOffset(String),

    /// A subscription's next entries are no longer stored: truncated (or
    /// the actor deleted) before the subscriber read them (contract rule
    /// 27). Subscribe again from `first_stored` to go on, knowing what was
    /// missed.
    #[error(
        "the journal of actor {actor_id:?} no longer holds entry {wanted}: truncated or deleted \
         (first stored: {first_stored}, 0 for none)"
    )]
    Truncated {
        /// The actor subscribed to.
        actor_id: String,
        /// The sequence the subscriber was to read next.
        wanted: u64,
        /// The first sequence still stored from there on, 0 when none is.
        first_stored: u64,
    },

    /// During replay the actor asked for another side effect than the
    /// journal recorded at that point (other name, other order, or one more
    /// or one fewer). Replay stops rather than hand back a wrong cached
    /// result: the actor's code is not deterministic, or changed.
    #[error(
        "replay diverged for actor {actor_id:?} in message {message_id:?} at side effect #{position}: \
         the journal recorded {recorded}, the code asked for {requested}"
    )]
    ReplayDivergence {
        /// The actor being replayed.
        actor_id: String,
        /// The message whose handling diverged.
        message_id: String,
        /// Index of the side effect within the message, from 0.
        position: usize,
        /// What the journal holds there (`"end of message"` when nothing).
        recorded: String,
        /// What the code asked for (`"end of message"` when nothing).
        requested: String,
    },

    /// The actor's state cannot be rebuilt: no usable checkpoint and the
    /// journal behind it is truncated, or the actor rejected its state.
    #[error("cannot recover actor {actor_id:?}: {reason}")]
    RecoveryFailed {
        /// The actor concerned.
        actor_id: String,
        /// Why.
        reason: String,
    },

    /// The storage could not be reached (connection lost, timeout, pool
    /// exhausted). The operation may or may not have been applied; appends
    /// are safe to retry (contract rule 5).
    #[error("{backend} unavailable: {source}")]
    Unavailable {
        /// The backend's name ("sqlite", "postgres", ...).
        backend: &'static str,
        /// The driver's error.
        #[source]
        source: BoxError,
    },

    /// Any other failure of the storage, with its source.
    #[error("{backend} storage error: {source}")]
    Storage {
        /// The backend's name ("sqlite", "postgres", ...).
        backend: &'static str,
        /// The driver's error.
        #[source]
        source: BoxError,
    },
}

impl JournalError {
    /// Whether the same call may succeed if made again unchanged.
    ///
    /// Only [`JournalError::Unavailable`] is: every other variant says
    /// something about the input or the stored data that a retry won't change.
    pub fn is_retryable(&self) -> bool {
        matches!(self, JournalError::Unavailable { .. })
    }

    /// The variant's name in snake case (`sequence_conflict`,
    /// `unavailable`, ...): a label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            JournalError::SequenceConflict { .. } => "sequence_conflict",
            JournalError::DuplicateEntry { .. } => "duplicate_entry",
            JournalError::InvalidEntry(_) => "invalid_entry",
            JournalError::InvalidCheckpoint(_) => "invalid_checkpoint",
            JournalError::CorruptEntry { .. } => "corrupt_entry",
            JournalError::CorruptCheckpoint { .. } => "corrupt_checkpoint",
            JournalError::InvalidOffset(_) => "invalid_offset",
            JournalError::Truncated { .. } => "truncated",
            JournalError::ReplayDivergence { .. } => "replay_divergence",
            JournalError::RecoveryFailed { .. } => "recovery_failed",
            JournalError::Unavailable { .. } => "unavailable",
            JournalError::Storage { .. } => "storage",
        }
    }

    /// A [`JournalError::Storage`] from any error.
    pub fn storage(backend: &'static str, source: impl Into<BoxError>) -> Self {
        JournalError::Storage {
            backend,
            source: source.into(),
        }
    }

    /// A [`JournalError::Unavailable`] from any error.
    pub fn unavailable(backend: &'static str, source: impl Into<BoxError>) -> Self {
        JournalError::Unavailable {
            backend,
            source: source.into(),
        }
    }
}
