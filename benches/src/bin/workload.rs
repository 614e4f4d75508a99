//! The workload runner: `cargo xtask bench [--backend NAME]`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use journal_benches::actor_system::{self, SystemStore};
use journal_benches::baselines::{RawMemory, RawPostgres, RawRedis, RawSqlite};
use journal_benches::event_sourced;
use journal_benches::group_commit::{
    self, GroupWriter, Journal, RawPostgresGroup, RawSqliteGroup, SqliteLayout,
};
use journal_benches::workloads::{self, Sizes};
use journal_benches::{alloc::Counting, report, Baseline, Better, Figure};
use journal_core::{JournalBackend, JournalStorage};
use journal_memory::MemoryJournalStorage;
use journal_postgres::{PostgresJournalStorage, PostgresOptions};
use journal_redis::{RedisJournalStorage, RedisOptions};
use journal_sqlite::SqliteJournalStorage;

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const BACKENDS: &[&str] = &["memory", "sqlite", "postgres", "redis"];

/// One target: the figure it applies to (by name prefix), the text, and the
/// check.
type Target = (&'static str, &'static str, fn(&Figure) -> bool);

const MEMORY_TARGETS: &[Target] = &[
    ("append latency p50", "<= 2 us", |f| f.value <= 2.0),
    ("replay of", ">= 1,000,000/s", |f| f.value >= 1_000_000.0),
    ("recovery of", ">= 100x faster", |f| f.ratio() <= 0.01),
    ("checkpoint size", "<= 10% of raw", |f| f.ratio() <= 0.10),
    ("peak memory", "< 64 MiB", |f| f.value < 64.0),
    (
        "facet messages/s (1 effect), 256 ",
        ">= 0.3x raw appends/s",
        |f| f.ratio() >= 0.3,
    ),
    (
        "system messages/s (typed, 1 effect), 256 ",
        ">= 0.3x raw appends/s",
        |f| f.ratio() >= 0.3,
    ),
    (
        "system activation peak memory, 10000 actors, max_actors 1000",
        "<= 0.25x unbounded",
        |f| f.ratio() <= 0.25,
    ),
    ("feed entries/s", ">= 0.5x replay", |f| f.ratio() >= 0.5),
    ("projection entries/s", ">= 0.5x replay", |f| {
        f.ratio() >= 0.5
    }),
];

const SQLITE_TARGETS: &[Target] = &[
    ("append latency p50", "<= 1.2x raw", |f| f.ratio() <= 1.2),
    ("appends/s, 256 concurrent", ">= 20x raw 1-row", |f| {
        f.ratio() >= 20.0
    }),
    (
        "group commit appends/s, 256 concurrent",
        ">= 0.8x raw group commit",
        |f| f.ratio() >= 0.8,
    ),
    ("replay of", ">= 0.8x raw", |f| f.ratio() >= 0.8),
    ("recovery of", ">= 100x faster", |f| f.ratio() <= 0.01),
    ("peak memory", "< 64 MiB", |f| f.value < 64.0),
    (
        "facet messages/s (1 effect), 256 ",
        ">= 0.3x raw appends/s",
        |f| f.ratio() >= 0.3,
    ),
    (
        "system messages/s (typed, 1 effect), 256 ",
        ">= 0.3x raw appends/s",
        |f| f.ratio() >= 0.3,
    ),
    (
        "system activation peak memory, 10000 actors, max_actors 1000",
        "<= 0.25x unbounded",
        |f| f.ratio() <= 0.25,
    ),
    ("feed entries/s", ">= 0.5x replay", |f| f.ratio() >= 0.5),
    ("projection entries/s", ">= 0.5x replay", |f| {
        f.ratio() >= 0.5
    }),
];

const POSTGRES_TARGETS: &[Target] = &[
    ("append latency p50", "<= 1.2x raw", |f| f.ratio() <= 1.2),
    ("appends/s, 256 concurrent", ">= 10x raw 1-row", |f| {
        f.ratio() >= 10.0
    }),
    (
        "group commit appends/s, 256 concurrent",
        ">= 0.5x raw group commit",
        |f| f.ratio() >= 0.5,
    ),
    (
        "group commit latency p99, 256 concurrent",
        "p99 < 50 ms",
        |f| f.value < 50.0,
    ),
    ("replay of", ">= 0.8x raw", |f| f.ratio() >= 0.8),
    ("fresh-schema replay", ">= 1x raw streaming", |f| {
        f.ratio() >= 1.0
    }),
    ("peak memory", "< 64 MiB", |f| f.value < 64.0),
    (
        "facet messages/s (1 effect), 256 ",
        ">= 0.3x raw appends/s",
        |f| f.ratio() >= 0.3,
    ),
    ("feed entries/s", ">= 0.5x replay", |f| f.ratio() >= 0.5),
    ("projection entries/s", ">= 0.5x replay", |f| {
        f.ratio() >= 0.5
    }),
];

const REDIS_TARGETS: &[Target] = &[
    ("append latency p50", "<= 1.3x raw script", |f| {
        f.ratio() <= 1.3
    }),
    ("appends/s, 256 concurrent", ">= 10x raw 1-client", |f| {
        f.ratio() >= 10.0
    }),
    ("replay of", ">= 0.8x raw", |f| f.ratio() >= 0.8),
    ("peak memory", "< 64 MiB", |f| f.value < 64.0),
    (
        "facet messages/s (1 effect), 256 ",
        ">= 0.3x raw appends/s",
        |f| f.ratio() >= 0.3,
    ),
    ("feed entries/s", ">= 0.5x replay", |f| f.ratio() >= 0.5),
    ("projection entries/s", ">= 0.5x replay", |f| {
        f.ratio() >= 0.5
    }),
];

fn mark(figures: &mut [Figure], targets: &[Target]) {
    for f in figures {
        if let Some((_, text, check)) = targets
            .iter()
            .find(|(prefix, _, _)| f.name.starts_with(prefix))
        {
            f.target = (*text).into();
            f.met = Some(check(f));
        }
    }
}

/// The workloads every backend runs, or those whose name starts with
/// `only`. `baseline_clients` is how many clients the throughput baseline
/// uses (`None`: as many as the journal's actors).
async fn run_all(
    storage: Arc<dyn JournalStorage>,
    baseline: Arc<dyn Baseline>,
    fresh: Arc<dyn JournalStorage>,
    baseline_clients: Option<usize>,
    only: Option<&str>,
    sizes: Sizes,
    backend: JournalBackend,
) -> Vec<Figure> {
    let want = |name: &str| only.is_none_or(|o| name.starts_with(o));
    let mut figures = Vec::new();
    if want("latency") {
        figures
            .extend(workloads::append_latency(&*storage, &*baseline, sizes.latency_appends).await);
    }
    if want("throughput") {
        for actors in [1, 16, 256] {
            let clients = baseline_clients.unwrap_or(actors);
            figures.push(
                workloads::throughput(
                    Arc::clone(&storage),
                    Arc::clone(&baseline),
                    actors,
                    clients,
                    sizes.throughput_appends,
                )
                .await,
            );
        }
    }
    if want("batch") {
        figures.push(workloads::batch_rate(&*storage, &*baseline, 100_000, sizes.batch).await);
    }
    if want("replay") {
        figures.push(workloads::replay_rate(&*storage, &*baseline, sizes.replay_entries).await);
    }
    if want("interleaved") {
        let (actors, n) = sizes.interleaved;
        figures
            .push(workloads::replay_interleaved(Arc::clone(&storage), &*baseline, actors, n).await);
    }
    if want("recovery") {
        figures.push(workloads::recovery(Arc::clone(&storage), sizes.recovery_entries).await);
    }
    if want("checkpoint") {
        figures.push(workloads::checkpoint_size());
    }
    if want("facet") {
        let (one, each) = sizes.facet;
        for batched in [false, true] {
            for (actors, messages) in [(1, one), (256, each)] {
                figures.push(
                    workloads::facet_throughput(
                        Arc::clone(&storage),
                        backend,
                        actors,
                        messages,
                        batched,
                    )
                    .await,
                );
            }
        }
    }
    if want("stream") {
        figures.push(workloads::stream_memory(&*fresh, sizes.stream_entries).await);
    }
    figures
}

/// The actor system's workloads (`journal-actors`) over `storage`, or
/// those whose name starts with `only`; `baseline` is the raw backend.
async fn run_system<S: SystemStore>(
    storage: S,
    baseline: Arc<dyn Baseline>,
    only: Option<&str>,
    backend: JournalBackend,
    with_messages: bool,
) -> Vec<Figure> {
    let want = |name: &str| only.is_none_or(|o| name.starts_with(o));
    let took = |name: &str, started: Instant| {
        println!("{name}: {:.1?}", started.elapsed());
    };
    let mut figures = Vec::new();
    if with_messages && want("system-messages") {
        let started = Instant::now();
        for actors in [1, 16, 256] {
            figures.extend(
                actor_system::messages(storage.clone(), Arc::clone(&baseline), backend, actors)
                    .await,
            );
        }
        took("system-messages", started);
    }
    if want("system-activation") {
        let started = Instant::now();
        figures.extend(actor_system::activation(storage.clone(), backend).await);
        took("system-activation", started);
    }
    if want("system-timers") {
        let started = Instant::now();
        figures.extend(actor_system::timers(storage, backend).await);
        took("system-timers", started);
    }
    figures
}

/// The event-sourcing workloads (`journal-actors` event-sourced actors),
/// or those whose name starts with `only` (`--only events` runs both):
/// events persisted per second at 1 and 256 actors, one and five events
/// per command, beside the raw backend's appends; and recovery of an actor
/// with 100,000 events. `stores` gives the store and the raw baseline of
/// each figure (the same ones, or fresh ones where a store slows down as
/// it holds more, as the memory backend's do).
async fn run_events<S: SystemStore>(
    stores: impl Fn() -> (S, Arc<dyn Baseline>),
    only: Option<&str>,
    backend: JournalBackend,
) -> Vec<Figure> {
    let want = |name: &str| only.is_none_or(|o| name.starts_with(o));
    let mut figures = Vec::new();
    if want("events-persisted") {
        let started = Instant::now();
        for per_command in [1, 5] {
            for actors in [1, 256] {
                let (storage, baseline) = stores();
                figures.push(
                    event_sourced::persisted(storage, baseline, backend, actors, per_command).await,
                );
            }
        }
        println!("events-persisted: {:.1?}", started.elapsed());
    }
    if want("events-recovery") {
        let started = Instant::now();
        let (storage, _) = stores();
        figures.extend(event_sourced::recovery(storage, backend).await);
        println!("events-recovery: {:.1?}", started.elapsed());
    }
    figures
}

/// The live-subscription workloads over `storage`, unless `only` names
/// another.
async fn run_subscribe<S>(storage: S, only: Option<&str>) -> Vec<Figure>
where
    S: journal_core::JournalWatch + Clone + 'static,
{
    if !only.is_none_or(|o| "subscribe".starts_with(o)) {
        return Vec::new();
    }
    let started = Instant::now();
    let mut figures = Vec::new();
    for actors in [1, 256] {
        figures.extend(journal_benches::subscribe::lag(storage.clone(), actors).await);
    }
    println!("subscribe: {:.1?}", started.elapsed());
    figures
}

/// The feed and projection workloads over `storage` (a store of its own),
/// unless `only` names another.
async fn run_feed<S>(storage: S, only: Option<&str>) -> Vec<Figure>
where
    S: journal_core::ProjectionStore + Clone + 'static,
{
    if !only.is_none_or(|o| "feed".starts_with(o)) {
        return Vec::new();
    }
    let started = Instant::now();
    let figures = journal_benches::subscribe::feed_throughput(storage).await;
    println!("feed: {:.1?}", started.elapsed());
    figures
}

async fn run_backend(backend: &str, dir: &Path, only: Option<&str>) -> Result<Vec<Figure>, String> {
    Ok(match backend {
        "memory" => {
            let raw: Arc<dyn Baseline> = Arc::new(RawMemory::default());
            let mut figures = run_all(
                Arc::new(MemoryJournalStorage::new()),
                Arc::clone(&raw),
                Arc::new(MemoryJournalStorage::new()),
                None,
                only,
                Sizes::FULL,
                JournalBackend::Memory,
            )
            .await;
            // The messages figure, each size on a fresh store beside a
            // fresh baseline: both keep every entry, and both rates fall as
            // the process holds more (the raw one faster), so sizes run
            // one after another on shared stores measured the order of the
            // runs as much as the system.
            if only.is_none_or(|o| "system-messages".starts_with(o)) {
                let started = Instant::now();
                for actors in [1, 16, 256] {
                    let raw: Arc<dyn Baseline> = Arc::new(RawMemory::default());
                    figures.extend(
                        actor_system::messages(
                            MemoryJournalStorage::new(),
                            raw,
                            JournalBackend::Memory,
                            actors,
                        )
                        .await,
                    );
                }
                println!("system-messages: {:.1?}", started.elapsed());
            }
            figures.extend(
                run_system(
                    MemoryJournalStorage::new(),
                    raw,
                    only,
                    JournalBackend::Memory,
                    false,
                )
                .await,
            );
            // Each figure on a fresh store beside a fresh baseline, as the
            // messages figure.
            let fresh = || {
                let raw: Arc<dyn Baseline> = Arc::new(RawMemory::default());
                (MemoryJournalStorage::new(), raw)
            };
            figures.extend(run_events(fresh, only, JournalBackend::Memory).await);
            figures.extend(run_subscribe(MemoryJournalStorage::new(), only).await);
            figures.extend(run_feed(MemoryJournalStorage::new(), only).await);
            mark(&mut figures, MEMORY_TARGETS);
            figures
        }
        "sqlite" => run_sqlite(dir, only).await?,
        "postgres" => run_postgres(only).await?,
        "redis" => run_redis(only).await?,
        other => return Err(format!("unknown backend {other:?}")),
    })
}

/// PostgreSQL: the journal, the raw tokio-postgres baseline, the feed and
/// the event-sourcing workloads, each in its own schema of this run
/// (dropped at the end).
async fn run_postgres(only: Option<&str>) -> Result<Vec<Figure>, String> {
    let url = std::env::var("JOURNAL_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let run = journal_core::new_entry_id().to_lowercase();
    let open = |schema: String| {
        let url = url.clone();
        async move {
            let options = PostgresOptions {
                schema,
                pool_size: PG_POOL,
                ..PostgresOptions::default()
            };
            PostgresJournalStorage::open(&url, options)
                .await
                .map_err(|e| e.to_string())
        }
    };
    let storage = open(format!("jb_{run}")).await?;
    let fresh = open(format!("jb_{run}_stream")).await?;
    let raw = Arc::new(
        RawPostgres::create(&url, &format!("jb_{run}_raw"))
            .await
            .map_err(|e| e.to_string())?,
    );
    let mut figures = run_all(
        Arc::new(storage.clone()),
        Arc::clone(&raw) as Arc<dyn Baseline>,
        Arc::new(fresh.clone()),
        Some(1),
        only,
        Sizes::SERVER,
        JournalBackend::Postgres,
    )
    .await;
    figures.extend(run_subscribe(storage.clone(), only).await);
    let fed = open(format!("jb_{run}_feed")).await?;
    figures.extend(run_feed(fed.clone(), only).await);
    let events = open(format!("jb_{run}_events")).await?;
    let shared = || (events.clone(), Arc::clone(&raw) as Arc<dyn Baseline>);
    figures.extend(run_events(shared, only, JournalBackend::Postgres).await);
    let imported = open(format!("jb_{run}_fresh")).await?;
    if only.is_none_or(|o| "replay-fresh".starts_with(o)) {
        let started = Instant::now();
        figures.push(journal_benches::postgres::replay_fresh(&imported, 100_000).await);
        println!("replay-fresh: {:.1?}", started.elapsed());
    }
    if only.is_none_or(|o| "group-commit".starts_with(o)) {
        let started = Instant::now();
        let ours = open(format!("jb_{run}_group")).await?;
        let wider = PostgresJournalStorage::open(
            &url,
            PostgresOptions {
                schema: format!("jb_{run}_group16"),
                pool_size: PG_POOL,
                group_commit_in_flight: WIDE_IN_FLIGHT,
                ..PostgresOptions::default()
            },
        )
        .await
        .map_err(|e| e.to_string())?;
        let raw = RawPostgresGroup::create(&url, &format!("jb_{run}_group_raw"), PG_POOL)
            .await
            .map(Arc::new)
            .map_err(|e| e.to_string())?;
        let total = Sizes::SERVER.throughput_appends;
        figures.extend(postgres_group_commit(&ours, &wider, &raw, total).await?);
        for schema in [ours.schema(), wider.schema()] {
            raw.admin()
                .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
                .await
                .map_err(|e| e.to_string())?;
        }
        raw.drop_schema().await.map_err(|e| e.to_string())?;
        println!("group-commit: {:.1?}", started.elapsed());
    }
    mark(&mut figures, POSTGRES_TARGETS);
    for schema in [
        storage.schema(),
        fresh.schema(),
        fed.schema(),
        events.schema(),
        imported.schema(),
    ] {
        let client = storage.pool().get().await.map_err(|e| e.to_string())?;
        client
            .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
            .await
            .map_err(|e| e.to_string())?;
    }
    raw.drop_schema().await.map_err(|e| e.to_string())?;
    Ok(figures)
}

/// Connections of the journal's pool, and of the raw group-commit writer.
const PG_POOL: usize = 16;

/// Groups in flight of the second journal in the PostgreSQL group-commit
/// figures (the default is 4).
const WIDE_IN_FLIGHT: usize = 16;

/// PostgreSQL group commit against the engine's ceiling, `total` appends
/// a round: the journal in schema `ours` (default options) and in `wider`
/// (`WIDE_IN_FLIGHT` groups in flight), beside the raw group-commit writer
/// `raw` with as many connections, taking turns. Adds each one's rows per
/// transaction (warm-up included), read from the rows' `xmin`.
async fn postgres_group_commit(
    ours: &PostgresJournalStorage,
    wider: &PostgresJournalStorage,
    raw: &Arc<RawPostgresGroup>,
    total: usize,
) -> Result<Vec<Figure>, String> {
    let writers: Vec<Arc<dyn GroupWriter>> = vec![
        Arc::new(Journal(Arc::new(ours.clone()))),
        Arc::clone(raw) as Arc<dyn GroupWriter>,
        Arc::new(Journal(Arc::new(wider.clone()))),
    ];
    let per_actor = (total / GROUP_ACTORS) as u64;
    let sides = group_commit::measure(&writers, GROUP_ACTORS, per_actor).await;
    let mut per_transaction = Vec::new();
    for schema in [ours.schema(), raw.schema(), wider.schema()] {
        let (rows, transactions) =
            group_commit::rows_per_transaction(raw.admin(), &format!("{schema}.entries"))
                .await
                .map_err(|e| e.to_string())?;
        per_transaction.push(rows as f64 / transactions.max(1) as f64);
    }
    let raw_name = raw.describe();
    let mut figures = group_commit::figures(&sides[0], &sides[1], &raw_name, GROUP_ACTORS);
    let default_in_flight = PostgresOptions::default().group_commit_in_flight;
    let mut wide = group_commit::figures(&sides[2], &sides[1], &raw_name, GROUP_ACTORS);
    for figure in &mut wide {
        figure.name = figure.name.replacen(
            "group commit",
            &format!("group commit, {WIDE_IN_FLIGHT} groups in flight:"),
            1,
        );
    }
    figures.extend(wide);
    for (value, in_flight) in [
        (per_transaction[0], default_in_flight),
        (per_transaction[2], WIDE_IN_FLIGHT),
    ] {
        figures.push(Figure {
            name: format!(
                "group commit rows per transaction, {GROUP_ACTORS} concurrent actors, \
                 {in_flight} groups in flight"
            ),
            value,
            unit: "rows",
            baseline: per_transaction[1],
            baseline_name: format!("{raw_name}, rows per transaction"),
            better: Better::Higher,
            target: String::new(),
            met: None,
        });
    }
    Ok(figures)
}

/// SQLite: the journal, the raw rusqlite baseline, and the actor system,
/// each in its own file of a fresh directory under `dir`.
async fn run_sqlite(dir: &Path, only: Option<&str>) -> Result<Vec<Figure>, String> {
    let files = dir.join(format!("sqlite-{}", journal_core::new_entry_id()));
    std::fs::create_dir_all(&files).map_err(|e| e.to_string())?;
    let open = |name: &str| SqliteJournalStorage::new(files.join(name));
    let storage = open("journal.db").await.map_err(|e| e.to_string())?;
    let fresh = open("stream.db").await.map_err(|e| e.to_string())?;
    let system = open("system.db").await.map_err(|e| e.to_string())?;
    let raw: Arc<dyn Baseline> =
        Arc::new(RawSqlite::create(&files.join("raw.db")).map_err(|e| e.to_string())?);
    let storage = Arc::new(storage);
    let mut figures = run_all(
        Arc::clone(&storage) as Arc<dyn JournalStorage>,
        Arc::clone(&raw),
        Arc::new(fresh),
        Some(1),
        only,
        Sizes::FULL,
        JournalBackend::Sqlite,
    )
    .await;
    let commits = storage.commit_stats();
    println!(
        "sqlite group commit: {} operations in {} transactions, {:.1} per transaction",
        commits.operations,
        commits.transactions,
        commits.average_group()
    );
    figures.extend(run_system(system, Arc::clone(&raw), only, JournalBackend::Sqlite, true).await);
    let followed = open("subscribe.db").await.map_err(|e| e.to_string())?;
    figures.extend(run_subscribe(followed, only).await);
    let fed = open("feed.db").await.map_err(|e| e.to_string())?;
    figures.extend(run_feed(fed, only).await);
    let events = open("events.db").await.map_err(|e| e.to_string())?;
    let shared = || (events.clone(), Arc::clone(&raw));
    figures.extend(run_events(shared, only, JournalBackend::Sqlite).await);
    if only.is_none_or(|o| "group-commit".starts_with(o)) {
        let started = Instant::now();
        figures.extend(sqlite_group_commit(&files, Sizes::FULL.throughput_appends).await?);
        println!("group-commit: {:.1?}", started.elapsed());
    }
    mark(&mut figures, SQLITE_TARGETS);
    let _ = std::fs::remove_dir_all(&files);
    Ok(figures)
}

/// Actors appending at once in the group-commit figures.
const GROUP_ACTORS: usize = 256;

/// SQLite group commit against the engine's ceiling, `total` appends a
/// round: the journal on a file of its own, beside raw group commit on the
/// journal's log layout (the target's baseline) and on a plain
/// `(actor_id, sequence)` table, each on its own file, taking turns;
/// prints rows per transaction of each (warm-up included).
async fn sqlite_group_commit(files: &Path, total: usize) -> Result<Vec<Figure>, String> {
    let storage = SqliteJournalStorage::new(files.join("group.db"))
        .await
        .map_err(|e| e.to_string())?;
    let raw = |name: &str, layout| {
        RawSqliteGroup::create(&files.join(name), layout)
            .map(Arc::new)
            .map_err(|e| e.to_string())
    };
    let log = raw("raw-group.db", SqliteLayout::JournalLog)?;
    let plain = raw("raw-group-plain.db", SqliteLayout::Plain)?;
    let before = storage.commit_stats();
    let writers: Vec<Arc<dyn GroupWriter>> = vec![
        Arc::new(Journal(Arc::new(storage.clone()))),
        Arc::clone(&log) as Arc<dyn GroupWriter>,
        Arc::clone(&plain) as Arc<dyn GroupWriter>,
    ];
    let per_actor = (total / GROUP_ACTORS) as u64;
    let sides = group_commit::measure(&writers, GROUP_ACTORS, per_actor).await;
    let after = storage.commit_stats();
    let ops = after.operations - before.operations;
    let transactions = after.transactions - before.transactions;
    let (log_commits, log_rows) = log.count.get();
    println!(
        "group commit, rows per transaction: journal {ops} in {transactions} ({:.1}); \
         raw, log layout {}; raw, plain table {}",
        ops as f64 / transactions.max(1) as f64,
        per_commit((log_commits, log_rows)),
        per_commit(plain.count.get()),
    );
    let mut figures = group_commit::figures(&sides[0], &sides[1], &log.describe(), GROUP_ACTORS);
    figures.push(Figure {
        name: format!("group commit appends/s vs a plain table, {GROUP_ACTORS} actors"),
        value: sides[0].rate(),
        unit: "appends/s",
        baseline: sides[2].rate(),
        baseline_name: format!(
            "{} (pooled over {} rounds)",
            plain.describe(),
            group_commit::ROUNDS
        ),
        better: Better::Higher,
        target: String::new(),
        met: None,
    });
    figures.push(Figure {
        name: format!("group commit rows per transaction, {GROUP_ACTORS} concurrent actors"),
        value: ops as f64 / transactions.max(1) as f64,
        unit: "rows",
        baseline: log_rows as f64 / log_commits.max(1) as f64,
        baseline_name: format!("{}, rows per transaction", log.describe()),
        better: Better::Higher,
        target: String::new(),
        met: None,
    });
    drop(writers);
    storage.close().await;
    Ok(figures)
}

/// `(commits, rows)` as "rows in commits (rows per commit)".
fn per_commit((commits, rows): (u64, u64)) -> String {
    format!(
        "{rows} in {commits} ({:.1})",
        rows as f64 / commits.max(1) as f64
    )
}

/// Redis: the journal, the raw script baseline, and a plain `SET`.
async fn run_redis(only: Option<&str>) -> Result<Vec<Figure>, String> {
    let url =
        std::env::var("JOURNAL_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let run = format!("jb_{}", journal_core::new_entry_id().to_lowercase());
    let open = |prefix: String| {
        let url = url.clone();
        async move {
            let options = RedisOptions {
                key_prefix: prefix,
                ..RedisOptions::default()
            };
            RedisJournalStorage::open(&url, options)
                .await
                .map_err(|e| e.to_string())
        }
    };
    let storage = open(format!("{run}_journal")).await?;
    let fresh = open(format!("{run}_stream")).await?;
    let raw = Arc::new(
        RawRedis::create(&url, &format!("{run}_raw"))
            .await
            .map_err(|e| e.to_string())?,
    );
    let mut figures = run_all(
        Arc::new(storage.clone()),
        Arc::clone(&raw) as Arc<dyn Baseline>,
        Arc::new(fresh),
        Some(1),
        only,
        Sizes::SERVER,
        JournalBackend::Redis,
    )
    .await;
    if let Some(p50) = figures.iter().find(|f| f.name == "append latency p50") {
        let mut set = raw.set_round_trips(Sizes::SERVER.latency_appends).await;
        set.sort_unstable();
        let mut figure = p50.clone();
        figure.name = "append p50 against a plain SET".into();
        figure.baseline = set[set.len() / 2].as_secs_f64() * 1e6;
        figure.baseline_name = "redis-rs, a plain SET round trip".into();
        figures.insert(1, figure);
    }
    if only.is_none_or(|o| "throughput".starts_with(o)) {
        // What one server can do at all: the raw script with as
        // many pipelining callers as the journal has actors.
        let mut ceiling = workloads::throughput(
            Arc::new(storage.clone()),
            Arc::clone(&raw) as Arc<dyn Baseline>,
            256,
            256,
            Sizes::SERVER.throughput_appends,
        )
        .await;
        ceiling.name = "server ceiling: 256 actors against 256 raw callers".into();
        figures.push(ceiling);
    }
    if only.is_none_or(|o| "memory".starts_with(o)) {
        // The server's default stream node size, then two smaller ones
        // (the server's setting is put back after).
        const SETTING: &str = "stream-node-max-bytes";
        let before = raw.config_get(SETTING).await.map_err(|e| e.to_string())?;
        let measured = async {
            let mut measured = Vec::new();
            for node_bytes in [None, Some("1024"), Some("512")] {
                if let Some(bytes) = node_bytes {
                    raw.config_set(SETTING, bytes)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                let memory = open(format!("{run}_memory{}", node_bytes.unwrap_or(""))).await?;
                measured.extend(redis_memory(&memory, &raw, node_bytes).await?);
            }
            Ok::<_, String>(measured)
        }
        .await;
        if let Some(before) = before {
            raw.config_set(SETTING, &before)
                .await
                .map_err(|e| e.to_string())?;
        }
        figures.extend(measured?);
    }
    figures.extend(run_subscribe(storage.clone(), only).await);
    let fed = open(format!("{run}_feed")).await?;
    figures.extend(run_feed(fed, only).await);
    let events = open(format!("{run}_events")).await?;
    let shared = || (events.clone(), Arc::clone(&raw) as Arc<dyn Baseline>);
    figures.extend(run_events(shared, only, JournalBackend::Redis).await);
    mark(&mut figures, REDIS_TARGETS);
    raw.delete_keys(&run).await.map_err(|e| e.to_string())?;
    Ok(figures)
}

/// Server memory per entry: one long journal (`MEMORY USAGE` of its
/// stream), and many short ones (`used_memory` before and after, so every
/// key of an actor counts), against the entry's own protobuf bytes.
///
/// `node_bytes`: the server's `stream-node-max-bytes` while measuring, when
/// not its default (the figures' names say it).
async fn redis_memory(
    storage: &RedisJournalStorage,
    raw: &RawRedis,
    node_bytes: Option<&str>,
) -> Result<Vec<Figure>, String> {
    use journal_core::{journal_entry::Entry, JournalEntry};
    let entry = |actor: &str, sequence: u64| {
        JournalEntry::new(
            actor,
            sequence,
            Entry::message_received(format!("m-{sequence}"), "Deposit", vec![7; 160]),
        )
    };
    let entry_bytes = prost::Message::encoded_len(&entry("long-journal", 1)) as f64;
    let setting = node_bytes.map_or(String::new(), |b| format!(", stream-node-max-bytes {b}"));
    let figure = |name: String, value: f64| Figure {
        name: format!("{name}{setting}"),
        value,
        unit: "bytes",
        baseline: entry_bytes,
        baseline_name: "the entry's protobuf bytes".into(),
        better: Better::Lower,
        target: String::new(),
        met: None,
    };
    let mut figures = Vec::new();
    let long = 20_000u64;
    for start in (1..=long).step_by(500) {
        let batch: Vec<JournalEntry> = (start..start + 500)
            .map(|s| entry("long-journal", s))
            .collect();
        storage
            .append_batch(&batch)
            .await
            .map_err(|e| e.to_string())?;
    }
    let keys = journal_redis::keys::Keys::new(storage.key_prefix());
    let stream = raw
        .memory_usage(&keys.actor("long-journal").entries())
        .await
        .map_err(|e| e.to_string())?;
    figures.push(figure(
        format!("server memory per entry, one journal of {long} entries"),
        stream as f64 / long as f64,
    ));
    for (actors, each) in [(5_000u64, 1u64), (1_000, 20)] {
        let before = raw.used_memory().await.map_err(|e| e.to_string())?;
        for a in 0..actors {
            let actor = format!("short-{each}-{a}");
            let batch: Vec<JournalEntry> = (1..=each).map(|s| entry(&actor, s)).collect();
            storage
                .append_batch(&batch)
                .await
                .map_err(|e| e.to_string())?;
        }
        let after = raw.used_memory().await.map_err(|e| e.to_string())?;
        figures.push(figure(
            format!("server memory per entry, {actors} journals of {each} entries (all keys)"),
            after.saturating_sub(before) as f64 / (actors * each) as f64,
        ));
    }
    Ok(figures)
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: workload [--backend {}] [--out DIR] [--only latency|throughput|batch|replay|interleaved|recovery|checkpoint|facet|stream|memory|system-messages|system-activation|system-timers|replay-fresh|subscribe|feed|events|events-persisted|events-recovery|group-commit]",
        BACKENDS.join("|")
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut backends: Vec<String> = BACKENDS.iter().map(|b| (*b).to_owned()).collect();
    let mut out = PathBuf::from("target/bench");
    let mut only = None;
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--backend", Some(name)) if BACKENDS.contains(&name.as_str()) => backends = vec![name],
            ("--backend", Some(name)) => {
                eprintln!(
                    "workload: unknown backend {name:?}; known: {}",
                    BACKENDS.join(", ")
                );
                return ExitCode::from(2);
            }
            ("--out", Some(dir)) => out = PathBuf::from(dir),
            ("--only", Some(workload)) => only = Some(workload),
            _ => return usage(),
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("workload: no tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let source = report::source();
    if source.dirty {
        eprintln!(
            "workload: the tracked files differ from commit {}; the figures are not of that commit",
            source.commit
        );
    }
    for backend in backends {
        let figures = match runtime.block_on(run_backend(&backend, &out, only.as_deref())) {
            Ok(figures) => figures,
            Err(e) => {
                eprintln!("workload: {backend}: {e}");
                return ExitCode::FAILURE;
            }
        };
        print!("{}", report::table(&backend, &figures));
        if let Err(e) = report::write(&out, &backend, now, &source, &figures) {
            eprintln!("workload: cannot write under {}: {e}", out.display());
            return ExitCode::FAILURE;
        }
        println!(
            "written: {0}/{backend}.json, {0}/{backend}.svg",
            out.display()
        );
    }
    ExitCode::SUCCESS
}
