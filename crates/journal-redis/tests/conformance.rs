//! The whole conformance suite against the real standalone Redis, each test
//! under a key prefix of its own; and the pair tests, on two clients of one
//! key prefix.

mod common;

journal_conformance::suite!(optional: async { common::storage(common::test_options()).await });

mod pair {
    journal_conformance::pair_suite!(optional: async {
        let one = super::common::storage(super::common::test_options()).await?;
        let options = journal_redis::RedisOptions {
            key_prefix: one.key_prefix().to_owned(),
            ..super::common::test_options()
        };
        let other = journal_redis::RedisJournalStorage::open(&super::common::url(), options)
            .await
            .expect("a second client on the test's key prefix");
        Some((one, other))
    });
}

/// The due-timer index (contract rules 23, 24), each test under a key
/// prefix of its own.
mod timers {
    journal_conformance::timer_suite!(optional: async {
        super::common::storage(super::common::test_options()).await
    });
}

/// Live subscriptions (contract rule 27), each test under a key prefix of
/// its own: woken by `XREAD BLOCK` alone (the tests' poll interval is a
/// minute).
mod subscribe {
    journal_conformance::subscribe_suite!(optional: async {
        super::common::storage(super::common::test_options()).await
    });
}

/// A subscriber woken by appends made through another client of the same
/// key prefix (another pool, as another process would).
mod subscribe_pair {
    journal_conformance::subscribe_pair_suite!(optional: async {
        let one = super::common::storage(super::common::test_options()).await?;
        let options = journal_redis::RedisOptions {
            key_prefix: one.key_prefix().to_owned(),
            ..super::common::test_options()
        };
        let other = journal_redis::RedisJournalStorage::open(&super::common::url(), options)
            .await
            .expect("a second client on the test's key prefix");
        Some((one, other))
    });
}

/// The feed over all actors and per tag (contract rule 28), each test
/// under a key prefix of its own (a feed carries every actor of its
/// prefix).
mod feed {
    journal_conformance::feed_suite!(optional: async {
        super::common::storage(super::common::test_options()).await
    });
}

/// Projections' offsets and runs (contract rule 29), each test under a key
/// prefix of its own.
mod projection {
    journal_conformance::projection_suite!(optional: async {
        super::common::storage(super::common::test_options()).await
    });
}

/// Every storage call opens a span naming the backend, the actor and,
/// for appends and checkpoints, the sequence.
#[tokio::test]
async fn storage_calls_carry_spans() {
    let Some(storage) = common::storage(common::test_options()).await else {
        return;
    };
    journal_conformance::spans::storage_calls_carry_spans(std::sync::Arc::new(storage)).await;
}
