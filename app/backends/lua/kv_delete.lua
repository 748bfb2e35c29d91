-- Delete a key and its history. ARGV[4] key, [5] condition, [6] expected revision,
-- [7..9] fence scope, lock, token. Replies 'deleted' with the old entry, or 'absent'.
local key = ARGV[4]
if not fence_holds(ARGV[7], ARGV[8], ARGV[9]) then return {'stale_fence'} end
local e = live_entry(key)
local failed = precondition_fails(ARGV[5], ARGV[6], e)
if failed then return reply(failed, key, e) end
if not e then return {'absent'} end
remove_key(key)
emit_value('kv.delete', key, nil, e.v)
return reply('deleted', key, e)
