-- Whether a fence holds right now. ARGV[4..6] fence scope, lock, token. Replies {'ok'}
-- or {'stale_fence'}. A write whose own checks failed asks this first, so a stale fence
-- is reported before a failed precondition, as the atomic backends do.
if not fence_holds(ARGV[4], ARGV[5], ARGV[6]) then return {'stale_fence'} end
return {'ok'}
