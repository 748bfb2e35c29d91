"""The change feed over HTTP (API.md section 3): ``GET /v1/watch`` streams it as
Server-Sent Events, ``GET /v1/events`` serves the same feed as a long poll.

Both go through the process's ``Hub`` (app/events/); this module only parses the
request, picks the resume point and turns frames into a response.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Header, Query
from sse_starlette import EventSourceResponse, ServerSentEvent
from sse_starlette.sse import SendTimeoutError
from starlette.background import BackgroundTask
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from app.errors import InvalidRequest, InvalidTTL, NotFound
from app.events import (
    MAX_BATCH,
    SHUTDOWN_GRACE_SECONDS,
    EventFilter,
    Frame,
    Hub,
    Subscription,
    synced_frame,
)
from app.methods import HEAD_AS_GET
from app.models import EventList, Problem
from app.observability import STREAM_BODY
from app.presence import LeaseKeeper, keep_alive
from app.routers.common import HubDep, LeasesDep, NamespaceDep, SettingsDep, json_response
from app.syntax import MAX_DIGITS, MAX_REVISION, check_id, is_count, parse_duration

router = APIRouter(tags=["watch"])
logger = logging.getLogger("corkboard.watch")

MAX_WAIT_SECONDS = 300.0
MAX_EVENTS_LIMIT = 10_000
_PING = ServerSentEvent(comment="ping", sep="\n")
_PING_BYTES = _PING.encode()


class FeedResponse(EventSourceResponse):
    """sse-starlette's response, with a cheaper send of each chunk of events.

    The library wraps each send in ``anyio.move_on_after(send_timeout)``, a tenth of the
    cost of delivering an event. A client that stops reading blocks the heartbeat send
    as well, so timing only heartbeats still ends a stuck stream, within
    ``heartbeat + send_timeout`` seconds; meanwhile the hub's bounded queue has already
    let go of its events.

    The chunks go through the request observer's body sender (``STREAM_BODY``), past the
    wrappers of the layers inside it, which only look at a response's start and end: with
    a thousand watchers every event costs a thousand sends. The start, the heartbeats and
    the closing send take the whole stack.
    """

    _stream_body: Callable[[bytes], Awaitable[None]] | None = None

    async def _send_with_timeout(self, send: Send, message: Message) -> None:
        body = message.get("body")
        if body == _PING_BYTES:
            await super()._send_with_timeout(send, message)
        elif self._stream_body is not None and message.get("more_body") and body:
            await self._stream_body(body)
        else:
            await send(message)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get(HEAD_AS_GET):
            # HEAD served by this GET route: sse-starlette answers headers only.
            scope = {**scope, "method": "HEAD"}
        self._stream_body = scope.get(STREAM_BODY)
        try:
            await super().__call__(scope, receive, send)
        except SendTimeoutError:
            # Not a server error: the client stopped reading. Its stream is over.
            logger.info("closed a watch stream whose client stopped reading")

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


def _join(frames: list[Frame]) -> bytes:
    return frames[0].sse if len(frames) == 1 else b"".join(f.sse for f in frames)


async def _stream(
    sub: Subscription, opening: bytes, snapshot: list[Frame] | None,
    keeper: LeaseKeeper | None = None,
) -> AsyncIterator[bytes]:
    """The bytes of one SSE stream; frames of live events are shared, never re-encoded."""
    try:
        yield opening
        if snapshot is not None:
            for i in range(0, len(snapshot), MAX_BATCH):
                yield _join(snapshot[i : i + MAX_BATCH])
            yield synced_frame(sub.ns, sub.last).sse
        while True:
            frames = await sub.next()
            if frames is None:
                return
            if frames:
                yield _join(frames)
    finally:
        sub.close()
        if keeper is not None:
            keeper.stop()


async def _close(sub: Subscription, keeper: LeaseKeeper | None = None) -> None:
    sub.close()
    if keeper is not None:
        keeper.stop()


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
        _stream(sub, opening, snapshot_frames, keeper),
        ping=settings.heartbeat_seconds,
        ping_message_factory=lambda: _PING,
        sep="\n",
        send_timeout=settings.watch_send_timeout_seconds,
        shutdown_event=hub.shutdown_event,
        shutdown_grace_period=SHUTDOWN_GRACE_SECONDS,
        # Also when the stream never started (HEAD, early disconnect). A coroutine, so
        # that it runs on the event loop (a plain function would go to a thread).
        background=BackgroundTask(_close, sub, keeper),
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
