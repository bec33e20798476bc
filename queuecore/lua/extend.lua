-- ARGV: mpfx, id, tok, seconds_ms -> 1 (the lease now ends seconds from now) or 0 (lost)
local id, tok, ms = ARGV[2], ARGV[3], tonumber(ARGV[4])
local h = mkey(id)
if not lease_holds(id, h, tok) then return 0 end
local dl = NOW + ms
redis.call('HSET', h, 'dl', dl, 'ext', NOW)
redis.call('ZADD', K_LEASES, dl, id)
return 1
