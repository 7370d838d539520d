-- KEYS: (stock, hold, part) per SKU. ARGV: now_ms. Prunes each SKU's expired holds, then returns one JSON
-- array with, per SKU, an object location -> available (sellable - reserved, never below 0) for every
-- location with any bucket: what a new reservation may still take, the one number decisions read.
-- One table per SKU, built in one pass over its hash (sellable added, reserved taken off, the other
-- buckets only marking the location as present), then clamped at 0 and encoded.
local now = tonumber(ARGV[1])
local out = {}
for i = 1, #KEYS, 3 do
  prune(KEYS[i], KEYS[i + 1], KEYS[i + 2], now)
  local flat = redis.call('HGETALL', KEYS[i])
  local left, any = {}, false
  for j = 1, #flat, 2 do
    local name = flat[j]
    local b = string.byte(name)
    -- s, r, d, p and t are buckets; the demand rate's e:, u: and n: fields are not
    if b == 115 then
      local loc = string.sub(name, 3)
      left[loc] = (left[loc] or 0) + tonumber(flat[j + 1])
      any = true
    elseif b == 114 then
      local loc = string.sub(name, 3)
      left[loc] = (left[loc] or 0) - tonumber(flat[j + 1])
      any = true
    elseif b == 100 or b == 112 or b == 116 then
      local loc = string.sub(name, 3)
      left[loc] = left[loc] or 0
      any = true
    end
  end
  if any then
    for loc, n in pairs(left) do
      if n < 0 then left[loc] = 0 end
    end
    out[#out + 1] = cjson.encode(left)
  else
    out[#out + 1] = '{}'
  end
end
return '[' .. table.concat(out, ',') .. ']'
