-- KEYS: (stock, hold, part) per SKU. ARGV: now_ms. Prunes each SKU's expired holds, then returns one JSON
-- array with, per SKU, an object location -> available (sellable - reserved, never below 0) for every
-- location with any bucket: what a new reservation may still take, the one number decisions read.
-- One table per SKU, built in one pass over its hash (sellable added, reserved taken off, the other
-- buckets only marking the location as present), then clamped at 0 and encoded (an empty table encodes
-- as {}). The library functions are read once into locals and the counts are added as the strings they
-- are (Lua converts them): both save Redis time per field.
local byte, sub, encode = string.byte, string.sub, cjson.encode
local now = tonumber(ARGV[1])
local out, count = {}, 0
for i = 1, #KEYS, 3 do
  prune(KEYS[i], KEYS[i + 1], KEYS[i + 2], now)
  local flat = redis.call('HGETALL', KEYS[i])
  local left = {}
  for j = 1, #flat, 2 do
    local name = flat[j]
    local b = byte(name)
    -- s, r, d, p and t are buckets; the demand rate's e:, u: and n: fields are not
    if b == 115 then
      local loc = sub(name, 3)
      left[loc] = (left[loc] or 0) + flat[j + 1]
    elseif b == 114 then
      local loc = sub(name, 3)
      left[loc] = (left[loc] or 0) - flat[j + 1]
    elseif b == 100 or b == 112 or b == 116 then
      local loc = sub(name, 3)
      left[loc] = left[loc] or 0
    end
  end
  for loc, n in pairs(left) do
    if n < 0 then left[loc] = 0 end
  end
  count = count + 1
  out[count] = encode(left)
end
return '[' .. table.concat(out, ',') .. ']'
