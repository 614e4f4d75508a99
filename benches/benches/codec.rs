//! Which serde format typed actors use (journal-actors): encode and decode
//! of a typical message and a typical state with serde_json, postcard,
//! bincode 2 and rmp-serde (MessagePack, with field names), and the encoded
//! sizes, printed once. `cargo bench -p journal-benches --bench codec`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// A typical message: an enum variant with a few fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum CartMessage {
    AddItem {
        sku: String,
        quantity: u32,
        price_cents: i64,
    },
    Checkout {
        payment_ref: String,
    },
}

/// A typical state: a cart of 20 lines.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Cart {
    owner: String,
    lines: Vec<Line>,
    total_cents: i64,
    checked_out: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Line {
    sku: String,
    quantity: u32,
    price_cents: i64,
}

type Encode<T> = fn(&T) -> Vec<u8>;
type Decode<T> = fn(&[u8]) -> T;

fn formats<T: Serialize + DeserializeOwned>() -> Vec<(&'static str, Encode<T>, Decode<T>)> {
    vec![
        (
            "serde_json",
            |v| serde_json::to_vec(v).expect("encodes"),
            |b| serde_json::from_slice(b).expect("decodes"),
        ),
        (
            "postcard",
            |v| postcard::to_allocvec(v).expect("encodes"),
            |b| postcard::from_bytes(b).expect("decodes"),
        ),
        (
            "bincode2",
            |v| bincode::serde::encode_to_vec(v, bincode::config::standard()).expect("encodes"),
            |b| {
                bincode::serde::decode_from_slice(b, bincode::config::standard())
                    .expect("decodes")
                    .0
            },
        ),
        (
            "rmp-serde (named)",
            |v| rmp_serde::to_vec_named(v).expect("encodes"),
            |b| rmp_serde::from_slice(b).expect("decodes"),
        ),
    ]
}

fn run<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(
    c: &mut Criterion,
    what: &str,
    value: &T,
) {
    let mut group = c.benchmark_group(format!("codec {what}"));
    group.throughput(Throughput::Elements(1));
    for (name, encode, decode) in formats::<T>() {
        let bytes = encode(value);
        assert_eq!(&decode(&bytes), value);
        println!("{what} as {name}: {} bytes", bytes.len());
        group.bench_function(format!("{name} encode"), |b| {
            b.iter(|| encode(std::hint::black_box(value)));
        });
        group.bench_function(format!("{name} decode"), |b| {
            b.iter(|| decode(std::hint::black_box(&bytes)));
        });
    }
    group.finish();
}

fn codecs(c: &mut Criterion) {
    let message = CartMessage::AddItem {
        sku: "SKU-000123-blue-xl".into(),
        quantity: 2,
        price_cents: 1_999,
    };
    let _ = CartMessage::Checkout {
        payment_ref: String::new(),
    };
    run(c, "message", &message);
    let state = Cart {
        owner: "customer-4711".into(),
        lines: (0..20)
            .map(|i| Line {
                sku: format!("SKU-{i:06}-blue-xl"),
                quantity: i % 3 + 1,
                price_cents: 999 + i64::from(i) * 100,
            })
            .collect(),
        total_cents: 123_456,
        checked_out: false,
    };
    run(c, "state of 20 lines", &state);
}

/// The baseline the codec's cost is weighed against: one message through
/// the memory backend is three appends (received, effect, processed).
fn memory_append_baseline(_: &mut Criterion) {
    use journal_core::{journal_entry::Entry, JournalEntry, JournalStorage};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let storage = journal_memory::MemoryJournalStorage::new();
    let count = 30_000_u64;
    let started = std::time::Instant::now();
    runtime.block_on(async {
        for sequence in 1..=count {
            let entry = JournalEntry::new(
                "baseline",
                sequence,
                Entry::message_received(format!("m-{sequence}"), "AddItem", vec![0; 64]),
            );
            storage.append_entry(&entry).await.expect("appends");
        }
    });
    let per = started.elapsed() / u32::try_from(count).expect("fits");
    println!("baseline: one memory append (entry built, validated, stored) takes {per:?}");
}

criterion_group!(benches, codecs, memory_append_baseline);
criterion_main!(benches);
