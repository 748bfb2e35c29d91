"""The Redis script runner's batching: the light script calls made in one turn of the
event loop go out together, one bounded pipeline per node, each call answered by its own
reply (``RedisNodes.execute`` and ``exchange.bounded_pipeline``)."""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import Redis

from app.backends.redis.nodes import Command, RedisNodes

#: Light script calls sent in one pipeline at most.
MAX_BATCH = 64
#: Packed command heads (script, namespace, argument count) remembered at most.
MAX_HEADS = 4096


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%b\r\n" % (len(value), value)


#: The bulk strings of the text arguments most calls pass (no fence, no lease, no
#: condition: empty strings; counts and flags), packed once.
_SHORT = {text: _bulk(text.encode()) for text in ("", "0", "1", "-1")}


class ScriptPacker:
    """A script call's FCALL in RESP, the bytes redis-py's ``pack_command`` makes of it
    (tests/test_hotpath_front.py), built with less work per call: the head (the
    command, the function, the key, the namespace, the bounds and the history depth) is
    packed once per script, namespace and argument count, and each argument is encoded
    by its type directly. ``fcall`` answers None (let redis-py pack it) for an
    argument of another type or text redis-py would encode otherwise."""

    def __init__(self, bounds_arg: str, key_history: int, client: Redis) -> None:
        options = client.connection_pool.connection_kwargs
        self.enabled = (
            str(options.get("encoding", "utf-8")).lower() in ("utf-8", "utf8")
            and options.get("encoding_errors", "strict") == "strict"
        )
        self._tail = _bulk(bounds_arg.encode()) + _bulk(b"%d" % key_history)
        self._heads: dict[tuple[str, str, int], bytes] = {}

    def fcall(
        self, function: str, script: str, ns: str, key: str, args: tuple[Any, ...]
    ) -> bytes | None:
        if not self.enabled:
            return None
        parts = []
        try:
            for arg in args:
                kind = type(arg)
                if kind is str:
                    bulk = _SHORT.get(arg)
                    if bulk is None:
                        value = arg.encode()
                        bulk = b"$%d\r\n%b\r\n" % (len(value), value)
                elif kind is bytes:
                    bulk = b"$%d\r\n%b\r\n" % (len(arg), arg)
                elif kind is int:
                    value = b"%d" % arg
                    bulk = b"$%d\r\n%b\r\n" % (len(value), value)
                else:
                    return None
                parts.append(bulk)
            head = self._heads.get((script, ns, len(args)))
            if head is None:
                if len(self._heads) >= MAX_HEADS:
                    self._heads.clear()
                head = self._heads[(script, ns, len(args))] = (
                    b"*%d\r\n$5\r\nFCALL\r\n" % (7 + len(args)) + _bulk(function.encode())
                    + _bulk(b"1") + _bulk(key.encode()) + _bulk(ns.encode()) + self._tail
                )
        except UnicodeEncodeError:
            return None  # redis-py raises it where it always has
        return head + b"".join(parts)


class ScriptBatcher:
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
