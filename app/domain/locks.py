"""What the lock engine takes and gives, shared by every backend (API.md section 4).

A lock is named within a *scope*: "" for the namespace's locks, a session id for a
session's locks. Each (scope, name) has a holder (or none), a never-reset token counter,
a pending list of queued entries that survives expiry, and a FIFO of waiters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

import orjson

from app.errors import Conflict, TooManyWaiters
from app.syntax import iso_ms

LockMode = Literal["exclusive", "queue", "debounce"]
LOCK_MODES: tuple[LockMode, ...] = ("exclusive", "queue", "debounce")


@dataclass(frozen=True, slots=True)
class LockRequest:
    """One acquisition attempt. ``entry`` is JSON bytes; ``wait_s`` applies to exclusive."""

    owner: str
    ttl_ms: int
    mode: LockMode = "exclusive"
    entry: bytes = b"null"
    wait_s: float = 0.0
    max_pending: int = 10_000
    #: A lease the lock is held on: it is released when the lease ends (then ttl_ms is 0).
    lease: str | None = None


@dataclass(frozen=True, slots=True)
class LockInfo:
    """A lock's holder. Times are epoch ms; ``expires_at`` None means no expiry."""

    name: str
    owner: str
    token: int
    acquired_at: int
    expires_at: int | None
    pending_count: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "owner": self.owner,
            "token": self.token,
            "acquired_at": iso_ms(self.acquired_at),
            "expires_at": iso_ms(self.expires_at) if self.expires_at else None,
            "pending_count": self.pending_count,
        }


@dataclass(frozen=True, slots=True)
class LockOutcome:
    """The answer to an acquisition that did not fail.

    ``acquired``: ``holder`` is the lock as now held and ``pending`` the entries handed
    over (taken off the pending list). ``queued``: ``position`` is the entry's 1-based
    place in the pending list. ``debounced``: the pending list is now just this entry.
    """

    status: Literal["acquired", "queued", "debounced"]
    holder: LockInfo | None = None
    pending: tuple[bytes, ...] = ()
    position: int | None = None

    def to_json(self) -> bytes:
        if self.status == "acquired":
            assert self.holder is not None
            h = self.holder
            return orjson.dumps(
                {
                    "status": "acquired",
                    "name": h.name,
                    "owner": h.owner,
                    "token": h.token,
                    "acquired_at": iso_ms(h.acquired_at),
                    "expires_at": iso_ms(h.expires_at) if h.expires_at else None,
                    "pending": [orjson.Fragment(p) for p in self.pending],
                }
            )
        if self.status == "queued":
            return orjson.dumps({"status": "queued", "position": self.position})
        return b'{"status":"debounced"}'


@dataclass(frozen=True, slots=True)
class LockRelease:
    """A release: the holder it ended (None for a force-release of a free lock) and the
    pending entries handed to the caller."""

    holder: LockInfo | None
    pending: tuple[bytes, ...]

    def to_json(self) -> bytes:
        body: dict[str, Any] = {
            "status": "released" if self.holder is not None else "free",
            "pending": [orjson.Fragment(p) for p in self.pending],
        }
        if self.holder is not None:
            body["owner"] = self.holder.owner
            body["token"] = self.holder.token
        return orjson.dumps(body)


def lock_held(holder: LockInfo, *, full: bool = False) -> Conflict:
    """409 lock_held, carrying the holder."""
    if full:
        detail = (
            f"Lock {holder.name!r} is held by {holder.owner!r} and its pending list is full "
            f"({holder.pending_count} entries); the entry was not queued."
        )
    else:
        detail = f"Lock {holder.name!r} is held by {holder.owner!r} (token {holder.token})."
    return Conflict(detail, code="lock_held", holder=holder.as_dict())


def client_gone(name: str) -> Conflict:
    """409 lock_held for a waiter whose client went away (nobody reads it)."""
    return Conflict(
        f"The client went away while waiting for lock {name!r}; it was not acquired.",
        code="lock_held",
    )


def not_owner(holder: LockInfo, owner: str) -> Conflict:
    """409 not_owner: someone else holds the lock."""
    return Conflict(
        f"Lock {holder.name!r} is held by {holder.owner!r}, not {owner!r}.",
        code="not_owner",
        holder=holder.as_dict(),
    )


def lock_not_held(name: str, token: int) -> Conflict:
    """409 lock_not_held: the token no longer holds the lock (released or expired)."""
    return Conflict(
        f"Token {token} no longer holds lock {name!r}: it was released or expired.",
        code="lock_not_held",
    )


def too_many_waiters(name: str, limit: int) -> TooManyWaiters:
    """The 429 for a waiter beyond CORKBOARD_LOCK_MAX_WAITERS; it did not join the line."""
    return TooManyWaiters(
        f"Lock {name!r} already has {limit} callers waiting (CORKBOARD_LOCK_MAX_WAITERS); "
        "retry later.",
        limit=limit,
    )


class Holder(Protocol):
    """What a lock event needs of a holder, whatever the engine keeps it as."""

    @property
    def owner(self) -> str | None: ...
    @property
    def token(self) -> int: ...
    @property
    def expires_at(self) -> int | None: ...


def holder_event_fields(
    holder: Holder, pending_count: int, handed_over: int | None = None
) -> dict[str, Any]:
    """A lock event's fields on every engine: the holder, the pending list's length after
    the change and, on acquired/refreshed/released, how many entries the change handed
    over."""
    fields: dict[str, Any] = {
        "owner": holder.owner,
        "token": holder.token,
        "expires_at": iso_ms(holder.expires_at) if holder.expires_at else None,
        "pending_count": pending_count,
    }
    if handed_over is not None:
        fields["handed_over"] = handed_over
    return fields
