//! What an actor implements to become durable, and the lifecycle hooks a
//! facet plugs into. No actor framework is a dependency: [`crate::host`]
//! offers a minimal host with the seed's shape, and an actor system adapts
//! these traits to its own.

use async_trait::async_trait;

use crate::context::ExecutionContext;
use crate::error::{JournalError, JournalResult};
use crate::proto::{EventRecorded, MessageReceived};

/// Why a handler did not produce a reply.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// The message failed on its own terms (bad request, insufficient
    /// funds). It is journaled as `MessageProcessed` with `ERROR` and the
    /// actor goes on.
    #[error("{0}")]
    Failed(String),
    /// The journal failed (storage unavailable, replay divergence). The
    /// actor stops: it must be recovered from the journal.
    #[error(transparent)]
    Journal(#[from] JournalError),
}

impl HandlerError {
    /// A [`HandlerError::Failed`] with this text.
    pub fn failed(reason: impl Into<String>) -> Self {
        HandlerError::Failed(reason.into())
    }
}

/// A side effect's own error text fails the message: `ctx.side_effect(..).await??`.
impl From<String> for HandlerError {
    fn from(reason: String) -> Self {
        HandlerError::Failed(reason)
    }
}

/// A handler's outcome: the reply payload, or why there is none.
pub type HandlerResult = Result<Vec<u8>, HandlerError>;

/// Runs `actor`'s handler on `message`; a panic in it fails the message as
/// a [`HandlerError::Failed`] saying so (a panic in a side effect is that
/// effect's failure, journaled as its result: the handler sees it),
/// journaled like any handler failure, instead of unwinding through the
/// host: the message fails alone and the actor goes on (contract rule 21).
/// Replay runs the handler again and meets the same panic, so the recorded
/// failure replays as recorded; a panic that does not come again is a
/// divergence. The state is what the handler left when it panicked, as
/// after a handler that returns an error.
pub(crate) async fn handle_caught<A: DurableActor + ?Sized>(
    actor: &mut A,
    message: &MessageReceived,
    ctx: &mut ExecutionContext,
) -> HandlerResult {
    use futures::FutureExt as _;
    std::panic::AssertUnwindSafe(actor.handle(message, ctx))
        .catch_unwind()
        .await
        .unwrap_or_else(|panic| {
            Err(HandlerError::Failed(format!(
                "the handler panicked: {}",
                panic_text(&*panic)
            )))
        })
}

/// What a caught panic said: its message when it is text (as `panic!`
/// and `assert!` make it).
pub fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a payload that is not text".to_owned())
}

/// An actor whose state can be journaled, snapshotted and restored.
///
/// Handling must be deterministic given the message, the state and what the
/// [`ExecutionContext`] returns: anything from outside (calls to other
/// services, time, randomness) goes through the context.
///
/// ```
/// use journal_core::{DurableActor, ExecutionContext, HandlerResult, MessageReceived};
///
/// /// Adds the amounts it is sent; asks the bank for a receipt each time.
/// struct Till { total: u64 }
///
/// #[async_trait::async_trait]
/// impl DurableActor for Till {
///     async fn handle(&mut self, m: &MessageReceived, ctx: &mut ExecutionContext) -> HandlerResult {
///         let amount: u64 = std::str::from_utf8(&m.payload).ok().and_then(|t| t.parse().ok())
///             .ok_or_else(|| journal_core::HandlerError::failed("not an amount"))?;
///         // Journaled: replay hands the receipt back instead of calling again.
///         let receipt = ctx.side_effect_with("bank.deposit", &m.payload, || async {
///             Ok::<_, String>(b"receipt".to_vec())
///         }).await??;
///         self.total += amount;
///         Ok(receipt)
///     }
///     fn snapshot(&self) -> Result<Vec<u8>, String> { Ok(self.total.to_le_bytes().to_vec()) }
///     fn restore(&mut self, state: &[u8]) -> Result<(), String> {
///         self.total = u64::from_le_bytes(state.try_into().map_err(|_| "8 bytes")?);
///         Ok(())
///     }
/// }
/// ```
#[async_trait]
pub trait DurableActor: Send + Sync {
    /// Handles one message, returning the reply payload.
    async fn handle(
        &mut self,
        message: &MessageReceived,
        ctx: &mut ExecutionContext,
    ) -> HandlerResult;

    /// The whole state, encoded.
    fn snapshot(&self) -> Result<Vec<u8>, String>;

    /// Replaces the whole state with a decoded snapshot. On `Err` the state
    /// must be left as it was.
    fn restore(&mut self, state: &[u8]) -> Result<(), String>;

    /// Replaces the whole state with a snapshot written under state schema
    /// version `stored` (the `state_schema_version` configured when it was
    /// taken), for an actor that now reads version `current`: convert it
    /// here. The default refuses, naming both versions, and recovery fails
    /// with that error rather than drop the checkpoint (contract rule 16).
    /// On `Err` the state must be left as it was.
    fn migrate(&mut self, state: &[u8], stored: u32, current: u32) -> Result<(), String> {
        let _ = state;
        Err(format!(
            "the checkpoint's state is schema version {stored} and this actor reads version \
             {current}; implement DurableActor::migrate to convert it"
        ))
    }

    /// Whether this actor is event-sourced (contract rule 25): its commands
    /// record domain events ([`ExecutionContext::record_event`]), and
    /// recovery applies the journaled events to the state
    /// ([`DurableActor::apply_event`]) instead of running `handle` again:
    /// a command that completed never runs twice. The default, `false`, is
    /// durable execution: recovery runs `handle` again over each journaled
    /// message, with its recorded side effects handed back.
    fn is_event_sourced(&self) -> bool {
        false
    }

    /// Applies one journaled event (the entry at `sequence`) to the state,
    /// on recovery and time travel of an event-sourced actor. An event the
    /// actor cannot read (an unknown type, a version it has no upcaster
    /// for, a payload that does not decode) is `Err` naming it, and
    /// recovery fails with it rather than build a wrong state (rule 26).
    fn apply_event(&mut self, event: &EventRecorded, sequence: u64) -> Result<(), String> {
        let _ = sequence;
        Err(format!(
            "event {:?} found, and this actor is not event-sourced",
            event.event_type
        ))
    }

    /// Called once a message's end is journaled with the outcome its
    /// handler gave (for an event-sourced actor: once its events are
    /// persisted), before the reply goes out; never on recovery or time
    /// travel. For what must follow persistence: notifications, Akka's
    /// `thenRun`.
    fn after_persist(&mut self, outcome: &MessageOutcome) {
        let _ = outcome;
    }

    /// Whether the state in memory is no longer the journal's (an
    /// event-sourced actor whose `apply` panicked part-way through events
    /// that were then not persisted): the host then takes its state back
    /// from the journal (restore from creation, recover) before it is used
    /// again, and a checkpoint meanwhile is refused by `snapshot`. Asked
    /// after each message and after recovery. The default: never.
    fn needs_recovery(&self) -> bool {
        false
    }
}

/// What a facet decides about an incoming message.
#[derive(Debug)]
pub enum Admission {
    /// Handle it; the facet may provide the context side effects go through.
    Process(Option<Box<ExecutionContext>>),
    /// Its id is already journaled: do not handle it again. What it gave
    /// the first time, when known.
    AlreadyProcessed(Option<MessageOutcome>),
}

/// How handling a message ended, as facets see it afterwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageOutcome {
    /// The reply payload.
    Replied(Vec<u8>),
    /// The handler's error text.
    Failed(String),
}

/// A capability attached to an actor, called around its lifecycle.
///
/// Every hook has a default that does nothing, so a facet implements only
/// what it needs.
#[async_trait]
pub trait Facet: Send + Sync {
    /// The facet's name, for logs.
    fn name(&self) -> &'static str;

    /// Called once when the facet is attached to `actor_id`.
    async fn on_attach(&mut self, actor_id: &str) -> JournalResult<()> {
        let _ = actor_id;
        Ok(())
    }

    /// Called when the actor activates, before any message.
    async fn on_activate(
        &mut self,
        actor_id: &str,
        actor: &mut dyn DurableActor,
    ) -> JournalResult<()> {
        let _ = (actor_id, actor);
        Ok(())
    }

    /// Called before a message is handled.
    async fn before_message(
        &mut self,
        actor_id: &str,
        message: &MessageReceived,
    ) -> JournalResult<Admission> {
        let _ = (actor_id, message);
        Ok(Admission::Process(None))
    }

    /// Called after a message was handled, with the context it used.
    async fn after_message(
        &mut self,
        actor_id: &str,
        message: &MessageReceived,
        outcome: &MessageOutcome,
        context: &ExecutionContext,
        actor: &dyn DurableActor,
    ) -> JournalResult<()> {
        let _ = (actor_id, message, outcome, context, actor);
        Ok(())
    }

    /// Called when the actor is idle, by a host that keeps time (an actor
    /// system's timer, or [`crate::Actor::checkpoint_if_due`]): a facet
    /// does time-based work here, such as a checkpoint after
    /// `checkpoint_timeout`.
    async fn on_idle(&mut self, actor_id: &str, actor: &dyn DurableActor) -> JournalResult<()> {
        let _ = (actor_id, actor);
        Ok(())
    }

    /// Called when the host wants the actor's state saved now, whatever the
    /// checkpoint policy says: before it passivates an idle actor, or when
    /// the actor's `checkpoint_timeout` ran out (contract rule 19). A facet
    /// saves what it has not saved yet.
    async fn on_checkpoint(
        &mut self,
        actor_id: &str,
        actor: &dyn DurableActor,
    ) -> JournalResult<()> {
        let _ = (actor_id, actor);
        Ok(())
    }

    /// Called when the actor is deactivated.
    async fn on_detach(&mut self, actor_id: &str) -> JournalResult<()> {
        let _ = actor_id;
        Ok(())
    }
}
