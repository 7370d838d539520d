-- KEYS: resv, holds, then (usage, hold, part) of the reservation's capacity day when ARGV[4] is '1', then
--       (stock, hold, part, avail) per SKU of the reservation.
-- ARGV: id, now_ms, action (commit | release | expire | forget | undo_commit | undo_release), capacity
--       keys given (0|1), skus...
-- A commit or release answers {'done', the reservation, the write's number (the prelude's next_seq)}.
-- A commit keeps the units counted against the day's capacity (they were dispatched); a release, an
-- expiry or a forget gives them back.
local resv, holds = KEYS[1], KEYS[2]
local id, now, action = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local capacity = ARGV[4] == '1'
local first = capacity and 6 or 3
if capacity then prune(KEYS[3], KEYS[4], KEYS[5], nil, now) end
for i = first, #KEYS, 4 do
  prune(KEYS[i], KEYS[i + 1], KEYS[i + 2], KEYS[i + 3], now)
end
if redis.call('EXISTS', resv) == 0 then
  return {'missing'}
end
local status = redis.call('HGET', resv, 'status')
if action == 'undo_commit' or action == 'undo_release' then
  -- Put back a commit or release whose journal entry could not be written; only from the state it left
  -- (a store rebuilt from the journal meanwhile never saw it).
  if status ~= (action == 'undo_commit' and 'committed' or 'released') then
    return {'same', redis.call('HGETALL', resv)}
  end
  local exp = redis.call('HGET', resv, 'exp')
  local lines = redis.call('HGET', resv, 'lines')
  local g = 5
  for i = first, #KEYS, 4 do
    local sku, enc = ARGV[g], ''
    g = g + 1
    for s, loc, qty in string.gmatch(lines, '([^\t\n]+)\t([^\t\n]+)\t(%d+)\n') do
      if s == sku then
        redis.call('HINCRBY', KEYS[i], 'r:' .. loc, tonumber(qty))
        if action == 'undo_commit' then
          redis.call('HINCRBY', KEYS[i], 's:' .. loc, tonumber(qty))
        else
          avail_add(KEYS[i + 3], loc, -tonumber(qty))
        end
        enc = enc .. loc .. '\t' .. qty .. '\n'
      end
    end
    redis.call('HSET', KEYS[i + 2], id, enc)
    redis.call('ZADD', KEYS[i + 1], exp, id)
    ready_stale(KEYS[i + 3])
  end
  local capenc = redis.call('HGET', resv, 'cap')
  if capacity and capenc then
    if action == 'undo_release' then
      for loc, qty in part_lines(capenc) do
        redis.call('HINCRBY', KEYS[3], 'r:' .. loc, tonumber(qty))
      end
    end
    redis.call('HSET', KEYS[5], id, capenc)
    redis.call('ZADD', KEYS[4], exp, id)
  end
  redis.call('ZADD', holds, exp, id)
  redis.call('HSET', resv, 'status', 'held')
  return {'undone', redis.call('HGETALL', resv)}
end
if action == 'forget' then
  -- Take back a reservation whose journal entry could not be written, as if it never happened.
  if capacity then release_part(KEYS[3], KEYS[4], KEYS[5], nil, id, false) end
  for i = first, #KEYS, 4 do
    release_part(KEYS[i], KEYS[i + 1], KEYS[i + 2], KEYS[i + 3], id, false)
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
for i = first, #KEYS, 4 do
  release_part(KEYS[i], KEYS[i + 1], KEYS[i + 2], KEYS[i + 3], id, action == 'commit')
end
if capacity then
  if action == 'commit' then
    redis.call('HDEL', KEYS[5], id)
    redis.call('ZREM', KEYS[4], id)
  else
    release_part(KEYS[3], KEYS[4], KEYS[5], nil, id, false)
  end
end
redis.call('ZREM', holds, id)
if action == 'commit' then status = 'committed' else status = 'released' end
redis.call('HSET', resv, 'status', status)
return {'done', redis.call('HGETALL', resv), next_seq()}
