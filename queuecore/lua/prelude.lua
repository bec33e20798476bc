-- Prepended to every script of the Redis backend (queuecore/redis_backend.py):
-- the topic's keys, in the order of _KEY_NAMES, the server's clock, and the
-- helpers the scripts share. ARGV[1] is always the prefix of message keys.
local K_STREAM, K_META = KEYS[1], KEYS[2]
local K_READY, K_DELAYED, K_INPROG, K_FAILED = KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local K_DUE, K_LEASES, K_RECLAIM = KEYS[7], KEYS[8], KEYS[9]
local STATE_KEY = {ready = K_READY, delayed = K_DELAYED, in_progress = K_INPROG, failed = K_FAILED}
local MPFX = ARGV[1]
local GROUP = 'dq'
local T = redis.call('TIME')
local NOW = tonumber(T[1]) * 1000 + math.floor(tonumber(T[2]) / 1000)
local NOW_S = T[1] .. '.' .. string.format('%06d', tonumber(T[2]))

local function mkey(id) return MPFX .. id end
local function ekey(id) return MPFX .. id .. ':e' end

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

-- Ready at the back of the topic: a new stream entry (callers removed the old one).
local function enqueue(id, h)
  ensure_group()
  local sid = redis.call('XADD', K_STREAM, '*', 'id', id)
  redis.call('HSET', h, 'st', 'ready', 'sid', sid)
  redis.call('HDEL', h, 'own', 'dl', 'nb')
  redis.call('ZADD', K_READY, id, id)
end

-- An expired lease: ready again; its entry stays pending until a take XCLAIMs it.
local function expire(id, h)
  redis.call('ZREM', K_LEASES, id)
  redis.call('ZREM', K_INPROG, id)
  redis.call('HSET', h, 'st', 'ready')
  redis.call('HDEL', h, 'own', 'dl')
  redis.call('ZADD', K_READY, id, id)
  redis.call('ZADD', K_RECLAIM, id, id)
end

-- Promote due delayed messages and expire leases past their deadline.
local function housekeep()
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', K_DUE, '-inf', NOW, 'LIMIT', 0, 500)) do
    redis.call('ZREM', K_DUE, id)
    redis.call('ZREM', K_DELAYED, id)
    enqueue(id, mkey(id))
  end
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', K_LEASES, '-inf', NOW, 'LIMIT', 0, 500)) do
    expire(id, mkey(id))
  end
end

local function remove(id, h)
  drop_entry(h)
  unindex(id)
  redis.call('HINCRBY', K_META, 'bytes', -redis.call('HSTRLEN', h, 'p'))
  redis.call('DEL', h, ekey(id))
end

local function record(id)
  return {id, redis.call('HGETALL', mkey(id)), redis.call('LRANGE', ekey(id), 0, -1)}
end
