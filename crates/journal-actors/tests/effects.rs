//! Typed side effects retried before their outcome is journaled.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use journal_actors::{ActorSystem, Context, TypedActor};
use journal_core::{
    journal_entry::Entry, DurabilityConfig, EffectRetry, HandlerError, JournalStorage,
};
use journal_memory::MemoryJournalStorage;
use serde::{Deserialize, Serialize};

/// Charges through a gateway that times out `flaky` times first.
#[derive(Serialize, Deserialize)]
struct Payer {
    #[serde(skip)]
    gateway: Arc<AtomicU32>,
    #[serde(skip)]
    flaky: u32,
    receipts: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct Charge {
    cents: u64,
}

impl TypedActor for Payer {
    const TYPE: &'static str = "payer";
    type Message = Charge;
    type Reply = String;

    async fn handle(
        &mut self,
        charge: Charge,
        ctx: &mut Context<'_, Self>,
    ) -> Result<String, HandlerError> {
        let policy = EffectRetry {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(50),
            ..EffectRetry::default()
        };
        let gateway = Arc::clone(&self.gateway);
        let flaky = self.flaky;
        let receipt: String = ctx
            .side_effect_retried("gateway.charge", &charge.cents, &policy, || {
                let call = gateway.fetch_add(1, Ordering::SeqCst);
                async move {
                    if call < flaky {
                        Err(format!("timeout on call {call}"))
                    } else {
                        Ok(format!("receipt for {} cents", charge.cents))
                    }
                }
            })
            .await??;
        self.receipts.push(receipt.clone());
        Ok(receipt)
    }
}

#[tokio::test(start_paused = true)]
async fn a_charge_that_times_out_twice_is_retried_and_journaled_once() {
    let storage = MemoryJournalStorage::new();
    let gateway = Arc::new(AtomicU32::new(0));
    let calls = Arc::clone(&gateway);
    let system = ActorSystem::builder(storage.clone())
        .register::<Payer>(DurabilityConfig::default(), move |_| Payer {
            gateway: Arc::clone(&calls),
            flaky: 2,
            receipts: Vec::new(),
        })
        .start();
    let receipt = system
        .actor::<Payer>("payer-1")
        .send_with_id("charge-1", Charge { cents: 500 })
        .await
        .expect("the charge goes through on its third attempt");
    assert_eq!(receipt, "receipt for 500 cents");
    assert_eq!(gateway.load(Ordering::SeqCst), 3);
    system.shutdown().await;
    let effects: Vec<_> = storage
        .replay_from("payer-1", 1)
        .await
        .expect("replay")
        .into_iter()
        .filter_map(|e| match e.entry {
            Some(Entry::SideEffectExecuted(s)) => Some(s),
            _ => None,
        })
        .collect();
    assert_eq!(effects.len(), 1, "the two timeouts were never journaled");
    assert!(effects[0].error.is_empty());
}
