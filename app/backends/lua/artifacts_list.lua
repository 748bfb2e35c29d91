-- Live artifacts in key order, after a cursor. ARGV[4] after ('' from the start),
-- [5] literal prefix, [6] key pattern ('' when the prefix is the whole key), [7] limit,
-- [8] scan budget. Replies {revision, cursor ('' at the end), then 9 fields of each artifact}.
local fields, cursor = scan_index(PFX .. 'artifacts', ARGV[4], ARGV[5], ARGV[6],
  tonumber(ARGV[7]), tonumber(ARGV[8]),
  function(key)
    local a = load_artifact(key)
    if not a or (a.ea > 0 and a.ea <= NOW) then return nil end
    local r = artifact_reply('', key, a)
    table.remove(r, 1)
    return r
  end)
local out = {tonumber(redis.call('GET', REV) or '0'), cursor}
for i = 1, #fields do out[#out + 1] = fields[i] end
return out
