-- A session lock call. ARGV[4] session id, [5] lock name ('' none), [6] '1' after the
-- call succeeded: create the session on first use and count a write (idle TTL); '0'
-- before it: only remember the lock's name, so no snapshot misses its pending list (a
-- session that does not exist keeps that name for a day at most, unless it is created).
-- Replies {'ok'}.
local sid, name = ARGV[4], ARGV[5]
if name ~= '' then redis.call('SADD', ss_part('slk', sid), name) end
if ARGV[6] == '1' then
  ss_touch(sid, ss_live(sid))
elseif name ~= '' and not ss_read(sid) then
  redis.call('PEXPIRE', ss_part('slk', sid), 86400000)
end
return {'ok'}
