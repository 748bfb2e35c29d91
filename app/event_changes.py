"""Compound events (API.md sections 10, 11): a ``txn``, ``lease.revoked`` or
``lease.expired`` event lists its key and lock changes in ``changes``. A watcher sees
such an event with only the changes its filter matches, and not at all when none do.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from app.domain.events import COMPOUND_TYPES, ChangeEvent, build_event
from app.syntax import Pattern

__all__ = ["COMPOUND_TYPES", "filtered_data", "kv_changes", "type_wanted"]


def type_wanted(type_: str, types: tuple[str, ...]) -> bool:
    return not types or any(type_ == t or type_.startswith(t + ".") for t in types)


def filtered_data(
    event: ChangeEvent, pattern: Pattern, types: tuple[str, ...], session: str | None
) -> bytes | None:
    """A compound event's JSON as a watcher with this filter sees it, or None.

    The whole event when its own type and key match (a lease event's key is the lease
    id; a ``txn`` event's is empty); else the changes whose key, type (or the event's
    type) and session match, or None when there are none.
    """
    whole_type = type_wanted(event.type, types)
    if session is None and whole_type and event.key and pattern.matches(event.key):
        return event.data
    body: dict[str, Any] = orjson.loads(event.data)
    changes: list[dict[str, Any]] = body.get("changes", [])
    kept = [
        c for c in changes
        if (session is None or c.get("session") == session)
        and (whole_type or type_wanted(c["type"], types))
        and pattern.matches(c["key"])
    ]
    if not kept:
        return None
    if len(kept) == len(changes):
        return event.data
    body["changes"] = kept
    return orjson.dumps(body)


def kv_changes(event: ChangeEvent) -> list[ChangeEvent]:
    """The key changes of a compound event as key events of the same revision (for
    replaying the log onto a snapshot)."""
    body: dict[str, Any] = orjson.loads(event.data)
    at_ms = round(datetime.fromisoformat(body["at"]).timestamp() * 1000)
    out = []
    for c in body.get("changes", []):
        if not c["type"].startswith("kv."):
            continue
        out.append(build_event(
            body["ns"], event.revision, c["type"], c["key"], at_ms,
            value=_raw(c["value"]), old_value=_raw(c["old_value"]),
        ))
    return out


def _raw(value: Any) -> bytes | None:
    """A change's value back as raw JSON for ``build_event`` (None: JSON null)."""
    return None if value is None else orjson.dumps(value)
