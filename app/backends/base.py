"""The Backend interface: what a state store must do, defined once for every backend.

A backend stores and never builds HTTP responses. Each mutating call is atomic: the
change, the namespace's next revision, the key's history and the appended change event
happen together or not at all. Values travel as JSON bytes so a read can be answered
without decoding and re-encoding them.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from app.errors import PreconditionFailed
from app.syntax import Pattern, iso_ms

logger = logging.getLogger("corkboard.backend")


@dataclass(frozen=True, slots=True)
class KeyEntry:
    """One key at one revision. Times are epoch milliseconds; ``value`` is JSON bytes."""

    key: str
    value: bytes
    revision: int
    created_revision: int
    version: int
    created_at: int
    modified_at: int
    expires_at: int | None

    def as_dict(self, *, with_value: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {"key": self.key}
        if with_value:
            out["value"] = orjson.Fragment(self.value)
        out["revision"] = self.revision
        out["created_revision"] = self.created_revision
        out["version"] = self.version
        out["created_at"] = iso_ms(self.created_at)
        out["modified_at"] = iso_ms(self.modified_at)
        out["expires_at"] = iso_ms(self.expires_at) if self.expires_at else None
        return out

    def to_json(self) -> bytes:
        return orjson.dumps(self.as_dict())

    @property
    def etag(self) -> str:
        return f'"{self.revision}"'


@dataclass(frozen=True, slots=True)
class PutResult:
    entry: KeyEntry
    created: bool


@dataclass(frozen=True, slots=True)
class KeyPage:
    items: list[KeyEntry]
    next_cursor: str | None
    revision: int


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    """One entry of a namespace's change log; ``data`` is the event's JSON object."""

    revision: int
    type: str
    key: str
    session: str | None
    data: bytes


@dataclass(frozen=True, slots=True)
class EventBatch:
    """Events after a revision. Events at or below ``compacted_revision`` are gone."""

    events: list[ChangeEvent]
    current_revision: int
    compacted_revision: int


@dataclass(frozen=True, slots=True)
class Precondition:
    """A write's condition: If-Match (a revision, or any existing entry) / If-None-Match: *."""

    match_revision: int | None = None
    must_exist: bool = False
    must_not_exist: bool = False

    @property
    def any(self) -> bool:
        return self.match_revision is not None or self.must_exist or self.must_not_exist


NO_CONDITION = Precondition()


def check_precondition(condition: Precondition, current: KeyEntry | None) -> None:
    """Raise PreconditionFailed (412) when ``condition`` does not hold for ``current``."""
    if condition.must_not_exist and current is not None:
        raise PreconditionFailed(
            "The key already exists (If-None-Match: *).", code="already_exists", current=current
        )
    if (condition.must_exist or condition.match_revision is not None) and current is None:
        raise PreconditionFailed("The key does not exist (If-Match).", current=None)
    if (
        condition.match_revision is not None
        and current is not None
        and current.revision != condition.match_revision
    ):
        raise PreconditionFailed(
            f"The key is at revision {current.revision}, not {condition.match_revision}.",
            current=current,
        )


@dataclass(frozen=True, slots=True)
class Fence:
    """Fence-Lock/Fence-Token: the write applies only while ``token`` holds the lock.

    ``scope`` is "" for namespace locks, or a session id for session-scoped locks.
    """

    name: str
    token: int
    scope: str = ""


#: A server-side transformation of a key's value: the current (or initial) value's JSON
#: bytes in, the new value's JSON bytes out. It may raise a CorkboardError to refuse.
ValueUpdate = Callable[[bytes], bytes]


@dataclass(slots=True)
class BackendInfo:
    name: str
    persistence: bool
    distribution: bool
    extra: dict[str, Any] = field(default_factory=dict)


def raise_if_cancelling() -> None:
    """Raise CancelledError if this task was cancelled but a library swallowed it.

    redis-py can absorb a cancel() that lands mid-command (returning normally or raising
    another error); a loop that survives backend errors would then run forever. Every
    such loop calls this once per iteration.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def apply_update(update: ValueUpdate, base: bytes, current: KeyEntry | None) -> bytes:
    """Run a server-side update; a refused precondition (a JSON Patch ``test``) carries
    the entry it was tested against as ``current``, like every 412."""
    try:
        return update(base)
    except PreconditionFailed as exc:
        exc.extra.setdefault("current", current)
        raise


class Backend(ABC):
    """A state store for every resource of the API, one namespace = one ordering domain."""

    info: BackendInfo

    # -- lifecycle -------------------------------------------------------------------

    @abstractmethod
    async def start(self) -> None:
        """Connect, load scripts and start the deadline sweeper; raise BackendUnavailable."""

    @abstractmethod
    async def close(self) -> None:
        """Stop background tasks and release connections."""

    @abstractmethod
    async def ping(self) -> None:
        """Return when the store answers; raise BackendUnavailable otherwise."""

    # -- keys ------------------------------------------------------------------------

    @abstractmethod
    async def kv_get(self, ns: str, key: str, revision: int | None = None) -> KeyEntry | None:
        """The live entry, or with ``revision`` the newest kept entry at or below it."""

    @abstractmethod
    async def kv_put(
        self,
        ns: str,
        key: str,
        value: bytes,
        *,
        ttl_ms: int = 0,
        condition: Precondition = NO_CONDITION,
        fence: Fence | None = None,
    ) -> PutResult:
        """Store ``value``; a TTL of 0 means no expiry. Raises PreconditionFailed, StaleFence."""

    @abstractmethod
    async def kv_update(
        self,
        ns: str,
        key: str,
        update: ValueUpdate,
        *,
        initial: bytes | None = None,
        ttl_ms: int | None = None,
        condition: Precondition = NO_CONDITION,
        fence: Fence | None = None,
    ) -> PutResult:
        """Apply ``update`` to the current value (or ``initial``) atomically.

        Missing key without ``initial``: NotFound. ``ttl_ms`` None keeps the expiry. Errors
        raised by ``update`` propagate and nothing changes.
        """

    @abstractmethod
    async def kv_increment(
        self,
        ns: str,
        key: str,
        by: int | float,
        *,
        initial: int | float = 0,
        ttl_ms: int = 0,
        fence: Fence | None = None,
    ) -> PutResult:
        """Add ``by`` to a numeric value (``initial`` when missing; ``ttl_ms`` then applies).

        Raises Unprocessable when the value is not a number or the result is not exact.
        """

    @abstractmethod
    async def kv_touch(
        self, ns: str, key: str, ttl_ms: int, *, fence: Fence | None = None
    ) -> KeyEntry:
        """Reset the key's expiry (0 removes it) without a new revision. NotFound if absent."""

    @abstractmethod
    async def kv_delete(
        self,
        ns: str,
        key: str,
        *,
        condition: Precondition = NO_CONDITION,
        fence: Fence | None = None,
    ) -> KeyEntry | None:
        """Delete the key and its history; returns the deleted entry, None if absent."""

    @abstractmethod
    async def kv_history(self, ns: str, key: str) -> list[KeyEntry]:
        """The kept revisions of a live key, newest first; empty when the key is absent."""

    @abstractmethod
    async def kv_list(
        self, ns: str, pattern: Pattern, *, limit: int, after: str | None
    ) -> KeyPage:
        """Live keys matching ``pattern`` in key order, strictly after key ``after``."""

    # -- change log ------------------------------------------------------------------

    @abstractmethod
    async def current_revision(self, ns: str) -> int:
        """The namespace's latest revision (0 before its first change)."""

    @abstractmethod
    async def read_events(
        self, ns: str, after: int, *, limit: int = 1000, timeout: float = 0.0
    ) -> EventBatch:
        """Events with revision > ``after``, oldest first; wait up to ``timeout`` for one."""

    @abstractmethod
    async def expire_due(self) -> int:
        """Expire everything whose deadline has passed, with its events; returns the count."""

    async def run_sweeper(self, interval: float) -> None:
        """Call ``expire_due`` every ``interval`` seconds until cancelled, surviving errors."""
        while True:
            try:
                await self.expire_due()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a flaky backend must not end expiry for good
                logger.warning("deadline sweep failed: %s", exc)
            raise_if_cancelling()
            await asyncio.sleep(interval)
