-- KEYS: (stock, hold, part) per SKU. ARGV: now_ms. Prunes each SKU's expired holds, then returns one JSON
-- array with, per SKU, an object location -> available (sellable - reserved, never below 0) for every
-- location with any bucket: what a new reservation may still take, the one number decisions read.
local now = tonumber(ARGV[1])
local out = {}
for i = 1, #KEYS, 3 do
  prune(KEYS[i], KEYS[i + 1], KEYS[i + 2], now)
  local flat = redis.call('HGETALL', KEYS[i])
  local sellable, reserved, any = {}, {}, false
  for j = 1, #flat, 2 do
    local name = flat[j]
    local b = string.byte(name)
    -- s, r, d, p and t are buckets; the demand rate's e:, u: and n: fields are not
    if b == 115 then
      sellable[string.sub(name, 3)] = tonumber(flat[j + 1])
      any = true
    elseif b == 114 then
      reserved[string.sub(name, 3)] = tonumber(flat[j + 1])
      any = true
    elseif b == 100 or b == 112 or b == 116 then
      local loc = string.sub(name, 3)
      sellable[loc] = sellable[loc] or 0
      any = true
    end
  end
  if any then
    local rows = {}
    for loc, s in pairs(sellable) do
      local left = s - (reserved[loc] or 0)
      rows[loc] = left > 0 and left or 0
    end
    for loc, _ in pairs(reserved) do
      if rows[loc] == nil then rows[loc] = 0 end
    end
    out[#out + 1] = cjson.encode(rows)
  else
    out[#out + 1] = '{}'
  end
end
return '[' .. table.concat(out, ',') .. ']'
