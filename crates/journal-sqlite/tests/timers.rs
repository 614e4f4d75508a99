//! The due-timer index in a journal file, beyond the conformance suite: a
//! file of schema version 5 (before the index) is migrated and then holds
//! timers, timers survive reopening, and two storages on one file (as two
//! processes) claim each due timer once.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use journal_conformance::timers::{complete_all, schedule_all, timer, timers, T0};
use journal_core::journal_entry::Entry;
use journal_core::prost_types::Timestamp;
use journal_core::{JournalEntry, JournalStorage, TimerStore};
use journal_sqlite::SqliteJournalStorage;

fn tmp(tag: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("journal-sqlite-timers");
    std::fs::create_dir_all(&dir).expect("temporary directory");
    dir.join(format!("{tag}-{}.db", journal_core::new_entry_id()))
}

/// Entry `sequence` of "veteran" as the version 5 file holds it.
fn veteran_entry(sequence: u8) -> JournalEntry {
    JournalEntry {
        id: format!("01JV5VETERAN0000000000000{sequence}"),
        timestamp: Some(Timestamp {
            seconds: 1_700_000_000 + i64::from(sequence),
            nanos: 5,
        }),
        correlation_id: format!("corr-{sequence}"),
        ..JournalEntry::new(
            "veteran",
            u64::from(sequence),
            Entry::message_received(format!("m-{sequence}"), "Deposit", vec![sequence; 40]),
        )
    }
}

fn schema_version(path: &Path) -> i64 {
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("sqlite");
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("version")
}

/// `tests/data/version-5.db` was written by journal-sqlite at schema
/// version 5 (the build before the due-timer index): "veteran" appended
/// entries 1-3 ([`veteran_entry`]) and saved a checkpoint at 2 of the state
/// "state at 2"; the file was then closed, set to `journal_mode = DELETE`
/// and vacuumed, to keep it small. Opened by this build (on a copy), it is
/// migrated to version 6, keeps its journal, and holds timers, also after
/// reopening.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_5_file_is_migrated_and_holds_timers() {
    let original = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/version-5.db");
    assert_eq!(schema_version(&original), 5, "the checked-in file changed");
    let path = tmp("version-5");
    std::fs::copy(&original, &path).expect("copy the version 5 file");

    let storage = SqliteJournalStorage::new(&path).await.expect("open");
    let old: Vec<_> = (1..=3).map(veteran_entry).collect();
    assert_eq!(
        storage.replay_from("veteran", 1).await.expect("replay"),
        old
    );
    let checkpoint = storage
        .get_latest_checkpoint("veteran")
        .await
        .expect("checkpoint")
        .expect("the old checkpoint");
    assert_eq!(
        (checkpoint.sequence, checkpoint.state_data.as_slice()),
        (2, &b"state at 2"[..])
    );
    storage
        .append_entry(&old[2])
        .await
        .expect("a retry of an old entry");
    assert_eq!(storage.next_due(0).await.expect("next_due"), None);

    let lease = Duration::from_secs(60);
    let kept = timer("veteran/reminder", T0 + 10);
    let fired = timer("veteran/fired", T0 + 5);
    storage.schedule_timer(&kept).await.expect("schedule");
    storage.schedule_timer(&fired).await.expect("schedule");
    let claimed = storage
        .claim_due_timers(T0 + 5, lease, "host-1", 10)
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].timer, fired);
    storage.close().await;
    assert_eq!(schema_version(&path), journal_sqlite::SCHEMA_VERSION);

    // Reopened: the timers, their claim and its lease are still there.
    let storage = SqliteJournalStorage::new(&path).await.expect("reopen");
    assert_eq!(
        storage.get_timer(&kept.timer_id).await.expect("get"),
        Some(kept.clone())
    );
    assert_eq!(
        storage.next_due(T0 + 6).await.expect("next_due"),
        Some(T0 + 10)
    );
    let next = storage
        .claim_due_timers(T0 + 20, lease, "host-2", 10)
        .await
        .expect("claim");
    assert_eq!(
        next.iter().map(|c| &c.timer).collect::<Vec<_>>(),
        vec![&kept],
        "the claim of host-1 did not survive reopening"
    );
    assert!(storage
        .complete_timer(&fired.timer_id, "host-1")
        .await
        .expect("complete"));
    complete_all(&storage, &next).await;
    assert_eq!(storage.next_due(0).await.expect("next_due"), None);
    assert_eq!(
        storage.replay_from("veteran", 1).await.expect("replay"),
        old
    );
    assert_eq!(
        storage.integrity_check().await.expect("check"),
        Vec::<String>::new()
    );
    storage.close().await;
}

/// Two storages on one file, as two processes: their claims race through
/// two writer connections, and each due timer is claimed by one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_storages_on_one_file_claim_each_timer_once() {
    let path = tmp("two-hosts");
    let hosts = [
        SqliteJournalStorage::new(&path).await.expect("open"),
        SqliteJournalStorage::new(&path).await.expect("open again"),
    ];
    let all = timers("race", 300, |i| T0 + i);
    schedule_all(&hosts[0], &all).await;
    let claimers: Vec<_> = (0..6)
        .map(|i| {
            let host = Arc::new(hosts[i % 2].clone());
            tokio::spawn(async move {
                let token = format!("host-{}-task-{i}", i % 2);
                let mut mine = Vec::new();
                loop {
                    let batch = host
                        .claim_due_timers(T0 + 1_000, Duration::from_secs(60), &token, 9)
                        .await
                        .expect("claim");
                    if batch.is_empty() {
                        return (host, mine);
                    }
                    mine.extend(batch);
                }
            })
        })
        .collect();
    let mut seen = BTreeSet::new();
    for claimer in claimers {
        let (host, mine) = claimer.await.expect("a claimer panicked");
        for c in &mine {
            assert!(
                seen.insert(c.timer.timer_id.clone()),
                "{:?} claimed twice",
                c.timer.timer_id
            );
        }
        complete_all(&*host, &mine).await;
    }
    assert_eq!(seen.len(), all.len(), "a timer was never claimed");
    for host in &hosts {
        assert_eq!(host.next_due(0).await.expect("next_due"), None);
    }
}
