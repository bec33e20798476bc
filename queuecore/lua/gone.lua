-- ARGV: mpfx, owner: the owner closes; its leases are ready again at once.
-- -> how many leases it gave back
local n = reclaim_owner(ARGV[2], OWNER_CLOSED)
redis.call('DEL', hkey(ARGV[2]))
return n
