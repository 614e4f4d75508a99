//! `CheckpointPolicy::decode` on a zstd state of any bytes and any claimed
//! size (the first 8 bytes, little-endian): never panics; every failure
//! `CorruptCheckpoint`; a state that decodes is as long as claimed and
//! within the limit. Seed the corpus with real frames
//! (`zstd -19 < some-file`, prefixed with their size) to reach deep.

#![no_main]

use journal_core::{Checkpoint, CompressionType};
use libfuzzer_sys::fuzz_target;

#[path = "decode_check.rs"]
mod decode_check;

fuzz_target!(|data: &[u8]| {
    let (claim, frame) = data.split_at(data.len().min(8));
    let mut claimed = [0u8; 8];
    claimed[..claim.len()].copy_from_slice(claim);
    let mut checkpoint = Checkpoint::new("actor-1", 3, frame.to_vec());
    checkpoint.compression = CompressionType::Zstd.into();
    checkpoint.uncompressed_size = u64::from_le_bytes(claimed);
    decode_check::decodes_within_the_limit(&checkpoint);
});
