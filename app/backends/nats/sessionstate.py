"""A NATS session's record and the pure steps on it (sessionrecords.py does the I/O).

A session is ONE record in its namespace's bucket, the KV key ``_cbs.<escaped id>``
(names.py): its newest message holds the whole session (metadata, idle TTL, times,
variables, subscriptions, dedupe window, thread and channel state) *and* the session's
locks (each a ``LockRecord`` of lockstate.py: holder, token counter, pending entries,
line of waiters), plus the event the change is:

    {"sid": ..., "session": {...} | null, "locks": {name: {...}}, "event": [...] | null,
     "bytes": N}

``event`` is the event's fields as ``app.domain.events.event_fields`` makes them (each
byte string as text), so the change log encodes it with ``event_from_fields`` byte for
byte as the other engines do. Stored JSON values (metadata, variable values, state maps)
are kept as JSON *text* (strings), so they come back exactly as written.

A deleted session whose locks hold nothing (no token ever given, no pending entry, no
waiter) is a KV delete marker carrying the ``session.deleted`` record; while its locks
keep a token counter, a line or pending entries, the record stays with ``"session":
null`` (tokens are never reused).

``bytes`` is what the record counts in its namespace's byte quota (quotas.py), as the
other engines count a session (``quota_bytes``: metadata, variables' values and
definitions, thread and channel state); a record without it (written before sessions
counted) counts 0 until its next write.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from app.backends.nats.lockstate import (
    Change,
    LockRecord,
    due_change,
    lock_from_dict,
)
from app.backends.nats.lockstate import fence_holds as lock_fence_holds
from app.backends.nats.names import is_session_subject, session_subject
from app.backends.nats.store import Msg
from app.domain.events import ChangeEvent, Fields, event_fields, event_from_fields
from app.domain.fence import Fence
from app.domain.sessions import (
    SessionInfo,
    StateKind,
    Variable,
    session_deleted,
    session_updated,
)
from app.variables import is_id


@dataclass(slots=True)
class SessionData:
    """A live session's own state (times epoch ms; ``expires_at`` 0: none)."""

    metadata: bytes
    created_at: int
    updated_at: int
    ttl_ms: int = 0
    expires_at: int = 0
    variables: dict[str, Variable] = field(default_factory=dict)  # id -> variable
    subscriptions: list[str] = field(default_factory=list)  # sorted
    dedupe: list[str] = field(default_factory=list)  # oldest first
    threads: dict[str, bytes] = field(default_factory=dict)
    channels: dict[str, bytes] = field(default_factory=dict)

    def info(self, sid: str) -> SessionInfo:
        return SessionInfo(sid, self.metadata, self.ttl_ms, self.created_at, self.updated_at,
                           self.expires_at or None, len(self.variables))

    def resolve(self, ident: str) -> Variable | None:
        if is_id(ident):
            return self.variables.get(ident)
        return next((v for v in self.variables.values() if v.name == ident), None)

    def states(self, kind: StateKind) -> dict[str, bytes]:
        return self.threads if kind == "thread" else self.channels

    def as_dict(self) -> dict[str, Any]:
        return {
            "metadata": self.metadata.decode(), "created_at": self.created_at,
            "updated_at": self.updated_at, "ttl_ms": self.ttl_ms,
            "expires_at": self.expires_at,
            "variables": {v.id: _var_dict(v) for v in self.variables.values()},
            "subscriptions": self.subscriptions, "dedupe": self.dedupe,
            "threads": {k: v.decode() for k, v in self.threads.items()},
            "channels": {k: v.decode() for k, v in self.channels.items()},
        }


def _var_dict(v: Variable) -> dict[str, Any]:
    return {"name": v.name, "type": v.type, "value": v.value.decode(),
            "constraints": v.constraints, "metadata": v.metadata,
            "description": v.description, "version": v.version,
            "created_at": v.created_at, "updated_at": v.updated_at}


def _data_from(d: dict[str, Any]) -> SessionData:
    variables = {
        vid: Variable(vid, str(v["name"]), str(v["type"]), str(v["value"]).encode(),
                      dict(v["constraints"]), dict(v["metadata"]), v["description"],
                      int(v["version"]), int(v["created_at"]), int(v["updated_at"]))
        for vid, v in d["variables"].items()
    }
    return SessionData(
        str(d["metadata"]).encode(), int(d["created_at"]), int(d["updated_at"]),
        int(d["ttl_ms"]), int(d["expires_at"]), variables,
        [str(t) for t in d["subscriptions"]], [str(k) for k in d["dedupe"]],
        {str(k): str(v).encode() for k, v in d["threads"].items()},
        {str(k): str(v).encode() for k, v in d["channels"].items()},
    )


@dataclass(slots=True)
class SessionRecord:
    """What a session's newest message holds: the session (None: none) and its locks."""

    sid: str
    session: SessionData | None = None
    locks: dict[str, LockRecord] = field(default_factory=dict)
    #: The bytes this record counts in the namespace's byte quota (its message's).
    counted: int = 0

    def live(self, now: int) -> SessionData | None:
        """The session unless absent or past its idle deadline."""
        s = self.session
        if s is None or (s.expires_at and s.expires_at <= now):
            return None
        return s

    def lock(self, name: str) -> LockRecord:
        return self.locks.get(name) or LockRecord(name)

    def empty(self) -> bool:
        """No session, and no lock keeps anything (counter, pending entries, line)."""
        return self.session is None and not any(
            lk.last_token or lk.pending or lk.waiters or lk.owner for lk in self.locks.values()
        )

    def encode(self, event: Fields | None) -> bytes:
        return orjson.dumps({
            "sid": self.sid,
            "session": self.session.as_dict() if self.session is not None else None,
            "locks": {name: lk.as_dict() for name, lk in sorted(self.locks.items())
                      if lk.last_token or lk.pending or lk.waiters or lk.owner},
            "event": [f.decode() for f in event] if event else None,
            "bytes": self.counted,
        })


def quota_bytes(s: SessionData | None) -> int:
    """A session's bytes in its namespace's byte quota, as the memory engine counts them
    (app/backends/memory/session_state.py): its metadata, each variable's value and
    definition JSON, its thread and channel state values."""
    if s is None:
        return 0
    return (len(s.metadata)
            + sum(len(v.value) + len(v.definition_json()) for v in s.variables.values())
            + sum(len(v) for v in s.threads.values())
            + sum(len(v) for v in s.channels.values()))


def _body(msg: Msg | None) -> dict[str, Any] | None:
    if msg is None:
        return None
    try:
        body = orjson.loads(msg.data)
    except orjson.JSONDecodeError:
        return None
    return body if isinstance(body, dict) else None


def decode(msg: Msg | None, sid: str) -> SessionRecord:
    """The record the session's newest message ``msg`` holds (empty when none, or when
    the bytes are not Corkboard's)."""
    body = _body(msg)
    if body is None or body.get("sid") != sid:
        return SessionRecord(sid)
    try:
        session = body.get("session")
        counted = body.get("bytes", 0)
        return SessionRecord(
            sid, None if session is None else _data_from(session),
            {str(n): lock_from_dict(lk) for n, lk in body.get("locks", {}).items()},
            counted if isinstance(counted, int) and counted > 0 else 0,
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        return SessionRecord(sid)


def decode_any(ns: str, msg: Msg) -> SessionRecord | None:
    """The record of a session message of namespace ``ns`` (its id from the record
    itself), or None for any other message."""
    if not is_session_subject(ns, msg.subject):
        return None
    body = _body(msg)
    sid = body.get("sid") if body is not None else None
    if not isinstance(sid, str) or msg.subject != session_subject(ns, sid):
        return None
    return decode(msg, sid)


def session_event(ns: str, msg: Msg) -> ChangeEvent | None:
    """The event a session record's message is (log.py), or None (no event)."""
    if not is_session_subject(ns, msg.subject):
        return None
    body = _body(msg)
    if body is None or not isinstance(body.get("event"), list) or "sid" not in body:
        return None
    try:
        return event_from_fields(ns, msg.seq, [str(f).encode() for f in body["event"]])
    except (KeyError, TypeError, ValueError, IndexError):
        return None


# -- events -------------------------------------------------------------------------------


def lock_event(sid: str, change: Change, now: int) -> Fields | None:
    """The fields of a session lock change's event (carrying ``session``)."""
    if change.type_ is None:
        return None
    return event_fields(change.type_, change.record.name, now, session=sid,
                        extra=change.fields, with_values=False)


def updated_event(sid: str, now: int, change: str, **fields: Any) -> Fields:
    """A ``session.updated`` event, as the memory engine's ``_session_event``."""
    return event_fields("session.updated", sid, now, **session_updated(sid, change, **fields))


def deleted_event(sid: str, now: int, expired: bool) -> Fields:
    return event_fields("session.deleted", sid, now, **session_deleted(sid, expired))


# -- steps --------------------------------------------------------------------------------


def touch(record: SessionRecord, now: int) -> SessionData:
    """Create the session on first use (metadata ``{}``), or count a write: updated_at
    and the idle deadline. No event (as on the other engines)."""
    s = record.session
    if s is None:
        s = record.session = SessionData(b"{}", now, now)
        return s
    s.updated_at = now
    s.expires_at = now + s.ttl_ms if s.ttl_ms else 0
    return s


def remove(record: SessionRecord, now: int, *, keep_waited: bool = True) -> None:
    """Forget the session and its locks' holders and pending entries (the counters stay).
    A lock with waiters still waiting keeps its pending entries (``keep_waited``): the
    hand-over gives them to the first waiter."""
    record.session = None
    for name, lk in list(record.locks.items()):
        waited = keep_waited and any(w.until > now for w in lk.waiters)
        freed = lk.freed()
        record.locks[name] = freed if waited else replace(freed, pending=[])


def due(record: SessionRecord, now: int) -> Fields | None:
    """What is due first, done on ``record`` (expiry of the session, expiry of a lock
    holder, the hand-over of a free lock to its line), as the event it is; None when
    nothing is due. Each is one message of its own, as each is an event of its own."""
    s = record.session
    if s is not None and s.expires_at and s.expires_at <= now:
        remove(record, now)
        return deleted_event(record.sid, now, True)
    for name, lk in sorted(record.locks.items()):
        change = due_change(lk, now)
        if change is not None:
            record.locks[name] = change.record
            return lock_event(record.sid, change, now)
    return None


def view(record: SessionRecord, now: int) -> SessionRecord:
    """The record as a read sees it at ``now``: a session past its deadline gone (with
    its holders), due holders gone (the sweeper or the next write makes it so)."""
    if record.session is not None and record.live(now) is None:
        record = SessionRecord(record.sid, record.session, dict(record.locks), record.counted)
        remove(record, now)
    return record


def held(record: SessionRecord, name: str, now: int) -> LockRecord | None:
    """The live holder's record of lock ``name`` as a read sees it, or None."""
    lk = view(record, now).locks.get(name)
    return lk if lk is not None and lk.live(now) else None


def fence_holds(msg: Msg | None, fence: Fence, now: int) -> bool:
    """Whether ``msg``, the newest message of the fence's record (``fence_subject``),
    says ``fence`` holds: its token is the live holder's of the lock (a session lock's
    while its session is not past its idle deadline)."""
    if not fence.scope:
        return lock_fence_holds(msg, fence, now)
    if msg is None or msg.deleted:
        return False
    lk = held(decode(msg, fence.scope), fence.name, now)
    return lk is not None and lk.token == fence.token
