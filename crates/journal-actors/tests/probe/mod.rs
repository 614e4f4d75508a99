//! The actor the tests drive, and the probe through which it reports what
//! it does (live only, not on replay).

#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use journal_actors::{Context, TimerId, TypedActor};
use journal_core::{HandlerError, JournalStorage};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, Notify};

/// What the counters report, shared by every counter of a test.
#[derive(Clone, Default)]
pub struct Probe {
    /// (actor id, note) for each note handled live.
    pub notes: Option<mpsc::UnboundedSender<(String, String)>>,
    /// "start n" / "end n" of each slow message handled live.
    pub log: Arc<Mutex<Vec<String>>>,
    /// Opened by `Open`, awaited by `Wait`.
    pub gate: Arc<Notify>,
    /// Told when a `Wait` starts waiting.
    pub waiting: Arc<Notify>,
}

impl Probe {
    /// A probe and the receiving end of its notes.
    pub fn new() -> (Self, mpsc::UnboundedReceiver<(String, String)>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Probe {
                notes: Some(tx),
                ..Probe::default()
            },
            rx,
        )
    }
}

/// The test actor: a total, notes received, and a pending reminder.
#[derive(Default, Serialize, Deserialize)]
pub struct Counter {
    pub total: u64,
    pub notes: Vec<String>,
    pub pending: Option<TimerId>,
    #[serde(skip)]
    probe: Probe,
}

impl Counter {
    pub fn new(probe: &Probe) -> Self {
        Counter {
            probe: probe.clone(),
            ..Counter::default()
        }
    }
}

/// What a counter is sent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum CounterMessage {
    /// Adds to the total; replies the total.
    Add(u64),
    /// Adds, with await points between its start and its end.
    Slow(u64),
    /// Waits for the gate.
    Wait,
    /// Opens the gate.
    Open,
    /// Schedules `Note(note)` to itself after `after_ms`.
    Remind { after_ms: u64, note: String },
    /// Schedules `Note(note)` to itself at a wall-clock time.
    RemindAt { at_ms: u64, note: String },
    /// Schedules `Note(note)` to counter `target` after `after_ms`.
    RemindOther {
        target: String,
        after_ms: u64,
        note: String,
    },
    /// Cancels the pending reminder.
    CancelReminder,
    /// Schedules a reminder, then fails.
    RemindThenFail { after_ms: u64, note: String },
    /// A note (what reminders deliver); replies the number of notes.
    Note(String),
}

impl TypedActor for Counter {
    const TYPE: &'static str = "counter";
    type Message = CounterMessage;
    type Reply = u64;

    async fn handle(
        &mut self,
        message: CounterMessage,
        ctx: &mut Context<'_, Self>,
    ) -> Result<u64, HandlerError> {
        let live = !ctx.is_replaying();
        match message {
            CounterMessage::Add(n) => self.total += n,
            CounterMessage::Slow(n) => {
                if live {
                    self.probe
                        .log
                        .lock()
                        .expect("not poisoned")
                        .push(format!("start {n}"));
                }
                for _ in 0..3 {
                    tokio::task::yield_now().await;
                }
                self.total += n;
                if live {
                    self.probe
                        .log
                        .lock()
                        .expect("not poisoned")
                        .push(format!("end {n}"));
                }
            }
            CounterMessage::Wait => {
                if live {
                    self.probe.waiting.notify_one();
                    self.probe.gate.notified().await;
                }
            }
            CounterMessage::Open => self.probe.gate.notify_one(),
            CounterMessage::Remind { after_ms, note } => {
                let id = ctx
                    .schedule(Duration::from_millis(after_ms), CounterMessage::Note(note))
                    .await?;
                self.pending = Some(id);
            }
            CounterMessage::RemindAt { at_ms, note } => {
                let at = SystemTime::UNIX_EPOCH + Duration::from_millis(at_ms);
                self.pending = Some(ctx.schedule(at, CounterMessage::Note(note)).await?);
            }
            CounterMessage::RemindOther {
                target,
                after_ms,
                note,
            } => {
                ctx.schedule_to::<Counter>(
                    &target,
                    Duration::from_millis(after_ms),
                    CounterMessage::Note(note),
                )
                .await?;
            }
            CounterMessage::CancelReminder => {
                if let Some(id) = self.pending.take() {
                    ctx.cancel(&id).await?;
                }
            }
            CounterMessage::RemindThenFail { after_ms, note } => {
                let id = ctx
                    .schedule(Duration::from_millis(after_ms), CounterMessage::Note(note))
                    .await?;
                self.pending = Some(id);
                return Err(HandlerError::failed("refused after scheduling"));
            }
            CounterMessage::Note(note) => {
                if live {
                    if let Some(tx) = &self.probe.notes {
                        let _ = tx.send((ctx.actor_id().to_owned(), note.clone()));
                    }
                }
                self.notes.push(note);
                return Ok(self.notes.len() as u64);
            }
        }
        Ok(self.total)
    }

    fn restore_from(&mut self, recovered: Self) {
        let probe = std::mem::take(&mut self.probe);
        *self = Counter { probe, ..recovered };
    }
}

/// The kinds of an actor's journal entries, in order.
pub async fn kinds(storage: &impl JournalStorage, actor: &str) -> Vec<&'static str> {
    storage
        .replay_from(actor, 1)
        .await
        .expect("succeeds")
        .iter()
        .map(journal_core::JournalEntry::kind)
        .collect()
}

/// How many messages with this id the actor's journal received.
pub async fn received(storage: &impl JournalStorage, actor: &str, message_id: &str) -> usize {
    storage
        .replay_from(actor, 1)
        .await
        .expect("succeeds")
        .iter()
        .filter(|e| {
            matches!(&e.entry, Some(journal_core::journal_entry::Entry::MessageReceived(m)) if m.message_id == message_id)
        })
        .count()
}
