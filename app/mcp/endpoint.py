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

from app.mcp.tools import Parts

if TYPE_CHECKING:
    from app.mcp.server import McpService


class McpRuntime:
    """The MCP service of one app: started on first use, stopped with the app."""

    def __init__(self, parts: Parts) -> None:
        self.parts = parts
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
                service: McpService = module.McpService(self.parts)
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
    """The ASGI app at /mcp (a class: Starlette would wrap a function as a request
    handler). The access layer (app.access) has authenticated the caller and left its
    grant in the scope, as for /v1; app.mcp.server checks each call's namespaces."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["corkboard.route"] = "/mcp"  # the access log's and metrics' route label
        runtime: McpRuntime = scope["state"]["mcp"]
        service = await runtime.service()
        await service.handle(scope, receive, send)
