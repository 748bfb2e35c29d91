"""What a key's GET and PUT cost on NATS, counted as the messages the backend's
connection sends (each JetStream request is one): a read of a key is its direct get and
its expiry override's, in parallel, whether or not the namespace exists (a missing one
is one stream info, not a direct get and two)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from app.backends.nats import NatsBackend
from tests.nats_server import flush_nats


@pytest.fixture
async def engine(nats_url: str) -> AsyncIterator[NatsBackend]:
    flush_nats(nats_url)
    backend = NatsBackend(nats_url)
    await backend.start()
    try:
        yield backend
    finally:
        await backend.close()


def sent(engine: NatsBackend) -> int:
    return int(engine.store.nc.stats["out_msgs"])


async def test_a_get_is_two_requests_whether_or_not_the_namespace_exists(
    engine: NatsBackend,
) -> None:
    for _ in range(2):  # not cached: the namespace may be made by another process
        before = sent(engine)
        assert await engine.kv_get("nowhere", "k") is None
        assert sent(engine) - before == 2
        assert "nowhere" not in engine.store.buckets
    await engine.kv_put("here", "k", b"1")
    before = sent(engine)
    entry = await engine.kv_get("here", "k")
    assert entry is not None and entry.value == b"1"
    assert sent(engine) - before == 2
    before = sent(engine)
    assert await engine.kv_get("here", "other") is None
    assert sent(engine) - before == 2


async def test_a_get_at_a_revision_reads_the_history_and_the_override_only(
    engine: NatsBackend,
) -> None:
    first = (await engine.kv_put("here", "k", b"1")).entry.revision
    await engine.kv_put("here", "k", b"2")
    before = sent(engine)
    entry = await engine.kv_get("here", "k", revision=first)
    assert entry is not None and entry.value == b"1" and entry.revision == first
    assert sent(engine) - before == 2  # one batched direct get, one override read
    await engine.kv_delete("here", "k")
    assert await engine.kv_get("here", "k", revision=first) is None
    assert await engine.kv_get("nowhere", "k", revision=1) is None
