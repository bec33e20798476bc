-- ARGV: mpfx, id, tok, outcome, delay_ms, error JSON ('' for none), errors kept
local id, tok, outcome = ARGV[2], ARGV[3], ARGV[4]
local delay, err, kept = tonumber(ARGV[5]), ARGV[6], tonumber(ARGV[7])
local h = mkey(id)
if not lease_holds(id, h, tok) then return 0 end
if err ~= '' then
  redis.call('RPUSH', ekey(id), err)
  redis.call('LTRIM', ekey(id), -kept, -1)
end
unhold(id, h)
redis.call('ZREM', K_INPROG, id)
redis.call('ZREM', K_LEASES, id)
drop_entry(h)
if outcome == 'complete' then
  redis.call('HINCRBY', K_META, 'bytes', -redis.call('HSTRLEN', h, 'p'))
  redis.call('DEL', h, ekey(id))
  redis.call('HINCRBY', K_META, 'completed', 1)
elseif outcome == 'retry' then
  redis.call('HINCRBY', K_META, 'retried', 1)
  if delay > 0 then
    local nb = NOW + delay
    redis.call('HSET', h, 'st', 'delayed', 'nb', nb)
    redis.call('HDEL', h, 'own', 'dl', 'ext')
    redis.call('ZADD', K_DELAYED, id, id)
    redis.call('ZADD', K_DUE, nb, id)
  else
    enqueue(id, h, NOW_S)
  end
else
  redis.call('HSET', h, 'st', 'failed')
  redis.call('HDEL', h, 'own', 'dl', 'ext')
  redis.call('ZADD', K_FAILED, id, id)
end
return 1
