//! The whole conformance suite, on a journal file and on an in-memory
//! journal. Files live under cargo's per-target temporary directory, one per
//! test; `cargo xtask ci` empties it before each run.

use std::path::PathBuf;

use journal_sqlite::SqliteJournalStorage;

fn fresh_file() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("journal-sqlite");
    std::fs::create_dir_all(&dir).expect("temporary directory");
    dir.join(format!("{}.db", journal_core::new_entry_id()))
}

mod file {
    journal_conformance::suite!(async { journal_sqlite_storage(super::fresh_file()).await });

    async fn journal_sqlite_storage(path: std::path::PathBuf) -> super::SqliteJournalStorage {
        super::SqliteJournalStorage::new(&path)
            .await
            .unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
    }
}

mod in_memory {
    journal_conformance::suite!(async {
        super::SqliteJournalStorage::new(":memory:")
            .await
            .expect("in-memory journal")
    });
}
