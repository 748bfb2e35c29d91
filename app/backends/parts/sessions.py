"""The session store: sessions, their variables, subscriptions, dedupe window,
thread/channel state, snapshots and imports."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from app.domain.conditions import NO_CONDITION, Condition
from app.domain.fence import Fence
from app.domain.sessions import (
    ImportResult,
    SessionInfo,
    SessionSnapshot,
    StateKind,
    StateUpdate,
    Variable,
    WriteOutcome,
)
from app.syntax import Pattern


class SessionStore(ABC):
    """Sessions (API.md section 5): created by their first write and removed, with all
    their state and their locks' holders and pending entries, by a delete or by their
    idle TTL. Every change appends one event carrying ``session``; ``fence`` is checked
    first, atomically with the change. Writes that change nothing create no session."""

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
