"""The parts the NATS backend does not have yet (issue 17's later stages): each of their
calls answers 501 ``not_supported_by_backend``, and /v1/capabilities leaves them out of
``supports``. Nothing is stored, so nothing is pretended: no artifact exists."""

from __future__ import annotations

from typing import Any, TypeVar

from app.artifacts.base import BlobReader, BlobStore, BlobWriter
from app.backends.parts.artifacts import ArtifactIndex
from app.errors import NotSupportedByBackend

#: What the NATS backend offers so far (the ``supports`` list of /v1/capabilities).
SUPPORTS = ("keys", "events", "watch", "ttl", "history", "locks", "sessions", "leases", "txn")

P = TypeVar("P")


def refusal(what: str) -> NotSupportedByBackend:
    return NotSupportedByBackend(
        f"The NATS backend does not support {what} yet; GET /v1/capabilities lists what "
        "it supports (see docs/nats.md)."
    )


def unsupported(part: type[P], what: str) -> P:
    """An instance of ``part`` whose every abstract method raises 501."""

    def method(name: str) -> Any:
        async def refuse(self: Any, *args: Any, **kwargs: Any) -> Any:
            raise refusal(what)

        refuse.__name__ = name
        return refuse

    names: frozenset[str] = getattr(part, "__abstractmethods__", frozenset())
    cls = type(f"Nats{part.__name__}Unsupported", (part,), {n: method(n) for n in names})
    instance: P = cls()
    return instance


def artifacts() -> ArtifactIndex:
    index = unsupported(ArtifactIndex, "artifacts")  # type: ignore[type-abstract]

    async def no_garbage(*, limit: int, lease_ms: int) -> list[tuple[str, str]]:
        return []  # no artifact is ever stored, so none is garbage: the collector idles

    index.artifact_garbage = no_garbage  # type: ignore[method-assign]
    return index


class NoBlobStore(BlobStore):
    """The artifact store of ``nats://`` until the Object Store one exists: it holds
    nothing, and refuses every write with 501."""

    name = "nats"
    needs_grace = False

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def create(self, blob: str) -> BlobWriter:
        raise refusal("artifacts")

    async def open(self, blob: str, size: int) -> BlobReader:
        raise refusal("artifacts")

    async def delete(self, blob: str) -> None:
        return None

    async def blobs(self) -> list[str]:
        return []
