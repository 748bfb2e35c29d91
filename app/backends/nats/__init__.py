"""The NATS JetStream backend: each namespace is a JetStream KV bucket shared with
NATS clients (docs/nats.md). ``NatsBackend`` is a composition of parts built on one
``NatsStore`` (store.py: the connection, the JetStream requests, the one boundary where
NATS failures become 503), mirroring ``backends/redis/`` where it applies:

- ``keys.py``: the key store (fenced writes included); ``locks.py``: the lock engine;
  ``sessions.py``: sessions, variables and chat state, one record per session holding
  its locks too (``sessionstate.py``); ``log.py``: the change log and the sweeper's pass;
- ``names.py``: namespaces, keys and metadata headers; ``entries.py``: entries read
  from messages, expiry overrides and the deadline index;
- ``trim.py``: compaction (what bounds a namespace's storage); ``quotas.py``: the
  namespace quotas' counters; ``retention.py``: the log's byte bound;
- ``batch.py``: JetStream atomic batch publish; ``compound.py``: a batch that is one
  event; ``txn.py``: transactions and pattern deletes; ``leases.py`` (and
  ``leasestate.py``): leases;
- ``unsupported.py``: the parts not built yet (artifacts), which answer 501
  ``not_supported_by_backend``.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from app.backends.base import BackendInfo
from app.backends.composed import ComposedBackend
from app.backends.nats import unsupported
from app.backends.nats.keys import NatsKeys
from app.backends.nats.leases import NatsLeases
from app.backends.nats.locks import NatsLocks
from app.backends.nats.log import NatsLog
from app.backends.nats.quotas import NatsQuotas
from app.backends.nats.retention import Ledger
from app.backends.nats.sessions import NatsSessions
from app.backends.nats.store import NatsStore
from app.backends.nats.trim import Trimmer
from app.backends.nats.txn import NatsTxn

__all__ = ["NatsBackend", "replicas_of", "servers_of"]


def servers_of(url: str) -> list[str]:
    """The server URLs of ``nats://[user:pass@]h1:4222[,h2:4222][?replicas=N]``."""
    parts = urlsplit(url)
    if parts.scheme != "nats" or not parts.netloc:
        raise ValueError(f"not a nats:// URL with a host: {url!r}")
    credentials, _, hosts = parts.netloc.rpartition("@")
    prefix = f"nats://{credentials}@" if credentials else "nats://"
    servers = [prefix + host for host in hosts.split(",") if host]
    if not servers:
        raise ValueError(f"no server in {url!r}")
    return servers


def replicas_of(url: str) -> int:
    """``?replicas=N`` (1 to 5): the replicas of the buckets Corkboard creates."""
    values = parse_qs(urlsplit(url).query).get("replicas", ["1"])
    if len(values) != 1 or not values[0].isdigit() or not 1 <= int(values[0]) <= 5:
        raise ValueError(f"replicas must be one number from 1 to 5 in {url!r}")
    return int(values[0])


class NatsBackend(ComposedBackend):
    """State in NATS JetStream KV buckets, shared by every replica pointing at it."""

    def __init__(
        self, url: str, *, timeout: float = 2.0, key_history: int = 10,
        event_retention: int = 100_000, replicas: int | None = None,
        lock_max_waiters: int = 1000, max_leases: int = 100_000, max_keys: int = 1_000_000,
        max_bytes: int = 1_073_741_824, event_retention_bytes: int = 64 * 1_048_576,
    ) -> None:
        self.url = url
        self.info = BackendInfo(
            name="nats", persistence=True, distribution=True,
            extra={"supports": list(unsupported.SUPPORTS)},
        )
        self.store = NatsStore(
            servers_of(url), timeout=timeout, key_history=key_history,
            retention=event_retention,
            replicas=replicas if replicas is not None else replicas_of(url), url=url,
        )
        self.ledger = Ledger(self.store, limit=event_retention_bytes)
        self.trimmer = Trimmer(
            self.store, retention=event_retention, keep=key_history, ledger=self.ledger
        )
        self.store.written = self.trimmer.wrote
        self.quotas = NatsQuotas(
            self.store, max_keys=max_keys, max_bytes=max_bytes, key_history=key_history
        )
        self.keys = NatsKeys(self.store, self.quotas)
        self.sessions = NatsSessions(self.store)
        self.lock_engine = NatsLocks(self.store, self.sessions, max_waiters=lock_max_waiters)
        self.locks = self.lock_engine
        self.log = NatsLog(self.store, self.keys, self.lock_engine, self.sessions, self.ledger)
        self.artifacts = unsupported.artifacts()
        self.leases = NatsLeases(self.store, self.keys, self.lock_engine, max_leases=max_leases)
        self.log.lease_sweep = self.leases.sweep
        self.txns = NatsTxn(self.store, self.keys)

    async def start(self) -> None:
        await self.store.start()

    async def close(self) -> None:
        await self.lock_engine.close()
        await self.trimmer.close()
        await self.store.close()

    async def ping(self) -> None:
        await self.store.ping()
