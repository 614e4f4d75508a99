//! Workloads and faults shared by the standalone and cluster tests.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use fred::interfaces::ClientInterface;
use fred::prelude::{Client, ClientLike, Config};
use fred::types::client::ClientKillFilter;
use journal_core::{journal_entry::Entry, JournalEntry, JournalError, JournalStorage};
use journal_redis::RedisJournalStorage;
use tokio::sync::Notify;

/// One plain client per server behind `url` (every node of a cluster).
pub async fn node_clients(url: &str) -> Vec<Client> {
    let client =
        fred::prelude::Builder::from_config(Config::from_url(url).expect("the test URL parses"))
            .build()
            .expect("a client");
    client.init().await.expect("the admin client connects");
    let nodes = if client.is_clustered() {
        client.split_cluster().expect("the cluster's nodes")
    } else {
        vec![client.clone()]
    };
    for node in &nodes {
        if !node.is_connected() {
            node.init().await.expect("a node client connects");
        }
    }
    nodes
}

/// Kills, on every node, the connections whose name is one of `names`
/// (`CLIENT KILL ID`, never anyone else's). Returns how many were killed.
pub async fn kill_connections(nodes: &[Client], names: &[String]) -> usize {
    let mut killed = 0;
    for node in nodes {
        let list: String = node
            .client_list::<String, ()>(None, None)
            .await
            .expect("CLIENT LIST");
        for line in list.lines() {
            let field = |key: &str| {
                line.split(' ')
                    .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
            };
            let (Some(id), Some(name)) = (field("id"), field("name")) else {
                continue;
            };
            if names.iter().any(|n| n == name) {
                let n: i64 = node
                    .client_kill(vec![ClientKillFilter::ID(id.to_owned())])
                    .await
                    .expect("CLIENT KILL");
                killed += usize::try_from(n).unwrap_or(0);
            }
        }
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
pub async fn connection_loss_loses_nothing(storage: RedisJournalStorage, url: &str) {
    const ACTORS: usize = 16;
    const APPENDS: u64 = 60;
    let nodes = node_clients(url).await;
    let names = storage.connection_names();
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
        kills += kill_connections(&nodes, &names).await;
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
    eprintln!("killed {kills} connections; callers saw Unavailable {unavailable} times");
}
