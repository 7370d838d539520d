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
-- (reserve.lua), which reads the answer first (ready_get), changes the avail hash with avail_take and then,
-- in the same call, writes the new counts into the answer it read with ready_patch (or the whole answer
-- again with ready_write when there is none to patch). A hold added comes with an avail change, so the
-- answer's NEXT is never later than the earliest hold (a hold put back or moved earlier without one calls
-- ready_stale): while NEXT is not due no hold is, and a reader that finds NEXT due runs available.lua,
-- which prunes the hold.
local function ready_stale(avail)
  redis.call('DEL', avail .. ':ready')
end

local function avail_add(avail, loc, n)
  redis.call('HINCRBY', avail, loc, n)
  ready_stale(avail)
end

-- A take of `qty` units (the count as text) at loc from the avail hash that leaves the ready answer for
-- ready_patch: the new count is recorded in `changed` (loc -> count), the table ready_patch then writes in.
local function avail_take(avail, loc, qty, changed)
  changed[loc] = redis.call('HINCRBY', avail, loc, '-' .. qty)
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

-- The SKU's ready answer before a reservation changes anything: {due = NEXT as text, body = JSON} when there
-- is one and its NEXT is not due at `now` (then none of the SKU's holds is: there is nothing to prune and
-- the answer is the summary as it is now), else nil (the caller prunes)
local function ready_get(avail, now)
  local text = redis.call('GET', avail .. ':ready')
  if not text then return nil end
  local bar = string.find(text, '|', 1, true)
  local due = string.sub(text, 1, bar - 1)
  if due ~= '' and tonumber(due) <= now then return nil end
  return {due = due, body = string.sub(text, bar + 1)}
end

-- Where the count of `loc` is in a ready answer's JSON: its first character and the one after its last;
-- false when the location is not in it (it has no bucket), nil when the answer cannot say (a location that
-- avail_json escapes). A key starts after '{' or ',' and a count is digits: '"LOC":' found anywhere else is
-- inside an escaped key (then nil too).
local function ready_at(body, loc)
  if string.find(loc, '[%c"\\]') then return nil end
  local at = string.find(body, '"' .. loc .. '":', 1, true)
  if not at then return false end
  local before = string.byte(body, at - 1)
  if before ~= 44 and before ~= 123 then return nil end
  local from = at + #loc + 3
  return from, string.find(body, '[,}]', from)
end

-- The count of `loc` in a ready answer read by ready_get (below 0 read as 0), nil when there is no answer
-- or it cannot say: the caller reads the avail hash
local function ready_count(ready, loc)
  if not ready then return nil end
  local from, to = ready_at(ready.body, loc)
  if from then return tonumber(string.sub(ready.body, from, to - 1)) end
  if from == false then return 0 end
  return nil
end

-- The ready answer read by ready_get with the counts of `changed` (loc -> count from the avail hash) written
-- in and `exp` (the expiry of a hold just added) as its NEXT when earlier: the text ready_write would write
-- now, without walking the hash (the answer was the whole summary before these changes, and the locations'
-- order in it stays). Answers false, changing nothing, when a location is not in it (or is one that
-- avail_json escapes, or a count is too large to write exactly): the caller writes it whole.
local function ready_patch(avail, ready, changed, exp)
  local body, due = ready.body, ready.due
  local key, edits, whole = avail .. ':ready', {}, false
  if due == '' or tonumber(exp) < tonumber(due) then due, whole = exp, true end
  for loc, n in pairs(changed) do
    if n >= 9007199254740992 then return false end
    local from, to = ready_at(body, loc)
    if not from then return false end
    local count = n < 0 and '0' or string.format('%d', n)
    if #count ~= to - from then whole = true end
    edits[#edits + 1] = {from, to, count}
  end
  if whole then
    -- a count of another width or a new NEXT: the answer is written again
    table.sort(edits, function(x, y) return x[1] > y[1] end)
    for _, e in ipairs(edits) do body = string.sub(body, 1, e[1] - 1) .. e[3] .. string.sub(body, e[2]) end
    redis.call('SET', key, due .. '|' .. body)
  else
    -- counts of the same width written over the old ones where they stand (after 'NEXT|')
    for _, e in ipairs(edits) do redis.call('SETRANGE', key, #due + e[1], e[3]) end
  end
  return true
end

-- The SKU's availability as avail_json writes it: its ready answer's when there is one (it is the summary as
-- it is now), else written by ready_write
local function ready_body(hold, avail)
  local text = redis.call('GET', avail .. ':ready')
  if text then return string.sub(text, string.find(text, '|', 1, true) + 1) end
  return ready_write(hold, avail)
end
