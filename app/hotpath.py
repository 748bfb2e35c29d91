"""The hot path: GET, HEAD and PUT of a key.

``KeyFront`` is the app's front door (``app.main.Corkboard.__call__``): it serves those
calls in one pure-ASGI call, doing what the layers of the full stack do for them, in
their order (request observer, HEAD as GET, access control, body limit, endpoint) but
with plain ASGI messages, no Request or Response objects and no layer calls. It runs
the very functions the documented routes run (``Gate.admit``, ``kv.read_key_at``,
``kv.write_key``, ``error_response``), so statuses, headers, bodies, metrics and access
lines are those of the full stack; tests/test_hotpath_front.py checks that call by call.
Every other request goes to the full stack untouched. With CORS configured there is no
front (CORS's layer adds ``Vary: Origin`` to every answer): every call takes the stack.

``HotPath`` is the same calls' layer inside the full stack (in front of FastAPI's
router), for apps without the front (CORS).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from app.access import Gate
from app.errors import CorkboardError, PayloadTooLarge, error_response, problem_response
from app.limits import limited
from app.methods import HEAD_AS_GET
from app.observability import AccessLog, RequestIds
from app.request_metrics import Metrics
from app.routers.common import Endpoint
from app.routers.kv import read_key_at, write_key
from app.settings import Settings

logger = logging.getLogger("corkboard.hotpath")

#: Finds (endpoint, path parameters, route template) for (method, path), or None to let
#: the app route the request.
HotRoutes = Callable[[str, str], tuple[Endpoint, dict[str, str], str] | None]

KEY_ROUTE = "/v1/kv/{key}"
_PREFIX = "/v1/kv/"
_JSON = (b"content-type", b"application/json")
_REQUEST_ID = b"x-request-id"


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


class KeyFront:
    """GET, HEAD and PUT of ``/v1/kv/{key}`` in one call (see the module docstring)."""

    def __init__(
        self, *, gate: Gate, settings: Settings, metrics: Metrics,
        access_log: AccessLog | None, ids: RequestIds,
    ) -> None:
        self.gate = gate
        self.metrics = metrics
        self.stats = metrics.requests
        self.access_log = access_log
        self.ids = ids
        # app.main.body_limits' limit for /v1/kv/ paths (BodyLimit's).
        self.request_limit = settings.max_request_bytes

    def takes(self, scope: Scope) -> bool:
        """Whether this front serves the call: the hot path's calls (``kv.hot_routes``;
        HEAD is its path's GET)."""
        if scope["type"] != "http":
            return False
        path: str = scope["path"]
        if not path.startswith(_PREFIX):
            return False
        method = scope["method"]
        return method == "PUT" or (
            (method == "GET" or method == "HEAD") and not path.endswith("/history")
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method: str = scope["method"]
        request_id = self.ids.of(scope)
        started = time.perf_counter()
        stats = self.stats
        stats.started += 1
        route = "unmatched"
        status = 500
        sent = 0
        try:
            try:
                head = method == "HEAD"
                if head:
                    # HeadAsGet: the call runs as its GET; the outer layers see the HEAD.
                    scope["method"] = "GET"
                    scope[HEAD_AS_GET] = True
                try:
                    self.gate.admit(scope)
                finally:
                    scope["method"] = method
                if method == "PUT":
                    request_headers = _headers(scope["headers"])
                    self._check_declared_length(request_headers)
                    route = KEY_ROUTE
                    scope["corkboard.route"] = KEY_ROUTE
                    state = scope["state"]
                    status, body, etag = await write_key(
                        state["backend"], state["settings"], scope["corkboard.ns"],
                        scope["path"][len(_PREFIX):], scope["corkboard.query"],
                        request_headers, self._limited(scope, receive),
                    )
                else:
                    route = KEY_ROUTE
                    scope["corkboard.route"] = KEY_ROUTE
                    status, body, etag = await self._get(scope)
                if status == 304:
                    headers = [(b"etag", etag.encode("latin-1"))]
                else:
                    headers = [_JSON, (b"content-length", str(len(body)).encode()),
                               (b"etag", etag.encode("latin-1"))]
            except CorkboardError as exc:
                status, headers, body = _problem(error_response(exc))
            except Exception:
                logger.exception("unhandled error on %s %s", method, scope["path"])
                status, headers, body = _problem(problem_response(
                    500, "internal_error", "An unexpected error occurred."
                ))
            headers.append((_REQUEST_ID, request_id.encode()))
            if method == "HEAD":
                body = b""
            await send({"type": "http.response.start", "status": status, "headers": headers})
            sent = len(body)
            await send({"type": "http.response.body", "body": body})
        finally:
            elapsed = time.perf_counter() - started
            stats.record(route, method, status, elapsed)
            if status == 503:
                self.metrics.backend_errors.inc()
            if self.access_log is not None:
                self.access_log.record(
                    request_id, method, scope["path"], scope["query_string"], route,
                    status, elapsed, sent, scope.get("corkboard.token"),
                )

    def _check_declared_length(self, headers: dict[str, str]) -> None:
        """BodyLimit's refusal of a declared Content-Length over the request limit (the
        first Content-Length, as there)."""
        limit = self.request_limit
        value = headers.get("content-length")
        # ASCII digits only (BodyLimit's bytes.isdigit()); 21 digits exceed any limit.
        if (
            value is not None and value.isascii() and value.isdigit()
            and (len(value) > 20 or int(value) > limit)
        ):
            raise PayloadTooLarge(
                f"The request body is {value[:24]} bytes; the limit is {limit}."
            )

    async def _get(self, scope: Scope) -> tuple[int, bytes, str]:
        state = scope["state"]
        key = scope["path"][len(_PREFIX):]
        if_none_match = None
        for name, value in scope["headers"]:
            if name == b"if-none-match":
                if_none_match = value.decode("latin-1")
                break
        return await read_key_at(
            state["backend"], scope["corkboard.ns"], key, scope["corkboard.query"],
            if_none_match,
        )

    def _limited(self, scope: Scope, receive: Receive) -> Receive:
        """BodyLimit's streaming check of the body against the request limit."""
        return limited(scope, receive, self.request_limit)


def _headers(raw: Any) -> dict[str, str]:
    """The request's headers by name, the first of a repeated one winning (as Starlette's
    ``Headers.get``)."""
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in reversed(raw)}


def _problem(response: Any) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    return response.status_code, list(response.raw_headers), bytes(response.body)
