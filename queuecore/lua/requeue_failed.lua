-- ARGV: mpfx, batch
local ids = redis.call('ZRANGE', K_FAILED, 0, tonumber(ARGV[2]) - 1)
for _, id in ipairs(ids) do
  redis.call('ZREM', K_FAILED, id)
  enqueue(id, mkey(id), NOW_S)
end
return #ids
