"""The embedded in-memory backend: one process, no persistence, the default.

``MemoryBackend`` is a composition of parts built on one ``MemoryStore`` (store.py, the
shared namespaces, change-log append, quotas, deadlines and fencing):

- ``keys.py``: the key store; ``log.py``: the change log and the sweeper's pass;
- ``locks.py``: the lock engine; ``sessions.py`` (with ``session_state.py``): sessions;
- ``artifacts.py``: the artifact index; ``leases.py``: leases; ``txn.py``: transactions.

Each part imports the store and the parts it builds on, never a backend module; it is
built once, here.
"""

from __future__ import annotations

from app.backends.base import BackendInfo
from app.backends.composed import ComposedBackend
from app.backends.memory.artifacts import MemoryArtifacts
from app.backends.memory.keys import MemoryKeys
from app.backends.memory.leases import MemoryLeases
from app.backends.memory.locks import MemoryLocks
from app.backends.memory.log import MemoryLog
from app.backends.memory.sessions import MemorySessions
from app.backends.memory.store import LockState, MemoryStore
from app.backends.memory.txn import MemoryTxn
from app.domain.bounds import Bounds

__all__ = ["LockState", "MemoryBackend"]


class MemoryBackend(ComposedBackend):
    """State in this process's memory; refuses nothing, remembers nothing across restarts."""

    def __init__(
        self,
        *,
        key_history: int = 10,
        event_retention: int = 100_000,
        bounds: Bounds | None = None,
    ) -> None:
        self.info = BackendInfo(name="memory", persistence=False, distribution=False)
        self.bounds = bounds or Bounds(event_retention=event_retention)
        self.store = MemoryStore(key_history=key_history, bounds=self.bounds)
        self.keys = MemoryKeys(self.store)
        self.log = MemoryLog(self.store)
        self.locks = MemoryLocks(self.store)
        self.artifacts = MemoryArtifacts(self.store)
        self.sessions = MemorySessions(self.store, self.locks)
        self.leases = MemoryLeases(self.store, self.keys, self.locks)
        self.txns = MemoryTxn(self.store, self.keys)

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def ping(self) -> None:
        return None
