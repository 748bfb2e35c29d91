# Generated from _async/locks.py by scripts/unasync.py: do not edit.
"""Locks (API.md section 4): acquire/refresh/release calls, and ``lock()``, a context
manager that holds a lock, refreshes it in the background and fences the writes made
through the client inside it."""

from __future__ import annotations

import contextvars
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any, Literal

from corkboard.client._sync.base import Base
from corkboard.client._sync.paging import every
from corkboard.client._concurrency import Ticker
from corkboard.client._protocol import (
    Call,
    default_owner,
    duration_seconds,
    fence_context,
    id_path,
    key_path,
    params,
    pop_fence,
    push_fence,
)
from corkboard.client.errors import (
    Conflict,
    CorkboardError,
    LockLost,
    NotFound,
    Unavailable,
)
from corkboard.client.txn import lease_id
from corkboard.client.types import (
    Duration,
    Fence,
    LeaseRef,
    LockGrant,
    LockHolder,
    LockQueued,
    LockRelease,
    Page,
)

DEFAULT_LOCK_TTL = 30.0
#: The server waits at most this long in one acquire call.
MAX_WAIT = 60.0


def _locks_path(name: str | None, session: str | None) -> str:
    base = f"/v1/sessions/{id_path(session)}/locks" if session else "/v1/locks"
    return base if name is None else f"{base}/{key_path(name)}"


class Locks(Base):
    def acquire(
        self, name: str, *, owner: str | None = None, ttl: Duration | None = None,
        wait: Duration | None = None, mode: Literal["exclusive", "queue", "debounce"] =
        "exclusive", entry: Any = None, session: str | None = None,
        lease: LeaseRef | None = None,
    ) -> LockGrant | LockQueued:
        """Acquire ``name`` (a session's lock with ``session``). Held by another:
        ``exclusive`` waits up to ``wait`` then raises LockHeld; ``queue``/``debounce``
        give LockQueued. With ``lease`` (not with ``ttl`` or ``wait``) the lock is held
        until that lease ends. Never retried (a repeat could take the lock twice)."""
        body: dict[str, Any] = {"owner": owner or default_owner(), "mode": mode}
        if lease is not None:
            body["lease"] = lease_id(lease)
        if ttl is not None:
            body["ttl"] = ttl
        if wait is not None:
            body["wait"] = wait
        if entry is not None:
            body["entry"] = entry
        waited = duration_seconds(wait) if wait is not None else 0.0
        data = self._json(
            Call.write("POST", _locks_path(name, session), body, fenced=False),
            timeout=self.timeout + min(waited, MAX_WAIT),
        )
        if data.get("status") == "acquired":
            return LockGrant.from_json(data, session)
        return LockQueued.from_json(data)

    def refresh_lock(
        self, name: str, owner: str, token: int, *, ttl: Duration | None = None,
        session: str | None = None,
    ) -> LockHolder:
        """Extend a held lock's lease; LockNotHeld once that token no longer holds it."""
        body: dict[str, Any] = {"owner": owner, "token": token}
        if ttl is not None:
            body["ttl"] = ttl
        call = Call.write("POST", _locks_path(name, session) + "/refresh", body, fenced=False,
                          retry=True)
        return LockHolder.from_json(self._json(call))

    def release(
        self, name: str, owner: str, token: int, *, session: str | None = None
    ) -> LockRelease:
        """Release a held lock; the answer hands over the pending entries."""
        call = Call.write("POST", _locks_path(name, session) + "/release",
                          {"owner": owner, "token": token}, fenced=False)
        return LockRelease.from_json(self._json(call))

    def force_release(self, name: str, *, session: str | None = None) -> LockRelease:
        """Release whatever holds the lock (needs ``admin``)."""
        call = Call.write("POST", _locks_path(name, session) + "/force-release", fenced=False)
        return LockRelease.from_json(self._json(call))

    def get_lock(self, name: str, *, session: str | None = None) -> LockHolder | None:
        """The lock's holder, or None when it is free."""
        try:
            return LockHolder.from_json(self._json(Call.read(_locks_path(name, session))))
        except NotFound:
            return None

    def list_locks(
        self, pattern: str = "*", *, session: str | None = None, limit: int | None = None,
        cursor: str | None = None,
    ) -> Page[LockHolder]:
        """One page of the held locks whose names match ``pattern``, in name order."""
        data = self._json(Call.read(
            _locks_path(None, session), params(pattern=pattern, limit=limit, cursor=cursor)
        ))
        return Page([LockHolder.from_json(h) for h in data["items"]],
                    data.get("next_cursor"), None)

    def iter_locks(
        self, pattern: str = "*", *, session: str | None = None, page_size: int | None = None
    ) -> Iterator[LockHolder]:
        """Every held lock whose name matches ``pattern``, page after page."""
        return every(lambda cursor: self.list_locks(
            pattern, session=session, limit=page_size, cursor=cursor))

    def lock(
        self, name: str, *, ttl: Duration = DEFAULT_LOCK_TTL, owner: str | None = None,
        wait: Duration | None = None, session: str | None = None,
        refresh_every: float | None = None,
    ) -> Lock:
        """``with client.lock(name, ttl=10) as held:`` holds the lock, refreshing
        it every ttl/3, and fences every write made through this client (and namespace)
        in the block. Losing it is detected by the refresher (``held.lost``, ``check()``),
        makes fenced writes fail with StaleFence, and raises LockLost on exit."""
        return Lock(self, name, ttl=ttl, owner=owner, wait=wait, session=session,
                         refresh_every=refresh_every)

    @contextmanager
    def fenced(self, fence: Fence | LockGrant) -> Iterator[Fence]:
        """Fence the writes made through this client in the block with a grant (or a
        Fence) that the caller holds and refreshes itself."""
        if isinstance(fence, LockGrant):
            fence = Fence(fence.name, fence.token, fence.session)
        with fence_context(self._scope, self.ns, fence) as f:
            yield f


class Lock:
    """A held lock (see ``Locks.lock``): ``grant``, ``token``, ``fence``, ``lost``."""

    def __init__(
        self, client: Locks, name: str, *, ttl: Duration, owner: str | None,
        wait: Duration | None, session: str | None, refresh_every: float | None,
    ) -> None:
        self.client = client
        self.name = name
        self.ttl = ttl
        self.ttl_seconds = duration_seconds(ttl)
        if self.ttl_seconds <= 0:
            raise ValueError("a lock held by lock() needs a ttl above 0")
        self.owner = owner or default_owner()
        self.wait = wait
        self.session = session
        self.refresh_every = refresh_every or self.ttl_seconds / 3
        self.grant: LockGrant | None = None
        self.lost: CorkboardError | None = None
        self.refreshes = 0
        self._deadline = 0.0
        self._ticker: Ticker | None = None
        self._token: contextvars.Token[Any] | None = None

    @property
    def token(self) -> int:
        assert self.grant is not None, "the lock is not held"
        return self.grant.token

    @property
    def fence(self) -> Fence:
        return Fence(self.name, self.token, self.session)

    def check(self) -> None:
        """Raise LockLost if the refresher found the lock lost."""
        if self.lost is not None:
            raise LockLost(f"lock {self.name!r} (token {self.token}) was lost: {self.lost}")

    def _refresh(self) -> bool:
        started = time.monotonic()
        try:
            self.client.refresh_lock(self.name, self.owner, self.token, ttl=self.ttl,
                                           session=self.session)
        except Unavailable as exc:  # no answer: still ours until the lease runs out
            if time.monotonic() >= self._deadline:
                self.lost = exc
                return False
            return True
        except CorkboardError as exc:  # lock_not_held, not_owner, or refused outright
            self.lost = exc
            return False
        self.refreshes += 1
        self._deadline = started + self.ttl_seconds
        return True

    def __enter__(self) -> Lock:
        started = time.monotonic()
        grant = self.client.acquire(self.name, owner=self.owner, ttl=self.ttl,
                                          wait=self.wait, session=self.session)
        assert isinstance(grant, LockGrant)  # exclusive mode: held, or LockHeld raised
        self.grant = grant
        self._deadline = started + self.ttl_seconds
        self._token = push_fence(self.client._scope, self.client.ns, self.fence)
        self._ticker = Ticker(self.refresh_every, self._refresh)
        self._ticker.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._ticker is not None:
            self._ticker.stop()
        if self._token is not None:
            pop_fence(self._token)
        if self.lost is None:
            try:
                self.client.release(self.name, self.owner, self.token,
                                          session=self.session)
            except (Conflict, NotFound) as error:
                self.lost = error
            except Unavailable:
                if exc is None:
                    raise
        if self.lost is not None and exc is None:
            self.check()
