-- Add an integer to an integer. ARGV[4] key, [5] by (integer text), [6] '1' if by is an
-- integer, [7] initial (JSON), [8] ttl ms applied when the key is created, [9..11] fence
-- scope, lock, token. Only an integer plus an integer, all below 2^53 in magnitude, is
-- done here ('ok' with the entry); otherwise the reply says why and Python answers with
-- the rule every backend shares (app.backends.base.add_exact): {'not_a_number', first
-- character}, {'inexact', start text} or {'float', start text}, the last two being
-- computed in Python (a double's JSON text must be orjson's) as a compare-and-swap.
local key = ARGV[4]
if not fence_holds(ARGV[9], ARGV[10], ARGV[11]) then return {'stale_fence'} end
local e = live_entry(key)
local text = ARGV[7]
if e then text = e.v end
local first = string.sub(text, 1, 1)
local current = tonumber(text)
if current == nil or not (first == '-' or string.match(first, '%d')) then
  return {'not_a_number', first}
end
if not (string.match(text, '^%-?%d+$') and ARGV[6] == '1') then return {'float', text} end
local by = tonumber(ARGV[5])
local result = current + by
if #text > 17 or #ARGV[5] > 17 or math.abs(current) >= 9007199254740992
    or math.abs(by) >= 9007199254740992 or math.abs(result) >= 9007199254740992 then
  return {'inexact', text}
end
local out = string.format('%d', result)
local refused = write_fails(key, e, out)
if refused then return refused end
local ea = 0
if e then
  ea = e.ea
elseif tonumber(ARGV[8]) > 0 then
  ea = NOW + tonumber(ARGV[8])
end
return reply('ok', key, write_entry(key, e, out, ea))
