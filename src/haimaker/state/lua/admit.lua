-- Admission of one request: every limit of each of its subjects (its customer; its virtual key, and the key's
-- per-model limits) checked, and what the request needs reserved in each, atomically: all or nothing across the
-- subjects. Per subject it mirrors MemoryCounterStore._check/_take exactly; see state/redis.py.
--
-- KEYS, three per subject, in order:
--   hash            s spend, rsv reserved, inf in flight, pin shrunk reservations in flight,
--                   ws/wr/wt rate window, rst reset ms, per period
--   live leases     zset: member `id|cost|tokens|slot|partial|window` -> lease deadline (ms)
--   expired leases  zset: member -> expiry time (ms), so that a late settle still charges once
-- ARGV  1 reservation id   2 now ms (0: the server's TIME)   3 lease ms   4 fail closed (1/0)   5 window ms
--       6 idle ttl ms
--   then eleven per subject, from ARGV[7]:
--       +0 demand cost   +1 demand tokens   +2 max budget ('')   +3 rpm ('')   +4 tpm ('')   +5 parallel ('')
--       +6 period key ('': no budget_duration)   +7 tier reset ms ('')   +8 next reset ms   +9 clock ms
--       +10 '1': seed an absent subject at zero (known to be new)
-- Returns {1, i} when subject i is not seeded yet (nothing was changed); else
--   {status, refused subject (0: none), now, then per subject: cost, tokens, ws, wr, wt, spend, rst (-1: none),
--    did_reset, estimate_flag, partial}
--   status 0 admitted, 2 parallel, 3 requests, 4 tokens, 5 budget (of the refused subject).
local function int(n) return string.format('%d', n) end

local now = tonumber(ARGV[2])
if now == 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local fail_closed = ARGV[4] == '1'
local window = tonumber(ARGV[5])
local n = #KEYS / 3

-- Read every subject first: an unseeded one stops the script before anything is written.
local subjects = {}
for i = 1, n do
  local c = KEYS[3 * i - 2]
  local a = 6 + 11 * (i - 1)
  local f = redis.call('HMGET', c, 's', 'rsv', 'inf', 'ws', 'wr', 'wt', 'rst', 'per', 'pin')
  if not f[1] then
    -- Not seeded. '1': the caller knows the durable store holds nothing for this subject (a new one), so it starts
    -- here at zero, exactly as a seed of (0, no reset) followed by this admission would.
    if ARGV[a + 11] ~= '1' then return {1, i} end
    f[1] = '0'
  end
  local rst = nil
  if f[7] then rst = tonumber(f[7]) end
  subjects[i] = {
    c = c, r = KEYS[3 * i - 1], e = KEYS[3 * i], a = a, per = f[8],
    spend = tonumber(f[1]), reserved = tonumber(f[2] or '0'), inflight = tonumber(f[3] or '0'),
    ws = tonumber(f[4] or '0'), wr = tonumber(f[5] or '0'), wt = tonumber(f[6] or '0'),
    pin = tonumber(f[9] or '0'), rst = rst,
    cost = 0, tokens = 0, did_reset = 0, estimate_flag = 0, partial = 0,
  }
end

-- Bring each subject up to date: expired leases given back, a due period reset applied, the rate window rolled.
for i = 1, n do
  local s = subjects[i]
  local a = s.a
  -- Reservations whose lease ran out (their instance died or lost Redis): give back what they hold.
  local gone = redis.call('ZRANGEBYSCORE', s.r, '-inf', now, 'LIMIT', 0, 256)
  for _, m in ipairs(gone) do
    local _, _, rcost, rtok, rslot, rpart, rws = string.find(m, '^[^|]*|(%d+)|(%d+)|(%d)|(%d)|(%d+)$')
    if rcost then
      s.reserved = s.reserved - tonumber(rcost)
      s.inflight = s.inflight - tonumber(rslot)
      s.pin = s.pin - tonumber(rpart)
      if tonumber(rws) == s.ws then s.wt = s.wt - tonumber(rtok) end
      redis.call('ZADD', s.e, now, m)
    end
    redis.call('ZREM', s.r, m)
  end
  if #gone > 0 then redis.call('ZREMRANGEBYSCORE', s.e, '-inf', now - 86400000) end

  -- Period boundary: a due reset is applied here, at request time, once for the whole cluster.
  local period = ARGV[a + 7]
  if period ~= '' then
    local tier = nil
    if ARGV[a + 8] ~= '' then tier = tonumber(ARGV[a + 8]) end
    if s.per ~= period then
      -- New subject, new tier or new duration: follow the tier's stored boundary.
      redis.call('HSET', s.c, 'per', period)
      if s.rst == nil or (tier ~= nil and s.rst > tier) then s.rst = tier end
    end
    if s.rst == nil then
      s.rst = tonumber(ARGV[a + 9])
    elseif tonumber(ARGV[a + 10]) >= s.rst then
      s.spend = 0
      s.rst = tonumber(ARGV[a + 9])
      s.did_reset = 1
    end
  end

  if now - s.ws >= window then
    s.ws, s.wr, s.wt = now, 0, 0
  end
end

-- Every limit of every subject is checked before anything is taken.
local status, refused = 0, 0
for i = 1, n do
  local s = subjects[i]
  local a = s.a
  local par, rpm, tpm = ARGV[a + 6], ARGV[a + 4], ARGV[a + 5]
  if par ~= '' and s.inflight >= tonumber(par) then
    status = 2
  elseif rpm ~= '' and s.wr >= tonumber(rpm) then
    status = 3
  elseif tpm ~= '' and s.wt >= tonumber(tpm) then
    status = 4
  end
  if status == 0 and ARGV[a + 3] ~= '' then
    local remaining = tonumber(ARGV[a + 3]) - (s.spend + s.reserved)
    local want = tonumber(ARGV[a + 1])
    local does_not_fit = want > remaining
    -- A request that does not fit may run on what remains only while no other such request is in flight:
    -- each can overshoot by its excess, so one at a time bounds the overshoot to one request.
    if remaining <= 0 or (does_not_fit and (fail_closed or s.pin > 0)) then
      status = 5
      if fail_closed and remaining > 0 then s.estimate_flag = 1 end
    else
      s.cost = math.min(want, remaining)
      if does_not_fit then s.partial = 1 end
    end
  end
  if status ~= 0 then
    refused = i
    break
  end
end

if status == 0 then
  for i = 1, n do
    local s = subjects[i]
    local a = s.a
    local tpm = ARGV[a + 5]
    s.tokens = tonumber(ARGV[a + 2])
    if tpm ~= '' then s.tokens = math.min(s.tokens, tonumber(tpm) - s.wt) end
    local slot = 0
    if ARGV[a + 6] ~= '' then slot = 1 end
    s.reserved = s.reserved + s.cost
    s.wr = s.wr + 1
    s.wt = s.wt + s.tokens
    s.inflight = s.inflight + slot
    s.pin = s.pin + s.partial
    local member = ARGV[1] .. '|' .. int(s.cost) .. '|' .. int(s.tokens) .. '|' .. slot .. '|' .. s.partial .. '|'
      .. int(s.ws)
    redis.call('ZADD', s.r, now + tonumber(ARGV[3]), member)
  end
end

local out = {status, refused, now}
local ttl = tonumber(ARGV[6])
for i = 1, n do
  local s = subjects[i]
  if status ~= 0 then s.cost, s.tokens, s.partial = 0, 0, 0 end
  redis.call('HSET', s.c, 's', int(s.spend), 'rsv', int(s.reserved), 'inf', int(s.inflight), 'pin', int(s.pin),
    'ws', int(s.ws), 'wr', int(s.wr), 'wt', int(s.wt))
  if s.rst ~= nil then redis.call('HSET', s.c, 'rst', int(s.rst)) end
  redis.call('PEXPIRE', s.c, ttl)
  redis.call('PEXPIRE', s.r, ttl)
  redis.call('PEXPIRE', s.e, ttl)
  local rst_out = -1
  if s.rst ~= nil then rst_out = s.rst end
  for _, v in ipairs({s.cost, s.tokens, s.ws, s.wr, s.wt, s.spend, rst_out, s.did_reset, s.estimate_flag,
      s.partial}) do
    out[#out + 1] = v
  end
end
return out
