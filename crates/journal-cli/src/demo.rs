//! `journal demo`: durable bank accounts crash part-way and recover, and
//! every balance and payment is checked against a run without a crash.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use journal_core::{
    rebuild_at, Actor, Delivery, DurabilityFacet, DurabilityObserver, JournalBackend,
    JournalStorage,
};
use tokio::task::JoinSet;

use crate::account::{self, Account, CrashPlan, PaymentNetwork};
use crate::backend::{self, Access, Failure, Journal};
use crate::output::{count, progress, size, Printer};

/// Prints a line of the demo's report.
macro_rules! say {
    ($report:expr, $($arg:tt)*) => {
        $report.out.line(format_args!($($arg)*))
    };
}
use crate::Outcome;

/// `journal demo` options.
#[derive(Debug, clap::Args)]
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

/// How phase 1 of an account ended.
#[derive(Debug)]
enum Stop {
    /// It reached its crash point.
    Crashed,
    /// It handled all its messages first.
    Finished,
}

struct Setup {
    url: String,
    backend: JournalBackend,
    accounts: usize,
    messages: u64,
    network: PaymentNetwork,
}

impl Setup {
    fn account(
        &self,
        journal: &Journal,
        index: usize,
        crash: Option<CrashPlan>,
    ) -> (Actor<Account>, DurabilityObserver) {
        let facet =
            DurabilityFacet::new(Arc::clone(&journal.storage), account::config(self.backend));
        let observer = facet.observer();
        let mut actor = Actor::new(
            account::actor_id(index),
            Account::new(Some(self.network.clone()), crash),
        );
        actor
            .facets()
            .attach(Box::new(facet))
            .expect("the only facet");
        (actor, observer)
    }
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
        network: PaymentNetwork::default(),
    };
    let what = match journal.sqlite_path() {
        Some(path) => format!("{} (SQLite, WAL, synchronous=FULL)", path.display()),
        None => journal.shown.clone(),
    };
    say!(
        report,
        "journal demo: {} accounts x {} messages on {what}",
        setup.accounts,
        setup.messages
    )?;
    let removed = remove_previous_run(&journal).await?;
    if removed > 0 {
        say!(
            report,
            "  removed the previous demo run ({removed} accounts)"
        )?;
    }

    // Phase 1: run until every account has crashed inside a transfer.
    let crash_from = (setup.messages * 3 / 5).max(2);
    say!(
        report,
        "[1/4] running: deposits, and transfers that pay through the payment network"
    )?;
    let acked = crash_phase(&setup, &journal, crash_from, &mut report).await?;
    let acknowledged: u64 = acked.iter().map(|a| a.load(Ordering::Relaxed)).sum();
    say!(report,
        "      crash: every account stopped dead inside a transfer, after the payment was made and journaled, before the message completed ({} messages acknowledged)",
        count(acknowledged)
    )?;

    // Phase 2: reopen the journal, recover, compare with what was acknowledged.
    journal.close().await;
    let journal = backend::open(&setup.url, Access::Write).await?;
    let (recovered, completed) = recover_phase(&setup, &journal, &acked, &mut report).await?;

    // Phase 3: the senders redeliver what was not acknowledged, then go on.
    say!(
        report,
        "[3/4] the senders redeliver unacknowledged messages and carry on"
    )?;
    let (actors, duplicates) = finish_phase(&setup, recovered, &acked).await?;
    report.expect(
        duplicates == completed,
        format!(
            "{duplicates} redelivered messages were recognised as duplicates, expected {completed}"
        ),
    );
    report.check(&format!(
        "{duplicates} redelivered messages recognised as already handled, not handled twice"
    ))?;
    check_final(&setup, &actors, &mut report).await?;

    // Phase 4: what checkpoints buy.
    say!(
        report,
        "[4/4] recovery from checkpoints against a full replay"
    )?;
    compare_recovery(&setup, &journal, &actors, &mut report).await?;
    drop(actors); // their facets share the journal, which is closed below

    conclude(journal, report).await
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
        "journal: {} entries and {} checkpoints for {} actors{file}",
        count(stats.entries),
        count(stats.checkpoints),
        count(stats.actors),
    )?;
    let shown = journal.shown.clone();
    let account = account::actor_id(0);
    let middle = journal.storage.highest_sequence(&account).await? / 2;
    journal.close().await;
    if report.failed.is_empty() {
        say!(report, "all checks passed")?;
        say!(report, "look inside:")?;
        say!(report, "  journal verify {shown}")?;
        say!(report, "  journal actors {shown}")?;
        say!(report, "  journal show {shown} {account} --limit 20")?;
        say!(report, "  journal at {shown} {account} {middle}")?;
        Ok(Outcome::Ok)
    } else {
        for failure in &report.failed {
            eprintln!("FAILED: {failure}");
        }
        Ok(Outcome::Problems)
    }
}

/// Phase 2: every account recovers from the reopened journal and is
/// compared with what its sender had acknowledged. Returns the accounts and
/// how many interrupted messages recovery completed.
async fn recover_phase(
    setup: &Setup,
    journal: &Journal,
    acked: &[AtomicU64],
    report: &mut Report,
) -> Result<(Vec<Actor<Account>>, u64), Failure> {
    say!(
        report,
        "[2/4] recovering every account from the reopened journal"
    )?;
    let started = Instant::now();
    let mut recovered = Vec::with_capacity(setup.accounts);
    let (mut replayed, mut completed, mut from_checkpoint) = (0, 0, 0);
    for (index, acked) in acked.iter().enumerate() {
        let (mut actor, observer) = setup.account(journal, index, None);
        actor.activate().await?;
        let activation = observer.stats().activation;
        replayed += activation.replayed_entries;
        completed += u64::from(activation.completed_interrupted_message);
        from_checkpoint += u64::from(activation.checkpoint_sequence.is_some());
        let done =
            acked.load(Ordering::Relaxed) + u64::from(activation.completed_interrupted_message);
        let all = account::messages(index, setup.messages);
        let (want, _) = account::expected(index, &all[..to_index(done)]).await;
        report.expect_account(&actor, &want, &format!("recovered after {done} messages"));
        recovered.push(actor);
    }
    say!(report,
        "      {} accounts recovered in {:.1?}: {from_checkpoint} from a checkpoint, {} entries replayed, {completed} interrupted transfers completed from the journal (the network was not called again)",
        setup.accounts,
        started.elapsed(),
        count(replayed)
    )?;
    report.check(
        "every recovered balance equals what was acknowledged, with the interrupted transfers completed",
    )?;

    Ok((recovered, completed))
}

/// After phase 3: every account as in a run without a crash, no payment
/// made twice, money conserved.
async fn check_final(
    setup: &Setup,
    actors: &[Actor<Account>],
    report: &mut Report,
) -> Result<(), Failure> {
    let mut expected_calls = BTreeMap::new();
    let (mut deposits, mut balances, mut paid) = (0i64, 0i64, 0i64);
    for (index, actor) in actors.iter().enumerate() {
        let all = account::messages(index, setup.messages);
        let (want, network) = account::expected(index, &all).await;
        report.expect_account(actor, &want, "at the end");
        deposits += want.balance + want.paid_out;
        balances += actor.behavior().balance;
        paid += actor.behavior().paid_out;
        expected_calls.extend(network.calls());
    }
    report.check("every final balance equals a run without a crash")?;
    let calls = setup.network.calls();
    let twice = calls.values().filter(|c| c.times > 1).count();
    let paid_by_network: i64 = calls.values().filter(|c| c.paid).map(|c| c.amount).sum();
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
        paid_by_network == paid && balances + paid == deposits,
        format!("money is not conserved: deposits {deposits}, balances {balances}, paid out {paid} (network {paid_by_network})"),
    );
    report.check(&format!(
        "{} payment requests, none made twice; money conserved: deposits {deposits} = balances {balances} + paid out {paid}",
        count(calls.len() as u64)
    ))?;
    Ok(())
}

fn to_index(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
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
    /// last report failed.
    /// Expects `actor` to hold `want`'s state; `when` says which point.
    fn expect_account(&mut self, actor: &Actor<Account>, want: &Account, when: &str) {
        self.expect(
            actor.behavior() == want,
            format!(
                "{}: {when}, balance {} where {} was expected",
                actor.id(),
                actor.behavior().balance,
                want.balance
            ),
        );
    }

    fn check(&mut self, what: &str) -> Result<(), Failure> {
        let verdict = if self.pending == 0 { "ok" } else { "FAILED" };
        self.pending = 0;
        say!(self, "      check {verdict}: {what}")
    }
}

/// Deletes the accounts a previous demo left in this journal.
async fn remove_previous_run(journal: &Journal) -> Result<u64, Failure> {
    let previous: Vec<String> = journal
        .storage
        .list_actors()
        .try_filter(|id| futures::future::ready(id.starts_with(account::ACTOR_PREFIX)))
        .try_collect()
        .await?;
    for id in &previous {
        journal.storage.delete_actor(id).await?;
    }
    Ok(previous.len() as u64)
}

/// Phase 1: every account handles its messages concurrently with the
/// others until it stops dead in a transfer from message `crash_from` on
/// (or runs out of messages). Returns, per account, the number of
/// messages acknowledged to its sender.
async fn crash_phase(
    setup: &Setup,
    journal: &Journal,
    crash_from: u64,
    report: &mut Report,
) -> Result<Arc<Vec<AtomicU64>>, Failure> {
    let acked: Arc<Vec<AtomicU64>> =
        Arc::new((0..setup.accounts).map(|_| AtomicU64::new(0)).collect());
    let (stopped, mut stops) = tokio::sync::mpsc::unbounded_channel();
    let bar = progress(setup.accounts as u64 * crash_from, "running");
    let mut tasks = JoinSet::new();
    for index in 0..setup.accounts {
        let plan = CrashPlan {
            from_message: crash_from,
            stopped: stopped.clone(),
            index,
        };
        let (mut actor, _) = setup.account(journal, index, Some(plan));
        let (acked, bar, finished) = (Arc::clone(&acked), bar.clone(), stopped.clone());
        let messages = account::messages(index, setup.messages);
        tasks.spawn(async move {
            for (n, message) in (1..).zip(messages) {
                actor.send(message).await?;
                acked[index].store(n, Ordering::Relaxed);
                bar.inc(1);
            }
            let _ = finished.send(index);
            Ok::<_, journal_core::JournalError>(())
        });
    }
    drop(stopped);
    let mut outcomes: Vec<Option<Stop>> = (0..setup.accounts).map(|_| None).collect();
    let mut waiting = setup.accounts;
    while waiting > 0 {
        tokio::select! {
            Some(index) = stops.recv() => {
                if outcomes[index].is_none() {
                    let done = acked[index].load(Ordering::Relaxed) == setup.messages;
                    outcomes[index] = Some(if done { Stop::Finished } else { Stop::Crashed });
                    waiting -= 1;
                }
            }
            Some(ended) = tasks.join_next() => {
                // A task ends by itself only when it finished or failed.
                match ended {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Err(e.into()),
                    Err(e) => return Err(Failure::new(format!("an account's task failed: {e}"))),
                }
            }
            else => return Err(Failure::new("the accounts stopped without reaching their crash point")),
        }
    }
    // The crash: every account still inside a message is dropped mid-way.
    tasks.shutdown().await;
    bar.finish_and_clear();
    let finished = outcomes
        .iter()
        .filter(|o| matches!(o, Some(Stop::Finished)))
        .count();
    if finished > 0 {
        say!(
            report,
            "      {finished} accounts ran out of messages before their crash point"
        )?;
    }
    Ok(acked)
}

/// Phase 3: each account's sender redelivers its first unacknowledged
/// message and sends the rest. Returns the accounts and how many
/// redeliveries were duplicates.
async fn finish_phase(
    setup: &Setup,
    actors: Vec<Actor<Account>>,
    acked: &[AtomicU64],
) -> Result<(Vec<Actor<Account>>, u64), Failure> {
    let remaining: u64 = acked
        .iter()
        .map(|a| setup.messages - a.load(Ordering::Relaxed))
        .sum();
    let bar = progress(remaining, "finishing");
    let mut tasks = JoinSet::new();
    for (index, mut actor) in actors.into_iter().enumerate() {
        let first = to_index(acked[index].load(Ordering::Relaxed));
        let messages = account::messages(index, setup.messages);
        let bar = bar.clone();
        tasks.spawn(async move {
            let mut duplicates = 0;
            for message in messages.into_iter().skip(first) {
                if matches!(actor.send(message).await?, Delivery::Duplicate(_)) {
                    duplicates += 1;
                }
                bar.inc(1);
            }
            Ok::<_, journal_core::JournalError>((index, actor, duplicates))
        });
    }
    let mut done: Vec<Option<Actor<Account>>> = (0..setup.accounts).map(|_| None).collect();
    let mut duplicates = 0;
    while let Some(ended) = tasks.join_next().await {
        let (index, actor, dups) =
            ended.map_err(|e| Failure::new(format!("an account's task failed: {e}")))??;
        done[index] = Some(actor);
        duplicates += dups;
    }
    bar.finish_and_clear();
    Ok((done.into_iter().flatten().collect(), duplicates))
}

/// Phase 4: rebuilds every account at its last entry from its checkpoint
/// and from the first entry, timing both and checking they agree.
async fn compare_recovery(
    setup: &Setup,
    journal: &Journal,
    actors: &[Actor<Account>],
    report: &mut Report,
) -> Result<(), Failure> {
    let config = account::config(setup.backend);
    let mut timing = [(Duration::ZERO, 0u64); 2];
    for actor in actors {
        let highest = journal.storage.highest_sequence(actor.id()).await?;
        for (slot, from_checkpoint) in [true, false].into_iter().enumerate() {
            let mut state = Account::new(None, None);
            let rebuilt = rebuild_at(
                Arc::clone(&journal.storage),
                &config,
                actor.id(),
                &mut state,
                highest,
                from_checkpoint,
            )
            .await?;
            timing[slot].0 += rebuilt.elapsed;
            timing[slot].1 += rebuilt.replayed_entries;
            report.expect(
                &state == actor.behavior(),
                format!(
                    "{}: rebuilt (from checkpoint: {from_checkpoint}) balance {}, live {}",
                    actor.id(),
                    state.balance,
                    actor.behavior().balance
                ),
            );
        }
    }
    let [(checkpointed, few), (full, all)] = timing;
    say!(report,
        "      from checkpoints: {checkpointed:.1?} ({} entries replayed); full replay: {full:.1?} ({} entries): {:.1}x faster",
        count(few),
        count(all),
        full.as_secs_f64() / checkpointed.as_secs_f64().max(1e-9)
    )?;
    report.check("recovery from checkpoints and a full replay give the live state")?;

    let (mut raw, mut stored, mut number) = (0u64, 0u64, 0u64);
    for actor in actors {
        for sequence in journal.storage.list_checkpoints(actor.id()).await? {
            if let Some(checkpoint) = journal.storage.get_checkpoint(actor.id(), sequence).await? {
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
