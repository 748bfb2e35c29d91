-- Artifacts: the metadata of blobs kept by the artifact store. Layout under PFX:
--   PFX..'a:'..key     hash  b (blob id) n (size) h (sha256) ct (content type)
--                            ca (created ms) ea (expires ms, 0 none) r (revision)
--                            g (grace ms: how long the blob stays readable once replaced)
--   PFX..'artifacts'   zset  live artifact keys (score 0), for ordered listing
--   PFX..'apend'       zset  blob ids being uploaded, scored by their deadline (ms)
--   PFX..'agc'         zset  blob ids to remove from the store, scored by when (ms)
--   PFX..'ttl'         members 'a:'..key for artifacts with a TTL

local function akey(key) return PFX .. 'a:' .. key end

local function load_artifact(key)
  local r = redis.call('HMGET', akey(key), 'b', 'n', 'h', 'ct', 'ca', 'ea', 'r', 'g')
  if not r[1] then return nil end
  return {b = r[1], n = tonumber(r[2]), h = r[3], ct = r[4], ca = tonumber(r[5]),
    ea = tonumber(r[6]), r = tonumber(r[7]), g = tonumber(r[8])}
end

-- The metadata document of events, packed as an object member's value (Event fields).
local function artifact_packed(key, a)
  return ev_pack(ev_join({'skey', key, 'dsize', a.n, 'ssha256', a.h, 'scontent_type', a.ct,
    'screated_at', iso(a.ca)}, ev_time('expires_at', a.ea), {'drevision', a.r}))
end

-- The value and old_value members of an artifact event (packed metadata, or nil).
local function artifact_values(value, old)
  local f = {'nvalue', '', 'nold_value', ''}
  if value then f[1], f[2] = '{value', value end
  if old then f[3], f[4] = '{old_value', old end
  return f
end

-- status, then the metadata fields when there is an artifact
local function artifact_reply(status, key, a)
  if not a then return {status} end
  return {status, key, a.b, a.n, a.h, a.ct, a.ca, a.ea, a.r, a.g}
end

local function remove_artifact(key, a, reason)
  redis.call('DEL', akey(key))
  redis.call('ZREM', PFX .. 'artifacts', key)
  redis.call('ZREM', PFX .. 'ttl', 'a:' .. key)
  redis.call('ZADD', PFX .. 'agc', NOW + a.g, a.b)
  emit('artifact.delete', key, nil, ev_join(artifact_values(nil, artifact_packed(key, a)),
    {'sreason', reason}))
end

-- The live artifact, or nil; one past its deadline is expired here, with its event.
local function live_artifact(key)
  local a = load_artifact(key)
  if a and a.ea > 0 and a.ea <= NOW then
    remove_artifact(key, a, 'expired')
    return nil
  end
  return a
end

-- cond '' (none), 'exists' (If-Match: *), 'match' (If-Match: one of the ','-joined
-- sha256s in etags), 'absent' (If-None-Match: *). nil when it holds, else the status.
local function artifact_precondition_fails(cond, etags, a)
  if cond == 'absent' and a then return 'already_exists' end
  if (cond == 'match' or cond == 'exists') and not a then return 'revision_mismatch' end
  if cond == 'match' and not string.find(',' .. etags .. ',', ',' .. a.h .. ',', 1, true) then
    return 'revision_mismatch'
  end
  return nil
end

EXPIRERS['a'] = function(key)
  local a = load_artifact(key)
  if a and a.ea > 0 and a.ea <= NOW then
    live_artifact(key)
    return 1
  end
  if not a or a.ea == 0 then redis.call('ZREM', PFX .. 'ttl', 'a:' .. key) end
  return 0
end
