"""The application factory: ``create_app(settings)`` builds the app on any backend, and the
lifespan starts the backend and its deadline sweeper, yields them as state, and closes them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute

from app import __version__
from app.backends import backend_from_url
from app.errors import BackendUnavailable, install_error_handlers
from app.events import Hub
from app.openapi import build_openapi
from app.routers import events, kv, service
from app.settings import Settings

logger = logging.getLogger("corkboard")

DESCRIPTION = """Shared coordination state for multi-agent systems: keys, typed session
variables, locks, session snapshots and artifacts over HTTP, with every change streamed to
watchers. Every error is `application/problem+json` with a stable `code`."""


def operation_id(route: APIRoute) -> str:
    return route.name


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the service for ``settings`` (default: read from ``CORKBOARD_*`` variables)."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
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
        hub = Hub(
            backend,
            queue_size=settings.watch_queue_size,
            progress_seconds=settings.watch_progress_seconds,
            retry_ms=settings.watch_retry_ms,
            snapshot_page=settings.max_list_limit,
        )
        await hub.start()
        try:
            yield {"backend": backend, "settings": settings, "hub": hub}
        finally:
            await hub.close()
            sweeper.cancel()
            with suppress(asyncio.CancelledError):
                await sweeper
            await backend.close()

    app = FastAPI(
        title="Corkboard",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        generate_unique_id_function=operation_id,
    )
    install_error_handlers(app)
    app.openapi = lambda: build_openapi(app)  # type: ignore[method-assign]
    app.include_router(service.router)
    app.include_router(events.router)
    app.include_router(kv.list_router)
    app.include_router(kv.router)
    return app


app = create_app()
