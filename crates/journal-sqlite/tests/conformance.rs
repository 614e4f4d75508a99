//! The whole conformance suite, the due-timer index's and the live
//! subscriptions' tests, on a
//! journal file and on an in-memory journal. Files live under cargo's per-target temporary directory, one per
//! test; `cargo xtask ci` empties it before each run.

use std::path::PathBuf;

use journal_sqlite::SqliteJournalStorage;

fn fresh_file() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("journal-sqlite");
    std::fs::create_dir_all(&dir).expect("temporary directory");
    dir.join(format!("{}.db", journal_core::new_entry_id()))
}

/// On a file, entries are indexed after every few appends, so that the
/// suite's reads on the reader connections meet both indexed and waiting
/// entries, and the indexings between them.
mod file {
    journal_conformance::suite!(async { journal_sqlite_storage(super::fresh_file()).await });

    async fn journal_sqlite_storage(path: std::path::PathBuf) -> super::SqliteJournalStorage {
        let options = journal_sqlite::SqliteOptions {
            compact_after: 3,
            ..journal_sqlite::SqliteOptions::default()
        };
        super::SqliteJournalStorage::open(&path, options)
            .await
            .unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
    }

    mod timers {
        journal_conformance::timer_suite!(async {
            super::journal_sqlite_storage(super::super::fresh_file()).await
        });
    }

    /// Live subscriptions (contract rule 27); across two storages on one
    /// file, as two processes, through the file watcher.
    mod subscribe {
        journal_conformance::subscribe_suite!(async {
            super::journal_sqlite_storage(super::super::fresh_file()).await
        });

        mod pair {
            journal_conformance::subscribe_pair_suite!(optional: async {
                let path = super::super::super::fresh_file();
                Some((
                    super::super::journal_sqlite_storage(path.clone()).await,
                    super::super::journal_sqlite_storage(path).await,
                ))
            });
        }
    }

    /// The feed over all actors and per tag (contract rule 28).
    mod feed {
        journal_conformance::feed_suite!(async {
            super::journal_sqlite_storage(super::super::fresh_file()).await
        });
    }

    /// Projections' offsets and runs (contract rule 29).
    mod projection {
        journal_conformance::projection_suite!(async {
            super::journal_sqlite_storage(super::super::fresh_file()).await
        });
    }

    /// Two storages opened on one file, as two processes would.
    mod pair {
        journal_conformance::pair_suite!(async {
            let path = super::super::fresh_file();
            (
                super::journal_sqlite_storage(path.clone()).await,
                super::journal_sqlite_storage(path).await,
            )
        });
    }
}

/// In memory, with the default options: the suite's journals are small, so
/// their entries stay waiting.
mod in_memory {
    journal_conformance::suite!(async {
        super::SqliteJournalStorage::new(":memory:")
            .await
            .expect("in-memory journal")
    });

    mod timers {
        journal_conformance::timer_suite!(async {
            super::super::SqliteJournalStorage::new(":memory:")
                .await
                .expect("in-memory journal")
        });
    }

    mod feed {
        journal_conformance::feed_suite!(async {
            super::super::SqliteJournalStorage::new(":memory:")
                .await
                .expect("in-memory journal")
        });
    }

    mod subscribe {
        journal_conformance::subscribe_suite!(async {
            super::super::SqliteJournalStorage::new(":memory:")
                .await
                .expect("in-memory journal")
        });
    }
}

/// Every storage call opens a span naming the backend, the actor and,
/// for appends and checkpoints, the sequence: on a file (its reader and
/// writer threads) and in memory.
#[tokio::test]
async fn storage_calls_carry_spans() {
    for storage in [
        SqliteJournalStorage::new(fresh_file()).await.expect("file"),
        SqliteJournalStorage::new(":memory:").await.expect("memory"),
    ] {
        journal_conformance::spans::storage_calls_carry_spans(std::sync::Arc::new(storage)).await;
    }
}
