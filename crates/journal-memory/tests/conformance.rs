//! The whole conformance suite against `MemoryJournalStorage`.

journal_conformance::suite!(async { journal_memory::MemoryJournalStorage::new() });
