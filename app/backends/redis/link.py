"""Links: connections of the packed exchange's own, for commands already in RESP.

A packed exchange (``exchange.packed_exchange``: scripts' FCALLs, packed once) needs
none of redis-py's per-call machinery: no packing, no response callbacks, no decoding.
What it still paid for on a redis-py connection was the layers between the socket and
the reply: an asyncio stream reader and writer, redis-py's parser wrapper, a timeout
context per exchange and a pool checkout or a kept connection's bookkeeping. A ``Link``
is an ``asyncio.Protocol`` instead: its ``data_received`` feeds hiredis and hands each
complete reply to the future of the command it answers, in order. Nothing else changes
for the caller, and the exchange's rules are those of ``exchange._exchange``:

- one exchange at a time per link, so a slow script holds up only its own batch;
- a lone command waits the connection's socket timeout, a batch ``PIPELINE_TIMEOUTS``
  of them in all; the commands unanswered then each answer a Redis TimeoutError, and
  the link, whose later replies are unread, is closed;
- a link that breaks answers its unanswered commands with a Redis ConnectionError (the
  ones answered keep their replies), as does a reply redis-py maps to a ConnectionError
  (LOADING, "max number of clients reached"); error replies are each command's own
  answer, mapped to redis-py's exception classes by redis-py's own table;
- a cancelled exchange closes its link;
- a link idle for longer than the pool's health check interval is pinged before use,
  and replaced when the ping fails, as redis-py checks a connection it hands out.

``Links`` keeps the idle links of each pool (a link is made with the pool's address,
credentials, client name and database). A node's links are a share of its
``CORKBOARD_REDIS_MAX_CONNECTIONS``, taken from its calls pool (``calls_pool``: a
quarter, at most ``MAX_LINKS``, none below 4), so that the setting still bounds the
connections a process opens to a node. The caller falls back to a redis-py connection
when the links are all busy, or when the pool connects in a way a link does not (TLS,
a Unix socket, a credential provider, RESP3): see ``linkable``. A link's peer closing
it is seen by the event loop at once; the link leaves its pool's idle list then.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Sequence
from typing import Any, cast

import hiredis
from redis._parsers.base import BaseParser
from redis.asyncio import BlockingConnectionPool
from redis.asyncio.connection import Connection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse
from redis.exceptions import TimeoutError as RedisTimeoutError

#: Links per pool at most (the batcher keeps few exchanges in flight per node).
MAX_LINKS = 8
#: The connection settings a link honours; a pool with any other goes through redis-py.
_LINKABLE = frozenset({
    "host", "port", "db", "username", "password", "client_name", "socket_timeout",
    "socket_connect_timeout", "retry", "health_check_interval", "encoding",
    "encoding_errors", "decode_responses", "socket_keepalive", "socket_keepalive_options",
    "himport_registry", "maint_notifications_pool_handler", "maint_notifications_config",
    "orig_host_address", "orig_socket_timeout", "orig_socket_connect_timeout",
})  # fmt: skip
_PING = b"*1\r\n$4\r\nPING\r\n"


def _command(*parts: bytes) -> bytes:
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%b\r\n" % (len(p), p) for p in parts)


def link_share(max_connections: int) -> int:
    """How many of a node's ``max_connections`` are links: a quarter, at most MAX_LINKS."""
    return min(MAX_LINKS, max_connections // 4)


def calls_pool(url: str, *, max_connections: int, **options: Any) -> BlockingConnectionPool:
    """A node's pool for calls, ``max_connections`` less the links' share, which it
    records for ``Links``: the two together open at most ``max_connections``."""
    share = link_share(max_connections)
    pool = BlockingConnectionPool.from_url(
        url, max_connections=max_connections - share, **options
    )
    pool.corkboard_links = share  # type: ignore[attr-defined]
    return pool


def linkable(pool: Any) -> bool:
    """Whether ``pool`` connects in a way a link reproduces: plain TCP, RESP2, a password
    (and user name) given as such."""
    options = pool.connection_kwargs
    return (
        pool.connection_class is Connection
        and options.keys() <= _LINKABLE
        and not options.get("socket_keepalive")
        and not options.get("decode_responses")
    )


class Link(asyncio.Protocol):
    """One connection to Redis, read by hiredis (see the module docstring)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, links: Links, pool: Any) -> None:
        self.loop = loop
        self.links = links
        self.pool = pool
        self.reader = hiredis.Reader(
            protocolError=InvalidResponse, replyError=BaseParser.parse_error
        )
        self.waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.lost: Exception | None = None
        self.used = loop.time()
        self.counted = True  # (against its pool's MAX_LINKS, until forgotten)

    # -- the protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (uvloop's transports are not asyncio.Transport instances, but behave as one)
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        reader, waiting = self.reader, self.waiting
        try:
            reader.feed(data)
            while (reply := reader.gets()) is not False:
                if not waiting:
                    raise InvalidResponse("a reply nothing asked for")
                future = waiting.popleft()
                if not future.done():
                    future.set_result(reply)
        except InvalidResponse as exc:  # the stream cannot be read further
            self._fail(exc)
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        reason = exc or "connection closed by the server"
        self._fail(RedisConnectionError(f"Error while talking to Redis: {reason}"))
        self.links.forget(self)

    def _fail(self, error: Exception) -> None:
        if self.lost is None:
            self.lost = error
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_exception(error)

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    # -- exchanges ----------------------------------------------------------------------

    async def exchange(self, packed: Sequence[bytes], limit: float) -> list[Any]:
        """Each command's reply (an error reply as its exception), in order; a failure
        of the link answers the commands it left unanswered (see the module)."""
        loop = self.loop
        assert self.transport is not None
        if self.lost is None and self.transport.is_closing():
            self._fail(RedisConnectionError("Error while talking to Redis: link closed"))
        if self.lost is not None:
            return [self.lost] * len(packed)
        futures = [loop.create_future() for _ in packed]
        self.waiting.extend(futures)
        self.transport.writelines(packed)
        timer = loop.call_later(limit, self._expire, limit)
        answers: list[Any] = []
        try:
            for future in futures:
                answer = await future
                if isinstance(answer, RedisConnectionError):
                    raise answer  # (a reply redis-py treats as a broken connection)
                answers.append(answer)
        except (RedisConnectionError, RedisTimeoutError, InvalidResponse) as exc:
            self.close()
            answers += [exc] * (len(packed) - len(answers))
        except BaseException:  # cancelled: the replies still due are never read
            self.close()
            raise
        finally:
            timer.cancel()
            for future in futures:  # the ones not awaited: none left pending or unread
                if not future.done():
                    future.cancel()
                elif not future.cancelled():
                    future.exception()
        self.used = loop.time()
        return answers

    def _expire(self, limit: float) -> None:
        self._fail(RedisTimeoutError(
            f"no reply within {limit:g} s (a script of its batch was slow, or Redis "
            "stopped answering)"
        ))
        self.close()


class Links:
    """The idle links of each pool (see the module docstring)."""

    def __init__(self) -> None:
        self._idle: dict[Any, list[Link]] = {}
        self._open: dict[Any, int] = {}
        self._linkable: dict[Any, bool] = {}

    async def take(self, pool: Any) -> Link | None:
        """An idle link of ``pool`` (pinged first if it idled past the pool's health check
        interval), a new one, or None: use a redis-py connection (see the module)."""
        known = self._linkable.get(pool)
        if known is None:
            known = self._linkable[pool] = linkable(pool)
        if not known:
            return None
        options = pool.connection_kwargs
        idle = self._idle.get(pool)
        while idle:
            link = idle.pop()
            if link.lost is not None:
                continue
            interval = options.get("health_check_interval") or 0
            if not interval or link.loop.time() - link.used < interval:
                return link
            [pong] = await link.exchange([_PING], options.get("socket_timeout") or 5.0)
            if pong == b"PONG":
                return link
            link.close()
        share = getattr(pool, "corkboard_links", None)
        if share is None:  # (a pool not made by calls_pool: a share beside it)
            share = link_share(getattr(pool, "max_connections", 0))
        if self._open.get(pool, 0) >= share:
            return None
        return await self._connect(pool)

    async def _connect(self, pool: Any) -> Link:
        options = pool.connection_kwargs
        loop = asyncio.get_running_loop()
        link = Link(loop, self, pool)
        self._open[pool] = self._open.get(pool, 0) + 1
        try:
            async with asyncio.timeout(options.get("socket_connect_timeout") or 5.0):
                await loop.create_connection(
                    lambda: link, options.get("host", "localhost"), options.get("port", 6379)
                )
            hello = _handshake(options)
            if hello:
                for answer in await link.exchange(hello, options.get("socket_timeout") or 5.0):
                    if isinstance(answer, Exception):
                        raise RedisConnectionError(f"Redis refused the connection: {answer}")
        except BaseException as exc:
            link.close()
            self.forget(link)
            if isinstance(exc, TimeoutError | OSError):
                raise RedisConnectionError(f"Error connecting to Redis: {exc}") from exc
            raise
        return link

    def give_back(self, link: Link) -> None:
        """After an exchange: idle again, unless it failed (then it is closed)."""
        if link.lost is None and link.transport is not None and not link.transport.is_closing():
            self._idle.setdefault(link.pool, []).append(link)

    def forget(self, link: Link) -> None:
        """A link closed: it no longer counts against its pool."""
        if link.counted:
            link.counted = False
            self._open[link.pool] = self._open.get(link.pool, 1) - 1
        idle = self._idle.get(link.pool)
        if idle and link in idle:
            idle.remove(link)

    def drop(self, pool: Any) -> None:
        """Close ``pool``'s idle links (its server failed)."""
        for link in self._idle.pop(pool, []):
            link.close()

    def close(self) -> None:
        for pool in list(self._idle):
            self.drop(pool)


def _handshake(options: dict[str, Any]) -> list[bytes]:
    """What redis-py sends on connecting, for the settings a link honours: AUTH, CLIENT
    SETNAME, SELECT."""
    commands = []
    password, username = options.get("password"), options.get("username")
    if password is not None:
        auth = [b"AUTH", *([username.encode()] if username else []), password.encode()]
        commands.append(_command(*auth))
    if options.get("client_name"):
        commands.append(_command(b"CLIENT", b"SETNAME", options["client_name"].encode()))
    if options.get("db"):
        commands.append(_command(b"SELECT", b"%d" % int(options["db"])))
    return commands
