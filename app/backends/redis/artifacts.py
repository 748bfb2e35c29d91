"""The Redis artifact index: artifacts' metadata and their blob ids' life cycle.

Every change is one script (``lua/artifacts_*.lua`` on top of ``lib_artifacts.lua``), so
the metadata swap, the revision, the event, the fence check and the queueing of the
replaced blob for removal cannot come apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from app.backends import paging
from app.backends.parts.artifacts import ArtifactIndex
from app.backends.redis.store import NAMESPACES_KEY, RedisStore, lua_pattern, text
from app.domain.artifacts import ArtifactMeta, ArtifactPage, ArtifactPut
from app.domain.conditions import ARTIFACT, NO_CONDITION, Condition
from app.domain.fence import Fence
from app.errors import RequestTimeout
from app.syntax import Pattern


def _meta(fields: Sequence[Any], offset: int = 1) -> ArtifactMeta:
    key, b, n, h, ct, ca, ea, r, g = fields[offset : offset + 9]
    return ArtifactMeta(
        text(key), text(b), int(n), text(h), text(ct), int(ca), int(ea) or None, int(r), int(g)
    )


def _raise_failure(
    status: str, reply: Sequence[Any], key: str, fence: Fence | None, condition: Condition
) -> None:
    if status == "stale_fence":
        assert fence is not None
        raise fence.stale()
    if status == "upload_expired":
        raise RequestTimeout("The upload took too long; its bytes were discarded.")
    if status in ("already_exists", "revision_mismatch"):
        condition.check(_meta(reply) if len(reply) > 1 else None, ARTIFACT)  # raises its 412
    raise RuntimeError(f"unexpected script status {status!r} for artifact {key!r}")


class RedisArtifacts(ArtifactIndex):
    """The artifact index on a ``RedisStore``."""

    def __init__(self, store: RedisStore) -> None:
        self.store = store


    async def artifact_reserve(self, ns: str, blob: str, deadline_ms: int) -> None:
        await self.store.register_deadlines(ns)  # so that the collectors visit this namespace
        key = f"cb:{{{ns}}}:apend"
        await self.store.call(key, lambda c: c.zadd(key, {blob: deadline_ms}), write=True)

    async def artifact_discard(self, ns: str, blob: str) -> None:
        key = f"cb:{{{ns}}}:apend"
        await self.store.call(key, lambda c: c.zrem(key, blob), write=True)

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
        if ttl_ms > 0:
            await self.store.register_deadlines(ns)
        reply = await self.store.run(
            "artifacts_put", ns, key, blob, size, sha256, content_type, ttl_ms, grace_ms,
            *(condition or NO_CONDITION).script_args(), *Fence.script_args(fence),
        )
        status = text(reply[0])
        if status not in ("created", "replaced"):
            _raise_failure(status, reply, key, fence, condition or NO_CONDITION)
        return ArtifactPut(_meta(reply), status == "created")

    async def artifact_get(self, ns: str, key: str) -> ArtifactMeta | None:
        reply = await self.store.run("artifacts_get", ns, key)
        if text(reply[0]) == "absent":
            return None
        return _meta(reply)

    async def artifact_delete(
        self,
        ns: str,
        key: str,
        *,
        condition: Condition | None = None,
        fence: Fence | None = None,
    ) -> ArtifactMeta | None:
        reply = await self.store.run(
            "artifacts_delete", ns, key,
            *(condition or NO_CONDITION).script_args(), *Fence.script_args(fence),
        )
        status = text(reply[0])
        if status == "absent":
            return None
        if status != "deleted":
            _raise_failure(status, reply, key, fence, condition or NO_CONDITION)
        return _meta(reply)

    async def artifact_list(
        self, ns: str, pattern: Pattern, *, limit: int, after: str | None
    ) -> ArtifactPage:

        reply = await self.store.run(
            "artifacts_list", ns, after or "", pattern.prefix, lua_pattern(pattern), limit,
            paging.LIST_SCAN_BUDGET,
        )
        items = [_meta(reply, i) for i in range(2, len(reply), 9)]
        return ArtifactPage(items, text(reply[1]) or None, int(reply[0]))

    async def artifact_garbage(self, *, limit: int, lease_ms: int) -> list[tuple[str, str]]:

        members = await self.store.call(
            NAMESPACES_KEY, lambda c: c.smembers(NAMESPACES_KEY), write=False
        )
        namespaces = sorted(text(n) for n in members)
        claimed: list[tuple[str, str]] = []
        for ns in namespaces:
            if len(claimed) >= limit:
                break
            blobs = await self.store.run("artifacts_gc", ns, limit - len(claimed), lease_ms)
            claimed.extend((ns, text(b)) for b in blobs)
        return claimed

    async def artifact_garbage_done(self, ns: str, blobs: list[str]) -> None:
        if blobs:
            key = f"cb:{{{ns}}}:agc"
            await self.store.call(key, lambda c: c.zrem(key, *blobs), write=True)
