//! `Checkpoint::decode_stored` on any bytes, then `CheckpointPolicy::decode`
//! on what decodes: never panics; every failure `CorruptCheckpoint`; a state
//! that decodes is as long as claimed and within the limit.

#![no_main]

use journal_core::checkpoint::CheckpointPolicy;
use journal_core::{Checkpoint, JournalError};
use libfuzzer_sys::fuzz_target;

const LIMIT: u64 = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let checkpoint = match Checkpoint::decode_stored("actor-1", 3, data) {
        Ok(checkpoint) => checkpoint,
        Err(JournalError::CorruptCheckpoint { .. }) => return,
        Err(other) => panic!("not CorruptCheckpoint: {other:?}"),
    };
    let policy = CheckpointPolicy {
        max_state_bytes: LIMIT,
        schema_version: checkpoint.state_schema_version,
        ..CheckpointPolicy::default()
    };
    match policy.decode(&checkpoint) {
        Ok(state) => {
            assert_eq!(state.len() as u64, checkpoint.uncompressed_size);
            assert!(state.len() as u64 <= LIMIT);
        }
        Err(JournalError::CorruptCheckpoint { .. }) => {}
        Err(other) => panic!("not CorruptCheckpoint: {other:?}"),
    }
});
