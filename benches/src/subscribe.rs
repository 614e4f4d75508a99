//! Live subscriptions (`JournalWatch`): the lag from an append's `Ok` to
//! the subscriber receiving the entry.

use std::time::Instant;

use futures::StreamExt;
use journal_core::subscribe::{follow, JournalWatch, SubscribeOptions};
use journal_core::JournalStorage;

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

/// Entries written for the feed figures, over [`FEED_ACTORS`] actors.
pub const FEED_ENTRIES: u64 = 60_000;

/// Actors the feed figures' entries are spread over.
pub const FEED_ACTORS: u64 = 100;

/// Writes the feed figures' entries to `storage`: [`FEED_ENTRIES`] over
/// [`FEED_ACTORS`] fresh actors, interleaved, 10 entries per batch, as
/// concurrent actors do. Returns the actors.
pub async fn write_feed_entries(storage: &impl JournalStorage) -> Vec<String> {
    let per_actor = FEED_ENTRIES / FEED_ACTORS;
    let actors: Vec<String> = (0..FEED_ACTORS).map(|_| unique("feed")).collect();
    for chunk in (1..=per_actor).step_by(10) {
        for actor in &actors {
            let batch: Vec<_> = (chunk..(chunk + 10).min(per_actor + 1))
                .map(|s| bench_entry(actor, s))
                .collect();
            storage.append_batch(&batch).await.expect("append");
        }
    }
    actors
}

/// Replays each of `actors` from its first entry with `replay_stream`, one
/// after another (the feed figures' baseline); the entries read.
pub async fn replay_each(storage: &impl JournalStorage, actors: &[String]) -> u64 {
    let mut replayed = 0u64;
    for actor in actors {
        let mut stream = storage.replay_stream(actor, 1);
        while let Some(entry) = stream.next().await {
            entry.expect("replay");
            replayed += 1;
        }
    }
    replayed
}

/// Entries per second through the feed over all actors (pages of 1,000)
/// and through a projection (no-op handler, offset stored per batch of
/// 1,000), beside the replay of the same entries actor by actor in the same
/// run. `storage` must be a store of its own: the feed carries every actor.
pub async fn feed_throughput<S>(storage: S) -> Vec<Figure>
where
    S: journal_core::ProjectionStore + Clone + 'static,
{
    use journal_core::feed::{FeedFilter, FeedOffset};
    use journal_core::projection::Projection;

    let actors = write_feed_entries(&storage).await;
    let total = FEED_ENTRIES / FEED_ACTORS * FEED_ACTORS;

    let started = Instant::now();
    let replayed = replay_each(&storage, &actors).await;
    let replay_rate = replayed as f64 / started.elapsed().as_secs_f64();

    let started = Instant::now();
    let (mut fed, mut at) = (0u64, FeedOffset::start());
    loop {
        let page = storage
            .read_feed(&FeedFilter::All, &at, 1000)
            .await
            .expect("feed");
        let Some(last) = page.last() else { break };
        at = last.offset.clone();
        fed += page.len() as u64;
    }
    let feed_rate = fed as f64 / started.elapsed().as_secs_f64();
    assert_eq!(fed, total, "the feed gives every entry");

    let mut projection = Projection::new(unique("projection"));
    projection.batch = 1000;
    projection.feed.page = 1000;
    let end = at;
    let started = Instant::now();
    let projected = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    {
        let counter = std::sync::Arc::clone(&projected);
        // The handler says when it has had every entry; only then is the
        // stored offset looked at (asking the store all along took CPU
        // and round trips from the projection it measures).
        let all_handled = std::sync::Arc::new(tokio::sync::Notify::new());
        let handled = std::sync::Arc::clone(&all_handled);
        let run = projection.run(&storage, move |batch| {
            let before =
                counter.fetch_add(batch.len() as u64, std::sync::atomic::Ordering::Relaxed);
            if before + batch.len() as u64 >= total {
                handled.notify_one();
            }
            async { Ok(()) }
        });
        let done = async {
            all_handled.notified().await;
            loop {
                if storage.load_offset(&projection.name).await.expect("offset") == Some(end.clone())
                {
                    return;
                }
                tokio::task::yield_now().await;
            }
        };
        tokio::select! {
            ended = run => panic!("the projection ended: {ended:?}"),
            () = done => {}
        }
    }
    let projection_rate = projected.load(std::sync::atomic::Ordering::Relaxed) as f64
        / started.elapsed().as_secs_f64();
    let baseline_name = format!("replay, actor by actor, of the same {total} entries, same run");
    vec![
        Figure {
            name: format!("feed entries/s, all actors, {total} entries"),
            value: feed_rate,
            unit: "entries/s",
            baseline: replay_rate,
            baseline_name: baseline_name.clone(),
            better: Better::Higher,
            target: String::new(),
            met: None,
        },
        Figure {
            name: format!("projection entries/s, offset stored per 1,000, {total} entries"),
            value: projection_rate,
            unit: "entries/s",
            baseline: replay_rate,
            baseline_name,
            better: Better::Higher,
            target: String::new(),
            met: None,
        },
    ]
}
