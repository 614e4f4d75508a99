//! Live subscriptions beyond the conformance suite: actor ids the
//! notification payload must escape, and a listener connection killed
//! under a waiting subscriber. Subscriptions here never poll (a minute's
//! interval): entries reach them through `LISTEN/NOTIFY` or not at all.

mod common;

use std::time::Duration;

use futures::StreamExt;
use journal_conformance::fixture::{entries, entry, fresh_actor};
use journal_conformance::subscribe::{woken, PATIENCE};
use journal_core::storage::EntryStream;
use journal_core::{follow, JournalEntry, JournalStorage, JournalWatch};

async fn next(stream: &mut EntryStream<'_>, what: &str) -> JournalEntry {
    match tokio::time::timeout(PATIENCE, stream.next()).await {
        Ok(Some(Ok(entry))) => entry,
        other => panic!("{what}: expected an entry within {PATIENCE:?}, got {other:?}"),
    }
}

/// Actor ids with a newline, a NUL, `%`, spaces and non-ASCII: each is
/// woken by its own appends, single (group commit) and batched.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_actor_ids_are_woken() {
    let Some(storage) = common::storage(common::test_options()).await else {
        return;
    };
    for tag in [
        "line\nbreak",
        "nul\0byte",
        "100%",
        "a b",
        "é\u{1F600}",
        "\n",
    ] {
        let actor = fresh_actor(tag);
        let mut stream = follow(&storage, &actor, 1, woken(0));
        let first = entry(&actor, 1);
        storage.append_entry(&first).await.expect("append");
        assert_eq!(next(&mut stream, "single").await, first);
        let batch = entries(&actor, 2, 4);
        storage.append_batch(&batch).await.expect("batch");
        for want in batch {
            assert_eq!(next(&mut stream, "batch").await, want);
        }
    }
}

/// The pid of the storage's listener (not `old`), waiting for it to
/// appear: found by the `LISTEN` it ran last.
async fn listener_pid(killer: &tokio_postgres::Client, listen: &str, old: Option<i32>) -> i32 {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while tokio::time::Instant::now() < deadline {
        let rows = killer
            .query(
                "SELECT pid FROM pg_stat_activity WHERE query = $1 AND pid IS DISTINCT FROM $2",
                &[&listen, &old],
            )
            .await
            .expect("pg_stat_activity");
        if let Some(row) = rows.first() {
            return row.get(0);
        }
        tokio::task::yield_now().await;
    }
    panic!("no listener appeared within {PATIENCE:?}");
}

/// The listener's connection is terminated by the server while a
/// subscriber waits: everyone is woken, the listener reconnects (another
/// backend `LISTEN`s), and every entry still arrives without polling.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_listener_reconnects() {
    let Some(storage) = common::storage(common::test_options()).await else {
        return;
    };
    let (killer, connection) = tokio_postgres::connect(&common::url(), tokio_postgres::NoTls)
        .await
        .expect("killer connection");
    tokio::spawn(connection);
    let listen = format!("LISTEN \"journal_{}\"", storage.schema());

    let actor = fresh_actor("sub-kill");
    // Starts the listener.
    storage
        .wait_for_entries(&actor, 0, Duration::ZERO)
        .await
        .expect("wait");
    let mut stream = follow(&storage, &actor, 1, woken(0));
    let mut pid = listener_pid(&killer, &listen, None).await;
    let mut s = 0;
    for _ in 0..3 {
        // Killed while the subscriber reads or waits.
        s += 1;
        let e = entry(&actor, s);
        let (got, ()) = tokio::join!(next(&mut stream, "across the kill"), async {
            killer
                .execute("SELECT pg_terminate_backend($1)", &[&pid])
                .await
                .expect("terminate the listener");
            storage.append_entry(&e).await.expect("append");
        });
        assert_eq!(got, e);
        pid = listener_pid(&killer, &listen, Some(pid)).await;
        // Back: woken by notifications again.
        for _ in 0..5 {
            s += 1;
            let e = entry(&actor, s);
            let (got, ()) = tokio::join!(next(&mut stream, "after the reconnection"), async {
                storage.append_entry(&e).await.expect("append");
            });
            assert_eq!(got, e);
        }
    }
}
