-- Commit an uploaded blob as an artifact's content. ARGV[4] key, [5] blob, [6] size,
-- [7] sha256, [8] content type, [9] ttl ms (0 none), [10] grace ms, [11] condition,
-- [12] etags, [13] fence scope, [14] fence lock ('' none), [15] fence token.
-- Replies 'created' | 'replaced' | a failure status, with the artifact's fields.
local key, blob = ARGV[4], ARGV[5]
if not fence_holds(ARGV[13], ARGV[14], ARGV[15]) then return {'stale_fence'} end
local old = live_artifact(key)
local failed = artifact_precondition_fails(ARGV[11], ARGV[12], old)
if failed then return artifact_reply(failed, key, old) end
-- A reservation that lapsed was handed to the collector, which may be removing the bytes.
if redis.call('ZREM', PFX .. 'apend', blob) == 0 then return {'upload_expired'} end
local ttl = tonumber(ARGV[9])
local ea = 0
if ttl > 0 then ea = NOW + ttl end
local a = {b = blob, n = tonumber(ARGV[6]), h = ARGV[7], ct = ARGV[8], ca = NOW, ea = ea,
  r = tonumber(redis.call('GET', REV) or '0') + 1, g = tonumber(ARGV[10])}
local old_packed = nil
if old then old_packed = artifact_packed(key, old) end
local rev = emit('artifact.put', key, nil, artifact_values(artifact_packed(key, a), old_packed))
assert(rev == a.r, 'revision moved while committing an artifact')
redis.call('HSET', akey(key), 'b', a.b, 'n', a.n, 'h', a.h, 'ct', a.ct, 'ca', a.ca,
  'ea', a.ea, 'r', a.r, 'g', a.g)
if old then
  redis.call('ZADD', PFX .. 'agc', NOW + old.g, old.b)
else
  redis.call('ZADD', PFX .. 'artifacts', 0, key)
end
set_deadline('a:' .. key, ea)
local status = 'replaced'
if not old then status = 'created' end
return artifact_reply(status, key, a)
