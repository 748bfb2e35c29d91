-- Extend a held lock. ARGV[4] scope, [5] name, [6] owner, [7] token, [8] ttl ms ('' =
-- the TTL it was acquired with), [9] '1' when the scope is a session the call writes to
-- (checked before anything is written; indexed and touched on success). Replies {'ok',
-- owner, token, acquired_at, expires_at, pending_count}, {'not_owner', the same fields},
-- {'not_held'} or {'quota_exceeded', what, limit}.
local scope, name, owner, token = ARGV[4], ARGV[5], ARGV[6], tonumber(ARGV[7])
local in_session = ARGV[9] == '1'
local sn = lk_sn(scope, name)
local sess, fail
if in_session then
  sess, fail = ss_lock_check(scope)
  if fail then return fail end
end
local h = lk_live(scope, name)
if not h then return {'not_held'} end
if h.owner ~= owner then return lk_fields({'not_owner'}, h, sn) end
if h.token ~= token then return {'not_held'} end
local ttl = h.ttl
if ARGV[8] ~= '' then ttl = tonumber(ARGV[8]) end
local ea = 0
if ttl > 0 then ea = NOW + ttl end
redis.call('HSET', lock_key(scope, name), 'expires_at', ea, 'ttl', ttl)
h.expires_at = ea
lk_set_deadline(sn, ea)
lk_event('lock.refreshed', scope, name, lk_holder_tail(h, redis.call('LLEN', lk_pend(sn)), 0))
if in_session then ss_lock_use(scope, sess, name) end
return lk_fields({'ok'}, h, sn)
