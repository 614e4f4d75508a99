//! `Checkpoint::decode_stored` on any bytes, then `CheckpointPolicy::decode`
//! on what decodes: never panics; every failure `CorruptCheckpoint`; a state
//! that decodes is as long as claimed and within the limit.

#![no_main]

use journal_core::{Checkpoint, JournalError};
use libfuzzer_sys::fuzz_target;

#[path = "decode_check.rs"]
mod decode_check;

fuzz_target!(|data: &[u8]| {
    let checkpoint = match Checkpoint::decode_stored("actor-1", 3, data) {
        Ok(checkpoint) => checkpoint,
        Err(JournalError::CorruptCheckpoint { .. }) => return,
        Err(other) => panic!("not CorruptCheckpoint: {other:?}"),
    };
    decode_check::decodes_within_the_limit(&checkpoint);
});
