-- Prepended to every script of the Redis backend (queuecore/redis_backend.py):
-- the topic's keys, in the order of _KEY_NAMES, the server's clock, and the
-- helpers the scripts share. ARGV[1] is always the prefix of message keys.
local K_STREAM, K_META = KEYS[1], KEYS[2]
local K_READY, K_DELAYED, K_INPROG, K_FAILED = KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local K_DUE, K_LEASES, K_RECLAIM = KEYS[7], KEYS[8], KEYS[9]
-- Owners' liveness: owner -> the time (ms) its record lapses unless refreshed;
-- and the owners whose record lapsed in the last hour -> when it did.
local K_OWNERS, K_LAPSED = KEYS[10], KEYS[11]
-- The processes that put the topic's messages: digest -> origin JSON. A
-- message's 'o' is the digest, so its hash stays small enough for Redis to
-- keep it compact (a listpack) whatever the producer's name.
local K_ORIGINS = KEYS[12]
local STATE_KEY = {ready = K_READY, delayed = K_DELAYED, in_progress = K_INPROG, failed = K_FAILED}
local MPFX = ARGV[1]
local GROUP = 'dq'
local T = redis.call('TIME')
local NOW = tonumber(T[1]) * 1000 + math.floor(tonumber(T[2]) / 1000)
local NOW_S = T[1] .. '.' .. string.format('%06d', tonumber(T[2]))

local function mkey(id) return MPFX .. id end
local function ekey(id) return MPFX .. id .. ':e' end
-- The set of ids an owner holds leases on: MPFX is '<prefix>:{topic}:m:'.
local HPFX = string.sub(MPFX, 1, -3) .. 'held:'
local function hkey(own) return HPFX .. own end

-- A lease ends: the owner no longer holds it.
local function unhold(id, h)
  local own = redis.call('HGET', h, 'own')
  if own then redis.call('SREM', hkey(own), id) end
end

local function ensure_group()
  if redis.call('EXISTS', K_STREAM) == 0 then
    redis.call('XGROUP', 'CREATE', K_STREAM, GROUP, '0', 'MKSTREAM')
  end
end

-- Ack and delete the message's stream entry, if it has one.
local function drop_entry(h)
  local sid = redis.call('HGET', h, 'sid')
  if sid then
    redis.call('XACK', K_STREAM, GROUP, sid)
    redis.call('XDEL', K_STREAM, sid)
    redis.call('HDEL', h, 'sid')
  end
end

local function unindex(id)
  for _, k in ipairs({K_READY, K_DELAYED, K_INPROG, K_FAILED, K_DUE, K_LEASES, K_RECLAIM}) do
    redis.call('ZREM', k, id)
  end
end

-- The message's history keeps its errors, and the leases taken back
-- unsettled (the last ERRORS_KEPT of both); these say why.
local ERRORS_KEPT = @ERRORS_KEPT@
local LEASE_EXPIRED, OWNER_LAPSED, OWNER_CLOSED = @LEASE_EXPIRED@, @OWNER_LAPSED@, @OWNER_CLOSED@

-- Ready at the back of the topic: a new stream entry (callers removed the
-- old one). ``since`` (seconds, a string): when it became ready, kept as
-- 'ra' for the wait a take measures; nil for a put (its 'at' says it).
local function enqueue(id, h, since)
  unhold(id, h)
  ensure_group()
  local sid = redis.call('XADD', K_STREAM, '*', 'id', id)
  redis.call('HSET', h, 'st', 'ready', 'sid', sid)
  if since then redis.call('HSET', h, 'ra', since) end
  redis.call('HDEL', h, 'own', 'dl', 'nb', 'ext')
  redis.call('ZADD', K_READY, id, id)
end

-- A lease taken back unsettled, kept in the message's history, with the
-- holder's origin when it left one (its first take of the topic does).
local function note_lost(id, h, why)
  local own = redis.call('HGET', h, 'own') or ''
  local fields = {at = tonumber(NOW_S), attempt = tonumber(redis.call('HGET', h, 'n') or '0'),
                  reason = why, outcome = 'lost', by = own}
  local origin = own ~= '' and redis.call('HGET', K_ORIGINS, own)
  if origin then fields.by_origin = origin end
  local rec = cjson.encode(fields)
  redis.call('RPUSH', ekey(id), rec)
  redis.call('LTRIM', ekey(id), -ERRORS_KEPT, -1)
end

-- An expired lease: ready again; its entry stays pending until a take XCLAIMs it.
local function expire(id, h, why)
  note_lost(id, h, why)
  unhold(id, h)
  redis.call('ZREM', K_LEASES, id)
  redis.call('ZREM', K_INPROG, id)
  redis.call('HSET', h, 'st', 'ready', 'ra', NOW_S)
  redis.call('HDEL', h, 'own', 'dl', 'ext')
  redis.call('ZADD', K_READY, id, id)
  redis.call('ZADD', K_RECLAIM, id, id)
end

-- Every lease of an owner taken back: ready again, for the next taker.
-- An owner is reclaimed once its liveness record has lapsed (a process
-- killed, or stalled past owner_timeout) or when it closes.
local function reclaim_owner(own, why)
  local hk = hkey(own)
  local n = 0
  while true do
    local ids = redis.call('SPOP', hk, 500)
    if #ids == 0 then break end
    for _, id in ipairs(ids) do
      local h = mkey(id)
      if redis.call('HGET', h, 'st') == 'in_progress' and redis.call('HGET', h, 'own') == own then
        expire(id, h, why)
        n = n + 1
      end
    end
  end
  redis.call('ZREM', K_OWNERS, own)
  return n
end

-- Reclaim an owner whose record lapsed, and remember it lapsed.
local function reclaim_lapsed_owner(own)
  local n = reclaim_owner(own, OWNER_LAPSED)
  redis.call('ZADD', K_LAPSED, NOW, own)
  return n
end

-- Reclaim the owners whose record lapsed before NOW.
local function reclaim_lapsed()
  for _, own in ipairs(redis.call('ZRANGEBYSCORE', K_OWNERS, '-inf', '(' .. NOW, 'LIMIT', 0, 50)) do
    reclaim_lapsed_owner(own)
  end
  redis.call('ZREMRANGEBYSCORE', K_LAPSED, '-inf', NOW - 3600000)
end

-- Refresh an owner's record; one that had lapsed loses its leases first,
-- so a process that was stalled past owner_timeout can settle none of the
-- messages it held (they are another taker's now).
local function refresh(own, ttl)
  local until_ms = redis.call('ZSCORE', K_OWNERS, own)
  if until_ms and tonumber(until_ms) < NOW then reclaim_lapsed_owner(own) end
  redis.call('ZADD', K_OWNERS, NOW + ttl, own)
  redis.call('ZREM', K_LAPSED, own)
end

-- Whether an owner's record has lapsed (then its leases are reclaimed now).
local function lapsed(own)
  local until_ms = redis.call('ZSCORE', K_OWNERS, own)
  if until_ms and tonumber(until_ms) < NOW then
    reclaim_lapsed_owner(own)
    return true
  end
  return false
end

-- Whether the lease of token ``tok`` still holds: its owner's record has
-- not lapsed, it is the current delivery, and its deadline has not passed
-- (a lease past it is handed to the next taker here).
local function lease_holds(id, h, tok)
  local own = redis.call('HGET', h, 'own')
  if own and lapsed(own) then return false end
  if redis.call('HGET', h, 'st') ~= 'in_progress' or redis.call('HGET', h, 'tok') ~= tok then
    return false
  end
  local dl = tonumber(redis.call('HGET', h, 'dl'))
  if dl and dl <= NOW then
    expire(id, h, LEASE_EXPIRED)
    return false
  end
  return true
end

-- Promote due delayed messages, take back the leases of owners whose
-- liveness lapsed, and expire leases past their deadline.
local function housekeep()
  reclaim_lapsed()
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', K_DUE, '-inf', NOW, 'LIMIT', 0, 500)) do
    redis.call('ZREM', K_DUE, id)
    redis.call('ZREM', K_DELAYED, id)
    local h = mkey(id)
    local nb = tonumber(redis.call('HGET', h, 'nb'))
    -- Ready since it came due, not since this look found it.
    enqueue(id, h, nb and string.format('%.3f', nb / 1000) or NOW_S)
  end
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', K_LEASES, '-inf', NOW, 'LIMIT', 0, 500)) do
    expire(id, mkey(id), LEASE_EXPIRED)
  end
end

local function remove(id, h)
  unhold(id, h)
  drop_entry(h)
  unindex(id)
  redis.call('HINCRBY', K_META, 'bytes', -redis.call('HSTRLEN', h, 'p'))
  redis.call('DEL', h, ekey(id))
end

-- At most MAX_ORIGINS producers are kept per topic: past that, a put by a
-- new one drops another at random. A producer still putting writes itself
-- back with its next put, so what goes is mostly processes long gone (a
-- message of theirs then shows no producer).
local MAX_ORIGINS = @MAX_ORIGINS@
local function note_origin(key, origin)
  -- Read first: a write of what is there would still reach the AOF and the
  -- replicas with every put.
  if key == '' or redis.call('HEXISTS', K_ORIGINS, key) == 1 then return end
  redis.call('HSET', K_ORIGINS, key, origin)
  if redis.call('HLEN', K_ORIGINS) > MAX_ORIGINS then
    local other = redis.call('HRANDFIELD', K_ORIGINS)
    if other and other ~= key then redis.call('HDEL', K_ORIGINS, other) end
  end
end

-- The origin JSON of a message (false if none is known). A message put
-- before origins were shared per topic holds its JSON itself.
local function origin_of(h)
  local o = redis.call('HGET', h, 'o')
  if not o then return false end
  if string.sub(o, 1, 1) == '{' then return o end
  return redis.call('HGET', K_ORIGINS, o)
end

local function record(id)
  local h = mkey(id)
  return {id, redis.call('HGETALL', h), redis.call('LRANGE', ekey(id), 0, -1), origin_of(h)}
end
