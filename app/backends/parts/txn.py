"""Transactions, pattern deletes and leases (API.md sections 10 and 11): a part of the
Backend interface; the values it returns are in ``app.domain.leases``.

A transaction's plan (app/txn.py) is applied in one atomic step: all its writes take one
revision and append one ``txn`` event whose ``changes`` list each change as a key event
would. A lease ends (revoked, or expired by the sweeper at its deadline) in one atomic
step too: its keys are deleted and its locks released at one revision, with one
``lease.revoked`` / ``lease.expired`` event listing them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.domain.fence import Fence
    from app.domain.leases import LeaseDetail, LeaseInfo, PatternDelete, TxnOutcome
    from app.syntax import Pattern
    from app.txn import Limits, Txn


class TxnStore(ABC):
    """Transactions and pattern deletes: many key changes at one revision."""

    @abstractmethod
    async def txn(
        self, ns: str, txn: Txn, limits: Limits, *, fence: Fence | None = None
    ) -> TxnOutcome:
        """Evaluate the compares and apply one branch atomically (app/txn.py ``plan``).

        Raises StaleFence, LeaseNotFound for a put on a lease that is not live, and the
        errors of the chosen branch's ops; nothing changes then.
        """

    @abstractmethod
    async def kv_delete_pattern(
        self, ns: str, pattern: Pattern, *, fence: Fence | None = None
    ) -> PatternDelete:
        """Delete every live key matching ``pattern`` at one revision with one ``txn``
        event; TooManyKeys (nothing deleted) beyond MAX_PATTERN_DELETE."""


class LeaseStore(ABC):
    """Leases: keys and locks attached to a lease go when it ends."""

    @abstractmethod
    async def lease_grant(self, ns: str, lease_id: str, ttl_ms: int) -> LeaseInfo:
        """A new lease expiring ``ttl_ms`` from now, with a ``lease.granted`` event;
        Conflict(already_exists) while a lease with that id lives."""

    @abstractmethod
    async def lease_keepalive(self, ns: str, lease_id: str) -> LeaseInfo:
        """Push the deadline to ``ttl`` from now (no revision); LeaseNotFound once it
        has expired."""

    @abstractmethod
    async def lease_get(self, ns: str, lease_id: str) -> LeaseDetail | None:
        """The live lease with its attached keys and held locks, or None."""

    @abstractmethod
    async def lease_list(
        self, ns: str, pattern: Pattern, *, limit: int, after: str | None
    ) -> tuple[list[LeaseInfo], str | None]:
        """Live leases whose ids match ``pattern``, in id order after ``after``; the id to
        continue after when more may follow."""

    @abstractmethod
    async def lease_revoke(self, ns: str, lease_id: str) -> LeaseDetail:
        """End the lease now: delete its keys and release its locks (their pending
        entries stay for the next acquirer) at one revision with ``lease.revoked``.
        LeaseNotFound when it is not live."""
