-- The whole session at one revision, read-only. ARGV[4] session id. Replies {revision, 0}
-- when absent, else {revision, 1, md, ca, ua, ttl, ea, then sections, each a count and its
-- items: variables (id, meta, value), subscriptions (id), dedupe keys oldest first (key),
-- thread states (id, JSON), channel states (id, JSON), held locks (name, owner, token,
-- acquired_at, expires_at, ttl), pending lists (name, count, entries...)}.
local sid = ARGV[4]
local out = {tonumber(redis.call('GET', REV) or '0'), 0}
local s = ss_read(sid)
if not s then return out end
out[2] = 1
local function add(v) out[#out + 1] = v end
add(s.md) add(s.ca) add(s.ua) add(s.ttl) add(s.ea)

local vars = redis.call('HGETALL', ss_part('sv', sid))
add(#vars / 2)
for i = 1, #vars, 2 do
  add(vars[i]) add(vars[i + 1]) add(redis.call('HGET', ss_part('svv', sid), vars[i]))
end
local subs = redis.call('SMEMBERS', ss_part('ssub', sid))
table.sort(subs)
add(#subs)
for i = 1, #subs do add(subs[i]) end
local dd = redis.call('ZRANGE', ss_part('sdd', sid), 0, -1)
add(#dd)
for i = 1, #dd do add(dd[i]) end
for _, part in ipairs({'sth', 'sch'}) do
  local states = redis.call('HGETALL', ss_part(part, sid))
  add(#states / 2)
  for i = 1, #states do add(states[i]) end
end

local names = ss_lock_names(sid)
local held, pending = {}, {}
for i = 1, #names do
  local h = lk_load(sid, names[i])
  if h and not lk_expired(h) then held[#held + 1] = {names[i], h} end
  local items = redis.call('LRANGE', lk_pend(lk_sn(sid, names[i])), 0, -1)
  if #items > 0 then pending[#pending + 1] = {names[i], items} end
end
add(#held)
for i = 1, #held do
  local name, h = held[i][1], held[i][2]
  add(name) add(h.owner) add(h.token) add(h.acquired_at) add(h.expires_at) add(h.ttl)
end
add(#pending)
for i = 1, #pending do
  local items = pending[i][2]
  add(pending[i][1]) add(#items)
  for j = 1, #items do add(items[j]) end
end
return out
