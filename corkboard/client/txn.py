"""Building transactions (API.md section 10) for ``client.txn(...)``: compares and ops.

    from corkboard.client import Compare, Op

    result = client.txn(
        compare=[Compare.revision("acct/a", 41), Compare.revision("acct/b", 38)],
        success=[Op.put("acct/a", 90), Op.put("acct/b", 110)],
        failure=[Op.get("acct/a"), Op.get("acct/b")],
    )

Each helper returns a small immutable object whose ``to_json()`` is the document the
service takes; ``txn()`` also accepts those documents as plain dicts. Nothing here
performs I/O, and the service checks everything (a bad shape is InvalidRequest).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from corkboard.client.types import Duration, Fence, LeaseRef, LockGrant

#: ``Op.patch``'s ``initial`` when not given: a missing key is NotFound.
_NO_INITIAL: Any = object()


class Fenced(Protocol):
    """A held lock (``client.lock(...)``): anything with a ``fence``."""

    @property
    def fence(self) -> Fence: ...


def lease_id(lease: LeaseRef) -> str:
    """The id of a lease given as an id or as an object with one (LeaseInfo, a held
    lease)."""
    return lease if isinstance(lease, str) else lease.id


@dataclass(frozen=True, slots=True)
class Compare:
    """One condition of a transaction; all must hold for the ``success`` ops to run.
    Every compare is an equality."""

    doc: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return dict(self.doc)

    @classmethod
    def revision(cls, key: str, revision: int) -> Compare:
        """The key is at ``revision`` (0: the key is absent)."""
        return cls({"key": key, "revision": revision})

    @classmethod
    def version(cls, key: str, version: int) -> Compare:
        """The key has been written ``version`` times since it was created (0: absent)."""
        return cls({"key": key, "version": version})

    @classmethod
    def value(cls, key: str, value: Any) -> Compare:
        """The key exists and its value equals ``value`` as JSON."""
        return cls({"key": key, "value": value})

    @classmethod
    def exists(cls, key: str, exists: bool = True) -> Compare:
        """The key exists (or, with ``exists=False``, does not)."""
        return cls({"key": key, "exists": exists})

    @classmethod
    def absent(cls, key: str) -> Compare:
        """The key does not exist (create-if-absent)."""
        return cls({"key": key, "exists": False})

    @classmethod
    def lock(cls, name: str, token: int, *, session: str | None = None) -> Compare:
        """Fencing token ``token`` holds lock ``name`` (a session's lock with
        ``session``)."""
        doc: dict[str, Any] = {"lock": name, "token": token}
        if session is not None:
            doc["session"] = session
        return cls(doc)

    @classmethod
    def holds(cls, held: LockGrant | Fence | Fenced) -> Compare:
        """The lock of a grant, a Fence or a held ``client.lock(...)`` is still held by
        its token."""
        if isinstance(held, LockGrant):
            fence = Fence(held.name, held.token, held.session)
        elif isinstance(held, Fence):
            fence = held
        else:
            fence = held.fence
        return cls.lock(fence.name, fence.token, session=fence.session)


@dataclass(frozen=True, slots=True)
class Op:
    """One operation of a transaction branch, applied in order (a ``get`` sees the
    branch's earlier writes); at most one write per key in a branch."""

    doc: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return dict(self.doc)

    @classmethod
    def put(cls, key: str, value: Any, *, ttl: Duration | None = None,
            lease: LeaseRef | None = None) -> Op:
        """Store ``value``; ``ttl`` or ``lease`` (not both). Without ``lease`` a key on
        a lease leaves it. Result: the entry."""
        doc: dict[str, Any] = {"op": "put", "key": key, "value": value}
        if ttl is not None:
            doc["ttl"] = ttl
        if lease is not None:
            doc["lease"] = lease_id(lease)
        return cls(doc)

    @classmethod
    def delete(cls, key: str) -> Op:
        """Delete the key. Result: Deleted (whether it existed)."""
        return cls({"op": "delete", "key": key})

    @classmethod
    def get(cls, key: str) -> Op:
        """Read the key. Result: the entry, or None."""
        return cls({"op": "get", "key": key})

    @classmethod
    def patch(cls, key: str, *, merge: Any = None,
              json_patch: list[dict[str, Any]] | None = None,
              initial: Any = _NO_INITIAL) -> Op:
        """A merge patch (RFC 7396) or a JSON patch (RFC 6902); ``initial`` is the
        starting value of a missing key. Keeps the key's expiry and lease. Result: the
        entry."""
        if (json_patch is None) == (merge is None):
            raise ValueError("give exactly one of merge= or json_patch=")
        doc: dict[str, Any] = {"op": "patch", "key": key}
        if json_patch is not None:
            doc["json_patch"] = json_patch
        else:
            doc["merge"] = merge
        if initial is not _NO_INITIAL:
            doc["initial"] = initial
        return cls(doc)

    @classmethod
    def increment(cls, key: str, by: float = 1, *, initial: float = 0,
                  ttl: Duration | None = None) -> Op:
        """Add ``by`` (created from ``initial``; ``ttl`` applies on creation). Result:
        the entry."""
        doc: dict[str, Any] = {"op": "increment", "key": key, "by": by, "initial": initial}
        if ttl is not None:
            doc["ttl"] = ttl
        return cls(doc)


def documents(items: Iterable[Compare | Op | Mapping[str, Any]] | None,
              what: str) -> list[dict[str, Any]]:
    """The JSON documents of compares or ops given as helpers or as plain dicts."""
    out: list[dict[str, Any]] = []
    for item in items or ():
        if isinstance(item, Compare | Op):
            out.append(item.to_json())
        elif isinstance(item, Mapping):
            out.append(dict(item))
        else:
            raise TypeError(f"a {what} is a Compare/Op or a dict, not {type(item).__name__}")
    return out
