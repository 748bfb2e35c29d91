"""The application factory: ``create_app(settings)`` builds the app on any backend, and the
lifespan starts the backend, its deadline sweeper, the watch hub and the MCP session
manager, yields them as state, and closes them (the hub first, so every stream ends with
a resume point).
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.routing import APIRoute
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from app import __version__
from app.access import Access, Gate, load_grants
from app.artifacts.collector import running_store
from app.backends import backend_from_url
from app.errors import BackendUnavailable, install_error_handlers
from app.events import Hub
from app.hotpath import HotPath, KeyFront
from app.limits import BodyLimit
from app.mcp import McpEndpoint, McpRuntime, Parts
from app.methods import HeadAsGet
from app.observability import (
    SERVER_SEND,
    AccessLog,
    RequestIds,
    RequestObserver,
    configure_logging,
)
from app.openapi import build_openapi
from app.request_metrics import Metrics
from app.routers import artifacts, events, kv, leases, locks, service, sessions, txn
from app.settings import Settings
from app.ui import install_ui

logger = logging.getLogger("corkboard")

DESCRIPTION = """Shared coordination state for multi-agent systems: keys, typed session
variables, locks, session snapshots and artifacts over HTTP, with every change streamed to
watchers. Every error is `application/problem+json` with a stable `code`."""


def operation_id(route: APIRoute) -> str:
    return route.name


def body_limits(settings: Settings) -> Callable[[str], int | None]:
    """The request body limit of a path: artifacts stream under their own limit, session
    snapshots and batch writes may be larger than other bodies."""

    def limit_for(path: str) -> int | None:
        if path.startswith("/v1/artifacts"):
            return None
        if path.startswith("/v1/sessions/") and path.endswith(("/snapshot", "/values")):
            return max(settings.max_snapshot_bytes, settings.max_request_bytes)
        return settings.max_request_bytes

    return limit_for


class Corkboard(FastAPI):
    """The service's app: FastAPI, with ``front`` (app.hotpath.KeyFront) serving the hot
    calls ahead of the whole middleware stack; None hands every call to the stack (the
    tests compare the two)."""

    front: KeyFront | None = None
    #: The app's request metrics and access log (None: off), as every layer uses them.
    metrics: Metrics
    access_log: AccessLog | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        front = self.front
        if front is not None and not self.root_path and front.takes(scope):
            scope["app"] = self
            await front(scope, receive, send)
            return
        scope[SERVER_SEND] = send
        await super().__call__(scope, receive, send)


def create_app(settings: Settings | None = None) -> Corkboard:
    """Build the service for ``settings`` (default: read from ``CORKBOARD_*`` variables)."""
    settings = settings or Settings()
    configure_logging(settings.log_level, settings.log_format)
    grants = load_grants(settings)  # TokenConfigError: refuse to build a misconfigured app
    metrics = Metrics()
    # Access lines are logged at info: a higher level turns them off.
    access_log = (
        AccessLog(fmt=settings.log_format)
        if logging.getLevelName(settings.log_level.upper()) <= logging.INFO
        else None
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        if settings.gc_threshold:
            # Each open stream holds ~350 tracked objects (tasks, scopes, frames). With
            # Python's young threshold of 700 they are promoted so fast that full
            # collections recur, pausing every stream ~100 ms at 1,000 watchers; 10,000
            # takes the fan-out p99 from ~100 ms to ~30 ms (bench/README-fanout.md).
            gc.set_threshold(settings.gc_threshold, 10, 10)
        backend = backend_from_url(settings.backend, settings)
        try:
            await backend.start()
        except BackendUnavailable as exc:
            logger.error("corkboard cannot start: %s", exc.detail)
            await backend.close()
            raise
        sweeper = asyncio.create_task(
            backend.run_sweeper(settings.sweep_interval_seconds), name="corkboard-sweeper"
        )
        flusher = (
            asyncio.create_task(access_log.run(), name="corkboard-access-log")
            if access_log is not None
            else None
        )
        hub = Hub(
            backend,
            queue_size=settings.watch_queue_size,
            progress_seconds=settings.watch_progress_seconds,
            retry_ms=settings.watch_retry_ms,
            snapshot_page=settings.max_list_limit,
            metrics=metrics,
            max_watchers=settings.max_watchers,
        )
        await hub.start()
        # Built before serving, not by the first GET /openapi.json, which held the loop
        # ~0.5 s (not in a thread: pydantic's schema generation is not thread-safe).
        app.openapi()
        try:
            async with running_store(settings, backend) as store:
                mcp = McpRuntime(Parts(backend, hub, store, settings))
                try:
                    yield {
                        "backend": backend, "settings": settings, "metrics": metrics,
                        "artifacts": store, "hub": hub, "mcp": mcp,
                    }
                finally:
                    await mcp.close()
        finally:
            await hub.close()
            for task in (sweeper, flusher):
                if task is not None:
                    task.cancel()
                    with suppress(asyncio.CancelledError):
                        await task
            await backend.close()

    app = Corkboard(
        title="Corkboard",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        generate_unique_id_function=operation_id,
        # FastAPI's OpenTelemetry hooks check for providers on every request; Corkboard's
        # observability is Prometheus at /metrics, so they stay off.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        # /docs and /redoc are served by app.ui from packaged assets (no CDN).
        docs_url=None,
        redoc_url=None,
    )
    app.metrics = metrics
    app.access_log = access_log
    install_error_handlers(app)
    app.openapi = lambda: build_openapi(  # type: ignore[method-assign]
        app, max_list_limit=settings.max_list_limit
    )
    # Pure-ASGI layers only (no BaseHTTPMiddleware: it buffers streams and halves
    # throughput). The last added runs first: CORS, observer, HEAD as GET, access
    # control, body limit, then the hot path in front of FastAPI's router. HEAD becomes
    # its path's GET before access control, so every check applies to it as to the GET.
    app.add_middleware(HotPath, routes=kv.hot_routes)
    app.add_middleware(BodyLimit, limit_for=body_limits(settings))
    # Always installed: it also resolves the namespace of every call, tokens or not.
    app.add_middleware(Access, grants=grants)
    if not grants:
        logger.warning("no access tokens configured: every /v1 call is open to anyone")
    app.add_middleware(HeadAsGet, routes=app.router.routes)
    ids = RequestIds()
    app.add_middleware(RequestObserver, metrics=metrics, access_log=access_log, ids=ids)
    origins = [o.strip() for o in settings.cors_origins.split(",") if o.strip()]
    # GET/HEAD/PUT of a key skip all of the above: the front does what each layer does
    # for them, in one call (app.hotpath). Not with CORS: its layer changes every
    # response (Vary: Origin, even without an Origin), so those calls take the stack.
    if not origins:
        app.front = KeyFront(
            gate=Gate(grants), settings=settings, metrics=metrics, access_log=access_log,
            ids=ids,
        )
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "If-Match", "If-None-Match",
                           "Last-Event-ID", "Range", "If-Range", "X-Request-ID", "Fence-Lock",
                           "Fence-Token", "Fence-Session"],
            expose_headers=["ETag", "Location", "Retry-After", "X-Request-ID",
                            "Content-Range", "Accept-Ranges"],
            max_age=600,
        )
    app.include_router(service.router)
    app.include_router(events.router)
    app.include_router(txn.router)
    app.include_router(leases.router)
    app.include_router(kv.list_router)
    app.include_router(kv.router)
    app.include_router(locks.router)
    app.include_router(artifacts.router)
    app.include_router(sessions.router)
    install_ui(app)
    # MCP (API.md section 12): the SDK's streamable HTTP transport; the access layer
    # authenticates its callers as /v1's.
    app.router.routes.append(Route("/mcp", McpEndpoint(), methods=["GET", "POST", "DELETE"]))
    return app


app = create_app()
