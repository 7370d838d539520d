-- KEYS: resv, holds, then (usage, hold, part) of the capacity day when ARGV[9] > 0, then (stock, hold, part,
--       avail) per SKU.
-- ARGV: id, now_ms, expires_ms, fingerprint, partial(0|1), order_id, channel, idempotency_key,
--       ncap, ncap x (loc, limit), day, keep_ms (both only when ncap > 0),
--       then per SKU: sku, n, n x (loc, qty, floor); lines of one SKU and location already summed.
-- Answers {'conflict'}, {'replay', the reservation}, {'short', short lines, the SKUs' availability as the
-- available script answers it} or {'granted', granted lines, short lines, the write's number (the prelude's next_seq)}.
-- A capacity day's keys have the shape of a SKU's: usage 'r:LOC' (units counted on that day, held and
-- committed), hold (held reservation id -> expires_at) and part (id -> 'LOC\tQTY\n'...), so the same
-- prune gives an expired hold's units back.
local resv, holds = KEYS[1], KEYS[2]
local id, now, exp, fp = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local partial = ARGV[5] == '1'
local ncap = tonumber(ARGV[9])
local first, a = 3, 10
local cap = {}
if ncap > 0 then
  first = 6
  prune(KEYS[3], KEYS[4], KEYS[5], nil, now)
  for _ = 1, ncap do
    local left = tonumber(ARGV[a + 1]) - field(KEYS[3], 'r', ARGV[a])
    cap[ARGV[a]] = left > 0 and left or 0
    a = a + 2
  end
  a = a + 2
end
for i = first, #KEYS, 4 do
  prune(KEYS[i], KEYS[i + 1], KEYS[i + 2], KEYS[i + 3], now)
end
if redis.call('EXISTS', resv) == 1 then
  if redis.call('HGET', resv, 'fp') ~= fp then
    return {'conflict'}
  end
  return {'replay', redis.call('HGETALL', resv)}
end
local granted, short = {}, {}
for i = first, #KEYS, 4 do
  local sku, n = ARGV[a], tonumber(ARGV[a + 1])
  a = a + 2
  for _ = 1, n do
    local loc, qty, floor = ARGV[a], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
    a = a + 3
    -- sellable - reserved, as the SKU's avail hash keeps it
    local room = tonumber(redis.call('HGET', KEYS[i + 3], loc) or '0') - floor
    if room < 0 then room = 0 end
    local left = cap[loc]
    if left ~= nil and left < room then room = left end
    if room >= qty then
      granted[#granted + 1] = {i, sku, loc, qty}
      if left ~= nil then cap[loc] = left - qty end
    else
      for _, v in ipairs({sku, loc, qty, room}) do short[#short + 1] = v end
      if partial and room > 0 then
        granted[#granted + 1] = {i, sku, loc, room}
        if left ~= nil then cap[loc] = left - room end
      end
    end
  end
end
if #granted == 0 or (#short > 0 and not partial) then
  -- nothing taken: with the short lines, each SKU's availability summary as this call found it, so that a
  -- caller planning on stock can plan again without another read
  local seen = {}
  for i = first, #KEYS, 4 do seen[#seen + 1] = ready_body(KEYS[i + 1], KEYS[i + 3]) end
  return {'short', short, '[' .. table.concat(seen, ',') .. ']'}
end
local parts, lines, flat, counted, order, changed = {}, {}, {}, {}, {}, {}
for _, g in ipairs(granted) do
  redis.call('HINCRBY', KEYS[g[1]], 'r:' .. g[3], g[4])
  changed[g[1]] = changed[g[1]] or {}
  avail_take(KEYS[g[1] + 3], g[3], g[4], changed[g[1]])
  parts[g[1]] = (parts[g[1]] or '') .. g[3] .. '\t' .. g[4] .. '\n'
  lines[#lines + 1] = g[2] .. '\t' .. g[3] .. '\t' .. g[4] .. '\n'
  for _, v in ipairs({g[2], g[3], g[4]}) do flat[#flat + 1] = v end
  if cap[g[3]] ~= nil then
    if counted[g[3]] == nil then order[#order + 1] = g[3] end
    counted[g[3]] = (counted[g[3]] or 0) + g[4]
  end
end
for i, enc in pairs(parts) do
  redis.call('HSET', KEYS[i + 2], id, enc)
  redis.call('ZADD', KEYS[i + 1], exp, id)
end
redis.call('ZADD', holds, exp, id)
redis.call('HSET', resv, 'id', id, 'order_id', ARGV[6], 'channel', ARGV[7], 'key', ARGV[8], 'fp', fp,
  'exp', exp, 'created', ARGV[2], 'status', 'held', 'lines', table.concat(lines))
if #order > 0 then
  local capenc = ''
  for _, loc in ipairs(order) do
    redis.call('HINCRBY', KEYS[3], 'r:' .. loc, counted[loc])
    capenc = capenc .. loc .. '\t' .. counted[loc] .. '\n'
  end
  local day, keep = ARGV[10 + 2 * ncap], ARGV[11 + 2 * ncap]
  redis.call('HSET', KEYS[5], id, capenc)
  redis.call('ZADD', KEYS[4], exp, id)
  redis.call('HSET', resv, 'cday', day, 'cap', capenc)
  for k = 3, 5 do redis.call('PEXPIRE', KEYS[k], keep) end
end
-- the SKUs taken from have their ready answers brought up to date now (the new counts written into the
-- answer, or the whole answer written when there is none): the next read of a SKU that is being ordered
-- (the next order's plan) then takes it without a script
for i, _ in pairs(parts) do
  if not ready_patch(KEYS[i + 3], changed[i], exp) then ready_write(KEYS[i + 1], KEYS[i + 3]) end
end
return {'granted', flat, short, next_seq()}
