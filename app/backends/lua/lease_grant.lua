-- Grant a lease. ARGV[4] id, [5] ttl ms, [6] the ttl as JSON seconds (for the event),
-- [7] the most live leases the namespace may hold.
-- Replies {'ok', ttl, granted_at, expires_at}, {'exists'} while it lives, or {'full'}.
local id, ttl = ARGV[4], tonumber(ARGV[5])
local l = TX.lease_load(id)
if l and l.ea <= NOW then
  TX.end_lease(id, 'lease.expired')
  l = nil
end
if l then return {'exists'} end
if redis.call('ZCARD', PFX .. 'leases') >= tonumber(ARGV[7]) then return {'full'} end
local ea = NOW + ttl
redis.call('HSET', TX.lease_key(id), 'ttl', ttl, 'ga', NOW, 'ea', ea)
redis.call('ZADD', PFX .. 'leases', 0, id)
redis.call('ZADD', PFX .. 'ttl', ea, 'e:' .. id)
emit('lease.granted', id, nil, {'dttl', ARGV[6], 'sexpires_at', iso(ea)})
return {'ok', ttl, NOW, ea}
