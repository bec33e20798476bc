-- ARGV: mpfx, owner, owner_timeout_ms: refresh the owner's liveness record
-- (after taking back its leases if the record had lapsed), and do the
-- topic's housekeeping, so abandoned leases show as ready without a take.
housekeep()
refresh(ARGV[2], tonumber(ARGV[3]))
return 1
