//! The durability facet: journals every message, side effect and outcome of
//! an actor, checkpoints its real state, and recovers it on activation.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use futures::TryStreamExt;
use prost::Message;

use crate::checkpoint::{
    CheckpointManager, CheckpointPolicy, CheckpointRejection, SavedCheckpoint, SkippedCheckpoint,
    StatePiece,
};
use crate::config::DurabilityConfig;
use crate::context::{ExecutionContext, MessageFailure, Retry, TimerOp};
use crate::error::{JournalError, JournalResult};
use crate::facet::{Admission, DurableActor, Facet, HandlerError, MessageOutcome};
use crate::proto::{
    journal_entry::Entry, CompressionType, EventRecorded, FacetSnapshot, JournalEntry,
    MessageProcessed, MessageReceived, ProcessedMessage, ProcessingResult, SideEffectExecuted,
};
use crate::storage::JournalStorage;
use crate::timers::{TimerRecord, TimerStore};

pub use crate::config::DEFAULT_DEDUP_WINDOW;

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

/// A message the facet remembers as processed.
#[derive(Debug, Clone)]
struct Processed {
    /// Sequence of its `MessageProcessed` entry (0: unknown).
    sequence: u64,
    /// When it was processed, ms since the Unix epoch.
    at_ms: i64,
    /// While it is within the dedup window: where its record, with what it
    /// gave, lies in [`Dedup::listed`].
    kept: Option<Frame>,
}

/// Where one `processed` field of a `FacetSnapshot` lies in
/// [`Dedup::listed`].
#[derive(Debug, Clone, Copy)]
struct Frame {
    /// Its first byte, counted from the first byte ever listed.
    at: u64,
    /// Its length: the field's key and length, then the record.
    len: usize,
    /// The length of the key and length before the record.
    head: usize,
}

/// The processed messages the facet recognises (contract rule 17): every
/// message still in the journal, and the replies of the newest
/// `window` messages (and of those younger than `retention`) also after the
/// journal behind them was truncated. Oldest first.
#[derive(Debug)]
struct Dedup {
    order: VecDeque<Arc<str>>,
    records: HashMap<Arc<str>, Processed>,
    /// `order[..stripped]` have had their outcomes dropped (outside the
    /// window; their replies are read back from the journal).
    stripped: usize,
    /// The records of `order[stripped..]` with their outcomes, in that
    /// order and nothing else: the `processed` fields of a `FacetSnapshot`,
    /// encoded once, when the message completes, so that a checkpoint
    /// copies the window instead of building it again.
    listed: VecDeque<u8>,
    /// How many bytes were ever taken off the front of `listed`.
    listed_from: u64,
    /// The highest sequence among `order[..stripped]` (at least: it may
    /// stay above it when the record holding it left), 0 when `stripped`
    /// is 0. Kept so that a checkpoint lists the window without walking
    /// every older record.
    stripped_through: u64,
    /// Records in `order[..stripped]` without a sequence (from an older
    /// build's checkpoint): a checkpoint lists those too.
    stripped_unsequenced: usize,
    window: usize,
    retention: Option<Duration>,
    /// Entries up to here are truncated: records of messages processed
    /// there may go once they are outside the window.
    truncated_to: u64,
    /// Messages processed up to here may be missing (a checkpoint lists the
    /// window only): read back from the journal at the first message whose
    /// id is not known ([`Dedup::add_scanned`]). 0: none missing.
    unscanned_through: u64,
    /// Runs of `listed` compressed by earlier checkpoints, in order and
    /// back to back, each [`SEALED_RUN`] bytes, at `sealed_level`: a
    /// checkpoint copies their frames instead of compressing the whole
    /// window again (a window of 1,000 replies is some 50 KB, and a
    /// checkpoint every 100 entries compressed it all each time: a third
    /// of a message's CPU on the memory backend). A run whose first byte
    /// left the list goes; the list listed again drops them all.
    sealed: VecDeque<Sealed>,
    sealed_level: i32,
}

/// Bytes of `listed` compressed into each sealed frame: small enough that
/// the window's ends, compressed afresh by each checkpoint, stay small,
/// large enough to compress about as well as the whole.
const SEALED_RUN: usize = 4096;

/// A run of [`Dedup::listed`] compressed into one zstd frame.
#[derive(Debug, Clone)]
struct Sealed {
    /// Its first byte, counted as [`Frame::at`] is.
    at: u64,
    frame: Arc<[u8]>,
}

/// The field number of `FacetSnapshot.processed`.
const PROCESSED_FIELD: u32 = 3;

/// The `processed` field of a `FacetSnapshot` listing one message, and the
/// length of its key and length.
fn processed_field(
    id: &str,
    sequence: u64,
    at_ms: i64,
    outcome: Option<MessageOutcome>,
) -> (Vec<u8>, usize) {
    use prost::encoding::{encode_key, encode_varint, WireType};
    let record = ProcessedMessage {
        message_id: id.to_owned(),
        processed_sequence: sequence,
        processed_at_ms: at_ms,
        // The outcome's own message id is left out: the record's says it.
        outcome: outcome.map(|outcome| processed_message("", outcome)),
    };
    let len = record.encoded_len();
    let mut field = Vec::with_capacity(len + 6);
    encode_key(PROCESSED_FIELD, WireType::LengthDelimited, &mut field);
    encode_varint(len as u64, &mut field);
    let head = field.len();
    record.encode_raw(&mut field);
    (field, head)
}

impl Dedup {
    fn new(window: usize, retention: Option<Duration>) -> Self {
        Dedup {
            order: VecDeque::new(),
            records: HashMap::new(),
            stripped: 0,
            listed: VecDeque::new(),
            listed_from: 0,
            stripped_through: 0,
            stripped_unsequenced: 0,
            window: window.max(1),
            retention,
            truncated_to: 0,
            unscanned_through: 0,
            sealed: VecDeque::new(),
            sealed_level: 0,
        }
    }

    fn from_snapshot(window: usize, retention: Option<Duration>, snapshot: &FacetSnapshot) -> Self {
        let mut dedup = Dedup::new(window, retention);
        for id in &snapshot.recent_message_ids {
            dedup.insert(id.clone(), 0, 0, None);
        }
        for p in &snapshot.processed {
            let outcome = p.outcome.as_ref().map(outcome_of);
            dedup.insert(
                p.message_id.clone(),
                p.processed_sequence,
                p.processed_at_ms,
                outcome,
            );
        }
        dedup.unscanned_through = snapshot.unlisted_through;
        dedup
    }

    /// Ids read back from the journal (`(id, sequence)` in journal order)
    /// for messages a checkpoint did not list: recorded as older than every
    /// known one, without replies (those are read from the journal too).
    fn add_scanned(&mut self, scanned: Vec<(String, u64)>) {
        let mut fresh: Vec<(Arc<str>, u64)> = Vec::new();
        let mut at: HashMap<Arc<str>, usize> = HashMap::new();
        for (id, sequence) in scanned {
            if self.records.contains_key(id.as_str()) {
                continue;
            }
            let id: Arc<str> = id.into();
            if let Some(&index) = at.get(&id) {
                // Its MessageProcessed after its MessageReceived.
                fresh[index].1 = sequence;
            } else {
                at.insert(Arc::clone(&id), fresh.len());
                fresh.push((id, sequence));
            }
        }
        for (id, sequence) in fresh.into_iter().rev() {
            let record = Processed {
                sequence,
                at_ms: 0,
                kept: None,
            };
            self.records.insert(Arc::clone(&id), record);
            self.order.push_front(id);
            self.stripped += 1;
            self.entered_prefix(sequence);
        }
        self.unscanned_through = 0;
        self.trim();
    }

    fn insert(&mut self, id: String, sequence: u64, at_ms: i64, outcome: Option<MessageOutcome>) {
        // Processed again (an activation that did not recover): newest now.
        self.forget(&id);
        let (field, head) = processed_field(&id, sequence, at_ms, outcome);
        let frame = Frame {
            at: self.listed_from + self.listed.len() as u64,
            len: field.len(),
            head,
        };
        self.listed.extend(field);
        let record = Processed {
            sequence,
            at_ms,
            kept: Some(frame),
        };
        let id: Arc<str> = id.into();
        self.records.insert(Arc::clone(&id), record);
        self.order.push_back(id);
        self.trim();
    }

    fn get(&self, id: &str) -> Option<&Processed> {
        self.records.get(id)
    }

    /// What a remembered message gave, while it is within the dedup window.
    fn outcome(&self, record: &Processed) -> Option<MessageOutcome> {
        let frame = record.kept?;
        let start = usize::try_from(frame.at.checked_sub(self.listed_from)?).ok()?;
        let bytes: Vec<u8> = self
            .listed
            .range(start + frame.head..start + frame.len)
            .copied()
            .collect();
        let record = ProcessedMessage::decode(bytes.as_slice()).ok()?;
        record.outcome.as_ref().map(outcome_of)
    }

    fn forget(&mut self, id: &str) {
        let Some(record) = self.records.remove(id) else {
            return;
        };
        let Some(at) = self.order.iter().position(|o| &**o == id) else {
            return;
        };
        self.order.remove(at);
        if at < self.stripped {
            self.stripped -= 1;
            self.left_prefix(record.sequence);
        } else if record.kept.is_some() {
            // A hole in the window's list: listed again without it.
            self.relist();
        }
    }

    /// Lists the records of the window again, in order, from where they
    /// lie in the current list (after one left from the middle).
    fn relist(&mut self) {
        let old = std::mem::take(&mut self.listed);
        let from = self.listed_from;
        self.listed_from = 0;
        self.sealed.clear();
        for id in self.order.iter().skip(self.stripped) {
            let Some(record) = self.records.get_mut(id) else {
                continue;
            };
            let Some(mut frame) = record.kept.take() else {
                continue;
            };
            let Some(start) = frame
                .at
                .checked_sub(from)
                .and_then(|start| usize::try_from(start).ok())
                .filter(|start| start + frame.len <= old.len())
            else {
                continue;
            };
            frame.at = self.listed.len() as u64;
            self.listed
                .extend(old.range(start..start + frame.len).copied());
            record.kept = Some(frame);
        }
    }

    fn truncated(&mut self, to: u64) {
        self.truncated_to = self.truncated_to.max(to);
        self.trim();
    }

    /// Drops the replies of records outside the window, then the records
    /// outside it whose entries are truncated.
    fn trim(&mut self) {
        let oldest_kept = self
            .retention
            .map(|age| now_ms().saturating_sub(i64::try_from(age.as_millis()).unwrap_or(i64::MAX)));
        let outside = self.order.len().saturating_sub(self.window);
        while self.stripped < outside {
            let id = &self.order[self.stripped];
            let Some(record) = self.records.get_mut(id) else {
                break;
            };
            if oldest_kept.is_some_and(|oldest| record.at_ms >= oldest) {
                break;
            }
            // The oldest of the window: its field is the list's first.
            if let Some(frame) = record.kept.take() {
                self.listed.drain(..frame.len.min(self.listed.len()));
                self.listed_from += frame.len as u64;
            }
            let sequence = record.sequence;
            self.stripped += 1;
            self.entered_prefix(sequence);
        }
        while self.stripped > 0 {
            let Some(front) = self.order.front() else {
                break;
            };
            let truncated = self
                .records
                .get(front)
                .is_none_or(|r| r.sequence <= self.truncated_to);
            if !truncated {
                break;
            }
            let left = self
                .order
                .pop_front()
                .and_then(|id| self.records.remove(&id));
            self.stripped -= 1;
            self.left_prefix(left.map_or(0, |r| r.sequence));
        }
    }

    /// A record of `sequence` joined `order[..stripped]`.
    fn entered_prefix(&mut self, sequence: u64) {
        self.stripped_through = self.stripped_through.max(sequence);
        if sequence == 0 {
            self.stripped_unsequenced += 1;
        }
    }

    /// A record of `sequence` left `order[..stripped]`.
    fn left_prefix(&mut self, sequence: u64) {
        if sequence == 0 {
            self.stripped_unsequenced = self.stripped_unsequenced.saturating_sub(1);
        }
        if self.stripped == 0 {
            self.stripped_through = 0;
            self.stripped_unsequenced = 0;
        }
    }

    /// What a checkpoint keeps: the records within the window (with their
    /// replies), written to `out` as the encoded `processed` fields of a
    /// `FacetSnapshot`; returns up to which sequence the others may be
    /// missing. Ids of older builds' checkpoints (no sequence, nothing to
    /// read back by) are listed also outside the window.
    fn list_into(&self, out: &mut Vec<u8>) -> u64 {
        self.list_unsequenced_into(out);
        let (front, back) = self.listed.as_slices();
        out.extend_from_slice(front);
        out.extend_from_slice(back);
        self.unlisted_through()
    }

    /// Up to which sequence a checkpoint may miss processed messages.
    fn unlisted_through(&self) -> u64 {
        self.unscanned_through.max(self.stripped_through)
    }

    /// `listed[from..to]` (offsets into the list as it is now) onto `out`.
    fn listed_range_into(&self, from: usize, to: usize, out: &mut Vec<u8>) {
        let (front, back) = self.listed.as_slices();
        let split = front.len();
        if from < split {
            out.extend_from_slice(&front[from..to.min(split)]);
        }
        if to > split {
            out.extend_from_slice(&back[from.max(split) - split..to - split]);
        }
    }

    /// What [`Dedup::list_into`] writes after `head`, as checkpoint pieces:
    /// `head` with the unsealed start of the list, the sealed runs, the
    /// unsealed end. Returns them and up to which sequence messages may be
    /// missing.
    fn pieces(&self, mut head: Vec<u8>) -> (Vec<StatePiece>, u64) {
        let from = self.listed_from;
        let offset = |at: u64| usize::try_from(at - from).unwrap_or(usize::MAX);
        let sealed_end = self.sealed_end();
        self.list_unsequenced_into(&mut head);
        let first = self.sealed.front().map_or(sealed_end, |s| s.at);
        self.listed_range_into(0, offset(first), &mut head);
        let mut pieces = Vec::with_capacity(self.sealed.len() + 2);
        pieces.push(StatePiece::Fresh(head));
        pieces.extend(self.sealed.iter().map(|s| StatePiece::Framed {
            len: SEALED_RUN,
            frame: Arc::clone(&s.frame),
        }));
        let mut tail = Vec::new();
        self.listed_range_into(offset(sealed_end), self.listed.len(), &mut tail);
        pieces.push(StatePiece::Fresh(tail));
        (pieces, self.unlisted_through())
    }

    /// Where the sealed runs end (the list's start when there are none).
    fn sealed_end(&self) -> u64 {
        self.sealed
            .back()
            .map_or(self.listed_from, |s| s.at + SEALED_RUN as u64)
    }

    /// The whole runs of the list not sealed at zstd `level` yet: where
    /// they start, and their bytes (a multiple of [`SEALED_RUN`]). Drops
    /// the sealed runs of another level, and those whose start left the
    /// list.
    fn unsealed(&mut self, level: i32) -> (u64, Vec<u8>) {
        if self.sealed_level != level {
            self.sealed.clear();
            self.sealed_level = level;
        }
        while self.sealed.front().is_some_and(|s| s.at < self.listed_from) {
            self.sealed.pop_front();
        }
        let (from, end) = (
            self.listed_from,
            self.listed_from + self.listed.len() as u64,
        );
        if self.sealed_end() > end {
            // Cannot be (the list only grows at its end between relists);
            // compressed afresh if it were.
            self.sealed.clear();
        }
        let at = self.sealed_end();
        let whole = (end - at) / SEALED_RUN as u64 * SEALED_RUN as u64;
        let start = usize::try_from(at - from).unwrap_or(usize::MAX);
        let mut runs = Vec::new();
        if whole > 0 {
            let len = usize::try_from(whole).unwrap_or(usize::MAX);
            runs.reserve(len);
            self.listed_range_into(start, start + len, &mut runs);
        }
        (at, runs)
    }

    /// Takes `frames`, the runs [`Dedup::unsealed`] gave from `at`,
    /// compressed one each at the sealed level; ignored if the list moved
    /// in between (then they are compressed again when needed).
    fn seal(&mut self, at: u64, frames: Vec<Vec<u8>>) {
        if at != self.sealed_end() || at < self.listed_from {
            return;
        }
        let mut at = at;
        for frame in frames {
            self.sealed.push_back(Sealed {
                at,
                frame: frame.into(),
            });
            at += SEALED_RUN as u64;
        }
    }

    /// The records outside the window without a sequence (from an older
    /// build's checkpoint, nothing to read them back by): listed too.
    fn list_unsequenced_into(&self, out: &mut Vec<u8>) {
        if self.stripped_unsequenced > 0 {
            for id in self.order.iter().take(self.stripped) {
                match self.records.get(id) {
                    Some(r) if r.sequence == 0 => {
                        out.extend(processed_field(id, 0, r.at_ms, None).0);
                    }
                    _ => {}
                }
            }
        }
    }

    /// The bytes [`Dedup::list_into`] writes, about.
    fn listed_len(&self) -> usize {
        self.listed.len()
    }
}

/// A facet snapshot's bytes: `actor_state`, the `processed` fields of
/// `dedup`, then `unlisted_through` and `owner` — what encoding the
/// `FacetSnapshot` with those fields gives.
fn encode_snapshot(actor_state: &[u8], owner: &str, dedup: &Dedup) -> Vec<u8> {
    let mut out = Vec::with_capacity(actor_state.len() + owner.len() + dedup.listed_len() + 32);
    snapshot_head(actor_state, &mut out);
    let unlisted_through = dedup.list_into(&mut out);
    snapshot_tail(unlisted_through, owner, &mut out);
    out
}

/// `runs` (a multiple of [`SEALED_RUN`] bytes) compressed one run per zstd
/// frame at `level`.
fn compress_runs(runs: &[u8], level: i32) -> std::io::Result<Vec<Vec<u8>>> {
    runs.chunks(SEALED_RUN)
        .map(|run| crate::checkpoint::compress(run, level))
        .collect()
}

/// [`encode_snapshot`]'s bytes as checkpoint pieces, the window's sealed
/// runs reused.
fn snapshot_pieces(actor_state: &[u8], owner: &str, dedup: &Dedup) -> Vec<StatePiece> {
    let mut head = Vec::with_capacity(actor_state.len() + owner.len() + SEALED_RUN + 16);
    snapshot_head(actor_state, &mut head);
    let (mut pieces, unlisted_through) = dedup.pieces(head);
    if let Some(StatePiece::Fresh(tail)) = pieces.last_mut() {
        snapshot_tail(unlisted_through, owner, tail);
    }
    pieces
}

/// A snapshot's `actor_state` field.
fn snapshot_head(actor_state: &[u8], out: &mut Vec<u8>) {
    use prost::encoding::{encode_key, encode_varint, WireType};
    if !actor_state.is_empty() {
        encode_key(1, WireType::LengthDelimited, out);
        encode_varint(actor_state.len() as u64, out);
        out.extend_from_slice(actor_state);
    }
}

/// Refuses, for the facet of `actor_id` owned by `ours`, a journal (or
/// checkpoint: `what`) that another type marked as its own.
fn check_owner(ours: &str, actor_id: &str, marked: &str, what: &str) -> JournalResult<()> {
    if ours.is_empty() || marked.is_empty() || marked == ours {
        return Ok(());
    }
    Err(JournalError::RecoveryFailed {
        actor_id: actor_id.to_owned(),
        reason: format!(
            "{what} was written by actor type {marked:?}, not {ours:?}: an actor id names one \
             journal, so two types cannot share an id"
        ),
    })
}

/// The field number of `FacetSnapshot.owner`.
const OWNER_FIELD: u32 = 5;

/// The key, in the metadata of a journal's first `MessageReceived`, of the
/// actor type that wrote it, when its facet was told
/// ([`DurabilityFacet::owned_by`]); checkpoints carry it in
/// `FacetSnapshot.owner`. Recovery by another type is refused. The key is
/// taken out again before the message is replayed, so a handler sees the
/// metadata it was sent; it is the journal's (a sender's own value under it
/// in a journal's first message is replaced).
pub const OWNER_METADATA: &str = "journal.owner";

/// A snapshot's `unlisted_through` and `owner` fields (after the others,
/// in field order, as prost would write them).
fn snapshot_tail(unlisted_through: u64, owner: &str, out: &mut Vec<u8>) {
    use prost::encoding::{encode_key, encode_varint, WireType};
    if unlisted_through != 0 {
        encode_key(4, WireType::Varint, out);
        encode_varint(unlisted_through, out);
    }
    if !owner.is_empty() {
        encode_key(OWNER_FIELD, WireType::LengthDelimited, out);
        encode_varint(owner.len() as u64, out);
        out.extend_from_slice(owner.as_bytes());
    }
}

/// At most the first 1 KiB of `text`, saying how long it was.
fn cut_text(text: &str) -> String {
    let mut end = text.len().min(1024);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{} [cut: {} bytes in all]", &text[..end], text.len())
}

/// The longest reason a cut `MessageProcessed` carries, with room to spare.
const LONGEST_CUT_REASON: usize = 1024 + 256;

/// An entry's bytes besides its strings and payloads, with room to spare:
/// tags, lengths, the ULID, the sequence, the timestamp.
const ENTRY_OVERHEAD: usize = 256;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn timestamp_ms(t: Option<&prost_types::Timestamp>) -> i64 {
    t.map_or(0, |t| {
        t.seconds
            .saturating_mul(1000)
            .saturating_add(i64::from(t.nanos) / 1_000_000)
    })
}

/// The outcome a `MessageProcessed` entry records.
fn outcome_of(done: &MessageProcessed) -> MessageOutcome {
    if done.result == ProcessingResult::Error as i32 {
        MessageOutcome::Failed(done.error_message.clone())
    } else {
        MessageOutcome::Replied(done.response_payload.clone())
    }
}

/// A message received and not (yet) processed, with the side effects
/// recorded for it, the sequence of its `MessageReceived` and when that was
/// written (ms since the epoch).
struct PendingMessage {
    message: MessageReceived,
    effects: VecDeque<SideEffectExecuted>,
    /// Its timer entries, in journal order.
    timers: Vec<TimerOp>,
    sequence: u64,
    at_ms: i64,
}

/// Per-actor state of an activated facet.
#[derive(Debug)]
struct Active {
    next_sequence: u64,
    /// Sequence of the last checkpoint (0: none).
    checkpoint_sequence: u64,
    last_checkpoint: Instant,
    dedup: Dedup,
}

/// Makes an actor durable: journals each message (`MessageReceived`, side
/// effects, `MessageProcessed`, in one atomic batch per call to the outside
/// world: see [`ExecutionContext::with_batched_writes`]), recognises messages already processed and answers them with the reply
/// recorded the first time, takes checkpoints of the actor's real state
/// every `checkpoint_interval` entries or after `checkpoint_timeout`, and on
/// activation recovers the state from the newest usable checkpoint plus the
/// entries after it.
///
/// Side effects are journaled after they run, so one that ran but whose
/// result was not journaled before a crash runs again on recovery:
/// at-least-once towards the outside world, exactly-once in the actor.
///
/// Exactly-once (contract rule 17): a message id still in the journal is
/// always recognised; the replies of the newest `dedup_window` messages
/// (and of those within `dedup_retention`) are kept in checkpoints, so they
/// are recognised, with their replies, after the journal behind them was
/// truncated too. A checkpoint lists that window only, whatever the
/// journal's length: after an activation, the first message whose id it
/// does not list makes the facet read the older ids back from the journal
/// once (entries are read, no handler runs); they stay in memory (about 60
/// bytes each) until the journal behind them is truncated.
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
/// let storage = journal_memory::MemoryJournalStorage::new();
/// let mut counter = Actor::new("counter-1", Counter(0));
/// counter.facets().attach(Box::new(DurabilityFacet::new(storage.clone(), DurabilityConfig::default())))?;
/// counter.send(MessageReceived { message_id: "m-1".into(), ..Default::default() }).await?;
///
/// // After a crash, another actor on the same storage recovers the count.
/// let mut again = Actor::new("counter-1", Counter(0));
/// let facet = DurabilityFacet::new(storage, DurabilityConfig::default());
/// let observer = facet.observer();
/// again.facets().attach(Box::new(facet))?;
/// again.activate().await?;
/// assert_eq!(again.behavior().0, 1);
/// assert_eq!(observer.stats().activation.replayed_messages, 1);
/// # Ok(())
/// # }
/// ```
pub struct DurabilityFacet {
    storage: Arc<dyn JournalStorage>,
    config: DurabilityConfig,
    checkpoints: CheckpointManager,
    retry: Retry,
    /// The due-timer index the timers of completed messages go into.
    timer_store: Option<Arc<dyn TimerStore>>,
    actor_id: String,
    active: Option<Active>,
    observer: DurabilityObserver,
    /// The actor type whose journals these are ([`Self::owned_by`]; empty
    /// when not told).
    owner: String,
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
            retry: Retry {
                attempts: config.retry_attempts(),
                backoff: config.journal_retry_backoff,
            },
            config,
            actor_id: String::new(),
            active: None,
            observer: DurabilityObserver::default(),
            timer_store: None,
            owner: String::new(),
        }
    }

    /// Marks the journals this facet keeps as `actor_type`'s: the journal's
    /// first `MessageReceived` carries it in its metadata
    /// ([`OWNER_METADATA`]) and every checkpoint in `FacetSnapshot.owner`,
    /// and recovery refuses, with [`JournalError::RecoveryFailed`], a
    /// journal marked by another type (so an actor id used by two types
    /// never mixes their histories: the journal's id is the actor id).
    /// Journals written unmarked (before this, or by a facet not told)
    /// are recovered as before. An [`ActorSystem`] marks each actor with
    /// its registered type.
    ///
    /// [`ActorSystem`]: https://docs.rs/journal-actors
    #[must_use]
    pub fn owned_by(mut self, actor_type: impl Into<String>) -> Self {
        self.owner = actor_type.into();
        self
    }

    /// A replayed entry of `sequence`, the journal's first message's owner
    /// mark taken out (the handler sees the metadata it was sent); another
    /// type's mark is refused. Later messages are not looked at: only the
    /// first is marked, and theirs is the sender's metadata.
    fn unmarked(&self, sequence: u64, mut entry: Option<Entry>) -> JournalResult<Option<Entry>> {
        if let Some(Entry::MessageReceived(message)) = entry.as_mut().filter(|_| sequence == 1) {
            let marked = message.metadata.remove(OWNER_METADATA);
            check_owner(
                &self.owner,
                &self.actor_id,
                marked.as_deref().unwrap_or_default(),
                "its journal",
            )?;
        }
        Ok(entry)
    }

    /// The due-timer index this actor's timers go into: when a message that
    /// scheduled or cancelled timers ([`ExecutionContext::schedule_timer`])
    /// completes successfully, they are put into (or removed from) `store`
    /// before its `MessageProcessed` is journaled, and likewise when
    /// recovery completes an interrupted message. A crash in between leaves
    /// at worst an index entry of a message that recovery runs again, which
    /// schedules the same timer ids again (idempotent). A handler error
    /// drops its message's timers. Without a store, timers are journaled
    /// and never fire.
    #[must_use]
    pub fn with_timer_store(mut self, store: impl TimerStore + 'static) -> Self {
        self.timer_store = Some(Arc::new(store));
        self
    }

    /// Appends entries of a message's end. The storage refusing them is a
    /// journal failure, not a message that failed alone (the host keeps
    /// that one's state): nothing was written.
    async fn append_end(&self, batch: &[JournalEntry]) -> JournalResult<()> {
        self.retry
            .append_batch(&*self.storage, batch)
            .await
            .map_err(|e| match e {
                JournalError::InvalidEntry(why) => JournalError::storage(
                    "journal",
                    format!("the storage refused the message's end: {why}"),
                ),
                e => e,
            })
    }

    /// Applies a completed message's timer operations to the index.
    async fn index_timers(&self, ops: &[TimerOp]) -> JournalResult<()> {
        let Some(store) = self.timer_store.as_deref() else {
            return Ok(());
        };
        for op in ops {
            let mut wait = self.retry.backoff.min(crate::config::MAX_RETRY_BACKOFF);
            let mut attempt = 1;
            loop {
                let done = match op {
                    TimerOp::Scheduled(timer) => {
                        store.schedule_timer(&self.timer_record(timer)).await
                    }
                    TimerOp::Cancelled(id) => store
                        .cancel_timer(id, u64::try_from(now_ms()).unwrap_or(0))
                        .await
                        .map(drop),
                    TimerOp::Fired(_) => Ok(()),
                };
                match done {
                    Ok(()) => break,
                    Err(e) if e.is_retryable() && attempt < self.retry.attempts.max(1) => {
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(crate::config::MAX_RETRY_BACKOFF);
                        attempt += 1;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// The index record of a timer this actor scheduled: its payload is the
    /// `TimerScheduled` entry itself (protobuf).
    fn timer_record(&self, timer: &crate::proto::TimerScheduled) -> TimerRecord {
        let target_actor = if timer.target_actor_id.is_empty() {
            self.actor_id.clone()
        } else {
            timer.target_actor_id.clone()
        };
        TimerRecord {
            timer_id: timer.timer_id.clone(),
            owner_actor: self.actor_id.clone(),
            target_actor,
            target_type: timer.target_actor_type.clone(),
            due_at_ms: u64::try_from(timestamp_ms(timer.due_at.as_ref())).unwrap_or(0),
            payload: timer.encode_to_vec(),
        }
    }

    /// A handle on the facet's counters, valid after attaching it.
    pub fn observer(&self) -> DurabilityObserver {
        self.observer.clone()
    }

    fn new_dedup(&self) -> Dedup {
        Dedup::new(self.config.dedup_count(), self.config.dedup_retention)
    }

    fn active(&mut self) -> JournalResult<&mut Active> {
        // The actor id is copied only for the error: this runs several
        // times per message.
        let actor_id = &self.actor_id;
        self.active
            .as_mut()
            .ok_or_else(|| JournalError::RecoveryFailed {
                actor_id: actor_id.clone(),
                reason: "the durability facet was not activated".into(),
            })
    }

    /// Recovery: newest usable checkpoint, then the entries after it,
    /// message by message, with recorded side effects handed back.
    async fn recover(&mut self, actor: &mut dyn DurableActor) -> JournalResult<ActivationReport> {
        let started = Instant::now();
        let highest = self.storage.highest_sequence(&self.actor_id).await?;
        let (mut report, mut dedup, pending) = self.rebuild(actor, highest, true, false).await?;

        let mut next_sequence = highest + 1;
        if let Some(PendingMessage {
            message,
            effects,
            timers,
            ..
        }) = pending
        {
            // The last message was interrupted by a crash: finish it (an
            // event-sourced command too: it never completed, so its
            // events were never persisted).
            let (after, outcome, timer_ops, events) = self
                .replay_message(
                    actor,
                    &message,
                    (effects, timers),
                    None,
                    next_sequence,
                    Mode::Finish,
                )
                .await?;
            next_sequence = after;
            let batch = match outcome {
                MessageOutcome::Replied(_) => {
                    self.event_entries(next_sequence, &message.message_id, &events)
                }
                MessageOutcome::Failed(_) => Vec::new(),
            };
            next_sequence += batch.len() as u64;
            let (done, dropped) =
                self.processed_entry(next_sequence, &message.message_id, &outcome);
            if let Some(reason) = dropped {
                tracing::warn!(actor_id = %self.actor_id, reason, "interrupted message completed as failed");
            }
            let recorded = match &done.entry {
                Some(Entry::MessageProcessed(p)) => outcome_of(p),
                _ => outcome,
            };
            if matches!(recorded, MessageOutcome::Replied(_)) {
                self.index_timers(&timer_ops).await?;
            }
            let mut batch = batch;
            batch.push(done);
            self.retry.append_batch(&*self.storage, &batch).await?;
            dedup.insert(message.message_id, next_sequence, now_ms(), Some(recorded));
            next_sequence += 1;
            report.replayed_messages += 1;
            report.completed_interrupted_message = true;
        }
        let checkpoint_sequence = report.checkpoint_sequence.unwrap_or(0);
        self.active = Some(Active {
            next_sequence,
            checkpoint_sequence,
            last_checkpoint: Instant::now(),
            dedup,
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
        time_travel: bool,
    ) -> JournalResult<(ActivationReport, Dedup, Option<PendingMessage>)> {
        let mut report = ActivationReport::default();
        let mut dedup = self.new_dedup();
        let mut from = 1;
        if from_checkpoint {
            let owner = self.owner.as_str();
            let current = self.config.state_schema_version;
            let actor_id = self.actor_id.clone();
            let (window, retention) = (self.config.dedup_count(), self.config.dedup_retention);
            // An event-sourced actor's state is the fold of its events: a
            // snapshot it cannot migrate is passed over (the events before
            // it rebuild the state, where the journal still holds them).
            let event_sourced = actor.is_event_sourced();
            let (loaded, skipped) = self
                .checkpoints
                .search_newest_at(&self.actor_id, to, |state, stored| {
                    let snapshot = FacetSnapshot::decode(state.as_slice())
                        .map_err(|e| CheckpointRejection::Skip(e.to_string()))?;
                    check_owner(owner, &actor_id, &snapshot.owner, "its checkpoint")
                        .map_err(CheckpointRejection::Fail)?;
                    if stored == current {
                        actor
                            .restore(&snapshot.actor_state)
                            .map_err(CheckpointRejection::Skip)?;
                    } else {
                        tracing::info!(
                            actor_id = %actor_id,
                            stored,
                            current,
                            "migrating a checkpoint's state to this actor's schema version"
                        );
                        actor
                            .migrate(&snapshot.actor_state, stored, current)
                            .map_err(|reason| {
                                let reason = format!(
                                    "checkpoint state schema version {stored} cannot be \
                                     migrated to version {current}: {reason}"
                                );
                                if event_sourced {
                                    CheckpointRejection::Skip(reason)
                                } else {
                                    CheckpointRejection::Fail(JournalError::RecoveryFailed {
                                        actor_id: actor_id.clone(),
                                        reason,
                                    })
                                }
                            })?;
                    }
                    Ok(Dedup::from_snapshot(window, retention, &snapshot))
                })
                .await?;
            report.skipped_checkpoints = skipped;
            if let Some(loaded) = loaded {
                report.checkpoint_sequence = Some(loaded.sequence);
                report.skipped_checkpoints = loaded.skipped;
                dedup = loaded.value;
                from = loaded.sequence + 1;
            }
        }
        let pending = self
            .replay_after(actor, from, to, &mut report, &mut dedup, time_travel)
            .await?;
        Ok((report, dedup, pending))
    }

    /// Replays the complete messages after the checkpoint; returns the last
    /// message if it was interrupted (no `MessageProcessed`).
    async fn replay_after(
        &self,
        actor: &mut dyn DurableActor,
        from: u64,
        to: u64,
        report: &mut ActivationReport,
        dedup: &mut Dedup,
        time_travel: bool,
    ) -> JournalResult<Option<PendingMessage>> {
        let mode = if time_travel {
            Mode::TimeTravel
        } else {
            Mode::Replay
        };
        let event_sourced = actor.is_event_sourced();
        let mut expected = from;
        let mut pending: Option<PendingMessage> = None;
        {
            let mut stream = self.storage.replay_stream(&self.actor_id, from);
            while let Some(entry) = stream.try_next().await? {
                if entry.sequence > to {
                    break;
                }
                if entry.sequence != expected {
                    return Err(self.gap(report, expected, entry.sequence));
                }
                expected += 1;
                report.replayed_entries += 1;
                let at = timestamp_ms(entry.timestamp.as_ref());
                match self.unmarked(entry.sequence, entry.entry)? {
                    Some(Entry::MessageReceived(message)) => {
                        if let Some(previous) = pending.take() {
                            // Interrupted, with later messages after it: its
                            // recorded effects are all it may have. Its
                            // MessageReceived is what keeps it recognised.
                            // An interrupted command persisted no event and
                            // never runs again: no outcome.
                            let outcome = if event_sourced {
                                None
                            } else {
                                let replayed = self
                                    .replay_message(
                                        actor,
                                        &previous.message,
                                        (previous.effects, previous.timers),
                                        None,
                                        to + 1,
                                        mode,
                                    )
                                    .await?;
                                Some(replayed.1)
                            };
                            dedup.insert(
                                previous.message.message_id,
                                previous.sequence,
                                previous.at_ms,
                                outcome,
                            );
                            report.replayed_messages += 1;
                        }
                        pending = Some(PendingMessage {
                            message,
                            effects: VecDeque::new(),
                            timers: Vec::new(),
                            sequence: entry.sequence,
                            at_ms: at,
                        });
                    }
                    Some(Entry::SideEffectExecuted(effect)) => {
                        if let Some(pending) = pending.as_mut() {
                            pending.effects.push_back(effect);
                        }
                    }
                    // A command's events are journaled with its end, in one
                    // batch: one read is one that completed.
                    Some(Entry::EventRecorded(event)) if event_sourced => {
                        self.apply_event(actor, &event, entry.sequence)?;
                    }
                    Some(Entry::MessageProcessed(done)) => {
                        let ends_pending = pending
                            .as_ref()
                            .is_some_and(|p| p.message.message_id == done.message_id);
                        if let Some(p) = pending.take_if(|_| ends_pending && event_sourced) {
                            // Its events were applied as they were read.
                            let recorded = outcome_of(&done);
                            dedup.insert(p.message.message_id, entry.sequence, at, Some(recorded));
                            report.replayed_messages += 1;
                        } else if let Some(p) = pending.take_if(|_| ends_pending) {
                            self.replay_message(
                                actor,
                                &p.message,
                                (p.effects, p.timers),
                                Some(&done),
                                to + 1,
                                mode,
                            )
                            .await?;
                            let recorded = outcome_of(&done);
                            dedup.insert(p.message.message_id, entry.sequence, at, Some(recorded));
                            report.replayed_messages += 1;
                        }
                    }
                    other => {
                        let op = other.as_ref().and_then(TimerOp::from_entry);
                        if let (Some(pending), Some(op)) = (pending.as_mut(), op) {
                            pending.timers.push(op);
                        }
                    }
                }
            }
        }
        if expected <= to {
            return Err(self.missing(report, expected, to));
        }

        Ok(pending)
    }

    /// Applies a journaled event to an event-sourced actor; an event it
    /// cannot read fails recovery, naming it.
    fn apply_event(
        &self,
        actor: &mut dyn DurableActor,
        event: &EventRecorded,
        sequence: u64,
    ) -> JournalResult<()> {
        actor
            .apply_event(event, sequence)
            .map_err(|reason| JournalError::RecoveryFailed {
                actor_id: self.actor_id.clone(),
                reason: format!(
                    "event {:?} (schema version {}) at sequence {sequence}: {reason}",
                    event.event_type,
                    event.schema_version.max(1),
                ),
            })
    }

    /// The error for entries `expected..=to` the state depends on that are
    /// gone (truncated past the checkpoint recovery starts from, or with no
    /// checkpoint at all).
    fn missing(&self, report: &ActivationReport, expected: u64, to: u64) -> JournalError {
        JournalError::RecoveryFailed {
            actor_id: self.actor_id.clone(),
            reason: match report.checkpoint_sequence {
                None => format!("no usable checkpoint, and the journal up to {to} is truncated"),
                Some(checkpoint) => format!(
                    "entries {expected} to {to}, after the checkpoint at {checkpoint}, are missing"
                ),
            },
        }
    }

    /// The error for entry `found` where `expected` should be.
    fn gap(&self, report: &ActivationReport, expected: u64, found: u64) -> JournalError {
        JournalError::RecoveryFailed {
            actor_id: self.actor_id.clone(),
            reason: if report.checkpoint_sequence.is_none() && expected == 1 {
                format!("no usable checkpoint, and the journal starts at {found} (truncated)")
            } else {
                format!("gap in the journal: expected sequence {expected}, found {found}")
            },
        }
    }

    /// Replays one message; returns the next sequence and its outcome. A
    /// complete message's outcome must match the one `recorded`.
    async fn replay_message(
        &self,
        actor: &mut dyn DurableActor,
        message: &MessageReceived,
        (effects, timers): (VecDeque<SideEffectExecuted>, Vec<TimerOp>),
        recorded: Option<&MessageProcessed>,
        next_sequence: u64,
        mode: Mode,
    ) -> JournalResult<(u64, MessageOutcome, Vec<TimerOp>, Vec<EventRecorded>)> {
        let (storage, actor_id, message_id) = (
            Arc::clone(&self.storage),
            self.actor_id.clone(),
            message.message_id.clone(),
        );
        let context = match mode {
            Mode::TimeTravel => {
                ExecutionContext::time_travel(storage, actor_id, message_id, effects)
            }
            Mode::Replay | Mode::Finish => ExecutionContext::replay(
                storage,
                actor_id,
                message_id,
                effects,
                mode == Mode::Replay,
                next_sequence,
                self.config.cache_side_effects,
            )
            .with_retry(self.retry),
        };
        let mut context = context.with_recorded_timers(timers);
        let handled = crate::facet::handle_caught(actor, message, &mut context).await;
        let outcome = match context.take_failure() {
            Some((error, false)) => return Err(error),
            Some((error, true)) => MessageOutcome::Failed(error.to_string()),
            None => match handled {
                Ok(reply) => MessageOutcome::Replied(reply),
                Err(HandlerError::Failed(reason)) => MessageOutcome::Failed(reason),
                Err(HandlerError::Journal(e)) => return Err(e),
            },
        };
        // Fewer effects than the journal recorded is a divergence too, also
        // for an interrupted message (its recorded effects did happen).
        context.finish_replay()?;
        // Effects that ran again (not journaled: `cache_side_effects` off)
        // may end differently than the first time: no outcome to compare.
        let all_recorded = context.side_effects().iter().all(|e| e.replayed);
        if let Some(done) = recorded.filter(|_| all_recorded) {
            // A dropped reply was a success the journal could not hold.
            let was_error = done.result == ProcessingResult::Error as i32 && !done.reply_dropped;
            let is_error = matches!(outcome, MessageOutcome::Failed(_));
            if was_error != is_error {
                let describe = |o: &MessageOutcome| match o {
                    MessageOutcome::Replied(_) => "outcome success".to_owned(),
                    MessageOutcome::Failed(reason) => format!("outcome error ({reason})"),
                };
                return Err(JournalError::ReplayDivergence {
                    actor_id: self.actor_id.clone(),
                    message_id: message.message_id.clone(),
                    position: context.effects_asked(),
                    recorded: describe(&outcome_of(done)),
                    requested: describe(&outcome),
                });
            }
        }
        let outcome = match recorded {
            Some(done) if done.reply_dropped => outcome_of(done),
            _ => outcome,
        };
        Ok((
            context.next_sequence().max(next_sequence),
            outcome,
            context.timer_ops().to_vec(),
            context.events().to_vec(),
        ))
    }

    /// The `MessageProcessed` entry at `sequence` for `outcome`, within the
    /// storage's entry limit: a reply too large is dropped (the message
    /// fails, `reply_dropped`), an error text too long is cut. The reason
    /// when the message failed that way.
    fn processed_entry(
        &self,
        sequence: u64,
        message_id: &str,
        outcome: &MessageOutcome,
    ) -> (JournalEntry, Option<String>) {
        let limits = self.storage.limits();
        let entry = |processed: MessageProcessed| {
            JournalEntry::new(
                self.actor_id.clone(),
                sequence,
                Entry::MessageProcessed(processed),
            )
            .with_correlation_id(message_id)
        };
        let full = entry(processed_message(message_id, outcome.clone()));
        // The usual reply is far below the limit: no second encoding pass
        // (the storage checks the entry again anyway).
        let payload = match outcome {
            MessageOutcome::Replied(reply) => reply.len(),
            MessageOutcome::Failed(text) => text.len(),
        };
        let most = 2 * message_id.len() + self.actor_id.len() + payload + ENTRY_OVERHEAD;
        if most <= limits.max_entry_bytes {
            return (full, None);
        }
        let Err(why) = crate::validate::validate_entry(&full, &limits) else {
            return (full, None);
        };
        let (reason, dropped) = match outcome {
            MessageOutcome::Replied(reply) => (
                format!(
                    "the reply of {} bytes cannot be journaled ({why}); the message failed",
                    reply.len()
                ),
                true,
            ),
            // The failure stays a failure; its text is cut.
            MessageOutcome::Failed(text) => (cut_text(text), false),
        };
        let cut = MessageProcessed {
            message_id: message_id.to_owned(),
            result: ProcessingResult::Error.into(),
            error_message: reason.clone(),
            response_payload: Vec::new(),
            reply_dropped: dropped,
        };
        (entry(cut), dropped.then_some(reason))
    }

    /// The `EventRecorded` entries of `events`, from `first` on.
    fn event_entries(
        &self,
        first: u64,
        message_id: &str,
        events: &[EventRecorded],
    ) -> Vec<JournalEntry> {
        events
            .iter()
            .zip(first..)
            .map(|(event, sequence)| {
                JournalEntry::new(
                    self.actor_id.clone(),
                    sequence,
                    Entry::EventRecorded(event.clone()),
                )
                .with_correlation_id(message_id)
            })
            .collect()
    }

    /// Saves a checkpoint of the actor's state after the last entry.
    async fn checkpoint(&mut self, actor: &dyn DurableActor) -> JournalResult<()> {
        let actor_id = self.actor_id.clone();
        let active = self.active()?;
        let sequence = active.next_sequence - 1;
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
        let policy = self.checkpoints.policy();
        // The actor type, written into every checkpoint (cloned: the
        // window is borrowed mutably below).
        let owner = self.owner.clone();
        let saved = if policy.compression == CompressionType::Zstd {
            let level = policy.level;
            // The runs not compressed yet, once each (the whole window
            // after an activation: then off the runtime).
            let (at, runs) = self.active()?.dedup.unsealed(level);
            let frames = if runs.len() >= crate::checkpoint::OFF_RUNTIME_BYTES {
                tokio::task::spawn_blocking(move || compress_runs(&runs, level))
                    .await
                    .map_err(|e| JournalError::storage("checkpoint", e))?
            } else {
                compress_runs(&runs, level)
            }
            .map_err(|e| JournalError::storage("checkpoint", e))?;
            let dedup = &mut self.active()?.dedup;
            dedup.seal(at, frames);
            let pieces = snapshot_pieces(&actor_state, &owner, dedup);
            self.checkpoints
                .save_pieces(&actor_id, sequence, pieces)
                .await
        } else {
            let state = encode_snapshot(&actor_state, &owner, &self.active()?.dedup);
            self.checkpoints.save(&actor_id, sequence, state).await
        };
        match saved {
            Ok(saved) => {
                let active = self.active()?;
                active.checkpoint_sequence = sequence;
                active.last_checkpoint = Instant::now();
                if let Some(to) = saved.truncated_to {
                    active.dedup.truncated(to);
                }
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

    /// What a redelivered message gave the first time, if it was processed
    /// and is still retained.
    async fn already_processed(
        &mut self,
        message_id: &str,
    ) -> JournalResult<Option<Option<MessageOutcome>>> {
        let actor_id = self.actor_id.clone();
        let unscanned = self.active()?.dedup.unscanned_through;
        if unscanned > 0 && self.active()?.dedup.get(message_id).is_none() {
            let scanned = self.scan_ids(unscanned).await?;
            self.active()?.dedup.add_scanned(scanned);
        }
        let active = self.active()?;
        let Some(record) = active.dedup.get(message_id) else {
            return Ok(None);
        };
        if let Some(outcome) = active.dedup.outcome(record) {
            return Ok(Some(Some(outcome)));
        }
        if record.sequence == 0 {
            return Ok(Some(None));
        }
        let sequence = record.sequence;
        let stored = self
            .storage
            .replay_range(&actor_id, sequence, sequence, 1)
            .await?;
        match stored.into_iter().next().and_then(|e| e.entry) {
            Some(Entry::MessageProcessed(done)) if done.message_id == message_id => {
                Ok(Some(Some(outcome_of(&done))))
            }
            // An interrupted message that later ones followed: recognised,
            // its outcome was never recorded.
            Some(Entry::MessageReceived(received)) if received.message_id == message_id => {
                Ok(Some(None))
            }
            // Truncated by someone else, outside the window: retention ended.
            _ => {
                self.active()?.dedup.forget(message_id);
                Ok(None)
            }
        }
    }

    /// The ids of the messages in the journal up to `through`, with the
    /// sequence of their `MessageProcessed` (or `MessageReceived`, for an
    /// interrupted one), in journal order: read once, at the first message
    /// after an activation whose id the checkpoint did not list.
    async fn scan_ids(&self, through: u64) -> JournalResult<Vec<(String, u64)>> {
        let mut ids = Vec::new();
        let mut stream = self.storage.replay_stream(&self.actor_id, 1);
        while let Some(entry) = stream.try_next().await? {
            if entry.sequence > through {
                break;
            }
            match entry.entry {
                Some(Entry::MessageReceived(m)) => ids.push((m.message_id, entry.sequence)),
                Some(Entry::MessageProcessed(done)) => {
                    ids.push((done.message_id, entry.sequence));
                }
                _ => {}
            }
        }
        Ok(ids)
    }

    /// Whether a checkpoint is due now.
    fn checkpoint_due(&mut self) -> JournalResult<bool> {
        let policy = self.checkpoints.policy().clone();
        let active = self.active()?;
        let entries = (active.next_sequence - 1).saturating_sub(active.checkpoint_sequence);
        Ok(policy.is_due(entries, active.last_checkpoint.elapsed()))
    }
}

/// How a message is replayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// A complete message during recovery.
    Replay,
    /// The interrupted last message: replayed, then finished live.
    Finish,
    /// Time travel: recorded results only, nothing runs.
    TimeTravel,
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
/// journaled and no side effect runs, whatever the configuration. A message
/// that asks for an effect whose result the journal does not hold (written
/// with `cache_side_effects` off) fails the rebuild with
/// [`JournalError::RecoveryFailed`] instead of calling the outside world.
/// With `from_checkpoint` false every entry from the first is replayed,
/// which needs an untruncated journal.
///
/// `sequence` 0 leaves `actor` as given; one above the actor's highest
/// sequence is [`JournalError::RecoveryFailed`].
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
/// let storage = journal_memory::MemoryJournalStorage::new();
/// let mut counter = Actor::new("counter-1", Counter(0));
/// counter.facets().attach(Box::new(DurabilityFacet::new(storage.clone(), DurabilityConfig::default())))?;
/// for id in ["m-1", "m-2", "m-3"] {
///     counter.send(MessageReceived { message_id: id.into(), ..Default::default() }).await?;
/// }
/// // Each message is two entries: after entry 4, two messages were counted.
/// let mut then = Counter(0);
/// let rebuilt = rebuild_at(storage, &DurabilityConfig::default(), "counter-1", &mut then, 4, true).await?;
/// assert_eq!((then.0, rebuilt.replayed_messages), (2, 2));
/// # Ok(())
/// # }
/// ```
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
    let (report, _, pending) = facet
        .rebuild(actor, sequence, from_checkpoint, true)
        .await?;
    Ok(Rebuilt {
        sequence,
        checkpoint_sequence: report.checkpoint_sequence,
        skipped_checkpoints: report.skipped_checkpoints,
        replayed_entries: report.replayed_entries,
        replayed_messages: report.replayed_messages,
        in_flight: pending.map(|p| p.message),
        elapsed: started.elapsed(),
    })
}

/// The `MessageProcessed` record of `outcome`.
fn processed_message(message_id: &str, outcome: MessageOutcome) -> MessageProcessed {
    let (result, error, reply) = match outcome {
        MessageOutcome::Replied(reply) => (ProcessingResult::Success, String::new(), reply),
        MessageOutcome::Failed(reason) => (ProcessingResult::Error, reason, Vec::new()),
    };
    MessageProcessed {
        message_id: message_id.to_owned(),
        result: result.into(),
        error_message: error,
        response_payload: reply,
        reply_dropped: false,
    }
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

    #[tracing::instrument(level = "debug", skip_all, fields(backend = self.storage.backend_name(), actor_id = actor_id))]
    async fn on_activate(
        &mut self,
        actor_id: &str,
        actor: &mut dyn DurableActor,
    ) -> JournalResult<()> {
        actor_id.clone_into(&mut self.actor_id);
        self.active = None;
        let report = if self.config.replay_on_activation {
            let started = Instant::now();
            let recovered = self.recover(actor).await;
            crate::metrics::recovery(
                self.storage.backend_name(),
                started,
                recovered.as_ref().map_or(0, |r| r.replayed_entries),
                &recovered,
            );
            recovered?
        } else {
            let highest = self.storage.highest_sequence(actor_id).await?;
            self.active = Some(Active {
                next_sequence: highest + 1,
                checkpoint_sequence: highest,
                last_checkpoint: Instant::now(),
                dedup: self.new_dedup(),
            });
            ActivationReport {
                highest_sequence: highest,
                ..ActivationReport::default()
            }
        };
        tracing::info!(
            actor_id,
            backend = self.storage.backend_name(),
            checkpoint = report.checkpoint_sequence,
            skipped_checkpoints = report.skipped_checkpoints.len(),
            replayed_entries = report.replayed_entries,
            replayed_messages = report.replayed_messages,
            completed_interrupted_message = report.completed_interrupted_message,
            highest_sequence = report.highest_sequence,
            elapsed_ms = report.elapsed.as_secs_f64() * 1e3,
            "actor recovered"
        );
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
        if message.message_id.is_empty() {
            return Err(JournalError::InvalidEntry(
                "a message needs a non-empty message_id: exactly-once delivery keys on it".into(),
            ));
        }
        if let Some(outcome) = self.already_processed(&message.message_id).await? {
            self.observer.update(|s| s.duplicates += 1);
            return Ok(Admission::AlreadyProcessed(outcome));
        }
        // MessageReceived is journaled before handling (with batched
        // writes, before the first call to the outside world or with the
        // message's end). A message too large to journal is refused before
        // any I/O, and so is one whose end could not be journaled even cut
        // (an id almost as large as an entry may be).
        let sequence = self.active()?.next_sequence;
        // The id goes twice into MessageProcessed (field and correlation
        // id); the rest is at most the cut reason, the actor id and a few
        // fixed fields.
        let longest_end = 2 * message.message_id.len()
            + self.actor_id.len()
            + LONGEST_CUT_REASON
            + ENTRY_OVERHEAD;
        let limit = self.storage.limits().max_entry_bytes;
        if longest_end > limit {
            return Err(JournalError::InvalidEntry(format!(
                "message id of {} bytes: its MessageProcessed could reach {longest_end} bytes, \
                 the limit is {limit}",
                message.message_id.len()
            )));
        }
        let mut context = ExecutionContext::live(
            Arc::clone(&self.storage),
            self.actor_id.clone(),
            message.message_id.clone(),
            sequence,
            self.config.cache_side_effects,
        )
        .with_retry(self.retry);
        if self.config.batch_journal_writes {
            context = context.with_batched_writes();
        }
        let mut received = message.clone();
        if sequence == 1 && !self.owner.is_empty() {
            received
                .metadata
                .insert(OWNER_METADATA.to_owned(), self.owner.clone());
        }
        context
            .write(
                JournalEntry::new(
                    self.actor_id.clone(),
                    sequence,
                    Entry::MessageReceived(received),
                )
                .with_correlation_id(&message.message_id),
            )
            .await?;
        Ok(Admission::Process(Some(Box::new(context))))
    }

    async fn after_message(
        &mut self,
        _actor_id: &str,
        message: &MessageReceived,
        outcome: &MessageOutcome,
        context: &ExecutionContext,
        actor: &dyn DurableActor,
    ) -> JournalResult<()> {
        // Whatever the host does, a message whose journaling failed is not
        // completed (contract rule 21).
        if let Some(MessageFailure::Journal(e)) = context.failure() {
            return Err(crate::context::replicate(e));
        }
        let mut sequence = context.next_sequence().max(self.active()?.next_sequence);
        // A command's events, if its handler succeeded, then its end: one
        // atomic batch (contract rule 25).
        let events = match outcome {
            MessageOutcome::Replied(_) => {
                self.event_entries(sequence, &message.message_id, context.events())
            }
            MessageOutcome::Failed(_) => Vec::new(),
        };
        sequence += events.len() as u64;
        let (done, dropped) = self.processed_entry(sequence, &message.message_id, outcome);
        let recorded = match &done.entry {
            Some(Entry::MessageProcessed(p)) => outcome_of(p),
            _ => outcome.clone(),
        };
        // What waits in the context's batch (with batched writes).
        let mut batch = context.take_pending();
        // Its timers go into the index before its end is journaled, and
        // after what scheduled or cancelled them is (with batched writes,
        // the index is a call to the outside world, before which waiting
        // entries are written): a crash in between leaves a message that
        // recovery completes, indexing them again. A message that failed
        // drops them.
        if matches!(recorded, MessageOutcome::Replied(_)) && !context.timer_ops().is_empty() {
            if !batch.is_empty() {
                self.append_end(&std::mem::take(&mut batch)).await?;
            }
            self.index_timers(context.timer_ops()).await?;
        }
        // The message's end, with whatever still waits.
        batch.extend(events);
        batch.push(done);
        self.append_end(&batch).await?;
        let active = self.active()?;
        active.next_sequence = sequence + 1;
        active.dedup.insert(
            message.message_id.clone(),
            sequence,
            now_ms(),
            Some(recorded),
        );
        self.observer.update(|s| s.messages += 1);
        if self.checkpoint_due()? {
            self.checkpoint(actor).await?;
        }
        match dropped {
            // Journaled as failed: the message fails alone.
            Some(reason) => Err(JournalError::InvalidEntry(reason)),
            None => Ok(()),
        }
    }

    async fn on_checkpoint(
        &mut self,
        _actor_id: &str,
        actor: &dyn DurableActor,
    ) -> JournalResult<()> {
        let unsaved = self
            .active
            .as_ref()
            .is_some_and(|a| a.next_sequence - 1 > a.checkpoint_sequence);
        if unsaved {
            self.checkpoint(actor).await?;
        }
        Ok(())
    }

    async fn on_idle(&mut self, _actor_id: &str, actor: &dyn DurableActor) -> JournalResult<()> {
        if self.active.is_some() && self.checkpoint_due()? {
            self.checkpoint(actor).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(dedup: &Dedup) -> FacetSnapshot {
        FacetSnapshot::decode(encode_snapshot(b"state", "", dedup).as_slice()).expect("a snapshot")
    }

    fn ids(snapshot: &FacetSnapshot) -> Vec<&str> {
        snapshot
            .processed
            .iter()
            .map(|p| p.message_id.as_str())
            .collect()
    }

    fn replied(n: u64) -> MessageOutcome {
        MessageOutcome::Replied(n.to_be_bytes().to_vec())
    }

    #[test]
    fn a_checkpoint_encodes_as_the_snapshot_message_does() {
        let mut dedup = Dedup::new(3, None);
        dedup.insert("old".into(), 0, 0, None);
        for n in 1..=6u64 {
            let outcome = if n % 2 == 0 {
                replied(n)
            } else {
                MessageOutcome::Failed(format!("no {n}"))
            };
            let at = 1_000 + i64::try_from(n).expect("small");
            dedup.insert(format!("m{n}"), 10 * n, at, Some(outcome));
        }
        let ours = encode_snapshot(b"state", "", &dedup);
        let snapshot = FacetSnapshot::decode(ours.as_slice()).expect("decodes");
        assert_eq!(ours, snapshot.encode_to_vec(), "byte for byte prost's");
        // With an owner, too.
        let owned = encode_snapshot(b"state", "cart", &dedup);
        let decoded = FacetSnapshot::decode(owned.as_slice()).expect("decodes");
        assert_eq!(owned, decoded.encode_to_vec(), "byte for byte prost's");
        assert_eq!(decoded.owner, "cart");
        // The window: the 3 newest, with their outcomes (an id without a
        // sequence outside it has nothing to be read back by, and goes).
        assert_eq!(ids(&snapshot), ["m4", "m5", "m6"]);
        assert_eq!(snapshot.unlisted_through, 30);
        assert_eq!(snapshot.actor_state, b"state");
        let m5 = &snapshot.processed[1];
        assert_eq!((m5.processed_sequence, m5.processed_at_ms), (50, 1_005));
        let outcome = m5.outcome.as_ref().map(outcome_of);
        assert_eq!(outcome, Some(MessageOutcome::Failed("no 5".into())));
        let of = |id: &str| dedup.get(id).and_then(|r| dedup.outcome(r));
        assert_eq!(of("m6"), Some(replied(6)));
        assert_eq!(of("m5"), Some(MessageOutcome::Failed("no 5".into())));
        assert_eq!(of("m2"), None, "outside the window");
    }

    /// The state a checkpoint made of `pieces` decodes to.
    fn decoded(policy: &CheckpointPolicy, pieces: &[StatePiece]) -> Vec<u8> {
        let checkpoint = policy.encode_pieces("a", 1, pieces).expect("encodes");
        policy.decode(&checkpoint).expect("decodes")
    }

    #[test]
    fn a_checkpoint_in_pieces_stores_what_one_in_one_piece_does() {
        let policy = CheckpointPolicy::default();
        let mut dedup = Dedup::new(300, None);
        let (mut framed, mut sealed_seen) = (0, 0);
        // A little generator, so that runs fall anywhere in a record.
        let mut seed = 7u64;
        let mut next = |below: u64| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) % below
        };
        // Ids and replies as random as ULIDs and serialized replies are.
        let mut ids = Vec::new();
        for n in 1..=2_000u64 {
            let id: String = (0..26)
                .map(|_| char::from(b"0123456789ABCDEFGHJKMNPQRSTVWXYZ"[next(32) as usize]))
                .collect();
            ids.push(id.clone());
            let reply = (0..next(24)).map(|_| b'0' + next(10) as u8).collect();
            let at = 1_700_000_000_000 + i64::try_from(n).expect("small");
            dedup.insert(id, n, at, Some(MessageOutcome::Replied(reply)));
            match next(100) {
                // Processed again: leaves the middle, the list is relisted.
                0 => {
                    let again = ids[usize::try_from(next(n)).expect("small")].clone();
                    dedup.insert(again, n, at, None);
                }
                1..=2 => dedup.truncated(n.saturating_sub(200)),
                _ => {}
            }
            if n % 33 == 0 {
                // Sealed first, as a checkpoint does.
                let (at, runs) = dedup.unsealed(policy.level);
                let compressed = compress_runs(&runs, policy.level).expect("compresses");
                dedup.seal(at, compressed.clone());
                // The same frames again are stale: ignored.
                let sealed = dedup.sealed.len();
                if !compressed.is_empty() {
                    dedup.seal(at, compressed);
                    assert_eq!(dedup.sealed.len(), sealed, "a stale seal is ignored");
                }
                let state = vec![b's'; usize::try_from(next(50)).expect("small")];
                let pieces = snapshot_pieces(&state, "cart", &dedup);
                framed += pieces
                    .iter()
                    .filter(|p| matches!(p, StatePiece::Framed { .. }))
                    .count();
                sealed_seen = sealed_seen.max(dedup.sealed.len());
                let whole = encode_snapshot(&state, "cart", &dedup);
                assert_eq!(decoded(&policy, &pieces), whole, "after message {n}");
                let once = policy.encode("a", 1, &whole).expect("encodes");
                let split = policy.encode_pieces("a", 1, &pieces).expect("encodes");
                assert!(
                    split.state_data.len() <= once.state_data.len() * 5 / 4 + 64,
                    "{} bytes in pieces, {} in one",
                    split.state_data.len(),
                    once.state_data.len()
                );
            }
        }
        assert!(framed > 100, "frames reused: {framed}");
        assert!(sealed_seen >= 3, "sealed runs at once: {sealed_seen}");
    }

    #[test]
    fn a_checkpoint_in_pieces_of_nothing_decodes_to_nothing() {
        let policy = CheckpointPolicy::default();
        let pieces = snapshot_pieces(&[], "", &Dedup::new(5, None));
        assert_eq!(decoded(&policy, &pieces), Vec::<u8>::new());
    }

    #[test]
    fn the_list_follows_messages_leaving_from_anywhere() {
        let mut dedup = Dedup::new(4, None);
        for n in 1..=6u64 {
            dedup.insert(format!("m{n}"), n, 0, Some(replied(n)));
        }
        assert_eq!(ids(&listed(&dedup)), ["m3", "m4", "m5", "m6"]);
        // From the middle of the window.
        dedup.forget("m4");
        let snapshot = listed(&dedup);
        assert_eq!(ids(&snapshot), ["m3", "m5", "m6"]);
        let of = |dedup: &Dedup, id: &str| dedup.get(id).and_then(|r| dedup.outcome(r));
        assert_eq!(of(&dedup, "m5"), Some(replied(5)));
        // Processed again: newest now, listed last, with its new outcome.
        dedup.insert("m3".into(), 9, 0, Some(replied(33)));
        assert_eq!(ids(&listed(&dedup)), ["m5", "m6", "m3"]);
        assert_eq!(of(&dedup, "m3"), Some(replied(33)));
        for n in 7..=9u64 {
            dedup.insert(format!("m{n}"), 9 + n, 0, Some(replied(n)));
        }
        let snapshot = listed(&dedup);
        assert_eq!(ids(&snapshot), ["m3", "m7", "m8", "m9"]);
        assert_eq!(of(&dedup, "m9"), Some(replied(9)));
        assert_eq!(of(&dedup, "m3"), Some(replied(33)));
        let outcomes: Vec<_> = snapshot
            .processed
            .iter()
            .map(|p| p.outcome.as_ref().map(outcome_of))
            .collect();
        assert_eq!(outcomes, [33, 7, 8, 9].map(|n| Some(replied(n))));
    }

    #[test]
    fn records_leaving_the_older_part_keep_the_unlisted_bound_safe() {
        let mut dedup = Dedup::new(2, None);
        for n in 1..=5u64 {
            dedup.insert(format!("m{n}"), n, 0, Some(replied(n)));
        }
        assert_eq!(listed(&dedup).unlisted_through, 3);
        // Truncated through 3: the older records go, and so does the bound.
        dedup.truncated(3);
        let snapshot = listed(&dedup);
        assert_eq!(snapshot.unlisted_through, 0);
        assert_eq!(ids(&snapshot), ["m4", "m5"]);
        // Processed again: m4 leaves the window and comes back newest.
        dedup.insert("m4".into(), 6, 0, Some(replied(4)));
        let snapshot = listed(&dedup);
        assert_eq!(ids(&snapshot), ["m5", "m4"]);
        assert_eq!(snapshot.unlisted_through, 0);
        // One leaving the older part: the bound still covers the others.
        let mut dedup = Dedup::new(2, None);
        for n in 1..=5u64 {
            dedup.insert(format!("m{n}"), n, 0, Some(replied(n)));
        }
        dedup.insert("m3".into(), 6, 0, Some(replied(3)));
        let snapshot = listed(&dedup);
        assert_eq!(ids(&snapshot), ["m5", "m3"]);
        assert_eq!(snapshot.unlisted_through, 4);
    }

    #[test]
    fn ids_without_a_sequence_are_listed_outside_the_window_too() {
        let mut dedup = Dedup::new(1, None);
        dedup.insert("m1".into(), 1, 0, Some(replied(1)));
        // As an older build's checkpoint recorded it: no sequence.
        dedup.add_scanned(Vec::new());
        dedup.insert("bare".into(), 0, 0, None);
        dedup.insert("m2".into(), 2, 0, Some(replied(2)));
        let snapshot = listed(&dedup);
        assert_eq!(ids(&snapshot), ["bare", "m2"]);
        assert_eq!(snapshot.unlisted_through, 1);
    }
}
