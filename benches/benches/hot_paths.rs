//! Micro-benchmarks of the per-entry hot paths: encoding, validation and
//! checkpoint compression. `cargo bench -p journal-benches`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use journal_benches::workloads::{bench_entry, Ledger};
use journal_core::checkpoint::CheckpointPolicy;
use journal_core::validate::{validate_batch, validate_entry, Limits};
use journal_core::JournalEntry;
use prost::Message;

fn encode_decode(c: &mut Criterion) {
    let entry = bench_entry("account-1", 42);
    let bytes = entry.encode_to_vec();
    let mut group = c.benchmark_group("entry");
    group.throughput(Throughput::Elements(1));
    group.bench_function("encode", |b| {
        b.iter(|| std::hint::black_box(&entry).encode_to_vec());
    });
    group.bench_function("decode", |b| {
        b.iter(|| JournalEntry::decode(std::hint::black_box(bytes.as_slice())).expect("decodes"));
    });
    group.finish();
}

fn validate(c: &mut Criterion) {
    let limits = Limits::default();
    let entry = bench_entry("account-1", 42);
    let batch: Vec<_> = (1..=100).map(|s| bench_entry("account-1", s)).collect();
    c.bench_function("validate entry", |b| {
        b.iter(|| validate_entry(std::hint::black_box(&entry), &limits));
    });
    c.bench_function("validate batch of 100", |b| {
        b.iter(|| validate_batch(std::hint::black_box(&batch), &limits));
    });
}

fn compress(c: &mut Criterion) {
    let state = Ledger::new(5_000).encode();
    let policy = CheckpointPolicy::default();
    let checkpoint = policy.encode("a", 1, &state).expect("encode");
    let mut group = c.benchmark_group("checkpoint");
    group.throughput(Throughput::Bytes(state.len() as u64));
    group.bench_function("zstd-3 compress", |b| {
        b.iter(|| policy.encode("a", 1, std::hint::black_box(&state)));
    });
    group.bench_function("bounded decompress", |b| {
        b.iter(|| policy.decode(std::hint::black_box(&checkpoint)));
    });
    group.finish();
}

criterion_group!(benches, encode_decode, validate, compress);
criterion_main!(benches);
