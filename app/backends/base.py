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
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from app.backends.base_txn import TxnStore
from app.domain.conditions import NO_CONDITION, Condition, Precondition
from app.domain.events import ChangeEvent, EventBatch
from app.domain.fence import Fence
from app.domain.keys import KeyEntry, KeyPage, PutResult, ValueUpdate
from app.domain.locks import LockInfo, LockOutcome, LockRelease, LockRequest
from app.syntax import Pattern

__all__ = [  # the values the interface speaks in, for its callers' convenience
    "NO_CONDITION", "Backend", "BackendInfo", "ChangeEvent", "Condition", "EventBatch",
    "Fence", "KeyEntry", "KeyPage", "Precondition", "PutResult", "raise_if_cancelling",
]

if TYPE_CHECKING:
    from app.domain.artifacts import (
        ArtifactMeta,
        ArtifactPage,
        ArtifactPut,
    )
    from app.domain.sessions import (
        ImportResult,
        SessionInfo,
        SessionSnapshot,
        StateKind,
        StateUpdate,
        Variable,
        WriteOutcome,
    )

logger = logging.getLogger("corkboard.backend")


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


class Backend(TxnStore, ABC):
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

    # -- locks -----------------------------------------------------------------------
    # ``scope`` is "" for the namespace's locks (/v1/locks) or a session id for a
    # session's locks; events of a session-scoped lock carry ``session`` = the scope.

    @abstractmethod
    async def lock_acquire(
        self,
        ns: str,
        scope: str,
        name: str,
        request: LockRequest,
        gone: asyncio.Event | None = None,
    ) -> LockOutcome:
        """Acquire ``name`` for ``request.owner``, or queue/debounce its entry.

        Free (or past its deadline): a new holder with the next fencing token; the pending
        entries are handed over (and cleared). Held by the same owner: extended, same
        token, pending handed over. Held by another: ``queue`` appends the entry,
        ``debounce`` replaces the pending list with it; ``exclusive`` waits up to
        ``wait_s`` in FIFO order, then raises Conflict(lock_held) with the holder.
        ``gone`` set while waiting (the client went away) ends the wait: the waiter
        leaves the line, gives back a lock handed to it, and gets Conflict(lock_held).
        """

    @abstractmethod
    async def lock_refresh(
        self, ns: str, scope: str, name: str, owner: str, token: int, ttl_ms: int | None
    ) -> LockInfo:
        """Extend the holder's deadline by ``ttl_ms`` (None: the TTL it was acquired with).

        Raises Conflict(lock_not_held) when free or held under another token by this
        owner, Conflict(not_owner) when another owner holds it.
        """

    @abstractmethod
    async def lock_release(
        self, ns: str, scope: str, name: str, owner: str, token: int
    ) -> LockRelease:
        """Release and hand the pending entries to the caller; the next waiter gets the
        lock. Errors as for ``lock_refresh``."""

    @abstractmethod
    async def lock_force_release(self, ns: str, scope: str, name: str) -> LockRelease:
        """Release whatever holds the lock (admin) and hand over the pending entries; on
        a free lock, only the pending entries are taken."""

    @abstractmethod
    async def lock_get(self, ns: str, scope: str, name: str) -> tuple[LockInfo | None, int]:
        """The live holder (None when free) and the number of pending entries."""

    @abstractmethod
    async def lock_list(self, ns: str, scope: str, pattern: Pattern) -> list[LockInfo]:
        """The held locks of ``scope`` whose names match ``pattern``, in name order."""
    # -- artifacts -------------------------------------------------------------------
    # The bytes live in the artifact store under a blob id; these methods keep the
    # metadata and the life cycle of blob ids: reserved while uploading, referenced by
    # an artifact, then garbage (after a grace) to be removed from the store.

    @abstractmethod
    async def artifact_reserve(self, ns: str, blob: str, deadline_ms: int) -> None:
        """Record an upload starting into ``blob``: unless ``artifact_put`` commits it by
        ``deadline_ms``, the blob becomes garbage (a crashed server's upload is removed)."""

    @abstractmethod
    async def artifact_discard(self, ns: str, blob: str) -> None:
        """Forget a reserved blob whose upload failed and whose bytes were removed."""

    @abstractmethod
    async def artifact_put(
        self,
        ns: str,
        key: str,
        *,
        blob: str,
        size: int,
        sha256: str,
        content_type: str,
        ttl_ms: int = 0,
        grace_ms: int = 0,
        condition: Condition | None = None,
        fence: Fence | None = None,
    ) -> ArtifactPut:
        """Make the reserved ``blob`` the artifact's content, atomically with the fence
        check, the precondition, the revision and the ``artifact.put`` event; the
        replaced version's blob becomes garbage after its grace. Raises StaleFence,
        PreconditionFailed, or RequestTimeout when the reservation has lapsed."""

    @abstractmethod
    async def artifact_get(self, ns: str, key: str) -> ArtifactMeta | None:
        """The live artifact's metadata, or None (also once its TTL has passed)."""

    @abstractmethod
    async def artifact_delete(
        self,
        ns: str,
        key: str,
        *,
        condition: Condition | None = None,
        fence: Fence | None = None,
    ) -> ArtifactMeta | None:
        """Delete the artifact with an ``artifact.delete`` event; None when absent (no
        event). Its blob becomes garbage after its grace."""

    @abstractmethod
    async def artifact_list(
        self, ns: str, pattern: Pattern, *, limit: int, after: str | None
    ) -> ArtifactPage:
        """Live artifacts matching ``pattern`` in key order, strictly after ``after``."""

    @abstractmethod
    async def artifact_garbage(self, *, limit: int, lease_ms: int) -> list[tuple[str, str]]:
        """Claim up to ``limit`` due garbage blobs as (namespace, blob) pairs, across
        namespaces; a claim not confirmed by ``artifact_garbage_done`` within
        ``lease_ms`` is handed out again, so a crash between the two loses nothing."""

    @abstractmethod
    async def artifact_garbage_done(self, ns: str, blobs: list[str]) -> None:
        """Forget garbage blobs whose bytes have been removed from the store."""


    # -- sessions --------------------------------------------------------------------
    # A session (API.md section 5) is created by its first write and removed, with all its
    # state and its locks' holders and pending entries, by a delete or by its idle TTL.
    # Every change appends one event carrying ``session``; ``fence`` is checked first,
    # atomically with the change. Writes that change nothing create no session.

    @abstractmethod
    async def session_put(
        self, ns: str, sid: str, metadata: bytes, ttl_ms: int, *, fence: Fence | None = None
    ) -> tuple[SessionInfo, bool]:
        """Create the session or replace its metadata and idle TTL; True when created."""

    @abstractmethod
    async def session_get(self, ns: str, sid: str) -> SessionInfo | None:
        """The live session, or None."""

    @abstractmethod
    async def session_list(
        self, ns: str, pattern: Pattern, *, limit: int, after: str | None
    ) -> tuple[list[SessionInfo], str | None]:
        """Live sessions matching ``pattern`` in id order after ``after``; the next cursor."""

    @abstractmethod
    async def session_delete(self, ns: str, sid: str, *, fence: Fence | None = None) -> bool:
        """Remove the session and all its state; False when there was none."""

    @abstractmethod
    async def session_use(self, ns: str, sid: str, lock_name: str | None = None) -> None:
        """Create the session if needed and count a write (idle TTL); ``lock_name`` is a
        session lock that was used, remembered so snapshots find its pending list."""

    @abstractmethod
    async def session_lock_index(self, ns: str, sid: str, lock_name: str) -> None:
        """Remember a session lock about to be used (before the lock call), so that no
        snapshot misses its pending list; creates no session."""

    @abstractmethod
    async def var_register(
        self, ns: str, sid: str, var: Variable, *, fence: Fence | None = None
    ) -> Variable:
        """Store a new, already validated variable (id, name, type, value, constraints,
        metadata, description) at version 1. Conflict(already_exists) if the name is
        taken."""

    @abstractmethod
    async def var_get(self, ns: str, sid: str, ident: str) -> Variable | None:
        """The variable with this name or id (ids start with 'var_'), or None."""

    @abstractmethod
    async def var_list(self, ns: str, sid: str) -> list[Variable]:
        """Every variable of the session, by name."""

    @abstractmethod
    async def var_read(self, ns: str, sid: str, idents: Sequence[str]) -> dict[str, Variable]:
        """The variables among ``idents`` (names or ids) that exist, keyed by ident."""

    @abstractmethod
    async def var_write(
        self,
        ns: str,
        sid: str,
        updates: Sequence[tuple[str, Any]],
        *,
        metadata: dict[str, Any] | None = None,
        atomic: bool = True,
        batch: bool = False,
        condition: Condition = NO_CONDITION,
        fence: Fence | None = None,
    ) -> WriteOutcome:
        """Set values (decoded JSON) by ident, each checked against its variable's type
        and constraints by ``plan_writes`` before the atomic step; ``metadata`` is merged
        (RFC 7396) into each. Atomic: any error writes nothing. The written variables take
        version + 1 in one revision and one event (``batch``: the batch shape)."""

    @abstractmethod
    async def var_delete(
        self,
        ns: str,
        sid: str,
        ident: str,
        *,
        condition: Condition = NO_CONDITION,
        fence: Fence | None = None,
    ) -> Variable:
        """Delete a variable; returns it as it was. NotFound when absent."""

    @abstractmethod
    async def subscription_set(
        self, ns: str, sid: str, thread: str, subscribed: bool, *, fence: Fence | None = None
    ) -> bool:
        """Subscribe or unsubscribe a thread; True when that changed anything."""

    @abstractmethod
    async def subscription_list(self, ns: str, sid: str) -> list[str]:
        """The subscribed threads, sorted."""

    @abstractmethod
    async def subscription_get(self, ns: str, sid: str, thread: str) -> bool:
        """Whether the session is subscribed to ``thread``."""

    @abstractmethod
    async def dedupe_check(
        self, ns: str, sid: str, key: str, limit: int, *, fence: Fence | None = None
    ) -> bool:
        """True if ``key`` is in the session's dedupe window; else record it as the newest,
        drop the oldest beyond ``limit`` and return False. Atomic."""

    @abstractmethod
    async def state_get(self, ns: str, sid: str, kind: StateKind, ident: str) -> bytes | None:
        """A thread's or channel's state map (JSON bytes), or None."""

    @abstractmethod
    async def state_update(
        self,
        ns: str,
        sid: str,
        kind: StateKind,
        ident: str,
        update: StateUpdate,
        *,
        fence: Fence | None = None,
    ) -> tuple[bytes | None, bool]:
        """Apply ``update`` to the current state atomically (None out deletes). Returns the
        new state and whether it was created."""

    @abstractmethod
    async def session_snapshot(self, ns: str, sid: str) -> SessionSnapshot | None:
        """The whole live session at one revision, or None."""

    @abstractmethod
    async def session_import(
        self, ns: str, sid: str, snapshot: SessionSnapshot, *, fence: Fence | None = None
    ) -> ImportResult:
        """Replace the session with a normalized snapshot, atomically, in one revision.

        Lock holders keep their imported token unless it was already given out for that
        lock here (and is not the same holder): then they get the next token. The token
        counter never goes down."""
