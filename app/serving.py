"""The HTTP protocol ``corkboard serve`` runs: uvicorn's httptools protocol, with a
response's head and body leaving in one system call instead of two.

uvicorn writes a response's status line and headers when the app sends
``http.response.start`` and its body on ``http.response.body``: two ``send`` calls on
the socket, two TCP segments, and on loopback the receiver's TCP work done twice inside
the sender's system calls. That second call costs about 3.7 us of CPU per response on this
project's 2-core machine (bench/README.md, "One system call per response").

``HeadWithBody`` (the request cycle ``JoinedHttpToolsProtocol`` gives each request)
holds a response's start message when the response declares a non-empty
``Content-Length`` body (and is not a HEAD, 204 or 304 answer), and writes it with the
first body message, both in one ``writelines`` (uvloop sends a list in one ``writev``,
without copying it). When that body message is the whole body, the pair is written by
``HeadWithBody.send_whole``: uvicorn's own steps for the two messages in one call, its
two header checks (a pattern search per header name and per value, a dozen searches per
response) made once on all names and once on all values, as a translation to the bytes the
patterns find (the patterns are character classes, so that is the same test); any case out
of its way (a header that changes framing or the connection, a length that does not
match, a header that fails a check, paused writing, uvicorn's access log) goes through
uvicorn's own ``send``, which writes or fails exactly as before.

Nothing else changes: a streamed response without a length (the SSE feeds) is written
as uvicorn writes it, each message at once; the head of a held response waits only
until the app sends its first body message, which the app's responses do at once.
uvicorn's own checks run on both messages as before. An app that fails between the two
messages had not written its head yet, so its client gets uvicorn's 500 answer instead
of a cut-off response (and a body that does not match its length closes the connection
with nothing written, where uvicorn would have written the head first).
"""

from __future__ import annotations

import asyncio
import urllib.parse
from collections.abc import Callable
from typing import Any

import httptools
from uvicorn.protocols.http.flow_control import service_unavailable
from uvicorn.protocols.http.httptools_impl import (
    HEADER_RE,
    HEADER_VALUE_RE,
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)


def _finds(pattern: Any) -> bytes:
    """A ``bytes.translate`` table of one of uvicorn's header patterns (a character
    class): each byte the pattern finds maps to 0, every other byte to 1."""
    return bytes(0 if pattern.search(bytes([c])) else 1 for c in range(256))


#: Header bytes translated by these tables hold a 0 exactly where uvicorn's name and
#: value patterns find a byte (a translation by a given table and a byte search: two C
#: loops with nothing to set up, several times cheaper than a pattern search).
_NAME_TABLE, _VALUE_TABLE = _finds(HEADER_RE), _finds(HEADER_VALUE_RE)


class _Parts:
    """The transport as the cycle sees it while it writes a held head and its body: the
    writes are kept and leave together in one ``writelines`` (``flush``); a close sends
    them first, as the transport's own close would."""

    __slots__ = ("parts", "transport")

    def __init__(self, transport: Any) -> None:
        self.transport = transport
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.parts.append(data)

    def flush(self) -> None:
        if self.parts:
            self.transport.writelines(self.parts)
            self.parts = []

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def is_closing(self) -> bool:
        return bool(self.transport.is_closing())


def _holds(message: Any, method: str) -> bool:
    """Whether a start message's head may wait for its body: a declared non-empty
    Content-Length on an answer that has a body."""
    if method == "HEAD" or message["status"] in (204, 304):
        return False
    for name, value in message.get("headers", ()):
        if len(name) == 14 and name.lower() == b"content-length":
            return bool(value != b"0")
    return False


class HeadWithBody(RequestResponseCycle):
    """uvicorn's request cycle, writing a held head with its first body message."""

    held: Any = None

    async def send(self, message: Any) -> None:
        held = self.held
        if held is None:
            if (
                message["type"] == "http.response.start"
                and not self.response_started
                and _holds(message, self.scope["method"])
            ):
                self.held = message
                return
            await super().send(message)
            return
        self.held = None
        if message["type"] != "http.response.body":
            # The app never wrote the held head: uvicorn answers this message alone
            # (a 500 after a failure, or its error for an out-of-order message).
            await super().send(message)
            return
        if self.send_whole(held, message):
            return
        transport = self.transport
        parts = _Parts(transport)
        self.transport = parts  # type: ignore[assignment]
        try:
            await super().send(held)
            await super().send(message)
            parts.flush()
        finally:
            self.transport = transport

    def send_whole(self, start: Any, message: Any) -> bool:
        """uvicorn's ``send`` of ``start`` and then of ``message``, the response's whole
        body, written in one ``writelines``; False, having changed nothing, for any case
        uvicorn's own steps must take (see the module docstring)."""
        if (
            message.get("more_body", False) or self.flow.write_paused or self.disconnected
            or self.access_log or self.response_started
        ):
            return False
        headers = self.default_headers + list(start.get("headers", ()))
        try:
            if 0 in b"".join([name for name, _ in headers]).translate(_NAME_TABLE) or (
                0 in b"".join([value for _, value in headers]).translate(_VALUE_TABLE)
            ):
                return False  # uvicorn's send raises its error for the first bad header
        except (TypeError, ValueError):
            return False  # not pairs of bytes: uvicorn's send fails as it does
        status_line = STATUS_LINE.get(start["status"])
        if status_line is None:
            return False
        body = message.get("body", b"")
        content = [status_line]
        length = None
        for name, value in headers:
            name = name.lower()
            if name == b"content-length":
                if length is None:
                    length = value
            elif name == b"transfer-encoding" or name == b"connection":
                return False
            content.extend((name, b": ", value, b"\r\n"))
        if length is None or not length.isdigit() or int(length) != len(body):
            return False  # uvicorn's send answers a length that does not match
        if not self.keep_alive:
            content.append(b"connection: close\r\n")
        content.append(b"\r\n")
        self.response_started = True
        self.waiting_for_100_continue = False
        self.chunked_encoding = False
        self.expected_content_length = 0
        self.transport.writelines([b"".join(content), body])
        self.response_complete = True
        self.message_event.set()
        if not self.keep_alive:
            self.transport.close()
        self.on_response()
        return True


class JoinedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, each request's cycle a ``HeadWithBody``, and its
    keep-alive timeout kept by one timer per idle period instead of one per response.

    uvicorn arms a timer when a response completes (to close the connection after
    ``timeout_keep_alive`` seconds without a request) and cancels it when the next
    request's bytes arrive: a timer made and cancelled per request, although a busy
    connection never lets one fire. Here the timer stays armed across requests: a
    request's bytes only mark the connection busy (``idle_since`` None), a completed
    response marks it idle from now, and the timer, when it fires, closes the connection
    if it has been idle for the whole timeout, waits for the rest of it if it has been
    idle for less, and lets the next response arm it again if it is busy. A connection
    is closed after the same idle time as uvicorn closes it; it is never closed while a
    request is being read or answered.
    """

    idle_since: float | None = None

    def _unset_keepalive_if_required(self) -> None:
        # uvicorn's data_received (and connection_lost): a request's bytes arrived, the
        # connection is busy; the timer stays (see the class docstring).
        self.idle_since = None

    def on_response_complete(self) -> None:
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:
            # Unblock the next pipelined request (as uvicorn does).
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
            return
        self.idle_since = self.loop.time()
        if self.timeout_keep_alive_task is None:
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )

    def timeout_keep_alive_handler(self) -> None:
        self.timeout_keep_alive_task = None
        if self.idle_since is None:
            return  # busy: its response arms the timer again
        left = self.idle_since + self.timeout_keep_alive - self.loop.time()
        if left > 0:
            self.timeout_keep_alive_task = self.loop.call_later(
                left, self.timeout_keep_alive_handler
            )
        elif not self.transport.is_closing():
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self.timeout_keep_alive_task is not None:
            self.timeout_keep_alive_task.cancel()
            self.timeout_keep_alive_task = None

    def on_headers_complete(self) -> None:
        # uvicorn's own, but the request's cycle is made a HeadWithBody (made as one: an
        # object whose class is changed afterwards keeps its first class's attribute
        # layout, and every attribute read of it then misses the interpreter's caches).
        parser = self.parser
        http_version = parser.get_http_version()
        scope = self.scope
        scope["method"] = parser.get_method().decode("ascii")
        if http_version != "1.1":
            scope["http_version"] = http_version
        if parser.should_upgrade() and self._should_upgrade():
            return
        parsed_url = httptools.parse_url(self.url)
        raw_path = parsed_url.path
        path = raw_path.decode("ascii")
        if "%" in path:
            path = urllib.parse.unquote(path)
        root_path = self.root_path
        scope["path"] = root_path + path
        scope["raw_path"] = root_path.encode("ascii") + raw_path if root_path else raw_path
        scope["query_string"] = parsed_url.query or b""
        limit = self.limit_concurrency
        app: Any = self.app
        if limit is not None and (len(self.connections) >= limit or len(self.tasks) >= limit):
            app = service_unavailable
            self.logger.warning("Exceeded concurrency limit.")
        existing_cycle = self.cycle
        self.cycle = HeadWithBody(
            scope=scope,
            transport=self.transport,
            flow=self.flow,
            logger=self.logger,
            access_logger=self.access_logger,
            access_log=self.access_log,
            default_headers=self.server_state.default_headers,
            message_event=asyncio.Event(),
            expect_100_continue=self.expect_100_continue,
            keep_alive=http_version != "1.0" and parser.should_keep_alive(),
            on_response=self.on_response_complete,
        )
        if existing_cycle is None or existing_cycle.response_complete:
            self._start_asgi_task(self.cycle, app)
        else:
            # Pipelined HTTP requests are queued up (as uvicorn does).
            self.flow.pause_reading()
            self.pipeline.appendleft((self.cycle, app))


def chunk_writer(send: Any) -> Callable[[bytes], bool] | None:
    """A synchronous writer of a chunked response's body chunks for ``send``, when it is
    the send of uvicorn's httptools request cycle (``corkboard serve``'s or plain
    uvicorn's); None for any other send.

    ``write(chunk)`` writes what ``send`` writes for a body message with more to come
    (``b"%x\\r\\n" % len(chunk)``, the chunk, ``b"\\r\\n"``) at once, and answers True; it
    writes nothing and answers False where ``send`` would wait or do otherwise: writing
    paused (the client is not reading), the client gone, the transport closing, a
    response not started, not chunked, or complete. The watch streams' feed uses it to
    write a parked stream's frames without resuming the stream (``app.events.feed``).
    """
    cycle = getattr(send, "__self__", None)
    if not isinstance(cycle, RequestResponseCycle) or getattr(send, "__func__", None) not in (
        RequestResponseCycle.send, HeadWithBody.send
    ):
        return None

    def write(chunk: bytes) -> bool:
        transport = cycle.transport
        if (
            cycle.flow.write_paused or cycle.disconnected or not cycle.response_started
            or cycle.response_complete or not cycle.chunked_encoding or not chunk
            or transport.is_closing()
        ):
            return False
        transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
        return True

    return write
