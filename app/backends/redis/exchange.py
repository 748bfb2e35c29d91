"""One exchange with a Redis server on one connection (``packed_exchange``: commands
already in RESP, one write; ``bounded_pipeline``: redis-py's queued commands, one
write), and the connections ``Kept`` between exchanges.

A pool checkout costs more than it looks: redis-py's ``BlockingConnectionPool`` takes a
condition and a timeout, probes the socket for unread data and records observability
counters on every ``get_connection`` and ``release`` (about 30 us of CPU per pair on
uvloop, as much as a third of a key read's whole cost in the worker). Under load the
same few connections go out and come back many times a millisecond, so ``Kept`` holds
those that just finished an exchange cleanly, checked out of their pool, and hands them
to the next exchange directly. What the pool's checkout guards against still holds:

- *unread data*: a connection is kept only after an exchange that read every reply it
  asked for (any failure, a timeout or a cancellation disconnects it, as before);
- *a connection gone stale while idle*: one kept longer than ``KEEP_IDLE_SECONDS`` (less
  than the pools' one-second ``health_check_interval``) goes back to its pool, whose
  next checkout pings it first; a connection that broke is never kept.
- *a dead server*: ``drop`` gives every kept connection of a pool back, disconnected,
  when one of its connections broke (``RedisNodes.connection_lost``), and ``close`` at
  shutdown.

Kept connections stay counted as in use by their pool: at most ``KEEP_PER_POOL`` and a
quarter of the pool's size (none for a pool of fewer than 4), so that callers checking
out of the pool directly always find most of it there.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app.backends.redis.link import Links

#: A batch's replies are awaited for this many call timeouts in all (not one each).
PIPELINE_TIMEOUTS = 2
#: Connections kept per pool at most, and for how long one may idle while kept.
KEEP_PER_POOL = 8
KEEP_IDLE_SECONDS = 0.5


class Kept:
    """Connections checked out of their pools between exchanges (see the module), and
    the packed exchanges' own ``links`` (link.py; None: packed exchanges use redis-py
    connections too)."""

    def __init__(self, *, links: bool = True) -> None:
        self._idle: dict[Any, list[tuple[Any, float]]] = {}
        self.links = Links() if links else None

    async def take(self, pool: Any) -> Any:
        """A kept connection of ``pool`` that idled briefly, else the pool's checkout."""
        stack = self._idle.get(pool)
        if stack:
            now = time.monotonic()
            while stack:
                connection, since = stack.pop()
                if now - since < KEEP_IDLE_SECONDS and connection.is_connected:
                    return connection
                await pool.release(connection)  # its next checkout checks it
        return await pool.get_connection()

    async def settle(self, pool: Any, connection: Any, clean: bool) -> None:
        """After an exchange: keep the connection when it read all its replies
        (``clean``), else give it back to its pool (disconnected by the caller)."""
        if clean:
            await self.give_back(pool, connection)
        else:
            await pool.release(connection)

    async def give_back(self, pool: Any, connection: Any) -> None:
        """Keep a connection whose exchange read all its replies; else to its pool."""
        stack = self._idle.setdefault(pool, [])
        keep = min(KEEP_PER_POOL, getattr(pool, "max_connections", 0) // 4)
        if len(stack) < keep and connection.is_connected:
            stack.append((connection, time.monotonic()))
        else:
            await pool.release(connection)

    async def drop(self, pool: Any) -> None:
        """Disconnect ``pool``'s kept connections and give them back, and close its idle
        links (its server failed)."""
        if self.links is not None:
            self.links.drop(pool)
        for connection, _ in self._idle.pop(pool, []):
            await connection.disconnect()
            await pool.release(connection)

    async def close(self) -> None:
        if self.links is not None:
            self.links.close()
        for pool in list(self._idle):
            for connection, _ in self._idle.pop(pool):
                await pool.release(connection)


class _Unbounded:
    """A connection whose reads wait as long as the batch they belong to allows (see
    ``bounded_pipeline``), instead of one call's socket timeout each. Whatever else
    ``Redis.parse_response`` reads of a connection comes from the connection itself
    (redis-py 8.2 added ``_resp2_fallback``; a wrapper that answered only
    ``read_response`` failed every pipelined reply with an AttributeError)."""

    __slots__ = ("connection",)

    def __init__(self, connection: Any) -> None:
        self.connection = connection

    def __getattr__(self, name: str) -> Any:
        return getattr(self.connection, name)

    async def read_response(self, disable_decoding: bool = False, **_: Any) -> Any:
        return await self.connection.read_response(
            disable_decoding=disable_decoding, timeout=math.inf
        )


async def packed_exchange(client: Redis, packed: Sequence[bytes], kept: Kept) -> list[Any]:
    """Commands already in RESP (scripts' FCALLs, ``runner.ScriptPacker``) sent in one
    write on one of ``client``'s connections, each answered by its own reply (an error
    reply is that command's answer only), as ``bounded_pipeline`` answers them.

    What ``Redis.execute_command`` and a pipeline do per call, less what this exchange
    does not need: the command is packed already; the write is not wrapped in a task of
    its own (redis-py's ``asyncio.wait_for`` around each send); and the replies are read
    from the connection's parser directly, not through four layers per reply that each
    set up a timeout, an error mapping and a host name for messages. The connection's own
    checks stay: a fresh checkout is connected and pinged when it idled past its health
    check interval, whose clock restarts after the exchange, as after any reply. One
    command has the connection's socket timeout; several have ``PIPELINE_TIMEOUTS`` of
    them in all (see ``bounded_pipeline``).

    The exchange goes over one of the pool's links (link.py) when it has one free or may
    open one, which reads the replies with the same rules and less work; else over a
    redis-py connection, as described above.
    """
    links = kept.links
    if links is not None:
        pool = client.connection_pool
        link = await links.take(pool)
        if link is not None:
            limit = _limit(pool.connection_kwargs.get("socket_timeout"), len(packed))
            answers = await link.exchange(packed, limit)
            links.give_back(link)
            return answers

    async def talk(connection: Any, answers: list[Any]) -> None:
        if not connection.is_connected:
            await connection.connect()
        await connection.check_health()
        writer = connection._writer
        writer.writelines(packed)
        await writer.drain()
        parser = connection._parser
        for _ in range(len(packed)):
            # (error replies come back as ResponseError values; a broken connection raises)
            answers.append(await parser.read_response())
        interval = connection.health_check_interval
        if interval:
            connection.next_health_check = asyncio.get_running_loop().time() + interval

    return await _exchange(client, kept, len(packed), talk)


async def bounded_pipeline(
    client: Redis, stack: Sequence[tuple[Any, Any]], kept: Kept
) -> list[Any]:
    """Send a pipeline's queued ``stack`` in one write and answer each command with its
    own reply (an error reply is that command's answer only), read through redis-py
    (its response callbacks apply), within ``PIPELINE_TIMEOUTS`` call timeouts in all.
    """

    async def talk(connection: Any, answers: list[Any]) -> None:
        await connection.send_packed_command(
            connection.pack_commands([args for args, _ in stack])
        )
        reader: Any = _Unbounded(connection)
        for args, options in stack:
            try:
                answers.append(await client.parse_response(reader, args[0], **options))
            except ResponseError as exc:
                answers.append(exc)

    return await _exchange(client, kept, len(stack), talk)


async def _exchange(
    client: Redis, kept: Kept, count: int,
    talk: Callable[[Any, list[Any]], Awaitable[None]],
) -> list[Any]:
    """One exchange of ``count`` commands on a connection of ``client`` (kept or checked
    out): ``talk`` sends them and appends their replies to the answers.

    Redis flushes a pipeline's replies once it has run the commands it read together,
    so a slow script holds back the replies beside it although Redis runs them all.
    Reading each reply under the call timeout made that script fail every call of the
    batch (503, though applied); so a lone command gets the connection's socket timeout
    and a batch ``PIPELINE_TIMEOUTS`` of them in all. Replies read in that time are their
    commands' answers; the commands still unanswered then (a script slower than that, a
    Redis that stopped answering, a broken connection) each answer a Redis
    TimeoutError or ConnectionError, and the connection, whose later replies are unread,
    is closed, as it is on a cancellation. Only a connection that read every reply it
    asked for is kept.
    """
    pool = client.connection_pool
    connection: Any = await kept.take(pool)
    answers: list[Any] = []
    clean = False
    try:
        limit = _limit(connection.socket_timeout, count)
        try:
            async with asyncio.timeout(limit):
                await talk(connection, answers)
            clean = True
        except (TimeoutError, RedisConnectionError, RedisTimeoutError, OSError) as exc:
            await connection.disconnect()
            answers += [_failure(exc, limit)] * (count - len(answers))
        except BaseException:
            await connection.disconnect()
            raise
    finally:
        await kept.settle(pool, connection, clean)
    return answers


def _limit(socket_timeout: float | None, count: int) -> float:
    """How long an exchange of ``count`` commands waits for its replies in all: the
    socket timeout for one command, ``PIPELINE_TIMEOUTS`` of them for a batch."""
    per_call = socket_timeout or 5.0
    return per_call if count == 1 else per_call * PIPELINE_TIMEOUTS


def _failure(exc: BaseException, limit: float) -> Exception:
    """What the unanswered commands of a failed exchange answer."""
    if isinstance(exc, TimeoutError):
        return RedisTimeoutError(
            f"no reply within {limit:g} s (a script of its batch was slow, or Redis "
            "stopped answering)"
        )
    if isinstance(exc, OSError):
        return RedisConnectionError(f"Error while talking to Redis: {exc}")
    assert isinstance(exc, Exception)
    return exc
