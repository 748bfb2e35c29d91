"""Locks (API.md section 4): fencing tokens, exclusive/queue/debounce modes, FIFO waiting.

``lock_router(prefix, scope)`` builds the same handlers for any mount point: namespace
locks at ``/v1/locks`` (scope "") and, through the sessions router, a session's locks at
``/v1/sessions/{sid}/locks`` (scope = the session id, ``session=True``: the engine counts
each lock change as a write to that session, in the same atomic step). The engine is the
backend's.
"""

# No ``from __future__ import annotations``: the handlers are built in a factory, and
# FastAPI must see their annotations (the scope dependency is a local) as objects.
import asyncio
import time
from collections.abc import Callable
from enum import Enum
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, StrictInt
from starlette.responses import Response

from app.domain.locks import LockRequest
from app.errors import Conflict, InvalidRequest, InvalidTTL, NotFound, PayloadTooLarge
from app.models import Duration, Problem
from app.routers.common import (
    BACKEND_UNAVAILABLE,
    LocksDep,
    NamespaceDep,
    PageDep,
    SettingsDep,
    dump_json,
    json_body,
    json_response,
    read_body,
    validated,
)
from app.settings import Settings
from app.syntax import LOCK_ACTIONS, check_id, check_key, duration_ms, parse_duration

DEFAULT_TTL_SECONDS = 30.0
MAX_WAIT_SECONDS = 60.0
#: Bodies of refresh and release are a few fields; acquire may carry an entry.
SMALL_BODY_BYTES = 16 * 1024

_OWNER = Field(
    min_length=1,
    max_length=256,
    pattern=r"^[^\x00-\x1f\x7f]+$",
    description="Who holds or asks for the lock (1-256 characters, no control characters)",
)


class LockAcquireRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    owner: str = _OWNER
    ttl: Duration | None = Field(None, description="Lease time (default 30s; 0 = no expiry)")
    mode: Literal["exclusive", "queue", "debounce"] = Field(
        "exclusive",
        description="When held by another: exclusive waits then 409, queue appends `entry` "
        "to the pending list, debounce replaces the pending list with `entry`",
    )
    wait: Duration | None = Field(
        None, description="Exclusive mode: wait in line up to this long (at most 60s)"
    )
    entry: Any = Field(None, description="Any JSON; queued or debounced when the lock is held")
    lease: str | None = Field(
        None, description="Hold the lock on this live lease instead of a ttl: it is released "
        "when the lease ends (not with `ttl` or `wait`)",
    )


class LockRefreshRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    owner: str = _OWNER
    token: StrictInt = Field(ge=1, description="The fencing token the lock was acquired with")
    ttl: Duration | None = Field(None, description="New lease from now (default: the lock's ttl)")


class LockReleaseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    owner: str = _OWNER
    token: StrictInt = Field(ge=1, description="The fencing token the lock was acquired with")


class LockHolder(BaseModel):
    name: str
    owner: str
    token: int = Field(description="Fencing token: grows with every acquisition of this name")
    acquired_at: str
    expires_at: str | None
    pending_count: int = Field(description="Entries waiting in the pending list")


class LockRefreshed(LockHolder):
    status: Literal["refreshed"]


class LockAcquired(BaseModel):
    status: Literal["acquired"]
    name: str
    owner: str
    token: int
    acquired_at: str
    expires_at: str | None
    pending: list[Any] = Field(description="Pending entries handed to the new holder")


class LockQueued(BaseModel):
    status: Literal["queued", "debounced"]
    position: int | None = Field(None, description="queued: 1-based place in the pending list")


class LockReleased(BaseModel):
    status: Literal["released", "free"]
    owner: str | None = None
    token: int | None = None
    pending: list[Any] = Field(description="The queued/debounced entries, handed over")


class LockList(BaseModel):
    items: list[LockHolder]
    next_cursor: str | None


_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem, "description": "invalid_key, invalid_ttl or a malformed body"},
    422: {"model": Problem, "description": "validation_failed: a body field is wrong"},
    503: BACKEND_UNAVAILABLE,
}
_CONFLICTS: dict[int | str, dict[str, Any]] = {
    409: {"model": Problem, "description": "not_owner (with `holder`) or lock_not_held"},
}


async def _set_when_disconnected(request: Request, gone: asyncio.Event) -> None:
    """Set ``gone`` when the client disconnects (the body has been read already)."""
    message = await request.receive()
    if message["type"] == "http.disconnect":
        gone.set()


def acquire_request(body: LockAcquireRequest, settings: Settings) -> LockRequest:
    """What the lock engine takes for an acquire body: durations and the entry checked."""
    ttl_s = parse_duration(body.ttl) if body.ttl is not None else DEFAULT_TTL_SECONDS
    wait_s = parse_duration(body.wait, what="wait")
    if body.lease is not None:
        if body.ttl is not None or wait_s > 0:
            raise InvalidRequest(
                "A lock on a lease lives as long as the lease: give `lease` without "
                "`ttl` or `wait`."
            )
        check_id(body.lease, what="lease id")
        ttl_s = 0.0
    if wait_s > MAX_WAIT_SECONDS:
        raise InvalidTTL(f"wait may be at most {MAX_WAIT_SECONDS:.0f}s.")
    limit = settings.max_value_bytes
    entry = dump_json(body.entry, what="entry", location="entry")
    if len(entry) > limit:
        raise PayloadTooLarge(f"The entry is {len(entry)} bytes; the limit is {limit}.")
    return LockRequest(
        owner=body.owner, ttl_ms=duration_ms(ttl_s), mode=body.mode, entry=entry,
        wait_s=wait_s, max_pending=settings.lock_max_pending, lease=body.lease,
    )


def refresh_ttl_ms(body: LockRefreshRequest) -> int | None:
    return duration_ms(parse_duration(body.ttl)) if body.ttl is not None else None


def namespace_scope() -> str:
    """Namespace locks have the empty scope."""
    return ""


def lock_name(name: str) -> str:
    return check_key(name, what="lock name", actions=LOCK_ACTIONS)


def lock_router(
    prefix: str,
    scope_of: Callable[..., str] = namespace_scope,
    *,
    kind: str = "lock",
    tags: list[str] | None = None,
    session: bool = False,
) -> APIRouter:
    """The lock API mounted at ``prefix``; ``scope_of`` is a dependency giving the scope.

    ``kind`` names the operations (``acquire_<kind>``, ...) so that several mounts keep
    unique operation ids. ``session``: the scope is a session id, and the lock calls
    that change something create or touch that session (``LockEngine``'s ``session``).
    """
    router_tags: list[str | Enum] = [*(tags or ["locks"])]
    router = APIRouter(prefix=prefix, tags=router_tags)
    Scope = Annotated[str, Depends(scope_of)]

    @router.get(
        "",
        name=f"list_{kind}s",
        response_model=LockList,
        responses={**_ERRORS},
        summary="List held locks by name pattern, in name order, with stable paging",
        description="At most `limit` locks a page; a page may hold fewer (even none) "
        "with a `next_cursor` when the scan stopped early, after examining its budget of "
        "names: follow `next_cursor` until it is null.",
    )
    async def list_locks(
        scope: Scope, ns: NamespaceDep, backend: LocksDep, page: PageDep
    ) -> Response:
        items, last = await backend.lock_list(
            ns, scope, page.pattern, limit=page.limit, after=page.after
        )
        return page.response([i.as_dict() for i in items], last)

    @router.post(
        "/{name:path}/refresh",
        name=f"refresh_{kind}",
        response_model=LockRefreshed,
        responses={**_CONFLICTS, **_ERRORS},
        summary="Extend a held lock's lease",
        openapi_extra={"requestBody": json_body(LockRefreshRequest)},
    )
    async def refresh_lock(
        name: str, request: Request, scope: Scope, ns: NamespaceDep, backend: LocksDep
    ) -> Response:
        name = lock_name(name)
        body = validated(LockRefreshRequest, await read_body(request, SMALL_BODY_BYTES))
        info = await backend.lock_refresh(
            ns, scope, name, body.owner, body.token, refresh_ttl_ms(body), session=session
        )
        return json_response(orjson.dumps({"status": "refreshed", **info.as_dict()}))

    @router.post(
        "/{name:path}/release",
        name=f"release_{kind}",
        response_model=LockReleased,
        responses={**_CONFLICTS, **_ERRORS},
        summary="Release a lock and take its pending entries",
        openapi_extra={"requestBody": json_body(LockReleaseRequest)},
    )
    async def release_lock(
        name: str, request: Request, scope: Scope, ns: NamespaceDep, backend: LocksDep
    ) -> Response:
        name = lock_name(name)
        body = validated(LockReleaseRequest, await read_body(request, SMALL_BODY_BYTES))
        released = await backend.lock_release(
            ns, scope, name, body.owner, body.token, session=session
        )
        return json_response(released.to_json())

    @router.post(
        "/{name:path}/force-release",
        name=f"force_release_{kind}",
        response_model=LockReleased,
        responses={**_ERRORS},
        summary="Release whatever holds a lock (admin) and take its pending entries",
        description="On a free lock the status is `free` and only the pending entries "
        "are taken. Needs the `admin` permission once access control is configured.",
    )
    async def force_release_lock(
        name: str, scope: Scope, ns: NamespaceDep, backend: LocksDep
    ) -> Response:
        released = await backend.lock_force_release(ns, scope, lock_name(name),
                                                    session=session)
        return json_response(released.to_json())

    @router.post(
        "/{name:path}",
        name=f"acquire_{kind}",
        response_model=LockAcquired,
        responses={
            202: {"model": LockQueued, "description": "Held by another: entry queued/debounced"},
            409: {"model": Problem, "description": "lock_held (with `holder`) after `wait`"},
            404: {"model": Problem, "description": "lease_not_found: the lease is not live"},
            413: {"model": Problem, "description": "entry over CORKBOARD_MAX_VALUE_BYTES"},
            507: {"model": Problem, "description": "quota_exceeded: a new holder past "
                  "CORKBOARD_NAMESPACE_MAX_LOCKS (or, for a session lock, a session that "
                  "would pass CORKBOARD_NAMESPACE_MAX_BYTES); nothing changed"},
            **_ERRORS,
        },
        summary="Acquire a lock, or queue/debounce an entry for its holder",
        openapi_extra={"requestBody": json_body(LockAcquireRequest)},
    )
    async def acquire_lock(
        name: str,
        request: Request,
        scope: Scope,
        ns: NamespaceDep,
        backend: LocksDep,
        settings: SettingsDep,
    ) -> Response:
        name = lock_name(name)
        limit = settings.max_value_bytes
        body = validated(LockAcquireRequest, await read_body(request, limit + SMALL_BODY_BYTES))
        lock_request = acquire_request(body, settings)
        if body.mode == "exclusive" and lock_request.wait_s > 0:
            # Servers do not cancel a handler whose client left: watch for it, so a waiter
            # that is gone leaves the line instead of claiming the lock and its entries.
            gone = asyncio.Event()
            watcher = asyncio.create_task(_set_when_disconnected(request, gone))
            waits = request.scope["state"]["metrics"].lock_waits
            started = time.monotonic()
            try:
                outcome = await backend.lock_acquire(
                    ns, scope, name, lock_request, gone, session=session
                )
            except Conflict:
                waits.labels("gone" if gone.is_set() else "timeout").observe(
                    time.monotonic() - started
                )
                raise
            finally:
                watcher.cancel()
            waits.labels("acquired").observe(time.monotonic() - started)
        else:
            outcome = await backend.lock_acquire(ns, scope, name, lock_request,
                                                 session=session)
        return json_response(outcome.to_json(), 200 if outcome.status == "acquired" else 202)

    @router.get(
        "/{name:path}",
        name=f"get_{kind}",
        response_model=LockHolder,
        responses={404: {"model": Problem, "description": "Free (`pending_count` says how "
                                                          "many entries wait)"}, **_ERRORS},
        summary="A lock's holder; 404 when free",
    )
    async def get_lock(name: str, scope: Scope, ns: NamespaceDep, backend: LocksDep) -> Response:
        name = lock_name(name)
        holder, pending = await backend.lock_get(ns, scope, name)
        if holder is None:
            raise NotFound(f"Lock {name!r} is free.", pending_count=pending)
        return json_response(orjson.dumps(holder.as_dict()))

    return router


router = lock_router("/v1/locks")
