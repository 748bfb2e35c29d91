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

-- The metadata document of events; the content type is the only field that may need
-- escaping (a tab, a quote).
local function artifact_json(key, a)
  local ea = 'null'
  if a.ea > 0 then ea = '"' .. iso(a.ea) .. '"' end
  return '{"key":"' .. key .. '","size":' .. string.format('%d', a.n) .. ',"sha256":"' .. a.h
    .. '","content_type":' .. json_str(a.ct) .. ',"created_at":"' .. iso(a.ca) .. '","expires_at":'
    .. ea .. ',"revision":' .. string.format('%d', a.r) .. '}'
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
  emit('artifact.delete', key, nil, values_tail(nil, artifact_json(key, a))
    .. ',"reason":"' .. reason .. '"')
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
