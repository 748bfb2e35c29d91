"""Transactions and bulk deletes (API.md section 10): ``POST /v1/txn`` and
``DELETE /v1/kv?pattern=``. The body is parsed by app/txn.py; the backend applies it.
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from app.backends.base import Fence
from app.backends.parts.txn import TxnStore
from app.domain.leases import TxnOutcome
from app.models import Problem
from app.routers.common import (
    BACKEND_UNAVAILABLE,
    FENCE_PARAMETERS,
    NamespaceDep,
    SettingsDep,
    TxnDep,
    fence_from_headers,
    json_response,
    parse_json,
    read_body,
)
from app.settings import Settings
from app.syntax import Pattern
from app.txn import Limits, parse_txn

router = APIRouter(tags=["transactions"])

_COMPARE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "A key compare: `key` and one of `revision` (0 = absent), `version` "
    "(0 = absent), `value` (JSON equality), `exists`; or a lock compare: `lock`, `token` "
    "and, for a session's lock, `session`",
    "properties": {
        "key": {"type": "string"}, "revision": {"type": "integer", "minimum": 0},
        "version": {"type": "integer", "minimum": 0}, "value": {}, "exists": {"type": "boolean"},
        "lock": {"type": "string"}, "token": {"type": "integer", "minimum": 1},
        "session": {"type": "string"},
    },
}
_OP_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["op", "key"],
    "description": "put (`value`, `ttl` or `lease`), delete, get, patch (`merge` or "
    "`json_patch`, `initial`), increment (`by`, `initial`, `ttl`)",
    "properties": {
        "op": {"type": "string", "enum": ["put", "delete", "get", "patch", "increment"]},
        "key": {"type": "string"}, "value": {}, "ttl": {"type": ["number", "string"]},
        "lease": {"type": "string"}, "merge": {},
        "json_patch": {"type": "array", "items": {"type": "object"}}, "initial": {},
        "by": {"type": "number"},
    },
}
_TXN_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {
            "type": "object",
            "properties": {
                "compare": {"type": "array", "items": _COMPARE_SCHEMA},
                "success": {"type": "array", "items": _OP_SCHEMA},
                "failure": {"type": "array", "items": _OP_SCHEMA},
            },
        }}},
    },
    "parameters": FENCE_PARAMETERS,
}


class TxnResult(BaseModel):
    succeeded: bool = Field(description="True when every compare held (the success ops ran)")
    revision: int = Field(description="The transaction's revision, or the current one when it "
                                      "wrote nothing")
    results: list[Any] = Field(description="Per op: the entry after a write, the entry or null "
                                           "for a get, {\"deleted\": bool} for a delete")


class PatternDeleted(BaseModel):
    deleted: int = Field(description="How many keys were deleted")
    keys: list[str] = Field(description="The deleted keys, in key order")
    revision: int = Field(description="The revision they were deleted at (the current one "
                                      "when none matched)")


@router.post(
    "/v1/txn",
    response_model=TxnResult,
    responses={
        400: {"model": Problem, "description": "A malformed transaction; nothing changed"},
        404: {"model": Problem, "description": "lease_not_found, or a patch of a missing key"},
        409: {"model": Problem, "description": "stale_fence"},
        412: {"model": Problem, "description": "A JSON Patch test failed"},
        413: {"model": Problem, "description": "A value over CORKBOARD_MAX_VALUE_BYTES"},
        422: {"model": Problem, "description": "A value that cannot be stored or incremented"},
        503: BACKEND_UNAVAILABLE,
        507: {"model": Problem, "description": "quota_exceeded: the puts would pass a "
                                               "namespace quota; nothing changed"},
    },
    summary="Compare, then apply one branch of ops atomically (one revision, one event)",
    openapi_extra=_TXN_BODY,
)
async def transaction(
    request: Request, ns: NamespaceDep, backend: TxnDep, settings: SettingsDep
) -> Response:
    fence = fence_from_headers(request.headers)
    body = parse_json(await read_body(request, settings.max_request_bytes))
    outcome = await run_txn(backend, settings, ns, body, fence=fence)
    return json_response(outcome.to_json())


async def run_txn(
    backend: TxnStore, settings: Settings, ns: str, body: Any, *, fence: Fence | None
) -> TxnOutcome:
    """Parse a transaction body (compare/success/failure) and apply it: POST /v1/txn
    and the MCP ``txn`` tool."""
    limits = Limits(settings.max_txn_ops, settings.max_value_bytes, settings.max_patch_ops)
    return await backend.txn(ns, parse_txn(body, limits), limits, fence=fence)


@router.delete(
    "/v1/kv",
    response_model=PatternDeleted,
    responses={
        400: {"model": Problem, "description": "invalid_pattern"},
        409: {"model": Problem, "description": "too_many_keys (more than 10,000 match; "
                                               "nothing deleted), or stale_fence"},
        503: BACKEND_UNAVAILABLE,
    },
    tags=["keys"],
    summary="Delete every key matching a pattern, at one revision with one `txn` event",
    openapi_extra={"parameters": FENCE_PARAMETERS},
)
async def delete_keys(
    request: Request,
    ns: NamespaceDep,
    backend: TxnDep,
    pattern: Annotated[str, Query(description="'*' matches any run of characters; "
                                              "required (use '*' for every key)")],
) -> Response:
    fence = fence_from_headers(request.headers)
    done = await backend.kv_delete_pattern(ns, Pattern.compile(pattern), fence=fence)
    return json_response(
        orjson.dumps({"deleted": len(done.keys), "keys": done.keys, "revision": done.revision})
    )
