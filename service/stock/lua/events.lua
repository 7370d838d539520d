-- KEYS: (stock, hold, part, evt) per SKU. ARGV: now_ms, then per event 7 values:
-- key index, event_id, type, loc, qty, disposition or '', to_location or ''.
-- Returns per event {'duplicate'} or {'applied', anomaly kind or '', shortfall, ds, dd, dp, dt, dest_dt}.
local now = tonumber(ARGV[1])
for i = 1, #KEYS, 4 do
  prune(KEYS[i], KEYS[i + 1], KEYS[i + 2], now)
end
local out = {}
for a = 2, #ARGV, 7 do
  local k = tonumber(ARGV[a])
  local stock = KEYS[k]
  local eid, typ, loc, qty, disp, to = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], tonumber(ARGV[a + 4]), ARGV[a + 5], ARGV[a + 6]
  if redis.call('SADD', KEYS[k + 3], eid) == 0 then
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
    if dd ~= 0 then redis.call('HINCRBY', stock, 'd:' .. loc, dd) end
    if dp ~= 0 then redis.call('HINCRBY', stock, 'p:' .. loc, dp) end
    if dt ~= 0 then redis.call('HINCRBY', stock, 't:' .. loc, dt) end
    if dest ~= 0 then
      redis.call('HINCRBY', stock, 's:' .. to, 0)
      redis.call('HINCRBY', stock, 't:' .. to, dest)
    end
    out[#out + 1] = {'applied', kind, shortfall, ds, dd, dp, dt, dest}
  end
end
return out
