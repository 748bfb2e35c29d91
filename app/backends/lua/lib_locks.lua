-- Locks -----------------------------------------------------------------------------
-- A lock is (scope, name): scope '' for namespace locks, else a session id. SN is
-- scope..'|'..name (neither may contain '|'). Layout under PFX:
--   'lock:'..SN       hash    the holder: owner token acquired_at expires_at (ms, 0 = none)
--                             ttl (ms, reused by refresh) ticket (waiter it was handed to)
--   'locktok:'..SN    string  the last fencing token given out; never deleted
--   'lockpend:'..SN   list    pending entries (JSON), oldest first; survives expiry
--   'lockwait:'..SN   list    waiters 'ticket:wait_deadline_ms:ttl_ms:owner', FIFO
--   'lockwake:'..T    list    pushed when the lock is handed to waiter T; the hand-off also
--                             publishes T on channel LK_WAKE_CHANNEL, which one listener
--                             per process hears (waiting holds no connection). The list
--                             stays so a waiter that missed the message can check it.
--   'locks'           zset    SN of held locks (score 0), for listing
-- Invariant: a lock with live waiters is held; whoever frees it hands it on at once.

local function lk_sn(scope, name) return scope .. '|' .. name end
local function lk_pend(sn) return PFX .. 'lockpend:' .. sn end
local function lk_wait(sn) return PFX .. 'lockwait:' .. sn end
local function lk_wake(ticket) return PFX .. 'lockwake:' .. ticket end
local LK_WAKE_KEEP_MS = 120000
local LK_WAKE_CHANNEL = 'cb:lockwake'
-- A lock handed to a waiter is held at most this long until the waiter claims it (then
-- for its TTL), so a waiter that vanished (its replica died) holds up the line briefly.
local LK_CLAIM_MS = 5000

local function lk_load(scope, name)
  local r = redis.call('HMGET', lock_key(scope, name), 'owner', 'token', 'acquired_at',
    'expires_at', 'ttl', 'ticket')
  if not r[1] then return nil end
  return {owner = r[1], token = tonumber(r[2]), acquired_at = tonumber(r[3]),
    expires_at = tonumber(r[4]), ttl = tonumber(r[5] or '0'), ticket = r[6] or ''}
end

local function lk_expired(h) return h.expires_at > 0 and h.expires_at <= NOW end

-- An event's fields: the holder, the pending list's length after the change and, on
-- acquired/refreshed/released, how many entries the change handed over (nil: omitted).
local function lk_holder_tail(h, pending_count, handed_over)
  local t = ev_join({'sowner', h.owner, 'dtoken', h.token}, ev_time('expires_at', h.expires_at),
    {'dpending_count', pending_count})
  if handed_over then t = ev_join(t, {'dhanded_over', handed_over}) end
  return t
end

local function lk_event(typ, scope, name, tail)
  emit(typ, name, scope, tail)
end

-- The reply fields of a holder: owner token acquired_at expires_at pending_count
local function lk_fields(out, h, sn)
  out[#out + 1] = h.owner
  out[#out + 1] = h.token
  out[#out + 1] = h.acquired_at
  out[#out + 1] = h.expires_at
  out[#out + 1] = redis.call('LLEN', lk_pend(sn))
  return out
end

local function lk_set_deadline(sn, ea) set_deadline('l:' .. sn, ea) end

-- A new holder with the next token; one handed to waiter 'ticket' until it claims it.
local function lk_grant(scope, name, owner, ttl, ticket)
  local sn = lk_sn(scope, name)
  local token = redis.call('INCR', PFX .. 'locktok:' .. sn)
  local ea = 0
  if ticket ~= '' then
    if ttl > 0 and ttl < LK_CLAIM_MS then ea = NOW + ttl else ea = NOW + LK_CLAIM_MS end
  elseif ttl > 0 then
    ea = NOW + ttl
  end
  redis.call('HSET', lock_key(scope, name), 'owner', owner, 'token', token,
    'acquired_at', NOW, 'expires_at', ea, 'ttl', ttl, 'ticket', ticket)
  redis.call('ZADD', PFX .. 'locks', 0, sn)
  lk_set_deadline(sn, ea)
  return {owner = owner, token = token, acquired_at = NOW, expires_at = ea, ttl = ttl,
    ticket = ticket}
end

local function lk_vacate(scope, name)
  local sn = lk_sn(scope, name)
  redis.call('DEL', lock_key(scope, name))
  redis.call('ZREM', PFX .. 'locks', sn)
  redis.call('ZREM', PFX .. 'ttl', 'l:' .. sn)
end

-- The pending entries, taken off the list.
local function lk_take(sn)
  local items = redis.call('LRANGE', lk_pend(sn), 0, -1)
  redis.call('DEL', lk_pend(sn))
  return items
end

local function lk_parse_waiter(item)
  local ticket, dl, ttl, owner = string.match(item, '^(%x+):(%d+):(%d+):(.*)$')
  return ticket, tonumber(dl), tonumber(ttl), owner
end

-- Hand the free lock to the first waiter still within its wait, and wake it. Waiters past
-- their deadline are gone (or about to find out themselves) and are dropped.
local function lk_handoff(scope, name)
  local sn = lk_sn(scope, name)
  while true do
    local item = redis.call('LPOP', lk_wait(sn))
    if not item then return nil end
    local ticket, dl, ttl, owner = lk_parse_waiter(item)
    if ticket and dl >= NOW then
      local h = lk_grant(scope, name, owner, ttl, ticket)
      lk_event('lock.acquired', scope, name,
        lk_holder_tail(h, redis.call('LLEN', lk_pend(sn)), 0))
      redis.call('RPUSH', lk_wake(ticket), h.token)
      redis.call('PEXPIRE', lk_wake(ticket), LK_WAKE_KEEP_MS)
      redis.call('PUBLISH', LK_WAKE_CHANNEL, ticket)
      return h
    end
  end
end

-- The live holder or nil; one past its deadline is expired here (with its event) and the
-- lock handed to the next waiter, who is then returned as the holder.
local function lk_live(scope, name)
  local h = lk_load(scope, name)
  if h and lk_expired(h) then
    local sn = lk_sn(scope, name)
    lk_vacate(scope, name)
    lk_event('lock.expired', scope, name, lk_holder_tail(h, redis.call('LLEN', lk_pend(sn))))
    return lk_handoff(scope, name)
  end
  return h
end

-- End the holder h: take the pending entries, emit lock.released, hand the lock on.
-- extra: more event fields ({'bforced', '1'}). Returns the entries handed over.
local function lk_end(scope, name, h, extra)
  local sn = lk_sn(scope, name)
  local items = lk_take(sn)
  if h then
    lk_vacate(scope, name)
    lk_event('lock.released', scope, name, ev_join(lk_holder_tail(h, 0, #items), extra))
    lk_handoff(scope, name)
  elseif #items > 0 then
    lk_event('lock.released', scope, name, ev_join({'nowner', '', 'ntoken', '',
      'nexpires_at', '', 'dpending_count', 0, 'dhanded_over', #items}, extra))
  end
  return items
end

EXPIRERS['l'] = function(sn)
  local scope, name = string.match(sn, '^([^|]*)|(.*)$')
  local h = lk_load(scope, name)
  if h and lk_expired(h) then
    lk_live(scope, name)
    return 1
  end
  if not h or h.expires_at == 0 then redis.call('ZREM', PFX .. 'ttl', 'l:' .. sn) end
  return 0
end
