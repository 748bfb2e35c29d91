-- Remove a session and all its state. ARGV[4] session id, [5..7] fence scope, lock,
-- token. Replies {'deleted'} or {'absent'}.
local sid = ARGV[4]
if not fence_holds(ARGV[5], ARGV[6], ARGV[7]) then return {'stale_fence'} end
if not ss_live(sid) then return {'absent'} end
local waited = ss_clear(sid, true)
emit('session.deleted', sid, sid, {'bexpired', '0'})
ss_hand_on(sid, waited)
return {'deleted'}
