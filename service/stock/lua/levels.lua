-- KEYS: (stock, hold, part) per SKU. ARGV: now_ms. Prunes each SKU's expired holds, then returns one JSON
-- object for the request: {"SKU": {"LOC": {"sellable": n, "reserved": n, ...}, ...}, ...} with the
-- locations in order and only the buckets present (absent means 0), so the client decodes it in one call.
local now = tonumber(ARGV[1])
local bucket = {s = 'sellable', r = 'reserved', d = 'damaged', p = 'return_pending', t = 'in_transit'}
local skus = {}
for i = 1, #KEYS, 3 do
  prune(KEYS[i], KEYS[i + 1], KEYS[i + 2], now)
  local flat = redis.call('HGETALL', KEYS[i])
  local rows, order = {}, {}
  for j = 1, #flat, 2 do
    local name = flat[j]
    local loc = string.sub(name, 3)
    local row = rows[loc]
    if not row then
      row = {}
      rows[loc] = row
      order[#order + 1] = loc
    end
    -- counts are HINCRBY integers: their text is already a JSON number
    row[#row + 1] = '"' .. bucket[string.sub(name, 1, 1)] .. '":' .. flat[j + 1]
  end
  table.sort(order)
  local locs = {}
  for _, loc in ipairs(order) do
    locs[#locs + 1] = cjson.encode(loc) .. ':{' .. table.concat(rows[loc], ',') .. '}'
  end
  skus[#skus + 1] = '{' .. table.concat(locs, ',') .. '}'
end
return '[' .. table.concat(skus, ',') .. ']'
