-- A lock's holder, read-only (a holder past its deadline reads as free). ARGV[4] scope,
-- [5] name. Replies {pending_count} when free, else {pending_count, owner, token,
-- acquired_at, expires_at}.
local scope, name = ARGV[4], ARGV[5]
local sn = lk_sn(scope, name)
local out = {redis.call('LLEN', lk_pend(sn))}
local h = lk_load(scope, name)
if not h or lk_expired(h) then return out end
out[2] = h.owner
out[3] = h.token
out[4] = h.acquired_at
out[5] = h.expires_at
return out
