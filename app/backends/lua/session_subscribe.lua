-- Subscribe or unsubscribe a thread. ARGV[4] session id, [5] thread id, [6] '1' subscribe
-- or '0' unsubscribe, [7..9] fence scope, lock, token. Replies {1} when it changed
-- anything, else {0}; a change that changes nothing creates no session.
local sid, thread, on = ARGV[4], ARGV[5], ARGV[6] == '1'
if not fence_holds(ARGV[7], ARGV[8], ARGV[9]) then return {'stale_fence'} end
local s = ss_live(sid)
local present = false
if s then present = redis.call('SISMEMBER', ss_part('ssub', sid), thread) == 1 end
if present == on then
  if s then ss_touch(sid, s) end
  return {0}
end
ss_touch(sid, s)
local change = 'unsubscribe'
if on then
  redis.call('SADD', ss_part('ssub', sid), thread)
  change = 'subscribe'
else
  redis.call('SREM', ss_part('ssub', sid), thread)
end
ss_event(sid, nil, change, {'sthread', thread})
return {1}
