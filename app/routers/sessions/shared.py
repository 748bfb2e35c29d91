"""What the session routers share: the session id path parameter, the documented errors
of a session call, and reading a small JSON body into its model.
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import Depends, Request

from app.errors import PayloadTooLarge
from app.models import Problem
from app.routers.common import (
    BACKEND_UNAVAILABLE,
    FENCE_PARAMETERS,
    M,
    check_json_body,
    read_body,
    validated,
)
from app.settings import Settings
from app.syntax import check_id

#: Where app/routers/sessions/__init__.py mounts every session router, and their tag.
PREFIX = "/v1/sessions"
TAGS: list[str] = ["sessions"]
#: Small bodies (session metadata, dedupe, subscriptions) beyond the value limit.
SMALL_BODY_BYTES = 64 * 1024

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem, "description": "invalid_key (session id, name) or a bad body"},
    409: {"model": Problem, "description": "stale_fence: the fencing token does not hold "
                                           "the lock"},
    503: BACKEND_UNAVAILABLE,
}
#: The ``openapi_extra`` of a fenced write.
WRITE: dict[str, Any] = {"parameters": FENCE_PARAMETERS}


def session_path(sid: str) -> str:
    return check_id(sid, what="session id")


SessionDep = Annotated[str, Depends(session_path)]


def encoded_value(value: Any, limit: int, what: str = "value") -> bytes:
    """``value`` as stored JSON bytes, refused with 413 over ``limit`` bytes."""
    raw = orjson.dumps(value)
    if len(raw) > limit:
        raise PayloadTooLarge(f"The {what} is {len(raw)} bytes; the limit is {limit}.")
    return raw


async def read_model(request: Request, settings: Settings, model: type[M], *,
                     extra: int = SMALL_BODY_BYTES, optional: bool = False) -> M:
    """The JSON body as ``model``, read under the value limit plus ``extra`` bytes."""
    check_json_body(request)
    return validated(model, await read_body(request, settings.max_value_bytes + extra),
                     optional=optional)
