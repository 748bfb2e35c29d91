"""The change log's values, and ``build_event``: the one function that encodes an event's
JSON (API.md section 7), so every backend's events read alike byte for byte.

An event is stored as *fields* (the Redis scripts XADD them; the memory backend makes the
same list with ``event_fields``), and its JSON is encoded from them once, here, by
``event_from_fields``. The fields, as a flat list of byte strings name, value, ...:

- ``t`` type, ``k`` key, ``s`` session ('' for none), ``a`` the time (epoch ms);
- then the JSON members in order, each a pair whose name is a one-character tag and the
  member's name: ``s`` a string, ``d`` a number's text (an integer's digits, or a float
  as orjson writes it), ``b`` a boolean ('1' / '0'), ``n`` null (value ''), ``j`` raw
  JSON exactly as stored (a key's value, metadata: it was valid JSON when written and is
  inserted unchanged), ``{`` an object and ``[`` a list, whose value is their own
  members' pairs *packed*: each byte string as ``<length>:<bytes>`` (list items have
  empty names). ``value`` and ``old_value`` are such members ('jvalue' or 'nvalue').

An event's size, what CORKBOARD_EVENT_RETENTION_BYTES bounds, is ``fields_size``: the sum
of the byte lengths of its field names and values (common.lua counts the same).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from app.syntax import iso_ms

#: Event types whose ``changes`` list is filtered per watcher.
COMPOUND_TYPES = frozenset({"txn", "lease.revoked", "lease.expired"})

#: A JSON member's value in ``extra``: bytes are raw stored JSON, a dict an object.
Fields = list[bytes]


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    """One entry of a namespace's change log; ``data`` is the event's JSON object and
    ``size`` its size in the log's byte accounting (``fields_size``)."""

    revision: int
    type: str
    key: str
    session: str | None
    data: bytes
    size: int = 0


@dataclass(frozen=True, slots=True)
class EventBatch:
    """Events after a revision. Events at or below ``compacted_revision`` are gone."""

    events: list[ChangeEvent]
    current_revision: int
    compacted_revision: int


def _member(out: Fields, name: str, value: Any) -> None:
    """Append the tagged pair of one JSON member (``name`` '' inside a list)."""
    key = name.encode()
    if value is None:
        out += (b"n" + key, b"")
    elif isinstance(value, bytes):
        out += (b"j" + key, value)
    elif isinstance(value, str):
        out += (b"s" + key, value.encode())
    elif isinstance(value, bool):
        out += (b"b" + key, b"1" if value else b"0")
    elif isinstance(value, int):
        out += (b"d" + key, b"%d" % value)
    elif isinstance(value, float):
        out += (b"d" + key, orjson.dumps(value))
    elif isinstance(value, dict):
        inner: Fields = []
        for k, v in value.items():
            _member(inner, k, v)
        out += (b"{" + key, _pack(inner))
    elif isinstance(value, list):
        inner = []
        for v in value:
            _member(inner, "", v)
        out += (b"[" + key, _pack(inner))
    else:
        raise TypeError(f"an event member cannot be {type(value).__name__}")


def _pack(items: Fields) -> bytes:
    return b"".join(b"%d:%s" % (len(x), x) for x in items)


def _unpack(packed: bytes) -> Fields:
    out: Fields = []
    i, end = 0, len(packed)
    while i < end:
        colon = packed.index(b":", i)
        start = colon + 1
        stop = start + int(packed[i:colon])
        out.append(packed[start:stop])
        i = stop
    return out


def _decode(tag: int, raw: bytes) -> Any:
    if tag == 0x6A:  # j
        return orjson.Fragment(raw)
    if tag == 0x73:  # s
        return raw.decode()
    if tag == 0x64:  # d
        return int(raw) if raw.lstrip(b"-").isdigit() else float(raw)
    if tag == 0x62:  # b
        return raw == b"1"
    if tag == 0x6E:  # n
        return None
    if tag == 0x7B:  # {
        return _members(_unpack(raw), {})
    if tag == 0x5B:  # [
        items = _unpack(raw)
        return [_decode(items[i][0], items[i + 1]) for i in range(0, len(items), 2)]
    raise ValueError(f"unknown event field tag {chr(tag)!r}")


def _members(pairs: Sequence[bytes], body: dict[str, Any], start: int = 0) -> dict[str, Any]:
    for i in range(start, len(pairs), 2):
        name = pairs[i]
        body[name[1:].decode()] = _decode(name[0], pairs[i + 1])
    return body


def event_fields(
    type_: str,
    key: str,
    at_ms: int,
    *,
    value: bytes | dict[str, Any] | None = None,
    old_value: bytes | dict[str, Any] | None = None,
    session: str | None = None,
    extra: dict[str, Any] | None = None,
    with_values: bool = True,
) -> Fields:
    """An event's fields (see the module's docstring), as the Redis scripts store them:
    ``value`` and ``old_value`` (raw JSON, an object, or None for null) unless not
    ``with_values``, then ``extra``'s members in order."""
    out: Fields = [b"t", type_.encode(), b"k", key.encode(), b"s", (session or "").encode(),
                   b"a", b"%d" % at_ms]
    if with_values:
        _member(out, "value", value)
        _member(out, "old_value", old_value)
    if extra:
        for k, v in extra.items():
            _member(out, k, v)
    return out


def fields_size(fields: Sequence[bytes]) -> int:
    """An event's size in the log's byte accounting: its fields' names and values."""
    return sum(len(x) for x in fields)


def event_from_fields(ns: str, revision: int, fields: Sequence[bytes]) -> ChangeEvent:
    """The event of ``revision`` from its fields: its JSON is revision, type, ns, key,
    [session], at, then the tagged members in order. Fields of an event stored before
    events were kept as fields (a 'd' field: its JSON) are taken as they are."""
    base: dict[bytes, bytes] = {}
    i = 0
    while i < len(fields) and len(fields[i]) == 1 and fields[i] in (b"t", b"k", b"s", b"a", b"d"):
        base[fields[i]] = fields[i + 1]
        i += 2
    type_, key = base[b"t"].decode(), base[b"k"].decode()
    session = base.get(b"s", b"").decode() or None
    if b"d" in base:
        return ChangeEvent(revision, type_, key, session, base[b"d"], fields_size(fields))
    body: dict[str, Any] = {"revision": revision, "type": type_, "ns": ns, "key": key}
    if session is not None:
        body["session"] = session
    body["at"] = iso_ms(int(base[b"a"]))
    _members(fields, body, i)
    return ChangeEvent(revision, type_, key, session, orjson.dumps(body), fields_size(fields))


def build_event(
    ns: str,
    revision: int,
    type_: str,
    key: str,
    at_ms: int,
    *,
    value: bytes | dict[str, Any] | None = None,
    old_value: bytes | dict[str, Any] | None = None,
    session: str | None = None,
    extra: dict[str, Any] | None = None,
    with_values: bool = True,
) -> ChangeEvent:
    """One change event at ``revision``: ``event_fields`` encoded by ``event_from_fields``,
    the path every backend's events take, so they read alike byte for byte."""
    fields = event_fields(type_, key, at_ms, value=value, old_value=old_value,
                          session=session, extra=extra, with_values=with_values)
    return event_from_fields(ns, revision, fields)
