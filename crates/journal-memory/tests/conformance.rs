//! The whole conformance suite against `MemoryJournalStorage`, the pair
//! tests on two clones of one store (clones share the store), and the
//! due-timer index's tests.

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
