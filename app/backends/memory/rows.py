"""A key at one revision as the memory store keeps it: one ``bytes`` object, a head of six
signed 64-bit integers (revision, created_revision, version, created_at, modified_at,
expires_at or ``NO_DEADLINE``) followed by the value.

Why bytes and not a tuple: CPython's cyclic garbage collector tracks every new tuple
until a collection of the youngest generation finds that it holds only atomic objects,
and that collection reads each object the tuple refers to. A write that keeps rows (a
key's revisions fill its history) leaves such tuples behind, and at a million keys the
objects they refer to (the older row, its creation time and revision) are out of the
CPU's caches: those collections took ~10 % of a PUT there (bench/README.md, "Rows the
collector never sees"). A ``bytes`` object is never tracked, nor is a dict whose values
are all bytes, so the store's rows cost the collector nothing; and a row is one object
where a tuple was four (the tuple, its value and two ints of its own).
"""

from __future__ import annotations

import struct
from dataclasses import fields
from typing import Final

from app.domain.keys import KeyEntry

Row = bytes

_HEAD: Final = struct.Struct("<6q")
_INT: Final = struct.Struct("<q")
#: The head's size: the value starts here.
HEAD_SIZE: Final = _HEAD.size
_EXPIRES_AT: Final = 5 * _INT.size
#: expires_at of a key without a deadline (deadlines are milliseconds since the epoch).
NO_DEADLINE: Final = -(2**63)


#: A key's older revisions, newest first. One is kept bare: a write that keeps a tuple
#: leaves it tracked by the cyclic GC until a young collection reads the rows in it, and
#: in a large store most keys have few revisions and those rows are out of the CPU's
#: caches (bench/README.md, "Rows the collector never sees"); a bytes row is never
#: tracked. The functions below are the only code that knows this shape.
Older = Row | tuple[Row, ...]


def older_rows(older: Older) -> tuple[Row, ...]:
    """The rows in ``older``, newest first."""
    return (older,) if isinstance(older, bytes) else older


def pushed(older: Older | None, row: Row, limit: int) -> Older:
    """``older`` with ``row`` in front, at most ``limit`` (>= 1) kept: a lone row is kept
    bare, no tuple made."""
    if older is None or limit == 1:
        return row
    return (row, *older_rows(older)[:limit - 1])


def oldest_if_full(older: Older | None, limit: int) -> Row | None:
    """The oldest row of ``older`` when it holds ``limit`` rows (the one a push drops),
    read in place: no tuple is built for a bare row."""
    if older is None:
        return None
    if isinstance(older, bytes):
        return older if limit == 1 else None
    return older[-1] if len(older) == limit else None


def pack(
    value: bytes, revision: int, created_revision: int, version: int, created_at: int,
    modified_at: int, expires_at: int | None,
) -> Row:
    """The row of a key at one revision (the value is copied into it: a value from
    ``orjson.dumps`` sits in a 4 KiB buffer whatever its length, see ``app.buffers``)."""
    return _HEAD.pack(revision, created_revision, version, created_at, modified_at,
                      NO_DEADLINE if expires_at is None else expires_at) + value


def successor(
    old: Row, value: bytes, revision: int, modified_at: int, expires_at: int | None,
) -> Row:
    """The row of the revision after ``old``: its creation carried over, version + 1."""
    _, created_revision, version, created_at, _, _ = _HEAD.unpack_from(old)
    return pack(value, revision, created_revision, version + 1, created_at, modified_at,
                expires_at)


def with_deadline(row: Row, expires_at: int | None) -> Row:
    """The same revision with another deadline (a touch; the value is copied once)."""
    return b"".join((row[:_EXPIRES_AT],
                     _INT.pack(NO_DEADLINE if expires_at is None else expires_at),
                     memoryview(row)[HEAD_SIZE:]))


def value_of(row: Row) -> bytes:
    return row[HEAD_SIZE:]


def value_size(row: Row) -> int:
    return len(row) - HEAD_SIZE


def revision_of(row: Row) -> int:
    revision: int = _INT.unpack_from(row)[0]
    return revision


def expires_of(row: Row) -> int | None:
    expires_at: int = _INT.unpack_from(row, _EXPIRES_AT)[0]
    return None if expires_at == NO_DEADLINE else expires_at


def is_due(row: Row, now: int) -> bool:
    """Whether the row's deadline has passed at ``now`` (never, without one)."""
    expires_at: int = _INT.unpack_from(row, _EXPIRES_AT)[0]
    return NO_DEADLINE != expires_at <= now


#: KeyEntry's fields, in the order of (name, value, *head).
_ENTRY_FIELDS = ("key", "value", "revision", "created_revision", "version", "created_at",
                 "modified_at", "expires_at")
assert tuple(f.name for f in fields(KeyEntry)) == _ENTRY_FIELDS, "Row no longer fits KeyEntry"
_SET_KEY, _SET_VALUE, _SET_REV, _SET_CREV, _SET_VER, _SET_CAT, _SET_MAT, _SET_EXP = (
    getattr(KeyEntry, name).__set__ for name in _ENTRY_FIELDS)


def entry_of(key: str, row: Row) -> KeyEntry:
    """``KeyEntry(key, ...)`` of a row, built in half the time: a frozen dataclass's
    ``__init__`` sets each field through ``object.__setattr__`` (~1 us for eight); this
    sets the slots directly (every read of a key builds one)."""
    revision, created_revision, version, created_at, modified_at, expires_at = (
        _HEAD.unpack_from(row))
    entry: KeyEntry = KeyEntry.__new__(KeyEntry)
    _SET_KEY(entry, key)
    _SET_VALUE(entry, row[HEAD_SIZE:])
    _SET_REV(entry, revision)
    _SET_CREV(entry, created_revision)
    _SET_VER(entry, version)
    _SET_CAT(entry, created_at)
    _SET_MAT(entry, modified_at)
    _SET_EXP(entry, None if expires_at == NO_DEADLINE else expires_at)
    return entry
