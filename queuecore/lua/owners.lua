-- ARGV: mpfx -> {{owner, ms until its record lapses (negative: lapsed), ...},
--                {owner whose record lapsed in the last hour, ...}}
local live = {}
local flat = redis.call('ZRANGE', K_OWNERS, 0, -1, 'WITHSCORES')
for i = 1, #flat, 2 do
  live[#live + 1] = flat[i]
  live[#live + 1] = tonumber(flat[i + 1]) - NOW
end
return {live, redis.call('ZRANGEBYSCORE', K_LAPSED, NOW - 3600000, '+inf')}
