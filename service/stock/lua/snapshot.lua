-- KEYS: (stock, hold, part, avail) per SKU. ARGV: now_ms, then per row 6 values: key index, loc, s, d, p, t.
-- Sets the counted buckets (reserved stays) and returns the previous values {s, d, p, t} per row, then
-- the write's number (prelude's next_seq).
-- `s:LOC` is always written (it marks the row); a zero damaged, return-pending or in-transit bucket is
-- deleted instead, since a missing field reads as 0: the hash stays small for the reads that walk it.
local now = tonumber(ARGV[1])
for i = 1, #KEYS, 4 do
  prune(KEYS[i], KEYS[i + 1], KEYS[i + 2], KEYS[i + 3], now)
end
local out = {}
for a = 2, #ARGV, 6 do
  local k, loc = tonumber(ARGV[a]), ARGV[a + 1]
  local stock = KEYS[k]
  local before = field(stock, 's', loc)
  out[#out + 1] = {before, field(stock, 'd', loc), field(stock, 'p', loc), field(stock, 't', loc)}
  redis.call('HSET', stock, 's:' .. loc, ARGV[a + 2])
  avail_add(KEYS[k + 3], loc, tonumber(ARGV[a + 2]) - before)
  for b, bucket in ipairs({'d', 'p', 't'}) do
    local value = ARGV[a + 2 + b]
    if tonumber(value) == 0 then
      redis.call('HDEL', stock, bucket .. ':' .. loc)
    else
      redis.call('HSET', stock, bucket .. ':' .. loc, value)
    end
  end
end
out[#out + 1] = next_seq()
return out
