"""What the in-memory session store keeps of one session, and its quota bytes."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from app.buffers import compact
from app.domain.sessions import SessionInfo, SessionSnapshot, StateKind, Variable
from app.variables import is_id


@dataclass(slots=True)
class Session:
    metadata: bytes
    created_at: int
    updated_at: int
    ttl_ms: int = 0
    expires_at: int | None = None
    scheduled: int | None = None  # the deadline the sweeper heap holds for this session
    variables: dict[str, Variable] = field(default_factory=dict)  # id -> variable
    names: dict[str, str] = field(default_factory=dict)  # name -> id
    subscriptions: set[str] = field(default_factory=set)
    dedupe: dict[str, None] = field(default_factory=dict)  # insertion order = age
    threads: dict[str, bytes] = field(default_factory=dict)
    channels: dict[str, bytes] = field(default_factory=dict)
    used_bytes: int = 0  # its share of the namespace's quota bytes (see var_bytes)

    def info(self, sid: str) -> SessionInfo:
        return SessionInfo(sid, self.metadata, self.ttl_ms, self.created_at, self.updated_at,
                           self.expires_at, len(self.variables))

    def resolve(self, ident: str) -> Variable | None:
        var_id = ident if is_id(ident) else self.names.get(ident)
        return self.variables.get(var_id) if var_id is not None else None

    def states(self, kind: StateKind) -> dict[str, bytes]:
        return self.threads if kind == "thread" else self.channels


def kept(var: Variable) -> Variable:
    """``var`` as a session keeps it: its value ``compact`` (orjson's output, as values
    are made, sits in a 4 KiB allocation)."""
    return replace(var, value=compact(var.value))


def var_bytes(var: Variable) -> int:
    """A variable's quota bytes: its value's and its definition's JSON length."""
    return len(var.value) + len(var.definition_json())


def snapshot_bytes(snapshot: SessionSnapshot) -> int:
    """The quota bytes of a session as ``snapshot`` holds it."""
    return (len(snapshot.metadata) + sum(var_bytes(v) for v in snapshot.variables)
            + sum(len(v) for v in snapshot.thread_state.values())
            + sum(len(v) for v in snapshot.channel_state.values()))
