"""The artifact index: artifacts' metadata and the life cycle of their blob ids."""

from __future__ import annotations

from abc import ABC, abstractmethod

from app.domain.artifacts import ArtifactMeta, ArtifactPage, ArtifactPut
from app.domain.conditions import Condition
from app.domain.fence import Fence
from app.syntax import Pattern


class ArtifactIndex(ABC):
    """Artifacts' metadata (API.md section 6). The bytes live in the artifact store under
    a blob id; these methods keep the metadata and the life cycle of blob ids: reserved
    while uploading, referenced by an artifact, then garbage (after a grace) to be
    removed from the store."""

    @abstractmethod
    async def artifact_reserve(self, ns: str, blob: str, deadline_ms: int) -> None:
        """Record an upload starting into ``blob``: unless ``artifact_put`` commits it by
        ``deadline_ms``, the blob becomes garbage (a crashed server's upload is removed)."""

    @abstractmethod
    async def artifact_discard(self, ns: str, blob: str) -> None:
        """Forget a reserved blob whose upload failed and whose bytes were removed."""

    @abstractmethod
    async def artifact_put(
        self,
        ns: str,
        key: str,
        *,
        blob: str,
        size: int,
        sha256: str,
        content_type: str,
        ttl_ms: int = 0,
        grace_ms: int = 0,
        condition: Condition | None = None,
        fence: Fence | None = None,
    ) -> ArtifactPut:
        """Make the reserved ``blob`` the artifact's content, atomically with the fence
        check, the precondition, the revision and the ``artifact.put`` event; the
        replaced version's blob becomes garbage after its grace. Raises StaleFence,
        PreconditionFailed, or RequestTimeout when the reservation has lapsed."""

    @abstractmethod
    async def artifact_get(self, ns: str, key: str) -> ArtifactMeta | None:
        """The live artifact's metadata, or None (also once its TTL has passed)."""

    @abstractmethod
    async def artifact_delete(
        self,
        ns: str,
        key: str,
        *,
        condition: Condition | None = None,
        fence: Fence | None = None,
    ) -> ArtifactMeta | None:
        """Delete the artifact with an ``artifact.delete`` event; None when absent (no
        event). Its blob becomes garbage after its grace."""

    @abstractmethod
    async def artifact_list(
        self, ns: str, pattern: Pattern, *, limit: int, after: str | None
    ) -> ArtifactPage:
        """Live artifacts matching ``pattern`` in key order, strictly after ``after``."""

    @abstractmethod
    async def artifact_garbage(self, *, limit: int, lease_ms: int) -> list[tuple[str, str]]:
        """Claim up to ``limit`` due garbage blobs as (namespace, blob) pairs, across
        namespaces; a claim not confirmed by ``artifact_garbage_done`` within
        ``lease_ms`` is handed out again, so a crash between the two loses nothing."""

    @abstractmethod
    async def artifact_garbage_done(self, ns: str, blobs: list[str]) -> None:
        """Forget garbage blobs whose bytes have been removed from the store."""
