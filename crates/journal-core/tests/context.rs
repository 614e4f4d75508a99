//! ExecutionContext: live journaling, replay, divergence, and going live
//! after an interrupted message.

use std::collections::VecDeque;
use std::sync::Arc;

use journal_core::journal_entry::Entry;
use journal_core::{
    ExecutionContext, JournalEntry, JournalError, JournalStorage, SideEffectExecuted,
};
use journal_memory::MemoryJournalStorage;

fn recorded(name: &str, response: &[u8]) -> SideEffectExecuted {
    SideEffectExecuted {
        effect_type: name.into(),
        response: response.to_vec(),
        ..SideEffectExecuted::default()
    }
}

fn storage() -> Arc<dyn JournalStorage> {
    Arc::new(MemoryJournalStorage::new())
}

fn effects_of(entries: Vec<JournalEntry>) -> VecDeque<SideEffectExecuted> {
    entries
        .into_iter()
        .filter_map(|e| match e.entry {
            Some(Entry::SideEffectExecuted(s)) => Some(s),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn replay_returns_recorded_results_without_running() {
    let mut ctx = ExecutionContext::replay(
        storage(),
        "a",
        "m",
        [recorded("pay", b"ok")].into(),
        true,
        5,
        true,
    );
    assert!(ctx.is_replaying());
    let got = ctx
        .side_effect("pay", || async { Err::<Vec<u8>, _>("must not run") })
        .await;
    assert_eq!(got.expect("journal"), Ok(b"ok".to_vec()));
    assert!(ctx.side_effects()[0].replayed);
    assert_eq!(ctx.cached_result("m/0"), Some(&Ok(b"ok".to_vec())));
    ctx.finish_replay().expect("all recorded effects used");
}

#[tokio::test]
async fn divergence_names_both_sides() {
    let mut ctx = ExecutionContext::replay(
        storage(),
        "a",
        "m",
        [recorded("pay", b"")].into(),
        true,
        5,
        true,
    );
    match ctx
        .side_effect("refund", || async { Ok::<_, String>(vec![]) })
        .await
    {
        Err(JournalError::ReplayDivergence {
            position: 0,
            recorded,
            requested,
            ..
        }) => {
            assert_eq!((recorded.as_str(), requested.as_str()), ("pay", "refund"));
        }
        other => panic!("{other:?}"),
    }
    let mut extra = ExecutionContext::replay(storage(), "a", "m", VecDeque::new(), true, 5, true);
    assert!(matches!(
        extra
            .side_effect("pay", || async { Ok::<_, String>(vec![]) })
            .await,
        Err(JournalError::ReplayDivergence { .. })
    ));
    let fewer = ExecutionContext::replay(
        storage(),
        "a",
        "m",
        [recorded("pay", b"")].into(),
        true,
        5,
        true,
    );
    assert!(matches!(
        fewer.finish_replay(),
        Err(JournalError::ReplayDivergence { .. })
    ));
}

#[tokio::test]
async fn interrupted_message_goes_live_and_journals() {
    let store = storage();
    for seq in 1..=4 {
        store
            .append_entry(&JournalEntry::new(
                "a",
                seq,
                Entry::message_received("m", "T", vec![]),
            ))
            .await
            .expect("append");
    }
    let mut ctx = ExecutionContext::replay(
        Arc::clone(&store),
        "a",
        "m",
        [recorded("pay", b"1")].into(),
        false,
        5,
        true,
    );
    let first = ctx
        .side_effect("pay", || async { Ok::<_, String>(b"x".to_vec()) })
        .await;
    assert_eq!(first.expect("journal"), Ok(b"1".to_vec()));
    assert!(ctx.is_replaying());
    let second = ctx
        .side_effect("ship", || async { Ok::<_, String>(b"2".to_vec()) })
        .await;
    assert_eq!(second.expect("journal"), Ok(b"2".to_vec()));
    assert!(!ctx.is_replaying());
    assert_eq!(ctx.next_sequence(), 6);
    let stored = store.replay_from("a", 5).await.expect("replay");
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].kind(), "side_effect_executed");
}

#[tokio::test]
async fn time_and_randomness_replay_identically() {
    let store = storage();
    let mut live = ExecutionContext::live(Arc::clone(&store), "t", "m", 1, true);
    let now = live.now().await.expect("now");
    let random = live.random_u64().await.expect("random");
    let journaled = effects_of(store.replay_from("t", 1).await.expect("replay"));
    assert_eq!(journaled.len(), 2);
    let mut replay = ExecutionContext::replay(store, "t", "m", journaled, true, 3, true);
    assert_eq!(replay.now().await.expect("now"), now);
    assert_eq!(replay.random_u64().await.expect("random"), random);
}

#[tokio::test]
async fn effect_errors_are_journaled_and_replayed() {
    let store = storage();
    let mut live = ExecutionContext::live(Arc::clone(&store), "e", "m", 1, true);
    let failed = live
        .side_effect("pay", || async { Err::<Vec<u8>, _>("card declined") })
        .await;
    assert_eq!(failed.expect("journal"), Err("card declined".to_owned()));
    let journaled = effects_of(store.replay_from("e", 1).await.expect("replay"));
    let mut replay = ExecutionContext::replay(store, "e", "m", journaled, true, 2, true);
    let again = replay
        .side_effect("pay", || async { Ok::<_, String>(vec![]) })
        .await;
    assert_eq!(again.expect("journal"), Err("card declined".to_owned()));
}

#[tokio::test]
async fn ephemeral_context_runs_effects_and_journals_nothing() {
    let mut ctx = ExecutionContext::ephemeral("a", "m");
    let got = ctx
        .side_effect("pay", || async { Ok::<_, String>(b"1".to_vec()) })
        .await;
    assert_eq!(got.expect("journal"), Ok(b"1".to_vec()));
    assert_eq!(ctx.next_sequence(), 0);
    assert!(!ctx.side_effects()[0].replayed);
}

#[tokio::test]
async fn a_corrupt_journaled_time_is_an_error_not_a_panic() {
    let huge = [
        u64::MAX.to_le_bytes().as_slice(),
        0u32.to_le_bytes().as_slice(),
    ]
    .concat();
    let mut replay = ExecutionContext::replay(
        storage(),
        "t",
        "m",
        [recorded("journal.now", &huge)].into(),
        true,
        2,
        true,
    );
    assert!(matches!(
        replay.now().await,
        Err(JournalError::CorruptEntry { .. })
    ));
    let mut short = ExecutionContext::replay(
        storage(),
        "t",
        "m",
        [recorded("journal.now", b"x")].into(),
        true,
        2,
        true,
    );
    assert!(matches!(
        short.now().await,
        Err(JournalError::CorruptEntry { .. })
    ));
}

#[test]
fn the_request_digest_format_is_frozen() {
    // Journals store this digest; a build that computed another one would
    // report every recorded effect as diverged.
    let digest = journal_core::context::request_digest(b"pay bob 10");
    assert_eq!(digest.len(), 25);
    assert_eq!(digest[0], 1, "format version");
    assert_eq!(&digest[1..9], &10u64.to_le_bytes());
    assert_eq!(
        digest,
        journal_core::context::request_digest(b"pay bob 10"),
        "deterministic"
    );
    assert_ne!(digest, journal_core::context::request_digest(b"pay bob 11"));
    assert_ne!(
        journal_core::context::request_digest(b""),
        journal_core::context::request_digest(b"\0")
    );
}

#[tokio::test]
async fn a_changed_request_diverges_and_an_unrecorded_one_is_accepted() {
    let store = storage();
    let mut live = ExecutionContext::live(Arc::clone(&store), "r", "m", 1, true);
    live.side_effect_with("pay", b"alice", || async {
        Ok::<_, String>(b"ok".to_vec())
    })
    .await
    .expect("journal")
    .expect("effect");
    let journaled = effects_of(store.replay_from("r", 1).await.expect("replay"));
    let mut changed = ExecutionContext::replay(
        Arc::clone(&store),
        "r",
        "m",
        journaled.clone(),
        true,
        2,
        true,
    );
    let err = changed
        .side_effect_with("pay", b"bob", || async { Ok::<_, String>(b"no".to_vec()) })
        .await
        .expect_err("another request");
    assert!(
        matches!(err, JournalError::ReplayDivergence { .. }),
        "{err}"
    );
    assert!(changed.failure().is_some(), "latched");
    // Journals written before requests were recorded hold none: accepted.
    let mut old = ExecutionContext::replay(
        store,
        "r",
        "m",
        [recorded("pay", b"ok")].into(),
        true,
        2,
        true,
    );
    assert_eq!(
        old.side_effect_with("pay", b"bob", || async { Ok::<_, String>(b"no".to_vec()) })
            .await
            .expect("journal"),
        Ok(b"ok".to_vec())
    );
}

#[tokio::test]
async fn a_latched_error_fails_every_later_call() {
    let mut ctx = ExecutionContext::replay(storage(), "l", "m", VecDeque::new(), true, 2, true);
    assert!(ctx.now().await.is_err(), "nothing recorded: divergence");
    let ran = std::sync::atomic::AtomicBool::new(false);
    let again = ctx
        .side_effect("x", || async {
            ran.store(true, std::sync::atomic::Ordering::SeqCst);
            Ok::<_, String>(Vec::new())
        })
        .await;
    assert!(again.is_err());
    assert!(
        !ran.load(std::sync::atomic::Ordering::SeqCst),
        "nothing runs after a failure"
    );
}

#[tokio::test]
async fn time_travel_never_runs_an_effect() {
    let mut ctx = ExecutionContext::time_travel(storage(), "t", "m", VecDeque::new());
    let ran = std::sync::atomic::AtomicBool::new(false);
    let result = ctx
        .side_effect("x", || async {
            ran.store(true, std::sync::atomic::Ordering::SeqCst);
            Ok::<_, String>(Vec::new())
        })
        .await;
    assert!(matches!(result, Err(JournalError::RecoveryFailed { .. })));
    assert!(!ran.load(std::sync::atomic::Ordering::SeqCst));
}

mod retries {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    use super::*;
    use journal_core::EffectRetry;

    fn policy(attempts: u32) -> EffectRetry {
        EffectRetry {
            max_attempts: attempts,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(40),
            ..EffectRetry::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_a_retry_cures_is_never_journaled_and_replay_returns_the_success() {
        let store = storage();
        let mut ctx = ExecutionContext::live(store.clone(), "r", "m", 1, true);
        let calls = AtomicU32::new(0);
        let got = ctx
            .side_effect_retried("charge", b"card-1/5", &policy(3), || {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n < 2 {
                        Err(format!("timeout #{n}"))
                    } else {
                        Ok(b"receipt".to_vec())
                    }
                }
            })
            .await
            .expect("journal");
        assert_eq!(got, Ok(b"receipt".to_vec()));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        let journaled = effects_of(store.replay_from("r", 1).await.expect("replay"));
        assert_eq!(
            journaled.len(),
            1,
            "one outcome journaled, not one per attempt"
        );
        assert!(journaled[0].error.is_empty());
        assert_eq!(journaled[0].response, b"receipt");

        // Replay returns the success without running anything.
        let mut replay = ExecutionContext::replay(store, "r", "m", journaled, true, 2, true);
        let again = replay
            .side_effect_retried("charge", b"card-1/5", &policy(3), || async {
                Err::<Vec<u8>, _>("must not run")
            })
            .await
            .expect("journal");
        assert_eq!(again, Ok(b"receipt".to_vec()));
    }

    #[tokio::test(start_paused = true)]
    async fn the_last_error_is_journaled_once_the_attempts_run_out() {
        let store = storage();
        let mut ctx = ExecutionContext::live(store.clone(), "r", "m", 1, true);
        let calls = AtomicU32::new(0);
        let got = ctx
            .side_effect_retried("charge", b"", &policy(4), || {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Err::<Vec<u8>, _>("gateway down") }
            })
            .await
            .expect("journal");
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        let error = got.expect_err("every attempt failed");
        assert!(
            error.contains("gateway down") && error.contains("4 attempts"),
            "{error}"
        );
        let journaled = effects_of(store.replay_from("r", 1).await.expect("replay"));
        assert_eq!(journaled.len(), 1);
        assert_eq!(journaled[0].error, error);
    }

    #[tokio::test(start_paused = true)]
    async fn errors_the_policy_does_not_retry_and_the_time_budget_stop_early() {
        let store = storage();
        let mut ctx = ExecutionContext::live(store.clone(), "r", "m", 1, true);
        let permanent = EffectRetry {
            retry_if: |e| !e.starts_with("declined"),
            ..policy(5)
        };
        let calls = AtomicU32::new(0);
        let got = ctx
            .side_effect_retried("charge", b"", &permanent, || {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Err::<Vec<u8>, _>("declined: insufficient funds") }
            })
            .await
            .expect("journal");
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "a permanent error is not retried"
        );
        assert_eq!(got, Err("declined: insufficient funds".to_owned()));

        let budget = EffectRetry {
            max_duration: Some(Duration::from_millis(25)),
            ..policy(100)
        };
        let calls = AtomicU32::new(0);
        let got = ctx
            .side_effect_retried("ship", b"", &budget, || {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Err::<Vec<u8>, _>("busy") }
            })
            .await
            .expect("journal");
        // After the first attempt a 10 ms pause fits the 25 ms budget;
        // after the second, 10 + 20 ms would not: no third attempt.
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert!(got.is_err());
    }
}
