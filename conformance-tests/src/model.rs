//! Property tests: the backend against a small reference model of the
//! contract, over random sequences of operations.
//!
//! Case counts come from `PROPTEST_CASES` when set (CI sets it), otherwise
//! from the defaults here. Failing cases are shrunk and printed; nothing is
//! written to disk.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;

use futures::TryStreamExt;
use journal_core::storage::paged_replay;
use journal_core::{Checkpoint, JournalEntry, JournalError, JournalResult, JournalStorage};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use crate::fixture::{fresh_actor, pattern, rich_entry};

/// One operation of a generated run. Numbers are raw: they are mapped onto
/// the model's state when the operation runs (so shrinking keeps them
/// meaningful).
#[derive(Debug, Clone)]
pub enum Op {
    /// Append at `highest + 1 + offset`; `retry` re-sends the stored entry
    /// when there is one at that sequence.
    Append {
        /// Which of the run's actors.
        actor: u8,
        /// Distance from the next sequence.
        offset: i8,
        /// Re-send the stored entry (an idempotent retry).
        retry: bool,
    },
    /// A batch of `len` entries starting at `highest + 1 + offset`.
    Batch {
        /// Which of the run's actors.
        actor: u8,
        /// Distance of the first entry from the next sequence.
        offset: i8,
        /// Entries in the batch.
        len: u8,
        /// Re-send stored entries where there are some.
        retry: bool,
    },
    /// Save a checkpoint at `at % (highest + 2)`.
    Checkpoint {
        /// Which of the run's actors.
        actor: u8,
        /// Raw sequence.
        at: u8,
    },
    /// Truncate to `to % (highest + 3)`.
    Truncate {
        /// Which of the run's actors.
        actor: u8,
        /// Raw sequence.
        to: u8,
    },
    /// Remove checkpoints below `before % (highest + 3)`.
    Prune {
        /// Which of the run's actors.
        actor: u8,
        /// Raw sequence.
        before: u8,
    },
    /// Delete the actor.
    Delete {
        /// Which of the run's actors.
        actor: u8,
    },
    /// `replay_range` with raw bounds; `max % 6 == 5` means no limit.
    Range {
        /// Which of the run's actors.
        actor: u8,
        /// Raw lower bound.
        from: u8,
        /// Raw upper bound.
        to: u8,
        /// Raw count limit.
        max: u8,
    },
    /// Streaming replay from a raw sequence.
    Stream {
        /// Which of the run's actors.
        actor: u8,
        /// Raw lower bound.
        from: u8,
    },
    /// Highest sequence, latest checkpoint, checkpoint list and summary.
    Read {
        /// Which of the run's actors.
        actor: u8,
    },
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let actor = 0u8..3;
    prop_oneof![
        8 => (actor.clone(), -2i8..=1, any::<bool>())
            .prop_map(|(actor, offset, retry)| Op::Append { actor, offset, retry }),
        4 => (actor.clone(), -3i8..=1, 0u8..5, any::<bool>())
            .prop_map(|(actor, offset, len, retry)| Op::Batch { actor, offset, len, retry }),
        2 => (actor.clone(), any::<u8>()).prop_map(|(actor, at)| Op::Checkpoint { actor, at }),
        2 => (actor.clone(), any::<u8>()).prop_map(|(actor, to)| Op::Truncate { actor, to }),
        1 => (actor.clone(), any::<u8>()).prop_map(|(actor, before)| Op::Prune { actor, before }),
        1 => actor.clone().prop_map(|actor| Op::Delete { actor }),
        3 => (actor.clone(), any::<u8>(), any::<u8>(), any::<u8>())
            .prop_map(|(actor, from, to, max)| Op::Range { actor, from, to, max }),
        1 => (actor.clone(), any::<u8>()).prop_map(|(actor, from)| Op::Stream { actor, from }),
        2 => actor.prop_map(|actor| Op::Read { actor }),
    ]
}

/// What a call returned, reduced to what the contract fixes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome<T> {
    Ok(T),
    Conflict { expected: u64, actual: u64 },
    InvalidEntry,
    InvalidCheckpoint,
}

impl<T> Outcome<T> {
    fn map<U>(self, f: impl FnOnce(T) -> U) -> Outcome<U> {
        match self {
            Outcome::Ok(v) => Outcome::Ok(f(v)),
            Outcome::Conflict { expected, actual } => Outcome::Conflict { expected, actual },
            Outcome::InvalidEntry => Outcome::InvalidEntry,
            Outcome::InvalidCheckpoint => Outcome::InvalidCheckpoint,
        }
    }
}

/// `highest + 1 + offset`, or 0 below zero (an invalid sequence on purpose).
fn next_plus(highest: u64, offset: i8) -> u64 {
    (highest + 1)
        .checked_add_signed(i64::from(offset))
        .unwrap_or(0)
}

/// The id and model state of the run's actor number `actor`.
fn slot<'m>(
    ids: &'m [String; 3],
    model: &'m mut BTreeMap<usize, ModelActor>,
    actor: u8,
) -> (&'m str, &'m mut ModelActor) {
    let i = usize::from(actor);
    (&ids[i], model.entry(i).or_default())
}

fn outcome<T>(result: JournalResult<T>) -> Result<Outcome<T>, String> {
    match result {
        Ok(v) => Ok(Outcome::Ok(v)),
        Err(JournalError::SequenceConflict {
            expected, actual, ..
        }) => Ok(Outcome::Conflict { expected, actual }),
        Err(JournalError::InvalidEntry(_)) => Ok(Outcome::InvalidEntry),
        Err(JournalError::InvalidCheckpoint(_)) => Ok(Outcome::InvalidCheckpoint),
        Err(other) => Err(format!("unexpected error: {other}")),
    }
}

/// One actor in the reference model.
#[derive(Debug, Default, Clone)]
struct ModelActor {
    highest: u64,
    entries: BTreeMap<u64, JournalEntry>,
    checkpoints: BTreeMap<u64, Checkpoint>,
}

impl ModelActor {
    fn append(&mut self, batch: &[JournalEntry]) -> Outcome<()> {
        let Some(first) = batch.first() else {
            return Outcome::Ok(());
        };
        if batch.iter().any(|e| e.sequence == 0) {
            return Outcome::InvalidEntry;
        }
        let conflict = Outcome::Conflict {
            expected: self.highest + 1,
            actual: first.sequence,
        };
        if first.sequence == self.highest + 1 {
            for e in batch {
                self.entries.insert(e.sequence, e.clone());
            }
            self.highest += batch.len() as u64;
            Outcome::Ok(())
        } else if first.sequence <= self.highest
            && batch
                .iter()
                .all(|e| self.entries.get(&e.sequence).is_some_and(|s| s.id == e.id))
        {
            Outcome::Ok(())
        } else {
            conflict
        }
    }

    fn range(&self, from: u64, to: u64, max: usize) -> Vec<JournalEntry> {
        if from > to {
            return Vec::new();
        }
        self.entries
            .range(from..=to)
            .take(max)
            .map(|(_, e)| e.clone())
            .collect()
    }
}

fn ensure<T: PartialEq + Debug>(
    what: &str,
    ops_done: usize,
    got: &T,
    want: &T,
) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!(
            "after {ops_done} ops, {what}: backend gave {got:?}, model says {want:?}"
        ))
    }
}

fn cases(default: u32) -> Config {
    let mut config = Config {
        failure_persistence: None,
        max_shrink_iters: 512,
        ..Config::default()
    };
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = default;
    }
    config
}

/// Runs a property whose check is async, on the current multi-threaded
/// runtime, and panics with the shrunk failing input.
pub(crate) fn run_property<S, V, F, Fut>(default_cases: u32, strategy: S, check: F)
where
    S: Strategy<Value = V>,
    V: Debug,
    F: Fn(V) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let handle = tokio::runtime::Handle::current();
    tokio::task::block_in_place(|| {
        let mut runner = TestRunner::new(cases(default_cases));
        let result = runner.run(&strategy, |value| {
            handle.block_on(check(value)).map_err(TestCaseError::fail)
        });
        if let Err(failure) = result {
            panic!("{failure}");
        }
    });
}

/// Random runs of appends (valid, conflicting, retried), batches,
/// checkpoints, truncations, pruning, deletes and reads over three actors:
/// every result and the final state equal the reference model's.
#[allow(clippy::unused_async)] // the suite's harness calls every test as an async fn
pub async fn prop_matches_reference_model(storage: Arc<dyn JournalStorage>) {
    run_property(48, vec(op_strategy(), 1..40), |ops| {
        let storage = Arc::clone(&storage);
        async move { check_model(&*storage, &ops).await }
    });
}

#[allow(clippy::too_many_lines)]
async fn check_model(storage: &dyn JournalStorage, ops: &[Op]) -> Result<(), String> {
    let prefix = fresh_actor("prop");
    let ids = [
        format!("{prefix}/plain"),
        format!("{prefix}/it's \"quoted\" {{tag}}"),
        format!("}}{prefix}:%😀"),
    ];
    let mut model: BTreeMap<usize, ModelActor> = BTreeMap::new();
    let mut next_payload = 0u64;
    for (done, op) in ops.iter().enumerate() {
        match *op {
            Op::Append {
                actor,
                offset,
                retry,
            } => {
                let (id, m) = slot(&ids, &mut model, actor);
                let seq = next_plus(m.highest, offset);
                let e = match m.entries.get(&seq) {
                    Some(stored) if retry => stored.clone(),
                    _ => {
                        next_payload += 1;
                        rich_entry(id, seq).with_correlation_id(next_payload.to_string())
                    }
                };
                let got = outcome(storage.append_entry(&e).await)?;
                let want = m.append(std::slice::from_ref(&e)).map(|()| seq);
                ensure(&format!("{op:?}"), done, &got, &want)?;
            }
            Op::Batch {
                actor,
                offset,
                len,
                retry,
            } => {
                let (id, m) = slot(&ids, &mut model, actor);
                let start = next_plus(m.highest, offset);
                let batch: Vec<_> = (start..start + u64::from(len))
                    .map(|seq| match m.entries.get(&seq) {
                        Some(stored) if retry => stored.clone(),
                        _ => rich_entry(id, seq),
                    })
                    .collect();
                let got = outcome(storage.append_batch(&batch).await)?;
                ensure(&format!("{op:?}"), done, &got, &m.append(&batch))?;
            }
            Op::Checkpoint { actor, at } => {
                let (id, m) = slot(&ids, &mut model, actor);
                let seq = u64::from(at) % (m.highest + 2);
                let mut c = Checkpoint::new(id, seq, pattern(usize::from(at) * 3, at));
                c.metadata.insert("op".into(), done.to_string());
                let got = outcome(storage.save_checkpoint(&c).await)?;
                let want = if seq == 0 || seq > m.highest {
                    Outcome::InvalidCheckpoint
                } else {
                    m.checkpoints.insert(seq, c);
                    Outcome::Ok(())
                };
                ensure(&format!("{op:?}"), done, &got, &want)?;
            }
            Op::Truncate { actor, to } => {
                let (id, m) = slot(&ids, &mut model, actor);
                let to = u64::from(to) % (m.highest + 3);
                storage
                    .truncate_to(id, to)
                    .await
                    .map_err(|e| e.to_string())?;
                m.entries.retain(|&s, _| s > to);
            }
            Op::Prune { actor, before } => {
                let (id, m) = slot(&ids, &mut model, actor);
                let before = u64::from(before) % (m.highest + 3);
                let got = storage
                    .delete_checkpoints_before(id, before)
                    .await
                    .map_err(|e| e.to_string())?;
                let kept = m.checkpoints.split_off(&before);
                let want = m.checkpoints.len() as u64;
                m.checkpoints = kept;
                ensure(&format!("{op:?}"), done, &got, &want)?;
            }
            Op::Delete { actor } => {
                storage
                    .delete_actor(&ids[usize::from(actor)])
                    .await
                    .map_err(|e| e.to_string())?;
                model.remove(&usize::from(actor));
            }
            Op::Range {
                actor,
                from,
                to,
                max,
            } => {
                let (id, m) = slot(&ids, &mut model, actor);
                let (from, to) = (
                    u64::from(from) % (m.highest + 3),
                    u64::from(to) % (m.highest + 3),
                );
                let max = if max % 6 == 5 {
                    usize::MAX
                } else {
                    usize::from(max % 6)
                };
                let got = storage
                    .replay_range(id, from, to, max)
                    .await
                    .map_err(|e| e.to_string())?;
                ensure(
                    &format!("{op:?}"),
                    done,
                    &got,
                    &m.range(from.max(1), to, max),
                )?;
            }
            Op::Stream { actor, from } => {
                let (id, m) = slot(&ids, &mut model, actor);
                let from = u64::from(from) % (m.highest + 3);
                let got: Vec<_> = storage
                    .replay_stream(id, from)
                    .try_collect()
                    .await
                    .map_err(|e| e.to_string())?;
                ensure(
                    &format!("{op:?}"),
                    done,
                    &got,
                    &m.range(from.max(1), u64::MAX, usize::MAX),
                )?;
            }
            Op::Read { actor } => {
                let (id, m) = slot(&ids, &mut model, actor);
                check_actor(storage, id, m, done).await?;
            }
        }
    }
    for (i, id) in ids.iter().enumerate() {
        let m = model.get(&i).cloned().unwrap_or_default();
        check_actor(storage, id, &m, ops.len()).await?;
        let all = storage
            .replay_from(id, 0)
            .await
            .map_err(|e| e.to_string())?;
        ensure(
            "final replay",
            ops.len(),
            &all,
            &m.range(1, u64::MAX, usize::MAX),
        )?;
    }
    let listed: BTreeSet<String> = storage
        .list_actors()
        .try_filter(|a| futures::future::ready(a.contains(&prefix)))
        .try_collect()
        .await
        .map_err(|e| e.to_string())?;
    let want: BTreeSet<String> = model
        .iter()
        .filter(|(_, m)| m.highest > 0)
        .map(|(&i, _)| ids[i].clone())
        .collect();
    ensure("listed actors", ops.len(), &listed, &want)
}

async fn check_actor(
    storage: &dyn JournalStorage,
    id: &str,
    m: &ModelActor,
    done: usize,
) -> Result<(), String> {
    let highest = storage
        .highest_sequence(id)
        .await
        .map_err(|e| e.to_string())?;
    ensure(&format!("highest of {id:?}"), done, &highest, &m.highest)?;
    let latest = storage
        .get_latest_checkpoint(id)
        .await
        .map_err(|e| e.to_string())?;
    ensure(
        "latest checkpoint",
        done,
        &latest.as_ref(),
        &m.checkpoints.values().next_back(),
    )?;
    let listed = storage
        .list_checkpoints(id)
        .await
        .map_err(|e| e.to_string())?;
    ensure(
        "checkpoints",
        done,
        &listed,
        &m.checkpoints.keys().copied().collect(),
    )?;
    let summary = storage.actor_summary(id).await.map_err(|e| e.to_string())?;
    let want = (
        m.highest,
        m.entries.len() as u64,
        m.checkpoints.len() as u64,
    );
    ensure(
        "summary",
        done,
        &(
            summary.highest_sequence,
            summary.entries,
            summary.checkpoints,
        ),
        &want,
    )
}

/// Any split of a journal into single appends and batches replays the same,
/// as a list and as a stream.
#[allow(clippy::unused_async)] // the suite's harness calls every test as an async fn
pub async fn prop_any_batch_split_replays_the_same(storage: Arc<dyn JournalStorage>) {
    let strategy = vec((1u64..8, any::<bool>()), 1..12);
    run_property(32, strategy, |chunks| {
        let storage = Arc::clone(&storage);
        async move {
            let actor = fresh_actor("prop-split");
            let mut written = Vec::new();
            for (len, as_batch) in chunks {
                let start = written.len() as u64 + 1;
                let chunk: Vec<_> = (start..start + len)
                    .map(|s| rich_entry(&actor, s))
                    .collect();
                if as_batch {
                    storage
                        .append_batch(&chunk)
                        .await
                        .map_err(|e| e.to_string())?;
                } else {
                    for e in &chunk {
                        storage.append_entry(e).await.map_err(|e| e.to_string())?;
                    }
                }
                written.extend(chunk);
            }
            let listed = storage
                .replay_from(&actor, 1)
                .await
                .map_err(|e| e.to_string())?;
            ensure("replay", written.len(), &listed, &written)?;
            let streamed: Vec<_> = storage
                .replay_stream(&actor, 1)
                .try_collect()
                .await
                .map_err(|e| e.to_string())?;
            ensure("stream", written.len(), &streamed, &written)?;
            let highest = storage
                .highest_sequence(&actor)
                .await
                .map_err(|e| e.to_string())?;
            ensure("highest", written.len(), &highest, &(written.len() as u64))
        }
    });
}

/// On a journal of random length, truncated at random, `replay_range` with
/// random bounds and limits, and streams of random page sizes, agree with
/// `replay_from`.
#[allow(clippy::unused_async)] // the suite's harness calls every test as an async fn
pub async fn prop_ranges_and_streams_agree_with_replay_from(storage: Arc<dyn JournalStorage>) {
    let query = (0u64..50, 0u64..50, 0usize..8, 1usize..8);
    let strategy = (0u64..40, 0u64..45, vec(query, 1..10));
    run_property(32, strategy, |(len, truncate, queries)| {
        let storage = Arc::clone(&storage);
        async move {
            let actor = fresh_actor("prop-range");
            let written: Vec<_> = (1..=len)
                .map(|s| crate::fixture::entry(&actor, s))
                .collect();
            storage
                .append_batch(&written)
                .await
                .map_err(|e| e.to_string())?;
            storage
                .truncate_to(&actor, truncate)
                .await
                .map_err(|e| e.to_string())?;
            let all = storage
                .replay_from(&actor, 0)
                .await
                .map_err(|e| e.to_string())?;
            let kept: Vec<_> = written
                .iter()
                .filter(|e| e.sequence > truncate)
                .cloned()
                .collect();
            ensure("replay after truncation", 0, &all, &kept)?;
            for (from, to, max, page) in queries {
                let got = storage
                    .replay_range(&actor, from, to, max)
                    .await
                    .map_err(|e| e.to_string())?;
                let want: Vec<_> = all
                    .iter()
                    .filter(|e| from <= e.sequence && e.sequence <= to)
                    .take(max)
                    .cloned()
                    .collect();
                ensure(
                    &format!("replay_range({from}, {to}, {max})"),
                    0,
                    &got,
                    &want,
                )?;
                let paged: Vec<_> = paged_replay(&*storage, &actor, from, page)
                    .try_collect()
                    .await
                    .map_err(|e| e.to_string())?;
                let want: Vec<_> = all.iter().filter(|e| e.sequence >= from).cloned().collect();
                ensure(
                    &format!("stream from {from}, page {page}"),
                    0,
                    &paged,
                    &want,
                )?;
            }
            Ok(())
        }
    });
}
