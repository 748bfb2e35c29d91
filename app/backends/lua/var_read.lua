-- Read variables, read-only. ARGV[4] session id, [5..7] fence scope, lock, token (checked
-- for the write this read prepares; '' none), [8] '*' for all, else idents (names or ids)
-- follow from ARGV[9]. Replies {'stale_fence'} or {'ok', then per variable found: ident,
-- id, meta ('version|created_at|updated_at|definition'), value}.
local sid = ARGV[4]
if not fence_holds(ARGV[5], ARGV[6], ARGV[7]) then return {'stale_fence'} end
local out = {'ok'}
if not ss_read(sid) then return out end
local sv, svv, svn = ss_part('sv', sid), ss_part('svv', sid), ss_part('svn', sid)
if ARGV[8] == '*' then
  local all = redis.call('HGETALL', sv)
  for i = 1, #all, 2 do
    local n = #out
    out[n + 1], out[n + 2], out[n + 3] = all[i], all[i], all[i + 1]
    out[n + 4] = redis.call('HGET', svv, all[i])
  end
  return out
end
for i = 9, #ARGV do
  local ident = ARGV[i]
  local id = ident
  if string.sub(ident, 1, 4) ~= 'var_' then id = redis.call('HGET', svn, ident) end
  if id then
    local meta = redis.call('HGET', sv, id)
    if meta then
      local n = #out
      out[n + 1], out[n + 2], out[n + 3] = ident, id, meta
      out[n + 4] = redis.call('HGET', svv, id)
    end
  end
end
return out
