"""What differs between the async client and the sync one besides ``await``: sleeping,
a periodic background job (asyncio task or thread) and upload bodies. The sync client is
generated from the async one with these names swapped (``scripts/unasync.py``).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Iterator
from typing import IO, Any

UPLOAD_CHUNK = 256 * 1024

sleep = time.sleep


async def async_sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


class AsyncTicker:
    """Runs ``job`` every ``interval`` seconds in an asyncio task until stopped."""

    def __init__(self, interval: float, job: Callable[[], Awaitable[bool]]) -> None:
        self.interval = interval
        self.job = job
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._stop.wait(), self.interval)
                return
            except TimeoutError:
                pass
            if not await self.job():
                return

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task


class Ticker:
    """Runs ``job`` every ``interval`` seconds in a daemon thread until stopped."""

    def __init__(self, interval: float, job: Callable[[], bool]) -> None:
        self.interval = interval
        self.job = job
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="corkboard-keepalive", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            if not self.job():
                return

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()


async def _file_chunks(file: IO[bytes]) -> AsyncIterator[bytes]:
    while chunk := await asyncio.to_thread(file.read, UPLOAD_CHUNK):
        yield chunk


def async_upload_body(data: bytes | IO[bytes] | AsyncIterable[bytes]) -> Any:
    """An httpx request body for the async client: bytes as they are, a file read in
    chunks off the event loop, an async iterable streamed."""
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data)
    if hasattr(data, "read"):
        return _file_chunks(data)  # type: ignore[arg-type]
    return data


def _file_chunks_sync(file: IO[bytes]) -> Iterator[bytes]:
    while chunk := file.read(UPLOAD_CHUNK):
        yield chunk


def upload_body(data: bytes | IO[bytes] | Iterable[bytes]) -> Any:
    """An httpx request body for the sync client: bytes, a file read in chunks, or an
    iterable of bytes, streamed."""
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data)
    if hasattr(data, "read"):
        return _file_chunks_sync(data)  # type: ignore[arg-type]
    return data
