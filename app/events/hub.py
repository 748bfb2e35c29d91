"""The change feed: one reader per namespace in use fans each event out, encoded once,
to every matching watcher's bounded queue; subscriptions resume from any revision.

How a subscription reaches live delivery without a gap or a duplicate:

1. *catch-up*: read the backend's change log from the resume point, page by page, until
   a page comes back short (the log's head is near);
2. *attach*: join the namespace's ``Feed`` (starting its reader when it is the first
   watcher). Attaching does not await, so everything up to the feed's ``position`` has
   already been fanned out and everything after it will reach this watcher's queue;
3. *backfill*: read the log from where catch-up stopped up to that position;
4. *live*: take frames from the queue, skipping any revision already delivered.

Each event's SSE frame is built once, by the feed's reader, and the same ``bytes`` go to
every watcher whose filter matches. A watcher that lets its queue fill up is detached
and told, by a last ``overflow`` event, to resume from the last id it received: memory
stays bounded and nothing is dropped silently. When the log no longer holds a resume
point the subscription says so with a ``reset`` event.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import anyio
import orjson

from app.backends.base import Backend, ChangeEvent, KeyEntry
from app.errors import AtCapacity, BackendUnavailable, InvalidRequest
from app.event_changes import COMPOUND_TYPES, filtered_data, kv_changes
from app.syntax import MATCH_ALL, Pattern, check_id, iso_ms

if TYPE_CHECKING:
    from app.observability import Metrics

logger = logging.getLogger("corkboard.events")

#: The families of event types; ``types=`` accepts these or full types like ``kv.put``.
EVENT_PREFIXES = ("kv", "variable", "lock", "session", "artifact", "txn", "lease")
#: Events read from the backend log per call.
LOG_PAGE = 1000
#: Frames handed to one stream per write at most (they are joined into one send).
MAX_BATCH = 256
#: Seconds a closing server leaves streams to send their last frame.
SHUTDOWN_GRACE_SECONDS = 2.0
#: Longest pause between attempts of a feed reader whose backend is failing.
MAX_READER_BACKOFF = 5.0
#: Attempts at a consistent snapshot before giving up with 503.
SNAPSHOT_ATTEMPTS = 3


# -- filters ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which events a watcher wants: a key pattern, type prefixes, one session.

    Filters are values: watchers with equal filters share one match per event.
    """

    pattern: Pattern = MATCH_ALL
    types: tuple[str, ...] = ()
    session: str | None = None

    @classmethod
    def parse(cls, pattern: str | None, types: str | None, session: str | None) -> EventFilter:
        wanted: tuple[str, ...] = ()
        if types:
            wanted = tuple(sorted({t.strip() for t in types.split(",") if t.strip()}))
            unknown = [t for t in wanted if t.split(".", 1)[0] not in EVENT_PREFIXES]
            if unknown:
                raise InvalidRequest(
                    f"Unknown event types {unknown}: use {', '.join(EVENT_PREFIXES)} "
                    "or full types such as kv.put.",
                    errors=[{"location": ["query", "types"], "message": "unknown event type"}],
                )
        return cls(
            Pattern.compile(pattern) if pattern is not None else MATCH_ALL,
            wanted,
            check_id(session, what="session id") if session else None,
        )

    def accepts(self, type_: str, key: str, session: str | None) -> bool:
        if self.session is not None and session != self.session:
            return False
        if self.types and not any(type_ == t or type_.startswith(t + ".") for t in self.types):
            return False
        return self.pattern is MATCH_ALL or self.pattern.matches(key)

    def matches(self, event: ChangeEvent) -> bool:
        return self.accepts(event.type, event.key, event.session)

    def frame(self, event: ChangeEvent, shared: Frame | None = None) -> Frame | None:
        """The event's frame as this watcher sees it, or None when it does not match.

        A compound event (txn, lease end) keeps only the changes that match; ``shared``
        is the event's unfiltered frame when one was built already.
        """
        if event.type not in COMPOUND_TYPES:
            if not self.matches(event):
                return None
            return shared or Frame.of_event(event)
        data = filtered_data(event, self.pattern, self.types, self.session)
        if data is None:
            return None
        if data is event.data:
            return shared or Frame.of_event(event)
        return Frame(EVENT, event.revision, data, sse_frame(event.revision, event.type, data))


# -- frames ----------------------------------------------------------------------------

EVENT: Final = "event"
RESET: Final = "reset"
PROGRESS: Final = "progress"
SYNCED: Final = "synced"
SNAPSHOT: Final = "snapshot"
OVERFLOW: Final = "overflow"
SHUTDOWN: Final = "shutdown"


def sse_frame(
    revision: int | None,
    event: str | None,
    data: bytes | None,
    *,
    retry_ms: int | None = None,
    comment: str | None = None,
) -> bytes:
    """One Server-Sent Events frame; lines end in LF, a blank line ends the frame."""
    parts: list[bytes] = []
    if comment is not None:
        parts.append(b": " + comment.encode() + b"\n")
    if revision is not None:
        parts.append(b"id: %d\n" % revision)
    if event is not None:
        parts.append(b"event: " + event.encode() + b"\n")
    if data is not None:
        if b"\n" in data or b"\r" in data:  # never from orjson; kept correct regardless
            lines = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
            parts.extend(b"data: " + line + b"\n" for line in lines)
        else:
            parts.append(b"data: " + data + b"\n")
    if retry_ms is not None:
        parts.append(b"retry: %d\n" % retry_ms)
    parts.append(b"\n")
    return b"".join(parts)


class Frame:
    """One item of a stream: its revision, its JSON ``data`` and its SSE bytes.

    Event frames are built once per event and shared by every matching watcher.
    """

    __slots__ = ("data", "kind", "revision", "sse")

    def __init__(self, kind: str, revision: int, data: bytes, sse: bytes) -> None:
        self.kind = kind
        self.revision = revision
        self.data = data
        self.sse = sse

    @classmethod
    def of_event(cls, event: ChangeEvent) -> Frame:
        sse = sse_frame(event.revision, event.type, event.data)
        return cls(EVENT, event.revision, event.data, sse)

    @property
    def is_event(self) -> bool:
        """A change event or a reset: what the long poll returns."""
        return self.kind == EVENT or self.kind == RESET


def _control(kind: str, ns: str, revision: int, *, with_id: bool = True, **fields: object) -> Frame:
    data = orjson.dumps({"type": kind, "ns": ns, "revision": revision, **fields})
    return Frame(kind, revision, data, sse_frame(revision if with_id else None, kind, data))


def reset_frame(ns: str, compacted: int, current: int) -> Frame:
    """The resume point is gone: what is retained starts after ``compacted``; the stream
    continues after ``current`` and the client must resync (e.g. with snapshot=true)."""
    return _control(RESET, ns, current, compacted_revision=compacted, current_revision=current)


def progress_frame(ns: str, revision: int) -> Frame:
    """A quiet stream has seen everything up to ``revision``; its id makes resume cheap."""
    return _control(PROGRESS, ns, revision)


def synced_frame(ns: str, revision: int) -> Frame:
    """The snapshot before it is the state at ``revision``; live events follow it."""
    return _control(SYNCED, ns, revision)


def overflow_frame(ns: str, last: int, queue_size: int, retry_ms: int) -> Frame:
    """The watcher fell more than its queue behind: reconnect with Last-Event-ID ``last``."""
    data = orjson.dumps({
        "type": OVERFLOW, "ns": ns, "revision": last, "last_event_id": last,
        "detail": f"This stream fell more than {queue_size} events behind and was closed; "
                  "reconnect with Last-Event-ID to resume without loss.",
    })
    return Frame(OVERFLOW, last, data, sse_frame(last, OVERFLOW, data, retry_ms=retry_ms))


def shutdown_frame(last: int, retry_ms: int) -> Frame:
    """The server is stopping: a comment, the id to resume from and a reconnect delay."""
    sse = sse_frame(last, None, None, retry_ms=retry_ms, comment="server shutting down")
    return Frame(SHUTDOWN, last, b"", sse)


def snapshot_data(ns: str, entry: KeyEntry) -> bytes:
    """A live key as a ``kv.put`` event flagged ``snapshot``."""
    return orjson.dumps({
        "revision": entry.revision, "type": "kv.put", "ns": ns, "key": entry.key,
        "at": iso_ms(entry.modified_at), "value": orjson.Fragment(entry.value),
        "old_value": None, "snapshot": True,
    })


def _snapshot_from_event(event: ChangeEvent) -> bytes:
    body = orjson.loads(event.data)
    body["old_value"] = None
    body["snapshot"] = True
    return orjson.dumps(body)


async def cancel_until_done(tasks: set[asyncio.Task[None]]) -> None:
    """Cancel ``tasks`` and wait for them, cancelling again while any still runs.

    On Python 3.11 ``asyncio.wait_for`` drops a cancellation that arrives as the awaited
    operation completes, and redis-py sends every command through it when a socket
    timeout is set; one ``cancel()`` can thus be lost. (anyio cancels level-triggered
    for the same reason.)
    """
    pending = set(tasks)
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=0.05)


# -- the hub ---------------------------------------------------------------------------


class Watcher:
    """The hub's side of one subscription: a filter and a bounded queue of frames."""

    __slots__ = ("feed", "filter", "frames", "last_active", "limit", "overflowed",
                 "progress_due", "waiter")

    def __init__(self, feed: Feed, flt: EventFilter, limit: int) -> None:
        self.feed = feed
        self.filter = flt
        self.limit = limit
        self.frames: deque[Frame] = deque()
        self.waiter: asyncio.Future[None] | None = None
        self.overflowed = False
        self.progress_due = False
        self.last_active = time.monotonic()

    def offer(self, frame: Frame) -> bool:
        """Queue ``frame``; False (and the queue dropped) when the watcher overflows now."""
        if self.overflowed:
            return True  # already being detached; it takes nothing more
        if len(self.frames) >= self.limit:
            self.overflowed = True
            self.frames.clear()
            self.wake()
            return False
        self.frames.append(frame)
        self.wake()
        return True

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self, timeout: float | None) -> None:
        """Until something arrives (or ``timeout`` seconds pass)."""
        waiter = self.waiter = asyncio.get_running_loop().create_future()
        try:
            if timeout is None:
                await waiter
            else:
                await asyncio.wait((waiter,), timeout=timeout)
        finally:
            self.waiter = None


class Feed:
    """One namespace's live feed in this process: one reader task, many watchers."""

    def __init__(self, hub: Hub, ns: str, position: int) -> None:
        self.hub = hub
        self.ns = ns
        #: Every event up to here has been offered to the watchers attached before it.
        self.position = position
        self.groups: dict[EventFilter, dict[Watcher, None]] = {}
        self.size = 0
        self.stopped = False
        self.task = asyncio.get_running_loop().create_task(
            self._run(), name=f"corkboard-feed-{ns}"
        )

    def stop(self) -> None:
        """End the reader. From inside its own task (a watcher overflowing during dispatch)
        it only sets the flag: a cancellation a task requests of itself while running can
        be lost inside the Redis client, so the loop checks the flag instead."""
        self.stopped = True
        if asyncio.current_task() is not self.task:
            self.task.cancel()

    def add(self, watcher: Watcher) -> None:
        self.groups.setdefault(watcher.filter, {})[watcher] = None
        self.size += 1

    def remove(self, watcher: Watcher) -> bool:
        group = self.groups.get(watcher.filter)
        if group is None or watcher not in group:
            return False
        del group[watcher]
        if not group:
            del self.groups[watcher.filter]
        self.size -= 1
        return True

    def watchers(self) -> Iterable[Watcher]:
        for group in self.groups.values():
            yield from group

    def dispatch(self, events: list[ChangeEvent]) -> None:
        """Offer each event, encoded once, to every matching watcher; then advance."""
        overflowed: list[Watcher] = []
        for event in events:
            frame: Frame | None = None
            for flt, group in self.groups.items():
                seen = flt.frame(event, frame)
                if seen is None:
                    continue
                if seen.data is event.data:
                    frame = seen  # the unfiltered frame, shared by every group it suits
                for watcher in group:
                    if not watcher.offer(seen):
                        overflowed.append(watcher)
        self.position = events[-1].revision
        self._detach_all(overflowed)
        metrics = self.hub.metrics
        if metrics is not None:
            metrics.events_published.inc(len(events))
            if overflowed:
                metrics.watch_overflows.inc(len(overflowed))

    def broadcast(self, frame: Frame) -> None:
        self._detach_all([w for w in list(self.watchers()) if not w.offer(frame)])

    def _detach_all(self, watchers: list[Watcher]) -> None:
        for watcher in watchers:
            self.hub.detach(watcher)

    def tick(self, now: float) -> None:
        """Mark watchers quiet for the progress interval so they send ``progress``."""
        quiet = self.hub.progress_seconds
        for watcher in self.watchers():
            if not watcher.frames and now - watcher.last_active >= quiet:
                watcher.progress_due = True
                watcher.wake()

    async def _run(self) -> None:
        hub = self.hub
        loop = asyncio.get_running_loop()
        next_tick = loop.time() + hub.tick_seconds
        backoff = 0.05
        while not self.stopped:
            try:
                batch = await hub.backend.read_events(
                    self.ns, self.position, limit=LOG_PAGE,
                    timeout=max(0.0, next_tick - loop.time()),
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the feed outlives a backend outage; it resumes
                logger.warning("feed %s: reading the change log failed: %s", self.ns, exc)
                await asyncio.sleep(backoff)
                backoff = min(MAX_READER_BACKOFF, backoff * 2)
                continue
            backoff = 0.05
            if self.stopped:
                return
            if self.position < batch.compacted_revision or self.position > batch.current_revision:
                # Fell behind retention, or the log went backwards (data loss): say so.
                logger.warning(
                    "feed %s: events after %d are gone (compacted %d, current %d)",
                    self.ns, self.position, batch.compacted_revision, batch.current_revision,
                )
                self.position = batch.current_revision
                if hub.metrics is not None:
                    hub.metrics.watch_resets.inc(self.size)
                self.broadcast(
                    reset_frame(self.ns, batch.compacted_revision, batch.current_revision)
                )
            elif batch.events:
                self.dispatch(batch.events)
            now = loop.time()
            if now >= next_tick:
                self.tick(time.monotonic())
                next_tick = now + hub.tick_seconds


class Hub:
    """Per process: the namespaces' feeds, created on first watcher, ended with the last."""

    def __init__(
        self,
        backend: Backend,
        *,
        queue_size: int = 4096,
        progress_seconds: float = 15.0,
        retry_ms: int = 1000,
        snapshot_page: int = 1000,
        metrics: Metrics | None = None,
        max_watchers: int = 10_000,
    ) -> None:
        self.backend = backend
        self.metrics = metrics
        self.max_watchers = max_watchers
        #: Subscriptions open in this process (streams and long polls), capped.
        self.open_subscriptions = 0
        self.queue_size = queue_size
        self.progress_seconds = progress_seconds
        self.tick_seconds = max(0.02, min(progress_seconds / 2, 5.0))
        self.retry_ms = retry_ms
        self.snapshot_page = snapshot_page
        self.feeds: dict[str, Feed] = {}
        #: Readers of feeds that lost their last watcher, until they have finished.
        self._retiring: set[asyncio.Task[None]] = set()
        self.closing = False
        #: Set by sse-starlette on every stream when the server begins to shut down.
        self.shutdown_event = anyio.Event()
        self._shutdown_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._shutdown_task = asyncio.get_running_loop().create_task(
            self._await_shutdown(), name="corkboard-hub-shutdown"
        )

    async def _await_shutdown(self) -> None:
        await self.shutdown_event.wait()
        self.begin_shutdown()

    def begin_shutdown(self) -> None:
        """Stop fanning out; every stream sends what it holds, a resume id and retry:."""
        if self.closing:
            return
        self.closing = True
        for feed in self.feeds.values():
            feed.stop()
            for watcher in feed.watchers():
                watcher.wake()

    async def close(self) -> None:
        """End every stream and wait for every reader, so no connection is left behind."""
        self.begin_shutdown()
        tasks = {f.task for f in self.feeds.values()} | self._retiring
        if self._shutdown_task is not None:
            tasks.add(self._shutdown_task)
        await cancel_until_done(tasks)

    def attach(self, ns: str, flt: EventFilter, last: int) -> tuple[Watcher, int]:
        """Join ``ns``'s feed; returns the watcher and the revision live delivery follows.

        A new feed starts at ``last``: the caller has just read the log up to there.
        """
        feed = self.feeds.get(ns)
        if feed is None:
            feed = self.feeds[ns] = Feed(self, ns, last)
        watcher = Watcher(feed, flt, self.queue_size)
        feed.add(watcher)
        return watcher, feed.position

    def detach(self, watcher: Watcher) -> None:
        """Leave the feed; the last watcher to leave ends the feed's reader at once."""
        feed = watcher.feed
        if not feed.remove(watcher):
            return
        if feed.size == 0 and self.feeds.get(feed.ns) is feed:
            del self.feeds[feed.ns]
            feed.stop()
            self._retiring.add(feed.task)
            feed.task.add_done_callback(self._retiring.discard)

    async def subscribe(
        self,
        ns: str,
        flt: EventFilter,
        since: int | None,
        *,
        page: int = LOG_PAGE,
        live: bool = True,
    ) -> Subscription:
        """A subscription to events after ``since`` (None: from now; 0: all retained).

        With ``live=False`` it ends where the log ends instead of joining the feed.
        """
        if self.closing:
            raise BackendUnavailable("The service is shutting down; reconnect elsewhere.")
        if self.open_subscriptions >= self.max_watchers:
            raise AtCapacity(
                f"This process serves its maximum of {self.max_watchers} watchers; retry "
                "later or through another replica (CORKBOARD_MAX_WATCHERS)."
            )
        if since is None:
            # Live from now: nothing to catch up on, join the feed at once.
            sub = Subscription(self, ns, flt, await self.backend.current_revision(ns), page=page)
            sub.attach()
        else:
            sub = Subscription(self, ns, flt, since, page=page, live=live)
        self.open_subscriptions += 1
        if self.metrics is not None:
            self.metrics.watchers.inc()
        return sub

    async def snapshot(self, ns: str, flt: EventFilter) -> tuple[list[Frame], int]:
        """The live keys ``flt`` matches as ``kv.put`` frames, consistent at one revision.

        Listing pages are each atomic at their own revision; the log between the first
        and the last page's revision is replayed onto the collected keys, so the result
        is the state at the last page's revision. Returns the frames and that revision.
        """
        kv_wanted = flt.session is None and (
            not flt.types or any(t == "kv" or t == "kv.put" for t in flt.types)
        )
        if not kv_wanted:
            return [], await self.backend.current_revision(ns)
        for _ in range(SNAPSHOT_ATTEMPTS):
            found = await self._consistent_keys(ns, flt.pattern)
            if found is not None:
                entries, revision = found
                frames = [
                    Frame(SNAPSHOT, rev, data, sse_frame(None, "kv.put", data))
                    for _, (rev, data) in sorted(entries.items())
                ]
                return frames, revision
        raise BackendUnavailable(
            "The namespace changed faster than a consistent snapshot could be read; retry."
        )

    async def _consistent_keys(
        self, ns: str, pattern: Pattern
    ) -> tuple[dict[str, tuple[int, bytes]], int] | None:
        entries: dict[str, tuple[int, bytes]] = {}
        first: int | None = None
        after: str | None = None
        while True:
            page = await self.backend.kv_list(ns, pattern, limit=self.snapshot_page, after=after)
            if first is None:
                first = page.revision
            last = page.revision
            for entry in page.items:
                entries[entry.key] = (entry.revision, snapshot_data(ns, entry))
            if page.next_cursor is None:
                break
            after = page.next_cursor
            await asyncio.sleep(0)  # let other requests in between pages
        assert first is not None
        position = first
        while position < last:
            batch = await self.backend.read_events(ns, position, limit=LOG_PAGE)
            if batch.compacted_revision > position or not batch.events:
                return None  # the log no longer covers the pages: start again
            for event in batch.events:
                if event.revision > last:
                    break
                position = event.revision
                if event.type in COMPOUND_TYPES:
                    for change in kv_changes(event):
                        if pattern.matches(change.key):
                            _replay(entries, change)
                elif event.type.startswith("kv.") and pattern.matches(event.key):
                    _replay(entries, event)
            if batch.events[-1].revision >= last:
                break
        return entries, last

    def stats(self) -> dict[str, int]:
        return {
            "feeds": len(self.feeds),
            "watchers": sum(f.size for f in self.feeds.values()),
        }


def _replay(entries: dict[str, tuple[int, bytes]], event: ChangeEvent) -> None:
    """Apply one logged key change to collected snapshot entries.

    Each listing page already shows its keys at its own revision, so only a change newer
    than what was collected for the key is applied; replayed in order, the last change of
    each key wins, whichever page the key was on.
    """
    held = entries.get(event.key)
    if held is not None and held[0] >= event.revision:
        return
    if event.type == "kv.put":
        entries[event.key] = (event.revision, _snapshot_from_event(event))
    else:
        entries.pop(event.key, None)


# -- subscriptions ---------------------------------------------------------------------

CATCHUP, BACKFILL, LIVE, CLOSED = "catchup", "backfill", "live", "closed"


class Subscription:
    """One client's ordered view of a namespace's events after a revision.

    ``next()`` returns the next frames in revision order, each event once: first from
    the backend's log, then from the hub's live feed. ``last`` is the revision up to
    which the client has everything that matched (its Last-Event-ID).
    """

    def __init__(
        self,
        hub: Hub,
        ns: str,
        flt: EventFilter,
        since: int,
        *,
        page: int = LOG_PAGE,
        live: bool = True,
    ) -> None:
        self.hub = hub
        self.ns = ns
        self.filter = flt
        self.last = since
        self.page = page
        self.phase = CATCHUP
        self._join_feed = live
        self._live_from = 0
        self._watcher: Watcher | None = None
        self._closed = False

    def close(self) -> None:
        if self._watcher is not None:
            self.hub.detach(self._watcher)
            self._watcher = None
        if not self._closed:
            self._closed = True
            self.hub.open_subscriptions -= 1
            if self.hub.metrics is not None:
                self.hub.metrics.watchers.dec()
        self.phase = CLOSED

    def _end(self, frame: Frame) -> list[Frame]:
        self.close()
        return [frame]

    async def next(
        self, timeout: float | None = None, limit: int = MAX_BATCH
    ) -> list[Frame] | None:
        """The next frames (at most ``limit``); [] when ``timeout`` passed while live;
        None once the subscription has ended."""
        frames = await self._next(timeout, limit)
        metrics = self.hub.metrics
        if frames and metrics is not None:
            metrics.events_delivered.inc(sum(1 for f in frames if f.kind == EVENT))
        return frames

    async def _next(self, timeout: float | None, limit: int) -> list[Frame] | None:
        while True:
            if self.phase == CLOSED:
                return None
            if self.hub.closing:
                pending = self._drain(limit) if self.phase == LIVE else []
                if pending:
                    return pending
                return self._end(shutdown_frame(self.last, self.hub.retry_ms))
            if self.phase != LIVE:
                logged = await self._read_log()
                if logged:
                    return logged
                continue
            queued = await self._live(timeout, limit)
            if queued is not None:
                return queued
            if timeout is not None:
                return []

    async def _read_log(self) -> list[Frame]:
        """One page of the log after ``last`` (up to the live start while backfilling)."""
        batch = await self.hub.backend.read_events(self.ns, self.last, limit=self.page)
        # Older than the log (since=0 included, once anything was compacted): reset.
        if self.last < batch.compacted_revision or self.last > batch.current_revision:
            self.last = batch.current_revision
            frame = reset_frame(self.ns, batch.compacted_revision, batch.current_revision)
            if self.hub.metrics is not None:
                self.hub.metrics.watch_resets.inc()
            if self.phase == BACKFILL and self.last >= self._live_from:
                self.phase = LIVE
            return [frame]
        bound = self._live_from if self.phase == BACKFILL else None
        frames: list[Frame] = []
        flt = self.filter
        reached = False
        for event in batch.events:
            if bound is not None and event.revision > bound:
                reached = True
                break
            seen = flt.frame(event)
            if seen is not None:
                frames.append(seen)
            self.last = event.revision
        if self.phase == CATCHUP:
            if len(batch.events) < self.page:
                if self._join_feed:
                    self.attach()
                else:
                    self.phase = CLOSED
        elif reached or not batch.events or self.last >= self._live_from:
            self.phase = LIVE
            self._watcher_started()
        return frames

    def attach(self) -> None:
        self._watcher, self._live_from = self.hub.attach(self.ns, self.filter, self.last)
        if self.last < self._live_from:
            self.phase = BACKFILL
        else:
            self.phase = LIVE
            self._watcher_started()

    def _watcher_started(self) -> None:
        if self._watcher is not None:
            self._watcher.last_active = time.monotonic()

    def _drain(self, limit: int) -> list[Frame]:
        watcher = self._watcher
        out: list[Frame] = []
        if watcher is None:
            return out
        frames = watcher.frames
        last = self.last
        while frames and len(out) < limit:
            frame = frames.popleft()
            if frame.revision > last or frame.kind == RESET:
                last = frame.revision
                out.append(frame)
        self.last = last
        return out

    async def _live(self, timeout: float | None, limit: int) -> list[Frame] | None:
        """Frames from the queue; None when ``timeout`` passed with nothing to say."""
        watcher = self._watcher
        assert watcher is not None
        if not watcher.frames and not watcher.overflowed and not watcher.progress_due:
            await watcher.wait(timeout)
            if self.hub.closing:
                return self._drain(limit) or None
        out = self._drain(limit)
        if out:
            watcher.last_active = time.monotonic()
            watcher.progress_due = False
            return out
        if watcher.overflowed:
            hub = self.hub
            return self._end(overflow_frame(self.ns, self.last, hub.queue_size, hub.retry_ms))
        if watcher.progress_due:
            watcher.progress_due = False
            watcher.last_active = time.monotonic()
            self.last = max(self.last, watcher.feed.position)
            return [progress_frame(self.ns, self.last)]
        return None

    @property
    def position(self) -> int:
        """Everything matching up to here has been returned (for the long poll)."""
        if self.phase == LIVE and self._watcher is not None and not self._watcher.frames:
            return max(self.last, self._watcher.feed.position)
        return self.last
