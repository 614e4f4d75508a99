//! The whole conformance suite against `MemoryJournalStorage`, the pair
//! tests on two clones of one store (clones share the store), and the
//! due-timer index's and the live subscriptions' tests.

journal_conformance::suite!(async { journal_memory::MemoryJournalStorage::new() });

mod pair {
    journal_conformance::pair_suite!(async {
        let store = journal_memory::MemoryJournalStorage::new();
        (store.clone(), store)
    });
}

mod timers {
    journal_conformance::timer_suite!(async { journal_memory::MemoryJournalStorage::new() });
}

/// Live subscriptions (contract rule 27).
mod subscribe {
    journal_conformance::subscribe_suite!(async { journal_memory::MemoryJournalStorage::new() });

    mod pair {
        journal_conformance::subscribe_pair_suite!(optional: async {
            let store = journal_memory::MemoryJournalStorage::new();
            Some((store.clone(), store))
        });
    }
}

/// The feed over all actors and per tag (contract rule 28).
mod feed {
    journal_conformance::feed_suite!(async { journal_memory::MemoryJournalStorage::new() });
}

/// Projections' offsets and runs (contract rule 29).
mod projection {
    journal_conformance::projection_suite!(async { journal_memory::MemoryJournalStorage::new() });
}

/// Every storage call opens a span naming the backend, the actor and,
/// for appends and checkpoints, the sequence.
#[tokio::test]
async fn storage_calls_carry_spans() {
    let storage = journal_memory::MemoryJournalStorage::new();
    journal_conformance::spans::storage_calls_carry_spans(std::sync::Arc::new(storage)).await;
}
