//! Peak memory of decoding crafted checkpoints (contract rule 12): with a
//! limit of 4 MiB, no frame (a tiny frame declaring a 64 MiB window, zstd
//! bombs with and without a declared size, lying size claims) makes
//! `CheckpointPolicy::decode` hold more than the claim it checked against
//! the limit plus a small constant.
//!
//! It lives here, not in journal-core, because counting needs a global
//! allocator, which is `unsafe` code: journal-core forbids it, and this
//! crate has one (`journal_benches::alloc::Counting`) already.
//!
//! The counting allocator sees Rust's heap, where the decoded state lives.
//! zstd's decoder context is allocated by the C library, out of its sight;
//! journal-core's unit tests (`a_wide_window_costs_the_decoder_nothing`)
//! bound that context with `ZSTD_sizeof_DCtx`, windows included.
//!
//! One test function: the counters are global, and a second test running
//! at the same time would count into them.

use journal_benches::alloc::{self, Counting};
use journal_core::checkpoint::CheckpointPolicy;
use journal_core::{Checkpoint, CompressionType, JournalError};

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const LIMIT: u64 = 4 << 20;

/// What decoding may hold beyond the claim: error strings and the like.
const SMALL: usize = 64 * 1024;

/// A 10-byte zstd frame: a window of 2^`window_log` bytes, no content size,
/// one raw block holding `x`.
fn wide_window_frame(window_log: u8) -> Vec<u8> {
    vec![
        0x28,
        0xB5,
        0x2F,
        0xFD,                   // magic
        0x00,                   // no content size, not single-segment
        (window_log - 10) << 3, // window descriptor
        0x09,
        0x00,
        0x00, // last block, raw, 1 byte
        b'x',
    ]
}

fn zstd_checkpoint(data: Vec<u8>, claimed: u64) -> Checkpoint {
    let mut c = Checkpoint::new("a", 1, data);
    c.compression = CompressionType::Zstd.into();
    c.uncompressed_size = claimed;
    c
}

/// The most bytes live at once while decoding `checkpoint`, and whether it
/// decoded.
fn peak_of_decode(policy: &CheckpointPolicy, checkpoint: &Checkpoint) -> (usize, bool) {
    alloc::start();
    let result = policy.decode(checkpoint);
    let ok = match &result {
        Ok(state) => state.len() as u64 == checkpoint.uncompressed_size,
        Err(JournalError::CorruptCheckpoint { .. }) => false,
        Err(other) => panic!("not CorruptCheckpoint: {other}"),
    };
    drop(result);
    (alloc::stop(), ok)
}

#[test]
fn decoding_holds_at_most_the_checked_claim() {
    let policy = CheckpointPolicy {
        max_state_bytes: LIMIT,
        ..CheckpointPolicy::default()
    };
    let limit = LIMIT as usize;
    let big_zeros = vec![0u8; 64 << 20];
    let declared_bomb = zstd::bulk::compress(&big_zeros, 19).expect("compress");
    let mut streamed_bomb = Vec::new();
    {
        let mut encoder =
            zstd::stream::write::Encoder::new(&mut streamed_bomb, 19).expect("encoder");
        std::io::Write::write_all(&mut encoder, &big_zeros).expect("write");
        encoder.finish().expect("finish");
    }
    drop(big_zeros);
    let real_state: Vec<u8> = b"balance=100;"
        .iter()
        .copied()
        .cycle()
        .take(limit)
        .collect();
    let real_frame = zstd::bulk::compress(&real_state, 3).expect("compress");
    let raw = {
        let mut c = Checkpoint::new("a", 1, real_state.clone());
        c.uncompressed_size = LIMIT;
        c
    };

    // (name, checkpoint, whether it decodes, most bytes it may hold)
    let cases: Vec<(&str, Checkpoint, bool, usize)> = vec![
        (
            "10-byte frame declaring a 64 MiB window, honest claim of 1",
            zstd_checkpoint(wide_window_frame(26), 1),
            true,
            1 + SMALL,
        ),
        (
            "10-byte frame declaring a 2 GiB window, claim at the limit",
            zstd_checkpoint(wide_window_frame(31), LIMIT),
            false,
            limit + SMALL,
        ),
        (
            "bomb declaring 64 MiB, claim of 1000",
            zstd_checkpoint(declared_bomb.clone(), 1000),
            false,
            SMALL,
        ),
        (
            "bomb declaring 64 MiB, claim at the limit",
            zstd_checkpoint(declared_bomb, LIMIT),
            false,
            SMALL,
        ),
        (
            "bomb without a declared size, claim of 1000",
            zstd_checkpoint(streamed_bomb.clone(), 1000),
            false,
            1000 + SMALL,
        ),
        (
            "bomb without a declared size, claim at the limit",
            zstd_checkpoint(streamed_bomb, LIMIT),
            false,
            limit + SMALL,
        ),
        (
            "real 4 MiB state claiming 10 bytes",
            zstd_checkpoint(real_frame.clone(), 10),
            false,
            SMALL,
        ),
        (
            "real 4 MiB state claiming one byte less",
            zstd_checkpoint(real_frame.clone(), LIMIT - 1),
            false,
            SMALL,
        ),
        (
            "real 4 MiB state, honest",
            zstd_checkpoint(real_frame, LIMIT),
            true,
            limit + SMALL,
        ),
        ("uncompressed 4 MiB state", raw, true, limit + SMALL),
    ];
    let mut report = Vec::new();
    for (name, checkpoint, decodes, bound) in &cases {
        let (peak, ok) = peak_of_decode(&policy, checkpoint);
        report.push(format!("{peak:>9} bytes (bound {bound:>9}): {name}"));
        assert_eq!(ok, *decodes, "{name}");
        assert!(
            peak <= *bound,
            "{name}: {peak} bytes live at once, the bound is {bound}"
        );
    }
    // The figures, for the record (shown with --nocapture).
    println!("{}", report.join("\n"));
}
