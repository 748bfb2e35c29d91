-- Reset a key's deadline without a new revision. ARGV[4] key, [5] ttl ms (0 removes
-- it), [6..8] fence scope, lock, token.
local key = ARGV[4]
if not fence_holds(ARGV[6], ARGV[7], ARGV[8]) then return {'stale_fence'} end
local e = live_entry(key)
if not e then return {'absent'} end
local ttl = tonumber(ARGV[5])
e.ea = 0
if ttl > 0 then e.ea = NOW + ttl end
redis.call('HSET', kkey(key), 'ea', e.ea)
set_deadline('k:' .. key, e.ea)
return reply('ok', key, e)
