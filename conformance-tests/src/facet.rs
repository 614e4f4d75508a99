//! The durability facet on every backend (contract rules 16-19): recovery,
//! cached side effects, divergence, exactly-once delivery, checkpoint
//! fallback, and crashes at the worst moments.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use journal_core::checkpoint::CheckpointPolicy;
use journal_core::journal_entry::Entry;
use journal_core::prost_types;
use journal_core::{
    Actor, Checkpoint, Delivery, DurabilityConfig, DurabilityFacet, DurabilityObserver,
    DurableActor, ExecutionContext, FacetSnapshot, HandlerError, HandlerResult, JournalBackend,
    JournalEntry, JournalError, JournalStorage, MessageOutcome, MessageReceived, ProcessingResult,
};
use prost::Message;

use crate::cutoff::CutOff;
use crate::fixture::fresh_actor;

/// Every side effect that really ran, by key, in order: what "the outside
/// world" saw.
#[derive(Debug, Clone, Default)]
pub struct OutsideWorld(Arc<Mutex<Vec<String>>>);

impl OutsideWorld {
    fn record(&self, key: String) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(key);
    }

    /// The keys of every effect that ran.
    pub fn calls(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// How many times each key ran.
    pub fn counts(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for key in self.calls() {
            *counts.entry(key).or_default() += 1;
        }
        counts
    }
}

/// One transfer: the bank's receipt, the time (ns since the epoch) and a
/// random transfer id, all read through the context.
pub type Transfer = (Vec<u8>, u128, u64);

/// A bank account: deposits, withdrawals (which may fail), and transfers
/// that call "the bank" (a side effect) and read the time and a random
/// transfer id through the context.
#[derive(Debug, Clone, Default)]
pub struct Account {
    /// Current balance.
    pub balance: i64,
    /// Per transfer: the bank's receipt, the time and the random id.
    pub transfers: Vec<Transfer>,
    world: OutsideWorld,
    /// Name the transfer's side effect is journaled under.
    effect_name: String,
    /// Withdrawals beyond the balance succeed (changed code).
    pub overdraft: bool,
    /// Size of the bank's receipt (0: a short text).
    pub receipt_bytes: usize,
}

/// Two accounts are equal when their state is: balance and transfers (the
/// outside world they call is not state).
impl PartialEq for Account {
    fn eq(&self, other: &Self) -> bool {
        self.balance == other.balance && self.transfers == other.transfers
    }
}
impl Eq for Account {}

impl Account {
    /// An empty account whose transfers call `world`.
    pub fn new(world: &OutsideWorld) -> Self {
        Account {
            world: world.clone(),
            effect_name: "bank.transfer".into(),
            ..Account::default()
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = self.balance.to_le_bytes().to_vec();
        for (receipt, at, id) in &self.transfers {
            out.extend_from_slice(&(receipt.len() as u32).to_le_bytes());
            out.extend_from_slice(receipt);
            out.extend_from_slice(&at.to_le_bytes());
            out.extend_from_slice(&id.to_le_bytes());
        }
        out
    }

    fn decode(bytes: &[u8]) -> Option<(i64, Vec<Transfer>)> {
        let (balance, mut rest) = bytes.split_at_checked(8)?;
        let balance = i64::from_le_bytes(balance.try_into().ok()?);
        let mut transfers = Vec::new();
        while !rest.is_empty() {
            let (len, tail) = rest.split_at_checked(4)?;
            let len = u32::from_le_bytes(len.try_into().ok()?) as usize;
            let (receipt, tail) = tail.split_at_checked(len)?;
            let (at, tail) = tail.split_at_checked(16)?;
            let (id, tail) = tail.split_at_checked(8)?;
            transfers.push((
                receipt.to_vec(),
                u128::from_le_bytes(at.try_into().ok()?),
                u64::from_le_bytes(id.try_into().ok()?),
            ));
            rest = tail;
        }
        Some((balance, transfers))
    }
}

/// A message to [`Account`].
pub fn message(id: &str, kind: &str, amount: i64) -> MessageReceived {
    MessageReceived {
        message_id: id.to_owned(),
        message_type: kind.to_owned(),
        payload: amount.to_le_bytes().to_vec(),
        ..MessageReceived::default()
    }
}

#[async_trait]
impl DurableActor for Account {
    async fn handle(
        &mut self,
        message: &MessageReceived,
        ctx: &mut ExecutionContext,
    ) -> HandlerResult {
        let amount = i64::from_le_bytes(
            message
                .payload
                .as_slice()
                .try_into()
                .map_err(|_| HandlerError::failed("bad amount"))?,
        );
        match message.message_type.as_str() {
            "deposit" => self.balance += amount,
            "withdraw" if amount > self.balance && !self.overdraft => {
                return Err(HandlerError::failed("insufficient funds"))
            }
            "withdraw" => self.balance -= amount,
            "transfer" => {
                let world = self.world.clone();
                let key = format!("{}/bank", message.message_id);
                let size = self.receipt_bytes;
                let receipt = ctx
                    .side_effect(&self.effect_name, || async move {
                        world.record(key.clone());
                        Ok::<_, String>(if size == 0 {
                            format!("receipt for {key}").into_bytes()
                        } else {
                            vec![7; size]
                        })
                    })
                    .await??;
                let at = ctx.now().await?;
                let id = ctx.random_u64().await?;
                let at = at
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_nanos();
                self.balance -= amount;
                self.transfers.push((receipt, at, id));
            }
            other => return Err(HandlerError::failed(format!("unknown message {other}"))),
        }
        Ok(self.balance.to_le_bytes().to_vec())
    }

    fn snapshot(&self) -> Result<Vec<u8>, String> {
        Ok(self.encode())
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        let (balance, transfers) = Account::decode(state).ok_or("not an account state")?;
        self.balance = balance;
        self.transfers = transfers;
        Ok(())
    }
}

/// A durable account actor on `storage`.
pub fn account_actor(
    storage: impl JournalStorage + 'static,
    id: &str,
    config: DurabilityConfig,
    world: &OutsideWorld,
) -> (Actor<Account>, DurabilityObserver) {
    let facet = DurabilityFacet::new(storage, config);
    let observer = facet.observer();
    let mut actor = Actor::new(id, Account::new(world));
    actor
        .facets()
        .attach(Box::new(facet))
        .expect("one durability facet");
    (actor, observer)
}

/// `behavior` as a durable actor `id` on `storage`.
pub fn durable<A: DurableActor>(
    storage: impl JournalStorage + 'static,
    id: &str,
    behavior: A,
    config: DurabilityConfig,
) -> Actor<A> {
    let mut actor = Actor::new(id, behavior);
    actor
        .facets()
        .attach(Box::new(DurabilityFacet::new(storage, config)))
        .expect("the only durability facet");
    actor
}

fn config(interval: u64) -> DurabilityConfig {
    DurabilityConfig {
        checkpoint_interval: interval,
        ..DurabilityConfig::recommended(JournalBackend::Memory)
    }
}

/// A workload: deposits, transfers, and withdrawals some of which fail.
fn workload(n: usize) -> Vec<MessageReceived> {
    (0..n)
        .map(|i| match i % 4 {
            0 | 1 => message(
                &format!("m{i}"),
                "deposit",
                10 + i64::try_from(i).unwrap_or(0),
            ),
            2 => message(&format!("m{i}"), "transfer", 3),
            _ => message(
                &format!("m{i}"),
                "withdraw",
                if i % 8 == 3 { 1_000_000 } else { 5 },
            ),
        })
        .collect()
}

async fn run(actor: &mut Actor<Account>, messages: &[MessageReceived]) {
    for m in messages {
        actor
            .send(m.clone())
            .await
            .unwrap_or_else(|e| panic!("message {}: {e}", m.message_id));
    }
}

/// Rule 16: recovery from the newest checkpoint reaches the same state as a
/// full replay from sequence 1, and as the actor had before the crash.
pub async fn facet_recovery_from_checkpoint_equals_full_replay(storage: Arc<dyn JournalStorage>) {
    let id = fresh_actor("facet-recover");
    let world = OutsideWorld::default();
    let (mut first, _) = account_actor(Arc::clone(&storage), &id, config(7), &world);
    run(&mut first, &workload(41)).await;
    let before = first.behavior().clone();
    drop(first); // crash: no deactivation

    let (mut from_checkpoint, observer) =
        account_actor(Arc::clone(&storage), &id, config(7), &world);
    from_checkpoint
        .activate()
        .await
        .expect("recover from checkpoint");
    let report = observer.stats().activation;
    assert!(report.checkpoint_sequence.is_some(), "{report:?}");
    assert_eq!(from_checkpoint.behavior(), &before);

    storage
        .delete_checkpoints_before(&id, u64::MAX)
        .await
        .expect("drop checkpoints");
    let (mut full, observer) = account_actor(Arc::clone(&storage), &id, config(0), &world);
    full.activate().await.expect("full replay");
    let full_report = observer.stats().activation;
    assert_eq!(full_report.checkpoint_sequence, None);
    assert!(full_report.replayed_entries > report.replayed_entries);
    assert_eq!(full.behavior(), &before);
}

/// Rule 18: on replay side effects are not executed again; their journaled
/// results come back in order.
pub async fn facet_side_effects_not_rerun_on_replay(storage: Arc<dyn JournalStorage>) {
    let id = fresh_actor("facet-effects");
    let world = OutsideWorld::default();
    let (mut first, _) = account_actor(Arc::clone(&storage), &id, config(0), &world);
    run(&mut first, &workload(24)).await;
    let before = first.behavior().clone();
    let ran = world.calls();
    assert_eq!(ran.len(), 6);
    drop(first);
    for _ in 0..2 {
        let (mut again, observer) = account_actor(Arc::clone(&storage), &id, config(0), &world);
        again.activate().await.expect("recover");
        assert_eq!(again.behavior(), &before);
        assert_eq!(observer.stats().activation.replayed_messages, 24);
        assert_eq!(world.calls(), ran, "a side effect ran again during replay");
    }
}

/// Rule 18: code asking for another side effect than the journal recorded
/// stops replay with `ReplayDivergence` naming both.
pub async fn facet_replay_divergence_detected(storage: Arc<dyn JournalStorage>) {
    let id = fresh_actor("facet-diverge");
    let world = OutsideWorld::default();
    let (mut first, _) = account_actor(Arc::clone(&storage), &id, config(0), &world);
    run(&mut first, &[message("t1", "transfer", 1)]).await;
    drop(first);
    let mut account = Account::new(&world);
    account.effect_name = "bank.wire".into();
    let mut changed_actor = durable(Arc::clone(&storage), &id, account, config(0));
    match changed_actor.activate().await {
        Err(JournalError::ReplayDivergence {
            recorded,
            requested,
            position,
            message_id,
            ..
        }) => {
            assert_eq!(
                (recorded.as_str(), requested.as_str()),
                ("bank.transfer", "bank.wire")
            );
            assert_eq!((position, message_id.as_str()), (0, "t1"));
        }
        other => panic!("expected ReplayDivergence, got {other:?}"),
    }
    assert_eq!(
        world.calls().len(),
        1,
        "a diverging replay must not run the effect"
    );
    assert!(
        changed_actor
            .send(message("d", "deposit", 1))
            .await
            .is_err(),
        "a diverged actor stops"
    );
}

/// Rule 17: a redelivered message id is not processed again, before and
/// after recovery, whether its id comes back from the checkpoint or from
/// replayed entries.
pub async fn facet_redelivered_message_not_reprocessed(storage: Arc<dyn JournalStorage>) {
    let id = fresh_actor("facet-dedup");
    let world = OutsideWorld::default();
    let (mut first, observer) = account_actor(Arc::clone(&storage), &id, config(3), &world);
    let deposit = message("dep-1", "deposit", 50);
    assert_eq!(
        first.send(deposit.clone()).await.expect("send"),
        Delivery::Replied(50i64.to_le_bytes().to_vec())
    );
    assert_eq!(
        first.send(deposit.clone()).await.expect("redeliver"),
        Delivery::Duplicate(Some(MessageOutcome::Replied(50i64.to_le_bytes().to_vec()))),
        "a duplicate gets the reply recorded the first time"
    );
    run(
        &mut first,
        &[message("t", "transfer", 5), message("dep-2", "deposit", 1)],
    )
    .await;
    assert_eq!(observer.stats().duplicates, 1);
    let highest = storage.highest_sequence(&id).await.expect("highest");
    drop(first);

    let (mut again, observer) = account_actor(Arc::clone(&storage), &id, config(3), &world);
    again.activate().await.expect("recover");
    assert!(
        observer.stats().activation.checkpoint_sequence.is_some(),
        "dep-1 is behind a checkpoint"
    );
    for (m, balance) in [
        (deposit, 50i64),
        (message("t", "transfer", 5), 45),
        (message("dep-2", "deposit", 1), 46),
    ] {
        assert_eq!(
            again.send(m).await.expect("redeliver"),
            Delivery::Duplicate(Some(MessageOutcome::Replied(
                balance.to_le_bytes().to_vec()
            )))
        );
    }
    assert_eq!(again.behavior().balance, 46);
    assert_eq!(world.calls().len(), 1);
    assert_eq!(
        storage.highest_sequence(&id).await.expect("highest"),
        highest,
        "duplicates journal nothing"
    );
}

/// Rule 16: a checkpoint that cannot be decoded is skipped: recovery falls
/// back to the previous one; configured to fail, activation fails.
pub async fn facet_undecodable_checkpoint_falls_back(storage: Arc<dyn JournalStorage>) {
    let id = fresh_actor("facet-corrupt");
    let world = OutsideWorld::default();
    let (mut first, _) = account_actor(Arc::clone(&storage), &id, config(5), &world);
    run(&mut first, &workload(20)).await;
    let before = first.behavior().clone();
    drop(first);
    let checkpoints = storage.list_checkpoints(&id).await.expect("list");
    assert!(checkpoints.len() >= 2, "{checkpoints:?}");
    let newest = *checkpoints.last().expect("newest");
    let mut garbage = Checkpoint::new(&id, newest, vec![0x28, 0xb5, 0x2f, 0xfd, 1, 2, 3]);
    garbage.compression = journal_core::CompressionType::Zstd.into();
    garbage.uncompressed_size = 1 << 40;
    storage
        .save_checkpoint(&garbage)
        .await
        .expect("overwrite with garbage");
    let strict = DurabilityConfig {
        fail_on_corrupt_checkpoint: true,
        ..config(5)
    };
    let (mut failing, _) = account_actor(Arc::clone(&storage), &id, strict, &world);
    assert!(matches!(
        failing.activate().await,
        Err(JournalError::CorruptCheckpoint { .. })
    ));

    let (mut recovered, observer) = account_actor(Arc::clone(&storage), &id, config(5), &world);
    recovered.activate().await.expect("fall back");
    let report = observer.stats().activation;
    assert_eq!(report.skipped_checkpoints.len(), 1, "{report:?}");
    assert_eq!(report.skipped_checkpoints[0].sequence, newest);
    assert_eq!(
        report.checkpoint_sequence,
        Some(checkpoints[checkpoints.len() - 2])
    );
    assert_eq!(recovered.behavior(), &before);
}

/// Rule 16 with retention: a state larger than the checkpoint limit is not
/// checkpointed (loading would refuse it), so nothing is truncated behind
/// a checkpoint that could not be loaded, and recovery replays the journal.
pub async fn facet_oversized_state_is_not_checkpointed(storage: Arc<dyn JournalStorage>) {
    let id = fresh_actor("facet-oversized");
    let world = OutsideWorld::default();
    let small = DurabilityConfig {
        checkpoint_interval: 2,
        checkpoints_to_keep: 1,
        truncate_after_checkpoint: true,
        max_checkpoint_bytes: 4_096,
        ..config(2)
    };
    let make = || {
        let mut account = Account::new(&world);
        // Each transfer keeps a 3,000-byte receipt in the state.
        account.receipt_bytes = 3_000;
        durable(Arc::clone(&storage), &id, account, small.clone())
    };
    let mut first = make();
    let messages = [
        message("d", "deposit", 100),
        message("t1", "transfer", 3),
        message("t2", "transfer", 3),
        message("t3", "transfer", 3),
    ];
    for m in &messages {
        first.send(m.clone()).await.expect("handled");
    }
    let before = first.behavior().clone();
    drop(first);
    // The first checkpoint (after "d" and "t1": one receipt) fits; the
    // later ones do not, and the journal after the first is all there.
    let highest = storage.highest_sequence(&id).await.expect("highest");
    let mut again = make();
    again.activate().await.expect("recovers");
    assert_eq!(again.behavior(), &before);
    assert_eq!(world.calls().len(), 3, "no transfer ran again");
    assert_eq!(
        storage.highest_sequence(&id).await.expect("highest"),
        highest
    );
}

/// Rule 18: a crash after a side effect was journaled but before
/// `MessageProcessed` recovers without error: the effect's result comes
/// from the journal, and the message is completed.
pub async fn facet_crash_before_processed_recovers(storage: Arc<dyn JournalStorage>) {
    let id = fresh_actor("facet-crash-processed");
    let world = OutsideWorld::default();
    let (mut first, _) = account_actor(Arc::clone(&storage), &id, config(0), &world);
    run(&mut first, &[message("d", "deposit", 100)]).await;
    drop(first);
    // The transfer's journal as a crash left it: received, the bank's
    // result, the time and the random id journaled, MessageProcessed not.
    let next = storage.highest_sequence(&id).await.expect("highest") + 1;
    let effect = |offset: u64, name: &str, response: Vec<u8>| {
        JournalEntry::new(
            &id,
            next + offset,
            Entry::side_effect(
                format!("t/{}", offset - 1),
                name,
                journal_core::context::request_digest(b""),
                response,
                "",
            ),
        )
    };
    let now = [
        1_700_000_000u64.to_le_bytes().as_slice(),
        5u32.to_le_bytes().as_slice(),
    ]
    .concat();
    storage
        .append_batch(&[
            JournalEntry::new(
                &id,
                next,
                Entry::MessageReceived(message("t", "transfer", 30)),
            ),
            effect(1, "bank.transfer", b"receipt for t/bank".to_vec()),
            effect(2, "journal.now", now),
            effect(3, "journal.random", 8u64.to_le_bytes().to_vec()),
        ])
        .await
        .expect("the interrupted transfer's journal");

    let (mut recovered, observer) = account_actor(Arc::clone(&storage), &id, config(0), &world);
    recovered.activate().await.expect("recover");
    assert!(observer.stats().activation.completed_interrupted_message);
    assert_eq!(recovered.behavior().balance, 70);
    assert_eq!(
        world.counts().get("t/bank"),
        None,
        "journaled effect must not run again"
    );
    assert_eq!(
        recovered.behavior().transfers,
        [(b"receipt for t/bank".to_vec(), 1_700_000_000_000_000_005, 8)],
        "the journaled results, not new ones"
    );
    let last = storage
        .replay_from(&id, 1)
        .await
        .expect("replay")
        .pop()
        .expect("entries");
    match last.entry {
        Some(Entry::MessageProcessed(done)) => assert_eq!(done.message_id, "t"),
        other => panic!("the interrupted message was not completed: {other:?}"),
    }
    assert_eq!(
        recovered
            .send(message("t", "transfer", 30))
            .await
            .expect("redeliver"),
        Delivery::Duplicate(Some(MessageOutcome::Replied(70i64.to_le_bytes().to_vec())))
    );
}

/// Rule 18: a side effect that ran but whose result was not journaled
/// before a crash runs again on recovery (at-least-once), and the actor
/// ends up with it applied once.
pub async fn facet_unjournaled_effect_runs_again(storage: Arc<dyn JournalStorage>) {
    let id = fresh_actor("facet-crash-effect");
    let world = OutsideWorld::default();
    // Only MessageReceived is journaled; the effect runs, its journaling fails.
    let cut = CutOff::new(Arc::clone(&storage), 1);
    let (mut crashing, _) = account_actor(cut, &id, config(0), &world);
    assert!(crashing.send(message("t", "transfer", 10)).await.is_err());
    assert_eq!(world.counts().get("t/bank"), Some(&1));
    drop(crashing);

    let (mut recovered, _) = account_actor(Arc::clone(&storage), &id, config(0), &world);
    recovered.activate().await.expect("recover");
    assert_eq!(
        world.counts().get("t/bank"),
        Some(&2),
        "the unjournaled effect runs again, once"
    );
    assert_eq!(recovered.behavior().balance, -10);
    assert_eq!(recovered.behavior().transfers.len(), 1);
    drop(recovered);
    let (mut third, _) = account_actor(Arc::clone(&storage), &id, config(0), &world);
    third.activate().await.expect("recover again");
    assert_eq!(
        world.counts().get("t/bank"),
        Some(&2),
        "now journaled: not run a third time"
    );
}

/// Rule 19: checkpoints are taken every `checkpoint_interval` entries
/// whatever the number of entries one message writes, and each holds the
/// actor's real state at its sequence.
pub async fn facet_checkpoints_hold_real_state(storage: Arc<dyn JournalStorage>) {
    let id = fresh_actor("facet-interval");
    let world = OutsideWorld::default();
    let keep_all = DurabilityConfig {
        checkpoints_to_keep: 1000,
        ..config(10)
    };
    let (mut actor, _) = account_actor(Arc::clone(&storage), &id, keep_all.clone(), &world);
    let mut state_at = BTreeMap::new();
    for m in workload(30) {
        actor.send(m).await.expect("send");
        let highest = storage.highest_sequence(&id).await.expect("highest");
        state_at.insert(highest, actor.behavior().balance);
    }
    let checkpoints = storage.list_checkpoints(&id).await.expect("list");
    assert!(checkpoints.len() >= 5, "{checkpoints:?}");
    let policy = CheckpointPolicy::from_config(&keep_all);
    let mut previous = 0;
    for seq in checkpoints {
        // A message writes at most 5 entries: a checkpoint is due within
        // interval + 4 entries of the last.
        assert!(
            seq - previous >= 10 && seq - previous <= 14,
            "checkpoint gap {previous} -> {seq}"
        );
        previous = seq;
        let c = storage
            .get_checkpoint(&id, seq)
            .await
            .expect("get")
            .expect("some");
        let snapshot = FacetSnapshot::decode(policy.decode(&c).expect("decodes").as_slice())
            .expect("snapshot");
        let (balance, _) = Account::decode(&snapshot.actor_state).expect("account state");
        assert_eq!(
            Some(&balance),
            state_at.get(&seq),
            "checkpoint at {seq} holds the real state"
        );
        assert!(!snapshot.processed.is_empty());
    }
}

/// A handler's error is journaled as `MessageProcessed` with `ERROR`, and
/// replays to the same state.
pub async fn facet_handler_error_journaled(storage: Arc<dyn JournalStorage>) {
    let id = fresh_actor("facet-error");
    let world = OutsideWorld::default();
    let (mut actor, _) = account_actor(Arc::clone(&storage), &id, config(0), &world);
    run(&mut actor, &[message("d", "deposit", 5)]).await;
    assert_eq!(
        actor.send(message("w", "withdraw", 6)).await.expect("send"),
        Delivery::Failed("insufficient funds".into())
    );
    let last = storage
        .replay_from(&id, 1)
        .await
        .expect("replay")
        .pop()
        .expect("entries");
    match last.entry {
        Some(Entry::MessageProcessed(done)) => {
            assert_eq!(done.result, i32::from(ProcessingResult::Error));
            assert_eq!(done.error_message, "insufficient funds");
        }
        other => panic!("expected MessageProcessed, got {other:?}"),
    }
    drop(actor);
    let (mut again, _) = account_actor(Arc::clone(&storage), &id, config(0), &world);
    again.activate().await.expect("recover");
    assert_eq!(again.behavior().balance, 5);
}

/// Rule 18: time and randomness read through the context replay to the
/// same values.
pub async fn facet_time_and_random_replay_identically(storage: Arc<dyn JournalStorage>) {
    let id = fresh_actor("facet-time");
    let world = OutsideWorld::default();
    let (mut actor, _) = account_actor(Arc::clone(&storage), &id, config(0), &world);
    run(
        &mut actor,
        &[message("t1", "transfer", 1), message("t2", "transfer", 1)],
    )
    .await;
    let transfers = actor.behavior().transfers.clone();
    assert_ne!(transfers[0].2, transfers[1].2, "two random ids");
    drop(actor);
    let (mut again, _) = account_actor(Arc::clone(&storage), &id, config(0), &world);
    again.activate().await.expect("recover");
    assert_eq!(again.behavior().transfers, transfers);
}

/// Rule 13 through the facet: retention keeps the newest checkpoints,
/// truncates the journal behind the oldest kept, and recovery still
/// reaches the same state.
pub async fn facet_retention_truncates_and_recovers(storage: Arc<dyn JournalStorage>) {
    let id = fresh_actor("facet-retention");
    let world = OutsideWorld::default();
    let retained = DurabilityConfig {
        checkpoints_to_keep: 2,
        truncate_after_checkpoint: true,
        ..config(6)
    };
    let (mut actor, _) = account_actor(Arc::clone(&storage), &id, retained.clone(), &world);
    run(&mut actor, &workload(40)).await;
    let before = actor.behavior().clone();
    drop(actor);
    let checkpoints = storage.list_checkpoints(&id).await.expect("list");
    assert_eq!(checkpoints.len(), 2, "{checkpoints:?}");
    let first_kept = storage.replay_from(&id, 1).await.expect("replay")[0].sequence;
    assert_eq!(
        first_kept,
        checkpoints[0] + 1,
        "journal truncated up to the oldest kept checkpoint"
    );
    let (mut again, _) = account_actor(Arc::clone(&storage), &id, retained, &world);
    again.activate().await.expect("recover");
    assert_eq!(again.behavior(), &before);
}

/// With no usable checkpoint and a truncated journal, recovery fails with
/// `RecoveryFailed` rather than building a wrong state.
pub async fn facet_truncated_journal_without_checkpoint_fails(storage: Arc<dyn JournalStorage>) {
    let id = fresh_actor("facet-lost");
    let world = OutsideWorld::default();
    let (mut actor, _) = account_actor(Arc::clone(&storage), &id, config(0), &world);
    run(&mut actor, &workload(6)).await;
    drop(actor);
    storage.truncate_to(&id, 3).await.expect("truncate");
    let (mut again, _) = account_actor(Arc::clone(&storage), &id, config(0), &world);
    assert!(matches!(
        again.activate().await,
        Err(JournalError::RecoveryFailed { .. })
    ));
}

/// With `replay_on_activation` off the actor starts from its initial state
/// and journals after the existing entries.
pub async fn facet_replay_disabled_starts_fresh(storage: Arc<dyn JournalStorage>) {
    let id = fresh_actor("facet-noreplay");
    let world = OutsideWorld::default();
    let (mut actor, _) = account_actor(Arc::clone(&storage), &id, config(0), &world);
    run(&mut actor, &workload(4)).await;
    let highest = storage.highest_sequence(&id).await.expect("highest");
    drop(actor);
    let fresh = DurabilityConfig {
        replay_on_activation: false,
        ..config(0)
    };
    let (mut again, _) = account_actor(Arc::clone(&storage), &id, fresh, &world);
    run(&mut again, &[message("later", "deposit", 7)]).await;
    assert_eq!(again.behavior().balance, 7);
    assert_eq!(
        storage.highest_sequence(&id).await.expect("highest"),
        highest + 2
    );
}

/// Rule 18: an interrupted message whose code now asks for fewer side
/// effects than the journal recorded before the crash diverges (the
/// recorded ones happened), rather than completing and breaking every later
/// recovery.
pub async fn facet_interrupted_message_with_fewer_effects_diverges(
    storage: Arc<dyn JournalStorage>,
) {
    let id = fresh_actor("facet-fewer");
    let world = OutsideWorld::default();
    let effect = |seq: u64, name: &str, response: Vec<u8>| {
        JournalEntry::new(
            &id,
            seq,
            Entry::side_effect(format!("t/{seq}"), name, vec![], response, ""),
        )
    };
    let now = [
        1_700_000_000u64.to_le_bytes().as_slice(),
        5u32.to_le_bytes().as_slice(),
    ]
    .concat();
    let mut journal = vec![JournalEntry::new(
        &id,
        1,
        Entry::MessageReceived(message("t", "transfer", 1)),
    )];
    journal.extend([
        effect(2, "bank.transfer", b"receipt".to_vec()),
        effect(3, "journal.now", now),
        effect(4, "journal.random", 8u64.to_le_bytes().to_vec()),
        effect(5, "bank.audit", Vec::new()),
    ]);
    storage
        .append_batch(&journal)
        .await
        .expect("the interrupted message's journal");
    let (mut actor, _) = account_actor(Arc::clone(&storage), &id, config(0), &world);
    match actor.activate().await {
        Err(JournalError::ReplayDivergence {
            recorded,
            requested,
            position,
            ..
        }) => {
            assert_eq!(
                (recorded.as_str(), requested.as_str(), position),
                ("bank.audit", "end of message", 3)
            );
        }
        other => panic!("expected ReplayDivergence, got {other:?}"),
    }
    assert_eq!(
        storage.highest_sequence(&id).await.expect("highest"),
        5,
        "nothing journaled"
    );
}

/// Rule 16: entries missing after the checkpoint recovery starts from (the
/// journal truncated past it) fail recovery instead of silently losing
/// state.
pub async fn facet_missing_entries_after_checkpoint_fail_recovery(
    storage: Arc<dyn JournalStorage>,
) {
    let id = fresh_actor("facet-missing");
    let world = OutsideWorld::default();
    let (mut actor, _) = account_actor(Arc::clone(&storage), &id, config(10), &world);
    run(&mut actor, &workload(12)).await;
    let checkpoint = *storage
        .list_checkpoints(&id)
        .await
        .expect("list")
        .last()
        .expect("a checkpoint");
    if storage.highest_sequence(&id).await.expect("highest") == checkpoint {
        run(&mut actor, &[message("one-more", "deposit", 1)]).await;
    }
    drop(actor);
    let highest = storage.highest_sequence(&id).await.expect("highest");
    assert!(highest > checkpoint);
    storage
        .truncate_to(&id, highest)
        .await
        .expect("truncate past the checkpoint");
    let (mut again, _) = account_actor(Arc::clone(&storage), &id, config(10), &world);
    assert!(matches!(
        again.activate().await,
        Err(JournalError::RecoveryFailed { .. })
    ));
}

/// Time travel: `rebuild_at` gives the state the actor had right after
/// each message, from the nearest earlier checkpoint or from the first
/// entry alike; a message still in progress at the chosen entry is named
/// and not applied; nothing is written and no side effect runs.
pub async fn facet_rebuild_at_is_the_state_then(storage: Arc<dyn JournalStorage>) {
    let id = fresh_actor("facet-rebuild");
    let world = OutsideWorld::default();
    let (mut actor, _) = account_actor(Arc::clone(&storage), &id, config(7), &world);
    let mut states = vec![(0, Account::new(&world))];
    for m in workload(26) {
        actor.send(m).await.expect("send");
        let highest = storage.highest_sequence(&id).await.expect("highest");
        states.push((highest, actor.behavior().clone()));
    }
    let (highest, calls) = (states[states.len() - 1].0, world.calls());
    assert!(
        storage.list_checkpoints(&id).await.expect("list").len() >= 2,
        "the workload takes checkpoints"
    );

    // The state at `at`, and the report, or the error.
    let rebuild_then = async |at: u64, from_checkpoint: bool| {
        let mut rebuilt = Account::new(&world);
        journal_core::rebuild_at(
            Arc::clone(&storage),
            &config(7),
            &id,
            &mut rebuilt,
            at,
            from_checkpoint,
        )
        .await
        .map(|report| (rebuilt, report))
    };
    for pair in states.windows(2) {
        let ((before, state_before), (after, state_after)) = (&pair[0], &pair[1]);
        for from_checkpoint in [true, false] {
            let (rebuilt, report) = rebuild_then(*after, from_checkpoint)
                .await
                .expect("rebuild after a message");
            assert_eq!(&rebuilt, state_after, "at {after} ({from_checkpoint})");
            assert!(report.in_flight.is_none(), "{report:?}");
            assert!(from_checkpoint || report.checkpoint_sequence.is_none());
            assert!(report.checkpoint_sequence.is_none_or(|c| c <= *after));

            // Its MessageReceived entry: the message is in progress.
            let (rebuilt, report) = rebuild_then(before + 1, from_checkpoint)
                .await
                .expect("rebuild inside a message");
            assert_eq!(
                &rebuilt,
                state_before,
                "at {} ({from_checkpoint})",
                before + 1
            );
            assert!(report.in_flight.is_some(), "{report:?}");
        }
    }
    let beyond = rebuild_then(highest + 1, true).await;
    assert!(
        matches!(beyond, Err(JournalError::RecoveryFailed { .. })),
        "{beyond:?}"
    );
    assert_eq!(world.calls(), calls, "no side effect ran again");
    assert_eq!(
        storage.highest_sequence(&id).await.expect("highest"),
        highest
    );
}

/// Retries of journal writes in these tests: few and fast.
fn quick_retries(config: DurabilityConfig) -> DurabilityConfig {
    DurabilityConfig {
        journal_retry_attempts: 3,
        journal_retry_backoff: std::time::Duration::from_millis(1),
        ..config
    }
}

/// The kinds of an actor's stored entries, in order.
async fn kinds(storage: &Arc<dyn JournalStorage>, id: &str) -> Vec<&'static str> {
    storage
        .replay_from(id, 1)
        .await
        .expect("replay")
        .iter()
        .map(JournalEntry::kind)
        .collect()
}

/// Rule 22: a configuration built from `Default`, as ordinary Rust writes
/// it, recovers, caches side effects, journals time and randomness, and
/// deduplicates.
pub async fn facet_default_config_is_durable(storage: Arc<dyn JournalStorage>) {
    let id = fresh_actor("facet-default");
    let world = OutsideWorld::default();
    let config = || DurabilityConfig {
        checkpoint_interval: 4,
        ..Default::default()
    };
    let (mut first, _) = account_actor(Arc::clone(&storage), &id, config(), &world);
    run(&mut first, &workload(10)).await;
    let before = first.behavior().clone();
    let calls = world.calls();
    assert!(!calls.is_empty());
    drop(first);
    let (mut again, observer) = account_actor(Arc::clone(&storage), &id, config(), &world);
    again.activate().await.expect("recover");
    assert_eq!(again.behavior(), &before, "recovered on activation");
    assert!(observer.stats().activation.checkpoint_sequence.is_some());
    assert_eq!(world.calls(), calls, "no side effect ran again");
    assert!(
        matches!(
            again
                .send(workload(10)[2].clone())
                .await
                .expect("redeliver"),
            Delivery::Duplicate(Some(_))
        ),
        "deduplicated"
    );
    assert_eq!(world.calls(), calls);
}

/// An actor that reads the time and ignores journal errors, as careless
/// code does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Clock {
    /// The times it read, ns since the epoch.
    pub times: Vec<u128>,
}

#[async_trait]
impl DurableActor for Clock {
    async fn handle(&mut self, _: &MessageReceived, ctx: &mut ExecutionContext) -> HandlerResult {
        let now = ctx
            .now()
            .await
            .unwrap_or_else(|_| std::time::SystemTime::now());
        let since = now
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        // A call to the outside world: its result is journaled before the
        // code gets it. The journal's error is swallowed.
        let _ = ctx
            .side_effect("log", || async { Ok::<_, String>(Vec::new()) })
            .await;
        self.times.push(since.as_nanos());
        Ok(Vec::new())
    }
    fn snapshot(&self) -> Result<Vec<u8>, String> {
        Ok(self.times.iter().flat_map(|t| t.to_le_bytes()).collect())
    }
    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        let chunks = state.chunks_exact(16);
        if !chunks.remainder().is_empty() {
            return Err("not a clock state".into());
        }
        self.times = chunks
            .map(|c| u128::from_le_bytes(c.try_into().unwrap_or([0; 16])))
            .collect();
        Ok(())
    }
}

/// Rule 21: a journal error inside a handler fails the message even when
/// the handler's code swallows it: nothing after it is journaled, the
/// state it left is not handed out, and once the storage is back the next
/// message recovers the actor, completing the interrupted message once.
pub async fn facet_swallowed_journal_error_fails_the_message(storage: Arc<dyn JournalStorage>) {
    let id = fresh_actor("facet-swallowed");
    let faulty = CutOff::faulty(Arc::clone(&storage));
    let facet = DurabilityFacet::new(Arc::clone(&faulty), quick_retries(config(0)));
    let mut actor = Actor::new(&id, Clock::default());
    actor.facets().attach(Box::new(facet)).expect("attach");
    faulty.fail_kind(Some("side_effect_executed"));
    let err = actor
        .send(message("tick-1", "tick", 0))
        .await
        .expect_err("the swallowed error fails the message");
    assert!(err.is_retryable(), "{err}");
    assert_eq!(
        kinds(&storage, &id).await,
        ["message_received"],
        "nothing journaled after the error, no MessageProcessed"
    );
    assert!(actor.behavior().times.is_empty(), "unacknowledged state");
    assert!(!actor.is_active());

    faulty.fail_kind(None);
    for tick in ["tick-1", "tick-2"] {
        actor
            .send(message(tick, "tick", 0))
            .await
            .expect("recovers, then handles");
    }
    let one = [
        "message_received",
        "side_effect_executed",
        "side_effect_executed",
        "message_processed",
    ];
    assert_eq!(kinds(&storage, &id).await, [one, one].concat());
    let state = actor.behavior().clone();
    assert_eq!(state.times.len(), 2);
    drop(actor);
    let mut again = durable(Arc::clone(&storage), &id, Clock::default(), config(0));
    again.activate().await.expect("recover");
    assert_eq!(again.behavior(), &state, "replay sees the journaled times");
}

/// Rule 21 and 5: an `Unavailable` whose write had landed is retried with
/// the same entry, which is `Ok`; the message completes and the journal
/// holds each entry once.
pub async fn facet_retries_reappend_the_same_entry(storage: Arc<dyn JournalStorage>) {
    let id = fresh_actor("facet-retry");
    let world = OutsideWorld::default();
    let faulty = CutOff::faulty(Arc::clone(&storage));
    let (mut actor, _) = account_actor(Arc::clone(&faulty), &id, quick_retries(config(0)), &world);
    faulty.lose_replies(2);
    assert_eq!(
        actor
            .send(message("t", "transfer", 3))
            .await
            .expect("retried"),
        Delivery::Replied((-3i64).to_le_bytes().to_vec())
    );
    assert_eq!(
        kinds(&storage, &id).await,
        [
            "message_received",
            "side_effect_executed",
            "side_effect_executed",
            "side_effect_executed",
            "message_processed"
        ]
    );
    assert_eq!(world.calls().len(), 1);
}

/// Rule 21: one bad message fails alone with a typed error: an empty id,
/// a message too large to journal, a side effect whose result is too large
/// to journal. The actor handles the next message, and no external call
/// runs again because of it, also after recovery; a redelivery gets the
/// recorded failure.
pub async fn facet_bad_message_fails_alone(storage: Arc<dyn JournalStorage>) {
    let id = fresh_actor("facet-bad");
    let world = OutsideWorld::default();
    let make = |receipt_bytes: usize| {
        let mut account = Account::new(&world);
        account.receipt_bytes = receipt_bytes;
        durable(Arc::clone(&storage), &id, account, quick_retries(config(0)))
    };
    let mut actor = make(17 << 20);
    assert!(matches!(
        actor.send(message("", "deposit", 5)).await,
        Err(JournalError::InvalidEntry(_))
    ));
    let mut huge = message("huge", "deposit", 5);
    huge.payload = vec![1; 17 << 20];
    assert!(matches!(
        actor.send(huge).await,
        Err(JournalError::InvalidEntry(_))
    ));
    assert_eq!(
        storage.highest_sequence(&id).await.expect("highest"),
        0,
        "rejected before any I/O"
    );
    run(&mut actor, &[message("d", "deposit", 10)]).await;
    assert!(matches!(
        actor.send(message("big", "transfer", 1)).await,
        Err(JournalError::InvalidEntry(_))
    ));
    assert_eq!(world.counts().get("big/bank"), Some(&1));
    assert_eq!(
        actor
            .send(message("d2", "deposit", 1))
            .await
            .expect("the actor goes on"),
        Delivery::Replied(11i64.to_le_bytes().to_vec())
    );
    drop(actor);

    let mut again = make(17 << 20);
    again.activate().await.expect("recover");
    assert_eq!(again.behavior().balance, 11);
    assert_eq!(
        world.counts().get("big/bank"),
        Some(&1),
        "recovery does not call the outside world again"
    );
    match again.send(message("big", "transfer", 1)).await {
        Ok(Delivery::Duplicate(Some(MessageOutcome::Failed(reason)))) => {
            assert!(
                reason.contains("big") || reason.contains("bank"),
                "{reason}"
            );
        }
        other => panic!("expected the recorded failure, got {other:?}"),
    }
}

/// Rule 17: retention never ends while a message's entries are in the
/// journal, whatever the window; within the window replies outlive
/// truncation; a duplicate gets the reply or the failure recorded the
/// first time.
pub async fn facet_dedup_retention_and_recorded_replies(storage: Arc<dyn JournalStorage>) {
    let id = fresh_actor("facet-retain");
    let world = OutsideWorld::default();
    let small = DurabilityConfig {
        dedup_window: 3,
        ..config(4)
    };
    let (mut actor, _) = account_actor(Arc::clone(&storage), &id, small.clone(), &world);
    let deposits: Vec<_> = (0..10)
        .map(|i| message(&format!("m{i}"), "deposit", 1))
        .collect();
    run(&mut actor, &deposits).await;
    assert_eq!(
        actor
            .send(message("w", "withdraw", 1_000))
            .await
            .expect("send"),
        Delivery::Failed("insufficient funds".into())
    );
    let highest = storage.highest_sequence(&id).await.expect("highest");
    for (m, balance) in [(&deposits[0], 1i64), (&deposits[5], 6)] {
        assert_eq!(
            actor.send(m.clone()).await.expect("redeliver"),
            Delivery::Duplicate(Some(MessageOutcome::Replied(
                balance.to_le_bytes().to_vec()
            ))),
            "{} is still in the journal",
            m.message_id
        );
    }
    drop(actor);
    let (mut again, _) = account_actor(Arc::clone(&storage), &id, small.clone(), &world);
    again.activate().await.expect("recover");
    assert_eq!(
        again.send(deposits[0].clone()).await.expect("redeliver"),
        Delivery::Duplicate(Some(MessageOutcome::Replied(1i64.to_le_bytes().to_vec())))
    );
    assert_eq!(
        again
            .send(message("w", "withdraw", 1_000))
            .await
            .expect("redeliver"),
        Delivery::Duplicate(Some(MessageOutcome::Failed("insufficient funds".into())))
    );
    assert_eq!(
        storage.highest_sequence(&id).await.expect("highest"),
        highest,
        "duplicates journal nothing"
    );
    drop(again);

    // Truncated behind the checkpoints: the window's replies survive.
    let truncating = DurabilityConfig {
        truncate_after_checkpoint: true,
        checkpoints_to_keep: 1,
        ..small
    };
    let (mut third, _) = account_actor(Arc::clone(&storage), &id, truncating.clone(), &world);
    run(&mut third, &[message("last", "deposit", 1)]).await;
    run(&mut third, &[message("last-2", "deposit", 1)]).await;
    drop(third);
    let first_stored = storage.replay_from(&id, 1).await.expect("replay");
    assert!(
        first_stored.first().is_none_or(|e| e.sequence > highest),
        "the journal was truncated past the withdrawal"
    );
    let (mut fourth, _) = account_actor(Arc::clone(&storage), &id, truncating, &world);
    fourth.activate().await.expect("recover");
    assert_eq!(
        fourth
            .send(message("last", "deposit", 1))
            .await
            .expect("redeliver"),
        Delivery::Duplicate(Some(MessageOutcome::Replied(11i64.to_le_bytes().to_vec())))
    );
}

/// An actor that pays the payee named in each message, through a side
/// effect whose request is the payee; `payee_override` is changed code.
#[derive(Debug, Clone, Default)]
pub struct Payer {
    /// Receipts, in order.
    pub receipts: Vec<Vec<u8>>,
    /// Pay this payee instead of the message's.
    pub payee_override: Option<String>,
    world: OutsideWorld,
}

#[async_trait]
impl DurableActor for Payer {
    async fn handle(
        &mut self,
        message: &MessageReceived,
        ctx: &mut ExecutionContext,
    ) -> HandlerResult {
        let payee = self
            .payee_override
            .clone()
            .unwrap_or_else(|| String::from_utf8_lossy(&message.payload).into_owned());
        let (world, request) = (self.world.clone(), payee.clone().into_bytes());
        let receipt = ctx
            .side_effect_with("bank.pay", &request, || async move {
                world.record(format!("pay {payee}"));
                Ok::<_, String>(format!("paid {payee}").into_bytes())
            })
            .await??;
        self.receipts.push(receipt.clone());
        Ok(receipt)
    }
    fn snapshot(&self) -> Result<Vec<u8>, String> {
        Ok(self.receipts.concat())
    }
    fn restore(&mut self, _: &[u8]) -> Result<(), String> {
        Err("no checkpoints in this test".into())
    }
}

/// Rule 18: replay compares each effect's request and each message's
/// recorded outcome: code changed to pay someone else, or to succeed where
/// the journal recorded a failure, stops with `ReplayDivergence` naming
/// both, instead of a wrong cached result or a silently different state.
pub async fn facet_changed_request_or_outcome_diverges(storage: Arc<dyn JournalStorage>) {
    let id = fresh_actor("facet-request");
    let world = OutsideWorld::default();
    let payer = |payee_override: Option<&str>| {
        durable(
            Arc::clone(&storage),
            &id,
            Payer {
                payee_override: payee_override.map(str::to_owned),
                world: world.clone(),
                ..Payer::default()
            },
            config(0),
        )
    };
    let mut first = payer(None);
    let mut pay = message("p1", "pay", 0);
    pay.payload = b"alice".to_vec();
    first.send(pay).await.expect("pay alice");
    drop(first);
    let mut same = payer(None);
    same.activate().await.expect("same code recovers");
    assert_eq!(same.behavior().receipts, [b"paid alice".to_vec()]);
    let mut changed = payer(Some("bob"));
    match changed.activate().await {
        Err(JournalError::ReplayDivergence {
            recorded,
            requested,
            position,
            ..
        }) => {
            assert_eq!(position, 0);
            assert!(recorded.starts_with("bank.pay") && requested.starts_with("bank.pay"));
            assert_ne!(recorded, requested);
        }
        other => panic!("expected ReplayDivergence, got {other:?}"),
    }
    assert_eq!(world.calls(), ["pay alice"], "bob was never paid");

    let id = fresh_actor("facet-outcome");
    let (mut strict, _) = account_actor(Arc::clone(&storage), &id, config(0), &world);
    run(
        &mut strict,
        &[
            message("d", "deposit", 5),
            message("w", "withdraw", 50),
            message("d2", "deposit", 1),
        ],
    )
    .await;
    drop(strict);
    let mut lenient = Account::new(&world);
    lenient.overdraft = true;
    let mut actor = durable(Arc::clone(&storage), &id, lenient, config(0));
    match actor.activate().await {
        Err(JournalError::ReplayDivergence {
            recorded,
            requested,
            message_id,
            ..
        }) => {
            assert_eq!(message_id, "w");
            assert!(recorded.contains("error"), "{recorded}");
            assert!(requested.contains("success"), "{requested}");
        }
        other => panic!("expected ReplayDivergence, got {other:?}"),
    }
}

/// An [`Account`] whose state schema moved to version 2, with a migration
/// from version 1.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigratingAccount(pub Account);

#[async_trait]
impl DurableActor for MigratingAccount {
    async fn handle(
        &mut self,
        message: &MessageReceived,
        ctx: &mut ExecutionContext,
    ) -> HandlerResult {
        self.0.handle(message, ctx).await
    }
    fn snapshot(&self) -> Result<Vec<u8>, String> {
        self.0.snapshot()
    }
    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        self.0.restore(state)
    }
    fn migrate(&mut self, state: &[u8], stored: u32, current: u32) -> Result<(), String> {
        match (stored, current) {
            (1, 2) => self.0.restore(state),
            _ => Err(format!("no migration from {stored} to {current}")),
        }
    }
}

/// Rule 16: a checkpoint of an older state schema version is handed to the
/// actor with its version: with a migration a truncated journal recovers;
/// without one, recovery fails naming both versions.
pub async fn facet_state_schema_bump_migrates(storage: Arc<dyn JournalStorage>) {
    let id = fresh_actor("facet-schema");
    let world = OutsideWorld::default();
    let v1 = DurabilityConfig {
        truncate_after_checkpoint: true,
        checkpoints_to_keep: 1,
        ..config(4)
    };
    let (mut first, _) = account_actor(Arc::clone(&storage), &id, v1.clone(), &world);
    run(&mut first, &workload(9)).await;
    let before = first.behavior().clone();
    drop(first);
    assert!(
        storage
            .replay_from(&id, 1)
            .await
            .expect("replay")
            .first()
            .is_none_or(|e| e.sequence > 1),
        "truncated: the checkpoint is needed"
    );
    let v2 = DurabilityConfig {
        state_schema_version: 2,
        ..v1
    };
    let (mut unmigrated, _) = account_actor(Arc::clone(&storage), &id, v2.clone(), &world);
    match unmigrated.activate().await {
        Err(e @ JournalError::RecoveryFailed { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains("version 1") && text.contains("version 2"),
                "{text}"
            );
        }
        other => panic!("expected RecoveryFailed naming both versions, got {other:?}"),
    }
    let mut migrated = durable(
        Arc::clone(&storage),
        &id,
        MigratingAccount(Account::new(&world)),
        v2,
    );
    migrated.activate().await.expect("migrates");
    assert_eq!(migrated.behavior().0, before);
}

/// Rule 18: time travel never runs a side effect: where the journal holds
/// no result (written with `cache_side_effects` off) it fails with a clear
/// error instead of calling the outside world.
pub async fn facet_time_travel_never_runs_effects(storage: Arc<dyn JournalStorage>) {
    let id = fresh_actor("facet-travel");
    let world = OutsideWorld::default();
    let uncached = DurabilityConfig {
        cache_side_effects: false,
        ..config(0)
    };
    let (mut actor, _) = account_actor(Arc::clone(&storage), &id, uncached.clone(), &world);
    run(
        &mut actor,
        &[message("d", "deposit", 5), message("t", "transfer", 1)],
    )
    .await;
    drop(actor);
    let calls = world.calls();
    let highest = storage.highest_sequence(&id).await.expect("highest");
    let mut rebuilt = Account::new(&world);
    let result = journal_core::rebuild_at(
        Arc::clone(&storage),
        &uncached,
        &id,
        &mut rebuilt,
        highest,
        false,
    )
    .await;
    match result {
        Err(JournalError::RecoveryFailed { reason, .. }) => {
            assert!(reason.contains("time travel"), "{reason}");
        }
        other => panic!("expected RecoveryFailed, got {other:?}"),
    }
    assert_eq!(world.calls(), calls, "no side effect ran");
}

/// Rule 21: after a journal failure on `MessageProcessed` the host does not
/// hand out the state the message left (`behavior`, `deactivate`); the next
/// message, once the storage is back, recovers the actor and completes the
/// interrupted message from the journal, without calling the outside world
/// again.
pub async fn facet_failed_message_state_is_not_handed_out(storage: Arc<dyn JournalStorage>) {
    let id = fresh_actor("facet-unacked");
    let world = OutsideWorld::default();
    let faulty = CutOff::faulty(Arc::clone(&storage));
    let (mut actor, _) = account_actor(Arc::clone(&faulty), &id, quick_retries(config(0)), &world);
    run(&mut actor, &[message("d", "deposit", 100)]).await;
    faulty.fail_kind(Some("message_processed"));
    assert!(actor.send(message("t", "transfer", 30)).await.is_err());
    assert_ne!(
        actor.behavior().balance,
        70,
        "unacknowledged state handed out"
    );
    faulty.fail_kind(None);
    assert_eq!(
        actor
            .send(message("d2", "deposit", 1))
            .await
            .expect("recovers"),
        Delivery::Replied(71i64.to_le_bytes().to_vec())
    );
    assert_eq!(
        world.counts().get("t/bank"),
        Some(&1),
        "the bank's journaled result is used, not a second call"
    );
    assert_eq!(
        actor
            .send(message("t", "transfer", 30))
            .await
            .expect("redeliver"),
        Delivery::Duplicate(Some(MessageOutcome::Replied(70i64.to_le_bytes().to_vec())))
    );
    faulty.fail_kind(Some("message_processed"));
    assert!(actor.send(message("t2", "transfer", 1)).await.is_err());
    assert!(
        actor.deactivate().await.is_err(),
        "deactivate does not hand out the failed message's state"
    );
}

/// Rule 19: a checkpoint is due after `checkpoint_timeout` also for an
/// actor that is idle: the host's `checkpoint_if_due` takes it.
pub async fn facet_idle_actor_checkpoints_after_timeout(storage: Arc<dyn JournalStorage>) {
    let id = fresh_actor("facet-idle");
    let world = OutsideWorld::default();
    let (mut actor, _) = account_actor(Arc::clone(&storage), &id, config(0), &world);
    run(&mut actor, &workload(3)).await;
    drop(actor);
    assert!(storage
        .list_checkpoints(&id)
        .await
        .expect("list")
        .is_empty());
    let timed = DurabilityConfig {
        checkpoint_timeout: Some(prost_types::Duration {
            seconds: 0,
            nanos: 1,
        }),
        ..config(0)
    };
    let (mut idle, _) = account_actor(Arc::clone(&storage), &id, timed, &world);
    idle.activate().await.expect("recover");
    idle.checkpoint_if_due().await.expect("idle work");
    let highest = storage.highest_sequence(&id).await.expect("highest");
    assert_eq!(
        storage.list_checkpoints(&id).await.expect("list"),
        [highest],
        "an idle actor checkpoints once its timeout passed"
    );
}

/// The seed's shape: `attach` returns a `Result`, and a second durability
/// facet (which would journal every message twice) is refused.
pub async fn facet_attach_refuses_a_second_durability_facet(storage: Arc<dyn JournalStorage>) {
    let id = fresh_actor("facet-attach");
    let world = OutsideWorld::default();
    let (mut actor, _) = account_actor(Arc::clone(&storage), &id, config(0), &world);
    assert!(actor
        .facets()
        .attach(Box::new(DurabilityFacet::new(
            Arc::clone(&storage),
            config(0)
        )))
        .is_err());
    assert_eq!(actor.facets().names(), ["durability"]);
    run(&mut actor, &[message("d", "deposit", 1)]).await;
    assert_eq!(storage.highest_sequence(&id).await.expect("highest"), 2);
}

/// The seed design's usage (a hand-built entry with a `prost_types`
/// timestamp, the seed's configuration literal with its long enum names,
/// `DurabilityFacet::new(storage, config)`, `attach(..)?`) works as
/// published, with only the crate paths changed.
pub async fn facet_seed_snippet_runs(storage: Arc<dyn JournalStorage>) {
    let run = async {
        let actor_id = fresh_actor("seed");
        let entry = JournalEntry {
            id: journal_core::new_entry_id(),
            actor_id: actor_id.clone(),
            sequence: 1,
            timestamp: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            correlation_id: String::new(),
            entry: Some(Entry::MessageReceived(MessageReceived {
                message_id: "msg-1".to_string(),
                sender_id: "sender".to_string(),
                message_type: "deposit".to_string(),
                payload: 5i64.to_le_bytes().to_vec(),
                metadata: BTreeMap::default(),
            })),
        };
        storage.append_entry(&entry).await?;
        assert_eq!(storage.replay_from(&actor_id, 0).await?, vec![entry]);
        assert!(storage.get_latest_checkpoint(&actor_id).await?.is_none());
        let config = DurabilityConfig {
            backend: JournalBackend::JournalBackendSqlite as i32,
            checkpoint_interval: 1000,
            checkpoint_timeout: None,
            replay_on_activation: true,
            cache_side_effects: true,
            compression: journal_core::CompressionType::CompressionTypeZstd as i32,
            state_schema_version: 1,
            backend_config: None,
            ..Default::default()
        };
        let facet = DurabilityFacet::new(Arc::clone(&storage), config);
        let mut actor = Actor::new(actor_id.clone(), Account::new(&OutsideWorld::default()));
        actor.facets().attach(Box::new(facet))?;
        actor.activate().await?;
        assert_eq!(actor.behavior().balance, 5, "msg-1 completed on activation");
        Ok::<_, JournalError>(())
    };
    run.await.expect("the seed's snippet runs");
}

/// An actor that replies with as many bytes as its message's payload says
/// (u64, little-endian), and counts what it handled.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Echo {
    /// Messages handled.
    pub handled: u64,
}

#[async_trait]
impl DurableActor for Echo {
    async fn handle(&mut self, m: &MessageReceived, _: &mut ExecutionContext) -> HandlerResult {
        let size = <[u8; 8]>::try_from(m.payload.as_slice()).map_or(0, u64::from_le_bytes);
        self.handled += 1;
        Ok(vec![7; usize::try_from(size).unwrap_or(0)])
    }
    fn snapshot(&self) -> Result<Vec<u8>, String> {
        Ok(self.handled.to_le_bytes().to_vec())
    }
    fn restore(&mut self, s: &[u8]) -> Result<(), String> {
        self.handled = u64::from_le_bytes(s.try_into().map_err(|_| "not an echo state")?);
        Ok(())
    }
}

/// Rule 21: a reply too large to journal fails that message alone: it is
/// journaled as failed, the actor goes on, recovery agrees, and a
/// redelivery gets the recorded failure.
pub async fn facet_reply_too_large_fails_alone(storage: Arc<dyn JournalStorage>) {
    let id = fresh_actor("facet-big-reply");
    let too_large = storage.limits().max_entry_bytes as u64 + 1;
    let echo = || durable(Arc::clone(&storage), &id, Echo::default(), config(0));
    let sized = |id: &str, bytes: u64| MessageReceived {
        message_id: id.to_owned(),
        payload: bytes.to_le_bytes().to_vec(),
        ..MessageReceived::default()
    };
    let mut actor = echo();
    assert!(matches!(
        actor.send(sized("big", too_large)).await,
        Err(JournalError::InvalidEntry(_))
    ));
    assert_eq!(
        actor
            .send(sized("small", 3))
            .await
            .expect("the actor goes on"),
        Delivery::Replied(vec![7; 3])
    );
    assert!(matches!(
        actor.send(sized("big", too_large)).await,
        Ok(Delivery::Duplicate(Some(MessageOutcome::Failed(_))))
    ));
    let handled = actor.behavior().handled;
    drop(actor);
    let mut again = echo();
    again
        .activate()
        .await
        .expect("recovery agrees with the journal");
    assert_eq!(again.behavior().handled, handled);
}

/// Rule 17: an interrupted message that later messages followed (its
/// `MessageReceived` with no `MessageProcessed`) stays recognised while its
/// entries are in the journal, whatever the window.
pub async fn facet_interrupted_then_followed_message_stays_recognised(
    storage: Arc<dyn JournalStorage>,
) {
    let id = fresh_actor("facet-followed");
    let done = |m: &str, balance: i64| {
        Entry::MessageProcessed(journal_core::MessageProcessed {
            message_id: m.into(),
            result: ProcessingResult::Success.into(),
            response_payload: balance.to_le_bytes().to_vec(),
            ..journal_core::MessageProcessed::default()
        })
    };
    let journal: Vec<JournalEntry> = [
        Entry::MessageReceived(message("A", "deposit", 5)),
        Entry::MessageReceived(message("B", "deposit", 1)),
        done("B", 6),
        Entry::MessageReceived(message("C", "deposit", 1)),
        done("C", 7),
    ]
    .into_iter()
    .zip(1..)
    .map(|(entry, seq)| JournalEntry::new(&id, seq, entry))
    .collect();
    storage.append_batch(&journal).await.expect("journal");
    let world = OutsideWorld::default();
    let narrow = DurabilityConfig {
        dedup_window: 1,
        ..config(0)
    };
    let (mut actor, _) = account_actor(Arc::clone(&storage), &id, narrow, &world);
    actor.activate().await.expect("recover");
    assert_eq!(actor.behavior().balance, 7);
    assert!(matches!(
        actor
            .send(message("A", "deposit", 5))
            .await
            .expect("redeliver"),
        Delivery::Duplicate(_)
    ));
    assert_eq!(actor.behavior().balance, 7, "A was not applied twice");
}

/// Rule 17 at scale: a checkpoint lists the dedup window only, however long
/// the journal, and says up to where the rest must be read back; after
/// recovery a message older than the window, still in the journal, is
/// recognised with its reply.
pub async fn facet_checkpoints_list_the_window_only(storage: Arc<dyn JournalStorage>) {
    let id = fresh_actor("facet-window");
    let world = OutsideWorld::default();
    let narrow = DurabilityConfig {
        dedup_window: 4,
        ..config(6)
    };
    let (mut actor, _) = account_actor(Arc::clone(&storage), &id, narrow.clone(), &world);
    let deposits: Vec<_> = (0..30)
        .map(|i| message(&format!("d{i}"), "deposit", 1))
        .collect();
    run(&mut actor, &deposits).await;
    drop(actor);
    let latest = storage
        .get_latest_checkpoint(&id)
        .await
        .expect("latest")
        .expect("a checkpoint");
    let policy = CheckpointPolicy::from_config(&narrow);
    let snapshot = FacetSnapshot::decode(policy.decode(&latest).expect("decodes").as_slice())
        .expect("snapshot");
    assert!(snapshot.processed.len() <= 4, "{:?}", snapshot.processed);
    assert!(snapshot.unlisted_through > 0);
    let (mut again, _) = account_actor(Arc::clone(&storage), &id, narrow, &world);
    again.activate().await.expect("recover");
    for (i, balance) in [(0usize, 1i64), (13, 14), (29, 30)] {
        assert_eq!(
            again.send(deposits[i].clone()).await.expect("redeliver"),
            Delivery::Duplicate(Some(MessageOutcome::Replied(
                balance.to_le_bytes().to_vec()
            ))),
            "d{i}"
        );
    }
    run(&mut again, &[message("new", "deposit", 1)]).await;
    assert_eq!(again.behavior().balance, 31);
}

/// An actor that reads a random idempotency key through the
/// context and pays with it: the usual way to make an at-least-once call
/// safe to repeat. `crash`, if set, runs inside the bank call (to make the
/// storage fail from that point on: the process dies after the call).
#[derive(Clone, Default)]
pub struct KeyedPayer {
    world: OutsideWorld,
    /// Keys paid with.
    pub keys: Vec<u64>,
    crash: Option<Arc<dyn Fn() + Send + Sync>>,
}

#[async_trait]
impl DurableActor for KeyedPayer {
    async fn handle(&mut self, _: &MessageReceived, ctx: &mut ExecutionContext) -> HandlerResult {
        let key = ctx.random_u64().await?;
        let (world, crash) = (self.world.clone(), self.crash.clone());
        ctx.side_effect_with("bank.pay", &key.to_le_bytes(), || async move {
            world.record(format!("pay key={key}"));
            if let Some(crash) = crash {
                crash();
            }
            Ok::<_, String>(Vec::new())
        })
        .await??;
        self.keys.push(key);
        Ok(Vec::new())
    }
    fn snapshot(&self) -> Result<Vec<u8>, String> {
        Ok(self.keys.iter().flat_map(|k| k.to_le_bytes()).collect())
    }
    fn restore(&mut self, s: &[u8]) -> Result<(), String> {
        self.keys = s
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect();
        Ok(())
    }
}

/// A payer whose storage dies while the bank is called: nothing
/// is journaled after that point.
fn crashing_payer(
    storage: &Arc<dyn JournalStorage>,
    id: &str,
    world: &OutsideWorld,
) -> Actor<KeyedPayer> {
    let faulty = CutOff::faulty(Arc::clone(storage));
    let switch = Arc::clone(&faulty);
    let payer = KeyedPayer {
        world: world.clone(),
        crash: Some(Arc::new(move || {
            switch.fail_kind(Some("side_effect_executed"));
        })),
        ..KeyedPayer::default()
    };
    durable(faulty, id, payer, quick_retries(config(0)))
}

/// Rule 18: a random value read through the context is journaled
/// before anything outside can see it. Here the handler passes it to the
/// bank as an idempotency key; the process dies after the bank was called,
/// before the bank's result is journaled. Running the call again
/// (at-least-once) must use the same key, or the bank pays twice.
pub async fn facet_random_key_is_durable_before_the_outside_sees_it(
    storage: Arc<dyn JournalStorage>,
) {
    let id = fresh_actor("facet-key");
    let world = OutsideWorld::default();
    let mut crashing = crashing_payer(&storage, &id, &world);
    assert!(crashing.send(message("p", "pay", 0)).await.is_err());
    drop(crashing);
    // Restart; the sender redelivers.
    let payer = KeyedPayer {
        world: world.clone(),
        ..KeyedPayer::default()
    };
    let mut again = durable(Arc::clone(&storage), &id, payer, config(0));
    again.activate().await.expect("recover");
    let _ = again.send(message("p", "pay", 0)).await.expect("redeliver");
    let calls = world.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(
        calls[0], calls[1],
        "the repeated call must carry the same journaled key"
    );
}

/// Rule 18: "A side effect that ran but whose result was not
/// journaled before a crash runs again on recovery": recovery alone, with
/// no redelivery, completes the message.
pub async fn facet_unjournaled_effect_runs_again_on_recovery(storage: Arc<dyn JournalStorage>) {
    let id = fresh_actor("facet-recovery");
    let world = OutsideWorld::default();
    let mut crashing = crashing_payer(&storage, &id, &world);
    assert!(crashing.send(message("p", "pay", 0)).await.is_err());
    assert_eq!(world.calls().len(), 1);
    drop(crashing);
    let payer = KeyedPayer {
        world: world.clone(),
        ..KeyedPayer::default()
    };
    let mut recovered = durable(Arc::clone(&storage), &id, payer, config(0));
    recovered.activate().await.expect("recover");
    assert_eq!(
        world.calls().len(),
        2,
        "recovery runs the unjournaled effect again"
    );
    assert_eq!(
        recovered.behavior().keys.len(),
        1,
        "and completes the message"
    );
}

/// Rule 21: when the storage refuses a message's last batch
/// (here: its `MessageProcessed`, even cut, is larger than an entry may
/// be, because the message id is), the message is not journaled at all:
/// the actor must not keep the state it left, and must not go on from it.
pub async fn facet_refused_end_of_message_keeps_no_state(storage: Arc<dyn JournalStorage>) {
    let id = fresh_actor("facet-refused");
    let limit = storage.limits().max_entry_bytes;
    // A message id as large as a MessageReceived can hold, with 40 bytes
    // to spare: the cut MessageProcessed (id twice, and a reason of ~130
    // bytes) is then too large.
    let received = |len: usize| {
        let m = MessageReceived {
            message_id: "x".repeat(len),
            payload: 1000u64.to_le_bytes().to_vec(),
            ..MessageReceived::default()
        };
        let entry = JournalEntry::new(&id, 1, Entry::MessageReceived(m.clone()))
            .with_correlation_id(&m.message_id);
        (m, entry.encoded_len())
    };
    let mut len = limit / 2;
    while received(len).1 + 40 > limit {
        len -= 1;
    }
    let (big, size) = received(len);
    assert!(size <= limit);
    let echo = || durable(Arc::clone(&storage), &id, Echo::default(), config(0));
    let mut actor = echo();
    let first = actor.send(big).await;
    assert!(first.is_err(), "{first:?}");
    let journaled = storage.highest_sequence(&id).await.expect("highest");
    assert_eq!(journaled, 0, "nothing of it could be journaled");
    assert_eq!(
        actor.behavior().handled,
        0,
        "state of a message that is not in the journal is handed out"
    );
    let small = MessageReceived {
        message_id: "small".into(),
        payload: 3u64.to_le_bytes().to_vec(),
        ..MessageReceived::default()
    };
    actor.send(small).await.expect("the actor goes on");
    let live = actor.behavior().handled;
    drop(actor);
    let mut again = echo();
    again.activate().await.expect("recover");
    assert_eq!(
        again.behavior().handled,
        live,
        "the live state went on from a message the journal does not hold"
    );
}

/// `batch_journal_writes`: the same journal, written in fewer appends,
/// recovers to the same state without running an effect again, and still
/// recognises redeliveries.
pub async fn facet_batched_writes_recover_the_same(storage: Arc<dyn JournalStorage>) {
    let id = fresh_actor("facet-batched");
    let world = OutsideWorld::default();
    let batched = DurabilityConfig {
        batch_journal_writes: true,
        ..config(7)
    };
    let (mut first, _) = account_actor(Arc::clone(&storage), &id, batched.clone(), &world);
    run(&mut first, &workload(24)).await;
    let before = first.behavior().clone();
    let calls = world.calls();
    drop(first);
    let (mut again, _) = account_actor(Arc::clone(&storage), &id, batched, &world);
    again.activate().await.expect("recover");
    assert_eq!(again.behavior(), &before);
    assert_eq!(world.calls(), calls, "no side effect ran again");
    assert!(matches!(
        again
            .send(workload(24)[2].clone())
            .await
            .expect("redeliver"),
        Delivery::Duplicate(Some(_))
    ));
    drop(again);
    let (mut eager, _) = account_actor(Arc::clone(&storage), &id, config(7), &world);
    eager
        .activate()
        .await
        .expect("an eager facet reads the batched journal");
    assert_eq!(eager.behavior(), &before);
}
