"""The service's app with an event-loop watchdog, for tests that must show the loop
never stalls: every callback that holds the loop longer than 100 ms is reported on
stderr as "Executing <callback> took N seconds".

"Holds" is wall time minus the time the loop's thread spent waiting for a CPU (Linux's
/proc/thread-self/schedstat), so a callback preempted on a busy 2-core machine is not
taken for one that computes or blocks: what remains is time the service itself kept the
loop (CPU work, blocking calls, garbage collection). The callbacks are wrapped at
asyncio's Handle, so the service runs on asyncio's loop (``uvicorn --loop asyncio``);
uvloop's handles cannot be wrapped. Debug mode is not used: its per-callback tracebacks
slow every request several-fold.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Any

from starlette.types import Message, Receive, Scope, Send

from app.main import app as service

SLOW_CALLBACK_SECONDS = 0.1
_NS = 1e-9


def describe(handle: asyncio.Handle) -> str:
    """The handle, and for a task's step the coroutine it ran (where it stalled)."""
    task = getattr(getattr(handle, "_callback", None), "__self__", None)
    if isinstance(task, asyncio.Task):
        coro = task.get_coro()
        return f"{handle!r} of {getattr(coro, '__qualname__', coro)!r}"
    return repr(handle)


def install() -> None:
    """Wrap every callback of asyncio's loops run by this thread from now on."""
    fd = os.open("/proc/thread-self/schedstat", os.O_RDONLY)  # this thread's counters
    me = asyncio.events.Handle
    if getattr(me._run, "watchdog", False):
        return
    run = me._run

    def queued_ns() -> int:
        return int(os.pread(fd, 128, 0).split()[1])  # time runnable, waiting for a CPU

    def watched(self: asyncio.Handle) -> Any:
        began, waited, cpu = time.perf_counter(), queued_ns(), time.thread_time()
        try:
            return run(self)  # type: ignore[attr-defined]
        finally:
            wall = time.perf_counter() - began
            if wall > SLOW_CALLBACK_SECONDS:
                held = wall - (queued_ns() - waited) * _NS
                if held > SLOW_CALLBACK_SECONDS:
                    sys.stderr.write(
                        f"Executing {describe(self)} took {held:.3f} seconds (wall "
                        f"{wall:.3f}, cpu {time.thread_time() - cpu:.3f})\n"
                    )
                    sys.stderr.flush()

    watched.watchdog = True  # type: ignore[attr-defined]
    me._run = watched  # type: ignore[method-assign]


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "lifespan":
        await service(scope, receive, send)
        return

    async def watched_send(message: Message) -> None:
        # On once started: startup (imports, connecting) is not serving.
        if message["type"] == "lifespan.startup.complete":
            if not isinstance(asyncio.get_running_loop(), asyncio.BaseEventLoop):
                raise RuntimeError("the watchdog needs asyncio's loop: uvicorn --loop asyncio")
            install()
        await send(message)

    await service(scope, receive, watched_send)
