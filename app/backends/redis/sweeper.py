"""The Redis deadline sweeper, driven by one global index of namespaces' next deadlines.

Each namespace keeps its own deadlines (zset ``cb:{ns}:ttl``); a sweep used to visit
every namespace that ever had one, every 0.25 s, on every replica. Now one sorted set,
``cb:deadlines``, scores each namespace with the time it must next be visited, and a
sweep reads only the due ones: its cost is proportional to what is due, not to the
number of namespaces.

Keeping the index right without a cross-slot script. On Redis Cluster a script may only
touch keys of one hash slot (``cb:{ns}:...``), so the index, a global key, is updated in
a separate call, and the two can come apart (a crash, a concurrent sweep). The rules:

1. The namespace remembers (``cb:{ns}:sched``, in its own slot) the time the index was
   last told, or nothing. A script that sets a deadline earlier than that (or when there
   is none) records it and flags its reply (``__reschedule``, see ``_load_scripts``);
   the caller then lowers the index entry (``SCHEDULE``) right after the script. A
   deadline later than ``sched`` needs no call: the namespace is visited early, and the
   visit re-reads its zset (below). So the index is only ever early, never late, except
   in the window of rule 4.
2. A sweep takes the due entries with their scores, runs the namespace's ``expire_due``
   script (which expires what is due, sets ``sched`` to the namespace's next deadline and
   returns it), then ``SETTLE``s the entry to that deadline (or removes it) only if the
   entry still has the score the sweep read. ``SCHEDULE`` always changes a present
   entry's score (lowering it, or by 1 ms), so a writer that told the index something
   between the sweep's read and its settle wins: its (earlier) score stays.
3. A sweeper that dies between ``expire_due`` and ``SETTLE`` leaves the entry due: the
   next sweep, on any replica, visits the namespace again. Visits are idempotent.
4. A writer that dies between its script and its ``SCHEDULE`` leaves ``sched`` ahead of
   the index. The repair pass heals it: each sweep also re-reads a few namespaces from
   the set of namespaces that ever had deadlines (``cb:namespaces``, SSCAN with a
   cursor, a constant number per sweep) and re-schedules each from its own zset. Until
   then reads still treat passed deadlines as absence; only the expiry *events* wait.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from app.backends.redis.nodes import Command

if TYPE_CHECKING:
    from app.backends.redis.nodes import RedisNodes

#: The global index: member = namespace, score = when to visit it next (epoch ms).
DEADLINES_KEY = "cb:deadlines"
#: Namespaces visited per sweep at most (the rest stay due for the next sweep).
SWEEP_NAMESPACES = 200
#: Namespaces re-read per sweep by the repair pass (rule 4).
REPAIR_PER_SWEEP = 4

#: KEYS[1] index, ARGV[1] ns, ARGV[2] ms. Lowers the entry to ARGV[2]; a present entry
#: already at or below it still changes (1 ms earlier), so a concurrent SETTLE yields.
SCHEDULE = """
local cur = redis.call('ZSCORE', KEYS[1], ARGV[1])
local t = tonumber(ARGV[2])
if cur then
  cur = tonumber(cur)
  if cur <= t then t = cur - 1 end
end
redis.call('ZADD', KEYS[1], t, ARGV[1])
return 1
"""

#: KEYS[1] index, ARGV[1] ns, ARGV[2] the score the sweep read, ARGV[3] the next
#: deadline (0: none). Applies only while the entry still has the score read.
SETTLE = """
local cur = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not cur or tonumber(cur) ~= tonumber(ARGV[2]) then return 0 end
if tonumber(ARGV[3]) > 0 then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
else
  redis.call('ZREM', KEYS[1], ARGV[1])
end
return 1
"""


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _sha(source: str) -> str:
    return hashlib.sha1(source.encode()).hexdigest()  # Redis names a script by its SHA-1


class DeadlineIndex:
    """The index calls of one backend; ``visits`` counts namespaces a sweep visited.

    ``cb:deadlines`` is one key: on a cluster every call goes to the master owning its
    slot (through ``RedisNodes``, which follows MOVED/ASK and reloads a lost script)."""

    def __init__(self, nodes: RedisNodes) -> None:
        self.nodes = nodes
        self.visits = 0
        self._repair_cursor = 0

    async def _script(self, source: str, *args: Any) -> Any:
        sha = _sha(source)
        return await self.nodes.call(Command(
            DEADLINES_KEY, lambda c: c.evalsha(sha, 1, DEADLINES_KEY, *args), script=source
        ))

    async def schedule(self, ns: str, at_ms: int) -> None:
        await self._script(SCHEDULE, ns, at_ms)

    async def due(self, now_ms: int) -> list[tuple[str, int]]:
        rows: list[Any] = await self.nodes.call(Command(
            DEADLINES_KEY,
            lambda c: c.zrangebyscore(
                DEADLINES_KEY, "-inf", now_ms, start=0, num=SWEEP_NAMESPACES, withscores=True
            ),
            write=False,
        ))
        return [(_s(ns), int(score)) for ns, score in rows]

    async def settle(self, ns: str, score: int, next_ms: int) -> None:
        await self._script(SETTLE, ns, score, next_ms)

    async def repair_batch(self, registry: str) -> list[str]:
        """The next few namespaces of ``registry`` (rule 4), walking it with a cursor."""
        cursor = self._repair_cursor
        reply: Any = await self.nodes.call(Command(
            registry, lambda c: c.sscan(registry, cursor, count=REPAIR_PER_SWEEP), write=False
        ))
        self._repair_cursor = int(reply[0])
        return [_s(n) for n in reply[1]][:REPAIR_PER_SWEEP * 4]
