-- Live keys in order, after a cursor. ARGV[4] after ('' from the start), [5] literal
-- prefix, [6] key pattern ('' when the prefix is the whole key), [7] limit, [8] scan
-- budget, [9] '1' to include values. Replies {revision, cursor ('' at the end), entries (8 fields each)...}.
local limit, budget, with_values = tonumber(ARGV[7]), tonumber(ARGV[8]), ARGV[9] == '1'
local fields, cursor = scan_index(PFX .. 'keys', ARGV[4], ARGV[5], ARGV[6], limit, budget,
  function(key)
    local e = load_entry(key)
    if not e or is_expired(e) then return nil end
    if not with_values then e.v = '' end
    return entry_reply(key, e)
  end)
local out = {tonumber(redis.call('GET', REV) or '0'), cursor}
for i = 1, #fields do out[#out + 1] = fields[i] end
return out
