-- KEYS: (stock, hold, part) per SKU. ARGV: now_ms. Prunes each SKU's expired holds, then returns per
-- SKU one string with a line per location: 'LOC\ts\tr\td\tp\tt\n' (cheap to parse on the client).
local now = tonumber(ARGV[1])
local slot = {s = 1, r = 2, d = 3, p = 4, t = 5}
local out = {}
for i = 1, #KEYS, 3 do
  prune(KEYS[i], KEYS[i + 1], KEYS[i + 2], now)
  local flat = redis.call('HGETALL', KEYS[i])
  local rows, order = {}, {}
  for j = 1, #flat, 2 do
    local name = flat[j]
    local bucket = slot[string.sub(name, 1, 1)]
    -- other fields (the demand rate's e:, u:, n:) are not buckets
    if bucket then
      local loc = string.sub(name, 3)
      local row = rows[loc]
      if not row then
        row = {loc, '0', '0', '0', '0', '0'}
        rows[loc] = row
        order[#order + 1] = loc
      end
      row[1 + bucket] = flat[j + 1]
    end
  end
  table.sort(order)
  local lines = {}
  for _, loc in ipairs(order) do
    lines[#lines + 1] = table.concat(rows[loc], '\t')
  end
  out[#out + 1] = table.concat(lines, '\n')
end
return out
