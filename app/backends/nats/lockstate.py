"""A NATS lock's record and the pure steps that change it (locks.py does the I/O).

A lock's newest message in its namespace's bucket (KV key ``_cbl.<escaped name>``)
holds ``{"lock": <the record>, "event": <the event this change is, or null>}``: the
holder, token, deadline and TTL, the never-reset token counter (``last_token``), the
pending list (entries as JSON text), the FIFO line of waiters and the ticket of the
waiter the holder was handed the lock as (until it claims it). Each step decides from
the record (a due holder already expired) and the time, and returns the ``Change`` to
store (None: nothing) with its answer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import orjson

from app.backends.nats.names import is_lock_subject
from app.backends.nats.store import Msg
from app.domain.events import ChangeEvent, build_event
from app.domain.fence import Fence
from app.domain.locks import (
    LockInfo,
    LockOutcome,
    LockRelease,
    LockRequest,
    holder_event_fields,
    lock_held,
    lock_not_held,
    not_owner,
)

#: A lock handed to a waiter is held for at most this long until the waiter claims it
#: (then for its TTL), so a waiter that vanished holds up the line only briefly.
CLAIM_WINDOW_MS = 5000

R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Waiter:
    """A place in the line: its ticket, owner and TTL, and until when it waits (past
    that, a hand-over skips it: its process may be gone)."""

    ticket: str
    owner: str
    ttl_ms: int
    until: int


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
    ticket: str = ""
    waiters: list[Waiter] = field(default_factory=list)
    #: The lease the holder holds it on ("" for none): it is released with the lease.
    lease: str = ""

    def live(self, now: int) -> bool:
        return self.owner is not None and (self.expires_at == 0 or self.expires_at > now)

    def info(self) -> LockInfo:
        assert self.owner is not None
        return LockInfo(self.name, self.owner, self.token, self.acquired_at,
                        self.expires_at or None, len(self.pending))

    def freed(self) -> LockRecord:
        """Without a holder (the counter, pending list and line stay)."""
        return replace(self, owner=None, token=0, acquired_at=0, expires_at=0, ticket="",
                       lease="")

    def taken(self) -> tuple[bytes, ...]:
        return tuple(entry.encode() for entry in self.pending)

    def without(self, ticket: str) -> list[Waiter]:
        return [w for w in self.waiters if w.ticket != ticket]

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "last_token": self.last_token, "owner": self.owner,
                "token": self.token, "acquired_at": self.acquired_at,
                "expires_at": self.expires_at, "ttl_ms": self.ttl_ms,
                "pending": self.pending, "ticket": self.ticket,
                "waiters": [[w.ticket, w.owner, w.ttl_ms, w.until] for w in self.waiters],
                "lease": self.lease}


def lock_from_dict(body: dict[str, Any]) -> LockRecord:
    """A lock record from its JSON object (KeyError, TypeError, ValueError if not one)."""
    return LockRecord(
        str(body["name"]), int(body["last_token"]),
        None if body["owner"] is None else str(body["owner"]), int(body["token"]),
        int(body["acquired_at"]), int(body["expires_at"]), int(body["ttl_ms"]),
        [str(e) for e in body["pending"]], str(body.get("ticket", "")),
        [Waiter(str(t), str(o), int(ttl), int(u)) for t, o, ttl, u in body.get("waiters", [])],
        str(body.get("lease", "")),
    )


def decode(msg: Msg | None, name: str | None = None) -> LockRecord | None:
    """The record a lock message holds; None when ``msg`` holds none (no message, a
    delete marker, bytes that are not Corkboard's, another lock's)."""
    if msg is None or msg.deleted:
        return None
    try:
        record = lock_from_dict(orjson.loads(msg.data)["lock"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
    return record if name is None or record.name == name else None


def lock_event(ns: str, msg: Msg) -> ChangeEvent | None:
    """The ``lock.*`` event a lock message is (log.py), encoded by ``build_event``;
    None for a message that is no event (a waiter leaving the line)."""
    if not is_lock_subject(ns, msg.subject) or msg.deleted:
        return None
    try:
        body = orjson.loads(msg.data)
        event = body["event"]
        if event is None:
            return None
        return build_event(ns, msg.seq, str(event["type"]), str(body["lock"]["name"]),
                           int(event["at"]), extra=dict(event["fields"]), with_values=False)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


def fence_holds(msg: Msg | None, fence: Fence, now: int) -> bool:
    """Whether the lock message ``msg`` (the lock's newest) says ``fence`` holds."""
    record = decode(msg, fence.name)
    return (fence.scope == "" and record is not None and record.live(now)
            and record.token == fence.token)


@dataclass(frozen=True, slots=True)
class Change:
    """What a step stores: the new record and the event it is (None: no event)."""

    record: LockRecord
    type_: str | None
    fields: dict[str, Any]


#: A step decides from the live record (a due holder already expired) and the time.
Step = Callable[[LockRecord, int], tuple[Change | None, R]]


def holding(record: LockRecord, owner: str, token: int) -> None:
    """Nothing if ``owner`` holds the lock with ``token``; else the 409."""
    if record.owner is None:
        raise lock_not_held(record.name, token)
    if record.owner != owner:
        raise not_owner(record.info(), owner)
    if record.token != token:
        raise lock_not_held(record.name, token)


def expire(record: LockRecord) -> Change:
    return Change(record.freed(), "lock.expired", holder_event_fields(record, len(record.pending)))


def end(record: LockRecord, forced: bool) -> tuple[Change | None, LockRelease]:
    """Release whatever holds the lock and hand the pending entries over."""
    if record.owner is None and not record.pending:
        return None, LockRelease(None, ())
    taken = record.taken()
    if record.owner is not None:
        info: LockInfo | None = record.info()
        fields = holder_event_fields(record, 0, len(taken))
    else:
        info = None
        fields = {"owner": None, "token": None, "expires_at": None, "pending_count": 0,
                  "handed_over": len(taken)}
    if forced:
        fields["forced"] = True
    new = replace(record.freed(), pending=[])
    return Change(new, "lock.released", fields), LockRelease(info, taken)


def hand_over(record: LockRecord, now: int) -> Change | None:
    """A free lock with a line goes to the first waiter still waiting (claim window);
    None when nobody waits."""
    waiters = [w for w in record.waiters if w.until > now]
    if record.owner is not None or not waiters:
        return None
    first, rest = waiters[0], waiters[1:]
    token = record.last_token + 1
    new = replace(record, last_token=token, owner=first.owner, token=token, acquired_at=now,
                  expires_at=now + min(first.ttl_ms or CLAIM_WINDOW_MS, CLAIM_WINDOW_MS),
                  ttl_ms=first.ttl_ms, ticket=first.ticket, waiters=rest)
    return Change(new, "lock.acquired", holder_event_fields(new, len(new.pending), 0))


def due_change(record: LockRecord, now: int) -> Change | None:
    """What is due on the lock first: a holder past its deadline expires
    (``lock.expired``), else a free lock with a line goes to its first waiter
    (``hand_over``); None when nothing is due."""
    if record.owner is not None and not record.live(now):
        return expire(record)
    return hand_over(record, now)


def acquire(record: LockRecord, request: LockRequest, now: int,
            ticket: str = "") -> tuple[Change | None, LockOutcome | None]:
    """Acquire, re-acquire, claim (the lock was handed to ``ticket``), queue or
    debounce; (change, None) when another owner holds it in exclusive mode."""
    taken = record.taken()
    if ticket and record.ticket == ticket and record.owner == request.owner:
        new = replace(record, ticket="", pending=[],
                      expires_at=now + record.ttl_ms if record.ttl_ms else 0)
        change = Change(new, "lock.refreshed", holder_event_fields(new, 0, len(taken)))
        return change, LockOutcome("acquired", new.info(), taken)
    expires_at = now + request.ttl_ms if request.ttl_ms else 0
    if record.owner == request.owner:
        new = replace(record, expires_at=expires_at, ttl_ms=request.ttl_ms, pending=[],
                      waiters=record.without(ticket), lease=request.lease or record.lease)
        change = Change(new, "lock.refreshed", holder_event_fields(new, 0, len(taken)))
        return change, LockOutcome("acquired", new.info(), taken)
    if record.owner is None:
        token = record.last_token + 1
        new = replace(record, last_token=token, owner=request.owner, token=token,
                      acquired_at=now, expires_at=expires_at, ttl_ms=request.ttl_ms,
                      pending=[], waiters=record.without(ticket), lease=request.lease or "")
        change = Change(new, "lock.acquired", holder_event_fields(new, 0, len(taken)))
        return change, LockOutcome("acquired", new.info(), taken)
    if request.mode == "exclusive":
        return None, None
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


def withdraw(record: LockRecord, ticket: str) -> Change | None:
    """A waiter gives up: it leaves the line (a message that is no event), or gives back
    the lock handed to it and not claimed (``lock.released``, abandoned); the pending
    entries stay pending."""
    if record.owner is not None and record.ticket == ticket:
        fields = {**holder_event_fields(record, len(record.pending), 0), "abandoned": True}
        return Change(record.freed(), "lock.released", fields)
    if any(w.ticket == ticket for w in record.waiters):
        return Change(replace(record, waiters=record.without(ticket)), None, {})
    return None
