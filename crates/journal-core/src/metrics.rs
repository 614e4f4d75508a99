//! Metrics through the [`metrics`] facade: every backend and the durability
//! facet record them, and nothing is exported until the application installs
//! a recorder (Prometheus, StatsD, OpenTelemetry, ...: see the
//! `journal-memory` example `prometheus`). Without one, recording costs a
//! few atomic loads.
//!
//! | name | kind | labels | what |
//! |---|---|---|---|
//! | `journal_appends_total` | counter | `backend`, `outcome` | append calls (`append_entry`, `append_batch`) by outcome: `ok`, or the error's kind ([`JournalError::kind`]: `sequence_conflict`, `unavailable`, ...) |
//! | `journal_appended_entries_total` | counter | `backend` | entries appended by calls that succeeded |
//! | `journal_append_seconds` | histogram | `backend` | time of an append call, errors included |
//! | `journal_replay_page_seconds` | histogram | `backend` | time of one read of a page of entries (`replay_range`, and so each page of a replay stream) |
//! | `journal_replayed_entries_total` | counter | `backend` | entries those reads returned |
//! | `journal_group_commit_size` | histogram | `backend` | appends committed together by a group commit (SQLite, PostgreSQL) |
//! | `journal_recoveries_total` | counter | `backend`, `outcome` | activations of durable actors (`ok` or the error's kind) |
//! | `journal_recovery_seconds` | histogram | `backend` | time of an activation's recovery |
//! | `journal_recovery_entries` | histogram | `backend` | entries replayed by a recovery after its checkpoint |
//! | `journal_checkpoint_bytes` | histogram | `form` | checkpoint state sizes: `raw` before compression, `stored` after |
//! | `journal_side_effects_run_again_total` | counter | | side effects that may have run twice: the first past the journal of a message interrupted by a crash |
//! | `journal_replay_divergences_total` | counter | | replays stopped by a `ReplayDivergence` |

use std::time::Instant;

use crate::error::JournalError;

/// `journal_appends_total`.
pub const APPENDS: &str = "journal_appends_total";
/// `journal_appended_entries_total`.
pub const APPENDED_ENTRIES: &str = "journal_appended_entries_total";
/// `journal_append_seconds`.
pub const APPEND_SECONDS: &str = "journal_append_seconds";
/// `journal_replay_page_seconds`.
pub const REPLAY_PAGE_SECONDS: &str = "journal_replay_page_seconds";
/// `journal_replayed_entries_total`.
pub const REPLAYED_ENTRIES: &str = "journal_replayed_entries_total";
/// `journal_group_commit_size`.
pub const GROUP_COMMIT_SIZE: &str = "journal_group_commit_size";
/// `journal_recoveries_total`.
pub const RECOVERIES: &str = "journal_recoveries_total";
/// `journal_recovery_seconds`.
pub const RECOVERY_SECONDS: &str = "journal_recovery_seconds";
/// `journal_recovery_entries`.
pub const RECOVERY_ENTRIES: &str = "journal_recovery_entries";
/// `journal_checkpoint_bytes`.
pub const CHECKPOINT_BYTES: &str = "journal_checkpoint_bytes";
/// `journal_side_effects_run_again_total`.
pub const SIDE_EFFECTS_RUN_AGAIN: &str = "journal_side_effects_run_again_total";
/// `journal_replay_divergences_total`.
pub const REPLAY_DIVERGENCES: &str = "journal_replay_divergences_total";

/// Describes every metric to the installed recorder (units and help
/// text, for exporters that show them). Optional; call it once after
/// installing a recorder.
pub fn describe() {
    use metrics::{describe_counter, describe_histogram, Unit};
    describe_counter!(APPENDS, "append calls by outcome");
    describe_counter!(APPENDED_ENTRIES, "entries appended");
    describe_histogram!(APPEND_SECONDS, Unit::Seconds, "time of an append call");
    describe_histogram!(REPLAY_PAGE_SECONDS, Unit::Seconds, "time of a page read");
    describe_counter!(REPLAYED_ENTRIES, "entries read by replays");
    describe_histogram!(GROUP_COMMIT_SIZE, "appends committed together");
    describe_counter!(RECOVERIES, "recoveries of durable actors by outcome");
    describe_histogram!(RECOVERY_SECONDS, Unit::Seconds, "time of a recovery");
    describe_histogram!(RECOVERY_ENTRIES, "entries replayed by a recovery");
    describe_histogram!(
        CHECKPOINT_BYTES,
        Unit::Bytes,
        "checkpoint state, raw and stored"
    );
    describe_counter!(
        SIDE_EFFECTS_RUN_AGAIN,
        "side effects that may have run twice"
    );
    describe_counter!(REPLAY_DIVERGENCES, "replays stopped by a divergence");
}

/// Records an append call of `entries` entries to `backend` that started
/// at `started` and ended with `outcome`.
pub fn append<T>(
    backend: &'static str,
    entries: usize,
    started: Instant,
    outcome: &Result<T, JournalError>,
) {
    if outcome.is_ok() {
        if let Some(keys) = APPEND_KEYS.iter().find(|k| k.backend == backend) {
            // The common case, with keys built at compile time (a key built
            // per call allocated and hashed its labels: a few percent of an
            // in-memory append).
            let seconds = started.elapsed().as_secs_f64();
            metrics::with_recorder(|recorder| {
                recorder.register_counter(&keys.ok, &METADATA).increment(1);
                recorder
                    .register_counter(&keys.entries, &METADATA)
                    .increment(entries as u64);
                recorder
                    .register_histogram(&keys.seconds, &METADATA)
                    .record(seconds);
            });
            return;
        }
    }
    let label = match outcome {
        Ok(_) => "ok",
        Err(e) => e.kind(),
    };
    metrics::counter!(APPENDS, "backend" => backend, "outcome" => label).increment(1);
    if outcome.is_ok() {
        metrics::counter!(APPENDED_ENTRIES, "backend" => backend).increment(entries as u64);
    }
    metrics::histogram!(APPEND_SECONDS, "backend" => backend)
        .record(started.elapsed().as_secs_f64());
}

/// Where the metrics of this crate say they come from, as the macros would.
static METADATA: metrics::Metadata<'static> =
    metrics::Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

/// The keys of a successful append to one of the built-in backends.
struct AppendKeys {
    backend: &'static str,
    /// `journal_appends_total{backend, outcome="ok"}`.
    ok: metrics::Key,
    /// `journal_appended_entries_total{backend}`.
    entries: metrics::Key,
    /// `journal_append_seconds{backend}`.
    seconds: metrics::Key,
}

/// The keys of a built-in backend, in a module of their own (statics, so
/// that the keys can point at their labels).
macro_rules! append_keys {
    ($module:ident, $backend:literal) => {
        mod $module {
            use metrics::{Key, Label};

            static OK: [Label; 2] = [
                Label::from_static_parts("backend", $backend),
                Label::from_static_parts("outcome", "ok"),
            ];
            static BACKEND: [Label; 1] = [Label::from_static_parts("backend", $backend)];
            pub(super) static KEYS: super::AppendKeys = super::AppendKeys {
                backend: $backend,
                ok: Key::from_static_parts(super::APPENDS, &OK),
                entries: Key::from_static_parts(super::APPENDED_ENTRIES, &BACKEND),
                seconds: Key::from_static_parts(super::APPEND_SECONDS, &BACKEND),
            };
        }
    };
}

append_keys!(memory_keys, "memory");
append_keys!(sqlite_keys, "sqlite");
append_keys!(postgres_keys, "postgres");
append_keys!(redis_keys, "redis");

static APPEND_KEYS: [&AppendKeys; 4] = [
    &memory_keys::KEYS,
    &sqlite_keys::KEYS,
    &postgres_keys::KEYS,
    &redis_keys::KEYS,
];

/// Runs `call`, an append of `entries` entries to `backend`, and records
/// it as [`append`] does: every backend's `append_entry` and
/// `append_batch` go through it.
pub async fn timed_append<T>(
    backend: &'static str,
    entries: usize,
    call: impl std::future::Future<Output = Result<T, JournalError>>,
) -> Result<T, JournalError> {
    let started = Instant::now();
    let outcome = call.await;
    append(backend, entries, started, &outcome);
    outcome
}

/// Runs `call`, a read of one page of entries from `backend`, and records
/// it as [`replay_page`] does (a failed read as a page of none).
pub async fn timed_page<T>(
    backend: &'static str,
    call: impl std::future::Future<Output = Result<Vec<T>, JournalError>>,
) -> Result<Vec<T>, JournalError> {
    let started = Instant::now();
    let outcome = call.await;
    replay_page(backend, outcome.as_ref().map_or(0, Vec::len), started);
    outcome
}

/// Records a page read from `backend` that started at `started` and
/// returned `entries` entries.
pub fn replay_page(backend: &'static str, entries: usize, started: Instant) {
    metrics::histogram!(REPLAY_PAGE_SECONDS, "backend" => backend)
        .record(started.elapsed().as_secs_f64());
    metrics::counter!(REPLAYED_ENTRIES, "backend" => backend).increment(entries as u64);
}

/// Records a group commit of `size` appends on `backend`.
pub fn group_commit(backend: &'static str, size: usize) {
    #[allow(clippy::cast_precision_loss)]
    metrics::histogram!(GROUP_COMMIT_SIZE, "backend" => backend).record(size as f64);
}

/// Records a recovery on `backend` that started at `started`, replaying
/// `entries` entries, ending with `outcome`.
pub fn recovery<T>(
    backend: &'static str,
    started: Instant,
    entries: u64,
    outcome: &Result<T, JournalError>,
) {
    let label = match outcome {
        Ok(_) => "ok",
        Err(e) => e.kind(),
    };
    metrics::counter!(RECOVERIES, "backend" => backend, "outcome" => label).increment(1);
    metrics::histogram!(RECOVERY_SECONDS, "backend" => backend)
        .record(started.elapsed().as_secs_f64());
    #[allow(clippy::cast_precision_loss)]
    metrics::histogram!(RECOVERY_ENTRIES, "backend" => backend).record(entries as f64);
    if matches!(outcome, Err(JournalError::ReplayDivergence { .. })) {
        metrics::counter!(REPLAY_DIVERGENCES).increment(1);
    }
}

/// Records a checkpoint's state sizes, before and after compression.
pub fn checkpoint(raw: usize, stored: usize) {
    #[allow(clippy::cast_precision_loss)]
    {
        metrics::histogram!(CHECKPOINT_BYTES, "form" => "raw").record(raw as f64);
        metrics::histogram!(CHECKPOINT_BYTES, "form" => "stored").record(stored as f64);
    }
}

/// Records a side effect that may run a second time.
pub fn side_effect_run_again() {
    metrics::counter!(SIDE_EFFECTS_RUN_AGAIN).increment(1);
}
