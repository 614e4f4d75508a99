//! Event-sourced actors on every backend (contract rules 25, 26): a
//! command's events persist in one atomic batch with its end, recovery is
//! the latest snapshot plus the events after it and never runs a command
//! again, time travel stands after any event, old event versions are read
//! through an upcaster, an unknown event type is an error naming it unless
//! the actor skips it, and events are never rewritten.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use journal_core::journal_entry::Entry;
use journal_core::{
    rebuild_at, Actor, Delivery, DurabilityConfig, DurabilityFacet, DurableActor, EventRecorded,
    ExecutionContext, HandlerError, HandlerResult, JournalBackend, JournalEntry, JournalError,
    JournalStorage, MessageReceived, ProcessingResult,
};

use crate::fixture::fresh_actor;

/// The event schema version the ledger writes: version 1 held the amount
/// as 8 little-endian bytes, version 2 as decimal text.
const VERSION: u32 = 2;

/// A bytes-level event-sourced ledger. Commands: `deposit:N`,
/// `withdraw:N` (fails beyond the balance), `burst:N` (N deposits of 1 in
/// one command). Events: `Deposited` and `Withdrew`, tagged `ledger`.
#[derive(Debug, Default)]
struct Ledger {
    balance: i64,
    events: u64,
    /// Command handler runs, shared with the test.
    handled: Arc<AtomicUsize>,
    /// Skip unknown event types instead of failing.
    skip_unknown: bool,
}

impl Ledger {
    fn new(handled: &Arc<AtomicUsize>) -> Self {
        Ledger {
            handled: Arc::clone(handled),
            ..Ledger::default()
        }
    }

    fn event(kind: &str, amount: i64) -> EventRecorded {
        EventRecorded {
            event_type: kind.into(),
            schema_version: VERSION,
            payload: amount.to_string().into_bytes(),
            tags: vec!["ledger".into(), "audit".into()],
            ..EventRecorded::default()
        }
    }

    fn fold(&mut self, kind: &str, amount: i64) -> Result<(), String> {
        match kind {
            "Deposited" => self.balance += amount,
            "Withdrew" => self.balance -= amount,
            other if self.skip_unknown => {
                let _ = other;
                return Ok(());
            }
            other => return Err(format!("unknown event type {other:?}")),
        }
        self.events += 1;
        Ok(())
    }
}

/// The amount of an event of `version`: the upcaster from version 1.
fn amount(version: u32, payload: &[u8]) -> Result<i64, String> {
    match version.max(1) {
        1 => Ok(i64::from_le_bytes(
            payload
                .try_into()
                .map_err(|_| "a version 1 amount is 8 bytes".to_owned())?,
        )),
        VERSION => std::str::from_utf8(payload)
            .ok()
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| "a version 2 amount is decimal text".to_owned()),
        newer => Err(format!("version {newer} is newer than this actor reads")),
    }
}

#[async_trait]
impl DurableActor for Ledger {
    async fn handle(
        &mut self,
        message: &MessageReceived,
        ctx: &mut ExecutionContext,
    ) -> HandlerResult {
        self.handled.fetch_add(1, Ordering::SeqCst);
        let (verb, n) = std::str::from_utf8(&message.payload)
            .ok()
            .and_then(|t| t.split_once(':'))
            .and_then(|(verb, n)| Some((verb.to_owned(), n.parse::<i64>().ok()?)))
            .ok_or_else(|| HandlerError::failed("bad command"))?;
        let events = match verb.as_str() {
            "deposit" => vec![Ledger::event("Deposited", n)],
            "withdraw" if n > self.balance => return Err(HandlerError::failed("insufficient")),
            "withdraw" => vec![Ledger::event("Withdrew", n)],
            "burst" => (0..n).map(|_| Ledger::event("Deposited", 1)).collect(),
            _ => return Err(HandlerError::failed("unknown command")),
        };
        for event in events {
            let amount = amount(event.schema_version, &event.payload)?;
            let kind = event.event_type.clone();
            ctx.record_event(event)?;
            self.fold(&kind, amount)?;
        }
        Ok(self.balance.to_le_bytes().to_vec())
    }

    fn snapshot(&self) -> Result<Vec<u8>, String> {
        let mut out = self.balance.to_le_bytes().to_vec();
        out.extend_from_slice(&self.events.to_le_bytes());
        Ok(out)
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        let (balance, events) = state.split_at_checked(8).ok_or("short state")?;
        self.balance = i64::from_le_bytes(balance.try_into().map_err(|_| "balance")?);
        self.events = u64::from_le_bytes(events.try_into().map_err(|_| "events")?);
        Ok(())
    }

    fn is_event_sourced(&self) -> bool {
        true
    }

    fn apply_event(&mut self, event: &EventRecorded, _sequence: u64) -> Result<(), String> {
        let amount = match event.event_type.as_str() {
            "Deposited" | "Withdrew" => amount(event.schema_version, &event.payload)?,
            _ => 0,
        };
        self.fold(&event.event_type, amount)
    }
}

fn config(interval: u64) -> DurabilityConfig {
    DurabilityConfig {
        checkpoint_interval: interval,
        ..DurabilityConfig::recommended(JournalBackend::Memory)
    }
}

fn ledger(
    storage: &Arc<dyn JournalStorage>,
    id: &str,
    handled: &Arc<AtomicUsize>,
    interval: u64,
) -> Actor<Ledger> {
    let mut actor = Actor::new(id, Ledger::new(handled));
    actor
        .facets()
        .attach(Box::new(DurabilityFacet::new(
            Arc::clone(storage),
            config(interval),
        )))
        .expect("the only durability facet");
    actor
}

fn command(id: &str, text: &str) -> MessageReceived {
    MessageReceived {
        message_id: id.into(),
        message_type: "LedgerCommand".into(),
        payload: text.as_bytes().to_vec(),
        ..MessageReceived::default()
    }
}

/// The commands of the tests below: deposits, bursts of five events, and
/// withdrawals, one of which fails.
fn commands() -> Vec<MessageReceived> {
    (0..24)
        .map(|i| {
            let text = match i % 4 {
                0 => format!("deposit:{}", i + 3),
                1 => "burst:5".to_owned(),
                2 if i == 10 => "withdraw:100000".to_owned(),
                2 => "withdraw:2".to_owned(),
                _ => format!("deposit:{i}"),
            };
            command(&format!("c{i}"), &text)
        })
        .collect()
}

async fn send_all(actor: &mut Actor<Ledger>, commands: &[MessageReceived]) {
    for c in commands {
        match actor.send(c.clone()).await.expect("journal up") {
            Delivery::Replied(_) | Delivery::Failed(_) => {}
            Delivery::Duplicate(_) => panic!("{} is new", c.message_id),
        }
    }
}

async fn journal(storage: &Arc<dyn JournalStorage>, id: &str) -> Vec<JournalEntry> {
    storage.replay_from(id, 1).await.expect("replay")
}

/// The balance the journal's events add up to, through entry `to`.
fn fold_of(entries: &[JournalEntry], to: u64) -> i64 {
    let mut ledger = Ledger::default();
    for entry in entries.iter().filter(|e| e.sequence <= to) {
        if let Some(Entry::EventRecorded(event)) = &entry.entry {
            ledger
                .apply_event(event, entry.sequence)
                .expect("known event");
        }
    }
    ledger.balance
}

/// Rule 25: a command's events are journaled after its `MessageReceived`,
/// contiguous, in the order decided, each with type, version, payload and
/// sorted tags, followed at once by its `MessageProcessed`; a failed
/// command persists none.
pub async fn rule25_events_persist_with_the_command_end(storage: Arc<dyn JournalStorage>) {
    let id = fresh_actor("es-batch");
    let handled = Arc::new(AtomicUsize::new(0));
    let mut actor = ledger(&storage, &id, &handled, 0);
    send_all(
        &mut actor,
        &[command("a", "burst:5"), command("b", "withdraw:99")],
    )
    .await;
    let entries = journal(&storage, &id).await;
    let kinds: Vec<&str> = entries
        .iter()
        .map(|e| e.entry.as_ref().map_or("none", Entry::kind))
        .collect();
    assert_eq!(
        kinds,
        [
            "message_received",
            "event_recorded",
            "event_recorded",
            "event_recorded",
            "event_recorded",
            "event_recorded",
            "message_processed",
            "message_received",
            "message_processed"
        ]
    );
    for event in &entries[1..6] {
        assert_eq!(event.correlation_id, "a");
        let Some(Entry::EventRecorded(e)) = &event.entry else {
            panic!("an event");
        };
        assert_eq!(e.event_type, "Deposited");
        assert_eq!(e.schema_version, VERSION);
        assert_eq!(e.payload, b"1");
        assert_eq!(e.tags, ["audit", "ledger"], "sorted");
    }
    let Some(Entry::MessageProcessed(failed)) = &entries[8].entry else {
        panic!("the failed command's end");
    };
    assert_eq!(failed.result, ProcessingResult::Error as i32);
    assert_eq!(actor.behavior().balance, 5);
}

/// Rule 25: recovery, from the latest snapshot or from the first entry,
/// applies the events and reaches the state the commands built, without
/// running a command handler; a command sent again under its id persists
/// nothing more; events are never rewritten (rule 26).
pub async fn rule25_recovery_applies_events_and_runs_no_command(storage: Arc<dyn JournalStorage>) {
    let id = fresh_actor("es-recover");
    let handled = Arc::new(AtomicUsize::new(0));
    let mut actor = ledger(&storage, &id, &handled, 7);
    let commands = commands();
    send_all(&mut actor, &commands).await;
    let live = (actor.behavior().balance, actor.behavior().events);
    drop(actor);
    let before = journal(&storage, &id).await;
    assert_eq!(fold_of(&before, u64::MAX), live.0);
    assert!(
        storage
            .get_latest_checkpoint(&id)
            .await
            .expect("read")
            .is_some(),
        "snapshots were taken"
    );
    for interval in [7, 0] {
        let runs = Arc::new(AtomicUsize::new(0));
        let mut again = ledger(&storage, &id, &runs, interval);
        if interval == 0 {
            // From the first entry: a fold of every event.
            let mut full = Ledger::new(&runs);
            let rebuilt = rebuild_at(
                Arc::clone(&storage),
                &config(0),
                &id,
                &mut full,
                before.len() as u64,
                false,
            )
            .await
            .expect("full fold");
            assert_eq!(rebuilt.checkpoint_sequence, None);
            assert_eq!((full.balance, full.events), live);
        }
        again.activate().await.expect("recover");
        assert_eq!(
            (again.behavior().balance, again.behavior().events),
            live,
            "snapshot + tail = the state the commands built"
        );
        assert_eq!(runs.load(Ordering::SeqCst), 0, "no command ran on recovery");
        let duplicate = again.send(commands[1].clone()).await.expect("journal up");
        assert!(matches!(duplicate, Delivery::Duplicate(Some(_))));
        assert_eq!(runs.load(Ordering::SeqCst), 0, "a duplicate is not handled");
    }
    let after = journal(&storage, &id).await;
    assert_eq!(before, after, "nothing persisted again, nothing rewritten");
}

/// Rule 25, time travel: the state after any entry, mid-command included,
/// is the fold of the events up to it.
pub async fn rule25_time_travel_stands_after_any_event(storage: Arc<dyn JournalStorage>) {
    let id = fresh_actor("es-at");
    let handled = Arc::new(AtomicUsize::new(0));
    let mut actor = ledger(&storage, &id, &handled, 9);
    send_all(&mut actor, &commands()[..10]).await;
    drop(actor);
    let entries = journal(&storage, &id).await;
    for to in 1..=entries.len() as u64 {
        let mut at = Ledger::new(&handled);
        rebuild_at(Arc::clone(&storage), &config(9), &id, &mut at, to, true)
            .await
            .expect("rebuild");
        assert_eq!(at.balance, fold_of(&entries, to), "after entry {to}");
    }
}

/// Appends `events` (kind, version, payload) as one command's.
async fn append_command(
    storage: &Arc<dyn JournalStorage>,
    id: &str,
    first: u64,
    message_id: &str,
    events: &[(&str, u32, Vec<u8>)],
) -> u64 {
    let mut batch = vec![Entry::MessageReceived(command(message_id, "deposit:0"))];
    batch.extend(events.iter().map(|(kind, version, payload)| {
        Entry::EventRecorded(EventRecorded {
            event_type: (*kind).into(),
            schema_version: *version,
            payload: payload.clone(),
            ..EventRecorded::default()
        })
    }));
    batch.push(Entry::MessageProcessed(journal_core::MessageProcessed {
        message_id: message_id.into(),
        result: ProcessingResult::Success.into(),
        ..journal_core::MessageProcessed::default()
    }));
    let entries: Vec<JournalEntry> = batch
        .into_iter()
        .zip(first..)
        .map(|(entry, seq)| JournalEntry::new(id, seq, entry))
        .collect();
    let next = first + entries.len() as u64;
    storage.append_batch(&entries).await.expect("append");
    next
}

/// Rule 26: events of an older version, stored as they were written, are
/// read through the upcaster, and the actor goes on writing the current
/// version after them.
pub async fn rule26_old_versions_read_through_the_upcaster(storage: Arc<dyn JournalStorage>) {
    let id = fresh_actor("es-upcast");
    let next = append_command(
        &storage,
        &id,
        1,
        "old",
        &[
            ("Deposited", 1, 40i64.to_le_bytes().to_vec()),
            ("Withdrew", 0, 5i64.to_le_bytes().to_vec()),
        ],
    )
    .await;
    append_command(
        &storage,
        &id,
        next,
        "new",
        &[("Deposited", 2, b"7".to_vec())],
    )
    .await;
    let handled = Arc::new(AtomicUsize::new(0));
    let mut actor = ledger(&storage, &id, &handled, 0);
    actor
        .activate()
        .await
        .expect("recover through the upcaster");
    assert_eq!(actor.behavior().balance, 42);
    assert_eq!(handled.load(Ordering::SeqCst), 0);
    send_all(&mut actor, &[command("more", "deposit:1")]).await;
    assert_eq!(actor.behavior().balance, 43);
}

/// Rule 26: an event type the actor does not know fails recovery with an
/// error naming it, unless the actor chose to skip unknown types.
pub async fn rule26_unknown_event_type_is_named(storage: Arc<dyn JournalStorage>) {
    let id = fresh_actor("es-unknown");
    append_command(
        &storage,
        &id,
        1,
        "x",
        &[
            ("Deposited", 2, b"10".to_vec()),
            ("Frobnicated", 2, b"1".to_vec()),
        ],
    )
    .await;
    let handled = Arc::new(AtomicUsize::new(0));
    let mut actor = ledger(&storage, &id, &handled, 0);
    match actor.activate().await {
        Err(JournalError::RecoveryFailed { reason, .. }) => {
            assert!(reason.contains("Frobnicated"), "{reason}");
        }
        other => panic!("recovery must fail naming the event, got {other:?}"),
    }
    let mut skipping = Actor::new(
        &id,
        Ledger {
            skip_unknown: true,
            ..Ledger::new(&handled)
        },
    );
    skipping
        .facets()
        .attach(Box::new(DurabilityFacet::new(
            Arc::clone(&storage),
            config(0),
        )))
        .expect("facet");
    skipping.activate().await.expect("skips the unknown type");
    assert_eq!(skipping.behavior().balance, 10);
}
