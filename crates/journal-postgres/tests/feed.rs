//! The feed (contract rule 28) on the real server, beyond the shared
//! suite: an entry that commits late is never skipped by a reader resuming
//! from a stored offset; an actor's entries stay in order when a
//! transaction took its id before the actor's previous entry committed;
//! the page queries are index range scans; tag rows leave with their
//! entries; a version 3 schema is upgraded with its entries in the feed.

mod common;

use std::time::Duration;

use journal_conformance::feed::{assert_feed, read_all, tagged};
use journal_conformance::fixture::{entries, entry, fresh_actor};
use journal_core::feed::{FeedFilter, FeedOffset, JournalFeed};
use journal_core::{JournalEntry, JournalStorage};
use journal_postgres::{PostgresJournalStorage, PostgresOptions};
use tokio_postgres::{Client, NoTls};

/// A second storage on `storage`'s schema whose reads return at once
/// (no settling), to look at the feed while a transaction is held open.
async fn unsettled(storage: &PostgresJournalStorage) -> PostgresJournalStorage {
    PostgresJournalStorage::open(
        &common::url(),
        PostgresOptions {
            schema: storage.schema().to_owned(),
            feed_settle: Duration::ZERO,
            ..common::test_options()
        },
    )
    .await
    .expect("a second pool on the schema")
}

async fn raw_client() -> Client {
    let (client, connection) = tokio_postgres::connect(&common::url(), NoTls)
        .await
        .expect("a raw connection");
    tokio::spawn(connection);
    client
}

/// Writes `entries` (one actor, in order) through the schema's `append`
/// function on `client`, as the storage writes them, with their tags.
async fn append_raw(client: &Client, schema: &str, entries: &[JournalEntry]) {
    let actor = entries[0].actor_id.as_bytes();
    let seqs: Vec<i64> = entries
        .iter()
        .map(|e| i64::try_from(e.sequence).expect("a sequence"))
        .collect();
    let ids: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
    let bytes: Vec<Vec<u8>> = entries.iter().map(prost::Message::encode_to_vec).collect();
    let mut items = Vec::new();
    let mut tags = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        for tag in journal_core::feed::entry_tags(e) {
            items.push(i32::try_from(i + 1).expect("an index"));
            tags.push(tag.into_bytes());
        }
    }
    let row = client
        .query_one(
            &format!("SELECT o_outcome FROM {schema}.append($1, $2, $3, $4, $5, $6)"),
            &[&actor, &seqs, &ids, &bytes, &items, &tags],
        )
        .await
        .expect("a raw append");
    assert_eq!(row.get::<_, i32>(0), 0, "the raw append was refused");
}

/// A transaction holds an id while later appends commit: a reader storing
/// offsets never gets past it; the transaction then writes an entry and
/// commits, and the reader resuming from its stored offset gets that entry
/// and every other, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_committed_late_is_not_skipped() {
    let Some(storage) = common::storage(common::test_options()).await else {
        return;
    };
    let schema = storage.schema().to_owned();
    let now = unsettled(&storage).await;
    let (a, b, late) = (
        fresh_actor("early"),
        fresh_actor("other"),
        fresh_actor("late"),
    );
    let before = entries(&a, 1, 3);
    storage.append_batch(&before).await.expect("before");
    let (mut read, stored) = read_all(&storage, &FeedFilter::All, FeedOffset::start(), 2).await;
    assert_feed("before the open transaction", &read, &before);

    // The open transaction: an id of its own, below everything after.
    let open = raw_client().await;
    open.batch_execute("BEGIN").await.expect("begin");
    open.query_one("SELECT pg_current_xact_id()", &[])
        .await
        .expect("an id");

    let after = [entries(&a, 4, 6), entries(&b, 1, 1)].concat();
    storage.append_batch(&after[..3]).await.expect("a batch");
    storage.append_entry(&after[3]).await.expect("a single");
    // They committed; the reader, resuming from its stored offset, must
    // not pass the open transaction.
    let held = now
        .read_feed(&FeedFilter::All, &stored, 100)
        .await
        .expect("read while open");
    assert!(
        held.is_empty(),
        "the feed passed an open transaction: {held:?}"
    );
    let held = now
        .read_feed(&FeedFilter::Tag("late".into()), &FeedOffset::start(), 100)
        .await
        .expect("read a tag while open");
    assert!(held.is_empty());

    // The open transaction writes an entry, late, and commits.
    let late_entry = tagged(&late, 1, "late");
    append_raw(&open, &schema, std::slice::from_ref(&late_entry)).await;
    open.batch_execute("COMMIT").await.expect("commit");

    let (rest, _) = read_all(
        &storage,
        &FeedFilter::All,
        FeedOffset::new(stored.as_str()),
        2,
    )
    .await;
    read.extend(rest);
    let mut all = before.clone();
    all.extend(after.iter().cloned());
    all.push(late_entry.clone());
    assert_feed("resumed after the late commit", &read, &all);
    // It came first of the rest: its position is the open transaction's.
    assert_eq!(read[3].entry, late_entry);
    let (tag, _) = read_all(
        &storage,
        &FeedFilter::Tag("late".into()),
        FeedOffset::start(),
        5,
    )
    .await;
    assert_feed("the late entry's tag", &tag, &[late_entry]);
}

/// A transaction takes its id, then another commits an actor's entry 1,
/// then the first writes entry 2 (as a group commit does, item after item,
/// and for a group of several actors at once) and commits: the feed still
/// gives each actor's 1 before its 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_actor_stays_in_order_when_an_early_transaction_writes_after() {
    let Some(storage) = common::storage(common::test_options()).await else {
        return;
    };
    let schema = storage.schema().to_owned();
    let actors: Vec<String> = (0..4).map(|_| fresh_actor("order")).collect();
    let early = raw_client().await;
    early.batch_execute("BEGIN").await.expect("begin");
    early
        .query_one("SELECT pg_current_xact_id()", &[])
        .await
        .expect("an id");
    let first: Vec<JournalEntry> = actors.iter().map(|a| entry(a, 1)).collect();
    for e in &first {
        storage.append_entry(e).await.expect("entry 1, committed");
    }
    // Entry 2 of the first actor through `append`, of the other three
    // through `append_many`'s path for groups of several actors.
    let second: Vec<JournalEntry> = actors.iter().map(|a| entry(a, 2)).collect();
    append_raw(&early, &schema, &second[..1]).await;
    let many: Vec<&[u8]> = second[1..].iter().map(|e| e.actor_id.as_bytes()).collect();
    let seqs = vec![2_i64; 3];
    let ids: Vec<&str> = second[1..].iter().map(|e| e.id.as_str()).collect();
    let bytes: Vec<Vec<u8>> = second[1..]
        .iter()
        .map(prost::Message::encode_to_vec)
        .collect();
    let outcomes = early
        .query(
            &format!("SELECT o_outcome FROM {schema}.append_many($1, $2, $3, $4, '{{}}', '{{}}')"),
            &[&many, &seqs, &ids, &bytes],
        )
        .await
        .expect("append_many");
    assert!(outcomes.iter().all(|r| r.get::<_, i32>(0) == 0));
    early.batch_execute("COMMIT").await.expect("commit");
    let (got, _) = read_all(&storage, &FeedFilter::All, FeedOffset::start(), 3).await;
    assert_feed(
        "entries 2 written by an early transaction",
        &got,
        &[first, second].concat(),
    );
}

/// `EXPLAIN`: a page of the feed, and of a tag's, is one index range scan
/// in feed order (no sort, no scan of the table).
#[tokio::test]
async fn feed_pages_are_index_range_scans() {
    let Some(storage) = common::storage(common::test_options()).await else {
        return;
    };
    let schema = storage.schema().to_owned();
    let client = storage.pool().get().await.expect("client");
    // Enough rows for the planner to care: 20,000 entries of 200 actors,
    // every tenth tagged.
    client
        .batch_execute(&format!(
            "INSERT INTO {schema}.entries (actor_id, sequence, entry_id, entry, feed_pos)
                 SELECT convert_to('a' || (g % 200), 'UTF8'), g / 200 + 1, 'id' || g, '\\x00', g
                 FROM generate_series(0, 19999) g;
             INSERT INTO {schema}.entry_tags (tag, feed_pos, actor_id, sequence)
                 SELECT convert_to('t' || (g % 20), 'UTF8'), g, convert_to('a' || (g % 200), 'UTF8'), g / 200 + 1
                 FROM generate_series(0, 19999, 10) g;
             ANALYZE {schema}.entries; ANALYZE {schema}.entry_tags;"
        ))
        .await
        .expect("rows");
    for (filter, index) in [
        (FeedFilter::All, "entries_feed"),
        (FeedFilter::Tag("t3".into()), "entry_tags_pkey"),
    ] {
        let sql = storage
            .feed_statement(&filter)
            .replace("$1", "5000::bigint")
            .replace("$2", "'\\x6131'::bytea")
            .replace("$3", "3::bigint")
            .replace("$4", "256")
            .replace("$5", "'\\x7433'::bytea");
        let plan: Vec<String> = client
            .query(&format!("EXPLAIN {sql}"), &[])
            .await
            .expect("explain")
            .iter()
            .map(|r| r.get(0))
            .collect();
        let plan = plan.join("\n");
        println!("{filter:?}:\n{plan}");
        assert!(plan.contains(&format!("Scan using {index}")), "{plan}");
        assert!(!plan.contains("Sort"), "{plan}");
        assert!(!plan.contains("Seq Scan"), "{plan}");
    }
}

/// Truncation and deletion take the tag rows with the entries.
#[tokio::test]
async fn tag_rows_leave_with_their_entries() {
    let Some(storage) = common::storage(common::test_options()).await else {
        return;
    };
    let schema = storage.schema().to_owned();
    let (kept, gone) = (fresh_actor("tags-kept"), fresh_actor("tags-gone"));
    for s in 1..=4 {
        storage
            .append_entry(&tagged(&kept, s, "x,y"))
            .await
            .expect("append");
        storage
            .append_entry(&tagged(&gone, s, "x"))
            .await
            .expect("append");
    }
    storage.truncate_to(&kept, 3).await.expect("truncate");
    storage.delete_actor(&gone).await.expect("delete");
    let client = storage.pool().get().await.expect("client");
    let rows: Vec<(Vec<u8>, i64)> = client
        .query(
            &format!("SELECT actor_id, sequence FROM {schema}.entry_tags ORDER BY 1, 2, tag"),
            &[],
        )
        .await
        .expect("tag rows")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        rows,
        vec![(kept.as_bytes().to_vec(), 4), (kept.as_bytes().to_vec(), 4)]
    );
}

/// A schema at version 3 is upgraded: its entries are in the feed first,
/// then the new ones; a process of the old version, calling the old
/// four-argument function, still writes entries the feed orders.
#[tokio::test]
async fn version_3_schema_is_upgraded_with_its_entries_in_the_feed() {
    let Some(storage) = common::storage(common::test_options()).await else {
        return;
    };
    let schema = common::fresh_schema();
    let client = storage.pool().get().await.expect("client");
    let migrations = journal_postgres::migrate::migrations(&schema);
    client
        .batch_execute(&format!(
            "CREATE SCHEMA {schema};
             CREATE TABLE {schema}.journal_schema (version INT NOT NULL);
             INSERT INTO {schema}.journal_schema VALUES (1), (2), (3);
             {}
             {}
             {}",
            migrations[0], migrations[1], migrations[2]
        ))
        .await
        .expect("version 3 schema");
    let old_way = |e: &JournalEntry| {
        let (schema, e) = (schema.clone(), e.clone());
        let client = &client;
        async move {
            client
                .query(
                    &format!("SELECT * FROM {schema}.append($1, $2, $3, $4)"),
                    &[
                        &e.actor_id.as_bytes(),
                        &vec![i64::try_from(e.sequence).expect("a sequence")],
                        &vec![e.id.as_str()],
                        &vec![prost::Message::encode_to_vec(&e)],
                    ],
                )
                .await
                .expect("a four-argument append")
        }
    };
    let old = [entry("zz-veteran", 1), entry("aa-veteran", 1)];
    for e in &old {
        old_way(e).await;
    }
    let upgraded = PostgresJournalStorage::open(
        &common::url(),
        PostgresOptions {
            schema: schema.clone(),
            ..common::test_options()
        },
    )
    .await
    .expect("open upgrades");
    let new = entry("zz-veteran", 2);
    upgraded.append_entry(&new).await.expect("append");
    let older_process = entry("aa-veteran", 2);
    old_way(&older_process).await;
    let (got, _) = read_all(&upgraded, &FeedFilter::All, FeedOffset::start(), 2).await;
    let want = [old[1].clone(), old[0].clone(), new, older_process];
    assert_feed("upgraded", &got, &want);
    // Rows from before the upgrade come first, by actor.
    let order: Vec<&JournalEntry> = got.iter().map(|i| &i.entry).collect();
    assert_eq!(order[..2], [&want[0], &want[1]]);
}

/// Exactly-once into the same database: a batch whose apply step fails
/// after writing leaves neither its rows nor its offset; the run after it
/// applies every entry once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projection_in_transaction_applies_each_entry_once() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use journal_core::{JournalStorage, Projection, ProjectionStore};

    let Some(storage) = common::storage(common::test_options()).await else {
        return;
    };
    let schema = storage.schema().to_owned();
    common::create_projected_table(&storage).await;
    let written: Vec<_> = (1..=20)
        .map(|s| journal_conformance::fixture::entry("projected", s))
        .collect();
    storage.append_batch(&written).await.expect("append");
    let mut projection = Projection::new("exactly-once");
    projection.batch = 6;
    let insert = format!("INSERT INTO {schema}.projected (actor_id, sequence) VALUES ($1, $2)");
    let calls = Arc::new(AtomicUsize::new(0));
    let run = |fail_at: usize| {
        let (insert, calls) = (insert.clone(), Arc::clone(&calls));
        journal_postgres::apply_step(move |tx, batch| {
            let (insert, calls) = (insert.clone(), Arc::clone(&calls));
            Box::pin(async move {
                for item in batch {
                    let sequence = i64::try_from(item.entry.sequence)?;
                    tx.execute(&insert, &[&item.entry.actor_id, &sequence])
                        .await?;
                }
                if calls.fetch_add(1, Ordering::SeqCst) + 1 == fail_at {
                    return Err("failed after writing its rows".into());
                }
                Ok(())
            })
        })
    };
    // The second batch fails after its inserts: rolled back with its offset.
    let ended = storage
        .run_projection_in_transaction(&projection, run(2))
        .await;
    assert!(ended.is_err(), "the failing batch ends the run: {ended:?}");
    let stored = storage.load_offset("exactly-once").await.expect("offset");
    assert!(stored.is_some(), "the first batch's offset");
    // Again, to the end of the feed.
    let end = {
        let mut at = journal_core::FeedOffset::start();
        loop {
            let page = journal_core::JournalFeed::read_feed(
                &storage,
                &journal_core::FeedFilter::All,
                &at,
                100,
            )
            .await
            .expect("feed");
            let Some(last) = page.last() else { break at };
            at = last.offset.clone();
        }
    };
    let again = storage.run_projection_in_transaction(&projection, run(usize::MAX));
    let caught_up = async {
        while storage.load_offset("exactly-once").await.expect("offset") != Some(end.clone()) {
            tokio::task::yield_now().await;
        }
    };
    tokio::select! {
        ended = again => panic!("the run ended: {ended:?}"),
        () = caught_up => {}
    }
    let client = storage.pool().get().await.expect("client");
    let rows = client
        .query(
            &format!("SELECT sequence, count(*) FROM {schema}.projected GROUP BY sequence ORDER BY sequence"),
            &[],
        )
        .await
        .expect("rows");
    let counts: Vec<(i64, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let want: Vec<(i64, i64)> = (1..=20).map(|s| (s, 1)).collect();
    assert_eq!(counts, want, "each entry applied exactly once");
}
