-- Acquire a lock, queue or debounce an entry, or wait in line. ARGV[4] scope, [5] name,
-- [6] owner, [7] ttl ms (0 none), [8] mode, [9] entry JSON, [10] most pending entries,
-- [11] waiter ticket ('' = no waiting), [12] wait ms, [13] step, [14] the waiter's queue
-- item on steps after 'try', [15] most waiters in line (a new one beyond: 'too_many'),
-- [16] a lease to hold it on ('' none): {'lease_not_found'} unless live, [17] '1' when
-- the scope is a session the call writes to: checked (expiry, quota) before anything is
-- written, indexed and created or touched when the call is acquired, queued or debounced
-- (here or in the claim of a lock handed to the waiter; not on joining the line),
-- [18] the most locks the namespace may hold (CORKBOARD_NAMESPACE_MAX_LOCKS; absent: no
-- bound): a new holder past it is {'quota_exceeded', 'locks', limit}, before anything is
-- written (ZCARD of the held-lock index: an expired lock counts until it is swept).
-- Steps: 'try' (first call), 'wake' (the waiter's wake list
-- was pushed), 'final' (its wait is over), 'cancel' (its client is gone; item '' when
-- the 'try' never answered: found by the ticket).
-- Replies {'acquired', owner, token, acquired_at, expires_at, pending_count, entries...},
-- {'held' | 'full', owner, token, acquired_at, expires_at, pending_count},
-- {'queued', position}, {'debounced'}, {'waiting', item}, {'withdrawn'} or
-- {'too_many_waiters', limit} or {'quota_exceeded', what, limit} (a claim refused by the
-- quota gives the lock back, as a 'cancel' does).
local scope, name, owner = ARGV[4], ARGV[5], ARGV[6]
local ttl, mode, entry, max_pending = tonumber(ARGV[7]), ARGV[8], ARGV[9], tonumber(ARGV[10])
local ticket, wait, step, item = ARGV[11], tonumber(ARGV[12]), ARGV[13], ARGV[14]
local sn = lk_sn(scope, name)
local lease = ARGV[16] or ''
local in_session = ARGV[17] == '1'
local max_locks = tonumber(ARGV[18] or '')
if lease ~= '' and not TX.lease_live(lease) then return {'lease_not_found'} end
local sess

local function acquired(h, items)
  if in_session then ss_lock_use(scope, sess, name) end
  if lease ~= '' then
    redis.call('SADD', PFX .. 'leasel:' .. lease, sn .. '|' .. string.format('%d', h.token))
  end
  local out = lk_fields({'acquired'}, h, sn)
  for i = 1, #items do out[#out + 1] = items[i] end
  return out
end

-- Leave the line; a lock handed over but never claimed goes to the next waiter, and
-- the pending entries stay for whoever claims it.
local function withdraw()
  if item == '' then
    -- Cancelled before its 'try' answered: find its item by the ticket.
    local line, prefix = redis.call('LRANGE', lk_wait(sn), 0, -1), ticket .. ':'
    for i = 1, #line do
      if string.sub(line[i], 1, #prefix) == prefix then item = line[i]; break end
    end
  end
  if item ~= '' then redis.call('LREM', lk_wait(sn), 1, item) end
  redis.call('DEL', lk_wake(ticket))
  local h = lk_load(scope, name)
  if h and not lk_expired(h) and h.ticket == ticket then
    lk_vacate(scope, name)
    lk_event('lock.released', scope, name,
      ev_join(lk_holder_tail(h, redis.call('LLEN', lk_pend(sn)), 0), {'babandoned', '1'}))
    lk_handoff(scope, name)
  end
end

if step == 'cancel' then
  withdraw()
  return {'withdrawn'}
end

if in_session then
  local fail
  sess, fail = ss_lock_check(scope)
  if fail then
    if step ~= 'try' then withdraw() end
    return fail
  end
end

local h = lk_live(scope, name)
if step ~= 'try' then
  redis.call('DEL', lk_wake(ticket))
  if h and h.ticket == ticket then
    -- This waiter was handed the lock: claim it, its lease now runs for its TTL, and it
    -- takes the pending entries.
    local ea = 0
    if h.ttl > 0 then ea = NOW + h.ttl end
    redis.call('HSET', lock_key(scope, name), 'ticket', '', 'expires_at', ea)
    h.expires_at = ea
    lk_set_deadline(sn, ea)
    local items = lk_take(sn)
    lk_event('lock.refreshed', scope, name, lk_holder_tail(h, 0, #items))
    return acquired(h, items)
  end
  redis.call('LREM', lk_wait(sn), 1, item)
end

if h and h.owner == owner then
  -- The same owner again: extend, keep the token, hand over the pending entries.
  local ea = 0
  if ttl > 0 then ea = NOW + ttl end
  redis.call('HSET', lock_key(scope, name), 'expires_at', ea, 'ttl', ttl)
  h.expires_at = ea
  lk_set_deadline(sn, ea)
  local items = lk_take(sn)
  lk_event('lock.refreshed', scope, name, lk_holder_tail(h, 0, #items))
  return acquired(h, items)
end

if not h then
  if max_locks and redis.call('ZCARD', PFX .. 'locks') >= max_locks then
    return {'quota_exceeded', 'locks', max_locks}
  end
  h = lk_grant(scope, name, owner, ttl, '')
  local items = lk_take(sn)
  lk_event('lock.acquired', scope, name, lk_holder_tail(h, 0, #items))
  return acquired(h, items)
end

if mode == 'queue' or mode == 'debounce' then
  if mode == 'queue' and redis.call('LLEN', lk_pend(sn)) >= max_pending then
    return lk_fields({'full'}, h, sn)
  end
  if mode == 'debounce' then redis.call('DEL', lk_pend(sn)) end
  local position = redis.call('RPUSH', lk_pend(sn), entry)
  if in_session then ss_lock_use(scope, sess, name) end
  lk_event('lock.queued', scope, name, {'smode', mode, 'sowner', owner,
    'dposition', position, 'dpending_count', position})
  if mode == 'debounce' then return {'debounced'} end
  return {'queued', position}
end

-- Exclusive and held by another: wait in line, or answer with the holder.
if ticket == '' or step == 'final' then return lk_fields({'held'}, h, sn) end
if step == 'try' then
  local max_waiters = tonumber(ARGV[15] or '') or 1000
  if redis.call('LLEN', lk_wait(sn)) >= max_waiters then
    -- Full: first drop the items of waiters whose wait is over (a crashed replica's).
    local line = redis.call('LRANGE', lk_wait(sn), 0, -1)
    for i = 1, #line do
      local _, dl = lk_parse_waiter(line[i])
      if dl and dl < NOW then redis.call('LREM', lk_wait(sn), 1, line[i]) end
    end
    if redis.call('LLEN', lk_wait(sn)) >= max_waiters then
      return {'too_many_waiters', max_waiters}
    end
  end
  item = ticket .. ':' .. string.format('%d', NOW + wait) .. ':' .. ttl .. ':' .. owner
else
  -- Woken, but the lock handed over was lost before this claim (expired or forced):
  -- back in line while the wait lasts.
  local _, dl = lk_parse_waiter(item)
  if dl < NOW then return lk_fields({'held'}, h, sn) end
end
local position = redis.call('RPUSH', lk_wait(sn), item)
lk_event('lock.queued', scope, name, {'smode', 'exclusive', 'sowner', owner,
  'dposition', position, 'dpending_count', redis.call('LLEN', lk_pend(sn))})
return {'waiting', item}
