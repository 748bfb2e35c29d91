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
  ``leasestate.py``): leases; ``artifacts.py`` (with ``blobrows.py``): the artifact
  index (the bytes: ``app/artifacts/nats.py``).
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from app.backends.base import BackendInfo
from app.backends.composed import ComposedBackend
from app.backends.nats.artifacts import NatsArtifacts
from app.backends.nats.batch import DEFAULT_MAX_BATCH, LARGEST_BATCH
from app.backends.nats.keys import NatsKeys
from app.backends.nats.leases import NatsLeases
from app.backends.nats.locks import NatsLocks
from app.backends.nats.log import NatsLog
from app.backends.nats.quotas import NatsQuotas
from app.backends.nats.retention import Ledger
from app.backends.nats.sessions import NatsSessions
from app.backends.nats.store import NatsStore
from app.backends.nats.trim import Trimmer
from app.backends.nats.txn import NatsTxn, pattern_keys
from app.errors import redact_url

__all__ = ["NatsBackend", "max_batch_of", "replicas_of", "servers_of"]

#: The smallest ``?max_batch=``: a write, a check and the commit.
SMALLEST_BATCH = 10


def servers_of(url: str) -> list[str]:
    """The server URLs of ``nats://[user:pass@]h1:4222[,h2:4222][?replicas=N&max_batch=M]``."""
    parts = urlsplit(url)
    if parts.scheme != "nats" or not parts.netloc:
        raise ValueError(f"not a nats:// URL with a host: {redact_url(url)!r}")
    credentials, _, hosts = parts.netloc.rpartition("@")
    prefix = f"nats://{credentials}@" if credentials else "nats://"
    servers = [prefix + host for host in hosts.split(",") if host]
    if not servers:
        raise ValueError(f"no server in {redact_url(url)!r}")
    return servers


def replicas_of(url: str) -> int:
    """``?replicas=N`` (1 to 5): the replicas of the buckets Corkboard creates."""
    values = parse_qs(urlsplit(url).query, keep_blank_values=True).get("replicas", ["1"])
    if (len(values) != 1 or not (values[0].isascii() and values[0].isdigit())
            or not 1 <= int(values[0]) <= 5):
        # Not the URL itself: it may hold credentials.
        raise ValueError(
            f"replicas must be one number from 1 to 5 in the nats:// URL, "
            f"not {', '.join(values)[:40]!r}"
        )
    return int(values[0])


def max_batch_of(url: str) -> int:
    """``?max_batch=N`` (10 to 100,000, default 1,000): the most messages Corkboard puts
    in one JetStream atomic batch; the servers' ``jetstream { limits { batch { max_msgs
    } } }`` must allow as many (docs/nats.md)."""
    query = parse_qs(urlsplit(url).query, keep_blank_values=True)
    values = query.get("max_batch", [str(DEFAULT_MAX_BATCH)])
    if (len(values) != 1 or not (values[0].isascii() and values[0].isdigit())
            or not SMALLEST_BATCH <= int(values[0]) <= LARGEST_BATCH):
        # Not the URL itself: it may hold credentials.
        raise ValueError(
            f"max_batch must be one number from {SMALLEST_BATCH} to {LARGEST_BATCH} in the "
            f"nats:// URL, not {', '.join(values)[:40]!r}"
        )
    return int(values[0])


class NatsBackend(ComposedBackend):
    """State in NATS JetStream KV buckets, shared by every replica pointing at it."""

    def __init__(
        self, url: str, *, timeout: float = 2.0, key_history: int = 10,
        event_retention: int = 100_000, replicas: int | None = None,
        lock_max_waiters: int = 1000, max_leases: int = 100_000, max_keys: int = 1_000_000,
        max_bytes: int = 1_073_741_824, event_retention_bytes: int = 64 * 1_048_576,
        max_locks: int = 100_000,
    ) -> None:
        self.url = url
        max_batch = max_batch_of(url)
        self.info = BackendInfo(
            name="nats", persistence=True, distribution=True,
            extra={"limits": {"max_pattern_delete_keys": pattern_keys(max_batch)}},
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
        self.sessions = NatsSessions(self.store, self.quotas, max_locks=max_locks)
        self.lock_engine = NatsLocks(self.store, self.sessions, max_waiters=lock_max_waiters,
                                     max_locks=max_locks)
        self.locks = self.lock_engine
        self.artifacts = NatsArtifacts(self.store)
        self.log = NatsLog(
            self.store, self.keys, self.lock_engine, self.sessions, self.artifacts, self.ledger
        )
        self.leases = NatsLeases(self.store, self.keys, self.lock_engine, max_leases=max_leases,
                                 max_batch=max_batch)
        self.log.lease_sweep = self.leases.sweep
        self.txns = NatsTxn(self.store, self.keys, max_batch=max_batch)

    async def start(self) -> None:
        await self.store.start()

    async def close(self) -> None:
        await self.lock_engine.close()
        await self.trimmer.close()
        await self.store.close()

    async def ping(self) -> None:
        await self.store.ping()
