-- A live lease with its keys and held locks. ARGV[4] id. Read-only.
-- Replies {'ok', ttl, granted_at, expires_at, #keys, keys..., (scope, name, owner,
-- token)...} or {'absent'}.
local id = ARGV[4]
local l = TX.lease_live(id)
if not l then return {'absent'} end
local keys = TX.lease_keys(id)
return TX.attachments({'ok', l.ttl, l.ga, l.ea}, keys, TX.lease_locks(id))
