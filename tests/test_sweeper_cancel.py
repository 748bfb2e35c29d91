"""The deadline sweeper stops when cancelled, even when the cancellation lands inside a
Redis call (Python 3.11's asyncio.wait_for, used by redis-py, can swallow it); otherwise
the lifespan's shutdown waits for it forever and the service ignores SIGTERM."""

from __future__ import annotations

import asyncio
import random

from app.backends import backend_from_url
from app.settings import Settings
from tests.conftest import flush


async def test_the_sweeper_always_stops_when_cancelled(redis_url: str) -> None:
    flush(redis_url)
    backend = backend_from_url(redis_url, Settings(backend=redis_url))  # type: ignore[call-arg]
    await backend.start()
    try:
        client = backend.client  # type: ignore[attr-defined]
        await client.sadd("cb:namespaces", *[f"n{i}" for i in range(50)])
        rng = random.Random(7)
        for _ in range(30):
            sweeper = asyncio.create_task(backend.run_sweeper(0.001))
            await asyncio.sleep(rng.random() * 0.01)
            sweeper.cancel()
            done, _ = await asyncio.wait([sweeper], timeout=2)
            assert done, "the sweeper ignored its cancellation"
            assert sweeper.cancelled()
    finally:
        await backend.close()
