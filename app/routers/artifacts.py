"""Artifacts (API.md section 6): blobs uploaded and downloaded as streams, with sha256
ETags, conditional requests, single byte ranges, TTL, listing and change events.

An upload streams into a fresh blob of the artifact store while it is hashed and
counted (413 as soon as it passes the limit); only then does the state backend point
the key at that blob, atomically with the precondition, the fence check, the revision
and the ``artifact.put`` event. A failed, refused or interrupted upload removes its blob
and changes nothing. A download resolves the metadata, then streams that blob.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from email.utils import formatdate
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from app.artifacts.base import BlobMissing, BlobReader, BlobStore, new_blob_id, write_stream
from app.backends.base import Backend, Fence
from app.domain.artifacts import (
    NO_ARTIFACT_CONDITION,
    ArtifactCondition,
    ArtifactMeta,
    ArtifactPut,
    check_artifact_condition,
)
from app.errors import (
    BackendUnavailable,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    PreconditionFailed,
    RangeNotSatisfiable,
    RequestTimeout,
)
from app.models import ArtifactList, ArtifactModel, Problem
from app.routers.common import (
    FENCE_PARAMETERS,
    KEY_PARAMETER,
    BackendDep,
    NamespaceDep,
    PageDep,
    fence_from_headers,
    get_backend,
    get_settings,
    json_response,
    namespace_of,
    query_param,
    write_precondition,
)
from app.settings import Settings
from app.syntax import check_key, duration_ms, now_ms, parse_count, parse_duration

logger = logging.getLogger("corkboard.artifacts")

router = APIRouter(prefix="/v1", tags=["artifacts"])

DEFAULT_CONTENT_TYPE = "application/octet-stream"
MAX_CONTENT_TYPE = 255
#: Times a download resolves the metadata again when the blob it named was removed
#: between the two reads (replaced by a concurrent upload at that very moment).
RESOLVE_ATTEMPTS = 3

_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
# type/subtype and parameters as sent, but no backslash and no control character.
_MEDIA_TYPE_RE = re.compile(rf"{_TOKEN}/{_TOKEN}(?:[ \t]*;[\x20-\x5b\x5d-\x7e\t]*)?")
_RANGE_SPEC_RE = re.compile(r"(\d*)[ \t]*-[ \t]*(\d*)")


def get_store(request: Request) -> BlobStore:
    store: BlobStore = request.scope["state"]["artifacts"]
    return store


def artifact_key(key: str) -> str:
    return check_key(key, what="artifact key")


def content_type_of(headers: Headers) -> str:
    """The upload's Content-Type, kept as sent; application/octet-stream when absent."""
    value = headers.get("content-type", "").strip()
    if not value:
        return DEFAULT_CONTENT_TYPE
    if len(value) > MAX_CONTENT_TYPE or not _MEDIA_TYPE_RE.fullmatch(value):
        raise InvalidRequest(
            f"Content-Type {value[:80]!r} is not a media type like 'text/plain; "
            f"charset=utf-8' (at most {MAX_CONTENT_TYPE} printable characters, no backslash)."
        )
    return value


def etag_list(value: str, *, what: str) -> tuple[str, ...] | None:
    """The entity tags of an If-Match / If-None-Match / If-Range header; None for '*'.

    Unquoted tags are accepted and quoted; weak tags keep their ``W/`` prefix.
    """
    text = value.strip()
    if text == "*":
        return None
    tags = []
    for raw in text.split(","):
        part = raw.strip()
        if not part:
            continue
        weak = part.startswith("W/")
        core = part[2:] if weak else part
        if not (len(core) >= 2 and core[0] == core[-1] == '"'):
            core = f'"{core}"'
        tags.append(("W/" if weak else "") + core)
    if not tags:
        raise InvalidRequest(f"{what} must be '*' or a list of quoted ETags.")
    return tuple(tags)


def artifact_condition(headers: Headers) -> ArtifactCondition:
    """If-Match ('"<sha256>"' list, or *) or If-None-Match (* only) of a write."""
    if_match, must_not_exist = write_precondition(headers)
    if must_not_exist:
        return ArtifactCondition(must_not_exist=True)
    if if_match is not None:
        tags = etag_list(if_match, what="If-Match")
        if tags is None:
            return ArtifactCondition(must_exist=True)
        return ArtifactCondition(etags=tags)
    return NO_ARTIFACT_CONDITION


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """The byte span [start, end) a Range header asks of ``size`` bytes, or None to
    send everything (no range, a unit other than bytes, several ranges, or a suffix of
    an empty artifact). Raises RangeNotSatisfiable for a malformed or unsatisfiable one.
    """
    unit, sep, spec_text = header.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None  # RFC 9110 14.2: a range unit not understood is ignored
    specs = [s.strip() for s in spec_text.split(",") if s.strip()]
    if len(specs) > 1:
        return None  # several ranges: answered with the whole content (documented)
    unsatisfiable = RangeNotSatisfiable(
        f"The range {header.strip()[:80]!r} cannot be served from {size} bytes: use "
        "bytes=first-last, bytes=first- or bytes=-suffix.",
        headers={"Content-Range": f"bytes */{size}"},
    )
    match = _RANGE_SPEC_RE.fullmatch(specs[0]) if specs else None
    if match is None or (not match.group(1) and not match.group(2)):
        raise unsatisfiable
    first, last = (_bounded_int(g) if g else None for g in match.groups())
    if first is None:  # bytes=-n: the last n bytes
        assert last is not None
        if last == 0:
            raise unsatisfiable
        if size == 0:
            return None
        return max(0, size - last), size
    if (last is not None and last < first) or first >= size:
        raise unsatisfiable
    return first, size if last is None else min(last + 1, size)


def _bounded_int(digits: str) -> int:
    # Beyond any size, without converting an absurdly long number.
    return int(digits) if len(digits) <= 20 else 10**20


def http_date(ms: int) -> str:
    return formatdate(ms / 1000, usegmt=True)


def meta_headers(meta: ArtifactMeta) -> dict[str, str]:
    return {
        "ETag": meta.etag,
        "Last-Modified": http_date(meta.created_at),
        "Accept-Ranges": "bytes",
    }


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


async def put_artifact(request: Request) -> Response:
    """Store the body as the artifact's content: 201 created, 200 replaced."""
    settings = get_settings(request)
    ns = namespace_of(request)
    key = artifact_key(request.path_params["key"])
    ttl_ms = duration_ms(parse_duration(query_param(request, "ttl")))
    condition = artifact_condition(request.headers)
    fence = fence_from_headers(request.headers)
    content_type = content_type_of(request.headers)
    limit = settings.max_artifact_bytes
    declared = request.headers.get("content-length")
    if declared is not None:
        if parse_count(declared, what="Content-Length") > limit:
            raise PayloadTooLarge(f"The artifact is {declared} bytes; the limit is {limit}.")
    result = await store_artifact(
        get_backend(request), settings, get_store(request), ns, key, request.stream(),
        content_type=content_type, ttl_ms=ttl_ms, condition=condition, fence=fence,
    )
    return json_response(
        result.meta.to_json(), 201 if result.created else 200, {"ETag": result.meta.etag}
    )


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


async def get_artifact(request: Request) -> Response:
    """The artifact's bytes, streamed; a single Range gives 206."""
    return await _download(request, head=False)


async def head_artifact(request: Request) -> Response:
    """The headers a GET would answer with, without the bytes."""
    return await _download(request, head=True)


async def _download(request: Request, *, head: bool) -> Response:
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


# -- routes --------------------------------------------------------------------------

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem, "description": "Invalid key, namespace, TTL or header"},
    503: {"model": Problem, "description": "Backend or artifact store unavailable"},
}
_IF_MATCH_WRITE: dict[str, Any] = {
    "name": "If-Match", "in": "header", "required": False, "schema": {"type": "string"},
    "description": 'Write only if the artifact\'s ETag is this "<sha256>" (or one of a '
    "list), or with * if it exists",
}
_READ_PARAMS: list[dict[str, Any]] = [
    KEY_PARAMETER,
    {"name": "Range", "in": "header", "required": False, "schema": {"type": "string"},
     "description": "One range: bytes=first-last, bytes=first- or bytes=-suffix"},
    {"name": "If-None-Match", "in": "header", "required": False, "schema": {"type": "string"},
     "description": 'Answer 304 if the ETag is one of these ("<sha256>", or *)'},
    {"name": "If-Match", "in": "header", "required": False, "schema": {"type": "string"},
     "description": 'Answer 412 unless the ETag is one of these'},
    {"name": "If-Range", "in": "header", "required": False, "schema": {"type": "string"},
     "description": "Honour Range only if the ETag is still this one"},
]
_BINARY = {"schema": {"type": "string", "format": "binary"}}
#: The bytes as stored, under the Content-Type they were uploaded with.
_BYTES = {"application/octet-stream": _BINARY, "*/*": _BINARY}
_READ_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "The content, with the Content-Type it was uploaded with",
          "content": _BYTES},
    206: {"description": "The requested range (Content-Range)", "content": _BYTES},
    304: {"description": "Not modified (If-None-Match)"},
    404: {"model": Problem, "description": "No such artifact"},
    412: {"model": Problem, "description": "If-Match failed; `current` is the metadata"},
    416: {"model": Problem, "description": "Range not satisfiable (Content-Range: bytes */size)"},
    **_ERRORS,
}

router.add_api_route(
    "/artifacts/{key:key}",
    get_artifact,
    methods=["GET"],
    response_class=Response,  # documents no JSON 200 (the endpoint returns its own)
    responses=_READ_RESPONSES,
    summary="Download an artifact",
    openapi_extra={"parameters": _READ_PARAMS},
)
router.add_api_route(
    "/artifacts/{key:key}",
    head_artifact,
    methods=["HEAD"],
    response_class=Response,
    responses={**_READ_RESPONSES, 200: {"description": "The headers of the content"},
               206: {"description": "The headers of the range"}},
    summary="An artifact's headers, without the content",
    openapi_extra={"parameters": _READ_PARAMS},
)
router.add_api_route(
    "/artifacts/{key:key}",
    put_artifact,
    methods=["PUT"],
    response_model=ArtifactModel,
    status_code=200,
    responses={
        201: {"model": ArtifactModel, "description": "Created"},
        409: {"model": Problem, "description": "stale_fence: the token does not hold the lock"},
        408: {"model": Problem, "description": "The upload took longer than allowed"},
        412: {"model": Problem, "description": "Precondition failed; `current` is the metadata"},
        413: {"model": Problem, "description": "Over CORKBOARD_MAX_ARTIFACT_BYTES; nothing stored"},
        **_ERRORS,
    },
    summary="Upload an artifact (streamed)",
    openapi_extra={
        "parameters": [
            KEY_PARAMETER,
            {"name": "ttl", "in": "query", "required": False, "schema": {"type": "string"},
             "description": "Seconds (30, 0.25) or a duration ('250ms', '5m'); 0 = none"},
            _IF_MATCH_WRITE,
            {"name": "If-None-Match", "in": "header", "required": False,
             "schema": {"type": "string"}, "description": "* : only if it does not exist"},
            *FENCE_PARAMETERS,
        ],
        "requestBody": {
            "required": True,
            "content": _BYTES,
            "description": "The raw bytes; Content-Type is kept (default "
            "application/octet-stream)",
        },
    },
)


@router.delete(
    "/artifacts/{key:key}",
    status_code=204,
    response_class=Response,
    responses={409: {"model": Problem, "description": "stale_fence"},
               412: {"model": Problem, "description": "If-Match failed"}, **_ERRORS},
    summary="Delete an artifact (204 also when it did not exist)",
    openapi_extra={"parameters": [_IF_MATCH_WRITE, *FENCE_PARAMETERS]},
)
async def delete_artifact(
    key: str, request: Request, ns: NamespaceDep, backend: BackendDep
) -> Response:
    await backend.artifact_delete(
        ns, artifact_key(key),
        condition=artifact_condition(request.headers),
        fence=fence_from_headers(request.headers),
    )
    return Response(status_code=204)


@router.get(
    "/artifacts",
    response_model=ArtifactList,
    responses={400: {"model": Problem}, 503: {"model": Problem}},
    summary="List artifacts' metadata by pattern, in key order, with stable paging",
)
async def list_artifacts(
    ns: NamespaceDep,
    backend: BackendDep,
    page: PageDep,
) -> Response:
    found = await backend.artifact_list(ns, page.pattern, limit=page.limit, after=page.after)
    body = orjson.dumps(
        {
            "items": [m.as_dict() for m in found.items],
            "next_cursor": page.next_cursor(found.next_cursor),
            "revision": found.revision,
        }
    )
    return json_response(body)
