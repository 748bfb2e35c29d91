"""A pure-ASGI front for the hottest calls, GET and PUT of a key.

They run the very endpoint functions the documented routes run, but skip FastAPI's
router and exception middleware, which cost more than the call itself. Every other
request passes through untouched. Middleware added later (auth, metrics, CORS) wraps
this layer, so hot calls get the same checks as all others.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from app.errors import CorkboardError, error_response, problem_response
from app.routers.common import Endpoint

logger = logging.getLogger("corkboard.hotpath")

#: Finds (endpoint, path parameters, route template) for (method, path), or None to let
#: the app route the request.
HotRoutes = Callable[[str, str], tuple[Endpoint, dict[str, str], str] | None]


class HotPath:
    def __init__(self, app: ASGIApp, routes: HotRoutes) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        found = self.routes(scope["method"], scope["path"])
        if found is None:
            await self.app(scope, receive, send)
            return
        endpoint, path_params, template = found
        scope["path_params"] = path_params
        scope["corkboard.route"] = template
        try:
            response = await endpoint(Request(scope, receive, send))
        except CorkboardError as exc:
            response = error_response(exc)
        except Exception:
            logger.exception("unhandled error on %s %s", scope["method"], scope["path"])
            response = problem_response(500, "internal_error", "An unexpected error occurred.")
        await response(scope, receive, send)
