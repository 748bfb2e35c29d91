"""Locks for the in-memory backend: holders, fencing tokens, pending lists and FIFO waiters.

Like every memory operation, each step runs without awaiting between read and write. The
holder lives in ``Namespace.locks`` (the fencing check reads it); the pending list and
waiters live in a per-lock slot, dropped when nothing needs it, and the token counters
beside it are never dropped, so tokens never repeat (``lockslots.py``). Waiters are
asyncio futures, woken by the release or expiry that hands them the lock; a woken waiter
then *claims* it (takes the pending entries), so entries are never handed to a waiter
that is gone.

A session lock call (``session=True``) does its session step in the same critical
section: the session store attached with ``attach_sessions`` checks the session (expiry,
quota) before the lock changes, and creates or touches it after a change, with no await
between the two.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any, Protocol

from app.backends.memory.lockslots import LockSlots, Waiter
from app.backends.memory.store import LockState, MemoryStore
from app.backends.paging import page_sorted
from app.backends.parts.locks import LockEngine
from app.buffers import compact
from app.domain.bounds import import_passes_lock_quota, quota_exceeded
from app.domain.locks import (
    LockInfo,
    LockOutcome,
    LockRelease,
    LockRequest,
    client_gone,
    holder_event_fields,
    lock_held,
    lock_not_held,
    not_owner,
    too_many_waiters,
)
from app.errors import QuotaExceeded
from app.syntax import Pattern, now_ms

#: A lock handed to a waiter is held for at most this long until the waiter claims it
#: (then for its TTL), so a waiter that vanished holds up the line only briefly.
CLAIM_WINDOW_MS = 5000


class LockSessions(Protocol):
    """The session side of a session lock call (MemorySessions)."""

    def lock_session_check(self, ns: str, sid: str, now: int) -> None:
        """Before any change: expire the session if due; 507 if creating it would pass
        the byte quota."""

    def lock_session_use(self, ns: str, sid: str, now: int) -> None:
        """After a change: create or touch the session."""


class MemoryLocks(LockSlots, LockEngine):
    """The lock engine on a ``MemoryStore``: holders live in the store (fencing reads
    them), everything else in this engine's slots and token counters."""

    def __init__(self, store: MemoryStore) -> None:
        super().__init__()
        self.store = store
        self.sessions: LockSessions | None = None
        store.on_deadline("l", self._expire_l)

    def attach_sessions(self, sessions: LockSessions) -> None:
        """The session store whose sessions a ``session=True`` call writes to."""
        self.sessions = sessions

    def _session_side(self) -> LockSessions:
        if self.sessions is None:
            raise RuntimeError("a session lock call needs attach_sessions first")
        return self.sessions

    # -- internals, also used by sessions and leases ---------------------------------

    def _lock_pending_count(self, ns: str, scope: str, name: str) -> int:
        """Without creating a slot: a read of an unknown name must not cost memory."""
        slot = self.slots.get((ns, scope, name))
        return len(slot.pending) if slot is not None else 0

    def _lock_info(self, ns: str, scope: str, name: str, holder: LockState) -> LockInfo:
        pending = self._lock_pending_count(ns, scope, name)
        return LockInfo(
            name, holder.owner, holder.token, holder.acquired_at, holder.expires_at, pending
        )

    def _lock_event(
        self, ns: str, type_: str, scope: str, name: str, now: int, fields: dict[str, Any]
    ) -> None:
        self.store.emit(ns, type_, name, now, session=scope or None, extra=fields,
                        with_values=False)

    def _lock_live(self, ns: str, scope: str, name: str, now: int) -> LockState | None:
        """The live holder; one past its deadline is expired here (with its event) and
        the lock handed to the next waiter, who is then returned as the holder."""
        holder = self.store.view(ns).locks.get((scope, name))
        if holder is not None and holder.expires_at is not None and holder.expires_at <= now:
            del self.store.ns(ns).locks[(scope, name)]
            pending = self._lock_pending_count(ns, scope, name)
            self._lock_event(
                ns, "lock.expired", scope, name, now,
                holder_event_fields(holder, pending),
            )
            handed = self.handoff(ns, scope, name, now)
            self.tidy(ns, scope, name)
            return handed
        return holder

    def _lock_grant(
        self, ns: str, scope: str, name: str, owner: str, ttl_ms: int, now: int, ticket: str
    ) -> LockState:
        slot = self.slot(ns, scope, name)
        token = self.last_token(ns, scope, name) + 1
        self.raise_token(ns, scope, name, token)
        slot.ttl_ms = ttl_ms
        slot.ticket = ticket
        if ticket:
            expires_at: int | None = now + min(ttl_ms or CLAIM_WINDOW_MS, CLAIM_WINDOW_MS)
        else:
            expires_at = now + ttl_ms if ttl_ms else None
        holder = LockState(owner, token, now, expires_at)
        self.store.ns(ns).locks[(scope, name)] = holder
        if expires_at is not None:
            self.store.schedule_deadline(expires_at, ns, f"l:{scope}|{name}")
        return holder

    def handoff(self, ns: str, scope: str, name: str, now: int) -> LockState | None:
        """Hand the free lock to the first waiter still waiting, and wake it (the caller
        tidies the slot if nobody was left)."""
        slot = self.slots.get((ns, scope, name))
        waiters = slot.waiters if slot is not None else ()
        while waiters:
            waiter = waiters.pop(0)
            if waiter.granted.done():
                continue  # gave up (cancelled) without withdrawing
            holder = self._lock_grant(ns, scope, name, waiter.owner, waiter.ttl_ms, now,
                                      waiter.ticket)
            pending = len(self.slot(ns, scope, name).pending)
            self._lock_event(
                ns, "lock.acquired", scope, name, now,
                holder_event_fields(holder, pending, 0),
            )
            waiter.granted.set_result(None)
            return holder
        return None

    def _lock_take(self, ns: str, scope: str, name: str) -> tuple[bytes, ...]:
        slot = self.slot(ns, scope, name)
        pending = tuple(slot.pending)
        slot.pending.clear()
        return pending

    def _lock_attempt(
        self, ns: str, scope: str, name: str, request: LockRequest, now: int
    ) -> tuple[LockOutcome | None, LockState | None]:
        """Acquire, re-acquire, queue or debounce without waiting. Returns (outcome,
        None), or (None, holder) when another owner holds it in exclusive mode."""
        holder = self._lock_live(ns, scope, name, now)
        if holder is None:
            # A new holder: refused past the namespace's lock quota before anything
            # (a slot, a token, an event) is made. Held locks are counted, an expired one
            # until it is swept, as on the other engines.
            most = self.store.bounds.max_locks
            if len(self.store.view(ns).locks) >= most:
                raise quota_exceeded(ns, "locks", most)
        slot = self.slot(ns, scope, name)
        if holder is not None and holder.owner == request.owner:
            holder.expires_at = now + request.ttl_ms if request.ttl_ms else None
            slot.ttl_ms = request.ttl_ms
            if holder.expires_at is not None:
                self.store.schedule_deadline(holder.expires_at, ns, f"l:{scope}|{name}")
            pending = self._lock_take(ns, scope, name)
            self._lock_event(
                ns, "lock.refreshed", scope, name, now,
                holder_event_fields(holder, 0, len(pending)),
            )
            return LockOutcome("acquired", self._lock_info(ns, scope, name, holder), pending), None
        if holder is None:
            holder = self._lock_grant(ns, scope, name, request.owner, request.ttl_ms, now, "")
            pending = self._lock_take(ns, scope, name)
            self._lock_event(
                ns, "lock.acquired", scope, name, now,
                holder_event_fields(holder, 0, len(pending)),
            )
            return LockOutcome("acquired", self._lock_info(ns, scope, name, holder), pending), None
        if request.mode == "exclusive":
            return None, holder
        if request.mode == "queue" and len(slot.pending) >= request.max_pending:
            raise lock_held(self._lock_info(ns, scope, name, holder), full=True)
        if request.mode == "debounce":
            slot.pending.clear()
        slot.pending.append(compact(request.entry))  # kept: in a buffer of its own length
        position = len(slot.pending)
        self._lock_event(
            ns, "lock.queued", scope, name, now,
            {"mode": request.mode, "owner": request.owner, "position": position,
             "pending_count": position},
        )
        if request.mode == "debounce":
            return LockOutcome("debounced"), None
        return LockOutcome("queued", position=position), None

    def _lock_claim(
        self, ns: str, scope: str, name: str, request: LockRequest, waiter: Waiter
    ) -> tuple[LockOutcome | None, LockState | None]:
        """A waiter's wait is over: claim the lock handed to it (its lease now runs for
        its TTL, and it takes the pending entries), or try once more as ``_lock_attempt``."""
        now = now_ms()
        holder = self._lock_live(ns, scope, name, now)
        slot = self.slot(ns, scope, name)
        if holder is not None and slot.ticket == waiter.ticket:
            slot.ticket = ""
            holder.expires_at = now + slot.ttl_ms if slot.ttl_ms else None
            if holder.expires_at is not None:
                self.store.schedule_deadline(holder.expires_at, ns, f"l:{scope}|{name}")
            pending = self._lock_take(ns, scope, name)
            self._lock_event(ns, "lock.refreshed", scope, name, now,
                             holder_event_fields(holder, 0, len(pending)))
            return LockOutcome("acquired", self._lock_info(ns, scope, name, holder), pending), None
        if waiter in slot.waiters:
            slot.waiters.remove(waiter)
        return self._lock_attempt(ns, scope, name, request, now)

    def _lock_withdraw(self, ns: str, scope: str, name: str, waiter: Waiter) -> None:
        """A waiter was cancelled (its client is gone): leave the queue, or give back a
        lock handed to it that it never claimed; the pending entries stay pending."""
        slot = self.slot(ns, scope, name)
        if waiter in slot.waiters:
            slot.waiters.remove(waiter)
        holder = self.store.ns(ns).locks.get((scope, name))
        if not waiter.granted.done():
            waiter.granted.cancel()
        elif holder is not None and slot.ticket == waiter.ticket:
            now = now_ms()
            slot.ticket = ""
            del self.store.ns(ns).locks[(scope, name)]
            self._lock_event(
                ns, "lock.released", scope, name, now,
                {**holder_event_fields(holder, len(slot.pending), 0), "abandoned": True},
            )
            self.handoff(ns, scope, name, now)
        self.tidy(ns, scope, name)

    def _lock_holding(
        self, ns: str, scope: str, name: str, owner: str, token: int, now: int
    ) -> LockState:
        """The live holder if ``owner`` holds the lock with ``token``; else the 409."""
        holder = self._lock_live(ns, scope, name, now)
        if holder is None:
            raise lock_not_held(name, token)
        if holder.owner != owner:
            raise not_owner(self._lock_info(ns, scope, name, holder), owner)
        if holder.token != token:
            raise lock_not_held(name, token)
        return holder

    def check_import_quota(self, ns: str, sid: str, imported: int) -> None:
        """For a session import of ``imported`` live locks: 507 if that is more than the
        session holds now and would take the namespace past its lock quota."""
        locks, most = self.store.view(ns).locks, self.store.bounds.max_locks
        if import_passes_lock_quota(len(locks), len(locks.names(sid)), imported, most):
            raise quota_exceeded(ns, "locks", most)

    def _expire_l(self, ns: str, member: str, deadline: int, now: int) -> bool:
        scope, _, name = member.partition("|")
        holder = self.store.ns(ns).locks.get((scope, name))
        if holder is None or holder.expires_at != deadline:
            return False  # released, refreshed or handed on since this deadline was set
        self._lock_live(ns, scope, name, now)
        return True

    # -- the engine ------------------------------------------------------------------

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
        loop = asyncio.get_running_loop()
        deadline = loop.time() + request.wait_s
        now = now_ms()
        self.store.lease_live(ns, request.lease, now)
        if session:
            self._session_side().lock_session_check(ns, scope, now)
        outcome, holder = self._lock_attempt(ns, scope, name, request, now)
        if session and outcome is not None:
            self._session_side().lock_session_use(ns, scope, now)
        if request.lease is not None and outcome is not None and outcome.holder is not None:
            # A leased acquire never waits (the router refuses `wait` with `lease`).
            self.store.lease_attach_lock(ns, request.lease, scope, name, outcome.holder.token)
        while outcome is None:
            assert holder is not None
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise lock_held(self._lock_info(ns, scope, name, holder))
            slot = self.slot(ns, scope, name)
            if len(slot.waiters) >= self.store.bounds.lock_max_waiters:
                raise too_many_waiters(name, self.store.bounds.lock_max_waiters)
            waiter = Waiter(
                secrets.token_hex(16), request.owner, request.ttl_ms, loop.create_future()
            )
            slot.waiters.append(waiter)
            self._lock_event(
                ns, "lock.queued", scope, name, now_ms(),
                {"mode": "exclusive", "owner": request.owner, "position": len(slot.waiters),
                 "pending_count": len(slot.pending)},
            )
            watched: list[asyncio.Future[Any]] = [waiter.granted]
            if gone is not None:
                watched.append(asyncio.ensure_future(gone.wait()))
            try:
                # asyncio.wait, not wait_for: it never swallows a cancellation.
                await asyncio.wait(watched, timeout=remaining,
                                   return_when=asyncio.FIRST_COMPLETED)
            except asyncio.CancelledError:
                self._lock_withdraw(ns, scope, name, waiter)
                raise
            finally:
                for extra in watched[1:]:
                    extra.cancel()
            if gone is not None and gone.is_set():
                self._lock_withdraw(ns, scope, name, waiter)
                raise client_gone(name)
            try:
                if session:
                    self._session_side().lock_session_check(ns, scope, now_ms())
                # (the lock quota refuses a waiter only when it finds the lock free, not
                # handed to it)
                outcome, holder = self._lock_claim(ns, scope, name, request, waiter)
            except QuotaExceeded:
                self._lock_withdraw(ns, scope, name, waiter)
                raise
            if session and outcome is not None:
                self._session_side().lock_session_use(ns, scope, now_ms())
        return outcome

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
        now = now_ms()
        if session:
            self._session_side().lock_session_check(ns, scope, now)
        holder = self._lock_holding(ns, scope, name, owner, token, now)
        slot = self.slot(ns, scope, name)
        if ttl_ms is not None:
            slot.ttl_ms = ttl_ms
        holder.expires_at = now + slot.ttl_ms if slot.ttl_ms else None
        if holder.expires_at is not None:
            self.store.schedule_deadline(holder.expires_at, ns, f"l:{scope}|{name}")
        self._lock_event(ns, "lock.refreshed", scope, name, now,
                         holder_event_fields(holder, len(slot.pending), 0))
        if session:
            self._session_side().lock_session_use(ns, scope, now)
        return self._lock_info(ns, scope, name, holder)

    def _lock_end(self, ns: str, scope: str, name: str, holder: LockState | None,
                  now: int, forced: bool) -> LockRelease:
        if holder is None and self._lock_pending_count(ns, scope, name) == 0:
            return LockRelease(None, ())  # nothing to do (and no slot made for the name)
        info = self._lock_info(ns, scope, name, holder) if holder is not None else None
        pending = self._lock_take(ns, scope, name)
        if holder is not None:
            del self.store.ns(ns).locks[(scope, name)]
            self.slot(ns, scope, name).ticket = ""
            fields = holder_event_fields(holder, 0, len(pending))
        elif pending:
            fields = {"owner": None, "token": None, "expires_at": None, "pending_count": 0,
                      "handed_over": len(pending)}
        else:
            return LockRelease(None, ())
        if forced:
            fields["forced"] = True
        self._lock_event(ns, "lock.released", scope, name, now, fields)
        self.handoff(ns, scope, name, now)
        self.tidy(ns, scope, name)
        return LockRelease(info, pending)

    async def lock_release(
        self, ns: str, scope: str, name: str, owner: str, token: int, *, session: bool = False
    ) -> LockRelease:
        now = now_ms()
        if session:
            self._session_side().lock_session_check(ns, scope, now)
        holder = self._lock_holding(ns, scope, name, owner, token, now)
        released = self._lock_end(ns, scope, name, holder, now, False)
        if session:
            self._session_side().lock_session_use(ns, scope, now)
        return released

    async def lock_force_release(
        self, ns: str, scope: str, name: str, *, session: bool = False
    ) -> LockRelease:
        now = now_ms()
        if session:
            self._session_side().lock_session_check(ns, scope, now)
        holder = self._lock_live(ns, scope, name, now)
        released = self._lock_end(ns, scope, name, holder, now, True)
        if session and (released.holder is not None or released.pending):
            self._session_side().lock_session_use(ns, scope, now)
        return released

    async def lock_get(self, ns: str, scope: str, name: str) -> tuple[LockInfo | None, int]:
        holder = self.store.view(ns).locks.get((scope, name))
        pending = self._lock_pending_count(ns, scope, name)
        if holder is None or (holder.expires_at is not None and holder.expires_at <= now_ms()):
            return None, pending
        return self._lock_info(ns, scope, name, holder), pending

    async def lock_list(
        self, ns: str, scope: str, pattern: Pattern, *, limit: int, after: str | None
    ) -> tuple[list[LockInfo], str | None]:
        now = now_ms()
        locks = self.store.view(ns).locks

        def live(name: str) -> LockInfo | None:
            holder = locks.get((scope, name))
            if holder is None or (holder.expires_at is not None and holder.expires_at <= now):
                return None  # expired, not swept yet
            return self._lock_info(ns, scope, name, holder)

        # The scope's sorted held names page like every listing: from the cursor on,
        # bounded by limit and the scan budget.
        return page_sorted(locks.names(scope), pattern, after, limit, live)
