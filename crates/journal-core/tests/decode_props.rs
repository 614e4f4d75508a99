//! Bounded property tests of every decoder that reads bytes from storage:
//! random bytes and mutated valid encodings never panic, and every failure
//! is the typed error the contract names (`CorruptEntry`,
//! `CorruptCheckpoint`). The same inputs, unbounded, are the fuzz targets
//! in `fuzz/` at the workspace root.

use journal_core::checkpoint::CheckpointPolicy;
use journal_core::journal_entry::Entry;
use journal_core::{
    Checkpoint, CompressionType, JournalEntry, JournalError, MessageReceived, SideEffectExecuted,
};
use proptest::collection::vec;
use proptest::prelude::*;
use prost::Message;

/// Cases per property: enough to find shallow bugs on every CI run, few
/// enough to stay well under a second each in a debug build.
const CASES: u32 = 256;

/// Limit of the decoding policy: small, so bombs and lying sizes are cheap
/// to try.
const LIMIT: u64 = 64 * 1024;

fn policy() -> CheckpointPolicy {
    CheckpointPolicy {
        max_state_bytes: LIMIT,
        ..CheckpointPolicy::default()
    }
}

fn valid_entry() -> JournalEntry {
    let mut metadata = std::collections::BTreeMap::new();
    metadata.insert("trace".to_owned(), "t-1".to_owned());
    JournalEntry {
        correlation_id: "corr".into(),
        ..JournalEntry::new(
            "actor-1",
            7,
            Entry::MessageReceived(MessageReceived {
                message_id: "m-7".into(),
                sender_id: "s".into(),
                message_type: "Deposit".into(),
                payload: (0..=255u8).collect(),
                metadata,
            }),
        )
    }
}

fn valid_effect_entry() -> JournalEntry {
    JournalEntry::new(
        "actor-1",
        7,
        Entry::SideEffectExecuted(SideEffectExecuted {
            effect_id: "fx".into(),
            effect_type: "http".into(),
            request: b"GET /".to_vec(),
            response: vec![0; 40],
            error: String::new(),
            result_dropped: false,
        }),
    )
}

/// A state that compresses well, so mutations of its frame reach deep into
/// the decoder.
fn state() -> Vec<u8> {
    b"balance=100;owner=ada;".repeat(200)
}

/// One edit of a byte string.
#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, bits: u8 },
    Set { at: usize, value: u8 },
    Truncate { at: usize },
    Insert { at: usize, bytes: Vec<u8> },
    Remove { at: usize, len: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1..=255u8).prop_map(|(at, bits)| Mutation::Flip { at, bits }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, value)| Mutation::Set { at, value }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        (any::<usize>(), vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (any::<usize>(), 1..32usize).prop_map(|(at, len)| Mutation::Remove { at, len }),
    ]
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let n = bytes.len();
        match m {
            Mutation::Flip { at, bits } if n > 0 => bytes[at % n] ^= bits,
            Mutation::Set { at, value } if n > 0 => bytes[at % n] = *value,
            Mutation::Truncate { at } => bytes.truncate(at % (n + 1)),
            Mutation::Insert { at, bytes: extra } => {
                let at = at % (n + 1);
                bytes.splice(at..at, extra.iter().copied());
            }
            Mutation::Remove { at, len } if n > 0 => {
                let at = at % n;
                bytes.drain(at..(at + len).min(n));
            }
            _ => {}
        }
    }
    bytes
}

/// Decodes stored entry bytes: `Ok` only for the entry asked for,
/// otherwise `CorruptEntry` naming it.
fn check_entry(bytes: &[u8]) -> Result<(), TestCaseError> {
    match JournalEntry::decode_stored("actor-1", 7, bytes) {
        Ok(entry) => {
            prop_assert_eq!(entry.actor_id, "actor-1");
            prop_assert_eq!(entry.sequence, 7);
        }
        Err(JournalError::CorruptEntry {
            actor_id, sequence, ..
        }) => {
            prop_assert_eq!(actor_id, "actor-1");
            prop_assert_eq!(sequence, 7);
        }
        Err(other) => prop_assert!(false, "not CorruptEntry: {other:?}"),
    }
    Ok(())
}

/// Decodes stored checkpoint bytes and, when they decode, their state:
/// every failure is `CorruptCheckpoint`, and a state that decodes is
/// exactly as long as claimed, within the limit.
fn check_checkpoint_bytes(bytes: &[u8]) -> Result<(), TestCaseError> {
    match Checkpoint::decode_stored("actor-1", 3, bytes) {
        Ok(checkpoint) => check_state(&checkpoint)?,
        Err(JournalError::CorruptCheckpoint { .. }) => {}
        Err(other) => prop_assert!(false, "not CorruptCheckpoint: {other:?}"),
    }
    Ok(())
}

fn check_state(checkpoint: &Checkpoint) -> Result<(), TestCaseError> {
    match policy().decode(checkpoint) {
        Ok(state) => {
            prop_assert_eq!(state.len() as u64, checkpoint.uncompressed_size);
            prop_assert!(state.len() as u64 <= LIMIT);
        }
        Err(JournalError::CorruptCheckpoint { .. }) => {}
        Err(other) => prop_assert!(false, "not CorruptCheckpoint: {other:?}"),
    }
    Ok(())
}

fn compression() -> impl Strategy<Value = i32> {
    prop_oneof![
        Just(CompressionType::Zstd as i32),
        Just(CompressionType::None as i32),
        any::<i32>(),
    ]
}

/// A claimed size: often the truth or near it, sometimes anything.
fn claim(truth: u64) -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(truth),
        (0..=2 * LIMIT),
        Just(LIMIT),
        Just(LIMIT + 1),
        Just(u64::MAX),
        any::<u64>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn random_bytes_are_entries_or_corrupt(bytes in vec(any::<u8>(), 0..512)) {
        check_entry(&bytes)?;
    }

    #[test]
    fn mutated_entries_are_entries_or_corrupt(
        effect in any::<bool>(),
        mutations in vec(mutation(), 1..6),
    ) {
        let valid = if effect { valid_effect_entry() } else { valid_entry() };
        check_entry(&mutate(valid.encode_to_vec(), &mutations))?;
    }

    #[test]
    fn random_bytes_are_checkpoints_or_corrupt(bytes in vec(any::<u8>(), 0..512)) {
        check_checkpoint_bytes(&bytes)?;
    }

    #[test]
    fn mutated_checkpoints_are_checkpoints_or_corrupt(mutations in vec(mutation(), 1..6)) {
        let valid = policy().encode("actor-1", 3, &state()).expect("encode");
        check_checkpoint_bytes(&mutate(valid.encode_to_vec(), &mutations))?;
    }

    #[test]
    fn random_states_decode_or_are_corrupt(
        data in vec(any::<u8>(), 0..512),
        compression in compression(),
        claimed in claim(512),
    ) {
        let mut checkpoint = Checkpoint::new("actor-1", 3, data);
        checkpoint.compression = compression;
        checkpoint.uncompressed_size = claimed;
        check_state(&checkpoint)?;
    }

    #[test]
    fn mutated_frames_decode_or_are_corrupt(
        mutations in vec(mutation(), 0..6),
        claimed in claim(state().len() as u64),
        level in 1..=19i32,
    ) {
        let frame = zstd::bulk::compress(&state(), level).expect("compress");
        let mut checkpoint = Checkpoint::new("actor-1", 3, mutate(frame, &mutations));
        checkpoint.compression = CompressionType::Zstd.into();
        checkpoint.uncompressed_size = claimed;
        check_state(&checkpoint)?;
    }
}

/// The unmutated inputs decode: the properties above are not passing
/// because everything fails.
#[test]
fn valid_inputs_decode() {
    for entry in [valid_entry(), valid_effect_entry()] {
        assert_eq!(
            JournalEntry::decode_stored("actor-1", 7, &entry.encode_to_vec()).expect("entry"),
            entry
        );
    }
    let checkpoint = policy().encode("actor-1", 3, &state()).expect("encode");
    let stored =
        Checkpoint::decode_stored("actor-1", 3, &checkpoint.encode_to_vec()).expect("checkpoint");
    assert_eq!(policy().decode(&stored).expect("state"), state());
}
