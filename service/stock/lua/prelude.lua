-- The last key of every stock script is the store's state marker, written by the rebuild from the journal:
-- without it the data is gone (a restart without persistence, a flush, a failover to an empty replica)
-- and every answer would be wrong, so the script refuses before reading or writing anything. The marker
-- then leaves KEYS, so that the script's own keys are KEYS[1..n] as before.
local STATE = KEYS[#KEYS]
if redis.call('EXISTS', STATE) == 0 then
  return redis.error_reply('STOCKLOST the stock state marker is missing: rebuilding from the journal')
end
KEYS[#KEYS] = nil

-- The marker's write counter: every write script takes the next number and its journal entry records it,
-- so a Redis whose counter is below the journal's latest number (restored from an older snapshot, a
-- lagging replica) is behind the journal.
local function next_seq()
  return redis.call('HINCRBY', STATE, 'n', 1)
end

-- Shared by every stock script. A SKU's keys: stock (hash 'b:LOC' -> count, b in s r d p t),
-- hold (sorted set reservation id -> expires_at ms), part (hash reservation id -> 'LOC\tQTY\n'...),
-- avail (hash LOC -> s - r, not clamped, for every location with any bucket: what availability reads
-- without walking the buckets). Every script that changes `s:LOC` or `r:LOC` changes `avail` LOC by the
-- same step in the same call (HINCRBY of 0 where only another bucket appears, so that the location is
-- listed). A part counts in `r:LOC` exactly while its id is in the hold index; pruning releases it.
-- A capacity day's keys take the place of (stock, hold, part) with no avail (nil).
-- Every change of a SKU's avail hash goes through avail_add, which drops the SKU's ready availability answer
-- (`avail:{SKU}:ready`, the avail key's name + ':ready', written by ready_write: 'NEXT|JSON', NEXT the
-- earliest hold expiry in ms or '' without holds, JSON what available.lua answers for the SKU), so that a
-- ready answer present is always the summary as it is now. The one exception is a reservation's take
-- (reserve.lua), which changes the avail hash with avail_take and then, in the same call, writes the new
-- counts into the ready answer with ready_patch (or the whole answer again with ready_write when there is
-- none to patch). A hold added comes with an avail change, so the answer's NEXT is never later than the
-- earliest hold (a hold put back or moved earlier without one calls ready_stale): a reader that finds NEXT
-- due runs available.lua, which prunes the hold.
local function ready_stale(avail)
  redis.call('DEL', avail .. ':ready')
end

local function avail_add(avail, loc, n)
  redis.call('HINCRBY', avail, loc, n)
  ready_stale(avail)
end

-- A take of n units at loc from the avail hash that leaves the ready answer for ready_patch: the new count
-- is recorded in `changed` (loc -> count), the table ready_patch then writes in.
local function avail_take(avail, loc, n, changed)
  changed[loc] = redis.call('HINCRBY', avail, loc, -n)
end

local function part_lines(enc)
  return string.gmatch(enc, '([^\t\n]+)\t(%d+)\n')
end

local function release_part(stock, hold, part, avail, id, commit)
  local enc = redis.call('HGET', part, id)
  if enc then
    for loc, qty in part_lines(enc) do
      redis.call('HINCRBY', stock, 'r:' .. loc, -tonumber(qty))
      if commit then
        -- sellable and reserved both fall by qty: avail stays
        redis.call('HINCRBY', stock, 's:' .. loc, -tonumber(qty))
      elseif avail then
        avail_add(avail, loc, tonumber(qty))
      end
    end
    redis.call('HDEL', part, id)
  end
  redis.call('ZREM', hold, id)
end

local function prune(stock, hold, part, avail, now)
  local due = redis.call('ZRANGEBYSCORE', hold, '-inf', now)
  for _, id in ipairs(due) do
    release_part(stock, hold, part, avail, id, false)
  end
  return #due
end

local function field(stock, bucket, loc)
  return tonumber(redis.call('HGET', stock, bucket .. ':' .. loc) or '0')
end

-- A SKU's avail hash as a JSON object location -> available, below 0 read as 0 (what availability reads),
-- built as text: a location is quoted as it is unless it holds a quote, a backslash or a control
-- character (then cjson escapes it), and a count is written as Redis keeps it
local function avail_json(avail)
  local flat = redis.call('HGETALL', avail)
  local parts = {}
  for j = 1, #flat, 2 do
    local loc, n = flat[j], flat[j + 1]
    if string.find(loc, '[%c"\\]') then loc = cjson.encode(loc) else loc = '"' .. loc .. '"' end
    if string.byte(n, 1) == 45 then n = '0' end
    parts[#parts + 1] = loc .. ':' .. n
  end
  return '{' .. table.concat(parts, ',') .. '}'
end

-- A SKU's availability as avail_json writes it, kept as the SKU's ready answer with its earliest hold
-- expiry (see avail_add); a SKU without any location gets none, so that a read of SKUs that do not exist
-- leaves no keys behind
local function ready_write(hold, avail)
  local text = avail_json(avail)
  if text ~= '{}' then
    local first = redis.call('ZRANGE', hold, 0, 0, 'WITHSCORES')
    redis.call('SET', avail .. ':ready', (first[2] or '') .. '|' .. text)
  end
  return text
end

-- The SKU's ready answer with the counts of `changed` (loc -> count from the avail hash) written in and `exp`
-- (the expiry of a hold just added) as its NEXT when earlier: the text ready_write would write now, without
-- walking the hash (the answer was the whole summary before these changes, and the locations' order in it
-- stays). Answers false, changing nothing, when there is no answer (or a location is not in it, or is one
-- that avail_json escapes, or a count is too large to write exactly): the caller writes it whole.
local function ready_patch(avail, changed, exp)
  local key = avail .. ':ready'
  local text = redis.call('GET', key)
  if not text then return false end
  local bar = string.find(text, '|', 1, true)
  local due, body = string.sub(text, 1, bar - 1), string.sub(text, bar + 1)
  for loc, n in pairs(changed) do
    if string.find(loc, '[%c"\\]') or n >= 2 ^ 53 then return false end
    -- a key starts after '{' or ',' (inside a key a quote is always escaped)
    local at = string.find(body, ',"' .. loc .. '":', 1, true) or string.find(body, '{"' .. loc .. '":', 1, true)
    if not at then return false end
    local from = at + #loc + 4
    local to = string.find(body, '[,}]', from)
    body = string.sub(body, 1, from - 1) .. (n < 0 and '0' or string.format('%d', n)) .. string.sub(body, to)
  end
  if exp ~= nil and (due == '' or tonumber(exp) < tonumber(due)) then due = exp end
  redis.call('SET', key, due .. '|' .. body)
  return true
end

-- The SKU's availability as avail_json writes it: its ready answer's when there is one (it is the summary as
-- it is now), else written by ready_write
local function ready_body(hold, avail)
  local text = redis.call('GET', avail .. ':ready')
  if text then return string.sub(text, string.find(text, '|', 1, true) + 1) end
  return ready_write(hold, avail)
end
