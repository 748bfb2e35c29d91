"""Leases, transactions and pattern deletes: the values they return (API.md sections 10
and 11), and the error of a lease that is not live."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from app.errors import LeaseNotFound
from app.syntax import iso_ms

if TYPE_CHECKING:
    from app.domain.keys import KeyEntry

#: Most keys one DELETE /v1/kv?pattern= removes; more is 409 too_many_keys.
MAX_PATTERN_DELETE = 10_000


def lease_not_found(lease_id: str) -> LeaseNotFound:
    return LeaseNotFound(
        f"Lease {lease_id!r} does not exist: it was never granted, was revoked or expired; "
        "nothing was written."
    )


def ttl_seconds(ttl_ms: int) -> int | float:
    """A TTL as JSON seconds: 10 for 10 s, 0.25 for 250 ms."""
    return ttl_ms // 1000 if ttl_ms % 1000 == 0 else ttl_ms / 1000


def ttl_json(ttl_ms: int) -> bytes:
    return orjson.dumps(ttl_seconds(ttl_ms))


@dataclass(frozen=True, slots=True)
class TxnOutcome:
    """The answer to a transaction: the branch taken, the revision (the new one when it
    wrote, else the current one) and one result per op: an entry after a write, an entry
    or None for a get, a bool for a delete."""

    succeeded: bool
    revision: int
    results: list[KeyEntry | bool | None]

    def to_json(self) -> bytes:
        out: list[Any] = []
        for r in self.results:
            if isinstance(r, bool):
                out.append({"deleted": r})
            elif r is None:
                out.append(None)
            else:
                out.append(r.as_dict())
        return orjson.dumps(
            {"succeeded": self.succeeded, "revision": self.revision, "results": out}
        )


@dataclass(frozen=True, slots=True)
class LeaseInfo:
    """A lease. Times are epoch ms."""

    id: str
    ttl_ms: int
    granted_at: int
    expires_at: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "ttl": ttl_seconds(self.ttl_ms),
            "granted_at": iso_ms(self.granted_at),
            "expires_at": iso_ms(self.expires_at),
        }


@dataclass(frozen=True, slots=True)
class LeaseLock:
    """A lock held on a lease: its name, scope ("" or a session id), holder and token."""

    name: str
    scope: str
    owner: str
    token: int

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.scope:
            out["session"] = self.scope
        out["owner"] = self.owner
        out["token"] = self.token
        return out


@dataclass(frozen=True, slots=True)
class LeaseDetail:
    """A lease with what is attached to it (or, for a revoke, what it removed)."""

    lease: LeaseInfo
    keys: list[str] = field(default_factory=list)
    locks: list[LeaseLock] = field(default_factory=list)
    revision: int | None = None

    def as_dict(self) -> dict[str, Any]:
        out = self.lease.as_dict()
        out["keys"] = self.keys
        out["locks"] = [lock.as_dict() for lock in self.locks]
        if self.revision is not None:
            out["revision"] = self.revision
        return out


@dataclass(frozen=True, slots=True)
class PatternDelete:
    """What DELETE /v1/kv?pattern= removed, and at which revision (the current one when
    nothing matched)."""

    keys: list[str]
    revision: int
