"""Where the Redis backend's commands go: ``RedisNodes`` sends them to one server, and
``ClusterNodes`` (``cluster.py``) to the master owning each key's hash slot.

Commands bound for one server are sent as one pipeline on one connection, so that a
``WAIT`` (``CORKBOARD_REDIS_WAIT_REPLICAS``) follows the writes it must cover and an
``ASKING`` precedes the command it allows. Redirections (MOVED, ASK, TRYAGAIN,
CLUSTERDOWN), NOSCRIPT and a missing function are refused before the command runs, so
those commands are sent again; any other failure is each command's own answer, never
retried, since a script whose answer was lost may have run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    NoScriptError,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app.backends.redis.exchange import Kept, bounded_pipeline, packed_exchange
from app.backends.redis.library import function_missing
from app.backends.redis.link import calls_pool

#: Rounds of re-sending the commands that a server refused before running them.
MAX_ROUNDS = 8


@dataclass(slots=True)
class Command:
    """One command for the node owning ``key``.

    ``queue`` is called with a pipeline (and queues the command on it) or, for a lone
    command, with a client (and returns the awaitable call): redis-py's methods do both.
    """

    key: str
    queue: Callable[[Any], Any]
    write: bool = True
    blocking: bool = False
    script: str | None = None  # the Lua source behind an EVALSHA, reloaded after NOSCRIPT
    #: The Functions library behind an FCALL, loaded after "Function not found".
    library: str | None = None
    #: The command in RESP, packed once by its maker (``store.RedisStore.run``); sent as
    #: is, without redis-py's per-call packing. None: ``queue`` it through redis-py.
    packed: bytes | None = None


class ReplicaWaitTimeout(RedisError):
    """Fewer replicas than required confirmed a write in time. The write was applied on
    the master and may or may not survive its failover."""


def pool_kwargs(timeout: float) -> dict[str, Any]:
    """Connection settings shared by every pool of the backend."""
    return {
        "socket_connect_timeout": timeout,
        # A timed-out script may have run: never send a write twice.
        "retry": Retry(NoBackoff(), 0),
        # A connection idle for a second is pinged before use, so after an outage the
        # pool's dead connections are replaced instead of failing a request.
        "health_check_interval": 1,
    }


class RedisNodes:
    """One Redis server (with its replicas, if ``WAIT`` is asked for)."""

    cluster = False

    def __init__(
        self,
        client: Redis,
        blocking: Redis | None = None,
        *,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 1000,
        owns_clients: bool = False,
    ) -> None:
        self.client = client
        self.blocking = blocking or client
        self.wait_replicas = wait_replicas
        self.wait_timeout_ms = wait_timeout_ms
        self._owns_clients = owns_clients
        #: Connections kept between exchanges, past their pools' checkout (exchange.py).
        self.kept = Kept()

    @classmethod
    def from_url(
        cls, url: str, *, timeout: float, max_connections: int, wait_replicas: int = 0
    ) -> RedisNodes:
        """Two pools of ``max_connections``: calls (with their links, link.py), and
        blocking reads (which wait longer than one call's timeout)."""
        pool = calls_pool(
            url, max_connections=max_connections, timeout=timeout, socket_timeout=timeout,
            **pool_kwargs(timeout),
        )
        blocking_pool = BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=timeout, socket_timeout=None,
            **pool_kwargs(timeout),
        )
        return cls(
            Redis.from_pool(pool), Redis.from_pool(blocking_pool),
            wait_replicas=wait_replicas, wait_timeout_ms=wait_timeout_ms(timeout),
            owns_clients=True,
        )

    # -- routing (ClusterNodes overrides these) ---------------------------------------

    async def start(self) -> None:
        """Reach the server (a cluster: learn its topology)."""
        await self.ready()

    def node_for(self, key: str) -> str:
        """The address of the node serving ``key``."""
        return ""

    def client_for(self, node: str, *, blocking: bool = False) -> Redis:
        return self.blocking if blocking else self.client

    def masters(self) -> list[Redis]:
        """A client for each master (scans visit them all)."""
        return [self.client]

    def listener(self, attempt: int) -> Redis:
        """The client a pub/sub listener subscribes with (``attempt``: how many times it
        subscribed before). Classic PUBLISH reaches every node of a cluster, so any
        master will do; a cluster moves on to the next one after a failure."""
        return self.blocking

    async def moved(self, error: MovedError) -> None:
        """A slot moved: remember its new owner."""

    async def connection_lost(self, node: str) -> None:
        """A connection to ``node`` broke: its idle connections are dead too, so they are
        dropped now instead of each failing a call of its own."""
        pool = self.client_for(node).connection_pool
        await self.kept.drop(pool)
        await pool.disconnect(inuse_connections=False)

    async def ready(self) -> None:
        """Raise unless every node can serve calls (not PING: Redis answers it while still
        loading its data, when every real call fails with LOADING)."""
        await self.call(Command("", lambda c: c.dbsize(), write=False))

    async def close(self) -> None:
        await self.kept.close()
        if self._owns_clients:
            await self.client.aclose()
            if self.blocking is not self.client:
                await self.blocking.aclose()

    # -- sending ----------------------------------------------------------------------

    async def call(self, command: Command) -> Any:
        """Run one command; its answer, or its error raised."""
        [result] = await self.execute([command])
        if isinstance(result, BaseException):
            raise result
        return result

    async def execute(self, commands: Sequence[Command]) -> list[Any]:
        """Each command's answer or error, in order; raises only when cancelled."""
        results: list[Any] = [None] * len(commands)
        todo = list(range(len(commands)))
        asking: dict[int, str] = {}  # command index -> node it was redirected to by ASK
        for round_ in range(MAX_ROUNDS):
            groups: dict[tuple[str, bool, bool], list[int]] = {}
            for i in todo:
                target = asking.get(i)
                node = target if target is not None else self.node_for(commands[i].key)
                groups.setdefault((node, target is not None, commands[i].blocking), []).append(i)
            sent = [
                (indices, self._send(node, [commands[i] for i in indices], asks, blocking))
                for (node, asks, blocking), indices in groups.items()
            ]
            if len(sent) == 1:
                answers = [await sent[0][1]]
            else:
                answers = list(await asyncio.gather(*(call for _, call in sent)))
            todo, pause = [], False
            for (indices, _), group_answers in zip(sent, answers, strict=True):
                for i, answer in zip(indices, group_answers, strict=True):
                    results[i] = answer
                    if not isinstance(answer, ResponseError):  # (every refusal is one)
                        continue
                    retry, wait = await self._refused(i, commands[i], answer, asking)
                    if retry:
                        todo.append(i)
                        pause = pause or wait
            if not todo:
                break
            if pause:
                await asyncio.sleep(min(0.02 * 2**round_, 0.25))
        return results

    async def _refused(
        self, i: int, command: Command, answer: Any, asking: dict[int, str]
    ) -> tuple[bool, bool]:
        """Whether ``answer`` is a refusal before running (send again), and whether to
        pause first."""
        if isinstance(answer, MovedError):
            asking.pop(i, None)
            await self.moved(answer)
            return True, False
        if isinstance(answer, AskError):
            asking[i] = f"{answer.host}:{answer.port}"
            return True, False
        if isinstance(answer, NoScriptError) and command.script is not None:
            # A restarted or newly promoted server has an empty script cache.
            node = asking.get(i) or self.node_for(command.key)
            try:
                await self.client_for(node).script_load(command.script)
            except RedisError:
                return False, False
            return True, False
        if command.library is not None and function_missing(answer):
            # A restarted server without persistence, FUNCTION FLUSH, a new master.
            node = asking.get(i) or self.node_for(command.key)
            try:
                await self.client_for(node).function_load(command.library, replace=True)
            except RedisError:
                return False, False
            return True, False
        if isinstance(answer, TryAgainError | ClusterDownError):
            if isinstance(answer, ClusterDownError):
                await self.topology_changed()
            return True, True
        return False, False

    async def topology_changed(self) -> None:
        """The cluster told us its slots are not all served: look again (cluster only)."""

    async def _send(
        self, node: str, commands: list[Command], asking: bool, blocking: bool
    ) -> list[Any]:
        """Send ``commands`` to ``node`` on one connection; every answer, never raising
        (a failure of the whole exchange is every command's answer)."""
        client = self.client_for(node, blocking=blocking)
        wait = self.wait_replicas > 0 and any(c.write for c in commands)
        try:
            packed = [c.packed for c in commands if c.packed is not None]
            if not wait and not asking and not blocking and len(packed) == len(commands):
                answers: list[Any] = await packed_exchange(client, packed, self.kept)
            elif len(commands) == 1 and not wait and not asking:
                return [await commands[0].queue(client)]
            else:
                pipe = client.pipeline(transaction=False)
                for command in commands:
                    if asking:  # (ASKING allows only the one command after it)
                        pipe.execute_command("ASKING")
                    command.queue(pipe)
                if wait:
                    pipe.execute_command("WAIT", self.wait_replicas, self.wait_timeout_ms)
                if blocking:
                    answers = await pipe.execute(raise_on_error=False)
                else:
                    answers = await bounded_pipeline(client, pipe.command_stack, self.kept)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if isinstance(exc, RedisConnectionError | RedisTimeoutError | OSError):
                with suppress(Exception):  # the original failure is what matters
                    await self.connection_lost(node)
            return [exc] * len(commands)
        if any(isinstance(a, RedisConnectionError) for a in answers):
            with suppress(Exception):  # a broken connection: its idle siblings are too
                await self.connection_lost(node)
        if asking:
            answers = answers[1 : 2 * len(commands) : 2] + answers[2 * len(commands) :]
        if wait:
            acked = answers.pop()
            if isinstance(acked, BaseException) or int(acked) < self.wait_replicas:
                timeout = ReplicaWaitTimeout(
                    f"only {acked if isinstance(acked, int) else 0} of "
                    f"{self.wait_replicas} replicas confirmed the write within "
                    f"{self.wait_timeout_ms} ms; it may or may not survive a failover"
                )
                answers = [
                    timeout if c.write and not isinstance(a, BaseException) else a
                    for c, a in zip(commands, answers, strict=True)
                ]
        return answers


def wait_timeout_ms(timeout: float) -> int:
    """How long a write waits for its replicas: half a call's timeout, so that the WAIT
    answers before the socket gives up."""
    return max(1, int(timeout * 500))
