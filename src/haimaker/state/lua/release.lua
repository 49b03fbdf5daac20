-- Release of one reservation: everything it took is given back, nothing is charged. Idempotent.
-- Mirrors MemoryCounterStore.release.
--
-- KEYS[1] customer hash   KEYS[2] live leases   KEYS[3] expired leases
-- ARGV 1 reservation member
-- Returns 1 when the reservation was still held, else 0.
local function int(n) return string.format('%d', n) end

local m = ARGV[1]
local _, _, rcost, rtok, rslot, rpart, rws = string.find(m, '^[^|]*|(%d+)|(%d+)|(%d)|(%d)|(%d+)$')
local c = KEYS[1]
if redis.call('ZREM', KEYS[2], m) == 0 then
  redis.call('ZREM', KEYS[3], m)
  return 0
end
if redis.call('HEXISTS', c, 's') == 0 then return 0 end
redis.call('HINCRBY', c, 'rsv', int(-tonumber(rcost)))
if rslot == '1' then redis.call('HINCRBY', c, 'inf', -1) end
if rpart == '1' then redis.call('HINCRBY', c, 'pin', -1) end
local ws = tonumber(redis.call('HGET', c, 'ws') or '0')
if tonumber(rws) == ws then redis.call('HINCRBY', c, 'wt', int(-tonumber(rtok))) end
return 1
