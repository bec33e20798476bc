-- ARGV: mpfx
local oldest = redis.call('ZRANGE', K_READY, 0, 0)
local at = false
if #oldest > 0 then at = redis.call('HGET', mkey(oldest[1]), 'at') end
return {tonumber(redis.call('HGET', K_META, 'bytes') or '0'), at}
