//! The durability facet: journals every message, side effect and outcome of
//! an actor, checkpoints its real state, and recovers it on activation.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::TryStreamExt;
use prost::Message;

use crate::checkpoint::{CheckpointManager, CheckpointPolicy, SavedCheckpoint, SkippedCheckpoint};
use crate::context::ExecutionContext;
use crate::error::{JournalError, JournalResult};
use crate::facet::{Admission, DurableActor, Facet, HandlerError, MessageOutcome};
use crate::proto::{
    journal_entry::Entry, CompressionType, DurabilityConfig, FacetSnapshot, JournalBackend,
    JournalEntry, MessageProcessed, MessageReceived, ProcessingResult, SideEffectExecuted,
};
use crate::storage::JournalStorage;

/// Default number of recent message ids remembered for exactly-once.
pub const DEFAULT_DEDUP_WINDOW: usize = 1_000;

impl DurabilityConfig {
    /// A configuration with the recommended settings for `backend`: a
    /// checkpoint every 100 entries, zstd level 3, recovery on activation,
    /// side effects cached, state schema version 1, 2 checkpoints kept.
    pub fn recommended(backend: JournalBackend) -> Self {
        DurabilityConfig {
            backend: backend.into(),
            checkpoint_interval: 100,
            replay_on_activation: true,
            cache_side_effects: true,
            compression: CompressionType::Zstd.into(),
            compression_level: 3,
            state_schema_version: 1,
            ..DurabilityConfig::default()
        }
    }
}

/// What the last activation did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActivationReport {
    /// The checkpoint recovery started from, if any.
    pub checkpoint_sequence: Option<u64>,
    /// Newer checkpoints passed over, and why.
    pub skipped_checkpoints: Vec<SkippedCheckpoint>,
    /// Entries replayed after the checkpoint.
    pub replayed_entries: u64,
    /// Messages replayed.
    pub replayed_messages: u64,
    /// Whether the last message had been interrupted and was completed.
    pub completed_interrupted_message: bool,
    /// The highest sequence after activation.
    pub highest_sequence: u64,
    /// How long activation took.
    pub elapsed: Duration,
}

/// Counters a running facet updates; read them through
/// [`DurabilityFacet::observer`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DurabilityStats {
    /// The last activation.
    pub activation: ActivationReport,
    /// Messages handled since activation (duplicates not counted).
    pub messages: u64,
    /// Redelivered messages skipped.
    pub duplicates: u64,
    /// Checkpoints saved since activation.
    pub checkpoints: u64,
    /// The last checkpoint saved.
    pub last_checkpoint: Option<SavedCheckpoint>,
}

/// A read-only view of a facet's [`DurabilityStats`], usable after the
/// facet was attached.
#[derive(Debug, Clone, Default)]
pub struct DurabilityObserver(Arc<Mutex<DurabilityStats>>);

impl DurabilityObserver {
    /// The current counters.
    pub fn stats(&self) -> DurabilityStats {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn update(&self, f: impl FnOnce(&mut DurabilityStats)) {
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner));
    }
}

/// Recent message ids, bounded.
#[derive(Debug, Default)]
struct RecentIds {
    order: VecDeque<Arc<str>>,
    set: HashSet<Arc<str>>,
    capacity: usize,
}

impl RecentIds {
    fn new(capacity: usize, ids: impl IntoIterator<Item = String>) -> Self {
        let mut recent = RecentIds {
            capacity: capacity.max(1),
            ..RecentIds::default()
        };
        for id in ids {
            recent.insert(id);
        }
        recent
    }

    fn insert(&mut self, id: String) {
        let id: Arc<str> = id.into();
        if self.set.insert(Arc::clone(&id)) {
            self.order.push_back(id);
            while self.order.len() > self.capacity {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }

    fn contains(&self, id: &str) -> bool {
        self.set.contains(id)
    }
}

/// A message received and not (yet) processed, with the side effects
/// recorded for it.
type PendingMessage = (MessageReceived, VecDeque<SideEffectExecuted>);

/// Per-actor state of an activated facet.
#[derive(Debug)]
struct Active {
    next_sequence: u64,
    /// Sequence of the last checkpoint (0: none).
    checkpoint_sequence: u64,
    last_checkpoint: Instant,
    recent: RecentIds,
}

/// Makes an actor durable: journals each message (`MessageReceived` before
/// handling, side effects as they happen, `MessageProcessed` after),
/// skips messages whose id is already journaled, takes checkpoints of the
/// actor's real state every `checkpoint_interval` entries or after
/// `checkpoint_timeout`, and on activation recovers the state from the
/// newest usable checkpoint plus the entries after it.
///
/// Side effects are journaled after they run, so one that ran but whose
/// result was not journaled before a crash runs again on recovery:
/// at-least-once towards the outside world, exactly-once in the actor.
pub struct DurabilityFacet {
    storage: Arc<dyn JournalStorage>,
    config: DurabilityConfig,
    checkpoints: CheckpointManager,
    dedup_window: usize,
    actor_id: String,
    active: Option<Active>,
    observer: DurabilityObserver,
}

impl std::fmt::Debug for DurabilityFacet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DurabilityFacet")
            .field("backend", &self.storage.backend_name())
            .field("actor_id", &self.actor_id)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl DurabilityFacet {
    /// A facet journaling to `storage` (by value or in an `Arc`).
    pub fn new(storage: impl JournalStorage + 'static, config: DurabilityConfig) -> Self {
        let storage: Arc<dyn JournalStorage> = Arc::new(storage);
        let policy = CheckpointPolicy::from_config(&config);
        DurabilityFacet {
            checkpoints: CheckpointManager::new(Arc::clone(&storage), policy),
            storage,
            dedup_window: match config.dedup_window {
                0 => DEFAULT_DEDUP_WINDOW,
                n => n as usize,
            },
            config,
            actor_id: String::new(),
            active: None,
            observer: DurabilityObserver::default(),
        }
    }

    /// A handle on the facet's counters, valid after attaching it.
    pub fn observer(&self) -> DurabilityObserver {
        self.observer.clone()
    }

    fn active(&mut self) -> JournalResult<&mut Active> {
        let actor_id = self.actor_id.clone();
        self.active
            .as_mut()
            .ok_or_else(|| JournalError::RecoveryFailed {
                actor_id,
                reason: "the durability facet was not activated".into(),
            })
    }

    async fn append(&self, sequence: u64, entry: Entry, correlation_id: &str) -> JournalResult<()> {
        let entry = JournalEntry::new(self.actor_id.clone(), sequence, entry)
            .with_correlation_id(correlation_id);
        self.storage.append_entry(&entry).await.map(drop)
    }

    /// Recovery: newest usable checkpoint, then the entries after it,
    /// message by message, with recorded side effects handed back.
    async fn recover(&mut self, actor: &mut dyn DurableActor) -> JournalResult<ActivationReport> {
        let started = Instant::now();
        let highest = self.storage.highest_sequence(&self.actor_id).await?;
        let (mut report, mut recent, pending) = self.rebuild(actor, highest, true).await?;

        let mut next_sequence = highest + 1;
        let cache = self.config.cache_side_effects;
        if let Some((message, effects)) = pending {
            // The last message was interrupted by a crash: finish it.
            let context = self
                .replay_message(actor, &message, effects, false, next_sequence, cache)
                .await?;
            next_sequence = context.0;
            self.append(
                next_sequence,
                processed_entry(&message.message_id, &context.1),
                &message.message_id,
            )
            .await?;
            next_sequence += 1;
            recent.insert(message.message_id);
            report.replayed_messages += 1;
            report.completed_interrupted_message = true;
        }
        let checkpoint_sequence = report.checkpoint_sequence.unwrap_or(0);
        self.active = Some(Active {
            next_sequence,
            checkpoint_sequence,
            last_checkpoint: Instant::now(),
            recent,
        });
        report.highest_sequence = next_sequence - 1;
        report.elapsed = started.elapsed();
        Ok(report)
    }

    /// The state after entry `to`: the newest usable checkpoint at or
    /// before it (when `from_checkpoint`), then the messages after it. The
    /// last message, if its processing had not ended by `to`, is returned
    /// unapplied.
    async fn rebuild(
        &self,
        actor: &mut dyn DurableActor,
        to: u64,
        from_checkpoint: bool,
    ) -> JournalResult<(ActivationReport, RecentIds, Option<PendingMessage>)> {
        let mut report = ActivationReport::default();
        let mut recent_ids = Vec::new();
        let mut from = 1;
        if from_checkpoint {
            let loaded = self
                .checkpoints
                .load_latest_at(&self.actor_id, to, |state| {
                    let snapshot =
                        FacetSnapshot::decode(state.as_slice()).map_err(|e| e.to_string())?;
                    actor.restore(&snapshot.actor_state)?;
                    Ok(snapshot.recent_message_ids)
                })
                .await?;
            if let Some(loaded) = loaded {
                report.checkpoint_sequence = Some(loaded.sequence);
                report.skipped_checkpoints = loaded.skipped;
                recent_ids = loaded.value;
                from = loaded.sequence + 1;
            }
        }
        let mut recent = RecentIds::new(self.dedup_window, recent_ids);
        let pending = self
            .replay_after(actor, from, to, &mut report, &mut recent)
            .await?;
        Ok((report, recent, pending))
    }

    /// Replays the complete messages after the checkpoint; returns the last
    /// message if it was interrupted (no `MessageProcessed`).
    async fn replay_after(
        &self,
        actor: &mut dyn DurableActor,
        from: u64,
        to: u64,
        report: &mut ActivationReport,
        recent: &mut RecentIds,
    ) -> JournalResult<Option<PendingMessage>> {
        let cache = self.config.cache_side_effects;
        let mut expected = from;
        let mut pending: Option<PendingMessage> = None;
        {
            let mut stream = self.storage.replay_stream(&self.actor_id, from);
            while let Some(entry) = stream.try_next().await? {
                if entry.sequence > to {
                    break;
                }
                if entry.sequence != expected {
                    return Err(JournalError::RecoveryFailed {
                        actor_id: self.actor_id.clone(),
                        reason: if report.checkpoint_sequence.is_none() && expected == 1 {
                            format!(
                                "no usable checkpoint, and the journal starts at {} (truncated)",
                                entry.sequence
                            )
                        } else {
                            format!(
                                "gap in the journal: expected sequence {expected}, found {}",
                                entry.sequence
                            )
                        },
                    });
                }
                expected += 1;
                report.replayed_entries += 1;
                match entry.entry {
                    Some(Entry::MessageReceived(message)) => {
                        if let Some((previous, effects)) = pending.take() {
                            // Interrupted, with later messages after it: its
                            // recorded effects are all it may have.
                            self.replay_message(actor, &previous, effects, true, to + 1, cache)
                                .await?;
                            recent.insert(previous.message_id);
                            report.replayed_messages += 1;
                        }
                        pending = Some((message, VecDeque::new()));
                    }
                    Some(Entry::SideEffectExecuted(effect)) => {
                        if let Some((_, effects)) = pending.as_mut() {
                            effects.push_back(effect);
                        }
                    }
                    Some(Entry::MessageProcessed(done)) => {
                        if let Some((message, effects)) = pending.take() {
                            if message.message_id == done.message_id {
                                self.replay_message(actor, &message, effects, true, to + 1, cache)
                                    .await?;
                                recent.insert(message.message_id);
                                report.replayed_messages += 1;
                            } else {
                                pending = Some((message, effects));
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        if expected <= to {
            // Entries the state depends on are gone (truncated past the
            // checkpoint recovery starts from, or with no checkpoint at all).
            return Err(JournalError::RecoveryFailed {
                actor_id: self.actor_id.clone(),
                reason: match report.checkpoint_sequence {
                    None => format!("no usable checkpoint, and the journal up to {to} is truncated"),
                    Some(checkpoint) => format!(
                        "entries {expected} to {to}, after the checkpoint at {checkpoint}, are missing"
                    ),
                },
            });
        }

        Ok(pending)
    }

    /// Replays one message; returns the next sequence and its outcome.
    async fn replay_message(
        &self,
        actor: &mut dyn DurableActor,
        message: &MessageReceived,
        effects: VecDeque<SideEffectExecuted>,
        complete: bool,
        next_sequence: u64,
        cache: bool,
    ) -> JournalResult<(u64, MessageOutcome)> {
        let mut context = ExecutionContext::replay(
            Arc::clone(&self.storage),
            self.actor_id.clone(),
            message.message_id.clone(),
            effects,
            complete,
            next_sequence,
            cache,
        );
        let outcome = match actor.handle(message, &mut context).await {
            Ok(reply) => MessageOutcome::Replied(reply),
            Err(HandlerError::Failed(reason)) => MessageOutcome::Failed(reason),
            Err(HandlerError::Journal(e)) => return Err(e),
        };
        // Fewer effects than the journal recorded is a divergence too, also
        // for an interrupted message (its recorded effects did happen).
        context.finish_replay()?;
        Ok((context.next_sequence().max(next_sequence), outcome))
    }

    /// Saves a checkpoint of the actor's state after the last entry.
    async fn checkpoint(&mut self, actor: &dyn DurableActor) -> JournalResult<()> {
        let actor_id = self.actor_id.clone();
        let active = self.active()?;
        let sequence = active.next_sequence - 1;
        let recent_message_ids = active
            .recent
            .order
            .iter()
            .map(ToString::to_string)
            .collect();
        let actor_state = match actor.snapshot() {
            Ok(state) => state,
            Err(reason) => {
                tracing::warn!(
                    actor_id,
                    reason,
                    "the actor could not snapshot its state; no checkpoint"
                );
                return Ok(());
            }
        };
        let state = FacetSnapshot {
            actor_state,
            recent_message_ids,
        }
        .encode_to_vec();
        match self.checkpoints.save(&actor_id, sequence, state).await {
            Ok(saved) => {
                let active = self.active()?;
                active.checkpoint_sequence = sequence;
                active.last_checkpoint = Instant::now();
                self.observer.update(|s| {
                    s.checkpoints += 1;
                    s.last_checkpoint = Some(saved);
                });
            }
            // The message itself is journaled; a failed checkpoint is only
            // retried after the next one.
            Err(e) => tracing::warn!(actor_id, sequence, error = %e, "checkpoint failed"),
        }
        Ok(())
    }
}

/// An actor's state as it was at one point of its journal, rebuilt by
/// [`rebuild_at`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rebuilt {
    /// The entry the state is as of.
    pub sequence: u64,
    /// The checkpoint the rebuild started from, if any.
    pub checkpoint_sequence: Option<u64>,
    /// Newer checkpoints (at or before `sequence`) passed over, and why.
    pub skipped_checkpoints: Vec<SkippedCheckpoint>,
    /// Entries replayed after the checkpoint.
    pub replayed_entries: u64,
    /// Messages applied after the checkpoint.
    pub replayed_messages: u64,
    /// The message received at or before `sequence` whose processing had
    /// not ended by then, if any: it is not applied to the state.
    pub in_flight: Option<MessageReceived>,
    /// How long the rebuild took.
    pub elapsed: Duration,
}

/// Time travel: rebuilds into `actor` the state it had after entry
/// `sequence` of `actor_id`'s journal, as recovery would (the newest usable
/// checkpoint at or before `sequence`, then the messages after it, with
/// their recorded side effects handed back), but read-only: nothing is
/// journaled and no side effect runs. With `from_checkpoint` false every
/// entry from the first is replayed, which needs an untruncated journal.
///
/// `sequence` 0 leaves `actor` as given; one above the actor's highest
/// sequence is [`JournalError::RecoveryFailed`].
pub async fn rebuild_at(
    storage: impl JournalStorage + 'static,
    config: &DurabilityConfig,
    actor_id: &str,
    actor: &mut dyn DurableActor,
    sequence: u64,
    from_checkpoint: bool,
) -> JournalResult<Rebuilt> {
    let started = Instant::now();
    crate::validate::validate_actor_id(actor_id)?;
    let mut facet = DurabilityFacet::new(storage, config.clone());
    actor_id.clone_into(&mut facet.actor_id);
    let highest = facet.storage.highest_sequence(actor_id).await?;
    if sequence > highest {
        return Err(JournalError::RecoveryFailed {
            actor_id: actor_id.to_owned(),
            reason: format!("sequence {sequence} is beyond the journal's highest, {highest}"),
        });
    }
    if sequence == 0 {
        return Ok(Rebuilt::default());
    }
    let (report, _, pending) = facet.rebuild(actor, sequence, from_checkpoint).await?;
    Ok(Rebuilt {
        sequence,
        checkpoint_sequence: report.checkpoint_sequence,
        skipped_checkpoints: report.skipped_checkpoints,
        replayed_entries: report.replayed_entries,
        replayed_messages: report.replayed_messages,
        in_flight: pending.map(|(message, _)| message),
        elapsed: started.elapsed(),
    })
}

fn processed_entry(message_id: &str, outcome: &MessageOutcome) -> Entry {
    let (result, error, reply) = match outcome {
        MessageOutcome::Replied(reply) => (ProcessingResult::Success, String::new(), reply.clone()),
        MessageOutcome::Failed(reason) => (ProcessingResult::Error, reason.clone(), Vec::new()),
    };
    Entry::MessageProcessed(MessageProcessed {
        message_id: message_id.to_owned(),
        result: result.into(),
        error_message: error,
        response_payload: reply,
    })
}

#[async_trait]
impl Facet for DurabilityFacet {
    fn name(&self) -> &'static str {
        "durability"
    }

    async fn on_attach(&mut self, actor_id: &str) -> JournalResult<()> {
        crate::validate::validate_actor_id(actor_id)?;
        actor_id.clone_into(&mut self.actor_id);
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(backend = self.storage.backend_name(), actor_id))]
    async fn on_activate(
        &mut self,
        actor_id: &str,
        actor: &mut dyn DurableActor,
    ) -> JournalResult<()> {
        actor_id.clone_into(&mut self.actor_id);
        let report = if self.config.replay_on_activation {
            self.recover(actor).await?
        } else {
            let highest = self.storage.highest_sequence(actor_id).await?;
            self.active = Some(Active {
                next_sequence: highest + 1,
                checkpoint_sequence: highest,
                last_checkpoint: Instant::now(),
                recent: RecentIds::new(self.dedup_window, []),
            });
            ActivationReport {
                highest_sequence: highest,
                ..ActivationReport::default()
            }
        };
        let due = {
            let active = self.active()?;
            let entries = active.next_sequence - 1 - active.checkpoint_sequence;
            self.checkpoints.policy().is_due(entries, Duration::ZERO)
        };
        self.observer.update(|s| {
            *s = DurabilityStats {
                activation: report,
                ..DurabilityStats::default()
            }
        });
        if due {
            self.checkpoint(actor).await?;
        }
        Ok(())
    }

    async fn before_message(
        &mut self,
        _actor_id: &str,
        message: &MessageReceived,
    ) -> JournalResult<Admission> {
        let active = self.active()?;
        if active.recent.contains(&message.message_id) {
            self.observer.update(|s| s.duplicates += 1);
            return Ok(Admission::AlreadyProcessed);
        }
        let sequence = active.next_sequence;
        self.append(
            sequence,
            Entry::MessageReceived(message.clone()),
            &message.message_id,
        )
        .await?;
        let active = self.active()?;
        active.next_sequence = sequence + 1;
        Ok(Admission::Process(Some(ExecutionContext::live(
            Arc::clone(&self.storage),
            self.actor_id.clone(),
            message.message_id.clone(),
            sequence + 1,
            self.config.cache_side_effects,
        ))))
    }

    async fn after_message(
        &mut self,
        _actor_id: &str,
        message: &MessageReceived,
        outcome: &MessageOutcome,
        context: &ExecutionContext,
        actor: &dyn DurableActor,
    ) -> JournalResult<()> {
        let sequence = context.next_sequence().max(self.active()?.next_sequence);
        self.append(
            sequence,
            processed_entry(&message.message_id, outcome),
            &message.message_id,
        )
        .await?;
        let active = self.active()?;
        active.next_sequence = sequence + 1;
        active.recent.insert(message.message_id.clone());
        let (entries, elapsed) = (
            sequence - active.checkpoint_sequence,
            active.last_checkpoint.elapsed(),
        );
        let due = self.checkpoints.policy().is_due(entries, elapsed);
        self.observer.update(|s| s.messages += 1);
        if due {
            self.checkpoint(actor).await?;
        }
        Ok(())
    }
}
