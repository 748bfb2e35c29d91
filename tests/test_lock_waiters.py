"""Lock waiters are capped per lock (429 too_many_waiters with Retry-After), and waiting
holds no connection that other calls need (API.md section 9)."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from tests.conftest import flush
from tests.helpers import problem
from tests.locks_support import acquire, release
from tests.test_quotas import MakeSettings, service


async def test_the_waiter_beyond_the_cap_gets_429(make_settings: MakeSettings) -> None:
    async with service(make_settings, lock_max_waiters=3) as (c, _):
        held = (await acquire(c, "l", "holder", ttl=30)).json()
        waiters = [asyncio.create_task(acquire(c, "l", f"w{i}", ttl=30, wait="3s"))
                   for i in range(3)]
        while len((await c.get("/v1/events", params={"types": "lock.queued"})).json()[
                "events"]) < 3:
            await asyncio.sleep(0.01)
        r = await acquire(c, "l", "late", ttl=30, wait="3s")
        body = problem(r, 429, "too_many_waiters")
        assert int(r.headers["retry-after"]) >= 1
        assert "CORKBOARD_LOCK_MAX_WAITERS" in body["detail"]
        # Without waiting, a held lock is the usual 409; other locks are not affected.
        problem(await acquire(c, "l", "late", ttl=30), 409, "lock_held")
        assert (await acquire(c, "other", "late", ttl=30, wait="1s")).status_code == 200
        assert (await release(c, "l", "holder", held["token"])).status_code == 200
        done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        winner = done.pop().result()
        assert winner.status_code == 200 and winner.json()["owner"].startswith("w")
        # A place in line is free again: the next caller waits (and times out with 409).
        late = await acquire(c, "l", "late", ttl=30, wait="0.3s")
        problem(late, 409, "lock_held")
        await asyncio.gather(*waiters)


@pytest.mark.redis_only
async def test_a_thousand_waiters_on_redis_starve_nothing(
    redis_url: str, backend: str, make_settings: MakeSettings
) -> None:
    """1,000 callers wait on one Redis lock: the 1,001st gets 429, ordinary calls stay
    fast, the waiters hold (almost) no connections between them, the first in line gets
    the lock on release, and a waiter that goes away leaves the line."""
    if backend == "memory://":
        pytest.skip("Redis only")
    if backend == redis_url:
        flush(redis_url)
    settings = {"backend": backend, "lock_max_waiters": 1000, "redis_max_connections": 16,
                "backend_timeout_seconds": 10}  # a loaded CI machine: no 503 while queueing
    line = "cb:{default}:lockwait:|l"
    async with service(make_settings, **settings) as (c, b):
        held = (await acquire(c, "l", "holder", ttl=60)).json()
        assert "token" in held, held
        # The waits are the longest allowed: filling the line may take many seconds on a
        # loaded machine, and no wait may run out before the release below.
        def join(n: int, prefix: str) -> list[asyncio.Task[httpx.Response]]:
            return [asyncio.create_task(acquire(c, "l", f"{prefix}{i}", ttl=30, wait="60s"))
                    for i in range(n)]

        waiters = join(1000, "w")
        redis = b.client_for("cb:{default}:rev")  # type: ignore[attr-defined]
        deadline = time.monotonic() + 40
        while (queued := await redis.llen(line)) < 1000:
            assert time.monotonic() < deadline, queued
            failed = [t for t in waiters if t.done()]
            if failed and len(waiters) - len(failed) == queued:  # refused under load
                assert all(t.result().status_code == 503 for t in failed), failed[0].result()
                waiters = [t for t in waiters if not t.done()] + join(len(failed), "x")
            await asyncio.sleep(0.05)
        r = await acquire(c, "l", "one-too-many", ttl=30, wait="6s")
        problem(r, 429, "too_many_waiters")
        assert "retry-after" in r.headers
        # Ordinary calls are answered at once while the 1,000 wait.
        for i in range(20):
            began = time.monotonic()
            assert (await c.put(f"/v1/kv/k{i}", json=i)).status_code == 201
            assert (await c.get(f"/v1/kv/k{i}")).status_code == 200
            assert time.monotonic() - began < 1.0
        clients = [line for line in (await redis.client_list())]
        assert len(clients) < 40, len(clients)  # not one connection per waiter
        assert not any(t.done() for t in waiters)
        # The lock goes to the first in line when released.
        assert (await release(c, "l", "holder", held["token"])).status_code == 200
        done, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        assert len(done) == 1, [t.result().text for t in done]
        first = done.pop().result()
        assert first.status_code == 200, first.text
        lock = (await c.get("/v1/locks/l")).json()
        assert lock["owner"] == first.json()["owner"], lock
        # The other 999 give up (their callers go away): each leaves the line.
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        while (queued := await redis.llen(line)) > 0:
            assert time.monotonic() < deadline + 30, queued
            await asyncio.sleep(0.05)
