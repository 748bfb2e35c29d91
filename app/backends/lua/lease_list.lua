-- Live leases in id order after a cursor. ARGV[4] after ('' from the start), [5] literal
-- prefix, [6] Lua pattern ('' when the prefix is the whole id), [7] limit, [8] scan
-- budget. Replies {more, (id, ttl, granted_at, expires_at)...}.
local fields, more = scan_index(PFX .. 'leases', ARGV[4], ARGV[5], ARGV[6],
  tonumber(ARGV[7]), tonumber(ARGV[8]),
  function(id)
    local l = TX.lease_live(id)
    if not l then return nil end
    return {id, l.ttl, l.ga, l.ea}
  end)
local out = {more}
for i = 1, #fields do out[#out + 1] = fields[i] end
return out
