-- ARGV: mpfx, id, tok, seconds_ms -> 1 (the lease now ends seconds from now) or 0 (lost)
local id, tok, ms = ARGV[2], ARGV[3], tonumber(ARGV[4])
local h = mkey(id)
local own = redis.call('HGET', h, 'own')
if own and lapsed(own) then return 0 end
if redis.call('HGET', h, 'st') ~= 'in_progress' or redis.call('HGET', h, 'tok') ~= tok then
  return 0
end
local dl = tonumber(redis.call('HGET', h, 'dl'))
if dl and dl <= NOW then
  expire(id, h)  -- it belongs to the next taker
  return 0
end
dl = NOW + ms
redis.call('HSET', h, 'dl', dl, 'ext', NOW)
redis.call('ZADD', K_LEASES, dl, id)
return 1
