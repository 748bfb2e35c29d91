"""The NATS backend's retries of a request no stream answered (app/backends/nats/retry.py):
bounded by the backend's timeout for one call, not by a count that a loaded machine's
leader election outlasts."""

from __future__ import annotations

import asyncio
from itertools import pairwise

from app.backends.nats.retry import FIRST_PAUSE, MAX_PAUSE, Attempts


async def test_the_first_attempt_is_at_once_and_none_begins_past_the_timeout() -> None:
    retries = Attempts(0)
    loop = asyncio.get_running_loop()
    began = loop.time()
    assert await retries.next()
    assert not await retries.next()  # no pause fits in no time: no second attempt
    assert loop.time() - began < FIRST_PAUSE


async def test_attempts_pause_longer_each_time_up_to_the_bound_until_the_timeout() -> None:
    timeout = 1.0
    retries = Attempts(timeout)
    loop = asyncio.get_running_loop()
    began = loop.time()
    starts = []
    while await retries.next():
        starts.append(loop.time() - began)
    ended = loop.time() - began
    # 0, 0.05, 0.15, 0.30, 0.50, 0.75, 1.00 on an idle machine; fewer when sleeps overrun
    assert len(starts) >= 4
    assert starts[0] < FIRST_PAUSE
    gaps = [b - a for a, b in pairwise(starts)]
    for i, gap in enumerate(gaps, start=1):
        assert gap >= min(FIRST_PAUSE * i, MAX_PAUSE) - 0.005  # the loop's clock resolution
    assert starts[-1] <= timeout + 0.2  # the last sleep may overrun a little, no more
    assert ended - starts[-1] < FIRST_PAUSE  # giving up does not sleep
