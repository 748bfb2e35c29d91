"""What every router shares: the backend and settings dependencies, the namespace, the
conditional and fencing headers, bounded body reading, and Starlette-level routes.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import orjson
from fastapi import Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import Receive

from app.backends.base import NO_CONDITION, Backend, Fence, Precondition
from app.backends.parts.artifacts import ArtifactIndex
from app.backends.parts.keys import KeyStore
from app.backends.parts.locks import LockEngine
from app.backends.parts.sessions import SessionStore
from app.backends.parts.txn import LeaseStore, TxnStore
from app.errors import InvalidRequest, PayloadTooLarge, Unprocessable, UnsupportedMediaType
from app.events import Hub
from app.models import Problem
from app.settings import Settings
from app.syntax import MAX_DIGITS, Pattern, check_id, check_key, is_count, parse_count, parse_etag

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"

M = TypeVar("M", bound=BaseModel)


def get_backend(request: Request) -> Backend:
    # The lifespan state dict, read directly: request.state would build a State per call.
    backend: Backend = request.scope["state"]["backend"]
    return backend


def get_settings(request: Request) -> Settings:
    settings: Settings = request.scope["state"]["settings"]
    return settings


def get_hub(request: Request) -> Hub:
    hub: Hub = request.scope["state"]["hub"]
    return hub


def get_namespace(request: Request) -> str:
    """The namespace of the call, as the access layer resolved and authorized it."""
    return namespace_of(request)


#: A listing's page size when the call names none (or the listing maximum, if lower).
DEFAULT_PAGE = 100


@dataclass(frozen=True, slots=True)
class PageRequest:
    """A listing's page: the name pattern, the page size and where the last page ended."""

    pattern: Pattern
    limit: int
    after: str | None

    @staticmethod
    def next_cursor(last: str | None) -> str | None:
        return encode_cursor(last) if last else None

    def response(self, items: list[Any], last: str | None, revision: int | None = None
                 ) -> Response:
        """The listing's answer: the page's items, the cursor that continues after ``last``
        and, for a listing read at one revision, that revision."""
        body: dict[str, Any] = {"items": items, "next_cursor": self.next_cursor(last)}
        if revision is not None:
            body["revision"] = revision
        return json_response(orjson.dumps(body))

    @classmethod
    def parse(
        cls, pattern: str, limit: int | None, cursor: str | None, maximum: int
    ) -> PageRequest:
        """A page checked: the pattern's syntax, 1 <= limit <= maximum, a cursor given out.
        Without a limit: ``DEFAULT_PAGE``, or ``maximum`` when that is lower (a listing
        maximum set below the default must not refuse every call that names no limit)."""
        if limit is None:
            limit = min(DEFAULT_PAGE, maximum)
        if not 1 <= limit <= maximum:
            raise InvalidRequest(f"limit must be between 1 and {maximum}.")
        return cls(Pattern.compile(pattern), limit, decode_cursor(cursor) if cursor else None)


def get_page_request(
    request: Request,
    pattern: Annotated[str, Query(description="'*' matches any run of characters")] = "*",
    limit: Annotated[int | None, Query(
        ge=1, description="Page size: at most CORKBOARD_MAX_LIST_LIMIT (1000); without it "
        "100, or that maximum when it is lower",
    )] = None,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
) -> PageRequest:
    return PageRequest.parse(pattern, limit, cursor, get_settings(request).max_list_limit)


BackendDep = Annotated[Backend, Depends(get_backend)]
# A router takes only the part of the backend it uses (the backend is all of them): the
# type names what the route may call.
KeysDep = Annotated[KeyStore, Depends(get_backend)]
LocksDep = Annotated[LockEngine, Depends(get_backend)]
SessionsDep = Annotated[SessionStore, Depends(get_backend)]
ArtifactsDep = Annotated[ArtifactIndex, Depends(get_backend)]
LeasesDep = Annotated[LeaseStore, Depends(get_backend)]
TxnDep = Annotated[TxnStore, Depends(get_backend)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
HubDep = Annotated[Hub, Depends(get_hub)]
NamespaceDep = Annotated[str, Depends(get_namespace)]
PageDep = Annotated[PageRequest, Depends(get_page_request)]

KEY_PARAMETER: dict[str, Any] = {
    "name": "key", "in": "path", "required": True, "schema": {"type": "string"},
    "description": "1-512 bytes of [A-Za-z0-9._:/@=+-]; '/' allowed unescaped",
}
FENCE_PARAMETERS: list[dict[str, Any]] = [
    {"name": "Fence-Lock", "in": "header", "required": False, "schema": {"type": "string"},
     "description": "Apply the write only while Fence-Token holds this lock"},
    {"name": "Fence-Token", "in": "header", "required": False, "schema": {"type": "integer"}},
    {"name": "Fence-Session", "in": "header", "required": False, "schema": {"type": "string"},
     "description": "The session of a session-scoped Fence-Lock"},
]


#: The documented 503 of every backed call.
BACKEND_UNAVAILABLE: dict[str, Any] = {
    "model": Problem, "description": "Backend unavailable; retry after Retry-After",
}


def json_body(model: type[BaseModel], *, required: bool = True) -> dict[str, Any]:
    """The OpenAPI ``requestBody`` of a route that reads ``model`` from a JSON body itself
    (with ``validated``), for its ``openapi_extra``."""
    return {
        "required": required,
        "content": {JSON: {"schema": model.model_json_schema()}},
    }


def namespace_of(request: Request) -> str:
    """The namespace the access layer (app.access) resolved, checked and authorized for
    this call: the only namespace it may read or write. Never read from the query again."""
    ns: str = request.scope["corkboard.ns"]
    return ns


def query_param(request: Request, name: str) -> str | None:
    """A query parameter from the access layer's single parse of the query string."""
    query: dict[str, str] = request.scope["corkboard.query"]
    return query.get(name)


class JsonBytes(Response):
    """A response of JSON bytes already encoded: Starlette's ``Response`` with its
    headers built directly (no rendering or header merging; a fifth of a key read)."""

    media_type = JSON

    def __init__(
        self, content: bytes, status_code: int = 200, headers: dict[str, str] | None = None
    ) -> None:
        self.status_code = status_code
        self.background = None
        self.body = content
        raw = [(b"content-type", b"application/json"),
               (b"content-length", str(len(content)).encode())]
        if headers:
            raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        self.raw_headers = raw


def json_response(
    content: bytes, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return JsonBytes(content, status_code, headers)


def write_precondition(headers: Mapping[str, str]) -> tuple[str | None, bool]:
    """The precondition headers of a write, checked: (If-Match value or None, whether
    If-None-Match: * asks that nothing exists). Each resource parses its own ETags."""
    if_match = headers.get("if-match")
    if_none_match = headers.get("if-none-match")
    if if_match is not None and if_none_match is not None:
        raise InvalidRequest("Send If-Match or If-None-Match, not both.")
    if if_none_match is not None and if_none_match.strip() != "*":
        raise InvalidRequest("On a write, If-None-Match accepts only '*'.")
    return if_match, if_none_match is not None


def condition_from_headers(headers: Mapping[str, str]) -> Precondition:
    """If-Match ("<rev>" or *) and If-None-Match (* only) of a write."""
    if_match, must_not_exist = write_precondition(headers)
    if must_not_exist:
        return Precondition(must_not_exist=True)
    if if_match is not None:
        revision = parse_etag(if_match)
        if revision is None:
            return Precondition(must_exist=True)
        return Precondition(match_revision=revision)
    return NO_CONDITION


def fence_from_headers(headers: Mapping[str, str]) -> Fence | None:
    """Fence-Lock + Fence-Token (+ Fence-Session for a session-scoped lock), or None."""
    name = headers.get("fence-lock")
    token = headers.get("fence-token")
    session = headers.get("fence-session")
    if name is None and token is None:
        if session is not None:
            raise InvalidRequest("Fence-Session needs Fence-Lock and Fence-Token.")
        return None
    if name is None or token is None:
        raise InvalidRequest("Fenced writes need both Fence-Lock and Fence-Token.")
    check_key(name, what="Fence-Lock lock name")
    if not is_count(token.strip()):
        raise InvalidRequest(
            f"Fence-Token must be a lock's integer fencing token (at most {MAX_DIGITS} digits)."
        )
    scope = check_id(session, what="Fence-Session session id") if session else ""
    return Fence(name=name, token=int(token), scope=scope)


async def read_body(request: Request, limit: int, *, what: str = "request body") -> bytes:
    """The whole body, refused with 413 as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if parse_count(declared, what="Content-Length") > limit:
            raise PayloadTooLarge(f"The {what} is {declared} bytes; the limit is {limit}.")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"The {what} exceeds the limit of {limit} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


async def receive_body(
    headers: Mapping[str, str], receive: Receive, limit: int, *, what: str = "request body"
) -> bytes:
    """``read_body`` on a bare ASGI ``receive`` (the hot path has no Request): the same
    checks in the same order, the same errors; a disconnect is ``ClientDisconnect``."""
    declared = headers.get("content-length")
    if declared is not None:
        if parse_count(declared, what="Content-Length") > limit:
            raise PayloadTooLarge(f"The {what} is {declared} bytes; the limit is {limit}.")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        kind = message["type"]
        if kind == "http.request":
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"The {what} exceeds the limit of {limit} bytes.")
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        elif kind == "http.disconnect":
            raise ClientDisconnect()
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


#: JSON is accepted nested at most this deep, a scalar being one level (orjson encodes at
#: most 254 nested arrays and objects). Deeper is 422 wherever JSON is accepted.
MAX_JSON_DEPTH = 255


def _too_deep(what: str) -> Unprocessable:
    message = f"nested deeper than {MAX_JSON_DEPTH} levels"
    return Unprocessable(
        f"The {what} is {message}.", errors=[{"location": ["body"], "message": message}]
    )


def parse_json(raw: bytes | str, *, what: str = "body") -> Any:
    """The client's JSON, decoded once at the boundary: 400 if it is not JSON, 422 if it is
    nested deeper than MAX_JSON_DEPTH levels (so no later encoding of it can fail)."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if "depth" in str(exc):  # orjson's own limit, 1024 levels
            raise _too_deep(what) from exc
        raise InvalidRequest(f"The {what} is not valid JSON: {exc}.") from exc
    # Counting brackets is cheap and bounds the depth; only a document with as many
    # brackets as the limit is measured, by encoding it (orjson refuses when too deep).
    brackets = raw.count(b"[") + raw.count(b"{") if isinstance(raw, bytes) else (
        raw.count("[") + raw.count("{")
    )
    if brackets >= MAX_JSON_DEPTH:
        try:
            orjson.dumps(value)
        except TypeError as exc:
            raise _too_deep(what) from exc
    return value


def dump_json(value: Any, *, what: str = "value", location: str = "body") -> bytes:
    """Compact JSON bytes of a client's value; 422 for what JSON storage cannot hold
    (nesting deeper than 255 levels, integers beyond 64 bits)."""
    try:
        return orjson.dumps(value)
    except TypeError as exc:  # orjson.JSONEncodeError
        raise Unprocessable(
            f"The {what} cannot be stored: {exc}.",
            errors=[{"location": [location], "message": str(exc)}],
        ) from exc


def validated(model: type[M], raw: bytes, *, optional: bool = False) -> M:
    """The body as ``model``; errors answer like FastAPI's own body validation. An empty
    body is ``{}`` when ``optional``, else it fails validation."""
    data = parse_json(raw) if raw.strip() else ({} if optional else None)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from exc


def check_json_body(request: Request, *, patch: bool = False) -> None:
    """415 unless the body is JSON (no Content-Type counts as JSON); with ``patch`` a
    merge patch is accepted too."""
    mt = media_type(request)
    if mt == "" or is_json_media(mt):
        return
    raise UnsupportedMediaType(
        f"Content-Type {mt!r} is not accepted: send application/json"
        + (f" or {MERGE_PATCH}." if patch else ".")
    )


def media_type(request: Request) -> str:
    return media_type_of(request.headers)


def media_type_of(headers: Mapping[str, str]) -> str:
    return headers.get("content-type", "").split(";", 1)[0].strip().lower()


def is_json_media(mt: str) -> bool:
    return mt == JSON or (mt.startswith("application/") and mt.endswith("+json"))


class KeyPathConvertor(Convertor[str]):
    """Like Starlette's ``path`` but matching any character, so that a key with a newline
    reaches its route and is refused as ``invalid_key`` rather than matching no route."""

    regex = "(?s:.*)"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("key", KeyPathConvertor())

Endpoint = Callable[[Request], Awaitable[Response]]


def encode_cursor(key: str) -> str:
    """The opaque paging cursor of a listing that continues after ``key``."""
    return base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    """The key a paging cursor continues after; 400 for a cursor not given out here."""
    try:
        key = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        return check_key(key)
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise InvalidRequest("The cursor is not one this service gave out.") from exc
    except InvalidRequest as exc:
        raise InvalidRequest("The cursor is not one this service gave out.") from exc
