//! Golden files of the wire format: the protobuf bytes every backend stores
//! must never change by accident, or journals written by an older build
//! stop reading (or, worse, read as something else).
//!
//! `tests/data/golden/` holds one `.bin` file per variant of
//! [`journal_entry::Entry`] (each a whole [`JournalEntry`], as backends
//! store it), plus a [`Checkpoint`], a [`FacetSnapshot`] and a
//! [`DurabilityConfigMessage`] per backend setting. Every value below is
//! fully populated and deterministic: every field set (flags `true`, enums
//! not their zero value), fixed ids and timestamps, non-ASCII text, binary
//! payloads that are not UTF-8, maps with several keys, varints past 32
//! bits. Each test checks both directions: the value encodes to exactly the
//! stored bytes, and the stored bytes decode to exactly the value.
//!
//! A test fails when a variant of `Entry` has no golden value: the variants
//! are found by decoding every field number the generated code knows, and
//! named by an exhaustive `match` (a new variant does not compile until it
//! is named there).
//!
//! The files were written once, and are rewritten only on request:
//!
//! ```text
//! JOURNAL_BLESS=1 cargo test -p journal-core --test golden
//! ```
//!
//! Without `JOURNAL_BLESS` the tests never write. Bless only when a change
//! of the bytes is intended (a new field, a new variant) and compatible
//! with the stored journals: `git diff` then shows which files changed, and
//! a file of an existing variant should change only by what was added.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::path::PathBuf;

use journal_core::durability_config::BackendConfig;
use journal_core::journal_entry::Entry;
use journal_core::prost_types::{Duration, Timestamp};
use journal_core::{
    Checkpoint, CompressionType, DurabilityConfigMessage, EventRecorded, FacetSnapshot,
    JournalBackend, JournalEntry, MessageProcessed, MessageReceived, PostgresConfig,
    ProcessedMessage, ProcessingResult, PromiseCreated, PromiseResolved, RedisConfig,
    SideEffectExecuted, SqliteConfig, StateChanged, TimerCancelled, TimerFired, TimerScheduled,
};
use prost::Message;

/// The environment variable that makes the tests (re)write the golden files.
const BLESS: &str = "JOURNAL_BLESS";

/// Where the golden files are.
fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/golden")
}

fn blessing() -> bool {
    std::env::var_os(BLESS).is_some_and(|v| !v.is_empty() && v != "0")
}

/// Checks `value` against the golden file `name.bin` in both directions
/// (writing the file first under `JOURNAL_BLESS`).
fn check_golden<M>(name: &str, value: &M)
where
    M: Message + Default + PartialEq + Debug,
{
    let path = golden_dir().join(format!("{name}.bin"));
    let encoded = value.encode_to_vec();
    if blessing() {
        std::fs::create_dir_all(golden_dir()).expect("the golden directory is writable");
        std::fs::write(&path, &encoded).expect("the golden file is writable");
    }
    let stored = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; write it with `{BLESS}=1 cargo test -p journal-core --test golden`",
            path.display()
        )
    });
    assert_same_bytes(name, &encoded, &stored);
    let decoded = M::decode(stored.as_slice())
        .unwrap_or_else(|e| panic!("{name}: the golden bytes no longer decode: {e}"));
    assert_eq!(
        &decoded, value,
        "{name}: the golden bytes decode to another value"
    );
}

/// Fails naming the first byte where the encoding departs from the golden
/// file.
fn assert_same_bytes(name: &str, encoded: &[u8], stored: &[u8]) {
    if encoded == stored {
        return;
    }
    let at = encoded
        .iter()
        .zip(stored)
        .position(|(a, b)| a != b)
        .unwrap_or(encoded.len().min(stored.len()));
    panic!(
        "{name}: the value no longer encodes to the golden bytes: {} bytes now, {} stored, \
         first difference at offset {at}\n now:    {}\n stored: {}\n\
         (if the change is intended and compatible, bless it: {BLESS}=1)",
        encoded.len(),
        stored.len(),
        hex(&encoded[at.min(encoded.len())..]),
        hex(&stored[at.min(stored.len())..]),
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .take(48)
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The golden file of an entry variant. No wildcard arm: a new variant of
/// `Entry` does not compile until it is named here, and then fails
/// `every_entry_variant_has_a_golden_value` until it has a value in
/// `golden_entries`.
fn entry_file(entry: &Entry) -> &'static str {
    match entry {
        Entry::MessageReceived(_) => "entry_message_received",
        Entry::MessageProcessed(_) => "entry_message_processed",
        Entry::StateChanged(_) => "entry_state_changed",
        Entry::SideEffectExecuted(_) => "entry_side_effect_executed",
        Entry::TimerScheduled(_) => "entry_timer_scheduled",
        Entry::TimerFired(_) => "entry_timer_fired",
        Entry::PromiseCreated(_) => "entry_promise_created",
        Entry::PromiseResolved(_) => "entry_promise_resolved",
        Entry::TimerCancelled(_) => "entry_timer_cancelled",
        Entry::EventRecorded(_) => "entry_event_recorded",
    }
}

/// Bytes that are not UTF-8 and hold every kind of byte a codec gets wrong:
/// zero, high bit, an invalid sequence, a would-be protobuf tag.
fn binary(seed: u8) -> Vec<u8> {
    vec![
        0x00, 0xff, 0x80, 0x7f, 0xc3, 0x28, 0x0a, 0x02, seed, 0xfe, 0x00, 0x01,
    ]
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A fixed instant: 2024-06-10T06:13:20.123456789Z plus `offset` seconds.
fn instant(offset: i64) -> Timestamp {
    Timestamp {
        seconds: 1_718_000_000 + offset,
        nanos: 123_456_789,
    }
}

/// One fully populated value of every `Entry` variant.
fn golden_entries() -> Vec<Entry> {
    vec![
        Entry::MessageReceived(MessageReceived {
            message_id: "msg-01-ü".into(),
            sender_id: "expéditeur/caisse-7".into(),
            message_type: "CartCommand::AddItem".into(),
            payload: binary(1),
            metadata: map(&[
                ("tenant", "société-α"),
                ("traceparent", "00-4bf92f3577b34da6-00f067aa0ba902b7-01"),
            ]),
        }),
        Entry::MessageProcessed(MessageProcessed {
            message_id: "msg-01-ü".into(),
            result: ProcessingResult::Error as i32,
            error_message: "stock épuisé: 在庫切れ".into(),
            response_payload: binary(2),
            reply_dropped: true,
        }),
        Entry::StateChanged(StateChanged {
            old_state: binary(3),
            new_state: binary(4),
            change_type: "réinitialisé".into(),
        }),
        Entry::SideEffectExecuted(SideEffectExecuted {
            effect_id: "effect-3".into(),
            effect_type: "payer/débit".into(),
            request: binary(5),
            response: binary(6),
            error: "délai dépassé ⏱".into(),
            result_dropped: true,
        }),
        Entry::TimerScheduled(TimerScheduled {
            timer_id: "timer-ß-1".into(),
            delay: Some(Duration {
                seconds: 90,
                nanos: 500_000_000,
            }),
            timer_data: binary(7),
            target_actor_id: "entrepôt-12".into(),
            target_actor_type: "Entrepôt".into(),
            due_at: Some(instant(90)),
            message_type: "Rappel::Relancer".into(),
        }),
        Entry::TimerFired(TimerFired {
            timer_id: "timer-ß-1".into(),
        }),
        Entry::PromiseCreated(PromiseCreated {
            promise_id: "promesse-Ω".into(),
            timeout: Some(Duration {
                seconds: 86_400,
                nanos: 1,
            }),
        }),
        Entry::PromiseResolved(PromiseResolved {
            promise_id: "promesse-Ω".into(),
            result: binary(8),
            error: "refusé par l'opérateur".into(),
        }),
        Entry::TimerCancelled(TimerCancelled {
            timer_id: "timer-ß-2".into(),
        }),
        Entry::EventRecorded(EventRecorded {
            event_type: "CartEvent::ArticleAjouté".into(),
            schema_version: 3,
            payload: binary(9),
            tags: vec!["audit".into(), "panier-🛒".into()],
            metadata: map(&[("origine", "caisse-7"), ("tenant", "société-α")]),
        }),
    ]
}

/// `entry` in a fully populated envelope: the `n`-th golden entry.
fn envelope(n: u64, entry: Entry) -> JournalEntry {
    JournalEntry {
        // A valid ULID (26 characters of Crockford's base 32).
        id: format!("01HZY3G8V2K7W5M9Q4R6T8X0{n:02}"),
        actor_id: "panier-ünïcødé-🛒".into(),
        // Past 32 bits: a five-byte varint.
        sequence: (1 << 32) + n,
        timestamp: Some(instant(i64::try_from(n).expect("small"))),
        correlation_id: format!("corrélation-{n}"),
        entry: Some(entry),
    }
}

#[test]
fn every_entry_variant_encodes_to_its_golden_file() {
    for (n, entry) in (1..).zip(golden_entries()) {
        let name = entry_file(&entry);
        check_golden(name, &envelope(n, entry));
    }
}

/// Every field number of `JournalEntry`'s oneof, found by decoding an empty
/// message under each number the generated decoder could know.
fn entry_variants() -> Vec<(u32, Entry)> {
    (1..=u32::from(u16::MAX))
        .filter_map(|tag| {
            let mut bytes = Vec::new();
            prost::encoding::encode_key(
                tag,
                prost::encoding::WireType::LengthDelimited,
                &mut bytes,
            );
            prost::encoding::encode_varint(0, &mut bytes);
            let decoded = JournalEntry::decode(bytes.as_slice()).ok()?;
            Some((tag, decoded.entry?))
        })
        .collect()
}

#[test]
fn every_entry_variant_has_a_golden_value() {
    let variants = entry_variants();
    assert_eq!(
        variants.iter().map(|(tag, _)| *tag).collect::<Vec<_>>(),
        (10..=19).collect::<Vec<_>>(),
        "the oneof's field numbers changed: give a new variant a golden value and list its number here"
    );
    let golden: Vec<&str> = golden_entries().iter().map(entry_file).collect();
    for (tag, variant) in &variants {
        let name = entry_file(variant);
        assert_eq!(
            golden.iter().filter(|g| **g == name).count(),
            1,
            "variant {name} (field {tag}) needs exactly one golden value in golden_entries()"
        );
        assert!(
            golden_dir().join(format!("{name}.bin")).is_file() || blessing(),
            "variant {name} (field {tag}) has no golden file"
        );
    }
    assert_eq!(golden.len(), variants.len(), "one golden value per variant");
}

#[test]
fn checkpoint_encodes_to_its_golden_file() {
    let checkpoint = Checkpoint {
        actor_id: "panier-ünïcødé-🛒".into(),
        sequence: (1 << 32) + 7,
        timestamp: Some(instant(3_600)),
        state_data: binary(10),
        compression: CompressionType::Zstd as i32,
        uncompressed_size: 5_000_000_000,
        metadata: map(&[
            ("pris-par", "passivation"),
            ("raison", "inactivité ≥ 5 min"),
        ]),
        state_schema_version: 7,
    };
    check_golden("checkpoint", &checkpoint);
}

#[test]
fn facet_snapshot_encodes_to_its_golden_file() {
    let snapshot = FacetSnapshot {
        actor_state: binary(11),
        recent_message_ids: vec!["msg-01-ü".into(), "msg-02-é".into()],
        processed: vec![
            ProcessedMessage {
                message_id: "msg-01-ü".into(),
                processed_sequence: (1 << 32) + 2,
                processed_at_ms: 1_718_000_000_123,
                outcome: Some(MessageProcessed {
                    message_id: "msg-01-ü".into(),
                    result: ProcessingResult::Success as i32,
                    error_message: "aucune".into(),
                    response_payload: binary(12),
                    reply_dropped: true,
                }),
            },
            ProcessedMessage {
                message_id: "msg-02-é".into(),
                processed_sequence: (1 << 32) + 4,
                // Before the epoch: a negative varint (ten bytes).
                processed_at_ms: -1,
                outcome: Some(MessageProcessed {
                    message_id: String::new(),
                    result: ProcessingResult::Retry as i32,
                    error_message: "réessayer plus tard".into(),
                    response_payload: binary(13),
                    reply_dropped: true,
                }),
            },
        ],
        unlisted_through: (1 << 32) + 1,
        // Not set: the golden bytes are those of builds before the field.
        owner: String::new(),
    };
    check_golden("facet_snapshot", &snapshot);
}

/// A fully populated durability configuration with `backend` and its
/// settings.
fn durability_config(backend: JournalBackend, config: BackendConfig) -> DurabilityConfigMessage {
    DurabilityConfigMessage {
        backend: backend as i32,
        checkpoint_interval: 250,
        checkpoint_timeout: Some(Duration {
            seconds: 300,
            nanos: 250_000_000,
        }),
        replay_on_activation: true,
        cache_side_effects: true,
        compression: CompressionType::Zstd as i32,
        // Negative: a ten-byte varint.
        compression_level: -5,
        state_schema_version: 4,
        checkpoints_to_keep: 3,
        truncate_after_checkpoint: true,
        max_checkpoint_bytes: 1 << 33,
        fail_on_corrupt_checkpoint: true,
        dedup_window: 2_000,
        dedup_retention: Some(Duration {
            seconds: 7 * 86_400,
            nanos: 0,
        }),
        journal_retry_attempts: 9,
        journal_retry_backoff: Some(Duration {
            seconds: 0,
            nanos: 75_000_000,
        }),
        batch_journal_writes: true,
        backend_config: Some(config),
    }
}

#[test]
fn durability_config_of_every_backend_encodes_to_its_golden_file() {
    let configs = [
        (
            "durability_config_sqlite",
            durability_config(
                JournalBackend::Sqlite,
                BackendConfig::Sqlite(SqliteConfig {
                    path: "/var/lib/journal/données-🛒.db".into(),
                    synchronous: "NORMAL".into(),
                    busy_timeout_ms: 5_000,
                }),
            ),
        ),
        (
            "durability_config_postgres",
            durability_config(
                JournalBackend::Postgres,
                BackendConfig::Postgres(PostgresConfig {
                    url: "postgres://journal:mot-de-passe@db.example/journal".into(),
                    pool_size: 16,
                    schema: "journal_é".into(),
                    statement_timeout_ms: 30_000,
                }),
            ),
        ),
        (
            "durability_config_redis",
            durability_config(
                JournalBackend::Redis,
                BackendConfig::Redis(RedisConfig {
                    url: "redis-cluster://:secret@redis.example:6379".into(),
                    key_prefix: "journal:ü:".into(),
                    pool_size: 8,
                    wait_replicas: 2,
                }),
            ),
        ),
    ];
    for (name, config) in &configs {
        check_golden(name, config);
    }
}

/// Every file in the golden directory belongs to a test above: a renamed
/// variant does not leave its old file behind unchecked.
#[test]
fn no_golden_file_is_left_unchecked() {
    let mut known: Vec<String> = golden_entries()
        .iter()
        .map(|e| format!("{}.bin", entry_file(e)))
        .collect();
    known.extend(
        [
            "checkpoint",
            "facet_snapshot",
            "durability_config_sqlite",
            "durability_config_postgres",
            "durability_config_redis",
        ]
        .map(|n| format!("{n}.bin")),
    );
    known.sort();
    if blessing() {
        // The other tests may still be writing theirs.
        return;
    }
    let mut present: Vec<String> = std::fs::read_dir(golden_dir())
        .expect("the golden directory is readable")
        .map(|e| {
            e.expect("the golden directory is readable")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    present.sort();
    assert_eq!(present, known);
}
