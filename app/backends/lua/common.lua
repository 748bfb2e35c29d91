-- Prelude of every Corkboard script: the namespace's keys, server time, revisions,
-- the change log, key entries and the fencing check. Prepended to each script at load.
--
-- Calling convention: KEYS[1] = 'cb:{<ns>}:rev' (it routes the call to the namespace's
-- hash slot; every other key is derived from it and carries the same '{<ns>}' tag).
-- ARGV[1] = namespace, ARGV[2] = the bounds 'events:event_bytes:max_keys:max_bytes'
-- then ':1' on Redis Cluster, ':0' on one server (Bounds.script_arg and RedisStore; a
-- lone number is the events kept), ARGV[3] = history depth; the script's own arguments
-- start at ARGV[4].
--
-- Layout under the prefix P = 'cb:{<ns>}:':
--   P..'rev'            string   the namespace's revision counter
--   P..'log'            stream   change events, id '<revision>-0', fields t (type) k (key)
--                                s (session, '' none) a (time, ms), then the event's JSON
--                                members as tagged pairs (append_event; encoded to JSON
--                                once, in Python: app/domain/events.py)
--   P..'k:'..key        hash     a key's entry: v r cr ver ca ma ea (ms; ea 0 = none),
--                                ls: the lease it is on (absent or '' = none), and h:
--                                '1' once its history list is of the layout below
--                                (absent: written before it; see store_entry)
--   P..'h:'..key        list     its older revisions, newest first, items
--                                'r|cr|ver|ca|ma|ea|v' (at most history depth - 1; the
--                                current revision is the entry hash). Absent for a key
--                                with one revision. A list written before this layout
--                                also holds the current revision at its head: readers
--                                skip it (older_items), the next write drops it (and
--                                marks the entry h, so later writes need not look).
--   P..'keys'           zset     live key names (score 0), for ordered listing
--   P..'ttl'            zset     deadlines (ms) of members 'k:<key>', 'l:<scope>|<name>', ...
--   P..'sched'          string   the time (ms) the global deadline index 'cb:deadlines' was
--                                last told to visit this namespace at (or earlier); absent:
--                                not indexed. See set_deadline and redis/sweeper.py.
--   P..'lock:'..scope..'|'..name  hash  a lock holder: owner token acquired_at expires_at
--   P..'logn'           list   '<revision>:<size in bytes>' of each kept event of the log,
--                              oldest first (a plain size: an older layout); its head is
--                              the first kept event (trim_stream)
--   P..'quota'          hash   eb: bytes of the log's events (an event's size: the sum
--                              of the lengths of its field names and values, on both
--                              backends; see append_event); b: the bytes
--                              CORKBOARD_NAMESPACE_MAX_BYTES bounds
--                              (key revisions' values, session metadata, variables'
--                              values and definitions, state maps; see Bounds)

-- Loaded once as a Redis Functions library (store.py: library_source): everything
-- below is defined once, when the library loads, and each call only sets the call's
-- state (`begin`) and runs its script's body. So these are the call's state, set by
-- `begin` at the start of every call, never kept from one call to the next.
local KEYS, ARGV
local REV, PFX, NS, RETENTION, RETENTION_BYTES, MAX_KEYS, MAX_BYTES, HISTORY, QUOTA
local NOW, NOW_S  -- the call's time in ms; its digits once made (now_digits)
-- The earliest deadline this call set that the global index may not know of: the
-- call's reply is then wrapped as {'__reschedule', RESCHEDULE, reply} (see `finish`),
-- and the caller updates 'cb:deadlines' in a separate call (a script may only touch its
-- namespace's hash slot on Redis Cluster).
local RESCHEDULE

-- Redis Cluster: a namespace whose slot is moving ------------------------------------
-- While `redis-cli --cluster reshard` moves the namespace's slot (MIGRATING on the
-- source, IMPORTING on the target, a few keys per MIGRATE), its keys are split between
-- two masters: a script would read moved keys as absent, and Redis would stop it at the
-- first missing key it touches, after the writes it made before. So no script runs
-- then: it is refused before it reads or writes anything, with TRYAGAIN, which the
-- caller sends again (and answers 503 with Retry-After if the move lasts). The probe:
-- a two-key EXISTS of REV and a key that never exists fails on exactly such a node (the
-- source: TRYAGAIN; the target, reached through ASK: 'non local key'), and succeeds
-- anywhere else (a stable slot, or a plain Redis server).
local function slot_moving()
  local r = redis.pcall('EXISTS', REV, PFX .. 'slot-probe')
  return type(r) == 'table' and r.err ~= nil
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The call's time as digits (made once per call, and only by a call that writes it).
local function now_digits()
  if not NOW_S then NOW_S = string.format('%d', NOW) end
  return NOW_S
end

-- An integer's digits (a Lua number passed to redis.call is formatted as a float, and
-- tostring writes 1e+15). string.format costs about as much as a small command, so 0
-- (no deadline, no change) is a constant, and the last revision formatted is kept: a
-- write's event, its size list and its entry all name it.
local REV_N, REV_S = 0, '0'
local function digits(n)
  if n == 0 then return '0' end
  return string.format('%d', n)
end
local function rev_digits(rev)
  if rev ~= REV_N then REV_N, REV_S = rev, string.format('%d', rev) end
  return REV_S
end

-- The call's state from its KEYS and ARGV (the calling convention above); an error
-- reply when the call must not run (its slot is moving), else nil. What follows from
-- the namespace key and the bounds argument is worked out again only when they differ
-- from the last call's (a pure function of those strings: nothing else is kept).
local LAST_BOUNDS, CLUSTER, LAST_HISTORY
local function begin(keys, args)
  KEYS, ARGV = keys, args
  if keys[1] ~= REV then
    REV = keys[1]
    PFX = string.sub(REV, 1, #REV - 3)
    QUOTA = PFX .. 'quota'
  end
  NS = args[1]
  if args[2] ~= LAST_BOUNDS then
    local bounds = {}
    for n in string.gmatch(args[2] or '', '[^:]+') do bounds[#bounds + 1] = tonumber(n) end
    RETENTION = bounds[1] or 100000
    RETENTION_BYTES = bounds[2] or 67108864
    MAX_KEYS = bounds[3] or 1000000
    MAX_BYTES = bounds[4] or 1073741824
    CLUSTER = bounds[5] ~= 0  -- (absent: probe, the safe side)
    LAST_BOUNDS = args[2]
  end
  if args[3] ~= LAST_HISTORY then
    HISTORY = tonumber(args[3])
    LAST_HISTORY = args[3]
  end
  RESCHEDULE = nil
  if CLUSTER and slot_moving() then
    return redis.error_reply('TRYAGAIN the hash slot of namespace ' .. NS
      .. ' is moving between Redis Cluster masters')
  end
  NOW = now_ms()
  NOW_S = nil
  return nil
end

-- The call's reply, flagged with RESCHEDULE when it set one.
local function finish(reply)
  if RESCHEDULE then
    return {'__reschedule', string.format('%d', RESCHEDULE), reply}
  end
  return reply
end

-- RFC 3339 UTC with milliseconds, from epoch ms (days-from-civil, H. Hinnant).
local function iso(ms)
  local s = math.floor(ms / 1000)
  local frac = ms - s * 1000
  local days = math.floor(s / 86400)
  local rem = s - days * 86400
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
    - math.floor(doe / 146096)) / 365)
  local y = yoe + era * 400
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  if m <= 2 then y = y + 1 end
  return string.format('%04d-%02d-%02dT%02d:%02d:%02d.%03dZ', y, m, d,
    math.floor(rem / 3600), math.floor((rem % 3600) / 60), rem % 60, frac)
end

-- Event fields. A script never writes JSON: an event is stored as fields, and Python
-- encodes its JSON once (app/domain/events.py, the one encoder, also the memory
-- backend's). After t k s a, each JSON member is a pair: a one-character tag then the
-- member's name, and its value: 's' string, 'd' number (an integer's digits; a float's
-- text as Python passed it), 'b' boolean ('1'/'0'), 'n' null (''), 'j' raw JSON exactly
-- as stored (a value written by Python: never built here), '{' object / '[' list (value:
-- their members' pairs packed by ev_pack, '<length>:<bytes>' each; list items have
-- empty names). A tail is a Lua list of such pairs: {'sowner', owner, 'dtoken', 7}.

-- Integers as their digits (tostring would write 1e+15); strings as they are.
local function ev_text(x)
  if type(x) == 'number' then return string.format('%d', x) end
  return x
end

-- The value of a '{' or '[' member from its members' pairs.
local function ev_pack(pairs)
  local parts = {}
  for i = 1, #pairs do
    local x = ev_text(pairs[i])
    parts[i] = #x .. ':' .. x
  end
  return table.concat(parts)
end

-- The pairs of several tails (nil ones skipped), in order.
local function ev_join(...)
  local out = {}
  for i = 1, select('#', ...) do
    local t = select(i, ...)
    if t then for j = 1, #t do out[#out + 1] = t[j] end end
  end
  return out
end

-- The pair of a time member: an RFC 3339 string, or null when ms is 0 (none).
local function ev_time(name, ms)
  if ms > 0 then return {'s' .. name, iso(ms)} end
  return {'n' .. name, ''}
end

-- The value and old_value members of events that carry values (raw stored JSON, or nil
-- for null: a stored JSON 'null' stays distinguishable from none).
local function values_tail(value, old)
  if value then
    if old then return {'jvalue', value, 'jold_value', old} end
    return {'jvalue', value, 'nold_value', ''}
  end
  if old then return {'nvalue', '', 'jold_value', old} end
  return {'nvalue', '', 'nold_value', ''}
end

-- The log's event sizes live beside it, oldest first, in the list P..'logn' (the stream
-- cannot return a field without the others, and an event may be megabytes): dropping an
-- event pops its size, never reads the event. A log written before byte accounting
-- existed gets its sizes counted once, here (an event stored as JSON, fields t k s d,
-- counts its fields alike; read_events still reads such events).
local function log_sizes(n)
  if redis.call('HEXISTS', QUOTA, 'eb') == 1 or n == 0 then return end
  local total, after = 0, '-'
  while true do
    local rows = redis.call('XRANGE', PFX .. 'log', after, '+', 'COUNT', 100)
    if #rows == 0 then break end
    for i = 1, #rows do
      local f = rows[i][2]
      local size = 0
      for j = 1, #f do size = size + #f[j] end
      redis.call('RPUSH', PFX .. 'logn', size)
      total = total + size
      after = '(' .. rows[i][1]
    end
  end
  redis.call('HSET', QUOTA, 'eb', total)
end

-- Dropping the oldest events while the log holds more than RETENTION events or more
-- than RETENTION_BYTES bytes (the newest event always stays).
--
-- 'logn' holds '<revision>:<size>' per event (a plain '<size>': written before the
-- revision was kept beside it), so its head names the first kept event: the log's
-- events up to the last dropped revision are compacted, whether or not the stream still
-- stores them (read_events starts after them). The stream itself is trimmed by whole
-- nodes (XTRIM MINID ~), once TRIM_EVERY events were dropped since its last trim or at
-- once when the events dropped held TRIM_BYTES or more: trimming exactly one event a
-- write made Redis walk the node's deleted entries every time (about a fifth of a
-- write's server time at retention), and a trim per write was a command per write. So
-- what stays stored past the cut is at most TRIM_EVERY - 1 events of less than
-- TRIM_BYTES each, plus one node (stream-node-max-bytes, 4 KiB by default, or 100
-- events). The counts since the last trim live in this library's Lua state (UNTRIMMED,
-- by namespace prefix, at most UNTRIMMED_MAX of them): a namespace without one (a new
-- server, a reloaded library, a master just promoted, a full table emptied) trims at its
-- next drop, so a lost count only ever trims sooner. A plain size popped means the
-- older layout: exact trimming then, as before.
local TRIM_EVERY, TRIM_BYTES, UNTRIMMED_MAX = 16, 4096, 4096
local UNTRIMMED, UNTRIMMED_N = {}, 0

-- Pop up to `count` sizes off the head of 'logn': their bytes, the last revision popped
-- ('' for none or the older layout), whether a plain size (older layout) was among them,
-- and how many were popped.
local function pop_sizes(count)
  local items = redis.call('LPOP', PFX .. 'logn', count)
  if not items then return 0, '', false, 0 end
  local freed, cut, exact = 0, '', false
  for i = 1, #items do
    local item = items[i]
    local colon = string.find(item, ':', 1, true)
    if colon then
      cut = string.sub(item, 1, colon - 1)
      freed = freed + tonumber(string.sub(item, colon + 1))
    else
      exact = true
      freed = freed + tonumber(item)
    end
  end
  return freed, cut, exact, #items
end

-- Trim the stream to the events kept: n of them after dropping `drop`, the last
-- dropped of revision `cut`, `freed` bytes (see above).
local function trim_stream(n, drop, cut, exact, freed)
  if drop == 0 then return end
  if exact then
    redis.call('XTRIM', PFX .. 'log', 'MAXLEN', n - drop)
    return
  end
  local count = UNTRIMMED[PFX]
  if count == nil then
    if UNTRIMMED_N >= UNTRIMMED_MAX then UNTRIMMED, UNTRIMMED_N = {}, 0 end
    UNTRIMMED_N = UNTRIMMED_N + 1
  elseif count + drop < TRIM_EVERY and freed < TRIM_BYTES then
    UNTRIMMED[PFX] = count + drop
    return
  end
  redis.call('XTRIM', PFX .. 'log', 'MINID', '~', cut .. '-1')
  UNTRIMMED[PFX] = 0
end

-- Drop events while the log (n events, eb bytes, both counted already) is over its
-- byte bound; the events over RETENTION were dropped before (append_event).
local function compact_bytes(n, eb)
  local drop, freed, cut, exact = 0, 0, '', false
  while eb - freed > RETENTION_BYTES and n - drop > 1 do
    local f, c, x, popped = pop_sizes(1)
    if popped == 0 then break end
    drop, freed = drop + 1, freed + f
    if c ~= '' then cut = c end
    exact = exact or x
  end
  if drop > 0 then
    trim_stream(n, drop, cut, exact, freed)
    redis.call('HINCRBY', QUOTA, 'eb', -freed)
  end
end

-- The first kept event's revision as the head of 'logn' names it, or nil (an empty log,
-- or one of the older layout: its stream is trimmed exactly, so its head is the first).
local function log_first()
  local head = redis.call('LINDEX', PFX .. 'logn', 0)
  if not head then return nil end
  local colon = string.find(head, ':', 1, true)
  if not colon then return nil end
  return tonumber(string.sub(head, 1, colon - 1))
end

-- An event's size, counted in 'logn' and quota 'eb' and bounded by RETENTION_BYTES, is
-- the sum of the lengths of all its field names and values (the memory backend counts
-- the same: app/domain/events.py fields_size). count_event counts the event of revision
-- digits `revs` and `size` bytes just added to the stream: at retention the events over
-- RETENTION are popped before 'eb' is counted, so one HINCRBY counts both.
local function count_event(revs, size)
  local n = redis.call('RPUSH', PFX .. 'logn', revs .. ':' .. string.format('%d', size))
  local freed, cut, exact, drop = 0, '', false, 0
  if n > RETENTION then freed, cut, exact, drop = pop_sizes(n - RETENTION) end
  local eb = redis.call('HINCRBY', QUOTA, 'eb', digits(size - freed))
  if n == 1 and eb == size then
    -- The namespace's first event, or a log from before byte accounting (no sizes, no
    -- 'eb'): then its older events are counted now, this one with them.
    local len = redis.call('XLEN', PFX .. 'log')
    if len > 1 then
      redis.call('DEL', PFX .. 'logn')
      redis.call('HDEL', QUOTA, 'eb')
      log_sizes(len)
      n, eb = len, tonumber(redis.call('HGET', QUOTA, 'eb'))
      if n > RETENTION then
        freed, cut, exact, drop = pop_sizes(n - RETENTION)
        eb = redis.call('HINCRBY', QUOTA, 'eb', -freed)
      end
    end
  end
  trim_stream(n, drop, cut, exact, freed)
  n = n - drop
  if eb > RETENTION_BYTES and n > 1 then compact_bytes(n, eb) end
end

-- Append the event of revision rev (taken by the caller) with the member pairs of
-- `tail` (see Event fields), and count it.
local function append_event(rev, typ, key, session, tail)
  session = session or ''
  local at = now_digits()
  local revs = rev_digits(rev)
  local args = {'XADD', PFX .. 'log', revs .. '-0', 't', typ, 'k', key, 's', session, 'a', at}
  local size = 4 + #typ + #key + #session + #at
  if tail then
    local count = 11
    for i = 1, #tail do
      local x = tail[i]
      if type(x) == 'number' then x = string.format('%d', x) end  -- (ev_text, inline)
      count = count + 1
      args[count] = x
      size = size + #x
    end
  end
  redis.call(unpack(args))
  count_event(revs, size)
end

-- append_event of a key's event (no session) whose tail is values_tail(value, old),
-- with the members passed as they are: no tail, no argument table (every key write's
-- event; with emit_value, about 9,500 of a write's 222,000 instructions in redis-server).
local function append_value_event(rev, typ, key, value, old)
  local at = now_digits()
  local revs = rev_digits(rev)
  local vn, on = 'jvalue', 'jold_value'
  if not value then vn, value = 'nvalue', '' end
  if not old then on, old = 'nold_value', '' end
  redis.call('XADD', PFX .. 'log', revs .. '-0', 't', typ, 'k', key, 's', '', 'a', at,
    vn, value, on, old)
  count_event(revs, 4 + #typ + #key + #at + #vn + #value + #on + #old)
end

-- Take the next revision and append one event. Returns the revision.
local function emit(typ, key, session, tail)
  local rev = redis.call('INCR', REV)
  append_event(rev, typ, key, session, tail)
  return rev
end

-- emit of a key's event: emit(typ, key, nil, values_tail(value, old)).
local function emit_value(typ, key, value, old)
  local rev = redis.call('INCR', REV)
  append_value_event(rev, typ, key, value, old)
  return rev
end

-- The literal runs between the stars of a key pattern (one with at least one '*').
local function glob_parts(pat)
  local parts = {}
  for part in string.gmatch(pat .. '*', '([^*]*)%*') do parts[#parts + 1] = part end
  return parts
end

-- Whether `name` matches the key pattern split into `parts` ('*' = any run), in time
-- linear in the name: literal runs found left to right, never backtracking (a Lua pattern
-- of '.*'s takes exponential time on 'a*a*a*...c', stalling Redis).
local function glob_match(name, parts)
  local first, last = parts[1], parts[#parts]
  local n = #name
  if n < #first + #last or string.sub(name, 1, #first) ~= first then return false end
  if #last > 0 and string.sub(name, n - #last + 1) ~= last then return false end
  local pos, stop = #first + 1, n - #last
  for i = 2, #parts - 1 do
    local part = parts[i]
    if #part > 0 then
      local s, e = string.find(name, part, pos, true)
      if not s or e > stop then return false end
      pos = e + 1
    end
  end
  return true
end

-- Quotas ----------------------------------------------------------------------------

-- nil when a write adding `keys` live keys and `bytes` bytes stays within the quotas (a
-- write that frees room always does); else the failure reply, checked before the write
-- changes anything.
local function quota_fails(keys, bytes)
  if keys > 0 and redis.call('ZCARD', PFX .. 'keys') + keys > MAX_KEYS then
    return {'quota_exceeded', 'keys', MAX_KEYS}
  end
  if bytes > 0 and tonumber(redis.call('HGET', QUOTA, 'b') or '0') + bytes > MAX_BYTES then
    return {'quota_exceeded', 'bytes', MAX_BYTES}
  end
  return nil
end

local function quota_add(bytes)
  if bytes ~= 0 then redis.call('HINCRBY', QUOTA, 'b', bytes) end
end

-- Ordered paging over a zset of names (all score 0), for the listing scripts: visits the
-- names after `after` that match (the key pattern `pat`, whose literal start is `prefix`,
-- or exactly `prefix` when `pat` is ''), calling row(name), which returns the
-- reply fields of a live name or nil to skip it. Stops after `limit` rows, or when
-- `budget` names were examined (so a sparse pattern cannot stall Redis). Returns the
-- fields of all rows and the cursor to page on from ('' at the end): the last row when
-- the page is full, else the last name examined, so a page stopped by the budget (even
-- an empty one) lets the caller continue after what was already examined.
local function scan_index(index, after, prefix, pat, limit, budget, row)
  local min = '[' .. prefix
  if after ~= '' and after >= prefix then min = '(' .. after end
  local max = '+'
  if prefix ~= '' then max = '[' .. prefix .. '\255' end
  local fields, count, scanned, last, last_row = {}, 0, 0, '', ''
  local parts = pat ~= '' and glob_parts(pat) or nil
  while true do
    local batch = redis.call('ZRANGEBYLEX', index, min, max, 'LIMIT', 0, 256)
    if #batch == 0 then return fields, '' end
    for i = 1, #batch do
      local name = batch[i]
      scanned = scanned + 1
      if scanned > budget then return fields, last end
      local match
      if parts then match = glob_match(name, parts) else match = (name == prefix) end
      if match then
        local r = row(name)
        if r then
          if count == limit then return fields, last_row end
          for j = 1, #r do fields[#fields + 1] = r[j] end
          count = count + 1
          last_row = name
        end
      end
      last = name
      min = '(' .. name
    end
    if pat == '' then return fields, '' end
  end
end

-- Handlers for due members of P..'ttl', by kind letter; other libraries add theirs.
local EXPIRERS = {}

-- Keys -----------------------------------------------------------------------------

local function kkey(key) return PFX .. 'k:' .. key end
local function hkey(key) return PFX .. 'h:' .. key end

-- A key's entry, or nil; `marked`: with its layout mark h as raw[9] (for a write: see
-- store_entry; a read does without the field).
local function load_entry(key, marked)
  local r
  if marked then
    r = redis.call('HMGET', kkey(key), 'v', 'r', 'cr', 'ver', 'ca', 'ma', 'ea', 'ls', 'h')
  else
    r = redis.call('HMGET', kkey(key), 'v', 'r', 'cr', 'ver', 'ca', 'ma', 'ea', 'ls')
  end
  if not r[1] then return nil end
  -- raw: the stored strings, which history_item reuses instead of formatting numbers.
  return {v = r[1], r = tonumber(r[2]), cr = tonumber(r[3]), ver = tonumber(r[4]),
    ca = tonumber(r[5]), ma = tonumber(r[6]), ea = tonumber(r[7]), ls = r[8] or '', raw = r}
end

local function is_expired(e) return e.ea > 0 and e.ea <= NOW end

-- load_entry(key, true) for a key write (kv_put), with only the numbers a write works
-- with parsed (ver, ea): r, cr, ca and ma stay the stored strings, which store_entry
-- and history_item reuse and a reply carries as they are (tonumber costs about as much
-- as a small command). precondition_fails parses r when it compares it.
local function load_write_entry(key)
  local r = redis.call('HMGET', kkey(key), 'v', 'r', 'cr', 'ver', 'ca', 'ma', 'ea', 'ls', 'h')
  if not r[1] then return nil end
  local ea = r[7]
  if ea == '0' then ea = 0 else ea = tonumber(ea) end  -- (most keys have no deadline)
  return {v = r[1], r = r[2], cr = r[3], ver = tonumber(r[4]), ca = r[5], ma = r[6],
    ea = ea, ls = r[8] or '', raw = r}
end

local function entry_reply(key, e)
  return {key, e.v, e.r, e.cr, e.ver, e.ca, e.ma, e.ea}
end

-- status, then the entry's fields when there is one
local function reply(status, key, e)
  if not e then return {status} end
  return {status, key, e.v, e.r, e.cr, e.ver, e.ca, e.ma, e.ea}
end

-- Every string a script makes costs the server an allocation and a hash (Lua interns
-- them): an entry loaded from its hash reuses the stored strings of the fields no script
-- changes (r cr ver ca ma; ea and v may have been changed, as kv_touch and kv_list do).
local function history_item(e)
  local raw = e.raw
  if raw then
    return raw[2] .. '|' .. raw[3] .. '|' .. raw[4] .. '|' .. raw[5] .. '|' .. raw[6] .. '|'
      .. digits(e.ea) .. '|' .. e.v
  end
  return e.r .. '|' .. e.cr .. '|' .. e.ver .. '|' .. e.ca .. '|' .. e.ma .. '|' .. e.ea
    .. '|' .. e.v
end

-- The value's length in a history item ('r|cr|ver|ca|ma|ea|v'), found without a capture.
local function item_value_bytes(item)
  local _, stop = string.find(item, '^[^|]*|[^|]*|[^|]*|[^|]*|[^|]*|[^|]*|')
  return #item - stop
end

-- The quota bytes of the history items from index `from` to the end.
local function history_bytes(key, from)
  local items = redis.call('LRANGE', hkey(key), from, -1)
  local total = 0
  for i = 1, #items do total = total + item_value_bytes(items[i]) end
  return total
end

-- Whether a history item is of revision r (an item of the current revision heads a list
-- written before older revisions were kept apart: see the layout above).
-- r: the revision as a number, or as the stored string (no formatting needed then).
local function item_is_revision(item, r)
  if item == nil or item == false then return false end
  if type(r) ~= 'string' then r = string.format('%d', r) end
  return string.byte(item, #r + 1) == 124 and string.sub(item, 1, #r) == r  -- 124: '|'
end

-- An entry's revision for item_is_revision: the stored string when it was loaded.
local function rev_of(e)
  return e.raw and e.raw[2] or e.r
end

-- Whether the history list of `e` (an entry) may be of the earlier layout, its head the
-- current revision: unless the entry carries the layout mark h (store_entry), which
-- saves a write the LINDEX that would tell.
local function may_head_current(e)
  return not (e.raw and e.raw[9])
end

-- The key's older revisions' items, newest first (never its current revision r).
local function older_items(key, r)
  local items = redis.call('LRANGE', hkey(key), 0, -1)
  if item_is_revision(items[1], r) then table.remove(items, 1) end
  return items
end

-- The quota bytes that storing a new revision over `old` frees: the older revisions
-- pushed past the history depth (the revision being replaced itself when only one is kept).
local function replaced_bytes(key, old)
  if HISTORY <= 1 then return #old.v end
  local from = HISTORY - 2
  if may_head_current(old)
    and item_is_revision(redis.call('LINDEX', hkey(key), 0), rev_of(old)) then
    from = HISTORY - 1
  end
  return history_bytes(key, from)
end

local function remove_key(key)
  local r = redis.call('HMGET', kkey(key), 'r', 'v')
  local bytes = 0
  if r[1] then
    bytes = #r[2]
    for _, item in ipairs(older_items(key, r[1])) do bytes = bytes + item_value_bytes(item) end
  end
  quota_add(-bytes)
  redis.call('DEL', kkey(key), hkey(key))
  redis.call('ZREM', PFX .. 'keys', key)
  redis.call('ZREM', PFX .. 'ttl', 'k:' .. key)
end

-- The live entry, or nil; a key past its deadline is expired here, with its event.
-- `for_put`: the entry of load_write_entry.
local function live_entry(key, for_put)
  local e
  if for_put then e = load_write_entry(key) else e = load_entry(key, true) end
  if e and is_expired(e) then
    remove_key(key)
    emit_value('kv.expire', key, nil, e.v)
    return nil
  end
  return e
end

EXPIRERS['k'] = function(key)
  local e = load_entry(key)
  if e and is_expired(e) then
    live_entry(key)
    return 1
  end
  if not e then redis.call('ZREM', PFX .. 'ttl', 'k:' .. key) end
  return 0
end

local function set_deadline(member, ea)
  if ea > 0 then
    redis.call('ZADD', PFX .. 'ttl', ea, member)
    local sched = tonumber(redis.call('GET', PFX .. 'sched') or '0')
    if sched == 0 or ea < sched then
      redis.call('SET', PFX .. 'sched', ea)
      if not RESCHEDULE or ea < RESCHEDULE then RESCHEDULE = ea end
    end
  else
    redis.call('ZREM', PFX .. 'ttl', member)
  end
end

-- nil, or the failure reply when storing `value` (old: the live entry or nil) would pass
-- a quota: a new key counts one key; the bytes are the new revision's value less the
-- revisions its history push drops.
local function write_fails(key, old, value)
  if not old then return quota_fails(1, #value) end
  -- What the history push frees is read only when the write would not fit without it.
  if not quota_fails(0, #value) then return nil end
  return quota_fails(0, #value - replaced_bytes(key, old))
end

-- Store a new value at revision rev, whose event the caller appends; the caller
-- checked write_fails first (old: the live entry
-- or nil; ea: deadline ms or 0; lease: the lease id the key is on, or '' / nil for none:
-- a key written without its lease leaves it, and the lease's key set forgets it lazily).
local function store_entry(key, old, value, ea, rev, lease)
  lease = lease or ''
  local e
  if old then
    e = {v = value, r = rev, cr = old.cr, ver = old.ver + 1, ca = old.ca, ma = NOW, ea = ea,
      ls = lease}
  else
    e = {v = value, r = rev, cr = rev, ver = 1, ca = NOW, ma = NOW, ea = ea, ls = lease}
    redis.call('ZADD', PFX .. 'keys', 0, key)
  end
  -- The fields as digits (a Lua number passed to redis.call is formatted as a float,
  -- several times dearer). Over an entry loaded from its hash (raw), only the fields
  -- that change: cr and ca never do, and ea only with a new deadline.
  local fields
  if old and old.raw then
    fields = {'HSET', kkey(key), 'v', e.v, 'r', rev_digits(rev),
      'ver', string.format('%d', e.ver), 'ma', now_digits()}
    if ea ~= old.ea then
      fields[11] = 'ea'
      fields[12] = digits(ea)
    end
  else
    fields = {'HSET', kkey(key), 'v', e.v, 'r', rev_digits(rev),
      'cr', string.format('%d', e.cr), 'ver', string.format('%d', e.ver),
      'ca', string.format('%d', e.ca), 'ma', now_digits(), 'ea', digits(ea)}
  end
  -- The layout mark (see P..'k:'): this write leaves the history list of the layout.
  local unmarked = not old or may_head_current(old)
  if unmarked then
    fields[#fields + 1] = 'h'
    fields[#fields + 1] = '1'
  end
  if lease ~= '' or (old and old.ls ~= '') then
    fields[#fields + 1] = 'ls'
    fields[#fields + 1] = lease
    redis.call(unpack(fields))
    if lease ~= '' and not (old and old.ls == lease) then
      redis.call('SADD', PFX .. 'leasek:' .. lease, key)
    end
  else
    redis.call(unpack(fields))
  end
  -- The replaced revision joins the older ones; a key with one revision has no list.
  local freed = 0
  if old and HISTORY <= 1 then
    freed = #old.v
    redis.call('DEL', hkey(key))
  elseif old then
    local hk, kept = hkey(key), nil
    if unmarked and item_is_revision(redis.call('LINDEX', hk, 0), rev_of(old)) then
      kept = redis.call('LLEN', hk)  -- the earlier layout: it is there already
    else
      kept = redis.call('LPUSH', hk, history_item(old))
    end
    if kept == HISTORY then  -- one past the depth: drop it (one command, not two)
      freed = item_value_bytes(redis.call('RPOP', hk))
    elseif kept > HISTORY then  -- the depth was lowered since
      freed = history_bytes(key, HISTORY - 1)
      redis.call('LTRIM', hk, 0, HISTORY - 2)
    end
  end
  quota_add(#value - freed)
  -- Each redis.call costs about as much as the work it does: skip the ones with no effect.
  if ea > 0 or (old and old.ea > 0) then set_deadline('k:' .. key, ea) end
  return e
end

-- Store a new value with its own revision and kv.put event.
local function write_entry(key, old, value, ea, lease)
  local rev = emit_value('kv.put', key, value, old and old.v)
  return store_entry(key, old, value, ea, rev, lease)
end

-- A write's precondition: cond '' (none), 'match' (revision), 'exists' (If-Match: *),
-- 'absent' (If-None-Match: *). Returns nil when it holds, else the failure status.
local function precondition_fails(cond, expected, e)
  if cond == 'absent' and e then return 'already_exists' end
  if (cond == 'match' or cond == 'exists') and not e then return 'revision_mismatch' end
  if cond == 'match' and tonumber(e.r) ~= tonumber(expected) then return 'revision_mismatch' end
  return nil
end

-- Locks and fencing -----------------------------------------------------------------

local function lock_key(scope, name) return PFX .. 'lock:' .. scope .. '|' .. name end

-- True when no fence is asked for (name ''), or when token holds the lock right now.
local function fence_holds(scope, name, token)
  if name == '' then return true end
  local r = redis.call('HMGET', lock_key(scope, name), 'token', 'expires_at')
  if not r[1] or r[1] ~= token then return false end
  local ea = tonumber(r[2] or '0')
  return ea == 0 or ea > NOW
end
