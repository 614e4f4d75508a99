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

use journal_core::JournalEntry;
use prost::Message;

use crate::keys::ActorKeys;

/// Append one or more entries of one actor.
///
/// KEYS: highest, entries, and, only when the batch starts at sequence 1,
/// the bucket's actor index. An append never names another actor's key or a
/// key shared by the bucket beyond that first one, so moving a slot blocks
/// an actor only while its own keys are split between two nodes.
/// ARGV: actor id, last sequence, then per entry: sequence, entry id, bytes.
/// Returns `{0}` when written, `{1}` for an idempotent retry (every entry
/// stored with the same id), `{2, highest}` for a conflict.
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
if first == hi + 1 then
  for k = 3, #ARGV, 3 do
    redis.call('XADD', KEYS[2], ARGV[k] .. '-0', 'd', ARGV[k + 2])
  end
  redis.call('SET', KEYS[1], ARGV[2])
  if hi == 0 and KEYS[3] then
    redis.call('ZADD', KEYS[3], 0, ARGV[1])
  end
  return {0}
end
if first <= hi then
  for k = 3, #ARGV, 3 do
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

/// Delete an actor: journal, checkpoints, index entry.
///
/// KEYS: highest, entries, checkpoint index, checkpoints, bucket actors.
/// ARGV: actor id. Returns 1 when the actor existed.
pub const DELETE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('SET', KEYS[1], '0')
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[5], ARGV[1])
  return 0
end
redis.call('UNLINK', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
redis.call('ZREM', KEYS[5], ARGV[1])
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

/// `KEYS` of [`APPEND`] for a batch of an actor starting at `first`: the
/// actor index only when the batch may create the actor.
pub fn append_keys(keys: &ActorKeys<'_>, first: u64) -> Vec<Vec<u8>> {
    let mut list = vec![keys.highest(), keys.entries()];
    if first == 1 {
        list.push(keys.bucket().actors());
    }
    list
}

/// `ARGV` of [`APPEND`] for a non-empty batch of one actor: the actor id,
/// the last sequence, then sequence, id and protobuf bytes per entry.
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
}
