-- What a transaction's plan needs, read at one moment. Read-only. ARGV[4] number of keys,
-- the keys, then the number of lock compares and (scope, name, token) for each.
-- Replies per key 'n' (absent) or 'e' and the entry's 8 fields, then per lock '1' when
-- the token holds it now, else '0'.
local i = 4
local out = {}
local nkeys = tonumber(ARGV[i])
i = i + 1
for _ = 1, nkeys do
  local key = ARGV[i]
  i = i + 1
  local e = load_entry(key)
  if e and not is_expired(e) then
    out[#out + 1] = 'e'
    local fields = entry_reply(key, e)
    for j = 1, #fields do out[#out + 1] = fields[j] end
  else
    out[#out + 1] = 'n'
  end
end
local nlocks = tonumber(ARGV[i])
i = i + 1
for _ = 1, nlocks do
  if fence_holds(ARGV[i], ARGV[i + 1], ARGV[i + 2]) then out[#out + 1] = '1'
  else out[#out + 1] = '0' end
  i = i + 3
end
return out
