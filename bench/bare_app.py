"""Bare ASGI baseline for ``bench/kv_bench.py``: no framework, no storage.

It answers ``GET /v1/kv/{key}`` and ``PUT /v1/kv/{key}`` with a small fixed JSON
entry shaped like Corkboard's, reading (and discarding) the PUT body, so that the
benchmark measures what uvicorn itself costs per request. The benchmark serves it
exactly like Corkboard::

    python -m uvicorn bare_app:app --app-dir bench --workers 1 \
        --loop uvloop --http httptools --no-access-log

Everything else is 404; other methods on a key are 405.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_PREFIX = "/v1/kv/"

_ENTRY = (
    b'{"key":"bench","value":{"status":"running","step":42,"agent":"a1"},'
    b'"revision":1,"created_revision":1,"version":1,'
    b'"created_at":"2025-01-01T00:00:00.000Z","modified_at":"2025-01-01T00:00:00.000Z",'
    b'"expires_at":null}'
)
_NOT_FOUND = b'{"status":404,"title":"Not Found","code":"not_found"}'
_NOT_ALLOWED = b'{"status":405,"title":"Method Not Allowed","code":"invalid_request"}'


def _headers(body: bytes, content_type: bytes) -> list[tuple[bytes, bytes]]:
    return [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]


async def _respond(send: Send, status: int, body: bytes, content_type: bytes) -> None:
    await send(
        {"type": "http.response.start", "status": status, "headers": _headers(body, content_type)}
    )
    await send({"type": "http.response.body", "body": body})


async def _drain(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """The ASGI entry point."""
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    path: str = scope["path"]
    if not path.startswith(_PREFIX) or len(path) == len(_PREFIX):
        await _respond(send, 404, _NOT_FOUND, b"application/problem+json")
        return
    method: str = scope["method"]
    if method == "GET":
        await _respond(send, 200, _ENTRY, b"application/json")
    elif method == "PUT":
        await _drain(receive)
        await _respond(send, 200, _ENTRY, b"application/json")
    else:
        await _respond(send, 405, _NOT_ALLOWED, b"application/problem+json")
