"""The change feed as a long poll (API.md section 3, ``GET /v1/events``), for clients
without Server-Sent Events.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated

import orjson
from fastapi import APIRouter, Query
from starlette.responses import Response

from app.backends.base import ChangeEvent
from app.errors import InvalidRequest, InvalidTTL
from app.models import EventList, Problem
from app.routers.common import BackendDep, NamespaceDep, json_response
from app.syntax import MATCH_ALL, Pattern, check_id, parse_duration

router = APIRouter(prefix="/v1", tags=["watch"])

EVENT_PREFIXES = ("kv", "variable", "lock", "session", "artifact")
MAX_WAIT_SECONDS = 300.0


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which events a watcher wants: a key pattern, type prefixes, one session."""

    pattern: Pattern = MATCH_ALL
    types: tuple[str, ...] = ()
    session: str | None = None

    @classmethod
    def parse(cls, pattern: str | None, types: str | None, session: str | None) -> EventFilter:
        wanted: tuple[str, ...] = ()
        if types:
            wanted = tuple(t.strip() for t in types.split(",") if t.strip())
            unknown = [t for t in wanted if t.split(".", 1)[0] not in EVENT_PREFIXES]
            if unknown:
                raise InvalidRequest(
                    f"Unknown event types {unknown}: use {', '.join(EVENT_PREFIXES)} "
                    "or full types such as kv.put."
                )
        return cls(
            Pattern.compile(pattern) if pattern is not None else MATCH_ALL,
            wanted,
            check_id(session, what="session id") if session else None,
        )

    def matches(self, event: ChangeEvent) -> bool:
        if self.session is not None and event.session != self.session:
            return False
        if self.types and not any(
            event.type == t or event.type.startswith(t + ".") for t in self.types
        ):
            return False
        return self.pattern is MATCH_ALL or self.pattern.matches(event.key)


def reset_event(compacted: int, current: int) -> bytes:
    return orjson.dumps(
        {"type": "reset", "compacted_revision": compacted, "current_revision": current}
    )


@router.get(
    "/events",
    response_model=EventList,
    responses={400: {"model": Problem}, 503: {"model": Problem}},
    summary="The change feed as a long poll",
    description=(
        "Returns at once with the matching events after `since`, else waits up to `wait`. "
        "`revision` is where to continue. If `since` is older than the namespace retains, "
        "the only event is `reset` and the client must resync."
    ),
)
async def poll_events(
    ns: NamespaceDep,
    backend: BackendDep,
    since: Annotated[int, Query(ge=0, description="Revision already seen")] = 0,
    wait: Annotated[str | None, Query(description="Longest wait, e.g. 30s (at most 300s)")] = None,
    pattern: Annotated[str | None, Query(description="Key pattern")] = None,
    types: Annotated[str | None, Query(description="Comma list of type prefixes")] = None,
    session: Annotated[str | None, Query(description="Only events of this session")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> Response:
    wait_s = parse_duration(wait, what="wait")
    if wait_s > MAX_WAIT_SECONDS:
        raise InvalidTTL(f"wait may be at most {MAX_WAIT_SECONDS:.0f}s.")
    flt = EventFilter.parse(pattern, types, session)
    deadline = time.monotonic() + wait_s
    after = since
    while True:
        remaining = max(0.0, deadline - time.monotonic())
        batch = await backend.read_events(ns, after, limit=limit, timeout=remaining)
        if after < batch.compacted_revision:
            reset = reset_event(batch.compacted_revision, batch.current_revision)
            body = b'{"events":[' + reset + b'],"revision":' + str(batch.current_revision).encode()
            return json_response(body + b"}")
        matched = [e for e in batch.events if flt.matches(e)]
        if batch.events:
            after = batch.events[-1].revision
        if matched or remaining <= 0 or time.monotonic() >= deadline:
            events = b",".join(e.data for e in matched)
            return json_response(
                b'{"events":[' + events + b'],"revision":' + str(max(after, since)).encode() + b"}"
            )
