"""Typed results of the client: frozen dataclasses built from the service's JSON.

Timestamps are kept as the service sends them (RFC 3339 UTC strings with milliseconds);
``raw`` holds the whole document, for fields added by later versions of the service.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, Protocol, TypeVar

T = TypeVar("T")

JSON = Any
Duration = float | int | str  # seconds, or a Go-style string: "250ms", "30s", "5m"


def _int(value: Any) -> int | None:
    return int(value) if value is not None else None


@dataclass(frozen=True, slots=True)
class Entry:
    """A key's entry. ``value`` is None in a listing made with ``values=False``."""

    key: str
    value: JSON
    revision: int
    created_revision: int
    version: int
    created_at: str
    modified_at: str
    expires_at: str | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    @property
    def etag(self) -> str:
        return f'"{self.revision}"'

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Entry:
        return cls(d["key"], d.get("value"), d["revision"], d["created_revision"],
                   d["version"], d["created_at"], d["modified_at"], d.get("expires_at"), d)


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a listing; pass ``next_cursor`` back as ``cursor=`` (None at the end)."""

    items: list[T]
    next_cursor: str | None
    revision: int | None


#: What a listing's iterator calls: the page after a cursor (None: the first page).
AsyncPageFetch = Callable[[str | None], Awaitable[Page[T]]]
PageFetch = Callable[[str | None], Page[T]]


@dataclass(frozen=True, slots=True)
class LockGrant:
    """An acquired lock: its fencing ``token`` and the pending entries handed over."""

    name: str
    owner: str
    token: int
    acquired_at: str
    expires_at: str | None
    pending: list[JSON]
    session: str | None = None

    @property
    def fence_headers(self) -> dict[str, str]:
        """The headers that fence a write with this grant."""
        return Fence(self.name, self.token, self.session).headers

    @classmethod
    def from_json(cls, d: dict[str, Any], session: str | None = None) -> LockGrant:
        return cls(d["name"], d["owner"], d["token"], d["acquired_at"], d.get("expires_at"),
                   list(d.get("pending") or []), session)


@dataclass(frozen=True, slots=True)
class LockQueued:
    """The lock is held by another: the entry was queued (with ``position``) or debounced."""

    status: Literal["queued", "debounced"]
    position: int | None

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> LockQueued:
        return cls(d["status"], d.get("position"))


@dataclass(frozen=True, slots=True)
class LockHolder:
    """Who holds a lock now."""

    name: str
    owner: str
    token: int
    acquired_at: str
    expires_at: str | None
    pending_count: int

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> LockHolder:
        return cls(d["name"], d["owner"], d["token"], d["acquired_at"], d.get("expires_at"),
                   d.get("pending_count", 0))


@dataclass(frozen=True, slots=True)
class LockRelease:
    """A release (``released``) or force-release (``released`` or ``free``): the pending
    entries handed over."""

    status: str
    owner: str | None
    token: int | None
    pending: list[JSON]

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> LockRelease:
        return cls(d["status"], d.get("owner"), _int(d.get("token")),
                   list(d.get("pending") or []))


@dataclass(frozen=True, slots=True)
class Fence:
    """A fencing token: writes carrying it apply only while it holds lock ``name``."""

    name: str
    token: int
    session: str | None = None

    @property
    def headers(self) -> dict[str, str]:
        headers = {"Fence-Lock": self.name, "Fence-Token": str(self.token)}
        if self.session:
            headers["Fence-Session"] = self.session
        return headers


@dataclass(frozen=True, slots=True)
class Deleted:
    """A transaction's ``delete`` op: whether the key existed."""

    deleted: bool


#: One op's result in a transaction: the entry after a write, the entry (or None) of a
#: get, Deleted for a delete.
TxnOpResult = Entry | Deleted | None


@dataclass(frozen=True, slots=True)
class TxnResult:
    """A transaction's answer: which branch ran (``succeeded``: every compare held), its
    revision (the current one when it wrote nothing) and one result per op of that
    branch, in order."""

    succeeded: bool
    revision: int
    results: list[TxnOpResult]
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TxnResult:
        results: list[TxnOpResult] = []
        for r in d["results"]:
            if r is None:
                results.append(None)
            elif "deleted" in r and "key" not in r:
                results.append(Deleted(bool(r["deleted"])))
            else:
                results.append(Entry.from_json(r))
        return cls(bool(d["succeeded"]), d["revision"], results, d)


@dataclass(frozen=True, slots=True)
class PatternDeleted:
    """A pattern delete: the keys deleted (in key order) and their one revision (the
    current one when none matched)."""

    deleted: int
    keys: list[str]
    revision: int

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> PatternDeleted:
        return cls(d["deleted"], list(d["keys"]), d["revision"])


class LeaseLike(Protocol):
    """Anything naming a lease: LeaseInfo, a held lease (``client.lease(...)``)."""

    @property
    def id(self) -> str: ...


#: A lease given to ``lease=``: its id, or an object with the id.
LeaseRef = str | LeaseLike


@dataclass(frozen=True, slots=True)
class LeaseInfo:
    """A live lease: ``ttl`` is the seconds each keepalive extends it by."""

    id: str
    ttl: float
    granted_at: str
    expires_at: str

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> LeaseInfo:
        return cls(d["id"], d["ttl"], d["granted_at"], d["expires_at"])


@dataclass(frozen=True, slots=True)
class LeaseLock:
    """A lock held on a lease (``session`` for a session's lock)."""

    name: str
    owner: str
    token: int
    session: str | None = None

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> LeaseLock:
        return cls(d["name"], d["owner"], d["token"], d.get("session"))


@dataclass(frozen=True, slots=True)
class LeaseDetail:
    """A lease with its keys (in key order) and locks; after a revoke, what it removed
    and the ``revision`` of its ``lease.revoked`` event."""

    id: str
    ttl: float
    granted_at: str
    expires_at: str
    keys: list[str]
    locks: list[LeaseLock]
    revision: int | None = None

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> LeaseDetail:
        return cls(d["id"], d["ttl"], d["granted_at"], d["expires_at"], list(d["keys"]),
                   [LeaseLock.from_json(lock) for lock in d["locks"]], d.get("revision"))


@dataclass(frozen=True, slots=True)
class Session:
    session_id: str
    metadata: dict[str, Any]
    ttl: float | None
    created_at: str
    updated_at: str
    expires_at: str | None
    variable_count: int

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Session:
        return cls(d["session_id"], d.get("metadata") or {}, d.get("ttl"), d["created_at"],
                   d["updated_at"], d.get("expires_at"), d.get("variable_count", 0))


@dataclass(frozen=True, slots=True)
class Variable:
    """A typed session variable; ``version`` is its ETag."""

    id: str
    name: str
    type: str
    value: JSON
    constraints: dict[str, Any]
    metadata: dict[str, Any]
    description: str | None
    version: int
    created_at: str
    updated_at: str

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Variable:
        return cls(d["id"], d["name"], d["type"], d.get("value"), d.get("constraints") or {},
                   d.get("metadata") or {}, d.get("description"), d["version"],
                   d["created_at"], d["updated_at"])


@dataclass(frozen=True, slots=True)
class BatchResult:
    """A batch write: the names written, the errors per name (non-atomic batches), the
    batch's one revision and each written variable's new version."""

    updated: list[str]
    errors: dict[str, Any]
    revision: int | None
    versions: dict[str, int]

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> BatchResult:
        return cls(list(d.get("updated") or []), dict(d.get("errors") or {}),
                   d.get("revision"), dict(d.get("versions") or {}))


@dataclass(frozen=True, slots=True)
class ImportResult:
    """A snapshot import: the revision it took, whether the session was new, and the
    fencing token here of each imported held lock."""

    session_id: str
    revision: int
    created: bool
    tokens: dict[str, int]

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ImportResult:
        return cls(d["session_id"], d["revision"], d["created"], dict(d.get("tokens") or {}))


@dataclass(frozen=True, slots=True)
class Artifact:
    """An artifact's metadata; ``sha256`` is its ETag."""

    key: str
    size: int
    sha256: str
    content_type: str
    created_at: str
    expires_at: str | None
    revision: int

    @property
    def etag(self) -> str:
        return f'"{self.sha256}"'

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Artifact:
        return cls(d["key"], d["size"], d["sha256"], d["content_type"], d["created_at"],
                   d.get("expires_at"), d["revision"])


@dataclass(frozen=True, slots=True)
class ArtifactInfo:
    """What the headers of an artifact download (or HEAD) say."""

    key: str
    etag: str
    size: int
    content_type: str
    status: int
    content_range: str | None

    @property
    def sha256(self) -> str:
        return self.etag.strip('"')


@dataclass(frozen=True, slots=True)
class Event:
    """A change: ``kv.put``, ``variable.updated``, ``lock.acquired``, ... ``data`` is the
    whole event document (``changes`` of a txn, ``snapshot`` flags, ...)."""

    revision: int
    type: str
    ns: str
    key: str | None
    at: str | None
    value: JSON
    old_value: JSON
    session: str | None
    data: dict[str, Any] = field(repr=False, compare=False)

    @property
    def snapshot(self) -> bool:
        """A snapshot entry (``snapshot=True`` watches), not a live change."""
        return bool(self.data.get("snapshot"))

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Event:
        return cls(d["revision"], d["type"], d.get("ns", ""), d.get("key"), d.get("at"),
                   d.get("value"), d.get("old_value"), d.get("session"), d)


@dataclass(frozen=True, slots=True)
class Reset:
    """The resume point is gone: events up to ``compacted_revision`` were compacted, the
    feed continues after ``current_revision``; resync before trusting local state."""

    compacted_revision: int
    current_revision: int
    type: Literal["reset"] = "reset"

    @property
    def revision(self) -> int:
        return self.current_revision

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Reset:
        return cls(d["compacted_revision"], d["current_revision"])


@dataclass(frozen=True, slots=True)
class Synced:
    """A snapshot watch's snapshot is complete: it is the state at ``revision``."""

    revision: int
    type: Literal["synced"] = "synced"


@dataclass(frozen=True, slots=True)
class Progress:
    """A quiet watch has seen everything up to ``revision`` (only with ``progress=True``)."""

    revision: int
    type: Literal["progress"] = "progress"


WatchItem = Event | Reset | Synced | Progress


@dataclass(frozen=True, slots=True)
class EventBatch:
    """A long poll's answer: events (a ``Reset`` first when the resume point is gone)
    and the revision to continue from."""

    events: list[Event | Reset]
    revision: int


@dataclass(frozen=True, slots=True)
class Capabilities:
    backend: str
    artifact_store: str
    atomic_updates: bool
    streaming: bool
    persistence: bool
    distribution: bool
    limits: dict[str, Any]
    version: str
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Capabilities:
        return cls(d["backend"], d["artifact_store"], d["atomic_updates"], d["streaming"],
                   d["persistence"], d["distribution"], dict(d.get("limits") or {}),
                   d["version"], d)
