-- Delete every live key matching a pattern at one revision with one 'txn' event.
-- ARGV[4..6] fence scope, lock, token; [7] literal prefix; [8] the key pattern
-- ('' when the prefix is the whole key); [9] most keys deleted at once.
-- Replies {'ok', revision, keys...}, {'too_many', count} (nothing deleted) or
-- {'stale_fence'}. Keys past their deadline are left to the sweeper.
if not fence_holds(ARGV[4], ARGV[5], ARGV[6]) then return {'stale_fence'} end
local prefix, pat, most = ARGV[7], ARGV[8], tonumber(ARGV[9])
local min, max = '[' .. prefix, '+'
if prefix ~= '' then max = '[' .. prefix .. '\255' end
local parts = pat ~= '' and glob_parts(pat) or nil
local keys, entries = {}, {}
while true do
  local batch = redis.call('ZRANGEBYLEX', PFX .. 'keys', min, max, 'LIMIT', 0, 1000)
  if #batch == 0 then break end
  for b = 1, #batch do
    local name = batch[b]
    local match
    if parts then match = glob_match(name, parts) else match = (name == prefix) end
    if match then
      local e = load_entry(name)
      if e and not is_expired(e) then
        keys[#keys + 1] = name
        entries[#entries + 1] = e
        if #keys > most then return {'too_many', #keys} end
      end
    end
  end
  if pat == '' then break end
  min = '(' .. batch[#batch]
end
if #keys == 0 then return {'ok', tonumber(redis.call('GET', REV) or '0')} end
local rev = redis.call('INCR', REV)
local changes = {}
for k = 1, #keys do
  remove_key(keys[k])
  changes[#changes + 1] = TX.kv_change('kv.delete', keys[k], nil, entries[k].v)
end
append_event(rev, 'txn', '', nil, TX.changes_tail(changes))
local out = {'ok', rev}
for k = 1, #keys do out[#out + 1] = keys[k] end
return out
