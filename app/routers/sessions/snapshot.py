"""A session's snapshot: export the whole session at one revision, or replace it with a
snapshot document (read by ``app.snapshots``) atomically, on any backend.
"""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from app.errors import NotFound
from app.models import Problem
from app.routers.common import (
    NamespaceDep,
    SessionsDep,
    SettingsDep,
    check_json_body,
    fence_from_headers,
    json_response,
    parse_json,
    read_body,
)
from app.routers.sessions.models import ImportModel
from app.routers.sessions.shared import ERRORS, WRITE, SessionDep
from app.snapshots import parse_snapshot
from app.syntax import now_ms

router = APIRouter()


@router.get(
    "/{sid}/snapshot",
    responses={200: {"description": "The whole session at one revision",
                     "content": {"application/json": {"schema": {"type": "object"}}}},
               404: {"model": Problem}, **ERRORS},
    summary="Export the whole session at one revision",
)
async def get_snapshot(sid: SessionDep, ns: NamespaceDep, backend: SessionsDep) -> Response:
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
               **ERRORS},
    summary="Replace the session with a snapshot document, atomically",
    openapi_extra={**WRITE, "requestBody": {"required": True, "content": {
        "application/json": {"schema": {"type": "object"}}}}},
)
async def put_snapshot(
    sid: SessionDep, request: Request, ns: NamespaceDep, backend: SessionsDep,
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
