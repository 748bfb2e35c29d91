"""HTTP methods the way clients expect them: ``HEAD`` wherever ``GET`` exists (the GET's
status and headers, no body), and a 405's ``Allow`` naming every method of the path (of
an action's path, the action's methods: ``action_methods``).

FastAPI routes declare one method each, so Starlette would answer ``HEAD`` with 405 and
name only the first matching route's method in ``Allow``; both are fixed here, once, for
every route (the hot path included, since it serves the same paths as declared routes).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from starlette.routing import BaseRoute, Match, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.schemas import KEY_SCHEMA, PATH_PARAMETERS

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
    return _with_head(methods)


def _with_head(methods: set[str]) -> list[str]:
    """``methods`` sorted, with HEAD wherever GET is (HeadAsGet serves it)."""
    if "GET" in methods:
        methods.add("HEAD")
    return sorted(methods)


#: Path parameters that may hold '/', those of key syntax (a key, a lock name): the names
#: that an action segment may follow (app.syntax: such a name may not end in one).
_NAME_PARAMS = frozenset(
    name for name, (schema, _) in PATH_PARAMETERS.items() if schema is KEY_SCHEMA
)


@lru_cache(maxsize=256)
def _template_regex(template: str) -> re.Pattern[str]:
    parts = re.split(r"(\{\w+\})", template)
    return re.compile("".join(
        (".+" if p[1:-1] in _NAME_PARAMS else "[^/]+") if p.startswith("{") else re.escape(p)
        for p in parts
    ))


def action_methods(paths: Mapping[str, Mapping[str, Any]], path: str) -> list[str] | None:
    """The methods of an action's path (``/v1/kv/<key>/history``, ``/v1/locks/<name>/
    release``, ...) from the OpenAPI document's ``paths``, HEAD wherever GET is; None for
    any other path.

    The name routes (``/v1/kv/{key}``) match such a path too, with the action segment
    as the end of the name, but refuse every such call (400 ``invalid_key``): the path
    is the action's, and a 405 names only the action's methods in ``Allow``."""
    last = path.rsplit("/", 1)[-1]
    methods: set[str] = set()
    for template, item in paths.items():
        if (
            template.endswith("/" + last)
            and template.rsplit("/", 2)[-2][1:-1] in _NAME_PARAMS
            and _template_regex(template).fullmatch(path)
        ):
            # (a path item's other members, parameters or a summary, are no methods)
            methods |= {m.upper() for m in item if m.upper() in _METHODS}
    return _with_head(methods) if methods else None


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
