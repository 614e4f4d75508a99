//! The execution context a durable actor handles a message with: side
//! effects, time and randomness go through it, so that replay sees exactly
//! what the first run saw.

use std::collections::VecDeque;
use std::fmt::Display;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{JournalError, JournalResult};
use crate::proto::{
    journal_entry::Entry, EventRecorded, JournalEntry, SideEffectExecuted, TimerCancelled,
    TimerFired, TimerScheduled,
};
use crate::storage::JournalStorage;
use crate::validate::Limits;

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

/// Where new side effects are journaled, and how writes are retried.
struct JournalTarget {
    storage: Arc<dyn JournalStorage>,
    next_sequence: u64,
    correlation_id: String,
    retry: Retry,
    /// With batched writes: the storage's limits, entries are checked
    /// against before they wait in `pending`.
    batched: Option<Limits>,
}

/// How a journal write that failed as `Unavailable` is retried: the same
/// entry (same id) again, so a write that landed before the error is not
/// stored twice (contract rule 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Attempts in all, at least 1.
    pub attempts: u32,
    /// Wait before the first retry, doubled for each next one.
    pub backoff: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            attempts: crate::config::DEFAULT_RETRY_ATTEMPTS,
            backoff: crate::config::DEFAULT_RETRY_BACKOFF,
        }
    }
}

impl Retry {
    /// Appends `entry`, retrying on `Unavailable` within the budget.
    pub async fn append(
        &self,
        storage: &dyn JournalStorage,
        entry: &JournalEntry,
    ) -> JournalResult<()> {
        self.append_batch(storage, std::slice::from_ref(entry))
            .await
    }

    /// Appends `entries` (one entry alone, or an atomic batch), retrying on
    /// `Unavailable` within the budget with the same entries: a batch that
    /// landed before the error is an idempotent retry (contract rule 5).
    pub async fn append_batch(
        &self,
        storage: &dyn JournalStorage,
        entries: &[JournalEntry],
    ) -> JournalResult<()> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let mut wait = self.backoff.min(crate::config::MAX_RETRY_BACKOFF);
        let mut attempt = 1;
        loop {
            let written = match entries {
                [one] => storage.append_entry(one).await.map(drop),
                many => storage.append_batch(many).await,
            };
            match written {
                Ok(()) => return Ok(()),
                Err(e) if e.is_retryable() && attempt < self.attempts.max(1) => {
                    tracing::warn!(
                        actor_id = %first.actor_id,
                        sequence = first.sequence,
                        entries = entries.len(),
                        attempt,
                        error = %e,
                        "journal write unavailable; retrying the same entries"
                    );
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(crate::config::MAX_RETRY_BACKOFF);
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// A journal error that failed the message being handled.
#[derive(Debug)]
enum Failure {
    /// The message alone is bad (an effect's result too large to journal):
    /// it completes as failed with this error; the actor goes on.
    Message(JournalError),
    /// The journal failed (unavailable past the retry budget, a conflict, a
    /// divergence): nothing more is journaled for the message and the
    /// actor's state must be recovered.
    Journal(JournalError),
}

/// How [`ExecutionContext::side_effect_retried`] retries an effect
/// before journaling its outcome.
#[derive(Debug, Clone)]
pub struct EffectRetry {
    /// Attempts in all, the first included (at least 1; default 3).
    pub max_attempts: u32,
    /// The pause after the first failed attempt; it doubles after each
    /// further one (default 100 ms).
    pub initial_backoff: Duration,
    /// The longest pause (default 5 s).
    pub max_backoff: Duration,
    /// No attempt starts once this much time has passed since the first
    /// (default: no limit beyond `max_attempts`).
    pub max_duration: Option<Duration>,
    /// Which errors (by their text) are worth another attempt; the others
    /// are journaled at once (default: every error).
    pub retry_if: fn(&str) -> bool,
}

impl Default for EffectRetry {
    fn default() -> Self {
        EffectRetry {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            max_duration: None,
            retry_if: |_| true,
        }
    }
}

impl EffectRetry {
    /// `attempts` attempts in all, with the default pauses.
    pub fn attempts(attempts: u32) -> Self {
        EffectRetry {
            max_attempts: attempts,
            ..EffectRetry::default()
        }
    }
}

/// How a journal error latched by the context fails the message.
#[derive(Debug)]
pub enum MessageFailure<'a> {
    /// The message alone is bad: it is journaled as failed with this error,
    /// and the actor goes on.
    Message(&'a JournalError),
    /// The journal failed: the message did not complete, and the actor's
    /// in-memory state must be recovered from the journal.
    Journal(&'a JournalError),
}

/// Handles one message's side effects, time and randomness.
///
/// In **live** mode a side effect runs, and its result is journaled before
/// the code gets it. In **replay** mode (recovery) the journaled results are
/// returned in order without running anything; asking for another effect
/// (another name, or the same name with another request) than the journal
/// recorded at that point is a
/// [`ReplayDivergence`](JournalError::ReplayDivergence). When the journal of
/// an interrupted message runs out, the context switches to live mode: an
/// effect that ran before a crash but was not journaled runs again
/// (at-least-once towards the outside world). In **time travel** nothing
/// ever runs: an effect the journal has no result for is an error.
///
/// The first journal error the context meets is latched: every later call
/// returns an error too, and the host fails the message even if the
/// handler's code ignored the error (contract rule 21).
///
/// ```
/// # use journal_core::*;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), JournalError> {
/// // A context that journals nothing (tests, actors without a facet); a
/// // durability facet hands a journaling one to each message.
/// let mut ctx = ExecutionContext::ephemeral("payer-1", "m-1");
/// let receipt = ctx
///     .side_effect_with("bank.pay", b"10 to bob", || async { Ok::<_, String>(b"r-7".to_vec()) })
///     .await?;
/// assert_eq!(receipt, Ok(b"r-7".to_vec()));
/// // Time is read as an effect too: journaled, in a journaling context.
/// let _now = ctx.now().await?;
/// assert_eq!(ctx.side_effects().len(), 2);
/// # Ok(())
/// # }
/// ```
#[allow(clippy::struct_excessive_bools)]
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
    time_travel: bool,
    position: usize,
    effects: Vec<SideEffectRecord>,
    failure: Option<Failure>,
    /// Entries written but not yet sent (batched writes): sent with the
    /// next external side effect's result, or by the host with the
    /// message's end.
    pending: Mutex<Vec<JournalEntry>>,
    /// Timer operations of this run, in order (journaled or replayed).
    timer_ops: Vec<TimerOp>,
    /// The timer entries the journal holds for this message (replay):
    /// asked again, they are not journaled twice.
    recorded_timers: VecDeque<TimerOp>,
    /// Timers scheduled so far: the ordinal the next timer's id derives from.
    timers_scheduled: u64,
    /// Domain events this message decided, journaled with its end.
    events: Vec<EventRecorded>,
}

/// A timer operation of the message being handled, as journaled: the host
/// puts scheduled timers into its [`TimerStore`](crate::TimerStore) index
/// and removes cancelled ones when the message completes successfully.
#[derive(Debug, Clone, PartialEq)]
pub enum TimerOp {
    /// A timer was scheduled (`TimerScheduled`, with its id and due time).
    Scheduled(TimerScheduled),
    /// A timer was cancelled (`TimerCancelled`): its id.
    Cancelled(String),
    /// The message being handled is this timer's firing (`TimerFired`).
    Fired(String),
}

impl TimerOp {
    /// The timer's id.
    pub fn timer_id(&self) -> &str {
        match self {
            TimerOp::Scheduled(t) => &t.timer_id,
            TimerOp::Cancelled(id) | TimerOp::Fired(id) => id,
        }
    }

    /// The op a journal entry records, if it is a timer entry.
    pub fn from_entry(entry: &Entry) -> Option<TimerOp> {
        match entry {
            Entry::TimerScheduled(t) => Some(TimerOp::Scheduled(t.clone())),
            Entry::TimerCancelled(c) => Some(TimerOp::Cancelled(c.timer_id.clone())),
            Entry::TimerFired(f) => Some(TimerOp::Fired(f.timer_id.clone())),
            _ => None,
        }
    }

    fn entry(&self) -> Entry {
        match self {
            TimerOp::Scheduled(t) => Entry::TimerScheduled(t.clone()),
            TimerOp::Cancelled(id) => Entry::TimerCancelled(TimerCancelled {
                timer_id: id.clone(),
            }),
            TimerOp::Fired(id) => Entry::TimerFired(TimerFired {
                timer_id: id.clone(),
            }),
        }
    }

    fn describe(&self) -> String {
        match self {
            TimerOp::Scheduled(t) => format!("timer scheduled {}", t.timer_id),
            TimerOp::Cancelled(id) => format!("timer cancelled {id}"),
            TimerOp::Fired(id) => format!("timer fired {id}"),
        }
    }

    fn same_kind(&self, other: &TimerOp) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other)
            && self.timer_id() == other.timer_id()
    }
}

/// The id of the `ordinal`-th timer (from 0) that message `message_id` of
/// `actor_id` schedules: `t-` and 32 hex digits of a digest of the three
/// (see [`request_digest`]). Deterministic, so a message re-run on recovery
/// schedules the same ids again (the index replaces them: idempotent), and
/// at most 34 bytes whatever the ids' lengths.
pub fn timer_id(actor_id: &str, message_id: &str, ordinal: u64) -> String {
    use std::fmt::Write;
    let mut input = Vec::with_capacity(actor_id.len() + message_id.len() + 24);
    input.extend_from_slice(&(actor_id.len() as u64).to_le_bytes());
    input.extend_from_slice(actor_id.as_bytes());
    input.extend_from_slice(&(message_id.len() as u64).to_le_bytes());
    input.extend_from_slice(message_id.as_bytes());
    input.extend_from_slice(&ordinal.to_le_bytes());
    let digest = request_digest(&input);
    // After the version byte and the length: the two hashes.
    digest[9..].iter().fold(String::from("t-"), |mut id, b| {
        let _ = write!(id, "{b:02x}");
        id
    })
}

impl std::fmt::Debug for ExecutionContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecutionContext")
            .field("actor_id", &self.actor_id)
            .field("message_id", &self.message_id)
            .field("replaying", &self.replaying)
            .field("time_travel", &self.time_travel)
            .field("next_sequence", &self.next_sequence())
            .field("effects", &self.effects.len())
            .field("failure", &self.failure)
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
            time_travel: false,
            position: 0,
            effects: Vec::new(),
            failure: None,
            pending: Mutex::new(Vec::new()),
            timer_ops: Vec::new(),
            recorded_timers: VecDeque::new(),
            timers_scheduled: 0,
            events: Vec::new(),
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
                retry: Retry::default(),
                batched: None,
            }),
            cache_side_effects,
            ..ExecutionContext::ephemeral(actor_id, message_id)
        }
    }

    /// A replaying context returning `recorded` effects in order (whatever
    /// `cache_side_effects` says: a recorded effect never runs again). With
    /// `complete`, the recorded message ended and no further effect may be
    /// asked for (unless effects were not journaled, `cache_side_effects`
    /// false: then they run again); otherwise, once they run out, effects
    /// run live and are journaled from `next_sequence` on.
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
            replaying: true,
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

    /// A context for time travel: recorded results only; an effect the
    /// journal has no result for fails instead of running.
    pub fn time_travel(
        storage: Arc<dyn JournalStorage>,
        actor_id: impl Into<String>,
        message_id: impl Into<String>,
        recorded: VecDeque<SideEffectExecuted>,
    ) -> Self {
        ExecutionContext {
            time_travel: true,
            ..ExecutionContext::replay(storage, actor_id, message_id, recorded, true, 0, false)
        }
    }

    /// Sets how journal writes are retried on `Unavailable`.
    #[must_use]
    pub fn with_retry(mut self, retry: Retry) -> Self {
        if let Some(target) = self.target.as_mut() {
            target.retry = retry;
        }
        self
    }

    /// Batched writes: entries of this message wait in memory and go to the
    /// storage in one atomic batch right before each call to the outside
    /// world (a side effect other than time and randomness) runs, and with
    /// the message's end (the host takes them). So nothing the outside
    /// world sees depends on anything unjournaled: the message is durable
    /// before its first call (recovery finds it and runs a call again whose
    /// result was lost), and so is every result, time and random value
    /// before the next call. A message costs one append per call to the
    /// outside world plus one, instead of one per entry. Entries are checked
    /// against the storage's limits as they are made.
    #[must_use]
    pub fn with_batched_writes(mut self) -> Self {
        if let Some(target) = self.target.as_mut() {
            target.batched = Some(target.storage.limits());
        }
        self
    }

    /// The timer entries (`TimerScheduled`, `TimerCancelled`, `TimerFired`)
    /// the journal holds for the message being replayed, in journal order:
    /// asked for again, they are returned as recorded (a scheduled timer
    /// keeps its recorded due time) and not journaled twice.
    #[must_use]
    pub fn with_recorded_timers(mut self, recorded: Vec<TimerOp>) -> Self {
        self.recorded_timers = recorded.into();
        self
    }

    /// Adds `entry` (taking the next sequence) to the entries waiting for
    /// the next batch; written at once without batched writes.
    pub(crate) async fn write(&mut self, mut entry: JournalEntry) -> JournalResult<()> {
        let Some(target) = self.target.as_mut() else {
            return Ok(());
        };
        entry.sequence = target.next_sequence;
        if let Some(limits) = target.batched {
            crate::validate::validate_entry(&entry, &limits)?;
            self.pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(entry);
        } else {
            target.retry.append(&*target.storage, &entry).await?;
        }
        target.next_sequence += 1;
        Ok(())
    }

    /// The entries waiting for the next batch, taken out: the host writes
    /// them in one batch with the message's end.
    pub(crate) fn take_pending(&self) -> Vec<JournalEntry> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Writes the waiting entries now, in one batch; an error is latched as
    /// the message's journal failure.
    async fn flush(&mut self) -> JournalResult<()> {
        let batch = self.take_pending();
        if batch.is_empty() {
            return Ok(());
        }
        let Some(target) = self.target.as_ref() else {
            return Ok(());
        };
        match target.retry.append_batch(&*target.storage, &batch).await {
            Ok(()) => Ok(()),
            Err(e) => Err(self.fail_journal(e)),
        }
    }

    /// The journal error that failed this message, if one did, and how.
    pub fn failure(&self) -> Option<MessageFailure<'_>> {
        self.failure.as_ref().map(|f| match f {
            Failure::Message(e) => MessageFailure::Message(e),
            Failure::Journal(e) => MessageFailure::Journal(e),
        })
    }

    /// Takes the latched journal error out, with whether it fails the
    /// message alone (`true`) or the journal (`false`).
    pub(crate) fn take_failure(&mut self) -> Option<(JournalError, bool)> {
        self.failure.take().map(|f| match f {
            Failure::Message(e) => (e, true),
            Failure::Journal(e) => (e, false),
        })
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
    /// journaled result without running `effect`. Replay checks the name;
    /// [`ExecutionContext::side_effect_with`] also checks the request.
    ///
    /// The outer `Result` is the journal's: on `Err` the handler must stop
    /// (use `?`); the message fails even if it does not. The inner one is the
    /// effect's own outcome.
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
        self.side_effect_with(name, &[], effect).await
    }

    /// As [`ExecutionContext::side_effect`], for an effect asked with
    /// `request` (what identifies the call: the payee and amount of a
    /// payment, the URL and body of a request). A digest of the request is
    /// journaled with the result, and replay compares it: code changed to
    /// pay someone else stops with
    /// [`ReplayDivergence`](JournalError::ReplayDivergence) instead of
    /// getting the first payee's receipt. The digest, not the bytes, is
    /// kept: requests can be large or personal, and the journal needs only
    /// to tell two apart.
    pub async fn side_effect_with<F, Fut, E>(
        &mut self,
        name: &str,
        request: &[u8],
        effect: F,
    ) -> JournalResult<Result<Vec<u8>, String>>
    where
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = Result<Vec<u8>, E>> + Send,
        E: Display,
    {
        if let Some(failure) = &self.failure {
            return Err(match failure {
                Failure::Message(e) | Failure::Journal(e) => replicate(e),
            });
        }
        let position = self.position;
        self.position += 1;
        let key = format!("{}/{position}", self.message_id);
        let digest = request_digest(request);
        if self.replaying {
            if let Some(recorded) = self.recorded.pop_front() {
                return self.replayed(key, name, &digest, recorded, position);
            }
            if self.time_travel {
                return Err(self.fail_journal(JournalError::RecoveryFailed {
                    actor_id: self.actor_id.clone(),
                    reason: format!(
                        "time travel: message {:?} asks for side effect #{position} ({name:?}), \
                         whose result the journal does not hold; it is not run",
                        self.message_id
                    ),
                }));
            }
            if self.recorded_complete && self.cache_side_effects {
                let divergence = self.divergence(position, END_OF_MESSAGE, name);
                return Err(self.fail_journal(divergence));
            }
            // The journal of an interrupted message ends here (or effects
            // were never journaled): go live.
            self.replaying = false;
            if !self.recorded_complete && self.cache_side_effects && is_external(name) {
                // The first effect past the journal of a message a crash
                // interrupted: it may have run before the crash, its
                // result unjournaled (at-least-once, contract rule 18).
                crate::metrics::side_effect_run_again();
                tracing::warn!(
                    actor_id = %self.actor_id,
                    message_id = %self.message_id,
                    effect = name,
                    position,
                    "side effect may run a second time: its message was interrupted by a crash \
                     before the effect's result was journaled"
                );
            }
        }
        if is_external(name) {
            // Before the outside world sees anything of this message, what
            // it depends on is durable: the message itself (so that recovery
            // finds it and runs this effect again if its result is lost),
            // earlier results, and any time or randomness read.
            self.flush().await?;
        }
        // A panic in the effect is its failure, journaled as any: replay
        // returns it as recorded (the handler may go on, or fail).
        let result = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(async move {
            effect().await.map_err(|e| match e.to_string() {
                text if text.is_empty() => "side effect failed".to_owned(),
                text => text,
            })
        }))
        .await
        .unwrap_or_else(|panic| {
            Err(format!(
                "the side effect panicked: {}",
                crate::facet::panic_text(&*panic)
            ))
        });
        if self.cache_side_effects {
            self.journal(&key, name, digest, &result).await?;
        }
        self.effects.push(SideEffectRecord {
            key,
            name: name.to_owned(),
            replayed: false,
            result: result.clone(),
        });
        Ok(result)
    }

    /// As [`ExecutionContext::side_effect_with`], retrying the effect under
    /// `policy` before its outcome is journaled: a timeout that a second try
    /// cures does not become a journaled failure. Only the final outcome
    /// (the first success, or the last error once the attempts or the time
    /// budget run out, or an error `policy` does not retry) is journaled,
    /// and replay returns it without running anything, as for any effect.
    ///
    /// Each attempt calls `effect` again. What a crash means is unchanged:
    /// if the process dies during any attempt, nothing of this effect was
    /// journaled, and recovery runs it again from its first attempt
    /// (at-least-once towards the outside world; give the other side an
    /// idempotency key, such as the message id and the effect's position).
    /// The pauses between attempts sleep on the runtime's clock.
    pub async fn side_effect_retried<F, Fut, E>(
        &mut self,
        name: &str,
        request: &[u8],
        policy: &EffectRetry,
        mut effect: F,
    ) -> JournalResult<Result<Vec<u8>, String>>
    where
        F: FnMut() -> Fut + Send,
        Fut: Future<Output = Result<Vec<u8>, E>> + Send,
        E: Display + Send,
    {
        let policy = policy.clone();
        self.side_effect_with(name, request, move || async move {
            let started = tokio::time::Instant::now();
            let mut pause = policy.initial_backoff;
            let mut attempt: u32 = 1;
            loop {
                let error = match effect().await {
                    Ok(response) => return Ok(response),
                    Err(error) => error.to_string(),
                };
                let out_of_attempts = attempt >= policy.max_attempts.max(1);
                let out_of_time = policy
                    .max_duration
                    .is_some_and(|budget| started.elapsed().saturating_add(pause) > budget);
                if out_of_attempts || out_of_time || !(policy.retry_if)(&error) {
                    return Err(if attempt == 1 {
                        error
                    } else {
                        format!("{error} (after {attempt} attempts)")
                    });
                }
                tokio::time::sleep(pause).await;
                pause = pause.saturating_mul(2).min(policy.max_backoff);
                attempt += 1;
            }
        })
        .await
    }

    /// The recorded effect at `position`, checked against what the code asks.
    fn replayed(
        &mut self,
        key: String,
        name: &str,
        digest: &[u8],
        recorded: SideEffectExecuted,
        position: usize,
    ) -> JournalResult<Result<Vec<u8>, String>> {
        if recorded.effect_type != name {
            let divergence = self.divergence(position, &recorded.effect_type, name);
            return Err(self.fail_journal(divergence));
        }
        // Journals written before requests were recorded hold no digest.
        if !recorded.request.is_empty() && recorded.request != digest {
            let divergence = self.divergence(
                position,
                &describe_request(name, &recorded.request),
                &describe_request(name, digest),
            );
            return Err(self.fail_journal(divergence));
        }
        let result = if recorded.error.is_empty() && !recorded.result_dropped {
            Ok(recorded.response)
        } else {
            Err(recorded.error.clone())
        };
        self.effects.push(SideEffectRecord {
            key,
            name: name.to_owned(),
            replayed: true,
            result: result.clone(),
        });
        if recorded.result_dropped {
            // The first run failed the message here: so does the replay.
            let error = JournalError::InvalidEntry(recorded.error);
            let again = replicate(&error);
            self.failure = Some(Failure::Message(error));
            return Err(again);
        }
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
            .await?;
        let time = bytes.map_err(|e| e.clone()).and_then(|bytes| {
            let (secs, nanos) = bytes.split_at_checked(8).ok_or("short")?;
            let secs = u64::from_le_bytes(secs.try_into().map_err(|_| "seconds")?);
            let nanos = u32::from_le_bytes(nanos.try_into().map_err(|_| "nanos")?);
            UNIX_EPOCH
                .checked_add(Duration::new(secs, nanos.min(999_999_999)))
                .ok_or_else(|| "out of range".to_owned())
        });
        time.map_err(|why| {
            let e = self.corrupt_effect(NOW_EFFECT, &why);
            self.fail_journal(e)
        })
    }

    /// A random number, journaled: replay sees the first run's value.
    pub async fn random_u64(&mut self) -> JournalResult<u64> {
        let bytes = self
            .side_effect(RANDOM_EFFECT, || async {
                // A ULID's 80 random bits come from a thread-local CSPRNG.
                let random = ulid::Ulid::generate().random() as u64;
                Ok::<_, String>(random.to_le_bytes().to_vec())
            })
            .await?;
        let value = bytes.and_then(|bytes| {
            <[u8; 8]>::try_from(bytes.as_slice())
                .map(u64::from_le_bytes)
                .map_err(|_| "not 8 bytes".to_owned())
        });
        value.map_err(|why| {
            let e = self.corrupt_effect(RANDOM_EFFECT, &why);
            self.fail_journal(e)
        })
    }

    /// Schedules a timer: journals `TimerScheduled` within this message and
    /// returns the timer's id, derived from this message ([`timer_id`]). The
    /// fields the caller sets: `target_actor_type` (required: the actor
    /// system's name of the target's type), `target_actor_id` (empty: this
    /// actor), `message_type` and `timer_data` (the message it delivers),
    /// and either `delay` (from now) or `due_at`; `timer_id` and the other
    /// of `delay`/`due_at` are filled in.
    ///
    /// The timer is not yet due anywhere: the host puts it into its due-timer
    /// index when the message completes successfully (a handler error drops
    /// it), and delivers its message once, at or after the due time
    /// (contract rule 23). Replay returns the recorded timer (with its
    /// recorded due time) without journaling it again. A timer that cannot
    /// be journaled (no target type, too large) fails the message alone.
    pub async fn schedule_timer(&mut self, mut timer: TimerScheduled) -> JournalResult<String> {
        self.check_failure()?;
        timer.timer_id = timer_id(&self.actor_id, &self.message_id, self.timers_scheduled);
        self.timers_scheduled += 1;
        if timer.target_actor_type.is_empty() {
            let error = JournalError::InvalidEntry(format!(
                "timer {} has no target actor type",
                timer.timer_id
            ));
            return Err(self.fail_message(error));
        }
        let now = SystemTime::now();
        match (timer.due_at, timer.delay) {
            (None, delay) => {
                let delay = delay
                    .and_then(|d| Duration::try_from(d).ok())
                    .unwrap_or_default();
                timer.due_at = Some(prost_types::Timestamp::from(now + delay));
                timer.delay = Some(to_proto_duration(delay));
            }
            (Some(due), None) => {
                let until = SystemTime::try_from(due)
                    .ok()
                    .and_then(|due| due.duration_since(now).ok())
                    .unwrap_or_default();
                timer.delay = Some(to_proto_duration(until));
            }
            (Some(_), Some(_)) => {}
        }
        let id = timer.timer_id.clone();
        self.timer_op(TimerOp::Scheduled(timer)).await?;
        Ok(id)
    }

    /// Cancels a timer this actor scheduled (by the id
    /// [`ExecutionContext::schedule_timer`] returned): journals
    /// `TimerCancelled`; the host removes it from its index when the message
    /// completes successfully. The index leaves a timer already claimed for
    /// firing alone; an actor system drops such a delivery when it comes
    /// up in the mailbox (journal-actors).
    pub async fn cancel_timer(&mut self, timer_id: &str) -> JournalResult<()> {
        self.check_failure()?;
        self.timer_op(TimerOp::Cancelled(timer_id.to_owned())).await
    }

    /// Journals `TimerFired`: the message being handled is the firing of
    /// timer `timer_id`. Called by the host that delivers timers, before the
    /// handler runs.
    pub async fn timer_fired(&mut self, timer_id: &str) -> JournalResult<()> {
        self.check_failure()?;
        self.timer_op(TimerOp::Fired(timer_id.to_owned())).await
    }

    /// The timer operations of this run so far, in order.
    pub fn timer_ops(&self) -> &[TimerOp] {
        &self.timer_ops
    }

    /// Journals `op` (or, in replay, takes the recorded one).
    async fn timer_op(&mut self, op: TimerOp) -> JournalResult<()> {
        if let Some(at) = self.recorded_timers.iter().position(|r| r.same_kind(&op)) {
            if let Some(recorded) = self.recorded_timers.remove(at) {
                self.timer_ops.push(recorded);
            }
            return Ok(());
        }
        if self.time_travel || self.recorded_complete {
            // The message ended in the journal without this operation (also
            // when an effect ran live before: timers are journaled whatever
            // `cache_side_effects` says, and a completed message gets no
            // new entry).
            let recorded = self
                .recorded_timers
                .front()
                .map_or_else(|| END_OF_MESSAGE.to_owned(), TimerOp::describe);
            let divergence = self.divergence(self.position, &recorded, &op.describe());
            return Err(self.fail_journal(divergence));
        }
        let entry = JournalEntry::new(self.actor_id.clone(), 0, op.entry());
        let entry = match self.target.as_ref() {
            Some(target) => entry.with_correlation_id(target.correlation_id.clone()),
            None => entry,
        };
        match self.write(entry).await {
            Ok(()) => {
                self.timer_ops.push(op);
                Ok(())
            }
            Err(e @ JournalError::InvalidEntry(_)) => Err(self.fail_message(e)),
            Err(e) => Err(self.fail_journal(e)),
        }
    }

    /// Records a domain event this message decided (an event-sourced
    /// actor's command: contract rule 25). Events wait in memory and are
    /// journaled as `EventRecorded` entries in one atomic batch with the
    /// message's `MessageProcessed`, in the order recorded, and only if
    /// the message succeeds: a failed message persists none. A version of
    /// 0 is written as 1; tags are sorted and made distinct.
    ///
    /// An event that cannot be journaled (no type, larger than the
    /// storage's entry limit) fails the message alone, as a side effect's
    /// result too large does (rule 21).
    pub fn record_event(&mut self, mut event: EventRecorded) -> JournalResult<()> {
        self.check_failure()?;
        event.schema_version = event.schema_version.max(1);
        event.tags.sort_unstable();
        event.tags.dedup();
        let entry = JournalEntry::new(self.actor_id.clone(), 1, Entry::EventRecorded(event))
            .with_correlation_id(self.message_id.clone());
        if let Some(target) = self.target.as_ref() {
            let limits = target.storage.limits();
            if let Err(e) = crate::validate::validate_entry(&entry, &limits) {
                return Err(self.fail_message(e));
            }
        } else if let Some(Entry::EventRecorded(event)) = &entry.entry {
            if event.event_type.is_empty() {
                return Err(self.fail_message(JournalError::InvalidEntry(
                    "an event needs a non-empty event_type".into(),
                )));
            }
        }
        if let Some(Entry::EventRecorded(event)) = entry.entry {
            self.events.push(event);
        }
        Ok(())
    }

    /// The domain events this message recorded so far, in order.
    pub fn events(&self) -> &[EventRecorded] {
        &self.events
    }

    /// The latched failure, if any, as an error for the caller.
    fn check_failure(&self) -> JournalResult<()> {
        match &self.failure {
            Some(Failure::Message(e) | Failure::Journal(e)) => Err(replicate(e)),
            None => Ok(()),
        }
    }

    /// Latches `error` as failing this message alone.
    fn fail_message(&mut self, error: JournalError) -> JournalError {
        let again = replicate(&error);
        if self.failure.is_none() {
            self.failure = Some(Failure::Message(error));
        }
        again
    }

    /// Checks that a replayed, completed message used all its recorded side
    /// effects and timer operations: fewer than recorded is a divergence too.
    pub fn finish_replay(&self) -> JournalResult<()> {
        match self.recorded.front() {
            Some(next) if self.replaying => {
                Err(self.divergence(self.position, &next.effect_type, END_OF_MESSAGE))
            }
            _ => match self.recorded_timers.front() {
                Some(next) => Err(self.divergence(self.position, &next.describe(), END_OF_MESSAGE)),
                None => Ok(()),
            },
        }
    }

    /// How many side effects the code asked for so far.
    pub fn effects_asked(&self) -> usize {
        self.position
    }

    async fn journal(
        &mut self,
        key: &str,
        name: &str,
        digest: Vec<u8>,
        result: &Result<Vec<u8>, String>,
    ) -> JournalResult<()> {
        let Some(target) = self.target.as_ref() else {
            return Ok(());
        };
        let (response, error) = match result {
            Ok(bytes) => (bytes.clone(), String::new()),
            Err(text) => (Vec::new(), text.clone()),
        };
        let mut effect = SideEffectExecuted {
            effect_id: key.to_owned(),
            effect_type: name.to_owned(),
            request: digest,
            response,
            error,
            result_dropped: false,
        };
        let (actor_id, correlation_id) = (self.actor_id.clone(), target.correlation_id.clone());
        let entry = |effect: SideEffectExecuted| {
            JournalEntry::new(actor_id.clone(), 0, Entry::SideEffectExecuted(effect))
                .with_correlation_id(correlation_id.clone())
        };
        let dropped = match self.write(entry(effect.clone())).await {
            Ok(()) => None,
            Err(JournalError::InvalidEntry(why)) => {
                // The result does not fit in an entry: keep that it ran and
                // failed the message, so no recovery runs it again.
                effect.error = format!(
                    "the result of side effect {name:?} cannot be journaled ({why}); \
                     the message failed"
                );
                effect.response = Vec::new();
                effect.result_dropped = true;
                let reason = effect.error.clone();
                match self.write(entry(effect)).await {
                    Ok(()) => Some(reason),
                    Err(e) => return Err(self.fail_journal(e)),
                }
            }
            Err(e) => return Err(self.fail_journal(e)),
        };
        // A result waits for the next batch: the next call to the outside
        // world, or the message's end. A dropped one fails the message: that
        // is recorded at once.
        if dropped.is_some() {
            self.flush().await?;
        }
        match dropped {
            None => Ok(()),
            Some(reason) => {
                let error = JournalError::InvalidEntry(reason);
                let again = replicate(&error);
                self.failure = Some(Failure::Message(error));
                Err(again)
            }
        }
    }

    /// Latches `error` as the journal failure of this message, and returns
    /// a copy for the caller.
    fn fail_journal(&mut self, error: JournalError) -> JournalError {
        let again = replicate(&error);
        if self.failure.is_none() {
            self.failure = Some(Failure::Journal(error));
        }
        again
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

fn to_proto_duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// Whether the effect `name` is a call to the outside world (time and
/// randomness are read by the context itself, and seen by no one else).
fn is_external(name: &str) -> bool {
    name != NOW_EFFECT && name != RANDOM_EFFECT
}

/// A copy of `error` for a second caller: the same variant and fields, with
/// driver sources carried as their text.
pub(crate) fn replicate(error: &JournalError) -> JournalError {
    match error {
        JournalError::SequenceConflict {
            actor_id,
            expected,
            actual,
        } => JournalError::SequenceConflict {
            actor_id: actor_id.clone(),
            expected: *expected,
            actual: *actual,
        },
        JournalError::InvalidEntry(why) => JournalError::InvalidEntry(why.clone()),
        JournalError::ReplayDivergence {
            actor_id,
            message_id,
            position,
            recorded,
            requested,
        } => JournalError::ReplayDivergence {
            actor_id: actor_id.clone(),
            message_id: message_id.clone(),
            position: *position,
            recorded: recorded.clone(),
            requested: requested.clone(),
        },
        JournalError::RecoveryFailed { actor_id, reason } => JournalError::RecoveryFailed {
            actor_id: actor_id.clone(),
            reason: reason.clone(),
        },
        JournalError::CorruptEntry {
            actor_id,
            sequence,
            reason,
        } => JournalError::CorruptEntry {
            actor_id: actor_id.clone(),
            sequence: *sequence,
            reason: reason.clone(),
        },
        JournalError::Unavailable { backend, source } => {
            JournalError::unavailable(backend, source.to_string())
        }
        other => JournalError::storage("journal", other.to_string()),
    }
}

/// Version tag of [`request_digest`]'s format.
const DIGEST_V1: u8 = 1;

/// The digest of a side effect's request journaled in
/// `SideEffectExecuted.request`: a version byte, the request's length and
/// two 64-bit FNV-1a hashes of it (different offsets). Stable across
/// builds and platforms (unlike `std`'s hashers), cheap, and enough to tell
/// two requests apart for divergence detection; it is no cryptographic
/// commitment.
pub fn request_digest(request: &[u8]) -> Vec<u8> {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let (mut a, mut b) = (0xcbf2_9ce4_8422_2325_u64, 0x6c62_272e_07bb_0142_u64);
    for &byte in request {
        a = (a ^ u64::from(byte)).wrapping_mul(PRIME);
        b = (b ^ u64::from(byte.rotate_left(3))).wrapping_mul(PRIME);
    }
    let mut digest = Vec::with_capacity(25);
    digest.push(DIGEST_V1);
    digest.extend_from_slice(&(request.len() as u64).to_le_bytes());
    digest.extend_from_slice(&a.to_le_bytes());
    digest.extend_from_slice(&b.to_le_bytes());
    digest
}

fn describe_request(name: &str, digest: &[u8]) -> String {
    use std::fmt::Write;
    let hex = digest.iter().fold(String::new(), |mut hex, b| {
        let _ = write!(hex, "{b:02x}");
        hex
    });
    format!("{name} (request digest {hex})")
}
