-- Read-only reads of one session. ARGV[4] what, [5] session id, [6] argument, [7..9]
-- optional fence scope, lock, token (checked for the write a state read prepares).
--   'info'              -> {} absent, else {md, ca, ua, ttl, ea, variable count}
--   'subs'              -> {thread ids...} (sorted)
--   'sub', thread       -> {0 | 1}
--   'thread' | 'channel', id -> {'ok'} absent, {'ok', state JSON}, or {'stale_fence'}
local what, sid, arg = ARGV[4], ARGV[5], ARGV[6]
if ARGV[8] and not fence_holds(ARGV[7], ARGV[8], ARGV[9]) then return {'stale_fence'} end
local s = ss_read(sid)
if not s then
  if what == 'sub' then return {0} end
  if what == 'thread' or what == 'channel' then return {'ok'} end
  return {}
end
if what == 'info' then
  return {s.md, s.ca, s.ua, s.ttl, s.ea, redis.call('HLEN', ss_part('sv', sid))}
elseif what == 'subs' then
  local subs = redis.call('SMEMBERS', ss_part('ssub', sid))
  table.sort(subs)
  return subs
elseif what == 'sub' then
  return {redis.call('SISMEMBER', ss_part('ssub', sid), arg)}
end
local part = 'sth'
if what == 'channel' then part = 'sch' end
local v = redis.call('HGET', ss_part(part, sid), arg)
if not v then return {'ok'} end
return {'ok', v}
