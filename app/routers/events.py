"""The change feed over HTTP (API.md section 3): ``GET /v1/watch`` streams it as
Server-Sent Events, ``GET /v1/events`` serves the same feed as a long poll.

Both go through the process's ``Hub`` (app/events/); this module only parses the
request, picks the resume point and turns frames into a response.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Header, Query
from sse_starlette import EventSourceResponse
from starlette.responses import Response

from app.errors import InvalidRequest, InvalidTTL, NotFound
from app.events import SHUTDOWN_GRACE_SECONDS, EventFilter, Frame, Hub
from app.models import EventList, Problem
from app.presence import LeaseKeeper, keep_alive
from app.routers.common import HubDep, LeasesDep, NamespaceDep, SettingsDep, json_response
from app.routers.feed_response import PING, FeedResponse
from app.syntax import MAX_DIGITS, MAX_REVISION, check_id, is_count, parse_duration

router = APIRouter(tags=["watch"])
logger = logging.getLogger("corkboard.watch")

MAX_WAIT_SECONDS = 300.0
MAX_EVENTS_LIMIT = 10_000

PatternQuery = Annotated[
    str | None, Query(description="Key pattern; '*' matches any run of characters")
]
TypesQuery = Annotated[
    str | None,
    Query(description="Comma list of type prefixes (kv, variable, lock, session, artifact) "
                      "or full types (kv.put)"),
]
SessionQuery = Annotated[str | None, Query(description="Only events of this session")]


def _last_event_id(header: str | None) -> int | None:
    if header is None or header.strip() == "":
        return None
    text = header.strip()
    if not is_count(text) or int(text) > MAX_REVISION:
        raise InvalidRequest(
            "Last-Event-ID must be a revision this service sent as an event id "
            f"(at most {MAX_DIGITS} digits).",
            errors=[{"location": ["header", "Last-Event-ID"], "message": "not a revision"}],
        )
    return int(text)


@router.get(
    "/v1/watch",
    response_class=EventSourceResponse,
    responses={
        200: {
            "description": (
                "A stream of Server-Sent Events: `id` = revision, `event` = type, `data` = "
                "the event's JSON. Control events: `synced`, `reset`, `progress`, `overflow`."
            ),
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        400: {"model": Problem},
        404: {"model": Problem, "description": "lease_not_found: `lease` is not live"},
        503: {"model": Problem},
    },
    summary="Watch changes as Server-Sent Events",
    description=(
        "Streams every matching change after the resume point (`Last-Event-ID`, else "
        "`since`; `since=0` is from the first event; neither: from now) in revision order, "
        "then live. A resume point older than the namespace retains (`since=0` included, "
        "once anything was compacted) gives `reset` first. "
        "`snapshot=true` (without a resume point) first sends the matching keys as "
        "`kv.put` events flagged `snapshot`, then `synced` at their revision. "
        "`lease=<id>` keeps that lease alive while the stream is open (presence)."
    ),
)
async def watch(
    ns: NamespaceDep,
    hub: HubDep,
    settings: SettingsDep,
    backend: LeasesDep,
    pattern: PatternQuery = None,
    types: TypesQuery = None,
    session: SessionQuery = None,
    since: Annotated[
        int | None,
        Query(ge=0, le=MAX_REVISION, description="Revision already seen; 0 = all retained"),
    ] = None,
    snapshot: Annotated[
        bool, Query(description="Start with the current matching keys, then `synced`")
    ] = False,
    last_event_id: Annotated[
        str | None,
        Header(alias="Last-Event-ID", description="Resume after this revision (wins over since)"),
    ] = None,
    lease: Annotated[
        str | None,
        Query(description="A live lease this stream keeps alive while it is open"),
    ] = None,
) -> Response:
    flt = EventFilter.parse(pattern, types, session)
    lease_id = check_id(lease, what="lease id") if lease is not None else None
    resume = _last_event_id(last_event_id)
    snapshot_frames: list[Frame] | None = None
    if resume is not None:
        # A reconnecting EventSource: resume where it stopped, snapshot or not.
        since = resume
    elif snapshot:
        if since is not None:
            raise InvalidRequest("Use since or snapshot=true, not both.")
        snapshot_frames, since = await hub.snapshot(ns, flt)
    sub = await hub.subscribe(ns, flt, since)
    keeper: LeaseKeeper | None = None
    if lease_id is not None:
        try:
            keeper = await keep_alive(backend, ns, lease_id)
        except BaseException:
            sub.close()
            raise
    if snapshot_frames is None:
        # The id sets the client's Last-Event-ID before any event arrives, so even a stream
        # cut before its first event resumes from where it started, not from "now".
        opening = b": corkboard watch\nid: %d\n\n" % sub.last
    else:
        # No id until `synced`: a stream cut mid-snapshot starts the snapshot again.
        opening = b": corkboard watch\n\n"
    return FeedResponse(
        sub, opening, snapshot_frames, keeper,
        ping=settings.heartbeat_seconds,
        ping_message_factory=lambda: PING,
        sep="\n",
        send_timeout=settings.watch_send_timeout_seconds,
        shutdown_event=hub.shutdown_event,
        shutdown_grace_period=SHUTDOWN_GRACE_SECONDS,
    )


@router.get(
    "/v1/events",
    response_model=EventList,
    responses={400: {"model": Problem}, 503: {"model": Problem}},
    summary="The change feed as a long poll",
    description=(
        "Returns at once with the matching events after `since` (0, the default, is "
        "from the first event), else waits up to `wait` for one. `revision` is where to "
        "continue. If `since` is older than the namespace retains (0 included, once "
        "anything was compacted), the only event is `reset` and the client must resync."
    ),
)
async def poll_events(
    ns: NamespaceDep,
    hub: HubDep,
    since: Annotated[
        int, Query(ge=0, le=MAX_REVISION, description="Revision already seen")
    ] = 0,
    wait: Annotated[str | None, Query(description="Longest wait, e.g. 30s (at most 300s)")] = None,
    pattern: PatternQuery = None,
    types: TypesQuery = None,
    session: SessionQuery = None,
    limit: Annotated[
        int, Query(ge=1, le=MAX_EVENTS_LIMIT, description="Most events returned")
    ] = 1000,
) -> Response:
    wait_s = parse_duration(wait, what="wait")
    if wait_s > MAX_WAIT_SECONDS:
        raise InvalidTTL(f"wait may be at most {MAX_WAIT_SECONDS:.0f}s.")
    flt = EventFilter.parse(pattern, types, session)
    found, revision = await poll(hub, ns, flt, since, wait_s, limit)
    body = b'{"events":[' + b",".join(f.data for f in found) + b'],"revision":%d}' % revision
    return json_response(body)


async def poll(
    hub: Hub, ns: str, flt: EventFilter, since: int, wait_s: float, limit: int
) -> tuple[list[Frame], int]:
    """The long poll (also MCP's wait_for_change): the matching events after ``since``
    at once, else the first within ``wait_s``; and the revision to continue from."""
    deadline = time.monotonic() + wait_s
    sub = await hub.subscribe(ns, flt, since, page=limit, live=wait_s > 0)
    found: list[Frame] = []
    try:
        while not found:
            remaining = deadline - time.monotonic()
            frames = await sub.next(timeout=max(0.0, remaining), limit=limit)
            if frames is None:
                break
            found = [f for f in frames if f.is_event]
            if remaining <= 0:
                break
        revision = sub.last if found else sub.position
    finally:
        sub.close()
    return found, revision


@router.get("/debug/watch", include_in_schema=False)
async def debug_watch(hub: HubDep, settings: SettingsDep) -> Response:
    """Task and watcher counts of this process (only with CORKBOARD_DEBUG_ENDPOINTS)."""
    if not settings.debug_endpoints:
        raise NotFound("No route for GET /debug/watch.")
    stats: dict[str, Any] = {"tasks": len(asyncio.all_tasks()), **hub.stats()}
    return json_response(orjson.dumps(stats))
