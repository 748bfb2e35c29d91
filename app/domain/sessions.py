"""What the session store takes and gives, shared by every backend (API.md section 5):
sessions, typed variables, chat state and the normalized snapshot, plus the pure planning
of variable writes that both backends run before their atomic step.

Values, metadata and state maps travel as JSON bytes, as keys' values do, so a read is
answered without decoding and re-encoding them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import orjson

from app.domain.conditions import NO_CONDITION, Condition
from app.domain.conditions import variable as variable_subject
from app.patching import merge_patch
from app.syntax import iso_ms
from app.variables import is_id, value_error

StateKind = Literal["thread", "channel"]
STATE_KINDS: tuple[StateKind, ...] = ("thread", "channel")

#: A server-side change of a thread's or channel's state map: the current JSON bytes (None
#: when absent) in, the new JSON bytes (None to delete) out; it may raise to refuse.
StateUpdate = Callable[[bytes | None], bytes | None]


def seconds(ms: int) -> int | float:
    """Milliseconds as seconds for a response: whole seconds as an integer."""
    return ms // 1000 if ms % 1000 == 0 else ms / 1000


@dataclass(frozen=True, slots=True)
class Variable:
    """One variable. Times are epoch ms; ``value`` is JSON bytes."""

    id: str
    name: str
    type: str
    value: bytes
    constraints: dict[str, Any]
    metadata: dict[str, Any]
    description: str | None
    version: int
    created_at: int
    updated_at: int

    def definition_json(self) -> bytes:
        """Everything but the value, version and times: what a value write leaves alone
        (apart from ``metadata``)."""
        return orjson.dumps({
            "id": self.id, "name": self.name, "type": self.type,
            "constraints": self.constraints, "metadata": self.metadata,
            "description": self.description,
        })

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "type": self.type,
            "value": orjson.Fragment(self.value),
            "constraints": self.constraints,
            "metadata": self.metadata,
            "description": self.description,
            "version": self.version,
            "created_at": iso_ms(self.created_at),
            "updated_at": iso_ms(self.updated_at),
        }

    def to_json(self) -> bytes:
        return orjson.dumps(self.as_dict())

    @property
    def etag(self) -> str:
        return f'"{self.version}"'

    @classmethod
    def from_stored(cls, definition: bytes, value: bytes, version: int, created_at: int,
                    updated_at: int) -> Variable:
        d = orjson.loads(definition)
        return cls(d["id"], d["name"], d["type"], value, d["constraints"], d["metadata"],
                   d["description"], version, created_at, updated_at)


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """A session's own record. ``metadata`` is JSON bytes; ``ttl_ms`` 0 = no idle expiry."""

    id: str
    metadata: bytes
    ttl_ms: int
    created_at: int
    updated_at: int
    expires_at: int | None
    variable_count: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "session_id": self.id,
            "metadata": orjson.Fragment(self.metadata),
            "ttl": seconds(self.ttl_ms) if self.ttl_ms else None,
            "created_at": iso_ms(self.created_at),
            "updated_at": iso_ms(self.updated_at),
            "expires_at": iso_ms(self.expires_at) if self.expires_at else None,
            "variable_count": self.variable_count,
        }


@dataclass(frozen=True, slots=True)
class LockSnapshot:
    """A session lock's holder as a snapshot carries it; ``ttl_ms`` is its lease."""

    owner: str
    token: int
    acquired_at: int
    expires_at: int | None
    ttl_ms: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "owner": self.owner,
            "token": self.token,
            "acquired_at": iso_ms(self.acquired_at),
            "expires_at": iso_ms(self.expires_at) if self.expires_at else None,
            "ttl": seconds(self.ttl_ms) if self.ttl_ms else None,
        }


@dataclass(slots=True)
class SessionSnapshot:
    """A whole session at one revision, normalized: sets sorted, maps keyed by id."""

    session_id: str
    revision: int = 0
    metadata: bytes = b"{}"
    ttl_ms: int = 0
    created_at: int = 0
    updated_at: int = 0
    expires_at: int | None = None
    variables: list[Variable] = field(default_factory=list)
    subscriptions: list[str] = field(default_factory=list)
    dedupe_order: list[str] = field(default_factory=list)
    thread_state: dict[str, bytes] = field(default_factory=dict)
    channel_state: dict[str, bytes] = field(default_factory=dict)
    locks: dict[str, LockSnapshot] = field(default_factory=dict)
    pending_locks: dict[str, list[bytes]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        variables = sorted(self.variables, key=lambda v: v.id)
        return {
            "session_id": self.session_id,
            "revision": self.revision,
            "metadata": orjson.Fragment(self.metadata),
            "ttl": seconds(self.ttl_ms) if self.ttl_ms else None,
            "created_at": iso_ms(self.created_at),
            "updated_at": iso_ms(self.updated_at),
            "expires_at": iso_ms(self.expires_at) if self.expires_at else None,
            "variables": {v.id: v.as_dict() for v in variables},
            "variable_index": {v.name: v.id for v in sorted(variables, key=lambda v: v.name)},
            "subscriptions": sorted(self.subscriptions),
            "dedupe": sorted(self.dedupe_order),
            "dedupe_order": list(self.dedupe_order),
            "thread_state": {k: orjson.Fragment(v) for k, v in sorted(self.thread_state.items())},
            "channel_state": {
                k: orjson.Fragment(v) for k, v in sorted(self.channel_state.items())
            },
            "locks": {k: v.as_dict() for k, v in sorted(self.locks.items())},
            "pending_locks": {
                k: [orjson.Fragment(e) for e in v] for k, v in sorted(self.pending_locks.items())
            },
        }

    def to_json(self) -> bytes:
        return orjson.dumps(self.as_dict())


@dataclass(frozen=True, slots=True)
class ImportResult:
    """What an import did: its revision, whether it created the session, and the fencing
    token each imported lock holder now has (a fresh one where the imported token was
    already given out here)."""

    revision: int
    created: bool
    tokens: dict[str, int]


@dataclass(frozen=True, slots=True)
class VariableWrite:
    """One planned write: the variable as read and as it will be (version + 1)."""

    old: Variable
    new: Variable


@dataclass(slots=True)
class WritePlan:
    """The outcome of checking a batch against the variables as read."""

    writes: list[VariableWrite] = field(default_factory=list)
    errors: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class WriteOutcome:
    """A value write: the variables as written (in request order), the errors of the names
    not written, and the revision of the one event (None when nothing was written)."""

    updated: list[Variable]
    errors: dict[str, dict[str, Any]]
    revision: int | None


def not_found_error(ident: str) -> dict[str, Any]:
    what = "id" if is_id(ident) else "name"
    return {"code": "not_found", "variable": ident,
            "message": f"No variable has the {what} {ident!r} in this session."}


def plan_writes(
    found: Mapping[str, Variable | None],
    updates: Sequence[tuple[str, Any]],
    metadata_patch: dict[str, Any] | None,
    condition: Condition = NO_CONDITION,
    now: int = 0,
) -> WritePlan:
    """Check every update against its variable as read (``found``: ident -> variable or
    None). ``condition`` (If-Match on a version) applies to single writes. The new
    versions are the read ones + 1; the backend applies them only if still current."""
    plan = WritePlan()
    seen: set[str] = set()
    for ident, value in updates:
        var = found.get(ident)
        if condition.any:
            condition.check(var, variable_subject(ident))
        if var is None:
            plan.errors[ident] = not_found_error(ident)
            continue
        if var.id in seen:
            plan.errors[ident] = {
                "code": "validation_failed", "variable": ident,
                "message": f"Variable {var.name!r} is given more than once in this batch.",
            }
            continue
        seen.add(var.id)
        error = value_error(var.name, var.type, var.constraints, value)
        if error is not None:
            plan.errors[ident] = error.as_dict()
            continue
        metadata = var.metadata
        if metadata_patch is not None:
            metadata = merge_patch(var.metadata, metadata_patch)
        new = replace(var, value=orjson.dumps(value), metadata=metadata,
                      version=var.version + 1, updated_at=now)
        plan.writes.append(VariableWrite(var, new))
    return plan


def variable_event_fields(var: Variable) -> dict[str, Any]:
    return {"id": var.id, "version": var.version}


def batch_event_updates(writes: Sequence[VariableWrite]) -> dict[str, Any]:
    """The ``updates`` member of a batch's one event: name -> id, version, value, old."""
    return {
        w.new.name: {
            "id": w.new.id,
            "version": w.new.version,
            "value": w.new.value,
            "old_value": w.old.value,
        }
        for w in sorted(writes, key=lambda w: w.new.name)
    }


def write_event(
    writes: Sequence[VariableWrite], *, batch: bool
) -> tuple[VariableWrite, dict[str, Any]]:
    """The one ``variable.updated`` event of planned writes: (the write it names, its
    extra fields). A batch names its first write by name and lists them all in
    ``updates``; a single write is the only one."""
    if batch:
        first = min(writes, key=lambda w: w.new.name)
        return first, {**variable_event_fields(first.new), "batch": True,
                       "updates": batch_event_updates(writes)}
    (only,) = writes
    return only, variable_event_fields(only.new)


def session_updated(sid: str, change: str, **fields: Any) -> dict[str, Any]:
    """The keyword arguments of a ``session.updated`` event (``event_fields``,
    ``build_event``): its ``change``, and ``value``/``old_value`` when given."""
    values: dict[str, Any] = {k: fields.pop(k) for k in ("value", "old_value") if k in fields}
    return {"session": sid, "extra": {"change": change, **fields},
            "with_values": bool(values), **values}


def session_deleted(sid: str, expired: bool) -> dict[str, Any]:
    """The keyword arguments of a ``session.deleted`` event."""
    return {"session": sid, "extra": {"expired": expired}, "with_values": False}
