"""Session records: list, create or replace (metadata and idle TTL), read, delete."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from app.errors import NotFound
from app.models import Problem
from app.routers.common import (
    NamespaceDep,
    PageDep,
    SessionsDep,
    SettingsDep,
    fence_from_headers,
    json_body,
    json_response,
)
from app.routers.sessions.models import SessionList, SessionModel, SessionPutRequest
from app.routers.sessions.shared import ERRORS, WRITE, SessionDep, encoded_value, read_model
from app.syntax import duration_ms, parse_duration

router = APIRouter()


@router.get(
    "",
    response_model=SessionList,
    responses={**ERRORS},
    summary="List live sessions by id pattern, in id order, with paging",
)
async def list_sessions(
    ns: NamespaceDep,
    backend: SessionsDep,
    page: PageDep,
) -> Response:
    items, last = await backend.session_list(ns, page.pattern, limit=page.limit,
                                             after=page.after)
    return page.response([s.as_dict() for s in items], last)


@router.put(
    "/{sid}",
    response_model=SessionModel,
    responses={201: {"model": SessionModel, "description": "Created"}, **ERRORS},
    summary="Create a session, or replace its metadata and idle TTL",
    openapi_extra={**WRITE, "requestBody": json_body(SessionPutRequest, required=False)},
)
async def put_session(
    sid: SessionDep, request: Request, ns: NamespaceDep, backend: SessionsDep,
    settings: SettingsDep,
) -> Response:
    body = await read_model(request, settings, SessionPutRequest, optional=True)
    ttl_ms = duration_ms(parse_duration(body.ttl))
    metadata = encoded_value(body.metadata or {}, settings.max_value_bytes, "metadata")
    info, created = await backend.session_put(
        ns, sid, metadata, ttl_ms, fence=fence_from_headers(request.headers)
    )
    return json_response(orjson.dumps(info.as_dict()), 201 if created else 200)


@router.get(
    "/{sid}",
    response_model=SessionModel,
    responses={404: {"model": Problem}, **ERRORS},
    summary="A session's record",
)
async def get_session(sid: SessionDep, ns: NamespaceDep, backend: SessionsDep) -> Response:
    info = await backend.session_get(ns, sid)
    if info is None:
        raise NotFound(f"Session {sid!r} does not exist.")
    return json_response(orjson.dumps(info.as_dict()))


@router.delete(
    "/{sid}",
    status_code=204,
    response_class=Response,
    responses={**ERRORS},
    summary="Delete a session and all its state (204 also when it did not exist)",
    openapi_extra=WRITE,
)
async def delete_session(
    sid: SessionDep, request: Request, ns: NamespaceDep, backend: SessionsDep
) -> Response:
    await backend.session_delete(ns, sid, fence=fence_from_headers(request.headers))
    return Response(status_code=204)
