"""Artifact metadata as the state backend keeps it (API.md section 6).

The bytes of an artifact live in the artifact store (``app.artifacts``) under a
generated blob id; the state backend keeps what a reader resolves first: key, size,
sha256, content type, times, revision and that blob id. Swapping this record, taking
the namespace's revision, appending the ``artifact.put`` / ``artifact.delete`` event,
the fence check and queueing the superseded blob for removal happen in one atomic step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from app.errors import PreconditionFailed
from app.syntax import iso_ms


@dataclass(frozen=True, slots=True)
class ArtifactMeta:
    """One artifact version. Times are epoch ms; ``blob`` names its bytes in the store.

    ``grace_ms`` is how long those bytes must stay readable once this version is
    replaced or deleted, for downloads that resolved it just before.
    """

    key: str
    blob: str
    size: int
    sha256: str
    content_type: str
    created_at: int
    expires_at: int | None
    revision: int
    grace_ms: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "size": self.size,
            "sha256": self.sha256,
            "content_type": self.content_type,
            "created_at": iso_ms(self.created_at),
            "expires_at": iso_ms(self.expires_at) if self.expires_at else None,
            "revision": self.revision,
        }

    def to_json(self) -> bytes:
        return orjson.dumps(self.as_dict())

    @property
    def etag(self) -> str:
        return f'"{self.sha256}"'


@dataclass(frozen=True, slots=True)
class ArtifactPut:
    meta: ArtifactMeta
    created: bool


@dataclass(frozen=True, slots=True)
class ArtifactPage:
    items: list[ArtifactMeta]
    next_cursor: str | None
    revision: int


@dataclass(frozen=True, slots=True)
class ArtifactCondition:
    """If-Match (one of ``etags``, quoted sha256s; or any existing artifact with
    ``must_exist``) or If-None-Match: * (``must_not_exist``) of an artifact write."""

    etags: tuple[str, ...] | None = None
    must_exist: bool = False
    must_not_exist: bool = False

    @property
    def any(self) -> bool:
        return self.etags is not None or self.must_exist or self.must_not_exist


NO_ARTIFACT_CONDITION = ArtifactCondition()


def check_artifact_condition(condition: ArtifactCondition, current: ArtifactMeta | None) -> None:
    """Raise PreconditionFailed (412, ``current`` in the body) unless ``condition`` holds."""
    if condition.must_not_exist and current is not None:
        raise PreconditionFailed(
            f"Artifact {current.key!r} already exists (If-None-Match: *).",
            code="already_exists", current=current,
        )
    if condition.must_exist or condition.etags is not None:
        if current is None:
            raise PreconditionFailed("The artifact does not exist (If-Match).", current=None)
        if condition.etags is not None and current.etag not in condition.etags:
            raise PreconditionFailed(
                f"The artifact's ETag is {current.etag}, which does not match If-Match.",
                current=current,
            )
