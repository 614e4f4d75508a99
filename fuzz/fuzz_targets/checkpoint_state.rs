//! `CheckpointPolicy::decode` on a zstd state of any bytes and any claimed
//! size (the first 8 bytes, little-endian): never panics; every failure
//! `CorruptCheckpoint`; a state that decodes is as long as claimed and
//! within the limit. Seed the corpus with real frames
//! (`zstd -19 < some-file`, prefixed with their size) to reach deep.

#![no_main]

use journal_core::checkpoint::CheckpointPolicy;
use journal_core::{Checkpoint, CompressionType, JournalError};
use libfuzzer_sys::fuzz_target;

const LIMIT: u64 = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let (claim, frame) = data.split_at(data.len().min(8));
    let mut claimed = [0u8; 8];
    claimed[..claim.len()].copy_from_slice(claim);
    let mut checkpoint = Checkpoint::new("actor-1", 3, frame.to_vec());
    checkpoint.compression = CompressionType::Zstd.into();
    checkpoint.uncompressed_size = u64::from_le_bytes(claimed);
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
