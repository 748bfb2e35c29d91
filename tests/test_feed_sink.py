"""A parked stream's frames written by the feed itself (``Subscription.write_to``,
``Watcher.sink``, ``Feed.deliver``): each frame goes exactly once, in order, through the
sink or through the stream's own ``next()``, never both; a sink that cannot write or
fails leaves the frames to the stream; the passes are paced; shutdown and overflow still
reach a stream whose frames wait for a pass.

On every engine (the feed reads each one's change log); test_watch.py streams every
engine through the sink on real servers (``StreamBody.now`` writing to uvicorn's
transport).
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from app.events import OVERFLOW, SHUTDOWN, EventFilter, Frame, Hub, Subscription
from app.request_metrics import Metrics
from tests.support import started_hub

NS = "feedsink"
ALL = EventFilter.parse(None, None, None)
_ID = re.compile(rb"^id: (\d+)\n", re.M)


@pytest.fixture
async def hub(backend: str) -> AsyncIterator[Hub]:
    async with started_hub(backend, metrics=Metrics(), queue_size=8) as h:
        yield h


class Stream:
    """A subscription as a watch stream uses it: a task awaiting ``next()`` and a sink
    (``write``) the feed may write to while the task is parked. ``timeline`` has every
    event's revision in the order it left, by either way."""

    def __init__(self, hub: Hub, sub: Subscription, write: Callable[[bytes], bool]) -> None:
        self.hub = hub
        self.sub = sub
        self.written: list[bytes] = []
        self.taken: list[Frame] = []
        self.timeline: list[tuple[str, int]] = []
        self.changed = asyncio.Event()
        self._write = write
        sub.write_to(self.sink)
        self.task = asyncio.create_task(self._consume())

    def sink(self, chunk: bytes) -> bool:
        if not self._write(chunk):
            return False
        self.written.append(chunk)
        self.timeline += [("sink", int(r)) for r in _ID.findall(chunk)]
        self.changed.set()
        return True

    async def _consume(self) -> None:
        while (frames := await self.sub.next()) is not None:
            self.taken += frames
            self.timeline += [("next", f.revision) for f in frames if f.kind == "event"]
            self.changed.set()

    async def until(self, done: Callable[[], bool]) -> None:
        async with asyncio.timeout(10):
            while not done():
                self.changed.clear()
                await self.changed.wait()

    @property
    def parked(self) -> bool:
        watcher = self.sub._watcher
        return watcher is not None and watcher.waiter is not None and not watcher.waiter.done()

    async def until_parked(self) -> None:
        for _ in range(100):  # (turns of the loop, not time)
            if self.parked:
                return
            await asyncio.sleep(0)
        raise AssertionError("the stream never parked")

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        self.sub.close()


async def open_stream(hub: Hub, write: Callable[[bytes], bool]) -> Stream:
    stream = Stream(hub, await hub.subscribe(NS, ALL, None), write)
    await stream.until_parked()
    return stream


async def put(hub: Hub, key: str) -> int:
    return (await hub.backend.kv_put(NS, key, b"1")).entry.revision


async def test_a_parked_streams_frames_go_through_its_sink_and_it_stays_parked(
    hub: Hub,
) -> None:
    stream = await open_stream(hub, lambda chunk: True)
    revisions = [await put(hub, f"k{i}") for i in range(3)]
    await stream.until(lambda: len(stream.timeline) == 3)
    assert stream.timeline == [("sink", r) for r in revisions]
    assert stream.taken == [] and stream.parked  # never woken
    assert stream.sub.last == revisions[-1]
    assert b'"key":"k0"' in stream.written[0] and stream.written[0].startswith(b"id: ")
    assert hub.metrics is not None and hub.metrics.events_delivered.value == 3
    await stream.close()


async def test_a_sink_that_cannot_write_leaves_every_frame_to_the_stream(hub: Hub) -> None:
    stream = await open_stream(hub, lambda chunk: False)
    revisions = [await put(hub, f"k{i}") for i in range(5)]
    await stream.until(lambda: len(stream.timeline) == 5)
    assert stream.timeline == [("next", r) for r in revisions]
    assert stream.written == [] and stream.sub._watcher is not None
    assert stream.sub._watcher.sink is not None  # (it may write the next ones)
    await stream.close()


async def test_each_frame_goes_one_way_exactly_once_and_in_order(hub: Hub) -> None:
    rng = random.Random(15)
    stream = await open_stream(hub, lambda chunk: rng.random() < 0.5)
    revisions = []
    for i in range(60):
        revisions.append(await put(hub, f"k{i % 7}"))
        if rng.random() < 0.5:
            await asyncio.sleep(0)  # (sometimes a dispatch between two writes)
    await stream.until(lambda: len(stream.timeline) == 60)
    assert [r for _, r in stream.timeline] == revisions
    assert {way for way, _ in stream.timeline} == {"sink", "next"}
    assert hub.metrics is not None and hub.metrics.events_delivered.value == 60
    await stream.close()


async def test_a_failing_sink_is_dropped_and_the_stream_sends_instead(
    hub: Hub, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(chunk: bytes) -> bool:
        raise RuntimeError("transport gone wrong")

    stream = await open_stream(hub, broken)
    with caplog.at_level(logging.WARNING, logger="corkboard.events"):
        revisions = [await put(hub, f"k{i}") for i in range(2)]
        await stream.until(lambda: len(stream.timeline) == 2)
    assert stream.timeline == [("next", r) for r in revisions]
    assert stream.sub._watcher is not None and stream.sub._watcher.sink is None
    assert "a stream's sink failed" in caplog.text
    await stream.close()


async def pending_pass(hub: Hub) -> tuple[Stream, list[int]]:
    """A stream whose first pass took 0.5 s, and a second event dispatched since: it
    waits for the next pass (returns the stream and the second event's revision). Half
    a second leaves a networked engine's writes and reads well inside the pause."""
    first = True

    def slow_once(chunk: bytes) -> bool:
        nonlocal first
        if first:
            first = False
            time.sleep(0.5)  # (the pass, not the test, takes the time)
        return True

    stream = await open_stream(hub, slow_once)
    await put(hub, "a")
    await stream.until(lambda: len(stream.timeline) == 1)
    feed = hub.feeds[NS]
    second = await put(hub, "b")
    async with asyncio.timeout(10):
        while feed.position < second:  # (until the feed has dispatched it)
            await asyncio.sleep(0)
    assert feed._paced is not None and feed.ready  # the pass waits
    return stream, [second]


async def test_a_pass_waits_as_long_as_the_last_took_and_carries_what_came_meanwhile(
    hub: Hub,
) -> None:
    stream, waiting = await pending_pass(hub)
    waiting.append(await put(hub, "c"))
    await stream.until(lambda: len(stream.timeline) == 3)
    assert [r for _, r in stream.timeline[1:]] == waiting
    assert len(stream.written) == 2  # the two events in one chunk: one write
    assert stream.taken == []
    await stream.close()


async def test_shutdown_reaches_a_stream_whose_frames_wait_for_a_pass(hub: Hub) -> None:
    stream, waiting = await pending_pass(hub)
    feed = hub.feeds[NS]
    [(_, waiter)] = feed.ready
    hub.begin_shutdown()
    assert waiter.done() and feed._paced is None  # woken at once, not by the pass
    await asyncio.wait_for(stream.task, 10)
    assert [f.revision for f in stream.taken if f.kind == "event"] == waiting
    assert stream.taken[-1].kind == SHUTDOWN
    assert stream.taken[-1].sse.startswith(b": server shutting down\n")


async def test_an_overflow_while_a_pass_waits_ends_the_stream_with_its_frame(
    hub: Hub,
) -> None:
    stream, _ = await pending_pass(hub)
    for i in range(hub.queue_size):  # (the queue holds 8: the ninth frame overflows it)
        await put(hub, f"more{i}")
    await asyncio.wait_for(stream.task, 10)
    assert stream.taken[-1].kind == OVERFLOW
    assert all(way == "sink" for way, _ in stream.timeline)
    assert hub.feeds.get(NS) is None  # detached: the feed ended with its last watcher


async def test_a_long_poll_has_no_sink_and_is_woken_as_before(hub: Hub) -> None:
    sub = await hub.subscribe(NS, ALL, None)
    waiting: asyncio.Task[Any] = asyncio.create_task(sub.next(timeout=10))
    for _ in range(100):
        if sub._watcher is not None and sub._watcher.waiter is not None:
            break
        await asyncio.sleep(0)
    revision = await put(hub, "k")
    frames = await asyncio.wait_for(waiting, 10)
    assert [f.revision for f in frames] == [revision]
    assert sub._watcher is not None and sub._watcher.sink is None
    sub.close()
