-- ARGV: mpfx, state ('' for all but completed), after, limit
housekeep()
local state, after, limit = ARGV[2], ARGV[3], tonumber(ARGV[4])
local keys = {K_READY, K_DELAYED, K_INPROG, K_FAILED}
if state ~= '' then keys = {STATE_KEY[state]} end
local ids = {}
for _, k in ipairs(keys) do
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', k, '(' .. after, '+inf', 'LIMIT', 0, limit)) do
    ids[#ids + 1] = tonumber(id)
  end
end
table.sort(ids)
local out = {}
for i = 1, math.min(limit, #ids) do out[i] = record(ids[i]) end
return out
