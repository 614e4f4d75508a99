//! A minimal actor host: one actor, its facets, and messages delivered one
//! at a time. It has the seed's shape (`actor.facets().attach(..)`) so that
//! durable actors work without an actor framework; an actor system drives
//! [`Facet`]s the same way.

use crate::context::ExecutionContext;
use crate::error::{JournalError, JournalResult};
use crate::facet::{Admission, DurableActor, Facet, HandlerError, MessageOutcome};
use crate::proto::MessageReceived;

/// The facets attached to an actor, called in attachment order.
#[derive(Default)]
pub struct Facets {
    list: Vec<Box<dyn Facet>>,
    attached: usize,
}

impl std::fmt::Debug for Facets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.list.iter().map(|facet| facet.name()))
            .finish()
    }
}

impl Facets {
    /// Attaches a facet; its `on_attach` runs when the actor activates.
    /// Attaching a second facet of the same name (two durability facets
    /// would journal every message twice) is
    /// [`JournalError::InvalidEntry`].
    pub fn attach(&mut self, facet: Box<dyn Facet>) -> JournalResult<&mut Self> {
        if self.list.iter().any(|f| f.name() == facet.name()) {
            return Err(JournalError::InvalidEntry(format!(
                "a {:?} facet is already attached to this actor",
                facet.name()
            )));
        }
        self.list.push(facet);
        Ok(self)
    }

    /// Names of the attached facets.
    pub fn names(&self) -> Vec<&'static str> {
        self.list.iter().map(|f| f.name()).collect()
    }
}

/// What became of a delivered message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Handled; the reply payload.
    Replied(Vec<u8>),
    /// Handled; the handler's error (journaled as such).
    Failed(String),
    /// Its id was already processed: not handled again. What it gave the
    /// first time (the reply or the failure), when still known: `None` only
    /// for ids remembered from checkpoints of older builds.
    Duplicate(Option<MessageOutcome>),
}

/// One actor with its facets.
///
/// A message whose journaling fails (the storage unavailable past the
/// retry budget, a conflict with another writer) did not complete: the
/// host rolls the actor's state back to what it was given at creation, and
/// the next `send` or `activate` recovers it from the journal. Its state as
/// the failed message left it is never handed out (contract rule 21).
///
/// ```
/// # use journal_core::*;
/// # struct Counter(u64);
/// # #[async_trait::async_trait]
/// # impl DurableActor for Counter {
/// #     async fn handle(&mut self, _: &MessageReceived, _: &mut ExecutionContext) -> HandlerResult {
/// #         self.0 += 1;
/// #         Ok(self.0.to_le_bytes().to_vec())
/// #     }
/// #     fn snapshot(&self) -> Result<Vec<u8>, String> { Ok(self.0.to_le_bytes().to_vec()) }
/// #     fn restore(&mut self, s: &[u8]) -> Result<(), String> {
/// #         self.0 = u64::from_le_bytes(s.try_into().map_err(|_| "8 bytes")?);
/// #         Ok(())
/// #     }
/// # }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), JournalError> {
/// // Without facets an actor is plain: nothing is journaled.
/// let mut counter = Actor::new("counter-1", Counter(0));
/// let reply = counter.send(MessageReceived { message_id: "m-1".into(), ..Default::default() }).await?;
/// assert_eq!(reply, Delivery::Replied(1u64.to_le_bytes().to_vec()));
/// // With a durability facet, the same calls journal and recover (see
/// // `DurabilityFacet`).
/// # Ok(())
/// # }
/// ```
pub struct Actor<A> {
    id: String,
    behavior: A,
    facets: Facets,
    active: bool,
    /// The state given at creation, taken at the first activation: every
    /// recovery starts from it.
    initial: Option<Vec<u8>>,
    /// Why the last message or activation failed, until a recovery.
    failed: Option<String>,
    /// Set when the actor cannot be recovered in this process.
    stopped: Option<String>,
}

impl<A: std::fmt::Debug> std::fmt::Debug for Actor<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Actor")
            .field("id", &self.id)
            .field("behavior", &self.behavior)
            .field("facets", &self.facets)
            .field("active", &self.active)
            .field("failed", &self.failed)
            .field("stopped", &self.stopped)
            .finish_non_exhaustive()
    }
}

impl<A: DurableActor> Actor<A> {
    /// An actor that is not yet active.
    pub fn new(id: impl Into<String>, behavior: A) -> Self {
        Actor {
            id: id.into(),
            behavior,
            facets: Facets::default(),
            active: false,
            initial: None,
            failed: None,
            stopped: None,
        }
    }

    /// The actor's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The actor's state: as of the last message that completed, or, after
    /// a message failed and until the next recovery, as given at creation.
    pub fn behavior(&self) -> &A {
        &self.behavior
    }

    /// Whether the actor is active: recovered, and not failed since.
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// Its facets, to attach more.
    pub fn facets(&mut self) -> &mut Facets {
        &mut self.facets
    }

    /// Runs `on_attach` of newly attached facets and `on_activate` of all
    /// (a durability facet recovers the state here, from the state given at
    /// creation). Delivering a message activates the actor first if needed;
    /// activating an active actor recovers it again.
    pub async fn activate(&mut self) -> JournalResult<()> {
        self.ensure_running()?;
        while self.facets.attached < self.facets.list.len() {
            self.facets.list[self.facets.attached]
                .on_attach(&self.id)
                .await?;
            self.facets.attached += 1;
        }
        if self.initial.is_none() {
            self.initial = self.behavior.snapshot().ok();
        } else {
            self.restore_initial()?;
        }
        self.active = false;
        // A second pass when recovery itself finished a message that left
        // the state unlike the journal (now completed in it).
        for pass in 0..2 {
            if pass == 1 {
                if !self.behavior.needs_recovery() {
                    break;
                }
                self.restore_initial()?;
            }
            for facet in &mut self.facets.list {
                if let Err(e) = facet.on_activate(&self.id, &mut self.behavior).await {
                    return Err(self.fail(e));
                }
            }
        }
        self.active = true;
        self.failed = None;
        Ok(())
    }

    /// Puts back the state the actor was given at creation (when it could
    /// be snapshotted then).
    fn restore_initial(&mut self) -> JournalResult<()> {
        if let Some(initial) = &self.initial {
            if let Err(reason) = self.behavior.restore(initial) {
                self.stopped = Some(format!("its initial state does not restore: {reason}"));
                return Err(self.stopped_error());
            }
        }
        Ok(())
    }

    /// Delivers one message.
    ///
    /// A message that is bad on its own (an empty `message_id`, too large
    /// to journal, a side-effect result too large to journal) fails alone
    /// with [`JournalError::InvalidEntry`]; the actor goes on. A journal
    /// failure fails the message and rolls the state back; the next call
    /// recovers the actor from the journal first.
    #[tracing::instrument(
        name = "message",
        level = "info",
        skip_all,
        fields(
            actor_id = %self.id,
            message_id = %message.message_id,
            message_type = %message.message_type
        )
    )]
    pub async fn send(&mut self, message: MessageReceived) -> JournalResult<Delivery> {
        if !self.active {
            self.activate().await?;
        }
        self.ensure_running()?;
        let mut context = None;
        for facet in &mut self.facets.list {
            match facet.before_message(&self.id, &message).await {
                Ok(Admission::AlreadyProcessed(outcome)) => {
                    return Ok(Delivery::Duplicate(outcome))
                }
                Ok(Admission::Process(provided)) => context = context.or(provided),
                // Rejected before any I/O: nothing journaled, nothing changed.
                Err(e @ JournalError::InvalidEntry(_)) => return Err(e),
                Err(e) => return Err(self.fail(e)),
            }
        }
        let mut context = context.unwrap_or_else(|| {
            Box::new(ExecutionContext::ephemeral(&self.id, &message.message_id))
        });
        let handled = crate::facet::handle_caught(&mut self.behavior, &message, &mut context).await;
        let mut message_error = None;
        let outcome = match context.take_failure() {
            Some((e, false)) => return Err(self.fail(e)),
            Some((e, true)) => {
                let outcome = MessageOutcome::Failed(e.to_string());
                message_error = Some(e);
                outcome
            }
            None => match handled {
                Ok(reply) => MessageOutcome::Replied(reply),
                Err(HandlerError::Failed(reason)) => MessageOutcome::Failed(reason),
                Err(HandlerError::Journal(e)) => return Err(self.fail(e)),
            },
        };
        for facet in &mut self.facets.list {
            match facet
                .after_message(&self.id, &message, &outcome, &context, &self.behavior)
                .await
            {
                Ok(()) => {}
                // Journaled as failed (a reply too large to journal): the
                // message fails alone, the state is the journal's.
                Err(e @ JournalError::InvalidEntry(_)) => message_error = message_error.or(Some(e)),
                Err(e) => return Err(self.fail(e)),
            }
        }
        self.behavior.after_persist(&outcome);
        if self.behavior.needs_recovery() {
            // Its state in memory is not the journal's: the next message
            // recovers it first.
            self.active = false;
        }
        if let Some(e) = message_error {
            return Err(e);
        }
        Ok(match outcome {
            MessageOutcome::Replied(reply) => Delivery::Replied(reply),
            MessageOutcome::Failed(reason) => Delivery::Failed(reason),
        })
    }

    /// Gives every facet its time-based work, such as a checkpoint after
    /// `checkpoint_timeout` for an actor that has been idle since (contract
    /// rule 19). Call it from a timer; an inactive actor does nothing.
    pub async fn checkpoint_if_due(&mut self) -> JournalResult<()> {
        if !self.active {
            return Ok(());
        }
        for facet in &mut self.facets.list {
            facet.on_idle(&self.id, &self.behavior).await?;
        }
        Ok(())
    }

    /// Has every facet save what it has not saved yet (a durability facet
    /// takes a checkpoint when entries came after its last one), whatever
    /// the checkpoint policy says: before passivating an idle actor, or when
    /// its `checkpoint_timeout` ran out. An inactive actor does nothing.
    pub async fn checkpoint_now(&mut self) -> JournalResult<()> {
        if !self.active {
            return Ok(());
        }
        for facet in &mut self.facets.list {
            facet.on_checkpoint(&self.id, &self.behavior).await?;
        }
        Ok(())
    }

    /// Runs every facet's `on_detach` and hands back the state. After a
    /// failed message that no recovery followed, the state is not the
    /// actor's: that is [`JournalError::RecoveryFailed`].
    pub async fn deactivate(mut self) -> JournalResult<A> {
        if let Some(reason) = self.failed.as_ref().or(self.stopped.as_ref()) {
            return Err(JournalError::RecoveryFailed {
                actor_id: self.id.clone(),
                reason: format!(
                    "its last message failed ({reason}) and it was not recovered since: \
                     its state is not handed out"
                ),
            });
        }
        for facet in &mut self.facets.list {
            facet.on_detach(&self.id).await?;
        }
        Ok(self.behavior)
    }

    /// A journal failure: the state goes back to the initial one (the next
    /// activation recovers it), or, when there is none, the actor stops.
    fn fail(&mut self, error: JournalError) -> JournalError {
        self.active = false;
        self.failed = Some(error.to_string());
        let rolled_back = self
            .initial
            .as_ref()
            .is_some_and(|initial| self.behavior.restore(initial).is_ok());
        if !rolled_back {
            self.stopped = Some(error.to_string());
        }
        error
    }

    fn stopped_error(&self) -> JournalError {
        JournalError::RecoveryFailed {
            actor_id: self.id.clone(),
            reason: format!(
                "the actor stopped ({}); create it again to recover",
                self.stopped.as_deref().unwrap_or("unknown")
            ),
        }
    }

    fn ensure_running(&self) -> JournalResult<()> {
        match &self.stopped {
            None => Ok(()),
            Some(_) => Err(self.stopped_error()),
        }
    }
}
