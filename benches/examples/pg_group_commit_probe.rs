//! What limits PostgreSQL group commit (issue 22): runs the group-commit
//! load (256 actors, each appending and awaiting one entry at a time)
//! through one writer at a time, alone, and reports beside its rate and
//! latencies where the time went: rows per transaction (distinct `xmin`),
//! CPU seconds of the server's processes and of this process per 1,000
//! appends, the machine's idle and iowait share, and the wait events of
//! the active backends sampled every 100 ms (`pg_stat_activity`).
//!
//! ```text
//! cargo run --release -p journal-benches --example pg_group_commit_probe -- [WRITER...]
//! ```
//!
//! Writers: `journal` (the library's `append_entry`), and the raw writer
//! ([`RawPostgresGroup`]) sending `unnest` (the baseline), `unnest-notify`,
//! `unnest-journal` (into a journal's `entries`), `append-many` (the
//! journal's function without `pg_notify`) or `append-many-notify` (the
//! journal's exact group statement). Default: all, in that order. The
//! server is `JOURNAL_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`); its `options` (such as
//! `-c commit_delay=50`) apply to both sides' sessions. Linux only (reads
//! `/proc`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use journal_benches::group_commit::{self, GroupWriter, Journal, PgStatement, RawPostgresGroup};
use journal_postgres::{PostgresJournalStorage, PostgresOptions};

/// Connections of the journal's pool and of the raw writer (the workload
/// runner's), unless `PROBE_CONNECTIONS` says otherwise.
const CONNECTIONS: usize = 16;

fn connections() -> usize {
    std::env::var("PROBE_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CONNECTIONS)
}
/// Actors appending at once.
const ACTORS: usize = 256;
/// Entries each actor appends per round.
const PER_ACTOR: u64 = 100;

const WRITERS: &[&str] = &[
    "journal",
    "unnest",
    "unnest-notify",
    "unnest-journal",
    "append-many",
    "append-many-notify",
];

/// CPU time so far: of every `postgres` process, of this process, and of
/// the machine (busy, idle, iowait), in clock ticks.
#[derive(Debug, Clone, Copy, Default)]
struct Cpu {
    server: u64,
    client: u64,
    busy: u64,
    idle: u64,
    iowait: u64,
}

/// utime + stime of `/proc/<pid>/stat`, if its command is `want` (any,
/// when `None`).
fn process_ticks(stat: &str, want: Option<&str>) -> Option<u64> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    if want.is_some_and(|w| &stat[open + 1..close] != w) {
        return None;
    }
    let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
    // Fields 14 and 15 of the line; the 12th and 13th after the command.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

impl Cpu {
    fn now() -> Cpu {
        let mut cpu = Cpu::default();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            if let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) {
                cpu.server += process_ticks(&stat, Some("postgres")).unwrap_or(0);
            }
        }
        if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
            cpu.client = process_ticks(&stat, None).unwrap_or(0);
        }
        if let Ok(stat) = std::fs::read_to_string("/proc/stat") {
            let all: Vec<u64> = stat
                .lines()
                .next()
                .unwrap_or_default()
                .split_whitespace()
                .skip(1)
                .filter_map(|v| v.parse().ok())
                .collect();
            // user nice system idle iowait irq softirq steal ...
            let get = |i: usize| all.get(i).copied().unwrap_or(0);
            cpu.idle = get(3);
            cpu.iowait = get(4);
            cpu.busy = get(0) + get(1) + get(2) + get(5) + get(6) + get(7);
        }
        cpu
    }

    fn since(self, before: Cpu) -> Cpu {
        Cpu {
            server: self.server - before.server,
            client: self.client - before.client,
            busy: self.busy - before.busy,
            idle: self.idle - before.idle,
            iowait: self.iowait - before.iowait,
        }
    }
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Samples the active backends' wait events every 100 ms until `stop`
/// fires; returns the count of each.
async fn sample_waits(
    url: String,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) -> BTreeMap<String, u64> {
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("sampler connects");
    tokio::spawn(connection);
    let query = client
        .prepare(
            "SELECT coalesce(wait_event_type, 'CPU') || ':' || coalesce(wait_event, '-')
             FROM pg_stat_activity
             WHERE datname = current_database() AND backend_type = 'client backend'
               AND state = 'active' AND pid <> pg_backend_pid()",
        )
        .await
        .expect("prepare");
    let mut waits = BTreeMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = &mut stop => return waits,
            _ = tick.tick() => {
                for row in client.query(&query, &[]).await.expect("sample") {
                    *waits.entry(row.get::<_, String>(0)).or_insert(0) += 1;
                }
            }
        }
    }
}

/// A journal on schema `schema` (created and migrated).
async fn journal(url: &str, schema: &str) -> PostgresJournalStorage {
    let options = PostgresOptions {
        schema: schema.to_owned(),
        pool_size: connections(),
        ..PostgresOptions::default()
    };
    PostgresJournalStorage::open(url, options)
        .await
        .expect("journal schema")
}

/// The raw writer sending `statement`, on `schema`.
async fn raw(url: &str, schema: &str, statement: PgStatement) -> Arc<dyn GroupWriter> {
    Arc::new(
        RawPostgresGroup::with_statement(url, schema, connections(), statement)
            .await
            .expect("raw writer"),
    )
}

/// The server's WAL position, in bytes.
async fn wal_position(client: &tokio_postgres::Client) -> i64 {
    client
        .query_one("SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint", &[])
        .await
        .expect("WAL position")
        .get(0)
}

/// Runs writer `name` alone and prints what it did and where the time went.
async fn run(url: &str, name: &str) {
    let schema = format!("jb_probe_{}", journal_core::new_entry_id().to_lowercase());
    let writer: Arc<dyn GroupWriter> = match name {
        "journal" => Arc::new(Journal(Arc::new(journal(url, &schema).await))),
        "unnest" => raw(url, &schema, PgStatement::Unnest).await,
        "unnest-notify" => raw(url, &schema, PgStatement::UnnestNotify).await,
        other => {
            let statement = match other {
                "unnest-journal" => PgStatement::UnnestIntoJournal,
                "append-many" => PgStatement::AppendMany { notify: false },
                "append-many-notify" => PgStatement::AppendMany { notify: true },
                _ => unreachable!("checked in main"),
            };
            // The journal's tables and functions, then the raw writer on them.
            drop(journal(url, &schema).await);
            raw(url, &schema, statement).await
        }
    };
    // Warm up (connections, prepared statements), then the timed rounds
    // with the CPU counters and the sampler around them.
    group_commit::measure(std::slice::from_ref(&writer), ACTORS, 4).await;
    let (admin, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connects");
    tokio::spawn(connection);
    let wal_before = wal_position(&admin).await;
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let sampling = tokio::spawn(sample_waits(url.to_owned(), stopped));
    let before = Cpu::now();
    let side = group_commit::measure(std::slice::from_ref(&writer), ACTORS, PER_ACTOR)
        .await
        .remove(0);
    let cpu = Cpu::now().since(before);
    let wal = wal_position(&admin).await - wal_before;
    let _ = stop.send(());
    let waits = sampling.await.expect("sampler");
    drop(writer);
    let (rows, transactions) =
        group_commit::rows_per_transaction(&admin, &format!("{schema}.entries"))
            .await
            .expect("rows per transaction");
    admin
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .expect("drop schema");

    let tck = clock_ticks();
    // The CPU and WAL counters also saw `measure`'s own warm-up.
    let written = side.appends + ACTORS as u64 * group_commit::WARM_UP;
    let thousands = written as f64 / 1e3;
    let machine = (cpu.busy + cpu.idle + cpu.iowait).max(1) as f64;
    println!(
        "{name:<20} {:>8.0} appends/s  p50 {:>6.2} ms  p99 {:>6.2} ms  rows/xact {:>6.1}  \
         WAL {:>4.0} B/append  server CPU {:>5.1} ms/1k  client CPU {:>5.1} ms/1k  \
         machine busy {:>3.0}% idle {:>3.0}% iowait {:>3.0}%",
        side.rate(),
        side.latency_ms(0.5),
        side.latency_ms(0.99),
        rows as f64 / transactions.max(1) as f64,
        wal as f64 / written as f64,
        cpu.server as f64 / tck * 1e3 / thousands,
        cpu.client as f64 / tck * 1e3 / thousands,
        100.0 * cpu.busy as f64 / machine,
        100.0 * cpu.idle as f64 / machine,
        100.0 * cpu.iowait as f64 / machine,
    );
    let samples: u64 = waits.values().sum();
    let mut waits: Vec<_> = waits.into_iter().collect();
    waits.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    let shown: Vec<String> = waits
        .iter()
        .take(6)
        .map(|(event, n)| format!("{event} {:.0}%", 100.0 * *n as f64 / samples.max(1) as f64))
        .collect();
    println!(
        "{:<20} active backends' waits ({samples} samples): {}",
        "",
        shown.join(", ")
    );
}

#[tokio::main]
async fn main() {
    let url = std::env::var("JOURNAL_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let mut chosen: Vec<String> = std::env::args().skip(1).collect();
    if let Some(unknown) = chosen.iter().find(|w| !WRITERS.contains(&w.as_str())) {
        eprintln!("unknown writer {unknown:?}; known: {}", WRITERS.join(", "));
        std::process::exit(2);
    }
    if chosen.is_empty() {
        chosen = WRITERS.iter().map(|w| (*w).to_owned()).collect();
    }
    for name in &chosen {
        run(&url, name).await;
    }
}
