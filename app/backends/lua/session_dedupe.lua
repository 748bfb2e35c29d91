-- Check and record a dedupe key. ARGV[4] session id, [5] key, [6] window size, [7..9]
-- fence scope, lock, token. Replies {1} when the key is in the window (nothing changes),
-- else records it as the newest, drops the oldest beyond the window and replies {0}.
local sid, key, limit = ARGV[4], ARGV[5], tonumber(ARGV[6])
if not fence_holds(ARGV[7], ARGV[8], ARGV[9]) then return {'stale_fence'} end
local s = ss_touch(sid, ss_live(sid))
local dd = ss_part('sdd', sid)
if redis.call('ZSCORE', dd, key) then return {1} end
local seq = redis.call('HINCRBY', ss_key(sid), 'dds', 1)
redis.call('ZADD', dd, seq, key)
local evicted = {}
local n = redis.call('ZCARD', dd)
if n > limit then
  local popped = redis.call('ZPOPMIN', dd, n - limit)
  for i = 1, #popped, 2 do evicted[#evicted + 1] = popped[i] end
end
ss_event(sid, nil, 'dedupe', {'sdedupe_key', key, '[evicted', ss_json_list(evicted)})
return {0}
