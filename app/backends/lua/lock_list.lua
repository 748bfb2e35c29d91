-- Held locks of a scope by name pattern, in name order, read-only. ARGV[4] scope, [5]
-- literal name prefix, [6] name pattern ('' when the prefix is the whole name). Replies
-- name, owner, token, acquired_at, expires_at, pending_count for each.
local scope, prefix, pat = ARGV[4], ARGV[5], ARGV[6]
local base = scope .. '|'
local items = redis.call('ZRANGEBYLEX', PFX .. 'locks', '[' .. base .. prefix,
  '[' .. base .. prefix .. '\255')
local out = {}
local parts = pat ~= '' and glob_parts(pat) or nil
for i = 1, #items do
  local name = string.sub(items[i], #base + 1)
  local match
  if parts then match = glob_match(name, parts) else match = (name == prefix) end
  if match then
    local h = lk_load(scope, name)
    if h and not lk_expired(h) then
      out[#out + 1] = name
      lk_fields(out, h, items[i])
    end
  end
end
return out
