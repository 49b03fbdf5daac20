-- A charge without a reservation (customers without limits, replays): spend += cost, only for a
-- customer that is seeded (an unseeded one is seeded from the durable store, which has the charge).
--
-- KEYS[1] customer hash   ARGV 1 cost
-- Returns the new spend, or -1 when the customer is not seeded.
if redis.call('HEXISTS', KEYS[1], 's') == 0 then return -1 end
return redis.call('HINCRBY', KEYS[1], 's', ARGV[1])
