-- ARGV: mpfx, id
local id = ARGV[2]
local h = mkey(id)
local st = redis.call('HGET', h, 'st')
if not st then return 0 end
if st == 'ready' then return 1 end
drop_entry(h)
unindex(id)
enqueue(id, h, NOW_S)
return 1
