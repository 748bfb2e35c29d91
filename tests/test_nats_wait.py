"""NATS long polls and the NATS sweeper, below HTTP: a long poll wakes for every change
made while it checks or waits (its namespace's subscription is there before the check,
app/backends/nats/wake.py), and a sweep goes on past a namespace that refuses."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator

import nats
import pytest

from app.backends.nats import NatsBackend, wake
from app.backends.nats.wake import LINGER_SECONDS
from app.errors import BackendUnavailable
from tests.conftest import need_nats
from tests.nats_cluster import NatsCluster
from tests.nats_server import flush_nats

#: Long polls raced against a writer in the wake-up test.
ROUNDS = 60


@pytest.fixture(scope="module")
def cluster() -> Iterator[NatsCluster]:
    need_nats()
    c = NatsCluster().start()
    try:
        yield c
    finally:
        c.cleanup()


@pytest.fixture
async def engines(nats_url: str) -> AsyncIterator[tuple[NatsBackend, NatsBackend]]:
    """Two processes' worth of backend on one server: a waiter and a writer."""
    flush_nats(nats_url)
    async with pair(nats_url, nats_url) as both:
        yield both


@contextlib.asynccontextmanager
async def pair(waits: str, writes: str) -> AsyncIterator[tuple[NatsBackend, NatsBackend]]:
    waiter, writer = NatsBackend(waits), NatsBackend(writes)
    await waiter.start()
    await writer.start()
    try:
        yield waiter, writer
    finally:
        await writer.close()
        await waiter.close()


@pytest.mark.parametrize("where", ["server", "cluster"])
async def test_a_long_poll_wakes_for_a_change_made_while_it_checks(
    where: str, request: pytest.FixtureRequest,
) -> None:
    """Each round a long poll (timeout 5 s) starts after the namespace's revision and a
    writer on another connection writes at once, or a little later (a few event-loop
    turns to a few ms), so the write lands before, during or after the poll's first
    read. The poll must answer with it well before its timeout every time (a fresh
    subscription per wait could miss a write routed before it and stored after the
    read, and answered only at the timeout)."""
    if where == "server":
        url: str = request.getfixturevalue("nats_url")
        flush_nats(url)
        waits = writes = url
    else:  # the waiter on one server, the writer on another: interest travels by route
        cluster: NatsCluster = request.getfixturevalue("cluster")
        flush_nats(cluster.nodes[0].url)
        waits, writes = (cluster.nodes[i].url + "?replicas=3" for i in (0, 1))
    async with pair(waits, writes) as (waiter, writer):
        await race(waiter, writer)


async def race(waiter: NatsBackend, writer: NatsBackend) -> None:
    await writer.kv_put("w", "k", b"0")
    late: list[tuple[int, float]] = []
    for n in range(ROUNDS):
        after = await waiter.current_revision("w")
        started = time.monotonic()
        poll = asyncio.create_task(waiter.read_events("w", after, timeout=5))
        for _ in range(n % 6):
            await asyncio.sleep(0)
        if n % 3 == 2:
            await asyncio.sleep(0.001 * (n % 7))
        rev = (await writer.kv_put("w", "k", str(n + 1).encode())).entry.revision
        batch = await poll
        took = time.monotonic() - started
        assert [e.revision for e in batch.events] == [rev], (n, batch)
        if took > 1.0:
            late.append((n, took))
    assert not late, f"long polls answered late (round, seconds): {late}"


async def test_the_namespace_subscription_is_kept_between_waits_and_retired_when_idle(
    engines: tuple[NatsBackend, NatsBackend], caplog: pytest.LogCaptureFixture,
) -> None:
    waiter, writer = engines
    store = waiter.store
    for ns in ("a", "b"):
        batch = await waiter.read_events(ns, 0, timeout=0.05)
        assert batch.events == []
    assert len(store.wakers) == 2
    kept = store.wakers._wakers["a"]
    # Writes while nobody waits: the subscription keeps one message, counts them all,
    # and its dropped ones are not logged as a slow consumer.
    for n in range(20):
        await writer.kv_put("a", f"k{n}", b"1")
    assert kept.sub is not None
    await until(lambda: kept.count == 20)
    assert kept.sub._pending_queue.qsize() <= 1
    batch = await waiter.read_events("a", 20, timeout=0.05)
    assert store.wakers._wakers["a"] is kept  # the same subscription, not a new one
    assert batch.events == [] and batch.current_revision == 20
    assert not [r for r in caplog.records if "slow consumer" in r.getMessage()]
    # Idle past the linger: retired at the next wait (of any namespace).
    for waker in store.wakers._wakers.values():
        waker.idle_since -= LINGER_SECONDS + 1
    await waiter.read_events("c", 0, timeout=0.01)
    assert list(store.wakers._wakers) == ["c"]


async def test_unused_subscriptions_are_bounded_for_a_caller_polling_many_namespaces(
    engines: tuple[NatsBackend, NatsBackend], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Short polls of many namespaces, well within the linger: at most ``MAX_IDLE`` + 1
    unused subscriptions stay (the newest: each wait retires before it subscribes), the
    others unsubscribed; a namespace being
    waited on keeps its subscription however many others come and go."""
    waiter, writer = engines
    store = waiter.store
    monkeypatch.setattr(wake, "MAX_IDLE", 3)
    held = asyncio.create_task(waiter.read_events("held", 0, timeout=10))
    await until(lambda: "held" in store.wakers._wakers)
    for n in range(10):
        assert (await waiter.read_events(f"ns{n}", 0, timeout=0.01)).events == []
    # The wait of ns9 retired the oldest before it began; it is unused now too.
    assert list(store.wakers._wakers) == ["held", "ns6", "ns7", "ns8", "ns9"]
    await waiter.read_events("ns10", 0, timeout=0.01)
    assert list(store.wakers._wakers) == ["held", "ns7", "ns8", "ns9", "ns10"]
    assert len(store.wakers._sids) == 5
    assert len(store.nc._subs) - len(store.wakers._sids) <= 1  # (+ the request inbox)
    rev = (await writer.kv_put("held", "k", b"1")).entry.revision
    assert [e.revision for e in (await held).events] == [rev]


async def until(condition: Callable[[], bool], timeout: float = 5) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def test_a_sweep_goes_on_past_a_namespace_that_refuses(
    engines: tuple[NatsBackend, NatsBackend], nats_url: str,
) -> None:
    """Namespace ``a``'s bucket is sealed by a NATS client (every publish refused), so
    its expiry fails; ``b`` (swept after it) still has its key expired, and ``a`` stays
    due. When every due namespace refuses, the pass fails (the sweeper logs it)."""
    engine, _ = engines
    for ns in ("a", "b"):
        await engine.kv_put(ns, "k", b"1", ttl_ms=1)
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        info = await js.stream_info("KV_a")
        info.config.sealed = True
        await js.update_stream(info.config)
    finally:
        await nc.close()
    await asyncio.sleep(0.01)  # both deadlines (1 ms) are past; nothing to await on
    assert await engine.log.expire_due() == 1
    assert await engine.kv_get("b", "k") is None
    events = (await engine.read_events("b", 0)).events
    assert [e.type for e in events] == ["kv.put", "kv.expire"]
    # Only the sealed namespace is due now: the pass fails, and it stays due.
    with pytest.raises(BackendUnavailable, match="deferred in all 1"):
        await engine.log.expire_due()
    with pytest.raises(BackendUnavailable, match="deferred in all 1"):
        await engine.log.expire_due()


async def test_reads_on_a_replicated_bucket_see_the_write_just_acknowledged(
    cluster: NatsCluster,
) -> None:
    """On an R3 bucket a follower's direct get can be a few ms behind the leader; key and
    record reads go to the stream's leader, so a read through another server right after
    a write's acknowledgement sees that write, every time (docs/nats.md)."""
    flush_nats(cluster.nodes[0].url)
    reader_url, writer_url = (cluster.nodes[i].url + "?replicas=3" for i in (1, 2))
    async with pair(reader_url, writer_url) as (reader, writer):
        for i in range(2000):
            result = await writer.kv_put("ryw", "k", str(i).encode())
            entry = await reader.kv_get("ryw", "k")
            assert entry is not None and (entry.value, entry.revision) == (
                str(i).encode(), result.entry.revision), i
        assert "ryw" in reader.store.replicated
