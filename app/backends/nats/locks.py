"""Locks on NATS: each lock is one record in its namespace's bucket (the KV key
``_cbl.<escaped name>``, names.py; the record and the steps that change it are in
lockstate.py), and every change of it is one message there, published with
``Nats-Expected-Last-Subject-Sequence`` set to the sequence the change was decided on
(another writer came between: decide again from a fresh read).

A message holds the lock's whole state and the event the change is: the message *is*
the ``lock.*`` event of the change log, at its sequence, so a lock change and its event
never come apart. Tokens come from the record's counter, which a release or expiry
keeps: monotonic per lock, never repeated.

Whoever meets a lock first (a call on it, a waiter woken by its message, the sweeper's
pass through ``sweep``) finishes what is due, each a compare-and-swap of its own: a due
holder becomes a ``lock.expired`` message, then a free lock with a line is handed to
the first waiter still waiting (``lock.acquired``, for at most the claim window until
the waiter claims it). A release and the hand-over are two messages (two events, as on
the other engines); between them the lock is free with a line, and any caller hands it
over before deciding, so nobody jumps the line.

A waiter (exclusive mode, ``wait``; lockwait.py) joins the record's line with a random ticket (a
``lock.queued`` event; at most ``CORKBOARD_LOCK_MAX_WAITERS``, beyond: 429), and waits on
a core NATS subscription to the lock's subject: every change of the lock wakes it, and
it claims the lock once it was handed its ticket (``lock.refreshed``, taking the pending
entries). At its deadline, or when its client is gone, it leaves the line (a message
that is no event) or gives back a lock handed to it (``lock.released``, abandoned). A
waiter whose process died stays in the line until its own deadline passes; a lock
handed to it meanwhile goes on after the claim window.

A session's locks (scope = the session id) live in its session's record
(``_cbs.<id>``, sessionrecords.py), each a ``LockRecord`` there, changed by the same steps
through ``NatsSessions.run_lock``: a session lock change and its session step (creating
or touching the session, for ``session=True`` calls that changed something) are one
message. Waiters of a session lock wait on the session record's subject.

A lock acquired on a lease has it in its record (a namespace lock's own, a session lock's
in its session's record), stored in one atomic batch with the lease's record
(leasestate.attach); the lease's end releases it (leases.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar

import orjson

from app.backends.nats.batch import Out, publish_batch
from app.backends.nats.entries import lower_deadline
from app.backends.nats.leasestate import attach_live
from app.backends.nats.lockstate import (
    Change,
    LockRecord,
    Step,
    acquire,
    decode,
    due_change,
    end,
    hand_over,
    holding,
)
from app.backends.nats.lockwait import LockWaiting
from app.backends.nats.names import LOCK_PREFIX, is_lock_subject, lock_subject
from app.backends.nats.sessions import NatsSessions
from app.backends.nats.sessionstate import decode as decode_session
from app.backends.nats.store import Msg, NatsStore
from app.backends.paging import page_sorted
from app.backends.parts.locks import LockEngine
from app.domain.locks import (
    LockInfo,
    LockOutcome,
    LockRelease,
    LockRequest,
    holder_event_fields,
    lock_held,
)
from app.errors import BackendUnavailable
from app.syntax import Pattern, now_ms

__all__ = ["NatsLocks"]

R = TypeVar("R")

#: Compare-and-swap attempts of one lock call racing other writers of the lock.
WRITE_ATTEMPTS = 200

def _nothing(record: LockRecord, now: int) -> tuple[Change | None, None]:
    """The step that only finishes what is due (expiry, hand-over)."""
    return None, None


def _settled(record: LockRecord, now: int) -> tuple[Change | None, LockRecord]:
    """The step that only finishes what is due, answering the record after it."""
    return None, record


def _attempt(
    request: LockRequest, gate: Callable[[LockRecord, LockOutcome | None], None]
) -> Step[LockOutcome]:
    def step(record: LockRecord, now: int) -> tuple[Change | None, LockOutcome]:
        change, outcome = acquire(record, request, now)
        gate(record, outcome)
        if outcome is None:
            raise lock_held(record.info())
        return change, outcome

    return step


def _always(change: Change, result: object) -> bool:
    """Every change of the call counts as a write to its session."""
    return True


class NatsLocks(LockWaiting, LockEngine):
    """The lock engine on a ``NatsStore``: namespace locks in their own records,
    session-scoped ones in their session's (see the module)."""

    def __init__(
        self, store: NatsStore, sessions: NatsSessions, *, max_waiters: int = 1000,
        max_locks: int = 100_000,
    ) -> None:
        self.store = store
        #: Where session-scoped locks live (in their session's record).
        self.sessions = sessions
        self.max_waiters = max_waiters
        self.max_locks = max_locks
        #: Withdrawals of cancelled waiters, still running.
        self.withdrawals: set[asyncio.Task[Any]] = set()

    async def close(self) -> None:
        if self.withdrawals:
            await asyncio.gather(*self.withdrawals, return_exceptions=True)

    # -- internals, also used by the sweeper -------------------------------------------

    async def _put(
        self, ns: str, msg: Msg | None, change: Change, now: int, guard: Out | None = None
    ) -> Msg | None:
        """Store ``change`` if the lock is still at ``msg`` (and, with ``guard``, in one
        batch with that check); the new message, or None."""
        record = change.record
        subject = lock_subject(ns, record.name)
        event = None if change.type_ is None else {
            "type": change.type_, "at": now, "fields": change.fields}
        data = orjson.dumps({"lock": record.as_dict(), "event": event})
        expected = msg.seq if msg is not None else 0
        if guard is not None:
            seq = await publish_batch(self.store, ns, [guard, Out(subject, data, {}, expected)])
        else:
            seq = await self.store.publish(ns, subject, data, {}, expected)
        if seq is None:
            return None
        if record.owner is not None and record.expires_at:
            await lower_deadline(self.store, ns, record.expires_at)
        return Msg(subject, seq, data, {})

    async def _read(self, ns: str, name: str, now: int) -> tuple[Msg | None, LockRecord]:
        """The lock's newest message and record, its line without the waiters gone."""
        msg = await self.store.last(ns, lock_subject(ns, name))
        record = decode(msg, name) or LockRecord(name)
        record.waiters = [w for w in record.waiters if w.until > now]
        return msg, record

    async def _settle(
        self, ns: str, msg: Msg | None, record: LockRecord, now: int
    ) -> tuple[Msg | None, LockRecord] | None:
        """Expire a due holder, then hand a free lock to its line; the message and
        record after, or None when the lock changed meanwhile (read it again)."""
        change = due_change(record, now)
        while change is not None:
            msg = await self._put(ns, msg, change, now)
            if msg is None:
                return None
            record = change.record
            change = due_change(record, now)
        return msg, record

    async def _run(self, ns: str, name: str, step: Step[R], lease: str | None = None) -> R:
        for _ in range(WRITE_ATTEMPTS):
            now = now_ms()
            # On a lease: live, and its record stored again with the lock (attach).
            guard = None if lease is None else await attach_live(self.store, ns, lease, now)
            msg, record = await self._read(ns, name, now)
            settled = await self._settle(ns, msg, record, now)
            if settled is None:
                continue
            msg, record = settled
            change, result = step(record, now)
            if change is None:
                return result
            if await self._put(ns, msg, change, now, guard) is not None:
                if hand_over(change.record, now) is not None:
                    await self._run(ns, name, _nothing)  # freed with a line: hand it on
                return result
            await asyncio.sleep(0)
        raise BackendUnavailable(
            f"Lock {name!r} changed under {WRITE_ATTEMPTS} consecutive attempts; retry."
        )

    async def _run_in(
        self, ns: str, scope: str, name: str, step: Step[R],
        touches: Callable[[Change, Any], bool] | None = None, lease: str | None = None,
    ) -> R:
        """``_run`` for a namespace lock, ``NatsSessions.run_lock`` for a session's
        (``touches``: which changes count as a write to the session; ``lease``: the
        change is stored in one batch with the lease's record)."""
        if scope:
            return await self.sessions.run_lock(ns, scope, name, step, touches, lease)
        return await self._run(ns, name, step, lease)

    @staticmethod
    def _lock_of(scope: str, name: str, msg: Msg | None) -> LockRecord | None:
        """The lock's record in ``msg``: the lock's own message, or its session's."""
        if not scope:
            return decode(msg)
        if msg is None:
            return None
        return decode_session(msg, scope).locks.get(name)

    async def sweep(self, ns: str, msgs: list[Msg], now: int) -> tuple[int, int]:
        """Expire the due holders among a namespace's newest messages ``msgs`` (and
        hand their locks to their lines); (how many, the earliest deadline ahead or 0)."""
        count = 0
        deadlines: list[int] = []
        for msg in msgs:
            if not is_lock_subject(ns, msg.subject):
                continue
            record = decode(msg)
            if record is None:
                continue
            change = due_change(record, now)
            if change is not None:
                count += change.type_ == "lock.expired"
                record = await self._run(ns, record.name, _settled)
            if record.owner is not None and record.expires_at:
                deadlines.append(record.expires_at)
        return count, min(deadlines, default=0)

    # -- the engine --------------------------------------------------------------------

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
        session = session and bool(scope)
        if request.mode == "exclusive" and request.wait_s > 0:
            return await self._wait(ns, scope, name, request, gone, session)  # no lease (router)
        def make(held: int | None) -> Step[LockOutcome]:
            def gate(record: LockRecord, outcome: LockOutcome | None) -> None:
                self.gate(ns, record, outcome, held)

            return _attempt(request, gate)

        # (the lock quota: lockwait.py)
        return await self._counted(ns, scope, name, make, _always if session else None,
                                   request.lease)

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
        def step(record: LockRecord, now: int) -> tuple[Change | None, LockInfo]:
            holding(record, owner, token)
            ttl = record.ttl_ms if ttl_ms is None else ttl_ms
            new = replace(record, ttl_ms=ttl, expires_at=now + ttl if ttl else 0)
            fields = holder_event_fields(new, len(new.pending), 0)
            return Change(new, "lock.refreshed", fields), new.info()

        return await self._run_in(ns, scope, name, step, _always if session else None)

    async def lock_release(
        self, ns: str, scope: str, name: str, owner: str, token: int, *, session: bool = False
    ) -> LockRelease:
        def step(record: LockRecord, now: int) -> tuple[Change | None, LockRelease]:
            holding(record, owner, token)
            return end(record, False)

        return await self._run_in(ns, scope, name, step, _always if session else None)

    async def lock_force_release(
        self, ns: str, scope: str, name: str, *, session: bool = False
    ) -> LockRelease:
        return await self._run_in(ns, scope, name, lambda record, now: end(record, True),
                                  _always if session else None)

    async def lock_get(self, ns: str, scope: str, name: str) -> tuple[LockInfo | None, int]:
        now = now_ms()
        if scope:
            record = (await self.sessions.lock_view(ns, scope)).locks.get(name)
        else:
            record = decode(await self.store.last(ns, lock_subject(ns, name)), name)
        if record is None:
            return None, 0
        return (record.info() if record.live(now) else None), len(record.pending)

    async def lock_list(
        self, ns: str, scope: str, pattern: Pattern, *, limit: int, after: str | None
    ) -> tuple[list[LockInfo], str | None]:
        now = now_ms()
        if scope:
            records = list((await self.sessions.lock_view(ns, scope)).locks.values())
        else:
            msgs, _ = await self.store.multi_last(ns, f"$KV.{ns}.{LOCK_PREFIX}>")
            records = [r for r in map(decode, msgs) if r is not None]
        # Paged as the lease and session listings are: the records read, then the page
        # taken from the cursor on (bounded by limit and the scan budget).
        live = {r.name: r.info() for r in records if r.live(now)}
        return page_sorted(sorted(live), pattern, after, limit, live.get)
