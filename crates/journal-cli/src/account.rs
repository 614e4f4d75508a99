//! The demo's actor: a bank account, a typed actor of the actor system.
//! Payments leave the bank through a payment network (the outside world,
//! a side effect); transfers between accounts travel as durable timers
//! and must be confirmed by the receiving account in time, or a timer
//! reverses them. `journal demo` runs it; `journal at` rebuilds its state
//! at any point of its journal.

use std::collections::{btree_map, BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use journal_actors::{timer_message_id, Context, TimerId, TypedActor, TypedDurable, TIMER_ID_KEY};
use journal_core::{
    DurabilityConfig, DurableActor, ExecutionContext, HandlerError, JournalBackend,
    MessageReceived, TimerOp, TimerScheduled,
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::UnboundedSender;

/// Actor ids the demo writes, and `journal at` rebuilds as accounts.
pub const ACTOR_PREFIX: &str = "demo-account-";

/// The side effect's name in the journal.
pub const PAYMENT_EFFECT: &str = "payments.transfer";

/// Operations an account keeps in its statement.
const STATEMENT_LINES: usize = 32;

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

/// The index in a demo account's id.
pub fn index_of(actor_id: &str) -> Option<usize> {
    actor_id.strip_prefix(ACTOR_PREFIX)?.parse().ok()
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

/// The outside world: every payment it is asked for, by payment key.
#[derive(Debug, Clone, Default)]
pub struct PaymentNetwork(Arc<Mutex<BTreeMap<String, Call>>>);

impl PaymentNetwork {
    /// Declines payments whose amount is a multiple of 17 (the payee's
    /// bank refuses them), pays the others; returns the receipt.
    fn pay(&self, key: &str, amount: i64) -> Result<String, String> {
        let paid = amount % 17 != 0;
        let mut calls = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let call = calls.entry(key.to_owned()).or_insert(Call {
            times: 0,
            amount,
            paid,
        });
        call.times += 1;
        if paid {
            Ok(format!("receipt {key} {amount}"))
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
/// first payment from message `from_message` on, right after the network
/// was paid and the result journaled, before the message completes.
#[derive(Debug, Clone)]
pub struct CrashPlan {
    /// The first workload message number (1-based) a crash may happen in.
    pub from_message: u64,
    /// Told the account's index when it has stopped.
    pub stopped: UnboundedSender<usize>,
    /// The account's index.
    pub index: usize,
}

/// What an account is sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AccountMessage {
    /// Money comes in.
    Deposit {
        /// How much.
        amount: i64,
    },
    /// Money leaves the bank through the payment network.
    Payment {
        /// How much.
        amount: i64,
    },
    /// Money goes to another account of the bank, which must confirm it
    /// in time.
    Transfer {
        /// The receiving account.
        to: String,
        /// How much.
        amount: i64,
        /// How long the receiver waits for the confirmation, in seconds.
        confirm_within_secs: u64,
    },
    /// A transfer arrives (a timer the sender scheduled, due at once):
    /// held until confirmed.
    Incoming {
        /// The transfer's id.
        transfer: String,
        /// The sending account.
        from: String,
        /// How much.
        amount: i64,
        /// How long to wait for the confirmation, in seconds.
        confirm_within_secs: u64,
    },
    /// The receiver confirms a transfer it holds.
    Confirm {
        /// The transfer's id.
        transfer: String,
    },
    /// A transfer's confirmation deadline (the receiver's own timer): an
    /// unconfirmed transfer is reversed.
    Deadline {
        /// The transfer's id.
        transfer: String,
    },
    /// A reversed transfer comes back to its sender (a timer the receiver
    /// scheduled, due at once).
    Reversal {
        /// The transfer's id.
        transfer: String,
    },
    /// Asks for the balance; changes nothing.
    Balance,
}

/// A transfer an account sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sent {
    /// The receiving account.
    pub to: String,
    /// How much.
    pub amount: i64,
    /// Whether it came back, unconfirmed.
    pub reversed: bool,
}

/// Where a received transfer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Standing {
    /// Held, waiting for its confirmation.
    Held,
    /// Confirmed in time: in the balance.
    Confirmed,
    /// Not confirmed in time: sent back.
    Reversed,
}

/// A transfer an account received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Received {
    /// The sending account.
    pub from: String,
    /// How much.
    pub amount: i64,
    /// The timer that reverses it unless it is confirmed first.
    pub deadline: TimerId,
    /// Where it stands.
    pub standing: Standing,
}

/// What an account holds that is not its state: the outside world, and
/// where it crashes (the demo's first run only).
#[derive(Debug, Clone, Default)]
struct World {
    network: Option<PaymentNetwork>,
    crash: Option<CrashPlan>,
}

/// A bank account: a typed actor, its fields its state.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Account {
    /// The balance.
    pub balance: i64,
    /// Deposits taken.
    pub deposits: u64,
    /// Money deposited.
    pub deposited: i64,
    /// Payments the network paid.
    pub payments: u64,
    /// Payments the network declined.
    pub declined: u64,
    /// Money paid out through the network.
    pub paid_out: i64,
    /// Transfers sent, by id.
    pub sent: BTreeMap<String, Sent>,
    /// Transfers received, by id.
    pub received: BTreeMap<String, Received>,
    /// The last operations its clients asked for, oldest first (what
    /// timers deliver is in `sent` and `received`).
    pub statement: VecDeque<String>,
    #[serde(skip)]
    world: World,
}

/// Accounts are equal when their state is.
impl PartialEq for Account {
    fn eq(&self, other: &Self) -> bool {
        self.balance == other.balance
            && self.deposits == other.deposits
            && self.deposited == other.deposited
            && self.payments == other.payments
            && self.declined == other.declined
            && self.paid_out == other.paid_out
            && self.sent == other.sent
            && self.received == other.received
            && self.statement == other.statement
    }
}

fn positive(amount: i64) -> Result<i64, HandlerError> {
    if amount > 0 {
        Ok(amount)
    } else {
        Err(HandlerError::failed("the amount is not a positive number"))
    }
}

impl Account {
    /// An empty account calling `network` (none: time travel, where every
    /// result comes from the journal), crashing as `crash` says.
    pub fn new(network: Option<PaymentNetwork>, crash: Option<CrashPlan>) -> Self {
        Account {
            world: World { network, crash },
            ..Account::default()
        }
    }

    /// Money received and not yet confirmed.
    pub fn held(&self) -> i64 {
        self.received
            .values()
            .filter(|r| r.standing == Standing::Held)
            .map(|r| r.amount)
            .sum()
    }

    fn note(&mut self, line: String) {
        self.statement.push_back(line);
        while self.statement.len() > STATEMENT_LINES {
            self.statement.pop_front();
        }
    }

    fn funds(&self, amount: i64, what: &str) -> Result<(), HandlerError> {
        if amount > self.balance {
            return Err(HandlerError::failed(format!(
                "insufficient funds: balance {}, {what} {amount}",
                self.balance
            )));
        }
        Ok(())
    }

    /// Pays `amount` out through the network; stops dead after the
    /// network was paid when the crash plan says so.
    async fn pay(&mut self, amount: i64, ctx: &mut Context<'_, Self>) -> Result<(), HandlerError> {
        self.funds(positive(amount)?, "payment")?;
        let id = ctx.message_id().to_owned();
        let key = format!("{}/{id}", ctx.actor_id());
        let network = self.world.network.clone();
        let paid = ctx
            .side_effect(PAYMENT_EFFECT, &amount, || async move {
                match network {
                    Some(network) => network.pay(&key, amount),
                    None => Err("no payment network to call".to_owned()),
                }
            })
            .await?;
        if let Some(plan) = &self.world.crash {
            let number: u64 = id
                .strip_prefix('m')
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            if number >= plan.from_message {
                // The network was paid and the result journaled; the
                // message is not complete. Stop dead here, as a crash would.
                let _ = plan.stopped.send(plan.index);
                std::future::pending::<()>().await;
            }
        }
        match paid {
            Ok(_receipt) => {
                self.balance -= amount;
                self.paid_out += amount;
                self.payments += 1;
                self.note(format!("{id} payment {amount} paid"));
                Ok(())
            }
            Err(reason) => {
                self.declined += 1;
                self.note(format!("{id} payment {amount} declined"));
                Err(HandlerError::Failed(reason))
            }
        }
    }
}

impl TypedActor for Account {
    const TYPE: &'static str = "account";
    type Message = AccountMessage;
    /// The balance after the message.
    type Reply = i64;

    async fn handle(
        &mut self,
        message: AccountMessage,
        ctx: &mut Context<'_, Self>,
    ) -> Result<i64, HandlerError> {
        let id = ctx.message_id().to_owned();
        match message {
            AccountMessage::Deposit { amount } => {
                self.balance += positive(amount)?;
                self.deposits += 1;
                self.deposited += amount;
                self.note(format!("{id} deposit {amount}"));
            }
            AccountMessage::Payment { amount } => self.pay(amount, ctx).await?,
            AccountMessage::Transfer {
                to,
                amount,
                confirm_within_secs,
            } => {
                self.funds(positive(amount)?, "transfer")?;
                let transfer = format!("{}/{id}", ctx.actor_id());
                let from = ctx.actor_id().to_owned();
                // Delivered once to the receiver, crash or not.
                let incoming = AccountMessage::Incoming {
                    transfer: transfer.clone(),
                    from,
                    amount,
                    confirm_within_secs,
                };
                ctx.schedule_to::<Account>(&to, Duration::ZERO, incoming)
                    .await?;
                self.balance -= amount;
                self.note(format!("transfer {amount} to {to}"));
                let reversed = false;
                self.sent.insert(
                    transfer,
                    Sent {
                        to,
                        amount,
                        reversed,
                    },
                );
            }
            AccountMessage::Incoming {
                transfer,
                from,
                amount,
                confirm_within_secs,
            } => {
                if let btree_map::Entry::Vacant(slot) = self.received.entry(transfer) {
                    let deadline = AccountMessage::Deadline {
                        transfer: slot.key().clone(),
                    };
                    let within = Duration::from_secs(confirm_within_secs);
                    let deadline = ctx.schedule(within, deadline).await?;
                    let standing = Standing::Held;
                    slot.insert(Received {
                        from,
                        amount,
                        deadline,
                        standing,
                    });
                }
            }
            AccountMessage::Confirm { transfer } => {
                let Some(received) = self
                    .received
                    .get_mut(&transfer)
                    .filter(|r| r.standing == Standing::Held)
                else {
                    return Err(HandlerError::failed(format!(
                        "transfer {transfer} is not waiting for a confirmation"
                    )));
                };
                ctx.cancel(&received.deadline).await?;
                received.standing = Standing::Confirmed;
                let (amount, from) = (received.amount, received.from.clone());
                self.balance += amount;
                self.note(format!("transfer {amount} from {from} confirmed"));
            }
            AccountMessage::Deadline { transfer } => {
                // A confirmation that came first leaves nothing to do.
                if let Some(received) = self
                    .received
                    .get_mut(&transfer)
                    .filter(|r| r.standing == Standing::Held)
                {
                    received.standing = Standing::Reversed;
                    let back = AccountMessage::Reversal { transfer };
                    ctx.schedule_to::<Account>(&received.from, Duration::ZERO, back)
                        .await?;
                }
            }
            AccountMessage::Reversal { transfer } => {
                if let Some(sent) = self.sent.get_mut(&transfer).filter(|s| !s.reversed) {
                    sent.reversed = true;
                    self.balance += sent.amount;
                }
            }
            AccountMessage::Balance => {}
        }
        Ok(self.balance)
    }

    fn restore_from(&mut self, recovered: Self) {
        let world = std::mem::take(&mut self.world);
        *self = Account { world, ..recovered };
    }
}

/// Account `index`'s workload, the same on every run: deposits, and
/// payments some of which the balance or the network refuse, each with
/// its message id (`m1`, `m2`, ...).
pub fn messages(index: usize, count: u64) -> Vec<(String, AccountMessage)> {
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
            let message = if n % 3 == 1 {
                AccountMessage::Deposit {
                    amount: (100 + next() % 200).cast_signed(),
                }
            } else {
                AccountMessage::Payment {
                    amount: (10 + next() % 130).cast_signed(),
                }
            };
            (format!("m{n}"), message)
        })
        .collect()
}

/// `message` under `message_id`, as the system journals it.
pub fn received(message_id: &str, message: &AccountMessage) -> MessageReceived {
    MessageReceived {
        message_id: message_id.to_owned(),
        sender_id: "demo-client".into(),
        message_type: Account::message_type(message),
        payload: serde_json::to_vec(message).unwrap_or_default(),
        ..MessageReceived::default()
    }
}

/// A timer scheduled and not yet delivered, and who scheduled it.
#[derive(Debug, Clone)]
struct PendingTimer {
    owner: String,
    timer: TimerScheduled,
}

/// The bank without any journal, crash or recovery: every account's own
/// handler, one message at a time in an ephemeral context, and timers
/// delivered when the caller says so (with the message ids the actor
/// system gives them). What the demo's accounts must match.
#[derive(Debug)]
pub struct Simulation {
    /// The network it pays through.
    pub network: PaymentNetwork,
    accounts: Vec<TypedDurable<Account>>,
    timers: Vec<PendingTimer>,
}

impl Simulation {
    /// `accounts` empty accounts.
    pub fn new(accounts: usize) -> Self {
        let network = PaymentNetwork::default();
        Simulation {
            accounts: (0..accounts)
                .map(|_| TypedDurable::new(Account::new(Some(network.clone()), None)))
                .collect(),
            network,
            timers: Vec::new(),
        }
    }

    /// Account `index`.
    pub fn account(&self, index: usize) -> &Account {
        self.accounts[index].actor()
    }

    /// Every account, by index.
    pub fn accounts(&self) -> impl Iterator<Item = &Account> {
        self.accounts.iter().map(TypedDurable::actor)
    }

    /// Account `index` handles `message`: its reply, or why it failed.
    pub async fn send(
        &mut self,
        index: usize,
        message_id: &str,
        message: &AccountMessage,
    ) -> Result<i64, String> {
        self.handle(index, received(message_id, message)).await
    }

    async fn handle(&mut self, index: usize, message: MessageReceived) -> Result<i64, String> {
        let id = actor_id(index);
        let mut ctx = ExecutionContext::ephemeral(id.clone(), message.message_id.clone());
        let reply = self.accounts[index]
            .handle(&message, &mut ctx)
            .await
            .map_err(|e| e.to_string())?;
        // A message that fails drops its timers, as in the system.
        for op in ctx.timer_ops() {
            match op {
                TimerOp::Scheduled(timer) => self.timers.push(PendingTimer {
                    owner: id.clone(),
                    timer: timer.clone(),
                }),
                TimerOp::Cancelled(cancelled) => {
                    self.timers.retain(|t| t.timer.timer_id != *cancelled);
                }
                TimerOp::Fired(_) => {}
            }
        }
        serde_json::from_slice(&reply).map_err(|e| e.to_string())
    }

    /// Delivers the pending timers whose message `which` selects, oldest
    /// first, and those their deliveries schedule that it selects too.
    /// Returns the ids of the timers delivered.
    pub async fn fire(&mut self, which: impl Fn(&AccountMessage) -> bool) -> Vec<String> {
        let mut fired = Vec::new();
        let selected = |t: &PendingTimer| {
            serde_json::from_slice::<AccountMessage>(&t.timer.timer_data).is_ok_and(|m| which(&m))
        };
        while let Some(at) = self.timers.iter().position(selected) {
            let PendingTimer { owner, timer } = self.timers.remove(at);
            let target = if timer.target_actor_id.is_empty() {
                owner.clone()
            } else {
                timer.target_actor_id.clone()
            };
            let Some(index) = index_of(&target).filter(|&i| i < self.accounts.len()) else {
                continue;
            };
            let message = MessageReceived {
                message_id: timer_message_id(&timer.timer_id),
                sender_id: owner,
                message_type: timer.message_type,
                payload: timer.timer_data,
                metadata: [(TIMER_ID_KEY.to_owned(), timer.timer_id.clone())].into(),
            };
            // A delivery whose handler fails is still delivered.
            let _ = self.handle(index, message).await;
            fired.push(timer.timer_id);
        }
        fired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn run(sim: &mut Simulation, index: usize, count: u64) {
        for (id, message) in messages(index, count) {
            let _ = sim.send(index, &id, &message).await;
        }
    }

    #[tokio::test]
    async fn state_round_trips_and_garbage_is_refused() {
        let mut sim = Simulation::new(1);
        run(&mut sim, 0, 90).await;
        let account = sim.account(0).clone();
        assert!(account.payments > 0 && account.deposits > 0);
        assert!(sim.network.calls().values().all(|c| c.times == 1));
        let mut restored = TypedDurable::new(Account::new(None, None));
        restored
            .restore(
                &TypedDurable::new(account.clone())
                    .snapshot()
                    .expect("snapshot"),
            )
            .expect("restore");
        assert_eq!(restored.actor(), &account);
        assert!(restored.restore(b"balance 5").is_err());
        assert!(restored.restore(&[0xff, 0xfe]).is_err());
        assert_eq!(
            restored.actor(),
            &account,
            "a refused state changes nothing"
        );
    }

    #[tokio::test]
    async fn a_transfer_is_kept_when_confirmed_and_reversed_at_its_deadline() {
        let mut sim = Simulation::new(3);
        for index in 0..3 {
            run(&mut sim, index, 10).await;
        }
        let before: Vec<i64> = sim.accounts().map(|a| a.balance).collect();
        for (from, to) in [(0, 1), (1, 2)] {
            let transfer = AccountMessage::Transfer {
                to: actor_id(to),
                amount: 30,
                confirm_within_secs: 60,
            };
            sim.send(from, "transfer", &transfer).await.expect("sent");
        }
        let incoming = |m: &AccountMessage| matches!(m, AccountMessage::Incoming { .. });
        assert_eq!(sim.fire(incoming).await.len(), 2);
        assert_eq!(sim.account(1).held(), 30);
        let confirm = AccountMessage::Confirm {
            transfer: format!("{}/transfer", actor_id(0)),
        };
        sim.send(1, "confirm", &confirm).await.expect("confirmed");
        assert!(sim.send(1, "again", &confirm).await.is_err());
        let deadlines = sim
            .fire(|m| matches!(m, AccountMessage::Deadline { .. }))
            .await;
        assert_eq!(deadlines.len(), 1, "the confirmed one was cancelled");
        assert_eq!(sim.fire(|_| true).await.len(), 1, "one reversal");
        let after: Vec<i64> = sim.accounts().map(|a| a.balance).collect();
        assert_eq!(after, [before[0] - 30, before[1] + 30, before[2]]);
        assert_eq!(sim.account(2).held(), 0);
        assert!(sim.account(1).sent.values().all(|s| s.reversed));
    }

    #[test]
    fn workloads_are_the_same_on_every_run() {
        assert_eq!(messages(1, 40), messages(1, 40));
        assert_ne!(messages(1, 40), messages(2, 40));
        assert_eq!(index_of(&actor_id(7)), Some(7));
        assert_eq!(index_of("someone"), None);
    }
}
