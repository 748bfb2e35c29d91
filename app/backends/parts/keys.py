"""The key store: a namespace's keys, their kept revisions, TTLs and listing."""

from __future__ import annotations

from abc import ABC, abstractmethod

from app.domain.conditions import NO_CONDITION, Condition
from app.domain.fence import Fence
from app.domain.keys import KeyEntry, KeyPage, PutResult, ValueUpdate
from app.syntax import Pattern


class KeyStore(ABC):
    """A namespace's keys: each is an entry with a revision, a version, times, an optional
    expiry and lease, and a bounded history of kept revisions. Writes check the fence
    first, then the condition, atomically with the change and its ``kv.*`` event."""

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
        condition: Condition = NO_CONDITION,
        fence: Fence | None = None,
        lease: str | None = None,
    ) -> PutResult:
        """Store ``value``; a TTL of 0 means no expiry. With ``lease`` the key lives as long
        as that lease; without, a key on a lease leaves it. Raises PreconditionFailed,
        StaleFence, LeaseNotFound."""

    @abstractmethod
    async def kv_update(
        self,
        ns: str,
        key: str,
        update: ValueUpdate,
        *,
        initial: bytes | None = None,
        ttl_ms: int | None = None,
        condition: Condition = NO_CONDITION,
        fence: Fence | None = None,
        lease: str | None = None,
    ) -> PutResult:
        """Apply ``update`` to the current value (or ``initial``) atomically.

        Missing key without ``initial``: NotFound. ``ttl_ms`` None and no ``lease`` keep
        the key's expiry and lease; a ``ttl_ms`` or a ``lease`` replaces them. Errors
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
        condition: Condition = NO_CONDITION,
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
