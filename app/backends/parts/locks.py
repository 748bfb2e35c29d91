"""The lock engine: holders with fencing tokens, pending lists, FIFO waiters."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod

from app.domain.locks import LockInfo, LockOutcome, LockRelease, LockRequest
from app.syntax import Pattern


class LockEngine(ABC):
    """Locks with fencing tokens, pending lists and FIFO waiters (API.md section 4).

    ``scope`` is "" for the namespace's locks (/v1/locks) or a session id for a
    session's locks; events of a session-scoped lock carry ``session`` = the scope.

    ``session=True`` (the calls that change a lock) makes the call count as a write to
    the session ``scope``, in the same atomic step as the lock change (one script on
    Redis, one critical section in memory): before anything is written, a session past
    its idle deadline is removed and, when the session does not exist, the namespace's
    byte quota is checked for creating it (QuotaExceeded: nothing changed, no lock
    taken); then, only when the call changed something (it did not raise, and a
    force-release found a holder or pending entries), the lock's name is indexed in the
    session (so its snapshot finds the pending list) and the session is created or
    touched (updated_at, idle deadline). A refused call, or one that changed nothing,
    creates, indexes and touches nothing.
    """

    @abstractmethod
    async def lock_acquire(
        self,
        ns: str,
        scope: str,
        name: str,
        request: LockRequest,
        gone: asyncio.Event | None = None,
        *,
        session: bool = False,
    ) -> LockOutcome:
        """Acquire ``name`` for ``request.owner``, or queue/debounce its entry.

        Free (or past its deadline): a new holder with the next fencing token; the pending
        entries are handed over (and cleared). Held by the same owner: extended, same
        token, pending handed over. Held by another: ``queue`` appends the entry,
        ``debounce`` replaces the pending list with it; ``exclusive`` waits up to
        ``wait_s`` in FIFO order, then raises Conflict(lock_held) with the holder.
        ``gone`` set while waiting (the client went away) ends the wait: the waiter
        leaves the line, gives back a lock handed to it, and gets Conflict(lock_held).

        ``session``: acquired, queued and debounced count as a write to the session
        (see the class); joining the line of waiters does not. A waiter handed the lock
        does the session step in the step that claims it; if the session quota refuses
        it then, the waiter gives the lock back (to the next waiter) and gets the 507.
        """

    @abstractmethod
    async def lock_refresh(
        self,
        ns: str,
        scope: str,
        name: str,
        owner: str,
        token: int,
        ttl_ms: int | None,
        *,
        session: bool = False,
    ) -> LockInfo:
        """Extend the holder's deadline by ``ttl_ms`` (None: the TTL it was acquired with).

        Raises Conflict(lock_not_held) when free or held under another token by this
        owner, Conflict(not_owner) when another owner holds it. ``session``: a refresh
        counts as a write to the session (see the class).
        """

    @abstractmethod
    async def lock_release(
        self, ns: str, scope: str, name: str, owner: str, token: int, *, session: bool = False
    ) -> LockRelease:
        """Release and hand the pending entries to the caller; the next waiter gets the
        lock. Errors as for ``lock_refresh``. ``session``: a release counts as a write to
        the session (see the class)."""

    @abstractmethod
    async def lock_force_release(
        self, ns: str, scope: str, name: str, *, session: bool = False
    ) -> LockRelease:
        """Release whatever holds the lock (admin) and hand over the pending entries; on
        a free lock, only the pending entries are taken. ``session``: counts as a write
        to the session (see the class) unless the lock was free with nothing pending."""

    @abstractmethod
    async def lock_get(self, ns: str, scope: str, name: str) -> tuple[LockInfo | None, int]:
        """The live holder (None when free) and the number of pending entries."""

    @abstractmethod
    async def lock_list(
        self, ns: str, scope: str, pattern: Pattern, *, limit: int, after: str | None
    ) -> tuple[list[LockInfo], str | None]:
        """One page of the held locks of ``scope`` whose names match ``pattern``, in name
        order after the name ``after``, and the cursor to continue after (None at the
        end). Paged like every listing (``app.backends.paging``): at most ``limit`` locks,
        and a page stops early, with a cursor, once ``LIST_SCAN_BUDGET`` names of the
        scope were examined, so one call's work is bounded however many locks it holds."""
