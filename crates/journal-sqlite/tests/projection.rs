//! Projections killed between their effect and their offset (contract rule
//! 29): at-least-once into another store (a text file) sees entries again
//! and loses none; exactly-once into the journal's own file, in the
//! transaction that stores the offset, sees each entry once.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use journal_core::JournalStorage;
use journal_sqlite::SqliteJournalStorage;

const ACTORS: u64 = 3;
const PER_ACTOR: u64 = 40;

fn tmp(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("journal-sqlite-projection");
    std::fs::create_dir_all(&dir).expect("temporary directory");
    dir.join(format!("{name}-{}", journal_core::new_entry_id()))
}

async fn fill(path: &Path) {
    let storage = SqliteJournalStorage::new(path).await.expect("open");
    for a in 0..ACTORS {
        let actor = format!("projected-{a}");
        let batch: Vec<_> = (1..=PER_ACTOR)
            .map(|s| journal_conformance::fixture::entry(&actor, s))
            .collect();
        storage.append_batch(&batch).await.expect("append");
    }
    storage.close().await;
}

/// Runs the child until it prints `between`, then kills it there.
fn kill_between(db: &Path, mode: &str, pause: usize, out: &Path) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_journal-sqlite-projection-child"))
        .args([
            db.to_str().expect("path"),
            mode,
            &pause.to_string(),
            out.to_str().expect("path"),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the child");
    let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut paused = false;
    for line in lines {
        if line.expect("a line") == "between" {
            paused = true;
            break;
        }
    }
    assert!(paused, "{mode}: the child ended before its batch {pause}");
    child.kill().expect("kill");
    let _ = child.wait();
}

/// Runs the child to the end of the feed.
fn run_to_end(db: &Path, mode: &str, out: &Path) {
    let status = Command::new(env!("CARGO_BIN_EXE_journal-sqlite-projection-child"))
        .args([
            db.to_str().expect("path"),
            mode,
            "0",
            out.to_str().expect("path"),
        ])
        .stdin(Stdio::null())
        .status()
        .expect("run the child");
    assert!(status.success(), "{mode}: {status}");
}

fn counts(pairs: impl IntoIterator<Item = (String, u64)>) -> BTreeMap<(String, u64), usize> {
    let mut counts = BTreeMap::new();
    for pair in pairs {
        *counts.entry(pair).or_insert(0) += 1;
    }
    counts
}

fn all_entries() -> Vec<(String, u64)> {
    (0..ACTORS)
        .flat_map(|a| (1..=PER_ACTOR).map(move |s| (format!("projected-{a}"), s)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_between_effect_and_offset() {
    let db = tmp("projection.db");
    fill(&db).await;
    let out = tmp("at-least-once.txt");
    // Killed with batch 2's effect done and its offset not stored, three
    // times over, then run to the end.
    for mode in ["atleast", "exact"] {
        for pause in [2, 1, 3] {
            kill_between(&db, mode, pause, &out);
        }
        run_to_end(&db, mode, &out);
    }

    // At-least-once: every entry, some of them more than once.
    let text = std::fs::read_to_string(&out).expect("the projected lines");
    let lines = text.lines().map(|l| {
        let (actor, seq) = l.split_once(' ').expect("actor sequence");
        (actor.to_owned(), seq.parse().expect("a sequence"))
    });
    let seen = counts(lines);
    for entry in all_entries() {
        assert!(
            seen.get(&entry).is_some_and(|&n| n >= 1),
            "at-least-once lost {entry:?}"
        );
    }
    assert_eq!(seen.len(), all_entries().len(), "nothing else");
    assert!(
        seen.values().any(|&n| n > 1),
        "the kills between effect and offset repeated some"
    );

    // Exactly-once: every entry once.
    let conn = rusqlite::Connection::open(&db).expect("open");
    let mut stmt = conn
        .prepare("SELECT actor_id, sequence FROM projected")
        .expect("query");
    let rows: Vec<(String, u64)> = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
        .expect("rows")
        .collect::<Result<Vec<_>, _>>()
        .expect("rows")
        .into_iter()
        .map(|(actor, s)| (actor, u64::try_from(s).expect("a sequence")))
        .collect();
    let once = counts(rows);
    assert_eq!(
        once,
        counts(all_entries()),
        "exactly-once: each entry once, none missing"
    );
}
