-- Live sessions in id order after a cursor. ARGV[4] after ('' from the start), [5]
-- literal prefix, [6] key pattern ('' when the prefix is the whole id), [7] limit, [8]
-- scan budget. Replies {cursor ('' at the end), then per session: id, md, ca, ua, ttl, ea, variable count}.
local fields, cursor = scan_index(PFX .. 'sess', ARGV[4], ARGV[5], ARGV[6],
  tonumber(ARGV[7]), tonumber(ARGV[8]),
  function(sid)
    local s = ss_read(sid)
    if not s then return nil end
    return {sid, s.md, s.ca, s.ua, s.ttl, s.ea, redis.call('HLEN', ss_part('sv', sid))}
  end)
local out = {cursor}
for i = 1, #fields do out[#out + 1] = fields[i] end
return out
