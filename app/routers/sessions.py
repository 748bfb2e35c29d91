"""Sessions (API.md section 5): typed variables, chat state (subscriptions, dedupe, thread
and channel state), session-scoped locks, and snapshots that move between backends.

Every write honours ``Fence-Lock``/``Fence-Token`` (``Fence-Session`` for a session's own
lock) atomically with the change. Variable values are checked by ``app.variables``; an
import document is read by ``app.snapshots``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any, TypeVar

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError
from starlette.responses import Response

from app.backends.base import Backend, Fence
from app.domain.sessions import STATE_KINDS, StateKind, Variable, WriteOutcome
from app.errors import (
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    Unprocessable,
    UnsupportedMediaType,
)
from app.models import Duration, Problem
from app.patching import merge_patch
from app.routers.common import (
    FENCE_PARAMETERS,
    BackendDep,
    NamespaceDep,
    PageDep,
    SettingsDep,
    condition_from_headers,
    fence_from_headers,
    is_json_media,
    json_response,
    media_type,
    parse_json,
    read_body,
)
from app.routers.locks import lock_router
from app.settings import Settings
from app.snapshots import MAX_DEDUPE_KEY, parse_snapshot
from app.syntax import (
    LOCK_ACTIONS,
    check_id,
    check_key,
    duration_ms,
    now_ms,
    parse_duration,
)
from app.variables import (
    MAX_DESCRIPTION_LENGTH,
    check_definition,
    check_ident,
    check_name,
    new_variable_id,
    value_error,
)

router = APIRouter(prefix="/v1/sessions", tags=["sessions"])

MERGE_PATCH = "application/merge-patch+json"
#: Small bodies (session metadata, dedupe, subscriptions) beyond the value limit.
SMALL_BODY_BYTES = 64 * 1024
DEFAULT_DEDUPE_LIMIT = 1000
MAX_DEDUPE_LIMIT = 100_000

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem, "description": "invalid_key (session id, name) or a bad body"},
    409: {"model": Problem, "description": "stale_fence: the fencing token does not hold "
                                           "the lock"},
    503: {"model": Problem, "description": "Backend unavailable; retry after Retry-After"},
}
_IF_MATCH: dict[str, Any] = {
    "name": "If-Match", "in": "header", "required": False, "schema": {"type": "string"},
    "description": 'Write only if the variable is at this version ("3")',
}
_WRITE = {"parameters": FENCE_PARAMETERS}


# -- models ----------------------------------------------------------------------------

M = TypeVar("M", bound=BaseModel)


class SessionPutRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    metadata: dict[str, Any] | None = Field(None, description="Any JSON object")
    ttl: Duration | None = Field(
        None, description="Idle TTL: the session expires this long after its last write"
    )


class SessionModel(BaseModel):
    session_id: str
    metadata: dict[str, Any]
    ttl: float | None = Field(description="Idle TTL in seconds; null = none")
    created_at: str
    updated_at: str = Field(description="Time of the last write to the session")
    expires_at: str | None
    variable_count: int


class SessionList(BaseModel):
    items: list[SessionModel]
    next_cursor: str | None


class VariableRegisterRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="1-128 of [A-Za-z0-9_.-], not starting with 'var_'")
    type: str = Field(description="float, integer, string, boolean, choice, embedding, "
                                  "tensor or json")
    value: Any = Field(description="The initial value; validated against type and constraints")
    constraints: dict[str, Any] | None = Field(None, description="Per type: see the docs")
    metadata: dict[str, Any] | None = None
    description: str | None = Field(None, max_length=MAX_DESCRIPTION_LENGTH)


class VariableSetRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    value: Any = Field(description="The new value; validated")
    metadata: dict[str, Any] | None = Field(
        None, description="Merged into the variable's metadata (RFC 7396 merge patch)"
    )


class VariableModel(BaseModel):
    id: str
    name: str
    type: str
    value: Any
    constraints: dict[str, Any]
    metadata: dict[str, Any]
    description: str | None
    version: int = Field(description="Writes since registration, from 1; the ETag")
    created_at: str
    updated_at: str


class VariableList(BaseModel):
    items: list[VariableModel]


class ValuesModel(BaseModel):
    values: dict[str, Any]


class BatchWriteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    updates: dict[str, Any] = Field(description="Variable name (or id) -> new value")
    metadata: dict[str, Any] | None = Field(None, description="Merged into each variable's")
    atomic: StrictBool = Field(True, description="All or nothing (default), or partial")


class BatchWriteModel(BaseModel):
    updated: list[str] = Field(description="The names written, in request order")
    errors: dict[str, Any] = Field(description="Per name: code, message (and constraint)")
    revision: int | None = Field(description="The one revision of the batch")
    versions: dict[str, int]


class SubscribedModel(BaseModel):
    subscribed: bool


class ThreadList(BaseModel):
    items: list[str]


class DedupeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str = Field(min_length=1, max_length=MAX_DEDUPE_KEY, description="e.g. a message id")
    limit: StrictInt = Field(DEFAULT_DEDUPE_LIMIT, ge=1, le=MAX_DEDUPE_LIMIT,
                             description="Keep only this many most recent keys")


class DedupeModel(BaseModel):
    duplicate: bool


class ImportModel(BaseModel):
    session_id: str
    revision: int = Field(description="The revision of the import")
    created: bool
    tokens: dict[str, int] = Field(description="Each imported held lock's fencing token here")


# -- helpers ---------------------------------------------------------------------------


def session_path(sid: str) -> str:
    return check_id(sid, what="session id")


SessionDep = Annotated[str, Depends(session_path)]


def validated(model: type[M], raw: bytes, *, optional: bool = False) -> M:
    """The body as ``model``; errors answer like FastAPI's own body validation."""
    data = parse_json(raw) if raw.strip() else ({} if optional else None)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from exc


def check_json_body(request: Request, *, patch: bool = False) -> None:
    mt = media_type(request)
    if mt == "" or is_json_media(mt):
        return
    raise UnsupportedMediaType(
        f"Content-Type {mt!r} is not accepted: send application/json"
        + (f" or {MERGE_PATCH}." if patch else ".")
    )


def encoded_value(value: Any, limit: int, what: str = "value") -> bytes:
    raw = orjson.dumps(value)
    if len(raw) > limit:
        raise PayloadTooLarge(f"The {what} is {len(raw)} bytes; the limit is {limit}.")
    return raw


def variable_response(var: Variable, status_code: int = 200) -> Response:
    return json_response(var.to_json(), status_code, {"ETag": var.etag})


def write_failure(outcome: WriteOutcome) -> Unprocessable | NotFound:
    """The error of a single write that wrote nothing."""
    (error,) = outcome.errors.values()
    if error["code"] == "not_found":
        return NotFound(error["message"])
    return Unprocessable(error["message"], code=error["code"], errors=[error])


async def _body(request: Request, settings: Settings, model: type[M], *,
                extra: int = SMALL_BODY_BYTES, optional: bool = False) -> M:
    check_json_body(request)
    return validated(model, await read_body(request, settings.max_value_bytes + extra),
                     optional=optional)


# -- sessions --------------------------------------------------------------------------


@router.get(
    "",
    response_model=SessionList,
    responses={**_ERRORS},
    summary="List live sessions by id pattern, in id order, with paging",
)
async def list_sessions(
    ns: NamespaceDep,
    backend: BackendDep,
    page: PageDep,
) -> Response:
    items, last = await backend.session_list(ns, page.pattern, limit=page.limit,
                                             after=page.after)
    return json_response(orjson.dumps({
        "items": [s.as_dict() for s in items],
        "next_cursor": page.next_cursor(last),
    }))


@router.put(
    "/{sid}",
    response_model=SessionModel,
    responses={201: {"model": SessionModel, "description": "Created"}, **_ERRORS},
    summary="Create a session, or replace its metadata and idle TTL",
    openapi_extra={**_WRITE, "requestBody": {"required": False, "content": {
        "application/json": {"schema": SessionPutRequest.model_json_schema()}}}},
)
async def put_session(
    sid: SessionDep, request: Request, ns: NamespaceDep, backend: BackendDep,
    settings: SettingsDep,
) -> Response:
    body = await _body(request, settings, SessionPutRequest, optional=True)
    ttl_ms = duration_ms(parse_duration(body.ttl))
    metadata = encoded_value(body.metadata or {}, settings.max_value_bytes, "metadata")
    info, created = await backend.session_put(
        ns, sid, metadata, ttl_ms, fence=fence_from_headers(request.headers)
    )
    return json_response(orjson.dumps(info.as_dict()), 201 if created else 200)


@router.get(
    "/{sid}",
    response_model=SessionModel,
    responses={404: {"model": Problem}, **_ERRORS},
    summary="A session's record",
)
async def get_session(sid: SessionDep, ns: NamespaceDep, backend: BackendDep) -> Response:
    info = await backend.session_get(ns, sid)
    if info is None:
        raise NotFound(f"Session {sid!r} does not exist.")
    return json_response(orjson.dumps(info.as_dict()))


@router.delete(
    "/{sid}",
    status_code=204,
    response_class=Response,
    responses={**_ERRORS},
    summary="Delete a session and all its state (204 also when it did not exist)",
    openapi_extra=_WRITE,
)
async def delete_session(
    sid: SessionDep, request: Request, ns: NamespaceDep, backend: BackendDep
) -> Response:
    await backend.session_delete(ns, sid, fence=fence_from_headers(request.headers))
    return Response(status_code=204)


# -- variables -------------------------------------------------------------------------


@router.post(
    "/{sid}/variables",
    status_code=201,
    response_model=VariableModel,
    responses={409: {"model": Problem, "description": "already_exists (name taken) or "
                                                       "stale_fence"},
               413: {"model": Problem},
               422: {"model": Problem, "description": "constraint_violation (the value) or "
                                                      "validation_failed (type, constraints)"},
               400: _ERRORS[400], 503: _ERRORS[503]},
    summary="Register a typed variable",
    openapi_extra={**_WRITE, "requestBody": {"required": True, "content": {
        "application/json": {"schema": VariableRegisterRequest.model_json_schema()}}}},
)
async def register_variable(
    sid: SessionDep, request: Request, ns: NamespaceDep, backend: BackendDep,
    settings: SettingsDep,
) -> Response:
    body = await _body(request, settings, VariableRegisterRequest)
    name = check_name(body.name)
    constraints = check_definition(name, body.type, body.constraints)
    error = value_error(name, body.type, constraints, body.value)
    if error is not None:
        raise error.to_problem()
    var = Variable(
        new_variable_id(), name, body.type, encoded_value(body.value, settings.max_value_bytes),
        constraints, body.metadata or {}, body.description, 0, 0, 0,
    )
    var = await backend.var_register(ns, sid, var, fence=fence_from_headers(request.headers))
    return variable_response(var, 201)


@router.get(
    "/{sid}/variables",
    response_model=VariableList,
    responses={**_ERRORS},
    summary="The session's variables, by name",
)
async def list_variables(sid: SessionDep, ns: NamespaceDep, backend: BackendDep) -> Response:
    items = await backend.var_list(ns, sid)
    return json_response(orjson.dumps({"items": [v.as_dict() for v in items]}))


@router.get(
    "/{sid}/variables/{var}",
    response_model=VariableModel,
    responses={304: {"description": "Not modified (If-None-Match)"},
               404: {"model": Problem}, **_ERRORS},
    summary="One variable, by name or id; ETag is its version",
)
async def get_variable(
    sid: SessionDep, var: str, request: Request, ns: NamespaceDep, backend: BackendDep
) -> Response:
    found = await backend.var_get(ns, sid, check_ident(var))
    if found is None:
        raise NotFound(f"No variable {var!r} in session {sid!r}.")
    if request.headers.get("if-none-match", "").strip().strip('"') == str(found.version):
        return Response(status_code=304, headers={"ETag": found.etag})
    return variable_response(found)


@router.put(
    "/{sid}/variables/{var}",
    response_model=VariableModel,
    responses={404: {"model": Problem}, 412: {"model": Problem, "description":
                                              "If-Match failed; `current` is the variable"},
               413: {"model": Problem},
               422: {"model": Problem, "description": "constraint_violation"}, **_ERRORS},
    summary="Set a variable's value (validated; version + 1)",
    openapi_extra={"parameters": [_IF_MATCH, *FENCE_PARAMETERS], "requestBody": {
        "required": True, "content": {
            "application/json": {"schema": VariableSetRequest.model_json_schema()}}}},
)
async def set_variable(
    sid: SessionDep, var: str, request: Request, ns: NamespaceDep, backend: BackendDep,
    settings: SettingsDep,
) -> Response:
    ident = check_ident(var)
    body = await _body(request, settings, VariableSetRequest)
    encoded_value(body.value, settings.max_value_bytes)
    outcome = await backend.var_write(
        ns, sid, [(ident, body.value)], metadata=body.metadata,
        condition=condition_from_headers(request.headers),
        fence=fence_from_headers(request.headers),
    )
    if not outcome.updated:
        raise write_failure(outcome)
    return variable_response(outcome.updated[0])


@router.delete(
    "/{sid}/variables/{var}",
    status_code=204,
    response_class=Response,
    responses={404: {"model": Problem}, 412: {"model": Problem}, **_ERRORS},
    summary="Delete a variable (404 when absent)",
    openapi_extra={"parameters": [_IF_MATCH, *FENCE_PARAMETERS]},
)
async def delete_variable(
    sid: SessionDep, var: str, request: Request, ns: NamespaceDep, backend: BackendDep
) -> Response:
    await backend.var_delete(
        ns, sid, check_ident(var),
        condition=condition_from_headers(request.headers),
        fence=fence_from_headers(request.headers),
    )
    return Response(status_code=204)


@router.get(
    "/{sid}/values",
    response_model=ValuesModel,
    responses={**_ERRORS},
    summary="Read many values at once; missing names are skipped",
)
async def get_values(
    sid: SessionDep,
    ns: NamespaceDep,
    backend: BackendDep,
    names: Annotated[str | None, Query(description="Comma list of names (or ids); "
                                                   "absent: every variable")] = None,
) -> Response:
    if names is None:
        found = {v.name: v for v in await backend.var_list(ns, sid)}
    else:
        idents = [check_ident(n.strip()) for n in names.split(",") if n.strip()]
        found = await backend.var_read(ns, sid, list(dict.fromkeys(idents)))
    values = {ident: orjson.Fragment(v.value) for ident, v in found.items()}
    return json_response(orjson.dumps({"values": values}))


@router.patch(
    "/{sid}/values",
    response_model=BatchWriteModel,
    responses={413: {"model": Problem},
               422: {"model": Problem, "description": "Atomic batch refused: `errors` per "
                                                      "name; nothing was written"},
               **_ERRORS},
    summary="Write many values in one revision: all or nothing, or partial",
    openapi_extra={**_WRITE, "requestBody": {"required": True, "content": {
        "application/json": {"schema": BatchWriteRequest.model_json_schema()}}}},
)
async def patch_values(
    sid: SessionDep, request: Request, ns: NamespaceDep, backend: BackendDep,
    settings: SettingsDep,
) -> Response:
    check_json_body(request)
    body = validated(BatchWriteRequest, await read_body(request, settings.max_snapshot_bytes))
    result = await write_values(
        backend, settings, ns, sid, body, fence=fence_from_headers(request.headers)
    )
    return json_response(orjson.dumps(result))


async def write_values(
    backend: Backend, settings: Settings, ns: str, sid: str, body: BatchWriteRequest,
    *, fence: Fence | None,
) -> dict[str, Any]:
    """A batch write (also MCP's session_set_variables): one revision, all or nothing
    (422 listing each name's error) or partial; the answer of PATCH .../values."""
    updates = [(check_ident(ident), value) for ident, value in body.updates.items()]
    for ident, value in updates:
        encoded_value(value, settings.max_value_bytes, f"value of {ident!r}")
    outcome = await backend.var_write(
        ns, sid, updates, metadata=body.metadata, atomic=body.atomic, batch=True, fence=fence,
    )
    if body.atomic and outcome.errors:
        codes = {e["code"] for e in outcome.errors.values()}
        code = "constraint_violation" if "constraint_violation" in codes else "validation_failed"
        listed = "; ".join(e["message"] for e in outcome.errors.values())
        raise Unprocessable(f"Nothing was written: {listed}", code=code, errors=outcome.errors)
    written = [ident for ident, _ in updates if ident not in outcome.errors]
    return {
        "updated": written,
        "errors": outcome.errors,
        "revision": outcome.revision,
        "versions": {ident: v.version for ident, v in zip(written, outcome.updated,
                                                          strict=True)},
    }


# -- chat state ------------------------------------------------------------------------


def thread_path(thread: str) -> str:
    return check_id(thread, what="thread id")


ThreadDep = Annotated[str, Depends(thread_path)]


@router.get(
    "/{sid}/subscriptions",
    response_model=ThreadList,
    responses={**_ERRORS},
    summary="The subscribed threads, sorted",
)
async def list_subscriptions(sid: SessionDep, ns: NamespaceDep, backend: BackendDep) -> Response:
    return json_response(orjson.dumps({"items": await backend.subscription_list(ns, sid)}))


@router.get(
    "/{sid}/subscriptions/{thread}",
    response_model=SubscribedModel,
    responses={**_ERRORS},
    summary="Whether the session is subscribed to a thread",
)
async def get_subscription(
    sid: SessionDep, thread: ThreadDep, ns: NamespaceDep, backend: BackendDep
) -> Response:
    subscribed = await backend.subscription_get(ns, sid, thread)
    return json_response(orjson.dumps({"subscribed": subscribed}))


@router.put(
    "/{sid}/subscriptions/{thread}",
    status_code=204,
    response_class=Response,
    responses={**_ERRORS},
    summary="Subscribe to a thread (idempotent)",
    openapi_extra=_WRITE,
)
async def subscribe(
    sid: SessionDep, thread: ThreadDep, request: Request, ns: NamespaceDep, backend: BackendDep
) -> Response:
    await backend.subscription_set(ns, sid, thread, True,
                                   fence=fence_from_headers(request.headers))
    return Response(status_code=204)


@router.delete(
    "/{sid}/subscriptions/{thread}",
    status_code=204,
    response_class=Response,
    responses={**_ERRORS},
    summary="Unsubscribe from a thread (idempotent)",
    openapi_extra=_WRITE,
)
async def unsubscribe(
    sid: SessionDep, thread: ThreadDep, request: Request, ns: NamespaceDep, backend: BackendDep
) -> Response:
    await backend.subscription_set(ns, sid, thread, False,
                                   fence=fence_from_headers(request.headers))
    return Response(status_code=204)


@router.post(
    "/{sid}/dedupe",
    response_model=DedupeModel,
    responses={422: {"model": Problem}, **_ERRORS},
    summary="Check and record a key in the session's dedupe window, atomically",
    openapi_extra={**_WRITE, "requestBody": {"required": True, "content": {
        "application/json": {"schema": DedupeRequest.model_json_schema()}}}},
)
async def dedupe(
    sid: SessionDep, request: Request, ns: NamespaceDep, backend: BackendDep,
    settings: SettingsDep,
) -> Response:
    body = await _body(request, settings, DedupeRequest)
    duplicate = await backend.dedupe_check(ns, sid, body.key, body.limit,
                                           fence=fence_from_headers(request.headers))
    return json_response(b'{"duplicate":true}' if duplicate else b'{"duplicate":false}')


def _state_routes(kind: StateKind) -> None:
    """GET/PUT/PATCH/DELETE of a thread's or channel's state map."""
    plural = kind + "s"
    path = f"/{{sid}}/{plural}/{{{kind}}}/state"
    what = f"{kind} id"
    state_schema = {"type": "object", "additionalProperties": True}

    def ident_of(request: Request) -> str:
        return check_id(request.path_params[kind], what=what)

    id_param = {"name": kind, "in": "path", "required": True, "schema": {"type": "string"}}

    async def get_state(
        sid: SessionDep, request: Request, ns: NamespaceDep, backend: BackendDep
    ) -> Response:
        ident = ident_of(request)
        state = await backend.state_get(ns, sid, kind, ident)
        if state is None:
            raise NotFound(f"The {kind} {ident!r} has no state in session {sid!r}.")
        return json_response(state)

    async def write(request: Request, sid: str, ns: str, backend: Backend,
                    update: Any) -> Response:
        ident = ident_of(request)
        state, created = await backend.state_update(
            ns, sid, kind, ident, update, fence=fence_from_headers(request.headers)
        )
        if state is None:
            return Response(status_code=204)
        return json_response(state, 201 if created else 200)

    async def put_state(
        sid: SessionDep, request: Request, ns: NamespaceDep, backend: BackendDep,
        settings: SettingsDep,
    ) -> Response:
        check_json_body(request)
        doc = parse_json(await read_body(request, settings.max_value_bytes + 1024))
        if not isinstance(doc, dict):
            raise Unprocessable(f"A {kind}'s state must be a JSON object.")
        new = encoded_value(doc, settings.max_value_bytes, f"{kind} state")
        return await write(request, sid, ns, backend, lambda _old: new)

    async def patch_state(
        sid: SessionDep, request: Request, ns: NamespaceDep, backend: BackendDep,
        settings: SettingsDep,
    ) -> Response:
        check_json_body(request, patch=True)
        patch = parse_json(await read_body(request, settings.max_value_bytes + 1024),
                           what="merge patch")
        limit = settings.max_value_bytes

        def update(old: bytes | None) -> bytes:
            merged = merge_patch(orjson.loads(old) if old is not None else {}, patch)
            if not isinstance(merged, dict):
                raise Unprocessable(f"A {kind}'s state must stay a JSON object; the merge "
                                    "patch is not an object.")
            return encoded_value(merged, limit, f"{kind} state")

        return await write(request, sid, ns, backend, update)

    async def delete_state(
        sid: SessionDep, request: Request, ns: NamespaceDep, backend: BackendDep
    ) -> Response:
        await write(request, sid, ns, backend, lambda _old: None)
        return Response(status_code=204)

    body = {"required": True, "content": {"application/json": {"schema": state_schema}}}
    # One named schema for both media types: generated clients make one model of it
    # (two inline objects would be two models of one name).
    state_ref = {"$ref": "#/components/schemas/StateMap"}
    patch_body = {"required": True, "content": {MERGE_PATCH: {"schema": state_ref},
                                                "application/json": {"schema": state_ref}}}
    created: dict[int | str, dict[str, Any]] = {201: {"description": "Created", "content": {
        "application/json": {"schema": state_schema}}}}
    router.add_api_route(
        path, get_state, methods=["GET"], name=f"get_{kind}_state",
        responses={404: {"model": Problem}, **_ERRORS},
        summary=f"A {kind}'s state map; 404 when it has none",
        openapi_extra={"parameters": [id_param]},
    )
    router.add_api_route(
        path, put_state, methods=["PUT"], name=f"put_{kind}_state",
        responses={**created, 413: {"model": Problem}, 422: {"model": Problem}, **_ERRORS},
        summary=f"Replace a {kind}'s state map (a JSON object)",
        openapi_extra={"parameters": [id_param, *FENCE_PARAMETERS], "requestBody": body},
    )
    router.add_api_route(
        path, patch_state, methods=["PATCH"], name=f"patch_{kind}_state",
        responses={**created, 413: {"model": Problem}, 415: {"model": Problem},
                   422: {"model": Problem}, **_ERRORS},
        summary=f"Merge-patch a {kind}'s state map (RFC 7396), atomically",
        openapi_extra={"parameters": [id_param, *FENCE_PARAMETERS], "requestBody": patch_body},
    )
    router.add_api_route(
        path, delete_state, methods=["DELETE"], name=f"delete_{kind}_state",
        status_code=204, response_class=Response, responses={**_ERRORS},
        summary=f"Delete a {kind}'s state map (204 also when it had none)",
        openapi_extra={"parameters": [id_param, *FENCE_PARAMETERS]},
    )


for _kind in STATE_KINDS:
    _state_routes(_kind)


# -- snapshots -------------------------------------------------------------------------


@router.get(
    "/{sid}/snapshot",
    responses={200: {"description": "The whole session at one revision",
                     "content": {"application/json": {"schema": {"type": "object"}}}},
               404: {"model": Problem}, **_ERRORS},
    summary="Export the whole session at one revision",
)
async def get_snapshot(sid: SessionDep, ns: NamespaceDep, backend: BackendDep) -> Response:
    snapshot = await backend.session_snapshot(ns, sid)
    if snapshot is None:
        raise NotFound(f"Session {sid!r} does not exist.")
    return json_response(snapshot.to_json(), headers={"ETag": f'"{snapshot.revision}"'})


@router.put(
    "/{sid}/snapshot",
    response_model=ImportModel,
    responses={201: {"model": ImportModel, "description": "Imported into a new session"},
               413: {"model": Problem},
               422: {"model": Problem, "description": "A malformed section (its location in "
                                                      "`errors`); nothing changed"},
               **_ERRORS},
    summary="Replace the session with a snapshot document, atomically",
    openapi_extra={**_WRITE, "requestBody": {"required": True, "content": {
        "application/json": {"schema": {"type": "object"}}}}},
)
async def put_snapshot(
    sid: SessionDep, request: Request, ns: NamespaceDep, backend: BackendDep,
    settings: SettingsDep,
) -> Response:
    check_json_body(request)
    doc = parse_json(await read_body(request, settings.max_snapshot_bytes, what="snapshot"))
    snapshot = parse_snapshot(doc, sid, now=now_ms(), max_value_bytes=settings.max_value_bytes)
    result = await backend.session_import(ns, sid, snapshot,
                                          fence=fence_from_headers(request.headers))
    body = {"session_id": sid, "revision": result.revision, "created": result.created,
            "tokens": result.tokens}
    return json_response(orjson.dumps(body), 201 if result.created else 200)


# -- session-scoped locks --------------------------------------------------------------


async def use_session_for_lock(
    sid: str, request: Request, ns: NamespaceDep, backend: BackendDep
) -> AsyncIterator[str]:
    """A successful lock call (POST) counts as a write to its session: it creates the
    session on first use and refreshes its idle TTL. A refused one changes nothing. The
    lock's name is remembered before the call, so the snapshot finds its pending list."""
    sid = check_id(sid, what="session id")
    name: str | None = request.path_params.get("name") if request.method == "POST" else None
    try:
        name = check_key(name, what="lock name", actions=LOCK_ACTIONS) if name else None
    except InvalidRequest:
        name = None  # the lock route refuses it
    if name is not None:
        await backend.session_lock_index(ns, sid, name)
    yield sid
    # Only reached when the lock call succeeded; a force-release of a free lock with
    # nothing pending changed nothing, so it creates no session either.
    if name is not None and not getattr(request.state, "lock_changed_nothing", False):
        await backend.session_use(ns, sid, name)


def session_lock_scope(
    sid: Annotated[str, Depends(use_session_for_lock, scope="function")],
) -> str:
    """A session's locks have the session id as their scope."""
    return sid


router.include_router(
    lock_router("/{sid}/locks", session_lock_scope, kind="session_lock", tags=["sessions"])
)
