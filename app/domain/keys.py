"""A key's values: its entry at one revision, a put's result, a listing page, and a
server-side update of its value. Times are epoch milliseconds; values are JSON bytes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from app.errors import PreconditionFailed
from app.syntax import iso_ms


@dataclass(frozen=True, slots=True)
class KeyEntry:
    """One key at one revision. Times are epoch milliseconds; ``value`` is JSON bytes."""

    key: str
    value: bytes
    revision: int
    created_revision: int
    version: int
    created_at: int
    modified_at: int
    expires_at: int | None

    def as_dict(self, *, with_value: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {"key": self.key}
        if with_value:
            out["value"] = orjson.Fragment(self.value)
        out["revision"] = self.revision
        out["created_revision"] = self.created_revision
        out["version"] = self.version
        out["created_at"] = iso_ms(self.created_at)
        out["modified_at"] = iso_ms(self.modified_at)
        out["expires_at"] = iso_ms(self.expires_at) if self.expires_at else None
        return out

    def to_json(self) -> bytes:
        """``orjson.dumps(self.as_dict())``, byte for byte (tests/test_hotpath_front.py),
        formatted directly: every key read and write answers with it."""
        expires = self.expires_at
        return b'{"key":%b,"value":%b,"revision":%d,"created_revision":%d,"version":%d,' \
            b'"created_at":"%b","modified_at":"%b","expires_at":%b}' % (
                orjson.dumps(self.key), self.value, self.revision, self.created_revision,
                self.version, iso_ms(self.created_at).encode(),
                iso_ms(self.modified_at).encode(),
                b'"%b"' % iso_ms(expires).encode() if expires else b"null",
            )

    @property
    def etag(self) -> str:
        return f'"{self.revision}"'


@dataclass(frozen=True, slots=True)
class PutResult:
    entry: KeyEntry
    created: bool


@dataclass(frozen=True, slots=True)
class KeyPage:
    items: list[KeyEntry]
    next_cursor: str | None
    revision: int


#: A server-side transformation of a key's value: the current (or initial) value's JSON
#: bytes in, the new value's JSON bytes out. It may raise a CorkboardError to refuse.
ValueUpdate = Callable[[bytes], bytes]


def apply_update(update: ValueUpdate, base: bytes, current: KeyEntry | None) -> bytes:
    """Run a server-side update; a refused precondition (a JSON Patch ``test``) carries
    the entry it was tested against as ``current``, like every 412."""
    try:
        return update(base)
    except PreconditionFailed as exc:
        exc.extra.setdefault("current", current)
        raise
