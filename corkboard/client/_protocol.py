"""The client's sans-IO core, shared by the async client and the sync one generated from
it: paths and parameters, durations, the fencing context, retry policy, error and
Server-Sent Events parsing. Nothing here performs I/O.
"""

from __future__ import annotations

import contextvars
import os
import random
import re
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from corkboard.client.errors import CorkboardError, error_from_problem, retry_after_seconds
from corkboard.client.types import Duration, Event, Fence, Progress, Reset, Synced, WatchItem

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_RETRIES = 3
MAX_RETRY_DELAY = 5.0
JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
#: Methods and calls that are safe to send again after a 503 or a lost connection.
SAFE_METHODS = frozenset({"GET", "HEAD"})


def key_path(key: str) -> str:
    """A key (or lock name, artifact key) in a URL path: '/' kept, the rest escaped."""
    return quote(key, safe="/:@=+-._")


def id_path(ident: str) -> str:
    """A session, thread, channel or variable id in one path segment."""
    return quote(ident, safe=":@=+-._")


def dumps(value: Any) -> bytes:
    return orjson.dumps(value)


def duration_param(value: Duration | None) -> str | None:
    """A duration as a query parameter: seconds as a number, or a Go-style string."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise TypeError("a duration is a number of seconds or a string like '30s'")
    return value if isinstance(value, str) else str(value)


_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|us|µs|ns|s|m|h)")


def duration_seconds(value: Duration) -> float:
    """Seconds of a duration (30, 0.25, '250ms', '1m30s'), as the service reads it."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        pass
    pos, total = 0, 0.0
    for match in _PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(f"not a duration: {value!r} (use seconds, or '250ms', '30s', '5m')")
    return total


def default_owner() -> str:
    """A lock owner naming this process: host, pid and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def params(**values: Any) -> dict[str, str]:
    """Query parameters without the ones left out (None); booleans as true/false."""
    out: dict[str, str] = {}
    for name, value in values.items():
        if value is None:
            continue
        out[name] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return out


def condition_headers(if_revision: int | None) -> dict[str, str]:
    """If-Match "<N>" for ``if_revision=N``; If-None-Match: * for 0 (must not exist)."""
    if if_revision is None:
        return {}
    if isinstance(if_revision, bool) or not isinstance(if_revision, int) or if_revision < 0:
        raise ValueError("if_revision is a revision (0: the key must not exist)")
    return {"If-None-Match": "*"} if if_revision == 0 else {"If-Match": f'"{if_revision}"'}


# -- fencing context ----------------------------------------------------------------------

#: Fences in force in this context, innermost last, each with the scope (client transport
#: and namespace) it applies to. A contextvar: each thread and task sees its own.
_FENCES: contextvars.ContextVar[tuple[tuple[object, str, Fence], ...]] = contextvars.ContextVar(
    "corkboard_fences", default=()
)


def fence_for(scope: object, ns: str) -> Fence | None:
    """The innermost fence in force for writes through ``scope`` to namespace ``ns``."""
    for owner, fence_ns, fence in reversed(_FENCES.get()):
        if owner is scope and fence_ns == ns:
            return fence
    return None


def push_fence(scope: object, ns: str, fence: Fence) -> contextvars.Token[Any]:
    return _FENCES.set((*_FENCES.get(), (scope, ns, fence)))


def pop_fence(token: contextvars.Token[Any]) -> None:
    try:
        _FENCES.reset(token)
    except ValueError:  # exited in another context (a generator moved between tasks)
        pass


@contextmanager
def fence_context(scope: object, ns: str, fence: Fence) -> Iterator[Fence]:
    token = push_fence(scope, ns, fence)
    try:
        yield fence
    finally:
        pop_fence(token)


# -- calls and answers --------------------------------------------------------------------


@dataclass(slots=True)
class Call:
    """One HTTP call, before any I/O: what to send and whether it may be sent again."""

    method: str
    path: str
    params: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    content: Any = None
    #: Safe to repeat after a 503 or a connection failure: reads, and writes whose repeat
    #: changes nothing more (no precondition, no counter, no queue, a replayable body).
    retry: bool = False
    #: A write that carries the fence of a lock held through the client, if any.
    fenced: bool = False

    @classmethod
    def read(cls, path: str, params: dict[str, str] | None = None,
             headers: dict[str, str] | None = None) -> Call:
        return cls("GET", path, params or {}, headers or {}, retry=True)

    @classmethod
    def write(cls, method: str, path: str, body: Any = None, *, raw: Any = None,
              content_type: str = JSON, params: dict[str, str] | None = None,
              headers: dict[str, str] | None = None, retry: bool = False,
              fenced: bool = True) -> Call:
        hdrs = dict(headers or {})
        content: Any = raw
        if raw is None and body is not None:
            content = dumps(body)
        if content is not None and "Content-Type" not in hdrs:
            hdrs["Content-Type"] = content_type
        # A conditional write repeated after it was applied would fail its condition:
        # never repeat one, whatever the method.
        conditional = "If-Match" in hdrs or "If-None-Match" in hdrs
        replayable = content is None or isinstance(content, bytes)
        return cls(method, path, params or {}, hdrs, content,
                   retry=retry and replayable and not conditional, fenced=fenced)


def retry_delay(attempt: int, response: httpx.Response | None) -> float:
    """How long to wait before attempt ``attempt + 1``: Retry-After when the service
    gave one (capped), else an exponential backoff with jitter."""
    hinted = retry_after_seconds(response.headers.get("retry-after")) if response else None
    if hinted is not None:
        return min(hinted, MAX_RETRY_DELAY)
    base: float = min(0.1 * 2**attempt, MAX_RETRY_DELAY)
    return base / 2 + random.random() * base / 2


def is_retryable_status(status: int) -> bool:
    return status == 503


def error_from_response(response: httpx.Response) -> CorkboardError:
    """The typed exception of an error answer (read in full beforehand)."""
    problem: dict[str, Any]
    try:
        body = orjson.loads(response.content) if response.content else {}
        problem = body if isinstance(body, dict) else {}
    except orjson.JSONDecodeError:
        problem = {"detail": response.text.strip()[:200] or response.reason_phrase}
    headers = {k.lower(): v for k, v in response.headers.items()}
    return error_from_problem(response.status_code, problem, headers)


def json_of(response: httpx.Response) -> Any:
    return orjson.loads(response.content)


# -- Server-Sent Events -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServerEvent:
    """One dispatched SSE event."""

    event: str
    data: str
    id: str | None


class SSEDecoder:
    """Lines in, events out, as the SSE specification dispatches them. ``last_id`` is the
    last event id committed by a dispatch (an id-only frame commits it too), so a frame
    cut off mid-way never moves the resume point past what was delivered."""

    def __init__(self, last_id: str | None = None) -> None:
        self.last_id = last_id
        self.retry_ms: int | None = None
        self._id: str | None = last_id
        self._event = ""
        self._data: list[str] = []

    def feed(self, line: str) -> ServerEvent | None:
        if line == "":
            self.last_id = self._id
            if not self._data:
                self._event = ""
                return None
            event = ServerEvent(self._event or "message", "\n".join(self._data), self.last_id)
            self._event, self._data = "", []
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\x00" not in value:
            self._id = value
        elif name == "retry" and value.isdigit():
            self.retry_ms = int(value)
        return None


CONTROL_OVERFLOW = "overflow"


def watch_item(event: ServerEvent) -> WatchItem | None:
    """The typed item of a watch event; None for events the watch handles itself."""
    data = orjson.loads(event.data)
    if event.event == "reset":
        return Reset.from_json(data)
    if event.event == "synced":
        return Synced(int(data["revision"]))
    if event.event == "progress":
        return Progress(int(data["revision"]))
    if event.event == CONTROL_OVERFLOW:
        return None
    return Event.from_json(data)


def watch_params(
    pattern: str | None, types: str | list[str] | tuple[str, ...] | None, session: str | None,
) -> dict[str, str]:
    if types is not None and not isinstance(types, str):
        types = ",".join(types)
    return params(pattern=pattern, types=types, session=session)
