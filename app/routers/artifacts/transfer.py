"""Moving an artifact's bytes. An upload streams into a fresh blob of the artifact store
while it is hashed and counted (413 as soon as it passes the limit); only then does the
state backend point the key at that blob, atomically with the precondition, the fence
check, the revision and the ``artifact.put`` event. A failed, refused or interrupted
upload removes its blob and changes nothing. A download resolves the metadata, then
streams that blob.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from app.artifacts.base import BlobMissing, BlobReader, BlobStore, new_blob_id, write_stream
from app.backends.base import Backend, Fence
from app.domain.artifacts import (
    ArtifactCondition,
    ArtifactMeta,
    ArtifactPut,
    check_artifact_condition,
)
from app.errors import (
    BackendUnavailable,
    InvalidRequest,
    NotFound,
    PreconditionFailed,
    RequestTimeout,
)
from app.routers.artifacts.parsing import artifact_key, etag_list, meta_headers, parse_range
from app.routers.common import get_backend, namespace_of
from app.settings import Settings
from app.syntax import duration_ms, now_ms

logger = logging.getLogger("corkboard.artifacts")

#: Times a download resolves the metadata again when the blob it named was removed
#: between the two reads (replaced by a concurrent upload at that very moment).
RESOLVE_ATTEMPTS = 3


def get_store(request: Request) -> BlobStore:
    store: BlobStore = request.scope["state"]["artifacts"]
    return store



class BlobResponse(StreamingResponse):
    """Streams an opened blob's span and closes the reader however the response ends."""

    def __init__(
        self, reader: BlobReader, start: int, end: int, key: str, status_code: int,
        headers: dict[str, str],
    ) -> None:
        super().__init__(_pieces(reader, start, end, key), status_code, headers)
        self.reader = reader

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.reader.close()


async def _pieces(reader: BlobReader, start: int, end: int, key: str) -> AsyncIterator[bytes]:
    try:
        async for piece in reader.stream(start, end):
            yield piece
    except BlobMissing:
        # Removed under a download slower than the grace period: end the response short
        # (the client sees a broken transfer), never mix in other bytes.
        logger.warning("the bytes of artifact %r disappeared during a download", key)
        raise


# -- upload --------------------------------------------------------------------------


async def store_artifact(
    backend: Backend,
    settings: Settings,
    store: BlobStore,
    ns: str,
    key: str,
    body: AsyncIterator[bytes],
    *,
    content_type: str,
    ttl_ms: int,
    condition: ArtifactCondition,
    fence: Fence | None,
) -> ArtifactPut:
    """Store ``body`` as the artifact (also MCP's artifact_put_text): streamed under the
    limit and the upload timeout, committed with its precondition and fence."""
    if condition.any:
        # Refuse before the upload when we already know; the commit checks again.
        check_artifact_condition(condition, await backend.artifact_get(ns, key))
    return await _upload(
        body, backend, store, ns, key,
        timeout=settings.artifact_upload_timeout_seconds, limit=settings.max_artifact_bytes,
        content_type=content_type, ttl_ms=ttl_ms,
        grace_ms=duration_ms(settings.artifact_grace_seconds) if store.needs_grace else 0,
        condition=condition, fence=fence,
    )


async def _upload(
    body: AsyncIterator[bytes],
    backend: Backend,
    store: BlobStore,
    ns: str,
    key: str,
    *,
    timeout: float,
    limit: int,
    content_type: str,
    ttl_ms: int,
    grace_ms: int,
    condition: ArtifactCondition,
    fence: Fence | None,
) -> ArtifactPut:
    blob = new_blob_id()
    # Reserved first: if this server dies mid-upload, the collector removes the bytes
    # once the reservation lapses (twice the timeout, so a live upload always commits
    # or fails before that).
    await backend.artifact_reserve(ns, blob, now_ms() + duration_ms(2 * timeout))
    writer = None
    settled = False  # committed, or the commit's outcome is unknown: leave the blob be
    try:
        writer = await store.create(blob)
        try:
            async with asyncio.timeout(timeout):
                written = await write_stream(writer, body, limit)
        except TimeoutError as exc:
            raise RequestTimeout(
                f"The upload did not finish within {timeout:g}s; nothing was stored."
            ) from exc
        except ClientDisconnect as exc:
            raise InvalidRequest(
                "The client disconnected before the upload finished; nothing was stored."
            ) from exc
        try:
            await writer.finish()
        except BlobMissing as exc:
            raise RequestTimeout("The upload took too long; nothing was stored.") from exc
        try:
            result = await backend.artifact_put(
                ns, key, blob=blob, size=written.size, sha256=written.sha256,
                content_type=content_type, ttl_ms=ttl_ms, grace_ms=grace_ms,
                condition=condition, fence=fence,
            )
        except BackendUnavailable:
            # The commit may have happened before the connection failed. If it did, the
            # blob is the artifact's; if not, its reservation lapses and it is collected.
            settled = True
            raise
        settled = True
        return result
    finally:
        if not settled:
            await _discard(backend, store, ns, blob, writer)


async def _discard(
    backend: Backend, store: BlobStore, ns: str, blob: str, writer: Any
) -> None:
    """Remove a failed upload's bytes, then its reservation; failures are left to the
    collector (the reservation lapses) and never hide the error being answered."""
    try:
        if writer is not None:
            await writer.abort()
        else:
            await store.delete(blob)
        await backend.artifact_discard(ns, blob)
    except Exception as exc:
        logger.warning("could not remove a failed upload's blob %s now: %s", blob, exc)


# -- download ------------------------------------------------------------------------


async def download(request: Request, *, head: bool) -> Response:
    """The artifact's bytes as a response (the headers only with ``head``): 304 or 412
    by the conditional headers, 206 for a single satisfiable Range."""
    backend = get_backend(request)
    store = get_store(request)
    ns = namespace_of(request)
    key = artifact_key(request.path_params["key"])
    headers_in = request.headers
    for _ in range(RESOLVE_ATTEMPTS):
        meta = await backend.artifact_get(ns, key)
        if meta is None:
            raise NotFound(f"Artifact {key!r} does not exist.")
        headers = meta_headers(meta)
        if_match = headers_in.get("if-match")
        if if_match is not None:
            tags = etag_list(if_match, what="If-Match")
            if tags is not None and meta.etag not in tags:  # strong comparison
                raise PreconditionFailed(
                    f"The artifact's ETag is {meta.etag}, which does not match If-Match.",
                    current=meta,
                )
        if_none_match = headers_in.get("if-none-match")
        if if_none_match is not None:
            tags = etag_list(if_none_match, what="If-None-Match")
            if tags is None or meta.etag in {t.removeprefix("W/") for t in tags}:
                return Response(status_code=304, headers=headers)
        span = _requested_span(headers_in, meta)
        status = 200
        start, end = 0, meta.size
        if span is not None:
            status = 206
            start, end = span
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{meta.size}"
        headers["Content-Length"] = str(end - start)
        # Set as a header, not media_type, so that it is kept exactly (no charset added).
        headers["Content-Type"] = meta.content_type
        if head:
            return Response(status_code=status, headers=headers)
        try:
            reader = await store.open(meta.blob, meta.size)
        except BlobMissing:
            continue  # replaced and removed between the two reads: resolve again
        return BlobResponse(reader, start, end, key, status, headers)
    raise BackendUnavailable(
        f"The artifact store has no bytes for artifact {key!r}: they were lost (a memory:// "
        "artifact store does not survive a restart) or removed outside the service."
    )


def _requested_span(headers: Headers, meta: ArtifactMeta) -> tuple[int, int] | None:
    header = headers.get("range")
    if header is None:
        return None
    if_range = headers.get("if-range")
    if if_range is not None and if_range.strip() != meta.etag:
        return None  # changed since (or a date, which we do not compare): send it all
    return parse_range(header, meta.size)
