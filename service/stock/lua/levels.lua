-- KEYS: (stock, hold, part) per SKU. ARGV: now_ms. Prunes each SKU's expired holds, then returns one JSON
-- array with, per SKU, its stock hash as a flat [field, count, ...] list. Encoding is left to cjson (C):
-- grouping the fields by location in Lua cost Redis several times more, and Redis serves every worker.
local now = tonumber(ARGV[1])
local out = {}
for i = 1, #KEYS, 3 do
  prune(KEYS[i], KEYS[i + 1], KEYS[i + 2], now)
  local flat = redis.call('HGETALL', KEYS[i])
  out[#out + 1] = #flat == 0 and '[]' or cjson.encode(flat)
end
return '[' .. table.concat(out, ',') .. ']'
