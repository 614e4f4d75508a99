//! A checkpoint of a large dedup window: after an activation the whole
//! window is compressed again, off the runtime when it is large, and the
//! checkpoint still gives every remembered reply back.

use async_trait::async_trait;
use journal_conformance::facet::durable;
use journal_conformance::fixture::fresh_actor;
use journal_core::{
    Delivery, DurabilityConfig, DurableActor, ExecutionContext, HandlerResult, JournalStorage,
    MessageOutcome, MessageReceived,
};
use journal_memory::MemoryJournalStorage;

/// Replies with its message's payload.
#[derive(Debug, Default)]
struct Echo;

#[async_trait]
impl DurableActor for Echo {
    async fn handle(
        &mut self,
        message: &MessageReceived,
        _: &mut ExecutionContext,
    ) -> HandlerResult {
        Ok(message.payload.clone())
    }
    fn snapshot(&self) -> Result<Vec<u8>, String> {
        Ok(Vec::new())
    }
    fn restore(&mut self, _: &[u8]) -> Result<(), String> {
        Ok(())
    }
}

fn message(n: usize) -> MessageReceived {
    MessageReceived {
        message_id: format!("m{n}"),
        message_type: "echo".into(),
        // 1 KiB, different per message so that it compresses as data does.
        payload: (0..1_024).map(|i| ((i * 31 + n * 7) % 251) as u8).collect(),
        ..MessageReceived::default()
    }
}

/// 400 replies of 1 KiB: a window of about 420 KB, over the 256 KiB
/// compressed off the runtime. Checkpointed only when asked.
#[tokio::test(flavor = "current_thread")]
async fn a_large_window_is_checkpointed_and_recovered_whole() {
    let storage = MemoryJournalStorage::new();
    let id = fresh_actor("big-window");
    let config = DurabilityConfig {
        checkpoint_interval: 0,
        dedup_window: 1_000,
        ..DurabilityConfig::default()
    };
    let mut actor = durable(storage.clone(), &id, Echo, config.clone());
    actor.activate().await.expect("activate");
    for n in 0..400 {
        let delivery = actor.send(message(n)).await.expect("send");
        assert_eq!(delivery, Delivery::Replied(message(n).payload));
    }
    actor.checkpoint_now().await.expect("checkpoint");
    drop(actor);

    // Activated from that checkpoint: nothing of the window is sealed, so
    // the next checkpoint compresses all of it (off the runtime).
    let mut again = durable(storage.clone(), &id, Echo, config.clone());
    again.activate().await.expect("recover");
    again.send(message(400)).await.expect("send");
    again.checkpoint_now().await.expect("checkpoint");
    let first = storage
        .get_latest_checkpoint(&id)
        .await
        .expect("latest")
        .expect("a checkpoint");
    // Two entries a message: received, processed.
    assert_eq!(
        first.sequence,
        2 * 401,
        "the second checkpoint is the latest"
    );
    drop(again);

    // Truncating the journal leaves the checkpoint the only memory of the
    // replies: each one comes back from it.
    storage
        .truncate_to(&id, first.sequence)
        .await
        .expect("truncate");
    let mut last = durable(storage, &id, Echo, config);
    last.activate().await.expect("recover");
    for n in [0, 1, 199, 399, 400] {
        assert_eq!(
            last.send(message(n)).await.expect("redeliver"),
            Delivery::Duplicate(Some(MessageOutcome::Replied(message(n).payload))),
            "m{n}"
        );
    }
}
