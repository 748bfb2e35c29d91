"""The hub: per process, the namespaces' live feeds (created with their first watcher,
ended with their last) and the subscriptions that read them.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import anyio

from app.backends.base import Backend
from app.errors import AtCapacity, BackendUnavailable
from app.events.feed import LOG_PAGE, Feed, Watcher
from app.events.filters import EventFilter
from app.events.frames import Frame
from app.events.snapshot import consistent_snapshot
from app.events.subscription import Subscription

if TYPE_CHECKING:
    from app.request_metrics import Metrics

#: Seconds a closing server leaves streams to send their last frame.
SHUTDOWN_GRACE_SECONDS = 2.0


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
        """The live keys ``flt`` matches as ``kv.put`` frames, consistent at one revision
        (app.events.snapshot); returns the frames and that revision."""
        return await consistent_snapshot(self.backend, ns, flt, self.snapshot_page)

    def stats(self) -> dict[str, int]:
        return {
            "feeds": len(self.feeds),
            "watchers": sum(f.size for f in self.feeds.values()),
        }
