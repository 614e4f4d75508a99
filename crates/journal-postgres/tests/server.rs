//! Behaviour that needs the server itself: connection loss, migrations,
//! bad configuration.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use journal_conformance::feed::{read_all, tagged};
use journal_core::feed::{FeedFilter, FeedOffset};
use journal_core::journal_entry::Entry;
use journal_core::{JournalEntry, JournalError, JournalStorage};
use journal_postgres::{PostgresJournalStorage, PostgresOptions};
use tokio::sync::watch;

fn entry(actor: &str, seq: u64) -> JournalEntry {
    JournalEntry::new(
        actor,
        seq,
        Entry::message_received(format!("m-{seq}"), "T", vec![1; 64]),
    )
}

/// Kills this test's own server connections (by `application_name`) in the
/// middle of a concurrent workload of single appends and batches (group
/// committed together). Calls fail with `Unavailable` or succeed;
/// retried, every journal ends whole, with no gap and no duplicate; the pool
/// recovers by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connection_loss_is_unavailable_and_recoverable() {
    const ACTORS: usize = 12;
    const PER_ACTOR: u64 = 120;
    const KILLS: u64 = 8;
    let app = format!("jtest-loss-{}", journal_core::new_entry_id());
    let options = PostgresOptions {
        pool_size: 6,
        application_name: app.clone(),
        ..PostgresOptions::default()
    };
    let Some(storage) = common::storage(options).await else {
        return;
    };
    let storage = Arc::new(storage);

    // A separate connection, under another name, does the killing.
    let (killer, connection) = tokio_postgres::connect(&common::url(), tokio_postgres::NoTls)
        .await
        .expect("killer connection");
    tokio::spawn(connection);

    let progress = Arc::new(AtomicU64::new(0));
    let (tick, mut ticks) = watch::channel(0u64);
    let unavailable = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..ACTORS)
        .map(|i| {
            let (storage, progress, tick, unavailable) = (
                Arc::clone(&storage),
                Arc::clone(&progress),
                tick.clone(),
                Arc::clone(&unavailable),
            );
            tokio::spawn(async move {
                let actor = format!("loss-{i}");
                let mut sent = BTreeMap::new();
                // Every other actor appends batches of 3, which share the
                // single appends' groups.
                let step = if i % 2 == 0 { 3 } else { 1 };
                for first in (1..=PER_ACTOR).step_by(step) {
                    let call: Vec<JournalEntry> = (first..first + step as u64)
                        .map(|q| entry(&actor, q))
                        .collect();
                    loop {
                        let result = if step == 1 {
                            storage.append_entry(&call[0]).await.map(|_| ())
                        } else {
                            storage.append_batch(&call).await
                        };
                        match result {
                            Ok(()) => break,
                            Err(err @ JournalError::Unavailable { .. }) => {
                                assert!(err.is_retryable());
                                unavailable.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(other) => panic!(
                                "only Unavailable may come from a lost connection, got {other}"
                            ),
                        }
                    }
                    for e in call {
                        sent.insert(e.sequence, e.id);
                    }
                    let done = progress.fetch_add(step as u64, Ordering::Relaxed) + step as u64;
                    let _ = tick.send(done);
                }
                (actor, sent)
            })
        })
        .collect();
    drop(tick);

    // Kill at evenly spread points of the workload, driven by its progress.
    let total = ACTORS as u64 * PER_ACTOR;
    let mut kills = 0;
    let mut terminated = 0;
    while kills < KILLS {
        let threshold = (kills + 1) * total / (KILLS + 2);
        if ticks.wait_for(|done| *done >= threshold).await.is_err() {
            break;
        }
        let rows = killer
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
                &[&app],
            )
            .await
            .expect("terminate");
        terminated += rows.iter().filter(|r| r.get::<_, bool>(0)).count();
        kills += 1;
    }
    for worker in workers {
        let (actor, sent) = worker.await.expect("worker");
        assert_whole(&*storage, &actor, &sent).await;
    }
    assert!(
        terminated > 0,
        "no connection of the workload was terminated"
    );
    assert!(
        unavailable.load(Ordering::Relaxed) > 0,
        "no call saw the lost connections"
    );
    // The pool serves new calls with fresh connections.
    assert_eq!(
        after_the_kills(|| storage.highest_sequence("loss-0")).await,
        PER_ACTOR
    );
}

/// A call made just after the kills, retried on `Unavailable` as callers
/// are told to: a pooled connection whose backend was being terminated
/// when it was handed out fails once, and the pool replaces it. A few
/// attempts must do.
async fn after_the_kills<T, F, Fut>(call: F) -> T
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = journal_core::JournalResult<T>>,
{
    let mut last = None;
    for _ in 0..5 {
        match call().await {
            Ok(value) => return value,
            Err(e) if e.is_retryable() => last = Some(e),
            Err(e) => panic!("after the kills: {e}"),
        }
    }
    panic!("still unavailable after 5 attempts: {last:?}");
}

/// The actor's journal holds exactly the acknowledged entries, with no gap
/// and no duplicate.
async fn assert_whole(storage: &dyn JournalStorage, actor: &str, sent: &BTreeMap<u64, String>) {
    let stored = after_the_kills(|| storage.replay_from(actor, 1)).await;
    let sequences: Vec<u64> = stored.iter().map(|e| e.sequence).collect();
    assert_eq!(
        sequences,
        sent.keys().copied().collect::<Vec<_>>(),
        "{actor}: gap or duplicate"
    );
    for e in &stored {
        assert_eq!(
            Some(&e.id),
            sent.get(&e.sequence),
            "{actor}: entry {} is not the one acknowledged",
            e.sequence
        );
    }
}

/// Migrations run twice (two processes starting together) leave one schema
/// at the current version; a newer version is refused.
#[tokio::test]
async fn migrations_are_idempotent_and_versioned() {
    let Some(storage) = common::storage(common::test_options()).await else {
        return;
    };
    let schema = storage.schema().to_owned();
    let options = |schema: &str| PostgresOptions {
        schema: schema.to_owned(),
        ..common::test_options()
    };
    let url = common::url();
    let (a, b) = tokio::join!(
        PostgresJournalStorage::open(&url, options(&schema)),
        PostgresJournalStorage::open(&url, options(&schema)),
    );
    a.expect("first concurrent open");
    b.expect("second concurrent open");
    let client = storage.pool().get().await.expect("client");
    let versions: Vec<i32> = client
        .query(
            &format!("SELECT version FROM {schema}.journal_schema ORDER BY version"),
            &[],
        )
        .await
        .expect("versions")
        .iter()
        .map(|r| r.get(0))
        .collect();
    // Each version applied once, however many processes started at once.
    assert_eq!(
        versions,
        (1..=journal_postgres::SCHEMA_VERSION).collect::<Vec<_>>()
    );
    client
        .execute(
            &format!("INSERT INTO {schema}.journal_schema VALUES (99)"),
            &[],
        )
        .await
        .expect("bump");
    match PostgresJournalStorage::open(&common::url(), options(&schema)).await {
        Err(e @ JournalError::Storage { .. }) => assert!(e.to_string().contains("newer"), "{e}"),
        other => panic!("a newer schema must be refused, got {other:?}"),
    }
    // Without migrations too: the version is always checked.
    let unmigrated = |schema: &str| PostgresOptions {
        run_migrations: false,
        ..options(schema)
    };
    match PostgresJournalStorage::open(&common::url(), unmigrated(&schema)).await {
        Err(e @ JournalError::Storage { .. }) => assert!(e.to_string().contains("newer"), "{e}"),
        other => panic!("a newer schema must be refused with migrations off, got {other:?}"),
    }
    let missing = common::fresh_schema();
    match PostgresJournalStorage::open(&common::url(), unmigrated(&missing)).await {
        Err(e @ JournalError::Storage { .. }) => {
            assert!(e.to_string().contains("holds no journal"), "{e}");
        }
        other => panic!("a missing schema must be refused with migrations off, got {other:?}"),
    }
    client
        .execute(
            &format!("DELETE FROM {schema}.journal_schema WHERE version = 99"),
            &[],
        )
        .await
        .expect("back to this version");
    PostgresJournalStorage::open(&common::url(), unmigrated(&schema))
        .await
        .expect("this build's version opens with migrations off");
}

/// Bad configuration is a typed error that never shows the password.
#[tokio::test]
async fn bad_configuration_is_typed_and_redacted() {
    let bad_schema = PostgresOptions {
        schema: "x; DROP TABLE y".into(),
        ..PostgresOptions::default()
    };
    assert!(matches!(
        PostgresJournalStorage::open(&common::url(), bad_schema).await,
        Err(JournalError::Storage { .. })
    ));
    let unreachable = PostgresOptions {
        connect_timeout: std::time::Duration::from_secs(2),
        ..PostgresOptions::default()
    };
    let err = PostgresJournalStorage::open("postgres://user:s3cret@127.0.0.1:1/db", unreachable)
        .await
        .expect_err("nothing listens on port 1");
    assert!(err.is_retryable(), "{err}");
    assert!(!format!("{err} {err:?}").contains("s3cret"));
    let garbage = PostgresJournalStorage::new("postgres://user:s3cret@host:notaport/db")
        .await
        .expect_err("bad URL");
    assert!(
        !format!("{garbage} {garbage:?}").contains("s3cret"),
        "{garbage}"
    );
    // Key-value connection strings, and a password parameter after an '@'
    // in another parameter; each refused, none repeating the password.
    for bad in [
        "host=127.0.0.1 port=notaport password=s3cret",
        "host=127.0.0.1 password='s3cret' sslmode=require",
        "postgres://u:pw@127.0.0.1:1/db?application_name=a@b&password=s3cret&sslmode=bogus",
    ] {
        let err = PostgresJournalStorage::new(bad).await.expect_err("refused");
        assert!(!format!("{err} {err:?}").contains("s3cret"), "{err}");
    }
}

/// A schema holding another tool's `journal_schema` table, its version of
/// another type, is a typed error at open (it was a panic), and is left as
/// it was.
#[tokio::test]
async fn a_foreign_version_table_is_refused_without_a_panic() {
    let Some(probe) = common::storage(common::test_options()).await else {
        return;
    };
    let client = probe.pool().get().await.expect("client");
    for column in ["BIGINT", "NUMERIC", "TEXT"] {
        let schema = common::fresh_schema();
        client
            .batch_execute(&format!(
                "CREATE SCHEMA {schema}; \
                 CREATE TABLE {schema}.journal_schema (version {column}); \
                 INSERT INTO {schema}.journal_schema VALUES ('1')"
            ))
            .await
            .expect("the foreign table");
        let options = PostgresOptions {
            schema: schema.clone(),
            ..common::test_options()
        };
        let opened = PostgresJournalStorage::open(&common::url(), options).await;
        assert!(
            matches!(opened, Err(JournalError::Storage { .. })),
            "{column}: {:?}",
            opened.err()
        );
        let kept: i64 = client
            .query_one(
                &format!("SELECT count(*) FROM {schema}.journal_schema"),
                &[],
            )
            .await
            .expect("count")
            .get(0);
        assert_eq!(kept, 1, "{column}: left as it was");
        client
            .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
            .await
            .expect("drop");
    }
}

/// Rule 15 across connections: a delete that waits for a concurrent append
/// (holding the actor's row) removes that append too, and the actor then
/// starts over cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_waits_for_a_concurrent_append_and_removes_it() {
    let app = format!("jtest-delete-{}", journal_core::new_entry_id());
    let options = PostgresOptions {
        application_name: app.clone(),
        ..common::test_options()
    };
    let Some(storage) = common::storage(options).await else {
        return;
    };
    let schema = storage.schema().to_owned();
    storage
        .append_batch(&(1..=5).map(|s| entry("victim", s)).collect::<Vec<_>>())
        .await
        .expect("seed");

    // Another process appends 6 and has not committed yet.
    let (writer, connection) = tokio_postgres::connect(&common::url(), tokio_postgres::NoTls)
        .await
        .expect("writer");
    tokio::spawn(connection);
    let sixth = entry("victim", 6);
    let bytes = prost::Message::encode_to_vec(&sixth);
    writer.batch_execute("BEGIN").await.expect("begin");
    writer
        .query(
            &format!("SELECT * FROM {schema}.append($1, $2, $3, $4)"),
            &[
                &"victim".as_bytes(),
                &vec![6i64],
                &vec![sixth.id.as_str()],
                &vec![bytes.as_slice()],
            ],
        )
        .await
        .expect("uncommitted append");

    let deleting = {
        let storage = storage.clone();
        tokio::spawn(async move { storage.delete_actor("victim").await })
    };
    // Wait until the delete is blocked on the row lock (a condition, polled).
    // The bound is generous: on a loaded machine the delete's task may
    // take a while to be scheduled and reach the lock.
    let mut waiting = false;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        let rows = writer
            .query(
                "SELECT 1 FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'",
                &[&app],
            )
            .await
            .expect("activity");
        if !rows.is_empty() {
            waiting = true;
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(waiting, "the delete never waited for the append's row lock");
    writer
        .batch_execute("COMMIT")
        .await
        .expect("commit the append");
    deleting.await.expect("task").expect("delete");

    assert!(
        storage
            .replay_from("victim", 1)
            .await
            .expect("replay")
            .is_empty(),
        "the appended entry survived the delete"
    );
    assert_eq!(
        storage.highest_sequence("victim").await.expect("highest"),
        0
    );
    let again: Vec<_> = (1..=7).map(|s| entry("victim", s)).collect();
    storage
        .append_batch(&again)
        .await
        .expect("the actor starts over and passes 6");
    assert_eq!(
        storage.replay_from("victim", 1).await.expect("replay"),
        again
    );
}

/// Rule 20: one append that breaks its group's transaction fails alone;
/// the other callers of that group still get their own (successful)
/// results.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_bad_append_does_not_fail_its_group() {
    let Some(storage) = common::storage(common::test_options()).await else {
        return;
    };
    let schema = storage.schema().to_owned();
    // A row that should not exist (written behind the journal's back):
    // appending "poisoned" at 1 hits a unique violation inside the group.
    let client = storage.pool().get().await.expect("client");
    client
        .execute(
            &format!("INSERT INTO {schema}.entries VALUES ($1, 1, 'stray', '\\x00')"),
            &[&"poisoned".as_bytes()],
        )
        .await
        .expect("stray row");
    drop(client);
    let storage = Arc::new(storage);
    let mut tasks = Vec::new();
    for i in 0..60 {
        let storage = Arc::clone(&storage);
        tasks.push(tokio::spawn(async move {
            let actor = if i == 30 {
                "poisoned".to_owned()
            } else {
                format!("healthy-{i}")
            };
            (actor.clone(), storage.append_entry(&entry(&actor, 1)).await)
        }));
    }
    for task in tasks {
        let (actor, result) = task.await.expect("task");
        if actor == "poisoned" {
            assert!(
                matches!(result, Err(JournalError::Storage { .. })),
                "{result:?}"
            );
        } else {
            result.unwrap_or_else(|e| panic!("{actor} failed with the poisoned append: {e}"));
        }
    }
}

/// A row of `actor` at `sequence` written behind the journal's back (its
/// `actors` row untouched): an append there hits a unique violation.
async fn plant_stray(storage: &PostgresJournalStorage, actor: &str, sequence: i64) {
    let client = storage.pool().get().await.expect("client");
    client
        .execute(
            &format!(
                "INSERT INTO {}.entries VALUES ($1, $2, 'stray', '\\x00')",
                storage.schema()
            ),
            &[&actor.as_bytes(), &sequence],
        )
        .await
        .expect("stray row");
}

/// Deletes every row of `actor` in `entries`; how many there were.
async fn remove_rows(storage: &PostgresJournalStorage, actor: &str) -> u64 {
    let client = storage.pool().get().await.expect("client");
    client
        .execute(
            &format!(
                "DELETE FROM {}.entries WHERE actor_id = $1",
                storage.schema()
            ),
            &[&actor.as_bytes()],
        )
        .await
        .expect("remove the rows")
}

/// `n` entries of `actor` from sequence `from`, tagged "batched" or not.
fn batch(actor: &str, from: u64, n: u64, tag: bool) -> Vec<JournalEntry> {
    (from..from + n)
        .map(|q| {
            if tag {
                tagged(actor, q, "batched")
            } else {
                entry(actor, q)
            }
        })
        .collect()
}

/// Asserts that each actor `{prefix}{a}`'s journal is `stored[a]`, and that
/// the tag index of `tag` holds exactly `tagged_stored`, each once.
async fn assert_stored(
    storage: &PostgresJournalStorage,
    prefix: &str,
    stored: &[Vec<JournalEntry>],
    tag: &str,
    tagged_stored: &std::collections::BTreeSet<(String, u64)>,
) {
    for (a, journal) in stored.iter().enumerate() {
        let actor = format!("{prefix}{a}");
        let got = storage.replay_from(&actor, 1).await.expect("replay");
        assert_eq!(&got, journal, "{actor}");
    }
    let (items, _) = read_all(
        storage,
        &FeedFilter::Tag(tag.into()),
        FeedOffset::start(),
        50,
    )
    .await;
    let found: std::collections::BTreeSet<(String, u64)> = items
        .iter()
        .map(|i| (i.entry.actor_id.clone(), i.entry.sequence))
        .collect();
    assert_eq!(items.len(), found.len(), "no entry twice in the tag index");
    assert_eq!(&found, tagged_stored);
    // The feed over all actors: every entry once, each actor's in order.
    let (items, _) = read_all(storage, &FeedFilter::All, FeedOffset::start(), 100).await;
    let mut seen: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for item in items {
        seen.entry(item.entry.actor_id.clone())
            .or_default()
            .push(item.entry.sequence);
    }
    for (a, journal) in stored.iter().enumerate() {
        let actor = format!("{prefix}{a}");
        let want: Vec<u64> = journal.iter().map(|e| e.sequence).collect();
        assert_eq!(
            seen.remove(&actor).unwrap_or_default(),
            want,
            "{actor} in the feed"
        );
    }
}

/// Batches are group-committed beside single appends, each still all or
/// nothing (rule 2), each caller with its own outcome (rule 20). In rounds
/// of concurrent calls (one group in flight, so the calls queued meanwhile
/// share a group), each actor appends its next one to three entries (a
/// batch, or a single append for one), half of them tagged, while a second
/// call for it retries its last batch (`Ok`), sends a batch overlapping
/// its stored entries or one past a gap (conflicts that write nothing);
/// every fourth round without those, so that groups hold each actor once.
/// One batch breaks the group's transaction (a row written behind the
/// journal's back at its second sequence): it fails alone and writes
/// nothing. The journals and the tag index end holding exactly the calls
/// that succeeded.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batches_share_groups_and_stay_whole() {
    batches_share_groups(1).await;
}

/// The same with the default 4 groups in flight: groups of the same round
/// commit at once, and an actor's calls may be in two of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batches_share_concurrent_groups_and_stay_whole() {
    batches_share_groups(4).await;
}

async fn batches_share_groups(in_flight: usize) {
    const ACTORS: usize = 30;
    const ROUNDS: u64 = 8;
    let options = PostgresOptions {
        group_commit_in_flight: in_flight,
        ..common::test_options()
    };
    let Some(storage) = common::storage(options).await else {
        return;
    };
    plant_stray(&storage, "poisoned", 2).await;
    let storage = Arc::new(storage);
    let mut stored: Vec<Vec<JournalEntry>> = vec![Vec::new(); ACTORS];
    let mut last_call: Vec<Vec<JournalEntry>> = vec![Vec::new(); ACTORS];
    let mut tagged_stored = std::collections::BTreeSet::new();
    for round in 0..ROUNDS {
        let mut tasks = Vec::new();
        let mut sent = Vec::new();
        for a in 0..ACTORS {
            // Among the round's other calls, so that it shares their group.
            if round == 3 && a == ACTORS / 2 {
                let poisoned = batch("poisoned", 1, 3, false);
                let s = Arc::clone(&storage);
                tasks.push(tokio::spawn(async move {
                    ("poisoned", s.append_batch(&poisoned).await)
                }));
            }
            let actor = format!("batched-{a}");
            let next = stored[a].len() as u64 + 1;
            let n = 1 + (a as u64 + round) % 3;
            let tag = (a + round as usize).is_multiple_of(2);
            let fresh = batch(&actor, next, n, tag);
            if tag {
                for e in &fresh {
                    tagged_stored.insert((actor.clone(), e.sequence));
                }
            }
            sent.push((a, fresh.clone()));
            let s = Arc::clone(&storage);
            tasks.push(tokio::spawn(async move {
                let result = if fresh.len() == 1 {
                    s.append_entry(&fresh[0]).await.map(|_| ())
                } else {
                    s.append_batch(&fresh).await
                };
                ("new", result)
            }));
            // Every fourth round sends no noise: its groups hold each actor
            // once, which takes the one-statement path for batches.
            if stored[a].is_empty() || round % 4 == 1 {
                continue;
            }
            let (kind, noise) = match (a as u64 + round) % 3 {
                0 => ("retry", last_call[a].clone()),
                1 => ("conflict", batch(&actor, next - 1, 2, true)),
                _ => ("conflict", batch(&actor, next + 4, 2, true)),
            };
            let s = Arc::clone(&storage);
            tasks.push(tokio::spawn(
                async move { (kind, s.append_batch(&noise).await) },
            ));
        }
        for task in tasks {
            let (kind, result) = task.await.expect("task");
            match kind {
                "new" | "retry" => result.expect("a new batch, or a retry of a stored one"),
                "poisoned" => assert!(
                    matches!(result, Err(JournalError::Storage { .. })),
                    "{result:?}"
                ),
                _ => assert!(
                    matches!(result, Err(JournalError::SequenceConflict { .. })),
                    "{result:?}"
                ),
            }
        }
        for (a, fresh) in sent {
            stored[a].extend(fresh.iter().cloned());
            last_call[a] = fresh;
        }
    }
    assert_eq!(
        storage.highest_sequence("poisoned").await.expect("highest"),
        0
    );
    // The stray row is no entry: out of the way of the feed's checks.
    assert_eq!(
        remove_rows(&storage, "poisoned").await,
        1,
        "the poisoned batch stored nothing beside the stray row"
    );
    assert_stored(&storage, "batched-", &stored, "batched", &tagged_stored).await;
}

/// Rules 2, 3 and 20: appends sent together each get their own outcome,
/// whatever the others' are. In rounds of concurrent calls (so groups mix
/// them, with distinct actors or not), each actor appends its next entry
/// (tagged or not) while a second call for it retries its last stored
/// entry (`Ok`), sends another entry at that sequence (a conflict) or one
/// past a gap (a conflict). The journals and the tag index end holding
/// exactly the appends that succeeded.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_group_gives_each_append_its_own_outcome() {
    const ACTORS: usize = 40;
    const ROUNDS: u64 = 9;
    // One group in flight: the calls queued meanwhile make the next one.
    let options = PostgresOptions {
        group_commit_in_flight: 1,
        ..common::test_options()
    };
    let Some(storage) = common::storage(options).await else {
        return;
    };
    let storage = Arc::new(storage);
    let mut stored: Vec<Vec<JournalEntry>> = vec![Vec::new(); ACTORS];
    let mut tagged_stored = std::collections::BTreeSet::new();
    for round in 0..ROUNDS {
        let mut tasks = Vec::new();
        let mut sent = Vec::new();
        for (a, journal) in stored.iter().enumerate() {
            let actor = format!("mixed-{a}");
            let last = journal.last().cloned();
            // Half the actors append their next entry, the other half only
            // a retry or a conflict, so a group of distinct actors mixes
            // both; in every third round, every fifth actor sends both at
            // once (a group with an actor twice).
            let appends = (a as u64 + round).is_multiple_of(2) || last.is_none();
            if appends {
                let seq = journal.len() as u64 + 1;
                let next = if a.is_multiple_of(3) {
                    tagged_stored.insert((actor.clone(), seq));
                    tagged(&actor, seq, "mixed")
                } else {
                    entry(&actor, seq)
                };
                sent.push((a, next.clone()));
                let s = Arc::clone(&storage);
                tasks.push(tokio::spawn(
                    async move { (true, s.append_entry(&next).await) },
                ));
            }
            let Some(last) = last else {
                continue;
            };
            if appends && !(round % 3 == 2 && a.is_multiple_of(5)) {
                continue;
            }
            let seq = last.sequence;
            let (succeeds, noise) = match (a as u64 / 2 + round) % 3 {
                0 => (true, last),
                1 => (false, tagged(&actor, seq, "mixed")),
                _ => (false, tagged(&actor, seq + 3, "mixed")),
            };
            let s = Arc::clone(&storage);
            tasks.push(tokio::spawn(async move {
                (succeeds, s.append_entry(&noise).await)
            }));
        }
        for task in tasks {
            let (succeeds, result) = task.await.expect("task");
            if succeeds {
                result.expect("a new entry, or a retry of a stored one");
            } else {
                assert!(
                    matches!(result, Err(JournalError::SequenceConflict { .. })),
                    "{result:?}"
                );
            }
        }
        for (a, next) in sent {
            stored[a].push(next);
        }
    }
    assert_stored(&storage, "mixed-", &stored, "mixed", &tagged_stored).await;
}

/// Rule 7: a replay stream consumed more slowly than the statement timeout
/// still delivers the whole journal (it pages, one short query per page).
#[tokio::test]
async fn slow_stream_outlives_the_statement_timeout() {
    use futures::StreamExt;
    let options = PostgresOptions {
        statement_timeout: Some(std::time::Duration::from_millis(200)),
        ..common::test_options()
    };
    let Some(storage) = common::storage(options).await else {
        return;
    };
    let written: Vec<_> = (1..=3_000).map(|s| entry("slow", s)).collect();
    for chunk in written.chunks(1_000) {
        storage.append_batch(chunk).await.expect("fill");
    }
    let mut stream = storage.replay_stream("slow", 1);
    let mut seen = 0u64;
    while let Some(entry) = stream.next().await {
        let entry = entry.expect("no statement timeout mid-stream");
        seen += 1;
        assert_eq!(entry.sequence, seen);
        if seen == 1_500 {
            // The consumer is slower than the timeout: the scenario itself.
            tokio::time::sleep(std::time::Duration::from_millis(400)).await;
        }
    }
    assert_eq!(seen, 3_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_1_schema_is_upgraded_and_keeps_its_entries() {
    let Some(storage) = common::storage(common::test_options()).await else {
        return;
    };
    // A schema as journal-postgres wrote it at version 1.
    let schema = common::fresh_schema();
    let client = storage.pool().get().await.expect("client");
    client
        .batch_execute(&format!(
            "CREATE SCHEMA {schema};
             CREATE TABLE {schema}.journal_schema (version INT NOT NULL);
             INSERT INTO {schema}.journal_schema VALUES (1);
             {}",
            journal_postgres::migrate::migrations(&schema)[0]
        ))
        .await
        .expect("version 1 schema");
    let entry = |actor: &str, s: u64| {
        JournalEntry::new(
            actor,
            s,
            Entry::message_received(format!("m-{s}"), "T", vec![1; 8]),
        )
    };
    let old = entry("veteran", 1);
    client
        .query(
            &format!("SELECT * FROM {schema}.append($1, $2, $3, $4)"),
            &[
                &old.actor_id.as_bytes(),
                &vec![1_i64],
                &vec![old.id.as_str()],
                &vec![prost::Message::encode_to_vec(&old)],
            ],
        )
        .await
        .expect("version 1 append");
    let options = PostgresOptions {
        schema: schema.clone(),
        ..common::test_options()
    };
    let upgraded = PostgresJournalStorage::open(&common::url(), options)
        .await
        .expect("open upgrades");
    // Concurrent single appends of several actors go through the new
    // grouped function.
    let appends = ["veteran", "newcomer", "other"].map(|actor| {
        let (storage, next) = (upgraded.clone(), if actor == "veteran" { 2 } else { 1 });
        tokio::spawn(async move {
            for s in next..next + 20 {
                storage
                    .append_entry(&entry(actor, s))
                    .await
                    .expect("append");
            }
        })
    });
    for task in appends {
        task.await.expect("task");
    }
    let veteran = upgraded.replay_from("veteran", 1).await.expect("replay");
    assert_eq!(veteran.len(), 21);
    assert_eq!(veteran[0], old);
    assert_eq!(
        upgraded
            .highest_sequence("newcomer")
            .await
            .expect("highest"),
        20
    );
    let version: i32 = client
        .query_one(
            &format!("SELECT max(version) FROM {schema}.journal_schema"),
            &[],
        )
        .await
        .expect("version")
        .get(0);
    assert_eq!(version, journal_postgres::SCHEMA_VERSION);
    // Version 5's autovacuum settings, on the upgraded tables too.
    let options: Vec<String> = client
        .query_one(
            "SELECT reloptions FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $1 AND c.relname = 'entries'",
            &[&schema],
        )
        .await
        .expect("reloptions")
        .get(0);
    assert!(
        options.contains(&"autovacuum_vacuum_scale_factor=0.02".to_owned()),
        "{options:?}"
    );
}
