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
    pub fn attach(&mut self, facet: Box<dyn Facet>) -> &mut Self {
        self.list.push(facet);
        self
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
    /// Its id was already processed: not handled again.
    Duplicate,
}

/// One actor with its facets.
pub struct Actor<A> {
    id: String,
    behavior: A,
    facets: Facets,
    active: bool,
    stopped: Option<String>,
}

impl<A: std::fmt::Debug> std::fmt::Debug for Actor<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Actor")
            .field("id", &self.id)
            .field("behavior", &self.behavior)
            .field("facets", &self.facets)
            .field("active", &self.active)
            .field("stopped", &self.stopped)
            .finish()
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
            stopped: None,
        }
    }

    /// The actor's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The actor's state.
    pub fn behavior(&self) -> &A {
        &self.behavior
    }

    /// Its facets, to attach more.
    pub fn facets(&mut self) -> &mut Facets {
        &mut self.facets
    }

    /// Runs `on_attach` of newly attached facets and `on_activate` of all
    /// (a durability facet recovers the state here). Delivering a message
    /// activates the actor first if needed.
    pub async fn activate(&mut self) -> JournalResult<()> {
        self.ensure_running()?;
        while self.facets.attached < self.facets.list.len() {
            self.facets.list[self.facets.attached]
                .on_attach(&self.id)
                .await?;
            self.facets.attached += 1;
        }
        for facet in &mut self.facets.list {
            if let Err(e) = facet.on_activate(&self.id, &mut self.behavior).await {
                return Err(self.stop(e));
            }
        }
        self.active = true;
        Ok(())
    }

    /// Delivers one message. A journal error stops the actor: later calls
    /// fail, and the actor must be created again, which recovers it from
    /// the journal.
    pub async fn send(&mut self, message: MessageReceived) -> JournalResult<Delivery> {
        if !self.active {
            self.activate().await?;
        }
        self.ensure_running()?;
        let mut context = None;
        for facet in &mut self.facets.list {
            match facet.before_message(&self.id, &message).await {
                Ok(Admission::AlreadyProcessed) => return Ok(Delivery::Duplicate),
                Ok(Admission::Process(provided)) => context = context.or(provided),
                Err(e) => return Err(self.stop(e)),
            }
        }
        let mut context =
            context.unwrap_or_else(|| ExecutionContext::ephemeral(&self.id, &message.message_id));
        let outcome = match self.behavior.handle(&message, &mut context).await {
            Ok(reply) => MessageOutcome::Replied(reply),
            Err(HandlerError::Failed(reason)) => MessageOutcome::Failed(reason),
            Err(HandlerError::Journal(e)) => return Err(self.stop(e)),
        };
        for facet in &mut self.facets.list {
            if let Err(e) = facet
                .after_message(&self.id, &message, &outcome, &context, &self.behavior)
                .await
            {
                return Err(self.stop(e));
            }
        }
        Ok(match outcome {
            MessageOutcome::Replied(reply) => Delivery::Replied(reply),
            MessageOutcome::Failed(reason) => Delivery::Failed(reason),
        })
    }

    /// Runs every facet's `on_detach` and hands back the state.
    pub async fn deactivate(mut self) -> JournalResult<A> {
        for facet in &mut self.facets.list {
            facet.on_detach(&self.id).await?;
        }
        Ok(self.behavior)
    }

    fn stop(&mut self, error: JournalError) -> JournalError {
        self.stopped = Some(error.to_string());
        error
    }

    fn ensure_running(&self) -> JournalResult<()> {
        match &self.stopped {
            None => Ok(()),
            Some(reason) => Err(JournalError::RecoveryFailed {
                actor_id: self.id.clone(),
                reason: format!("the actor stopped after a journal error ({reason}); create it again to recover"),
            }),
        }
    }
}
