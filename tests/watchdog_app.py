"""The service's app with asyncio's slow-callback detector on, for tests that must show
the event loop never stalls: every callback (uvloop or asyncio) holding the loop longer
than 100 ms is logged as "Executing ... took N seconds". uvicorn starts its loop with
debug mode off whatever PYTHONASYNCIODEBUG says, so the app turns it on at startup.
"""

from __future__ import annotations

import asyncio

from starlette.types import Message, Receive, Scope, Send

from app.main import app as service

SLOW_CALLBACK_SECONDS = 0.1


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "lifespan":
        await service(scope, receive, send)
        return

    async def watched_send(message: Message) -> None:
        # On once started: startup (imports, connecting) is not serving.
        if message["type"] == "lifespan.startup.complete":
            loop = asyncio.get_running_loop()
            loop.set_debug(True)
            loop.slow_callback_duration = SLOW_CALLBACK_SECONDS
        await send(message)

    await service(scope, receive, watched_send)
