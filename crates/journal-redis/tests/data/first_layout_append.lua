-- journal-redis's APPEND script of the first key layout, kept as written
-- then (commit 1a120b2): the tests run it to make stores of that layout.
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
