-- Extends the leases of reservations still in flight on a live instance (never re-creates one that
-- expired: its reservation was already given back).
--
-- KEYS[1] live leases   ARGV 1 now ms (0: the server's TIME)   2 lease ms   3.. members
-- Returns how many leases were extended.
local now = tonumber(ARGV[1])
if now == 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local deadline = now + tonumber(ARGV[2])
local n = 0
for i = 3, #ARGV do
  n = n + redis.call('ZADD', KEYS[1], 'XX', 'CH', deadline, ARGV[i])
end
return n
