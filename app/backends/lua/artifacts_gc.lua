-- Claim due garbage blobs of the namespace. ARGV[4] most to claim, [5] lease ms.
-- Uploads whose reservation lapsed become garbage first. A claimed blob is scored
-- NOW + lease, so if its removal is never confirmed it is handed out again.
local limit, lease = tonumber(ARGV[4]), tonumber(ARGV[5])
local lapsed = redis.call('ZRANGEBYSCORE', PFX .. 'apend', '-inf', NOW, 'LIMIT', 0, limit)
for i = 1, #lapsed do
  redis.call('ZREM', PFX .. 'apend', lapsed[i])
  redis.call('ZADD', PFX .. 'agc', NOW, lapsed[i])
end
local due = redis.call('ZRANGEBYSCORE', PFX .. 'agc', '-inf', NOW, 'LIMIT', 0, limit)
for i = 1, #due do redis.call('ZADD', PFX .. 'agc', NOW + lease, due[i]) end
return due
