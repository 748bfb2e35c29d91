"""Lock waiters are capped per lock (429 too_many_waiters with Retry-After), and waiting
holds no connection that other calls need (API.md section 9)."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.helpers import problem
from tests.locks_support import acquire, release
from tests.test_quotas import MakeSettings, service


async def test_the_waiter_beyond_the_cap_gets_429(make_settings: MakeSettings) -> None:
    async with service(make_settings, lock_max_waiters=3) as (c, _):
        held = (await acquire(c, "l", "holder", ttl=30)).json()
        waiters = [asyncio.create_task(acquire(c, "l", f"w{i}", ttl=30, wait="10s"))
                   for i in range(3)]
        while (await c.get("/v1/events", params={"types": "lock.queued"})).json()[
                "events"].__len__() < 3:
            await asyncio.sleep(0.01)
        body = problem(r := await acquire(c, "l", "late", ttl=30, wait="10s"), 429,
                       "too_many_waiters")
        assert int(r.headers["retry-after"]) >= 1 and "CORKBOARD_LOCK_MAX_WAITERS" in \
            body["detail"]
        # Without waiting, a held lock is the usual 409; other locks are not affected.
        problem(await acquire(c, "l", "late", ttl=30), 409, "lock_held")
        assert (await acquire(c, "other", "late", ttl=30, wait="1s")).status_code == 200
        assert (await release(c, "l", "holder", held["token"])).status_code == 200
        first = await waiters[0]
        assert first.status_code == 200 and first.json()["owner"] == "w0"
        # A place in line is free again.
        late = asyncio.create_task(acquire(c, "l", "late", ttl=30, wait="10s"))
        token = first.json()["token"]
        for i in range(1, 3):
            assert (await release(c, "l", f"w{i - 1}", token)).status_code == 200
            got = await waiters[i]
            assert got.json()["owner"] == f"w{i}"
            token = got.json()["token"]
        await release(c, "l", "w2", token)
        assert (await late).json()["owner"] == "late"


@pytest.mark.redis_only
async def test_a_thousand_waiters_on_redis_starve_nothing(
    redis_url: str, make_settings: MakeSettings
) -> None:
    """1,000 callers wait on one Redis lock: the 1,001st gets 429, ordinary calls stay
    fast, and the waiters hold (almost) no connections between them."""
    settings = {"backend": redis_url, "lock_max_waiters": 1000, "redis_max_connections": 16}
    async with service(make_settings, **settings) as (c, b):
        held = (await acquire(c, "l", "holder", ttl=60)).json()
        waiters = [asyncio.create_task(acquire(c, "l", f"w{i}", ttl=30, wait="6s"))
                   for i in range(1000)]
        redis = b.client  # type: ignore[attr-defined]
        deadline = time.monotonic() + 20
        while await redis.llen("cb:{default}:lockwait:|l") < 1000:
            assert time.monotonic() < deadline, await redis.llen("cb:{default}:lockwait:|l")
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
        # The lock goes to the first in line when released.
        assert (await release(c, "l", "holder", held["token"])).status_code == 200
        first = await waiters[0]
        assert first.status_code == 200 and first.json()["owner"] == "w0"
        await release(c, "l", "w0", first.json()["token"])
        second = await waiters[1]
        assert second.status_code == 200 and second.json()["owner"] == "w1"
        await release(c, "l", "w1", second.json()["token"])
        # w1's release handed it to w2, who keeps it: the others' waits end in 409.
        rest = await asyncio.gather(*waiters[2:])
        assert rest[0].status_code == 200 and rest[0].json()["owner"] == "w2"
        assert {r.status_code for r in rest[1:]} == {409}
