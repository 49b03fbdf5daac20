-- The reseed fence after Redis lost its data: one instant, on the server's clock, shared by every instance.
-- Instances stop charging locally at the fence; customers are seeded from the durable store only after the
-- fence plus a margin, once every instance has written what it charged before it.
--
-- KEYS[1] fence key   ARGV 1 'set' (the first recovering instance creates it) or 'wait'
--                     ARGV 2 grace ms (from now, when creating)   ARGV 3 margin ms (added when waiting)
-- Returns how many ms the caller should wait (0: no fence, or it has passed).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[1] == 'set' then
  redis.call('SET', KEYS[1], string.format('%d', now + tonumber(ARGV[2])), 'NX', 'PX', 60000)
end
local fence = redis.call('GET', KEYS[1])
if not fence then return 0 end
return math.max(0, tonumber(fence) + tonumber(ARGV[3]) - now)
