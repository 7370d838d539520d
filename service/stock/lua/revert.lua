-- Undo events or snapshot rows whose journal entry could not be written, last first.
-- KEYS: (stock, evt, avail) per SKU. ARGV: per item 10 values: key index, loc, ds, dd, dp, dt, event_id or '',
-- then for a sale: the demand sequence number it set, the rate and time before it ('' when it had none).
-- An event is undone only while its id is recorded (a store rebuilt from the journal meanwhile never saw it).
local forget = {}
for a = 1, #ARGV, 10 do
  local k = tonumber(ARGV[a])
  local loc = ARGV[a + 1]
  local names = {'s', 'd', 'p', 't'}
  local seen = ARGV[a + 6] == '' or redis.call('SISMEMBER', KEYS[k + 1], ARGV[a + 6]) == 1
  if ARGV[a + 6] ~= '' then forget[ARGV[a + 6]] = KEYS[k + 1] end
  for j = 1, 4 do
    local v = tonumber(ARGV[a + 1 + j])
    if seen and v ~= 0 then
      redis.call('HINCRBY', KEYS[k], names[j] .. ':' .. loc, -v)
      if j == 1 then avail_add(KEYS[k + 2], loc, -v) end
    end
  end
  local seq = ARGV[a + 7]
  -- only while no later sale has updated the rate since (otherwise the later state stands)
  if seen and seq ~= '' and redis.call('HGET', KEYS[k], 'n:' .. loc) == seq then
    if ARGV[a + 8] == '' then
      redis.call('HDEL', KEYS[k], 'e:' .. loc, 'u:' .. loc)
    else
      redis.call('HSET', KEYS[k], 'e:' .. loc, ARGV[a + 8], 'u:' .. loc, ARGV[a + 9])
    end
    redis.call('HINCRBY', KEYS[k], 'n:' .. loc, -1)
  end
end
for id, events in pairs(forget) do redis.call('SREM', events, id) end
return 1
