-- Create the session on first use and count a write (idle TTL); remember a session lock
-- about to be used. ARGV[4] session id, [5] lock name ('' none). Replies {'ok'}.
local sid, name = ARGV[4], ARGV[5]
ss_touch(sid, ss_live(sid))
if name ~= '' then redis.call('SADD', ss_part('slk', sid), name) end
return {'ok'}
