"""Cancels that a client library swallows (nats-py's publish, redis-py's reads: a cancel
that lands inside one finishes the call as if none came, or raises an error of the
library's own) still stop what they cancel: a presence keeper (app/presence.py) on every
engine, the Redis lock wake-up listener (app/backends/redis/wakeups.py), and each
backend's error boundary, where a failure in a task being cancelled is that cancel."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Literal

import nats.js.errors
import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from app.backends import backend_from_url
from app.backends.base import Backend
from app.backends.nats.store import mapped_errors as nats_mapped_errors
from app.backends.redis.store import mapped_errors as redis_mapped_errors
from app.backends.redis.wakeups import LockWakeups
from app.domain.leases import LeaseInfo
from app.errors import BackendUnavailable
from app.presence import LeaseKeeper
from app.settings import Settings
from tests.conftest import flush


@pytest.fixture
async def engine(backend: str) -> AsyncIterator[Backend]:
    b = backend_from_url(backend, Settings(backend=backend))  # type: ignore[call-arg]
    await b.start()
    try:
        yield b
    finally:
        await b.close()


class Swallowing:
    """The real engine's keepalives, the first of which holds until cancelled and then
    swallows the cancel: finishing the call as if no cancel came (``returns``), or
    raising an error of its own, a 503 at the boundary (``raises``)."""

    def __init__(self, engine: Backend, how: Literal["returns", "raises"]) -> None:
        self.engine = engine
        self.how = how
        self.calls = 0
        self.entered = asyncio.Event()

    async def lease_keepalive(self, ns: str, lease_id: str) -> LeaseInfo:
        self.calls += 1
        if self.calls > 1:
            return await self.engine.lease_keepalive(ns, lease_id)
        self.entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            if self.how == "raises":
                raise BackendUnavailable("TooManyStalledMsgsError") from None
            return await self.engine.lease_keepalive(ns, lease_id)
        raise AssertionError("unreachable")


@pytest.mark.parametrize("how", ["returns", "raises"])
async def test_a_keeper_stops_when_its_keepalive_swallows_the_cancel(
    engine: Backend, how: Literal["returns", "raises"],
) -> None:
    await engine.lease_grant("presence", "agent", 60_000)
    backend = Swallowing(engine, how)
    keeper = LeaseKeeper(backend, "presence", "agent", ttl_ms=30)  # type: ignore[arg-type]
    keeper.start()
    async with asyncio.timeout(10):
        await backend.entered.wait()
    keeper.stop()
    assert keeper.task is not None
    async with asyncio.timeout(10):
        await asyncio.gather(keeper.task, return_exceptions=True)
    assert backend.calls == 1  # no keepalive after the stop


class SwallowingPubSub:
    """A real subscription whose read turns the first cancel (of all the subscriptions
    sharing ``swallowed``) into a ConnectionError."""

    def __init__(self, real: Any, swallowed: list[bool]) -> None:
        self.real = real
        self.swallowed = swallowed
        self.reading = asyncio.Event()

    async def subscribe(self, *channels: str) -> None:
        await self.real.subscribe(*channels)

    async def get_message(self, **options: Any) -> Any:
        self.reading.set()
        try:
            return await self.real.get_message(**options)
        except asyncio.CancelledError:
            if self.swallowed:
                raise
            self.swallowed.append(True)
            raise RedisConnectionError("Connection closed by server.") from None

    async def aclose(self) -> None:
        await self.real.aclose()


async def test_the_lock_wake_up_listener_stops_when_a_read_swallows_the_cancel(
    redis_url: str,
) -> None:
    flush(redis_url)
    client = Redis.from_url(redis_url)
    subscriptions: list[SwallowingPubSub] = []
    swallowed: list[bool] = []

    class Client:
        def pubsub(self) -> SwallowingPubSub:
            subscriptions.append(SwallowingPubSub(client.pubsub(), swallowed))
            return subscriptions[-1]

    wakeups = LockWakeups(Client())  # type: ignore[arg-type]
    try:
        wakeups.register("t")
        async with asyncio.timeout(10):
            await wakeups.subscribed.wait()
            await subscriptions[0].reading.wait()
        task = wakeups._task
        assert task is not None
        task.cancel()
        async with asyncio.timeout(10):
            await asyncio.gather(task, return_exceptions=True)
        assert swallowed and task.cancelled()
        assert len(subscriptions) == 1  # not subscribed again
    finally:
        await wakeups.close()
        await client.aclose()


@pytest.mark.parametrize("boundary, failure", [
    (lambda: nats_mapped_errors("nats://127.0.0.1:1"), nats.js.errors.TooManyStalledMsgsError),
    (lambda: redis_mapped_errors("redis://127.0.0.1:1"), RedisConnectionError),
], ids=["nats", "redis"])
async def test_a_failure_in_a_task_being_cancelled_is_the_cancel(
    boundary: Callable[[], AbstractAsyncContextManager[None]], failure: type[Exception],
) -> None:
    async def failing(cancelled: bool) -> Any:
        task = asyncio.current_task()
        assert task is not None
        if cancelled:
            task.cancel()
        async with boundary():
            raise failure

    with pytest.raises(asyncio.CancelledError):
        await asyncio.get_running_loop().create_task(failing(True))
    with pytest.raises(BackendUnavailable):
        await asyncio.get_running_loop().create_task(failing(False))
