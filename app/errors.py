"""The error tree and the one problem+json handler (RFC 9457).

Every error the service returns is an ``application/problem+json`` document with a
stable machine ``code``. Domain code raises subclasses of ``CorkboardError``; the
handlers installed by ``install_error_handlers`` turn them, FastAPI's request
validation errors and Starlette's routing errors into that one shape::

    CorkboardError                      status  code
     +-- InvalidRequest                 400     invalid_request
     |    +-- InvalidKey                400     invalid_key
     |    +-- InvalidPattern            400     invalid_pattern
     |    +-- InvalidTTL                400     invalid_ttl
     +-- Unauthorized                   401     unauthorized
     +-- Forbidden                      403     forbidden
     +-- NotFound                       404     not_found
     |    +-- LeaseNotFound             404     lease_not_found
     +-- Conflict                       409     (already_exists, lock_held, not_owner,
     |    |                                      lock_not_held, stale_fence)
     |    +-- TooManyKeys               409     too_many_keys
     +-- RequestTimeout                 408     request_timeout
     +-- PreconditionFailed             412     revision_mismatch | already_exists
     +-- PayloadTooLarge                413     payload_too_large
     +-- UnsupportedMediaType           415     unsupported_media_type
     +-- RangeNotSatisfiable            416     range_not_satisfiable
     +-- Unprocessable                  422     validation_failed | constraint_violation
     |    +-- InvalidConstraint         422     invalid_constraint
     +-- QuotaExceeded                  507     quota_exceeded
     +-- NotSupportedByBackend          501     not_supported_by_backend
     +-- RetryLater                     503     (+ Retry-After)
          +-- BackendUnavailable        503     backend_unavailable
          +-- AtCapacity                503     too_many_watchers
          +-- TooManyWaiters            429     too_many_waiters
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response

from app.methods import action_methods, allowed_methods

logger = logging.getLogger("corkboard.errors")

PROBLEM_JSON = "application/problem+json"

_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    409: "Conflict",
    412: "Precondition Failed",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    416: "Range Not Satisfiable",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    507: "Insufficient Storage",
}


class CorkboardError(Exception):
    """Base of every error the service answers with; carries status and code."""

    status: int = 500
    code: str = "internal_error"

    def __init__(
        self,
        detail: str,
        *,
        code: str | None = None,
        errors: Any = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code
        self.errors = errors
        self.headers = headers or {}
        self.extra = extra

    def to_problem(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": "about:blank",
            "status": self.status,
            "title": _TITLES.get(self.status, "Error"),
            "detail": self.detail,
            "code": self.code,
        }
        if self.errors is not None:
            body["errors"] = self.errors
        body.update(self.extra)
        return body


class InvalidRequest(CorkboardError):
    status, code = 400, "invalid_request"


class InvalidKey(InvalidRequest):
    code = "invalid_key"


class InvalidPattern(InvalidRequest):
    code = "invalid_pattern"


class InvalidTTL(InvalidRequest):
    code = "invalid_ttl"


class Unauthorized(CorkboardError):
    status, code = 401, "unauthorized"


class Forbidden(CorkboardError):
    status, code = 403, "forbidden"


class NotFound(CorkboardError):
    status, code = 404, "not_found"


class Conflict(CorkboardError):
    """409; the code says which conflict (already_exists, lock_held, stale_fence, ...)."""

    status, code = 409, "conflict"


class StaleFence(Conflict):
    code = "stale_fence"


class LeaseNotFound(NotFound):
    """The lease does not exist: never granted, revoked, or expired."""

    code = "lease_not_found"


class TooManyKeys(Conflict):
    """A pattern delete would remove more keys than one call may (nothing is deleted)."""

    code = "too_many_keys"


class RequestTimeout(CorkboardError):
    """The request body did not arrive in time (a slow or stalled upload)."""

    status, code = 408, "request_timeout"


class PreconditionFailed(CorkboardError):
    status, code = 412, "revision_mismatch"


class PayloadTooLarge(CorkboardError):
    status, code = 413, "payload_too_large"


class UnsupportedMediaType(CorkboardError):
    status, code = 415, "unsupported_media_type"


class RangeNotSatisfiable(CorkboardError):
    status, code = 416, "range_not_satisfiable"


class Unprocessable(CorkboardError):
    status, code = 422, "validation_failed"


class InvalidConstraint(Unprocessable):
    """A variable's constraint cannot be used (e.g. a pattern RE2 cannot compile)."""

    code = "invalid_constraint"


class QuotaExceeded(CorkboardError):
    """A write would take a namespace past CORKBOARD_NAMESPACE_MAX_KEYS or _MAX_BYTES."""

    status, code = 507, "quota_exceeded"


class NotSupportedByBackend(CorkboardError):
    """501: the configured backend does not offer this resource (yet); /v1/capabilities
    lists what it does offer."""

    status, code = 501, "not_supported_by_backend"


class RetryLater(CorkboardError):
    """503 with Retry-After: the request may succeed if repeated after a pause."""

    status = 503

    def __init__(self, detail: str, *, retry_after: int = 1, **kw: Any) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after)}, **kw)


class BackendUnavailable(RetryLater):
    """The state backend cannot be reached; clients should retry after a pause."""

    code = "backend_unavailable"


def backend_unavailable(engine: str, exc: BaseException, url: str) -> BackendUnavailable:
    """The 503 for a failed call to ``engine`` at ``url``: the client library's error in
    the detail, with the URL's password (which the error may quote) redacted."""
    detail = f"The {engine} backend is unavailable ({type(exc).__name__}: {exc})."
    return BackendUnavailable(detail.replace(url, redact_url(url)))


def redact_url(url: str) -> str:
    """``url`` without its credentials (``scheme://***@host``), for messages and logs."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"


class AtCapacity(RetryLater):
    """This process is at a configured capacity (watchers); retry, or another replica."""

    code = "too_many_watchers"


class TooManyWaiters(RetryLater):
    """A lock already has CORKBOARD_LOCK_MAX_WAITERS callers waiting on it."""

    status, code = 429, "too_many_waiters"


def problem_response(
    status: int,
    code: str,
    detail: str,
    *,
    errors: Any = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response:
    err = CorkboardError(detail, code=code, errors=errors, headers=headers, **extra)
    err.status = status
    return error_response(err)


def _json_default(value: Any) -> Any:
    """Serialize domain objects carried by errors (e.g. the ``current`` entry of a 412)."""
    as_dict = getattr(value, "as_dict", None)
    if callable(as_dict):
        return as_dict()
    raise TypeError(f"cannot serialize {type(value).__name__}")


def error_response(exc: CorkboardError) -> Response:
    return Response(
        orjson.dumps(
            exc.to_problem(), default=_json_default, option=orjson.OPT_PASSTHROUGH_DATACLASS
        ),
        status_code=exc.status,
        media_type=PROBLEM_JSON,
        headers=exc.headers,
    )


_STARLETTE_CODES = {
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def _validation_problem(exc: RequestValidationError) -> CorkboardError:
    """Body errors are 422 validation_failed; malformed JSON and bad parameters 400."""
    details = []
    in_body_only = True
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ())]
        if err.get("type") == "json_invalid":
            return InvalidRequest(f"The body is not valid JSON: {err.get('msg', '')}".strip())
        if not loc or loc[0] != "body":
            in_body_only = False
        details.append({"location": loc, "message": err.get("msg", ""), "type": err.get("type")})
    summary = "; ".join(f"{'.'.join(d['location'])}: {d['message']}" for d in details)
    if in_body_only:
        return Unprocessable(f"The request body is not valid: {summary}", errors=details)
    return InvalidRequest(f"The request is not valid: {summary}", errors=details)


def install_error_handlers(app: FastAPI) -> None:
    """Map every exception that can reach the app to one problem+json response."""

    async def on_corkboard_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, CorkboardError)
        if isinstance(exc, BackendUnavailable):
            logger.warning("backend unavailable: %s", exc.detail)
        return error_response(exc)

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return error_response(_validation_problem(exc))

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        too_large = request.scope.get("corkboard.body_too_large")
        if isinstance(too_large, CorkboardError):
            return error_response(too_large)
        code = _STARLETTE_CODES.get(exc.status_code, "invalid_request")
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        headers = dict(exc.headers or {})
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"No route for {request.method} {request.url.path}."
        elif exc.status_code == 405:
            # Starlette names only the first matching route's method; every route of the
            # path counts (of an action's path, only the action's: see action_methods).
            allow = action_methods(request.app.openapi()["paths"], request.scope["path"]) or (
                allowed_methods(request.app.router.routes, request.scope)
            )
            headers = {k: v for k, v in headers.items() if k.lower() != "allow"}
            headers["Allow"] = ", ".join(allow)
            detail = f"{request.method} is not allowed here; allowed: {', '.join(allow)}."
        return problem_response(exc.status_code, code, detail, headers=headers)

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(500, "internal_error", "An unexpected error occurred.")

    app.add_exception_handler(CorkboardError, on_corkboard_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)
