"""HTTP methods the way clients expect them: ``HEAD`` wherever ``GET`` exists (the GET's
status and headers, no body), and a 405's ``Allow`` naming every method of the path.

FastAPI routes declare one method each, so Starlette would answer ``HEAD`` with 405 and
name only the first matching route's method in ``Allow``; both are fixed here, once, for
every route (the hot path included, since it serves the same paths as declared routes).
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.routing import BaseRoute, Match, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Scope mark of a HEAD request served by its GET route; streaming responses read it to
#: answer with headers only instead of opening a stream.
HEAD_AS_GET = "corkboard.head"


#: The methods probed for a 405's Allow header.
_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def _serves(routes: Sequence[BaseRoute], scope: Scope, method: str) -> bool:
    # Routes are probed through their own ``matches``: FastAPI nests included routers
    # (0.13x and later) and flattens them before, and both answer this the same way.
    probe = {**scope, "method": method}
    return any(route.matches(probe)[0] == Match.FULL for route in routes)


def allowed_methods(routes: Sequence[BaseRoute], scope: Scope) -> list[str]:
    """Every method some route serves at ``scope``'s path (HEAD wherever GET is)."""
    # A mount (static files) that raised the 405 has moved the scope's root_path to
    # itself; probe from the application's root.
    scope = {**scope, "root_path": scope.get("app_root_path", scope.get("root_path", ""))}
    methods: set[str] = set()
    for route in routes:
        if isinstance(route, Mount):
            # Only static files are mounted, and they serve GET and HEAD.
            if route.matches(scope)[0] != Match.NONE:
                methods |= {"GET", "HEAD"}
            continue
        methods |= {m for m in _METHODS if _serves([route], scope, m)}
    if "GET" in methods:
        methods.add("HEAD")
    return sorted(methods)


class HeadAsGet:
    """Serves ``HEAD`` through the ``GET`` route of its path when no route declares HEAD.

    The request runs as a GET (access control, validation and conditional headers
    alike), and the response keeps its status and headers, Content-Length included, but
    sends no body. The scope is changed in place and restored before the response starts,
    so the server and the outer layers (access log, metrics) see the HEAD they received.
    """

    def __init__(self, app: ASGIApp, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "HEAD"
            or _serves(self.routes, scope, "HEAD")
            or not _serves(self.routes, scope, "GET")
        ):
            await self.app(scope, receive, send)
            return
        started = False
        finished = False

        async def head_send(message: Message) -> None:
            nonlocal started, finished
            if finished:
                return
            if message["type"] == "http.response.start":
                started = True
                scope["method"] = "HEAD"
                await send(message)
            elif message["type"] == "http.response.body":
                finished = True
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            else:
                await send(message)

        scope["method"] = "GET"
        scope[HEAD_AS_GET] = True
        try:
            await self.app(scope, receive, head_send)
        finally:
            scope["method"] = "HEAD"
        if started and not finished:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
