//! The Lua scripts: every write is one script, so it is atomic and one
//! round trip. Keys come in `KEYS`, data in `ARGV`; no actor id or payload is
//! ever part of a script's text. Sequences travel as decimal strings and are
//! compared with `tonumber` (a double), and checkpoint sequences are
//! sorted-set scores (doubles): exact because no sequence that reaches a
//! script is above `journal_core::validate::MAX_SEQUENCE` = 2^53 - 1.
//! Appends and checkpoints above it are refused by validation, bounds of
//! reads and truncations are clamped to it, and `highest + 1` at the limit,
//! 2^53, is still exact.
//!
//! The scripts are called by SHA-1; a server that does not hold one yet (a
//! new server, a restart, a failover) answers `NOSCRIPT`, and the call is
//! sent once more with the script's text, which caches it.

use std::collections::BTreeMap;

use journal_core::feed::entry_tags;
use journal_core::JournalEntry;
use prost::Message;

use crate::keys::ActorKeys;

/// Append one or more entries of one actor, with their feed references.
///
/// KEYS: highest, entries, the bucket's actor index, the bucket's feed,
/// the bucket's incarnations, the count of buckets with a feed (on one
/// server; on a cluster the bucket's feed again, meaning none), then the
/// bucket's feed of each tag the batch carries. On a cluster, an append
/// names only the actor's keys and its bucket's (one slot), so moving a
/// slot blocks the bucket's appends while its keys are split between two
/// nodes.
/// ARGV: actor id, last sequence, then per entry: sequence, entry id,
/// bytes (as many entries as the sequences cover), then per run of tagged
/// entries: the index in KEYS of the tag's feed, first and last sequence.
/// Returns `{0}` when written, `{1}` for an idempotent retry (every entry
/// stored with the same id), `{2, highest}` for a conflict. Only a write
/// adds feed references: one to the bucket's feed for the batch, one to a
/// tag's feed per run, in the same script, so they commit with the entries.
pub const APPEND: &str = r"
-- The id of a stored entry: its `i` field (entries of the first layout),
-- else field 1 of the protobuf bytes in `d` (tag 0x0A, a varint length,
-- the UTF-8 id), which prost writes first.
local function stored_id(fields)
  local d
  for f = 1, #fields, 2 do
    if fields[f] == 'i' then return fields[f + 1] end
    if fields[f] == 'd' then d = fields[f + 1] end
  end
  if not d or string.byte(d, 1) ~= 10 then return nil end
  local len, scale, pos = 0, 1, 2
  while true do
    local b = string.byte(d, pos)
    if not b or pos > 6 then return nil end
    len = len + (b % 128) * scale
    pos = pos + 1
    if b < 128 then break end
    scale = scale * 128
  end
  return string.sub(d, pos, pos + len - 1)
end
local hi_text = redis.call('GET', KEYS[1])
local hi = tonumber(hi_text or '0')
local first = tonumber(ARGV[3])
local stop = 2 + 3 * (tonumber(ARGV[2]) - first + 1)
if first == hi + 1 then
  for k = 3, stop, 3 do
    redis.call('XADD', KEYS[2], ARGV[k] .. '-0', 'd', ARGV[k + 2])
  end
  redis.call('SET', KEYS[1], ARGV[2])
  if hi == 0 then
    redis.call('ZADD', KEYS[3], 0, ARGV[1])
  end
  local gen = redis.call('HGET', KEYS[5], ARGV[1])
  local function ref(key, f, l)
    if gen then
      redis.call('XADD', key, '*', 'a', ARGV[1], 'f', f, 'l', l, 'g', gen)
    else
      redis.call('XADD', key, '*', 'a', ARGV[1], 'f', f, 'l', l)
    end
  end
  local counted = KEYS[6] ~= KEYS[4] and redis.call('EXISTS', KEYS[4]) == 0
  ref(KEYS[4], ARGV[3], ARGV[2])
  if counted then
    -- The count, and which append began it (its first entry's id, a
    -- ULID): a count lost and begun again is another count.
    -- A key of another type there (not ours) counts nothing, and the
    -- reader, unable to read it, reads every bucket: the append goes on.
    if redis.pcall('HINCRBY', KEYS[6], 'n', 1) == 1 then
      redis.pcall('HSET', KEYS[6], 'id', ARGV[4])
    end
  end
  for k = stop + 1, #ARGV, 3 do
    ref(KEYS[tonumber(ARGV[k])], ARGV[k + 1], ARGV[k + 2])
  end
  return {0}
end
if first <= hi then
  for k = 3, stop, 3 do
    local id = ARGV[k] .. '-0'
    local got = redis.call('XRANGE', KEYS[2], id, id)
    local stored = got[1]
    if not stored then return {2, hi_text} end
    if stored_id(stored[2]) ~= ARGV[k + 1] then return {2, hi_text} end
  end
  redis.call('SET', KEYS[1], hi_text)
  return {1}
end
return {2, hi_text or '0'}
";

/// Remove entries up to a sequence.
///
/// KEYS: highest, entries.
/// ARGV: the sequence, the first stream id to keep (`<sequence + 1>-0`).
/// Returns the number of entries removed.
pub const TRUNCATE: &str = r"
local hi = redis.call('GET', KEYS[1])
if not hi then
  redis.call('SET', KEYS[1], '0')
  redis.call('DEL', KEYS[1])
  return 0
end
local removed
if tonumber(ARGV[1]) >= tonumber(hi) then
  removed = redis.call('XTRIM', KEYS[2], 'MAXLEN', 0)
else
  removed = redis.call('XTRIM', KEYS[2], 'MINID', ARGV[2])
end
if removed == 0 then redis.call('SET', KEYS[1], hi) end
return removed
";

/// Delete an actor: journal, checkpoints, index entry; its incarnation
/// grows by one, so the feed references it left behind are skipped.
///
/// KEYS: highest, entries, checkpoint index, checkpoints, bucket actors,
/// bucket incarnations. ARGV: actor id. Returns 1 when the actor existed.
pub const DELETE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('SET', KEYS[1], '0')
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[5], ARGV[1])
  return 0
end
redis.call('UNLINK', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
redis.call('ZREM', KEYS[5], ARGV[1])
redis.call('HINCRBY', KEYS[6], ARGV[1], 1)
return 1
";

/// Save (or replace) a checkpoint at or below the highest sequence.
///
/// KEYS: highest, checkpoint index, checkpoints.
/// ARGV: sequence, bytes. Returns `{1}` when saved, `{0, highest}` when
/// the sequence is beyond the highest.
pub const SAVE_CHECKPOINT: &str = r"
local hi_text = redis.call('GET', KEYS[1]) or '0'
if tonumber(ARGV[1]) > tonumber(hi_text) then return {0, hi_text} end
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[1])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
return {1}
";

/// Delete checkpoints below a sequence.
///
/// KEYS: highest, checkpoint index, checkpoints. ARGV: the sequence.
/// Returns the number removed.
pub const DELETE_CHECKPOINTS_BEFORE: &str = r"
local seqs = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[1])
for _, s in ipairs(seqs) do redis.call('HDEL', KEYS[3], s) end
if #seqs > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[1])
else
  local v = redis.call('GET', KEYS[1])
  if v then
    redis.call('SET', KEYS[1], v)
  else
    redis.call('SET', KEYS[1], '0')
    redis.call('DEL', KEYS[1])
  end
end
return #seqs
";

/// The latest checkpoint, read atomically with its sequence.
///
/// KEYS: checkpoint index, checkpoints. Returns `{sequence, bytes}` or an
/// empty array.
pub const LATEST_CHECKPOINT: &str = r"
local s = redis.call('ZRANGE', KEYS[1], -1, -1)
if #s == 0 then return {} end
return {s[1], redis.call('HGET', KEYS[2], s[1])}
";

/// Where an actor stands, read atomically.
///
/// KEYS: highest, entries, checkpoint index. Returns `{highest, entries,
/// checkpoints}`.
pub const SUMMARY: &str = r"
return {redis.call('GET', KEYS[1]) or '0', redis.call('XLEN', KEYS[2]), redis.call('ZCARD', KEYS[3])}
";

/// Add or replace a timer, dropping any claim on it.
///
/// KEYS: a timer shard's due, leases, records, claims.
/// ARGV: timer id, due time (ms, decimal), encoded record. Returns 1.
pub const TIMER_SCHEDULE: &str = r"
redis.call('HSET', KEYS[3], ARGV[1], ARGV[3])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[4], ARGV[1])
return 1
";

/// Remove a timer nobody holds an unexpired lease on.
///
/// KEYS: a timer shard's due, leases, records, claims.
/// ARGV: timer id, now (ms). Returns 1 when removed, 0 when absent or
/// leased until after now.
pub const TIMER_CANCEL: &str = r"
if redis.call('HEXISTS', KEYS[3], ARGV[1]) == 0 then return 0 end
local lease = redis.call('ZSCORE', KEYS[2], ARGV[1])
if lease and tonumber(lease) > tonumber(ARGV[2]) then return 0 end
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[4], ARGV[1])
return 1
";

/// The loop shared by [`TIMER_PEEK`] and [`TIMER_CLAIM`]: walks the due
/// timers (score <= now) in due order, page by page, and calls `take(id,
/// due)` for each one not leased beyond now, until `take` has been called
/// `max` times. Claimed timers stay in the due set, so ranks do not shift
/// while it walks; the timers it skips are the leased ones, as many as
/// hosts are firing. (A macro, so that each script's text is one literal.)
macro_rules! timer_walk {
    () => {
        r"
local function walk(due_key, lease_key, now_text, max, take)
  local now = tonumber(now_text)
  local taken, offset, page = 0, 0, math.max(max, 64)
  while taken < max do
    local ids = redis.call('ZRANGEBYSCORE', due_key, '-inf', now_text, 'WITHSCORES', 'LIMIT', offset, page)
    if #ids == 0 then break end
    for i = 1, #ids, 2 do
      local lease = redis.call('ZSCORE', lease_key, ids[i])
      if not lease or tonumber(lease) <= now then
        if take(ids[i], ids[i + 1]) then taken = taken + 1 end
        if taken >= max then break end
      end
    end
    offset = offset + #ids / 2
  end
end
"
    };
}

/// [`timer_walk!`]'s function, then `$body`.
macro_rules! concat_timer_walk {
    ($body:literal) => {
        concat!(timer_walk!(), $body)
    };
}

/// The due times of up to `max` claimable timers of a shard, earliest
/// first, without claiming them (read only).
///
/// KEYS: a timer shard's due, leases. ARGV: now (ms), max.
/// Returns the due times, integers.
pub const TIMER_PEEK: &str = concat_timer_walk!(
    r"
local out = {}
walk(KEYS[1], KEYS[2], ARGV[1], tonumber(ARGV[2]), function(id, due)
  out[#out + 1] = tonumber(due)
  return true
end)
return out
"
);

/// Claim up to `max` due timers of a shard that nobody holds an unexpired
/// lease on, earliest due first (equal due times in byte order of the
/// ids).
///
/// KEYS: a timer shard's due, leases, records, claims.
/// ARGV: now (ms), max, lease end (ms), claim token.
/// Returns `{id, record, id, record, ...}`. A due entry without a record
/// (which only a hand edit leaves) is dropped from the index, not claimed.
pub const TIMER_CLAIM: &str = concat_timer_walk!(
    r"
local out, orphans = {}, {}
walk(KEYS[1], KEYS[2], ARGV[1], tonumber(ARGV[2]), function(id, due)
  local record = redis.call('HGET', KEYS[3], id)
  if not record then
    orphans[#orphans + 1] = id
    return false
  end
  redis.call('ZADD', KEYS[2], ARGV[3], id)
  redis.call('HSET', KEYS[4], id, ARGV[4])
  out[#out + 1] = id
  out[#out + 1] = record
  return true
end)
for _, id in ipairs(orphans) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
  redis.call('HDEL', KEYS[4], id)
end
return out
"
);

/// Remove a fired timer if its latest claim is the caller's.
///
/// KEYS: a timer shard's due, leases, records, claims.
/// ARGV: timer id, claim token. Returns 1 when removed, else 0.
pub const TIMER_COMPLETE: &str = r"
if redis.call('HGET', KEYS[4], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[4], ARGV[1])
return 1
";

/// When a shard next needs a look (read only): the earliest due time
/// among its timers not leased beyond now, and the earliest lease that
/// ends after now.
///
/// KEYS: a timer shard's due, leases. ARGV: now (ms).
/// Returns `{due, lease}`, each an integer, -1 for none.
pub const TIMER_NEXT_DUE: &str = r"
local now = tonumber(ARGV[1])
local due = -1
local offset = 0
while due < 0 do
  local ids = redis.call('ZRANGE', KEYS[1], offset, offset + 63, 'WITHSCORES')
  if #ids == 0 then break end
  for i = 1, #ids, 2 do
    local lease = redis.call('ZSCORE', KEYS[2], ids[i])
    if not lease or tonumber(lease) <= now then
      due = tonumber(ids[i + 1])
      break
    end
  end
  offset = offset + 64
end
local leased = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. ARGV[1], '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
local lease = -1
if leased[2] then lease = tonumber(leased[2]) end
return {due, lease}
";

/// `KEYS` of [`APPEND`] for a non-empty batch of one actor: the actor's
/// and its bucket's keys, the count of buckets with a feed (unless
/// `one_slot`: a cluster, or a server that refuses keys of several slots
/// in one script), then the bucket's feed of each tag the batch carries,
/// in tag order ([`batch_tags`]).
pub fn append_keys(keys: &ActorKeys<'_>, batch: &[JournalEntry], one_slot: bool) -> Vec<Vec<u8>> {
    let bucket = keys.bucket();
    let counted = if one_slot {
        bucket.feed()
    } else {
        keys.feed_buckets()
    };
    let mut list = vec![
        keys.highest(),
        keys.entries(),
        bucket.actors(),
        bucket.feed(),
        bucket.incarnations(),
        counted,
    ];
    for (tag, _) in batch_tags(batch) {
        list.push(bucket.tag_feed(&tag));
    }
    list
}

/// The tags of a batch's entries ([`entry_tags`]), each with the runs of
/// consecutive entries that carry it (first and last sequence), in tag
/// order.
pub fn batch_tags(batch: &[JournalEntry]) -> BTreeMap<String, Vec<(u64, u64)>> {
    let mut tags: BTreeMap<String, Vec<(u64, u64)>> = BTreeMap::new();
    for entry in batch {
        for tag in entry_tags(entry) {
            let runs = tags.entry(tag).or_default();
            match runs.last_mut() {
                Some((_, last)) if last.checked_add(1) == Some(entry.sequence) => {
                    *last = entry.sequence;
                }
                _ => runs.push((entry.sequence, entry.sequence)),
            }
        }
    }
    tags
}

/// The first `KEYS` index (1-based, as Lua counts) of the tag feeds in
/// [`append_keys`].
const FIRST_TAG_KEY: usize = 7;

/// `ARGV` of [`APPEND`] for a non-empty batch of one actor: the actor id,
/// the last sequence, then sequence, id and protobuf bytes per entry, then
/// per run of tagged entries the index of its tag's feed in
/// [`append_keys`], its first and last sequence.
pub fn append_args(batch: &[JournalEntry]) -> Vec<Vec<u8>> {
    let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
        return Vec::new();
    };
    let mut args: Vec<Vec<u8>> = Vec::with_capacity(2 + 3 * batch.len());
    args.push(first.actor_id.as_bytes().to_vec());
    args.push(last.sequence.to_string().into_bytes());
    for entry in batch {
        args.push(entry.sequence.to_string().into_bytes());
        args.push(entry.id.as_bytes().to_vec());
        args.push(entry.encode_to_vec());
    }
    for (i, (_, runs)) in batch_tags(batch).into_iter().enumerate() {
        for (from, to) in runs {
            args.push((FIRST_TAG_KEY + i).to_string().into_bytes());
            args.push(from.to_string().into_bytes());
            args.push(to.to_string().into_bytes());
        }
    }
    args
}

/// Every script, in the order of [`Script`].
pub const ALL: [&str; 13] = [
    APPEND,
    TRUNCATE,
    DELETE,
    SAVE_CHECKPOINT,
    DELETE_CHECKPOINTS_BEFORE,
    LATEST_CHECKPOINT,
    SUMMARY,
    TIMER_SCHEDULE,
    TIMER_CANCEL,
    TIMER_PEEK,
    TIMER_CLAIM,
    TIMER_COMPLETE,
    TIMER_NEXT_DUE,
];

/// The SHA-1 of a script, as `EVALSHA` names it.
pub fn sha(script: Script) -> &'static str {
    static SHAS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let shas = SHAS.get_or_init(|| {
        ALL.iter()
            .map(|lua| redis::Script::new(lua).get_hash().to_owned())
            .collect()
    });
    &shas[script as usize]
}

/// Whether a write script's reply is a refusal that wrote nothing: an
/// append's conflict, a checkpoint beyond the highest sequence.
pub fn refused(script: Script, reply: &redis::Value) -> bool {
    let first = match reply {
        redis::Value::Array(items) => items.first(),
        _ => None,
    };
    let code = match first {
        Some(redis::Value::Int(n)) => Some(*n),
        _ => None,
    };
    match script {
        Script::Append => code == Some(2),
        Script::SaveCheckpoint => code == Some(0),
        // Nothing to cancel or complete, nothing due: nothing written.
        Script::TimerCancel | Script::TimerComplete => matches!(reply, redis::Value::Int(0)),
        Script::TimerClaim => matches!(reply, redis::Value::Array(items) if items.is_empty()),
        _ => false,
    }
}

/// Names the scripts of [`ALL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Script {
    /// [`APPEND`]
    Append = 0,
    /// [`TRUNCATE`]
    Truncate = 1,
    /// [`DELETE`]
    Delete = 2,
    /// [`SAVE_CHECKPOINT`]
    SaveCheckpoint = 3,
    /// [`DELETE_CHECKPOINTS_BEFORE`]
    DeleteCheckpointsBefore = 4,
    /// [`LATEST_CHECKPOINT`]
    LatestCheckpoint = 5,
    /// [`SUMMARY`]
    Summary = 6,
    /// [`TIMER_SCHEDULE`]
    TimerSchedule = 7,
    /// [`TIMER_CANCEL`]
    TimerCancel = 8,
    /// [`TIMER_PEEK`]
    TimerPeek = 9,
    /// [`TIMER_CLAIM`]
    TimerClaim = 10,
    /// [`TIMER_COMPLETE`]
    TimerComplete = 11,
    /// [`TIMER_NEXT_DUE`]
    TimerNextDue = 12,
}
