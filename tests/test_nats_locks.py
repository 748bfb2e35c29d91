"""Locks on NATS beyond the shared suite (test_locks, test_locks_backend,
test_lock_waiters and test_session_locks run there too): a lock on a lease that does not
exist answers 404 and changes nothing, a waiter leaving the line writes a
message that is no event, a lock's record is a
``_cbl.`` key of the bucket that NATS clients can read but Corkboard never lists as a
key, and a fenced write is atomic with its fence check (``Nats-Expected-Last-Sequence``):
no write under a token lands after the event that ended the token's hold."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import httpx
import nats
import pytest

from app.backends.nats import NatsBackend
from app.domain.locks import LockRequest
from app.errors import LeaseNotFound
from app.settings import Settings
from tests.helpers import problem
from tests.locks_support import acquire, events, release, revision
from tests.nats_server import flush_nats
from tests.support import app_client


@pytest.fixture
async def corkboard(nats_url: str) -> AsyncIterator[httpx.AsyncClient]:
    flush_nats(nats_url)
    async with app_client(Settings(backend=nats_url, sweep_interval_seconds=0.05)) as c:
        yield c


async def test_locks_on_a_lease_answer_404_changing_nothing(
    corkboard: httpx.AsyncClient, nats_url: str,
) -> None:
    held = (await acquire(corkboard, "a", "alice")).json()
    rev = await revision(corkboard)
    problem(await acquire(corkboard, "b", "bob", lease="x" * 16), 404, "lease_not_found")
    engine = NatsBackend(nats_url)
    await engine.start()
    try:
        with pytest.raises(LeaseNotFound):
            await engine.lock_acquire("default", "s1", "a",
                                      LockRequest("bob", 1000, lease="y" * 16), session=True)
    finally:
        await engine.close()
    assert await revision(corkboard) == rev
    assert (await corkboard.get("/v1/locks/a")).json()["token"] == held["token"]


async def test_a_waiter_leaving_the_line_is_no_event(corkboard: httpx.AsyncClient) -> None:
    held = (await acquire(corkboard, "a", "alice")).json()
    since = await revision(corkboard)
    problem(await acquire(corkboard, "a", "bob", wait="200ms"), 409, "lock_held")
    assert [e["type"] for e in await events(corkboard, since)] == ["lock.queued"]
    # bob left the line: the release frees the lock for anyone
    await release(corkboard, "a", "alice", held["token"])
    assert (await corkboard.get("/v1/locks/a")).status_code == 404
    assert (await acquire(corkboard, "a", "carol")).json()["token"] == held["token"] + 1


async def test_a_lock_record_is_a_reserved_key_nats_clients_read(
    corkboard: httpx.AsyncClient, nats_url: str,
) -> None:
    await corkboard.put("/v1/kv/k", json=1)
    body = (await acquire(corkboard, "jobs/a_b.c", "alice", ttl=0)).json()
    await acquire(corkboard, "jobs/a_b.c", "bob", mode="queue", entry={"n": 1})
    keys = [i["key"] for i in (await corkboard.get("/v1/kv")).json()["items"]]
    assert keys == ["k"]
    nc = await nats.connect(nats_url)
    try:
        kv = await nc.jetstream().key_value("default")
        entry = await kv.get("_cbl.jobs/a_5Fb_2Ec")
    finally:
        await nc.close()
    record = json.loads(entry.value or b"")
    assert record["lock"]["owner"] == "alice" and record["lock"]["token"] == body["token"]
    assert record["lock"]["pending"] == ['{"n":1}']
    assert record["event"]["type"] == "lock.queued"
    [queued] = [e for e in await events(corkboard, 0) if e["type"] == "lock.queued"]
    assert queued["revision"] == entry.revision


async def test_no_fenced_write_lands_after_its_token_stopped_holding(
    corkboard: httpx.AsyncClient,
) -> None:
    token = (await acquire(corkboard, "f", "alice", ttl=0)).json()["token"]
    fence = {"Fence-Lock": "f", "Fence-Token": str(token)}
    landed: list[int] = []

    async def writer(i: int) -> None:
        for n in range(200):
            r = await corkboard.put(f"/v1/kv/w{i}", json=n, headers=fence)
            if r.status_code == 409:
                assert r.json()["code"] == "stale_fence"
                return
            assert r.status_code in (200, 201), r.text
            landed.append(r.json()["revision"])
        pytest.fail("the fence never went stale")

    writers = [asyncio.create_task(writer(i)) for i in range(4)]
    while len(landed) < 8:
        await asyncio.sleep(0.01)
    r = await corkboard.post("/v1/locks/f/force-release")
    assert r.json()["status"] == "released"
    await asyncio.gather(*writers)
    [released] = [e for e in await events(corkboard, 0) if e["type"] == "lock.released"]
    assert landed and max(landed) < released["revision"]
    # the next holder's token fences, the old one stays stale
    nxt = (await acquire(corkboard, "f", "bob")).json()
    assert nxt["token"] == token + 1
    r = await corkboard.put("/v1/kv/w0", json="new",
                            headers={"Fence-Lock": "f", "Fence-Token": str(token + 1)})
    assert r.status_code in (200, 201)  # (201: writer 0 landed nothing before the release)
    problem(await corkboard.delete("/v1/kv/w0", headers=fence), 409, "stale_fence")
    assert (await release(corkboard, "f", "bob", nxt["token"])).status_code == 200


async def test_a_fenced_touch_checks_the_fence_first(corkboard: httpx.AsyncClient) -> None:
    token = (await acquire(corkboard, "f", "alice")).json()["token"]
    await corkboard.put("/v1/kv/t", json=1)
    fence = {"Fence-Lock": "f", "Fence-Token": str(token)}
    r = await corkboard.post("/v1/kv/t/touch", json={"ttl": "1h"}, headers=fence)
    assert r.status_code == 200, r.text
    stale = {"Fence-Lock": "f", "Fence-Token": str(token + 1)}
    problem(await corkboard.post("/v1/kv/t/touch", json={"ttl": "1s"}, headers=stale),
            409, "stale_fence")
    assert (await corkboard.get("/v1/kv/t")).json()["expires_at"] == r.json()["expires_at"]
