"""The ASGI app at ``/mcp`` and the MCP runtime the app's lifespan owns.

The SDK takes seconds of CPU to import, so the MCP server is built and its session
manager started on the first /mcp request (the import in a thread), not at start-up:
a replica that serves only /v1 starts as fast as before. The lifespan stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
from typing import TYPE_CHECKING

from sse_starlette import EventSourceResponse
from starlette.types import Receive, Scope, Send

from app.auth import Grant
from app.errors import CorkboardError, error_response
from app.mcp.access import GRANT_SCOPE_KEY, authenticated
from app.mcp.tools import Parts

if TYPE_CHECKING:
    from app.mcp.server import McpService


class McpRuntime:
    """The MCP service of one app: started on first use, stopped with the app."""

    def __init__(self, parts: Parts, grants: list[Grant]) -> None:
        self.parts = parts
        self.grants = grants
        self._service: McpService | None = None
        self._starting = asyncio.Lock()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def service(self) -> McpService:
        if self._service is not None:
            return self._service
        async with self._starting:
            if self._service is None:
                module = await asyncio.to_thread(importlib.import_module, "app.mcp.server")
                service: McpService = module.McpService(self.parts, self.grants)
                ready = asyncio.Event()
                self._task = asyncio.create_task(self._run(service, ready), name="corkboard-mcp")
                await ready.wait()
                self._service = service
        return self._service

    async def _run(self, service: McpService, ready: asyncio.Event) -> None:
        async with service.running():
            ready.set()
            exiting = asyncio.create_task(self._end_streams_on_exit())
            try:
                await self._stop.wait()
            finally:
                exiting.cancel()

    async def _end_streams_on_exit(self) -> None:
        """When the server begins to shut down, end the MCP subscription streams as
        /v1/watch streams end: through the hub's shutdown event, on sse-starlette's exit
        signal (which sets that event for watch streams; MCP's streams do not carry it).
        Otherwise an open subscription holds the shutdown for its whole grace period."""
        await EventSourceResponse._listen_for_exit_signal()
        self.parts.hub.shutdown_event.set()

    async def close(self) -> None:
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class McpEndpoint:
    """The ASGI app at /mcp: the bearer token checked as for /v1, then the SDK."""

    def __init__(self, grants: list[Grant]) -> None:
        self.grants = grants

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["corkboard.route"] = "/mcp"  # the access log's and metrics' route label
        if self.grants:
            grant = authenticated(self.grants, scope)
            if isinstance(grant, CorkboardError):
                await error_response(grant)(scope, receive, send)
                return
            scope[GRANT_SCOPE_KEY] = grant
        runtime: McpRuntime = scope["state"]["mcp"]
        service = await runtime.service()
        await service.handle(scope, receive, send)
