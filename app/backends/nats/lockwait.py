"""Waiters of NATS locks (exclusive mode with ``wait``), a part of the lock engine
(locks.py): a waiter joins the lock's FIFO line in its record with a random ticket (a
``lock.queued`` event; at most ``CORKBOARD_LOCK_MAX_WAITERS``, beyond: 429) and waits on
a core NATS subscription to the record's subject (the lock's own, or its session's), so
any process's change of the lock wakes it; it claims the lock once it was handed its
ticket (``lock.refreshed``, taking the pending entries). At its deadline, or when its
client is gone, it leaves the line (a message that is no event) or gives back a lock
handed to it (``lock.released``, abandoned). A claim refused by the namespace's byte
quota (it would create the waiter's session, sessionrecords.py) gives the lock back the
same way before answering 507.

The namespace's lock quota (``CORKBOARD_NAMESPACE_MAX_LOCKS``, ``LockWaiting.gate``) is
checked when a call would make a new holder of a free lock (never on a claim of a lock
handed over, nor a re-acquire or queued entry): its held locks are counted by reading
every lock record and every session record (``held_locks``) before the
compare-and-swap publish, so it is *not atomic*: callers racing for different free
locks may pass the quota by a few (docs/nats.md). The count is read only when a step
meets a free lock: the step raises ``CountFirst``, and the call counts and runs again.
"""

from __future__ import annotations

import asyncio
import secrets
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import Any, TypeVar

from app.backends.nats.lockstate import (
    CLAIM_WINDOW_MS,
    Change,
    LockRecord,
    Step,
    Waiter,
    acquire,
    withdraw,
)
from app.backends.nats.lockstate import decode as decode_lock
from app.backends.nats.names import LOCK_PREFIX, SESSION_PREFIX, lock_subject, session_subject
from app.backends.nats.sessionstate import decode_any
from app.backends.nats.store import Msg, NatsStore
from app.domain.bounds import quota_exceeded
from app.domain.locks import (
    LockInfo,
    LockOutcome,
    LockRequest,
    client_gone,
    lock_held,
    too_many_waiters,
)
from app.errors import QuotaExceeded
from app.syntax import now_ms

R = TypeVar("R")

#: Reads of a waiter catching up with the message that woke it (``_caught_up``).
CATCH_UP_TRIES = 5

#: A waiter's answer so far: the outcome, or the holder it waits behind.
Waiting = tuple[LockOutcome | None, LockInfo | None]


def progress(record: LockRecord) -> tuple[int, bool]:
    """How far a lock's history is: (its token counter, freed since): never goes back."""
    return record.last_token, record.owner is None


def _cancelled_meanwhile() -> None:
    """Raise CancelledError if this task was cancelled during an await that swallowed
    it (nats-py's requests wait with ``asyncio.wait_for``, which on Python 3.11 loses a
    cancellation that arrives as the answer does)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class CountFirst(Exception):
    """A step would make a new holder before the namespace's held locks were counted."""


async def held_locks(store: NatsStore, ns: str) -> int:
    """How many locks the namespace holds, namespace and session locks (a holder past
    its deadline counts until it is expired, as on the other engines): one read of every
    lock record and every session record."""
    msgs, _ = await store.multi_last(ns, f"$KV.{ns}.{LOCK_PREFIX}>")
    count = sum(1 for r in map(decode_lock, msgs) if r is not None and r.owner is not None)
    msgs, _ = await store.multi_last(ns, f"$KV.{ns}.{SESSION_PREFIX}>")
    for msg in msgs:
        session = decode_any(ns, msg)
        if session is not None:
            count += sum(1 for lk in session.locks.values() if lk.owner is not None)
    return count


def _withdraw(ticket: str) -> Step[None]:
    return lambda record, now: (withdraw(record, ticket), None)



class LockWaiting(ABC):
    """Waiting in line for a lock (exclusive mode with ``wait``): the lock engine's
    part that joins the line, waits for the lock's changes and claims the lock handed
    to it, or leaves the line (see locks.py)."""

    store: NatsStore
    max_waiters: int
    #: The most locks a namespace may hold (CORKBOARD_NAMESPACE_MAX_LOCKS).
    max_locks: int
    #: Withdrawals of cancelled waiters, still running.
    withdrawals: set[asyncio.Task[Any]]

    @abstractmethod
    async def _run_in(
        self, ns: str, scope: str, name: str, step: Step[R],
        touches: Callable[[Change, Any], bool] | None = None, lease: str | None = None,
    ) -> R:
        """Run ``step`` on the lock (locks.py)."""

    @staticmethod
    @abstractmethod
    def _lock_of(scope: str, name: str, msg: Msg | None) -> LockRecord | None:
        """The lock's record in ``msg`` (locks.py)."""

    def gate(self, ns: str, record: LockRecord, outcome: LockOutcome | None,
             held: int | None) -> None:
        """Before storing an acquire: nothing unless it makes a new holder of the free
        ``record``; then ``CountFirst`` if the namespace's held locks are not counted
        yet (``held`` None), or the 507 when it holds its quota already."""
        if record.owner is not None or outcome is None or outcome.holder is None:
            return
        if held is None:
            raise CountFirst
        if held >= self.max_locks:
            raise quota_exceeded(ns, "locks", self.max_locks)

    async def _counted(
        self, ns: str, scope: str, name: str, make: Callable[[int | None], Step[R]],
        touches: Callable[[Change, Any], bool] | None = None, lease: str | None = None,
    ) -> R:
        """``_run_in`` the step ``make`` makes without the count of the namespace's held
        locks, and again with it if the step asks (``CountFirst``)."""
        try:
            return await self._run_in(ns, scope, name, make(None), touches, lease)
        except CountFirst:
            held = await held_locks(self.store, ns)
            return await self._run_in(ns, scope, name, make(held), touches, lease)

    def _wait_step(
        self, ns: str, request: LockRequest, ticket: str, until: int, final: bool,
        held: int | None,
    ) -> Step[Waiting]:
        """Claim (handed the lock), acquire (free, within the lock quota), or join the
        line / stay in it; at the deadline (``final``), leave it instead."""

        def step(record: LockRecord, now: int) -> tuple[Change | None, Waiting]:
            change, outcome = acquire(record, request, now, ticket)
            self.gate(ns, record, outcome, held)
            if outcome is not None:
                return change, (outcome, None)
            mine = any(w.ticket == ticket for w in record.waiters)
            if final:
                return (withdraw(record, ticket) if mine else None), (None, record.info())
            if mine:
                return None, (None, record.info())
            if len(record.waiters) >= self.max_waiters:
                raise too_many_waiters(record.name, self.max_waiters)
            waiters = [*record.waiters, Waiter(ticket, request.owner, request.ttl_ms, until)]
            fields = {"mode": "exclusive", "owner": request.owner, "position": len(waiters),
                      "pending_count": len(record.pending)}
            new = replace(record, waiters=waiters)
            return Change(new, "lock.queued", fields), (None, record.info())

        return step

    async def _wait(
        self, ns: str, scope: str, name: str, request: LockRequest,
        gone: asyncio.Event | None, session: bool,
    ) -> LockOutcome:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + request.wait_s
        until = now_ms() + int(request.wait_s * 1000) + CLAIM_WINDOW_MS
        ticket = secrets.token_hex(16)
        woken = asyncio.Event()
        seen: list[tuple[int, bool]] = []

        async def wake(msg: Any) -> None:
            record = self._lock_of(
                scope, name, Msg(msg.subject, 0, msg.data, dict(msg.headers or {})))
            if record is not None and (record.owner is None or record.ticket == ticket):
                seen.append(progress(record))  # freed, or handed to this waiter
            woken.set()

        subject = session_subject(ns, scope) if scope else lock_subject(ns, name)
        touches = (lambda change, got: got[0] is not None) if session else None
        async with self.store.mapped_errors():
            sub = await self.store.nc.subscribe(subject, cb=wake)
        try:
            while True:
                woken.clear()
                latest = seen[-1] if seen else None
                seen.clear()
                if latest is not None:
                    await self._caught_up(ns, scope, name, subject, latest)
                final = loop.time() >= deadline
                try:
                    outcome, holder = await self._counted(
                        ns, scope, name,
                        partial(self._wait_step, ns, request, ticket, until, final), touches,
                    )
                except QuotaExceeded:
                    # Its claim would create the session past the byte quota, or it found
                    # the lock free past the lock quota: give back the lock handed to it
                    # (or leave the line), then the 507.
                    await self._run_in(ns, scope, name, _withdraw(ticket))
                    raise
                if outcome is not None:
                    return outcome
                assert holder is not None
                _cancelled_meanwhile()
                if final:
                    raise lock_held(holder)
                watched = [asyncio.ensure_future(woken.wait())]
                if gone is not None:
                    watched.append(asyncio.ensure_future(gone.wait()))
                try:
                    await asyncio.wait(watched, timeout=max(0.0, deadline - loop.time()),
                                       return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for future in watched:
                        future.cancel()
                _cancelled_meanwhile()
                if gone is not None and gone.is_set():
                    await self._run_in(ns, scope, name, _withdraw(ticket))
                    raise client_gone(name)
        except asyncio.CancelledError:
            task = asyncio.ensure_future(self._run_in(ns, scope, name, _withdraw(ticket)))
            self.withdrawals.add(task)
            task.add_done_callback(self.withdrawals.discard)
            raise
        finally:
            try:
                await sub.unsubscribe()
            except Exception:  # a broken connection: the subscription is gone with it
                pass

    async def _caught_up(
        self, ns: str, scope: str, name: str, subject: str, target: tuple[int, bool]
    ) -> None:
        """Wait (briefly) until a direct get of the lock shows it at least as far as
        the message that woke a waiter (freed, or handed to it): the server delivers a
        published message to subscribers before the stream stores it (and even one
        the stream then refuses, a lost compare-and-swap), so a read right after the
        wake-up may still see the state before. Gives up after ``CATCH_UP_TRIES``
        reads (a refused message: what was stored instead wakes the waiter too)."""
        for _ in range(CATCH_UP_TRIES):
            record = self._lock_of(scope, name, await self.store.last(ns, subject))
            if record is not None and progress(record) >= target:
                return
            await asyncio.sleep(0.001)  # the stream's own store: nothing to await
