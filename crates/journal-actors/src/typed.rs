//! Typed actors: messages, replies and state as Rust types through serde
//! (JSON), over the bytes API of [`DurableActor`].

use std::fmt::Display;
use std::future::Future;
use std::marker::PhantomData;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use journal_core::{
    Delivery, DurabilityConfig, DurableActor, ExecutionContext, HandlerError, HandlerResult,
    JournalStorage, MessageOutcome, MessageReceived, TimerScheduled, TimerStore,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::SendError;
use crate::name::message_type_of;
use crate::system::{journal_timer_fired, ActorSystem, ActorSystemBuilder, Registration};

/// A durable actor with typed messages, replies and state.
///
/// The actor value is its state: it is checkpointed and restored through
/// serde (JSON, so fields added with `#[serde(default)]` still read older
/// checkpoints), and its messages and replies are journaled the same way.
/// Everything from outside (calls to other services, time, randomness)
/// goes through the [`Context`], so that replay sees what the first run
/// saw.
pub trait TypedActor: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The name the type is registered and addressed under (also what
    /// timers aimed at it record).
    const TYPE: &'static str;
    /// What it is sent.
    type Message: Serialize + DeserializeOwned + Send + Sync + 'static;
    /// What it answers.
    type Reply: Serialize + DeserializeOwned + Send + 'static;

    /// Handles one message. `Err(HandlerError::Failed)` fails the message
    /// (journaled; timers it scheduled are dropped) and the actor goes on.
    fn handle(
        &mut self,
        message: Self::Message,
        ctx: &mut Context<'_, Self>,
    ) -> impl Future<Output = Result<Self::Reply, HandlerError>> + Send;

    /// Takes the state recovered from a checkpoint. The default replaces
    /// `self`; override it to keep what is not state (clients, handles
    /// given by the factory, fields marked `#[serde(skip)]`).
    fn restore_from(&mut self, recovered: Self) {
        *self = recovered;
    }

    /// The `message_type` journaled with a message, so `journal show`
    /// stays readable: `Enum::Variant` for an enum, the struct's name for
    /// a struct.
    fn message_type(message: &Self::Message) -> String {
        message_type_of(message)
    }
}

/// When a timer is due: after a delay from now, or at an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// This long after the scheduling message ran.
    After(Duration),
    /// At this wall-clock time (now if it has passed).
    At(SystemTime),
}

impl From<Duration> for Due {
    fn from(delay: Duration) -> Self {
        Due::After(delay)
    }
}

impl From<SystemTime> for Due {
    fn from(at: SystemTime) -> Self {
        Due::At(at)
    }
}

/// A timer's id, to cancel it; it serializes as a string, so it can be
/// kept in the actor's state.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TimerId(String);

impl TimerId {
    /// The id as the journal and the index know it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for TimerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a typed handler reaches the outside world and its timers through:
/// side effects, time and randomness (journaled, replayed), and durable
/// timers. [`Context::raw`] gives the bytes-level [`ExecutionContext`].
pub struct Context<'a, A: ?Sized> {
    raw: &'a mut ExecutionContext,
    actor: PhantomData<fn() -> A>,
}

impl<A: ?Sized> std::fmt::Debug for Context<'_, A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").field("raw", &self.raw).finish()
    }
}

fn codec(what: impl Display, error: impl Display) -> HandlerError {
    HandlerError::Failed(format!("{what}: {error}"))
}

impl<'a, A: ?Sized> Context<'a, A> {
    /// A typed context over `raw`.
    pub(crate) fn new(raw: &'a mut ExecutionContext) -> Self {
        Context {
            raw,
            actor: PhantomData,
        }
    }
}

impl<A: TypedActor> Context<'_, A> {
    /// Schedules `message` to this actor, due after a delay or at an
    /// instant. It is delivered once, also if this actor is passivated or
    /// every process restarted in between, unless cancelled first; if this
    /// message fails, the timer is dropped.
    pub async fn schedule(
        &mut self,
        due: impl Into<Due>,
        message: A::Message,
    ) -> Result<TimerId, HandlerError> {
        let id = self.actor_id().to_owned();
        self.schedule_to::<A>(&id, due, message).await
    }
}

impl<A: ?Sized> Context<'_, A> {
    /// This actor's id.
    pub fn actor_id(&self) -> &str {
        self.raw.actor_id()
    }

    /// The id of the message being handled.
    pub fn message_id(&self) -> &str {
        self.raw.message_id()
    }

    /// Whether results come from the journal (recovery) rather than from
    /// running the effects.
    pub fn is_replaying(&self) -> bool {
        self.raw.is_replaying()
    }

    /// Runs a side effect once (see [`ExecutionContext::side_effect_with`]):
    /// its typed result or error is journaled before the handler sees it,
    /// and replay returns it without running `effect`. `request` identifies
    /// the call (payee and amount, URL and body): replay compares a digest
    /// of it. The outer error is the journal's (use `?`), the inner one the
    /// effect's (`??` fails the message with it).
    pub async fn side_effect<T, R, F, Fut, E>(
        &mut self,
        name: &str,
        request: &R,
        effect: F,
    ) -> Result<Result<T, String>, HandlerError>
    where
        T: Serialize + DeserializeOwned,
        R: Serialize + ?Sized,
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = Result<T, E>> + Send,
        E: Display,
    {
        let request =
            serde_json::to_vec(request).map_err(|e| codec(format!("request of {name}"), e))?;
        let result = self
            .raw
            .side_effect_with(name, &request, || async move {
                match effect().await {
                    Ok(value) => serde_json::to_vec(&value).map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                }
            })
            .await?;
        Ok(result.and_then(|bytes| {
            serde_json::from_slice(&bytes)
                .map_err(|e| format!("the journaled result of {name} does not decode: {e}"))
        }))
    }

    /// As [`Context::side_effect`], retrying the effect under `policy`
    /// before its outcome is journaled (see
    /// [`ExecutionContext::side_effect_retried`]): a failure that a later
    /// attempt cures is never journaled; the last error is, once the
    /// attempts or the time budget run out.
    pub async fn side_effect_retried<T, R, F, Fut, E>(
        &mut self,
        name: &str,
        request: &R,
        policy: &journal_core::EffectRetry,
        mut effect: F,
    ) -> Result<Result<T, String>, HandlerError>
    where
        T: Serialize + DeserializeOwned + Send,
        R: Serialize + ?Sized,
        F: FnMut() -> Fut + Send,
        Fut: Future<Output = Result<T, E>> + Send,
        E: Display + Send,
    {
        let request =
            serde_json::to_vec(request).map_err(|e| codec(format!("request of {name}"), e))?;
        let result = self
            .raw
            .side_effect_retried(name, &request, policy, || {
                let attempt = effect();
                async move {
                    match attempt.await {
                        Ok(value) => serde_json::to_vec(&value).map_err(|e| e.to_string()),
                        Err(e) => Err(e.to_string()),
                    }
                }
            })
            .await?;
        Ok(result.and_then(|bytes| {
            serde_json::from_slice(&bytes)
                .map_err(|e| format!("the journaled result of {name} does not decode: {e}"))
        }))
    }

    /// The current time, journaled.
    pub async fn now(&mut self) -> Result<SystemTime, HandlerError> {
        Ok(self.raw.now().await?)
    }

    /// A random number, journaled.
    pub async fn random_u64(&mut self) -> Result<u64, HandlerError> {
        Ok(self.raw.random_u64().await?)
    }

    /// Schedules `message` to actor `actor_id` of type `B`, as
    /// [`Context::schedule`] does to this one.
    pub async fn schedule_to<B: TypedActor>(
        &mut self,
        actor_id: &str,
        due: impl Into<Due>,
        message: B::Message,
    ) -> Result<TimerId, HandlerError> {
        let message_type = B::message_type(&message);
        self.schedule_typed(B::TYPE, actor_id, due, &message, message_type)
            .await
    }

    /// Schedules `message` (of type name `message_type`) to actor
    /// `actor_id` of the registered type `actor_type`.
    pub(crate) async fn schedule_typed<M: Serialize>(
        &mut self,
        actor_type: &str,
        actor_id: &str,
        due: impl Into<Due>,
        message: &M,
        message_type: String,
    ) -> Result<TimerId, HandlerError> {
        let payload = serde_json::to_vec(message)
            .map_err(|e| codec(format!("timer message for {actor_type}"), e))?;
        let mut timer = TimerScheduled {
            target_actor_id: if actor_id == self.actor_id() {
                String::new()
            } else {
                actor_id.to_owned()
            },
            target_actor_type: actor_type.to_owned(),
            message_type,
            timer_data: payload,
            ..TimerScheduled::default()
        };
        match due.into() {
            Due::After(delay) => timer.delay = prost_types::Duration::try_from(delay).ok(),
            Due::At(at) => timer.due_at = Some(prost_types::Timestamp::from(at)),
        }
        Ok(TimerId(self.raw.schedule_timer(timer).await?))
    }

    /// Cancels a timer this actor scheduled. A cancelled timer never fires:
    /// one already claimed by the system's timer loop, its delivery perhaps
    /// queued behind this message, is dropped when the delivery comes up.
    /// Only a timer whose message is being handled now, or one claimed by
    /// another system on the same store, can no longer be stopped.
    pub async fn cancel(&mut self, timer: &TimerId) -> Result<(), HandlerError> {
        Ok(self.raw.cancel_timer(&timer.0).await?)
    }

    /// The bytes-level context.
    pub fn raw(&mut self) -> &mut ExecutionContext {
        self.raw
    }
}

/// A typed actor as a [`DurableActor`].
struct TypedHost<A>(A);

#[async_trait]
impl<A: TypedActor> DurableActor for TypedHost<A> {
    async fn handle(
        &mut self,
        message: &MessageReceived,
        ctx: &mut ExecutionContext,
    ) -> HandlerResult {
        let decoded: A::Message = serde_json::from_slice(&message.payload).map_err(|e| {
            codec(
                format!(
                    "message {:?} is not a {} message",
                    message.message_type,
                    A::TYPE
                ),
                e,
            )
        })?;
        let mut typed = Context {
            raw: ctx,
            actor: PhantomData,
        };
        let reply = self.0.handle(decoded, &mut typed).await?;
        serde_json::to_vec(&reply).map_err(|e| codec(format!("reply of {}", A::TYPE), e))
    }

    fn snapshot(&self) -> Result<Vec<u8>, String> {
        serde_json::to_vec(&self.0).map_err(|e| e.to_string())
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        let recovered: A = serde_json::from_slice(state).map_err(|e| e.to_string())?;
        self.0.restore_from(recovered);
        Ok(())
    }
}

/// A typed actor as the system runs it, as a bytes-level [`DurableActor`]:
/// messages, replies and state in the same encoding, and the `TimerFired`
/// entry of a timer's delivery journaled as the system journals it. For
/// reading a typed actor's journal outside a system: time travel with
/// [`journal_core::rebuild_at`], or hosting it with [`journal_core::Actor`].
/// Handling a message in an [`ExecutionContext::ephemeral`] context runs the
/// handler with no journal at all (side effects run, timers are only
/// recorded in [`ExecutionContext::timer_ops`]), which makes a reference
/// run for tests.
///
/// ```
/// # use journal_actors::{Context, TypedActor, TypedDurable};
/// # use journal_core::{DurableActor, ExecutionContext, HandlerError, MessageReceived};
/// # #[derive(Default, serde::Serialize, serde::Deserialize)]
/// # struct Counter { total: u64 }
/// # impl TypedActor for Counter {
/// #     const TYPE: &'static str = "counter";
/// #     type Message = u64;
/// #     type Reply = u64;
/// #     async fn handle(&mut self, n: u64, _: &mut Context<'_, Self>) -> Result<u64, HandlerError> {
/// #         self.total += n;
/// #         Ok(self.total)
/// #     }
/// # }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let mut counter = TypedDurable::new(Counter::default());
/// let message = MessageReceived { message_id: "m-1".into(), payload: b"5".to_vec(), ..Default::default() };
/// let reply = counter.handle(&message, &mut ExecutionContext::ephemeral("c-1", "m-1")).await;
/// assert_eq!(reply.ok(), Some(b"5".to_vec()));
/// assert_eq!(counter.actor().total, 5);
/// # }
/// ```
pub struct TypedDurable<A>(TypedHost<A>);

impl<A: TypedActor> TypedDurable<A> {
    /// `actor`, as a [`DurableActor`].
    pub fn new(actor: A) -> Self {
        TypedDurable(TypedHost(actor))
    }

    /// The typed actor (its state).
    pub fn actor(&self) -> &A {
        &self.0 .0
    }

    /// The typed actor, to change.
    pub fn actor_mut(&mut self) -> &mut A {
        &mut self.0 .0
    }

    /// The typed actor, unwrapped.
    pub fn into_inner(self) -> A {
        self.0 .0
    }
}

impl<A> std::fmt::Debug for TypedDurable<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("TypedDurable")
            .field(&std::any::type_name::<A>())
            .finish()
    }
}

#[async_trait]
impl<A: TypedActor> DurableActor for TypedDurable<A> {
    async fn handle(
        &mut self,
        message: &MessageReceived,
        ctx: &mut ExecutionContext,
    ) -> HandlerResult {
        journal_timer_fired(message, ctx).await?;
        self.0.handle(message, ctx).await
    }

    fn snapshot(&self) -> Result<Vec<u8>, String> {
        self.0.snapshot()
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        self.0.restore(state)
    }
}

impl<S> ActorSystemBuilder<S>
where
    S: JournalStorage + TimerStore + Clone + 'static,
{
    /// Registers the typed actor `A` under [`TypedActor::TYPE`]: `factory`
    /// makes the actor of an id in its initial state.
    #[must_use]
    pub fn register<A: TypedActor>(
        self,
        config: DurabilityConfig,
        factory: impl Fn(&str) -> A + Send + Sync + 'static,
    ) -> Self {
        self.register_registration(Registration::new(
            A::TYPE.to_owned(),
            config,
            Box::new(move |id| Box::new(TypedHost(factory(id)))),
        ))
    }
}

impl<S> ActorSystem<S>
where
    S: JournalStorage + TimerStore + Clone + 'static,
{
    /// A typed handle on actor `actor_id` of type `A` (nothing is activated
    /// until a message is sent).
    pub fn actor<A: TypedActor>(&self, actor_id: impl Into<String>) -> ActorRef<A, S> {
        ActorRef {
            system: self.clone(),
            actor_id: actor_id.into(),
            actor: PhantomData,
        }
    }
}

/// A typed handle on one actor of an [`ActorSystem`]. It holds a handle on
/// the system, so the system lives while it does.
pub struct ActorRef<A, S> {
    system: ActorSystem<S>,
    actor_id: String,
    actor: PhantomData<fn() -> A>,
}

impl<A, S> Clone for ActorRef<A, S> {
    fn clone(&self) -> Self {
        ActorRef {
            system: self.system.clone(),
            actor_id: self.actor_id.clone(),
            actor: PhantomData,
        }
    }
}

impl<A, S> std::fmt::Debug for ActorRef<A, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActorRef")
            .field("type", &std::any::type_name::<A>())
            .field("actor_id", &self.actor_id)
            .finish_non_exhaustive()
    }
}

impl<A, S> ActorRef<A, S>
where
    A: TypedActor,
    S: JournalStorage + TimerStore + Clone + 'static,
{
    /// The actor's id.
    pub fn id(&self) -> &str {
        &self.actor_id
    }

    /// Sends a message under a fresh id and waits for the reply.
    pub async fn send(&self, message: A::Message) -> Result<A::Reply, SendError> {
        self.send_with_id(String::new(), message).await
    }

    /// Sends a message under `message_id`: a message with an id the actor
    /// processed before is not handled again, and gets the reply recorded
    /// the first time (exactly-once, contract rule 17).
    pub async fn send_with_id(
        &self,
        message_id: impl Into<String>,
        message: A::Message,
    ) -> Result<A::Reply, SendError> {
        let message_type = A::message_type(&message);
        send_json(
            &self.system,
            (A::TYPE, &self.actor_id),
            message_id.into(),
            message_type,
            &message,
        )
        .await
    }
}

/// Sends `message` (JSON) under `message_id` to actor `(type, id)` of
/// `system` and decodes its reply.
pub(crate) async fn send_json<S, M, R>(
    system: &ActorSystem<S>,
    (actor_type, actor_id): (&str, &str),
    message_id: String,
    message_type: String,
    message: &M,
) -> Result<R, SendError>
where
    S: JournalStorage + TimerStore + Clone + 'static,
    M: Serialize,
    R: DeserializeOwned,
{
    let payload = serde_json::to_vec(message).map_err(|e| SendError::Codec(e.to_string()))?;
    let message = MessageReceived {
        message_id,
        message_type,
        payload,
        ..MessageReceived::default()
    };
    let message_id = message.message_id.clone();
    let reply = match system.send(actor_type, actor_id, message).await? {
        Delivery::Replied(reply) | Delivery::Duplicate(Some(MessageOutcome::Replied(reply))) => {
            reply
        }
        Delivery::Failed(reason) | Delivery::Duplicate(Some(MessageOutcome::Failed(reason))) => {
            return Err(SendError::Handler(reason))
        }
        Delivery::Duplicate(None) => return Err(SendError::ReplyUnknown(message_id)),
    };
    serde_json::from_slice(&reply).map_err(|e| SendError::Codec(e.to_string()))
}
