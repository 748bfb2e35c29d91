-- Release a lock and hand over its pending entries; the next waiter gets the lock.
-- ARGV[4] scope, [5] name, [6] owner, [7] token, [8] '1' to force (owner and token
-- ignored), [9] '1' when the scope is a session the call writes to (checked before
-- anything is written; indexed and created or touched when the call changed something).
-- Replies {'released', owner, token, acquired_at, expires_at, 0, entries...},
-- {'free', entries...} (forced, nobody held it), {'not_owner', holder fields},
-- {'not_held'} or {'quota_exceeded', what, limit}.
local scope, name, owner, token = ARGV[4], ARGV[5], ARGV[6], tonumber(ARGV[7])
local force = ARGV[8] == '1'
local in_session = ARGV[9] == '1'
local sn = lk_sn(scope, name)
local sess, fail
if in_session then
  sess, fail = ss_lock_check(scope)
  if fail then return fail end
end
local h = lk_live(scope, name)
local out
if force then
  local extra = {'bforced', '1'}
  if h then
    out = lk_fields({'released'}, h, sn)
    local items = lk_end(scope, name, h, extra)
    for i = 1, #items do out[#out + 1] = items[i] end
    if in_session then ss_lock_use(scope, sess, name) end
  else
    out = {'free'}
    local items = lk_end(scope, name, nil, extra)
    for i = 1, #items do out[#out + 1] = items[i] end
    if in_session and #items > 0 then ss_lock_use(scope, sess, name) end
  end
  return out
end
if not h then return {'not_held'} end
if h.owner ~= owner then return lk_fields({'not_owner'}, h, sn) end
if h.token ~= token then return {'not_held'} end
out = lk_fields({'released'}, h, sn)
local items = lk_end(scope, name, h, {})
for i = 1, #items do out[#out + 1] = items[i] end
if in_session then ss_lock_use(scope, sess, name) end
return out
