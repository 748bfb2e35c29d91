-- Register a variable (already validated). ARGV[4] session id, [5] variable id, [6] name,
-- [7] definition JSON, [8] value JSON, [9] type, [10..12] fence scope, lock, token.
-- Replies {'created', now}, {'already_exists', id, meta, value} or {'id_taken'}.
local sid, id, name, def, value, typ = ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9]
if not fence_holds(ARGV[10], ARGV[11], ARGV[12]) then return {'stale_fence'} end
local s = ss_live(sid)
if s then
  local taken = redis.call('HGET', ss_part('svn', sid), name)
  if taken then
    return {'already_exists', taken, redis.call('HGET', ss_part('sv', sid), taken),
      redis.call('HGET', ss_part('svv', sid), taken)}
  end
  if redis.call('HEXISTS', ss_part('sv', sid), id) == 1 then return {'id_taken'} end
end
local refused = ss_quota_fails(s, #def + #value)
if refused then return refused end
ss_touch(sid, s)
ss_charge(sid, #def + #value)
redis.call('HSET', ss_part('svn', sid), name, id)
redis.call('HSET', ss_part('sv', sid), id, '1|' .. NOW .. '|' .. NOW .. '|' .. def)
redis.call('HSET', ss_part('svv', sid), id, value)
emit('variable.created', name, sid, ev_join(values_tail(value, nil), {'sid', id,
  'svariable_type', typ, 'dversion', 1}))
return {'created', NOW}
