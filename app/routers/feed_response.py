"""The watch stream's response: sse-starlette's ``EventSourceResponse`` keeps the
stream's life (heartbeats, the client's disconnect, the server's shutdown, the cleanup
task), and ``FeedResponse`` sends the subscription's frames with a loop of its own.

With a thousand watchers every event costs a thousand sends, so a send is kept short:

* while the stream is parked, the feed writes its frames itself, in its passes over
  the parked streams, with no turn of the stream's task (``Subscription.write_to``,
  through the observer's ``StreamBody.now``); the task sends only what cannot be
  written at once;
* the chunks go through the request observer's body sender (``STREAM_BODY``), past the
  send wrappers of the layers inside it, which only look at a response's start and end;
* the loop awaits the subscription itself, not an async generator, and sends bytes the
  frames already hold (no re-encoding, no per-chunk debug logging);
* only the heartbeat is sent under ``send_timeout``: the library wraps each send in
  ``anyio.move_on_after``, a tenth of the cost of delivering an event. A client that
  stops reading blocks the heartbeat as well, so its stream still ends within
  ``heartbeat + send_timeout``; meanwhile the hub's bounded queue has let go of it.

The start, the heartbeats and the closing send take the whole stack.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from typing import Any

from sse_starlette import EventSourceResponse, ServerSentEvent
from sse_starlette.sse import SendTimeoutError
from starlette.background import BackgroundTask
from starlette.types import Message, Receive, Scope, Send

from app.events import MAX_BATCH, Frame, Subscription, synced_frame
from app.methods import HEAD_AS_GET
from app.observability import STREAM_BODY, StreamBody
from app.presence import LeaseKeeper

logger = logging.getLogger("corkboard.watch")

PING = ServerSentEvent(comment="ping", sep="\n")
_PING_BYTES = PING.encode()


def join_frames(frames: list[Frame]) -> bytes:
    return frames[0].sse if len(frames) == 1 else b"".join(f.sse for f in frames)


async def _no_body() -> AsyncIterator[bytes]:
    """The library's body iterator, never read: ``_stream_response`` is ours."""
    return
    yield b""  # pragma: no cover


class FeedResponse(EventSourceResponse):
    """One watch stream: ``opening``, the snapshot's frames if any, then ``sub``'s."""

    def __init__(
        self,
        sub: Subscription,
        opening: bytes,
        snapshot: list[Frame] | None,
        keeper: LeaseKeeper | None,
        **options: Any,
    ) -> None:
        super().__init__(_no_body(), background=BackgroundTask(self.finish), **options)
        self.sub = sub
        self.opening = opening
        self.snapshot = snapshot
        self.keeper = keeper
        self._stream_body: Callable[[bytes], Awaitable[None]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get(HEAD_AS_GET):
            # HEAD served by this GET route: sse-starlette answers headers only.
            scope = {**scope, "method": "HEAD"}
        self._stream_body = scope.get(STREAM_BODY)
        try:
            await super().__call__(scope, receive, send)
        except SendTimeoutError:
            # Not a server error: the client stopped reading. Its stream is over.
            logger.info("closed a watch stream whose client stopped reading")

    async def _send_with_timeout(self, send: Send, message: Message) -> None:
        if message.get("body") == _PING_BYTES:
            await super()._send_with_timeout(send, message)
        else:
            await send(message)

    async def _stream_response(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code,
                    "headers": self.raw_headers})
        self._response_started = True
        body = self._stream_body
        if isinstance(body, StreamBody):
            self.sub.write_to(body.now)
        if body is None:  # an app without the observer (not ours): the plain send

            async def body(chunk: bytes) -> None:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})

        chunks: Iterable[bytes] = self._opening_chunks()
        next_frames = self.sub.next
        try:
            while True:  # (one coroutine, not a generator: each send resumes fewer frames)
                try:
                    for chunk in chunks:
                        await body(chunk)
                except BaseException:
                    # As the library: a send that never returned leaves the transport in
                    # an unknown state, so no closing send is attempted after it.
                    self._send_interrupted = True
                    raise
                frames = await next_frames()
                if frames is None:
                    break
                chunks = [join_frames(frames)] if frames else []
        finally:
            self.close()
        async with self._send_lock:
            # As the library: `active` flips only after the closing send returns.
            try:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            except BaseException:
                self._send_interrupted = True
                raise
            self._response_complete = True
            self.active = False

    def _opening_chunks(self) -> Iterator[bytes]:
        """The opening, then the snapshot's frames (joined a batch at a time, as they
        are sent) and ``synced``."""
        yield self.opening
        snapshot, self.snapshot = self.snapshot, None
        if snapshot is not None:
            for i in range(0, len(snapshot), MAX_BATCH):
                yield join_frames(snapshot[i : i + MAX_BATCH])
            yield synced_frame(self.sub.ns, self.sub.last).sse

    def close(self) -> None:
        """End the subscription and the lease keeper (more than once is harmless)."""
        self.sub.close()
        if self.keeper is not None:
            self.keeper.stop()

    async def finish(self) -> None:
        """The response's cleanup task, also when the stream never started (a HEAD, an
        early disconnect). A coroutine, so that it runs on the event loop (a plain
        function would go to a thread)."""
        self.close()
