"""Locks on NATS: each lock is one record in its namespace's bucket (the KV key
``_cbl.<escaped name>``, names.py), and every change of it is one message there,
published with ``Nats-Expected-Last-Subject-Sequence`` set to the sequence the change
was decided on (another writer came between: decide again from a fresh read).

A message holds the lock's whole state (``lock``: holder, token, deadline, TTL, the
token counter and the pending list) and the event the change is (``event``: type, time,
fields): the message *is* the ``lock.*`` event of the change log, at its sequence, so a
lock change and its event never come apart. Tokens come from the record's counter
(``last_token``), which a release or expiry keeps: monotonic per lock, never repeated.

A due holder is expired by whoever meets it first (a call on the lock, or the sweeper's
pass through ``sweep``), with a ``lock.expired`` message, compare-and-swap like any
change; a deadline is put in the sweeper's index (``deadline.<ns>``) as keys' are.

Not built on NATS yet (501 ``not_supported_by_backend``): waiting for a held lock in
exclusive mode (``wait`` > 0: the FIFO line of waiters), session-scoped locks and locks
on a lease (there are no leases: 404 ``lease_not_found`` as for key writes).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import orjson

from app.backends.nats.entries import lower_deadline
from app.backends.nats.names import LOCK_PREFIX, is_lock_subject, lock_subject
from app.backends.nats.store import Msg, NatsStore
from app.backends.nats.unsupported import refusal
from app.backends.parts.locks import LockEngine
from app.domain.events import ChangeEvent, build_event
from app.domain.fence import Fence
from app.domain.leases import lease_not_found
from app.domain.locks import (
    LockInfo,
    LockOutcome,
    LockRelease,
    LockRequest,
    lock_held,
    lock_not_held,
    not_owner,
)
from app.errors import BackendUnavailable
from app.syntax import Pattern, iso_ms, now_ms

#: Compare-and-swap attempts of one lock call racing other writers of the lock.
WRITE_ATTEMPTS = 200

R = TypeVar("R")


@dataclass(slots=True)
class LockRecord:
    """A lock's state as its newest message holds it (``expires_at`` 0: none)."""

    name: str
    last_token: int = 0
    owner: str | None = None
    token: int = 0
    acquired_at: int = 0
    expires_at: int = 0
    ttl_ms: int = 0
    pending: list[str] = field(default_factory=list)

    def live(self, now: int) -> bool:
        return self.owner is not None and (self.expires_at == 0 or self.expires_at > now)

    def info(self) -> LockInfo:
        assert self.owner is not None
        return LockInfo(self.name, self.owner, self.token, self.acquired_at,
                        self.expires_at or None, len(self.pending))

    def freed(self) -> LockRecord:
        """Without a holder (the counter and, unless taken, the pending list stay)."""
        return replace(self, owner=None, token=0, acquired_at=0, expires_at=0)

    def taken(self) -> tuple[bytes, ...]:
        return tuple(entry.encode() for entry in self.pending)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "last_token": self.last_token, "owner": self.owner,
                "token": self.token, "acquired_at": self.acquired_at,
                "expires_at": self.expires_at, "ttl_ms": self.ttl_ms,
                "pending": self.pending}


def decode(msg: Msg | None, name: str | None = None) -> LockRecord | None:
    """The record a lock message holds; None when ``msg`` holds none (no message, a
    delete marker, bytes that are not Corkboard's)."""
    if msg is None or msg.deleted:
        return None
    try:
        body = orjson.loads(msg.data)["lock"]
        record = LockRecord(
            str(body["name"]), int(body["last_token"]),
            None if body["owner"] is None else str(body["owner"]), int(body["token"]),
            int(body["acquired_at"]), int(body["expires_at"]), int(body["ttl_ms"]),
            [str(e) for e in body["pending"]],
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
    return record if name is None or record.name == name else None


def lock_event(ns: str, msg: Msg) -> ChangeEvent | None:
    """The ``lock.*`` event a lock message is (log.py), encoded by ``build_event``."""
    if not is_lock_subject(ns, msg.subject) or msg.deleted:
        return None
    try:
        body = orjson.loads(msg.data)
        event = body["event"]
        return build_event(ns, msg.seq, str(event["type"]), str(body["lock"]["name"]),
                           int(event["at"]), extra=dict(event["fields"]), with_values=False)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


def fence_holds(msg: Msg | None, fence: Fence, now: int) -> bool:
    """Whether the lock message ``msg`` (the lock's newest) says ``fence`` holds."""
    record = decode(msg, fence.name)
    return (fence.scope == "" and record is not None and record.live(now)
            and record.token == fence.token)


def holder_fields(holder: LockRecord, pending_count: int,
                  handed_over: int | None = None) -> dict[str, Any]:
    """An event's fields, as the other engines write them."""
    fields: dict[str, Any] = {
        "owner": holder.owner,
        "token": holder.token,
        "expires_at": iso_ms(holder.expires_at) if holder.expires_at else None,
        "pending_count": pending_count,
    }
    if handed_over is not None:
        fields["handed_over"] = handed_over
    return fields


@dataclass(frozen=True, slots=True)
class Change:
    """What a step stores: the new record and the event it is."""

    record: LockRecord
    type_: str
    fields: dict[str, Any]


#: A step decides from the live record (a due holder already expired) and the time.
Step = Callable[[LockRecord, int], tuple[Change | None, R]]


def _holding(record: LockRecord, owner: str, token: int) -> None:
    if record.owner is None:
        raise lock_not_held(record.name, token)
    if record.owner != owner:
        raise not_owner(record.info(), owner)
    if record.token != token:
        raise lock_not_held(record.name, token)


def _end(record: LockRecord, forced: bool) -> tuple[Change | None, LockRelease]:
    """Release whatever holds the lock and hand the pending entries over."""
    if record.owner is None and not record.pending:
        return None, LockRelease(None, ())
    taken = record.taken()
    if record.owner is not None:
        info: LockInfo | None = record.info()
        fields = holder_fields(record, 0, len(taken))
    else:
        info = None
        fields = {"owner": None, "token": None, "expires_at": None, "pending_count": 0,
                  "handed_over": len(taken)}
    if forced:
        fields["forced"] = True
    new = replace(record.freed(), pending=[])
    return Change(new, "lock.released", fields), LockRelease(info, taken)


def _acquire_step(request: LockRequest) -> Step[LockOutcome]:
    def step(record: LockRecord, now: int) -> tuple[Change | None, LockOutcome]:
        expires_at = now + request.ttl_ms if request.ttl_ms else 0
        taken = record.taken()
        if record.owner == request.owner:
            new = replace(record, expires_at=expires_at, ttl_ms=request.ttl_ms, pending=[])
            change = Change(new, "lock.refreshed", holder_fields(new, 0, len(taken)))
            return change, LockOutcome("acquired", new.info(), taken)
        if record.owner is None:
            token = record.last_token + 1
            new = replace(record, last_token=token, owner=request.owner, token=token,
                          acquired_at=now, expires_at=expires_at, ttl_ms=request.ttl_ms,
                          pending=[])
            change = Change(new, "lock.acquired", holder_fields(new, 0, len(taken)))
            return change, LockOutcome("acquired", new.info(), taken)
        if request.mode == "exclusive":
            raise lock_held(record.info())
        if request.mode == "queue" and len(record.pending) >= request.max_pending:
            raise lock_held(record.info(), full=True)
        entry = request.entry.decode()
        pending = [entry] if request.mode == "debounce" else [*record.pending, entry]
        new = replace(record, pending=pending)
        position = len(pending)
        change = Change(new, "lock.queued", {"mode": request.mode, "owner": request.owner,
                                             "position": position, "pending_count": position})
        if request.mode == "debounce":
            return change, LockOutcome("debounced")
        return change, LockOutcome("queued", position=position)

    return step


class NatsLocks(LockEngine):
    """The lock engine on a ``NatsStore`` (namespace locks; see the module)."""

    def __init__(self, store: NatsStore) -> None:
        self.store = store

    # -- internals, also used by the sweeper -------------------------------------------

    async def _put(self, ns: str, msg: Msg | None, change: Change, now: int) -> Msg | None:
        """Store ``change`` if the lock is still at ``msg``; the new message, or None."""
        record = change.record
        subject = lock_subject(ns, record.name)
        data = orjson.dumps({"lock": record.as_dict(),
                             "event": {"type": change.type_, "at": now,
                                       "fields": change.fields}})
        seq = await self.store.publish(ns, subject, data, {}, msg.seq if msg is not None else 0)
        if seq is None:
            return None
        if record.owner is not None and record.expires_at:
            await lower_deadline(self.store, ns, record.expires_at)
        return Msg(subject, seq, data, {})

    async def expire(self, ns: str, msg: Msg, record: LockRecord, now: int) -> Msg | None:
        """Replace the due holder of ``record`` (at ``msg``) by a ``lock.expired``
        message, unless the lock changed since; the new message, or None."""
        change = Change(record.freed(), "lock.expired",
                        holder_fields(record, len(record.pending)))
        return await self._put(ns, msg, change, now)

    async def _run(self, ns: str, name: str, step: Step[R]) -> R:
        subject = lock_subject(ns, name)
        for _ in range(WRITE_ATTEMPTS):
            now = now_ms()
            msg = await self.store.last(ns, subject)
            record = decode(msg, name) or LockRecord(name)
            if msg is not None and record.owner is not None and not record.live(now):
                expired = await self.expire(ns, msg, record, now)
                if expired is None:
                    continue
                msg, record = expired, record.freed()
            change, result = step(record, now)
            if change is None or await self._put(ns, msg, change, now) is not None:
                return result
            await asyncio.sleep(0)
        raise BackendUnavailable(
            f"Lock {name!r} changed under {WRITE_ATTEMPTS} consecutive attempts; retry."
        )

    async def sweep(self, ns: str, msgs: list[Msg], now: int) -> tuple[int, int]:
        """Expire the due holders among a namespace's newest messages ``msgs``; (how
        many, the earliest deadline still ahead or 0)."""
        count = 0
        deadlines: list[int] = []
        for msg in msgs:
            if not is_lock_subject(ns, msg.subject):
                continue
            record = decode(msg)
            if record is None or record.owner is None or not record.expires_at:
                continue
            if record.expires_at > now:
                deadlines.append(record.expires_at)
            elif await self.expire(ns, msg, record, now) is not None:
                count += 1
            else:  # changed meanwhile: what holds it now may have a deadline
                now_record = decode(await self.store.last(ns, msg.subject))
                if now_record is not None and now_record.owner and now_record.expires_at:
                    deadlines.append(now_record.expires_at)
        return count, min(deadlines, default=0)

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
        if request.lease is not None:
            raise lease_not_found(request.lease)
        if request.mode == "exclusive" and request.wait_s > 0:
            raise refusal("waiting for a held lock (wait)")
        return await self._run(ns, name, _acquire_step(request))

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
            _holding(record, owner, token)
            ttl = record.ttl_ms if ttl_ms is None else ttl_ms
            new = replace(record, ttl_ms=ttl, expires_at=now + ttl if ttl else 0)
            fields = holder_fields(new, len(new.pending), 0)
            return Change(new, "lock.refreshed", fields), new.info()

        return await self._run(ns, name, step)

    async def lock_release(
        self, ns: str, scope: str, name: str, owner: str, token: int, *, session: bool = False
    ) -> LockRelease:
        self._refuse(scope, session)

        def step(record: LockRecord, now: int) -> tuple[Change | None, LockRelease]:
            _holding(record, owner, token)
            return _end(record, False)

        return await self._run(ns, name, step)

    async def lock_force_release(
        self, ns: str, scope: str, name: str, *, session: bool = False
    ) -> LockRelease:
        self._refuse(scope, session)
        return await self._run(ns, name, lambda record, now: _end(record, True))

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
