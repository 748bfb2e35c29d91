"""The Redis backend: shared, persistent state for any number of workers and replicas.

Every multi-step change is one Lua script (``lua/``), prefixed by ``common.lua``, so the
mutation, the revision, the history and the stream append cannot come apart. All keys of
a namespace carry ``{ns}`` as a hash tag and so live on one Redis Cluster slot. Redis
errors become ``BackendUnavailable`` (503) at one boundary, ``_mapped_errors``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from importlib import resources
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from app.backends import paging
from app.backends.base import Backend, BackendInfo
from app.backends.redis_artifacts import RedisArtifactsMixin
from app.backends.redis_leases import RedisLeases
from app.backends.redis_locks import RedisLocks
from app.backends.redis_nodes import Command, RedisNodes, nodes_from_url
from app.backends.redis_sessions import RedisSessions
from app.backends.redis_sweeper import DEADLINES_KEY, DeadlineIndex
from app.backends.redis_txn import RedisTxn
from app.domain.bounds import Bounds, quota_exceeded
from app.domain.conditions import KEY, NO_CONDITION, Condition
from app.domain.events import ChangeEvent, EventBatch
from app.domain.fence import Fence
from app.domain.keys import KeyEntry, KeyPage, PutResult, ValueUpdate, apply_update
from app.domain.leases import lease_not_found
from app.domain.numbers import add_exact, number_to_increment
from app.errors import (
    BackendUnavailable,
    CorkboardError,
    NotFound,
    Unprocessable,
)
from app.syntax import Pattern

logger = logging.getLogger("corkboard.redis")

#: Set of namespaces that ever had deadlines: walked slowly by the sweeper's repair pass
#: (redis_sweeper.py) and by the artifact collectors.
NAMESPACES_KEY = "cb:namespaces"
#: Optimistic retries of a server-side update (PATCH) racing other writers of one key.
UPDATE_ATTEMPTS = 200
#: Scripts that change nothing: they need no WAIT for replicas.
READ_ONLY_SCRIPTS = frozenset({
    "kv_read", "kv_list", "read_events", "lock_read", "lock_list", "session_get",
    "session_list", "artifacts_get", "artifacts_list", "var_read", "fence_check",
    "txn_read", "lease_get", "lease_list",
})
SWEEP_BATCH = 500
#: Scripts whose work grows with the data (listings, snapshots, imports, sweeps, log
#: reads, deletes of whole sessions): each is sent alone, never in a pipeline, so a slow
#: one cannot hold up (or time out) the answers of the light calls made beside it.
HEAVY_SCRIPTS = frozenset({
    "kv_list", "artifacts_list", "session_list", "lock_list", "session_snapshot",
    "session_import", "session_delete", "expire_due", "read_events", "artifacts_gc",
    "var_read", "kv_delete_pattern", "lease_list", "lease_revoke", "txn", "txn_read",
})
#: Light script calls sent in one pipeline at most.
MAX_BATCH = 64
_LUA_MAGIC = set("^$()%.[]*+-?")
_FIRST_CHAR_KIND = {'"': "a string", "t": "a boolean", "f": "a boolean", "n": "null",
                    "[": "an array", "{": "an object"}


def _load_scripts() -> dict[str, str]:
    folder = resources.files("app.backends") / "lua"
    prelude = (folder / "common.lua").read_text()
    libraries = sorted(
        p.name for p in folder.iterdir() if p.name.startswith("lib_") and p.name.endswith(".lua")
    )
    prelude += "".join("\n" + (folder / name).read_text() for name in libraries)
    # Each script runs as a function so that a deadline the global index may not know of
    # (RESCHEDULE, set by set_deadline) can be added to whatever it replies.
    tail = (
        "\nend\nlocal __reply = __script()\nif RESCHEDULE then\n"
        "  return {'__reschedule', string.format('%d', RESCHEDULE), __reply}\nend\n"
        "return __reply\n"
    )
    return {
        p.name[:-4]: prelude + "\nlocal function __script()\n" + p.read_text() + tail
        for p in folder.iterdir()
        if p.name.endswith(".lua") and p.name != "common.lua" and not p.name.startswith("lib_")
    }


def lua_pattern(pattern: Pattern) -> str:
    """The pattern argument of the listing scripts: '' when the pattern names one key
    exactly, else its text, matched by glob_match in common.lua (linear time)."""
    return "" if pattern.exact else pattern.text


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _entry(fields: Sequence[Any], offset: int = 1) -> KeyEntry:
    key, v, r, cr, ver, ca, ma, ea = fields[offset : offset + 8]
    return KeyEntry(
        _s(key), bytes(v), int(r), int(cr), int(ver), int(ca), int(ma), int(ea) or None
    )


def _history_entry(key: str, item: bytes) -> KeyEntry:
    r, cr, ver, ca, ma, ea, v = item.split(b"|", 6)
    return KeyEntry(key, v, int(r), int(cr), int(ver), int(ca), int(ma), int(ea) or None)


def _raise_failure(
    status: str, reply: Sequence[Any], key: str, fence: Fence | None,
    condition: Condition | None = None, lease: str | None = None,
) -> None:
    """Turn a script's failure status into the domain error, the very error memory
    raises (a refused ``condition`` is decided again, by the one evaluator)."""
    if status == "lease_not_found":
        raise lease_not_found(lease or "")
    if status == "stale_fence":
        assert fence is not None
        raise fence.stale()
    if status in ("already_exists", "revision_mismatch") and condition is not None:
        condition.check(_entry(reply) if len(reply) > 1 else None, KEY)  # raises its 412
    raise RuntimeError(f"unexpected script status {status!r} for key {key!r}")


class _ScriptBatcher:
    """Sends the script calls made in one turn of the event loop together: one pipeline
    per node (see ``RedisNodes.execute``).

    Under concurrency many requests each need one script run; batching them saves a
    network round trip, a socket write and a timeout timer per call, which is most of
    redis-py's per-call cost. A lone call is sent as it is. Results return in order; a
    failed call fails only its own caller, and a whole-batch failure fails each of them.
    Only light scripts are batched (``HEAVY_SCRIPTS`` go alone), at most ``MAX_BATCH``
    per pipeline, so one call's answer never waits on, or times out with, a slow script.
    """

    def __init__(self, nodes: RedisNodes) -> None:
        self.nodes = nodes
        self._pending: list[tuple[Command, asyncio.Future[Any]]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(self, command: Command) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)
        self._pending.append((command, future))
        return future

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        loop = asyncio.get_running_loop()
        for start in range(0, len(pending), MAX_BATCH):
            task = loop.create_task(self._send(pending[start : start + MAX_BATCH]))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[tuple[Command, asyncio.Future[Any]]]) -> None:
        try:
            results = await self.nodes.execute([command for command, _ in batch])
        except BaseException as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()


class RedisBackend(
    RedisTxn, RedisLeases, RedisSessions, RedisLocks, RedisArtifactsMixin, Backend
):
    """State in Redis, shared by every worker and replica that points at it."""

    def __init__(
        self,
        client: Redis | RedisNodes,
        *,
        blocking_client: Redis | None = None,
        key_history: int = 10,
        event_retention: int = 100_000,
        bounds: Bounds | None = None,
        url: str = "",
    ) -> None:
        self.nodes = (
            client if isinstance(client, RedisNodes) else RedisNodes(client, blocking_client)
        )
        cluster = self.nodes.cluster
        self.info = BackendInfo(
            name="redis-cluster" if cluster else "redis", persistence=True, distribution=True
        )
        #: The client of a single server (on a cluster: of the first seed node).
        self.client = self.nodes.client
        self.key_history = key_history
        self.bounds = bounds or Bounds(event_retention=event_retention)
        self.event_retention = self.bounds.event_retention
        self._bounds_arg = self.bounds.script_arg()
        self.url = url
        self._scripts: dict[str, AsyncScript] = {}
        self._sources: dict[str, str] = {}
        self._batcher = _ScriptBatcher(self.nodes)
        self.deadlines = DeadlineIndex(self.nodes)
        self._registered_ns: set[str] = set()

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        timeout: float = 2.0,
        max_connections: int = 64,
        key_history: int = 10,
        event_retention: int = 100_000,
        bounds: Bounds | None = None,
        wait_replicas: int = 0,
    ) -> RedisBackend:
        """Build the backend with its own connection pools; closing it closes them."""
        nodes = nodes_from_url(
            url, timeout=timeout, max_connections=max_connections, wait_replicas=wait_replicas
        )
        return cls(
            nodes, key_history=key_history, event_retention=event_retention, bounds=bounds,
            url=url,
        )

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        self._sources = _load_scripts()
        for name, source in self._sources.items():
            self._scripts[name] = self.client.register_script(source)
        async with self.mapped_errors():
            await self.nodes.start()
            await self.nodes.ready()
            # Load every script once now, so a broken script fails at start, not later.
            for client in self.nodes.masters():
                for script in self._scripts.values():
                    await client.script_load(script.script)
            # Namespaces registered before the deadline index existed: visit each once.
            if not await self.nodes.call(
                Command(DEADLINES_KEY, lambda c: c.exists(DEADLINES_KEY), write=False)
            ):
                legacy = [_s(n) for n in await self.nodes.call(
                    Command(NAMESPACES_KEY, lambda c: c.smembers(NAMESPACES_KEY), write=False)
                )]
                if legacy:
                    await self.nodes.call(Command(
                        DEADLINES_KEY,
                        lambda c: c.zadd(DEADLINES_KEY, dict.fromkeys(legacy, 0), nx=True),
                    ))

    async def close(self) -> None:
        await self._batcher.close()
        wakeups = getattr(self, "_wakeups", None)
        if wakeups is not None:
            await wakeups.close()
        await self.nodes.close()

    def mapped_errors(self) -> AbstractAsyncContextManager[None]:
        """Map this backend's Redis failures to BackendUnavailable (see _mapped_errors)."""
        return _mapped_errors(self.url)

    async def ping(self) -> None:
        async with self.mapped_errors():
            await self.nodes.ready()

    def client_for(self, key: str) -> Redis:
        """The client of the node serving ``key`` (for tests and tools)."""
        return self.nodes.client_for(self.nodes.node_for(key))

    async def call(
        self, key: str, queue: Callable[[Any], Any], *, write: bool, blocking: bool = False
    ) -> Any:
        """One command on the node serving ``key``, with Redis failures mapped to 503;
        ``queue`` is redis-py's method, e.g. ``lambda c: c.get(key)``."""
        async with self.mapped_errors():
            return await self.nodes.call(Command(key, queue, write=write, blocking=blocking))

    # -- internals -------------------------------------------------------------------

    async def run(self, script: str, ns: str, *args: Any, client: Redis | None = None) -> Any:
        """Run one Lua script against namespace ``ns``; the single way state changes."""
        argv = [f"cb:{{{ns}}}:rev", ns, self._bounds_arg, self.key_history, *args]
        code = self._scripts[script]
        # With WAIT, read_events writes a marker, so that WAIT covers what it read.
        write = script not in READ_ONLY_SCRIPTS or (
            script == "read_events" and self.nodes.wait_replicas > 0
        )
        command = Command(
            argv[0], lambda c: c.evalsha(code.sha, 1, *argv),
            write=write, script=self._sources[script],
        )
        async with self.mapped_errors():
            if client is not None:
                reply = await code(keys=argv[:1], args=argv[1:], client=client)
            elif script in HEAVY_SCRIPTS:
                # Alone, never in a pipeline: a slow one holds up no light call.
                reply = await self.nodes.call(command)
            else:
                reply = await self._batcher.submit(command)
        if isinstance(reply, list) and reply and reply[0] == b"__reschedule":
            # Rule 1 of redis_sweeper.py: tell the index after the script, in its own call.
            async with self.mapped_errors():
                await self.deadlines.schedule(ns, int(reply[1]))
            reply = reply[2] if len(reply) > 2 else None
        if isinstance(reply, list) and reply and reply[0] == b"quota_exceeded":
            raise quota_exceeded(ns, _s(reply[1]), int(reply[2]))
        return reply

    async def check_fence(self, ns: str, fence: Fence | None) -> None:
        """Raise StaleFence unless ``fence`` (if any) holds now. A write that failed its
        own checks in Python asks this first: a stale fence is reported before anything
        else, as in a backend whose whole write is one atomic step."""
        if fence is not None:
            reply = await self.run("fence_check", ns, *Fence.script_args(fence))
            if _s(reply[0]) == "stale_fence":
                raise fence.stale()

    async def register_deadlines(self, ns: str) -> None:
        """Make the sweepers visit ``ns``: needed once per namespace that gets a deadline."""
        if ns in self._registered_ns:
            return
        await self.call(NAMESPACES_KEY, lambda c: c.sadd(NAMESPACES_KEY, ns), write=True)
        self._registered_ns.add(ns)

    # -- keys ------------------------------------------------------------------------

    async def kv_get(self, ns: str, key: str, revision: int | None = None) -> KeyEntry | None:
        reply = await self.run("kv_read", ns, key, "1" if revision is not None else "0")
        if reply[0] == b"absent":
            return None
        if revision is None:
            return _entry(reply)
        for item in reply[9:]:
            entry = _history_entry(key, item)
            if entry.revision <= revision:
                return entry
        return None

    async def kv_put(
        self,
        ns: str,
        key: str,
        value: bytes,
        *,
        ttl_ms: int = 0,
        condition: Condition = NO_CONDITION,
        fence: Fence | None = None,
        lease: str | None = None,
    ) -> PutResult:
        if ttl_ms > 0:
            await self.register_deadlines(ns)
        reply = await self.run(
            "kv_put", ns, key, value, ttl_ms, *condition.script_args(),
            *Fence.script_args(fence), lease or "",
        )
        status = _s(reply[0])
        if status not in ("created", "replaced"):
            _raise_failure(status, reply, key, fence, condition, lease)
        return PutResult(_entry(reply), status == "created")

    async def kv_update(
        self,
        ns: str,
        key: str,
        update: ValueUpdate,
        *,
        initial: bytes | None = None,
        ttl_ms: int | None = None,
        condition: Condition = NO_CONDITION,
        fence: Fence | None = None,
        lease: str | None = None,
    ) -> PutResult:
        # Compare-and-swap: read, transform here (JSON Patch is no job for Lua), write only
        # if the key is still at the revision read; retry when another writer came between.
        if ttl_ms:
            await self.register_deadlines(ns)
        for _ in range(UPDATE_ATTEMPTS):
            current = await self.kv_get(ns, key)
            try:
                condition.check(current, KEY)
                if current is None and initial is None:
                    raise NotFound(f"Key {key!r} does not exist and no initial value was given.")
                base = current.value if current is not None else initial
                assert base is not None
                new_value = apply_update(update, base, current)
            except CorkboardError:
                await self.check_fence(ns, fence)  # a stale fence is the first answer
                raise
            cas = (
                Condition(match_revision=current.revision)
                if current is not None
                else Condition(must_not_exist=True)
            )
            reply = await self.run(
                "kv_put", ns, key, new_value, -1 if ttl_ms is None else ttl_ms,
                *cas.script_args(), *Fence.script_args(fence), lease or "",
            )
            status = _s(reply[0])
            if status in ("created", "replaced"):
                return PutResult(_entry(reply), status == "created")
            if status in ("stale_fence", "lease_not_found"):
                _raise_failure(status, reply, key, fence, lease=lease)
            await asyncio.sleep(0)
        raise BackendUnavailable(
            f"Key {key!r} changed under {UPDATE_ATTEMPTS} consecutive update attempts; retry."
        )

    async def kv_increment(
        self,
        ns: str,
        key: str,
        by: int | float,
        *,
        initial: int | float = 0,
        ttl_ms: int = 0,
        fence: Fence | None = None,
    ) -> PutResult:
        if ttl_ms > 0:
            await self.register_deadlines(ns)
        # Integer text as Python writes it (orjson refuses integers beyond 64 bits).
        by_text = str(by) if isinstance(by, int) else orjson.dumps(by)
        initial_text = str(initial) if isinstance(initial, int) else orjson.dumps(initial)
        reply = await self.run(
            "kv_increment", ns, key, by_text, "1" if isinstance(by, int) else "0",
            initial_text, ttl_ms, *Fence.script_args(fence),
        )
        status = _s(reply[0])
        if status == "ok":
            return PutResult(_entry(reply), int(reply[3]) == int(reply[4]))
        if status == "not_a_number":
            kind = _FIRST_CHAR_KIND.get(_s(reply[1]), "a non-number")
            raise Unprocessable(
                f"Key {key!r} holds {kind}, not a number; it cannot be incremented."
            )
        if status == "inexact":
            add_exact(int(reply[1]), by)  # raises the shared refusal
            raise AssertionError("an exact integer sum was refused by the script")
        if status == "float":
            return await self._increment_in_python(ns, key, by, initial, ttl_ms, fence)
        _raise_failure(status, reply, key, fence)
        raise AssertionError("unreachable")

    async def _increment_in_python(
        self, ns: str, key: str, by: int | float, initial: int | float, ttl_ms: int,
        fence: Fence | None,
    ) -> PutResult:
        """A sum involving a double, computed by the shared rule (``add_exact``) and
        written with a compare-and-swap on the revision it was computed from, so its JSON
        text is orjson's, as on every backend."""
        for _ in range(UPDATE_ATTEMPTS):
            current = await self.kv_get(ns, key)
            try:
                start = number_to_increment(
                    key, current.value if current is not None else initial
                )
                value = orjson.dumps(add_exact(start, by))
            except CorkboardError:
                await self.check_fence(ns, fence)
                raise
            cas = (
                Condition(match_revision=current.revision)
                if current is not None
                else Condition(must_not_exist=True)
            )
            reply = await self.run(
                "kv_put", ns, key, value, -1 if current is not None else ttl_ms,
                *cas.script_args(), *Fence.script_args(fence),
            )
            status = _s(reply[0])
            if status in ("created", "replaced"):
                return PutResult(_entry(reply), status == "created")
            if status == "stale_fence":
                _raise_failure(status, reply, key, fence)
            await asyncio.sleep(0)
        raise BackendUnavailable(
            f"Key {key!r} changed under {UPDATE_ATTEMPTS} consecutive increment attempts; retry."
        )

    async def kv_touch(
        self, ns: str, key: str, ttl_ms: int, *, fence: Fence | None = None
    ) -> KeyEntry:
        if ttl_ms > 0:
            await self.register_deadlines(ns)
        reply = await self.run("kv_touch", ns, key, ttl_ms, *Fence.script_args(fence))
        status = _s(reply[0])
        if status == "absent":
            raise NotFound(f"Key {key!r} does not exist.")
        if status != "ok":
            _raise_failure(status, reply, key, fence)
        return _entry(reply)

    async def kv_delete(
        self,
        ns: str,
        key: str,
        *,
        condition: Condition = NO_CONDITION,
        fence: Fence | None = None,
    ) -> KeyEntry | None:
        reply = await self.run(
            "kv_delete", ns, key, *condition.script_args(), *Fence.script_args(fence)
        )
        status = _s(reply[0])
        if status == "absent":
            return None
        if status != "deleted":
            _raise_failure(status, reply, key, fence, condition)
        return _entry(reply)

    async def kv_history(self, ns: str, key: str) -> list[KeyEntry]:
        reply = await self.run("kv_read", ns, key, "1")
        if reply[0] == b"absent":
            return []
        return [_history_entry(key, item) for item in reply[9:]]

    async def kv_list(
        self, ns: str, pattern: Pattern, *, limit: int, after: str | None
    ) -> KeyPage:
        reply = await self.run(
            "kv_list", ns, after or "", pattern.prefix, lua_pattern(pattern), limit,
            paging.LIST_SCAN_BUDGET, "1",
        )
        items = [_entry(reply, i) for i in range(2, len(reply), 8)]
        return KeyPage(items, _s(reply[1]) or None, int(reply[0]))

    # -- change log ------------------------------------------------------------------

    async def current_revision(self, ns: str) -> int:
        key = f"cb:{{{ns}}}:rev"
        value = await self.call(key, lambda c: c.get(key), write=False)
        return int(value or 0)

    async def read_events(
        self, ns: str, after: int, *, limit: int = 1000, timeout: float = 0.0
    ) -> EventBatch:
        batch = await self._read_events(ns, after, limit)
        if batch.events or timeout <= 0:
            return batch
        log = f"cb:{{{ns}}}:log"
        woke = await self.call(
            log, lambda c: c.xread({log: f"{after}-0"}, count=1, block=max(1, int(timeout * 1000))),
            write=False, blocking=True,
        )
        return await self._read_events(ns, after, limit) if woke else batch

    async def _read_events(self, ns: str, after: int, limit: int) -> EventBatch:
        synced = "1" if self.nodes.wait_replicas else "0"
        reply = await self.run("read_events", ns, after, limit, synced)
        current, first = int(reply[0]), int(reply[1])
        events = [
            ChangeEvent(
                int(reply[i]), _s(reply[i + 1]), _s(reply[i + 2]),
                _s(reply[i + 3]) or None, bytes(reply[i + 4]),
            )
            for i in range(2, len(reply), 5)
        ]
        compacted = first - 1 if first else current
        return EventBatch(events, current, compacted)

    async def expire_due(self) -> int:
        """Visit the namespaces the deadline index says are due, and a few of the repair
        pass (redis_sweeper.py): the cost follows what is due, not how many exist."""
        async with self.mapped_errors():
            seconds, micros = await self.nodes.call(
                Command(DEADLINES_KEY, lambda c: c.time(), write=False)
            )
            due = await self.deadlines.due(seconds * 1000 + micros // 1000)
            repair = await self.deadlines.repair_batch(NAMESPACES_KEY)
        total = 0
        for ns, score in due:
            self.deadlines.visits += 1
            count, next_ms, _ = await self.run("expire_due", ns, SWEEP_BATCH)
            total += int(count)
            async with self.mapped_errors():
                await self.deadlines.settle(ns, score, int(next_ms))
        for ns in repair:
            count, next_ms, _ = await self.run("expire_due", ns, SWEEP_BATCH)
            total += int(count)
            if int(next_ms) > 0:
                async with self.mapped_errors():
                    await self.deadlines.schedule(ns, int(next_ms))
        return total


@asynccontextmanager
async def _mapped_errors(url: str, client: Any = None) -> AsyncIterator[None]:
    """The one boundary where Redis failures become 503 backend_unavailable.

    (A broken connection's pool is cleaned where it broke: ``RedisNodes._send``. Calls
    are never retried here, since a timed-out script may have run.)
    """
    try:
        yield
    except (RedisError, OSError, TimeoutError) as exc:
        raise BackendUnavailable(
            f"The Redis backend is unavailable ({type(exc).__name__}: {exc}).".replace(
                url, _redact(url)
            )
        ) from exc


def _redact(url: str) -> str:
    """The URL without its password, for messages."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.split('@', 1)[1]}"
