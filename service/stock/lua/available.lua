-- KEYS: (stock, hold, part, avail) per SKU. ARGV: now_ms. Prunes each SKU's expired holds, then returns one
-- JSON array with, per SKU, an object location -> available (sellable - reserved, never below 0) for every
-- location with any bucket: what a new reservation may still take, the one number decisions read. It is
-- the SKU's `avail` hash (kept by every write script), clamped at 0 and encoded (an empty table encodes as
-- {}); the buckets are not read.
local encode = cjson.encode
local now = tonumber(ARGV[1])
local out = {}
for i = 1, #KEYS, 4 do
  prune(KEYS[i], KEYS[i + 1], KEYS[i + 2], KEYS[i + 3], now)
  local flat = redis.call('HGETALL', KEYS[i + 3])
  local left = {}
  for j = 1, #flat, 2 do
    local n = tonumber(flat[j + 1])
    left[flat[j]] = n > 0 and n or 0
  end
  out[#out + 1] = encode(left)
end
return '[' .. table.concat(out, ',') .. ']'
