"""The change feed (API.md section 3): ``events()`` is the long poll, ``watch()`` the SSE
stream as an iterator that reconnects by itself and resumes with Last-Event-ID, so a
disconnect (a restart, a replica going away, an ``overflow``) loses and repeats nothing.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from types import TracebackType
from typing import Literal

import httpx
import orjson

from corkboard.client._async.base import AsyncBase
from corkboard.client._concurrency import async_sleep
from corkboard.client._protocol import (
    CONTROL_OVERFLOW,
    Call,
    SSEDecoder,
    duration_param,
    duration_seconds,
    params,
    retry_delay,
    watch_item,
    watch_params,
)
from corkboard.client.errors import ConnectionFailed, Unavailable, WatchReset
from corkboard.client.txn import lease_id
from corkboard.client.types import (
    Duration,
    Event,
    EventBatch,
    LeaseRef,
    Progress,
    Reset,
    WatchItem,
)

Types = str | list[str] | tuple[str, ...] | None
#: A stream quiet for this long is taken as dead and reconnected (the server sends a
#: heartbeat every 15 s by default).
DEFAULT_IDLE_TIMEOUT = 60.0


class AsyncFeed(AsyncBase):
    async def events(
        self, since: int = 0, *, wait: Duration | None = None, pattern: str | None = None,
        types: Types = None, session: str | None = None, limit: int | None = None,
    ) -> EventBatch:
        """The events after ``since`` at once, else the first within ``wait``. A resume
        point older than the namespace retains gives a Reset first."""
        query = {**watch_params(pattern, types, session),
                 **params(since=since, wait=duration_param(wait), limit=limit)}
        waited = duration_seconds(wait) if wait is not None else 0.0
        data = await self._json(Call.read("/v1/events", query), timeout=self.timeout + waited)
        items: list[Event | Reset] = [
            Reset.from_json(e) if e.get("type") == "reset" else Event.from_json(e)
            for e in data["events"]
        ]
        return EventBatch(items, data["revision"])

    def watch(
        self, pattern: str | None = None, *, since: int | None = None, types: Types = None,
        session: str | None = None, snapshot: bool = False, progress: bool = False,
        on_reset: Literal["raise", "yield"] = "raise",
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT, give_up_after: float | None = None,
        lease: LeaseRef | None = None,
    ) -> AsyncWatch:
        """Iterate over changes: ``async for item in client.watch("jobs/*", since=41)``.

        Items are Event, Synced (after a snapshot) and Progress (with ``progress=True``).
        A Reset (the resume point is gone) raises WatchReset, or with ``on_reset="yield"``
        is yielded and the watch goes on after it. After any disconnect the watch
        reconnects with Last-Event-ID. The first connection failing raises at once;
        later ones are retried for ``give_up_after`` seconds (None: forever).

        ``lease``: presence. The service keeps that lease alive while the stream is open
        (LeaseNotFound if it has ended); when this process goes away it lapses after its
        ttl, and the keys on it go with it."""
        query = watch_params(pattern, types, session)
        if lease is not None:
            query["lease"] = lease_id(lease)
        return AsyncWatch(
            self, query, since=since, snapshot=snapshot,
            progress=progress, on_reset=on_reset, idle_timeout=idle_timeout,
            give_up_after=give_up_after,
        )


class AsyncWatch:
    """An open watch: iterate it, and close it (``async with``, or ``aclose()``).
    ``last_id`` is the revision it would resume after; ``reconnects`` counts resumes."""

    def __init__(
        self, client: AsyncBase, query: dict[str, str], *, since: int | None, snapshot: bool,
        progress: bool, on_reset: str, idle_timeout: float, give_up_after: float | None,
    ) -> None:
        self.client = client
        self.query = query
        self.since = since
        self.snapshot = snapshot
        self.progress = progress
        self.on_reset = on_reset
        self.idle_timeout = idle_timeout
        self.give_up_after = give_up_after
        self.last_id: str | None = None
        self.reconnects = 0
        self._items: AsyncGenerator[WatchItem, None] | None = None

    def _call(self) -> Call:
        query = dict(self.query)
        headers = {"Accept": "text/event-stream"}
        if self.last_id is not None:
            headers["Last-Event-ID"] = self.last_id
        elif self.snapshot:
            query["snapshot"] = "true"
        elif self.since is not None:
            query["since"] = str(self.since)
        return Call("GET", "/v1/watch", query, headers)

    async def _stream(self) -> AsyncGenerator[WatchItem, None]:
        connected_once = False
        down_since: float | None = None
        attempt = 0
        timeout = httpx.Timeout(self.client.timeout, read=self.idle_timeout)
        while True:
            delay: float | None = None
            try:
                response = await self.client._send(self._call(), stream=True, timeout=timeout)
            except (ConnectionFailed, Unavailable) as exc:
                if not connected_once:
                    raise
                now = time.monotonic()
                down_since = down_since or now
                if self.give_up_after is not None and now - down_since > self.give_up_after:
                    raise
                await async_sleep(retry_delay(attempt, None) if exc.retry_after is None
                                  else min(exc.retry_after, 5.0))
                attempt += 1
                continue
            connected_once = True
            decoder = SSEDecoder(self.last_id)
            try:
                async for line in response.aiter_lines():
                    sse = decoder.feed(line)
                    self.last_id = decoder.last_id
                    if sse is None:
                        continue
                    down_since, attempt = None, 0
                    if sse.event == CONTROL_OVERFLOW:
                        delay = 0.0
                        continue
                    item = watch_item(sse)
                    if isinstance(item, Reset) and self.on_reset == "raise":
                        raise WatchReset(
                            f"the resume point is gone: events up to {item.compacted_revision} "
                            f"were compacted; resync (the feed is at {item.current_revision})",
                            compacted_revision=item.compacted_revision,
                            current_revision=item.current_revision,
                        )
                    if isinstance(item, Progress) and not self.progress:
                        continue
                    if item is not None:
                        yield item
            except (httpx.TransportError, orjson.JSONDecodeError):
                pass  # cut off (or a frame cut mid-way): resume from the last whole event
            finally:
                await response.aclose()
            self.reconnects += 1
            down_since = down_since or time.monotonic()
            if delay is None:
                hint = decoder.retry_ms / 1000 if decoder.retry_ms is not None else None
                delay = hint if hint is not None else retry_delay(attempt, None)
            await async_sleep(min(delay, 5.0))
            attempt += 1

    def __aiter__(self) -> AsyncWatch:
        return self

    async def __anext__(self) -> WatchItem:
        if self._items is None:
            self._items = self._stream()
        return await self._items.__anext__()

    async def aclose(self) -> None:
        if self._items is not None:
            await self._items.aclose()

    async def __aenter__(self) -> AsyncWatch:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<AsyncWatch {self.query} last_id={self.last_id}>"
