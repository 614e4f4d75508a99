//! The whole conformance suite against the real PostgreSQL server, each
//! test in a schema of its own; and the pair tests, on two pools of one
//! schema; and the live-subscription tests, alone and across two pools.

mod common;

journal_conformance::suite!(optional: async { common::storage(common::test_options()).await });

mod pair {
    journal_conformance::pair_suite!(optional: async {
        let one = super::common::storage(super::common::test_options()).await?;
        let options = journal_postgres::PostgresOptions {
            schema: one.schema().to_owned(),
            ..super::common::test_options()
        };
        let other = journal_postgres::PostgresJournalStorage::open(&super::common::url(), options)
            .await
            .expect("a second pool on the test's schema");
        Some((one, other))
    });
}

/// The due-timer index (contract rules 23, 24), each test in a schema of
/// its own.
mod timers {
    journal_conformance::timer_suite!(optional: async {
        super::common::storage(super::common::test_options()).await
    });
}

/// Live subscriptions (contract rule 27), woken by `LISTEN/NOTIFY`, each
/// test in a schema of its own.
mod subscribe {
    journal_conformance::subscribe_suite!(optional: async {
        super::common::storage(super::common::test_options()).await
    });
}

/// Live subscriptions across two pools of one schema: appends through the
/// second wake subscribers of the first.
mod subscribe_pair {
    journal_conformance::subscribe_pair_suite!(optional: async {
        let one = super::common::storage(super::common::test_options()).await?;
        let options = journal_postgres::PostgresOptions {
            schema: one.schema().to_owned(),
            ..super::common::test_options()
        };
        let other = journal_postgres::PostgresJournalStorage::open(&super::common::url(), options)
            .await
            .expect("a second pool on the test's schema");
        Some((one, other))
    });
}

/// The feed over all actors and per tag (contract rule 28), each test in a
/// schema of its own.
mod feed {
    journal_conformance::feed_suite!(optional: async {
        super::common::storage(super::common::test_options()).await
    });
}

/// Projections' offsets and runs (contract rule 29), each test in a schema
/// of its own.
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
