"""Redis Cluster for the Redis backend: ``redis+cluster://h1:7000,h2:7001`` (and
``rediss+cluster://``) sends each command to the master owning its key's hash slot.

Every key of a namespace carries ``{ns}`` as its hash tag, so a namespace lives on one
slot and each Lua script touches one slot. The slot map comes from ``CLUSTER SLOTS`` and
is read again when a node says a slot moved (MOVED), says the cluster is down
(CLUSTERDOWN) or stops answering (a failover): calls to a dead master fail with 503
until its replica is promoted and the map shows it. While a slot moves between two
masters, its namespaces' scripts are refused with TRYAGAIN before they run (common.lua)
and sent again by ``RedisNodes.execute``; single-key commands follow ASK.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from contextlib import suppress
from typing import Any
from urllib.parse import urlsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.crc import key_slot
from redis.exceptions import ConnectionError, MovedError, RedisError

from app.backends.redis.link import calls_pool
from app.backends.redis.nodes import RedisNodes, pool_kwargs, wait_timeout_ms

SLOTS = 16384
#: Fewest seconds between two readings of the slot map asked for by failures.
REFRESH_INTERVAL = 0.1


class ClusterDown(RedisError):
    """The cluster does not serve every slot, or a master does not answer."""


def parse_cluster_url(url: str) -> tuple[str, str, list[tuple[str, int]], str]:
    """(scheme of each node, user info with '@' or '', seed nodes, query) of a
    ``redis+cluster://[user:password@]h1:7000,h2:7001[/0][?options]`` URL."""
    parts = urlsplit(url)
    scheme = "rediss" if parts.scheme == "rediss+cluster" else "redis"
    userinfo, _, hosts = parts.netloc.rpartition("@")
    seeds: list[tuple[str, int]] = []
    for item in hosts.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"a cluster node must be host:port, not {item!r}")
        seeds.append((host, int(port)))
    if parts.path not in ("", "/", "/0"):
        raise ValueError("a Redis Cluster has only database 0")
    return scheme, userinfo + "@" if userinfo else "", seeds, parts.query


class ClusterNodes(RedisNodes):
    """The masters of a Redis Cluster, each with its own pools (calls, blocking reads)."""

    cluster = True

    def __init__(
        self,
        url: str,
        *,
        timeout: float,
        max_connections: int,
        wait_replicas: int = 0,
    ) -> None:
        self._scheme, self._userinfo, self._seeds, self._query = parse_cluster_url(url)
        self._timeout = timeout
        self._max_connections = max_connections
        self._clients: dict[str, tuple[Redis, Redis]] = {}
        self._slots: list[str] = [""] * SLOTS
        self._refreshed_at = 0.0
        self._refresh: asyncio.Task[None] | None = None
        self._closed = False
        first = self._client_pair(self._addr(*self._seeds[0]))
        super().__init__(
            first[0], first[1], wait_replicas=wait_replicas,
            wait_timeout_ms=wait_timeout_ms(timeout), owns_clients=True,
        )

    @classmethod
    def from_url(
        cls, url: str, *, timeout: float, max_connections: int, wait_replicas: int = 0
    ) -> ClusterNodes:
        return cls(
            url, timeout=timeout, max_connections=max_connections, wait_replicas=wait_replicas
        )

    @staticmethod
    def _addr(host: str, port: int) -> str:
        return f"{host}:{port}"

    def _client_pair(self, addr: str) -> tuple[Redis, Redis]:
        pair = self._clients.get(addr)
        if pair is None:
            if self._closed:
                raise ConnectionError("the backend is closed")
            url = f"{self._scheme}://{self._userinfo}{addr}/0"
            if self._query:
                url += "?" + self._query
            per_node = max(2, self._max_connections)
            pool = calls_pool(
                url, max_connections=per_node, timeout=self._timeout,
                socket_timeout=self._timeout, **pool_kwargs(self._timeout),
            )
            blocking = BlockingConnectionPool.from_url(
                url, max_connections=per_node, timeout=self._timeout, socket_timeout=None,
                **pool_kwargs(self._timeout),
            )
            pair = (Redis.from_pool(pool), Redis.from_pool(blocking))
            self._clients[addr] = pair
        return pair

    # -- the slot map -----------------------------------------------------------------

    async def start(self) -> None:
        await self.refresh()

    async def refresh(self) -> None:
        """Read the slot map from the first node that answers."""
        known = list(dict.fromkeys(a for a in self._slots if a))
        candidates = list(dict.fromkeys(
            [*known, *(self._addr(h, p) for h, p in self._seeds), *self._clients]
        ))
        error: BaseException | None = None
        for addr in candidates:
            try:
                reply = await self._client_pair(addr)[0].execute_command(  # type: ignore[no-untyped-call]
                    "CLUSTER SLOTS"
                )
            except (RedisError, OSError) as exc:
                error = exc
                continue
            self._slots = self._slot_map(reply, addr.rpartition(":")[0])
            self._refreshed_at = time.monotonic()
            return
        raise ConnectionError(f"no Redis Cluster node answered ({error})")

    def _slot_map(self, reply: Any, default_host: str) -> list[str]:
        slots = [""] * SLOTS
        if isinstance(reply, dict):  # redis-py's parsed form: {(start, end): {"primary": ...}}
            ranges = [(int(s), int(e), v["primary"]) for (s, e), v in reply.items()]
        else:
            ranges = [(int(r[0]), int(r[1]), r[2]) for r in reply]
        for start, end, master in ranges:
            host = master[0].decode() if isinstance(master[0], bytes) else str(master[0])
            addr = self._addr(host or default_host, int(master[1]))
            slots[start : end + 1] = [addr] * (end - start + 1)
        return slots

    def _refresh_soon(self) -> None:
        if self._closed or (self._refresh is not None and not self._refresh.done()):
            return
        if time.monotonic() - self._refreshed_at < REFRESH_INTERVAL:
            return
        self._refreshed_at = time.monotonic()
        self._refresh = asyncio.get_running_loop().create_task(self._quiet_refresh())

    async def _quiet_refresh(self) -> None:
        with suppress(RedisError, OSError):  # the next failure asks again
            await self.refresh()

    # -- routing ----------------------------------------------------------------------

    def node_for(self, key: str) -> str:
        return self._slots[key_slot(key.encode())] or self._addr(*self._seeds[0])

    def client_for(self, node: str, *, blocking: bool = False) -> Redis:
        client, blocking_client = self._client_pair(node)
        return blocking_client if blocking else client

    def masters(self) -> list[Redis]:
        return [self._client_pair(a)[0] for a in dict.fromkeys(self._slots) if a]

    def listener(self, attempt: int) -> Redis:
        if attempt:
            self._refresh_soon()  # the last one failed: perhaps its master is gone
        addrs = [a for a in dict.fromkeys(self._slots) if a] or [self._addr(*self._seeds[0])]
        return self._client_pair(addrs[attempt % len(addrs)])[1]

    async def moved(self, error: MovedError) -> None:
        self._slots[error.slot_id] = self._addr(error.host, error.port)
        self._refresh_soon()  # a failover or a reshard usually moves more than one slot

    async def connection_lost(self, node: str) -> None:
        self._refresh_soon()
        for client in self._client_pair(node):
            await self.kept.drop(client.connection_pool)
            await client.connection_pool.disconnect(inuse_connections=False)

    async def topology_changed(self) -> None:
        self._refresh_soon()

    async def ready(self) -> None:
        """Every slot has a master, and every master says ``cluster_state:ok`` with all
        slots served and answers a data command (not loading)."""
        await self.refresh()
        if not all(self._slots):
            raise ClusterDown(f"{self._slots.count('')} of {SLOTS} slots have no master")
        masters = list(dict.fromkeys(self._slots))

        async def check(addr: str) -> None:
            client = self._client_pair(addr)[0]
            info = _cluster_info(
                await client.execute_command("CLUSTER INFO")  # type: ignore[no-untyped-call]
            )
            if info.get("cluster_state") != "ok":
                raise ClusterDown(f"{addr} says cluster_state:{info.get('cluster_state')}")
            if info.get("cluster_slots_ok") != str(SLOTS):
                raise ClusterDown(
                    f"{addr} says {info.get('cluster_slots_ok')} of {SLOTS} slots are served"
                )
            await client.dbsize()

        await asyncio.gather(*(check(a) for a in masters))

    async def close(self) -> None:
        self._closed = True
        if self._refresh is not None:
            self._refresh.cancel()
            with suppress(asyncio.CancelledError, Exception):
                await self._refresh
        await self.kept.close()
        clients: Sequence[tuple[Redis, Redis]] = list(self._clients.values())
        self._clients = {}
        for client, blocking in clients:
            await client.aclose()
            await blocking.aclose()


def _cluster_info(reply: Any) -> dict[str, str]:
    if isinstance(reply, dict):
        return {str(k): str(v) for k, v in reply.items()}
    text = reply.decode() if isinstance(reply, bytes) else str(reply)
    pairs = (line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {k.strip(): v.strip() for k, v in pairs}


def is_cluster_url(url: str) -> bool:
    return urlsplit(url).scheme in ("redis+cluster", "rediss+cluster")


def nodes_from_url(
    url: str, *, timeout: float, max_connections: int, wait_replicas: int = 0
) -> RedisNodes:
    """``RedisNodes`` for ``redis://``, ``rediss://``, ``unix://``; ``ClusterNodes`` for
    ``redis+cluster://`` and ``rediss+cluster://``."""
    if is_cluster_url(url):
        return ClusterNodes.from_url(
            url, timeout=timeout, max_connections=max_connections, wait_replicas=wait_replicas
        )
    return RedisNodes.from_url(
        url, timeout=timeout, max_connections=max_connections, wait_replicas=wait_replicas
    )
