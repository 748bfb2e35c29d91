-- Add a number. ARGV[4] key, [5] by, [6] '1' if by is an integer, [7] initial,
-- [8] ttl ms applied when the key is created, [9..11] fence scope, lock, token.
-- Integers stay exact below 2^53 in magnitude; floats are written in their shortest exact form.
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
local by = tonumber(ARGV[5])
local result = current + by
local out
if string.match(text, '^%-?%d+$') and ARGV[6] == '1' then
  if math.abs(current) >= 9007199254740992 or math.abs(result) >= 9007199254740992 then
    return {'inexact'}
  end
  out = string.format('%d', result)
else
  if result ~= result or result == math.huge or result == -math.huge then
    return {'inexact'}
  end
  out = string.format('%.15g', result)
  if tonumber(out) ~= result then out = string.format('%.16g', result) end
  if tonumber(out) ~= result then out = string.format('%.17g', result) end
  if not string.find(out, '[%.eE]') then out = out .. '.0' end
end
local refused = write_fails(key, e, out)
if refused then return refused end
local ea = 0
if e then
  ea = e.ea
elseif tonumber(ARGV[8]) > 0 then
  ea = NOW + tonumber(ARGV[8])
end
return reply('ok', key, write_entry(key, e, out, ea, e and e.ls))
