-- KEYS: (stock, hold, part, avail) per SKU. ARGV: now_ms. Prunes each SKU's expired holds, then returns one
-- JSON array with, per SKU, an object location -> available (sellable - reserved, never below 0) for every
-- location with any bucket: what a new reservation may still take, the one number decisions read. It is
-- the SKU's `avail` hash (kept by every write script), clamped at 0 and written as JSON text by the
-- prelude's avail_json (no Lua table of numbers to build and encode); the buckets are not read.
-- Each SKU's object is kept as its ready answer too (see the prelude's avail_add), with the earliest hold
-- expiry left: until a write drops it or that hold is due, a single-node read takes it without a script.
local now = tonumber(ARGV[1])
local out = {}
for i = 1, #KEYS, 4 do
  prune(KEYS[i], KEYS[i + 1], KEYS[i + 2], KEYS[i + 3], now)
  out[#out + 1] = ready_write(KEYS[i + 1], KEYS[i + 3])
end
return '[' .. table.concat(out, ',') .. ']'
