-- ARGV: mpfx, then per message: payload, enqueued_at, attempts, state,
-- not_before ms ('' for none), origin digest and JSON ('' for none),
-- number of errors, error JSON...
local out = {}
local i = 2
while i <= #ARGV do
  local payload, at, attempts, state, nb = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local okey, origin = ARGV[i + 5], ARGV[i + 6]
  local nerr = tonumber(ARGV[i + 7])
  local id = redis.call('HINCRBY', K_META, 'last_id', 1)
  local h = mkey(id)
  redis.call('HSET', h, 'p', payload, 'at', at, 'n', attempts, 'tok', 0)
  if okey ~= '' then
    note_origin(okey, origin)
    redis.call('HSET', h, 'o', okey)
  end
  for j = 1, nerr do redis.call('RPUSH', ekey(id), ARGV[i + 7 + j]) end
  if state == 'failed' then
    redis.call('HSET', h, 'st', 'failed')
    redis.call('ZADD', K_FAILED, id, id)
  elseif state == 'delayed' and nb ~= '' and tonumber(nb) > NOW then
    redis.call('HSET', h, 'st', 'delayed', 'nb', nb)
    redis.call('ZADD', K_DELAYED, id, id)
    redis.call('ZADD', K_DUE, tonumber(nb), id)
  else  -- ready from now: its wait here starts with its arrival
    enqueue(id, h, NOW_S)
  end
  redis.call('HINCRBY', K_META, 'bytes', #payload)
  out[#out + 1] = id
  i = i + 8 + nerr
end
redis.call('HINCRBY', K_META, 'enqueued', #out)
return out
