//! The whole conformance suite against a real Redis Cluster of three
//! primaries (each with a replica), which `cargo xtask ci` starts from the
//! machine's `redis-server` and stops after the run.

mod common;

journal_conformance::suite!(optional: async { common::cluster_storage(common::test_options()).await });

/// The due-timer index (contract rules 23, 24) on the cluster, its shards
/// spread over the primaries.
mod timers {
    journal_conformance::timer_suite!(optional: async {
        super::common::cluster_storage(super::common::test_options()).await
    });
}

/// The feed over all actors and per tag (contract rule 28) on the
/// cluster, its bucket streams spread over the primaries, each test under
/// a key prefix of its own.
mod feed {
    journal_conformance::feed_suite!(optional: async {
        super::common::cluster_storage(super::common::test_options()).await
    });
}

/// Projections (contract rule 29) on the cluster.
mod projection {
    journal_conformance::projection_suite!(optional: async {
        super::common::cluster_storage(super::common::test_options()).await
    });
}

/// Live subscriptions (contract rule 27) on the cluster: each `XREAD
/// BLOCK` goes to the primary of its actor's slot.
mod subscribe {
    journal_conformance::subscribe_suite!(optional: async {
        super::common::cluster_storage(super::common::test_options()).await
    });
}

/// A subscriber on the cluster woken by appends made through another
/// client of the same key prefix.
mod subscribe_pair {
    journal_conformance::subscribe_pair_suite!(optional: async {
        let one = super::common::cluster_storage(super::common::test_options()).await?;
        let options = journal_redis::RedisOptions {
            key_prefix: one.key_prefix().to_owned(),
            ..super::common::test_options()
        };
        let url = super::common::cluster_url().expect("a cluster URL");
        let other = journal_redis::RedisJournalStorage::open(&url, options)
            .await
            .expect("a second client on the test's key prefix");
        Some((one, other))
    });
}

use std::time::Duration;

use journal_core::{journal_entry::Entry, JournalEntry, JournalStorage};
use journal_redis::{RedisOptions, ReplicaWait};

#[tokio::test]
async fn the_storage_talks_to_a_cluster_and_spreads_actors_over_its_primaries() {
    let Some(storage) = common::cluster_storage(common::test_options()).await else {
        return;
    };
    assert!(storage.is_clustered());
    for i in 0..64 {
        let e = JournalEntry::new(
            format!("spread-{i}"),
            1,
            Entry::message_received("m", "T", vec![]),
        );
        storage.append_entry(&e).await.expect("append");
    }
    let nodes = common::faults::node_addresses(&common::cluster_url().expect("cluster")).await;
    let mut primaries_with_keys = 0;
    for node in &nodes {
        let mut node = common::faults::plain(node).await;
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut node)
            .await
            .expect("INFO");
        if info.contains("role:master") {
            let size: i64 = redis::cmd("DBSIZE")
                .query_async(&mut node)
                .await
                .expect("DBSIZE");
            primaries_with_keys += usize::from(size > 0);
        }
    }
    assert_eq!(primaries_with_keys, 3, "64 actors land on every primary");
}

#[tokio::test]
async fn waiting_for_one_replica_succeeds_in_the_cluster() {
    let options = RedisOptions {
        wait_for_replicas: Some(ReplicaWait {
            replicas: 1,
            timeout: Duration::from_secs(5),
        }),
        ..common::test_options()
    };
    let Some(storage) = common::cluster_storage(options).await else {
        return;
    };
    for actor in ["w-1", "w-2", "w-3", "w-4"] {
        let e = JournalEntry::new(actor, 1, Entry::message_received("m", "T", vec![1]));
        storage
            .append_entry(&e)
            .await
            .expect("a replica acknowledges");
        assert_eq!(
            storage.replay_from(actor, 1).await.expect("replay"),
            vec![e]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_cluster_connections_lose_no_entry_and_duplicate_none() {
    if common::cluster_storage(common::test_options())
        .await
        .is_none()
    {
        return;
    }
    let url = common::cluster_url().expect("cluster");
    common::faults::connection_loss_loses_nothing(&url, common::test_options()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_subscription_is_woken_across_killed_connections() {
    if common::cluster_storage(common::test_options())
        .await
        .is_none()
    {
        return;
    }
    let url = common::cluster_url().expect("cluster");
    common::faults::a_subscription_survives_connection_loss(&url, common::test_options()).await;
}

#[tokio::test]
async fn persistence_is_read_on_every_node_of_the_cluster() {
    let Some(storage) = common::cluster_storage(common::test_options()).await else {
        return;
    };
    let nodes = common::faults::node_addresses(&common::cluster_url().expect("cluster")).await;
    let seen = storage.persistence();
    assert_eq!(seen.len(), nodes.len(), "{seen:?}");
    for node in seen {
        assert!(nodes.contains(&node.node), "{node:?} not in {nodes:?}");
        assert!(node.appendonly.is_some(), "{node:?}");
    }
}
