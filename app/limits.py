"""Request body limits, enforced before a body is read whole (pure ASGI)."""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import PayloadTooLarge, error_response

#: Scope key set when this layer refused a body while the app was reading it.
BODY_TOO_LARGE = "corkboard.body_too_large"


class BodyLimit:
    """Refuses bodies over the limit ``limit_for(path)`` gives (None: the route enforces
    its own, e.g. artifacts): at once from Content-Length, else while streaming (the
    endpoint reading the body gets PayloadTooLarge)."""

    def __init__(self, app: ASGIApp, limit_for: Callable[[str], int | None]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = (
            self.limit_for(scope["path"])
            if scope["type"] == "http" and scope["method"] not in ("GET", "HEAD", "OPTIONS")
            else None
        )
        if limit is None:
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                # bytes.isdigit() is ASCII only; a 21-digit length exceeds any limit.
                if value.isdigit() and (len(value) > 20 or int(value) > limit):
                    exc = PayloadTooLarge(
                        f"The request body is {value[:24].decode()} bytes; the limit is {limit}."
                    )
                    await error_response(exc)(scope, receive, send)
                    return
                break
        await self.app(scope, limited(scope, receive, limit), send)


def limited(scope: Scope, receive: Receive, limit: int) -> Receive:
    """``receive`` checking the streamed body against ``limit``: past it, PayloadTooLarge
    (also marked in the scope)."""
    received = 0

    async def limited_receive() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                exc = PayloadTooLarge(f"The request body exceeds the limit of {limit} bytes.")
                # FastAPI reports any error while it parses a body as a 400; this mark
                # lets the error handler answer the 413 that happened.
                scope[BODY_TOO_LARGE] = exc
                raise exc
        return message

    return limited_receive
