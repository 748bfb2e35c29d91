-- Write a thread's or channel's state map if it is still what the caller computed from
-- (compare-and-swap; the caller re-reads and retries on 'conflict'). ARGV[4] session id,
-- [5] 'thread' | 'channel', [6] id, [7] '1' if a state was read (then [8] is it), [9]
-- 'put' | 'delete', [10] new state JSON, [11..13] fence scope, lock, token.
-- Replies {'created' | 'replaced' | 'deleted' | 'unchanged'}, {'conflict'}, {'stale_fence'}.
local sid, kind, id, had, expected = ARGV[4], ARGV[5], ARGV[6], ARGV[7] == '1', ARGV[8]
local op, value = ARGV[9], ARGV[10]
if not fence_holds(ARGV[11], ARGV[12], ARGV[13]) then return {'stale_fence'} end
local s = ss_live(sid)
local part = 'sth'
if kind == 'channel' then part = 'sch' end
local h = ss_part(part, sid)
local old = false
if s then old = redis.call('HGET', h, id) end
if had then
  if old ~= expected then return {'conflict'} end
elseif old then
  return {'conflict'}
end
local fields = {'s' .. kind, id}
if op == 'delete' then
  if not old then
    if s then ss_touch(sid, s) end
    return {'unchanged'}
  end
  ss_touch(sid, s)
  ss_charge(sid, -#old)
  redis.call('HDEL', h, id)
  ss_event(sid, values_tail(nil, old), kind .. '_state', fields)
  return {'deleted'}
end
local grow = #value - #(old or '')
local refused = ss_quota_fails(s, grow)
if refused then return refused end
ss_touch(sid, s)
ss_charge(sid, grow)
redis.call('HSET', h, id, value)
ss_event(sid, values_tail(value, old), kind .. '_state', fields)
if old then return {'replaced'} end
return {'created'}
