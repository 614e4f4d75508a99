//! Actor ids are data (contract, "Words"): quotes, braces, SQL and Lua
//! metacharacters, emoji, control characters and the byte limit must all be
//! stored, found and deleted exactly, and must never collide.

use std::sync::Arc;

use futures::TryStreamExt;
use journal_core::JournalStorage;

use crate::fixture::{append_each, checkpoint, collect_stream, entries, fresh_actor, seqs};

/// Hostile actor ids, each unique to this call.
pub fn hostile_ids() -> Vec<String> {
    let u = ulid::Ulid::generate().to_string();
    let mut at_limit = format!("{u}🦀");
    while at_limit.len() < 255 {
        at_limit.push('ß');
        if at_limit.len() > 255 {
            at_limit.pop();
            at_limit.push('z');
        }
    }
    vec![
        format!("{u}'; DROP TABLE journal_entries; --"),
        format!("\"{u}\" OR \"1\"=\"1"),
        format!("{{{u}}}"),
        format!("}}{u}{{"),
        format!("{u}:entries:1"),
        format!("100%{u}_%\\"),
        format!("{u}]]; redis.call('FLUSHALL') --[["),
        format!("{u} return KEYS[1] .. ARGV[1]"),
        format!("😀 {u} 🦀"),
        format!("{u}\n\t\r line breaks"),
        format!("{u}\0nul"),
        format!(" {u} "),
        format!("$1 {u} ?"),
        at_limit,
    ]
}

/// Every hostile id round-trips through append, batch, replay, stream,
/// checkpoints, listing, summary, truncation and deletion.
pub async fn ids_round_trip_everywhere(storage: Arc<dyn JournalStorage>) {
    let ids = hostile_ids();
    assert_eq!(ids.last().map(String::len), Some(255));
    for id in &ids {
        let written = entries(id, 1, 4);
        append_each(&*storage, &written[..1]).await;
        storage
            .append_batch(&written[1..])
            .await
            .unwrap_or_else(|e| panic!("batch for {id:?}: {e}"));
        assert_eq!(
            storage.replay_from(id, 1).await.expect("replay"),
            written,
            "{id:?}"
        );
        assert_eq!(
            collect_stream(&*storage, id, 2).await,
            written[1..],
            "{id:?}"
        );
        assert_eq!(
            storage.highest_sequence(id).await.expect("highest"),
            4,
            "{id:?}"
        );
        let c = checkpoint(id, 3);
        storage.save_checkpoint(&c).await.expect("save");
        assert_eq!(
            storage.get_latest_checkpoint(id).await.expect("latest"),
            Some(c),
            "{id:?}"
        );
        assert_eq!(
            storage.actor_summary(id).await.expect("summary").entries,
            4,
            "{id:?}"
        );
        storage.truncate_to(id, 2).await.expect("truncate");
        assert_eq!(
            seqs(&storage.replay_from(id, 1).await.expect("replay")),
            vec![3, 4],
            "{id:?}"
        );
    }
    let listed: Vec<String> = storage.list_actors().try_collect().await.expect("list");
    for id in &ids {
        assert!(listed.contains(id), "{id:?} is not listed as written");
    }
    for id in &ids {
        storage.delete_actor(id).await.expect("delete");
        assert!(
            storage.replay_from(id, 0).await.expect("replay").is_empty(),
            "{id:?}"
        );
        assert!(
            storage
                .get_latest_checkpoint(id)
                .await
                .expect("latest")
                .is_none(),
            "{id:?}"
        );
        assert_eq!(
            storage.highest_sequence(id).await.expect("highest"),
            0,
            "{id:?}"
        );
    }
}

/// Ids that a careless encoding would merge (case, trailing space, Unicode
/// normalisation, separators, escapes, hash tags) stay separate journals.
pub async fn ids_do_not_collide(storage: Arc<dyn JournalStorage>) {
    let u = fresh_actor("collide");
    let ids = [
        format!("{u}:a"),
        format!("{u}:A"),
        format!("{u}:a "),
        format!("{u}:\u{e9}"),
        format!("{u}:e\u{301}"),
        format!("{u}:a:b"),
        format!("{u}:a%3Ab"),
        format!("{{{u}}}:a"),
        u.clone(),
        format!("{u}\\"),
    ];
    for (i, id) in ids.iter().enumerate() {
        storage
            .append_batch(&entries(id, 1, i as u64 + 1))
            .await
            .expect("batch");
    }
    for (i, id) in ids.iter().enumerate() {
        let stored = storage.replay_from(id, 1).await.expect("replay");
        assert_eq!(
            stored.len(),
            i + 1,
            "{id:?} shares a journal with another id"
        );
        assert!(stored.iter().all(|e| &e.actor_id == id), "{id:?}");
    }
    storage.delete_actor(&ids[0]).await.expect("delete");
    assert_eq!(storage.highest_sequence(&ids[1]).await.expect("highest"), 2);
    assert_eq!(storage.highest_sequence(&ids[5]).await.expect("highest"), 6);
}
