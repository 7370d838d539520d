-- The steps of an order or finish a Redis Cluster takes on several slots (service.stock.crossslot), one
-- slot per call. KEYS: the slot's fence, then resv and holds when ARGV[5] is '1' (the reservation's home
-- slot), then (stock, hold, part, avail) per SKU, then the capacity day's (usage, hold, part) when this
-- slot holds the attempt's capacity part: a trailing group of three keys is the day's (a SKU's is four).
-- Every change of `r:LOC` on a SKU changes its `avail` LOC by the opposite step, as in the other scripts.
-- ARGV: action, id, attempt, now_ms, home (0|1), then the action's own.
-- The fence is a sorted set attempt -> expires_at of the attempts compensated on this slot: a step of a
-- compensated attempt (a worker that stalled past its lease) is refused, and compensating twice does
-- nothing the second time. Entries leave it once their reservation would have expired anyway.
local fence = KEYS[1]
local action, id, attempt, now = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local home = ARGV[5] == '1'
local resv, holds = KEYS[2], KEYS[3]
local first = home and 4 or 2
-- the key groups after the head: {stock, hold, part, avail}, avail nil for the capacity day's
local groups = {}
do
  local k = first
  while k + 2 <= #KEYS do
    if #KEYS - k == 2 then
      groups[#groups + 1] = {stock = KEYS[k], hold = KEYS[k + 1], part = KEYS[k + 2]}
      k = k + 3
    else
      groups[#groups + 1] = {stock = KEYS[k], hold = KEYS[k + 1], part = KEYS[k + 2], avail = KEYS[k + 3]}
      k = k + 4
    end
  end
end
redis.call('ZREMRANGEBYSCORE', fence, '-inf', now)
local fenced = redis.call('ZSCORE', fence, attempt) ~= false

if action == 'take' then
  -- ARGV: exp, partial, check, fingerprint, nb, nb x (loc, budget), then per SKU: sku, n, n x (loc, qty,
  -- floor). Answers {'replay', resv} | {'conflict'} | {'fenced'} | {verdict, lines, short} with verdict
  -- granted (lines taken), again (a retried call: what this step took before), short (lines that fit,
  -- nothing taken) or checked (check only: lines that fit).
  local exp, partial, check, fp = ARGV[6], ARGV[7] == '1', ARGV[8] == '1', ARGV[9]
  local a = 11
  local budget = {}
  for _ = 1, tonumber(ARGV[10]) do
    budget[ARGV[a]] = tonumber(ARGV[a + 1])
    a = a + 2
  end
  for _, g in ipairs(groups) do prune(g.stock, g.hold, g.part, g.avail, now) end
  if home and redis.call('EXISTS', resv) == 1 then
    if redis.call('HGET', resv, 'fp') ~= fp then return {'conflict'} end
    return {'replay', redis.call('HGETALL', resv)}
  end
  if fenced or tonumber(exp) <= now then return {'fenced'} end
  local again, b = {}, a
  for _, g in ipairs(groups) do
    local sku = ARGV[b]
    b = b + 2 + 3 * tonumber(ARGV[b + 1])
    local enc = redis.call('HGET', g.part, id)
    if enc then
      for loc, qty in part_lines(enc) do
        for _, v in ipairs({sku, loc, tonumber(qty)}) do again[#again + 1] = v end
      end
    end
  end
  if #again > 0 then return {'again', again, {}} end
  local granted, short = {}, {}
  for gi, g in ipairs(groups) do
    local sku, n = ARGV[a], tonumber(ARGV[a + 1])
    a = a + 2
    for _ = 1, n do
      local loc, qty, floor = ARGV[a], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
      a = a + 3
      local room = field(g.stock, 's', loc) - field(g.stock, 'r', loc) - floor
      if room < 0 then room = 0 end
      local left = budget[loc]
      if left ~= nil and left < room then room = left end
      local take = 0
      if room >= qty then
        take = qty
      else
        for _, v in ipairs({sku, loc, qty, room}) do short[#short + 1] = v end
        if partial then take = room end
      end
      if take > 0 then
        granted[#granted + 1] = {gi, sku, loc, take}
        if left ~= nil then budget[loc] = left - take end
      end
    end
  end
  local flat = {}
  for _, g in ipairs(granted) do
    for _, v in ipairs({g[2], g[3], g[4]}) do flat[#flat + 1] = v end
  end
  if check then return {'checked', flat, short} end
  if #granted == 0 or (#short > 0 and not partial) then return {'short', flat, short} end
  local parts = {}
  for _, t in ipairs(granted) do
    local g = groups[t[1]]
    redis.call('HINCRBY', g.stock, 'r:' .. t[3], t[4])
    avail_add(g.avail, t[3], -t[4])
    parts[t[1]] = (parts[t[1]] or '') .. t[3] .. '\t' .. t[4] .. '\n'
  end
  for gi, g in ipairs(groups) do
    if parts[gi] then
      redis.call('HSET', g.part, id, parts[gi])
      redis.call('ZADD', g.hold, exp, id)
    end
  end
  return {'granted', flat, short}
end

if action == 'claim' then
  -- The capacity day's step, first of an order that counts against it. ARGV: exp, keep_ms, n, n x (loc,
  -- limit, need). Takes min(need, what the limit leaves) at each location as the order's budget.
  -- Answers {'fenced'} or {'claimed', per location: loc, taken, left before}.
  local exp, keep = ARGV[6], ARGV[7]
  local usage, hold, part = KEYS[first], KEYS[first + 1], KEYS[first + 2]
  prune(usage, hold, part, nil, now)
  if fenced or tonumber(exp) <= now then return {'fenced'} end
  local out, enc, a = {}, '', 9
  local before = redis.call('HGET', part, id)
  for _ = 1, tonumber(ARGV[8]) do
    local loc, limit, need = ARGV[a], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
    a = a + 3
    local left = limit - field(usage, 'r', loc)
    if left < 0 then left = 0 end
    local take = need < left and need or left
    if before then  -- a retried call: what it took before
      take = 0
      for l, q in part_lines(before) do if l == loc then take = tonumber(q) end end
      left = take
    elseif take > 0 then
      redis.call('HINCRBY', usage, 'r:' .. loc, take)
      enc = enc .. loc .. '\t' .. take .. '\n'
    end
    for _, v in ipairs({loc, take, left}) do out[#out + 1] = v end
  end
  if enc ~= '' then
    redis.call('HSET', part, id, enc)
    redis.call('ZADD', hold, exp, id)
  end
  for k = first, first + 2 do redis.call('PEXPIRE', KEYS[k], keep) end
  return {'claimed', out}
end

if action == 'trim' then
  -- Keep only what the order's lines took of its capacity budget. ARGV: n, n x (loc, keep).
  local usage, hold, part = KEYS[first], KEYS[first + 1], KEYS[first + 2]
  local enc = redis.call('HGET', part, id)
  if not enc then return {'gone'} end
  local keep, a = {}, 7
  for _ = 1, tonumber(ARGV[6]) do
    keep[ARGV[a]] = tonumber(ARGV[a + 1])
    a = a + 2
  end
  local kept = ''
  for loc, qty in part_lines(enc) do
    local k = keep[loc] or 0
    if k > tonumber(qty) then k = tonumber(qty) end
    redis.call('HINCRBY', usage, 'r:' .. loc, k - tonumber(qty))
    if k > 0 then kept = kept .. loc .. '\t' .. k .. '\n' end
  end
  if kept == '' then
    redis.call('HDEL', part, id)
    redis.call('ZREM', hold, id)
  else
    redis.call('HSET', part, id, kept)
  end
  return {'trimmed'}
end

if action == 'seal' then
  -- The reservation's record on its home slot, written once every step took its part. ARGV: exp, then
  -- field, value pairs.
  if fenced or tonumber(ARGV[6]) <= now then return {'fenced'} end
  if redis.call('EXISTS', resv) == 1 then return {'exists'} end
  for a = 7, #ARGV, 2 do redis.call('HSET', resv, ARGV[a], ARGV[a + 1]) end
  redis.call('HSET', resv, 'att', attempt)
  redis.call('ZADD', holds, ARGV[6], id)
  return {'sealed'}
end

if action == 'undo' then
  -- Compensate an order's steps on this slot (every part it took here). ARGV: exp.
  if home and redis.call('EXISTS', resv) == 1 then
    -- sealed by this attempt (whole: completed, not compensated) or a reservation of another attempt,
    -- which took nothing (its first step found the record): fenced, nothing given back
    if not fenced then redis.call('ZADD', fence, ARGV[6], attempt) end
    return {redis.call('HGET', resv, 'att') == attempt and 'sealed' or 'other'}
  end
  if fenced then return {'already'} end
  redis.call('ZADD', fence, ARGV[6], attempt)
  for _, g in ipairs(groups) do release_part(g.stock, g.hold, g.part, g.avail, id, false) end
  return {'undone'}
end

if action == 'pin' then
  -- Before a commit: keep this slot's parts from expiring until they are committed (or unpinned).
  -- Answers {'missing'} (nothing changed) when a part is gone (expired), else {'pinned'}.
  for _, g in ipairs(groups) do prune(g.stock, g.hold, g.part, g.avail, now) end
  for _, g in ipairs(groups) do
    if redis.call('HEXISTS', g.part, id) == 0 then return {'missing'} end
  end
  for _, g in ipairs(groups) do redis.call('ZADD', g.hold, '+inf', id) end
  return {'pinned'}
end

if action == 'unpin' then
  -- ARGV: exp.
  for _, g in ipairs(groups) do
    if redis.call('HEXISTS', g.part, id) == 1 then
      redis.call('ZADD', g.hold, 'XX', ARGV[6], id)
      ready_stale(g.avail)
    end
  end
  return {'unpinned'}
end

if action == 'finish' then
  -- The decision of a commit or release, on the home slot, with the home slot's parts. ARGV: commit |
  -- release. Answers {'fenced'}, {'missing'}, {'same' | 'state', resv} or {'done', resv, write number}.
  local what = ARGV[6]
  for _, g in ipairs(groups) do prune(g.stock, g.hold, g.part, g.avail, now) end
  if fenced then return {'fenced'} end
  if redis.call('EXISTS', resv) == 0 then return {'missing'} end
  local status = redis.call('HGET', resv, 'status')
  if status == 'held' and tonumber(redis.call('HGET', resv, 'exp')) <= now then
    status = 'expired'
    redis.call('HSET', resv, 'status', status)
    redis.call('ZREM', holds, id)
  end
  if (what == 'commit' and status == 'committed')
      or (what == 'release' and (status == 'released' or status == 'expired')) then
    return {'same', redis.call('HGETALL', resv)}
  end
  if status ~= 'held' then return {'state', redis.call('HGETALL', resv)} end
  for _, g in ipairs(groups) do release_part(g.stock, g.hold, g.part, g.avail, id, what == 'commit') end
  redis.call('ZREM', holds, id)
  redis.call('HSET', resv, 'status', what == 'commit' and 'committed' or 'released', 'fin', attempt)
  return {'done', redis.call('HGETALL', resv), next_seq()}
end

if action == 'apply' then
  -- A decided commit or release on another slot. ARGV: commit | release | keep (a commit of the day's
  -- capacity: the units stay counted). Parts already applied are gone: applying twice changes nothing.
  local what = ARGV[6]
  for _, g in ipairs(groups) do
    if what == 'keep' then
      redis.call('HDEL', g.part, id)
      redis.call('ZREM', g.hold, id)
    else
      release_part(g.stock, g.hold, g.part, g.avail, id, what == 'commit')
    end
  end
  return {'applied'}
end

if action == 'resolve' then
  -- The recovery of a finish: fence the attempt on the home slot, then say whether it decided. ARGV: exp.
  redis.call('ZADD', fence, ARGV[6], attempt)
  return {redis.call('HGET', resv, 'fin') or '', redis.call('HGET', resv, 'status') or ''}
end

if action == 'peek' then
  -- The reservation's record on its home slot, before an order's first step (a retry finds it).
  return redis.call('HGETALL', resv)
end

if action == 'idem' then
  -- The idempotency key's own record (KEYS[2], in its own slot): the fingerprint it was first granted
  -- with, set now when it has none (SET NX GET). ARGV: fingerprint.
  return redis.call('SET', KEYS[2], ARGV[6], 'NX', 'GET')
end

return redis.error_reply('ERR unknown step ' .. action)
