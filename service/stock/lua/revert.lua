-- Undo events or snapshot rows whose journal entry could not be written.
-- KEYS: (stock, evt) per SKU. ARGV: per item 7 values: key index, loc, ds, dd, dp, dt, event_id or ''.
for a = 1, #ARGV, 7 do
  local k = tonumber(ARGV[a])
  local loc = ARGV[a + 1]
  local names = {'s', 'd', 'p', 't'}
  for j = 1, 4 do
    local v = tonumber(ARGV[a + 1 + j])
    if v ~= 0 then redis.call('HINCRBY', KEYS[k], names[j] .. ':' .. loc, -v) end
  end
  if ARGV[a + 6] ~= '' then redis.call('SREM', KEYS[k + 1], ARGV[a + 6]) end
end
return 1
