//! `MemoryJournalStorage` never waits on anything, so its calls would
//! never give the runtime back on their own: it spends tokio's cooperative
//! budget in every call instead, and a busy loop of calls lets timers and
//! other tasks run.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use journal_conformance::fixture::{entry, fresh_actor};
use journal_core::JournalStorage;
use journal_memory::MemoryJournalStorage;

/// On a current-thread runtime, a task loops over appends and reads while
/// another waits for a 10 ms timer; the loop stops as soon as the timer's
/// task has run. Without yielding, the timer's task never gets the thread
/// and the loop runs its 200,000 rounds (600,000 calls, far longer than
/// 10 ms on any machine) to the end: the test asserts the order of events,
/// not how long anything took.
#[test]
fn a_busy_loop_of_calls_lets_timers_run() {
    const ROUNDS: u64 = 200_000;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread runtime");
    runtime.block_on(async {
        let fired = Arc::new(AtomicBool::new(false));
        let timer = {
            let fired = Arc::clone(&fired);
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                fired.store(true, Ordering::SeqCst);
            })
        };
        let busy = tokio::spawn(async move {
            let storage = MemoryJournalStorage::new();
            let actor = fresh_actor("coop");
            for seq in 1..=ROUNDS {
                if fired.load(Ordering::SeqCst) {
                    return Some(seq);
                }
                storage
                    .append_entry(&entry(&actor, seq))
                    .await
                    .expect("append");
                let highest = storage.highest_sequence(&actor).await.expect("highest");
                assert_eq!(highest, seq);
                let read = storage
                    .replay_range(&actor, seq, seq, 1)
                    .await
                    .expect("range");
                assert_eq!(read.len(), 1);
            }
            None
        });
        let stopped_at = busy.await.expect("the busy task");
        timer.await.expect("the timer task");
        assert!(
            stopped_at.is_some(),
            "the timer's task did not run during {ROUNDS} rounds of calls: \
             the storage never yields to the runtime"
        );
    });
}
