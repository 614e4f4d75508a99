//! SIGKILL at random moments: every acknowledged append survives, with no
//! gap, and the file passes `PRAGMA integrity_check`.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use journal_core::JournalStorage;
use journal_sqlite::SqliteJournalStorage;

const ROUNDS: u64 = 24;

/// A small deterministic generator, so a failing round can be replayed.
fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn acked(line: &str) -> Option<u64> {
    line.strip_prefix("ack ")?.trim().parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_appends_survive_sigkill() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("journal-sqlite-crash");
    std::fs::create_dir_all(&dir).expect("temporary directory");
    let path = dir.join(format!("{}.db", journal_core::new_entry_id()));
    let actor = "crash-actor";
    let mut seed = 0x9E37_79B9_7F4A_7C15_u64;
    let mut max_acked = 0;
    for round in 0..ROUNDS {
        // Kill after 0 to 40 acknowledgements: 0 kills it while it opens
        // (and, in round 0, while it creates the schema).
        let wait_for = xorshift(&mut seed) % 41;
        let mut child = Command::new(env!("CARGO_BIN_EXE_journal-sqlite-crash-child"))
            .arg(&path)
            .arg(actor)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the child");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut acks_read = 0;
        while acks_read < wait_for {
            match lines.next() {
                Some(Ok(line)) => {
                    max_acked = max_acked.max(acked(&line).expect("an ack line"));
                    acks_read += 1;
                }
                _ => panic!("round {round}: the child ended before it was killed"),
            }
        }
        child.kill().expect("SIGKILL");
        // Acks already in the pipe were acknowledged before the kill too.
        for line in lines.map_while(Result::ok) {
            if let Some(n) = acked(&line) {
                max_acked = max_acked.max(n);
            }
        }
        child.wait().expect("reap the child");

        let storage = SqliteJournalStorage::new(&path)
            .await
            .expect("reopen after the kill");
        assert_eq!(
            storage.integrity_check().await.expect("integrity check"),
            Vec::<String>::new()
        );
        let highest = storage.highest_sequence(actor).await.expect("highest");
        assert!(
            highest >= max_acked,
            "round {round}: acknowledged {max_acked}, found only {highest}"
        );
        let entries = storage.replay_from(actor, 1).await.expect("replay");
        let sequences: Vec<u64> = entries.iter().map(|e| e.sequence).collect();
        assert_eq!(
            sequences,
            (1..=highest).collect::<Vec<_>>(),
            "round {round}: gap or duplicate"
        );
        assert!(entries
            .iter()
            .all(|e| e.actor_id == actor && e.kind() == "message_received"));
    }
    assert!(max_acked > 0, "the child never acknowledged anything");
}
