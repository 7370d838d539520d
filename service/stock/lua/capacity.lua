-- KEYS: usage, hold, part of one capacity day. ARGV: now_ms, locations...
-- Gives expired holds' units back, then answers the units counted at each location (0 where none).
prune(KEYS[1], KEYS[2], KEYS[3], nil, tonumber(ARGV[1]))
local out = {}
for i = 2, #ARGV do
  out[#out + 1] = tonumber(redis.call('HGET', KEYS[1], 'r:' .. ARGV[i]) or '0')
end
return out
