-- Sessions -------------------------------------------------------------------------
-- Layout under PFX, for a session SID (ids have no '|', '{', '}' or '/'):
--   'sess'          zset   session ids (score 0), for listing in id order
--   's:'..SID       hash   md (metadata JSON) ca ua ttl ea (ms; ttl/ea 0 = none)
--                          dds (the dedupe window's sequence counter)
--   'sv:'..SID      hash   variable id -> 'version|created_at|updated_at|' .. definition JSON
--                          (definition: id name type constraints metadata description)
--   'svv:'..SID     hash   variable id -> value JSON
--   'svn:'..SID     hash   variable name -> id
--   'ssub:'..SID    set    subscribed thread ids
--                          qb (its quota bytes: metadata, variables' values and
--                          definitions, state maps; counted in PFX..'quota' b too)
--   'sdd:'..SID     zset   dedupe keys scored by sequence number (oldest lowest)
--   'sth:'..SID     hash   thread id -> state JSON
--   'sch:'..SID     hash   channel id -> state JSON
--   'slk:'..SID     set    names of session locks changed by a session lock call (their
--                          pending lists may exist); written with the session (ss_lock_use)
-- The session's locks are the lock engine's (lib_locks.lua) in scope SID. An idle TTL
-- puts member 's:'..SID in PFX..'ttl'.

local function ss_key(sid) return PFX .. 's:' .. sid end
local function ss_part(part, sid) return PFX .. part .. ':' .. sid end
local SS_PARTS = {'sv', 'svv', 'svn', 'ssub', 'sdd', 'sth', 'sch', 'slk'}

local function ss_load(sid)
  local r = redis.call('HMGET', ss_key(sid), 'md', 'ca', 'ua', 'ttl', 'ea')
  if not r[1] then return nil end
  return {md = r[1], ca = tonumber(r[2]), ua = tonumber(r[3]), ttl = tonumber(r[4]),
    ea = tonumber(r[5])}
end

local function ss_expired(s) return s.ea > 0 and s.ea <= NOW end

-- The session for a read: nil when absent or past its deadline (nothing is written).
local function ss_read(sid)
  local s = ss_load(sid)
  if s and ss_expired(s) then return nil end
  return s
end

-- Names of the session's locks: those used through the session (slk) and those held.
local function ss_lock_names(sid)
  local seen, names = {}, {}
  local base = sid .. '|'
  local held = redis.call('ZRANGEBYLEX', PFX .. 'locks', '[' .. base, '[' .. base .. '\255')
  for i = 1, #held do
    local name = string.sub(held[i], #base + 1)
    if not seen[name] then seen[name] = true names[#names + 1] = name end
  end
  local used = redis.call('SMEMBERS', ss_part('slk', sid))
  for i = 1, #used do
    if not seen[used[i]] then seen[used[i]] = true names[#names + 1] = used[i] end
  end
  table.sort(names)
  return names
end

-- Remove every trace of a session: its record, variables, chat state, and its locks'
-- holders and pending lists (their token counters stay: tokens are never reused). A lock
-- with waiters in line keeps its pending list when keep_waited is true: the names of
-- those locks are returned, for ss_hand_on.
local function ss_clear(sid, keep_waited)
  local names = ss_lock_names(sid)
  local waited = {}
  for i = 1, #names do
    lk_vacate(sid, names[i])
    local sn = lk_sn(sid, names[i])
    if keep_waited and redis.call('LLEN', lk_wait(sn)) > 0 then
      waited[#waited + 1] = names[i]
    else
      redis.call('DEL', lk_pend(sn))
    end
  end
  quota_add(-tonumber(redis.call('HGET', ss_key(sid), 'qb') or '0'))
  redis.call('DEL', ss_key(sid))
  for i = 1, #SS_PARTS do redis.call('DEL', ss_part(SS_PARTS[i], sid)) end
  redis.call('ZREM', PFX .. 'sess', sid)
  redis.call('ZREM', PFX .. 'ttl', 's:' .. sid)
  return waited
end

-- After a session's removal: hand each lock of `names` (free, with waiters) to its first
-- waiter, who claims the pending entries, as a release or an expiry does; entries no
-- waiter is left to claim go with the session.
local function ss_hand_on(sid, names)
  for i = 1, #names do
    if not lk_handoff(sid, names[i]) then redis.call('DEL', lk_pend(lk_sn(sid, names[i]))) end
  end
end

-- The live session or nil; one past its idle deadline is removed here, with its event.
local function ss_live(sid)
  local s = ss_load(sid)
  if s and ss_expired(s) then
    local waited = ss_clear(sid, true)
    emit('session.deleted', sid, sid, {'bexpired', '1'})
    ss_hand_on(sid, waited)
    return nil
  end
  return s
end

-- Create the session on first use, or count a write: updated_at and the idle deadline.
local function ss_touch(sid, s)
  if not s then
    s = {md = '{}', ca = NOW, ua = NOW, ttl = 0, ea = 0}
    redis.call('HSET', ss_key(sid), 'md', s.md, 'ca', NOW, 'ua', NOW, 'ttl', 0, 'ea', 0,
      'qb', 2)
    quota_add(2)
    redis.call('ZADD', PFX .. 'sess', 0, sid)
    redis.call('PERSIST', ss_part('slk', sid))
    return s
  end
  s.ua = NOW
  if s.ttl > 0 then s.ea = NOW + s.ttl end
  redis.call('HSET', ss_key(sid), 'ua', NOW, 'ea', s.ea)
  if s.ttl > 0 then set_deadline('s:' .. sid, s.ea) end
  return s
end

-- nil, or the failure reply when a write adding `bytes` to session s (nil: to be created
-- with metadata '{}', 2 bytes) would pass the namespace's byte quota.
local function ss_quota_fails(s, bytes)
  if not s then bytes = bytes + 2 end
  return quota_fails(0, bytes)
end

-- Count `bytes` more (or fewer) for the live session sid.
local function ss_charge(sid, bytes)
  if bytes ~= 0 then
    redis.call('HINCRBY', ss_key(sid), 'qb', bytes)
    quota_add(bytes)
  end
end

-- The session step of a session lock call (lock_*.lua with its session flag), in the
-- lock's own script. Before anything is written: the live session (one past its idle
-- deadline is removed here), and nil or the quota failure reply when the call would
-- have to create it.
local function ss_lock_check(sid)
  local s = ss_live(sid)
  if s then return s, nil end
  return nil, ss_quota_fails(nil, 0)
end

-- The call changed lock `name` of session sid (s: from ss_lock_check): index the name,
-- so the snapshot finds its pending list, and create or touch the session.
local function ss_lock_use(sid, s, name)
  redis.call('SADD', ss_part('slk', sid), name)
  return ss_touch(sid, s)
end

-- A variable's quota bytes from its stored meta ('ver|ca|ua|definition') and value.
local function ss_var_bytes(meta, value)
  return #string.match(meta, '^%d+|%d+|%d+|(.*)$') + #value
end

-- A 'session.updated' event: values (values_tail, or nil for none), then the change and
-- its own fields (a tail of member pairs, or nil).
local function ss_event(sid, values, change, fields)
  return emit('session.updated', sid, sid, ev_join(values, {'schange', change}, fields))
end

-- A list of strings, packed as a '[' member's value.
local function ss_json_list(items)
  local parts = {}
  for i = 1, #items do parts[2 * i - 1], parts[2 * i] = 's', items[i] end
  return ev_pack(parts)
end

-- 'version|created_at|updated_at|definition' -> version, created_at, updated_at, definition
local function ss_var_parts(meta)
  local ver, ca, ua, def = string.match(meta, '^(%d+)|(%d+)|(%d+)|(.*)$')
  return ver, ca, ua, def
end

EXPIRERS['s'] = function(sid)
  local s = ss_load(sid)
  if s and ss_expired(s) then
    ss_live(sid)
    return 1
  end
  if not s or s.ea == 0 then redis.call('ZREM', PFX .. 'ttl', 's:' .. sid) end
  return 0
end
