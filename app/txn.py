"""Transactions (API.md section 10), the pure part: a request body parsed into typed
compares and ops, and the plan that a backend applies atomically.

Every backend runs a transaction the same way: read the entries the compares and the
computed ops (patch, increment) need, ``plan`` the outcome here (which branch, the new
values, or the error), then apply the plan in one atomic step that first checks that
nothing it read has changed since (on Redis a retry follows; in memory nothing can
change in between). Compares, JSON equality, patches and increments are thus one piece
of Python for every backend, the same code as the single-key routes use.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import orjson

from app.domain.numbers import add_exact, describe
from app.errors import (
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    PreconditionFailed,
    Unprocessable,
)
from app.patching import json_equal, json_patch, merge_patch
from app.syntax import KV_ACTIONS, check_id, check_key, duration_ms, parse_duration

if TYPE_CHECKING:
    from app.domain.keys import KeyEntry

#: Integers are exact in every backend below 2**53 in magnitude (Lua computes in doubles).
MAX_EXACT_INT = 2**53
#: The largest revision, version or token a compare may name (20 digits, as elsewhere).
MAX_NUMBER = 10**20 - 1

KeyField = Literal["revision", "version", "value", "exists"]
_KEY_FIELDS: tuple[KeyField, ...] = ("revision", "version", "value", "exists")


@dataclass(frozen=True, slots=True)
class KeyCompare:
    """A compare on a key: its revision or version (0: absent), value or existence."""

    key: str
    field: KeyField
    expected: Any


@dataclass(frozen=True, slots=True)
class LockCompare:
    """Holds while ``token`` holds lock ``name`` (``scope``: "" or a session id)."""

    name: str
    token: int
    scope: str = ""


Compare = KeyCompare | LockCompare


@dataclass(frozen=True, slots=True)
class Op:
    """One op of a branch. ``value``/``initial`` are JSON bytes; ``patch`` decoded JSON."""

    kind: Literal["put", "delete", "patch", "increment", "get"]
    key: str
    value: bytes = b"null"
    ttl_ms: int = 0
    lease: str | None = None
    patch_kind: Literal["merge", "json_patch"] = "merge"
    patch: Any = None
    initial: bytes | None = None
    by: int | float = 1
    start: int | float = 0

    @property
    def writes(self) -> bool:
        return self.kind != "get"


@dataclass(frozen=True, slots=True)
class Txn:
    compares: tuple[Compare, ...]
    success: tuple[Op, ...]
    failure: tuple[Op, ...]

    def read_keys(self) -> list[str]:
        """The keys whose entries the plan needs: compared, patched or incremented."""
        keys = {c.key for c in self.compares if isinstance(c, KeyCompare)}
        keys.update(op.key for op in (*self.success, *self.failure)
                    if op.kind in ("patch", "increment"))
        return sorted(keys)

    @property
    def lock_compares(self) -> list[LockCompare]:
        return [c for c in self.compares if isinstance(c, LockCompare)]


@dataclass(frozen=True, slots=True)
class Step:
    """What the atomic step does for one op: put (``keep``: keep the key's expiry and
    lease, as PATCH and increment do), delete, or get."""

    kind: Literal["put", "delete", "get"]
    key: str
    value: bytes = b""
    ttl_ms: int = 0
    lease: str | None = None
    keep: bool = False


@dataclass(frozen=True, slots=True)
class Plan:
    succeeded: bool
    steps: tuple[Step, ...]

    @property
    def writes(self) -> bool:
        return any(s.kind != "get" for s in self.steps)


@dataclass(frozen=True, slots=True)
class Limits:
    max_ops: int
    max_value_bytes: int
    max_patch_ops: int = 1000


# -- parsing ---------------------------------------------------------------------------


def _bad(detail: str, *location: str | int) -> InvalidRequest:
    return InvalidRequest(
        detail, errors=[{"location": ["body", *location], "message": detail}]
    )


def _number(value: Any, what: str, *location: str | int, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(f"{what} must be an integer.", *location)
    if value < minimum or value > MAX_NUMBER:
        raise _bad(f"{what} must be an integer from {minimum} to {MAX_NUMBER}.", *location)
    return value


def _object(item: Any, what: str, *location: str | int) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise _bad(f"{what} must be a JSON object.", *location)
    return item


def _only(item: dict[str, Any], allowed: set[str], what: str, *location: str | int) -> None:
    extra = sorted(set(item) - allowed)
    if extra:
        raise _bad(f"{what} has unknown members {extra}; allowed: {sorted(allowed)}.", *location)


def parse_compare(item: Any, i: int) -> Compare:
    loc = ("compare", i)
    c = _object(item, f"compare[{i}]", *loc)
    if ("key" in c) == ("lock" in c):
        raise _bad(f"compare[{i}] needs either 'key' or 'lock'.", *loc)
    if "lock" in c:
        _only(c, {"lock", "token", "session"}, f"compare[{i}]", *loc)
        if not isinstance(c["lock"], str):
            raise _bad(f"compare[{i}].lock must be a lock name.", *loc, "lock")
        name = check_key(c["lock"], what="lock name")
        if "token" not in c:
            raise _bad(f"compare[{i}] on a lock needs 'token'.", *loc)
        token = _number(c["token"], f"compare[{i}].token", *loc, "token", minimum=1)
        session = c.get("session")
        if session is not None and not isinstance(session, str):
            raise _bad(f"compare[{i}].session must be a session id.", *loc, "session")
        scope = check_id(session, what="session id") if session else ""
        return LockCompare(name, token, scope)
    _only(c, {"key", *_KEY_FIELDS}, f"compare[{i}]", *loc)
    if not isinstance(c["key"], str):
        raise _bad(f"compare[{i}].key must be a key.", *loc, "key")
    key = check_key(c["key"], actions=KV_ACTIONS)
    fields = [f for f in _KEY_FIELDS if f in c]
    if len(fields) != 1:
        raise _bad(
            f"compare[{i}] needs exactly one of 'revision', 'version', 'value', 'exists'.", *loc
        )
    field = fields[0]
    expected = c[field]
    if field in ("revision", "version"):
        expected = _number(expected, f"compare[{i}].{field}", *loc, field)
    elif field == "exists" and not isinstance(expected, bool):
        raise _bad(f"compare[{i}].exists must be true or false.", *loc, "exists")
    return KeyCompare(key, field, expected)


def _json_bytes(value: Any, what: str, limit: int) -> bytes:
    try:
        out = orjson.dumps(value)
    except TypeError as exc:  # orjson.JSONEncodeError: too deep, integer beyond 64 bits
        raise Unprocessable(f"The {what} cannot be stored: {exc}.") from exc
    if len(out) > limit:
        raise PayloadTooLarge(f"The {what} is {len(out)} bytes; the limit is {limit}.")
    return out


def _ttl(o: dict[str, Any], where: str) -> int:
    ttl = o.get("ttl")
    if ttl is not None and not isinstance(ttl, int | float | str):
        raise _bad(f"{where}.ttl must be seconds or a duration like '30s'.")
    return duration_ms(parse_duration(ttl)) if ttl is not None else 0


def _finite_number(value: Any, what: str) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad(f"{what} must be a number.")
    return value


_OP_FIELDS: dict[str, set[str]] = {
    "put": {"op", "key", "value", "ttl", "lease"},
    "delete": {"op", "key"},
    "get": {"op", "key"},
    "patch": {"op", "key", "merge", "json_patch", "initial"},
    "increment": {"op", "key", "by", "initial", "ttl"},
}


def parse_op(item: Any, branch: str, i: int, limits: Limits) -> Op:
    loc = (branch, i)
    where = f"{branch}[{i}]"
    o = _object(item, where, *loc)
    kind = o.get("op")
    if kind not in _OP_FIELDS:
        raise _bad(f"{where}.op must be one of {sorted(_OP_FIELDS)}.", *loc, "op")
    _only(o, _OP_FIELDS[kind], where, *loc)
    if not isinstance(o.get("key"), str):
        raise _bad(f"{where} needs 'key'.", *loc, "key")
    key = check_key(o["key"], actions=KV_ACTIONS)
    limit = limits.max_value_bytes
    if kind == "put":
        if "value" not in o:
            raise _bad(f"{where} needs 'value'.", *loc, "value")
        lease = o.get("lease")
        if lease is not None:
            if not isinstance(lease, str):
                raise _bad(f"{where}.lease must be a lease id.", *loc, "lease")
            check_id(lease, what="lease id")
            if o.get("ttl") is not None:
                raise _bad(f"{where}: give 'ttl' or 'lease', not both: a key on a lease "
                           "lives as long as the lease.", *loc)
        value = _json_bytes(o["value"], f"value of {where}", limit)
        return Op("put", key, value=value, ttl_ms=_ttl(o, where), lease=lease)
    if kind == "patch":
        if ("merge" in o) == ("json_patch" in o):
            raise _bad(f"{where} needs exactly one of 'merge' (RFC 7396) or "
                       "'json_patch' (RFC 6902).", *loc)
        patch_kind: Literal["merge", "json_patch"] = "merge" if "merge" in o else "json_patch"
        patch = o[patch_kind]
        if patch_kind == "json_patch" and not isinstance(patch, list):
            raise _bad(f"{where}.json_patch must be an array of operations.", *loc)
        initial = (_json_bytes(o["initial"], f"initial value of {where}", limit)
                   if "initial" in o else None)
        return Op("patch", key, patch_kind=patch_kind, patch=patch, initial=initial)
    if kind == "increment":
        by = _finite_number(o.get("by", 1), f"{where}.by")
        start = _finite_number(o.get("initial", 0), f"{where}.initial")
        return Op("increment", key, by=by, start=start, ttl_ms=_ttl(o, where))
    return Op(kind, key)


def _branch(body: dict[str, Any], name: str, limits: Limits) -> tuple[Op, ...]:
    raw = body.get(name, [])
    if not isinstance(raw, list):
        raise _bad(f"'{name}' must be an array of ops.", name)
    if len(raw) > limits.max_ops:
        raise _bad(f"'{name}' has {len(raw)} ops; at most {limits.max_ops} are allowed "
                   "(CORKBOARD_MAX_TXN_OPS).", name)
    ops = tuple(parse_op(item, name, i, limits) for i, item in enumerate(raw))
    written: set[str] = set()
    for i, op in enumerate(ops):
        if op.writes:
            if op.key in written:
                raise _bad(f"'{name}' writes key {op.key!r} twice: one write per key.", name, i)
            written.add(op.key)
    return ops


def parse_txn(body: Any, limits: Limits) -> Txn:
    """The transaction of a request body; 400 (422, 413) for every malformed shape."""
    b = _object(body, "The transaction")
    _only(b, {"compare", "success", "failure"}, "The transaction")
    compares = b.get("compare", [])
    if not isinstance(compares, list):
        raise _bad("'compare' must be an array of compares.", "compare")
    if len(compares) > limits.max_ops:
        raise _bad(f"'compare' has {len(compares)} compares; at most {limits.max_ops} are "
                   "allowed (CORKBOARD_MAX_TXN_OPS).", "compare")
    return Txn(
        tuple(parse_compare(c, i) for i, c in enumerate(compares)),
        _branch(b, "success", limits),
        _branch(b, "failure", limits),
    )


# -- planning ----------------------------------------------------------------------------


def compare_holds(c: KeyCompare, entry: KeyEntry | None) -> bool:
    """One key compare against the entry as read (None: absent)."""
    if c.field == "exists":
        return (entry is not None) is c.expected
    if c.field == "revision":
        return (entry.revision if entry is not None else 0) == int(c.expected)
    if c.field == "version":
        return (entry.version if entry is not None else 0) == int(c.expected)
    # Decoded JSON, compared as JSON: exact for integers and independent of key order.
    return entry is not None and json_equal(orjson.loads(entry.value), c.expected)


def patched(
    current: bytes, kind: str, patch: Any, limit: int, *, max_ops: int | None = None
) -> bytes:
    """A merge patch or JSON Patch applied to JSON bytes, as PATCH /v1/kv/{key} does:
    at most ``max_ops`` operations, the size checked after every one (a patch bomb is
    refused the moment it passes ``limit``)."""
    document = orjson.loads(current)
    result = (
        merge_patch(document, patch)
        if kind == "merge"
        else json_patch(document, patch, max_ops=max_ops, max_bytes=limit)
    )
    try:
        out = orjson.dumps(result)
    except TypeError as exc:  # orjson.JSONEncodeError
        raise Unprocessable(
            f"The patched value cannot be stored: {exc}.",
            errors=[{"location": ["body"], "message": str(exc)}],
        ) from exc
    if len(out) > limit:
        raise PayloadTooLarge(f"The patched value is {len(out)} bytes; the limit is {limit}.")
    return out


def _step(op: Op, entry: KeyEntry | None, limits: Limits) -> Step:
    limit = limits.max_value_bytes
    if op.kind == "put":
        return Step("put", op.key, op.value, op.ttl_ms, op.lease)
    if op.kind in ("delete", "get"):
        return Step(op.kind, op.key)
    if op.kind == "patch":
        if entry is None and op.initial is None:
            raise NotFound(f"Key {op.key!r} does not exist and the patch gives no 'initial'.")
        base = entry.value if entry is not None else op.initial
        assert base is not None
        try:
            value = patched(base, op.patch_kind, op.patch, limit, max_ops=limits.max_patch_ops)
            return Step("put", op.key, value, keep=True)
        except PreconditionFailed as exc:  # a failed JSON Patch test carries the entry
            exc.extra.setdefault("current", entry)
            raise
    start: Any = orjson.loads(entry.value) if entry is not None else op.start
    if isinstance(start, bool) or not isinstance(start, int | float):
        raise Unprocessable(
            f"Key {op.key!r} holds {describe(start)}, not a number; it cannot be incremented."
        )
    value = orjson.dumps(add_exact(start, op.by))
    if entry is None:
        return Step("put", op.key, value, op.ttl_ms)
    return Step("put", op.key, value, keep=True)


def plan(
    txn: Txn, entries: Mapping[str, KeyEntry | None], locks_held: Sequence[bool], limits: Limits
) -> Plan:
    """Choose the branch from the entries and lock states as read, and compute its steps.

    Raises the op's error (404, 412, 413, 422) when the chosen branch cannot apply.
    """
    held = iter(locks_held)
    succeeded = all(
        compare_holds(c, entries.get(c.key)) if isinstance(c, KeyCompare) else next(held)
        for c in txn.compares
    )
    ops = txn.success if succeeded else txn.failure
    steps = tuple(_step(op, entries.get(op.key), limits) for op in ops)
    return Plan(succeeded, steps)
