"""The artifact routes: upload, download (GET, HEAD), delete and list, documented."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from app.errors import PayloadTooLarge
from app.models import ArtifactList, ArtifactModel, Problem
from app.routers.artifacts.parsing import artifact_condition, artifact_key, content_type_of
from app.routers.artifacts.transfer import download, get_store, store_artifact
from app.routers.common import (
    FENCE_PARAMETERS,
    KEY_PARAMETER,
    ArtifactsDep,
    NamespaceDep,
    PageDep,
    fence_from_headers,
    get_backend,
    get_settings,
    json_response,
    namespace_of,
    query_param,
)
from app.syntax import duration_ms, parse_count, parse_duration

router = APIRouter(prefix="/v1", tags=["artifacts"])


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


async def get_artifact(request: Request) -> Response:
    """The artifact's bytes, streamed; a single Range gives 206."""
    return await download(request, head=False)


async def head_artifact(request: Request) -> Response:
    """The headers a GET would answer with, without the bytes."""
    return await download(request, head=True)


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
    key: str, request: Request, ns: NamespaceDep, backend: ArtifactsDep
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
    backend: ArtifactsDep,
    page: PageDep,
) -> Response:
    found = await backend.artifact_list(ns, page.pattern, limit=page.limit, after=page.after)
    return page.response([m.as_dict() for m in found.items], found.next_cursor, found.revision)
