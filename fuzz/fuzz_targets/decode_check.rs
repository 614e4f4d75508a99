//! The check both checkpoint targets end with.

use journal_core::checkpoint::CheckpointPolicy;
use journal_core::{Checkpoint, JournalError};

/// Largest state the targets' policy accepts.
pub const LIMIT: u64 = 1 << 20;

/// `CheckpointPolicy::decode` of `checkpoint` (at its own schema version)
/// never panics, fails only as `CorruptCheckpoint`, and a state that
/// decodes is as long as claimed and within the limit.
pub fn decodes_within_the_limit(checkpoint: &Checkpoint) {
    let policy = CheckpointPolicy {
        max_state_bytes: LIMIT,
        schema_version: checkpoint.state_schema_version,
        ..CheckpointPolicy::default()
    };
    match policy.decode(checkpoint) {
        Ok(state) => {
            assert_eq!(state.len() as u64, checkpoint.uncompressed_size);
            assert!(state.len() as u64 <= LIMIT);
        }
        Err(JournalError::CorruptCheckpoint { .. }) => {}
        Err(other) => panic!("not CorruptCheckpoint: {other:?}"),
    }
}
