//! `journal demo`: a bank of durable accounts, typed actors of an actor
//! system, crashes part-way and recovers; transfers between its accounts
//! that are not confirmed in time are reversed by durable timers that fire
//! after the crash; every balance, payment and transfer is checked against
//! a run without a crash.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::TryStreamExt;
use indicatif::ProgressBar;
use journal_actors::{ActorSystem, SendError, SystemEvent, TypedActor, TypedDurable};
use journal_core::durability::ActivationReport;
use journal_core::journal_entry::Entry;
use journal_core::{rebuild_at, Delivery, JournalBackend, JournalStorage, MessageOutcome};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinSet;

use crate::account::{self, Account, AccountMessage, CrashPlan, PaymentNetwork, Simulation};
use crate::backend::{self, Access, Failure, Journal, Store};
use crate::output::{count, counted, progress, shell_quoted, size, speedup, Printer};

/// Prints a line of the demo's report.
macro_rules! say {
    ($report:expr, $($arg:tt)*) => {
        $report.out.line(format_args!($($arg)*))
    };
}
use crate::Outcome;

/// The longest the demo waits for timers beyond their due time.
const PATIENCE: Duration = Duration::from_secs(30);

/// `journal demo` options.
#[derive(clap::Args)]
pub struct DemoArgs {
    /// The SQLite file the accounts journal to.
    #[arg(long, default_value = "journal-demo.db")]
    db: PathBuf,
    /// Run on this journal instead of --db (postgres://..., redis://...).
    #[arg(long)]
    url: Option<String>,
    /// Accounts, each handled concurrently with the others.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    actors: u64,
    /// Messages per account; the crash comes after 60% of them.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(5..=1_000_000))]
    messages: u64,
}

/// The actor system the accounts run on.
type System = ActorSystem<Arc<dyn Store>>;

struct Setup {
    url: String,
    backend: JournalBackend,
    accounts: usize,
    messages: u64,
    /// The first workload message an account may crash in.
    crash_from: u64,
    network: PaymentNetwork,
}

impl Setup {
    /// An actor system hosting the accounts on `journal`. With `crash`,
    /// each account stops dead in its first payment from message
    /// `crash_from` on, and tells `crash` its index.
    fn system(&self, journal: &Journal, crash: Option<UnboundedSender<usize>>) -> System {
        let network = self.network.clone();
        let from_message = self.crash_from;
        ActorSystem::builder(Arc::clone(&journal.store))
            .register::<Account>(account::config(self.backend), move |id| {
                let plan = crash.clone().zip(account::index_of(id));
                let crash = plan.map(|(stopped, index)| CrashPlan {
                    from_message,
                    stopped,
                    index,
                });
                Account::new(Some(network.clone()), crash)
            })
            .start()
    }

    /// Account `from`'s transfer: to the next account, 20 to 40.
    fn transfer(&self, from: usize) -> (usize, AccountMessage) {
        let to = (from + 1) % self.accounts;
        let amount = [20, 25, 30, 35, 40][from % 5];
        let to_id = account::actor_id(to);
        let confirm_within_secs = self.confirm_within().as_secs();
        let transfer = AccountMessage::Transfer {
            to: to_id,
            amount,
            confirm_within_secs,
        };
        (to, transfer)
    }

    /// How long the receivers wait for a transfer's confirmation: 2 s, and
    /// more for many accounts, so that every deadline passes after the
    /// crash (the confirmations and the run up to the crash take longer).
    fn confirm_within(&self) -> Duration {
        Duration::from_secs(2 + self.accounts as u64 / 250)
    }

    /// The workload messages before the crash zone.
    fn before_crash(&self) -> u64 {
        self.crash_from - 1
    }
}

/// A transfer between two accounts made in phase 1.
#[derive(Debug, Clone)]
struct Transfer {
    id: String,
    to: usize,
    /// Confirmed by its receiver (odd accounts confirm, even ones let
    /// the deadline pass).
    confirmed: bool,
}

/// What phase 1 left behind.
struct Crashed {
    /// Workload messages acknowledged to each account's sender.
    acked: Vec<u64>,
    transfers: Vec<Transfer>,
    /// When the transfers were made.
    transferred_at: Instant,
    /// The timers the first system fired, before the crash.
    fired_before: Vec<String>,
    /// The timers that delivered the transfers.
    incoming: Vec<String>,
}

/// Runs the demo.
pub async fn run(args: DemoArgs) -> Result<Outcome, Failure> {
    let url = args
        .url
        .clone()
        .unwrap_or_else(|| format!("sqlite:{}", args.db.display()));
    if url.to_ascii_lowercase().starts_with("memory:") {
        return Err(Failure::new(
            "the demo reopens its journal after the crash, which a memory: journal does not survive: use --db PATH or a postgres:// or redis:// URL",
        ));
    }
    let journal = backend::open(&url, Access::Write).await?;
    let backend = match journal.storage.backend_name() {
        "sqlite" => JournalBackend::Sqlite,
        "postgres" => JournalBackend::Postgres,
        "redis" => JournalBackend::Redis,
        _ => JournalBackend::Memory,
    };
    let mut report = Report::new();
    let setup = Setup {
        url,
        backend,
        accounts: usize::try_from(args.actors).unwrap_or(usize::MAX),
        messages: args.messages,
        crash_from: (args.messages * 3 / 5).max(2),
        network: PaymentNetwork::default(),
    };
    let what = match journal.sqlite_path() {
        Some(path) => format!("{} (SQLite, WAL, synchronous=FULL)", path.display()),
        None => journal.shown.clone(),
    };
    say!(
        report,
        "journal demo: {} x {} on {what}, as typed actors of an actor system",
        counted(setup.accounts as u64, "account", "accounts"),
        counted(setup.messages as u64, "message", "messages")
    )?;
    let removed = remove_previous_run(&journal).await?;
    if removed > 0 {
        say!(
            report,
            "  removed the previous demo run ({removed} accounts)"
        )?;
    }
    // The same bank without journal, crash or recovery, step by step.
    let mut sim = Simulation::new(setup.accounts);

    // Phase 1: run, transfer, crash inside a payment.
    say!(
        report,
        "[1/5] running: deposits, and payments to the outside world through the payment network"
    )?;
    let mut crashed = crash_phase(&setup, &journal, &mut sim, &mut report).await?;

    // Phase 2: a new system on the reopened journal; redeliveries.
    journal.close().await;
    let journal = backend::open(&setup.url, Access::Write).await?;
    let system = setup.system(&journal, None);
    let log = EventLog::follow(&system);
    recover_phase(&setup, &system, &log, &mut crashed, &mut sim, &mut report).await?;

    // Phase 3: the deadlines pass.
    deadline_phase(&setup, &journal, &log, &crashed, &mut sim, &mut report).await?;

    // Phase 4: the senders carry on.
    say!(
        report,
        "[4/5] the senders carry on with the rest of their messages"
    )?;
    finish_phase(&setup, &system, &crashed, &mut sim, &mut report).await?;

    // Phase 5: what checkpoints buy.
    say!(
        report,
        "[5/5] recovery from checkpoints against a full replay"
    )?;
    compare_recovery(&setup, &journal, &sim, &mut report).await?;
    system.shutdown().await;
    drop(system);

    conclude(journal, report).await
}

/// Phase 1: every account runs up to its crash zone; each sends a transfer
/// to the next, which the odd receivers confirm; then every account runs
/// on until it stops dead inside a payment (or runs out of messages), and
/// the system goes away as a crashed process would.
async fn crash_phase(
    setup: &Setup,
    journal: &Journal,
    sim: &mut Simulation,
    report: &mut Report,
) -> Result<Crashed, Failure> {
    let (stopped, mut stops) = tokio::sync::mpsc::unbounded_channel();
    let system = setup.system(journal, Some(stopped.clone()));
    let log = EventLog::follow(&system);
    let acked: Arc<Vec<AtomicU64>> =
        Arc::new((0..setup.accounts).map(|_| AtomicU64::new(0)).collect());
    let bar = progress(setup.accounts as u64 * setup.crash_from, "running");

    let before = setup.before_crash();
    let mut tasks = workloads(&system, setup, &acked, &bar, before, None);
    while let Some(ended) = tasks.join_next().await {
        joined(ended)?;
    }
    for index in 0..setup.accounts {
        sim_workload(sim, setup, index, 0..before).await;
    }

    let transferred_at = Instant::now();
    let (transfers, incoming) = transfer(setup, journal, &system, sim, report).await?;

    let mut tasks = workloads(&system, setup, &acked, &bar, setup.messages, Some(&stopped));
    drop(stopped);
    let mut waiting: BTreeSet<usize> = (0..setup.accounts).collect();
    let mut finished = 0;
    while !waiting.is_empty() {
        tokio::select! {
            Some(index) = stops.recv() => {
                if waiting.remove(&index)
                    && acked[index].load(Ordering::Relaxed) == setup.messages
                {
                    finished += 1;
                }
            }
            Some(ended) = tasks.join_next() => joined(ended)?,
            else => return Err(Failure::new("the accounts stopped without reaching their crash point")),
        }
    }
    // The crash: every account still inside a message is dropped mid-way,
    // with the system, its timer loop and its senders.
    tasks.shutdown().await;
    drop(system);
    bar.finish_and_clear();
    if finished > 0 {
        say!(
            report,
            "      {finished} accounts ran out of messages before their crash point"
        )?;
    }
    let acked: Vec<u64> = acked.iter().map(|a| a.load(Ordering::Relaxed)).collect();
    say!(report,
        "      crash: every account stopped dead inside a payment, after the network was paid and the result journaled, before the message completed ({} acknowledged)",
        counted(acked.iter().sum(), "message", "messages")
    )?;
    Ok(Crashed {
        acked,
        transfers,
        transferred_at,
        fired_before: log.fired(),
        incoming,
    })
}

/// Phase 1's transfers: each account sends one to the next, the odd
/// receivers confirm theirs. Returns the transfers made and the ids of the
/// timers that delivered them.
async fn transfer(
    setup: &Setup,
    journal: &Journal,
    system: &System,
    sim: &mut Simulation,
    report: &mut Report,
) -> Result<(Vec<Transfer>, Vec<String>), Failure> {
    let mut tasks = JoinSet::new();
    for from in 0..setup.accounts {
        let (to, message) = setup.transfer(from);
        let sender = system.actor::<Account>(account::actor_id(from));
        tasks.spawn(async move { (from, to, sender.send_with_id("transfer", message).await) });
    }
    let mut sent = BTreeMap::new();
    while let Some(ended) = tasks.join_next().await {
        let (from, to, outcome) =
            ended.map_err(|e| Failure::new(format!("a transfer's task failed: {e}")))?;
        sent.insert(from, (to, acknowledged(outcome)?));
    }
    let mut transfers = Vec::new();
    for (from, (to, outcome)) in sent {
        let (_, message) = setup.transfer(from);
        let expected = sim.send(from, "transfer", &message).await;
        report.expect(
            outcome.is_ok() == expected.is_ok(),
            format!(
                "{}: the transfer gave {outcome:?}, a run without a crash {expected:?}",
                account::actor_id(from)
            ),
        );
        if outcome.is_ok() {
            let id = format!("{}/transfer", account::actor_id(from));
            let confirmed = to % 2 == 1;
            transfers.push(Transfer { id, to, confirmed });
        }
    }
    // Each is delivered to its receiver by a timer due at once.
    let incoming = sim
        .fire(|m| matches!(m, AccountMessage::Incoming { .. }))
        .await;
    timers_done(journal, &incoming, PATIENCE, "the transfers' delivery").await?;
    let mut tasks = JoinSet::new();
    for transfer in transfers.iter().filter(|t| t.confirmed) {
        let confirm = AccountMessage::Confirm {
            transfer: transfer.id.clone(),
        };
        let receiver = system.actor::<Account>(account::actor_id(transfer.to));
        tasks.spawn(async move {
            let live = receiver.send_with_id("confirm", confirm.clone()).await;
            (receiver.id().to_owned(), confirm, live)
        });
    }
    let mut confirms = BTreeMap::new();
    while let Some(ended) = tasks.join_next().await {
        let (receiver, confirm, live) =
            ended.map_err(|e| Failure::new(format!("a confirmation's task failed: {e}")))?;
        confirms.insert(receiver, (confirm, acknowledged(live)?));
    }
    for (receiver, (confirm, live)) in confirms {
        let index = account::index_of(&receiver).unwrap_or_default();
        let expected = sim.send(index, "confirm", &confirm).await;
        report.expect(
            live.is_ok() && expected.is_ok(),
            format!("{receiver}: confirming gave {live:?} (a run without a crash: {expected:?})"),
        );
    }
    let confirmed = transfers.iter().filter(|t| t.confirmed).count();
    say!(report,
        "      transfers: {} made, each account sending 20 to 40 to the next, held by the receiver until it confirms; {confirmed} confirmed, {} left to their {:?} deadline timers",
        transfers.len(),
        transfers.len() - confirmed,
        setup.confirm_within()
    )?;
    Ok((transfers, incoming))
}

/// Phase 2: the senders redeliver each account's first unacknowledged
/// message; each account recovers from the reopened journal at its first
/// message. Recovery completed the interrupted payment from the journal:
/// the redelivery is a duplicate answered with the recorded reply.
async fn recover_phase(
    setup: &Setup,
    system: &System,
    log: &EventLog,
    crashed: &mut Crashed,
    sim: &mut Simulation,
    report: &mut Report,
) -> Result<(), Failure> {
    say!(report,
        "[2/5] a new actor system on the reopened journal; the senders redeliver what was not acknowledged"
    )?;
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for (index, &acked) in crashed.acked.iter().enumerate() {
        if acked == setup.messages {
            continue;
        }
        let (id, message) = account::messages(index, acked + 1).swap_remove(to_index(acked));
        let system = system.clone();
        tasks.spawn(async move {
            // The bytes-level send: its `Delivery` says whether the
            // message was a duplicate.
            let message = account::received(&id, &message);
            let actor = account::actor_id(index);
            (index, system.send(Account::TYPE, &actor, message).await)
        });
    }
    let mut redelivered = BTreeMap::new();
    while let Some(ended) = tasks.join_next().await {
        let (index, delivery) =
            ended.map_err(|e| Failure::new(format!("a redelivery's task failed: {e}")))?;
        let delivery = delivery.map_err(|e| Failure::new(format!("redelivery: {e}")))?;
        let (duplicate, outcome) = match delivery {
            Delivery::Duplicate(Some(outcome)) => (true, outcome),
            Delivery::Duplicate(None) => {
                return Err(Failure::new(format!(
                    "{}: the redelivered message's reply is unknown",
                    account::actor_id(index)
                )))
            }
            Delivery::Replied(reply) => (false, MessageOutcome::Replied(reply)),
            Delivery::Failed(reason) => (false, MessageOutcome::Failed(reason)),
        };
        let reply = match outcome {
            MessageOutcome::Replied(bytes) => {
                serde_json::from_slice::<i64>(&bytes).map_err(|e| e.to_string())
            }
            MessageOutcome::Failed(reason) => Err(reason),
        };
        redelivered.insert(index, (duplicate, reply));
    }
    let elapsed = started.elapsed();
    let recovered = log
        .wait_for_activations(redelivered.len(), Duration::from_secs(10))
        .await;
    let (mut replayed, mut completed, mut from_checkpoint) = (0, 0, 0);
    for recovery in recovered.values() {
        replayed += recovery.replayed_entries;
        completed += u64::from(recovery.completed_interrupted_message);
        from_checkpoint += u64::from(recovery.checkpoint_sequence.is_some());
    }

    // The run without a crash, to the same point.
    let before = setup.before_crash();
    let mut duplicates = 0;
    for index in 0..setup.accounts {
        let acked = crashed.acked[index];
        let upto = acked + u64::from(redelivered.contains_key(&index));
        let replies = sim_workload(sim, setup, index, before..upto).await;
        if let Some((duplicate, reply)) = redelivered.get(&index) {
            duplicates += u64::from(*duplicate);
            let expected = replies.last().cloned();
            report.expect(
                Some(reply) == expected.as_ref(),
                format!(
                    "{}: after its interrupted payment {reply:?}, where a run without a crash has {expected:?}",
                    account::actor_id(index)
                ),
            );
        }
        crashed.acked[index] = upto;
    }
    say!(report,
        "      {} recovered in {elapsed:.1?}: {from_checkpoint} from a checkpoint, {} replayed, {completed} interrupted payments completed from the journal (the network was not called again)",
        counted(recovered.len() as u64, "account", "accounts"),
        counted(replayed, "entry", "entries")
    )?;
    report.expect(
        recovered.len() == redelivered.len(),
        format!(
            "{} accounts reported their recovery, {} were redelivered to",
            recovered.len(),
            redelivered.len()
        ),
    );
    report.check(
        "every recovered balance equals what was acknowledged, with the interrupted payments completed",
    )?;
    report.expect(
        duplicates == completed,
        format!(
            "{duplicates} redelivered messages were recognised as duplicates, expected {completed}"
        ),
    );
    report.check(&format!(
        "{duplicates} redelivered messages recognised as already handled, not handled twice"
    ))?;
    Ok(())
}

/// Phase 3: the unconfirmed transfers' deadlines pass, after the restart:
/// their timers reverse them, and the reversals' timers give the money
/// back to the senders.
async fn deadline_phase(
    setup: &Setup,
    journal: &Journal,
    log: &EventLog,
    crashed: &Crashed,
    sim: &mut Simulation,
    report: &mut Report,
) -> Result<(), Failure> {
    let unconfirmed = crashed.transfers.iter().filter(|t| !t.confirmed).count();
    say!(report,
        "[3/5] deadlines: {unconfirmed} transfers were not confirmed; their timers were scheduled before the crash"
    )?;
    let deadlines = sim
        .fire(|m| matches!(m, AccountMessage::Deadline { .. }))
        .await;
    let reversals = sim
        .fire(|m| matches!(m, AccountMessage::Reversal { .. }))
        .await;
    // A reversal's timer is in the index before its deadline's delivery
    // completes: once the deadlines are gone, the reversals can be waited
    // for.
    let patience = setup.confirm_within() + PATIENCE;
    timers_done(journal, &deadlines, patience, "the deadlines").await?;
    timers_done(journal, &reversals, PATIENCE, "the reversals").await?;
    let waited = crashed.transferred_at.elapsed();

    let mut scheduled: Vec<String> = sim
        .accounts()
        .flat_map(|a| a.received.values().map(|r| r.deadline.to_string()))
        .collect();
    scheduled.extend(crashed.incoming.iter().cloned());
    scheduled.extend(reversals.iter().cloned());
    let mut left = 0;
    for id in &scheduled {
        left += usize::from(journal.store.get_timer(id).await?.is_some());
    }
    let expected: BTreeMap<String, usize> = deadlines
        .iter()
        .chain(&reversals)
        .map(|id| (id.clone(), 1))
        .collect();
    // A timer leaves the index just before its event is sent.
    log.wait_for_fired(&expected, PATIENCE).await;
    let mut fired_after: BTreeMap<String, usize> = BTreeMap::new();
    for id in log.fired() {
        *fired_after.entry(id).or_default() += 1;
    }
    let early = deadlines
        .iter()
        .filter(|id| crashed.fired_before.contains(id))
        .count();
    report.expect(
        early == 0,
        format!(
            "{early} deadline timers fired before the crash (the transfers' confirmation window, {:?}, passed before it)",
            setup.confirm_within()
        ),
    );
    report.expect(
        fired_after == expected && log.lost() == 0,
        format!(
            "after the restart the timers fired {fired_after:?}, where a run without a crash fires {expected:?} once each ({} events lost)",
            log.lost()
        ),
    );
    report.expect(
        left == 0,
        format!("{left} of the transfers' timers are still in the index"),
    );
    let confirmed = crashed.transfers.len() - unconfirmed;
    let cancelled = if confirmed > 0 {
        format!("; the {confirmed} confirmed transfers' timers, cancelled before the crash, never fired")
    } else {
        String::new()
    };
    say!(report,
        "      the deadlines passed after the restart, {:.1}s after the transfers: {} deadline timers fired and reversed their transfers, {} reversal timers gave the money back to the senders{cancelled}",
        waited.as_secs_f64(),
        deadlines.len(),
        reversals.len()
    )?;
    report.check(
        "every unconfirmed transfer reversed once, by timers that fired after the restart; no timer left in the index",
    )?;
    Ok(())
}

/// Phase 4: each account's sender sends the rest of its messages; then
/// every balance is asked for and compared with the run without a crash,
/// and the payments with those that run makes.
async fn finish_phase(
    setup: &Setup,
    system: &System,
    crashed: &Crashed,
    sim: &mut Simulation,
    report: &mut Report,
) -> Result<(), Failure> {
    let acked: Arc<Vec<AtomicU64>> =
        Arc::new(crashed.acked.iter().map(|&a| AtomicU64::new(a)).collect());
    let remaining: u64 = crashed.acked.iter().map(|a| setup.messages - a).sum();
    let bar = progress(remaining, "finishing");
    let mut tasks = workloads(system, setup, &acked, &bar, setup.messages, None);
    while let Some(ended) = tasks.join_next().await {
        joined(ended)?;
    }
    bar.finish_and_clear();
    let mut balances = Vec::with_capacity(setup.accounts);
    for index in 0..setup.accounts {
        let from = crashed.acked[index];
        sim_workload(sim, setup, index, from..setup.messages).await;
        let account = system.actor::<Account>(account::actor_id(index));
        let balance = account
            .send_with_id("balance", AccountMessage::Balance)
            .await
            .map_err(|e| Failure::new(format!("{}: {e}", account.id())))?;
        let want = sim.account(index).balance;
        report.expect(
            balance == want,
            format!(
                "{}: balance {balance} at the end, where a run without a crash has {want}",
                account.id()
            ),
        );
        balances.push(balance);
    }
    report.check("every final balance equals a run without a crash")?;

    let calls = setup.network.calls();
    let expected_calls = sim.network.calls();
    let twice = calls.values().filter(|c| c.times > 1).count();
    let paid: i64 = calls.values().filter(|c| c.paid).map(|c| c.amount).sum();
    let deposits: i64 = sim.accounts().map(|a| a.deposited).sum();
    let held: i64 = sim.accounts().map(Account::held).sum();
    let balances: i64 = balances.iter().sum();
    report.expect(
        twice == 0,
        format!("{twice} payments were made more than once"),
    );
    report.expect(
        calls.keys().eq(expected_calls.keys()),
        format!(
            "the network received {} payment requests, a run without a crash makes {}",
            calls.len(),
            expected_calls.len()
        ),
    );
    report.expect(
        balances + paid == deposits && held == 0,
        format!("money is not conserved: deposits {deposits}, balances {balances}, paid out {paid}, held {held}"),
    );
    report.check(&format!(
        "{} payment requests, none made twice; money conserved: deposits {deposits} = balances {balances} + paid out {paid}",
        count(calls.len() as u64)
    ))?;
    Ok(())
}

/// Phase 5: rebuilds every account at its last entry from its checkpoint
/// and from the first entry, timing both and checking both against the
/// run without a crash.
async fn compare_recovery(
    setup: &Setup,
    journal: &Journal,
    sim: &Simulation,
    report: &mut Report,
) -> Result<(), Failure> {
    let config = account::config(setup.backend);
    let mut timing = [(Duration::ZERO, 0u64); 2];
    for (index, want) in sim.accounts().enumerate() {
        let id = account::actor_id(index);
        let highest = journal.storage.highest_sequence(&id).await?;
        for (slot, from_checkpoint) in [true, false].into_iter().enumerate() {
            let mut state = TypedDurable::new(Account::new(None, None));
            let rebuilt = rebuild_at(
                Arc::clone(&journal.storage),
                &config,
                &id,
                &mut state,
                highest,
                from_checkpoint,
            )
            .await?;
            timing[slot].0 += rebuilt.elapsed;
            timing[slot].1 += rebuilt.replayed_entries;
            report.expect(
                state.actor() == want,
                format!(
                    "{id}: rebuilt (from checkpoint: {from_checkpoint}) balance {}, a run without a crash {}",
                    state.actor().balance,
                    want.balance
                ),
            );
        }
    }
    let [(checkpointed, few), (full, all)] = timing;
    say!(report,
        "      from checkpoints: {checkpointed:.1?} ({} replayed); full replay: {full:.1?} ({}): {}",
        counted(few, "entry", "entries"),
        counted(all, "entry", "entries"),
        speedup(full.as_secs_f64(), checkpointed.as_secs_f64())
    )?;
    report.check(
        "recovery from checkpoints and a full replay give the state of a run without a crash",
    )?;

    let (mut raw, mut stored, mut number) = (0u64, 0u64, 0u64);
    for index in 0..setup.accounts {
        let id = account::actor_id(index);
        for sequence in journal.storage.list_checkpoints(&id).await? {
            if let Some(checkpoint) = journal.storage.get_checkpoint(&id, sequence).await? {
                raw += checkpoint.uncompressed_size;
                stored += checkpoint.state_data.len() as u64;
                number += 1;
            }
        }
    }
    #[allow(clippy::cast_precision_loss)]
    let ratio = raw as f64 / (stored.max(1) as f64);
    say!(report,
        "      checkpoints: {number} kept (2 per account, one every {} entries), state {} raw, {} stored with zstd level {}: {ratio:.1}x smaller",
        config.checkpoint_interval,
        size(raw),
        size(stored),
        config.compression_level
    )?;
    Ok(())
}

/// What the demo left in the journal, and its verdict.
async fn conclude(journal: Journal, mut report: Report) -> Result<Outcome, Failure> {
    let stats = journal.storage.stats().await?;
    let mut file = String::new();
    if let Some(path) = journal.sqlite_path() {
        let bytes = std::fs::metadata(path).map_or(0, |m| m.len());
        file = format!(", file {}", size(bytes));
    }
    say!(
        report,
        "journal: {} and {} for {}{file}",
        counted(stats.entries, "entry", "entries"),
        counted(stats.checkpoints, "checkpoint", "checkpoints"),
        counted(stats.actors, "actor", "actors"),
    )?;
    let shown = journal.shown.clone();
    let account = account::actor_id(0);
    let middle = journal.storage.highest_sequence(&account).await? / 2;
    journal.close().await;
    if report.failed.is_empty() {
        say!(report, "all checks passed")?;
        // The program as it was started (`target/debug/journal` after
        // `cargo run`: no `journal` on the PATH), and the URL quoted for
        // the shell (a `?` in it is a glob to zsh).
        let program = std::env::args()
            .next()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "journal".into());
        let (program, shown) = (shell_quoted(&program), shell_quoted(&shown));
        say!(report, "look inside:")?;
        say!(report, "  {program} verify {shown}")?;
        say!(report, "  {program} actors {shown}")?;
        say!(report, "  {program} show {shown} {account} --limit 20")?;
        say!(report, "  {program} at {shown} {account} {middle}")?;
        Ok(Outcome::Ok)
    } else {
        for failure in &report.failed {
            eprintln!("FAILED: {failure}");
        }
        Ok(Outcome::Problems)
    }
}

/// Starts each account's sender: it sends its workload messages after the
/// ones acknowledged, up to message `until`, recording each acknowledged,
/// then tells `finished` its index.
fn workloads(
    system: &System,
    setup: &Setup,
    acked: &Arc<Vec<AtomicU64>>,
    bar: &ProgressBar,
    until: u64,
    finished: Option<&UnboundedSender<usize>>,
) -> JoinSet<Result<(), Failure>> {
    let mut tasks = JoinSet::new();
    for index in 0..setup.accounts {
        let account = system.actor::<Account>(account::actor_id(index));
        let first = acked[index].load(Ordering::Relaxed);
        let messages = account::messages(index, until);
        let (acked, bar, finished) = (Arc::clone(acked), bar.clone(), finished.cloned());
        tasks.spawn(async move {
            for (n, (id, message)) in (first + 1..).zip(messages.into_iter().skip(to_index(first)))
            {
                // A refusal (insufficient funds, a declined payment) is
                // acknowledged as a reply is.
                let _reply = acknowledged(account.send_with_id(id, message).await)
                    .map_err(|e| Failure::new(format!("{}: {e}", account.id())))?;
                acked[index].store(n, Ordering::Relaxed);
                bar.inc(1);
            }
            if let Some(finished) = finished {
                let _ = finished.send(index);
            }
            Ok(())
        });
    }
    tasks
}

/// Runs account `index`'s workload messages `range` (0-based) in the
/// simulation; returns their replies.
async fn sim_workload(
    sim: &mut Simulation,
    setup: &Setup,
    index: usize,
    range: Range<u64>,
) -> Vec<Result<i64, String>> {
    let messages = account::messages(index, range.end.min(setup.messages));
    let mut replies = Vec::new();
    for (id, message) in messages.iter().skip(to_index(range.start)) {
        replies.push(sim.send(index, id, message).await);
    }
    replies
}

/// A typed send's outcome as its sender sees it: a reply, or the
/// handler's refusal (both acknowledged); anything else fails the demo.
fn acknowledged(outcome: Result<i64, SendError>) -> Result<Result<i64, String>, Failure> {
    match outcome {
        Ok(balance) => Ok(Ok(balance)),
        Err(SendError::Handler(reason)) => Ok(Err(reason)),
        Err(e) => Err(Failure::new(e.to_string())),
    }
}

fn joined(ended: Result<Result<(), Failure>, tokio::task::JoinError>) -> Result<(), Failure> {
    ended.map_err(|e| Failure::new(format!("an account's task failed: {e}")))?
}

/// Waits until every timer of `ids` has left the index: delivered and
/// completed.
async fn timers_done(
    journal: &Journal,
    ids: &[String],
    patience: Duration,
    what: &str,
) -> Result<(), Failure> {
    let until = Instant::now() + patience;
    let mut waiting: Vec<&String> = ids.iter().collect();
    while !waiting.is_empty() {
        let mut still = Vec::new();
        for id in waiting {
            if journal.store.get_timer(id).await?.is_some() {
                still.push(id);
            }
        }
        waiting = still;
        if waiting.is_empty() {
            break;
        }
        if Instant::now() > until {
            return Err(Failure::new(format!(
                "{what}: {} did not fire within {patience:?}",
                counted(waiting.len() as u64, "timer", "timers")
            )));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

fn to_index(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// What a system reported, collected as it happens.
#[derive(Clone, Default)]
struct EventLog {
    events: Arc<Mutex<Vec<SystemEvent>>>,
    lost: Arc<AtomicU64>,
}

impl EventLog {
    /// Collects `system`'s events from now on.
    fn follow(system: &System) -> Self {
        let log = EventLog::default();
        let mut events = system.events();
        let (into, lost) = (Arc::clone(&log.events), Arc::clone(&log.lost));
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(event) => into
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(event),
                    Err(RecvError::Lagged(n)) => {
                        lost.fetch_add(n, Ordering::Relaxed);
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        });
        log
    }

    fn events(&self) -> Vec<SystemEvent> {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The timers fired, in order.
    fn fired(&self) -> Vec<String> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                SystemEvent::TimerFired { timer_id, .. } => Some(timer_id),
                _ => None,
            })
            .collect()
    }

    /// What recovery did for each account activated, once `wanted` were
    /// (or `patience` ran out).
    async fn wait_for_activations(
        &self,
        wanted: usize,
        patience: Duration,
    ) -> BTreeMap<String, ActivationReport> {
        let until = Instant::now() + patience;
        loop {
            let activated: BTreeMap<String, ActivationReport> = self
                .events()
                .into_iter()
                .filter_map(|e| match e {
                    SystemEvent::Activated {
                        actor_id, recovery, ..
                    } => Some((actor_id, recovery)),
                    _ => None,
                })
                .collect();
            if activated.len() >= wanted || Instant::now() > until {
                return activated;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits until every timer of `wanted` was reported fired (or
    /// `patience` ran out).
    async fn wait_for_fired(&self, wanted: &BTreeMap<String, usize>, patience: Duration) {
        let until = Instant::now() + patience;
        loop {
            let fired: BTreeSet<String> = self.fired().into_iter().collect();
            if wanted.keys().all(|id| fired.contains(id)) || Instant::now() > until {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Events the log missed (it fell behind).
    fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }
}

/// The demo's output, and its checks passed and failed.
struct Report {
    out: Printer,
    failed: Vec<String>,
    pending: usize,
}

impl Report {
    fn new() -> Self {
        Report {
            out: Printer::eager(),
            failed: Vec::new(),
            pending: 0,
        }
    }

    fn expect(&mut self, ok: bool, failure: String) {
        if !ok {
            self.failed.push(failure);
            self.pending += 1;
        }
    }

    /// Prints `what` as checked, or as failed when an `expect` since the
    /// last check failed.
    fn check(&mut self, what: &str) -> Result<(), Failure> {
        let verdict = if self.pending == 0 { "ok" } else { "FAILED" };
        self.pending = 0;
        say!(self, "      check {verdict}: {what}")
    }
}

/// Deletes the accounts a previous demo left in this journal, and takes
/// the timers they scheduled out of the index (a run interrupted by hand
/// may leave some due).
async fn remove_previous_run(journal: &Journal) -> Result<u64, Failure> {
    let previous: Vec<String> = journal
        .storage
        .list_actors()
        .try_filter(|id| futures::future::ready(id.starts_with(account::ACTOR_PREFIX)))
        .try_collect()
        .await?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    for id in &previous {
        // Best effort: a damaged journal is deleted all the same.
        if let Ok(entries) = journal.storage.replay_from(id, 1).await {
            for entry in entries {
                if let Some(Entry::TimerScheduled(timer)) = entry.entry {
                    journal.store.cancel_timer(&timer.timer_id, now).await?;
                }
            }
        }
        journal.storage.delete_actor(id).await?;
    }
    Ok(previous.len() as u64)
}
