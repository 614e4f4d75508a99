//! A durable bank account: transfers call a (simulated) bank, the actor
//! "crashes" part-way, and recovers with the same balance and without
//! calling the bank again for transfers it already made.
//!
//! `cargo run -p journal-memory --example durable_account_in_memory`

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use journal_core::{
    Actor, Delivery, DurabilityConfig, DurabilityFacet, DurableActor, ExecutionContext,
    HandlerError, HandlerResult, JournalBackend, JournalError, MessageReceived,
};
use journal_memory::MemoryJournalStorage;

/// The outside world: counts every call that really reached the bank.
static BANK_CALLS: AtomicU64 = AtomicU64::new(0);

async fn call_bank(amount: i64) -> Result<Vec<u8>, String> {
    tokio::task::yield_now().await; // stands for the network round trip
    let n = BANK_CALLS.fetch_add(1, Ordering::SeqCst) + 1;
    Ok(format!("bank receipt #{n} for {amount}").into_bytes())
}

// ---- the user's code: about 20 lines make an account durable ----
#[derive(Default)]
struct Account {
    balance: i64,
    receipts: Vec<String>,
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
                let receipt = ctx
                    .side_effect("bank.transfer", || call_bank(amount))
                    .await??;
                self.receipts
                    .push(String::from_utf8_lossy(&receipt).into_owned());
                self.balance -= amount;
            }
            other => return Err(HandlerError::failed(format!("unknown message {other}"))),
        }
        Ok(self.balance.to_le_bytes().to_vec())
    }
    fn snapshot(&self) -> Result<Vec<u8>, String> {
        Ok([
            self.balance.to_le_bytes().to_vec(),
            self.receipts.join("\n").into_bytes(),
        ]
        .concat())
    }
    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        let (balance, receipts) = state.split_at_checked(8).ok_or("short state")?;
        self.balance = i64::from_le_bytes(balance.try_into().map_err(|_| "balance")?);
        let receipts = String::from_utf8(receipts.to_vec()).map_err(|e| e.to_string())?;
        self.receipts = receipts.lines().map(str::to_owned).collect();
        Ok(())
    }
}
// ---- end of the user's code ----

fn msg(id: usize, kind: &str, amount: i64) -> MessageReceived {
    MessageReceived {
        message_id: format!("msg-{id}"),
        message_type: kind.into(),
        payload: amount.to_le_bytes().to_vec(),
        ..MessageReceived::default()
    }
}

fn durable_account(storage: &Arc<MemoryJournalStorage>) -> Actor<Account> {
    let config = DurabilityConfig {
        checkpoint_interval: 25,
        ..DurabilityConfig::recommended(JournalBackend::Memory)
    };
    let mut actor = Actor::new("account-7", Account::default());
    actor
        .facets()
        .attach(Box::new(DurabilityFacet::new(Arc::clone(storage), config)))
        .expect("the only facet");
    actor
}

#[tokio::main]
async fn main() -> Result<(), JournalError> {
    let storage = Arc::new(MemoryJournalStorage::new());
    let messages: Vec<_> = (0..60)
        .map(|i| {
            if i % 3 == 0 {
                msg(i, "deposit", 100)
            } else {
                msg(i, "transfer", 30)
            }
        })
        .collect();

    let mut account = durable_account(&storage);
    for m in &messages[..40] {
        account.send(m.clone()).await?;
    }
    let (balance, receipts) = (
        account.behavior().balance,
        account.behavior().receipts.len(),
    );
    let calls = BANK_CALLS.load(Ordering::SeqCst);
    println!("before the crash: 40 messages, balance {balance}, {receipts} transfers, {calls} bank calls");
    drop(account); // the crash: no shutdown, nothing flushed
    println!("-- crash: the actor is gone --");

    let mut account = durable_account(&storage);
    let started = std::time::Instant::now();
    account.activate().await?;
    let recovered_in = started.elapsed();
    let after = BANK_CALLS.load(Ordering::SeqCst);
    println!(
        "recovered in {recovered_in:?}: balance {}, {} transfers, {after} bank calls",
        account.behavior().balance,
        account.behavior().receipts.len()
    );
    assert_eq!(
        account.behavior().balance,
        balance,
        "same balance after recovery"
    );
    assert_eq!(after, calls, "no transfer called the bank twice");

    // The sender did not see replies for the last messages and redelivers them.
    let redelivered = account.send(messages[39].clone()).await?;
    assert!(matches!(redelivered, Delivery::Duplicate(Some(_))));
    println!(
        "redelivered {}: {redelivered:?}, not processed twice",
        messages[39].message_id
    );

    for m in &messages[40..] {
        account.send(m.clone()).await?;
    }
    println!(
        "after the rest: balance {}, {} bank calls for {} transfers",
        account.behavior().balance,
        BANK_CALLS.load(Ordering::SeqCst),
        account.behavior().receipts.len()
    );
    assert_eq!(
        BANK_CALLS.load(Ordering::SeqCst),
        account.behavior().receipts.len() as u64
    );
    Ok(())
}
