//! Durable timers (contract rules 23, 24): the loop that fires due timers
//! from the storage's [`TimerStore`] index, and the internal timer that
//! checkpoints an idle actor after its `checkpoint_timeout`.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use journal_core::{
    ClaimedTimer, JournalResult, JournalStorage, MessageReceived, TimerRecord, TimerScheduled,
    TimerStore,
};
use prost::Message;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;

use crate::error::SendError;
use crate::system::{Inner, SystemEvent, TIMER_ID_KEY};

/// The `message_type` of the internal timer that checkpoints an actor
/// after its `checkpoint_timeout` (it delivers no message).
pub const CHECKPOINT_TIMER: &str = "journal.checkpoint";

/// The id of the message a timer delivers: `timer:` and the timer's id.
/// The same for every system that fires it, so the target's journal
/// recognises a second delivery (exactly-once, contract rule 17).
pub fn timer_message_id(timer_id: &str) -> String {
    format!("timer:{timer_id}")
}

/// The id of an actor's checkpoint timer: one per actor, replaced when
/// scheduled again.
pub(crate) fn checkpoint_timer_id(actor_type: &str, actor_id: &str) -> String {
    format!(
        "c{}",
        journal_core::timer_id(actor_type, actor_id, u64::MAX)
    )
}

/// The index record of an actor's checkpoint timer, due at `due_at_ms`.
pub(crate) fn checkpoint_timer(actor_type: &str, actor_id: &str, due_at_ms: u64) -> TimerRecord {
    let timer_id = checkpoint_timer_id(actor_type, actor_id);
    let payload = TimerScheduled {
        timer_id: timer_id.clone(),
        target_actor_id: actor_id.to_owned(),
        target_actor_type: actor_type.to_owned(),
        message_type: CHECKPOINT_TIMER.to_owned(),
        ..TimerScheduled::default()
    }
    .encode_to_vec();
    TimerRecord {
        timer_id,
        owner_actor: actor_id.to_owned(),
        target_actor: actor_id.to_owned(),
        target_type: actor_type.to_owned(),
        due_at_ms,
        payload,
    }
}

/// The storage's timer index, waking the system's timer loop whenever a
/// timer is scheduled (it may be due before the loop's next look), and
/// remembering the timers cancelled while claimed.
///
/// The index leaves a claimed timer alone when it is cancelled, and a
/// delivery this system claimed may already wait (for a free delivery, or
/// in the target's mailbox behind the message that cancels it), its lease
/// even run out. A cancel of a timer this system is delivering, or of one
/// the index says is still there (claimed by a system that may have died:
/// this one may claim it when the lease ends), is remembered, and such a
/// delivery, when it comes up, is dropped and completed instead of
/// handled: a timer cancelled before it fires never fires (contract rule
/// 23). Only a delivery another live system holds is beyond reach. A
/// remembered cancel goes when the timer is completed or scheduled again,
/// or three leases after it, once no delivery of this system holds it.
#[derive(Debug, Clone)]
pub(crate) struct NotifyingTimerStore<S> {
    inner: S,
    wake: Arc<Notify>,
    claims: Arc<Mutex<Claims>>,
}

/// The deliveries a system has under way, and the cancels it remembers.
#[derive(Debug, Default)]
struct Claims {
    /// Timer ids claimed by this system, with how many of its deliveries
    /// hold each (two, after it claimed again a timer whose lease ran out
    /// while its first delivery waited).
    in_flight: HashMap<String, usize>,
    /// Cancelled timers, with when the cancel came (milliseconds).
    cancelled: HashMap<String, u64>,
}

impl<S> NotifyingTimerStore<S> {
    pub(crate) fn new(inner: S, wake: Arc<Notify>) -> Self {
        NotifyingTimerStore {
            inner,
            wake,
            claims: Arc::default(),
        }
    }

    fn claims(&self) -> std::sync::MutexGuard<'_, Claims> {
        self.claims
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether the timer was cancelled while claimed (its delivery is then
    /// dropped).
    pub(crate) fn was_cancelled(&self, timer_id: &str) -> bool {
        self.claims().cancelled.contains_key(timer_id)
    }

    /// A delivery of this system ended (delivered, dropped or failed).
    pub(crate) fn released(&self, timer_id: &str) {
        let mut claims = self.claims();
        if let Some(held) = claims.in_flight.get_mut(timer_id) {
            *held -= 1;
            if *held == 0 {
                claims.in_flight.remove(timer_id);
            }
        }
    }
}

#[async_trait]
impl<S: TimerStore> TimerStore for NotifyingTimerStore<S> {
    async fn schedule_timer(&self, timer: &TimerRecord) -> JournalResult<()> {
        self.inner.schedule_timer(timer).await?;
        self.claims().cancelled.remove(&timer.timer_id);
        self.wake.notify_one();
        Ok(())
    }
    async fn cancel_timer(&self, timer_id: &str, now_ms: u64) -> JournalResult<bool> {
        let removed = self.inner.cancel_timer(timer_id, now_ms).await?;
        let ours = self.claims().in_flight.contains_key(timer_id);
        // Not removed: absent, or claimed (its delivery may be on its way).
        if ours || (!removed && self.inner.get_timer(timer_id).await?.is_some()) {
            self.claims().cancelled.insert(timer_id.to_owned(), now_ms);
        }
        Ok(removed)
    }
    async fn claim_due_timers(
        &self,
        now_ms: u64,
        lease: Duration,
        claim: &str,
        max: usize,
    ) -> JournalResult<Vec<ClaimedTimer>> {
        let kept = u64::try_from(lease.as_millis().saturating_mul(3)).unwrap_or(u64::MAX);
        {
            let claims = &mut *self.claims();
            let in_flight = &claims.in_flight;
            claims
                .cancelled
                .retain(|id, at| in_flight.contains_key(id) || now_ms.saturating_sub(*at) < kept);
        }
        let claimed = self
            .inner
            .claim_due_timers(now_ms, lease, claim, max)
            .await?;
        let mut claims = self.claims();
        for timer in &claimed {
            *claims
                .in_flight
                .entry(timer.timer.timer_id.clone())
                .or_default() += 1;
        }
        Ok(claimed)
    }
    async fn complete_timer(&self, timer_id: &str, claim: &str) -> JournalResult<bool> {
        let completed = self.inner.complete_timer(timer_id, claim).await?;
        if completed {
            self.claims().cancelled.remove(timer_id);
        }
        Ok(completed)
    }
    async fn next_due(&self, now_ms: u64) -> JournalResult<Option<u64>> {
        self.inner.next_due(now_ms).await
    }
    async fn get_timer(&self, timer_id: &str) -> JournalResult<Option<TimerRecord>> {
        self.inner.get_timer(timer_id).await
    }
}

/// Waits `wait`, or until a timer is scheduled or the system stops.
async fn pause<S>(inner: &Inner<S>, wait: Duration) {
    tokio::select! {
        () = inner.wake.notified() => {}
        () = tokio::time::sleep(wait) => {}
    }
}

/// The system's timer loop: claims due timers under a lease with the
/// system's claim token and delivers each on a task of its own (a
/// checkpoint timer checkpoints its actor), which completes it; then
/// sleeps until the next due time, a timer being scheduled, or the poll
/// interval, whichever comes first. A timer whose delivery fails stays
/// claimed until its lease ends, and is fired again then, by this system
/// or another.
pub(crate) async fn fire_loop<S>(inner: Arc<Inner<S>>)
where
    S: JournalStorage + TimerStore + Clone + 'static,
{
    let config = inner.config.clone();
    let poll = config.timer_poll_interval.max(Duration::from_millis(1));
    let first_backoff = Duration::from_millis(50).min(poll);
    let batch = config.timer_batch.max(1);
    let deliveries = Arc::new(Semaphore::new(config.timer_concurrency.max(1)));
    let mut backoff = first_backoff;
    // Each delivery runs on a task of its own, `timer_concurrency` at once:
    // one slow handler holds up its own timer only, never the loop, which
    // goes on claiming while at most `timer_batch` of its timers are
    // claimed and not yet delivered (as many as one claim takes).
    let mut firing: JoinSet<()> = JoinSet::new();
    loop {
        while firing.try_join_next().is_some() {}
        if inner.stopping.load(Ordering::Acquire) {
            // Deliveries under way end (shutdown waits for them).
            while firing.join_next().await.is_some() {}
            return;
        }
        // Claims are taken in large enough rounds (one round trip to the
        // index each): while more than half a batch waits for delivery,
        // the loop waits for deliveries to end.
        let free = batch.saturating_sub(firing.len());
        if free < batch.div_ceil(2) {
            tokio::select! {
                _ = firing.join_next() => {}
                () = inner.wake.notified() => {}
            }
            continue;
        }
        let now = inner.clock.now_ms();
        let claimed = match inner
            .timer_store
            .claim_due_timers(now, config.timer_lease, &inner.claim, free)
            .await
        {
            Ok(claimed) => claimed,
            Err(error) => {
                tracing::warn!(%error, "claiming due timers failed; retrying");
                pause(&inner, backoff).await;
                backoff = (backoff * 2).min(poll);
                continue;
            }
        };
        backoff = first_backoff;
        let full = claimed.len() >= free;
        let fired = !claimed.is_empty();
        for timer in claimed {
            let (inner, deliveries) = (Arc::clone(&inner), Arc::clone(&deliveries));
            firing.spawn(async move {
                let timer_id = timer.timer.timer_id.clone();
                // Never closed: a permit always comes.
                let permit = deliveries.acquire().await;
                fire(&inner, timer).await;
                drop(permit);
                inner.timer_store.released(&timer_id);
            });
        }
        if full {
            continue;
        }
        let wait = match inner.storage.next_due(inner.clock.now_ms()).await {
            Ok(Some(due)) => inner.clock.until(due),
            Ok(None) => poll,
            Err(error) => {
                tracing::warn!(%error, "reading the next due timer failed");
                backoff
            }
        };
        // A timer due now that this round did not claim was scheduled
        // meanwhile: look again at once, but never spin.
        let floor = if fired {
            Duration::ZERO
        } else {
            Duration::from_millis(1)
        };
        pause(&inner, wait.min(poll).max(floor)).await;
    }
}

/// Fires one claimed timer, and completes it when delivered.
async fn fire<S>(inner: &Arc<Inner<S>>, claimed: ClaimedTimer)
where
    S: JournalStorage + TimerStore + Clone + 'static,
{
    let timer = claimed.timer;
    let scheduled = match TimerScheduled::decode(timer.payload.as_slice()) {
        Ok(scheduled) => scheduled,
        Err(error) => {
            tracing::error!(timer_id = %timer.timer_id, %error, "timer payload does not decode; dropped");
            complete(inner, &timer.timer_id, &claimed.claim).await;
            return;
        }
    };
    let checkpoint = scheduled.message_type == CHECKPOINT_TIMER;
    let delivered = if checkpoint {
        inner
            .checkpoint(&timer.target_type, &timer.target_actor)
            .await
    } else {
        let message = MessageReceived {
            message_id: timer_message_id(&timer.timer_id),
            sender_id: timer.owner_actor.clone(),
            message_type: scheduled.message_type,
            payload: scheduled.timer_data,
            metadata: [(TIMER_ID_KEY.to_owned(), timer.timer_id.clone())].into(),
        };
        inner
            .deliver(&timer.target_type, &timer.target_actor, message)
            .await
            .map(drop)
    };
    match delivered {
        Ok(()) => {
            complete(inner, &timer.timer_id, &claimed.claim).await;
            if !checkpoint {
                inner.emit(|| SystemEvent::TimerFired {
                    timer_id: timer.timer_id.clone(),
                    actor_type: timer.target_type.clone(),
                    actor_id: timer.target_actor.clone(),
                });
            }
        }
        // Cancelled after it was claimed: completed, never delivered.
        Err(SendError::TimerCancelled) => {
            tracing::debug!(timer_id = %timer.timer_id, "timer cancelled after its claim; dropped");
            complete(inner, &timer.timer_id, &claimed.claim).await;
        }
        // Left to a system that hosts this type.
        Err(SendError::UnknownType(actor_type)) => {
            tracing::debug!(timer_id = %timer.timer_id, actor_type, "timer for a type not hosted here");
        }
        Err(SendError::ShuttingDown) => {}
        Err(error) => {
            tracing::warn!(timer_id = %timer.timer_id, %error, "timer delivery failed; fired again when its lease ends");
        }
    }
}

async fn complete<S: TimerStore>(inner: &Inner<S>, timer_id: &str, claim: &str) {
    if let Err(error) = inner.timer_store.complete_timer(timer_id, claim).await {
        // Fired again when the lease ends; the target's journal dedups it.
        tracing::warn!(timer_id, %error, "completing a fired timer failed");
    }
}
