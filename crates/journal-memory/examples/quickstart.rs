//! Appends an account's history, replays it, checkpoints, truncates, and
//! shows the optimistic-concurrency check at work, on the memory backend.
//!
//! `cargo run -p journal-memory --example quickstart`

use journal_core::journal_entry::Entry;
use journal_core::{Checkpoint, JournalEntry, JournalError, JournalStorage};
use journal_memory::MemoryJournalStorage;

#[tokio::main]
async fn main() -> Result<(), JournalError> {
    let storage = MemoryJournalStorage::new();
    let actor = "account-42";

    // Deposits arrive as messages; each is journaled at the next sequence.
    let amounts = [100i64, 250, -75, 40, -15];
    for (i, amount) in amounts.iter().enumerate() {
        let seq = i as u64 + 1;
        let entry = JournalEntry::new(
            actor,
            seq,
            Entry::message_received(
                format!("deposit-{seq}"),
                "Deposit",
                amount.to_le_bytes().to_vec(),
            ),
        );
        storage.append_entry(&entry).await?;
    }
    println!("appended {} entries for {actor}", amounts.len());

    // A stale writer that still thinks the journal ends at 4 is refused.
    let stale = JournalEntry::new(actor, 5, Entry::message_received("late", "Deposit", vec![]));
    match storage.append_entry(&stale).await {
        Err(JournalError::SequenceConflict {
            expected, actual, ..
        }) => {
            println!("stale append refused: expected sequence {expected}, got {actual}");
        }
        other => panic!("a stale append must conflict, got {other:?}"),
    }

    // Rebuild the balance by replaying the journal.
    let balance = replay_balance(&storage, actor, 0, 1).await?;
    println!("balance from a full replay: {balance}");

    // Checkpoint after entry 3, truncate behind it, and recover from both.
    let after_three: i64 = amounts[..3].iter().sum();
    storage
        .save_checkpoint(&Checkpoint::new(
            actor,
            3,
            after_three.to_le_bytes().to_vec(),
        ))
        .await?;
    storage.truncate_to(actor, 3).await?;
    let checkpoint = storage
        .get_latest_checkpoint(actor)
        .await?
        .expect("just saved");
    let start = i64::from_le_bytes(
        checkpoint
            .state_data
            .as_slice()
            .try_into()
            .expect("8 bytes"),
    );
    let recovered = replay_balance(&storage, actor, start, checkpoint.sequence + 1).await?;
    println!(
        "balance from checkpoint at {} plus replay: {recovered} (highest sequence still {})",
        checkpoint.sequence,
        storage.highest_sequence(actor).await?
    );
    assert_eq!(recovered, balance);
    Ok(())
}

async fn replay_balance(
    storage: &dyn JournalStorage,
    actor: &str,
    start: i64,
    from: u64,
) -> Result<i64, JournalError> {
    let mut balance = start;
    for entry in storage.replay_from(actor, from).await? {
        if let Some(Entry::MessageReceived(m)) = entry.entry {
            let bytes: [u8; 8] = m.payload.as_slice().try_into().unwrap_or_default();
            balance += i64::from_le_bytes(bytes);
        }
    }
    Ok(balance)
}
