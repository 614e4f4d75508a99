//! The execution context a durable actor handles a message with: side
//! effects, time and randomness go through it, so that replay sees exactly
//! what the first run saw.

use std::collections::VecDeque;
use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{JournalError, JournalResult};
use crate::proto::{journal_entry::Entry, JournalEntry, SideEffectExecuted};
use crate::storage::JournalStorage;

/// Side-effect name under which [`ExecutionContext::now`] is journaled.
pub const NOW_EFFECT: &str = "journal.now";
/// Side-effect name under which [`ExecutionContext::random_u64`] is journaled.
pub const RANDOM_EFFECT: &str = "journal.random";
/// What divergence errors call the end of a message's recorded effects.
pub const END_OF_MESSAGE: &str = "end of message";

/// One side effect of this run, executed or replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SideEffectRecord {
    /// Its key: `"{message_id}/{position}"`.
    pub key: String,
    /// The name the code gave it.
    pub name: String,
    /// `true` when the result came from the journal, `false` when it ran.
    pub replayed: bool,
    /// Its result: the response bytes, or the error text.
    pub result: Result<Vec<u8>, String>,
}

/// Where new side effects are journaled.
struct JournalTarget {
    storage: Arc<dyn JournalStorage>,
    next_sequence: u64,
    correlation_id: String,
}

/// Handles one message's side effects, time and randomness.
///
/// In **live** mode a side effect runs, and its result is journaled before
/// the code gets it. In **replay** mode (recovery) the journaled results are
/// returned in order without running anything; asking for another effect
/// than the journal recorded at that point is a
/// [`ReplayDivergence`](JournalError::ReplayDivergence). When the journal of
/// an interrupted message runs out, the context switches to live mode: an
/// effect that ran before a crash but was not journaled runs again
/// (at-least-once towards the outside world).
pub struct ExecutionContext {
    actor_id: String,
    message_id: String,
    target: Option<JournalTarget>,
    recorded: VecDeque<SideEffectExecuted>,
    replaying: bool,
    /// Whether the recorded message ended (`MessageProcessed` journaled):
    /// then running out of recorded effects and asking for more diverges.
    recorded_complete: bool,
    cache_side_effects: bool,
    position: usize,
    effects: Vec<SideEffectRecord>,
}

impl std::fmt::Debug for ExecutionContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecutionContext")
            .field("actor_id", &self.actor_id)
            .field("message_id", &self.message_id)
            .field("replaying", &self.replaying)
            .field("next_sequence", &self.next_sequence())
            .field("effects", &self.effects.len())
            .finish_non_exhaustive()
    }
}

impl ExecutionContext {
    /// A context that journals nothing: side effects just run. For actors
    /// without a durability facet, and for tests.
    pub fn ephemeral(actor_id: impl Into<String>, message_id: impl Into<String>) -> Self {
        ExecutionContext {
            actor_id: actor_id.into(),
            message_id: message_id.into(),
            target: None,
            recorded: VecDeque::new(),
            replaying: false,
            recorded_complete: false,
            cache_side_effects: false,
            position: 0,
            effects: Vec::new(),
        }
    }

    /// A live context journaling side effects from `next_sequence` on.
    pub fn live(
        storage: Arc<dyn JournalStorage>,
        actor_id: impl Into<String>,
        message_id: impl Into<String>,
        next_sequence: u64,
        cache_side_effects: bool,
    ) -> Self {
        let message_id = message_id.into();
        ExecutionContext {
            target: Some(JournalTarget {
                storage,
                next_sequence,
                correlation_id: message_id.clone(),
            }),
            cache_side_effects,
            ..ExecutionContext::ephemeral(actor_id, message_id)
        }
    }

    /// A replaying context returning `recorded` effects in order. With
    /// `complete`, the recorded message ended and no further effect may be
    /// asked for; otherwise, once they run out, effects run live and are
    /// journaled from `next_sequence` on.
    pub fn replay(
        storage: Arc<dyn JournalStorage>,
        actor_id: impl Into<String>,
        message_id: impl Into<String>,
        recorded: VecDeque<SideEffectExecuted>,
        complete: bool,
        next_sequence: u64,
        cache_side_effects: bool,
    ) -> Self {
        ExecutionContext {
            recorded,
            replaying: cache_side_effects,
            recorded_complete: complete,
            ..ExecutionContext::live(
                storage,
                actor_id,
                message_id,
                next_sequence,
                cache_side_effects,
            )
        }
    }

    /// Whether results are coming from the journal rather than from running
    /// the effects.
    pub fn is_replaying(&self) -> bool {
        self.replaying
    }

    /// The actor this context belongs to.
    pub fn actor_id(&self) -> &str {
        &self.actor_id
    }

    /// The message being handled.
    pub fn message_id(&self) -> &str {
        &self.message_id
    }

    /// The side effects of this run so far, in order, executed or replayed.
    pub fn side_effects(&self) -> &[SideEffectRecord] {
        &self.effects
    }

    /// The result of the side effect with this key (`"{message_id}/{n}"`)
    /// in this run, if there was one.
    pub fn cached_result(&self, key: &str) -> Option<&Result<Vec<u8>, String>> {
        self.effects
            .iter()
            .find(|e| e.key == key)
            .map(|e| &e.result)
    }

    /// The sequence the next journaled entry takes (0 when nothing is
    /// journaled).
    pub fn next_sequence(&self) -> u64 {
        self.target.as_ref().map_or(0, |t| t.next_sequence)
    }

    /// Runs a side effect once: live, runs `effect` and journals its result
    /// (response or error) before returning it; in replay, returns the
    /// journaled result without running `effect`.
    ///
    /// The outer `Result` is the journal's: on `Err` the handler must stop
    /// (use `?`). The inner one is the effect's own outcome.
    pub async fn side_effect<F, Fut, E>(
        &mut self,
        name: &str,
        effect: F,
    ) -> JournalResult<Result<Vec<u8>, String>>
    where
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = Result<Vec<u8>, E>> + Send,
        E: Display,
    {
        let position = self.position;
        self.position += 1;
        let key = format!("{}/{position}", self.message_id);
        if self.replaying {
            if let Some(recorded) = self.recorded.pop_front() {
                if recorded.effect_type != name {
                    return Err(self.divergence(position, &recorded.effect_type, name));
                }
                let result = if recorded.error.is_empty() {
                    Ok(recorded.response)
                } else {
                    Err(recorded.error)
                };
                self.effects.push(SideEffectRecord {
                    key,
                    name: name.to_owned(),
                    replayed: true,
                    result: result.clone(),
                });
                return Ok(result);
            }
            if self.recorded_complete {
                return Err(self.divergence(position, END_OF_MESSAGE, name));
            }
            // The journal of an interrupted message ends here: go live.
            self.replaying = false;
        }
        let result = effect().await.map_err(|e| match e.to_string() {
            text if text.is_empty() => "side effect failed".to_owned(),
            text => text,
        });
        if self.cache_side_effects {
            self.journal(&key, name, &result).await?;
        }
        self.effects.push(SideEffectRecord {
            key,
            name: name.to_owned(),
            replayed: false,
            result: result.clone(),
        });
        Ok(result)
    }

    /// The current time, journaled: replay sees the first run's time.
    pub async fn now(&mut self) -> JournalResult<SystemTime> {
        let bytes = self
            .side_effect(NOW_EFFECT, || async {
                let since = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default();
                let mut bytes = since.as_secs().to_le_bytes().to_vec();
                bytes.extend_from_slice(&since.subsec_nanos().to_le_bytes());
                Ok::<_, String>(bytes)
            })
            .await?
            .map_err(|e| self.corrupt_effect(NOW_EFFECT, &e))?;
        let (secs, nanos) = bytes
            .split_at_checked(8)
            .ok_or_else(|| self.corrupt_effect(NOW_EFFECT, "short"))?;
        let secs = u64::from_le_bytes(
            secs.try_into()
                .map_err(|_| self.corrupt_effect(NOW_EFFECT, "seconds"))?,
        );
        let nanos = u32::from_le_bytes(
            nanos
                .try_into()
                .map_err(|_| self.corrupt_effect(NOW_EFFECT, "nanos"))?,
        );
        UNIX_EPOCH
            .checked_add(Duration::new(secs, nanos.min(999_999_999)))
            .ok_or_else(|| self.corrupt_effect(NOW_EFFECT, "out of range"))
    }

    /// A random number, journaled: replay sees the first run's value.
    pub async fn random_u64(&mut self) -> JournalResult<u64> {
        let bytes = self
            .side_effect(RANDOM_EFFECT, || async {
                // A ULID's 80 random bits come from a thread-local CSPRNG.
                let random = ulid::Ulid::generate().random() as u64;
                Ok::<_, String>(random.to_le_bytes().to_vec())
            })
            .await?
            .map_err(|e| self.corrupt_effect(RANDOM_EFFECT, &e))?;
        let array: [u8; 8] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| self.corrupt_effect(RANDOM_EFFECT, "not 8 bytes"))?;
        Ok(u64::from_le_bytes(array))
    }

    /// Checks that a replayed, completed message used all its recorded side
    /// effects: fewer than recorded is a divergence too.
    pub fn finish_replay(&self) -> JournalResult<()> {
        match self.recorded.front() {
            Some(next) if self.replaying => {
                Err(self.divergence(self.position, &next.effect_type, END_OF_MESSAGE))
            }
            _ => Ok(()),
        }
    }

    async fn journal(
        &mut self,
        key: &str,
        name: &str,
        result: &Result<Vec<u8>, String>,
    ) -> JournalResult<()> {
        let Some(target) = self.target.as_mut() else {
            return Ok(());
        };
        let (response, error) = match result {
            Ok(bytes) => (bytes.clone(), String::new()),
            Err(text) => (Vec::new(), text.clone()),
        };
        let entry = JournalEntry::new(
            self.actor_id.clone(),
            target.next_sequence,
            Entry::SideEffectExecuted(SideEffectExecuted {
                effect_id: key.to_owned(),
                effect_type: name.to_owned(),
                request: Vec::new(),
                response,
                error,
            }),
        )
        .with_correlation_id(target.correlation_id.clone());
        target.storage.append_entry(&entry).await?;
        target.next_sequence += 1;
        Ok(())
    }

    fn divergence(&self, position: usize, recorded: &str, requested: &str) -> JournalError {
        JournalError::ReplayDivergence {
            actor_id: self.actor_id.clone(),
            message_id: self.message_id.clone(),
            position,
            recorded: recorded.to_owned(),
            requested: requested.to_owned(),
        }
    }

    fn corrupt_effect(&self, name: &str, why: &str) -> JournalError {
        JournalError::CorruptEntry {
            actor_id: self.actor_id.clone(),
            sequence: 0,
            reason: format!("journaled {name} result is unusable: {why}"),
        }
    }
}
