-- Transactions and leases ------------------------------------------------------------
-- Layout under PFX:
--   'lease:'..id      hash    a lease: ttl ga ea (ms)
--   'leasek:'..id     set     keys written on the lease; a key is on it while its entry's
--                             'ls' field names it (a later write without it detaches it)
--   'leasel:'..id     set     'scope|name|token' of locks acquired on it; released with
--                             the lease only while that token still holds the lock
--   'leases'          zset    lease ids (score 0), for listing
--   'ttl' member 'e:'..id     the lease's deadline
-- Functions live in the table TX (a script may hold only so many locals).

local TX = {}

-- One key change of a compound event ('txn', 'lease.revoked', 'lease.expired').
-- Each change is an object item of the event's 'changes' list (Event fields).
function TX.kv_change(typ, key, value, old)
  return ev_pack({'{', ev_pack(ev_join({'stype', typ, 'skey', key}, values_tail(value, old)))})
end

function TX.lock_change(scope, name, owner, token, pending)
  local f = {'stype', 'lock.released', 'skey', name}
  if scope ~= '' then f[5], f[6] = 'ssession', scope end
  return ev_pack({'{', ev_pack(ev_join(f, {'sowner', owner, 'dtoken', token,
    'dpending_count', pending}))})
end

function TX.changes_tail(changes)
  return {'[changes', table.concat(changes)}
end

function TX.lease_key(id) return PFX .. 'lease:' .. id end

function TX.lease_load(id)
  local r = redis.call('HMGET', TX.lease_key(id), 'ttl', 'ga', 'ea')
  if not r[1] then return nil end
  return {ttl = tonumber(r[1]), ga = tonumber(r[2]), ea = tonumber(r[3])}
end

function TX.lease_live(id)
  local l = TX.lease_load(id)
  if l and l.ea > NOW then return l end
  return nil
end

-- The keys on the lease (sorted) with their entries.
function TX.lease_keys(id)
  local members = redis.call('SMEMBERS', PFX .. 'leasek:' .. id)
  table.sort(members)
  local keys, entries = {}, {}
  for i = 1, #members do
    local e = load_entry(members[i])
    if e and e.ls == id then
      keys[#keys + 1] = members[i]
      entries[#entries + 1] = e
    end
  end
  return keys, entries
end

-- The locks held on the lease, sorted by scope then name: {scope, name, holder}.
function TX.lease_locks(id)
  local members = redis.call('SMEMBERS', PFX .. 'leasel:' .. id)
  local held = {}
  for i = 1, #members do
    local scope, name, token = string.match(members[i], '^([^|]*)|([^|]*)|(%d+)$')
    local h = scope and lk_load(scope, name)
    if h and h.token == tonumber(token) then held[#held + 1] = {scope, name, h} end
  end
  table.sort(held, function(a, b)
    if a[1] ~= b[1] then return a[1] < b[1] end
    return a[2] < b[2]
  end)
  return held
end

-- End a lease: delete its keys and release its locks at one revision with one event
-- (typ 'lease.revoked' or 'lease.expired'), then hand each lock to its next waiter.
-- Returns the revision, the keys and the released locks.
function TX.end_lease(id, typ)
  local key_type = 'kv.delete'
  if typ == 'lease.expired' then key_type = 'kv.expire' end
  local keys, entries = TX.lease_keys(id)
  local locks = TX.lease_locks(id)
  local changes = {}
  for i = 1, #keys do
    remove_key(keys[i])
    changes[#changes + 1] = TX.kv_change(key_type, keys[i], nil, entries[i].v)
  end
  for i = 1, #locks do
    local scope, name, h = locks[i][1], locks[i][2], locks[i][3]
    lk_vacate(scope, name)
    changes[#changes + 1] = TX.lock_change(scope, name, h.owner, h.token,
      redis.call('LLEN', lk_pend(lk_sn(scope, name))))
  end
  redis.call('DEL', TX.lease_key(id), PFX .. 'leasek:' .. id, PFX .. 'leasel:' .. id)
  redis.call('ZREM', PFX .. 'leases', id)
  redis.call('ZREM', PFX .. 'ttl', 'e:' .. id)
  local rev = emit(typ, id, nil, TX.changes_tail(changes))
  for i = 1, #locks do lk_handoff(locks[i][1], locks[i][2]) end
  return rev, keys, locks
end

-- The reply fields of a lease's attachments: #keys, keys..., then per lock
-- scope, name, owner, token.
function TX.attachments(out, keys, locks)
  out[#out + 1] = #keys
  for i = 1, #keys do out[#out + 1] = keys[i] end
  for i = 1, #locks do
    out[#out + 1] = locks[i][1]
    out[#out + 1] = locks[i][2]
    out[#out + 1] = locks[i][3].owner
    out[#out + 1] = locks[i][3].token
  end
  return out
end

EXPIRERS['e'] = function(id)
  local l = TX.lease_load(id)
  if l and l.ea <= NOW then
    TX.end_lease(id, 'lease.expired')
    return 1
  end
  if not l then redis.call('ZREM', PFX .. 'ttl', 'e:' .. id) end
  return 0
end
