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
//! The scripts are loaded once at connect time and called by SHA; a server
//! that lost its script cache (restart, failover) answers `NOSCRIPT`, and
//! the call loads them again and retries once.

use fred::bytes::Bytes;
use fred::types::Value;
use journal_core::JournalEntry;
use prost::Message;

use crate::keys::ActorKeys;

/// Append one or more entries of one actor.
///
/// KEYS: highest, entries, bucket actors, bucket stats.
/// ARGV: actor id, last sequence, then per entry: sequence, entry id, bytes.
/// Returns `{0}` when written, `{1}` for an idempotent retry (every entry
/// stored with the same id), `{2, highest}` for a conflict.
pub const APPEND: &str = r"
local hi_text = redis.call('GET', KEYS[1])
local hi = tonumber(hi_text or '0')
local first = tonumber(ARGV[3])
if first == hi + 1 then
  local n = 0
  for k = 3, #ARGV, 3 do
    redis.call('XADD', KEYS[2], ARGV[k] .. '-0', 'i', ARGV[k + 1], 'd', ARGV[k + 2])
    n = n + 1
  end
  redis.call('SET', KEYS[1], ARGV[2])
  if hi == 0 then
    redis.call('ZADD', KEYS[3], 0, ARGV[1])
    redis.call('HINCRBY', KEYS[4], 'a', 1)
  end
  redis.call('HINCRBY', KEYS[4], 'e', n)
  return {0}
end
if first <= hi then
  for k = 3, #ARGV, 3 do
    local id = ARGV[k] .. '-0'
    local got = redis.call('XRANGE', KEYS[2], id, id)
    local stored = got[1]
    if not stored then return {2, hi_text} end
    local fields = stored[2]
    local same = false
    for f = 1, #fields, 2 do
      if fields[f] == 'i' and fields[f + 1] == ARGV[k + 1] then same = true end
    end
    if not same then return {2, hi_text} end
  end
  -- A retry writes nothing, yet a WAIT after it must cover the first
  -- attempt's write: one harmless write moves this connection's
  -- replication offset past it.
  redis.call('HINCRBY', KEYS[4], 'w', 0)
  return {1}
end
return {2, hi_text or '0'}
";

/// Remove entries up to a sequence.
///
/// KEYS: highest, entries, bucket stats.
/// ARGV: the sequence, the first stream id to keep (`<sequence + 1>-0`).
/// Returns the number of entries removed.
pub const TRUNCATE: &str = r"
local hi = redis.call('GET', KEYS[1])
-- Calls that change nothing still write once, so a WAIT after them covers
-- an earlier attempt's write (see APPEND).
redis.call('HINCRBY', KEYS[3], 'w', 0)
if not hi then return 0 end
local removed
if tonumber(ARGV[1]) >= tonumber(hi) then
  removed = redis.call('XTRIM', KEYS[2], 'MAXLEN', 0)
else
  removed = redis.call('XTRIM', KEYS[2], 'MINID', ARGV[2])
end
if removed > 0 then redis.call('HINCRBY', KEYS[3], 'e', -removed) end
return removed
";

/// Delete an actor: journal, checkpoints, index entry.
///
/// KEYS: highest, entries, checkpoint index, checkpoints, bucket actors,
/// bucket stats. ARGV: actor id. Returns 1 when the actor existed.
pub const DELETE: &str = r"
redis.call('HINCRBY', KEYS[6], 'w', 0)
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local n = redis.call('XLEN', KEYS[2])
local c = redis.call('ZCARD', KEYS[3])
redis.call('UNLINK', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
redis.call('ZREM', KEYS[5], ARGV[1])
redis.call('HINCRBY', KEYS[6], 'a', -1)
-- Lua writes -0 as '-0', which HINCRBY refuses: only non-zero counts.
if n > 0 then redis.call('HINCRBY', KEYS[6], 'e', -n) end
if c > 0 then redis.call('HINCRBY', KEYS[6], 'c', -c) end
return 1
";

/// Save (or replace) a checkpoint at or below the highest sequence.
///
/// KEYS: highest, checkpoint index, checkpoints, bucket stats.
/// ARGV: sequence, bytes. Returns `{1}` when saved, `{0, highest}` when
/// the sequence is beyond the highest.
pub const SAVE_CHECKPOINT: &str = r"
local hi_text = redis.call('GET', KEYS[1]) or '0'
if tonumber(ARGV[1]) > tonumber(hi_text) then return {0, hi_text} end
if redis.call('ZADD', KEYS[2], ARGV[1], ARGV[1]) == 1 then
  redis.call('HINCRBY', KEYS[4], 'c', 1)
end
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
return {1}
";

/// Delete checkpoints below a sequence.
///
/// KEYS: checkpoint index, checkpoints, bucket stats. ARGV: the sequence.
/// Returns the number removed.
pub const DELETE_CHECKPOINTS_BEFORE: &str = r"
redis.call('HINCRBY', KEYS[3], 'w', 0)
local seqs = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])
for _, s in ipairs(seqs) do redis.call('HDEL', KEYS[2], s) end
if #seqs > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])
  redis.call('HINCRBY', KEYS[3], 'c', -#seqs)
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

/// `KEYS` of [`APPEND`] for an actor.
pub fn append_keys(keys: &ActorKeys<'_>) -> [Bytes; 4] {
    let bucket = keys.bucket();
    [
        keys.highest(),
        keys.entries(),
        bucket.actors(),
        bucket.stats(),
    ]
}

/// `ARGV` of [`APPEND`] for a non-empty batch of one actor: the actor id,
/// the last sequence, then sequence, id and protobuf bytes per entry.
pub fn append_args(batch: &[JournalEntry]) -> Vec<Value> {
    let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
        return Vec::new();
    };
    let mut args: Vec<Value> = Vec::with_capacity(2 + 3 * batch.len());
    args.push(first.actor_id.clone().into());
    args.push(last.sequence.to_string().into());
    for entry in batch {
        args.push(entry.sequence.to_string().into());
        args.push(entry.id.clone().into());
        args.push(Value::Bytes(Bytes::from(entry.encode_to_vec())));
    }
    args
}

/// Every script, in the order of [`Script`].
pub const ALL: [&str; 7] = [
    APPEND,
    TRUNCATE,
    DELETE,
    SAVE_CHECKPOINT,
    DELETE_CHECKPOINTS_BEFORE,
    LATEST_CHECKPOINT,
    SUMMARY,
];

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
}
