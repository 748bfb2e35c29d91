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

from app.domain.conditions import ARTIFACT, NO_CONDITION, ArtifactCondition, Condition
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


def check_artifact_condition(condition: Condition, current: ArtifactMeta | None) -> None:
    """``condition.check`` on an artifact (412 with ``current``, API.md section 6)."""
    condition.check(current, ARTIFACT)


NO_ARTIFACT_CONDITION = NO_CONDITION
__all__ = [
    "NO_ARTIFACT_CONDITION", "ArtifactCondition", "ArtifactMeta", "ArtifactPage", "ArtifactPut",
    "check_artifact_condition",
]
