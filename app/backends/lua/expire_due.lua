-- Expire every member of the namespace's deadline set that is due, each with its event.
-- ARGV[4] most members to handle in one call. Replies {expired count, the next deadline
-- (ms, 0 when none is left), 1 when more are due now}; records that next deadline as
-- what the global index will say ('sched'), which the sweeper then tells it.
local batch = tonumber(ARGV[4])
local due = redis.call('ZRANGEBYSCORE', PFX .. 'ttl', '-inf', NOW, 'LIMIT', 0, batch)
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
local more = 0
if #due == batch then more = 1 end
local head = redis.call('ZRANGE', PFX .. 'ttl', 0, 0, 'WITHSCORES')
local nxt = 0
if #head > 0 then nxt = tonumber(head[2]) end
if more == 1 then nxt = NOW end
if nxt > 0 then
  redis.call('SET', PFX .. 'sched', string.format('%d', nxt))
else
  redis.call('DEL', PFX .. 'sched')
end
RESCHEDULE = nil  -- the sweeper settles the index itself
return {count, string.format('%d', nxt), more}
