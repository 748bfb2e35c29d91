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

A waiter (exclusive mode, ``wait``) joins the record's line with a random ticket (a
``lock.queued`` event; at most ``CORKBOARD_LOCK_MAX_WAITERS``, beyond: 429), and waits on
a core NATS subscription to the lock's subject: every change of the lock wakes it, and
it claims the lock once it was handed its ticket (``lock.refreshed``, taking the pending
entries). At its deadline, or when its client is gone, it leaves the line (a message
that is no event) or gives back a lock handed to it (``lock.released``, abandoned). A
waiter whose process died stays in the line until its own deadline passes; a lock
handed to it meanwhile goes on after the claim window.

A lock acquired on a lease has it in its record, stored in one batch with the lease's
record (leasestate.attach); the lease's end releases it (leases.py). Not built on NATS
yet (501 ``not_supported_by_backend``): session-scoped locks.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import replace
from typing import Any, TypeVar

import orjson

from app.backends.nats.batch import Out, publish_batch
from app.backends.nats.entries import lower_deadline
from app.backends.nats.leasestate import attach_live
from app.backends.nats.lockstate import (
    CLAIM_WINDOW_MS,
    Change,
    LockRecord,
    Step,
    Waiter,
    acquire,
    decode,
    end,
    expire,
    hand_over,
    holding,
    withdraw,
)
from app.backends.nats.names import LOCK_PREFIX, is_lock_subject, lock_subject
from app.backends.nats.store import Msg, NatsStore
from app.backends.nats.unsupported import refusal
from app.backends.parts.locks import LockEngine
from app.domain.locks import (
    LockInfo,
    LockOutcome,
    LockRelease,
    LockRequest,
    client_gone,
    holder_event_fields,
    lock_held,
    too_many_waiters,
)
from app.errors import BackendUnavailable
from app.syntax import Pattern, now_ms

__all__ = ["NatsLocks"]

R = TypeVar("R")

#: Compare-and-swap attempts of one lock call racing other writers of the lock.
WRITE_ATTEMPTS = 200

#: Reads of a waiter catching up with the message that woke it (``_caught_up``).
CATCH_UP_TRIES = 5

#: A waiter's answer so far: the outcome, or the holder it waits behind.
Waiting = tuple[LockOutcome | None, LockInfo | None]


def _nothing(record: LockRecord, now: int) -> tuple[Change | None, None]:
    """The step that only finishes what is due (expiry, hand-over)."""
    return None, None


def _attempt(request: LockRequest) -> Step[LockOutcome]:
    def step(record: LockRecord, now: int) -> tuple[Change | None, LockOutcome]:
        change, outcome = acquire(record, request, now)
        if outcome is None:
            raise lock_held(record.info())
        return change, outcome

    return step


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


def _withdraw(ticket: str) -> Step[None]:
    return lambda record, now: (withdraw(record, ticket), None)


class NatsLocks(LockEngine):
    """The lock engine on a ``NatsStore`` (namespace locks; see the module)."""

    def __init__(self, store: NatsStore, *, max_waiters: int = 1000) -> None:
        self.store = store
        self.max_waiters = max_waiters
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
        if msg is not None and record.owner is not None and not record.live(now):
            change = expire(record)
            msg = await self._put(ns, msg, change, now)
            if msg is None:
                return None
            record = change.record
        handed = hand_over(record, now)
        if handed is not None:
            msg = await self._put(ns, msg, handed, now)
            if msg is None:
                return None
            record = handed.record
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
            due = record.owner is not None and 0 < record.expires_at <= now
            if due or hand_over(record, now) is not None:
                await self._run(ns, record.name, _nothing)
                count += due
                record = decode(await self.store.last(ns, msg.subject))
            if record is not None and record.owner is not None and record.expires_at:
                deadlines.append(record.expires_at)
        return count, min(deadlines, default=0)

    # -- waiting -----------------------------------------------------------------------

    def _wait_step(
        self, request: LockRequest, ticket: str, until: int, final: bool
    ) -> Step[Waiting]:
        """Claim (handed the lock), acquire (free), or join the line / stay in it; at
        the deadline (``final``), leave it instead."""

        def step(record: LockRecord, now: int) -> tuple[Change | None, Waiting]:
            change, outcome = acquire(record, request, now, ticket)
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
        self, ns: str, name: str, request: LockRequest, gone: asyncio.Event | None
    ) -> LockOutcome:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + request.wait_s
        until = now_ms() + int(request.wait_s * 1000) + CLAIM_WINDOW_MS
        ticket = secrets.token_hex(16)
        woken = asyncio.Event()
        seen: list[tuple[int, bool]] = []

        async def wake(msg: Any) -> None:
            record = decode(Msg(msg.subject, 0, msg.data, dict(msg.headers or {})))
            if record is not None and (record.owner is None or record.ticket == ticket):
                seen.append(progress(record))  # freed, or handed to this waiter
            woken.set()

        subject = lock_subject(ns, name)
        async with self.store.mapped_errors():
            sub = await self.store.nc.subscribe(subject, cb=wake)
        try:
            while True:
                woken.clear()
                latest = seen[-1] if seen else None
                seen.clear()
                if latest is not None:
                    await self._caught_up(ns, subject, latest)
                final = loop.time() >= deadline
                outcome, holder = await self._run(
                    ns, name, self._wait_step(request, ticket, until, final)
                )
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
                    await self._run(ns, name, _withdraw(ticket))
                    raise client_gone(name)
        except asyncio.CancelledError:
            task = asyncio.ensure_future(self._run(ns, name, _withdraw(ticket)))
            self.withdrawals.add(task)
            task.add_done_callback(self.withdrawals.discard)
            raise
        finally:
            try:
                await sub.unsubscribe()
            except Exception:  # a broken connection: the subscription is gone with it
                pass

    async def _caught_up(self, ns: str, subject: str, target: tuple[int, bool]) -> None:
        """Wait (briefly) until a direct get of the lock shows it at least as far as
        the message that woke a waiter (freed, or handed to it): the server delivers a
        published message to subscribers before the stream stores it (and even one
        the stream then refuses, a lost compare-and-swap), so a read right after the
        wake-up may still see the state before. Gives up after ``CATCH_UP_TRIES``
        reads (a refused message: what was stored instead wakes the waiter too)."""
        for _ in range(CATCH_UP_TRIES):
            record = decode(await self.store.last(ns, subject))
            if record is not None and progress(record) >= target:
                return
            await asyncio.sleep(0.001)  # the stream's own store: nothing to await

    # -- the engine --------------------------------------------------------------------

    @staticmethod
    def _refuse(scope: str, session: bool) -> None:
        if scope or session:
            raise refusal("session-scoped locks")

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
        self._refuse(scope, session)
        if request.mode == "exclusive" and request.wait_s > 0:
            return await self._wait(ns, name, request, gone)  # never on a lease (router)
        return await self._run(ns, name, _attempt(request), request.lease)

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
        self._refuse(scope, session)

        def step(record: LockRecord, now: int) -> tuple[Change | None, LockInfo]:
            holding(record, owner, token)
            ttl = record.ttl_ms if ttl_ms is None else ttl_ms
            new = replace(record, ttl_ms=ttl, expires_at=now + ttl if ttl else 0)
            fields = holder_event_fields(new, len(new.pending), 0)
            return Change(new, "lock.refreshed", fields), new.info()

        return await self._run(ns, name, step)

    async def lock_release(
        self, ns: str, scope: str, name: str, owner: str, token: int, *, session: bool = False
    ) -> LockRelease:
        self._refuse(scope, session)

        def step(record: LockRecord, now: int) -> tuple[Change | None, LockRelease]:
            holding(record, owner, token)
            return end(record, False)

        return await self._run(ns, name, step)

    async def lock_force_release(
        self, ns: str, scope: str, name: str, *, session: bool = False
    ) -> LockRelease:
        self._refuse(scope, session)
        return await self._run(ns, name, lambda record, now: end(record, True))

    async def lock_get(self, ns: str, scope: str, name: str) -> tuple[LockInfo | None, int]:
        self._refuse(scope, False)
        record = decode(await self.store.last(ns, lock_subject(ns, name)), name)
        if record is None:
            return None, 0
        return (record.info() if record.live(now_ms()) else None), len(record.pending)

    async def lock_list(self, ns: str, scope: str, pattern: Pattern) -> list[LockInfo]:
        self._refuse(scope, False)
        msgs, _ = await self.store.multi_last(ns, f"$KV.{ns}.{LOCK_PREFIX}>")
        now = now_ms()
        records = [r for r in map(decode, msgs) if r is not None]
        return sorted(
            (r.info() for r in records if r.live(now) and pattern.matches(r.name)),
            key=lambda info: info.name,
        )
