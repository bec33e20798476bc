-- ARGV: mpfx, id
local id = ARGV[2]
local h = mkey(id)
if redis.call('EXISTS', h) == 0 then return 0 end
remove(id, h)
return 1
