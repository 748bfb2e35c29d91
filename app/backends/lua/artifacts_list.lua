-- Live artifacts in key order, after a cursor. ARGV[4] after ('' from the start),
-- [5] literal prefix, [6] Lua pattern ('' when the prefix is the whole key), [7] limit,
-- [8] scan budget. Replies {revision, more, then 9 fields of each artifact}.
local after, prefix, pat = ARGV[4], ARGV[5], ARGV[6]
local limit, budget = tonumber(ARGV[7]), tonumber(ARGV[8])
local min = '[' .. prefix
if after ~= '' and after >= prefix then min = '(' .. after end
local max = '+'
if prefix ~= '' then max = '[' .. prefix .. '\255' end
local out = {tonumber(redis.call('GET', REV) or '0'), 0}
local count, scanned, done = 0, 0, false
while not done do
  local batch = redis.call('ZRANGEBYLEX', PFX .. 'artifacts', min, max, 'LIMIT', 0, 256)
  if #batch == 0 then break end
  for i = 1, #batch do
    local key = batch[i]
    scanned = scanned + 1
    if scanned > budget then
      if count > 0 then out[2] = 1 end
      done = true
      break
    end
    local match
    if pat == '' then match = (key == prefix) else match = string.find(key, pat) ~= nil end
    if match then
      local a = load_artifact(key)
      if a and not (a.ea > 0 and a.ea <= NOW) then
        if count == limit then
          out[2] = 1
          done = true
          break
        end
        local r = artifact_reply('', key, a)
        for j = 2, #r do out[#out + 1] = r[j] end
        count = count + 1
      end
    end
    min = '(' .. key
  end
  if pat == '' then break end
end
return out
