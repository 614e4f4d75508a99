//! An exactly-once projection into the journal's own database, killed
//! (SIGKILL) with a batch's rows written and its offset not: the
//! transaction never commits, and the run after applies every entry
//! exactly once (contract rule 29).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use journal_core::JournalStorage;

fn child(schema: &str, pause: usize) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_journal-postgres-projection-child"));
    command.args([common::url().as_str(), schema, &pause.to_string()]);
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_between_its_rows_and_its_offset_applies_each_entry_once() {
    let Some(storage) = common::storage(common::test_options()).await else {
        return;
    };
    let schema = storage.schema().to_owned();
    common::create_projected_table(&storage).await;
    let client = storage.pool().get().await.expect("client");
    for a in 0..3 {
        let actor = format!("projected-{a}");
        let batch: Vec<_> = (1..=40)
            .map(|s| journal_conformance::fixture::entry(&actor, s))
            .collect();
        storage.append_batch(&batch).await.expect("append");
    }
    for pause in [2, 1, 3] {
        let mut running = child(&schema, pause)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the child");
        let lines = BufReader::new(running.stdout.take().expect("stdout")).lines();
        let paused = lines
            .map(|l| l.expect("a line"))
            .any(|line| line == "between");
        assert!(paused, "the child ended before batch {pause}");
        running.kill().expect("kill");
        let _ = running.wait();
    }
    let status = child(&schema, 0)
        .stdin(Stdio::null())
        .status()
        .expect("run the child to the end");
    assert!(status.success(), "{status}");
    let rows = client
        .query(
            &format!(
                "SELECT actor_id, sequence, count(*) FROM {schema}.projected
                 GROUP BY actor_id, sequence ORDER BY actor_id, sequence"
            ),
            &[],
        )
        .await
        .expect("rows");
    let counts: Vec<(String, i64, i64)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let want: Vec<(String, i64, i64)> = (0..3)
        .flat_map(|a| (1..=40).map(move |s| (format!("projected-{a}"), s, 1)))
        .collect();
    assert_eq!(
        counts, want,
        "each entry applied exactly once, none missing"
    );
}
