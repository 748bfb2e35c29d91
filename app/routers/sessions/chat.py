"""A session's chat state: thread subscriptions, the dedupe window, and the state maps of
its threads and channels (replace, RFC 7396 merge patch, delete).
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from app.backends.parts.sessions import SessionStore
from app.domain.sessions import STATE_KINDS, StateKind
from app.errors import NotFound, Unprocessable
from app.models import Problem
from app.patching import merge_patch
from app.routers.common import (
    FENCE_PARAMETERS,
    MERGE_PATCH,
    NamespaceDep,
    SessionsDep,
    SettingsDep,
    check_json_body,
    fence_from_headers,
    json_body,
    json_response,
    parse_json,
    read_body,
)
from app.routers.sessions.models import DedupeModel, DedupeRequest, SubscribedModel, ThreadList
from app.routers.sessions.shared import ERRORS, WRITE, SessionDep, encoded_value, read_model
from app.syntax import check_id

router = APIRouter()


def thread_path(thread: str) -> str:
    return check_id(thread, what="thread id")


ThreadDep = Annotated[str, Depends(thread_path)]


# -- subscriptions and dedupe ----------------------------------------------------------


@router.get(
    "/{sid}/subscriptions",
    response_model=ThreadList,
    responses={**ERRORS},
    summary="The subscribed threads, sorted",
)
async def list_subscriptions(sid: SessionDep, ns: NamespaceDep, backend: SessionsDep) -> Response:
    return json_response(orjson.dumps({"items": await backend.subscription_list(ns, sid)}))


@router.get(
    "/{sid}/subscriptions/{thread}",
    response_model=SubscribedModel,
    responses={**ERRORS},
    summary="Whether the session is subscribed to a thread",
)
async def get_subscription(
    sid: SessionDep, thread: ThreadDep, ns: NamespaceDep, backend: SessionsDep
) -> Response:
    subscribed = await backend.subscription_get(ns, sid, thread)
    return json_response(orjson.dumps({"subscribed": subscribed}))


@router.put(
    "/{sid}/subscriptions/{thread}",
    status_code=204,
    response_class=Response,
    responses={**ERRORS},
    summary="Subscribe to a thread (idempotent)",
    openapi_extra=WRITE,
)
async def subscribe(
    sid: SessionDep, thread: ThreadDep, request: Request, ns: NamespaceDep, backend: SessionsDep
) -> Response:
    await backend.subscription_set(ns, sid, thread, True,
                                   fence=fence_from_headers(request.headers))
    return Response(status_code=204)


@router.delete(
    "/{sid}/subscriptions/{thread}",
    status_code=204,
    response_class=Response,
    responses={**ERRORS},
    summary="Unsubscribe from a thread (idempotent)",
    openapi_extra=WRITE,
)
async def unsubscribe(
    sid: SessionDep, thread: ThreadDep, request: Request, ns: NamespaceDep, backend: SessionsDep
) -> Response:
    await backend.subscription_set(ns, sid, thread, False,
                                   fence=fence_from_headers(request.headers))
    return Response(status_code=204)


@router.post(
    "/{sid}/dedupe",
    response_model=DedupeModel,
    responses={422: {"model": Problem}, **ERRORS},
    summary="Check and record a key in the session's dedupe window, atomically",
    openapi_extra={**WRITE, "requestBody": json_body(DedupeRequest)},
)
async def dedupe(
    sid: SessionDep, request: Request, ns: NamespaceDep, backend: SessionsDep,
    settings: SettingsDep,
) -> Response:
    body = await read_model(request, settings, DedupeRequest)
    duplicate = await backend.dedupe_check(ns, sid, body.key, body.limit,
                                           fence=fence_from_headers(request.headers))
    return json_response(b'{"duplicate":true}' if duplicate else b'{"duplicate":false}')


# -- thread and channel state ----------------------------------------------------------


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
        sid: SessionDep, request: Request, ns: NamespaceDep, backend: SessionsDep
    ) -> Response:
        ident = ident_of(request)
        state = await backend.state_get(ns, sid, kind, ident)
        if state is None:
            raise NotFound(f"The {kind} {ident!r} has no state in session {sid!r}.")
        return json_response(state)

    async def write(request: Request, sid: str, ns: str, backend: SessionStore,
                    update: Any) -> Response:
        ident = ident_of(request)
        state, created = await backend.state_update(
            ns, sid, kind, ident, update, fence=fence_from_headers(request.headers)
        )
        if state is None:
            return Response(status_code=204)
        return json_response(state, 201 if created else 200)

    async def put_state(
        sid: SessionDep, request: Request, ns: NamespaceDep, backend: SessionsDep,
        settings: SettingsDep,
    ) -> Response:
        check_json_body(request)
        doc = parse_json(await read_body(request, settings.max_value_bytes + 1024))
        if not isinstance(doc, dict):
            raise Unprocessable(f"A {kind}'s state must be a JSON object.")
        new = encoded_value(doc, settings.max_value_bytes, f"{kind} state")
        return await write(request, sid, ns, backend, lambda _old: new)

    async def patch_state(
        sid: SessionDep, request: Request, ns: NamespaceDep, backend: SessionsDep,
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
        sid: SessionDep, request: Request, ns: NamespaceDep, backend: SessionsDep
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
        responses={404: {"model": Problem}, **ERRORS},
        summary=f"A {kind}'s state map; 404 when it has none",
        openapi_extra={"parameters": [id_param]},
    )
    router.add_api_route(
        path, put_state, methods=["PUT"], name=f"put_{kind}_state",
        responses={**created, 413: {"model": Problem}, 422: {"model": Problem}, **ERRORS},
        summary=f"Replace a {kind}'s state map (a JSON object)",
        openapi_extra={"parameters": [id_param, *FENCE_PARAMETERS], "requestBody": body},
    )
    router.add_api_route(
        path, patch_state, methods=["PATCH"], name=f"patch_{kind}_state",
        responses={**created, 413: {"model": Problem}, 415: {"model": Problem},
                   422: {"model": Problem}, **ERRORS},
        summary=f"Merge-patch a {kind}'s state map (RFC 7396), atomically",
        openapi_extra={"parameters": [id_param, *FENCE_PARAMETERS], "requestBody": patch_body},
    )
    router.add_api_route(
        path, delete_state, methods=["DELETE"], name=f"delete_{kind}_state",
        status_code=204, response_class=Response, responses={**ERRORS},
        summary=f"Delete a {kind}'s state map (204 also when it had none)",
        openapi_extra={"parameters": [id_param, *FENCE_PARAMETERS]},
    )


for _kind in STATE_KINDS:
    _state_routes(_kind)
