//! Live subscriptions (`JournalWatch`): the lag from an append's `Ok` to
//! the subscriber receiving the entry.

use std::time::Instant;

use futures::StreamExt;
use journal_core::subscribe::{follow, JournalWatch, SubscribeOptions};

use crate::workloads::{bench_entry, percentile, unique};
use crate::{Better, Figure};

/// Appends per actor in the lag figures.
pub const APPENDS: u64 = 400;

/// The lag from each append's `Ok` to its subscriber's receiving it, p50
/// and p99, with `actors` actors appending at once, each followed by a
/// subscriber of its own, each append made once the previous one was
/// received; beside the appends' own latency in the same run.
pub async fn lag<S>(storage: S, actors: usize) -> Vec<Figure>
where
    S: JournalWatch + Clone + 'static,
{
    let ids: Vec<String> = (0..actors).map(|_| unique("subscribe")).collect();
    let mut tasks = Vec::new();
    for id in ids {
        // The subscriber says when it has each entry; the writer appends
        // the next one then, so the lag is the wake-up's, not a backlog's.
        let (got, mut heard) = tokio::sync::mpsc::unbounded_channel::<Instant>();
        let subscriber = {
            let (storage, id) = (storage.clone(), id.clone());
            tokio::spawn(async move {
                let mut stream = follow(&storage, &id, 1, SubscribeOptions::default());
                for _ in 0..APPENDS {
                    match stream.next().await {
                        Some(Ok(_)) => {
                            if got.send(Instant::now()).is_err() {
                                return;
                            }
                        }
                        other => panic!("the subscription of {id} ended: {other:?}"),
                    }
                }
            })
        };
        let writer = {
            let storage = storage.clone();
            tokio::spawn(async move {
                let mut timed = Vec::with_capacity(APPENDS as usize);
                for s in 1..=APPENDS {
                    let entry = bench_entry(&id, s);
                    let started = Instant::now();
                    storage.append_entry(&entry).await.expect("append");
                    let ok = Instant::now();
                    let at = heard.recv().await.expect("the subscriber");
                    // Woken before the appender saw its `Ok`: no lag.
                    timed.push((at.saturating_duration_since(ok), ok - started));
                }
                timed
            })
        };
        tasks.push((subscriber, writer));
    }
    let (mut lags, mut appends) = (Vec::new(), Vec::new());
    for (subscriber, writer) in tasks {
        for (lag, took) in writer.await.expect("writer") {
            lags.push(lag);
            appends.push(took);
        }
        subscriber.await.expect("subscriber");
    }
    lags.sort_unstable();
    appends.sort_unstable();
    let who = if actors == 1 { "actor" } else { "actors" };
    [(0.5, "p50"), (0.99, "p99")]
        .into_iter()
        .map(|(p, name)| Figure {
            name: format!("subscription lag {name}, {actors} {who} appending"),
            value: percentile(&lags, p),
            unit: "us",
            baseline: percentile(&appends, p),
            baseline_name: format!("the appends' own latency {name}, same run"),
            better: Better::Lower,
            target: String::new(),
            met: None,
        })
        .collect()
}
