"""What every part of the Redis backend runs on: the nodes, the loaded Lua scripts and
the one way state changes, ``RedisStore.run`` (a script per atomic step; light scripts
batched into bounded pipelines, heavy ones sent alone); the deadline index; and the one
boundary where Redis failures become 503 backend_unavailable, ``mapped_errors``.

Every multi-step change is one Lua script (``lua/``), prefixed by ``common.lua`` and the
``lib_*.lua`` libraries, so the mutation, the revision, the history and the stream append
cannot come apart. All keys of a namespace carry ``{ns}`` as a hash tag and so live on
one Redis Cluster slot.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from app.backends.parts.log import raise_if_cancelling
from app.backends.redis.library import load_library
from app.backends.redis.nodes import Command, RedisNodes
from app.backends.redis.runner import ScriptBatcher, ScriptPacker
from app.backends.redis.sweeper import DEADLINES_KEY, DeadlineIndex
from app.domain.bounds import Bounds, quota_exceeded
from app.domain.fence import Fence
from app.errors import backend_unavailable
from app.syntax import Pattern

#: Set of namespaces that ever had deadlines: walked slowly by the sweeper's repair pass
#: (sweeper.py) and by the artifact collectors.
NAMESPACES_KEY = "cb:namespaces"
#: Scripts that change nothing: they need no WAIT for replicas.
READ_ONLY_SCRIPTS = frozenset({
    "kv_read", "kv_list", "read_events", "lock_read", "lock_list", "session_get",
    "session_list", "artifacts_get", "artifacts_list", "var_read", "fence_check",
    "txn_read", "lease_get", "lease_list",
})
#: Scripts whose work grows with the data (listings, snapshots, imports, sweeps, log
#: reads, deletes of whole sessions): each is sent alone, never in a pipeline, so a slow
#: one cannot hold up (or time out) the answers of the light calls made beside it.
HEAVY_SCRIPTS = frozenset({
    "kv_list", "artifacts_list", "session_list", "lock_list", "session_snapshot",
    "session_import", "session_delete", "expire_due", "read_events", "artifacts_gc",
    "var_read", "kv_delete_pattern", "lease_list", "lease_revoke", "txn", "txn_read",
})


def lua_pattern(pattern: Pattern) -> str:
    """The pattern argument of the listing scripts: '' when the pattern names one key
    exactly, else its text, matched by glob_match in common.lua (linear time)."""
    return "" if pattern.exact else pattern.text


def text(value: Any) -> str:
    """A reply field as text."""
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisStore:
    """The nodes, the scripts and the deadline index the parts share."""

    def __init__(self, nodes: RedisNodes, *, key_history: int, bounds: Bounds, url: str) -> None:
        self.nodes = nodes
        self.key_history = key_history
        self.bounds = bounds
        # The scripts' bounds, and whether a namespace's slot can move (the probe of
        # common.lua's `begin`, a command per call, is made on Redis Cluster only).
        self.bounds_arg = f"{bounds.script_arg()}:{int(nodes.cluster)}"
        self.url = url
        #: The scripts, one Redis Functions library (library.py) loaded on every master.
        self.library = load_library()
        self.batcher = ScriptBatcher(nodes)
        self.packer = ScriptPacker(self.bounds_arg, key_history, nodes.client)
        self.deadlines = DeadlineIndex(nodes)
        self.registered_ns: set[str] = set()

    async def start(self) -> None:
        """Reach the nodes and load the scripts' library on each master, so a broken
        script (or a server without Redis Functions) fails now."""
        async with self.mapped_errors():
            await self.nodes.start()
            await self.nodes.ready()
            for client in self.nodes.masters():
                await load_on(client, self.library.source, self.url)
            # Namespaces registered before the deadline index existed: visit each once.
            if not await self.nodes.call(
                Command(DEADLINES_KEY, lambda c: c.exists(DEADLINES_KEY), write=False)
            ):
                legacy = [text(n) for n in await self.nodes.call(
                    Command(NAMESPACES_KEY, lambda c: c.smembers(NAMESPACES_KEY), write=False)
                )]
                if legacy:
                    await self.nodes.call(Command(
                        DEADLINES_KEY,
                        lambda c: c.zadd(DEADLINES_KEY, dict.fromkeys(legacy, 0), nx=True),
                    ))

    async def close(self) -> None:
        await self.batcher.close()
        await self.nodes.close()

    def mapped_errors(self) -> AbstractAsyncContextManager[None]:
        """Map this backend's Redis failures to BackendUnavailable (see ``mapped_errors``)."""
        return mapped_errors(self.url)

    async def call(
        self, key: str, queue: Callable[[Any], Any], *, write: bool, blocking: bool = False
    ) -> Any:
        """One command on the node serving ``key``, with Redis failures mapped to 503;
        ``queue`` is redis-py's method, e.g. ``lambda c: c.get(key)``."""
        async with self.mapped_errors():
            return await self.nodes.call(Command(key, queue, write=write, blocking=blocking))

    async def run(self, script: str, ns: str, *args: Any) -> Any:
        """Run one Lua script against namespace ``ns``; the single way state changes."""
        key = f"cb:{{{ns}}}:rev"
        function = self.library.functions[script]
        # With WAIT, read_events writes a marker, so that WAIT covers what it read.
        write = script not in READ_ONLY_SCRIPTS or (
            script == "read_events" and self.nodes.wait_replicas > 0
        )
        command = Command(
            key,
            # (redis-py's call: only when the command cannot go out packed)
            lambda c: c.fcall(function, 1, key, ns, self.bounds_arg, self.key_history, *args),
            write=write, library=self.library.source,
            packed=self.packer.fcall(function, script, ns, key, args),
        )
        try:  # (mapped_errors, inline: this is every script call's path)
            if script in HEAVY_SCRIPTS:
                # Alone, never in a pipeline: a slow one holds up no light call.
                reply = await self.nodes.call(command)
            else:
                reply = await self.batcher.submit(command)
        except (RedisError, OSError, TimeoutError) as exc:
            raise_if_cancelling()  # (mapped_errors' rule, inline)
            raise backend_unavailable("Redis", exc, self.url) from exc
        if isinstance(reply, list) and reply and reply[0] == b"__reschedule":
            # Rule 1 of sweeper.py: tell the index after the script, in its own call.
            async with self.mapped_errors():
                await self.deadlines.schedule(ns, int(reply[1]))
            reply = reply[2] if len(reply) > 2 else None
        if isinstance(reply, list) and reply and reply[0] == b"quota_exceeded":
            raise quota_exceeded(ns, text(reply[1]), int(reply[2]))
        return reply

    async def check_fence(self, ns: str, fence: Fence | None) -> None:
        """Raise StaleFence unless ``fence`` (if any) holds now. A write that failed its
        own checks in Python asks this first: a stale fence is reported before anything
        else, as in a backend whose whole write is one atomic step."""
        if fence is not None:
            reply = await self.run("fence_check", ns, *Fence.script_args(fence))
            if text(reply[0]) == "stale_fence":
                raise fence.stale()

    async def register_deadlines(self, ns: str) -> None:
        """Make the sweepers visit ``ns``: needed once per namespace that gets a deadline."""
        if ns in self.registered_ns:
            return
        await self.call(NAMESPACES_KEY, lambda c: c.sadd(NAMESPACES_KEY, ns), write=True)
        self.registered_ns.add(ns)


async def load_on(client: Redis, library: str, url: str) -> None:
    """Load the scripts' library on one server (again: a no-op); a server without Redis
    Functions (older than 7.0) is refused with a clear error."""
    try:
        await client.function_load(library, replace=True)
    except ResponseError as exc:
        if "unknown command" in str(exc).lower():
            raise backend_unavailable("Redis", RedisError(
                "this server has no Redis Functions (FUNCTION LOAD): Corkboard needs "
                "Redis 7.0 or later"), url) from exc
        raise


@asynccontextmanager
async def mapped_errors(url: str, client: Any = None) -> AsyncIterator[None]:
    """The one boundary where Redis failures become 503 backend_unavailable; a failure
    raised in a task being cancelled is the cancel, which redis-py can turn into an
    error of its own (``raise_if_cancelling``).

    (A broken connection's pool is cleaned where it broke: ``RedisNodes._send``. Calls
    are never retried here, since a timed-out script may have run.)
    """
    try:
        yield
    except (RedisError, OSError, TimeoutError) as exc:
        raise_if_cancelling()
        raise backend_unavailable("Redis", exc, url) from exc

