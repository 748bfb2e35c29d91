-- Held locks of a scope in name order after a cursor, read-only, on scan_index over the
-- 'locks' zset of scope|name members (so one call examines at most the scan budget of
-- the scope's names). ARGV[4] scope, [5] after ('' from the start), [6] literal name
-- prefix, [7] name pattern ('' when the prefix is the whole name), [8] limit, [9] scan
-- budget. Replies {cursor ('' at the end), then per lock: name, owner, token,
-- acquired_at, expires_at, pending_count}.
local scope = ARGV[4]
local base = scope .. '|'
local after, pat = ARGV[5], ARGV[7]
if after ~= '' then after = base .. after end
-- A scope (a session id) holds no '*' or '|': the base is a literal prefix of the pattern.
if pat ~= '' then pat = base .. pat end
local fields, cursor = scan_index(PFX .. 'locks', after, base .. ARGV[6], pat,
  tonumber(ARGV[8]), tonumber(ARGV[9]),
  function(sn)
    local name = string.sub(sn, #base + 1)
    local h = lk_load(scope, name)
    if not h or lk_expired(h) then return nil end
    return lk_fields({name}, h, sn)
  end)
if cursor ~= '' then cursor = string.sub(cursor, #base + 1) end
local out = {cursor}
for i = 1, #fields do out[#out + 1] = fields[i] end
return out
