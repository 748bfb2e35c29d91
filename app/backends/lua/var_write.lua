-- Write variable values, all or nothing, if every variable is still at the version the
-- caller validated against (compare-and-swap; the caller re-reads and retries on
-- 'conflict'). ARGV[4] session id, [5] 'single' | 'batch', [6..8] fence scope, lock,
-- token, [9] count, then per write 5 args: id, expected version, name, definition JSON
-- ('' to keep), value JSON. A batch's writes come sorted by name; its one event is keyed by the
-- first. Replies {'ok', revision, now}, {'conflict'} or {'stale_fence'}.
local sid, mode = ARGV[4], ARGV[5]
if not fence_holds(ARGV[6], ARGV[7], ARGV[8]) then return {'stale_fence'} end
local s = ss_live(sid)
if not s then return {'conflict'} end
local sv, svv = ss_part('sv', sid), ss_part('svv', sid)
local n = tonumber(ARGV[9])
local writes = {}
local grow = 0
for i = 1, n do
  local b = 10 + (i - 1) * 5
  local id, expected = ARGV[b], ARGV[b + 1]
  local meta = redis.call('HGET', sv, id)
  if not meta then return {'conflict'} end
  local ver, ca, _, def = ss_var_parts(meta)
  if ver ~= expected then return {'conflict'} end
  local old_def = def
  if ARGV[b + 3] ~= '' then def = ARGV[b + 3] end
  writes[i] = {id = id, ver = tonumber(ver) + 1, ca = ca, def = def, value = ARGV[b + 4],
    old = redis.call('HGET', svv, id), name = ARGV[b + 2]}
  grow = grow + #def + #writes[i].value - #old_def - #writes[i].old
end
local refused = ss_quota_fails(s, grow)
if refused then return refused end
ss_touch(sid, s)
ss_charge(sid, grow)
for i = 1, n do
  local w = writes[i]
  redis.call('HSET', sv, w.id, string.format('%d', w.ver) .. '|' .. w.ca .. '|' .. NOW .. '|'
    .. w.def)
  redis.call('HSET', svv, w.id, w.value)
end
local first = writes[1]
local tail = ev_join(values_tail(first.value, first.old),
  {'sid', first.id, 'dversion', first.ver})
if mode == 'batch' then
  local parts = {}
  for i = 1, n do
    local w = writes[i]
    parts[#parts + 1] = '{' .. w.name
    parts[#parts + 1] = ev_pack({'sid', w.id, 'dversion', w.ver, 'jvalue', w.value,
      'jold_value', w.old})
  end
  tail = ev_join(tail, {'bbatch', '1', '{updates', ev_pack(parts)})
end
local rev = emit('variable.updated', first.name, sid, tail)
return {'ok', rev, NOW}
