//! Schema evolution of an event-sourced actor: a journal written by
//! version 1 of a cart actor recovers under version 2 through its
//! upcaster.
//!
//! `tests/data/cart-v1.journal` holds real bytes version 1 wrote: the
//! entries of actor `cart-7` as `replay_from` returned them, each a
//! length-delimited protobuf `JournalEntry`. Six commands: one deciding one
//! event, one deciding three, one that failed (no event), then one event
//! each. Version 1's `ItemAdded` was `{ sku, qty }`; version 2's is
//! `{ sku, quantity, price_cents }`, and its upcaster renames `qty` and
//! gives carts of version 1 a price of 0 (unknown).
//!
//! The file was generated once, by the version 1 actor below, and is kept:
//! its ids and timestamps are those of that run. Every normal run checks
//! that version 1 still writes the same journal (ids and timestamps aside),
//! and never writes. To regenerate it:
//!
//! ```text
//! JOURNAL_BLESS=1 cargo test -p journal-actors --test event_upcast
//! ```
//!
//! Under `JOURNAL_BLESS` the generator writes the file before its check,
//! so the check passes whatever version 1 now writes: bless only to record
//! a deliberate change (a shipped version 1 never changes), and expect new
//! ids and timestamps in the file. It is written aside and renamed, so the
//! other tests of that run read the old file or the new one; when there
//! was none, they fail in that run and pass in the next.

use std::collections::BTreeMap;
use std::path::PathBuf;

use journal_actors::{ActorSystem, EventSourcedDurable, SendError, SystemEvent};
use journal_core::durability::ActivationReport;
use journal_core::journal_entry::Entry;
use journal_core::{
    rebuild_at, DurabilityConfig, EventRecorded, JournalEntry, JournalError, JournalStorage,
    ProcessingResult,
};
use journal_memory::MemoryJournalStorage;
use prost::Message;
use tokio::sync::broadcast;

/// The environment variable that makes the generator rewrite the file.
const BLESS: &str = "JOURNAL_BLESS";

/// The cart whose journal the file holds.
const ACTOR: &str = "cart-7";

fn journal_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/cart-v1.journal")
}

fn blessing() -> bool {
    std::env::var_os(BLESS).is_some_and(|v| !v.is_empty() && v != "0")
}

fn config() -> DurabilityConfig {
    DurabilityConfig::default()
}

/// Version 1 of the cart, as it was shipped: quantities only.
mod v1 {
    use std::collections::BTreeMap;

    use journal_actors::{Context, Decision, EventSourced};
    use journal_core::HandlerError;
    use serde::{Deserialize, Serialize};

    /// A cart: units per SKU, coupons applied.
    #[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
    pub struct Cart {
        pub items: BTreeMap<String, u32>,
        pub coupons: Vec<String>,
    }

    /// What a cart is sent.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub enum CartCommand {
        AddItem { sku: String, qty: u32 },
        AddItems(Vec<(String, u32)>),
        RemoveItem { sku: String },
        ApplyCoupon { code: String },
    }

    /// What a cart's commands decide, in schema version 1.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub enum CartEvent {
        ItemAdded { sku: String, qty: u32 },
        ItemRemoved { sku: String },
        CouponApplied { code: String },
    }

    /// What a cart answers: the units in it after the command.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub enum CartReply {
        Units(u32),
    }

    impl EventSourced for Cart {
        const TYPE: &'static str = "cart";
        type Command = CartCommand;
        type Event = CartEvent;
        type Reply = CartReply;

        async fn handle(
            &self,
            command: CartCommand,
            _: &mut Context<'_, Self>,
        ) -> Result<Decision<Self>, HandlerError> {
            let events = match command {
                CartCommand::AddItem { sku, qty } => vec![CartEvent::ItemAdded { sku, qty }],
                CartCommand::AddItems(items) => items
                    .into_iter()
                    .map(|(sku, qty)| CartEvent::ItemAdded { sku, qty })
                    .collect(),
                CartCommand::RemoveItem { sku } if !self.items.contains_key(&sku) => {
                    return Err(HandlerError::failed(format!("no {sku:?} in the cart")))
                }
                CartCommand::RemoveItem { sku } => vec![CartEvent::ItemRemoved { sku }],
                CartCommand::ApplyCoupon { code } => vec![CartEvent::CouponApplied { code }],
            };
            Ok(Decision::persist(events)
                .reply_with(|cart: &Cart| CartReply::Units(cart.items.values().sum())))
        }

        fn apply(&mut self, event: &CartEvent) {
            match event {
                CartEvent::ItemAdded { sku, qty } => {
                    *self.items.entry(sku.clone()).or_default() += qty;
                }
                CartEvent::ItemRemoved { sku } => {
                    self.items.remove(sku);
                }
                CartEvent::CouponApplied { code } => self.coupons.push(code.clone()),
            }
        }
    }
}

/// Version 2 of the cart: lines with a price, events in schema version 2.
mod v2 {
    use std::collections::BTreeMap;

    use journal_actors::{Context, Decision, EventSourced};
    use journal_core::HandlerError;
    use serde::{Deserialize, Serialize};
    use serde_json::Value;

    /// One SKU in the cart.
    #[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
    pub struct Line {
        pub quantity: u32,
        /// The unit price of the last addition; 0 when unknown (carts of
        /// version 1 had no prices).
        pub price_cents: u64,
    }

    /// A cart: lines per SKU, coupons applied.
    #[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
    pub struct Cart {
        pub lines: BTreeMap<String, Line>,
        pub coupons: Vec<String>,
    }

    /// What a cart is sent.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub enum CartCommand {
        AddItem {
            sku: String,
            quantity: u32,
            price_cents: u64,
        },
        RemoveItem {
            sku: String,
        },
        ApplyCoupon {
            code: String,
        },
        Get,
    }

    /// What a cart's commands decide, in schema version 2.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub enum CartEvent {
        ItemAdded {
            sku: String,
            quantity: u32,
            price_cents: u64,
        },
        ItemRemoved {
            sku: String,
        },
        CouponApplied {
            code: String,
        },
    }

    /// What a cart answers: the units in it after a change, or the whole
    /// cart. Version 1's replies (`Units`) still read.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub enum CartReply {
        Units(u32),
        Cart(Cart),
    }

    /// Reads an event of version 1 as version 2: `ItemAdded`'s `qty` is now
    /// `quantity`, and its `price_cents` is 0 (unknown); the other events
    /// did not change.
    pub fn upcast(event_type: &str, version: u32, mut event: Value) -> Result<Value, String> {
        match (event_type, version) {
            ("ItemAdded", 1) => {
                let text = event.to_string();
                let fields = event
                    .get_mut("ItemAdded")
                    .and_then(Value::as_object_mut)
                    .ok_or_else(|| format!("a version 1 ItemAdded is an object: {text}"))?;
                let quantity = fields
                    .remove("qty")
                    .ok_or_else(|| "a version 1 ItemAdded has a qty".to_owned())?;
                fields.insert("quantity".into(), quantity);
                fields.insert("price_cents".into(), 0.into());
                Ok(event)
            }
            ("ItemRemoved" | "CouponApplied", 1) => Ok(event),
            _ => Err(format!(
                "no upcaster for version {version} of {event_type:?}"
            )),
        }
    }

    impl Cart {
        pub fn units(&self) -> u32 {
            self.lines.values().map(|line| line.quantity).sum()
        }

        /// The events `command` decides (`Get` decides none).
        pub fn decide(&self, command: CartCommand) -> Result<Vec<CartEvent>, HandlerError> {
            Ok(match command {
                CartCommand::AddItem {
                    sku,
                    quantity,
                    price_cents,
                } => vec![CartEvent::ItemAdded {
                    sku,
                    quantity,
                    price_cents,
                }],
                CartCommand::RemoveItem { sku } if !self.lines.contains_key(&sku) => {
                    return Err(HandlerError::failed(format!("no {sku:?} in the cart")))
                }
                CartCommand::RemoveItem { sku } => vec![CartEvent::ItemRemoved { sku }],
                CartCommand::ApplyCoupon { code } => vec![CartEvent::CouponApplied { code }],
                CartCommand::Get => Vec::new(),
            })
        }

        pub fn fold(&mut self, event: &CartEvent) {
            match event {
                CartEvent::ItemAdded {
                    sku,
                    quantity,
                    price_cents,
                } => {
                    let line = self.lines.entry(sku.clone()).or_default();
                    line.quantity += quantity;
                    line.price_cents = *price_cents;
                }
                CartEvent::ItemRemoved { sku } => {
                    self.lines.remove(sku);
                }
                CartEvent::CouponApplied { code } => self.coupons.push(code.clone()),
            }
        }
    }

    /// The decision of `command` on `cart`: `Get` replies with the cart,
    /// the others with the units after their events.
    fn decision<A>(
        cart: &Cart,
        command: CartCommand,
        state: fn(&A) -> &Cart,
    ) -> Result<Decision<A>, HandlerError>
    where
        A: EventSourced<Event = CartEvent, Reply = CartReply>,
    {
        if matches!(command, CartCommand::Get) {
            return Ok(Decision::reply(CartReply::Cart(cart.clone())));
        }
        let events = cart.decide(command)?;
        Ok(Decision::persist(events).reply_with(move |a| CartReply::Units(state(a).units())))
    }

    impl EventSourced for Cart {
        const TYPE: &'static str = "cart";
        const EVENT_VERSION: u32 = 2;
        type Command = CartCommand;
        type Event = CartEvent;
        type Reply = CartReply;

        async fn handle(
            &self,
            command: CartCommand,
            _: &mut Context<'_, Self>,
        ) -> Result<Decision<Self>, HandlerError> {
            decision(self, command, |cart| cart)
        }

        fn apply(&mut self, event: &CartEvent) {
            self.fold(event);
        }

        fn upcast(event_type: &str, version: u32, event: Value) -> Result<Value, String> {
            upcast(event_type, version, event)
        }
    }

    /// Version 2 as it would be with its upcaster forgotten.
    #[derive(Debug, Default, Serialize, Deserialize)]
    pub struct CartWithoutUpcaster(pub Cart);

    impl EventSourced for CartWithoutUpcaster {
        const TYPE: &'static str = "cart";
        const EVENT_VERSION: u32 = 2;
        type Command = CartCommand;
        type Event = CartEvent;
        type Reply = CartReply;

        async fn handle(
            &self,
            command: CartCommand,
            _: &mut Context<'_, Self>,
        ) -> Result<Decision<Self>, HandlerError> {
            decision(&self.0, command, |a| &a.0)
        }

        fn apply(&mut self, event: &CartEvent) {
            self.0.fold(event);
        }
    }
}

/// A reader of carts that knows nothing of coupons: its event enum lacks
/// `CouponApplied`. `SKIP` is its `SKIP_UNKNOWN_EVENTS`.
mod reader {
    use std::collections::BTreeMap;

    use journal_actors::{Context, Decision, EventSourced};
    use journal_core::HandlerError;
    use serde::{Deserialize, Serialize};
    use serde_json::Value;

    /// Units per SKU.
    #[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
    pub struct Reader<const SKIP: bool> {
        pub units: BTreeMap<String, u32>,
    }

    /// The only command: the units per SKU.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub enum ReaderCommand {
        Get,
    }

    /// The events it knows (schema version 2, fields it ignores left out).
    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub enum CartEvent {
        ItemAdded { sku: String, quantity: u32 },
        ItemRemoved { sku: String },
    }

    impl<const SKIP: bool> EventSourced for Reader<SKIP> {
        const TYPE: &'static str = "cart";
        const EVENT_VERSION: u32 = 2;
        const SKIP_UNKNOWN_EVENTS: bool = SKIP;
        type Command = ReaderCommand;
        type Event = CartEvent;
        type Reply = BTreeMap<String, u32>;

        async fn handle(
            &self,
            ReaderCommand::Get: ReaderCommand,
            _: &mut Context<'_, Self>,
        ) -> Result<Decision<Self>, HandlerError> {
            Ok(Decision::reply(self.units.clone()))
        }

        fn apply(&mut self, event: &CartEvent) {
            match event {
                CartEvent::ItemAdded { sku, quantity } => {
                    *self.units.entry(sku.clone()).or_default() += quantity;
                }
                CartEvent::ItemRemoved { sku } => {
                    self.units.remove(sku);
                }
            }
        }

        fn upcast(event_type: &str, version: u32, event: Value) -> Result<Value, String> {
            super::v2::upcast(event_type, version, event)
        }
    }
}

/// The commands version 1 was sent, with their ids and the replies it
/// gave (a failure's text as `Err`).
fn v1_commands() -> Vec<(&'static str, v1::CartCommand, Result<v1::CartReply, String>)> {
    use v1::{CartCommand, CartReply};
    vec![
        (
            "cmd-1",
            CartCommand::AddItem {
                sku: "thé-vert-🍵".into(),
                qty: 2,
            },
            Ok(CartReply::Units(2)),
        ),
        (
            "cmd-2",
            CartCommand::AddItems(vec![
                ("café-moulu".into(), 1),
                ("pain-d'épices".into(), 3),
                ("thé-vert-🍵".into(), 1),
            ]),
            Ok(CartReply::Units(7)),
        ),
        (
            "cmd-3",
            CartCommand::RemoveItem {
                sku: "chocolat".into(),
            },
            Err("no \"chocolat\" in the cart".into()),
        ),
        (
            "cmd-4",
            CartCommand::RemoveItem {
                sku: "café-moulu".into(),
            },
            Ok(CartReply::Units(6)),
        ),
        (
            "cmd-5",
            CartCommand::ApplyCoupon {
                code: "ÉTÉ-2024".into(),
            },
            Ok(CartReply::Units(6)),
        ),
        (
            "cmd-6",
            CartCommand::AddItem {
                sku: "miel".into(),
                qty: 4,
            },
            Ok(CartReply::Units(10)),
        ),
    ]
}

/// The state version 2 recovers from the file.
fn expected_v2_cart() -> v2::Cart {
    let line = |quantity| v2::Line {
        quantity,
        price_cents: 0,
    };
    v2::Cart {
        lines: BTreeMap::from([
            ("miel".to_owned(), line(4)),
            ("pain-d'épices".to_owned(), line(3)),
            ("thé-vert-🍵".to_owned(), line(3)),
        ]),
        coupons: vec!["ÉTÉ-2024".into()],
    }
}

/// Runs version 1 on a fresh store, sends it `v1_commands`, and returns
/// the journal it wrote.
async fn run_v1() -> Vec<JournalEntry> {
    let storage = MemoryJournalStorage::new();
    let system = ActorSystem::builder(storage.clone())
        .register_event_sourced::<v1::Cart>(config(), |_| v1::Cart::default())
        .start();
    let cart = system.event_sourced::<v1::Cart>(ACTOR);
    for (id, command, expected) in v1_commands() {
        let reply = match cart.send_with_id(id, command).await {
            Ok(reply) => Ok(reply),
            Err(SendError::Handler(reason)) => Err(reason),
            Err(other) => panic!("{id}: {other}"),
        };
        assert_eq!(reply, expected, "{id}");
    }
    let entries = storage.replay_from(ACTOR, 1).await.expect("memory is up");
    system.shutdown().await;
    entries
}

fn encode_journal(entries: &[JournalEntry]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for entry in entries {
        entry
            .encode_length_delimited(&mut bytes)
            .expect("a Vec grows");
    }
    bytes
}

/// The entries of the file.
fn stored_v1_journal() -> Vec<JournalEntry> {
    let bytes = std::fs::read(journal_path()).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; write it with `{BLESS}=1 cargo test -p journal-actors --test event_upcast`",
            journal_path().display()
        )
    });
    let mut rest = bytes.as_slice();
    let mut entries = Vec::new();
    while !rest.is_empty() {
        entries.push(JournalEntry::decode_length_delimited(&mut rest).expect("an entry"));
    }
    entries
}

/// A fresh store holding the file's journal, and its entries.
async fn v1_store() -> (MemoryJournalStorage, Vec<JournalEntry>) {
    let entries = stored_v1_journal();
    let storage = MemoryJournalStorage::new();
    storage
        .append_batch(&entries)
        .await
        .expect("the stored journal appends");
    (storage, entries)
}

fn events_of(entries: &[JournalEntry]) -> Vec<(u64, &EventRecorded)> {
    entries
        .iter()
        .filter_map(|entry| match &entry.entry {
            Some(Entry::EventRecorded(event)) => Some((entry.sequence, event)),
            _ => None,
        })
        .collect()
}

/// The entry ids and timestamps of a run are its own; everything else of
/// a journal is what the actor decided.
fn without_ids_and_times(entries: &[JournalEntry]) -> Vec<JournalEntry> {
    entries
        .iter()
        .map(|entry| JournalEntry {
            id: String::new(),
            timestamp: None,
            ..entry.clone()
        })
        .collect()
}

/// Generator and guard of the file: version 1 still writes the journal the
/// file holds, ids and timestamps aside. Under `JOURNAL_BLESS` it first
/// rewrites the file with this run's journal.
#[tokio::test]
async fn the_stored_journal_is_what_version_1_writes() {
    let written = run_v1().await;
    if blessing() {
        let path = journal_path();
        std::fs::create_dir_all(path.parent().expect("a directory")).expect("writable");
        // Written aside and renamed: tests reading it in parallel see the
        // old file or the new one, never half of one.
        let partial = path.with_extension("journal.partial");
        std::fs::write(&partial, encode_journal(&written)).expect("writable");
        std::fs::rename(&partial, &path).expect("renamable");
    }
    let stored = stored_v1_journal();
    // Since the file was made, a system marks a journal's first message
    // with the type that wrote it; the file's journal is unmarked, as
    // every journal of older builds, and the other tests here recover it.
    let mut unmarked = written.clone();
    if !blessing() {
        let Some(Entry::MessageReceived(first)) = unmarked[0].entry.as_mut() else {
            panic!("a journal begins with a message: {:?}", unmarked[0]);
        };
        assert_eq!(
            first
                .metadata
                .remove(journal_core::OWNER_METADATA)
                .as_deref(),
            Some("cart")
        );
    }
    assert_eq!(
        without_ids_and_times(&stored),
        without_ids_and_times(&unmarked)
    );
    // What the other tests rely on.
    let events = events_of(&stored);
    assert_eq!(events.len(), 7);
    assert!(events.iter().all(|(_, e)| e.schema_version == 1));
    let failed = stored
        .iter()
        .filter(|e| {
            matches!(&e.entry, Some(Entry::MessageProcessed(p))
                if p.result == ProcessingResult::Error as i32)
        })
        .count();
    assert_eq!(failed, 1);
}

fn v2_system(storage: &MemoryJournalStorage) -> ActorSystem<MemoryJournalStorage> {
    ActorSystem::builder(storage.clone())
        .register_event_sourced::<v2::Cart>(config(), |_| v2::Cart::default())
        .start()
}

async fn get_v2(system: &ActorSystem<MemoryJournalStorage>) -> v2::Cart {
    match system
        .event_sourced::<v2::Cart>(ACTOR)
        .send(v2::CartCommand::Get)
        .await
        .expect("recovers and replies")
    {
        v2::CartReply::Cart(cart) => cart,
        other @ v2::CartReply::Units(_) => panic!("Get replied {other:?}"),
    }
}

/// What the activation announced on `events` recovered (announced before
/// the activated actor handles its first command).
fn activation(events: &mut broadcast::Receiver<SystemEvent>) -> ActivationReport {
    loop {
        if let SystemEvent::Activated { recovery, .. } =
            events.try_recv().expect("the activation was announced")
        {
            return recovery;
        }
    }
}

#[tokio::test]
async fn version_2_recovers_the_version_1_journal_through_its_upcaster() {
    let (storage, entries) = v1_store().await;
    let written = entries.len() as u64;
    let system = v2_system(&storage);
    let mut activations = system.events();

    assert_eq!(get_v2(&system).await, expected_v2_cart());

    // Recovery applied the journal's events: no checkpoint, every entry,
    // the six commands (the failed one too), none run again.
    let recovery = activation(&mut activations);
    assert_eq!(recovery.checkpoint_sequence, None);
    assert_eq!(recovery.replayed_entries, written);
    assert_eq!(recovery.replayed_messages, 6);
    assert_eq!(recovery.highest_sequence, written);
    // `Get` appended its start and end, and no event.
    let after = storage
        .replay_from(ACTOR, written + 1)
        .await
        .expect("memory is up");
    let kinds: Vec<&str> = after.iter().map(JournalEntry::kind).collect();
    assert_eq!(kinds, ["message_received", "message_processed"]);

    // Time travel reads the same events the same way.
    let mut durable = EventSourcedDurable::new(v2::Cart::default());
    rebuild_at(
        storage.clone(),
        &config(),
        ACTOR,
        &mut durable,
        written,
        false,
    )
    .await
    .expect("rebuilds");
    assert_eq!(durable.actor(), &expected_v2_cart());
}

#[tokio::test]
async fn version_2_answers_a_redelivered_version_1_command_with_its_recorded_reply() {
    let (storage, entries) = v1_store().await;
    let written = entries.len() as u64;
    let system = v2_system(&storage);
    let cart = system.event_sourced::<v2::Cart>(ACTOR);

    // Version 1 replied `Units(10)` to cmd-6; version 2 reads that reply,
    // and does not add the honey again.
    let reply = cart
        .send_with_id(
            "cmd-6",
            v2::CartCommand::AddItem {
                sku: "miel".into(),
                quantity: 4,
                price_cents: 999,
            },
        )
        .await
        .expect("the recorded reply");
    assert_eq!(reply, v2::CartReply::Units(10));
    // And its failure of cmd-3.
    let failed = cart
        .send_with_id(
            "cmd-3",
            v2::CartCommand::RemoveItem {
                sku: "chocolat".into(),
            },
        )
        .await;
    assert!(
        matches!(&failed, Err(SendError::Handler(reason)) if reason == "no \"chocolat\" in the cart"),
        "{failed:?}"
    );
    assert_eq!(
        storage.highest_sequence(ACTOR).await.expect("memory is up"),
        written,
        "a redelivery journals nothing"
    );
    assert_eq!(get_v2(&system).await, expected_v2_cart());
}

#[tokio::test]
async fn version_2_continues_the_journal_and_reads_both_versions_after() {
    let (storage, entries) = v1_store().await;
    let written = entries.len() as u64;
    let system = v2_system(&storage);
    let cart = system.event_sourced::<v2::Cart>(ACTOR);
    let reply = cart
        .send(v2::CartCommand::AddItem {
            sku: "miel".into(),
            quantity: 1,
            price_cents: 1_250,
        })
        .await
        .expect("added");
    assert_eq!(reply, v2::CartReply::Units(11));
    system.shutdown().await;

    let appended = storage
        .replay_from(ACTOR, written + 1)
        .await
        .expect("memory is up");
    let new_events = events_of(&appended);
    assert_eq!(new_events.len(), 1);
    let (_, event) = new_events[0];
    assert_eq!(event.event_type, "ItemAdded");
    assert_eq!(event.schema_version, 2);
    let payload: serde_json::Value = serde_json::from_slice(&event.payload).expect("JSON");
    assert_eq!(
        payload,
        serde_json::json!({"ItemAdded": {"sku": "miel", "quantity": 1, "price_cents": 1_250}})
    );

    let mut expected = expected_v2_cart();
    expected.lines.insert(
        "miel".into(),
        v2::Line {
            quantity: 5,
            price_cents: 1_250,
        },
    );
    // From the first entry: events of version 1 and of version 2.
    let highest = storage.highest_sequence(ACTOR).await.expect("memory is up");
    let mut durable = EventSourcedDurable::new(v2::Cart::default());
    rebuild_at(
        storage.clone(),
        &config(),
        ACTOR,
        &mut durable,
        highest,
        false,
    )
    .await
    .expect("rebuilds");
    assert_eq!(durable.actor(), &expected);
    // And a restarted system (from the snapshot shutdown took).
    let restarted = v2_system(&storage);
    assert_eq!(get_v2(&restarted).await, expected);
}

#[tokio::test]
async fn version_2_passes_over_a_version_1_snapshot_and_recovers_from_the_events() {
    let (storage, entries) = v1_store().await;
    let written = entries.len() as u64;
    // Version 1 activates on the journal (a redelivered command journals
    // nothing) and snapshots its own state at shutdown.
    let system = ActorSystem::builder(storage.clone())
        .register_event_sourced::<v1::Cart>(config(), |_| v1::Cart::default())
        .start();
    let reply = system
        .event_sourced::<v1::Cart>(ACTOR)
        .send_with_id(
            "cmd-6",
            v1::CartCommand::AddItem {
                sku: "miel".into(),
                qty: 4,
            },
        )
        .await
        .expect("the recorded reply");
    assert_eq!(reply, v1::CartReply::Units(10));
    system.shutdown().await;
    assert_eq!(
        storage.list_checkpoints(ACTOR).await.expect("memory is up"),
        [written]
    );

    // Version 2 cannot read a version 1 cart: it recovers from the events.
    let system = v2_system(&storage);
    let mut activations = system.events();
    assert_eq!(get_v2(&system).await, expected_v2_cart());
    let recovery = activation(&mut activations);
    assert_eq!(recovery.checkpoint_sequence, None);
    assert_eq!(recovery.replayed_entries, written);
}

/// The text of the recovery error a `Get` to an actor of type `A` gets, after
/// checking that it is one.
async fn recovery_error<A, C>(storage: &MemoryJournalStorage, get: C) -> String
where
    A: journal_actors::EventSourced<Command = C> + Default,
{
    let system = ActorSystem::builder(storage.clone())
        .register_event_sourced::<A>(config(), |_| A::default())
        .start();
    match system.event_sourced::<A>(ACTOR).send(get).await {
        Err(SendError::Recovery {
            actor_type,
            actor_id,
            source,
        }) => {
            assert_eq!((actor_type.as_str(), actor_id.as_str()), ("cart", ACTOR));
            assert!(
                matches!(*source, JournalError::RecoveryFailed { .. }),
                "{source:?}"
            );
            source.to_string()
        }
        Ok(_) => panic!("recovered"),
        Err(other) => panic!("another error: {other}"),
    }
}

#[tokio::test]
async fn version_2_without_an_upcaster_fails_naming_the_event_and_its_version() {
    let (storage, entries) = v1_store().await;
    let written = entries.len() as u64;
    let first_event = events_of(&entries)[0].0;

    let error = recovery_error::<v2::CartWithoutUpcaster, _>(&storage, v2::CartCommand::Get).await;
    assert!(
        error.contains(&format!(
            "event \"ItemAdded\" (schema version 1) at sequence {first_event}"
        )),
        "{error}"
    );
    assert!(
        error.contains("no upcaster from version 1 of \"ItemAdded\" to version 2"),
        "{error}"
    );
    assert_eq!(
        storage.highest_sequence(ACTOR).await.expect("memory is up"),
        written,
        "a failed recovery journals nothing"
    );

    // Time travel fails the same way.
    let mut durable = EventSourcedDurable::new(v2::CartWithoutUpcaster::default());
    let rebuilt = rebuild_at(
        storage.clone(),
        &config(),
        ACTOR,
        &mut durable,
        written,
        false,
    )
    .await;
    assert!(
        matches!(&rebuilt, Err(JournalError::RecoveryFailed { reason, .. })
            if reason.contains("\"ItemAdded\" (schema version 1)")),
        "{rebuilt:?}"
    );
}

#[tokio::test]
async fn an_actor_skipping_unknown_events_passes_over_a_variant_it_lacks() {
    let (storage, _) = v1_store().await;
    let system = ActorSystem::builder(storage.clone())
        .register_event_sourced::<reader::Reader<true>>(config(), |_| reader::Reader::default())
        .start();
    let units = system
        .event_sourced::<reader::Reader<true>>(ACTOR)
        .send(reader::ReaderCommand::Get)
        .await
        .expect("recovers, the coupon skipped");
    assert_eq!(
        units,
        BTreeMap::from([
            ("miel".to_owned(), 4),
            ("pain-d'épices".to_owned(), 3),
            ("thé-vert-🍵".to_owned(), 3),
        ])
    );
}

#[tokio::test]
async fn an_actor_not_skipping_unknown_events_fails_naming_the_one_it_lacks() {
    let (storage, entries) = v1_store().await;
    let coupon = events_of(&entries)
        .into_iter()
        .find(|(_, e)| e.event_type == "CouponApplied")
        .expect("the file has a coupon")
        .0;
    let error =
        recovery_error::<reader::Reader<false>, _>(&storage, reader::ReaderCommand::Get).await;
    assert!(
        error.contains(&format!(
            "event \"CouponApplied\" (schema version 1) at sequence {coupon}"
        )),
        "{error}"
    );
    assert!(
        error.contains("unknown event type \"CouponApplied\" for actor type cart"),
        "{error}"
    );
}
