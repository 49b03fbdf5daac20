-- Admission of one request: every limit of the customer checked, and what the request needs reserved,
-- atomically (all or nothing). Mirrors MemoryCounterStore.admit_now exactly; see state/redis.py.
--
-- KEYS[1] customer hash   s spend, rsv reserved, inf in flight, pin shrunk reservations in flight,
--                         ws/wr/wt rate window, rst reset ms, per period
-- KEYS[2] live leases     zset: member `id|cost|tokens|slot|partial|window` -> lease deadline (ms)
-- KEYS[3] expired leases  zset: member -> expiry time (ms), so that a late settle still charges once
-- ARGV  1 reservation id    2 now ms (0: the server's TIME)   3 lease ms       4 demand cost   5 demand tokens
--       6 max budget ('')   7 fail closed (1/0)               8 rpm ('')       9 tpm ('')      10 parallel ('')
--      11 period key ('': no budget_duration)   12 tier reset ms ('')   13 next reset ms   14 clock ms
--      15 window ms        16 idle ttl ms     17 '1': seed an absent customer at zero (known to be new)
-- Returns {1} when the customer is not seeded yet; else
--   {status, cost, tokens, ws, wr, wt, spend, rst (-1: none), did_reset, now, estimate_flag, partial}
--   status 0 admitted, 2 parallel, 3 requests, 4 tokens, 5 budget.
local function int(n) return string.format('%d', n) end

local c, r, e = KEYS[1], KEYS[2], KEYS[3]
local now = tonumber(ARGV[2])
if now == 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local f = redis.call('HMGET', c, 's', 'rsv', 'inf', 'ws', 'wr', 'wt', 'rst', 'per', 'pin')
if not f[1] then
  -- Not seeded. ARGV[17] '1': the caller knows the durable store holds nothing for this customer (a new one), so
  -- it starts here at zero, exactly as a seed of (0, no reset) followed by this admission would.
  if ARGV[17] ~= '1' then return {1} end
  f[1] = '0'
end
local spend = tonumber(f[1])
local reserved = tonumber(f[2] or '0')
local inflight = tonumber(f[3] or '0')
local ws = tonumber(f[4] or '0')
local wr = tonumber(f[5] or '0')
local wt = tonumber(f[6] or '0')
local pin = tonumber(f[9] or '0')
local rst = nil
if f[7] then rst = tonumber(f[7]) end

-- Reservations whose lease ran out (their instance died or lost Redis): give back what they hold.
local gone = redis.call('ZRANGEBYSCORE', r, '-inf', now, 'LIMIT', 0, 256)
for _, m in ipairs(gone) do
  local _, _, rcost, rtok, rslot, rpart, rws = string.find(m, '^[^|]*|(%d+)|(%d+)|(%d)|(%d)|(%d+)$')
  if rcost then
    reserved = reserved - tonumber(rcost)
    inflight = inflight - tonumber(rslot)
    pin = pin - tonumber(rpart)
    if tonumber(rws) == ws then wt = wt - tonumber(rtok) end
    redis.call('ZADD', e, now, m)
  end
  redis.call('ZREM', r, m)
end
if #gone > 0 then redis.call('ZREMRANGEBYSCORE', e, '-inf', now - 86400000) end

-- Period boundary: a due reset is applied here, at request time, once for the whole cluster.
local did_reset = 0
local period = ARGV[11]
if period ~= '' then
  local tier = nil
  if ARGV[12] ~= '' then tier = tonumber(ARGV[12]) end
  if f[8] ~= period then
    -- New customer, new tier or new duration: follow the tier's stored boundary.
    redis.call('HSET', c, 'per', period)
    if rst == nil or (tier ~= nil and rst > tier) then rst = tier end
  end
  if rst == nil then
    rst = tonumber(ARGV[13])
  elseif tonumber(ARGV[14]) >= rst then
    spend = 0
    rst = tonumber(ARGV[13])
    did_reset = 1
  end
end

local window = tonumber(ARGV[15])
if now - ws >= window then
  ws, wr, wt = now, 0, 0
end

-- Every limit is checked before anything is taken.
local status = 0
local par, rpm, tpm = ARGV[10], ARGV[8], ARGV[9]
if par ~= '' and inflight >= tonumber(par) then
  status = 2
elseif rpm ~= '' and wr >= tonumber(rpm) then
  status = 3
elseif tpm ~= '' and wt >= tonumber(tpm) then
  status = 4
end
local cost, tokens, estimate_flag, partial = 0, 0, 0, 0
if status == 0 and ARGV[6] ~= '' then
  local remaining = tonumber(ARGV[6]) - (spend + reserved)
  local want = tonumber(ARGV[4])
  local does_not_fit = want > remaining
  -- A request that does not fit may run on what remains only while no other such request is in flight:
  -- each can overshoot by its excess, so one at a time bounds the overshoot to one request.
  if remaining <= 0 or (does_not_fit and (ARGV[7] == '1' or pin > 0)) then
    status = 5
    if ARGV[7] == '1' and remaining > 0 then estimate_flag = 1 end
  else
    cost = math.min(want, remaining)
    if does_not_fit then partial = 1 end
  end
end

if status == 0 then
  tokens = tonumber(ARGV[5])
  if tpm ~= '' then tokens = math.min(tokens, tonumber(tpm) - wt) end
  local slot = 0
  if par ~= '' then slot = 1 end
  reserved = reserved + cost
  wr = wr + 1
  wt = wt + tokens
  inflight = inflight + slot
  pin = pin + partial
  local member = ARGV[1] .. '|' .. int(cost) .. '|' .. int(tokens) .. '|' .. slot .. '|' .. partial .. '|' .. int(ws)
  redis.call('ZADD', r, now + tonumber(ARGV[3]), member)
end

redis.call('HSET', c, 's', int(spend), 'rsv', int(reserved), 'inf', int(inflight), 'pin', int(pin),
  'ws', int(ws), 'wr', int(wr), 'wt', int(wt))
if rst ~= nil then redis.call('HSET', c, 'rst', int(rst)) end
local ttl = tonumber(ARGV[16])
redis.call('PEXPIRE', c, ttl)
redis.call('PEXPIRE', r, ttl)
redis.call('PEXPIRE', e, ttl)
local rst_out = -1
if rst ~= nil then rst_out = rst end
return {status, cost, tokens, ws, wr, wt, spend, rst_out, did_reset, now, estimate_flag, partial}
