-- ARGV: mpfx, batch, state...
local left = tonumber(ARGV[2])
local gone = 0
for i = 3, #ARGV do
  local ids = redis.call('ZRANGE', STATE_KEY[ARGV[i]], 0, left - 1)
  for _, id in ipairs(ids) do
    remove(id, mkey(id))
  end
  gone = gone + #ids
  left = left - #ids
  if left <= 0 then break end
end
return gone
