-- Keep a lease alive: its deadline becomes now + its ttl (no revision, no event).
-- ARGV[4] id. Replies {'ok', ttl, granted_at, expires_at} or {'absent'}.
local id = ARGV[4]
local l = TX.lease_live(id)
if not l then return {'absent'} end
local ea = NOW + l.ttl
redis.call('HSET', TX.lease_key(id), 'ea', ea)
redis.call('ZADD', PFX .. 'ttl', ea, 'e:' .. id)
return {'ok', l.ttl, l.ga, ea}
