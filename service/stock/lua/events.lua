-- KEYS: (stock, hold, part, avail, events) per SKU (`events`, the set of applied event ids, is one key for the whole
-- store, listed once per SKU). ARGV: now_ms, demand half-life in days, then per event 8 values:
-- key index, event_id, type, loc, qty, disposition or '', to_location or '', sale time in epoch ms.
-- Returns per event {'duplicate'} or {'applied', anomaly kind or '', shortfall, ds, dd, dp, dt, dest_dt,
-- then for a sale: demand rate, its time, its sequence number, the previous rate and time ('' if none)},
-- then the write's number (the prelude's next_seq).
-- The demand rate of LOC lives in the SKU's hash: 'e:LOC' (units/day, as '%.17g' text so that it
-- round-trips exactly), 'u:LOC' (ms of the last sale folded in), 'n:LOC' (updates so far).
local now = tonumber(ARGV[1])
local half_life = tonumber(ARGV[2])
for i = 1, #KEYS, 5 do
  prune(KEYS[i], KEYS[i + 1], KEYS[i + 2], KEYS[i + 3], now)
end

-- Same formula as service.domain.reorder.update_demand_rate, on the same millisecond integers.
local function record_sale(stock, loc, qty, at_text)
  local prev_rate = redis.call('HGET', stock, 'e:' .. loc)
  local prev_at = redis.call('HGET', stock, 'u:' .. loc)
  local rate, elapsed = 0, 0
  if prev_rate and prev_at then
    rate = tonumber(prev_rate)
    local gap = tonumber(at_text) - tonumber(prev_at)
    if gap > 0 then
      elapsed = gap / 86400000
    else
      at_text = prev_at
    end
  end
  local tau = half_life / math.log(2)
  local x = elapsed / tau
  local per_unit
  if elapsed == 0 then
    per_unit = 1 / tau
  elseif x < 1e-6 then
    -- (1 - exp(-x)) / elapsed by its series: the subtraction would lose the digits here
    per_unit = (1 - x / 2 + x * x / 6) / tau
  else
    per_unit = (1 - math.exp(-x)) / elapsed
  end
  local text = string.format('%.17g', rate * math.exp(-x) + qty * per_unit)
  redis.call('HSET', stock, 'e:' .. loc, text, 'u:' .. loc, at_text)
  local seq = redis.call('HINCRBY', stock, 'n:' .. loc, 1)
  return {text, at_text, seq, prev_rate or '', prev_at or ''}
end

local out = {}
for a = 3, #ARGV, 8 do
  local k = tonumber(ARGV[a])
  local stock, avail = KEYS[k], KEYS[k + 3]
  local eid, typ, loc, qty, disp, to = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], tonumber(ARGV[a + 4]), ARGV[a + 5], ARGV[a + 6]
  if redis.call('SADD', KEYS[k + 4], eid) == 0 then
    out[#out + 1] = {'duplicate'}
  else
    local s, r, p, t = field(stock, 's', loc), field(stock, 'r', loc), field(stock, 'p', loc), field(stock, 't', loc)
    local ds, dd, dp, dt, dest = 0, 0, 0, 0, 0
    local kind, shortfall = '', 0
    if typ == 'receipt' or typ == 'transfer_in' then
      ds = qty
      dt = -math.min(qty, math.max(0, t))
    elseif typ == 'return' then
      dp = qty
    elseif typ == 'return_disposition' then
      if p < qty then kind, shortfall = 'return_without_pending', qty - math.max(0, p) end
      dp = -qty
      if disp == 'restock' then ds = qty else dd = qty end
    elseif typ == 'adjustment' then
      if qty < r then kind, shortfall = 'count_below_reserved', r - qty end
      ds = qty - s
    else
      local free = s - r
      if qty > free then kind, shortfall = 'negative_inventory', qty - math.max(0, free) end
      ds = -qty
      if typ == 'damage' then dd = qty end
      if typ == 'transfer_out' and to ~= '' then dest = qty end
    end
    redis.call('HINCRBY', stock, 's:' .. loc, ds)
    avail_add(avail, loc, ds)
    if dd ~= 0 then redis.call('HINCRBY', stock, 'd:' .. loc, dd) end
    if dp ~= 0 then redis.call('HINCRBY', stock, 'p:' .. loc, dp) end
    if dt ~= 0 then redis.call('HINCRBY', stock, 't:' .. loc, dt) end
    if dest ~= 0 then
      redis.call('HINCRBY', stock, 's:' .. to, 0)
      avail_add(avail, to, 0)
      redis.call('HINCRBY', stock, 't:' .. to, dest)
    end
    local result = {'applied', kind, shortfall, ds, dd, dp, dt, dest}
    if typ == 'sale' then
      for _, v in ipairs(record_sale(stock, loc, qty, ARGV[a + 7])) do result[#result + 1] = v end
    end
    out[#out + 1] = result
  end
end
out[#out + 1] = next_seq()
return out
