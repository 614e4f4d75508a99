//! The demo's actor: a bank account whose outgoing transfers call a payment
//! network (the outside world, through a side effect). `journal demo`
//! runs it; `journal at` rebuilds its state at any point of its journal.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use journal_core::{
    DurabilityConfig, DurableActor, ExecutionContext, HandlerError, HandlerResult, JournalBackend,
    MessageReceived,
};
use tokio::sync::mpsc::UnboundedSender;

/// Actor ids the demo writes, and `journal at` rebuilds as accounts.
pub const ACTOR_PREFIX: &str = "demo-account-";

/// The side effect's name in the journal.
pub const PAYMENT_EFFECT: &str = "payments.transfer";

/// Operations an account keeps in its statement.
const STATEMENT_LINES: usize = 32;

/// The first line of an encoded account state.
const STATE_MAGIC: &str = "journal-demo account v1";

/// How the demo's accounts are made durable: a checkpoint every 50
/// entries, zstd, two checkpoints kept, nothing truncated.
pub fn config(backend: JournalBackend) -> DurabilityConfig {
    DurabilityConfig {
        checkpoint_interval: 50,
        ..DurabilityConfig::recommended(backend)
    }
}

/// The demo's account ids.
pub fn actor_id(index: usize) -> String {
    format!("{ACTOR_PREFIX}{index:03}")
}

/// One call the payment network received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Call {
    /// How many times it was made (more than once is a bug).
    pub times: u32,
    /// The amount.
    pub amount: i64,
    /// Whether the network paid it (otherwise it declined).
    pub paid: bool,
}

/// The outside world: every payment it is asked for, by transfer key.
#[derive(Debug, Clone, Default)]
pub struct PaymentNetwork(Arc<Mutex<BTreeMap<String, Call>>>);

impl PaymentNetwork {
    /// Declines transfers whose amount is a multiple of 17 (the payee's
    /// bank refuses them), pays the others; returns the receipt.
    fn pay(&self, key: &str, amount: i64) -> Result<Vec<u8>, String> {
        let paid = amount % 17 != 0;
        let mut calls = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let call = calls.entry(key.to_owned()).or_insert(Call {
            times: 0,
            amount,
            paid,
        });
        call.times += 1;
        if paid {
            Ok(format!("receipt {key} {amount}").into_bytes())
        } else {
            Err(format!("declined by the payee's bank: {amount}"))
        }
    }

    /// Every call, by key.
    pub fn calls(&self) -> BTreeMap<String, Call> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Where a demo account stops dead, as a crashed process would: inside its
/// first transfer from message `from_message` on, right after the payment
/// was made and journaled and before the message completes.
#[derive(Debug, Clone)]
pub struct CrashPlan {
    /// The first message number (1-based) a crash may happen in.
    pub from_message: u64,
    /// Told the account's index when it has stopped.
    pub stopped: UnboundedSender<usize>,
    /// The account's index.
    pub index: usize,
}

/// A bank account.
#[derive(Debug, Clone, Default)]
pub struct Account {
    /// The balance.
    pub balance: i64,
    /// Deposits taken.
    pub deposits: u64,
    /// Transfers paid out.
    pub transfers: u64,
    /// Transfers the network declined.
    pub declined: u64,
    /// Money paid out.
    pub paid_out: i64,
    /// The last operations, oldest first.
    pub statement: VecDeque<String>,
    network: Option<PaymentNetwork>,
    crash: Option<CrashPlan>,
}

/// Accounts are equal when their state is.
impl PartialEq for Account {
    fn eq(&self, other: &Self) -> bool {
        self.balance == other.balance
            && self.deposits == other.deposits
            && self.transfers == other.transfers
            && self.declined == other.declined
            && self.paid_out == other.paid_out
            && self.statement == other.statement
    }
}

impl Account {
    /// An empty account calling `network` (none: time travel, where every
    /// result comes from the journal).
    pub fn new(network: Option<PaymentNetwork>, crash: Option<CrashPlan>) -> Self {
        Account {
            network,
            crash,
            ..Account::default()
        }
    }

    fn note(&mut self, line: String) {
        self.statement.push_back(line);
        while self.statement.len() > STATEMENT_LINES {
            self.statement.pop_front();
        }
    }

    fn encode(&self) -> String {
        let mut out = format!(
            "{STATE_MAGIC}\nbalance {}\ndeposits {}\ntransfers {}\ndeclined {}\npaid_out {}\n",
            self.balance, self.deposits, self.transfers, self.declined, self.paid_out
        );
        for line in &self.statement {
            out.push_str(line);
            out.push('\n');
        }
        out
    }

    fn decode(&mut self, state: &str) -> Option<()> {
        let mut lines = state.lines();
        (lines.next()? == STATE_MAGIC).then_some(())?;
        let mut field = |name: &str| -> Option<i64> {
            let (key, value) = lines.next()?.split_once(' ')?;
            (key == name).then_some(())?;
            value.parse().ok()
        };
        let balance = field("balance")?;
        let deposits = u64::try_from(field("deposits")?).ok()?;
        let transfers = u64::try_from(field("transfers")?).ok()?;
        let declined = u64::try_from(field("declined")?).ok()?;
        let paid_out = field("paid_out")?;
        let statement = lines.map(str::to_owned).collect();
        *self = Account {
            balance,
            deposits,
            transfers,
            declined,
            paid_out,
            statement,
            network: self.network.take(),
            crash: self.crash.take(),
        };
        Some(())
    }
}

/// The message number in an id `m<number>`.
fn number(message: &MessageReceived) -> u64 {
    message
        .message_id
        .strip_prefix('m')
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[async_trait]
impl DurableActor for Account {
    async fn handle(
        &mut self,
        message: &MessageReceived,
        ctx: &mut ExecutionContext,
    ) -> HandlerResult {
        let amount: i64 = std::str::from_utf8(&message.payload)
            .ok()
            .and_then(|text| text.parse().ok())
            .filter(|&amount| amount > 0)
            .ok_or_else(|| HandlerError::failed("the amount is not a positive number"))?;
        let id = &message.message_id;
        match message.message_type.as_str() {
            "deposit" => {
                self.balance += amount;
                self.deposits += 1;
                self.note(format!("{id} deposit {amount}"));
            }
            "transfer" if amount > self.balance => {
                return Err(HandlerError::failed(format!(
                    "insufficient funds: balance {}, transfer {amount}",
                    self.balance
                )));
            }
            "transfer" => {
                let key = format!("{}/{id}", ctx.actor_id());
                let network = self.network.clone();
                let paid = ctx
                    .side_effect(PAYMENT_EFFECT, || async move {
                        match network {
                            Some(network) => network.pay(&key, amount),
                            None => Err("no payment network to call".to_owned()),
                        }
                    })
                    .await?;
                if let Some(plan) = &self.crash {
                    if number(message) >= plan.from_message {
                        // The payment is made and journaled; the message is
                        // not complete. Stop dead here, as a crash would.
                        let _ = plan.stopped.send(plan.index);
                        std::future::pending::<()>().await;
                    }
                }
                match paid {
                    Ok(_receipt) => {
                        self.balance -= amount;
                        self.paid_out += amount;
                        self.transfers += 1;
                        self.note(format!("{id} transfer {amount} paid"));
                    }
                    Err(reason) => {
                        self.declined += 1;
                        self.note(format!("{id} transfer {amount} declined"));
                        return Err(HandlerError::Failed(reason));
                    }
                }
            }
            other => return Err(HandlerError::failed(format!("unknown message {other:?}"))),
        }
        Ok(self.balance.to_string().into_bytes())
    }

    fn snapshot(&self) -> Result<Vec<u8>, String> {
        Ok(self.encode().into_bytes())
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        let text = std::str::from_utf8(state).map_err(|_| "not a demo account state")?;
        self.decode(text).ok_or("not a demo account state")?;
        Ok(())
    }
}

/// Account `index`'s messages, the same on every run: deposits, and
/// transfers some of which the balance or the network refuse.
pub fn messages(index: usize, count: u64) -> Vec<MessageReceived> {
    let mut state = (index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut next = move || {
        // splitmix64
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    (1..=count)
        .map(|n| {
            let (kind, amount) = if n % 3 == 1 {
                ("deposit", 100 + next() % 200)
            } else {
                ("transfer", 10 + next() % 130)
            };
            MessageReceived {
                message_id: format!("m{n}"),
                sender_id: "demo-client".into(),
                message_type: kind.into(),
                payload: amount.to_string().into_bytes(),
                ..MessageReceived::default()
            }
        })
        .collect()
}

/// What account `index` holds after its first `n` messages, and the
/// payments it asked for, computed by running the same code without any
/// journal, crash or recovery.
pub async fn expected(index: usize, messages: &[MessageReceived]) -> (Account, PaymentNetwork) {
    let network = PaymentNetwork::default();
    let mut account = Account::new(Some(network.clone()), None);
    let id = actor_id(index);
    for message in messages {
        let mut ctx = ExecutionContext::ephemeral(id.clone(), message.message_id.clone());
        let _ = account.handle(message, &mut ctx).await;
    }
    (account, network)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn state_round_trips_and_garbage_is_refused() {
        let (account, network) = expected(3, &messages(3, 90)).await;
        assert!(account.transfers > 0 && account.deposits > 0);
        assert!(network.calls().values().all(|c| c.times == 1));
        let mut restored = Account::new(None, None);
        restored
            .restore(&account.snapshot().expect("snapshot"))
            .expect("restore");
        assert_eq!(restored, account);
        let before = restored.clone();
        assert!(restored.restore(b"balance 5").is_err());
        assert!(restored.restore(&[0xff, 0xfe]).is_err());
        assert_eq!(restored, before, "a refused state changes nothing");
    }

    #[test]
    fn workloads_are_the_same_on_every_run() {
        assert_eq!(messages(1, 40), messages(1, 40));
        assert_ne!(messages(1, 40), messages(2, 40));
    }
}
