#![doc = include_str!("../README.md")]

mod clock;
pub mod error;
pub mod event_sourced;
mod name;
pub mod system;
pub mod timers;
pub mod typed;

pub use error::SendError;
pub use event_sourced::{Decision, EventSourced, EventSourcedDurable, EventSourcedRef, Persist};
pub use system::{
    ActorSystem, ActorSystemBuilder, Factory, SystemConfig, SystemEvent, TIMER_ID_KEY,
};
pub use timers::{timer_message_id, CHECKPOINT_TIMER};
pub use typed::{ActorRef, Context, Due, TimerId, TypedActor, TypedDurable};
