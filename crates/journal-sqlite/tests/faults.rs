//! Bad files and bad places: typed errors, no panic, and nothing stored is
//! damaged.

use std::path::PathBuf;

use journal_core::journal_entry::Entry;
use journal_core::{JournalEntry, JournalError, JournalStorage};
use journal_sqlite::{SqliteJournalStorage, SqliteOptions};

fn tmp(tag: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("journal-sqlite-faults");
    std::fs::create_dir_all(&dir).expect("temporary directory");
    dir.join(format!("{tag}-{}.db", journal_core::new_entry_id()))
}

fn entry(actor: &str, seq: u64, size: usize) -> JournalEntry {
    JournalEntry::new(
        actor,
        seq,
        Entry::message_received(format!("m-{seq}"), "T", vec![(seq % 251) as u8; size]),
    )
}

fn assert_conflict<T: std::fmt::Debug>(result: Result<T, JournalError>) {
    match result {
        Err(JournalError::SequenceConflict { .. }) => {}
        other => panic!("expected a sequence conflict, got {other:?}"),
    }
}

/// Default options, but indexing once `rows` entries wait.
fn indexing_after(rows: u64) -> SqliteOptions {
    SqliteOptions {
        compact_after: rows,
        ..SqliteOptions::default()
    }
}

/// A journal in a new file, with `options`.
async fn open_new(tag: &str, options: SqliteOptions) -> (PathBuf, SqliteJournalStorage) {
    let path = tmp(tag);
    let storage = SqliteJournalStorage::open(&path, options)
        .await
        .expect("create");
    (path, storage)
}

fn assert_storage_error<T: std::fmt::Debug>(result: Result<T, JournalError>, needle: &str) {
    match result {
        Err(e @ JournalError::Storage { .. }) => {
            assert!(
                e.to_string().contains(needle),
                "{e} does not mention {needle:?}"
            );
            assert!(!e.is_retryable());
        }
        other => panic!("expected a Storage error mentioning {needle:?}, got {other:?}"),
    }
}

#[tokio::test]
async fn garbage_file_is_refused_and_left_alone() {
    let path = tmp("garbage");
    let garbage: Vec<u8> = (0..8192u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&path, &garbage).expect("write garbage");
    assert_storage_error(
        SqliteJournalStorage::new(&path).await,
        "not an SQLite database",
    );
    assert_eq!(
        std::fs::read(&path).expect("read"),
        garbage,
        "the file was changed"
    );
}

#[tokio::test]
async fn foreign_database_is_refused_and_left_alone() {
    let path = tmp("foreign");
    {
        let conn = rusqlite::Connection::open(&path).expect("sqlite");
        conn.execute_batch("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL); INSERT INTO invoices VALUES (1, 9.5);")
            .expect("foreign schema");
    }
    let before = std::fs::read(&path).expect("read");
    assert_storage_error(SqliteJournalStorage::new(&path).await, "not a journal");
    assert_eq!(
        std::fs::read(&path).expect("read"),
        before,
        "the file was changed"
    );
}

#[tokio::test]
async fn newer_schema_is_refused_and_left_alone() {
    let path = tmp("newer");
    {
        let storage = SqliteJournalStorage::new(&path).await.expect("create");
        storage
            .append_entry(&entry("a", 1, 10))
            .await
            .expect("append");
        storage.close().await;
    }
    {
        let conn = rusqlite::Connection::open(&path).expect("sqlite");
        conn.execute_batch("PRAGMA journal_mode = DELETE; PRAGMA user_version = 99;")
            .expect("bump version");
    }
    let before = std::fs::read(&path).expect("read");
    assert_storage_error(SqliteJournalStorage::new(&path).await, "newer");
    assert_eq!(
        std::fs::read(&path).expect("read"),
        before,
        "the file was changed"
    );
}

#[tokio::test]
async fn truncated_file_gives_typed_errors() {
    let path = tmp("whole");
    let stored: Vec<_> = (1..=400).map(|s| entry("a", s, 4096)).collect();
    {
        let storage = SqliteJournalStorage::new(&path).await.expect("create");
        for chunk in stored.chunks(50) {
            storage.append_batch(chunk).await.expect("append");
        }
        storage.close().await;
    }
    // Closing folded the WAL into the main file; a copy cut in half loses
    // pages that the schema still points to.
    let bytes = std::fs::read(&path).expect("read");
    assert!(
        bytes.len() > 400 * 1024,
        "the main file holds the data ({} bytes)",
        bytes.len()
    );
    let cut = tmp("truncated");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).expect("write truncated copy");
    match SqliteJournalStorage::new(&cut).await {
        Err(e) => assert!(matches!(e, JournalError::Storage { .. }), "{e}"),
        Ok(storage) => {
            let replay = storage.replay_from("a", 1).await;
            let check = storage.integrity_check().await;
            assert!(
                replay.is_err()
                    || check.as_ref().is_ok_and(|problems| !problems.is_empty())
                    || check.is_err(),
                "a truncated file must not read as whole"
            );
        }
    }
    // The original is untouched and whole.
    let storage = SqliteJournalStorage::new(&path)
        .await
        .expect("reopen original");
    assert_eq!(storage.replay_from("a", 1).await.expect("replay"), stored);
}

#[tokio::test]
async fn unwritable_locations_are_typed_errors() {
    // Tests run as root here, so permission bits do not stop writes; a
    // read-only file system and a file standing where a directory should
    // be do.
    assert!(matches!(
        SqliteJournalStorage::new("/proc/journal-test.db").await,
        Err(JournalError::Storage { .. })
    ));
    let file = tmp("plain-file");
    std::fs::write(&file, b"not a directory").expect("write");
    assert!(matches!(
        SqliteJournalStorage::new(file.join("journal.db")).await,
        Err(JournalError::Storage { .. })
    ));
}

#[tokio::test]
async fn full_disk_fails_cleanly_and_keeps_what_was_stored() {
    let options = SqliteOptions {
        max_page_count: Some(64),
        ..SqliteOptions::default()
    };
    let (_, storage) = open_new("full", options).await;
    let mut acked = Vec::new();
    let error = loop {
        let e = entry("a", acked.len() as u64 + 1, 6000);
        match storage.append_entry(&e).await {
            Ok(_) => acked.push(e),
            Err(error) => break error,
        }
        assert!(acked.len() < 1000, "the page limit never hit");
    };
    assert!(matches!(error, JournalError::Storage { .. }), "{error}");
    assert!(error.to_string().contains("full"), "{error}");
    assert!(!acked.is_empty());
    assert_eq!(storage.replay_from("a", 1).await.expect("replay"), acked);
    assert_eq!(
        storage.highest_sequence("a").await.expect("highest"),
        acked.len() as u64
    );
    assert_eq!(
        storage.integrity_check().await.expect("check"),
        Vec::<String>::new()
    );
    // Other callers' work still goes through, and freeing space lets appends resume.
    storage
        .truncate_to("a", acked.len() as u64 - 3)
        .await
        .expect("truncate");
    storage
        .append_entry(&entry("a", acked.len() as u64 + 1, 10))
        .await
        .expect("append after freeing space");
}

#[tokio::test]
async fn reopened_file_keeps_everything() {
    let path = tmp("reopen");
    let written: Vec<_> = (1..=30).map(|s| entry("durable", s, 100)).collect();
    {
        let storage = SqliteJournalStorage::new(&path).await.expect("create");
        storage.append_batch(&written[..10]).await.expect("batch");
        for e in &written[10..] {
            storage.append_entry(e).await.expect("append");
        }
        let mut c = journal_core::Checkpoint::new("durable", 30, b"state".to_vec());
        c.state_schema_version = 3;
        storage.save_checkpoint(&c).await.expect("checkpoint");
    }
    let storage = SqliteJournalStorage::new(&path).await.expect("reopen");
    assert_eq!(
        storage.replay_from("durable", 1).await.expect("replay"),
        written
    );
    let latest = storage
        .get_latest_checkpoint("durable")
        .await
        .expect("latest")
        .expect("some");
    assert_eq!((latest.sequence, latest.state_schema_version), (30, 3));
}

/// Counts, through a connection of its own, the log's rows still waiting
/// to be indexed, and the rows of the index.
fn placement(path: &std::path::Path) -> (i64, i64) {
    let conn = rusqlite::Connection::open(path).expect("sqlite");
    conn.query_row(
        "SELECT (SELECT count(*) FROM entry_log WHERE epoch > (SELECT indexed_epoch FROM log_state)),
                (SELECT count(*) FROM entry_index)",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .expect("count")
}

/// Version 1's tables; version 2 added `recent` keyed like `entries`.
const VERSION_1_TABLES: &str =
    "CREATE TABLE actors (actor_id TEXT PRIMARY KEY NOT NULL, highest INTEGER NOT NULL) WITHOUT ROWID;
     CREATE TABLE entries (actor_id TEXT NOT NULL, sequence INTEGER NOT NULL, entry_id TEXT NOT NULL,
                           entry BLOB NOT NULL, PRIMARY KEY (actor_id, sequence));
     CREATE TABLE checkpoints (actor_id TEXT NOT NULL, sequence INTEGER NOT NULL,
                               checkpoint BLOB NOT NULL, PRIMARY KEY (actor_id, sequence));";
const VERSION_2_TABLE: &str =
    "CREATE TABLE recent (actor_id TEXT NOT NULL, sequence INTEGER NOT NULL, entry_id TEXT NOT NULL,
                          entry BLOB NOT NULL, PRIMARY KEY (actor_id, sequence));";
/// Version 3's `recent`, indexed by a hash of the actor id; the rows of
/// "veteran" carry its hash (FNV-1a 32 of the id's bytes, shifted right by
/// one).
const VERSION_3_TABLE: &str =
    "CREATE TABLE recent (actor_key INTEGER NOT NULL DEFAULT 1470740490, actor_id TEXT NOT NULL,
                          sequence INTEGER NOT NULL, entry_id TEXT NOT NULL, entry BLOB NOT NULL);
     CREATE INDEX recent_by_actor_key ON recent (actor_key, sequence);";
/// Version 4's `recent_entries`, indexed by epoch; the rows of "veteran"
/// carry its key, in epoch 3.
const VERSION_4_TABLE: &str =
    "CREATE TABLE recent_entries (epoch INTEGER NOT NULL DEFAULT 3,
                                  actor_key INTEGER NOT NULL DEFAULT 1470740490, actor_id TEXT NOT NULL,
                                  sequence INTEGER NOT NULL, entry_id TEXT NOT NULL, entry BLOB NOT NULL);
     CREATE INDEX recent_by_epoch ON recent_entries (epoch, actor_key, sequence);";

/// Writes, by hand, a file as an earlier journal-sqlite left it: schema
/// `version` with `tables`, one actor at `highest`, and each row in the
/// table `place` gives it.
fn write_old_file(
    path: &std::path::Path,
    version: i64,
    tables: &str,
    rows: &[JournalEntry],
    place: impl Fn(&JournalEntry) -> &'static str,
) {
    use prost::Message;
    let conn = rusqlite::Connection::open(path).expect("sqlite");
    let last = rows.last().expect("rows");
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = WAL; {tables}
         INSERT INTO actors VALUES ('{}', {});
         PRAGMA application_id = {}; PRAGMA user_version = {version};",
        last.actor_id,
        last.sequence,
        journal_sqlite::APPLICATION_ID
    ))
    .expect("old schema");
    for e in rows {
        conn.execute(
            &format!(
                "INSERT INTO {} (actor_id, sequence, entry_id, entry) VALUES (?1, ?2, ?3, ?4)",
                place(e)
            ),
            rusqlite::params![
                e.actor_id,
                i64::try_from(e.sequence).expect("small"),
                e.id,
                e.encode_to_vec()
            ],
        )
        .expect("old row");
    }
}

#[tokio::test]
async fn version_1_file_is_migrated_and_keeps_its_entries() {
    let path = tmp("version-1");
    let old: Vec<_> = (1..=5).map(|s| entry("veteran", s, 40)).collect();
    write_old_file(&path, 1, VERSION_1_TABLES, &old, |_| "entries");
    let storage = SqliteJournalStorage::new(&path).await.expect("open");
    assert_eq!(
        storage.replay_from("veteran", 1).await.expect("replay"),
        old
    );
    assert_eq!(
        storage.highest_sequence("veteran").await.expect("highest"),
        5
    );
    keeps_appending(storage, &path, &old).await;
}

/// After a migration: a retry of the newest old entry is still recognised,
/// a new append lands after it, and the closed file carries this build's
/// version and passes `PRAGMA integrity_check`.
async fn keeps_appending(
    storage: SqliteJournalStorage,
    path: &std::path::Path,
    old: &[JournalEntry],
) {
    let last = old.last().expect("old entries");
    storage.append_entry(last).await.expect("idempotent retry");
    let next = entry(&last.actor_id, last.sequence + 1, 40);
    storage.append_entry(&next).await.expect("append");
    let all = storage
        .replay_from(&last.actor_id, 1)
        .await
        .expect("replay");
    assert_eq!(all.len(), old.len() + 1);
    assert_eq!(all.last(), Some(&next));
    storage.close().await;
    let conn = rusqlite::Connection::open(path).expect("sqlite");
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("version");
    assert_eq!(version, journal_sqlite::SCHEMA_VERSION);
    assert_eq!(
        conn.query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0))
            .expect("integrity"),
        "ok"
    );
}

/// Opens a hand-built old file whose entries 1-4 were moved into
/// `entries` and 5-6 still wait in `recent` (`recent_entries` from version
/// 4 on), and checks that it reads and appends as before. `waiting`: how
/// many of them still wait to be indexed once migrated.
async fn migrates_waiting_rows(version: i64, recent_table: &str, waiting: i64) {
    let path = tmp(&format!("version-{version}"));
    let old: Vec<_> = (1..=6).map(|s| entry("veteran", s, 40)).collect();
    let recent = if version >= 4 {
        "recent_entries"
    } else {
        "recent"
    };
    write_old_file(
        &path,
        version,
        &format!("{VERSION_1_TABLES} {recent_table}"),
        &old,
        |e| if e.sequence <= 4 { "entries" } else { recent },
    );
    if version >= 4 {
        // Version 4 brought an actor's row up to date only when its rows
        // moved: the highest sequence was in `recent_entries`.
        rusqlite::Connection::open(&path)
            .expect("sqlite")
            .execute("UPDATE actors SET highest = 4", [])
            .expect("old highest");
    }
    let storage = SqliteJournalStorage::new(&path).await.expect("open");
    // Every row is in the log now, and the old tables are gone: a build of
    // that version still running on the file fails instead of writing
    // where this one does not look.
    assert_eq!(placement(&path), (waiting, 6 - waiting));
    assert_eq!(
        rusqlite::Connection::open(&path)
            .expect("sqlite")
            .query_row(
                "SELECT count(*) FROM sqlite_master
                 WHERE name IN ('recent', 'recent_entries', 'entries')",
                [],
                |r| r.get::<_, i64>(0)
            )
            .expect("schema"),
        0
    );
    assert_eq!(
        storage.replay_from("veteran", 1).await.expect("replay"),
        old
    );
    assert_eq!(
        storage.highest_sequence("veteran").await.expect("highest"),
        6
    );
    keeps_appending(storage, &path, &old).await;
    // Closing indexed the new entry too.
    assert_eq!(placement(&path), (0, 7));
}

#[tokio::test]
async fn version_2_file_is_migrated_and_keeps_its_entries() {
    migrates_waiting_rows(2, VERSION_2_TABLE, 0).await;
}

#[tokio::test]
async fn version_3_file_is_migrated_and_keeps_its_entries() {
    migrates_waiting_rows(3, VERSION_3_TABLE, 0).await;
}

#[tokio::test]
async fn version_4_file_is_migrated_and_keeps_its_entries() {
    migrates_waiting_rows(4, VERSION_4_TABLE, 2).await;
}

#[tokio::test]
async fn actors_sharing_a_key_stay_apart() {
    // Entries are indexed by a hash of the actor id; these two ids share
    // one (checked in the crate's unit tests).
    let (a, b) = ("actor-81485", "actor-241730");
    let path = tmp("shared-key");
    let storage = SqliteJournalStorage::new(&path).await.expect("create");
    let of_a: Vec<_> = (1..=6).map(|s| entry(a, s, 10)).collect();
    let of_b: Vec<_> = (1..=4).map(|s| entry(b, s, 20)).collect();
    for (x, y) in of_a.iter().zip(&of_b) {
        storage.append_entry(x).await.expect("append a");
        storage.append_entry(y).await.expect("append b");
    }
    storage.append_batch(&of_a[4..]).await.expect("batch a");
    assert_eq!(storage.replay_from(a, 1).await.expect("replay a"), of_a);
    assert_eq!(storage.replay_from(b, 1).await.expect("replay b"), of_b);
    // A retry of b's entry is not mistaken for a's, nor a's for b's.
    storage.append_entry(&of_b[3]).await.expect("retry b");
    assert_conflict(storage.append_entry(&entry(b, 4, 99)).await);
    assert_eq!(storage.actor_summary(a).await.expect("a").entries, 6);
    assert_eq!(storage.actor_summary(b).await.expect("b").entries, 4);
    storage.truncate_to(a, 3).await.expect("truncate a");
    assert_eq!(storage.replay_from(b, 1).await.expect("replay b"), of_b);
    storage.delete_actor(b).await.expect("delete b");
    assert_eq!(
        storage.replay_from(a, 1).await.expect("replay a"),
        of_a[3..].to_vec()
    );
    assert_eq!(placement(&path), (3, 0));
}

#[tokio::test]
async fn waiting_entries_are_indexed_at_the_threshold() {
    let (path, storage) = open_new("compaction", indexing_after(10)).await;
    let written: Vec<_> = (1..=25).map(|s| entry("mover", s, 30)).collect();
    for e in &written[..9] {
        storage.append_entry(e).await.expect("append");
    }
    // Below the threshold everything waits.
    assert_eq!(placement(&path), (9, 0));
    storage.append_entry(&written[9]).await.expect("append");
    // The tenth append reached it: the writer indexed all ten before it took
    // its next job, this no-op write.
    storage
        .delete_checkpoints_before("mover", 0)
        .await
        .expect("no-op write");
    assert_eq!(placement(&path), (0, 10));
    storage.append_batch(&written[10..]).await.expect("batch");
    assert_eq!(
        storage.replay_from("mover", 1).await.expect("replay"),
        written
    );
    assert_eq!(
        storage
            .replay_range("mover", 8, 12, 10)
            .await
            .expect("range"),
        written[7..12].to_vec()
    );
    assert_eq!(
        storage
            .actor_summary("mover")
            .await
            .expect("summary")
            .entries,
        25
    );
    storage.truncate_to("mover", 12).await.expect("truncate");
    assert_eq!(
        storage.replay_from("mover", 1).await.expect("replay"),
        written[12..].to_vec()
    );
    // Closing leaves every entry indexed.
    storage.close().await;
    assert_eq!(placement(&path), (0, 13));
}

#[tokio::test]
async fn two_handles_on_one_file_keep_the_sequence_check() {
    // Two journals opened on one file stand for two processes: each writer
    // caches highest sequences, and must drop them when the other commits.
    let path = tmp("two-writers");
    let eager = indexing_after(1);
    let a = SqliteJournalStorage::new(&path).await.expect("open a");
    let b = SqliteJournalStorage::open(&path, eager)
        .await
        .expect("open b");
    for s in 1..=3 {
        a.append_entry(&entry("shared", s, 20))
            .await
            .expect("a appends");
    }
    let from_b = JournalEntry::new(
        "shared",
        4,
        Entry::message_received("from-b", "T", vec![1; 20]),
    );
    b.append_entry(&from_b).await.expect("b appends 4");
    // a last saw highest 3; b's entry 4 is already indexed.
    assert_conflict(a.append_entry(&entry("shared", 4, 20)).await);
    a.append_entry(&entry("shared", 5, 20))
        .await
        .expect("a appends 5");
    let stored = b.replay_from("shared", 1).await.expect("replay");
    let sequences: Vec<u64> = stored.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, vec![1, 2, 3, 4, 5]);
    assert_eq!(stored[3], from_b);
    assert_eq!(
        a.integrity_check().await.expect("check"),
        Vec::<String>::new()
    );
}

/// A writer that indexed only its own rows since its last indexing raises
/// only its own actors' highest sequences; once another process has
/// written rows in between, it groups every waiting row by actor again, so
/// the other process's actors keep their highest sequence once indexed.
#[tokio::test]
async fn indexing_after_another_process_wrote_keeps_its_highest() {
    let path = tmp("indexing-others");
    let a = SqliteJournalStorage::open(&path, indexing_after(4))
        .await
        .expect("open a");
    let b = SqliteJournalStorage::open(&path, indexing_after(4))
        .await
        .expect("open b");
    // a indexes once (its first indexing groups every row): from then on
    // it knows what waits is its own.
    for s in 1..=4 {
        a.append_entry(&entry("from-a", s, 20))
            .await
            .expect("a appends");
    }
    // b's rows wait, below b's own threshold; b's first append lists its
    // actor at 1, the later ones only wait.
    for s in 1..=3 {
        b.append_entry(&entry("from-b", s, 20))
            .await
            .expect("b appends");
    }
    // a's next four rows get everything indexed, b's rows too.
    for s in 5..=8 {
        a.append_entry(&entry("from-a", s, 20))
            .await
            .expect("a appends");
    }
    let c = SqliteJournalStorage::new(&path).await.expect("open c");
    assert_eq!(c.highest_sequence("from-b").await.expect("highest"), 3);
    assert_eq!(c.highest_sequence("from-a").await.expect("highest"), 8);
    assert_conflict(c.append_entry(&entry("from-b", 2, 20)).await);
    c.append_entry(&entry("from-b", 4, 20))
        .await
        .expect("c appends 4");
    assert_eq!(c.replay_from("from-b", 1).await.expect("replay").len(), 4);
    assert_eq!(
        c.integrity_check().await.expect("check"),
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn lookups_span_epochs_and_enough_epochs_index_the_rows() {
    use journal_sqlite::{Synchronous, EPOCH_ROWS, MAX_EPOCHS};
    // Neither the row count nor the 4 MiB bound is reached here: only the
    // number of epochs gets the rows indexed.
    let options = SqliteOptions {
        compact_after: u64::MAX,
        synchronous: Synchronous::Normal,
        ..SqliteOptions::default()
    };
    let (path, storage) = open_new("epochs", options).await;
    let (mut of_a, mut of_b) = (Vec::new(), Vec::new());
    // Each round fills an epoch with a batch of "a" and starts the next
    // with one entry of "b": both actors have rows in every epoch.
    let round = |storage: SqliteJournalStorage, n: u64| async move {
        let batch: Vec<_> = (1..=EPOCH_ROWS)
            .map(|i| entry("a", (n - 1) * EPOCH_ROWS + i, 1))
            .collect();
        storage.append_batch(&batch).await.expect("batch of a");
        let single = entry("b", n, 1);
        storage.append_entry(&single).await.expect("entry of b");
        // A no-op write: the writer has indexed the rows, if it was due to,
        // before it takes this.
        storage
            .delete_checkpoints_before("a", 0)
            .await
            .expect("no-op write");
        (batch, single)
    };
    // The fresh file starts with one epoch; each round adds one.
    let rounds = MAX_EPOCHS - 2;
    for n in 1..=rounds {
        let (batch, single) = round(storage.clone(), n).await;
        of_a.extend(batch);
        of_b.push(single);
    }
    assert_eq!(placement(&path).1, 0, "nothing indexed yet");
    assert_eq!(storage.replay_from("a", 1).await.expect("replay a"), of_a);
    assert_eq!(storage.replay_from("b", 1).await.expect("replay b"), of_b);
    assert_eq!(
        storage.highest_sequence("b").await.expect("highest b"),
        rounds
    );
    assert_eq!(
        storage.replay_range("b", 100, 200, 3).await.expect("range"),
        of_b[99..102].to_vec()
    );
    // Truncation keeps the highest sequence, whose row is gone.
    storage.truncate_to("b", rounds).await.expect("truncate b");
    let summary = storage.actor_summary("b").await.expect("summary");
    assert_eq!((summary.entries, summary.highest_sequence), (0, rounds));
    assert_conflict(storage.append_entry(&entry("b", rounds, 2)).await);
    // One more epoch reaches the bound: everything is indexed, and reads the same.
    let (batch, single) = round(storage.clone(), rounds + 1).await;
    of_a.extend(batch);
    assert_eq!(placement(&path).0, 0, "everything indexed");
    assert_eq!(storage.replay_from("a", 1).await.expect("replay a"), of_a);
    assert_eq!(
        storage.replay_from("b", 1).await.expect("replay b"),
        vec![single]
    );
    assert_eq!(
        storage.highest_sequence("b").await.expect("highest b"),
        rounds + 1
    );
}

#[tokio::test]
async fn replays_see_one_snapshot_while_entries_are_indexed() {
    // A replay reads the indexed entries, then the waiting ones: an indexing
    // between the two statements would hide the rows it indexed, unless
    // both read one snapshot.
    let (_, storage) = open_new("snapshot", indexing_after(3)).await;
    let writer = {
        let storage = storage.clone();
        tokio::spawn(async move {
            for s in 1..=150 {
                storage
                    .append_entry(&entry("moving", s, 10))
                    .await
                    .expect("append");
            }
        })
    };
    let mut replays = 0;
    while !writer.is_finished() {
        let seen: Vec<u64> = storage
            .replay_from("moving", 1)
            .await
            .expect("replay")
            .iter()
            .map(|e| e.sequence)
            .collect();
        let expected: Vec<u64> = (1..=seen.len() as u64).collect();
        assert_eq!(seen, expected, "a gap after {replays} replays");
        replays += 1;
    }
    writer.await.expect("writer");
    assert_eq!(
        storage
            .replay_from("moving", 1)
            .await
            .expect("replay")
            .len(),
        150
    );
}

#[tokio::test]
async fn a_second_process_appends_after_the_newest_epoch() {
    // Two journals on one file stand for two processes. `b` opened when
    // the file was empty; `a` then filled three epochs. `b`'s append must
    // land in an epoch no older than `a`'s newest, or lookups that walk the
    // epochs from the newest down would miss it.
    use journal_sqlite::EPOCH_ROWS;
    let path = tmp("two-writers-epochs");
    let a = SqliteJournalStorage::new(&path).await.expect("open a");
    let b = SqliteJournalStorage::new(&path).await.expect("open b");
    let mut written = Vec::new();
    for n in 0..3 {
        let batch: Vec<_> = (1..=EPOCH_ROWS)
            .map(|i| entry("x", n * EPOCH_ROWS + i, 8))
            .collect();
        a.append_batch(&batch).await.expect("a appends");
        written.extend(batch);
    }
    let next = 3 * EPOCH_ROWS + 1;
    let from_b = JournalEntry::new(
        "x",
        next,
        Entry::message_received("from-b", "T", vec![2; 8]),
    );
    b.append_entry(&from_b).await.expect("b appends");
    written.push(from_b);
    // `b`'s next commit sees no new commit of `a`: it must still not go
    // back to its old epoch.
    let next = next + 1;
    let again = JournalEntry::new("x", next, Entry::message_received("again", "T", vec![3; 8]));
    b.append_entry(&again).await.expect("b appends again");
    written.push(again);
    assert_eq!(a.highest_sequence("x").await.expect("highest"), next);
    assert_conflict(a.append_entry(&entry("x", next, 8)).await);
    assert_eq!(a.replay_from("x", 1).await.expect("replay"), written);
    assert_eq!(
        a.replay_range("x", next, next, 5).await.expect("tail"),
        written[written.len() - 1..].to_vec()
    );
}

#[tokio::test]
async fn a_second_process_appends_after_the_indexed_epochs() {
    // `b` opened when the file was empty; `a` indexes after every append,
    // so the epochs `b` knows of are all indexed by the time it appends.
    // Rows in an indexed epoch would be in neither the index nor the
    // waiting epochs: `b`'s must go in a later one.
    let (path, a) = open_new("two-writers-indexed", indexing_after(1)).await;
    let b = SqliteJournalStorage::new(&path).await.expect("open b");
    let mut written: Vec<_> = (1..=3).map(|s| entry("x", s, 8)).collect();
    for e in &written {
        a.append_entry(e).await.expect("a appends");
    }
    // `a` has indexed all three before it takes this no-op write.
    a.delete_checkpoints_before("x", 0).await.expect("no-op");
    assert_eq!(placement(&path), (0, 3));
    for (writer, s) in [(&b, 4), (&a, 5), (&b, 6)] {
        let e = entry("x", s, 8);
        writer.append_entry(&e).await.expect("append");
        written.push(e);
    }
    for reader in [&a, &b] {
        assert_eq!(reader.replay_from("x", 1).await.expect("replay"), written);
        assert_eq!(reader.highest_sequence("x").await.expect("highest"), 6);
    }
    assert_conflict(a.append_entry(&entry("x", 6, 9)).await);
    b.close().await;
    a.close().await;
    assert_eq!(placement(&path), (0, 6));
}

#[tokio::test]
async fn migrated_actors_sharing_a_key_stay_apart() {
    // Before version 5, `actors` held no keys: the migration works them
    // out, or a read of one of these two (which share a key) would take the
    // other's entries for its own. `a` has no row in `actors` here (as in a
    // file an earlier version left damaged): the migration writes it.
    let (a, b) = ("actor-81485", "actor-241730");
    let path = tmp("version-4-shared-key");
    let of_a: Vec<_> = (1..=3).map(|s| entry(a, s, 10)).collect();
    let of_b: Vec<_> = (1..=2).map(|s| entry(b, s, 20)).collect();
    let rows: Vec<_> = of_a.iter().chain(&of_b).cloned().collect();
    write_old_file(
        &path,
        4,
        &format!("{VERSION_1_TABLES} {VERSION_4_TABLE}"),
        &rows,
        |_| "entries",
    );
    let storage = SqliteJournalStorage::new(&path).await.expect("open");
    assert_eq!(storage.highest_sequence(a).await.expect("highest a"), 3);
    assert_eq!(storage.replay_from(a, 1).await.expect("replay a"), of_a);
    assert_eq!(storage.replay_from(b, 1).await.expect("replay b"), of_b);
    assert_eq!(
        storage.replay_range(a, 2, 3, 10).await.expect("range a"),
        of_a[1..].to_vec()
    );
}

/// A projection whose `apply` panics (it runs on the writer thread) fails
/// that run alone: its batch is rolled back, no offset is stored, and the
/// writer goes on serving appends; an in-memory journal keeps its data.
#[tokio::test]
async fn a_panicking_projection_fails_its_run_and_the_writer_goes_on() {
    use journal_core::{FeedOffset, Projection, ProjectionStore};
    let storage = SqliteJournalStorage::new(":memory:").await.expect("open");
    for seq in 1..=3 {
        storage
            .append_entry(&entry("kept", seq, 16))
            .await
            .expect("append");
    }
    let projection = Projection::new("boom");
    let run = storage
        .run_projection_in_transaction(&projection, |conn, _batch| {
            conn.execute_batch("CREATE TABLE IF NOT EXISTS seen (n INTEGER)")?;
            panic!("the projection's own bug")
        })
        .await;
    match run {
        Err(e @ JournalError::Storage { .. }) => {
            assert!(e.to_string().contains("the projection's own bug"), "{e}");
        }
        other => panic!("expected a storage error, got {other:?}"),
    }
    assert_eq!(
        storage.load_offset("boom").await.expect("offset"),
        None::<FeedOffset>,
        "nothing stored for the failed batch"
    );
    storage
        .append_entry(&entry("kept", 4, 16))
        .await
        .expect("the writer still appends");
    let all = storage.replay_from("kept", 1).await.expect("replay");
    assert_eq!(
        all.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
}

/// Jobs other than appends share the appends' transaction, each in a
/// savepoint of its own: one that fails (a projection whose `apply` wrote a
/// row, then failed) is rolled back alone while the appends and checkpoints
/// of concurrent callers, in the same groups, are committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_job_among_appends_is_rolled_back_alone() {
    use journal_core::{Checkpoint, Projection, ProjectionStore};
    let (path, storage) = open_new("savepoints", SqliteOptions::default()).await;
    storage
        .append_entry(&entry("seed", 1, 8))
        .await
        .expect("an entry for the projection to read");
    let mut writers = Vec::new();
    for a in 0..32 {
        let storage = storage.clone();
        writers.push(tokio::spawn(async move {
            let actor = format!("writer-{a}");
            for seq in 1..=40 {
                storage
                    .append_entry(&entry(&actor, seq, 32))
                    .await
                    .expect("append");
                if seq % 10 == 0 {
                    storage
                        .save_checkpoint(&Checkpoint::new(&actor, seq, vec![1; 16]))
                        .await
                        .expect("checkpoint");
                }
            }
        }));
    }
    let projection = Projection::new("fails");
    for _ in 0..20 {
        let run = storage
            .run_projection_in_transaction(&projection, |conn, _batch| {
                conn.execute_batch(
                    "CREATE TABLE IF NOT EXISTS seen (n INTEGER); INSERT INTO seen VALUES (1)",
                )?;
                Err("the projection's own failure".into())
            })
            .await;
        assert!(matches!(run, Err(JournalError::Storage { .. })), "{run:?}");
    }
    for writer in writers {
        writer.await.expect("writer");
    }
    for a in 0..32 {
        let actor = format!("writer-{a}");
        let stored = storage.replay_from(&actor, 1).await.expect("replay");
        assert_eq!(stored.len(), 40, "{actor}");
        let checkpoint = storage
            .get_latest_checkpoint(&actor)
            .await
            .expect("checkpoint")
            .expect("present");
        assert_eq!(checkpoint.sequence, 40, "{actor}");
    }
    assert_eq!(storage.load_offset("fails").await.expect("offset"), None);
    let reader =
        rusqlite::Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("a reader");
    let tables: i64 = reader
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name = 'seen'",
            [],
            |r| r.get(0),
        )
        .expect("schema");
    assert_eq!(tables, 0, "every run's writes rolled back");
}
