-- Apply a transaction's plan, made in Python from what txn_read returned, if nothing it
-- read has changed since: all writes at one revision with one 'txn' event.
-- ARGV[4..6] fence scope, lock, token; then the number of key guards and (key, revision
-- read, 0 = absent) for each; the number of lock guards and (scope, name, token, '1' if
-- it held) for each; the number of steps and (kind put|delete|get, key, value, ttl ms,
-- lease ('' none), keep '1'|'0') for each.
-- Replies {'ok', revision, results...} with per step 'n' (get: absent), 'd0'/'d1'
-- (delete: absent/deleted) or 'e' and the entry's 8 fields; or {'retry'} when something
-- read has changed, {'stale_fence'}, {'lease_not_found', id}, {'quota_exceeded', what,
-- limit}.
if not fence_holds(ARGV[4], ARGV[5], ARGV[6]) then return {'stale_fence'} end
local i = 7
local guards, lock_guards, steps = {}, {}, {}
for _ = 1, tonumber(ARGV[i]) do
  guards[#guards + 1] = {ARGV[i + 1], tonumber(ARGV[i + 2])}
  i = i + 2
end
i = i + 1
for _ = 1, tonumber(ARGV[i]) do
  lock_guards[#lock_guards + 1] = {ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]}
  i = i + 4
end
i = i + 1
for _ = 1, tonumber(ARGV[i]) do
  steps[#steps + 1] = {kind = ARGV[i + 1], key = ARGV[i + 2], value = ARGV[i + 3],
    ttl = tonumber(ARGV[i + 4]), lease = ARGV[i + 5], keep = ARGV[i + 6] == '1'}
  i = i + 6
end

-- Every entry first (a key past its deadline expires here with its own event), so the
-- transaction's revision is taken after them.
local cur = {}
for g = 1, #guards do cur[guards[g][1]] = live_entry(guards[g][1]) or false end
for s = 1, #steps do
  local key = steps[s].key
  if cur[key] == nil then cur[key] = live_entry(key) or false end
end
for g = 1, #guards do
  local e = cur[guards[g][1]]
  local r = 0
  if e then r = e.r end
  if r ~= guards[g][2] then return {'retry'} end
end
for g = 1, #lock_guards do
  local lg = lock_guards[g]
  local held = '0'
  if fence_holds(lg[1], lg[2], lg[3]) then held = '1' end
  if held ~= lg[4] then return {'retry'} end
end
local writes = false
for s = 1, #steps do
  local step = steps[s]
  if step.lease ~= '' and not TX.lease_live(step.lease) then
    return {'lease_not_found', step.lease}
  end
  if step.kind == 'put' or (step.kind == 'delete' and cur[step.key]) then writes = true end
end

-- Quotas as for single writes, for all the puts at once (deletes in the same
-- transaction are not counted as making room).
local new_keys, nbytes = 0, 0
for s = 1, #steps do
  local step = steps[s]
  if step.kind == 'put' then
    if cur[step.key] then
      nbytes = nbytes + #step.value - replaced_bytes(step.key, cur[step.key])
    else
      new_keys = new_keys + 1
      nbytes = nbytes + #step.value
    end
  end
end
local refused = quota_fails(new_keys, nbytes)
if refused then return refused end

local rev
if writes then rev = redis.call('INCR', REV) else rev = tonumber(redis.call('GET', REV) or '0') end
local out = {'ok', rev}
local changes = {}
local function entry_out(key, e)
  out[#out + 1] = 'e'
  local fields = entry_reply(key, e)
  for j = 1, #fields do out[#out + 1] = fields[j] end
end
for s = 1, #steps do
  local step = steps[s]
  local key = step.key
  local e = cur[key] or nil
  if step.kind == 'get' then
    if e then entry_out(key, e) else out[#out + 1] = 'n' end
  elseif step.kind == 'delete' then
    if e then
      remove_key(key)
      cur[key] = false
      changes[#changes + 1] = TX.kv_change('kv.delete', key, nil, e.v)
      out[#out + 1] = 'd1'
    else
      out[#out + 1] = 'd0'
    end
  else
    local ea, lease = 0, step.lease
    if step.keep then
      lease = ''
      if e then ea, lease = e.ea, e.ls end
    elseif step.ttl > 0 then
      ea = NOW + step.ttl
    end
    local stored = store_entry(key, e, step.value, ea, rev, lease)
    cur[key] = stored
    changes[#changes + 1] = TX.kv_change('kv.put', key, step.value, e and e.v)
    entry_out(key, stored)
  end
end
if #changes > 0 then append_event(rev, 'txn', '', nil, TX.changes_tail(changes)) end
return out
