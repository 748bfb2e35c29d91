-- Release a lock and hand over its pending entries; the next waiter gets the lock.
-- ARGV[4] scope, [5] name, [6] owner, [7] token, [8] '1' to force (owner and token
-- ignored). Replies {'released', owner, token, acquired_at, expires_at, 0, entries...},
-- {'free', entries...} (forced, nobody held it), {'not_owner', holder fields} or
-- {'not_held'}.
local scope, name, owner, token = ARGV[4], ARGV[5], ARGV[6], tonumber(ARGV[7])
local force = ARGV[8] == '1'
local sn = lk_sn(scope, name)
local h = lk_live(scope, name)
local out
if force then
  local extra = {'bforced', '1'}
  if h then
    out = lk_fields({'released'}, h, sn)
    local items = lk_end(scope, name, h, extra)
    for i = 1, #items do out[#out + 1] = items[i] end
  else
    out = {'free'}
    local items = lk_end(scope, name, nil, extra)
    for i = 1, #items do out[#out + 1] = items[i] end
  end
  return out
end
if not h then return {'not_held'} end
if h.owner ~= owner then return lk_fields({'not_owner'}, h, sn) end
if h.token ~= token then return {'not_held'} end
out = lk_fields({'released'}, h, sn)
local items = lk_end(scope, name, h, {})
for i = 1, #items do out[#out + 1] = items[i] end
return out
