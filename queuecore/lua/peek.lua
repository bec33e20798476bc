-- ARGV: mpfx, id
housekeep()
if redis.call('EXISTS', mkey(ARGV[2])) == 0 then return false end
return record(ARGV[2])
