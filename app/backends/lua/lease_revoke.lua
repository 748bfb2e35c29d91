-- Revoke a lease: its keys deleted, its locks released, one 'lease.revoked' event.
-- ARGV[4] id. Replies {'ok', ttl, granted_at, expires_at, revision, attachments...}
-- (see TX.attachments) or {'absent'} (one past its deadline is expired here, with
-- its event).
local id = ARGV[4]
local l = TX.lease_load(id)
if not l then return {'absent'} end
if l.ea <= NOW then
  TX.end_lease(id, 'lease.expired')
  return {'absent'}
end
local rev, keys, locks = TX.end_lease(id, 'lease.revoked')
return TX.attachments({'ok', l.ttl, l.ga, l.ea, rev}, keys, locks)
