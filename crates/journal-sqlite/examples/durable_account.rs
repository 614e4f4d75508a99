//! A durable bank account on an SQLite file, through a real crash.
//!
//! Process 1 handles transfers (each calls "the bank", a side effect whose
//! calls are logged to a file standing for the outside world) and aborts in
//! the middle of a message, right after that message's bank call was
//! journaled. Process 2 reopens the file, recovers the account, checks the
//! balance against what was sent and that no bank call happened twice, and
//! carries on.
//!
//! `cargo run -p journal-sqlite --example durable_account`

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::Arc;

use async_trait::async_trait;
use journal_core::{
    Actor, Delivery, DurabilityConfig, DurabilityFacet, DurabilityObserver, DurableActor,
    ExecutionContext, HandlerError, HandlerResult, JournalBackend, JournalError, MessageReceived,
};
use journal_sqlite::SqliteJournalStorage;

const MESSAGES: usize = 60;
const CRASH_IN: usize = 38; // a transfer (every third message, from the first, is a deposit)

/// The outside world: every bank call is appended to this file.
#[derive(Clone)]
struct Bank {
    log: PathBuf,
}

impl Bank {
    fn call(&self, transfer: &str, amount: i64) -> Result<Vec<u8>, String> {
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| e.to_string())?;
        writeln!(log, "{transfer}")
            .and_then(|()| log.sync_all())
            .map_err(|e| e.to_string())?;
        Ok(format!("receipt {transfer} {amount}").into_bytes())
    }

    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

// ---- the user's code: an account made durable ----
struct Account {
    balance: i64,
    transfers: u64,
    bank: Bank,
    crash_in: Option<String>,
}

#[async_trait]
impl DurableActor for Account {
    async fn handle(&mut self, msg: &MessageReceived, ctx: &mut ExecutionContext) -> HandlerResult {
        let amount = i64::from_le_bytes(
            msg.payload
                .as_slice()
                .try_into()
                .map_err(|_| HandlerError::failed("bad amount"))?,
        );
        match msg.message_type.as_str() {
            "deposit" => self.balance += amount,
            "transfer" if amount > self.balance => {
                return Err(HandlerError::failed("insufficient funds"))
            }
            "transfer" => {
                let bank = self.bank.clone();
                let id = msg.message_id.clone();
                ctx.side_effect("bank.transfer", || async move { bank.call(&id, amount) })
                    .await??;
                if self.crash_in.as_deref() == Some(msg.message_id.as_str()) {
                    // The bank call is journaled; MessageProcessed is not.
                    std::process::abort();
                }
                self.balance -= amount;
                self.transfers += 1;
            }
            other => return Err(HandlerError::failed(format!("unknown message {other}"))),
        }
        Ok(self.balance.to_le_bytes().to_vec())
    }
    fn snapshot(&self) -> Result<Vec<u8>, String> {
        Ok([self.balance.to_le_bytes(), self.transfers.to_le_bytes()].concat())
    }
    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        let (balance, transfers) = state.split_at_checked(8).ok_or("short state")?;
        self.balance = i64::from_le_bytes(balance.try_into().map_err(|_| "balance")?);
        self.transfers = u64::from_le_bytes(transfers.try_into().map_err(|_| "transfers")?);
        Ok(())
    }
}
// ---- end of the user's code ----

fn messages() -> Vec<MessageReceived> {
    (1..=MESSAGES)
        .map(|i| {
            let (kind, amount) = if i % 3 == 1 {
                ("deposit", 100)
            } else {
                ("transfer", 30 + i64::try_from(i % 7).unwrap_or(0))
            };
            MessageReceived {
                message_id: format!("msg-{i}"),
                message_type: kind.into(),
                payload: amount.to_le_bytes().to_vec(),
                ..MessageReceived::default()
            }
        })
        .collect()
}

/// The balance and transfer count after the first `n` messages, computed
/// without any journal.
fn expected_after(n: usize) -> (i64, u64) {
    let (mut balance, mut transfers) = (0i64, 0u64);
    for m in messages().iter().take(n) {
        let amount = i64::from_le_bytes(m.payload.as_slice().try_into().unwrap_or_default());
        match m.message_type.as_str() {
            "deposit" => balance += amount,
            _ if amount <= balance => {
                balance -= amount;
                transfers += 1;
            }
            _ => {}
        }
    }
    (balance, transfers)
}

async fn account(
    db: &Path,
    bank: &Bank,
    crash_in: Option<String>,
) -> Result<(Actor<Account>, DurabilityObserver), JournalError> {
    let storage = Arc::new(SqliteJournalStorage::new(db).await?);
    let config = DurabilityConfig {
        checkpoint_interval: 20,
        ..DurabilityConfig::recommended(JournalBackend::Sqlite)
    };
    let facet = DurabilityFacet::new(storage, config);
    let observer = facet.observer();
    let state = Account {
        balance: 0,
        transfers: 0,
        bank: bank.clone(),
        crash_in,
    };
    let mut actor = Actor::new("account-7", state);
    actor
        .facets()
        .attach(Box::new(facet))
        .expect("the only facet");
    Ok((actor, observer))
}

async fn process_one(db: &Path, bank: &Bank) -> Result<(), JournalError> {
    let (mut actor, _) = account(db, bank, Some(format!("msg-{CRASH_IN}"))).await?;
    for m in messages() {
        if m.message_id == format!("msg-{CRASH_IN}") {
            println!(
                "[process 1] {} messages handled, balance {}, {} bank calls; now crashing inside msg-{CRASH_IN}, after its bank call was journaled",
                CRASH_IN - 1,
                actor.behavior().balance,
                bank.calls().len()
            );
        }
        actor.send(m).await?;
    }
    Err(JournalError::storage(
        "example",
        format!("msg-{CRASH_IN} should have crashed process 1"),
    ))
}

async fn process_two(db: &Path, bank: &Bank) -> Result<bool, JournalError> {
    let started = std::time::Instant::now();
    let (mut actor, observer) = account(db, bank, None).await?;
    actor.activate().await?;
    let report = observer.stats().activation;
    println!(
        "[process 2] recovered in {:?}: {}, {} entries replayed, interrupted message completed: {}",
        started.elapsed(),
        report.checkpoint_sequence.map_or_else(
            || "no checkpoint".to_owned(),
            |s| format!("checkpoint at {s}")
        ),
        report.replayed_entries,
        report.completed_interrupted_message
    );
    let (balance, transfers) = expected_after(CRASH_IN);
    let calls = bank.calls();
    let unique: std::collections::BTreeSet<_> = calls.iter().collect();
    println!(
        "[process 2] balance {} (expected {balance}); {} bank calls for {} transfers, {} made twice",
        actor.behavior().balance,
        calls.len(),
        actor.behavior().transfers,
        calls.len() - unique.len()
    );
    let mut ok = actor.behavior().balance == balance
        && actor.behavior().transfers == transfers
        && calls.len() == unique.len();
    let redelivered = actor.send(messages()[CRASH_IN - 1].clone()).await?;
    println!("[process 2] msg-{CRASH_IN} redelivered by its sender: {redelivered:?}");
    ok &= matches!(redelivered, Delivery::Duplicate(Some(_)));
    for m in messages().into_iter().skip(CRASH_IN) {
        actor.send(m).await?;
    }
    let (balance, transfers) = expected_after(MESSAGES);
    println!(
        "[process 2] all {MESSAGES} messages: balance {} (expected {balance}), {} transfers, {} bank calls",
        actor.behavior().balance,
        actor.behavior().transfers,
        bank.calls().len()
    );
    ok &= actor.behavior().balance == balance && bank.calls().len() as u64 == transfers;
    Ok(ok)
}

fn main() -> ExitCode {
    let dir = PathBuf::from(std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into()))
        .join("durable-account");
    let (db, bank) = (
        dir.join("journal.db"),
        Bank {
            log: dir.join("bank-calls.log"),
        },
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    if std::env::args().nth(1).as_deref() == Some("process-one") {
        let outcome = runtime.block_on(process_one(&db, &bank));
        eprintln!("[process 1] did not crash: {outcome:?}");
        return ExitCode::FAILURE;
    }
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the example's directory");
    println!("journal: {} (SQLite, WAL, synchronous=FULL)", db.display());
    let status = Command::new(std::env::current_exe().expect("own path"))
        .arg("process-one")
        .status()
        .expect("run process 1");
    println!("[process 1] ended: {status}");
    if status.success() || status.code() == Some(1) {
        eprintln!("process 1 was meant to crash");
        return ExitCode::FAILURE;
    }
    match runtime.block_on(process_two(&db, &bank)) {
        Ok(true) => {
            println!("same state after the crash, no side effect ran twice");
            ExitCode::SUCCESS
        }
        Ok(false) => {
            eprintln!("MISMATCH: the recovered state differs from what was acknowledged");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("[process 2] {e}");
            ExitCode::FAILURE
        }
    }
}
