-- ARGV: mpfx, id, fix ('1' or '0') -> list of problems found (and fixed, with fix)
-- Re-derives the indexes of one message from its hash, the truth.
local id, fix = ARGV[2], ARGV[3] == '1'
local h = mkey(id)
local problems = {}
local st = redis.call('HGET', h, 'st')
if not st then
  for name, k in pairs(STATE_KEY) do
    if redis.call('ZSCORE', k, id) then
      problems[#problems + 1] = 'listed as ' .. name .. ' but the message is gone'
    end
  end
  if #problems > 0 and fix then unindex(id) end
  return problems
end
if not STATE_KEY[st] then
  -- an unknown state reads as ready: a duplicate is acceptable, a loss is not
  problems[#problems + 1] = 'unknown state ' .. st
  if fix then drop_entry(h); unindex(id); enqueue(id, h, NOW_S) end
  return problems
end
for name, k in pairs(STATE_KEY) do
  local listed = redis.call('ZSCORE', k, id) ~= false
  if listed ~= (name == st) then
    problems[#problems + 1] = (listed and 'listed' or 'not listed') .. ' as ' .. name .. ' while ' .. st
  end
end
local sid = redis.call('HGET', h, 'sid')
local pending = false
if sid then pending = #redis.call('XPENDING', K_STREAM, GROUP, sid, sid, 1) > 0 end
local needs_entry = false
if st == 'ready' then
  if not sid or #redis.call('XRANGE', K_STREAM, sid, sid) == 0 then
    problems[#problems + 1] = 'ready without a stream entry'
    needs_entry = true
  end
elseif st == 'in_progress' then
  if not pending then
    problems[#problems + 1] = 'in progress but not pending in the group'
    needs_entry = true
  elseif not redis.call('ZSCORE', K_LEASES, id) then
    problems[#problems + 1] = 'in progress without a lease deadline'
  else
    local own = redis.call('HGET', h, 'own')
    if own and redis.call('SISMEMBER', hkey(own), id) == 0 then
      problems[#problems + 1] = 'in progress but not among its owner\'s leases'
    end
  end
elseif st == 'delayed' and not redis.call('ZSCORE', K_DUE, id) then
  problems[#problems + 1] = 'delayed without a due time'
end
if #problems > 0 and fix then
  if needs_entry then
    drop_entry(h); unindex(id); enqueue(id, h, NOW_S)
  else
    unindex(id)
    redis.call('ZADD', STATE_KEY[st], id, id)
    if st == 'ready' and pending then redis.call('ZADD', K_RECLAIM, id, id) end
    if st == 'delayed' then redis.call('ZADD', K_DUE, tonumber(redis.call('HGET', h, 'nb') or NOW), id) end
    if st == 'in_progress' then
      local dl = tonumber(redis.call('HGET', h, 'dl') or NOW)
      redis.call('HSET', h, 'dl', dl)
      redis.call('ZADD', K_LEASES, dl, id)
      local own = redis.call('HGET', h, 'own')
      if own then redis.call('SADD', hkey(own), id) end
    end
  end
end
return problems
