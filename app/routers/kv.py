"""Keys (API.md section 2): JSON values with TTL, revisions, history, listing, CAS and
server-side updates. GET and PUT of a key are the hot path: their endpoints take the
Request and return a Response, and app.hotpath serves them ahead of FastAPI's router.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Body, Query, Request
from starlette.responses import Response
from starlette.types import Receive

from app.backends.base import KeyEntry, PutResult
from app.backends.parts.keys import KeyStore
from app.errors import InvalidRequest, NotFound, PayloadTooLarge, UnsupportedMediaType
from app.models import IncrementRequest, KeyEntryModel, KeyHistory, KeyList, Problem, TouchRequest
from app.patching import json_patch, merge_patch
from app.routers.common import (
    BACKEND_UNAVAILABLE,
    FENCE_PARAMETERS,
    KEY_PARAMETER,
    MERGE_PATCH,
    Endpoint,
    KeysDep,
    NamespaceDep,
    PageDep,
    SettingsDep,
    condition_from_headers,
    dump_json,
    fence_from_headers,
    get_backend,
    get_settings,
    is_json_media,
    json_response,
    media_type,
    media_type_of,
    namespace_of,
    parse_json,
    read_body,
    receive_body,
)
from app.settings import Settings
from app.syntax import (
    KV_ACTIONS,
    check_id,
    check_key,
    duration_ms,
    parse_count,
    parse_duration,
    parse_etag,
)

router = APIRouter(prefix="/v1/kv", tags=["keys"])

JSON_PATCH = "application/json-patch+json"

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem, "description": "Invalid key, namespace, TTL or body"},
    409: {"model": Problem, "description": "stale_fence: the fencing token does not hold the lock"},
    412: {"model": Problem, "description": "Precondition failed; `current` is the entry"},
    413: {"model": Problem, "description": "Value over CORKBOARD_MAX_VALUE_BYTES"},
    503: BACKEND_UNAVAILABLE,
}
_IF_MATCH: dict[str, Any] = {
    "name": "If-Match", "in": "header", "required": False, "schema": {"type": "string"},
    "description": 'Write only if the key is at this revision ("12"), or exists (*)',
}
_LEASE: dict[str, Any] = {
    "name": "lease", "in": "query", "required": False, "schema": {"type": "string"},
    "description": "Attach the key to this live lease (not with ttl); a write without it "
                   "takes the key off its lease",
}
_IF_NONE_MATCH_WRITE: dict[str, Any] = {
    "name": "If-None-Match", "in": "header", "required": False, "schema": {"type": "string"},
    "description": "* : write only if the key does not exist",
}


def key_of(key: str) -> str:
    return check_key(key, actions=KV_ACTIONS)


def lease_of(lease: str | None, ttl: str | None) -> str | None:
    """The ``?lease=`` of a write, checked; with ``?ttl=`` as well it is 400."""
    if lease is None:
        return None
    if ttl is not None:
        raise InvalidRequest(
            "Give ttl or lease, not both: a key on a lease lives as long as the lease."
        )
    return check_id(lease, what="lease id")


def entry_response(entry: KeyEntry, status_code: int = 200) -> Response:
    return json_response(entry.to_json(), status_code, {"ETag": entry.etag})


def put_response(result: PutResult) -> Response:
    return entry_response(result.entry, 201 if result.created else 200)


def value_from_body(body: bytes, mt: str, limit: int) -> bytes:
    """The stored JSON bytes for a PUT body: JSON as given (compacted), text as a string."""
    if mt == "text/plain":
        try:
            value = orjson.dumps(body.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise InvalidRequest("A text/plain value must be valid UTF-8.") from exc
    elif mt == "" or is_json_media(mt):
        return stored_value(parse_json(body), limit)
    else:
        raise UnsupportedMediaType(
            f"Content-Type {mt!r} is not accepted: send application/json, or text/plain to "
            "store the body as a string (curl: -H 'Content-Type: application/json')."
        )
    if len(value) > limit:
        raise PayloadTooLarge(f"The value is {len(value)} bytes; the limit is {limit}.")
    return value


def stored_value(value: Any, limit: int) -> bytes:
    """The stored JSON bytes of a client's value, refused with 413 over ``limit``."""
    encoded = dump_json(value)
    if len(encoded) > limit:
        raise PayloadTooLarge(f"The value is {len(encoded)} bytes; the limit is {limit}.")
    return encoded


async def read_key(backend: KeyStore, ns: str, key: str, revision: int | None) -> KeyEntry:
    """The key's entry (at ``revision`` while kept); 404 otherwise."""
    entry = await backend.kv_get(ns, key, revision)
    if entry is None:
        raise key_not_found(key, revision)
    return entry


def key_not_found(key: str, revision: int | None) -> NotFound:
    """``read_key``'s 404 for a key (at ``revision``) the backend does not have."""
    if revision is not None:
        return NotFound(f"Key {key!r} has no kept revision at or below {revision}.")
    return NotFound(f"Key {key!r} does not exist.")


def patch_update(
    media: str, patch: Any, limit: int, max_ops: int
) -> Callable[[bytes], bytes]:
    """The update applying a merge patch (MERGE_PATCH) or a JSON patch (at most
    ``max_ops`` operations) to a stored value, refusing a result over ``limit`` bytes."""

    def update(current: bytes) -> bytes:
        document = orjson.loads(current)
        patched = (
            merge_patch(document, patch)
            if media == MERGE_PATCH
            else json_patch(document, patch, max_ops=max_ops, max_bytes=limit)
        )
        out = dump_json(patched, what="patched value")
        if len(out) > limit:
            raise PayloadTooLarge(f"The patched value is {len(out)} bytes; the limit is {limit}.")
        return out

    return update


# -- the hot path (see hot_routes) ------------------------------------------------------


async def get_key(request: Request) -> Response:
    """Read a key; `?revision=N` reads the value it had at revision N while kept."""
    status, body, etag = await read_key_at(
        get_backend(request), namespace_of(request), request.path_params["key"],
        request.scope["corkboard.query"], request.headers.get("if-none-match"),
    )
    if status == 304:
        return Response(status_code=304, headers={"ETag": etag})
    return json_response(body, status, {"ETag": etag})


async def put_key(request: Request) -> Response:
    """Store the body as the key's value: 201 created, 200 replaced."""
    status, body, etag = await write_key(
        get_backend(request), get_settings(request), namespace_of(request),
        request.path_params["key"], request.scope["corkboard.query"], request.headers,
        request.receive,
    )
    return json_response(body, status, {"ETag": etag})


async def read_key_at(
    backend: KeyStore, ns: str, raw_key: str, query: Mapping[str, str],
    if_none_match: str | None,
) -> tuple[int, bytes, str]:
    """GET of a key, for the route and for app.hotpath's front alike: (status, JSON body,
    ETag); 304 with an empty body when If-None-Match names the current revision."""
    key = key_of(raw_key)
    raw_revision = query.get("revision")
    revision = None if raw_revision is None else parse_count(raw_revision, what="revision")
    entry = await backend.kv_get(ns, key, revision)  # read_key, one coroutine less
    if entry is None:
        raise key_not_found(key, revision)
    if if_none_match is not None and if_none_match.strip() != "*":
        try:
            cached = parse_etag(if_none_match, what="If-None-Match")
        except InvalidRequest:
            cached = None
        if cached == entry.revision:
            return 304, b"", entry.etag
    return 200, entry.to_json(), entry.etag


async def write_key(
    backend: KeyStore, settings: Settings, ns: str, raw_key: str, query: Mapping[str, str],
    headers: Mapping[str, str], receive: Receive,
) -> tuple[int, bytes, str]:
    """PUT of a key, for the route and for app.hotpath's front alike: (201 created or
    200 replaced, the entry's JSON, its ETag). The body is read from ``receive`` after
    the key, query and headers are checked."""
    key = key_of(raw_key)
    ttl = query.get("ttl")
    lease = lease_of(query.get("lease"), ttl)
    ttl_ms = duration_ms(parse_duration(ttl))
    condition = condition_from_headers(headers)
    fence = fence_from_headers(headers)
    limit = settings.max_value_bytes
    body = await receive_body(headers, receive, limit + 1024, what="value")
    value = value_from_body(body, media_type_of(headers), limit)
    result = await backend.kv_put(
        ns, key, value, ttl_ms=ttl_ms, condition=condition, fence=fence, lease=lease
    )
    entry = result.entry
    return 201 if result.created else 200, entry.to_json(), entry.etag


def hot_routes(method: str, path: str) -> tuple[Endpoint, dict[str, str], str] | None:
    """GET and PUT of a key, for app.hotpath; the same endpoints as the routes below.

    GET of '<key>/history' is the history route; a key never ends in an action word, so
    every other GET or PUT under /v1/kv/ is a key read or write.
    """
    if not path.startswith("/v1/kv/"):
        return None
    if method == "GET" and not path.endswith("/history"):
        return get_key, {"key": path[7:]}, "/v1/kv/{key}"
    if method == "PUT":
        return put_key, {"key": path[7:]}, "/v1/kv/{key}"
    return None


_ENTRY_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "No such key (or revision not kept)"},
    **_ERRORS,
}

@router.get(
    "/{key:key}/history",
    response_model=KeyHistory,
    responses={404: {"model": Problem}, 400: {"model": Problem}},
    summary="A key's kept revisions, newest first",
)
async def get_key_history(key: str, ns: NamespaceDep, backend: KeysDep) -> Response:
    items = await backend.kv_history(ns, key_of(key))
    if not items:
        raise NotFound(f"Key {key!r} does not exist.")
    body = orjson.dumps({"items": [e.as_dict() for e in items]})
    return json_response(body)


@router.post(
    "/{key:key}/increment",
    response_model=KeyEntryModel,
    responses={201: {"model": KeyEntryModel, "description": "Created"}, 422: {"model": Problem},
               **_ERRORS},
    summary="Add a number to a key atomically",
)
async def increment_key(
    key: str,
    request: Request,
    ns: NamespaceDep,
    backend: KeysDep,
    body: Annotated[IncrementRequest, Body()] = IncrementRequest(),  # noqa: B008
) -> Response:
    ttl_ms = duration_ms(parse_duration(body.ttl))
    result = await backend.kv_increment(
        ns, key_of(key), body.by, initial=body.initial, ttl_ms=ttl_ms,
        fence=fence_from_headers(request.headers),
    )
    return put_response(result)


@router.post(
    "/{key:key}/touch",
    response_model=KeyEntryModel,
    responses={404: {"model": Problem}, **_ERRORS},
    summary="Reset a key's expiry without changing its value",
)
async def touch_key(
    key: str, body: TouchRequest, request: Request, ns: NamespaceDep, backend: KeysDep
) -> Response:
    ttl_ms = duration_ms(parse_duration(body.ttl))
    fence = fence_from_headers(request.headers)
    entry = await backend.kv_touch(ns, key_of(key), ttl_ms, fence=fence)
    return entry_response(entry)


router.add_api_route(
    "/{key:key}",
    get_key,
    methods=["GET"],
    response_model=KeyEntryModel,
    responses={304: {"description": "Not modified (If-None-Match)"}, **_ENTRY_RESPONSES},
    summary="Read a key",
    openapi_extra={
        "parameters": [
            KEY_PARAMETER,
            {"name": "revision", "in": "query", "required": False,
             "schema": {"type": "integer", "minimum": 0},
             "description": "Read the value the key had at this revision, while kept"},
            {"name": "If-None-Match", "in": "header", "required": False,
             "schema": {"type": "string"}, "description": 'Answer 304 if still at "<revision>"'},
        ]
    },
)
router.add_api_route(
    "/{key:key}",
    put_key,
    methods=["PUT"],
    response_model=KeyEntryModel,
    status_code=200,
    responses={201: {"model": KeyEntryModel, "description": "Created"},
               404: {"model": Problem, "description": "lease_not_found: `lease` is not live"},
               415: {"model": Problem}, **_ERRORS},
    summary="Store a value",
    openapi_extra={
        "parameters": [
            KEY_PARAMETER,
            {"name": "ttl", "in": "query", "required": False, "schema": {"type": "string"},
             "description": "Seconds (30, 0.25) or a duration ('250ms', '5m'); 0 = none"},
            _LEASE, _IF_MATCH, _IF_NONE_MATCH_WRITE, *FENCE_PARAMETERS,
        ],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {}},
                "text/plain": {"schema": {"type": "string"}},
            },
            "description": "Any JSON value; a text/plain body is stored as a JSON string",
        },
    },
)


@router.patch(
    "/{key:key}",
    response_model=KeyEntryModel,
    responses={201: {"model": KeyEntryModel, "description": "Created from ?initial="},
               404: {"model": Problem}, 415: {"model": Problem}, 422: {"model": Problem},
               **_ERRORS},
    summary="Update a value atomically with a merge patch or a JSON patch",
    openapi_extra={
        "parameters": [_IF_MATCH, *FENCE_PARAMETERS],
        "requestBody": {
            "required": True,
            # One schema per media type. The JSON Patch's operations are described in
            # prose, not as `items`: openapi-python-client dispatches a body of several
            # media types with isinstance(), which a list[...] type breaks, so with
            # `items` no generated PATCH call would work at all (it keeps the merge patch).
            "content": {
                MERGE_PATCH: {"schema": {
                    "description": "RFC 7396 merge patch: an object's members are merged "
                    "(null removes one); any other JSON value replaces the value"}},
                JSON_PATCH: {"schema": {
                    "type": "array",
                    "description": "RFC 6902 operations, each {op: add|remove|replace|move|"
                    "copy|test, path, value?, from?}; a failed test is 412",
                }},
            },
        },
    },
)
async def patch_key(
    key: str,
    request: Request,
    ns: NamespaceDep,
    backend: KeysDep,
    settings: SettingsDep,
    initial: Annotated[
        str | None, Query(description="JSON starting value when the key is missing")
    ] = None,
    ttl: Annotated[str | None, Query(description="New expiry; absent keeps the current")] = None,
    lease: Annotated[
        str | None,
        Query(description="Attach the key to this live lease (not with ttl); absent keeps "
                          "the key's expiry and lease"),
    ] = None,
) -> Response:
    key = key_of(key)
    lease = lease_of(lease, ttl)
    mt = media_type(request)
    if mt not in (MERGE_PATCH, JSON_PATCH):
        raise UnsupportedMediaType(
            f"PATCH takes {MERGE_PATCH} (RFC 7396) or {JSON_PATCH} (RFC 6902), not {mt!r}."
        )
    patch = parse_json(await read_body(request, settings.max_value_bytes + 1024), what="patch")
    initial_value = (
        dump_json(parse_json(initial, what="initial value"), what="initial value", location="query")
        if initial is not None
        else None
    )
    ttl_ms = duration_ms(parse_duration(ttl)) if ttl is not None else None
    result = await backend.kv_update(
        ns, key, patch_update(mt, patch, settings.max_value_bytes, settings.max_patch_ops),
        initial=initial_value, ttl_ms=ttl_ms,
        condition=condition_from_headers(request.headers),
        fence=fence_from_headers(request.headers), lease=lease,
    )
    return put_response(result)


@router.delete(
    "/{key:key}",
    status_code=204,
    response_class=Response,
    responses={**_ERRORS},
    summary="Delete a key (204 also when it did not exist)",
    openapi_extra={"parameters": [_IF_MATCH, *FENCE_PARAMETERS]},
)
async def delete_key(key: str, request: Request, ns: NamespaceDep, backend: KeysDep) -> Response:
    await backend.kv_delete(
        ns, key_of(key),
        condition=condition_from_headers(request.headers),
        fence=fence_from_headers(request.headers),
    )
    return Response(status_code=204)


list_router = APIRouter(prefix="/v1", tags=["keys"])


@list_router.get(
    "/kv",
    response_model=KeyList,
    responses={400: {"model": Problem}, 503: {"model": Problem}},
    summary="List keys by pattern, in key order, with stable paging",
)
async def list_keys(
    ns: NamespaceDep,
    backend: KeysDep,
    page: PageDep,
    values: Annotated[bool, Query(description="Include values")] = True,
) -> Response:
    found = await backend.kv_list(ns, page.pattern, limit=page.limit, after=page.after)
    items = [e.as_dict(with_value=values) for e in found.items]
    return page.response(items, found.next_cursor, found.revision)
