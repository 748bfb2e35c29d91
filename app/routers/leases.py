"""Leases (API.md section 11): grant, keepalive, read, list and revoke. Keys, locks and
transaction puts attach to a lease with ``lease``; a watch stream opened with ``lease=``
keeps it alive (app/presence.py).
"""

from __future__ import annotations

import secrets
from typing import Annotated

import orjson
from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema
from starlette.responses import Response

from app.backends.parts.txn import LeaseStore
from app.domain.leases import LeaseInfo, lease_not_found
from app.errors import InvalidTTL
from app.models import Duration, Problem
from app.routers.common import (
    BACKEND_UNAVAILABLE,
    LeasesDep,
    NamespaceDep,
    PageDep,
    json_response,
)
from app.schemas import ID_SCHEMA
from app.syntax import check_id, duration_ms, parse_duration

router = APIRouter(prefix="/v1/leases", tags=["leases"])


class LeaseGrantRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ttl: Duration = Field(description="Lifetime without a keepalive (seconds or '10s'; > 0)")
    #: Documented with the id syntax; checked by ``check_id`` (400 invalid_key).
    id: Annotated[str, WithJsonSchema(ID_SCHEMA)] | None = Field(
        None, description="The lease id (key syntax without '/'); generated when absent")


class LeaseModel(BaseModel):
    id: str
    ttl: float = Field(description="Seconds a keepalive extends the lease by")
    granted_at: str
    expires_at: str


class LeaseLockModel(BaseModel):
    name: str
    session: str | None = Field(None, description="The session of a session lock")
    owner: str
    token: int


class LeaseDetailModel(LeaseModel):
    keys: list[str] = Field(description="The keys on the lease, in key order")
    locks: list[LeaseLockModel] = Field(description="The locks held on the lease")


class LeaseRevoked(LeaseDetailModel):
    revision: int = Field(description="The revision of the `lease.revoked` event")


class LeaseList(BaseModel):
    items: list[LeaseModel]
    next_cursor: str | None


_ERRORS: dict[int | str, dict[str, object]] = {
    400: {"model": Problem, "description": "invalid_key (the id) or invalid_ttl"},
    503: BACKEND_UNAVAILABLE,
}
_NOT_FOUND: dict[int | str, dict[str, object]] = {
    404: {"model": Problem, "description": "lease_not_found: never granted, revoked or expired"},
}


def lease_id_of(lease_id: str) -> str:
    return check_id(lease_id, what="lease id")


@router.post(
    "",
    status_code=201,
    response_model=LeaseModel,
    responses={409: {"model": Problem, "description": "already_exists: that id is live"},
               422: {"model": Problem}, **_ERRORS},
    summary="Grant a lease",
)
async def grant_lease(body: LeaseGrantRequest, ns: NamespaceDep, backend: LeasesDep) -> Response:
    info = await grant(backend, ns, body)
    return json_response(orjson.dumps(info.as_dict()), 201)


async def grant(backend: LeaseStore, ns: str, body: LeaseGrantRequest) -> LeaseInfo:
    """Grant the lease ``body`` asks for (POST /v1/leases and the MCP ``lease_grant``)."""
    ttl_ms = duration_ms(parse_duration(body.ttl))
    if ttl_ms == 0:
        raise InvalidTTL("A lease needs a ttl above 0.")
    lease_id = lease_id_of(body.id) if body.id is not None else "lease-" + secrets.token_hex(8)
    return await backend.lease_grant(ns, lease_id, ttl_ms)


@router.post(
    "/{lease_id}/keepalive",
    response_model=LeaseModel,
    responses={**_NOT_FOUND, **_ERRORS},
    summary="Keep a lease alive for another ttl",
)
async def keepalive_lease(lease_id: str, ns: NamespaceDep, backend: LeasesDep) -> Response:
    info = await keepalive(backend, ns, lease_id)
    return json_response(orjson.dumps(info.as_dict()))


async def keepalive(backend: LeaseStore, ns: str, lease_id: str) -> LeaseInfo:
    """Extend a lease by its ttl (POST .../keepalive and the MCP ``lease_keepalive``)."""
    return await backend.lease_keepalive(ns, lease_id_of(lease_id))


@router.get(
    "",
    response_model=LeaseList,
    responses={**_ERRORS},
    summary="List live leases by id pattern, with stable paging",
)
async def list_leases(ns: NamespaceDep, backend: LeasesDep, page: PageDep) -> Response:
    items, last = await backend.lease_list(ns, page.pattern, limit=page.limit, after=page.after)
    return page.response([i.as_dict() for i in items], last)


@router.get(
    "/{lease_id}",
    response_model=LeaseDetailModel,
    responses={**_NOT_FOUND, **_ERRORS},
    summary="A lease with its keys and locks",
)
async def get_lease(lease_id: str, ns: NamespaceDep, backend: LeasesDep) -> Response:
    lease_id = lease_id_of(lease_id)
    detail = await backend.lease_get(ns, lease_id)
    if detail is None:
        raise lease_not_found(lease_id)
    return json_response(orjson.dumps(detail.as_dict()))


@router.delete(
    "/{lease_id}",
    response_model=LeaseRevoked,
    responses={**_NOT_FOUND, **_ERRORS},
    summary="Revoke a lease: its keys are deleted and its locks released, in one event",
)
async def revoke_lease(lease_id: str, ns: NamespaceDep, backend: LeasesDep) -> Response:
    detail = await backend.lease_revoke(ns, lease_id_of(lease_id))
    return json_response(orjson.dumps(detail.as_dict()))
