//! Group commit: concurrent single appends, of any actors, sent to the
//! server together in one round trip and one transaction.

use std::sync::Arc;

use deadpool_postgres::Pool;
use journal_core::{validate, JournalError, JournalResult};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::error::{pg_error, pool_error};

/// One append waiting for its group.
pub(crate) struct Pending {
    pub(crate) actor_id: String,
    /// The sequence as the caller gave it (validated: at most
    /// `MAX_SEQUENCE`, so it fits a `BIGINT`); errors report this value.
    pub(crate) sequence: u64,
    pub(crate) id: String,
    pub(crate) bytes: Vec<u8>,
    /// The entry's tags, for the feed's tag index.
    pub(crate) tags: Vec<String>,
    pub(crate) reply: oneshot::Sender<JournalResult<()>>,
}

/// The statements a group needs: `append_many`, and the single `append`
/// that a failed group falls back to, item by item.
pub(crate) struct GroupSql {
    pub(crate) append_many: String,
    pub(crate) append_one: String,
    /// Announces each group's actors once it committed.
    pub(crate) notifier: crate::listen::Notifier,
}

/// Most bytes of entries sent in one group (a bind must stay far below the
/// server's 1 GiB message limit).
const MAX_GROUP_BYTES: usize = 64 * 1024 * 1024;

/// Runs the dispatcher: it waits for a free slot (at most `slots` groups
/// in flight, one per pooled connection), then takes every append queued
/// meanwhile (up to `max_group` items and 64 MiB) as one group. While the server is busy,
/// appends queue up and the next group is larger.
pub(crate) fn spawn(
    pool: Pool,
    sql: GroupSql,
    slots: usize,
    max_group: usize,
) -> mpsc::UnboundedSender<Pending> {
    let (sender, mut receiver) = mpsc::unbounded_channel::<Pending>();
    let slots = Arc::new(Semaphore::new(slots.max(1)));
    let sql = Arc::new(sql);
    tokio::spawn(async move {
        let mut carried: Option<Pending> = None;
        loop {
            let first = match carried.take() {
                Some(first) => first,
                None => match receiver.recv().await {
                    Some(first) => first,
                    None => return,
                },
            };
            let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
                return;
            };
            let mut bytes = first.bytes.len();
            let mut group = vec![first];
            while group.len() < max_group {
                match receiver.try_recv() {
                    Ok(next) if bytes + next.bytes.len() > MAX_GROUP_BYTES => {
                        carried = Some(next);
                        break;
                    }
                    Ok(next) => {
                        bytes += next.bytes.len();
                        group.push(next);
                    }
                    Err(_) => break,
                }
            }
            journal_core::metrics::group_commit("postgres", group.len());
            let (pool, sql) = (pool.clone(), Arc::clone(&sql));
            tokio::spawn(async move {
                commit(&pool, &sql, group).await;
                drop(permit);
            });
        }
    });
    sender
}

async fn commit(pool: &Pool, sql: &GroupSql, mut group: Vec<Pending>) {
    // One lock order for every group: by actor, then sequence.
    group.sort_by(|a, b| {
        a.actor_id
            .cmp(&b.actor_id)
            .then(a.sequence.cmp(&b.sequence))
    });
    let actors: Vec<&[u8]> = group.iter().map(|p| p.actor_id.as_bytes()).collect();
    let sequences: Vec<i64> = group.iter().map(|p| crate::seq(p.sequence)).collect();
    let ids: Vec<&str> = group.iter().map(|p| p.id.as_str()).collect();
    let bytes: Vec<&[u8]> = group.iter().map(|p| p.bytes.as_slice()).collect();
    let (tag_items, tags) = crate::feed::tag_arrays(group.iter().map(|p| p.tags.clone()));
    // One announcement for the whole group (its actors are sorted, so
    // duplicates are neighbours).
    let announce = crate::listen::payload(group.iter().map(|p| p.actor_id.as_str()));
    let result = async {
        let client = pool.get().await.map_err(pool_error)?;
        let statement = client
            .prepare_cached(&sql.append_many)
            .await
            .map_err(pg_error)?;
        client
            .query(
                &statement,
                &[&actors, &sequences, &ids, &bytes, &tag_items, &tags],
            )
            .await
            .map_err(pg_error)
    }
    .await;
    if result.is_ok() {
        sql.notifier.notify(announce);
    }
    let rows = match result {
        Ok(rows) => rows,
        Err(e) if !e.is_retryable() && group.len() > 1 => {
            // One item broke the whole transaction (nothing of the group is
            // stored): send each alone, so only that one fails.
            for p in group {
                let result = append_one(pool, sql, &p).await;
                let _ = p.reply.send(result);
            }
            return;
        }
        Err(e) => {
            // The connection failed: every caller learns it and may retry (a
            // retry of an append that did land is recognised).
            let retryable = e.is_retryable();
            let text = e.to_string();
            for p in group {
                let error = if retryable {
                    JournalError::unavailable("postgres", text.clone())
                } else {
                    JournalError::storage("postgres", text.clone())
                };
                let _ = p.reply.send(Err(error));
            }
            return;
        }
    };
    let mut outcomes = vec![None; group.len()];
    for row in &rows {
        let (Ok(index), Ok(outcome), Ok(highest)) = (
            row.try_get::<_, i32>(0),
            row.try_get::<_, i32>(1),
            row.try_get::<_, i64>(2),
        ) else {
            continue;
        };
        if let Some(slot) = usize::try_from(index)
            .ok()
            .and_then(|i| i.checked_sub(1))
            .and_then(|i| outcomes.get_mut(i))
        {
            *slot = Some((outcome, highest));
        }
    }
    for (p, outcome) in group.into_iter().zip(outcomes) {
        let result = match outcome {
            Some((0 | 1, _)) => Ok(()),
            Some((_, highest)) => Err(validate::sequence_conflict(
                &p.actor_id,
                crate::unseq(highest),
                p.sequence,
            )),
            None => Err(JournalError::storage(
                "postgres",
                "the server returned no outcome for an append",
            )),
        };
        let _ = p.reply.send(result);
    }
}

/// One append on its own, through the single-actor `append` function.
async fn append_one(pool: &Pool, sql: &GroupSql, p: &Pending) -> JournalResult<()> {
    let client = pool.get().await.map_err(pool_error)?;
    let statement = client
        .prepare_cached(&sql.append_one)
        .await
        .map_err(pg_error)?;
    let announce = crate::listen::payload([p.actor_id.as_str()]);
    let (tag_items, tags) = crate::feed::tag_arrays([p.tags.clone()]);
    let row = client
        .query_one(
            &statement,
            &[
                &p.actor_id.as_bytes(),
                &vec![crate::seq(p.sequence)],
                &vec![p.id.as_str()],
                &vec![p.bytes.as_slice()],
                &tag_items,
                &tags,
            ],
        )
        .await
        .map_err(pg_error)?;
    sql.notifier.notify(announce);
    let outcome: i32 = row.try_get(0).map_err(pg_error)?;
    let highest: i64 = row.try_get(1).map_err(pg_error)?;
    match outcome {
        0 | 1 => Ok(()),
        _ => Err(validate::sequence_conflict(
            &p.actor_id,
            crate::unseq(highest),
            p.sequence,
        )),
    }
}
