-- Live leases in id order after a cursor. ARGV[4] after ('' from the start), [5] literal
-- prefix, [6] key pattern ('' when the prefix is the whole id), [7] limit, [8] scan
-- budget. Replies {cursor ('' at the end), (id, ttl, granted_at, expires_at)...}.
local fields, cursor = scan_index(PFX .. 'leases', ARGV[4], ARGV[5], ARGV[6],
  tonumber(ARGV[7]), tonumber(ARGV[8]),
  function(id)
    local l = TX.lease_live(id)
    if not l then return nil end
    return {id, l.ttl, l.ga, l.ea}
  end)
local out = {cursor}
for i = 1, #fields do out[#out + 1] = fields[i] end
return out
