//! The feed on files written by older builds: `tests/data/version-6.db` was
//! written by journal-sqlite at schema version 6 (the build before the
//! feed) with `journal demo --db PATH --actors 2 --messages 6`: 60 entries
//! of `demo-account-000` and `demo-account-001` and their checkpoints.
//! Opened by this build (on a copy), it is migrated to version 7: every
//! entry keeps its place, the feed gives them all in the order they were
//! written, and positions go on above them, also after the newest rows are
//! deleted.

use std::path::{Path, PathBuf};

use journal_core::feed::{FeedFilter, FeedOffset, JournalFeed};
use journal_core::journal_entry::Entry;
use journal_core::{JournalEntry, JournalStorage};
use journal_sqlite::SqliteJournalStorage;

fn tmp(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("journal-sqlite");
    std::fs::create_dir_all(&dir).expect("temporary directory");
    dir.join(format!("{name}-{}.db", journal_core::new_entry_id()))
}

fn schema_version(path: &Path) -> i64 {
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("sqlite");
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("version")
}

/// Positions as the version 6 file holds them, in order, per actor.
fn old_positions(path: &Path) -> Vec<(i64, String, i64)> {
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("sqlite");
    let mut stmt = conn
        .prepare("SELECT position, actor_id, sequence FROM entry_log ORDER BY position")
        .expect("query");
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("rows")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_6_file_is_migrated_and_its_entries_make_the_feed() {
    let original = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/version-6.db");
    assert_eq!(schema_version(&original), 6, "the checked-in file changed");
    let path = tmp("version-6");
    std::fs::copy(&original, &path).expect("copy the version 6 file");
    let before = old_positions(&path);
    assert_eq!(before.len(), 60);

    let storage = SqliteJournalStorage::new(&path).await.expect("open");
    let (mut items, mut at) = (Vec::new(), FeedOffset::start());
    loop {
        let page = storage
            .read_feed(&FeedFilter::All, &at, 7)
            .await
            .expect("read");
        let Some(last) = page.last() else { break };
        at = last.offset.clone();
        items.extend(page);
    }
    let got: Vec<(String, i64)> = items
        .iter()
        .map(|i| {
            (
                i.entry.actor_id.clone(),
                i64::try_from(i.entry.sequence).expect("small"),
            )
        })
        .collect();
    let want: Vec<(String, i64)> = before.iter().map(|(_, a, s)| (a.clone(), *s)).collect();
    assert_eq!(
        got, want,
        "the feed gives the old entries in the order written"
    );
    for actor in ["demo-account-000", "demo-account-001"] {
        let replayed = storage.replay_from(actor, 1).await.expect("replay");
        let fed: Vec<&JournalEntry> = items
            .iter()
            .map(|i| &i.entry)
            .filter(|e| e.actor_id == actor)
            .collect();
        assert_eq!(
            fed,
            replayed.iter().collect::<Vec<_>>(),
            "{actor}: as replayed"
        );
    }

    // New entries come after the old ones; deleting the newest rows does not
    // hand their positions out again.
    let entry = |s: u64| {
        JournalEntry::new(
            "newcomer",
            s,
            Entry::message_received(format!("n{s}"), "T", Vec::new()),
        )
    };
    storage
        .append_batch(&[entry(1), entry(2)])
        .await
        .expect("append");
    let page = storage
        .read_feed(&FeedFilter::All, &at, 10)
        .await
        .expect("read");
    assert_eq!(page.len(), 2);
    let held = page[1].offset.clone();
    storage.delete_actor("newcomer").await.expect("delete");
    let again = entry(1);
    storage.append_entry(&again).await.expect("append again");
    let page = storage
        .read_feed(&FeedFilter::All, &held, 10)
        .await
        .expect("read");
    assert_eq!(
        page.len(),
        1,
        "the entry written after the deletion: {page:?}"
    );
    assert_eq!(page[0].entry, again);
    storage.close().await;
    assert_eq!(schema_version(&path), 7);
}
