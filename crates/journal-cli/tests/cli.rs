//! The `journal` binary end to end, on SQLite files and on the real
//! PostgreSQL and Redis servers (each test in a schema or key prefix of its
//! own, under the run's prefix that `cargo xtask ci` cleans up). A missing
//! server skips locally and fails under `CI=true`.

use std::path::PathBuf;
use std::process::{Command, Output};

use journal_core::journal_entry::Entry;
use journal_core::{Checkpoint, JournalEntry, JournalStorage};
use serde_json::Value;

fn journal(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_journal"))
        .args(args)
        .output()
        .expect("run the journal binary")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs `journal args` and expects exit status `code`.
fn expect(code: i32, args: &[&str]) -> String {
    let output = journal(args);
    assert_eq!(
        output.status.code(),
        Some(code),
        "journal {args:?}\nstdout:\n{}\nstderr:\n{}",
        stdout(&output),
        stderr(&output)
    );
    stdout(&output)
}

/// A fresh file path for a test's journal.
fn fresh_db(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("journal-cli");
    std::fs::create_dir_all(&dir).expect("test directory");
    dir.join(format!(
        "{name}-{}.db",
        journal_core::new_entry_id().to_lowercase()
    ))
}

fn sqlite_url(db: &std::path::Path) -> String {
    format!("sqlite:{}", db.display())
}

/// A demo journal of `actors` accounts with `messages` messages each.
fn demo_db(name: &str, actors: u32, messages: u32) -> (PathBuf, String) {
    let db = fresh_db(name);
    let out = expect(
        0,
        &[
            "demo",
            "--db",
            db.to_str().expect("utf-8 path"),
            "--actors",
            &actors.to_string(),
            "--messages",
            &messages.to_string(),
        ],
    );
    assert!(out.contains("all checks passed"), "{out}");
    let url = sqlite_url(&db);
    (db, url)
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

fn skip_or_fail(advice: &str) -> Option<String> {
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{advice}");
    eprintln!("SKIPPED: {advice}");
    None
}

/// A PostgreSQL URL with a fresh schema, or `None` (locally) without a
/// server.
fn postgres_url() -> Option<String> {
    let base = std::env::var("JOURNAL_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let prefix = std::env::var("JOURNAL_TEST_SCHEMA_PREFIX").unwrap_or_else(|_| "jt_".into());
    let schema = format!("{prefix}{}", journal_core::new_entry_id().to_lowercase());
    let separator = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{separator}schema={schema}");
    let output = journal(&["actors", &url]);
    let err = stderr(&output);
    if err.contains("unavailable") {
        return skip_or_fail(&format!(
            "PostgreSQL is not reachable ({err}). Start it with `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`, or point JOURNAL_POSTGRES_URL at a server."
        ));
    }
    Some(url)
}

fn redis_url_at(base: &str) -> Option<String> {
    let prefix = std::env::var("JOURNAL_TEST_KEY_PREFIX").unwrap_or_else(|_| "jt_".into());
    let separator = if base.contains('?') { '&' } else { '?' };
    let url = format!(
        "{base}{separator}prefix={prefix}{}",
        journal_core::new_entry_id().to_lowercase()
    );
    let output = journal(&["actors", &url]);
    let err = stderr(&output);
    if err.contains("unavailable") {
        return skip_or_fail(&format!(
            "Redis is not reachable ({err}). Start it with `redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save \"\" --appendonly no`, or point JOURNAL_REDIS_URL at a server."
        ));
    }
    assert!(output.status.success(), "{err}");
    Some(url)
}

/// A Redis URL with a fresh key prefix, or `None` (locally) without a
/// server.
fn redis_url() -> Option<String> {
    let base =
        std::env::var("JOURNAL_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    redis_url_at(&base)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Runs one SQL statement on a journal file behind the backend's back (to
/// damage it); returns the rows changed.
fn sql(db: &std::path::Path, statement: &str) -> usize {
    rusqlite::Connection::open(db)
        .expect("open the file")
        .execute(statement, [])
        .unwrap_or_else(|e| panic!("{statement}: {e}"))
}

/// Appends `entries` (one actor's, contiguous) and saves `checkpoints` in
/// the SQLite journal at `db`, through the library.
fn write_journal(db: &std::path::Path, entries: &[JournalEntry], checkpoints: &[Checkpoint]) {
    runtime().block_on(async {
        let storage = journal_sqlite::SqliteJournalStorage::new(db)
            .await
            .expect("open");
        storage.append_batch(entries).await.expect("append");
        for checkpoint in checkpoints {
            storage
                .save_checkpoint(checkpoint)
                .await
                .expect("checkpoint");
        }
        storage.close().await;
    });
}

#[test]
fn demo_then_verify_passes_and_a_second_demo_starts_over() {
    let (db, url) = demo_db("demo", 3, 40);
    let out = expect(0, &["verify", &url]);
    assert!(out.starts_with("verify ok: 3 actors"), "{out}");
    let again = expect(
        0,
        &[
            "demo",
            "--db",
            db.to_str().expect("path"),
            "--actors",
            "3",
            "--messages",
            "40",
        ],
    );
    assert!(
        again.contains("removed the previous demo run (3 accounts)"),
        "{again}"
    );
    assert!(!again.contains("FAILED"), "{again}");
    assert_eq!(again.matches("check ok").count(), 6, "{again}");
    expect(0, &["verify", &url]);
}

#[test]
fn damaged_journals_fail_verify_and_every_damage_is_named() {
    let (db, url) = demo_db("damaged", 3, 40);
    let deleted = sql(
        &db,
        "DELETE FROM entry_log WHERE actor_id = 'demo-account-001' AND sequence = 17",
    );
    assert_eq!(deleted, 1);
    sql(
        &db,
        "UPDATE entry_log SET entry = x'ffffffff' WHERE actor_id = 'demo-account-002' AND sequence = 30",
    );

    let output = journal(&["verify", &url]);
    let out = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{out}");
    assert!(
        out.contains(
            "PROBLEM demo-account-001: gap: entry 17 is missing (the journal goes from 16 to 18)"
        ),
        "{out}"
    );
    assert!(
        out.contains("PROBLEM demo-account-002: entry 30 cannot be decoded"),
        "{out}"
    );
    assert!(out.contains("verify FAILED"), "{out}");
    assert!(!out.contains("demo-account-000"), "an intact actor: {out}");
    // One actor at a time: the intact one passes, the damaged one fails.
    expect(0, &["verify", &url, "demo-account-000"]);
    expect(1, &["verify", &url, "demo-account-001"]);
}

#[test]
fn a_damaged_checkpoint_fails_verify() {
    let (db, url) = demo_db("checkpoint", 1, 60);
    let damaged = sql(
        &db,
        "UPDATE checkpoints SET checkpoint = x'0a0100' WHERE sequence = (SELECT MAX(sequence) FROM checkpoints)",
    );
    assert_eq!(damaged, 1);
    let out = expect(1, &["verify", &url]);
    assert!(
        out.contains("PROBLEM demo-account-000: checkpoint"),
        "{out}"
    );
}

#[test]
fn show_prints_entries_as_text_or_json_lines_within_bounds() {
    let (_db, url) = demo_db("show", 1, 30);
    let all = json_lines(&expect(0, &["show", &url, "demo-account-000", "--json"]));
    let highest = all.len() as u64;
    assert!(highest > 60, "{highest} entries");
    for (i, entry) in all.iter().enumerate() {
        assert_eq!(entry["sequence"], i as u64 + 1);
        assert_eq!(entry["actor_id"], "demo-account-000");
        assert!(entry["entry_id"].as_str().is_some_and(|id| id.len() == 26));
    }
    assert_eq!(all[0]["kind"], "message_received");
    assert_eq!(all[0]["message_type"], "AccountMessage::Deposit");
    let some = json_lines(&expect(
        0,
        &[
            "show",
            &url,
            "demo-account-000",
            "--from",
            "5",
            "--to",
            "9",
            "--json",
        ],
    ));
    assert_eq!(
        some.iter()
            .map(|e| e["sequence"].clone())
            .collect::<Vec<_>>(),
        (5..=9).map(Value::from).collect::<Vec<_>>()
    );
    let text = expect(
        0,
        &[
            "show",
            &url,
            "demo-account-000",
            "--from",
            "3",
            "--limit",
            "4",
        ],
    );
    let sequences: Vec<&str> = text
        .lines()
        .map(|l| l.split_whitespace().next().unwrap_or(""))
        .collect();
    assert_eq!(sequences, ["3", "4", "5", "6"], "{text}");
    assert!(text.contains("message_"), "{text}");
}

#[test]
fn at_rebuilds_the_balance_each_message_acknowledged() {
    let (_db, url) = demo_db("at", 2, 90);
    let entries = json_lines(&expect(0, &["show", &url, "demo-account-001", "--json"]));
    let mut checked = 0;
    for (i, entry) in entries.iter().enumerate() {
        let sequence = entry["sequence"].to_string();
        if entry["kind"] == "message_processed" && entry["result"] == "success" && i % 7 == 0 {
            let at: Value = serde_json::from_str(&expect(
                0,
                &["at", &url, "demo-account-001", &sequence, "--json"],
            ))
            .expect("json");
            let reply: i64 = entry["response_payload_text"]
                .as_str()
                .and_then(|t| t.parse().ok())
                .expect("the reply is the balance");
            assert_eq!(at["state"]["balance"], reply, "at {sequence}: {at}");
            assert_eq!(at["in_flight"], Value::Null);
            checked += 1;
        }
        if entry["kind"] == "message_received" && i % 11 == 0 {
            let at: Value = serde_json::from_str(&expect(
                0,
                &["at", &url, "demo-account-001", &sequence, "--json"],
            ))
            .expect("json");
            assert_eq!(at["in_flight"], entry["message_id"], "at {sequence}");
        }
    }
    assert!(checked >= 5, "{checked} points checked");
    let text = expect(0, &["at", &url, "demo-account-001", "120"]);
    assert!(
        text.contains("after entry 120") && text.contains("balance"),
        "{text}"
    );
}

#[test]
fn at_on_any_other_actor_shows_the_nearest_checkpoint_and_the_entries_since() {
    let db = fresh_db("plain");
    let url = sqlite_url(&db);
    let entries: Vec<JournalEntry> = (1..=10)
        .map(|sequence| {
            JournalEntry::new(
                "orders-7",
                sequence,
                Entry::message_received(format!("m{sequence}"), "order", b"x".to_vec()),
            )
        })
        .collect();
    let checkpoints = [4, 8].map(|at| Checkpoint::new("orders-7", at, b"state".to_vec()));
    write_journal(&db, &entries, &checkpoints);
    let at: Value =
        serde_json::from_str(&expect(0, &["at", &url, "orders-7", "7", "--json"])).expect("json");
    assert_eq!(at["checkpoint"]["sequence"], 4);
    assert_eq!(
        at["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .map(|e| e["sequence"].clone())
            .collect::<Vec<_>>(),
        [5, 6, 7].map(Value::from)
    );
    let text = expect(0, &["at", &url, "orders-7", "3"]);
    assert!(text.contains("no checkpoint at or before 3"), "{text}");
    expect(0, &["verify", &url]);
}

#[test]
fn actors_and_stats_agree_with_each_other() {
    let (_db, url) = demo_db("stats", 3, 30);
    let actors = json_lines(&expect(0, &["actors", &url, "--json"]));
    assert_eq!(actors.len(), 3);
    let entries: u64 = actors
        .iter()
        .map(|a| a["entries"].as_u64().expect("n"))
        .sum();
    let stats: Value = serde_json::from_str(&expect(0, &["stats", &url, "--json"])).expect("json");
    assert_eq!(stats["entries"], entries);
    assert_eq!(stats["backend_counts"]["entries"], entries);
    assert_eq!(stats["actors"], 3);
    assert!(stats["checkpoints"].as_u64().expect("n") >= 3, "{stats}");
    let text = expect(0, &["stats", &url]);
    assert!(text.contains("message_received"), "{text}");
}

fn copy_and_compare(url: &str, target: &str) {
    let out = expect(0, &["copy", url, target, "--batch", "37"]);
    assert!(out.contains("verified: the 3 actors'"), "{out}");
    expect(0, &["verify", url]);
    expect(0, &["verify", target]);
    for actor in ["demo-account-000", "demo-account-001", "demo-account-002"] {
        assert_eq!(
            expect(0, &["show", url, actor, "--json"]),
            expect(0, &["show", target, actor, "--json"]),
            "{actor}"
        );
    }
    let again = expect(0, &["copy", url, target]);
    assert!(again.contains("(0 entries to append)"), "{again}");
    assert!(
        again.contains("copied 0 entries and 0 checkpoints"),
        "{again}"
    );
}

#[test]
fn copy_sqlite_to_postgres_gives_the_same_journals_and_resumes() {
    let Some(target) = postgres_url() else { return };
    let (db, url) = demo_db("copy-pg", 3, 40);
    // A copy cut off part-way: one actor whole, another's first 10 entries.
    expect(0, &["copy", &url, &target, "--actor", "demo-account-002"]);
    runtime().block_on(async {
        let source = journal_sqlite::SqliteJournalStorage::new(&db)
            .await
            .expect("open");
        let part = source
            .replay_range("demo-account-000", 1, 10, 10)
            .await
            .expect("read");
        let (base, schema) = target.split_once("?schema=").expect("schema");
        let destination = journal_postgres::PostgresJournalStorage::open(
            base,
            journal_postgres::PostgresOptions {
                schema: schema.to_owned(),
                pool_size: 1,
                ..journal_postgres::PostgresOptions::default()
            },
        )
        .await
        .expect("open the destination");
        destination.append_batch(&part).await.expect("append");
        source.close().await;
    });
    let out = expect(0, &["copy", &url, &target]);
    assert!(out.contains("copying 3 actors"), "{out}");
    copy_and_compare(&url, &target);
}

#[test]
fn copy_refuses_to_touch_a_destination_that_differs() {
    let Some(target) = postgres_url() else { return };
    let (_db, url) = demo_db("diverge", 3, 20);
    let other = fresh_db("other");
    let other_url = sqlite_url(&other);
    let entry = JournalEntry::new(
        "demo-account-001",
        1,
        Entry::message_received("elsewhere", "deposit", b"1".to_vec()),
    );
    write_journal(&other, &[entry], &[]);
    expect(0, &["copy", &other_url, &target]);
    let out = expect(1, &["copy", &url, &target]);
    assert!(
        out.contains(
            "PROBLEM demo-account-001: the destination's entry 1 differs from the source's"
        ),
        "{out}"
    );
    // The other two were copied; the different one is as it was.
    let kept = json_lines(&expect(0, &["show", &target, "demo-account-001", "--json"]));
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0]["message_id"], "elsewhere");
    expect(0, &["verify", &target, "demo-account-000"]);
}

#[test]
fn copy_sqlite_to_redis_gives_the_same_journals() {
    let Some(target) = redis_url() else { return };
    let (_db, url) = demo_db("copy-redis", 3, 30);
    copy_and_compare(&url, &target);
}

#[test]
fn copy_sqlite_to_a_redis_cluster_gives_the_same_journals() {
    let Some(cluster) = std::env::var("JOURNAL_REDIS_CLUSTER_URL")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        // `cargo xtask ci` starts a cluster and sets the variable.
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "JOURNAL_REDIS_CLUSTER_URL is not set: run the tests with `cargo xtask ci`"
        );
        return;
    };
    let Some(target) = redis_url_at(&cluster) else {
        return;
    };
    let (_db, url) = demo_db("copy-cluster", 3, 30);
    copy_and_compare(&url, &target);
}

#[test]
fn the_demo_runs_on_postgres_and_redis_too() {
    for url in [postgres_url(), redis_url()].into_iter().flatten() {
        let out = expect(
            0,
            &["demo", "--url", &url, "--actors", "2", "--messages", "30"],
        );
        assert!(out.contains("all checks passed"), "{out}");
        expect(0, &["verify", &url]);
    }
}

#[test]
fn errors_are_one_line_on_stderr_without_a_password() {
    let (_db, url) = demo_db("errors", 1, 10);
    let missing = fresh_db("missing");
    let missing_url = sqlite_url(&missing);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["actors", "mysql://app:s3cret@db/x"],
            "unknown kind of journal URL",
        ),
        (vec!["actors", &missing_url], "no such journal file"),
        (
            vec!["actors", "postgres://app:s3cret@127.0.0.1:1/test"],
            "postgres unavailable",
        ),
        (
            vec!["stats", "redis://:s3cret@127.0.0.1:1"],
            "redis unavailable",
        ),
        (vec!["show", &url, "nobody"], "unknown actor \"nobody\""),
        (
            vec!["verify", &url, "--bogus"],
            "unexpected argument '--bogus'",
        ),
        (
            vec!["at", &url, "demo-account-000", "100000"],
            "there is no entry 100000",
        ),
        (
            vec!["show", &url, "demo-account-000", "--from", "x"],
            "invalid value 'x'",
        ),
        (vec!["copy", &url, &url], "are the same journal"),
        (
            vec!["copy", &url, &missing_url, "--actor", "nobody"],
            "unknown actor \"nobody\"",
        ),
        (vec!["frobnicate"], "unrecognized subcommand"),
        (vec![], "a command is needed"),
        (
            vec!["show"],
            "required arguments were not provided: <URL> <ACTOR>",
        ),
        (vec!["demo", "--url", "memory:"], "does not survive"),
        (
            vec![
                "actors",
                "postgres://app:pa/ss@127.0.0.1:1/test?password=s3cret",
            ],
            "postgres unavailable",
        ),
        (
            vec![
                "actors",
                "redis://:s3cret@127.0.0.1:1,redis://:s3cret@127.0.0.1:2",
            ],
            "redis unavailable",
        ),
        // clap repeats an argument it does not take.
        (
            vec!["demo", "postgres://app:s3cret@127.0.0.1:1/test"],
            "unexpected argument",
        ),
        (
            vec![
                "actors",
                "postgres://app:pw@127.0.0.1:1/test?application_name=a@b&password=s3cret",
            ],
            "postgres",
        ),
    ];
    for (args, says) in cases {
        let output = journal(&args);
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.starts_with("journal: ") && err.contains(says),
            "{args:?}: {err}"
        );
        assert!(
            !err.contains("s3cret") && !err.contains("pa/ss") && !err.contains("panic"),
            "{err}"
        );
        assert!(stdout(&output).is_empty(), "{args:?}");
    }
    assert!(!missing.exists(), "reading never creates a file");
}

#[test]
fn a_reader_that_goes_away_changes_no_outcome() {
    let (db, url) = demo_db("pipe", 2, 30);
    sql(&db, "DELETE FROM entry_log WHERE sequence % 2 = 0");
    for (args, code) in [
        (vec!["verify", url.as_str()], 1),
        (
            vec![
                "demo",
                "--db",
                db.to_str().expect("path"),
                "--actors",
                "2",
                "--messages",
                "20",
            ],
            0,
        ),
        (vec!["show", url.as_str(), "demo-account-000"], 0),
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_journal"))
            .args(&args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        drop(child.stdout.take()); // the reader is gone before the first line
        let output = child.wait_with_output().expect("wait");
        assert_eq!(
            output.status.code(),
            Some(code),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(
            !stderr(&output).contains("internal error"),
            "{}",
            stderr(&output)
        );
    }
}

#[test]
fn ids_holding_control_characters_cannot_forge_output() {
    let db = fresh_db("control");
    let url = sqlite_url(&db);
    let entry = JournalEntry::new(
        "evil\nPROBLEM none: verify ok \u{1b}[2J",
        1,
        Entry::message_received("m\r1", "x", Vec::new()),
    );
    write_journal(&db, &[entry], &[]);
    let out = expect(0, &["actors", &url]);
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(
        out.contains("evil\\nPROBLEM") && !out.contains('\u{1b}'),
        "{out}"
    );
    let shown = expect(
        0,
        &["show", &url, "evil\nPROBLEM none: verify ok \u{1b}[2J"],
    );
    assert_eq!(shown.lines().count(), 1, "{shown}");
    assert!(shown.contains("m\\r1"), "{shown}");
}

#[test]
fn copy_goes_on_after_the_source_truncated_behind_a_checkpoint() {
    let (db, url) = demo_db("truncated", 1, 60);
    let target = fresh_db("truncated-copy");
    let target_url = sqlite_url(&target);
    expect(0, &["copy", &url, &target_url]);
    let actor = "demo-account-000";
    runtime().block_on(async {
        let storage = journal_sqlite::SqliteJournalStorage::new(&db)
            .await
            .expect("open");
        let latest = *storage
            .list_checkpoints(actor)
            .await
            .expect("list")
            .last()
            .expect("a checkpoint");
        storage.truncate_to(actor, latest).await.expect("truncate");
        let highest = storage.highest_sequence(actor).await.expect("highest");
        let more: Vec<JournalEntry> = (1..=5)
            .map(|i| {
                JournalEntry::new(
                    actor,
                    highest + i,
                    Entry::message_received(format!("extra{i}"), "note", Vec::new()),
                )
            })
            .collect();
        storage.append_batch(&more).await.expect("append");
        storage.close().await;
    });
    expect(0, &["verify", &url]);
    let out = expect(0, &["copy", &url, &target_url]);
    assert!(out.contains("copied 5 entries"), "{out}");
    assert!(out.contains("verified"), "{out}");
    expect(0, &["verify", &target_url]);
    // Time travel into the truncated part names what is missing.
    let output = journal(&["at", &url, actor, "3", "--raw"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("are not in the journal"),
        "{}",
        stderr(&output)
    );
    // The copy still has them.
    expect(0, &["at", &target_url, actor, "3", "--raw"]);
}

/// Reads JSON lines from `lines` until one with sequence `sequence` came,
/// returning the sequences seen.
fn read_until(
    lines: &mut impl Iterator<Item = std::io::Result<String>>,
    sequence: u64,
) -> Vec<u64> {
    let mut seen = Vec::new();
    for line in lines {
        let line = line.expect("a line from journal tail");
        let value: Value = serde_json::from_str(&line).expect("a JSON line");
        let got = value["sequence"].as_u64().expect("a sequence");
        seen.push(got);
        if got >= sequence {
            break;
        }
    }
    seen
}

#[test]
fn tail_shows_the_last_entries_then_follows_another_process_s_appends() {
    use std::io::BufRead;
    let db = fresh_db("tail");
    let actor = "tailed";
    let entry = |s: u64| {
        JournalEntry::new(
            actor,
            s,
            Entry::message_received(format!("m{s}"), "Test", b"x".to_vec()),
        )
    };
    let first: Vec<_> = (1..=12).map(entry).collect();
    write_journal(&db, &first, &[]);
    let url = sqlite_url(&db);
    let mut child = Command::new(env!("CARGO_BIN_EXE_journal"))
        .args(["tail", url.as_str(), actor, "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn journal tail");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = std::io::BufReader::new(stdout).lines();
    // The last 10 entries first.
    assert_eq!(read_until(&mut lines, 12), (3..=12).collect::<Vec<_>>());
    // Then what this process appends, as it is appended: the tail learns of
    // it from the file (another process's commits).
    runtime().block_on(async {
        let storage = journal_sqlite::SqliteJournalStorage::new(&db)
            .await
            .expect("open");
        for s in 13..=15 {
            storage.append_entry(&entry(s)).await.expect("append");
        }
        storage.close().await;
    });
    assert_eq!(read_until(&mut lines, 15), vec![13, 14, 15]);
    child.kill().expect("stop journal tail");
    let _ = child.wait();

    // From a sequence: that one on.
    let output = {
        let mut child = Command::new(env!("CARGO_BIN_EXE_journal"))
            .args(["tail", url.as_str(), actor, "--from", "14"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn journal tail --from");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = std::io::BufReader::new(stdout).lines();
        let shown: Vec<String> = (0..2)
            .map(|_| lines.next().expect("a line").expect("a line"))
            .collect();
        child.kill().expect("stop");
        let _ = child.wait();
        shown
    };
    // Text lines: the sequence right-aligned in 8 columns, then the time.
    let sequences: Vec<&str> = output.iter().map(|l| l[..8].trim_start()).collect();
    assert_eq!(sequences, ["14", "15"], "{output:?}");
    assert!(
        output[0].contains("message_received     m14 "),
        "{output:?}"
    );
}

#[test]
fn tail_without_an_actor_follows_the_feed_and_resumes_from_an_offset() {
    use std::io::BufRead;
    let db = fresh_db("tail-feed");
    let tagged = |actor: &str, s: u64, tags: &str| {
        let mut message = journal_core::MessageReceived {
            message_id: format!("{actor}-{s}"),
            message_type: "T".into(),
            ..Default::default()
        };
        message
            .metadata
            .insert(journal_core::feed::TAGS_KEY.into(), tags.into());
        JournalEntry::new(actor, s, Entry::MessageReceived(message))
    };
    write_journal(&db, &[tagged("a", 1, "red"), tagged("a", 2, "blue")], &[]);
    write_journal(&db, &[tagged("b", 1, "red")], &[]);
    let url = sqlite_url(&db);
    let follow = |args: &[&str], n: usize| -> Vec<Value> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_journal"))
            .args(args)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn journal tail");
        let stdout = child.stdout.take().expect("stdout");
        let lines: Vec<Value> = std::io::BufReader::new(stdout)
            .lines()
            .take(n)
            .map(|l| serde_json::from_str(&l.expect("a line")).expect("JSON"))
            .collect();
        child.kill().expect("stop");
        let _ = child.wait();
        lines
    };
    let key = |v: &Value| {
        (
            v["actor_id"].as_str().expect("actor").to_owned(),
            v["sequence"].as_u64().expect("sequence"),
        )
    };
    let all = follow(&["tail", url.as_str(), "--json"], 3);
    let keys: Vec<_> = all.iter().map(key).collect();
    assert_eq!(
        keys,
        [
            ("a".to_owned(), 1),
            ("a".to_owned(), 2),
            ("b".to_owned(), 1)
        ]
    );
    let offset = all[0]["offset"].as_str().expect("an offset").to_owned();
    let rest = follow(&["tail", url.as_str(), "--json", "--from", &offset], 2);
    let keys: Vec<_> = rest.iter().map(key).collect();
    assert_eq!(keys, [("a".to_owned(), 2), ("b".to_owned(), 1)]);
    let red = follow(&["tail", url.as_str(), "--tag", "red", "--json"], 2);
    let keys: Vec<_> = red.iter().map(key).collect();
    assert_eq!(keys, [("a".to_owned(), 1), ("b".to_owned(), 1)]);
    // A foreign offset: a one-line error, exit 1.
    let output = journal(&["tail", url.as_str(), "--from", "garbage"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("invalid feed offset"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn show_and_at_print_events_by_type_version_and_tags() {
    let db = fresh_db("events");
    let event = |s: u64, kind: &str, tags: &[&str]| {
        JournalEntry::new(
            "cart-1",
            s,
            Entry::EventRecorded(journal_core::EventRecorded {
                event_type: kind.into(),
                schema_version: 2,
                payload: br#"{"sku":"fig"}"#.to_vec(),
                tags: tags.iter().map(|t| (*t).to_owned()).collect(),
                ..Default::default()
            }),
        )
    };
    let command = journal_core::MessageReceived {
        message_id: "c1".into(),
        message_type: "CartCommand::Add".into(),
        ..Default::default()
    };
    let done = journal_core::MessageProcessed {
        message_id: "c1".into(),
        result: journal_core::ProcessingResult::Success.into(),
        ..Default::default()
    };
    write_journal(
        &db,
        &[
            JournalEntry::new("cart-1", 1, Entry::MessageReceived(command)),
            event(2, "ItemAdded", &["cart", "eu"]),
            event(3, "CheckedOut", &[]),
            JournalEntry::new("cart-1", 4, Entry::MessageProcessed(done)),
        ],
        &[],
    );
    let url = sqlite_url(&db);
    let shown = expect(0, &["show", url.as_str(), "cart-1"]);
    assert!(
        shown.contains("event_recorded       ItemAdded v2 ") && shown.contains(" tags=cart,eu"),
        "{shown}"
    );
    assert!(
        shown.contains("event_recorded       CheckedOut v2 "),
        "{shown}"
    );
    let json = json_lines(&expect(0, &["show", url.as_str(), "cart-1", "--json"]));
    assert_eq!(json[1]["kind"], "event_recorded");
    assert_eq!(json[1]["event_type"], "ItemAdded");
    assert_eq!(json[1]["schema_version"], 2);
    assert_eq!(json[1]["tags"], serde_json::json!(["cart", "eu"]));
    // At entry 2: the first event, not the second.
    let at = expect(0, &["at", url.as_str(), "cart-1", "2"]);
    assert!(at.contains("ItemAdded"), "{at}");
    assert!(!at.contains("CheckedOut"), "{at}");
}

#[test]
fn counts_agree_with_their_nouns_and_bad_ranges_are_refused() {
    let db = fresh_db("nouns");
    write_journal(
        &db,
        &[JournalEntry::new(
            "solo",
            1,
            Entry::message_received("m1", "T", vec![]),
        )],
        &[],
    );
    let url = sqlite_url(&db);
    let listed = expect(0, &["actors", url.as_str()]);
    assert!(listed.trim_end().ends_with("\n1 actor"), "{listed}");
    let verified = expect(0, &["verify", url.as_str()]);
    assert!(
        verified.contains("1 actor, 1 entry, 0 checkpoints"),
        "{verified}"
    );
    let refused = journal(&["show", url.as_str(), "solo", "--from", "10", "--to", "5"]);
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("--from 10 is after --to 5"),
        "{}",
        stderr(&refused)
    );
}

/// `journal verify` on a journal another process is writing to (appends,
/// checkpoints kept two at a time, so older ones are deleted under the
/// reader) reports no false problem, in text and in JSON.
#[test]
fn verify_on_a_live_journal_reports_no_false_problem() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let db = fresh_db("live");
    let stop = Arc::new(AtomicBool::new(false));
    let (started, running) = std::sync::mpsc::channel();
    let writer = {
        let (db, stop) = (db.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            runtime().block_on(async {
                let storage = Arc::new(
                    journal_sqlite::SqliteJournalStorage::new(&db)
                        .await
                        .expect("open"),
                );
                let checkpoints = journal_core::checkpoint::CheckpointManager::new(
                    Arc::clone(&storage) as Arc<dyn JournalStorage>,
                    journal_core::checkpoint::CheckpointPolicy::default(),
                );
                let mut sequence = 0u64;
                let mut started = Some(started);
                while !stop.load(Ordering::Relaxed) {
                    sequence += 1;
                    for actor in ["live-a", "live-b", "live-c"] {
                        storage
                            .append_entry(&JournalEntry::new(
                                actor,
                                sequence,
                                Entry::message_received(format!("m{sequence}"), "T", vec![1; 64]),
                            ))
                            .await
                            .expect("append");
                        if sequence.is_multiple_of(7) {
                            checkpoints
                                .save(actor, sequence, vec![2; 128])
                                .await
                                .expect("checkpoint");
                        }
                    }
                    if sequence == 50 {
                        if let Some(started) = started.take() {
                            started.send(()).expect("the test waits");
                        }
                    }
                }
                drop(checkpoints);
                if let Ok(storage) = Arc::try_unwrap(storage) {
                    storage.close().await;
                }
                sequence
            })
        })
    };
    running.recv().expect("the writer started");
    let url = sqlite_url(&db);
    for _ in 0..4 {
        let output = journal(&["verify", url.as_str()]);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{}{}",
            stdout(&output),
            stderr(&output)
        );
        let output = journal(&["verify", url.as_str(), "--json"]);
        let report: Value = serde_json::from_str(stdout(&output).trim()).expect("one JSON object");
        assert_eq!(report["ok"], true, "{report}");
        assert_eq!(report["actors"], 3, "{report}");
        assert_eq!(output.status.code(), Some(0));
    }
    stop.store(true, Ordering::Relaxed);
    let written = writer.join().expect("the writer");
    assert!(written > 50);
    // Still: damage is found, with the store at rest.
    sql(
        &db,
        "DELETE FROM entry_log WHERE actor_id = 'live-b' AND sequence = 20",
    );
    let output = journal(&["verify", url.as_str(), "--json"]);
    assert_eq!(output.status.code(), Some(1), "{}", stdout(&output));
    let report: Value = serde_json::from_str(stdout(&output).trim()).expect("one JSON object");
    assert_eq!(report["ok"], false);
    assert!(
        report["problems"]
            .to_string()
            .contains("live-b: gap: entry 20 is missing"),
        "{report}"
    );
}

#[test]
fn journal_url_is_read_when_no_url_is_given() {
    let db = fresh_db("env-url");
    write_journal(
        &db,
        &[JournalEntry::new(
            "from-env",
            1,
            Entry::message_received("m1", "T", vec![]),
        )],
        &[],
    );
    let output = Command::new(env!("CARGO_BIN_EXE_journal"))
        .args(["show", "from-env"])
        .env("JOURNAL_URL", sqlite_url(&db))
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("message_received     m1"),
        "{}",
        stdout(&output)
    );
}

#[test]
fn backup_copies_an_sqlite_journal_and_refuses_other_backends() {
    let db = fresh_db("backup-source");
    write_journal(
        &db,
        &[
            JournalEntry::new("kept", 1, Entry::message_received("m1", "T", vec![1])),
            JournalEntry::new("kept", 2, Entry::message_received("m2", "T", vec![2])),
        ],
        &[],
    );
    let out = fresh_db("backup-copy");
    let url = sqlite_url(&db);
    let said = expect(
        0,
        &["backup", url.as_str(), out.to_str().expect("UTF-8 path")],
    );
    assert!(
        said.contains("1 actor, 2 entries") && said.contains("integrity check ok"),
        "{said}"
    );
    let copied = expect(0, &["show", sqlite_url(&out).as_str(), "kept"]);
    assert!(copied.contains("m1") && copied.contains("m2"), "{copied}");
    // Never over an existing file; never for a server.
    let again = journal(&["backup", url.as_str(), out.to_str().expect("UTF-8 path")]);
    assert_eq!(again.status.code(), Some(2), "{}", stderr(&again));
    let memory = journal(&["backup", "memory:", "x.db"]);
    assert_eq!(memory.status.code(), Some(2));
    assert!(
        stderr(&memory).contains("backup copies SQLite files"),
        "{}",
        stderr(&memory)
    );
}

/// An event-sourced counter for `journal at`.
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Tally {
    total: u64,
}

#[derive(serde::Serialize, serde::Deserialize)]
enum Added {
    Added(u64),
}

impl journal_actors::EventSourced for Tally {
    const TYPE: &'static str = "tally";
    type Command = u64;
    type Event = Added;
    type Reply = u64;
    async fn handle(
        &self,
        n: u64,
        _: &mut journal_actors::Context<'_, Self>,
    ) -> Result<journal_actors::Decision<Self>, journal_core::HandlerError> {
        Ok(journal_actors::Decision::persist([Added::Added(n)]).reply_with(|t: &Self| t.total))
    }
    fn apply(&mut self, Added::Added(n): &Added) {
        self.total += n;
    }
}

#[test]
fn at_shows_an_event_sourced_actors_snapshot_state_and_the_events_after_it() {
    let db = fresh_db("es-at");
    runtime().block_on(async {
        let storage = journal_sqlite::SqliteJournalStorage::new(&db)
            .await
            .expect("open");
        let config = journal_core::DurabilityConfig {
            checkpoint_interval: 6,
            ..journal_core::DurabilityConfig::default()
        };
        let system = journal_actors::ActorSystem::builder(storage.clone())
            .register_event_sourced::<Tally>(config, |_| Tally::default())
            .start();
        let tally = system.event_sourced::<Tally>("tally-1");
        for n in 1..=4 {
            tally.send(n).await.expect("added");
        }
        system.shutdown().await;
        drop(system);
        storage.close().await;
    });
    // Three entries a command (received, event, processed): the snapshot
    // at entry 6 holds 1 + 2; entry 8 is the third command's event.
    let url = sqlite_url(&db);
    let at = expect(0, &["at", url.as_str(), "tally-1", "8"]);
    assert!(at.contains("checkpoint at 6"), "{at}");
    assert!(at.contains(r#"state      {"total":3}"#), "{at}");
    assert!(at.contains("then 1 event to apply"), "{at}");
    assert!(at.contains("event_recorded       Added v1"), "{at}");
}

/// An actor id PostgreSQL holds but that is not UTF-8 stops the actor
/// list: `verify` names it as a problem of the store (exit 1), having
/// checked the actors listed before it, instead of giving up (exit 2).
#[test]
fn verify_lists_an_unreadable_actor_id_as_a_problem() {
    let Some(url) = postgres_url() else { return };
    let (base, schema) = url.split_once("?schema=").expect("schema");
    let (base, schema) = (base.to_owned(), schema.to_owned());
    runtime().block_on(async move {
        let storage =
            journal_postgres::PostgresJournalStorage::new(&format!("{base}?schema={schema}"))
                .await
                .expect("open");
        storage
            .append_entry(&JournalEntry::new(
                "fine",
                1,
                Entry::message_received("m1", "T", vec![]),
            ))
            .await
            .expect("append");
        let client = storage.pool().get().await.expect("a connection");
        client
            .execute(
                &format!("INSERT INTO {schema}.actors (actor_id, highest) VALUES ($1, 0)"),
                &[&b"zz-\xff\xfe".as_slice()],
            )
            .await
            .expect("an actor id that is not UTF-8");
    });
    let output = journal(&["verify", url.as_str(), "--json"]);
    assert_eq!(
        output.status.code(),
        Some(1),
        "{}{}",
        stdout(&output),
        stderr(&output)
    );
    let report: Value = serde_json::from_str(stdout(&output).trim()).expect("one JSON object");
    // The backend reads the list a page at a time: the page holding the
    // bad id is lost with it, here the only page.
    assert_eq!(report["ok"], false, "{report}");
    assert!(
        report["problems"]
            .to_string()
            .contains("the actor list cannot be read past its start")
            && report["problems"].to_string().contains("not UTF-8"),
        "{report}"
    );
}
