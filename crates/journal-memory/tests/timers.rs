//! The due-timer index's conformance tests against `MemoryJournalStorage`.

journal_conformance::timer_suite!(async { journal_memory::MemoryJournalStorage::new() });
