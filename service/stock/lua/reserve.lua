-- KEYS: resv, holds, then (stock, hold, part) per SKU.
-- ARGV: id, now_ms, expires_ms, fingerprint, partial(0|1), order_id, channel, idempotency_key,
--       then per SKU: sku, n, n x (loc, qty, floor); lines of one SKU and location already summed.
local resv, holds = KEYS[1], KEYS[2]
local id, now, exp, fp = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local partial = ARGV[5] == '1'
for i = 3, #KEYS, 3 do
  prune(KEYS[i], KEYS[i + 1], KEYS[i + 2], now)
end
if redis.call('EXISTS', resv) == 1 then
  if redis.call('HGET', resv, 'fp') ~= fp then
    return {'conflict'}
  end
  return {'replay', redis.call('HGETALL', resv)}
end
local granted, short = {}, {}
local a = 9
for i = 3, #KEYS, 3 do
  local sku, n = ARGV[a], tonumber(ARGV[a + 1])
  a = a + 2
  for _ = 1, n do
    local loc, qty, floor = ARGV[a], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
    a = a + 3
    local room = field(KEYS[i], 's', loc) - field(KEYS[i], 'r', loc) - floor
    if room < 0 then room = 0 end
    if room >= qty then
      granted[#granted + 1] = {i, sku, loc, qty}
    else
      for _, v in ipairs({sku, loc, qty, room}) do short[#short + 1] = v end
      if partial and room > 0 then granted[#granted + 1] = {i, sku, loc, room} end
    end
  end
end
if #granted == 0 or (#short > 0 and not partial) then
  return {'short', short}
end
local parts, lines = {}, {}
for _, g in ipairs(granted) do
  redis.call('HINCRBY', KEYS[g[1]], 'r:' .. g[3], g[4])
  parts[g[1]] = (parts[g[1]] or '') .. g[3] .. '\t' .. g[4] .. '\n'
  lines[#lines + 1] = g[2] .. '\t' .. g[3] .. '\t' .. g[4] .. '\n'
end
for i, enc in pairs(parts) do
  redis.call('HSET', KEYS[i + 2], id, enc)
  redis.call('ZADD', KEYS[i + 1], exp, id)
end
redis.call('ZADD', holds, exp, id)
redis.call('HSET', resv, 'id', id, 'order_id', ARGV[6], 'channel', ARGV[7], 'key', ARGV[8], 'fp', fp,
  'exp', exp, 'created', ARGV[2], 'status', 'held', 'lines', table.concat(lines))
return {'granted', redis.call('HGETALL', resv), short}
