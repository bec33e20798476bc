-- ARGV: mpfx
housekeep()
local out = {}
for _, f in ipairs({'enqueued', 'completed', 'retried'}) do
  out[#out + 1] = tonumber(redis.call('HGET', K_META, f) or '0')
end
for _, k in ipairs({K_READY, K_DELAYED, K_INPROG, K_FAILED}) do
  out[#out + 1] = redis.call('ZCARD', k)
end
return out
