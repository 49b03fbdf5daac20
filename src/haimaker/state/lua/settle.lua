-- Settlement of one reservation: it becomes the actual cost and tokens. Idempotent per reservation, so a
-- settle replayed after a Redis outage never charges twice. Mirrors MemoryCounterStore.settle.
--
-- KEYS[1] customer hash   KEYS[2] live leases   KEYS[3] expired leases
-- ARGV 1 reservation member   2 actual cost   3 actual tokens
-- Returns {applied (1/0), spend (-1: customer not seeded)}
local function int(n) return string.format('%d', n) end

local m = ARGV[1]
local _, _, rcost, rtok, rslot, rpart, rws = string.find(m, '^[^|]*|(%d+)|(%d+)|(%d)|(%d)|(%d+)$')
local c = KEYS[1]
local seeded = redis.call('HEXISTS', c, 's') == 1
local ws = tonumber(redis.call('HGET', c, 'ws') or '0')
local tokens = tonumber(ARGV[3])
if redis.call('ZREM', KEYS[2], m) == 1 then
  if seeded then
    redis.call('HINCRBY', c, 'rsv', int(-tonumber(rcost)))
    if rslot == '1' then redis.call('HINCRBY', c, 'inf', -1) end
    if rpart == '1' then redis.call('HINCRBY', c, 'pin', -1) end
    if tonumber(rws) == ws then redis.call('HINCRBY', c, 'wt', int(tokens - tonumber(rtok))) end
  end
elseif redis.call('ZREM', KEYS[3], m) == 1 then
  -- The lease had expired: its reservation was given back then; charge the usage now.
  if seeded and tonumber(rws) == ws then redis.call('HINCRBY', c, 'wt', int(tokens)) end
else
  return {0, tonumber(redis.call('HGET', c, 's') or '-1')}
end
if not seeded then return {1, -1} end
return {1, redis.call('HINCRBY', c, 's', ARGV[2])}
