//! Behaviour beyond the conformance suite, against the real standalone
//! Redis: lost connections, a lost script cache, replica waits, bad
//! configuration, bytes damaged on the server, and the key layout.

mod common;

use std::time::Duration;

use journal_core::{journal_entry::Entry, JournalEntry, JournalError, JournalStorage};
use journal_redis::keys::Keys;
use journal_redis::{RedisJournalStorage, RedisOptions, ReplicaWait};

/// An `XRANGE` item: the stream id and the field-value pairs.
type StreamItem = (String, Vec<(String, Vec<u8>)>);

fn entry(actor: &str, sequence: u64) -> JournalEntry {
    JournalEntry::new(
        actor,
        sequence,
        Entry::message_received(format!("m{sequence}"), "Tick", b"payload".to_vec()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_connections_lose_no_entry_and_duplicate_none() {
    if common::storage(common::test_options()).await.is_none() {
        return;
    }
    common::faults::connection_loss_loses_nothing(&common::url(), common::test_options()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_is_woken_across_killed_connections() {
    if common::storage(common::test_options()).await.is_none() {
        return;
    }
    common::faults::a_subscription_survives_connection_loss(&common::url(), common::test_options())
        .await;
}

#[tokio::test]
async fn a_lost_script_cache_is_reloaded() {
    let Some(storage) = common::storage(common::test_options()).await else {
        return;
    };
    storage.append_entry(&entry("a", 1)).await.expect("append");
    // As after a server restart or a failover to a fresh replica. Other
    // tests running now reload too: the same path.
    let raw = common::raw_client().await;
    let () = common::raw(&raw, redis::cmd("SCRIPT").arg("FLUSH")).await;
    storage
        .append_entry(&entry("a", 2))
        .await
        .expect("append after flush");
    assert_eq!(storage.replay_from("a", 1).await.expect("replay").len(), 2);
}

#[tokio::test]
async fn waiting_for_a_missing_replica_is_unavailable_and_the_retry_stores_one_copy() {
    let waiting = RedisOptions {
        wait_for_replicas: Some(ReplicaWait {
            replicas: 1,
            timeout: Duration::from_millis(50),
        }),
        ..common::test_options()
    };
    let prefix = waiting.key_prefix.clone();
    let Some(storage) = common::storage(waiting).await else {
        return;
    };
    let e = entry("w", 1);
    let error = storage
        .append_entry(&e)
        .await
        .expect_err("no replica acknowledges");
    assert!(
        matches!(error, JournalError::Unavailable { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("0 of 1 replicas"), "{error}");
    // The server has no replica at all: later calls fail at once, naming
    // the cause, without writing and waiting out the timeout again.
    for _ in 0..2 {
        let error = storage
            .append_entry(&entry("w", 2))
            .await
            .expect_err("still no replica");
        assert!(
            matches!(error, JournalError::Unavailable { .. }),
            "{error:?}"
        );
        assert!(
            error.to_string().contains("0 connected replicas"),
            "{error}"
        );
    }
    let plain = common::storage(RedisOptions {
        key_prefix: prefix,
        ..common::test_options()
    })
    .await
    .expect("same server");
    assert_eq!(plain.replay_from("w", 1).await.expect("replay"), vec![e]);
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable_and_no_password_is_shown() {
    let options = RedisOptions {
        connect_timeout: Duration::from_millis(500),
        ..RedisOptions::default()
    };
    let error = RedisJournalStorage::open("redis://user:s3cret@127.0.0.1:1", options)
        .await
        .expect_err("nothing listens on port 1");
    assert!(error.is_retryable(), "{error:?}");
    assert!(
        !format!("{error} {error:?}").contains("s3cret"),
        "{error:?}"
    );
}

#[tokio::test]
async fn bad_urls_and_options_are_typed_errors_without_the_password() {
    for url in [
        "redis://:s3cret@[::1",
        "not a url s3cret",
        "mongodb://u:s3cret@host",
    ] {
        match RedisJournalStorage::new(url).await {
            Err(error @ JournalError::Storage { .. }) => {
                assert!(
                    !format!("{error} {error:?}").contains("s3cret"),
                    "{error:?}"
                );
            }
            other => panic!("{url}: {other:?}"),
        }
    }
    for prefix in ["", "a{b}", "a*", "with space", &"x".repeat(65)] {
        let options = RedisOptions {
            key_prefix: prefix.to_owned(),
            ..RedisOptions::default()
        };
        let error = RedisJournalStorage::open(&common::url(), options)
            .await
            .expect_err("bad prefix");
        assert!(
            matches!(error, JournalError::Storage { .. }),
            "{prefix:?}: {error:?}"
        );
    }
    let options = RedisOptions {
        pool_size: 0,
        ..RedisOptions::default()
    };
    assert!(RedisJournalStorage::open(&common::url(), options)
        .await
        .is_err());
}

#[tokio::test]
async fn debug_output_names_no_url() {
    let Some(storage) = common::storage(common::test_options()).await else {
        return;
    };
    let debug = format!("{storage:?}");
    assert!(
        debug.contains("key_prefix") && !debug.contains("redis://"),
        "{debug}"
    );
}

#[tokio::test]
async fn prefixes_keep_journals_apart() {
    let (Some(one), Some(two)) = (
        common::storage(common::test_options()).await,
        common::storage(common::test_options()).await,
    ) else {
        return;
    };
    one.append_entry(&entry("shared-name", 1))
        .await
        .expect("append");
    assert_eq!(
        two.highest_sequence("shared-name").await.expect("highest"),
        0
    );
    two.append_entry(&entry("shared-name", 1))
        .await
        .expect("own journal");
    assert_eq!(one.stats().await.expect("stats").entries, 1);
    assert_eq!(two.stats().await.expect("stats").entries, 1);
}

#[tokio::test]
async fn keys_are_laid_out_as_documented() {
    let options = common::test_options();
    let keys = Keys::new(&options.key_prefix);
    let Some(storage) = common::storage(options).await else {
        return;
    };
    let actor = "}{odd} actor";
    storage
        .append_batch(&[entry(actor, 1), entry(actor, 2)])
        .await
        .expect("append");
    let k = keys.actor(actor);
    let raw = common::raw_client().await;
    let highest: String = common::raw(&raw, redis::cmd("GET").arg(k.highest())).await;
    assert_eq!(highest, "2");
    let ids: Vec<StreamItem> = common::raw(
        &raw,
        redis::cmd("XRANGE").arg(k.entries()).arg("-").arg("+"),
    )
    .await;
    let fields: Vec<&str> = ids[0].1.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(fields, ["d"], "the id is read from the bytes");
    let ids: Vec<&str> = ids.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["1-0", "2-0"]);
    let members: Vec<String> = common::raw(
        &raw,
        redis::cmd("ZRANGE").arg(k.bucket().actors()).arg(0).arg(-1),
    )
    .await;
    assert_eq!(members, [actor]);
    let key_text = String::from_utf8_lossy(&k.entries()).into_owned();
    assert!(key_text.ends_with(":e:}{odd} actor"), "{key_text}");
    assert_eq!(
        key_text.matches('{').count(),
        2,
        "the tag, then the id: {key_text}"
    );
}

#[tokio::test]
async fn damaged_bytes_on_the_server_are_typed_errors() {
    let options = common::test_options();
    let keys = Keys::new(&options.key_prefix);
    let Some(storage) = common::storage(options).await else {
        return;
    };
    storage.append_entry(&entry("d", 1)).await.expect("append");
    let k = keys.actor("d");
    let raw = common::raw_client().await;
    // An entry whose bytes are not protobuf.
    let _: String = common::raw(
        &raw,
        redis::cmd("XADD")
            .arg(k.entries())
            .arg("2-0")
            .arg("i")
            .arg("x")
            .arg("d")
            .arg(b"\xffnot protobuf".as_slice()),
    )
    .await;
    let () = common::raw(&raw, redis::cmd("SET").arg(k.highest()).arg("2")).await;
    let error = storage.replay_from("d", 1).await.expect_err("corrupt");
    assert!(
        matches!(error, JournalError::CorruptEntry { sequence: 2, .. }),
        "{error:?}"
    );
    // A highest sequence that is not a number.
    let () = common::raw(&raw, redis::cmd("SET").arg(k.highest()).arg("many")).await;
    assert!(matches!(
        storage.highest_sequence("d").await,
        Err(JournalError::Storage { .. })
    ));
    assert!(matches!(
        storage.append_entry(&entry("d", 3)).await,
        Err(JournalError::Storage { .. })
    ));
}

#[tokio::test]
async fn rediss_urls_use_tls_or_are_refused() {
    let options = RedisOptions {
        connect_timeout: Duration::from_millis(500),
        ..RedisOptions::default()
    };
    // The test server speaks plain text: a TLS client cannot get through,
    // and a client without TLS must not silently connect in plain text.
    let result = RedisJournalStorage::open("rediss://127.0.0.1:6379", options).await;
    let error = result.expect_err("no plain-text connection for rediss://");
    if cfg!(feature = "tls-rustls") {
        assert!(!error.to_string().contains("feature"), "{error}");
    } else {
        assert!(error.to_string().contains("tls-rustls"), "{error}");
    }
}

#[tokio::test]
async fn replay_range_takes_any_max() {
    let Some(storage) = common::storage(common::test_options()).await else {
        return;
    };
    storage
        .append_batch(&[entry("m", 1), entry("m", 2)])
        .await
        .expect("append");
    let all = storage.replay_from("m", 1).await.expect("replay");
    for max in [
        usize::MAX,
        usize::MAX - 1,
        i64::MAX as usize,
        (i64::MAX as usize) + 1,
    ] {
        assert_eq!(
            storage.replay_range("m", 1, 10, max).await.expect("range"),
            all
        );
    }
}

#[tokio::test]
async fn no_password_of_any_listed_node_is_shown() {
    let options = RedisOptions {
        connect_timeout: Duration::from_millis(300),
        ..RedisOptions::default()
    };
    let error =
        RedisJournalStorage::open("redis://127.0.0.1:1,redis://:s3cret@127.0.0.1:2", options)
            .await
            .expect_err("nothing listens there");
    assert!(
        !format!("{error} {error:?}").contains("s3cret"),
        "{error:?}"
    );
    let mixed = RedisJournalStorage::new("rediss://127.0.0.1:1,redis://127.0.0.1:2").await;
    assert!(
        matches!(mixed, Err(JournalError::Storage { .. })),
        "{mixed:?}"
    );
}

#[tokio::test]
async fn an_endless_replica_timeout_does_not_panic() {
    let options = RedisOptions {
        wait_for_replicas: Some(ReplicaWait {
            replicas: 1,
            timeout: Duration::MAX,
        }),
        command_timeout: Duration::from_millis(200),
        ..common::test_options()
    };
    let Some(storage) = common::storage(options).await else {
        return;
    };
    // No replica ever answers: the command timeout ends the wait.
    let error = storage
        .append_entry(&entry("t", 1))
        .await
        .expect_err("no replica");
    assert!(error.is_retryable(), "{error:?}");
}

#[tokio::test]
async fn the_seeds_snippet_runs_on_redis() {
    use journal_core::{
        CompressionType, DurabilityConfig, DurabilityFacet, JournalBackend, MessageReceived,
    };
    // The seed's constructor, with the seed's default key prefix; the
    // actor is deleted at the end.
    let storage = match RedisJournalStorage::new(&common::url()).await {
        Ok(storage) => storage,
        Err(e) => {
            assert!(std::env::var("CI").as_deref() != Ok("true"), "{e}");
            return;
        }
    };
    let actor = format!("seed-{}", journal_core::new_entry_id());
    let entry = JournalEntry {
        id: journal_core::new_entry_id(),
        actor_id: actor.clone(),
        sequence: 1,
        timestamp: Some(prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 5,
        }),
        correlation_id: "c-1".into(),
        entry: Some(journal_core::journal_entry::Entry::MessageReceived(
            MessageReceived {
                message_id: "m-1".into(),
                message_type: "Deposit".into(),
                payload: b"{\"amount\":5}".to_vec(),
                ..MessageReceived::default()
            },
        )),
    };
    storage.append_entry(&entry).await.expect("append");
    assert_eq!(
        storage.replay_from(&actor, 1).await.expect("replay"),
        vec![entry]
    );
    assert!(storage
        .get_latest_checkpoint(&actor)
        .await
        .expect("latest")
        .is_none());
    let config = DurabilityConfig {
        backend: JournalBackend::Redis as i32,
        checkpoint_interval: 100,
        replay_on_activation: true,
        cache_side_effects: true,
        compression: CompressionType::Zstd as i32,
        ..DurabilityConfig::default()
    };
    let _facet = DurabilityFacet::new(storage.clone(), config);
    storage.delete_actor(&actor).await.expect("delete");
    // The prefix is the seed's, shared: of the bucket's feed and
    // incarnations, take away only what this test left (the feed when it
    // holds nothing but this actor's references, and then the count of
    // buckets with a feed when this feed is the one it counts).
    let keys = journal_redis::keys::Keys::new(storage.key_prefix());
    let bucket = keys.bucket(journal_redis::keys::bucket_of(&actor));
    let others: i64 = common::raw(
        &common::raw_client().await,
        redis::cmd("EVAL")
            .arg(
                "local n = 0 \
                 for _, e in ipairs(redis.call('XRANGE', KEYS[1], '-', '+')) do \
                   local f = e[2] \
                   for i = 1, #f, 2 do \
                     if f[i] == 'a' and f[i + 1] ~= ARGV[1] then n = n + 1 end \
                   end \
                 end \
                 if n == 0 then \
                   redis.call('DEL', KEYS[1]) \
                   if redis.call('TYPE', KEYS[3]).ok == 'hash' \
                      and redis.call('HGET', KEYS[3], 'n') == '1' then \
                     redis.call('DEL', KEYS[3]) \
                   end \
                 end \
                 redis.call('HDEL', KEYS[2], ARGV[1]) \
                 return n",
            )
            .arg(3)
            .arg(bucket.feed())
            .arg(bucket.incarnations())
            .arg(keys.feed_buckets())
            .arg(&actor),
    )
    .await;
    assert!(others >= 0);
}

#[tokio::test]
async fn a_page_resumes_correctly_in_a_bucket_beyond_the_first_window() {
    use journal_redis::keys::bucket_of;
    let Some(storage) = common::storage(common::test_options()).await else {
        return;
    };
    // Two actors: the cursor's, early in the bucket order, and one that
    // sorts before it by id and sits in the first bucket of a later window
    // of 64, so the page after the cursor must read that bucket without
    // the cursor's bound.
    let early = (0..1_000_000)
        .map(|n| format!("z{n}"))
        .find(|id| bucket_of(id) < 100)
        .expect("an id in an early bucket");
    let late = (0..1_000_000)
        .map(|n| format!("a{n}"))
        .find(|id| bucket_of(id) == bucket_of(&early) + 64 * 8)
        .expect("an id in a late bucket");
    for id in [&early, &late] {
        storage.append_entry(&entry(id, 1)).await.expect("append");
    }
    let first = storage.list_actors_page(None, 1).await.expect("page 1");
    assert_eq!(first.actors, std::slice::from_ref(&early));
    let second = storage
        .list_actors_page(first.next_cursor.as_deref(), 1)
        .await
        .expect("page 2");
    assert_eq!(second.actors, [late]);
}

/// The append script as the first layout had it (journal-redis before the
/// driver change): it also kept per-bucket totals in `{tag}:stats`, which
/// every append wrote. Stores written by it must read and grow unchanged.
const FIRST_LAYOUT_APPEND: &str = include_str!("data/first_layout_append.lua");

#[tokio::test]
async fn a_store_written_by_the_first_layout_reads_and_grows() {
    let options = common::test_options();
    let prefix = options.key_prefix.clone();
    let keys = Keys::new(&prefix);
    let raw = common::raw_client().await;
    let Some(storage) = common::storage(options).await else {
        return;
    };
    // Two actors written the old way: entries with `i` and `d` fields, the
    // highest sequence, the bucket's index and its totals hash.
    let actors = ["old-a", "old-b"];
    let mut written = Vec::new();
    for actor in actors {
        let k = keys.actor(actor);
        let batch: Vec<JournalEntry> = (1..=3).map(|s| entry(actor, s)).collect();
        let stats = {
            let mut key = k.bucket().actors();
            key.truncate(key.len() - "actors".len());
            key.extend_from_slice(b"stats");
            key
        };
        let reply: Vec<i64> = common::raw(
            &raw,
            redis::cmd("EVAL")
                .arg(FIRST_LAYOUT_APPEND)
                .arg(4)
                .arg(k.highest())
                .arg(k.entries())
                .arg(k.bucket().actors())
                .arg(stats)
                .arg(journal_redis::scripts::append_args(&batch)),
        )
        .await;
        assert_eq!(reply, [0], "the first layout's append");
        written.push(batch);
    }
    for (actor, batch) in actors.iter().zip(&written) {
        assert_eq!(&storage.replay_from(actor, 1).await.expect("replay"), batch);
        // A retry of an old entry is recognised, a new one appends.
        storage
            .append_entry(&batch[2])
            .await
            .expect("idempotent retry");
        storage
            .append_entry(&entry(actor, 4))
            .await
            .expect("append");
    }
    let stats = storage.stats().await.expect("stats");
    assert_eq!((stats.actors, stats.entries), (2, 8));
    let mut listed = storage
        .list_actors_page(None, 10)
        .await
        .expect("list")
        .actors;
    listed.sort();
    assert_eq!(listed, actors);
    for actor in actors {
        storage.delete_actor(actor).await.expect("delete");
    }
    assert_eq!(storage.stats().await.expect("stats").actors, 0);
}

#[tokio::test]
async fn persistence_is_read_at_open_and_can_be_required() {
    use journal_redis::PersistenceCheck;
    let Some(storage) = common::storage(common::test_options()).await else {
        return;
    };
    let raw = common::raw_client().await;
    let appendonly: Vec<String> =
        common::raw(&raw, redis::cmd("CONFIG").arg("GET").arg("appendonly")).await;
    let on = appendonly.get(1).is_some_and(|v| v == "yes");
    let seen = storage.persistence();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].appendonly, Some(on), "{seen:?}");
    assert_eq!(seen[0].restart_loses().is_none(), on, "{seen:?}");
    let required = RedisJournalStorage::open(
        &common::url(),
        RedisOptions {
            persistence_check: PersistenceCheck::Require,
            ..common::test_options()
        },
    )
    .await;
    if on {
        required.expect("an append-only server passes");
    } else {
        let error = required.expect_err("a server without an append-only file is refused");
        assert!(matches!(error, JournalError::Storage { .. }), "{error:?}");
        assert!(error.to_string().contains("appendonly yes"), "{error}");
    }
    let skipped = common::storage(RedisOptions {
        persistence_check: PersistenceCheck::Skip,
        ..common::test_options()
    })
    .await
    .expect("same server");
    assert!(skipped.persistence().is_empty());
}

/// `wait_for_entries`: at once when an entry is stored, after its timeout
/// when none comes (a zero timeout included: never `BLOCK 0`).
#[tokio::test]
async fn waits_end_at_once_with_an_entry_stored_and_after_their_timeout() {
    use journal_core::JournalWatch;
    let Some(storage) = common::storage(common::test_options()).await else {
        return;
    };
    storage.append_entry(&entry("w", 1)).await.expect("append");
    let bound = Duration::from_secs(5);
    tokio::time::timeout(
        bound,
        storage.wait_for_entries("w", 0, Duration::from_secs(60)),
    )
    .await
    .expect("an entry is stored: no wait")
    .expect("the wait");
    tokio::time::timeout(bound, storage.wait_for_entries("w", 1, Duration::ZERO))
        .await
        .expect("a zero timeout does not block for ever")
        .expect("the wait");
    let started = std::time::Instant::now();
    tokio::time::timeout(
        bound,
        storage.wait_for_entries("w", 1, Duration::from_millis(300)),
    )
    .await
    .expect("the timeout ends the wait")
    .expect("the wait");
    assert!(started.elapsed() >= Duration::from_millis(250));
}

/// A command timeout as long as a `Duration` holds is taken as "no limit
/// to speak of": waits add to it without overflowing.
#[tokio::test]
async fn the_longest_command_timeout_does_not_overflow_a_wait() {
    use journal_core::JournalWatch;
    let options = journal_redis::RedisOptions {
        command_timeout: Duration::MAX,
        ..common::test_options()
    };
    let Some(storage) = common::storage(options).await else {
        return;
    };
    storage
        .append_entry(&entry("long", 1))
        .await
        .expect("append");
    tokio::time::timeout(
        Duration::from_secs(5),
        storage.wait_for_entries("long", 1, Duration::from_millis(50)),
    )
    .await
    .expect("the wait's own timeout ends it")
    .expect("the wait");
}

/// A blocked wait holds a connection of its own: with one shared
/// connection, other calls go on while it waits, and an append ends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_wait_stalls_no_other_call() {
    use journal_core::JournalWatch;
    let options = RedisOptions {
        pool_size: 1,
        ..common::test_options()
    };
    let Some(storage) = common::storage(options).await else {
        return;
    };
    let waiter = {
        let storage = storage.clone();
        tokio::spawn(async move {
            storage
                .wait_for_entries("blocked", 0, Duration::from_secs(60))
                .await
        })
    };
    // Until the server holds a blocked XREAD (this test's, or another's
    // running beside it: then this test proves less, never wrongly fails).
    let raw = common::raw_client().await;
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let clients: String = common::raw(&raw, redis::cmd("CLIENT").arg("LIST")).await;
            if clients
                .lines()
                .any(|c| c.contains("cmd=xread") && c.contains("flags=b"))
            {
                break;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the wait blocks on the server");
    for s in 1..=20 {
        tokio::time::timeout(
            Duration::from_secs(5),
            storage.append_entry(&entry("other", s)),
        )
        .await
        .expect("an append beside a blocked wait is not stalled")
        .expect("append");
    }
    assert!(!waiter.is_finished(), "nothing woke the wait yet");
    storage
        .append_entry(&entry("blocked", 1))
        .await
        .expect("append");
    tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("the append ends the wait")
        .expect("the task")
        .expect("the wait");
}

/// The feed over all actors reads only the buckets it knows to have a
/// feed while their count stays: a bucket whose feed appears after the
/// list was made is counted by the append that makes it, and read by the
/// next page.
#[tokio::test]
async fn a_bucket_whose_feed_appears_later_is_read_at_once() {
    use journal_core::feed::{FeedFilter, FeedOffset};
    use journal_core::JournalFeed;
    use journal_redis::keys::bucket_of;

    let options = common::test_options();
    let keys = Keys::new(&options.key_prefix);
    let Some(storage) = common::storage(options).await else {
        return;
    };
    let raw = common::raw_client().await;
    let first = "feed-bucket-0".to_owned();
    let mut taken = vec![bucket_of(&first)];
    let later = new_bucket_actors("feed-later", &mut taken, 1).remove(0);
    let began_by = entry(&first, 1);
    storage.append_entry(&began_by).await.expect("append");
    let count: i64 = common::raw(&raw, redis::cmd("HGET").arg(keys.feed_buckets()).arg("n")).await;
    assert_eq!(count, 1, "the append that made a bucket's feed counted it");
    let began: String =
        common::raw(&raw, redis::cmd("HGET").arg(keys.feed_buckets()).arg("id")).await;
    assert_eq!(began, began_by.id, "by the id of the append's first entry");
    // The reader lists the buckets with a feed: one.
    let page = storage
        .read_feed(&FeedFilter::All, &FeedOffset::start(), 10)
        .await
        .expect("feed");
    assert_eq!(page.len(), 1);
    let at = page[0].offset.clone();
    // Another bucket's feed appears; the next page has it.
    storage
        .append_entry(&entry(&later, 1))
        .await
        .expect("append");
    storage
        .append_entry(&entry(&first, 2))
        .await
        .expect("append");
    let count: i64 = common::raw(&raw, redis::cmd("HGET").arg(keys.feed_buckets()).arg("n")).await;
    assert_eq!(
        count, 2,
        "one more bucket, one more counted; a second append none"
    );
    let page = storage
        .read_feed(&FeedFilter::All, &at, 10)
        .await
        .expect("feed");
    let mut got: Vec<(String, u64)> = page
        .iter()
        .map(|item| (item.entry.actor_id.clone(), item.entry.sequence))
        .collect();
    got.sort();
    let mut want = vec![(first.clone(), 2), (later.clone(), 1)];
    want.sort();
    assert_eq!(got, want);
    // The count lost, then begun again up to the same number by two new
    // buckets: another count (its id), so the next page lists again.
    let at = page.last().expect("items").offset.clone();
    let _: i64 = common::raw(&raw, redis::cmd("DEL").arg(keys.feed_buckets())).await;
    let fresh = new_bucket_actors("feed-again", &mut taken, 2);
    for actor in &fresh {
        storage
            .append_entry(&entry(actor, 1))
            .await
            .expect("append");
    }
    let count: i64 = common::raw(&raw, redis::cmd("HGET").arg(keys.feed_buckets()).arg("n")).await;
    assert_eq!(count, 2, "the same number as the reader's list had");
    let page = storage
        .read_feed(&FeedFilter::All, &at, 10)
        .await
        .expect("feed");
    let mut got: Vec<String> = page.iter().map(|i| i.entry.actor_id.clone()).collect();
    got.sort();
    let mut want = fresh.clone();
    want.sort();
    assert_eq!(got, want, "both new buckets read at once");
}

/// `n` actors of buckets not in `taken` (and not of each other), named
/// `tag-i`; their buckets are added to `taken`.
fn new_bucket_actors(tag: &str, taken: &mut Vec<u16>, n: usize) -> Vec<String> {
    let mut actors = Vec::new();
    for i in 1..10_000 {
        let actor = format!("{tag}-{i}");
        let bucket = journal_redis::keys::bucket_of(&actor);
        if actors.len() < n && !taken.contains(&bucket) {
            taken.push(bucket);
            actors.push(actor);
        }
    }
    assert_eq!(actors.len(), n, "actors of {n} more buckets");
    actors
}

/// A feed made by a writer that does not count it (an older build) is
/// read once the list of buckets is a second old; a count key of another
/// type (not ours) counts nothing and stops no append, and the feed reads
/// every bucket.
#[tokio::test]
async fn feeds_the_count_misses_are_read_all_the_same() {
    use journal_core::feed::{FeedFilter, FeedOffset};
    use journal_core::JournalFeed;

    let options = common::test_options();
    let keys = Keys::new(&options.key_prefix);
    let Some(storage) = common::storage(options).await else {
        return;
    };
    let raw = common::raw_client().await;
    let mut taken = Vec::new();
    let actors = new_bucket_actors("feed-missed", &mut taken, 3);
    storage
        .append_entry(&entry(&actors[0], 1))
        .await
        .expect("append");
    let page = storage
        .read_feed(&FeedFilter::All, &FeedOffset::start(), 10)
        .await
        .expect("feed");
    let at = page.last().expect("an item").offset.clone();
    // A feed made by a writer that does not count (an older build): read
    // at the latest once the list is a second old.
    let uncounted = actors[1].clone();
    storage
        .append_entry(&entry(&uncounted, 1))
        .await
        .expect("append");
    let _: i64 = common::raw(
        &raw,
        redis::cmd("HINCRBY")
            .arg(keys.feed_buckets())
            .arg("n")
            .arg(-1),
    )
    .await;
    let started = std::time::Instant::now();
    let mut seen = Vec::new();
    while seen.is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the uncounted bucket's feed was never read"
        );
        seen = storage
            .read_feed(&FeedFilter::All, &at, 10)
            .await
            .expect("feed");
        if seen.is_empty() {
            // Polled: the list is made again a second after it was made.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].entry.actor_id, uncounted);

    // Another program's string where the count goes.
    let _: () = common::raw(&raw, redis::cmd("SET").arg(keys.feed_buckets()).arg("x")).await;
    let at = seen[0].offset.clone();
    storage
        .append_entry(&entry(&actors[2], 1))
        .await
        .expect("an append with a foreign count key");
    let page = storage
        .read_feed(&FeedFilter::All, &at, 10)
        .await
        .expect("feed");
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].entry.actor_id, actors[2], "read at once");
}
