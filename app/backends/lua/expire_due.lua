-- Expire every member of the namespace's deadline set that is due, each with its event.
-- ARGV[4] most members to handle in one call. Replies the number expired.
local due = redis.call('ZRANGEBYSCORE', PFX .. 'ttl', '-inf', NOW, 'LIMIT', 0, tonumber(ARGV[4]))
local count = 0
for i = 1, #due do
  local member = due[i]
  local handler = EXPIRERS[string.sub(member, 1, 1)]
  if handler then
    count = count + handler(string.sub(member, 3))
  else
    redis.call('ZREM', PFX .. 'ttl', member)
  end
end
return count
