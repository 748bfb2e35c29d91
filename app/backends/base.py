"""The Backend interface: what a state store must do, defined once for every backend.

A backend is made of parts, each an interface of its own in ``app/backends/parts/``:
the key store, the change log, the lock engine, the artifact index, the session store,
leases and transactions. ``Backend`` is all of them with a life cycle; a router
needs only the part it uses.

A backend stores and never builds HTTP responses. Each mutating call is atomic: the
change, the namespace's next revision, the key's history and the appended change event
happen together or not at all. Values travel as JSON bytes so a read can be answered
without decoding and re-encoding them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from app.backends.parts.artifacts import ArtifactIndex
from app.backends.parts.keys import KeyStore
from app.backends.parts.locks import LockEngine
from app.backends.parts.log import ChangeLog, raise_if_cancelling
from app.backends.parts.sessions import SessionStore
from app.backends.parts.txn import LeaseStore, TxnStore
from app.domain.conditions import NO_CONDITION, Condition, Precondition
from app.domain.events import ChangeEvent, EventBatch
from app.domain.fence import Fence
from app.domain.keys import KeyEntry, KeyPage, PutResult

__all__ = [  # the values the interface speaks in, for its callers' convenience
    "NO_CONDITION", "Backend", "BackendInfo", "ChangeEvent", "Condition", "EventBatch",
    "Fence", "KeyEntry", "KeyPage", "Precondition", "PutResult", "raise_if_cancelling",
]


@dataclass(slots=True)
class BackendInfo:
    name: str
    persistence: bool
    distribution: bool
    extra: dict[str, Any] = field(default_factory=dict)


class Backend(
    KeyStore, ChangeLog, LockEngine, ArtifactIndex, SessionStore, LeaseStore, TxnStore, ABC
):
    """A state store for every resource of the API, one namespace = one ordering domain."""

    info: BackendInfo

    @abstractmethod
    async def start(self) -> None:
        """Connect, load scripts and start the deadline sweeper; raise BackendUnavailable."""

    @abstractmethod
    async def close(self) -> None:
        """Stop background tasks and release connections."""

    @abstractmethod
    async def ping(self) -> None:
        """Return when the store answers; raise BackendUnavailable otherwise."""
