-- Live keys in order, after a cursor. ARGV[4] after ('' from the start), [5] literal
-- prefix, [6] Lua pattern ('' when the prefix is the whole key), [7] limit, [8] scan
-- budget, [9] '1' to include values. Replies {revision, more, entries (8 fields each)...}.
local after, prefix, pat = ARGV[4], ARGV[5], ARGV[6]
local limit, budget, with_values = tonumber(ARGV[7]), tonumber(ARGV[8]), ARGV[9] == '1'
local min = '[' .. prefix
if after ~= '' and after >= prefix then min = '(' .. after end
local max = '+'
if prefix ~= '' then max = '[' .. prefix .. '\255' end
local out = {tonumber(redis.call('GET', REV) or '0'), 0}
local count, scanned, done = 0, 0, false
while not done do
  local batch = redis.call('ZRANGEBYLEX', PFX .. 'keys', min, max, 'LIMIT', 0, 256)
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
      local e = load_entry(key)
      if e and not is_expired(e) then
        if count == limit then
          out[2] = 1
          done = true
          break
        end
        if not with_values then e.v = '' end
        local r = entry_reply(key, e)
        for j = 1, #r do out[#out + 1] = r[j] end
        count = count + 1
      end
    end
    min = '(' .. key
  end
  if pat == '' then break end
end
return out
