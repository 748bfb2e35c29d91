-- Store a value. ARGV[4] key, [5] value JSON, [6] ttl ms (0 none, -1 keep the current
-- deadline), [7] condition, [8] expected revision, [9] fence scope, [10] fence lock
-- ('' none), [11] fence token, [12] lease id ('' none: with ttl -1 the key keeps its
-- lease, else it leaves it). Replies 'created' | 'replaced' with the stored entry's
-- numbers only (r cr ver ca ma ea: the caller has its key and value), a failure with the
-- entry, or {'lease_not_found'}.
local key = ARGV[4]
if not fence_holds(ARGV[9], ARGV[10], ARGV[11]) then return {'stale_fence'} end
local lease = ARGV[12] or ''
if lease ~= '' and not TX.lease_live(lease) then return {'lease_not_found'} end
local e = live_entry(key, true)
local failed = precondition_fails(ARGV[7], ARGV[8], e)
if failed then return reply(failed, key, e) end
local ttl = ARGV[6]
if ttl == '0' then ttl = 0 else ttl = tonumber(ttl) end  -- (a write without a TTL)
local ea = 0
if ttl > 0 then
  ea = NOW + ttl
elseif ttl < 0 and e and lease == '' then
  ea = e.ea
  lease = e.ls
end
local refused = write_fails(key, e, ARGV[5])
if refused then return refused end
local status = 'replaced'
if not e then status = 'created' end
local w = write_entry(key, e, ARGV[5], ea, lease)
return {status, w.r, w.cr, w.ver, w.ca, w.ma, w.ea}
