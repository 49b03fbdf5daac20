-- Seeding a customer's spend from the durable store: only when absent, unless told to overwrite
-- (an admin write of the spend itself).
--
-- KEYS[1] customer hash   ARGV 1 spend   2 reset ms ('': none)   3 overwrite (1/0)   4 idle ttl ms
-- Returns the spend now held.
local c = KEYS[1]
if ARGV[3] == '1' or redis.call('HEXISTS', c, 's') == 0 then
  redis.call('HSET', c, 's', ARGV[1])
  if ARGV[2] ~= '' then redis.call('HSET', c, 'rst', ARGV[2]) else redis.call('HDEL', c, 'rst') end
  redis.call('PEXPIRE', c, tonumber(ARGV[4]))
end
return tonumber(redis.call('HGET', c, 's'))
