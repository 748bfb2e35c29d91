-- Events after a revision. ARGV[4] after, [5] count. Replies {current revision,
-- first kept revision (0 when the log is empty), then per event its revision and its
-- fields as stored (common.lua, Event fields; Python encodes the JSON)}.
local after, count = tonumber(ARGV[4]), tonumber(ARGV[5])
local current = tonumber(redis.call('GET', REV) or '0')
-- The first kept event: as 'logn' names it (the stream may still store a few compacted
-- ones before it: trim_stream), else the stream's head.
local first = log_first()
if not first then
  local head = redis.call('XRANGE', PFX .. 'log', '-', '+', 'COUNT', 1)
  first = 0
  if #head > 0 then first = tonumber(string.match(head[1][1], '^(%d+)')) end
end
local out = {current, first}
-- Nothing is after a revision beyond the current one; and the ID is built from the
-- argument's digits, as tostring() of a number past 2^53 is not an integer (503 before).
local rows = {}
if after <= current then
  local from = '(' .. ARGV[4] .. '-0'
  if after < first - 1 then from = string.format('%d', first) .. '-0' end
  rows = redis.call('XRANGE', PFX .. 'log', from, '+', 'COUNT', count)
end
for i = 1, #rows do
  out[#out + 1] = tonumber(string.match(rows[i][1], '^(%d+)'))
  out[#out + 1] = rows[i][2]
end
-- ARGV[6] = '1' (CORKBOARD_REDIS_WAIT_REPLICAS): a write here makes the WAIT that follows
-- this script cover every event it read, so watchers never see an event that a failover
-- can take back.
if ARGV[6] == '1' then redis.call('SET', PFX .. 'synced', current) end
return out
