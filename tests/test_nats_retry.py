"""The NATS backend's retries of a request no stream answered (app/backends/nats/retry.py):
bounded by the backend's timeout for one call, not by a count that a loaded machine's
leader election outlasts."""

from __future__ import annotations

import asyncio
from itertools import pairwise

import pytest

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


async def test_a_write_no_stream_takes_is_503_at_the_timeout_and_stores_nothing(
    nats_url: str,
) -> None:
    """The retries' end on a real server: the namespace's stream exists but no longer
    takes its bucket's subjects (an operator changed them), so every publish meets no
    stream. A write, one message or an atomic batch (a write on a lease), is refused (503
    backend_unavailable) once the backend's timeout has passed, not before and not much
    after, nothing is stored, and writes work again as soon as the stream takes the
    subjects back."""
    import nats

    from app.backends.nats import NatsBackend
    from app.backends.nats.names import stream_of
    from app.errors import BackendUnavailable
    from tests.nats_server import flush_nats

    flush_nats(nats_url)
    timeout = 1.0
    engine = NatsBackend(nats_url, timeout=timeout)
    await engine.start()
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        await engine.kv_put("retries", "a", b"1")
        await engine.lease_grant("retries", "agent-1", 60_000)
        config = (await js.stream_info(stream_of("retries"))).config
        subjects = config.subjects
        config.subjects = ["elsewhere.retries.>"]
        await js.update_stream(config)
        stored = (await js.stream_info(stream_of("retries"))).state.messages

        loop = asyncio.get_running_loop()
        for lease in (None, "agent-1"):  # store.publish, then batch.publish_batch
            began = loop.time()
            with pytest.raises(BackendUnavailable) as refused:
                await engine.kv_put("retries", "b", b"2", lease=lease)
            took = loop.time() - began
            assert refused.value.code == "backend_unavailable"
            assert "No stream took the write to the NATS bucket 'retries'" in (
                refused.value.detail)
            assert refused.value.status == 503 and refused.value.headers["Retry-After"]
            assert timeout - MAX_PAUSE <= took < timeout + 1.0, (lease, took)
            assert (await js.stream_info(stream_of("retries"))).state.messages == stored

        config.subjects = subjects
        await js.update_stream(config)
        await engine.kv_put("retries", "b", b"2", lease="agent-1")
        entry = await engine.kv_get("retries", "b")
        assert entry is not None and entry.value == b"2"
    finally:
        await nc.close()
        await engine.close()
