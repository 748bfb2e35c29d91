"""Helpers of the lock tests: calls, event waits, and an app with session-scoped locks."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
from fastapi import FastAPI

from app.main import create_app
from app.routers.locks import lock_router
from app.settings import Settings
from app.syntax import check_id
from tests.support import LifespanApp


async def acquire(
    c: httpx.AsyncClient, name: str, owner: str = "alice", *, ns: str = "default", **body: Any
) -> httpx.Response:
    return await c.post(f"/v1/locks/{name}", params={"ns": ns}, json={"owner": owner, **body})


async def release(
    c: httpx.AsyncClient, name: str, owner: str, token: int, *, ns: str = "default"
) -> httpx.Response:
    return await c.post(
        f"/v1/locks/{name}/release", params={"ns": ns}, json={"owner": owner, "token": token}
    )


async def refresh(
    c: httpx.AsyncClient, name: str, owner: str, token: int, *, ns: str = "default",
    **body: Any,
) -> httpx.Response:
    return await c.post(
        f"/v1/locks/{name}/refresh", params={"ns": ns},
        json={"owner": owner, "token": token, **body},
    )


async def revision(c: httpx.AsyncClient, ns: str = "default") -> int:
    """The namespace's current revision."""
    rev: int = (await c.get("/v1/kv", params={"ns": ns, "limit": 1})).json()["revision"]
    return rev


async def events(
    c: httpx.AsyncClient, since: int, *, ns: str = "default", types: str = "lock"
) -> list[dict[str, Any]]:
    """Every event after ``since`` of ``types``, read now (no waiting)."""
    r = await c.get("/v1/events", params={"ns": ns, "since": since, "types": types,
                                          "limit": 10_000})
    out: list[dict[str, Any]] = r.json()["events"]
    return out


async def wait_event(
    c: httpx.AsyncClient,
    since: int,
    type_: str,
    *,
    ns: str = "default",
    timeout: float = 10.0,
    **match: Any,
) -> dict[str, Any]:
    """The first event of ``type_`` after ``since`` whose fields include ``match``;
    long-polls the feed (no sleeping)."""
    deadline = time.monotonic() + timeout
    after = since
    while time.monotonic() < deadline:
        r = await c.get(
            "/v1/events",
            params={"ns": ns, "since": after, "types": type_, "wait": "2s"},
            timeout=timeout,
        )
        body = r.json()
        for event in body["events"]:
            if all(event.get(k) == v for k, v in match.items()):
                return event
        after = body["revision"]
    raise AssertionError(f"no {type_} event with {match} after revision {since}")


def session_scope(sid: str) -> str:
    """The scope of /v1/sessions/{sid}/locks, as the sessions router will mount it."""
    return check_id(sid, what="session id")


def app_with_session_locks(settings: Settings) -> FastAPI:
    """The app with session-scoped locks: the sessions router mounts them where it is
    merged; without it, mount the lock router the way it will."""
    app = create_app(settings)
    if "/v1/sessions/{sid}/locks" in app.openapi()["paths"]:
        return app
    app.include_router(
        lock_router("/v1/sessions/{sid}/locks", session_scope, kind="session_lock",
                    tags=["sessions"])
    )
    app.openapi_schema = None
    return app


@contextlib.asynccontextmanager
async def client_of(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    running = LifespanApp(app)
    await running.start()
    try:
        transport = httpx.ASGITransport(app=running)
        async with httpx.AsyncClient(transport=transport, base_url="http://corkboard") as c:
            yield c
    finally:
        await running.stop()
