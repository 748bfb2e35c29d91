# Generated from _async/sessions.py by scripts/unasync.py: do not edit.
"""Sessions (API.md section 5): the session record, typed variables and batch values,
subscriptions, dedupe, thread and channel state, and snapshot export and import."""

from __future__ import annotations

from collections.abc import Iterator, Iterable
from typing import Any, Literal

from corkboard.client._sync.base import Base
from corkboard.client._sync.paging import every
from corkboard.client._protocol import (
    MERGE_PATCH,
    Call,
    condition_headers,
    id_path,
    params,
)
from corkboard.client.types import (
    BatchResult,
    Duration,
    ImportResult,
    Page,
    Session,
    Variable,
)

StateKind = Literal["thread", "channel"]


def _session(sid: str) -> str:
    return f"/v1/sessions/{id_path(sid)}"


def _state(sid: str, kind: StateKind, ident: str) -> str:
    if kind not in ("thread", "channel"):
        raise ValueError("kind is 'thread' or 'channel'")
    return f"{_session(sid)}/{kind}s/{id_path(ident)}/state"


class Sessions(Base):
    # -- the session record -------------------------------------------------------------

    def put_session(
        self, sid: str, *, metadata: dict[str, Any] | None = None, ttl: Duration | None = None
    ) -> Session:
        """Create the session, or replace its metadata and idle TTL."""
        body: dict[str, Any] = {}
        if metadata is not None:
            body["metadata"] = metadata
        if ttl is not None:
            body["ttl"] = ttl
        return Session.from_json(
            self._json(Call.write("PUT", _session(sid), body, retry=True))
        )

    def get_session(self, sid: str) -> Session:
        return Session.from_json(self._json(Call.read(_session(sid))))

    def delete_session(self, sid: str) -> None:
        """Delete the session and all its state (fine when absent)."""
        self._send(Call.write("DELETE", _session(sid), retry=True))

    def list_sessions(
        self, pattern: str = "*", *, limit: int | None = None, cursor: str | None = None
    ) -> Page[Session]:
        data = self._json(
            Call.read("/v1/sessions", params(pattern=pattern, limit=limit, cursor=cursor))
        )
        return Page([Session.from_json(s) for s in data["items"]], data.get("next_cursor"),
                    None)

    def iter_sessions(
        self, pattern: str = "*", *, page_size: int | None = None
    ) -> Iterator[Session]:
        return every(lambda cursor: self.list_sessions(pattern, limit=page_size, cursor=cursor))

    # -- variables ----------------------------------------------------------------------

    def register_variable(
        self, sid: str, name: str, type: str, value: Any, *,
        constraints: dict[str, Any] | None = None, metadata: dict[str, Any] | None = None,
        description: str | None = None,
    ) -> Variable:
        """Register a typed variable; AlreadyExists when the name is taken,
        ConstraintViolation when the value breaks the type or a constraint."""
        body: dict[str, Any] = {"name": name, "type": type, "value": value}
        for field, given in (("constraints", constraints), ("metadata", metadata),
                             ("description", description)):
            if given is not None:
                body[field] = given
        call = Call.write("POST", f"{_session(sid)}/variables", body)
        return Variable.from_json(self._json(call))

    def list_variables(self, sid: str) -> list[Variable]:
        data = self._json(Call.read(f"{_session(sid)}/variables"))
        return [Variable.from_json(v) for v in data["items"]]

    def get_variable(self, sid: str, var: str) -> Variable:
        """One variable by name or ``var_`` id."""
        return Variable.from_json(
            self._json(Call.read(f"{_session(sid)}/variables/{id_path(var)}"))
        )

    def set_variable(
        self, sid: str, var: str, value: Any, *, metadata: dict[str, Any] | None = None,
        if_version: int | None = None,
    ) -> Variable:
        """Set a variable's value (validated); ``if_version`` makes it a compare-and-swap."""
        body: dict[str, Any] = {"value": value}
        if metadata is not None:
            body["metadata"] = metadata
        call = Call.write("PUT", f"{_session(sid)}/variables/{id_path(var)}", body,
                          headers=condition_headers(if_version or None), retry=True)
        return Variable.from_json(self._json(call))

    def delete_variable(self, sid: str, var: str, *, if_version: int | None = None) -> None:
        """Delete a variable; NotFound when absent."""
        self._send(Call.write("DELETE", f"{_session(sid)}/variables/{id_path(var)}",
                                    headers=condition_headers(if_version or None)))

    def get_values(self, sid: str, names: Iterable[str] | None = None) -> dict[str, Any]:
        """Many values at once (all without ``names``); missing names are skipped."""
        query = params(names=",".join(names) if names is not None else None)
        data = self._json(Call.read(f"{_session(sid)}/values", query))
        values: dict[str, Any] = data["values"]
        return values

    def set_values(
        self, sid: str, updates: dict[str, Any], *, metadata: dict[str, Any] | None = None,
        atomic: bool = True,
    ) -> BatchResult:
        """Write many values in one revision: all or nothing (ConstraintViolation with
        ``errors`` per name), or with ``atomic=False`` what is valid."""
        body: dict[str, Any] = {"updates": updates, "atomic": atomic}
        if metadata is not None:
            body["metadata"] = metadata
        call = Call.write("PATCH", f"{_session(sid)}/values", body)
        return BatchResult.from_json(self._json(call))

    # -- chat state ---------------------------------------------------------------------

    def subscribe(self, sid: str, thread: str) -> None:
        self._send(Call.write("PUT", f"{_session(sid)}/subscriptions/{id_path(thread)}",
                                    retry=True))

    def unsubscribe(self, sid: str, thread: str) -> None:
        self._send(Call.write(
            "DELETE", f"{_session(sid)}/subscriptions/{id_path(thread)}", retry=True
        ))

    def is_subscribed(self, sid: str, thread: str) -> bool:
        data = self._json(Call.read(f"{_session(sid)}/subscriptions/{id_path(thread)}"))
        return bool(data["subscribed"])

    def subscriptions(self, sid: str) -> list[str]:
        data = self._json(Call.read(f"{_session(sid)}/subscriptions"))
        return list(data["items"])

    def dedupe(self, sid: str, key: str, *, limit: int | None = None) -> bool:
        """Check and record ``key`` atomically: True when it was seen before."""
        body: dict[str, Any] = {"key": key}
        if limit is not None:
            body["limit"] = limit
        data = self._json(Call.write("POST", f"{_session(sid)}/dedupe", body))
        return bool(data["duplicate"])

    def get_state(self, sid: str, kind: StateKind, ident: str) -> dict[str, Any]:
        """A thread's or channel's state map; NotFound when it has none."""
        state: dict[str, Any] = self._json(Call.read(_state(sid, kind, ident)))
        return state

    def put_state(
        self, sid: str, kind: StateKind, ident: str, state: dict[str, Any]
    ) -> dict[str, Any]:
        result: dict[str, Any] = self._json(
            Call.write("PUT", _state(sid, kind, ident), state, retry=True)
        )
        return result

    def patch_state(
        self, sid: str, kind: StateKind, ident: str, patch: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Merge-patch the state map atomically; None when the patch emptied it."""
        result: dict[str, Any] | None = self._json(
            Call.write("PATCH", _state(sid, kind, ident), patch, content_type=MERGE_PATCH)
        )
        return result

    def delete_state(self, sid: str, kind: StateKind, ident: str) -> None:
        self._send(Call.write("DELETE", _state(sid, kind, ident), retry=True))

    # -- snapshots ----------------------------------------------------------------------

    def export_session(self, sid: str) -> dict[str, Any]:
        """The whole session at one revision, as a document ``import_session`` takes."""
        snapshot: dict[str, Any] = self._json(Call.read(f"{_session(sid)}/snapshot"))
        return snapshot

    def import_session(self, sid: str, snapshot: dict[str, Any]) -> ImportResult:
        """Replace session ``sid`` with a snapshot document, atomically."""
        # Not repeated: an import gives imported held locks new fencing tokens.
        call = Call.write("PUT", f"{_session(sid)}/snapshot", snapshot)
        return ImportResult.from_json(self._json(call))
