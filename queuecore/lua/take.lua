-- ARGV: mpfx, owner, visibility_timeout_ms, limit, owner_timeout_ms
-- -> {deliveries, ms until something falls due (-1: nothing), last stream id}
local owner, vt, limit, ttl = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
housekeep()
refresh(owner, ttl)
ensure_group()
local out = {}
local function lease(id, h)
  local n = redis.call('HINCRBY', h, 'n', 1)
  local tok = redis.call('HINCRBY', h, 'tok', 1)
  local dl = NOW + vt
  redis.call('HSET', h, 'st', 'in_progress', 'own', owner, 'dl', dl)
  redis.call('HDEL', h, 'ext')
  redis.call('ZREM', K_READY, id)
  redis.call('ZREM', K_RECLAIM, id)
  redis.call('ZADD', K_INPROG, id, id)
  redis.call('ZADD', K_LEASES, dl, id)
  redis.call('SADD', hkey(owner), id)
  out[#out + 1] = {tonumber(id), redis.call('HGET', h, 'p'), n, redis.call('HGET', h, 'at'), tok,
                   redis.call('LRANGE', ekey(id), 0, -1), redis.call('HGET', h, 'ra') or false}
end
-- Expired deliveries first: claim their pending entries for this consumer.
for _, id in ipairs(redis.call('ZRANGE', K_RECLAIM, 0, limit - 1)) do
  local h = mkey(id)
  local sid = redis.call('HGET', h, 'sid')
  if sid and redis.call('HGET', h, 'st') == 'ready' then
    local got = redis.call('XCLAIM', K_STREAM, GROUP, owner, 0, sid)
    if #got > 0 then
      lease(id, h)
    else
      -- no longer pending (acknowledged by hand?): give it a fresh entry
      redis.call('ZREM', K_RECLAIM, id)
      drop_entry(h)
      redis.call('ZREM', K_READY, id)
      enqueue(id, h, NOW_S)
    end
  else
    redis.call('ZREM', K_RECLAIM, id)
  end
end
local rounds = 0
while #out < limit and rounds < 10 do
  rounds = rounds + 1
  local res = redis.call('XREADGROUP', 'GROUP', GROUP, owner, 'COUNT', limit - #out, 'STREAMS', K_STREAM, '>')
  if not res then break end
  local entries = res[1][2]
  if #entries == 0 then break end
  for _, e in ipairs(entries) do
    local sid, fields = e[1], e[2]
    local id = nil
    for i = 1, #fields, 2 do
      if fields[i] == 'id' then id = fields[i + 1] end
    end
    local h = id and mkey(id)
    if h and redis.call('HGET', h, 'sid') == sid and redis.call('HGET', h, 'st') == 'ready' then
      lease(id, h)
    else
      -- an entry no message points at (deleted meanwhile): drop it
      redis.call('XACK', K_STREAM, GROUP, sid)
      redis.call('XDEL', K_STREAM, sid)
    end
  end
end
local nxt = -1
for _, k in ipairs({K_DUE, K_LEASES, K_OWNERS}) do
  local first = redis.call('ZRANGE', k, 0, 0, 'WITHSCORES')
  if #first > 0 then
    local wait = math.max(0, tonumber(first[2]) - NOW)
    if nxt < 0 or wait < nxt then nxt = wait end
  end
end
if #out == 0 and redis.call('ZCARD', K_RECLAIM) > 0 then nxt = 0 end
local last = redis.call('XREVRANGE', K_STREAM, '+', '-', 'COUNT', 1)
local last_id = '0-0'
if #last > 0 then last_id = last[1][1] end
return {out, nxt, last_id}
