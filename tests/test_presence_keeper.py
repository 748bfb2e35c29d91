"""A presence keeper (app/presence.py) stops when its stream closes, also when the cancel
lands inside a keepalive and the client library swallows it; and a NATS failure raised
in a task being cancelled is that cancel (app/backends/nats/store.py, mapped_errors)."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

import nats.js.errors
import pytest

from app.backends.nats import NatsBackend
from app.backends.nats.store import mapped_errors
from app.domain.leases import LeaseInfo
from app.errors import BackendUnavailable
from app.presence import LeaseKeeper


class Swallowing:
    """The real engine's keepalives, the first of which holds until cancelled and then
    swallows the cancel as nats-py's publish can: finishing the call as if no cancel
    came (``returns``), or raising an error of its own (``raises``)."""

    def __init__(self, engine: NatsBackend, how: Literal["returns", "raises"]) -> None:
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
                raise BackendUnavailable("nats: TooManyStalledMsgsError") from None
            return await self.engine.lease_keepalive(ns, lease_id)
        raise AssertionError("unreachable")


@pytest.mark.parametrize("how", ["returns", "raises"])
async def test_a_keeper_stops_when_its_keepalive_swallows_the_cancel(
    nats_engine: NatsBackend, how: Literal["returns", "raises"],
) -> None:
    await nats_engine.lease_grant("presence", "agent", 60_000)
    backend = Swallowing(nats_engine, how)
    keeper = LeaseKeeper(backend, "presence", "agent", ttl_ms=30)  # type: ignore[arg-type]
    keeper.start()
    async with asyncio.timeout(10):
        await backend.entered.wait()
    keeper.stop()
    assert keeper.task is not None
    async with asyncio.timeout(10):
        await asyncio.gather(keeper.task, return_exceptions=True)
    assert backend.calls == 1  # no keepalive after the stop


async def test_a_nats_failure_in_a_task_being_cancelled_is_the_cancel() -> None:
    async def failing(cancelled: bool) -> Any:
        task = asyncio.current_task()
        assert task is not None
        if cancelled:
            task.cancel()
        async with mapped_errors("nats://127.0.0.1:1"):
            raise nats.js.errors.TooManyStalledMsgsError

    with pytest.raises(asyncio.CancelledError):
        await asyncio.get_running_loop().create_task(failing(True))
    with pytest.raises(BackendUnavailable):
        await asyncio.get_running_loop().create_task(failing(False))
