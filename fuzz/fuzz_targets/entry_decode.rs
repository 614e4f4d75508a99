//! `JournalEntry::decode_stored` on any bytes: never panics; `Ok` only for
//! the entry asked for, every failure `CorruptEntry`.

#![no_main]

use journal_core::{JournalEntry, JournalError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match JournalEntry::decode_stored("actor-1", 7, data) {
        Ok(entry) => assert!(entry.actor_id == "actor-1" && entry.sequence == 7),
        Err(JournalError::CorruptEntry { .. }) => {}
        Err(other) => panic!("not CorruptEntry: {other:?}"),
    }
});
