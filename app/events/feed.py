"""A namespace's live feed in this process: one reader task follows the backend's change
log and offers each event, encoded once, to every matching watcher's bounded queue.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Protocol

from app.backends.base import Backend, ChangeEvent
from app.events.filters import EventFilter
from app.events.frames import Frame, reset_frame

if TYPE_CHECKING:
    from app.request_metrics import Metrics

logger = logging.getLogger("corkboard.events")

#: Events read from the backend log per call.
LOG_PAGE = 1000
#: Longest pause between attempts of a feed reader whose backend is failing.
MAX_READER_BACKOFF = 5.0


class FeedOwner(Protocol):
    """What a feed needs of the hub that owns it (``app.events.hub.Hub``)."""

    backend: Backend
    metrics: Metrics | None
    progress_seconds: float
    tick_seconds: float

    def detach(self, watcher: Watcher) -> None: ...


#: A stream's way to take its watcher's queued frames at once, with no turn of its own
#: (``Subscription.deliver_now``): True when it wrote them all, False (nothing taken)
#: when its task must send them. Its argument is ``time.monotonic()``.
Sink = Callable[[float], bool]


class Watcher:
    """The hub's side of one subscription: a filter and a bounded queue of frames.

    A stream parked on ``arm()`` with a ``sink`` is not woken for a dispatch's frames:
    the feed's next pass hands them to the sink (``Feed.deliver``), and wakes the stream
    only when the sink cannot take them. With a thousand watchers, that is a thousand
    task switches (resuming the stream's coroutines, its send's layers) fewer per event.
    """

    __slots__ = ("feed", "filter", "frames", "last_active", "limit", "overflowed",
                 "progress_due", "sink", "waiter")

    def __init__(self, feed: Feed, flt: EventFilter, limit: int) -> None:
        self.feed = feed
        self.filter = flt
        self.limit = limit
        self.frames: deque[Frame] = deque()
        self.waiter: asyncio.Future[None] | None = None
        self.sink: Sink | None = None
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
        waiter = self.waiter  # (wake, inlined: once per event and watcher)
        if waiter is not None and not waiter.done():
            if self.sink is None:
                waiter.set_result(None)
            else:  # parked: the sink takes the frames in the feed's next pass
                self.waiter = None  # (the next offers only queue theirs)
                self.feed.ready.append((self, waiter))
        return True

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def arm(self) -> asyncio.Future[None]:
        """A future the next ``wake`` completes, to await without a timeout: a stream's
        steady state, one coroutine less than ``wait``. Nothing to clear afterwards: a
        woken or cancelled future is done, and ``wake`` passes over done ones."""
        waiter = self.waiter = asyncio.get_running_loop().create_future()
        return waiter

    async def wait(self, timeout: float) -> None:
        """Until something arrives or ``timeout`` seconds pass (the long poll's wait;
        a stream awaits ``arm()`` itself)."""
        try:
            await asyncio.wait((self.arm(),), timeout=timeout)
        finally:
            self.waiter = None  # (a waiter left pending by the timeout is not woken)


class Feed:
    """One namespace's live feed in this process: one reader task, many watchers."""

    def __init__(self, hub: FeedOwner, ns: str, position: int) -> None:
        self.hub = hub
        self.ns = ns
        #: Every event up to here has been offered to the watchers attached before it.
        self.position = position
        self.groups: dict[EventFilter, dict[Watcher, None]] = {}
        #: Parked watchers with a sink, offered frames since the last pass (see Watcher),
        #: each with the future its stream awaits.
        self.ready: list[tuple[Watcher, asyncio.Future[None]]] = []
        self._paced: asyncio.TimerHandle | None = None
        self._next_pass = 0.0
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
        self._release()
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
        self.deliver()
        self._detach_all(overflowed)
        metrics = self.hub.metrics
        if metrics is not None:
            metrics.events_published.inc(len(events))
            if overflowed:
                metrics.watch_overflows.inc(len(overflowed))

    def broadcast(self, frame: Frame) -> None:
        overflowed = [w for w in list(self.watchers()) if not w.offer(frame)]
        self.deliver()
        self._detach_all(overflowed)

    def deliver(self) -> None:
        """Hand the parked watchers' frames to their sinks now, or when the pause after
        the last pass has passed (see ``_pass``)."""
        if not self.ready or self._paced is not None:
            return  # (nothing to hand, or a pass is already due)
        wait = self._next_pass - time.monotonic()
        if wait <= 0:
            self._pass()
        else:
            self._paced = asyncio.get_running_loop().call_later(wait, self._pass)

    def _pass(self) -> None:
        """One pass over the parked watchers: each one's sink takes its frames, or its
        stream is woken to send them (when the sink cannot take them, or fails: the
        stream's own send meets the error).

        The next pass waits as long as this one took. With a thousand watchers a pass is
        a thousand socket writes, and a write costs about as much as it carries up to a
        few kilobytes; back to back, the passes would take the whole process and leave
        requests (the writes that make the events) waiting behind them. Spaced so, they
        take at most about half of it, and each carries what arrived meanwhile: a
        fan-out's events wait at most a pass longer, a single watcher's microseconds.
        """
        self._paced = None
        ready, self.ready = self.ready, []
        start = time.monotonic()
        for watcher, waiter in ready:
            if waiter.done():
                continue  # (its stream was cancelled)
            sink = watcher.sink
            try:
                taken = sink is not None and sink(start)
            except Exception:
                logger.warning("feed %s: a stream's sink failed; its task sends instead",
                               self.ns, exc_info=True)
                watcher.sink = None
                taken = False
            if taken:
                watcher.waiter = waiter  # parked again, on the same future
            else:
                waiter.set_result(None)
        end = time.monotonic()
        self._next_pass = end + (end - start)

    def _release(self) -> None:
        """Wake the streams of the watchers a pass would have served (the feed stops)."""
        if self._paced is not None:
            self._paced.cancel()
            self._paced = None
        ready, self.ready = self.ready, []
        for _, waiter in ready:
            if not waiter.done():
                waiter.set_result(None)

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
