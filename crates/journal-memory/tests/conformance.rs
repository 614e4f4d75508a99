//! The whole conformance suite against `MemoryJournalStorage`, and the pair
//! tests on two clones of one store (clones share the store).

journal_conformance::suite!(async { journal_memory::MemoryJournalStorage::new() });

mod pair {
    journal_conformance::pair_suite!(async {
        let store = journal_memory::MemoryJournalStorage::new();
        (store.clone(), store)
    });
}
