//! Event-sourced actors (contract rules 25, 26): a command handler decides
//! events from the current state, the events are persisted in one atomic
//! batch with the command's end, and the state is the fold of
//! [`EventSourced::apply`] over them. Recovery loads the latest snapshot and
//! applies the events after it; a command that completed never runs again.
//!
//! Commands are journaled as messages (`MessageReceived`, exactly-once by
//! message id, as for durable actors), events as `EventRecorded` entries
//! (type name, schema version, JSON payload, tags). Side effects, time and
//! randomness read in a command handler go through the [`Context`] and are
//! journaled as for durable actors.
//!
//! A command interrupted by a crash (its `MessageReceived` journaled, its
//! end not) is finished when the actor next activates, as a durable actor's
//! interrupted message is: its handler runs once more, with the side
//! effects already journaled handed back, and its events are persisted
//! then. It had persisted none before, so nothing is applied twice.

use std::future::Future;
use std::marker::PhantomData;

use async_trait::async_trait;
use journal_core::{
    DurabilityConfig, DurableActor, EventRecorded, ExecutionContext, HandlerError, HandlerResult,
    JournalStorage, MessageOutcome, MessageReceived, TimerStore,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::SendError;
use crate::name::{event_type_of, message_type_of};
use crate::system::{journal_timer_fired, ActorSystem, ActorSystemBuilder, Registration};
use crate::typed::{send_json, Context, Due, TimerId};

/// An event-sourced actor: its value is its state, built only by applying
/// events.
///
/// ```
/// use journal_actors::{Context, Decision, EventSourced};
/// use journal_core::HandlerError;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Default, Serialize, Deserialize)]
/// struct Account { balance: u64 }
///
/// #[derive(Serialize, Deserialize)]
/// enum Command { Deposit(u64), Withdraw(u64) }
///
/// #[derive(Serialize, Deserialize)]
/// enum Event { Deposited(u64), Withdrew(u64) }
///
/// impl EventSourced for Account {
///     const TYPE: &'static str = "account";
///     type Command = Command;
///     type Event = Event;
///     type Reply = u64;
///
///     async fn handle(&self, command: Command, _: &mut Context<'_, Self>)
///         -> Result<Decision<Self>, HandlerError> {
///         match command {
///             Command::Deposit(n) => Ok(Decision::persist([Event::Deposited(n)])
///                 .reply_with(|account: &Self| account.balance)),
///             Command::Withdraw(n) if n > self.balance => Err(HandlerError::failed("insufficient funds")),
///             Command::Withdraw(n) => Ok(Decision::persist([Event::Withdrew(n)])
///                 .reply_with(|account: &Self| account.balance)),
///         }
///     }
///
///     fn apply(&mut self, event: &Event) {
///         match event {
///             Event::Deposited(n) => self.balance += n,
///             Event::Withdrew(n) => self.balance -= n,
///         }
///     }
/// }
/// ```
pub trait EventSourced: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The name the type is registered and addressed under.
    const TYPE: &'static str;
    /// The schema version events are written in (1 and up). Events of an
    /// older version are read through [`EventSourced::upcast`].
    const EVENT_VERSION: u32 = 1;
    /// Whether recovery skips an event type it does not know (`false`, the
    /// default: recovery fails with an error naming it).
    const SKIP_UNKNOWN_EVENTS: bool = false;
    /// What it is sent.
    type Command: Serialize + DeserializeOwned + Send + Sync + 'static;
    /// What its commands decide: facts, never rewritten.
    type Event: Serialize + DeserializeOwned + Send + Sync + 'static;
    /// What it answers.
    type Reply: Serialize + DeserializeOwned + Send + 'static;

    /// Decides what a command does, from the current state: the events to
    /// persist (none is fine) and the reply. `Err(HandlerError::Failed)`
    /// fails the command and persists nothing. Runs once per command:
    /// never on recovery.
    fn handle(
        &self,
        command: Self::Command,
        ctx: &mut Context<'_, Self>,
    ) -> impl Future<Output = Result<Decision<Self>, HandlerError>> + Send;

    /// Applies one event to the state: on a command's decision, and on
    /// recovery and time travel. Deterministic, no outside world.
    fn apply(&mut self, event: &Self::Event);

    /// The type name journaled with an event: the variant's name for an
    /// enum (`ItemAdded`, not `CartEvent::ItemAdded`: renaming the Rust
    /// enum does not rename stored events), the struct's name for a
    /// struct. It is what [`EventSourced::upcast`] is given.
    fn event_type(event: &Self::Event) -> String {
        event_type_of(event)
    }

    /// The tags an event is filed under (the feed by tag finds it there).
    fn tags(event: &Self::Event) -> Vec<String> {
        let _ = event;
        Vec::new()
    }

    /// Reads an event of type `event_type` written in schema version
    /// `version` (older than [`EventSourced::EVENT_VERSION`]): returns its
    /// JSON in the current version. The default has no upcaster and fails
    /// recovery, naming the event.
    fn upcast(
        event_type: &str,
        version: u32,
        event: serde_json::Value,
    ) -> Result<serde_json::Value, String> {
        let _ = event;
        Err(format!(
            "no upcaster from version {version} of {event_type:?} to version {} \
             (implement EventSourced::upcast)",
            Self::EVENT_VERSION
        ))
    }

    /// Takes the state recovered from a snapshot. The default replaces
    /// `self`; override it to keep what is not state.
    fn restore_from(&mut self, recovered: Self) {
        *self = recovered;
    }

    /// Reads a snapshot written under state schema version `stored` (the
    /// configuration's `state_schema_version` when it was taken) by an
    /// actor now at version `current`. The default declines, and recovery
    /// passes the snapshot over and rebuilds the state from the events
    /// before it (an older snapshot, or the first entry; if the journal
    /// behind it was truncated, recovery fails saying so).
    fn migrate_state(state: serde_json::Value, stored: u32, current: u32) -> Result<Self, String> {
        let _ = state;
        Err(format!(
            "no migration from state schema version {stored} to {current}: rebuilt from the events"
        ))
    }

    /// The `message_type` journaled with a command.
    fn command_type(command: &Self::Command) -> String {
        message_type_of(command)
    }
}

/// The reply of a [`Decision`]: a value, or one computed from the state
/// after the command's events.
type ReplyFrom<A> = Box<dyn FnOnce(&A) -> <A as EventSourced>::Reply + Send>;

/// What follows persistence.
type AfterPersist<A> = Box<dyn FnOnce(&A) + Send + Sync>;

/// What a command decided: the events to persist, the reply, and what runs
/// once they are persisted.
pub struct Decision<A: EventSourced> {
    events: Vec<A::Event>,
    reply: ReplyFrom<A>,
    then: Option<AfterPersist<A>>,
}

impl<A: EventSourced> std::fmt::Debug for Decision<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decision")
            .field("events", &self.events.len())
            .field("then", &self.then.is_some())
            .finish_non_exhaustive()
    }
}

/// Events to persist, waiting for their reply ([`Decision::persist`]).
pub struct Persist<A: EventSourced> {
    events: Vec<A::Event>,
}

impl<A: EventSourced> std::fmt::Debug for Persist<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Persist")
            .field("events", &self.events.len())
            .finish()
    }
}

impl<A: EventSourced> Persist<A> {
    /// Replies `reply`.
    pub fn reply(self, reply: A::Reply) -> Decision<A> {
        Decision {
            events: self.events,
            reply: Box::new(move |_| reply),
            then: None,
        }
    }

    /// Replies with what `reply` computes from the state after the events.
    /// Name the state's type in the closure (`|account: &Self| ..` in the
    /// handler): the compiler cannot tell it from the events alone.
    pub fn reply_with(self, reply: impl FnOnce(&A) -> A::Reply + Send + 'static) -> Decision<A> {
        Decision {
            events: self.events,
            reply: Box::new(reply),
            then: None,
        }
    }
}

impl<A: EventSourced> Decision<A> {
    /// Persists `events` (in one atomic batch, in this order); the reply
    /// comes next.
    pub fn persist(events: impl IntoIterator<Item = A::Event>) -> Persist<A> {
        Persist {
            events: events.into_iter().collect(),
        }
    }

    /// Persists nothing and replies `reply`.
    pub fn reply(reply: A::Reply) -> Self {
        Persist { events: Vec::new() }.reply(reply)
    }

    /// Runs `then` with the state once the events are persisted (Akka's
    /// `thenRun`): notifications, metrics. Never on recovery, never for a
    /// command whose events could not be persisted.
    #[must_use]
    pub fn then_run(mut self, then: impl FnOnce(&A) + Send + Sync + 'static) -> Self {
        self.then = Some(Box::new(then));
        self
    }

    /// The events it persists.
    pub fn events(&self) -> &[A::Event] {
        &self.events
    }
}

impl<A: EventSourced> Context<'_, A> {
    /// Schedules `command` to this actor, due after a delay or at an
    /// instant, as [`Context::schedule`] does for durable actors.
    pub async fn schedule_command(
        &mut self,
        due: impl Into<Due>,
        command: A::Command,
    ) -> Result<TimerId, HandlerError> {
        let id = self.actor_id().to_owned();
        let command_type = A::command_type(&command);
        self.schedule_typed(A::TYPE, &id, due, &command, command_type)
            .await
    }
}

/// Schedules `command` to the event-sourced actor `actor_id` of type `B`
/// from any handler's context.
impl<X: ?Sized> Context<'_, X> {
    /// Schedules `command` to event-sourced actor `actor_id` of type `B`.
    pub async fn schedule_command_to<B: EventSourced>(
        &mut self,
        actor_id: &str,
        due: impl Into<Due>,
        command: B::Command,
    ) -> Result<TimerId, HandlerError> {
        let command_type = B::command_type(&command);
        self.schedule_typed(B::TYPE, actor_id, due, &command, command_type)
            .await
    }
}

fn codec(what: impl std::fmt::Display, error: impl std::fmt::Display) -> HandlerError {
    HandlerError::Failed(format!("{what}: {error}"))
}

/// An event-sourced actor as a bytes-level [`DurableActor`]: commands,
/// replies, events and state as JSON; recovery by its events. For time
/// travel outside a system ([`journal_core::rebuild_at`] gives the state
/// after any event), or to host it with [`journal_core::Actor`].
pub struct EventSourcedDurable<A: EventSourced> {
    actor: A,
    then: Option<AfterPersist<A>>,
    /// Whether `handle` journals a timer's `TimerFired` (the system's host
    /// does it for the actors it hosts).
    journals_timers: bool,
    /// Set when applying a command's events (or making its reply) failed
    /// part-way: the state holds events that are not persisted, until it is
    /// restored from the journal.
    poisoned: bool,
}

impl<A: EventSourced> std::fmt::Debug for EventSourcedDurable<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("EventSourcedDurable")
            .field(&std::any::type_name::<A>())
            .finish()
    }
}

impl<A: EventSourced> EventSourcedDurable<A> {
    /// `actor` in its initial state.
    pub fn new(actor: A) -> Self {
        EventSourcedDurable {
            actor,
            then: None,
            journals_timers: true,
            poisoned: false,
        }
    }

    /// The actor (its state).
    pub fn actor(&self) -> &A {
        &self.actor
    }

    /// The actor, unwrapped.
    pub fn into_inner(self) -> A {
        self.actor
    }

    /// Decodes a journaled event into the current version of `A::Event`:
    /// `Ok(None)` for an unknown type the actor chose to skip.
    pub fn decode_event(event: &EventRecorded) -> Result<Option<A::Event>, String> {
        let version = event.schema_version.max(1);
        let value: serde_json::Value = serde_json::from_slice(&event.payload)
            .map_err(|e| format!("the payload is not JSON: {e}"))?;
        let value = match version.cmp(&A::EVENT_VERSION) {
            std::cmp::Ordering::Equal => value,
            std::cmp::Ordering::Less => A::upcast(&event.event_type, version, value)?,
            std::cmp::Ordering::Greater => {
                return Err(format!(
                    "written in schema version {version}, and actor type {} reads up to version \
                     {} (a newer build wrote it)",
                    A::TYPE,
                    A::EVENT_VERSION
                ))
            }
        };
        // An error about *the event's own* variant being unknown is an
        // unknown event type; one about a value inside a known event is a
        // payload that does not decode. The event's variant is the name
        // it was journaled under (internally or adjacently tagged enums
        // name it in a field), or the outer one of an externally tagged
        // enum (a string, or an object of one key).
        let outer = match &value {
            serde_json::Value::String(name) => Some(name.clone()),
            serde_json::Value::Object(map) if map.len() == 1 => map.keys().next().cloned(),
            _ => None,
        };
        match serde_json::from_value::<A::Event>(value) {
            Ok(decoded) => Ok(Some(decoded)),
            Err(e)
                if unknown_variant(&e.to_string()).is_some_and(|name| {
                    name == event.event_type || outer.as_deref() == Some(name)
                }) =>
            {
                if A::SKIP_UNKNOWN_EVENTS {
                    Ok(None)
                } else {
                    Err(format!(
                        "unknown event type {:?} for actor type {} ({e})",
                        event.event_type,
                        A::TYPE
                    ))
                }
            }
            Err(e) => Err(format!("it does not decode as a {} event: {e}", A::TYPE)),
        }
    }
}

#[async_trait]
impl<A: EventSourced> DurableActor for EventSourcedDurable<A> {
    async fn handle(
        &mut self,
        message: &MessageReceived,
        ctx: &mut ExecutionContext,
    ) -> HandlerResult {
        if self.journals_timers {
            journal_timer_fired(message, ctx).await?;
        }
        let command: A::Command = serde_json::from_slice(&message.payload).map_err(|e| {
            codec(
                format!(
                    "message {:?} is not a {} command",
                    message.message_type,
                    A::TYPE
                ),
                e,
            )
        })?;
        let decision = {
            let mut typed = Context::new(ctx);
            self.actor.handle(command, &mut typed).await?
        };
        for event in &decision.events {
            let payload =
                serde_json::to_vec(event).map_err(|e| codec(format!("event of {}", A::TYPE), e))?;
            ctx.record_event(EventRecorded {
                event_type: A::event_type(event),
                schema_version: A::EVENT_VERSION,
                payload,
                tags: A::tags(event),
                ..EventRecorded::default()
            })?;
        }
        // The events are applied before they are persisted (the reply is
        // made from the new state). If applying them or making the reply
        // fails, the command fails and its events are dropped: the state,
        // which holds some of them, is taken back from the journal.
        let (actor, events, reply) = (&mut self.actor, &decision.events, decision.reply);
        let replied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            for event in events {
                actor.apply(event);
            }
            serde_json::to_vec(&reply(actor)).map_err(|e| e.to_string())
        }));
        match replied {
            Ok(Ok(reply)) => {
                self.then = decision.then;
                Ok(reply)
            }
            Ok(Err(e)) => {
                self.poisoned = true;
                Err(HandlerError::failed(format!(
                    "the reply of {} does not encode: {e}",
                    A::TYPE
                )))
            }
            Err(panic) => {
                self.poisoned = true;
                Err(HandlerError::failed(format!(
                    "applying the events of a {} command panicked: {}; its events are \
                     dropped and the state is taken back from the journal",
                    A::TYPE,
                    journal_core::panic_text(&*panic)
                )))
            }
        }
    }

    fn snapshot(&self) -> Result<Vec<u8>, String> {
        if self.poisoned {
            return Err("the state holds events that were not persisted".into());
        }
        serde_json::to_vec(&self.actor).map_err(|e| e.to_string())
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        let recovered: A = serde_json::from_slice(state).map_err(|e| e.to_string())?;
        self.actor.restore_from(recovered);
        self.poisoned = false;
        Ok(())
    }

    fn migrate(&mut self, state: &[u8], stored: u32, current: u32) -> Result<(), String> {
        let value: serde_json::Value = serde_json::from_slice(state).map_err(|e| e.to_string())?;
        let migrated = A::migrate_state(value, stored, current)?;
        self.actor.restore_from(migrated);
        self.poisoned = false;
        Ok(())
    }

    fn needs_recovery(&self) -> bool {
        self.poisoned
    }

    fn is_event_sourced(&self) -> bool {
        true
    }

    fn apply_event(&mut self, event: &EventRecorded, _sequence: u64) -> Result<(), String> {
        if let Some(decoded) = Self::decode_event(event)? {
            self.actor.apply(&decoded);
        }
        Ok(())
    }

    fn after_persist(&mut self, outcome: &MessageOutcome) {
        if let Some(then) = self.then.take() {
            if matches!(outcome, MessageOutcome::Replied(_)) {
                then(&self.actor);
            }
        }
    }
}

impl<S> ActorSystemBuilder<S>
where
    S: JournalStorage + TimerStore + Clone + 'static,
{
    /// Registers the event-sourced actor `A` under [`EventSourced::TYPE`]:
    /// `factory` makes the actor of an id in its initial state (before any
    /// event). Snapshots follow `config`'s checkpoint settings
    /// (`checkpoint_interval` counts journal entries: a command's two and
    /// its events), compression and state schema version.
    #[must_use]
    pub fn register_event_sourced<A: EventSourced>(
        self,
        config: DurabilityConfig,
        factory: impl Fn(&str) -> A + Send + Sync + 'static,
    ) -> Self {
        self.register_registration(Registration::new(
            A::TYPE.to_owned(),
            config,
            Box::new(move |id| {
                Box::new(EventSourcedDurable {
                    journals_timers: false,
                    ..EventSourcedDurable::new(factory(id))
                })
            }),
        ))
    }
}

impl<S> ActorSystem<S>
where
    S: JournalStorage + TimerStore + Clone + 'static,
{
    /// A handle on event-sourced actor `actor_id` of type `A` (nothing is
    /// activated until a command is sent).
    pub fn event_sourced<A: EventSourced>(
        &self,
        actor_id: impl Into<String>,
    ) -> EventSourcedRef<A, S> {
        EventSourcedRef {
            system: self.clone(),
            actor_id: actor_id.into(),
            actor: PhantomData,
        }
    }
}

/// A handle on one event-sourced actor of an [`ActorSystem`].
pub struct EventSourcedRef<A, S> {
    system: ActorSystem<S>,
    actor_id: String,
    actor: PhantomData<fn() -> A>,
}

impl<A, S> Clone for EventSourcedRef<A, S> {
    fn clone(&self) -> Self {
        EventSourcedRef {
            system: self.system.clone(),
            actor_id: self.actor_id.clone(),
            actor: PhantomData,
        }
    }
}

impl<A, S> std::fmt::Debug for EventSourcedRef<A, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventSourcedRef")
            .field("type", &std::any::type_name::<A>())
            .field("actor_id", &self.actor_id)
            .finish_non_exhaustive()
    }
}

impl<A, S> EventSourcedRef<A, S>
where
    A: EventSourced,
    S: JournalStorage + TimerStore + Clone + 'static,
{
    /// The actor's id.
    pub fn id(&self) -> &str {
        &self.actor_id
    }

    /// Sends a command under a fresh id and waits for the reply (given
    /// once its events are persisted).
    pub async fn send(&self, command: A::Command) -> Result<A::Reply, SendError> {
        self.send_with_id(String::new(), command).await
    }

    /// Sends a command under `message_id`: a command with an id the actor
    /// processed before is not handled again, persists nothing, and gets
    /// the reply recorded the first time (exactly-once, rule 17).
    pub async fn send_with_id(
        &self,
        message_id: impl Into<String>,
        command: A::Command,
    ) -> Result<A::Reply, SendError> {
        let command_type = A::command_type(&command);
        send_json(
            &self.system,
            (A::TYPE, &self.actor_id),
            message_id.into(),
            command_type,
            &command,
        )
        .await
    }
}

/// The variant serde's error says is unknown ("unknown variant `X`, ...").
fn unknown_variant(error: &str) -> Option<&str> {
    error
        .strip_prefix("unknown variant `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(name, _)| name)
}
