//! Event-sourced actors in the actor system (contract rules 25, 26): typed
//! commands and events, replies from the state after the events, the hook
//! after persistence, exactly-once commands, recovery by events after a
//! restart (no command runs again), snapshots, tags in the feed, timers to
//! an event-sourced actor, and an interrupted command finished once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use journal_actors::{
    ActorSystem, Context, Decision, EventSourced, EventSourcedDurable, SendError, SystemEvent,
};
use journal_core::feed::{FeedFilter, FeedOffset, FeedOptions, JournalFeed};
use journal_core::journal_entry::Entry;
use journal_core::{
    rebuild_at, DurabilityConfig, HandlerError, JournalEntry, JournalStorage, MessageReceived,
};
use journal_memory::MemoryJournalStorage;
use serde::{Deserialize, Serialize};

/// Command handler runs and notifications, shared by every cart.
#[derive(Debug, Default)]
struct Probe {
    handled: AtomicUsize,
    notified: Mutex<Vec<String>>,
}

/// A shopping cart: items by SKU, checked out once.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Cart {
    items: Vec<(String, u32)>,
    checked_out: bool,
    /// The probe of this test (not state).
    #[serde(skip)]
    probe: Option<Arc<Probe>>,
}

#[derive(Debug, Serialize, Deserialize)]
enum CartCommand {
    Add {
        sku: String,
        qty: u32,
    },
    AddMany(Vec<(String, u32)>),
    Checkout,
    /// Checks out in an hour, through a timer.
    CheckoutLater,
    Get,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum CartEvent {
    ItemAdded { sku: String, qty: u32 },
    CheckedOut,
}

impl EventSourced for Cart {
    const TYPE: &'static str = "cart";
    type Command = CartCommand;
    type Event = CartEvent;
    type Reply = usize;

    async fn handle(
        &self,
        command: CartCommand,
        ctx: &mut Context<'_, Self>,
    ) -> Result<Decision<Self>, HandlerError> {
        if let Some(probe) = &self.probe {
            probe.handled.fetch_add(1, Ordering::SeqCst);
        }
        let probe = self.probe.clone();
        let count = |cart: &Cart| cart.items.iter().map(|(_, q)| *q as usize).sum();
        match command {
            _ if self.checked_out => Err(HandlerError::failed("the cart is checked out")),
            CartCommand::Add { qty: 0, .. } => Err(HandlerError::failed("nothing to add")),
            CartCommand::Add { sku, qty } => {
                Ok(Decision::persist([CartEvent::ItemAdded { sku, qty }]).reply_with(count))
            }
            CartCommand::AddMany(items) => Ok(Decision::persist(
                items
                    .into_iter()
                    .map(|(sku, qty)| CartEvent::ItemAdded { sku, qty }),
            )
            .reply_with(count)),
            CartCommand::Checkout => Ok(Decision::persist([CartEvent::CheckedOut])
                .reply_with(count)
                .then_run(move |cart| {
                    if let Some(probe) = probe {
                        probe
                            .notified
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .push(format!("checked out {} items", count(cart)));
                    }
                })),
            CartCommand::CheckoutLater => {
                ctx.schedule_command(Duration::from_secs(3600), CartCommand::Checkout)
                    .await?;
                Ok(Decision::reply(count(self)))
            }
            CartCommand::Get => Ok(Decision::reply(count(self))),
        }
    }

    fn apply(&mut self, event: &CartEvent) {
        match event {
            CartEvent::ItemAdded { sku, qty } => self.items.push((sku.clone(), *qty)),
            CartEvent::CheckedOut => self.checked_out = true,
        }
    }

    fn restore_from(&mut self, recovered: Self) {
        let probe = self.probe.take();
        *self = recovered;
        self.probe = probe;
    }

    fn tags(event: &CartEvent) -> Vec<String> {
        match event {
            CartEvent::ItemAdded { .. } => vec!["cart".into()],
            CartEvent::CheckedOut => vec!["cart".into(), "checkout".into()],
        }
    }
}

fn cart(probe: &Arc<Probe>) -> Cart {
    Cart {
        probe: Some(Arc::clone(probe)),
        ..Cart::default()
    }
}

fn config() -> DurabilityConfig {
    DurabilityConfig {
        checkpoint_interval: 10,
        ..DurabilityConfig::default()
    }
}

fn start(storage: &MemoryJournalStorage, probe: &Arc<Probe>) -> ActorSystem<MemoryJournalStorage> {
    let probe = Arc::clone(probe);
    ActorSystem::builder(storage.clone())
        .register_event_sourced::<Cart>(config(), move |_| cart(&probe))
        .start()
}

fn add(sku: &str, qty: u32) -> CartCommand {
    CartCommand::Add {
        sku: sku.into(),
        qty,
    }
}

async fn kinds(storage: &MemoryJournalStorage, id: &str) -> Vec<&'static str> {
    storage
        .replay_from(id, 1)
        .await
        .expect("replay")
        .iter()
        .map(|e| e.entry.as_ref().map_or("none", Entry::kind))
        .collect()
}

#[tokio::test]
async fn commands_persist_events_and_reply_from_the_new_state() {
    let storage = MemoryJournalStorage::new();
    let probe = Arc::new(Probe::default());
    let system = start(&storage, &probe);
    let basket = system.event_sourced::<Cart>("basket");
    assert_eq!(basket.send(add("apple", 2)).await.expect("added"), 2);
    let many = CartCommand::AddMany(vec![("pear".into(), 1), ("fig".into(), 3)]);
    assert_eq!(basket.send(many).await.expect("added"), 6);
    match basket.send(add("plum", 0)).await {
        Err(SendError::Handler(reason)) => assert_eq!(reason, "nothing to add"),
        other => panic!("a failed command, got {other:?}"),
    }
    assert_eq!(
        kinds(&storage, "basket").await,
        [
            "message_received",
            "event_recorded",
            "message_processed",
            "message_received",
            "event_recorded",
            "event_recorded",
            "message_processed",
            "message_received",
            "message_processed",
        ],
        "one batch per command; the failed one persisted nothing"
    );
    let entries = storage.replay_from("basket", 1).await.expect("replay");
    let Some(Entry::EventRecorded(event)) = &entries[4].entry else {
        panic!("an event");
    };
    assert_eq!(event.event_type, "ItemAdded");
    assert_eq!(event.schema_version, 1);
    assert_eq!(event.tags, ["cart"]);
    let decoded = EventSourcedDurable::<Cart>::decode_event(event).expect("decodes");
    assert_eq!(
        decoded,
        Some(CartEvent::ItemAdded {
            sku: "pear".into(),
            qty: 1
        })
    );
    system.shutdown().await;
}

#[tokio::test]
async fn the_hook_runs_after_persistence_and_never_on_recovery() {
    let storage = MemoryJournalStorage::new();
    let probe = Arc::new(Probe::default());
    let system = start(&storage, &probe);
    let basket = system.event_sourced::<Cart>("hooked");
    basket.send(add("apple", 4)).await.expect("added");
    assert_eq!(basket.send(CartCommand::Checkout).await.expect("done"), 4);
    let notified = probe.notified.lock().expect("not poisoned").clone();
    assert_eq!(notified, ["checked out 4 items"]);
    // After it, the journal holds the checkout's event.
    assert_eq!(
        kinds(&storage, "hooked").await.last(),
        Some(&"message_processed")
    );
    system.shutdown().await;

    let again = start(&storage, &probe);
    let basket = again.event_sourced::<Cart>("hooked");
    match basket.send(add("pear", 1)).await {
        Err(SendError::Handler(reason)) => assert_eq!(reason, "the cart is checked out"),
        other => panic!("recovered as checked out, got {other:?}"),
    }
    assert_eq!(
        probe.notified.lock().expect("not poisoned").len(),
        1,
        "recovery runs no hook"
    );
    again.shutdown().await;
}

#[tokio::test]
async fn a_restart_recovers_by_events_and_runs_no_command_again() {
    let storage = MemoryJournalStorage::new();
    let probe = Arc::new(Probe::default());
    let system = start(&storage, &probe);
    let basket = system.event_sourced::<Cart>("restart");
    for i in 0..25u32 {
        basket
            .send_with_id(format!("add-{i}"), add(&format!("sku-{i}"), i % 3 + 1))
            .await
            .expect("added");
    }
    let total = basket.send(CartCommand::Get).await.expect("count");
    system.shutdown().await;
    assert!(
        storage
            .get_latest_checkpoint("restart")
            .await
            .expect("read")
            .is_some(),
        "snapshots were taken every 10 entries"
    );
    let handled = probe.handled.load(Ordering::SeqCst);

    let again = start(&storage, &probe);
    let basket = again.event_sourced::<Cart>("restart");
    // A command sent again under its id: the first reply, nothing persisted.
    let before = storage.highest_sequence("restart").await.expect("highest");
    assert_eq!(
        basket
            .send_with_id("add-3", add("sku-3", 1))
            .await
            .expect("dup"),
        7
    );
    assert_eq!(
        storage.highest_sequence("restart").await.expect("highest"),
        before
    );
    assert_eq!(
        probe.handled.load(Ordering::SeqCst),
        handled,
        "neither recovery nor the duplicate ran a command"
    );
    assert_eq!(basket.send(CartCommand::Get).await.expect("count"), total);

    // Time travel: the state after the 4th command's event (its 2nd entry).
    let mut at = EventSourcedDurable::new(Cart::default());
    rebuild_at(storage.clone(), &config(), "restart", &mut at, 11, true)
        .await
        .expect("rebuilt");
    assert_eq!(at.actor().items.len(), 4);
    again.shutdown().await;
}

#[tokio::test]
async fn event_tags_are_in_the_feed_by_tag() {
    let storage = MemoryJournalStorage::new();
    let probe = Arc::new(Probe::default());
    let system = start(&storage, &probe);
    for id in ["t1", "t2"] {
        let basket = system.event_sourced::<Cart>(id);
        basket.send(add("apple", 1)).await.expect("added");
        basket
            .send(CartCommand::Checkout)
            .await
            .expect("checked out");
    }
    let page = storage
        .read_feed(
            &FeedFilter::Tag("checkout".into()),
            &FeedOffset::start(),
            100,
        )
        .await
        .expect("feed");
    let found: Vec<(String, String)> = page
        .iter()
        .map(|item| match &item.entry.entry {
            Some(Entry::EventRecorded(e)) => (item.entry.actor_id.clone(), e.event_type.clone()),
            other => panic!("only events carry the tag, got {other:?}"),
        })
        .collect();
    assert_eq!(
        found,
        [
            ("t1".to_owned(), "CheckedOut".to_owned()),
            ("t2".to_owned(), "CheckedOut".to_owned())
        ]
    );
    let carts = storage
        .feed(
            FeedFilter::Tag("cart".into()),
            FeedOffset::start(),
            FeedOptions::default(),
        )
        .take(4)
        .collect::<Vec<_>>()
        .await;
    assert_eq!(carts.len(), 4);
    system.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_timer_delivers_a_command_to_an_event_sourced_actor() {
    let storage = MemoryJournalStorage::new();
    let probe = Arc::new(Probe::default());
    let system = start(&storage, &probe);
    let mut events = system.events();
    let basket = system.event_sourced::<Cart>("later");
    basket.send(add("fig", 2)).await.expect("added");
    basket
        .send(CartCommand::CheckoutLater)
        .await
        .expect("scheduled");
    tokio::time::timeout(Duration::from_secs(2 * 3600), async {
        loop {
            if let SystemEvent::TimerFired { .. } = events.recv().await.expect("event") {
                return;
            }
        }
    })
    .await
    .expect("the timer fired");
    match basket.send(add("pear", 1)).await {
        Err(SendError::Handler(reason)) => assert_eq!(reason, "the cart is checked out"),
        other => panic!("checked out by the timer, got {other:?}"),
    }
    let kinds = kinds(&storage, "later").await;
    assert!(kinds.contains(&"timer_fired"), "{kinds:?}");
    assert_eq!(
        kinds.iter().filter(|k| **k == "event_recorded").count(),
        2,
        "{kinds:?}"
    );
    system.shutdown().await;
}

#[tokio::test]
async fn an_interrupted_command_is_finished_once_on_activation() {
    let storage = MemoryJournalStorage::new();
    // The process died after journaling the command, before its end.
    let command = MessageReceived {
        message_id: "lost".into(),
        message_type: "Add".into(),
        payload: serde_json::to_vec(&add("kiwi", 5)).expect("json"),
        ..MessageReceived::default()
    };
    storage
        .append_entry(&JournalEntry::new(
            "interrupted",
            1,
            Entry::MessageReceived(command),
        ))
        .await
        .expect("append");
    let probe = Arc::new(Probe::default());
    let system = start(&storage, &probe);
    let basket = system.event_sourced::<Cart>("interrupted");
    assert_eq!(basket.send(CartCommand::Get).await.expect("count"), 5);
    assert_eq!(
        kinds(&storage, "interrupted").await[..3],
        ["message_received", "event_recorded", "message_processed"]
    );
    // Sent again under its id: finished already, its reply recorded.
    assert_eq!(
        basket
            .send_with_id("lost", add("kiwi", 5))
            .await
            .expect("dup"),
        5
    );
    assert_eq!(
        probe.handled.load(Ordering::SeqCst),
        2,
        "lost once, get once"
    );
    system.shutdown().await;
}

#[tokio::test]
async fn a_new_state_schema_version_rebuilds_from_the_events_and_says_so() {
    let storage = MemoryJournalStorage::new();
    let probe = Arc::new(Probe::default());
    let system = start(&storage, &probe);
    let basket = system.event_sourced::<Cart>("schema");
    for i in 0..8u32 {
        basket.send(add(&format!("s{i}"), 1)).await.expect("added");
    }
    system.shutdown().await;
    let mut snapshots = storage.list_checkpoints("schema").await.expect("read");
    snapshots.reverse();
    assert!(!snapshots.is_empty(), "snapshots at version 1");

    // Version 2 of the state (no migration written): the snapshot is
    // passed over, reported, and the events rebuild the state.
    let bumped = DurabilityConfig {
        state_schema_version: 2,
        ..config()
    };
    let probe2 = Arc::clone(&probe);
    let again = ActorSystem::builder(storage.clone())
        .register_event_sourced::<Cart>(bumped, move |_| cart(&probe2))
        .start();
    let mut events = again.events();
    let basket = again.event_sourced::<Cart>("schema");
    assert_eq!(basket.send(CartCommand::Get).await.expect("count"), 8);
    let report = loop {
        if let SystemEvent::Activated { recovery, .. } = events.recv().await.expect("event") {
            break recovery;
        }
    };
    assert_eq!(report.checkpoint_sequence, None, "{report:?}");
    assert_eq!(
        report
            .skipped_checkpoints
            .iter()
            .map(|s| s.sequence)
            .collect::<Vec<_>>(),
        snapshots,
        "the snapshots passed over are reported, newest first"
    );
    again.shutdown().await;
}

/// An event whose payload holds a value its enum does not know is a
/// payload that does not decode, not an unknown event type: skipping
/// unknown types never drops it.
#[test]
fn an_unknown_value_inside_a_known_event_is_not_an_unknown_type() {
    #[derive(Debug, Default, Serialize, Deserialize)]
    struct Till;
    #[derive(Debug, Serialize, Deserialize)]
    enum Method {
        Card,
    }
    #[derive(Debug, Serialize, Deserialize)]
    enum TillEvent {
        Paid { method: Method },
    }
    impl EventSourced for Till {
        const TYPE: &'static str = "till";
        const SKIP_UNKNOWN_EVENTS: bool = true;
        type Command = ();
        type Event = TillEvent;
        type Reply = ();
        async fn handle(
            &self,
            (): (),
            _: &mut Context<'_, Self>,
        ) -> Result<Decision<Self>, HandlerError> {
            Ok(Decision::reply(()))
        }
        fn apply(&mut self, _: &TillEvent) {}
    }
    let event = |payload: &str| journal_core::EventRecorded {
        event_type: "Paid".into(),
        schema_version: 1,
        payload: payload.as_bytes().to_vec(),
        ..Default::default()
    };
    let error = EventSourcedDurable::<Till>::decode_event(&event(r#"{"Paid":{"method":"Cash"}}"#))
        .expect_err("a known event with a bad value");
    assert!(error.contains("does not decode"), "{error}");
    assert!(matches!(
        EventSourcedDurable::<Till>::decode_event(&event(r#"{"Refunded":{}}"#)),
        Ok(None)
    ));
    assert!(matches!(
        EventSourcedDurable::<Till>::decode_event(&event(r#"{"Paid":{"method":"Card"}}"#)),
        Ok(Some(TillEvent::Paid {
            method: Method::Card
        }))
    ));
}

/// An event type an internally or adjacently tagged enum no longer has is
/// an unknown event type too (its name is in a field, not the outer key).
#[test]
fn an_unknown_type_of_a_tagged_enum_is_skipped_when_asked() {
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(tag = "type")]
    enum ShelfEvent {
        Stocked { count: u64 },
    }
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(tag = "t", content = "c")]
    enum BinEvent {
        Filled(u64),
    }
    macro_rules! actor {
        ($name:ident, $event:ty, $skip:expr) => {
            #[derive(Debug, Default, Serialize, Deserialize)]
            struct $name;
            impl EventSourced for $name {
                const TYPE: &'static str = stringify!($name);
                const SKIP_UNKNOWN_EVENTS: bool = $skip;
                type Command = ();
                type Event = $event;
                type Reply = ();
                async fn handle(
                    &self,
                    (): (),
                    _: &mut Context<'_, Self>,
                ) -> Result<Decision<Self>, HandlerError> {
                    Ok(Decision::reply(()))
                }
                fn apply(&mut self, _: &$event) {}
            }
        };
    }
    actor!(Skipping, ShelfEvent, true);
    actor!(Strict, ShelfEvent, false);
    actor!(BinSkipping, BinEvent, true);
    let event = |event_type: &str, payload: &str| journal_core::EventRecorded {
        event_type: event_type.into(),
        schema_version: 1,
        payload: payload.as_bytes().to_vec(),
        ..Default::default()
    };
    let removed = event("Removed", r#"{"type":"Removed","count":1}"#);
    assert!(matches!(
        EventSourcedDurable::<Skipping>::decode_event(&removed),
        Ok(None)
    ));
    let error = EventSourcedDurable::<Strict>::decode_event(&removed).expect_err("unknown");
    assert!(error.contains("unknown event type \"Removed\""), "{error}");
    assert!(matches!(
        EventSourcedDurable::<Skipping>::decode_event(&event("Removed", r#"{"type":"Removed"}"#)),
        Ok(None)
    ));
    assert!(matches!(
        EventSourcedDurable::<BinSkipping>::decode_event(&event("Emptied", r#"{"t":"Emptied"}"#)),
        Ok(None)
    ));
    // Known types still decode, and a known one with a bad value does not.
    assert_eq!(
        EventSourcedDurable::<Skipping>::decode_event(&event(
            "Stocked",
            r#"{"type":"Stocked","count":3}"#
        ))
        .expect("decodes"),
        Some(ShelfEvent::Stocked { count: 3 })
    );
    let error = EventSourcedDurable::<Skipping>::decode_event(&event(
        "Stocked",
        r#"{"type":"Stocked","count":"x"}"#,
    ))
    .expect_err("a bad value");
    assert!(error.contains("does not decode"), "{error}");
}

/// A running total; `apply` panics at 13 (a bug in the actor).
#[derive(Debug, Default, Serialize, Deserialize)]
struct Tally {
    total: u64,
}

#[derive(Debug, Serialize, Deserialize)]
enum TallyEvent {
    Added(u64),
}

impl EventSourced for Tally {
    const TYPE: &'static str = "tally";
    type Command = Vec<u64>;
    type Event = TallyEvent;
    type Reply = u64;

    async fn handle(
        &self,
        adds: Vec<u64>,
        _: &mut Context<'_, Self>,
    ) -> Result<Decision<Self>, HandlerError> {
        Ok(Decision::persist(adds.into_iter().map(TallyEvent::Added))
            .reply_with(|t: &Tally| t.total))
    }

    fn apply(&mut self, event: &TallyEvent) {
        let TallyEvent::Added(n) = event;
        assert!(*n != 13, "unlucky number");
        self.total += n;
    }
}

/// A command whose events the actor cannot apply fails alone: its events
/// are not persisted, and the state in memory, which took some of them,
/// is taken back from the journal before the next command (rule 25: the
/// state is the fold of the persisted events).
#[tokio::test(start_paused = true)]
async fn a_command_whose_events_do_not_apply_leaves_the_state_as_persisted() {
    let storage = MemoryJournalStorage::new();
    let start = || {
        ActorSystem::builder(storage.clone())
            .register_event_sourced::<Tally>(config(), |_| Tally::default())
            .start()
    };
    let system = start();
    let tally = system.event_sourced::<Tally>("t");
    assert_eq!(tally.send(vec![1, 2]).await.expect("applied"), 3);
    match tally.send(vec![10, 13]).await {
        Err(SendError::Handler(reason)) => {
            assert!(reason.contains("panicked: unlucky number"), "{reason}");
        }
        other => panic!("not the command's failure: {other:?}"),
    }
    // Not 13 (10 applied before the panic): the persisted state.
    assert_eq!(tally.send(vec![4]).await.expect("applied"), 7);
    let events = storage
        .replay_from("t", 1)
        .await
        .expect("replay")
        .into_iter()
        .filter(|e| matches!(e.entry, Some(Entry::EventRecorded(_))))
        .count();
    assert_eq!(events, 3);
    system.shutdown().await;
    let system = start();
    assert_eq!(
        system
            .event_sourced::<Tally>("t")
            .send(Vec::new())
            .await
            .expect("recovered"),
        7
    );
    system.shutdown().await;
}
