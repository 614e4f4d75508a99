//! Group commit: concurrent appends, of any actors, sent to the server
//! together in one transaction: single appends in one statement, and the
//! batches among them (`append_batch`, each atomic) pipelined beside it.

use std::sync::Arc;
use tracing::Instrument as _;

use deadpool_postgres::{GenericClient, Pool};
use journal_core::{validate, JournalError, JournalResult};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_postgres::types::ToSql;

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

/// One `append_batch` waiting for its group: entries of one actor, stored
/// all or none (through the single-actor `append` function).
pub(crate) struct PendingBatch {
    pub(crate) actor_id: String,
    /// The first entry's sequence as the caller gave it; errors report it.
    pub(crate) first: u64,
    pub(crate) sequences: Vec<i64>,
    pub(crate) ids: Vec<String>,
    pub(crate) bytes: Vec<Vec<u8>>,
    /// The batch's tags as `append`'s two tag arrays.
    pub(crate) tag_items: Vec<i32>,
    pub(crate) tags: Vec<Vec<u8>>,
    pub(crate) reply: oneshot::Sender<JournalResult<()>>,
}

impl PendingBatch {
    fn size(&self) -> usize {
        self.bytes.iter().map(Vec::len).sum()
    }
}

/// What the dispatcher queues: a single append, or a batch.
pub(crate) enum Queued {
    One(Pending),
    Batch(PendingBatch),
}

impl Queued {
    fn size(&self) -> usize {
        match self {
            Queued::One(p) => p.bytes.len(),
            Queued::Batch(b) => b.size(),
        }
    }
}

/// The statements a group needs: `append_group` for a group of distinct
/// actors, `append_many` for the rest (and for the items `append_group`
/// left), and the single `append` that a failed group falls back to, item
/// by item.
pub(crate) struct GroupSql {
    pub(crate) append_many: String,
    pub(crate) append_group: String,
    /// [`append_items_sql`]: a group of distinct actors holding batches.
    pub(crate) append_items: String,
    pub(crate) append_one: String,
    /// Announces each group's actors once it committed.
    pub(crate) notifier: crate::listen::Notifier,
}

/// A group of appends to distinct actors in one statement, with no
/// PL/pgSQL: each actor's row is moved from `highest = q - 1` to `q` by one
/// conditional `UPDATE` (a new actor's row is inserted with `highest = 1`),
/// and the entries (and their tags) of exactly the actors moved are
/// inserted, each with the actor's new `feed_pos` (the transaction's id,
/// raised to at least the actor's previous one, as `append_many` gives it).
/// Returns the 1-based index of each item appended. An item not returned
/// (a duplicate, a conflict, an actor row in an unexpected state) changed
/// nothing, and `append_many` then says what it is.
///
/// Against `append_many`'s fast path (lock the rows in order, check every
/// sequence, then insert and update), the row is touched once instead of
/// twice and the statement runs without a PL/pgSQL frame: 20-30% less
/// server CPU a group (issue 22, `pg_group_commit_probe`). Two concurrent
/// groups lock their actors in the order of their plans; should two
/// groups that share two actors (the same actor appending in two groups
/// at once, which a single writer per actor never does) lock them in
/// opposite orders, the server breaks the deadlock and the group is sent
/// again through `append_many`, which locks in actor order.
pub(crate) fn append_group_sql(s: &str) -> String {
    format!(
        "WITH u AS (SELECT * FROM unnest($1::bytea[], $2::bigint[], $3::text[], $4::bytea[])
                        WITH ORDINALITY AS u(a, q, i, e, n)),
              x AS (SELECT pg_current_xact_id()::text::bigint AS xid),
              fresh AS (INSERT INTO {s}.actors (actor_id, highest, feed_pos)
                        SELECT u.a, 1, (SELECT xid FROM x) FROM u WHERE u.q = 1 ORDER BY u.a
                        ON CONFLICT (actor_id) DO NOTHING
                        RETURNING actor_id, feed_pos),
              moved AS (UPDATE {s}.actors a SET highest = u.q, feed_pos = greatest((SELECT xid FROM x), a.feed_pos)
                        FROM u WHERE a.actor_id = u.a AND u.q > 1 AND a.highest = u.q - 1
                        RETURNING a.actor_id, a.feed_pos),
              ok AS (SELECT u.n, u.a, u.q, u.i, u.e, f.feed_pos AS p
                     FROM u JOIN (SELECT * FROM fresh UNION ALL SELECT * FROM moved) f ON f.actor_id = u.a),
              ins AS (INSERT INTO {s}.entries (actor_id, sequence, entry_id, entry, feed_pos)
                      SELECT ok.a, ok.q, ok.i, ok.e, ok.p FROM ok),
              tagged AS (INSERT INTO {s}.entry_tags (tag, feed_pos, actor_id, sequence)
                         SELECT DISTINCT t.g, ok.p, ok.a, ok.q
                         FROM unnest($5::int[], $6::bytea[]) AS t(n, g) JOIN ok ON ok.n = t.n
                         WHERE t.g IS NOT NULL
                         ON CONFLICT DO NOTHING)
         SELECT ok.n FROM ok"
    )
}

/// [`append_group_sql`] for items of one or more entries (a group holding
/// batches), every actor once: an item moves its actor's row from
/// `highest = first - 1` to `last` (a new actor's row is inserted at
/// `last` when `first` is 1), and the entries and tags of exactly the
/// items moved are inserted, with the actor's new `feed_pos`. A batch is
/// so stored whole or not at all. Returns the 1-based index of each item
/// appended; an item not returned changed nothing.
///
/// Parameters: per item its actor, first and last sequence; per entry its
/// item's index, sequence, id and bytes; per tag its entry's index (1-based
/// over all entries) and the tag.
pub(crate) fn append_items_sql(s: &str) -> String {
    format!(
        "WITH it AS (SELECT * FROM unnest($1::bytea[], $2::bigint[], $3::bigint[])
                         WITH ORDINALITY AS it(a, f, l, n)),
              e AS (SELECT * FROM unnest($4::int[], $5::bigint[], $6::text[], $7::bytea[])
                        WITH ORDINALITY AS e(n, q, i, b, k)),
              x AS (SELECT pg_current_xact_id()::text::bigint AS xid),
              fresh AS (INSERT INTO {s}.actors (actor_id, highest, feed_pos)
                        SELECT it.a, it.l, (SELECT xid FROM x) FROM it WHERE it.f = 1 ORDER BY it.a
                        ON CONFLICT (actor_id) DO NOTHING
                        RETURNING actor_id, feed_pos),
              moved AS (UPDATE {s}.actors a SET highest = it.l, feed_pos = greatest((SELECT xid FROM x), a.feed_pos)
                        FROM it WHERE a.actor_id = it.a AND it.f > 1 AND a.highest = it.f - 1
                        RETURNING a.actor_id, a.feed_pos),
              ok AS (SELECT it.n, it.a, f.feed_pos AS p
                     FROM it JOIN (SELECT * FROM fresh UNION ALL SELECT * FROM moved) f ON f.actor_id = it.a),
              rows AS (SELECT ok.a, e.q, e.i, e.b, ok.p, e.k FROM ok JOIN e ON e.n = ok.n),
              ins AS (INSERT INTO {s}.entries (actor_id, sequence, entry_id, entry, feed_pos)
                      SELECT rows.a, rows.q, rows.i, rows.b, rows.p FROM rows),
              tagged AS (INSERT INTO {s}.entry_tags (tag, feed_pos, actor_id, sequence)
                         SELECT DISTINCT t.g, rows.p, rows.a, rows.q
                         FROM unnest($8::int[], $9::bytea[]) AS t(k, g) JOIN rows ON rows.k = t.k
                         WHERE t.g IS NOT NULL
                         ON CONFLICT DO NOTHING)
         SELECT ok.n FROM ok"
    )
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
) -> mpsc::UnboundedSender<Queued> {
    let (sender, mut receiver) = mpsc::unbounded_channel::<Queued>();
    let slots = Arc::new(Semaphore::new(slots.max(1)));
    let sql = Arc::new(sql);
    tokio::spawn(async move {
        let mut carried: Option<Queued> = None;
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
            let mut bytes = first.size();
            let mut group = vec![first];
            while group.len() < max_group {
                match receiver.try_recv() {
                    Ok(next) if bytes + next.size() > MAX_GROUP_BYTES => {
                        carried = Some(next);
                        break;
                    }
                    Ok(next) => {
                        bytes += next.size();
                        group.push(next);
                    }
                    Err(_) => break,
                }
            }
            journal_core::metrics::group_commit("postgres", group.len());
            let (pool, sql) = (pool.clone(), Arc::clone(&sql));
            let span =
                tracing::debug_span!("group_commit", backend = "postgres", appends = group.len());
            tokio::spawn(
                async move {
                    commit(&pool, &sql, group).await;
                    drop(permit);
                }
                .instrument(span),
            );
        }
    });
    sender
}

/// Commits a group: through [`commit_ones`] when it holds single appends
/// only, else in one transaction with its batches ([`commit_mixed`]).
async fn commit(pool: &Pool, sql: &GroupSql, group: Vec<Queued>) {
    let mut ones = Vec::with_capacity(group.len());
    let mut batches = Vec::new();
    for queued in group {
        match queued {
            Queued::One(p) => ones.push(p),
            Queued::Batch(b) => batches.push(b),
        }
    }
    if batches.is_empty() {
        commit_ones(pool, sql, ones).await;
    } else {
        commit_mixed(pool, sql, ones, batches).await;
    }
}

async fn commit_ones(pool: &Pool, sql: &GroupSql, mut group: Vec<Pending>) {
    // One lock order for every group: by actor, then sequence.
    group.sort_by(|a, b| {
        a.actor_id
            .cmp(&b.actor_id)
            .then(a.sequence.cmp(&b.sequence))
    });
    let (tag_items, tags) = crate::feed::tag_arrays(group.iter().map(|p| p.tags.clone()));
    // One announcement for the whole group (its actors are sorted, so
    // duplicates are neighbours).
    let announce = crate::listen::payload(group.iter().map(|p| p.actor_id.as_str()));
    let result = send(pool, sql, &group, &tag_items, &tags).await;
    if result.is_ok() {
        sql.notifier.notify(announce);
    }
    let outcomes = match result {
        Ok(outcomes) => outcomes,
        Err(e) if !e.is_retryable() && group.len() > 1 => {
            // One item broke the whole transaction (nothing of the group is
            // stored): send each alone, so only that one fails.
            for p in group {
                let result = append_alone(pool, sql, &Alone::one(&p)).await;
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
    for (p, outcome) in group.into_iter().zip(outcomes) {
        let result = outcome_result(&p.actor_id, p.sequence, outcome);
        let _ = p.reply.send(result);
    }
}

/// A group holding batches, in one transaction ([`send_mixed`]). As for
/// single appends, an error that is not the connection's sends every item
/// again on its own, so that only the item at fault fails; so does a
/// deadlock with another group (possible only when two groups share two
/// actors), since an item alone locks one actor and cannot deadlock.
async fn commit_mixed(
    pool: &Pool,
    sql: &GroupSql,
    mut ones: Vec<Pending>,
    mut batches: Vec<PendingBatch>,
) {
    // One lock order for every group: by actor, then sequence.
    ones.sort_by(|a, b| {
        a.actor_id
            .cmp(&b.actor_id)
            .then(a.sequence.cmp(&b.sequence))
    });
    batches.sort_by(|a, b| a.actor_id.cmp(&b.actor_id).then(a.first.cmp(&b.first)));
    let mut actors: Vec<&str> = ones
        .iter()
        .map(|p| p.actor_id.as_str())
        .chain(batches.iter().map(|b| b.actor_id.as_str()))
        .collect();
    actors.sort_unstable();
    actors.dedup();
    let announce = crate::listen::payload(actors);
    match send_mixed(pool, sql, &ones, &batches).await {
        Ok((one_outcomes, batch_outcomes)) => {
            sql.notifier.notify(announce);
            for (p, outcome) in ones.into_iter().zip(one_outcomes) {
                let result = outcome_result(&p.actor_id, p.sequence, outcome);
                let _ = p.reply.send(result);
            }
            for (b, outcome) in batches.into_iter().zip(batch_outcomes) {
                let result = outcome_result(&b.actor_id, b.first, outcome);
                let _ = b.reply.send(result);
            }
        }
        Err(Failed::Group(_)) if ones.len() + batches.len() > 1 => {
            for p in ones {
                let result = append_alone(pool, sql, &Alone::one(&p)).await;
                let _ = p.reply.send(result);
            }
            for b in batches {
                let result = append_alone(pool, sql, &Alone::batch(&b)).await;
                let _ = b.reply.send(result);
            }
        }
        Err(Failed::Group(e) | Failed::Connection(e)) if !e.is_retryable() => {
            let text = e.to_string();
            for p in ones {
                let _ = p
                    .reply
                    .send(Err(JournalError::storage("postgres", text.clone())));
            }
            for b in batches {
                let _ = b
                    .reply
                    .send(Err(JournalError::storage("postgres", text.clone())));
            }
        }
        Err(Failed::Group(e) | Failed::Connection(e)) => {
            let text = e.to_string();
            let error = || JournalError::unavailable("postgres", text.clone());
            for p in ones {
                let _ = p.reply.send(Err(error()));
            }
            for b in batches {
                let _ = b.reply.send(Err(error()));
            }
        }
    }
}

/// How a group holding batches failed: `Group`, by a statement's error
/// (an item at fault, or a deadlock): nothing is stored, and each item
/// alone gets its own answer; `Connection`, by the connection or the
/// server (every caller is told, and may retry).
enum Failed {
    Group(JournalError),
    Connection(JournalError),
}

/// A statement's error as a [`Failed`]: a deadlock is the group's (each
/// item alone cannot deadlock), as is any error that is not retryable.
fn failed(e: tokio_postgres::Error) -> Failed {
    let deadlock = e.code() == Some(&tokio_postgres::error::SqlState::T_R_DEADLOCK_DETECTED);
    let error = pg_error(e);
    if deadlock || !error.is_retryable() {
        Failed::Group(error)
    } else {
        Failed::Connection(error)
    }
}

/// Sends a group with batches in one transaction; the outcome of each
/// single append and of each batch. When every actor comes once, one
/// statement ([`append_items_sql`]) appends every item whose sequence
/// follows its actor's highest; the single appends it left go through
/// `append_many`, the batches through the single-actor `append` function
/// (pipelined), which say what each is (a retry, a conflict). A batch is
/// stored whole or not at all either way.
async fn send_mixed(
    pool: &Pool,
    sql: &GroupSql,
    ones: &[Pending],
    batches: &[PendingBatch],
) -> Result<(Outcomes, Outcomes), Failed> {
    let mut client = pool
        .get()
        .await
        .map_err(|e| Failed::Connection(pool_error(e)))?;
    let transaction = client.transaction().await.map_err(failed)?;
    let mut one_outcomes: Outcomes = vec![None; ones.len()];
    let mut batch_outcomes: Outcomes = vec![None; batches.len()];
    let mut actors: Vec<&str> = ones
        .iter()
        .map(|p| p.actor_id.as_str())
        .chain(batches.iter().map(|b| b.actor_id.as_str()))
        .collect();
    actors.sort_unstable();
    if actors.windows(2).all(|w| w[0] != w[1]) {
        let rows = Items::of(ones, batches)
            .query(&transaction, &sql.append_items)
            .await
            .map_err(failed)?;
        for row in &rows {
            let Some(n) = row
                .try_get::<_, i64>(0)
                .ok()
                .and_then(|n| usize::try_from(n).ok())
                .and_then(|n| n.checked_sub(1))
            else {
                continue;
            };
            let slot = match n.checked_sub(ones.len()) {
                None => one_outcomes.get_mut(n),
                Some(b) => batch_outcomes.get_mut(b),
            };
            if let Some(slot) = slot {
                *slot = Some((0, 0));
            }
        }
    }
    let rest: Vec<usize> = (0..ones.len())
        .filter(|&i| one_outcomes[i].is_none())
        .collect();
    append_many_on(&transaction, sql, ones, &rest, &mut one_outcomes)
        .await
        .map_err(failed)?;
    let left: Vec<&PendingBatch> = batches
        .iter()
        .zip(&batch_outcomes)
        .filter(|(_, outcome)| outcome.is_none())
        .map(|(b, _)| b)
        .collect();
    if !left.is_empty() {
        let statement = transaction
            .prepare_cached(&sql.append_one)
            .await
            .map_err(failed)?;
        let alone: Vec<Alone> = left.iter().map(|b| Alone::batch(b)).collect();
        let params: Vec<_> = alone.iter().map(Alone::params).collect();
        // Issued together: the connection pipelines them.
        let rows = futures::future::try_join_all(
            params
                .iter()
                .map(|values| transaction.query_one(&statement, values)),
        )
        .await
        .map_err(failed)?;
        let mut rows = rows.iter();
        for slot in batch_outcomes.iter_mut().filter(|slot| slot.is_none()) {
            let Some(row) = rows.next() else { break };
            let outcome = (row.try_get::<_, i32>(0), row.try_get::<_, i64>(1));
            if let (Ok(outcome), Ok(highest)) = outcome {
                *slot = Some((outcome, highest));
            }
        }
    }
    transaction.commit().await.map_err(failed)?;
    Ok((one_outcomes, batch_outcomes))
}

/// A mixed group as [`append_items_sql`]'s arrays: the single appends are
/// items 1 to `ones.len()`, the batches the items after them.
struct Items<'a> {
    actors: Vec<&'a [u8]>,
    firsts: Vec<i64>,
    lasts: Vec<i64>,
    entry_item_of: Vec<i32>,
    sequences: Vec<i64>,
    ids: Vec<&'a str>,
    bytes: Vec<&'a [u8]>,
    tag_entries: Vec<i32>,
    tags: Vec<Vec<u8>>,
}

impl<'a> Items<'a> {
    fn of(ones: &'a [Pending], batches: &'a [PendingBatch]) -> Self {
        let mut items = Items {
            actors: Vec::new(),
            firsts: Vec::new(),
            lasts: Vec::new(),
            entry_item_of: Vec::new(),
            sequences: Vec::new(),
            ids: Vec::new(),
            bytes: Vec::new(),
            tag_entries: Vec::new(),
            tags: Vec::new(),
        };
        let mut item = 0i32;
        for p in ones {
            item += 1;
            let q = crate::seq(p.sequence);
            items.actors.push(p.actor_id.as_bytes());
            items.firsts.push(q);
            items.lasts.push(q);
            items.entry_item_of.push(item);
            items.sequences.push(q);
            items.ids.push(&p.id);
            items.bytes.push(&p.bytes);
            let entry = i32::try_from(items.sequences.len()).unwrap_or(i32::MAX);
            for tag in &p.tags {
                items.tag_entries.push(entry);
                items.tags.push(tag.clone().into_bytes());
            }
        }
        for b in batches {
            item += 1;
            let offset = i32::try_from(items.sequences.len()).unwrap_or(i32::MAX);
            items.actors.push(b.actor_id.as_bytes());
            items.firsts.push(b.sequences.first().copied().unwrap_or(0));
            items.lasts.push(b.sequences.last().copied().unwrap_or(0));
            for ((q, id), bytes) in b.sequences.iter().zip(&b.ids).zip(&b.bytes) {
                items.entry_item_of.push(item);
                items.sequences.push(*q);
                items.ids.push(id);
                items.bytes.push(bytes);
            }
            for (local, tag) in b.tag_items.iter().zip(&b.tags) {
                items.tag_entries.push(offset.saturating_add(*local));
                items.tags.push(tag.clone());
            }
        }
        items
    }

    async fn query<C: GenericClient + Sync>(
        &self,
        client: &C,
        statement: &str,
    ) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
        let statement = client.prepare_cached(statement).await?;
        client
            .query(
                &statement,
                &[
                    &self.actors,
                    &self.firsts,
                    &self.lasts,
                    &self.entry_item_of,
                    &self.sequences,
                    &self.ids,
                    &self.bytes,
                    &self.tag_entries,
                    &self.tags,
                ],
            )
            .await
    }
}

/// A caller's result from an `append` outcome: 0 appended, 1 already
/// stored, 2 a conflict with `highest`; `None`, no outcome at all.
fn outcome_result(actor_id: &str, sequence: u64, outcome: Option<(i32, i64)>) -> JournalResult<()> {
    match outcome {
        Some((0 | 1, _)) => Ok(()),
        Some((_, highest)) => Err(validate::sequence_conflict(
            actor_id,
            crate::unseq(highest),
            sequence,
        )),
        None => Err(JournalError::storage(
            "postgres",
            "the server returned no outcome for an append",
        )),
    }
}

/// What became of each item of a group: `(outcome, highest)` as
/// `append_many` reports them (0 appended, 1 already stored, 2 conflict).
type Outcomes = Vec<Option<(i32, i64)>>;

/// Sends a sorted group: through `append_group` when its actors are
/// distinct, then `append_many` for what that left; through `append_many`
/// alone otherwise.
async fn send(
    pool: &Pool,
    sql: &GroupSql,
    group: &[Pending],
    tag_items: &[i32],
    tags: &[Vec<u8>],
) -> JournalResult<Outcomes> {
    let client = pool.get().await.map_err(pool_error)?;
    let client = &client;
    let mut outcomes: Outcomes = vec![None; group.len()];
    let distinct = group.windows(2).all(|w| w[0].actor_id != w[1].actor_id);
    let mut rest: Vec<usize> = (0..group.len()).collect();
    if distinct {
        match Columns::of(group, &rest)
            .query(client, &sql.append_group, tag_items, tags)
            .await
        {
            Ok(rows) => {
                for row in &rows {
                    let slot = row
                        .try_get::<_, i64>(0)
                        .ok()
                        .and_then(|n| usize::try_from(n).ok())
                        .and_then(|n| n.checked_sub(1))
                        .and_then(|i| outcomes.get_mut(i));
                    if let Some(slot) = slot {
                        *slot = Some((0, 0));
                    }
                }
                rest.retain(|&i| outcomes[i].is_none());
            }
            // Locked in opposite orders by another group: nothing of this
            // one is stored; `append_many` below locks in actor order.
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::T_R_DEADLOCK_DETECTED) => {
            }
            Err(e) => return Err(pg_error(e)),
        }
        if rest.is_empty() {
            return Ok(outcomes);
        }
    }
    append_many_on(client, sql, group, &rest, &mut outcomes)
        .await
        .map_err(pg_error)?;
    Ok(outcomes)
}

/// Sends the items `rest` of `group` through `append_many` and puts their
/// outcomes into `outcomes`.
async fn append_many_on<C: GenericClient + Sync>(
    client: &C,
    sql: &GroupSql,
    group: &[Pending],
    rest: &[usize],
    outcomes: &mut Outcomes,
) -> Result<(), tokio_postgres::Error> {
    if rest.is_empty() {
        return Ok(());
    }
    // The items left, with their tags renumbered to their place among them.
    let (tag_items, tags) = crate::feed::tag_arrays(rest.iter().map(|&i| group[i].tags.clone()));
    let rows = Columns::of(group, rest)
        .query(client, &sql.append_many, &tag_items, &tags)
        .await?;
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
            .and_then(|i| rest.get(i))
            .and_then(|&i| outcomes.get_mut(i))
        {
            *slot = Some((outcome, highest));
        }
    }
    Ok(())
}

/// The items `which` of a group as the statements' column arrays.
struct Columns<'a> {
    actors: Vec<&'a [u8]>,
    sequences: Vec<i64>,
    ids: Vec<&'a str>,
    bytes: Vec<&'a [u8]>,
}

impl<'a> Columns<'a> {
    fn of(group: &'a [Pending], which: &[usize]) -> Self {
        let items = || which.iter().map(|&i| &group[i]);
        Columns {
            actors: items().map(|p| p.actor_id.as_bytes()).collect(),
            sequences: items().map(|p| crate::seq(p.sequence)).collect(),
            ids: items().map(|p| p.id.as_str()).collect(),
            bytes: items().map(|p| p.bytes.as_slice()).collect(),
        }
    }

    /// Runs `statement` (`append_group` or `append_many`: both take these
    /// columns, then the tags) on `client`.
    async fn query<C: GenericClient + Sync>(
        &self,
        client: &C,
        statement: &str,
        tag_items: &[i32],
        tags: &[Vec<u8>],
    ) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
        let statement = client.prepare_cached(statement).await?;
        client
            .query(
                &statement,
                &[
                    &self.actors,
                    &self.sequences,
                    &self.ids,
                    &self.bytes,
                    &tag_items,
                    &tags,
                ],
            )
            .await
    }
}

/// The single-actor `append` function's arguments: one actor's entries
/// (a single append's one, or a batch's), stored all or none.
struct Alone<'a> {
    actor_id: &'a str,
    /// The first sequence as the caller gave it; errors report it.
    first: u64,
    actor: &'a [u8],
    sequences: Vec<i64>,
    ids: Vec<&'a str>,
    bytes: Vec<&'a [u8]>,
    tag_items: Vec<i32>,
    tags: Vec<Vec<u8>>,
}

impl<'a> Alone<'a> {
    fn one(p: &'a Pending) -> Self {
        let (tag_items, tags) = crate::feed::tag_arrays([p.tags.clone()]);
        Alone {
            actor_id: &p.actor_id,
            first: p.sequence,
            actor: p.actor_id.as_bytes(),
            sequences: vec![crate::seq(p.sequence)],
            ids: vec![p.id.as_str()],
            bytes: vec![p.bytes.as_slice()],
            tag_items,
            tags,
        }
    }

    fn batch(b: &'a PendingBatch) -> Self {
        Alone {
            actor_id: &b.actor_id,
            first: b.first,
            actor: b.actor_id.as_bytes(),
            sequences: b.sequences.clone(),
            ids: b.ids.iter().map(String::as_str).collect(),
            bytes: b.bytes.iter().map(Vec::as_slice).collect(),
            tag_items: b.tag_items.clone(),
            tags: b.tags.clone(),
        }
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 6] {
        [
            &self.actor,
            &self.sequences,
            &self.ids,
            &self.bytes,
            &self.tag_items,
            &self.tags,
        ]
    }

    /// The caller's result from the function's row.
    fn result(&self, row: &tokio_postgres::Row) -> JournalResult<()> {
        let outcome = (
            row.try_get::<_, i32>(0).map_err(pg_error)?,
            row.try_get::<_, i64>(1).map_err(pg_error)?,
        );
        outcome_result(self.actor_id, self.first, Some(outcome))
    }
}

/// One single append or batch on its own, through the single-actor
/// `append` function.
async fn append_alone(pool: &Pool, sql: &GroupSql, alone: &Alone<'_>) -> JournalResult<()> {
    let client = pool.get().await.map_err(pool_error)?;
    let statement = client
        .prepare_cached(&sql.append_one)
        .await
        .map_err(pg_error)?;
    let row = client
        .query_one(&statement, &alone.params())
        .await
        .map_err(pg_error)?;
    sql.notifier
        .notify(crate::listen::payload([alone.actor_id]));
    alone.result(&row)
}

#[cfg(test)]
mod tests {
    use journal_core::journal_entry::Entry;
    use journal_core::{JournalEntry, JournalStorage};
    use prost::Message as _;

    use super::{Items, Pending, PendingBatch};
    use crate::{PostgresJournalStorage, PostgresOptions};

    /// A storage in a fresh schema of the test server; `None` (locally)
    /// when it is down.
    async fn storage() -> Option<PostgresJournalStorage> {
        let url = std::env::var("JOURNAL_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let prefix = std::env::var("JOURNAL_TEST_SCHEMA_PREFIX").unwrap_or_else(|_| "jt_".into());
        let options = PostgresOptions {
            schema: format!("{prefix}{}", journal_core::new_entry_id().to_lowercase()),
            pool_size: 2,
            ..PostgresOptions::default()
        };
        match PostgresJournalStorage::open(&url, options).await {
            Ok(storage) => Some(storage),
            Err(e) => {
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "PostgreSQL is needed: {e}"
                );
                eprintln!("SKIPPED: PostgreSQL unreachable: {e}");
                None
            }
        }
    }

    fn entry(actor: &str, sequence: u64) -> JournalEntry {
        JournalEntry::new(
            actor,
            sequence,
            Entry::message_received(format!("m-{sequence}"), "T", b"x".to_vec()),
        )
    }

    fn one(e: &JournalEntry) -> Pending {
        Pending {
            actor_id: e.actor_id.clone(),
            sequence: e.sequence,
            id: e.id.clone(),
            bytes: e.encode_to_vec(),
            tags: vec!["t".into()],
            reply: tokio::sync::oneshot::channel().0,
        }
    }

    fn batch(entries: &[JournalEntry]) -> PendingBatch {
        let (tag_items, tags) =
            crate::feed::tag_arrays(entries.iter().map(|_| vec!["t".to_owned()]));
        PendingBatch {
            actor_id: entries[0].actor_id.clone(),
            first: entries[0].sequence,
            sequences: entries.iter().map(|e| crate::seq(e.sequence)).collect(),
            ids: entries.iter().map(|e| e.id.clone()).collect(),
            bytes: entries.iter().map(prost::Message::encode_to_vec).collect(),
            tag_items,
            tags,
            reply: tokio::sync::oneshot::channel().0,
        }
    }

    /// The one statement for a group of distinct actors holding batches
    /// appends exactly the items that follow their actor's highest: a new
    /// actor's batch from 1, a known actor's next batch and next single
    /// append; not a batch past a gap, one overlapping what is stored, a
    /// retried batch or a retried single append (those are left to the
    /// calls that say what they are). Each moved actor's highest is its
    /// item's last sequence, its entries and tags are stored, and their
    /// feed position is this transaction's, never below an earlier one.
    #[tokio::test]
    async fn append_items_moves_exactly_the_items_that_follow() {
        let Some(storage) = storage().await else {
            return;
        };
        let stored: Vec<JournalEntry> = ["known", "gap", "overlap", "retry", "single-retry"]
            .iter()
            .flat_map(|a| [entry(a, 1), entry(a, 2)])
            .collect();
        for e in &stored {
            storage.append_entry(e).await.expect("seed");
        }
        let fresh_batch = [entry("fresh", 1), entry("fresh", 2), entry("fresh", 3)];
        let known_batch = [entry("known", 3), entry("known", 4)];
        let next_single = entry("single", 1);
        let ones = vec![one(&next_single), one(&stored[9])]; // single-retry's 2
        let batches = vec![
            batch(&fresh_batch),
            batch(&known_batch),
            batch(&[entry("gap", 5), entry("gap", 6)]),
            batch(&[entry("overlap", 2), entry("overlap", 3)]),
            batch(&stored[6..8]), // retry's 1 and 2
        ];
        let sql = super::append_items_sql(storage.schema());
        let client = storage.pool().get().await.expect("client");
        let before: i64 = client
            .query_one(
                &format!("SELECT max(feed_pos) FROM {}.entries", storage.schema()),
                &[],
            )
            .await
            .expect("feed position")
            .get(0);
        let rows = Items::of(&ones, &batches)
            .query(&client, &sql)
            .await
            .expect("the statement");
        let mut moved: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
        moved.sort_unstable();
        // Items: 1 single, 2 single-retry, 3 fresh, 4 known, 5 gap,
        // 6 overlap, 7 retry.
        assert_eq!(moved, [1, 3, 4]);
        for (actor, highest) in [
            ("single", 1),
            ("fresh", 3),
            ("known", 4),
            ("gap", 2),
            ("overlap", 2),
            ("retry", 2),
            ("single-retry", 2),
        ] {
            assert_eq!(
                storage.highest_sequence(actor).await.expect("highest"),
                highest,
                "{actor}"
            );
        }
        assert_eq!(
            storage.replay_from("fresh", 1).await.expect("replay"),
            fresh_batch
        );
        assert_eq!(
            storage.replay_from("known", 1).await.expect("replay"),
            [
                stored[0].clone(),
                stored[1].clone(),
                known_batch[0].clone(),
                known_batch[1].clone()
            ]
        );
        let rows = client
            .query(
                &format!(
                    "SELECT e.feed_pos, (SELECT count(*) FROM {s}.entry_tags t
                                          WHERE t.actor_id = e.actor_id AND t.sequence = e.sequence)
                     FROM {s}.entries e
                     WHERE e.actor_id = ANY($1) AND (e.actor_id <> $2 OR e.sequence > 2)",
                    s = storage.schema()
                ),
                &[
                    &vec![
                        b"fresh".as_slice(),
                        b"known".as_slice(),
                        b"single".as_slice(),
                    ],
                    &b"known".as_slice(),
                ],
            )
            .await
            .expect("positions");
        assert_eq!(rows.len(), 3 + 2 + 1, "the entries the statement added");
        for row in rows {
            let (position, tags): (i64, i64) = (row.get(0), row.get(1));
            assert!(position >= before, "a feed position below an earlier one");
            assert_eq!(tags, 1, "each new entry tagged once");
        }
    }
}
