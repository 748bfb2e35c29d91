"""The records of NATS sessions: each session is ONE record in its namespace's bucket,
the KV key ``_cbs.<escaped id>`` (sessionstate.py has the record and the pure steps),
holding the session's whole state and its locks. Every change of it is one message
there, published with ``Nats-Expected-Last-Subject-Sequence`` set to the sequence the
change was decided on; another writer came between: decide again from a fresh read (at
most ``WRITE_ATTEMPTS`` times, then 503). The message carries the change's event, so a
change and its event are one step, and the sequence it gets is the change's revision.

What is due is done first, each a message (an event) of its own, by whoever meets the
record first (a call on it, the sweeper): the session's idle expiry
(``session.deleted``, expired), a session lock's holder expiry (``lock.expired``), the
hand-over of a free session lock to its first waiter (``lock.acquired``).

A fenced write (``Fence-Lock``/``Fence-Token`` [+ ``Fence-Session``]) checks its fence as
a fenced key write does (keys.py): it reads the namespace's last sequence first, then
the session's record and the fence's (the same one for a lock of this session); both
must be at or below that sequence, and the write is published with
``Nats-Expected-Last-Sequence`` as well, so the fence check and the change are atomic.

A session lock acquired on a lease (``run_lock`` with ``lease``) is stored in one atomic
batch with the lease's record (leasestate.attach, compare-and-swap on the record read
live, no event): nothing attaches to a lease that ended, and the lease's end (leases.py),
which expects the session record's sequence it listed, cannot miss it.

Each write counts the change of the session's bytes in the namespace's byte quota
(quotas.py, ``sessionstate.quota_bytes``): growth is reserved before the publish (507
``quota_exceeded`` past the quota, nothing written) and given back when the publish did
not happen (a lost compare-and-swap); freed room (a deleted or expired session, a
smaller value) is subtracted after the message is stored. The record carries what it
counts (``bytes``), so the next write, or the deletion, knows what to replace.

A record (with its event) larger than the server's ``max_payload`` is refused with 413
``payload_too_large``, nothing written.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from app.backends.nats.batch import Out, publish_batch
from app.backends.nats.entries import lower_deadline
from app.backends.nats.leasestate import attach_live
from app.backends.nats.lockstate import Change, Step, hand_over
from app.backends.nats.names import fence_subject, session_subject
from app.backends.nats.quotas import NatsQuotas, Usage
from app.backends.nats.sessionstate import (
    SessionData,
    SessionRecord,
    decode,
    decode_any,
    due,
    fence_holds,
    lock_event,
    quota_bytes,
    touch,
    view,
)
from app.backends.nats.store import Msg, NatsStore
from app.domain.bounds import quota_exceeded
from app.domain.events import Fields
from app.domain.fence import Fence
from app.errors import BackendUnavailable, PayloadTooLarge
from app.syntax import now_ms

__all__ = ["WRITE_ATTEMPTS", "SessionRecords", "SessionStep"]

R = TypeVar("R")

#: Compare-and-swap attempts of one session write racing other writers of the session.
WRITE_ATTEMPTS = 200

#: The quota bytes of a session a lock call creates: its metadata ``{}``.
NEW_SESSION_BYTES = 2

#: What a session step decides from the record (what is due already done) and the time,
#: changing the record in place: the event of the write (``[]``: a write that is no
#: event; None: write nothing) and its answer.
SessionStep = Callable[[SessionRecord, int], tuple[Fields | None, R]]


def _nothing(record: SessionRecord, now: int) -> tuple[Fields | None, None]:
    return None, None


def _settled(record: SessionRecord, now: int) -> tuple[Fields | None, SessionRecord]:
    """The step that only finishes what is due, answering the record after it."""
    return None, record


def _work_left(record: SessionRecord, now: int) -> bool:
    """Whether something is due right after a write (a freed lock with a line)."""
    return any(hand_over(lk, now) is not None for lk in record.locks.values())


class SessionRecords:
    """The records of sessions on a ``NatsStore``: the read, the compare-and-swap loop
    (``_run``), the steps of session-scoped locks (``run_lock``, for the lock engine) and
    the sweeper's pass (``sweep``); sessions.py adds the session store's calls."""

    def __init__(self, store: NatsStore, quotas: NatsQuotas) -> None:
        self.store = store
        self.quotas = quotas

    # -- internals ---------------------------------------------------------------------

    async def _publish(
        self, ns: str, msg: Msg | None, record: SessionRecord, event: Fields | None,
        upto: int | None = None, guard: Out | None = None,
    ) -> Msg | None:
        """Store ``record`` (with ``event``) if the session is still at ``msg`` (and,
        with ``upto``, the whole namespace at that sequence; with ``guard``, in one
        atomic batch with that message); the message, or None."""
        subject = session_subject(ns, record.sid)
        counted = quota_bytes(record.session)
        change = Usage(bytes=counted - record.counted)
        record.counted = counted
        data = record.encode(event)
        limit = self.store.nc.max_payload
        if len(data) > limit:
            raise PayloadTooLarge(
                f"Session {record.sid!r} would take {len(data)} bytes, more than the NATS "
                f"server's largest message ({limit} bytes, its max_payload); a NATS session "
                "is one message (docs/nats.md). Nothing was written."
            )
        headers = {"KV-Operation": "DEL"} if record.empty() else {}
        expected = msg.seq if msg is not None else 0
        if guard is not None:
            assert upto is None, "a batch carries no expected stream sequence"
            publish = publish_batch(self.store, ns, [guard, Out(subject, data, headers, expected)])
        else:
            publish = self.store.publish(
                ns, subject, data, headers, expected, expected_stream=upto)
        seq = await self.quotas.charged(ns, change, publish)
        if seq is None:
            return None
        deadlines = [lk.expires_at for lk in record.locks.values()
                     if lk.owner is not None and lk.expires_at]
        if record.session is not None and record.session.expires_at:
            deadlines.append(record.session.expires_at)
        if deadlines:
            await lower_deadline(self.store, ns, min(deadlines))
        return Msg(subject, seq, data, headers)

    async def _read(self, ns: str, sid: str) -> tuple[Msg | None, SessionRecord]:
        msg = await self.store.last(ns, session_subject(ns, sid))
        return msg, decode(msg, sid)

    async def _run(
        self, ns: str, sid: str, step: SessionStep[R], fence: Fence | None = None,
        lease: str | None = None, room: bool = False,
    ) -> tuple[R, int | None]:
        """Do what is due, then decide and store (see the module); the step's answer and
        the revision it wrote (None: it wrote nothing). With ``lease``: the lease must be
        live (else 404), and its record goes into the write's batch (``attach``). With
        ``room``: before the step, 507 ``quota_exceeded`` when the session does not
        exist and creating it would not fit the byte quota, whatever the step then does
        (a check of the counter as it is, reserving nothing: ``_publish`` reserves)."""
        for _ in range(WRITE_ATTEMPTS):
            now = now_ms()
            guard = None if lease is None else await attach_live(self.store, ns, lease, now)
            upto = await self.store.last_seq(ns) if fence is not None else None
            msg, record = await self._read(ns, sid)
            if fence is not None and upto is not None:
                fenced = msg if fence.scope == sid else await self.store.last(
                    ns, fence_subject(ns, fence.scope, fence.name))
                if any(m is not None and m.seq > upto for m in (msg, fenced)):
                    continue  # changed after the namespace's sequence was read
                if not fence_holds(fenced, fence, now):
                    raise fence.stale()
            settle = due(record, now)
            if settle is not None:
                await self._publish(ns, msg, record, settle)
                continue  # done, or another writer did something: read again
            if room and record.live(now) is None:
                used = await self.quotas.used(ns)
                if used.bytes + NEW_SESSION_BYTES > self.quotas.max_bytes:
                    raise quota_exceeded(ns, "bytes", self.quotas.max_bytes)
            event, result = step(record, now)
            if event is None:
                return result, None
            written = await self._publish(ns, msg, record, event, upto, guard)
            if written is None:
                await asyncio.sleep(0)
                continue
            if _work_left(record, now):
                await self._run(ns, sid, _nothing)
            return result, written.seq
        raise BackendUnavailable(
            f"Session {sid!r} changed under {WRITE_ATTEMPTS} consecutive attempts; retry."
        )

    async def _live(self, ns: str, sid: str) -> SessionData | None:
        """The live session for a read (one past its deadline reads as absent)."""
        _, record = await self._read(ns, sid)
        return record.live(now_ms())

    # -- for the lock engine and the sweeper ------------------------------------------

    async def run_lock(
        self, ns: str, sid: str, name: str, step: Step[R],
        touches: Callable[[Change, Any], bool] | None = None, lease: str | None = None,
    ) -> R:
        """Run a lock step on lock ``name`` of session ``sid`` (its line without the
        waiters gone); a change for which ``touches`` says so also creates or touches
        the session, in the same message, and with ``touches`` the call is refused (507)
        when the session does not exist and would not fit the byte quota, as on the
        other engines, even if it changes nothing or is refused (``_run``'s ``room``).
        With ``lease`` (an acquire on a lease), that message is one atomic batch with
        the lease's record (``_run``)."""

        def session_step(record: SessionRecord, now: int) -> tuple[Fields | None, R]:
            lk = record.lock(name)
            lk.waiters = [w for w in lk.waiters if w.until > now]
            change, result = step(lk, now)
            if change is None:
                return None, result
            record.locks[name] = change.record
            if touches is not None and touches(change, result):
                touch(record, now)
            return lock_event(sid, change, now) or [], result

        result, _ = await self._run(ns, sid, session_step, lease=lease,
                                    room=touches is not None)
        return result

    async def settle(self, ns: str, sid: str) -> None:
        """Do what is due in the session's record (each a message of its own), for the
        lease's end: before it (an idle or holder expiry), and after it (the hand-over
        of a lock it freed to its line)."""
        await self._run(ns, sid, _nothing)

    async def lock_view(self, ns: str, sid: str) -> SessionRecord:
        """The session's record as a read sees it now (``sessionstate.view``)."""
        _, record = await self._read(ns, sid)
        return view(record, now_ms())

    async def sweep(self, ns: str, msgs: list[Msg], now: int) -> tuple[int, int]:
        """Do what is due in the session records among a namespace's newest messages
        ``msgs`` (expiries, hand-overs); (how many records, the earliest deadline ahead
        or 0)."""
        count = 0
        deadlines: list[int] = []
        for msg in msgs:
            found = decode_any(ns, msg)
            if found is None:
                continue
            record = found
            if due(record, now) is not None:  # (done on this copy only: the write is _run's)
                record, _ = await self._run(ns, record.sid, _settled)
                count += 1
            if record.session is not None and record.session.expires_at:
                deadlines.append(record.session.expires_at)
            deadlines += [lk.expires_at for lk in record.locks.values()
                          if lk.owner is not None and lk.expires_at]
        return count, min(deadlines, default=0)
