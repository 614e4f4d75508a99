//! Workloads and faults shared by the standalone and cluster tests.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use journal_core::{journal_entry::Entry, JournalEntry, JournalError, JournalStorage};
use journal_redis::{RedisJournalStorage, RedisOptions};
use redis::aio::MultiplexedConnection;
use tokio::sync::Notify;

/// `host:port` of every server behind `url`: the one server, or every
/// node (primaries and replicas) of a cluster.
pub async fn node_addresses(url: &str) -> Vec<String> {
    let first = url
        .split_once("://")
        .map(|(_, rest)| rest)
        .and_then(|rest| rest.split(['/', '?', ',']).next())
        .map(|authority| authority.rsplit('@').next().unwrap_or_default().to_owned())
        .expect("the test URL names a server");
    let mut connection = plain(&first).await;
    let nodes: redis::RedisResult<String> = redis::cmd("CLUSTER")
        .arg("NODES")
        .query_async(&mut connection)
        .await;
    match nodes {
        // Each line: `<id> <host:port@bus> <flags> ...`.
        Ok(nodes) => nodes
            .lines()
            .filter_map(|line| line.split(' ').nth(1))
            .filter_map(|address| address.split('@').next())
            .map(str::to_owned)
            .collect(),
        Err(_) => vec![first],
    }
}

/// A plain connection to one server.
pub async fn plain(address: &str) -> MultiplexedConnection {
    redis::Client::open(format!("redis://{address}"))
        .expect("a node address")
        .get_multiplexed_async_connection()
        .await
        .expect("a node connects")
}

/// A user of the storage's own on every server behind `url` (`ACL
/// SETUSER`), so that its connections, and only its, can be killed.
/// Returns the user name and the URL with it; [`drop_user`] removes it.
pub async fn with_own_user(url: &str) -> (String, String) {
    let user = format!("jt-{}", journal_core::new_entry_id().to_lowercase());
    for address in node_addresses(url).await {
        let () = redis::cmd("ACL")
            .arg("SETUSER")
            .arg(&user)
            .arg("on")
            .arg("nopass")
            .arg("~*")
            .arg("&*")
            .arg("+@all")
            .query_async(&mut plain(&address).await)
            .await
            .expect("ACL SETUSER");
    }
    let with_user = url.replacen("://", &format!("://{user}:x@"), 1);
    (user, with_user)
}

/// Removes a user made by [`with_own_user`] (which also closes its
/// connections).
pub async fn drop_user(url: &str, user: &str) {
    for address in node_addresses(url).await {
        let _: redis::RedisResult<i64> = redis::cmd("ACL")
            .arg("DELUSER")
            .arg(user)
            .query_async(&mut plain(&address).await)
            .await;
    }
}

/// Kills, on every node, the connections of `user` (`CLIENT KILL USER`,
/// never anyone else's). Returns how many were killed.
pub async fn kill_connections(url: &str, user: &str) -> usize {
    let mut killed = 0;
    for address in node_addresses(url).await {
        let n: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("USER")
            .arg(user)
            .query_async(&mut plain(&address).await)
            .await
            .expect("CLIENT KILL");
        killed += usize::try_from(n).unwrap_or(0);
    }
    killed
}

/// Appends with retries on `Unavailable`, as a caller is told to: a write
/// that may have landed is simply sent again.
async fn append_retrying(storage: &RedisJournalStorage, entry: &JournalEntry) -> usize {
    let mut unavailable = 0;
    loop {
        match storage.append_entry(entry).await {
            Ok(_) => return unavailable,
            Err(JournalError::Unavailable { .. }) => unavailable += 1,
            Err(other) => panic!("append {} of {}: {other}", entry.sequence, entry.actor_id),
        }
    }
}

/// Actors × appends while the storage's own connections are killed three
/// times along the way; afterwards every journal is exactly 1..=appends,
/// each entry the one appended.
pub async fn connection_loss_loses_nothing(url: &str, options: RedisOptions) {
    const ACTORS: usize = 16;
    const APPENDS: u64 = 60;
    let (user, own_url) = with_own_user(url).await;
    let storage = RedisJournalStorage::open(&own_url, options)
        .await
        .expect("the storage opens as its own user");
    let done = Arc::new(AtomicU64::new(0));
    let progress = Arc::new(Notify::new());
    let mut writers = Vec::new();
    for a in 0..ACTORS {
        let storage = storage.clone();
        let done = done.clone();
        let progress = progress.clone();
        writers.push(tokio::spawn(async move {
            let actor = format!("loss-{a}");
            let mut entries = Vec::new();
            let mut unavailable = 0;
            for sequence in 1..=APPENDS {
                let entry = JournalEntry::new(
                    actor.clone(),
                    sequence,
                    Entry::message_received(format!("m{sequence}"), "Tick", vec![a as u8; 64]),
                );
                unavailable += append_retrying(&storage, &entry).await;
                entries.push(entry);
                done.fetch_add(1, Ordering::SeqCst);
                progress.notify_one();
            }
            (actor, entries, unavailable)
        }));
    }
    let total = ACTORS as u64 * APPENDS;
    let mut kills = 0;
    for threshold in [total / 4, total / 2, 3 * total / 4] {
        while done.load(Ordering::SeqCst) < threshold {
            progress.notified().await;
        }
        kills += kill_connections(url, &user).await;
    }
    assert!(
        kills >= 3,
        "the test killed {kills} connections, expected at least 3"
    );
    let mut unavailable = 0;
    for writer in writers {
        let (actor, entries, seen) = writer.await.expect("writer task");
        unavailable += seen;
        let stored = storage.replay_from(&actor, 1).await.expect("replay");
        assert_eq!(
            stored, entries,
            "{actor}: a gap, a duplicate or a changed entry"
        );
        assert_eq!(
            storage.highest_sequence(&actor).await.expect("highest"),
            APPENDS
        );
    }
    drop_user(url, &user).await;
    eprintln!("killed {kills} connections; callers saw Unavailable {unavailable} times");
}

/// A subscription whose waiting connection is killed three times, each
/// time as the entry it waits for is appended: every entry still arrives,
/// in order and once, woken (its poll interval is a minute, longer than
/// the test waits), also after each reconnection (contract rule 27,
/// "across the backend's own reconnects").
#[allow(dead_code)]
pub async fn a_subscription_survives_connection_loss(url: &str, options: RedisOptions) {
    use futures::StreamExt;
    use journal_core::subscribe::{follow, SubscribeOptions};
    use std::time::Duration;

    let (user, own_url) = with_own_user(url).await;
    let storage = RedisJournalStorage::open(&own_url, options)
        .await
        .expect("the storage opens as its own user");
    let actor = format!("sub-loss-{}", journal_core::new_entry_id());
    let options = SubscribeOptions {
        poll_interval: Duration::from_secs(60),
        ..SubscribeOptions::default()
    };
    let mut stream = follow(&storage, &actor, 1, options);
    let entry = |sequence: u64| {
        JournalEntry::new(
            actor.clone(),
            sequence,
            Entry::message_received(format!("m{sequence}"), "Tick", b"payload".to_vec()),
        )
    };
    let (mut sequence, mut kills) = (0, 0);
    for _ in 0..3 {
        for kill in [true, false, false] {
            sequence += 1;
            let e = entry(sequence);
            let (got, killed) = tokio::join!(
                tokio::time::timeout(Duration::from_secs(20), stream.next()),
                async {
                    // Once the subscriber waits on its connection.
                    tokio::task::yield_now().await;
                    let killed = if kill {
                        kill_connections(url, &user).await
                    } else {
                        0
                    };
                    append_retrying(&storage, &e).await;
                    killed
                }
            );
            kills += killed;
            match got {
                Ok(Some(Ok(got))) => assert_eq!(got, e, "entry {sequence}"),
                other => panic!("entry {sequence} did not come: {other:?}"),
            }
        }
    }
    assert!(
        kills >= 3,
        "the test killed {kills} connections, expected at least 3"
    );
    drop(stream);
    storage.delete_actor(&actor).await.expect("deleted");
    drop_user(url, &user).await;
}
