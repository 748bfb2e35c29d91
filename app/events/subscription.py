"""One client's ordered view of a namespace's events after a revision: catch-up from the
log, attach to the feed, backfill up to the feed's position, then live (see app.events).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Protocol

from app.backends.base import Backend
from app.events.feed import LOG_PAGE, Watcher
from app.events.filters import EventFilter
from app.events.frames import (
    EVENT,
    RESET,
    Frame,
    overflow_frame,
    progress_frame,
    reset_frame,
    shutdown_frame,
)

if TYPE_CHECKING:
    from app.request_metrics import Metrics

#: Frames handed to one stream per write at most (they are joined into one send).
MAX_BATCH = 256

CATCHUP, BACKFILL, LIVE, CLOSED = "catchup", "backfill", "live", "closed"


class SubscriptionOwner(Protocol):
    """What a subscription needs of the hub that opened it (``app.events.hub.Hub``)."""

    backend: Backend
    metrics: Metrics | None
    closing: bool
    queue_size: int
    retry_ms: int
    #: Subscriptions open in the process; a subscription takes itself off when closed.
    open_subscriptions: int

    def attach(self, ns: str, flt: EventFilter, last: int) -> tuple[Watcher, int]: ...

    def detach(self, watcher: Watcher) -> None: ...


class Subscription:
    """One client's ordered view of a namespace's events after a revision.

    ``next()`` returns the next frames in revision order, each event once: first from
    the backend's log, then from the hub's live feed. ``last`` is the revision up to
    which the client has everything that matched (its Last-Event-ID).
    """

    def __init__(
        self,
        hub: SubscriptionOwner,
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
        self._write_now: Callable[[bytes], bool] | None = None
        self._closed = False

    def write_to(self, write_now: Callable[[bytes], bool] | None) -> None:
        """Let the feed write this subscription's live frames with ``write_now`` while
        its stream is parked (``deliver_now``). ``write_now(chunk)`` writes the chunk at
        once and answers True, or writes nothing and answers False (the stream's task
        then sends it)."""
        self._write_now = write_now
        self._set_sink()

    def _set_sink(self) -> None:
        if self._watcher is not None:
            self._watcher.sink = self.deliver_now if self._write_now is not None else None

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
            # Live: wait here, not in a coroutine of its own (one frame less to resume
            # for every send of a stream).
            watcher = self._watcher
            assert watcher is not None
            if not watcher.frames and not watcher.overflowed and not watcher.progress_due:
                if timeout is None:
                    await watcher.arm()
                else:
                    await watcher.wait(timeout)
                if self.hub.closing:
                    pending = self._drain(limit)
                    if pending:
                        return pending
                    if timeout is not None:
                        return []
                    continue
            queued = self._take(watcher, limit)
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
        self._count_delivered(len(frames))  # (a filter's frames are events)
        return frames

    def attach(self) -> None:
        self._watcher, self._live_from = self.hub.attach(self.ns, self.filter, self.last)
        self._set_sink()
        if self.last < self._live_from:
            self.phase = BACKFILL
        else:
            self.phase = LIVE
            self._watcher_started()

    def _watcher_started(self) -> None:
        if self._watcher is not None:
            self._watcher.last_active = time.monotonic()

    def _fresh(self, frames: Iterable[Frame], limit: int) -> tuple[list[Frame], int, int, int]:
        """What ``next()`` passes on from the front of ``frames``: those after ``last``
        (a reset always), at most ``limit``. Returns them, how many of ``frames`` that
        read, the revision they reach, and how many are events."""
        out: list[Frame] = []
        last = self.last
        read = events = 0
        for frame in frames:
            if len(out) == limit:
                break
            read += 1
            if frame.revision > last or frame.kind == RESET:
                last = frame.revision
                out.append(frame)
                if frame.kind == EVENT:
                    events += 1
        return out, read, last, events

    def _count_delivered(self, events: int) -> None:
        metrics = self.hub.metrics
        if events and metrics is not None:
            metrics.events_delivered.inc(events)

    def _drain(self, limit: int) -> list[Frame]:
        watcher = self._watcher
        if watcher is None:
            return []
        frames = watcher.frames
        out, read, self.last, events = self._fresh(frames, limit)
        if read == len(frames):
            frames.clear()
        else:
            for _ in range(read):
                frames.popleft()
        self._count_delivered(events)
        return out

    def deliver_now(self, now: float) -> bool:
        """The watcher's sink (``app.events.feed.Watcher``): write what its queue holds
        as ``next()`` would return it, in one chunk; False, with nothing taken, for what
        only ``next()`` says (an overflow, a progress frame, the shutdown, more than a
        batch) or when the chunk cannot be written now."""
        watcher = self._watcher
        write = self._write_now
        if (
            watcher is None or write is None or watcher.overflowed or watcher.progress_due
            or self.hub.closing
        ):
            return False
        frames = watcher.frames
        if len(frames) > MAX_BATCH:
            return False
        out, _, last, events = self._fresh(frames, MAX_BATCH)
        if out and not write(out[0].sse if len(out) == 1 else b"".join(f.sse for f in out)):
            return False
        frames.clear()  # (frames all at or before ``last`` are dropped, as next() drops them)
        if out:
            self.last = last
            watcher.last_active = now
            metrics = self.hub.metrics  # (_count_delivered, inlined: once per delivery)
            if events and metrics is not None:
                metrics.events_delivered.inc(events)
        return True

    def _take(self, watcher: Watcher, limit: int) -> list[Frame] | None:
        """What the live queue has to say now: frames, or an overflow or progress frame;
        None when nothing."""
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
