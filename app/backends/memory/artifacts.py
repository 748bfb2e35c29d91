"""The in-memory artifact index: artifacts' metadata and their blob ids' life cycle.

Like every memory operation, each method runs without awaiting between its reads and
writes, so the metadata swap, the revision, the event and the fence check are atomic.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from app.backends.memory.store import MemoryStore
from app.backends.paging import page_sorted
from app.backends.parts.artifacts import ArtifactIndex
from app.domain.artifacts import ArtifactMeta, ArtifactPage, ArtifactPut
from app.domain.conditions import ARTIFACT, NO_CONDITION, Condition
from app.domain.fence import Fence
from app.errors import RequestTimeout
from app.syntax import Pattern, now_ms


@dataclass(slots=True)
class _ArtifactSpace:
    """A namespace's artifacts: metadata by key, the keys in order, and blob ids being
    uploaded (deadline) or waiting for removal from the store (due time)."""

    items: dict[str, ArtifactMeta] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    reserved: dict[str, int] = field(default_factory=dict)
    garbage: dict[str, int] = field(default_factory=dict)


class MemoryArtifacts(ArtifactIndex):
    """The artifact index on a ``MemoryStore``: one artifact space per namespace."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self.spaces: dict[str, _ArtifactSpace] = {}
        store.on_deadline("a", self._expire_a)

    def _artifacts(self, ns: str) -> _ArtifactSpace:
        space = self.spaces.get(ns)
        if space is None:
            space = self.spaces[ns] = _ArtifactSpace()
        return space

    def _artifacts_view(self, ns: str) -> _ArtifactSpace:
        """For reads: the namespace's artifacts, or an unstored empty space."""
        space = self.spaces.get(ns)
        return space if space is not None else _ArtifactSpace()

    def _live_artifact(self, ns: str, key: str, now: int) -> ArtifactMeta | None:
        """The live artifact; one past its deadline is expired here, with its event."""
        meta = self._artifacts_view(ns).items.get(key)
        if meta is not None and meta.expires_at is not None and meta.expires_at <= now:
            self._remove_artifact(ns, meta, now, "expired")
            return None
        return meta

    def _remove_artifact(self, ns: str, meta: ArtifactMeta, now: int, reason: str) -> None:
        space = self._artifacts(ns)
        del space.items[meta.key]
        i = bisect.bisect_left(space.order, meta.key)
        if i < len(space.order) and space.order[i] == meta.key:
            del space.order[i]
        space.garbage[meta.blob] = now + meta.grace_ms
        self.store.emit(
            ns, "artifact.delete", meta.key, now,
            value=None, old_value=meta.as_dict(), extra={"reason": reason},
        )

    async def artifact_reserve(self, ns: str, blob: str, deadline_ms: int) -> None:
        self._artifacts(ns).reserved[blob] = deadline_ms

    async def artifact_discard(self, ns: str, blob: str) -> None:
        self._artifacts_view(ns).reserved.pop(blob, None)

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
        now = now_ms()
        self.store.fence_holds(ns, fence, now)
        space = self._artifacts(ns)
        old = self._live_artifact(ns, key, now)
        (condition or NO_CONDITION).check(old, ARTIFACT)
        if space.reserved.pop(blob, None) is None:
            raise RequestTimeout("The upload took too long; its bytes were discarded.")
        expires_at = now + ttl_ms if ttl_ms else None
        meta = ArtifactMeta(
            key, blob, size, sha256, content_type, now, expires_at,
            self.store.ns(ns).revision + 1, grace_ms,
        )
        revision = self.store.emit(
            ns, "artifact.put", key, now,
            value=meta.as_dict(), old_value=old.as_dict() if old is not None else None,
        )
        assert revision == meta.revision
        space.items[key] = meta
        if old is None:
            bisect.insort(space.order, key)
        else:
            space.garbage[old.blob] = now + old.grace_ms
        if expires_at is not None:
            self.store.schedule_deadline(expires_at, ns, "a:" + key)
        return ArtifactPut(meta, old is None)

    async def artifact_get(self, ns: str, key: str) -> ArtifactMeta | None:
        meta = self._artifacts_view(ns).items.get(key)
        if meta is not None and meta.expires_at is not None and meta.expires_at <= now_ms():
            return None
        return meta

    async def artifact_delete(
        self,
        ns: str,
        key: str,
        *,
        condition: Condition | None = None,
        fence: Fence | None = None,
    ) -> ArtifactMeta | None:
        now = now_ms()
        self.store.fence_holds(ns, fence, now)
        current = self._live_artifact(ns, key, now)
        (condition or NO_CONDITION).check(current, ARTIFACT)
        if current is None:
            return None
        self._remove_artifact(ns, current, now, "deleted")
        return current

    async def artifact_list(
        self, ns: str, pattern: Pattern, *, limit: int, after: str | None
    ) -> ArtifactPage:
        space = self._artifacts_view(ns)
        now = now_ms()

        def live(key: str) -> ArtifactMeta | None:
            meta = space.items[key]
            return None if meta.expires_at is not None and meta.expires_at <= now else meta

        items, next_cursor = page_sorted(space.order, pattern, after, limit, live)
        return ArtifactPage(items, next_cursor, self.store.view(ns).revision)

    async def artifact_garbage(self, *, limit: int, lease_ms: int) -> list[tuple[str, str]]:
        now = now_ms()
        claimed: list[tuple[str, str]] = []
        for ns, space in self.spaces.items():
            for blob, deadline in list(space.reserved.items()):
                if deadline <= now:  # an upload that never committed: its bytes are garbage
                    del space.reserved[blob]
                    space.garbage[blob] = now
            for blob, due in space.garbage.items():
                if len(claimed) >= limit:
                    return claimed
                if due <= now:
                    space.garbage[blob] = now + lease_ms
                    claimed.append((ns, blob))
        return claimed

    async def artifact_garbage_done(self, ns: str, blobs: list[str]) -> None:
        garbage = self._artifacts_view(ns).garbage
        for blob in blobs:
            garbage.pop(blob, None)

    def _expire_a(self, ns: str, key: str, deadline: int, now: int) -> bool:
        meta = self._artifacts_view(ns).items.get(key)
        if meta is None or meta.expires_at != deadline:
            return False  # deleted or replaced since this deadline was set
        self._live_artifact(ns, key, now)
        return True

