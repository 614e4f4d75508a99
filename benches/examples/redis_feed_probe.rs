//! What a Redis feed page costs (issue 19): writes the feed workload's
//! entries once (60,000 entries of 100 actors, 10 per append, interleaved,
//! as `cargo xtask bench --backend redis --only feed` does), then reads
//! them back `PROBE_ROUNDS` times (default 10) both ways, alternating:
//! actor by actor with `replay_stream` (the baseline), and through the feed
//! in pages of 1,000. Prints each round's rates and their ratio, and the
//! server's CPU per page (`INFO cpu`), so that a profiler attached to this
//! process sees the read paths alone. Deletes its keys at the end.
//!
//! ```text
//! cargo run --release -p journal-benches --example redis_feed_probe
//! ```
//!
//! The server is `JOURNAL_REDIS_URL` (default `redis://127.0.0.1:6379`).

use std::time::Instant;

use journal_benches::subscribe::{replay_each, write_feed_entries, FEED_ENTRIES};
use journal_core::feed::{FeedFilter, FeedOffset};
use journal_core::JournalFeed;
use journal_redis::{RedisJournalStorage, RedisOptions};

const PAGE: usize = 1_000;

/// The server's CPU seconds so far (user and system), from `INFO cpu`.
async fn server_cpu(client: &redis::Client) -> f64 {
    let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
        return 0.0;
    };
    let info: String = redis::cmd("INFO")
        .arg("cpu")
        .query_async(&mut conn)
        .await
        .unwrap_or_default();
    info.lines()
        .filter_map(|line| {
            let (name, value) = line.split_once(':')?;
            matches!(name, "used_cpu_sys" | "used_cpu_user")
                .then(|| value.trim().parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

#[tokio::main]
async fn main() {
    let url =
        std::env::var("JOURNAL_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let rounds: usize = std::env::var("PROBE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let prefix = format!("jb_{}_probe", journal_core::new_entry_id().to_lowercase());
    let options = RedisOptions {
        key_prefix: prefix.clone(),
        ..RedisOptions::default()
    };
    let storage = RedisJournalStorage::open(&url, options)
        .await
        .expect("the Redis server is up");
    let client = redis::Client::open(url.as_str()).expect("a Redis URL");

    let actors = write_feed_entries(&storage).await;

    println!("round  replay/s   feed/s  ratio  server ms/page (feed)  server ms/1000 (replay)");
    for round in 1..=rounds {
        let cpu = server_cpu(&client).await;
        let started = Instant::now();
        let replayed = replay_each(&storage, &actors).await;
        let replay_rate = replayed as f64 / started.elapsed().as_secs_f64();
        let replay_cpu = server_cpu(&client).await - cpu;

        let cpu = server_cpu(&client).await;
        let started = Instant::now();
        let (mut fed, mut pages, mut at) = (0u64, 0u64, FeedOffset::start());
        loop {
            let page = storage
                .read_feed(&FeedFilter::All, &at, PAGE)
                .await
                .expect("feed");
            let Some(last) = page.last() else { break };
            at = last.offset.clone();
            fed += page.len() as u64;
            pages += 1;
        }
        let feed_rate = fed as f64 / started.elapsed().as_secs_f64();
        let feed_cpu = server_cpu(&client).await - cpu;
        assert_eq!(fed, FEED_ENTRIES, "the feed gives every entry");
        println!(
            "{round:>5} {replay_rate:>9.0} {feed_rate:>8.0} {:>6.3} {:>22.2} {:>24.2}",
            feed_rate / replay_rate,
            feed_cpu * 1e3 / pages as f64,
            replay_cpu * 1e3 * PAGE as f64 / replayed as f64,
        );
    }

    // Clean up: every key of this run's prefix.
    if let Ok(mut conn) = client.get_multiplexed_async_connection().await {
        let script = redis::Script::new(
            "local c='0' local n=0 repeat local r=redis.call('SCAN',c,'MATCH',ARGV[1],'COUNT',1000) \
             c=r[1] for _,k in ipairs(r[2]) do redis.call('UNLINK',k) n=n+1 end until c=='0' return n",
        );
        let _: redis::RedisResult<i64> = script
            .arg(format!("{prefix}*"))
            .invoke_async(&mut conn)
            .await;
    }
}
