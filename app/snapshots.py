"""Reading a session snapshot document for import (API.md section 5): every section is
checked and normalized here, before the backend replaces the session in one step.

Normalization: sets (``subscriptions``, ``dedupe``) may be lists or objects (members are
the keys whose value is not false/null); maps (``variables``, ``thread_state``,
``channel_state``, ``locks``, ``pending_locks``) may be objects or lists (of items with
their id/name, or of ``[id, value]`` pairs); a missing or null section is empty; unknown
top-level members are ignored. Anything malformed is a 422 naming its location, and the
session is left as it was.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson

from app.domain.sessions import LockSnapshot, SessionSnapshot, Variable
from app.errors import CorkboardError, PayloadTooLarge, Unprocessable
from app.syntax import LOCK_ACTIONS, check_id, check_key, duration_ms, parse_duration
from app.variables import (
    ID_RE,
    MAX_DESCRIPTION_LENGTH,
    check_definition,
    check_name,
    new_variable_id,
    value_error,
)

MAX_DEDUPE_KEY = 1024
MAX_OWNER = 256
#: Imported fencing tokens and variable versions must be below this. Lua computes in
#: doubles (exact below 2**53) and the counters grow from the imported value, so the
#: bound leaves 2**52 acquisitions or writes of headroom before exactness could end:
#: on every backend a token is exact and never repeats.
MAX_IMPORTED_COUNTER = 2**52


class _Malformed(Exception):
    def __init__(self, location: list[str | int], message: str, code: str = "validation_failed"):
        super().__init__(message)
        self.location = location
        self.message = message
        self.code = code


def _fail(location: list[str | int], message: str) -> _Malformed:
    return _Malformed(location, message)


def _object(value: Any, location: list[str | int], what: str = "a JSON object") -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(location, f"must be {what}")
    return value


def parse_time(value: Any, location: list[str | int]) -> int | None:
    """Epoch ms from an RFC 3339 timestamp; None for null or absent."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise _fail(location, "must be an RFC 3339 timestamp like 2026-01-31T12:00:00.000Z")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError as exc:
        raise _fail(location, f"{value[:40]!r} is not an RFC 3339 timestamp") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    ms = int(parsed.timestamp() * 1000)
    if ms < 0:
        raise _fail(location, "must not be before 1970-01-01T00:00:00Z")
    return ms


def _checked(location: list[str | int], check: Any, *args: Any, **kw: Any) -> Any:
    """Run a syntax check, turning its error into a located 422."""
    try:
        return check(*args, **kw)
    except CorkboardError as exc:
        if isinstance(exc, PayloadTooLarge):
            raise
        errors = exc.errors if isinstance(exc.errors, list) else None
        message = errors[0]["message"] if errors and "message" in errors[0] else exc.detail
        if errors and errors[0].get("location", [None])[0] == "body":
            location = [*location, *errors[0]["location"][1:]]  # e.g. constraints.min
        code = exc.code if exc.code == "constraint_violation" else "validation_failed"
        raise _Malformed(location, message, code) from exc


def _set_members(value: Any, location: list[str | int]) -> list[Any]:
    """A set given as a list, or as an object whose true-ish members are in it."""
    if value is None:
        return []
    if isinstance(value, list):
        return list(dict.fromkeys(value))
    if isinstance(value, dict):
        return [k for k, v in value.items() if v is not False and v is not None]
    raise _fail(location, "must be a list, or an object whose keys are the members")


def _map_items(
    value: Any, location: list[str | int], id_field: str, value_field: str | None = None
) -> Iterator[tuple[str | None, Any, list[str | int]]]:
    """(id, item, location) of a map given as an object, a list of [id, item] pairs, or
    a list of objects carrying ``id_field`` (and the item in ``value_field``, or being the
    item themselves). The id is None when an item has none."""
    if value is None:
        return
    if isinstance(value, dict):
        for key, item in value.items():
            yield key, item, [*location, key]
        return
    if not isinstance(value, list):
        raise _fail(location, "must be an object keyed by id, or a list")
    for i, item in enumerate(value):
        where: list[str | int] = [*location, i]
        if isinstance(item, list):
            if len(item) != 2 or not isinstance(item[0], str):
                raise _fail(where, "a list item must be an [id, value] pair or an object")
            yield item[0], item[1], where
        elif isinstance(item, dict):
            ident = item.get(id_field)
            if ident is not None and not isinstance(ident, str):
                raise _fail([*where, id_field], "must be a string")
            yield ident, item.get(value_field) if value_field else item, [*where]
        else:
            raise _fail(where, "a list item must be an [id, value] pair or an object")


def _size_checked(raw: bytes, limit: int, location: list[str | int]) -> bytes:
    if len(raw) > limit:
        where = ".".join(str(p) for p in location)
        raise PayloadTooLarge(f"{where} is {len(raw)} bytes; the limit is {limit}.")
    return raw


def _variable(
    ident: str | None, item: Any, location: list[str | int], now: int, limit: int
) -> Variable:
    var = _object(item, location)
    given_id = var.get("id")
    if given_id is not None and ident is not None and given_id != ident:
        raise _fail([*location, "id"], f"is {given_id!r} but the variable is listed as {ident!r}")
    var_id = given_id if given_id is not None else ident
    if var_id is None:
        var_id = new_variable_id()
    if not isinstance(var_id, str) or not ID_RE.fullmatch(var_id):
        raise _fail([*location, "id"], "must be an id like 'var_...' (letters, digits, _ . -)")
    name = _checked([*location, "name"], check_name, var.get("name"))
    constraints = _checked(location, check_definition, name, var.get("type"),
                           var.get("constraints"))
    if "value" not in var:
        raise _fail([*location, "value"], "is missing")
    error = value_error(name, var["type"], constraints, var["value"])
    if error is not None:
        raise _Malformed([*location, "value"], error.message, "constraint_violation")
    metadata = var.get("metadata")
    if metadata is None:
        metadata = {}
    _object(metadata, [*location, "metadata"])
    description = var.get("description")
    if description is not None and (not isinstance(description, str)
                                    or len(description) > MAX_DESCRIPTION_LENGTH):
        raise _fail([*location, "description"],
                    f"must be a string of at most {MAX_DESCRIPTION_LENGTH} characters, or null")
    version = var.get("version", 1)
    if not isinstance(version, int) or isinstance(version, bool) \
            or not 1 <= version < MAX_IMPORTED_COUNTER:
        raise _fail([*location, "version"], "must be a positive integer below 2**52")
    created = parse_time(var.get("created_at"), [*location, "created_at"]) or now
    updated = parse_time(var.get("updated_at"), [*location, "updated_at"]) or created
    value = _size_checked(orjson.dumps(var["value"]), limit, [*location, "value"])
    return Variable(var_id, name, var["type"], value, constraints, metadata, description,
                    version, created, updated)


def _variables(doc: dict[str, Any], now: int, limit: int) -> list[Variable]:
    by_id: dict[str, Variable] = {}
    by_name: dict[str, str] = {}
    for ident, item, where in _map_items(doc.get("variables"), ["variables"], "id"):
        var = _variable(ident, item, where, now, limit)
        if var.id in by_id:
            raise _fail(where, f"variable id {var.id!r} appears twice")
        if var.name in by_name:
            raise _fail([*where, "name"], f"variable name {var.name!r} appears twice")
        by_id[var.id] = var
        by_name[var.name] = var.id
    index = doc.get("variable_index")
    if index is not None:
        for name, var_id in _object(index, ["variable_index"]).items():
            if by_name.get(name) != var_id:
                raise _fail(["variable_index", name],
                            f"points at {var_id!r}, but no variable {name!r} has that id")
    return list(by_id.values())


def _dedupe(doc: dict[str, Any]) -> list[str]:
    order = doc.get("dedupe_order")
    if order is not None and not isinstance(order, list):
        raise _fail(["dedupe_order"], "must be a list, oldest first")
    keys = list(dict.fromkeys([*(order or []), *_set_members(doc.get("dedupe"), ["dedupe"])]))
    for i, key in enumerate(keys):
        if not isinstance(key, str) or not 1 <= len(key) <= MAX_DEDUPE_KEY:
            raise _fail(["dedupe", i], f"dedupe keys must be strings of 1-{MAX_DEDUPE_KEY} "
                                       "characters")
    return keys


def _states(doc: dict[str, Any], section: str, what: str, limit: int) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for ident, state, where in _map_items(doc.get(section), [section], "id", "state"):
        if ident is None:
            raise _fail(where, f"needs the {what} id")
        _checked(where, check_id, ident, what=f"{what} id")
        if state is None:
            continue
        _object(state, where, f"a JSON object (the {what}'s state map)")
        out[ident] = _size_checked(orjson.dumps(state), limit, where)
    return out


def _locks(doc: dict[str, Any], now: int) -> dict[str, LockSnapshot]:
    out: dict[str, LockSnapshot] = {}
    for name, item, where in _map_items(doc.get("locks"), ["locks"], "name"):
        if name is None:
            raise _fail(where, "needs the lock name")
        _checked(where, check_key, name, what="lock name", actions=LOCK_ACTIONS)
        if item is None:
            continue
        lock = _object(item, where)
        owner = lock.get("owner")
        if not isinstance(owner, str) or not 1 <= len(owner) <= MAX_OWNER \
                or any(ord(c) < 32 or ord(c) == 127 for c in owner):
            raise _fail([*where, "owner"], f"must be 1-{MAX_OWNER} characters without control "
                                           "characters")
        token = lock.get("token")
        if not isinstance(token, int) or isinstance(token, bool) \
                or not 1 <= token < MAX_IMPORTED_COUNTER:
            raise _fail([*where, "token"],
                        "must be a positive integer below 2**52 (the fencing token)")
        acquired = parse_time(lock.get("acquired_at"), [*where, "acquired_at"]) or now
        expires = parse_time(lock.get("expires_at"), [*where, "expires_at"])
        if expires is not None:
            expires = max(1, expires)  # 0 means "no deadline" to a backend: 1970 has passed
        ttl = lock.get("ttl")
        if ttl is None:
            ttl_ms = max(1, expires - now) if expires is not None else 0
        else:
            ttl_ms = duration_ms(_checked([*where, "ttl"], parse_duration, ttl))
        out[name] = LockSnapshot(owner, token, acquired, expires, ttl_ms)
    return out


def _pending(doc: dict[str, Any], limit: int) -> dict[str, list[bytes]]:
    out: dict[str, list[bytes]] = {}
    sections = _map_items(doc.get("pending_locks"), ["pending_locks"], "name", "entries")
    for name, entries, where in sections:
        if name is None:
            raise _fail(where, "needs the lock name")
        _checked(where, check_key, name, what="lock name", actions=LOCK_ACTIONS)
        if entries is None:
            continue
        if not isinstance(entries, list):
            raise _fail(where, "must be the list of pending entries, oldest first")
        if entries:
            out[name] = [_size_checked(orjson.dumps(e), limit, [*where, i])
                         for i, e in enumerate(entries)]
    return out


def parse_snapshot(doc: Any, sid: str, *, now: int, max_value_bytes: int) -> SessionSnapshot:
    """The snapshot document as a normalized SessionSnapshot for session ``sid``; raises
    422 (with ``errors[0].location``) when any section is malformed."""
    try:
        body = _object(doc, [], "a JSON object (a session snapshot)")
        metadata = body.get("metadata")
        if metadata is None:
            metadata = {}
        _object(metadata, ["metadata"])
        ttl = body.get("ttl")
        ttl_ms = duration_ms(_checked(["ttl"], parse_duration, ttl)) if ttl is not None else 0
        subscriptions = _set_members(body.get("subscriptions"), ["subscriptions"])
        for i, thread in enumerate(subscriptions):
            if not isinstance(thread, str):
                raise _fail(["subscriptions", i], "thread ids must be strings")
            _checked(["subscriptions", i], check_id, thread, what="thread id")
        return SessionSnapshot(
            session_id=sid,
            metadata=_size_checked(orjson.dumps(metadata), max_value_bytes, ["metadata"]),
            ttl_ms=ttl_ms,
            created_at=parse_time(body.get("created_at"), ["created_at"]) or now,
            variables=_variables(body, now, max_value_bytes),
            subscriptions=sorted(subscriptions),
            dedupe_order=_dedupe(body),
            thread_state=_states(body, "thread_state", "thread", max_value_bytes),
            channel_state=_states(body, "channel_state", "channel", max_value_bytes),
            locks=_locks(body, now),
            pending_locks=_pending(body, max_value_bytes),
        )
    except _Malformed as exc:
        where = ".".join(str(p) for p in exc.location) or "the document"
        raise Unprocessable(
            f"The snapshot is not valid: {where}: {exc.message}",
            code=exc.code,
            errors=[{"location": ["body", *exc.location], "message": exc.message}],
        ) from exc
