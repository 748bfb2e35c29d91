"""What operators see: one JSON log line per request with a request id (echoed as
X-Request-ID), and Prometheus metrics in a registry of the app's own, served at /metrics.

Access lines bypass the logging module: building a LogRecord and flushing stderr per
request cost two thirds of a key read. They are encoded with orjson into a buffer that is
written every 200 ms, at 64 KiB, and at shutdown.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any, BinaryIO
from urllib.parse import unquote_plus

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.buffers import compact
from app.request_metrics import Metrics
from app.serving import chunk_writer
from app.syntax import iso_ms

_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
#: Query parameters whose values are secrets (matched after percent-decoding the name).
SECRET_QUERY_PARAMS = frozenset({"access_token"})
#: Control characters (C0, DEL, C1) and Unicode line separators, as visible escapes.
_ESCAPES = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))} | {
    0x2028: "\\u2028", 0x2029: "\\u2029",
}


def escape_controls(text: str) -> str:
    """``text`` with every control character escaped (a newline becomes ``\\x0a``), so
    nothing a client sends can start a log line of its own. Printable text is returned
    as is, checked in one C call."""
    return text if text.isprintable() else text.translate(_ESCAPES)


def redact_query(raw: bytes) -> str:
    """The query string for a log line: the value of every secret parameter replaced by
    ``***``, whatever the encoding of its name (``access%5Ftoken`` included), control
    characters escaped. A query with no '%' and no 'token' is returned as is."""
    if not raw:
        return ""
    query = raw.decode("latin-1")
    if "%" in query or "token" in query:
        parts = query.split("&")
        for i, part in enumerate(parts):
            name, sep, _ = part.partition("=")
            if sep and unquote_plus(name) in SECRET_QUERY_PARAMS:
                parts[i] = f"{name}=***"
        query = "&".join(parts)
    return escape_controls(query)


class TextFormatter(logging.Formatter):
    """``level logger: message``, the message's control characters escaped (a traceback
    keeps its lines)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape_controls(record.message)
        return super().formatMessage(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any `extra` fields."""

    _STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message"}

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in self._STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str, fmt: str) -> None:
    """Route the service's loggers to stderr, as JSON or text, at ``level``."""
    handler = logging.StreamHandler(sys.stderr)
    text = TextFormatter("%(levelname)s %(name)s: %(message)s")
    handler.setFormatter(JsonFormatter() if fmt == "json" else text)
    root = logging.getLogger("corkboard")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


def _milliseconds(seconds: float) -> float:
    """Milliseconds to the microsecond (round(x, 3) costs as much as the rest)."""
    return round(seconds * 1e6) / 1000


#: An access line in JSON: ``AccessLog._entry`` encoded by orjson, byte for byte (its keys
#: in its order), each value encoded on its own (tests/test_hot_formats.py checks the
#: two against each other); the message is the method, the path as encoded for "path"
#: (JSON escapes are per character) and the status. A batch of them (``_json_lines``)
#: takes about 0.4x the CPU of building each entry and encoding it
#: (bench/access_log_bench.py); ``_entry`` stays the line's plain form, for the text
#: format and as the test's reference.
_JSON_LINE = (
    b'{"time":"%b","level":"info","logger":"corkboard.access","message":"%b %b %d",'
    b'"request_id":%b,"method":"%b","path":%b,"query":%b,"route":"%b",'
    b'"status":%d,"duration_ms":%b,"bytes_sent":%d,"token":%b}\n'
)


#: The inside of the JSON string (no quotes) of the strings a line repeats from a small
#: set (methods, route templates), so that a batch encodes each once. Capped in count and
#: length (at most ~50 KiB): a method is whatever token a client sends.
_NAMES_JSON: dict[str, bytes] = {}
_NAMES_JSON_MAX = 256
_NAME_MAX_CHARS = 64


def _name_json(name: str) -> bytes:
    """The inside of ``name``'s JSON string, remembered while the cache has room (the
    caller has looked it up already)."""
    known = orjson.dumps(name)[1:-1]
    if len(_NAMES_JSON) < _NAMES_JSON_MAX and len(name) <= _NAME_MAX_CHARS:
        _NAMES_JSON[name] = known
    return known


#: JSON of ``duration_ms`` by whole microseconds, for durations under ~4 ms (a key
#: read's are tens of microseconds): filled as met, 4,096 slots (~230 KiB when full).
_DURATIONS_JSON: list[bytes | None] = [None] * 4096


def _duration_json(us: int) -> bytes:
    """JSON of ``us`` microseconds in milliseconds (as ``_milliseconds`` gives them),
    kept ``compact`` (orjson's own would make a full table 16 MiB)."""
    known = orjson.dumps(us / 1000)
    if 0 <= us < len(_DURATIONS_JSON):
        _DURATIONS_JSON[us] = compact(known)
    return known


def _json_lines(items: list[tuple[Any, ...]]) -> bytes:
    """The JSON lines of ``items`` (in time order, as recorded): the time's text is
    made once per millisecond, a method's and a route's JSON once per process, a short
    duration's once per microsecond count."""
    dumps = orjson.dumps
    names = _NAMES_JSON
    durations = _DURATIONS_JSON
    table_end = len(durations)
    line = _JSON_LINE
    last_ms = -1
    time_text = b""
    lines: list[bytes] = []
    append = lines.append
    for at_ns, request_id, method, raw_path, raw_query, route, status, seconds, sent, token \
            in items:
        ms = at_ns // 1_000_000
        if ms != last_ms:
            last_ms = ms
            time_text = iso_ms(ms).encode()
        method_text = names.get(method) or _name_json(method)
        path_json = dumps(escape_controls(raw_path))
        us = round(seconds * 1e6)  # _milliseconds(seconds) is us / 1000
        append(line % (
            time_text, method_text, path_json[1:-1], status,
            dumps(request_id), method_text, path_json,
            dumps(redact_query(raw_query)) if raw_query else b'""',
            names.get(route) or _name_json(route), status,
            (durations[us] or _duration_json(us)) if 0 <= us < table_end
            else _duration_json(us),
            sent, b"null" if token is None else dumps(token),
        ))
    return b"".join(lines)


class AccessLog:
    """Buffered writer of access lines (JSON objects, or text) to a binary stream.

    A request adds one tuple of what it saw (``record``); the lines are formatted, with
    the path's control characters escaped and the query's secrets redacted, when the
    buffer is written: every 200 ms (``run``), at ``FLUSH_ENTRIES``, and at shutdown. No
    formatting work is done on the request's path.
    """

    FLUSH_ENTRIES = 512

    def __init__(self, stream: BinaryIO | None = None, *, fmt: str = "json") -> None:
        self.stream = stream if stream is not None else sys.stderr.buffer
        self.fmt = fmt
        self._pending: list[tuple[Any, ...]] = []

    def record(
        self, request_id: str, method: str, path: str, query: bytes, route: str,
        status: int, seconds: float, sent: int, token: str | None,
    ) -> None:
        """One request's line, formatted later."""
        self._pending.append(
            (time.time_ns(), request_id, method, path, query, route, status, seconds, sent, token)
        )
        if len(self._pending) >= self.FLUSH_ENTRIES:
            self.flush()

    def _entry(self, item: tuple[Any, ...]) -> dict[str, Any]:
        at_ns, request_id, method, raw_path, raw_query, route, status, seconds, sent, token = item
        path = escape_controls(raw_path)
        return {
            "time": iso_ms(at_ns // 1_000_000), "level": "info", "logger": "corkboard.access",
            "message": f"{method} {path} {status}", "request_id": request_id,
            "method": method, "path": path, "query": redact_query(raw_query),
            "route": route, "status": status,
            "duration_ms": _milliseconds(seconds), "bytes_sent": sent, "token": token,
        }

    def _lines(self, items: list[tuple[Any, ...]]) -> bytes:
        if self.fmt == "json":
            return _json_lines(items)
        # Values are escaped (escape_controls): one entry, one line.
        return b"".join(
            " ".join(f"{k}={v}" for k, v in self._entry(item).items()).encode() + b"\n"
            for item in items
        )

    def flush(self) -> None:
        if self._pending:
            pending, self._pending = self._pending, []
            data = self._lines(pending)
            try:
                self.stream.write(data)
                self.stream.flush()
            except (OSError, ValueError):  # a closed stderr must not fail requests
                pass

    async def run(self, interval: float = 0.2) -> None:
        """Flush every ``interval`` seconds until cancelled, then once more."""
        try:
            while True:
                await asyncio.sleep(interval)
                self.flush()
        finally:
            self.flush()


def _route_of(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None) or scope.get("corkboard.route")
    return str(path) if path else "unmatched"


class RequestIds:
    """Request ids: the client's X-Request-ID when it is a sane one, else one of ours,
    unique across processes (a random prefix) and cheap within one (a counter). One
    instance per app, shared by the observer and app.hotpath's front."""

    def __init__(self) -> None:
        self._prefix = uuid.uuid4().hex[:12]
        self._counter = 0

    def of(self, scope: Scope) -> str:
        name: bytes
        value: bytes
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                candidate = value.decode("latin-1")
                if _REQUEST_ID_RE.fullmatch(candidate):
                    return candidate
                break
        self._counter += 1
        return f"{self._prefix}-{self._counter:x}"


#: Scope key of the observer's body sender for long streams (a ``StreamBody``): ``await
#: scope[STREAM_BODY](b)`` sends ``b`` as a body chunk with more to come, counted for the
#: access log, straight to the server's send (``SERVER_SEND``, else the observer's own);
#: ``scope[STREAM_BODY].now(b)`` writes it at once where the server allows (see
#: ``StreamBody.now``). The other layers look only at a response's start (and HEAD's
#: end), so a watch stream's chunks skip their wrappers (~5 us a send).
STREAM_BODY = "corkboard.stream_body"
#: Scope key of the send the server gave the app (set by ``app.main.Corkboard``).
SERVER_SEND = "corkboard.server_send"


class StreamBody:
    """One request's body sender for long streams (``STREAM_BODY``), and the count of
    the body bytes its response sent, for the access log."""

    __slots__ = ("_looked_up", "_now", "_send", "sent")

    def __init__(self, send: Send) -> None:
        self.sent = 0
        self._send = send
        self._looked_up = False
        self._now: Callable[[bytes], bool] | None = None

    async def __call__(self, body: bytes) -> None:
        self.sent += len(body)
        await self._send({"type": "http.response.body", "body": body, "more_body": True})

    def now(self, body: bytes) -> bool:
        """Write ``body`` as a chunk with more to come at once, with no await, and answer
        True; or write nothing and answer False (the caller then awaits the sender): the
        server is not uvicorn's httptools protocol, or cannot write now
        (``app.serving.chunk_writer``)."""
        if not self._looked_up:
            self._looked_up = True
            self._now = chunk_writer(self._send)
        write = self._now
        if write is None or not write(body):
            return False
        self.sent += len(body)
        return True


class RequestObserver:
    """Pure-ASGI middleware: request id, access log line, request metrics."""

    def __init__(
        self, app: ASGIApp, metrics: Metrics, access_log: AccessLog | None,
        ids: RequestIds | None = None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.access_log = access_log
        self.ids = ids or RequestIds()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = self.ids.of(scope)
        started = time.perf_counter()
        status = 500
        body = scope[STREAM_BODY] = StreamBody(scope.get(SERVER_SEND, send))

        async def observed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", []), (b"x-request-id", request_id.encode())
                ]
            elif message["type"] == "http.response.body":
                body.sent += len(message.get("body", b""))
            await send(message)

        stats = self.metrics.requests
        stats.started += 1
        try:
            await self.app(scope, receive, observed_send)
        finally:
            elapsed = time.perf_counter() - started
            route = _route_of(scope)
            stats.record(route, scope["method"], status, elapsed)
            if status == 503:
                self.metrics.backend_errors.inc()
            if self.access_log is not None:
                self.access_log.record(
                    request_id, scope["method"], scope["path"], scope["query_string"], route,
                    status, elapsed, body.sent, scope.get("corkboard.token"),
                )
