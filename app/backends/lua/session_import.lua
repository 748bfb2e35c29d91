-- Replace a session with a normalized snapshot, atomically. ARGV[4] session id, [5..7]
-- fence scope, lock, token, [8] metadata JSON, [9] ttl ms, [10] created_at ms (0: now),
-- then sections from ARGV[11], each a count and its items: variables (id, name, meta,
-- value), subscriptions (id), dedupe keys oldest first (key), thread states (id, JSON),
-- channel states (id, JSON), locks (name, owner, token, acquired_at, expires_at, ttl),
-- pending lists (name, count, entries...), and last the most locks the namespace may
-- hold (CORKBOARD_NAMESPACE_MAX_LOCKS): an import holding more live locks than the
-- session holds now, that would take the namespace past it, is refused before anything
-- is written, {'quota_exceeded', 'locks', limit} (as an acquire: ZCARD of the index).
-- A lock keeps its imported token unless that token was already given out here and is
-- not the current holder's: then it gets the next one. Token counters never go down.
-- Replies {'ok', revision, created (0/1), then name, token per held lock} or
-- {'stale_fence'}.
local sid = ARGV[4]
if not fence_holds(ARGV[5], ARGV[6], ARGV[7]) then return {'stale_fence'} end
local s = ss_live(sid)
local created = s == nil

-- The imported session's quota bytes, from the sections, before anything changes.
local function import_bytes()
  local p, total = 11, #ARGV[8]
  local nv = tonumber(ARGV[p])
  p = p + 1
  for _ = 1, nv do
    total = total + ss_var_bytes(ARGV[p + 2], ARGV[p + 3])
    p = p + 4
  end
  p = p + 1 + tonumber(ARGV[p])  -- subscriptions
  p = p + 1 + tonumber(ARGV[p])  -- dedupe keys
  for _ = 1, 2 do  -- thread states, channel states
    local c = tonumber(ARGV[p])
    p = p + 1
    for _ = 1, c do
      total = total + #ARGV[p + 1]
      p = p + 2
    end
  end
  return total, p
end
local size, locks_at = import_bytes()
local before = 0
if s then before = tonumber(redis.call('HGET', ss_key(sid), 'qb') or '0') end
local refused = quota_fails(0, size - before)
if refused then return refused end

local pos = 11
local function take()
  local v = ARGV[pos]
  pos = pos + 1
  return v
end

-- The current holders of the session's locks, before they are cleared.
local prior, held = {}, 0
local lock_names = ss_lock_names(sid)
for i = 1, #lock_names do
  local h = lk_load(sid, lock_names[i])
  if h then held = held + 1 end
  if h and not lk_expired(h) then prior[lock_names[i]] = h end
end
local imported = 0
for i = 1, tonumber(ARGV[locks_at]) do
  local ea = tonumber(ARGV[locks_at + 6 * (i - 1) + 5])
  if ea == 0 or ea > NOW then imported = imported + 1 end
end
local max_locks = tonumber(ARGV[#ARGV])
if imported > held and max_locks
    and redis.call('ZCARD', PFX .. 'locks') - held + imported > max_locks then
  return {'quota_exceeded', 'locks', max_locks}
end
ss_clear(sid, false)

local ttl = tonumber(ARGV[9])
local ca = tonumber(ARGV[10])
if ca == 0 then ca = NOW end
local ea = 0
if ttl > 0 then ea = NOW + ttl end
redis.call('HSET', ss_key(sid), 'md', ARGV[8], 'ca', ca, 'ua', NOW, 'ttl', ttl, 'ea', ea,
  'qb', size)
quota_add(size)
redis.call('ZADD', PFX .. 'sess', 0, sid)
set_deadline('s:' .. sid, ea)

local sv, svv, svn = ss_part('sv', sid), ss_part('svv', sid), ss_part('svn', sid)
for _ = 1, tonumber(take()) do
  local id, name, meta, value = take(), take(), take(), take()
  redis.call('HSET', sv, id, meta)
  redis.call('HSET', svv, id, value)
  redis.call('HSET', svn, name, id)
end
for _ = 1, tonumber(take()) do redis.call('SADD', ss_part('ssub', sid), take()) end
local ndd = tonumber(take())
for i = 1, ndd do redis.call('ZADD', ss_part('sdd', sid), i, take()) end
redis.call('HSET', ss_key(sid), 'dds', ndd)
for _, part in ipairs({'sth', 'sch'}) do
  for _ = 1, tonumber(take()) do
    local id, state = take(), take()
    redis.call('HSET', ss_part(part, sid), id, state)
  end
end

local out = {'ok', 0, 0}
if created then out[3] = 1 end
for _ = 1, tonumber(take()) do
  local name, owner, token = take(), take(), tonumber(take())
  local acquired_at, expires_at, lttl = tonumber(take()), tonumber(take()), tonumber(take())
  local sn = lk_sn(sid, name)
  local counter = tonumber(redis.call('GET', PFX .. 'locktok:' .. sn) or '0')
  local before = prior[name]
  local same = before and before.owner == owner and before.token == token
  if token <= counter and not same then token = counter + 1 end
  if token > counter then redis.call('SET', PFX .. 'locktok:' .. sn, token) end
  redis.call('SADD', ss_part('slk', sid), name)
  if expires_at == 0 or expires_at > NOW then
    if acquired_at == 0 then acquired_at = NOW end
    redis.call('HSET', lock_key(sid, name), 'owner', owner, 'token', token,
      'acquired_at', acquired_at, 'expires_at', expires_at, 'ttl', lttl, 'ticket', '')
    redis.call('ZADD', PFX .. 'locks', 0, sn)
    set_deadline('l:' .. sn, expires_at)
    out[#out + 1] = name
    out[#out + 1] = token
  end
end
for _ = 1, tonumber(take()) do
  local name, count = take(), tonumber(take())
  local sn = lk_sn(sid, name)
  for _ = 1, count do redis.call('RPUSH', lk_pend(sn), take()) end
  redis.call('SADD', ss_part('slk', sid), name)
end
out[2] = emit('session.imported', sid, sid, {'bcreated', created and '1' or '0'})

-- A lock the import left free goes to its first waiter at once (who claims the imported
-- pending entries), as after a delete: none waits for a release to come. By name, as the
-- other engines hand them.
local names, seen = {}, {}
for _, list in ipairs({lock_names, ss_lock_names(sid)}) do
  for i = 1, #list do
    if not seen[list[i]] then
      seen[list[i]] = true
      names[#names + 1] = list[i]
    end
  end
end
table.sort(names)
for i = 1, #names do
  local name = names[i]
  if redis.call('EXISTS', lock_key(sid, name)) == 0
      and redis.call('LLEN', lk_wait(lk_sn(sid, name))) > 0
      and lk_handoff(sid, name) then
    redis.call('SADD', ss_part('slk', sid), name)
  end
end
return out
