"""The change log's values, and ``build_event``: the one function that encodes an event's
JSON (API.md section 7), so every backend's events read alike byte for byte."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from app.syntax import iso_ms

#: Event types whose ``changes`` list is filtered per watcher.
COMPOUND_TYPES = frozenset({"txn", "lease.revoked", "lease.expired"})


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    """One entry of a namespace's change log; ``data`` is the event's JSON object."""

    revision: int
    type: str
    key: str
    session: str | None
    data: bytes


@dataclass(frozen=True, slots=True)
class EventBatch:
    """Events after a revision. Events at or below ``compacted_revision`` are gone."""

    events: list[ChangeEvent]
    current_revision: int
    compacted_revision: int


def build_event(
    ns: str,
    revision: int,
    type_: str,
    key: str,
    at_ms: int,
    *,
    value: bytes | None = None,
    old_value: bytes | None = None,
    session: str | None = None,
    extra: dict[str, Any] | None = None,
    with_values: bool = True,
) -> ChangeEvent:
    """One change event at ``revision``, its JSON shaped exactly like the Redis scripts'
    events: revision, type, ns, key, [session], at, [value, old_value], then ``extra``."""
    body: dict[str, Any] = {"revision": revision, "type": type_, "ns": ns, "key": key}
    if session is not None:
        body["session"] = session
    body["at"] = iso_ms(at_ms)
    if with_values:
        body["value"] = orjson.Fragment(value) if value is not None else None
        body["old_value"] = orjson.Fragment(old_value) if old_value is not None else None
    if extra:
        body.update(extra)
    return ChangeEvent(revision, type_, key, session, orjson.dumps(body))
