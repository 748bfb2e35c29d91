-- Delete an artifact. ARGV[4] key, [5] condition, [6] etags, [7] fence scope,
-- [8] fence lock ('' none), [9] fence token. Replies 'deleted' | 'absent' | a failure
-- status, with the artifact's fields.
local key = ARGV[4]
if not fence_holds(ARGV[7], ARGV[8], ARGV[9]) then return {'stale_fence'} end
local a = live_artifact(key)
local failed = artifact_precondition_fails(ARGV[5], ARGV[6], a)
if failed then return artifact_reply(failed, key, a) end
if not a then return {'absent'} end
remove_artifact(key, a, 'deleted')
return artifact_reply('deleted', key, a)
