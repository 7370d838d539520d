-- KEYS: resv, holds, then (stock, hold, part) per SKU of the reservation.
-- ARGV: id, now_ms, action (commit | release | expire | forget | undo_commit | undo_release), skus...
local resv, holds = KEYS[1], KEYS[2]
local id, now, action = ARGV[1], tonumber(ARGV[2]), ARGV[3]
for i = 3, #KEYS, 3 do
  prune(KEYS[i], KEYS[i + 1], KEYS[i + 2], now)
end
if redis.call('EXISTS', resv) == 0 then
  return {'missing'}
end
local status = redis.call('HGET', resv, 'status')
if action == 'undo_commit' or action == 'undo_release' then
  -- Put back a commit or release whose journal entry could not be written.
  local exp = redis.call('HGET', resv, 'exp')
  local lines = redis.call('HGET', resv, 'lines')
  local g = 4
  for i = 3, #KEYS, 3 do
    local sku, enc = ARGV[g], ''
    g = g + 1
    for s, loc, qty in string.gmatch(lines, '([^\t\n]+)\t([^\t\n]+)\t(%d+)\n') do
      if s == sku then
        redis.call('HINCRBY', KEYS[i], 'r:' .. loc, tonumber(qty))
        if action == 'undo_commit' then redis.call('HINCRBY', KEYS[i], 's:' .. loc, tonumber(qty)) end
        enc = enc .. loc .. '\t' .. qty .. '\n'
      end
    end
    redis.call('HSET', KEYS[i + 2], id, enc)
    redis.call('ZADD', KEYS[i + 1], exp, id)
  end
  redis.call('ZADD', holds, exp, id)
  redis.call('HSET', resv, 'status', 'held')
  return {'undone', redis.call('HGETALL', resv)}
end
if action == 'forget' then
  -- Take back a reservation whose journal entry could not be written, as if it never happened.
  for i = 3, #KEYS, 3 do
    release_part(KEYS[i], KEYS[i + 1], KEYS[i + 2], id, false)
  end
  redis.call('DEL', resv)
  redis.call('ZREM', holds, id)
  return {'forgotten'}
end
local transitioned = false
if status == 'held' and tonumber(redis.call('HGET', resv, 'exp')) <= now then
  status, transitioned = 'expired', true
  redis.call('HSET', resv, 'status', status)
  redis.call('ZREM', holds, id)
end
if action == 'expire' then
  redis.call('ZREM', holds, id)
  return {transitioned and 'expired' or 'same', redis.call('HGETALL', resv)}
end
if (action == 'commit' and status == 'committed')
    or (action == 'release' and (status == 'released' or status == 'expired')) then
  return {'same', redis.call('HGETALL', resv)}
end
if status ~= 'held' then
  return {'state', redis.call('HGETALL', resv)}
end
for i = 3, #KEYS, 3 do
  release_part(KEYS[i], KEYS[i + 1], KEYS[i + 2], id, action == 'commit')
end
redis.call('ZREM', holds, id)
if action == 'commit' then status = 'committed' else status = 'released' end
redis.call('HSET', resv, 'status', status)
return {'done', redis.call('HGETALL', resv)}
