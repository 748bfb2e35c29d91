"""Locks under real concurrency: many clients, service replicas on one Redis, a holder
process that is killed, a replica that dies with a waiter, and service restarts."""

from __future__ import annotations

import asyncio
import itertools
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx
import pytest

from tests.conftest import flush
from tests.locks_support import acquire, release, wait_event
from tests.support import ServiceProcess, running

MakeClient = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]
SERVICE_ENV = {"CORKBOARD_SWEEP_INTERVAL_SECONDS": "0.05", "CORKBOARD_LOG_LEVEL": "warning"}


def fresh_ns() -> str:
    return "t" + secrets.token_hex(6)


@pytest.fixture(scope="module")
def replicas(redis_url: str) -> Iterator[list[ServiceProcess]]:
    """Three service processes on one Redis, shared by this module's Redis tests (each
    test uses its own namespace)."""
    services = [ServiceProcess({**SERVICE_ENV, "CORKBOARD_BACKEND": redis_url}) for _ in range(3)]
    with running(*services) as started:
        yield started


@asynccontextmanager
async def clients_for(
    backend: str, request: pytest.FixtureRequest, make_client: MakeClient
) -> AsyncIterator[list[httpx.AsyncClient]]:
    """Clients of three replicas on Redis; of one in-process service on memory."""
    if backend.startswith("memory"):
        async with make_client() as c:
            yield [c, c, c]
        return
    services: list[ServiceProcess] = request.getfixturevalue("replicas")
    limits = httpx.Limits(max_connections=50)
    async with (
        httpx.AsyncClient(base_url=services[0].url, timeout=60, limits=limits) as a,
        httpx.AsyncClient(base_url=services[1].url, timeout=60, limits=limits) as b,
        httpx.AsyncClient(base_url=services[2].url, timeout=60, limits=limits) as c,
    ):
        yield [a, b, c]


async def test_mutual_exclusion_with_fenced_counter(
    backend: str, request: pytest.FixtureRequest, make_client: MakeClient
) -> None:
    """20 clients (spread over 3 replicas on Redis) loop acquire → critical section →
    release: sections never overlap, tokens grow, and the fenced counter is exact."""
    ns, name, rounds = fresh_ns(), "critical", 5
    sections: list[tuple[float, float, int]] = []

    async def worker(i: int, c: httpx.AsyncClient) -> None:
        for _ in range(rounds):
            r = await acquire(c, name, f"w{i}", ns=ns, ttl="20s", wait=60)
            assert r.status_code == 200, r.text
            token = r.json()["token"]
            entered = time.monotonic()
            fence = {"Fence-Lock": name, "Fence-Token": str(token)}
            r = await c.post("/v1/kv/counter/increment", params={"ns": ns}, json={"by": 1},
                             headers=fence)
            assert r.status_code in (200, 201), r.text
            left = time.monotonic()
            sections.append((entered, left, token))
            r = await release(c, name, f"w{i}", token, ns=ns)
            assert r.status_code == 200, r.text

    async with clients_for(backend, request, make_client) as clients:
        await asyncio.gather(*(worker(i, clients[i % 3]) for i in range(20)))
        counter = (await clients[0].get("/v1/kv/counter", params={"ns": ns})).json()["value"]
    assert counter == len(sections) == 20 * rounds
    sections.sort()
    for (_, left, token), (entered, _, next_token) in itertools.pairwise(sections):
        assert left <= entered, "two critical sections overlapped"
        assert token < next_token


HOLDER_SCRIPT = """
import sys, time, httpx
url, ns = sys.argv[1], sys.argv[2]
r = httpx.post(url + "/v1/locks/job", params={"ns": ns}, json={"owner": "doomed", "ttl": "1s"})
print(r.json()["token"], r.json()["expires_at"], flush=True)
time.sleep(600)
"""


@pytest.fixture
def memory_service() -> Iterator[ServiceProcess]:
    with running(ServiceProcess({**SERVICE_ENV, "CORKBOARD_BACKEND": "memory://"})) as [s]:
        yield s


async def test_a_killed_holder_loses_the_lock_at_its_ttl(
    backend: str, request: pytest.FixtureRequest
) -> None:
    """The holder process is killed; at its TTL the lock goes to a waiter (on another
    replica) with the entries queued meanwhile, and a late write with the old token is
    refused."""
    if backend.startswith("memory"):
        services = [request.getfixturevalue("memory_service")] * 3
    else:
        services = request.getfixturevalue("replicas")
    ns = fresh_ns()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER_SCRIPT, services[0].url, ns],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None
        old_token, expires_at = holder.stdout.readline().split()
        holder.kill()
        holder.wait()
        async with (
            httpx.AsyncClient(base_url=services[1].url, timeout=30) as b,
            httpx.AsyncClient(base_url=services[2].url, timeout=30) as c,
        ):
            for i in range(3):
                r = await acquire(c, "job", "producer", ns=ns, mode="queue", entry={"n": i})
                assert r.status_code == 202
            r = await acquire(b, "job", "heir", ns=ns, wait=10)
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["acquired_at"] >= expires_at
            assert body["token"] > int(old_token)
            assert body["pending"] == [{"n": 0}, {"n": 1}, {"n": 2}]
            expired = await wait_event(c, 0, "lock.expired", ns=ns)
            assert expired["owner"] == "doomed" and expired["pending_count"] == 3
            late = {"Fence-Lock": "job", "Fence-Token": old_token}
            r = await c.put("/v1/kv/result", params={"ns": ns}, json="late", headers=late)
            assert r.status_code == 409 and r.json()["code"] == "stale_fence"
            assert (await c.get("/v1/kv/result", params={"ns": ns})).status_code == 404
            current = {"Fence-Lock": "job", "Fence-Token": str(body["token"])}
            r = await c.put("/v1/kv/result", params={"ns": ns}, json="ok", headers=current)
            assert r.status_code == 201
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()


@pytest.mark.redis_only
async def test_waiters_on_different_replicas_are_served_in_arrival_order(
    redis_url: str, replicas: list[ServiceProcess]
) -> None:
    ns = fresh_ns()
    order: list[str] = []
    async with (
        httpx.AsyncClient(base_url=replicas[0].url, timeout=30) as a,
        httpx.AsyncClient(base_url=replicas[1].url, timeout=30) as b,
        httpx.AsyncClient(base_url=replicas[2].url, timeout=30) as c,
    ):
        clients = [a, b, c]
        holder = (await acquire(a, "line", "h", ns=ns)).json()

        async def wait_then_release(owner: str, client: httpx.AsyncClient) -> None:
            r = await acquire(client, "line", owner, ns=ns, wait=30)
            assert r.status_code == 200, r.text
            order.append(owner)
            assert (await release(client, "line", owner, r.json()["token"], ns=ns)).status_code \
                == 200

        owners = [f"w{i}" for i in range(6)]
        tasks = []
        for i, owner in enumerate(owners):
            since = (await a.get("/v1/kv", params={"ns": ns, "limit": 1})).json()["revision"]
            tasks.append(asyncio.create_task(wait_then_release(owner, clients[(i + 1) % 3])))
            await wait_event(a, since, "lock.queued", ns=ns, owner=owner)
        await release(a, "line", "h", holder["token"], ns=ns)
        await asyncio.gather(*tasks)
    assert order == owners


@pytest.mark.redis_only
async def test_a_waiter_whose_replica_dies_holds_up_the_line_only_briefly(
    redis_url: str, replicas: list[ServiceProcess]
) -> None:
    """The lock handed to a waiter that is gone is held only for the claim window (5 s),
    not for the waiter's TTL; the next waiter then gets it."""
    ns = fresh_ns()
    with running(ServiceProcess({**SERVICE_ENV, "CORKBOARD_BACKEND": redis_url})) as [doomed]:
        async with (
            httpx.AsyncClient(base_url=replicas[0].url, timeout=30) as a,
            httpx.AsyncClient(base_url=doomed.url, timeout=30) as d,
        ):
            holder = (await acquire(a, "l", "h", ns=ns)).json()
            since = (await a.get("/v1/kv", params={"ns": ns, "limit": 1})).json()["revision"]
            ghost = asyncio.create_task(acquire(d, "l", "ghost", ns=ns, wait=60, ttl="1h"))
            await wait_event(a, since, "lock.queued", ns=ns, owner="ghost")
            heir = asyncio.create_task(acquire(a, "l", "heir", ns=ns, wait=30))
            await wait_event(a, since, "lock.queued", ns=ns, owner="heir")
            doomed.kill()
            with pytest.raises(httpx.HTTPError):
                await ghost
            released = time.monotonic()
            await release(a, "l", "h", holder["token"], ns=ns)
            r = await heir
            assert r.status_code == 200, r.text
            assert 4 <= time.monotonic() - released < 7
            expired = await wait_event(a, since, "lock.expired", ns=ns, owner="ghost")
            assert expired["token"] == holder["token"] + 1
            assert r.json()["token"] == holder["token"] + 2


@pytest.mark.redis_only
async def test_tokens_keep_growing_across_service_restarts(redis_url: str) -> None:
    from app.settings import Settings
    from tests.support import app_client

    flush(redis_url)
    settings = Settings(backend=redis_url)  # type: ignore[call-arg]
    tokens: list[int] = []
    for _ in range(3):  # each app is a restarted service: nothing kept in its memory
        async with app_client(settings) as client:
            body: dict[str, Any] = (await acquire(client, "r", "o")).json()
            tokens.append(body["token"])
            assert (await release(client, "r", "o", body["token"])).status_code == 200
    assert tokens == [1, 2, 3]


async def test_a_waiter_whose_client_disconnects_leaves_the_line(
    backend: str, request: pytest.FixtureRequest
) -> None:
    """The server notices the waiter's client is gone: the waiter does not claim the lock
    (nor its entries) at the next release."""
    if backend.startswith("memory"):
        services = [request.getfixturevalue("memory_service")] * 2
    else:
        services = request.getfixturevalue("replicas")
    ns = fresh_ns()
    async with httpx.AsyncClient(base_url=services[0].url, timeout=30) as a:
        holder = (await acquire(a, "l", "h", ns=ns)).json()
        since = (await a.get("/v1/kv", params={"ns": ns, "limit": 1})).json()["revision"]
        async with httpx.AsyncClient(base_url=services[1].url, timeout=30) as b:
            waiter = asyncio.create_task(acquire(b, "l", "gone", ns=ns, wait=30, ttl="1h"))
            await wait_event(a, since, "lock.queued", ns=ns, owner="gone")
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
        await release(a, "l", "h", holder["token"], ns=ns)
        r = await a.get("/v1/locks/l", params={"ns": ns})
        if r.status_code == 200:  # handed over before the server saw the disconnect
            assert r.json()["owner"] == "gone"
            await wait_event(a, since, "lock.released", ns=ns, owner="gone", abandoned=True)
        assert (await a.get("/v1/locks/l", params={"ns": ns})).status_code == 404
        assert (await acquire(a, "l", "next", ns=ns)).status_code == 200
