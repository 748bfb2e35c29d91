-- A key's live entry and, with ARGV[5] = '1', its kept history items (newest first).
-- ARGV[4] key. Read-only: an entry past its deadline reads as absent.
local key = ARGV[4]
local e = load_entry(key)
if not e or is_expired(e) then return {'absent'} end
if ARGV[5] ~= '1' then return reply('ok', key, e) end
local out = reply('ok', key, e)
out[#out + 1] = history_item(e)
for _, item in ipairs(older_items(key, e.r)) do out[#out + 1] = item end
return out
