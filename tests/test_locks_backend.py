"""The lock engine below HTTP, where a waiter's client can be made to vanish at an exact
moment: a cancelled waiter leaves the line, and a lock handed to a waiter that is gone is
passed on without losing the pending entries."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from app.backends import backend_from_url
from app.backends.base import Backend
from app.domain.locks import LockRequest
from app.errors import Conflict
from app.settings import Settings


@pytest.fixture
async def engine(backend: str) -> AsyncIterator[Backend]:
    b = backend_from_url(backend, Settings(backend=backend))  # type: ignore[call-arg]
    await b.start()
    try:
        yield b
    finally:
        await b.close()


async def lock_events(b: Backend, after: int = 0) -> list[dict[str, Any]]:
    import orjson

    batch = await b.read_events("default", after)
    return [orjson.loads(e.data) for e in batch.events if e.type.startswith("lock.")]


async def queued(b: Backend, owner: str) -> None:
    """Return once ``owner`` is in the lock's line (its lock.queued event exists)."""
    after = 0
    for _ in range(200):
        batch = await b.read_events("default", after, timeout=2)
        for e in batch.events:
            if e.type == "lock.queued" and f'"owner":"{owner}"'.encode() in e.data:
                return
        if batch.events:
            after = batch.events[-1].revision
    raise AssertionError(f"{owner} never queued")


async def settle(b: Backend) -> None:
    """Let background withdrawals (Redis) finish."""
    tasks = getattr(b.locks, "withdrawals", set())  # type: ignore[attr-defined]
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_cancelled_waiter_leaves_the_line(engine: Backend) -> None:
    holder = await engine.lock_acquire("default", "", "l", LockRequest("h", 30_000))
    assert holder.holder is not None
    waiter = asyncio.create_task(
        engine.lock_acquire("default", "", "l", LockRequest("gone", 30_000, wait_s=30))
    )
    await queued(engine, "gone")
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    await settle(engine)
    await engine.lock_release("default", "", "l", "h", holder.holder.token)
    got, _ = await engine.lock_get("default", "", "l")
    assert got is None
    assert [e["type"] for e in await lock_events(engine)][-1] == "lock.released"


async def test_a_lock_handed_to_a_vanished_waiter_goes_to_the_next() -> None:
    """Memory only: there, a release wakes the waiter without running it, so it can be
    cancelled exactly between hand-over and claim (Redis: the script test below)."""
    from app.backends.memory import MemoryBackend

    engine = MemoryBackend()
    first = await engine.lock_acquire("default", "", "l", LockRequest("h", 30_000))
    assert first.holder is not None
    await engine.lock_acquire("default", "", "l", LockRequest("p", 0, mode="queue",
                                                             entry=b'"kept"'))
    gone = asyncio.create_task(
        engine.lock_acquire("default", "", "l", LockRequest("gone", 30_000, wait_s=30))
    )
    await queued(engine, "gone")
    nxt = asyncio.create_task(
        engine.lock_acquire("default", "", "l", LockRequest("next", 30_000, wait_s=30))
    )
    await queued(engine, "next")
    # The release hands the lock to "gone" and wakes it; it is cancelled before it runs.
    released = await engine.lock_release("default", "", "l", "h", first.holder.token)
    assert released.pending == (b'"kept"',)
    await engine.lock_acquire("default", "", "l", LockRequest("p", 0, mode="queue",
                                                             entry=b'"later"'))
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    outcome = await nxt
    assert outcome.holder is not None and outcome.holder.owner == "next"
    assert outcome.pending == (b'"later"',)
    types = [(e["type"], e.get("owner"), e.get("abandoned")) for e in await lock_events(engine)]
    assert ("lock.released", "gone", True) in types


@pytest.fixture
async def redis_engine(redis_url: str) -> AsyncIterator[Backend]:
    """A started Redis backend on a flushed database."""
    from tests.conftest import flush

    flush(redis_url)
    b = backend_from_url(redis_url, Settings(backend=redis_url))  # type: ignore[call-arg]
    await b.start()
    try:
        yield b
    finally:
        await b.close()


async def waiter_step(b: Backend, ticket: str, step: str, item: Any) -> Any:
    """One script step of waiter 'gone' (30 s wait, 30 s ttl), driven by hand."""
    run = b.store.run  # type: ignore[attr-defined]
    return await run("lock_acquire", "default", "", "l", "gone", 30_000, "exclusive",
                     "null", 10, ticket, 30_000, step, item)


@pytest.mark.redis_only
async def test_redis_cancel_step_gives_back_an_unclaimed_lock(redis_engine: Backend) -> None:
    """The script steps of a waiter, driven by hand: handed the lock, then cancelled
    before claiming it, it gives the lock back and the pending entries stay."""
    b = redis_engine
    first = await b.lock_acquire("default", "", "l", LockRequest("h", 30_000))
    assert first.holder is not None
    ticket = "ab" * 16
    reply = await waiter_step(b, ticket, "try", "")
    assert reply[0] == b"waiting"
    item = reply[1]
    await b.lock_acquire("default", "", "l", LockRequest("p", 0, mode="queue",
                                                        entry=b'"kept"'))
    await b.lock_release("default", "", "l", "h", first.holder.token)
    handed, _ = await b.lock_get("default", "", "l")
    assert handed is not None and handed.owner == "gone"
    assert handed.expires_at is not None
    assert handed.expires_at - handed.acquired_at == 5000  # the claim window
    await b.lock_acquire("default", "", "l", LockRequest("p", 0, mode="queue",
                                                        entry=b'"later"'))
    reply = await waiter_step(b, ticket, "cancel", item)
    assert reply == [b"withdrawn"]
    assert (await b.lock_get("default", "", "l")) == (None, 1)
    with pytest.raises(Conflict):
        await b.lock_release("default", "", "l", "gone", handed.token)
    after = await b.lock_acquire("default", "", "l", LockRequest("x", 30_000))
    assert after.pending == (b'"later"',)
    assert after.holder is not None and after.holder.token == handed.token + 1
    events = [(e["type"], e.get("abandoned")) for e in await lock_events(b)]
    assert ("lock.released", True) in events


@pytest.mark.redis_only
async def test_redis_cancel_before_the_try_answered_finds_the_waiter_by_ticket(
    redis_engine: Backend,
) -> None:
    """A waiter cancelled while its 'try' call was in flight never saw its queue item:
    the cancel step, sent with no item, finds it by the ticket, and the next release
    frees the lock instead of handing it to the vanished waiter."""
    b = redis_engine
    first = await b.lock_acquire("default", "", "l", LockRequest("h", 30_000))
    assert first.holder is not None
    ticket = "cd" * 16
    reply = await waiter_step(b, ticket, "try", "")
    assert reply[0] == b"waiting"
    reply = await waiter_step(b, ticket, "cancel", "")
    assert reply == [b"withdrawn"]
    await b.lock_release("default", "", "l", "h", first.holder.token)
    assert (await b.lock_get("default", "", "l")) == (None, 0)
