-- KEYS: (stock, hold, part) per SKU. ARGV: now_ms. Returns HGETALL of each stock hash after pruning.
local now = tonumber(ARGV[1])
local out = {}
for i = 1, #KEYS, 3 do
  prune(KEYS[i], KEYS[i + 1], KEYS[i + 2], now)
  out[#out + 1] = redis.call('HGETALL', KEYS[i])
end
return out
