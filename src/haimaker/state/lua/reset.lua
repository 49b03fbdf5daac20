-- The reset job's zeroing of one customer whose period has ended; a no-op when it is not due (another
-- instance, or the request-time reset, already did it). Mirrors MemoryCounterStore.reset_due.
--
-- KEYS[1] customer hash   ARGV 1 now ms (the clock's)   2 next reset ms
-- Returns 1 when the spend was zeroed.
local c = KEYS[1]
if redis.call('HEXISTS', c, 's') == 0 then return 0 end
local rst = redis.call('HGET', c, 'rst')
if rst and tonumber(rst) > tonumber(ARGV[1]) then return 0 end
redis.call('HSET', c, 's', 0, 'rst', ARGV[2])
return 1
