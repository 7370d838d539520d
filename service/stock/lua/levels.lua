-- KEYS: (stock, hold, part, avail) per SKU. ARGV: now_ms. Prunes each SKU's expired holds, then returns one JSON
-- array with, per SKU, an object location -> [sellable, reserved, damaged, return_pending, in_transit]
-- (cjson encodes it in C; the client decodes the whole answer in one call and builds Levels from it).
local now = tonumber(ARGV[1])
local slot = {[string.byte('s')] = 1, [string.byte('r')] = 2, [string.byte('d')] = 3,
              [string.byte('p')] = 4, [string.byte('t')] = 5}
local out = {}
for i = 1, #KEYS, 4 do
  prune(KEYS[i], KEYS[i + 1], KEYS[i + 2], KEYS[i + 3], now)
  local flat = redis.call('HGETALL', KEYS[i])
  local rows, any = {}, false
  for j = 1, #flat, 2 do
    local name = flat[j]
    local bucket = slot[string.byte(name)]
    -- other fields (the demand rate's e:, u:, n:) are not buckets
    if bucket then
      local loc = string.sub(name, 3)
      local row = rows[loc]
      if not row then
        row = {0, 0, 0, 0, 0}
        rows[loc] = row
        any = true
      end
      row[bucket] = tonumber(flat[j + 1])
    end
  end
  -- cjson would encode an empty table as an object too; this skips the call
  out[#out + 1] = any and cjson.encode(rows) or '{}'
end
return '[' .. table.concat(out, ',') .. ']'
