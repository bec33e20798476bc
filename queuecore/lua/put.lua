-- ARGV: mpfx, max_queue_size (-1: none), the producer's origin digest and
-- JSON, payload...
local n = #ARGV - 4
local limit = tonumber(ARGV[2])
if limit >= 0 then
  local size = redis.call('ZCARD', K_READY) + redis.call('ZCARD', K_DELAYED) + redis.call('ZCARD', K_INPROG)
  if size + n > limit then return {0} end
end
note_origin(ARGV[3], ARGV[4])
local out = {1}
local bytes = 0
for i = 5, #ARGV do
  local id = redis.call('HINCRBY', K_META, 'last_id', 1)
  local h = mkey(id)
  redis.call('HSET', h, 'p', ARGV[i], 'at', NOW_S, 'n', 0, 'tok', 0, 'o', ARGV[3])
  enqueue(id, h)
  bytes = bytes + #ARGV[i]
  out[#out + 1] = id
end
redis.call('HINCRBY', K_META, 'enqueued', n)
redis.call('HINCRBY', K_META, 'bytes', bytes)
return out
