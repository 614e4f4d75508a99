//! PostgreSQL replay on a journal just written into a fresh schema, with no
//! table statistics (autovacuum off on the table, no `ANALYZE`): what a
//! bulk import or a new deployment meets. Beside it, raw streaming on the
//! same rows: one query (`query_raw`), rows decoded as they arrive, as the
//! fastest Rust peer replays.

use std::time::Instant;

use futures::{StreamExt, TryStreamExt};
use journal_core::{JournalEntry, JournalStorage};
use journal_postgres::PostgresJournalStorage;
use prost::Message as _;

use crate::workloads::fill;
use crate::{Better, Figure};

/// Runs of each side; the best of each is reported.
const RUNS: usize = 3;

/// Entries per second replaying one actor of `n` entries written through
/// the API into `storage`'s fresh schema (statistics kept away), against
/// one raw streaming query over the same rows.
pub async fn replay_fresh(storage: &PostgresJournalStorage, n: u64) -> Figure {
    let schema = storage.schema().to_owned();
    let client = storage.pool().get().await.expect("a connection");
    for table in ["entries", "actors"] {
        client
            .batch_execute(&format!(
                "ALTER TABLE {schema}.{table} SET (autovacuum_enabled = false)"
            ))
            .await
            .expect("no autovacuum: no statistics");
    }
    let actor = fill(storage, None, "fresh", n).await;
    let raw_sql =
        format!("SELECT entry FROM {schema}.entries WHERE actor_id = $1 ORDER BY sequence");
    let (mut ours, mut raw) = (0.0f64, 0.0f64);
    for _ in 0..RUNS {
        let started = Instant::now();
        let count = storage
            .replay_stream(&actor, 1)
            .try_fold(0u64, |count, entry| async move {
                std::hint::black_box(entry);
                Ok(count + 1)
            })
            .await
            .expect("replay");
        assert_eq!(count, n, "every entry replayed");
        ours = ours.max(n as f64 / started.elapsed().as_secs_f64());

        let started = Instant::now();
        let rows = client
            .query_raw(&raw_sql, [actor.as_bytes()])
            .await
            .expect("raw query");
        let count = rows
            .map(|row| {
                let row = row.expect("a row");
                let bytes: &[u8] = row.get(0);
                std::hint::black_box(JournalEntry::decode(bytes).expect("decode"));
            })
            .count()
            .await;
        assert_eq!(count as u64, n, "every row streamed");
        raw = raw.max(n as f64 / started.elapsed().as_secs_f64());
    }
    Figure {
        name: format!(
            "fresh-schema replay of {n} entries, just written, no statistics (best of {RUNS})"
        ),
        value: ours,
        unit: "entries/s",
        baseline: raw,
        baseline_name: "tokio-postgres, one streaming query (query_raw), rows decoded as they come"
            .into(),
        better: Better::Higher,
        target: String::new(),
        met: None,
    }
}
