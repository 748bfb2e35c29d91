-- Live sessions in id order after a cursor. ARGV[4] after ('' from the start), [5]
-- literal prefix, [6] Lua pattern ('' when the prefix is the whole id), [7] limit, [8]
-- scan budget. Replies {more, then per session: id, md, ca, ua, ttl, ea, variable count}.
local after, prefix, pat = ARGV[4], ARGV[5], ARGV[6]
local limit, budget = tonumber(ARGV[7]), tonumber(ARGV[8])
local min = '[' .. prefix
if after ~= '' and after >= prefix then min = '(' .. after end
local max = '+'
if prefix ~= '' then max = '[' .. prefix .. '\255' end
local out = {0}
local count, scanned, done = 0, 0, false
while not done do
  local batch = redis.call('ZRANGEBYLEX', PFX .. 'sess', min, max, 'LIMIT', 0, 256)
  if #batch == 0 then break end
  for i = 1, #batch do
    local sid = batch[i]
    scanned = scanned + 1
    if scanned > budget then
      if count > 0 then out[1] = 1 end
      done = true
      break
    end
    local match
    if pat == '' then match = (sid == prefix) else match = string.find(sid, pat) ~= nil end
    if match then
      local s = ss_read(sid)
      if s then
        if count == limit then
          out[1] = 1
          done = true
          break
        end
        local n = #out
        out[n + 1], out[n + 2], out[n + 3], out[n + 4] = sid, s.md, s.ca, s.ua
        out[n + 5], out[n + 6] = s.ttl, s.ea
        out[n + 7] = redis.call('HLEN', ss_part('sv', sid))
        count = count + 1
      end
    end
    min = '(' .. sid
  end
  if pat == '' then break end
end
return out
