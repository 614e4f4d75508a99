//! What a send can fail with.

use journal_core::JournalError;

/// Why a message sent through an [`ActorSystem`](crate::ActorSystem) got no
/// reply. Each error concerns that one send: the system goes on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// No actor type of this name was registered.
    #[error("no actor type {0:?} is registered")]
    UnknownType(String),
    /// The actor could not be activated: its journal could not be read or
    /// replayed (a divergence, a missing entry, the storage down). The next
    /// send tries again.
    #[error("actor {actor_type}/{actor_id} could not be recovered: {source}")]
    Recovery {
        /// The actor's type.
        actor_type: String,
        /// The actor's id.
        actor_id: String,
        /// What recovery ran into.
        #[source]
        source: Box<JournalError>,
    },
    /// The message failed in the journal (or was refused before any I/O as
    /// invalid, [`JournalError::InvalidEntry`]): it did not complete. The
    /// actor recovers from its journal at the next message.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The handler failed; the failure is journaled as the message's
    /// outcome (typed sends only: a raw send returns
    /// [`Delivery::Failed`](journal_core::Delivery::Failed)).
    #[error("the handler failed: {0}")]
    Handler(String),
    /// The message id was processed before, and its reply is no longer
    /// known (remembered only by checkpoints of older builds).
    #[error("message {0:?} was processed before; its reply is no longer known")]
    ReplyUnknown(String),
    /// A typed message, reply or state did not encode or decode.
    #[error("encoding: {0}")]
    Codec(String),
    /// A timer's delivery, dropped because the timer was cancelled after
    /// it was claimed (only the system's own timer deliveries get it).
    #[error("the timer was cancelled")]
    TimerCancelled,
    /// The system is shutting down (or was dropped): the message was not
    /// taken.
    #[error("the actor system is shutting down")]
    ShuttingDown,
}
