"""The Redis backend: shared, persistent state for any number of workers and replicas.

``RedisBackend`` is a composition of parts built on one ``RedisStore`` (store.py: the
nodes, the loaded scripts and ``run``, the one way state changes; the deadline index; the
one boundary where Redis failures become 503), mirroring ``backends/memory/`` file by
file:

- ``keys.py``: the key store; ``log.py``: the change log and the sweeper's pass;
- ``locks.py`` (with ``wakeups.py``): the lock engine; ``sessions.py``: sessions;
- ``artifacts.py``: the artifact index; ``leases.py``: leases; ``txn.py``: transactions.

Where commands go: ``nodes.py`` (one server) and ``cluster.py`` (Redis Cluster); the
script runner's batching is ``runner.py``; ``sweeper.py`` keeps the global deadline index.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from redis.asyncio import Redis

from app.backends.base import BackendInfo
from app.backends.composed import ComposedBackend
from app.backends.redis.artifacts import RedisArtifacts
from app.backends.redis.cluster import nodes_from_url
from app.backends.redis.keys import RedisKeys
from app.backends.redis.leases import RedisLeases
from app.backends.redis.locks import RedisLocks
from app.backends.redis.log import RedisLog
from app.backends.redis.nodes import RedisNodes
from app.backends.redis.sessions import RedisSessions
from app.backends.redis.store import RedisStore
from app.backends.redis.txn import RedisTxn
from app.domain.bounds import Bounds

__all__ = ["RedisBackend"]


class RedisBackend(ComposedBackend):
    """State in Redis, shared by every worker and replica that points at it."""

    locks: RedisLocks  # (its wake-up listener is closed with the backend)

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
        self.info = BackendInfo(
            name="redis-cluster" if self.nodes.cluster else "redis", persistence=True,
            distribution=True,
        )
        #: The client of a single server (on a cluster: of the first seed node).
        self.client = self.nodes.client
        self.url = url
        self.bounds = bounds or Bounds(event_retention=event_retention)
        self.store = RedisStore(self.nodes, key_history=key_history, bounds=self.bounds, url=url)
        self.deadlines = self.store.deadlines
        self.keys = RedisKeys(self.store)
        self.log = RedisLog(self.store)
        self.locks = RedisLocks(self.store)
        self.artifacts = RedisArtifacts(self.store)
        self.sessions = RedisSessions(self.store)
        self.leases = RedisLeases(self.store)
        self.txns = RedisTxn(self.store)

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

    async def start(self) -> None:
        await self.store.start()

    async def close(self) -> None:
        await self.locks.close()
        await self.store.close()

    async def ping(self) -> None:
        async with self.mapped_errors():
            await self.nodes.ready()

    def mapped_errors(self) -> AbstractAsyncContextManager[None]:
        """Map this backend's Redis failures to BackendUnavailable (503)."""
        return self.store.mapped_errors()

    def client_for(self, key: str) -> Redis:
        """The client of the node serving ``key`` (for tests and tools)."""
        return self.nodes.client_for(self.nodes.node_for(key))

    async def call(
        self, key: str, queue: Callable[[Any], Any], *, write: bool, blocking: bool = False
    ) -> Any:
        """One command on the node serving ``key``, Redis failures mapped to 503."""
        return await self.store.call(key, queue, write=write, blocking=blocking)
