-- Delete a variable if it is still at the version the caller checked. ARGV[4] session
-- id, [5] variable id, [6] expected version, [7] name, [8..10] fence scope, lock, token.
-- Replies {'deleted', revision}, {'conflict'} or {'stale_fence'}.
local sid, id, expected, name = ARGV[4], ARGV[5], ARGV[6], ARGV[7]
if not fence_holds(ARGV[8], ARGV[9], ARGV[10]) then return {'stale_fence'} end
local s = ss_live(sid)
if not s then return {'conflict'} end
local meta = redis.call('HGET', ss_part('sv', sid), id)
if not meta then return {'conflict'} end
local ver = ss_var_parts(meta)
if ver ~= expected then return {'conflict'} end
local old = redis.call('HGET', ss_part('svv', sid), id)
ss_touch(sid, s)
ss_charge(sid, -ss_var_bytes(meta, old))
redis.call('HDEL', ss_part('sv', sid), id)
redis.call('HDEL', ss_part('svv', sid), id)
redis.call('HDEL', ss_part('svn', sid), name)
local rev = emit('variable.deleted', name, sid, ev_join(values_tail(nil, old), {'sid', id,
  'dversion', ver}))
return {'deleted', rev}
