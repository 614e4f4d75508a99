//! Versioned migrations, run under an advisory lock so that processes
//! starting at once migrate one at a time.

use journal_core::{JournalError, JournalResult};
use tokio_postgres::Client;

use crate::error::pg_error;

/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: i32 = 5;

/// The SQL of each migration, for schema `s` (already validated).
#[allow(clippy::too_many_lines)] // the text of the migrations
pub fn migrations(s: &str) -> Vec<String> {
    vec![
        format!(
            r"
CREATE TABLE {s}.actors (
    actor_id BYTEA PRIMARY KEY,
    highest  BIGINT NOT NULL
);
CREATE TABLE {s}.entries (
    actor_id BYTEA NOT NULL,
    sequence BIGINT NOT NULL,
    entry_id TEXT NOT NULL,
    entry    BYTEA NOT NULL,
    PRIMARY KEY (actor_id, sequence)
);
CREATE TABLE {s}.checkpoints (
    actor_id   BYTEA NOT NULL,
    sequence   BIGINT NOT NULL,
    checkpoint BYTEA NOT NULL,
    PRIMARY KEY (actor_id, sequence)
);
-- Appends entries of one actor at highest + 1, atomically, in one round
-- trip. o_outcome: 0 written, 1 already stored with the same ids (an
-- idempotent retry), 2 conflict. o_highest: the highest before the call.
CREATE FUNCTION {s}.append(p_actor BYTEA, p_seqs BIGINT[], p_ids TEXT[], p_entries BYTEA[])
RETURNS TABLE (o_outcome INT, o_highest BIGINT)
LANGUAGE plpgsql AS $fn$
DECLARE
    v_highest BIGINT;
    v_count   INT := cardinality(p_seqs);
    v_first   BIGINT := p_seqs[1];
    v_matched INT;
BEGIN
    IF v_first = 1 THEN
        -- An actor's first append creates its row. A concurrent first
        -- append blocks here until this one commits, then loses the check
        -- below under the row lock: no race is hidden.
        INSERT INTO {s}.actors (actor_id, highest) VALUES (p_actor, 0)
            ON CONFLICT (actor_id) DO NOTHING;
    END IF;
    SELECT a.highest INTO v_highest FROM {s}.actors a WHERE a.actor_id = p_actor FOR UPDATE;
    v_highest := coalesce(v_highest, 0);
    IF v_first = v_highest + 1 THEN
        INSERT INTO {s}.entries (actor_id, sequence, entry_id, entry)
            SELECT p_actor, t.s, t.i, t.e FROM unnest(p_seqs, p_ids, p_entries) AS t(s, i, e);
        UPDATE {s}.actors SET highest = v_highest + v_count WHERE actor_id = p_actor;
        RETURN QUERY SELECT 0, v_highest;
    ELSIF v_first <= v_highest THEN
        SELECT count(*) INTO v_matched
            FROM {s}.entries e JOIN unnest(p_seqs, p_ids) AS t(s, i) ON e.sequence = t.s AND e.entry_id = t.i
            WHERE e.actor_id = p_actor;
        RETURN QUERY SELECT CASE WHEN v_matched = v_count THEN 1 ELSE 2 END, v_highest;
    ELSE
        RETURN QUERY SELECT 2, v_highest;
    END IF;
END
$fn$;
-- Deletes an actor. The row lock comes first, so a concurrent append or
-- checkpoint save finishes before the deletes, and each DELETE (a new
-- statement, a new snapshot) sees what it wrote.
CREATE FUNCTION {s}.delete_actor(p_actor BYTEA) RETURNS VOID
LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM 1 FROM {s}.actors WHERE actor_id = p_actor FOR UPDATE;
    DELETE FROM {s}.entries WHERE actor_id = p_actor;
    DELETE FROM {s}.checkpoints WHERE actor_id = p_actor;
    DELETE FROM {s}.actors WHERE actor_id = p_actor;
END
$fn$;
-- Appends single entries of any actors, each checked and written on its
-- own, in one round trip and one transaction (group commit). Items of one
-- actor must come in sequence order; callers sort by actor so concurrent
-- groups lock rows in the same order. One row per item: its index, outcome
-- (as for append) and the highest before it.
CREATE FUNCTION {s}.append_many(p_actors BYTEA[], p_seqs BIGINT[], p_ids TEXT[], p_entries BYTEA[])
RETURNS TABLE (o_index INT, o_outcome INT, o_highest BIGINT)
LANGUAGE plpgsql AS $fn$
DECLARE
    v_highest BIGINT;
    v_matched INT;
BEGIN
{items}END
$fn$;
",
            items = item_by_item(s)
        ),
        // Version 2: the common group, where every actor comes once and at its
        // highest + 1, is written with one statement per step instead of three
        // per item; groups of one or two, and any other group, go item by item.
        format!(
            r"
CREATE OR REPLACE FUNCTION {s}.append_many(p_actors BYTEA[], p_seqs BIGINT[], p_ids TEXT[], p_entries BYTEA[])
RETURNS TABLE (o_index INT, o_outcome INT, o_highest BIGINT)
LANGUAGE plpgsql AS $fn$
DECLARE
    v_highest BIGINT;
    v_matched INT;
    v_simple  BOOLEAN;
BEGIN
    -- A group of one or two costs fewer statements item by item.
    IF coalesce(cardinality(p_actors), 0) > 2 THEN
        INSERT INTO {s}.actors (actor_id, highest)
            SELECT DISTINCT u.a, 0 FROM unnest(p_actors, p_seqs) AS u(a, q) WHERE u.q = 1
            ORDER BY 1
            ON CONFLICT (actor_id) DO NOTHING;
        -- Lock the group's actors in key order (as every group does, so
        -- groups cannot deadlock), reading the newest committed highest.
        SELECT count(DISTINCT u.a) = cardinality(p_actors) INTO v_simple
            FROM (SELECT a.actor_id, a.highest FROM {s}.actors a
                  WHERE a.actor_id = ANY (p_actors) ORDER BY a.actor_id FOR UPDATE) AS locked
            JOIN unnest(p_actors, p_seqs) AS u(a, q)
              ON u.a = locked.actor_id AND u.q = locked.highest + 1;
        IF v_simple THEN
            INSERT INTO {s}.entries (actor_id, sequence, entry_id, entry)
                SELECT u.a, u.q, u.i, u.e FROM unnest(p_actors, p_seqs, p_ids, p_entries) AS u(a, q, i, e);
            UPDATE {s}.actors a SET highest = u.q
                FROM unnest(p_actors, p_seqs) AS u(a, q) WHERE a.actor_id = u.a;
            RETURN QUERY SELECT u.n::INT, 0, u.q - 1 FROM unnest(p_seqs) WITH ORDINALITY AS u(q, n);
            RETURN;
        END IF;
    END IF;
{items}END
$fn$;
",
            items = item_by_item(s)
        ),
        // Version 3: the due-timer index (contract rules 23 and 24). Ids and
        // actor names are `bytea`, as actor ids are, so any string
        // round-trips. `claim` and `lease_until` are set by a claim and stay
        // after its lease ends; a timer is claimable when it is due and its
        // lease, if any, has ended.
        format!(
            r"
CREATE TABLE {s}.timers (
    timer_id     BYTEA PRIMARY KEY,
    owner_actor  BYTEA NOT NULL,
    target_actor BYTEA NOT NULL,
    target_type  BYTEA NOT NULL,
    due_at       BIGINT NOT NULL,
    payload      BYTEA NOT NULL,
    claim        BYTEA,
    lease_until  BIGINT
);
-- Claims and next_due scan timers by due time, skipping leased ones.
CREATE INDEX timers_due ON {s}.timers (due_at, timer_id);
-- The leased timers only (as many as hosts have in flight): the earliest
-- end of a lease.
CREATE INDEX timers_leased ON {s}.timers (lease_until) WHERE lease_until IS NOT NULL;
"
        ),
        feed_migration(s),
        vacuum_migration(s),
    ]
}

/// Version 5: autovacuum settings per table, for how each is written.
/// PostgreSQL's defaults wait for 20% of a table to be dead (or, for
/// inserts, changed) before vacuuming and 10% before analysing: on a
/// journal of millions of entries that is hours of truncated rows kept
/// and of plans made without statistics. `entries` (appended, truncated
/// from the front) is vacuumed and analysed after 2% and after inserts of
/// 5% (which also keeps its visibility map fresh for index-only reads);
/// `actors` (one row updated per append) after 1%, with room on each page
/// (fillfactor 80) so those updates stay HOT; `checkpoints`, `timers` and
/// `entry_tags` after 5%. Settings only: no data moves.
fn vacuum_migration(s: &str) -> String {
    format!(
        r"
ALTER TABLE {s}.entries SET (
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_insert_scale_factor = 0.05
);
ALTER TABLE {s}.actors SET (
    fillfactor = 80,
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_analyze_scale_factor = 0.05
);
ALTER TABLE {s}.checkpoints SET (autovacuum_vacuum_scale_factor = 0.05);
ALTER TABLE {s}.timers SET (autovacuum_vacuum_scale_factor = 0.05);
ALTER TABLE {s}.entry_tags SET (
    autovacuum_vacuum_scale_factor = 0.05,
    autovacuum_vacuum_insert_scale_factor = 0.05
);
"
    )
}

/// Version 4: the feed (contract rule 28). Each entry gets `feed_pos`, the
/// id of the transaction that wrote it (`pg_current_xact_id()`), raised to
/// at least the actor's previous entry's (kept in `actors.feed_pos`, which
/// survives truncation), so an actor's entries never go backwards even when
/// one transaction took its id before another committed the actor's
/// earlier entry. Rows from before have 0 (added as a constant default:
/// no table rewrite). Tags get an index table written by the append
/// functions in the same transaction as the entries. The functions take
/// the tags as two more arrays; the old four-argument ones stay, as
/// wrappers without tags, for processes of an older version.
/// `projection_offsets` holds projections' offsets (rule 29).
#[allow(clippy::too_many_lines)] // the text of the migration
fn feed_migration(s: &str) -> String {
    format!(
        r"
ALTER TABLE {s}.entries ADD COLUMN IF NOT EXISTS feed_pos BIGINT NOT NULL DEFAULT 0;
ALTER TABLE {s}.actors ADD COLUMN IF NOT EXISTS feed_pos BIGINT NOT NULL DEFAULT 0;
-- The feed's keyset: a page is one range scan in feed order. (IF NOT
-- EXISTS: on a big table, add the column and build the index CONCURRENTLY
-- by hand before upgrading.)
CREATE INDEX IF NOT EXISTS entries_feed ON {s}.entries (feed_pos, actor_id, sequence);
CREATE TABLE {s}.entry_tags (
    tag      BYTEA NOT NULL,
    feed_pos BIGINT NOT NULL,
    actor_id BYTEA NOT NULL,
    sequence BIGINT NOT NULL,
    PRIMARY KEY (tag, feed_pos, actor_id, sequence)
);
-- Truncation and deletion remove an actor's tag rows by sequence.
CREATE INDEX entry_tags_entry ON {s}.entry_tags (actor_id, sequence);
-- Projections' offsets (contract rule 29), written in the projection's
-- own transaction when it runs exactly-once.
CREATE TABLE {s}.projection_offsets (
    name     BYTEA PRIMARY KEY,
    position TEXT NOT NULL
);
-- As version 1's append, plus the feed position and the tags: p_tags[k]
-- tags the entry at index p_tag_items[k] (1-based) of the call.
CREATE FUNCTION {s}.append(p_actor BYTEA, p_seqs BIGINT[], p_ids TEXT[], p_entries BYTEA[],
                           p_tag_items INT[], p_tags BYTEA[])
RETURNS TABLE (o_outcome INT, o_highest BIGINT)
LANGUAGE plpgsql AS $fn$
DECLARE
    v_highest BIGINT;
    v_last    BIGINT;
    v_pos     BIGINT;
    v_count   INT := cardinality(p_seqs);
    v_first   BIGINT := p_seqs[1];
    v_matched INT;
BEGIN
    IF v_first = 1 THEN
        INSERT INTO {s}.actors (actor_id, highest) VALUES (p_actor, 0)
            ON CONFLICT (actor_id) DO NOTHING;
    END IF;
    SELECT a.highest, a.feed_pos INTO v_highest, v_last
        FROM {s}.actors a WHERE a.actor_id = p_actor FOR UPDATE;
    v_highest := coalesce(v_highest, 0);
    IF v_first = v_highest + 1 THEN
        v_pos := greatest(pg_current_xact_id()::text::bigint, coalesce(v_last, 0));
        INSERT INTO {s}.entries (actor_id, sequence, entry_id, entry, feed_pos)
            SELECT p_actor, t.s, t.i, t.e, v_pos FROM unnest(p_seqs, p_ids, p_entries) AS t(s, i, e);
        IF coalesce(cardinality(p_tags), 0) > 0 THEN
            INSERT INTO {s}.entry_tags (tag, feed_pos, actor_id, sequence)
                SELECT DISTINCT t.g, v_pos, p_actor, p_seqs[t.n]
                FROM unnest(p_tag_items, p_tags) AS t(n, g)
                WHERE t.n BETWEEN 1 AND v_count AND t.g IS NOT NULL
                ON CONFLICT DO NOTHING;
        END IF;
        UPDATE {s}.actors SET highest = v_highest + v_count, feed_pos = v_pos
            WHERE actor_id = p_actor;
        RETURN QUERY SELECT 0, v_highest;
    ELSIF v_first <= v_highest THEN
        SELECT count(*) INTO v_matched
            FROM {s}.entries e JOIN unnest(p_seqs, p_ids) AS t(s, i) ON e.sequence = t.s AND e.entry_id = t.i
            WHERE e.actor_id = p_actor;
        RETURN QUERY SELECT CASE WHEN v_matched = v_count THEN 1 ELSE 2 END, v_highest;
    ELSE
        RETURN QUERY SELECT 2, v_highest;
    END IF;
END
$fn$;
CREATE OR REPLACE FUNCTION {s}.append(p_actor BYTEA, p_seqs BIGINT[], p_ids TEXT[], p_entries BYTEA[])
RETURNS TABLE (o_outcome INT, o_highest BIGINT)
LANGUAGE sql AS $fn$
    SELECT * FROM {s}.append(p_actor, p_seqs, p_ids, p_entries, '{{}}'::INT[], '{{}}'::BYTEA[])
$fn$;
-- As version 2's append_many, plus the feed position and the tags.
CREATE FUNCTION {s}.append_many(p_actors BYTEA[], p_seqs BIGINT[], p_ids TEXT[], p_entries BYTEA[],
                                p_tag_items INT[], p_tags BYTEA[])
RETURNS TABLE (o_index INT, o_outcome INT, o_highest BIGINT)
LANGUAGE plpgsql AS $fn$
DECLARE
    v_highest BIGINT;
    v_last    BIGINT;
    v_pos     BIGINT;
    v_xid     BIGINT;
    v_matched INT;
    v_simple  BOOLEAN;
BEGIN
    IF coalesce(cardinality(p_actors), 0) > 2 THEN
        INSERT INTO {s}.actors (actor_id, highest)
            SELECT DISTINCT u.a, 0 FROM unnest(p_actors, p_seqs) AS u(a, q) WHERE u.q = 1
            ORDER BY 1
            ON CONFLICT (actor_id) DO NOTHING;
        SELECT count(DISTINCT u.a) = cardinality(p_actors) INTO v_simple
            FROM (SELECT a.actor_id, a.highest FROM {s}.actors a
                  WHERE a.actor_id = ANY (p_actors) ORDER BY a.actor_id FOR UPDATE) AS locked
            JOIN unnest(p_actors, p_seqs) AS u(a, q)
              ON u.a = locked.actor_id AND u.q = locked.highest + 1;
        IF v_simple THEN
            v_xid := pg_current_xact_id()::text::bigint;
            INSERT INTO {s}.entries (actor_id, sequence, entry_id, entry, feed_pos)
                SELECT u.a, u.q, u.i, u.e, greatest(v_xid, a.feed_pos)
                FROM unnest(p_actors, p_seqs, p_ids, p_entries) AS u(a, q, i, e)
                JOIN {s}.actors a ON a.actor_id = u.a;
            IF coalesce(cardinality(p_tags), 0) > 0 THEN
                INSERT INTO {s}.entry_tags (tag, feed_pos, actor_id, sequence)
                    SELECT DISTINCT t.g, e.feed_pos, e.actor_id, e.sequence
                    FROM unnest(p_tag_items, p_tags) AS t(n, g)
                    JOIN {s}.entries e ON e.actor_id = p_actors[t.n] AND e.sequence = p_seqs[t.n]
                                      AND e.entry_id = p_ids[t.n]
                    WHERE t.g IS NOT NULL
                    ON CONFLICT DO NOTHING;
            END IF;
            UPDATE {s}.actors a SET highest = u.q, feed_pos = greatest(v_xid, a.feed_pos)
                FROM unnest(p_actors, p_seqs) AS u(a, q) WHERE a.actor_id = u.a;
            RETURN QUERY SELECT u.n::INT, 0, u.q - 1 FROM unnest(p_seqs) WITH ORDINALITY AS u(q, n);
            RETURN;
        END IF;
    END IF;
    FOR i IN 1 .. coalesce(cardinality(p_actors), 0) LOOP
        IF p_seqs[i] = 1 THEN
            INSERT INTO {s}.actors (actor_id, highest) VALUES (p_actors[i], 0)
                ON CONFLICT (actor_id) DO NOTHING;
        END IF;
        SELECT a.highest, a.feed_pos INTO v_highest, v_last
            FROM {s}.actors a WHERE a.actor_id = p_actors[i] FOR UPDATE;
        v_highest := coalesce(v_highest, 0);
        o_index := i;
        o_highest := v_highest;
        IF p_seqs[i] = v_highest + 1 THEN
            v_pos := greatest(pg_current_xact_id()::text::bigint, coalesce(v_last, 0));
            INSERT INTO {s}.entries (actor_id, sequence, entry_id, entry, feed_pos)
                VALUES (p_actors[i], p_seqs[i], p_ids[i], p_entries[i], v_pos);
            IF i = ANY (p_tag_items) THEN
                INSERT INTO {s}.entry_tags (tag, feed_pos, actor_id, sequence)
                    SELECT DISTINCT t.g, v_pos, p_actors[i], p_seqs[i]
                    FROM unnest(p_tag_items, p_tags) AS t(n, g)
                    WHERE t.n = i AND t.g IS NOT NULL
                    ON CONFLICT DO NOTHING;
            END IF;
            UPDATE {s}.actors SET highest = p_seqs[i], feed_pos = v_pos WHERE actor_id = p_actors[i];
            o_outcome := 0;
        ELSIF p_seqs[i] <= v_highest THEN
            SELECT count(*) INTO v_matched FROM {s}.entries e
                WHERE e.actor_id = p_actors[i] AND e.sequence = p_seqs[i] AND e.entry_id = p_ids[i];
            o_outcome := CASE WHEN v_matched = 1 THEN 1 ELSE 2 END;
        ELSE
            o_outcome := 2;
        END IF;
        RETURN NEXT;
    END LOOP;
END
$fn$;
CREATE OR REPLACE FUNCTION {s}.append_many(p_actors BYTEA[], p_seqs BIGINT[], p_ids TEXT[], p_entries BYTEA[])
RETURNS TABLE (o_index INT, o_outcome INT, o_highest BIGINT)
LANGUAGE sql AS $fn$
    SELECT * FROM {s}.append_many(p_actors, p_seqs, p_ids, p_entries, '{{}}'::INT[], '{{}}'::BYTEA[])
$fn$;
CREATE OR REPLACE FUNCTION {s}.delete_actor(p_actor BYTEA) RETURNS VOID
LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM 1 FROM {s}.actors WHERE actor_id = p_actor FOR UPDATE;
    DELETE FROM {s}.entry_tags WHERE actor_id = p_actor;
    DELETE FROM {s}.entries WHERE actor_id = p_actor;
    DELETE FROM {s}.checkpoints WHERE actor_id = p_actor;
    DELETE FROM {s}.actors WHERE actor_id = p_actor;
END
$fn$;
"
    )
}

/// Creates the schema if needed and applies the missing migrations, in one
/// transaction holding an advisory lock keyed by the schema's name.
pub(crate) async fn migrate(client: &mut Client, schema: &str) -> JournalResult<()> {
    let tx = client.transaction().await.map_err(pg_error)?;
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 7411))",
        &[&format!("journal:{schema}")],
    )
    .await
    .map_err(pg_error)?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
         CREATE TABLE IF NOT EXISTS {schema}.journal_schema (version INT NOT NULL);"
    ))
    .await
    .map_err(pg_error)?;
    let version: i32 = tx
        .query_one(
            &format!("SELECT coalesce(max(version), 0) FROM {schema}.journal_schema"),
            &[],
        )
        .await
        .map_err(pg_error)?
        .try_get(0)
        .map_err(pg_error)?;
    if version > SCHEMA_VERSION {
        return Err(JournalError::storage(
            "postgres",
            format!("schema {schema} is at journal version {version}, written by a newer journal-postgres (this one reads up to {SCHEMA_VERSION})"),
        ));
    }
    let start = usize::try_from(version).unwrap_or(0);
    for (i, sql) in migrations(schema).iter().enumerate().skip(start) {
        tx.batch_execute(sql).await.map_err(pg_error)?;
        let applied = i32::try_from(i + 1).unwrap_or(i32::MAX);
        tx.execute(
            &format!("INSERT INTO {schema}.journal_schema (version) VALUES ($1)"),
            &[&applied],
        )
        .await
        .map_err(pg_error)?;
    }
    tx.commit().await.map_err(pg_error)
}

/// Checks, without changing anything, that `schema` holds this build's
/// schema version: a newer one (written by a newer build), an older one
/// or none at all is an error saying what to do. For a storage opened with
/// `run_migrations: false`.
pub(crate) async fn check(client: &Client, schema: &str) -> JournalResult<()> {
    let exists: bool = client
        .query_one(
            "SELECT to_regclass($1) IS NOT NULL",
            &[&format!("{schema}.journal_schema")],
        )
        .await
        .map_err(pg_error)?
        .try_get(0)
        .map_err(pg_error)?;
    let version: i32 = if exists {
        client
            .query_one(
                &format!("SELECT coalesce(max(version), 0) FROM {schema}.journal_schema"),
                &[],
            )
            .await
            .map_err(pg_error)?
            .try_get(0)
            .map_err(pg_error)?
    } else {
        0
    };
    let problem = match version.cmp(&SCHEMA_VERSION) {
        std::cmp::Ordering::Equal => return Ok(()),
        std::cmp::Ordering::Greater => format!(
            "schema {schema} is at journal version {version}, written by a newer \
             journal-postgres (this one reads up to {SCHEMA_VERSION})"
        ),
        std::cmp::Ordering::Less if version == 0 => format!(
            "schema {schema} holds no journal (run_migrations is off): open it once with \
             run_migrations on to create it"
        ),
        std::cmp::Ordering::Less => format!(
            "schema {schema} is at journal version {version} and this journal-postgres needs \
             {SCHEMA_VERSION} (run_migrations is off): open it once with run_migrations on to \
             upgrade it"
        ),
    };
    Err(JournalError::storage("postgres", problem))
}

/// `append_many`'s item-by-item loop, in both versions of the function:
/// each item's actor row locked, checked and written on its own.
fn item_by_item(s: &str) -> String {
    format!(
        r"    FOR i IN 1 .. coalesce(cardinality(p_actors), 0) LOOP
        IF p_seqs[i] = 1 THEN
            INSERT INTO {s}.actors (actor_id, highest) VALUES (p_actors[i], 0)
                ON CONFLICT (actor_id) DO NOTHING;
        END IF;
        SELECT a.highest INTO v_highest FROM {s}.actors a WHERE a.actor_id = p_actors[i] FOR UPDATE;
        v_highest := coalesce(v_highest, 0);
        o_index := i;
        o_highest := v_highest;
        IF p_seqs[i] = v_highest + 1 THEN
            INSERT INTO {s}.entries (actor_id, sequence, entry_id, entry)
                VALUES (p_actors[i], p_seqs[i], p_ids[i], p_entries[i]);
            UPDATE {s}.actors SET highest = p_seqs[i] WHERE actor_id = p_actors[i];
            o_outcome := 0;
        ELSIF p_seqs[i] <= v_highest THEN
            SELECT count(*) INTO v_matched FROM {s}.entries e
                WHERE e.actor_id = p_actors[i] AND e.sequence = p_seqs[i] AND e.entry_id = p_ids[i];
            o_outcome := CASE WHEN v_matched = 1 THEN 1 ELSE 2 END;
        ELSE
            o_outcome := 2;
        END IF;
        RETURN NEXT;
    END LOOP;
"
    )
}
