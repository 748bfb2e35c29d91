-- Create a session or replace its metadata and idle TTL. ARGV[4] session id, [5] metadata
-- JSON, [6] ttl ms (0 none), [7] the ttl as JSON for the event, [8..10] fence scope, lock,
-- token. Replies {'created' | 'replaced', md, ca, ua, ttl, ea, variable count}.
local sid = ARGV[4]
if not fence_holds(ARGV[8], ARGV[9], ARGV[10]) then return {'stale_fence'} end
local s = ss_live(sid)
local created = s == nil
local old = nil
if s then old = s.md end
local refused = ss_quota_fails(s, #ARGV[5] - #(old or '{}'))
if refused then return refused end
s = ss_touch(sid, s)
ss_charge(sid, #ARGV[5] - #s.md)
s.md, s.ttl, s.ea = ARGV[5], tonumber(ARGV[6]), 0
if s.ttl > 0 then s.ea = NOW + s.ttl end
redis.call('HSET', ss_key(sid), 'md', s.md, 'ttl', s.ttl, 'ea', s.ea)
set_deadline('s:' .. sid, s.ea)
local ttl = {'dttl', ARGV[7]}
if ARGV[7] == 'null' then ttl = {'nttl', ''} end
ss_event(sid, values_tail(s.md, old), 'metadata',
  ev_join({'bcreated', created and '1' or '0'}, ttl))
local status = 'replaced'
if created then status = 'created' end
return {status, s.md, s.ca, s.ua, s.ttl, s.ea, redis.call('HLEN', ss_part('sv', sid))}
