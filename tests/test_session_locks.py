"""A session lock call and its session are one atomic step, on every backend: a refused
call (conflict, stale token, quota) creates, indexes and touches no session and takes no
lock; a call that changed nothing recreates no deleted session; a waiter handed the lock
creates or touches its session when it claims it; deleting a session, or importing a
snapshot that leaves a lock free, hands its locks to the waiters in line; the snapshot
lists the session's locks and pending entries."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from app.backends.base import Backend
from app.domain.locks import LockRequest
from tests.helpers import events, problem, revision
from tests.test_quotas import MakeSettings, service

NS = "default"


async def lock(c: httpx.AsyncClient, sid: str, name: str, owner: str,
               **body: Any) -> httpx.Response:
    return await c.post(f"/v1/sessions/{sid}/locks/{name}", json={"owner": owner, **body})


async def indexed(backend: Backend, sid: str) -> set[str]:
    """The lock names the Redis backend indexed for session ``sid`` (memory: none kept
    apart from its lock slots, NATS: none apart from the session's record, so empty)."""
    if backend.info.name in ("memory", "nats"):
        return set()
    key = f"cb:{{{NS}}}:slk:{sid}"
    client = backend.client_for(key)  # type: ignore[attr-defined]
    return {m.decode() for m in await client.smembers(key)}


async def queued(c: httpx.AsyncClient, since: int, count: int = 1) -> None:
    """Wait (long poll, bounded) until ``count`` exclusive waiters joined a line."""
    deadline = time.monotonic() + 10
    seen = 0
    while seen < count:
        assert time.monotonic() < deadline, "no waiter joined the line"
        r = await c.get("/v1/events", params={"since": since, "wait": "2s",
                                              "types": "lock.queued"})
        seen += sum(1 for e in r.json()["events"] if e.get("mode") == "exclusive")
        since = r.json()["revision"]


async def test_refused_session_lock_calls_create_index_and_touch_nothing(
    make_settings: MakeSettings,
) -> None:
    async with service(make_settings, lock_max_pending=1) as (c, b):
        # A lock of scope "s9" held without its session (the engine's own call).
        held = await b.lock_acquire(NS, "s9", "l", LockRequest("a", 30_000))
        assert held.holder is not None
        await b.lock_acquire(NS, "s9", "l", LockRequest("q", 30_000, mode="queue"))
        start = await revision(c)
        problem(await lock(c, "s9", "l", "b"), 409, "lock_held")
        problem(await lock(c, "s9", "l", "b", mode="queue", entry=1), 409, "lock_held")
        problem(await lock(c, "s9", "l", "b", wait="0.2s"), 409, "lock_held")
        r = await c.post("/v1/sessions/s9/locks/l/refresh", json={"owner": "b", "token": 1})
        problem(r, 409, "not_owner")
        r = await c.post("/v1/sessions/s9/locks/l/release", json={"owner": "a", "token": 7})
        problem(r, 409, "lock_not_held")
        r = await c.post("/v1/sessions/s9/locks/m/refresh", json={"owner": "a", "token": 1})
        problem(r, 409, "lock_not_held")
        problem(await c.get("/v1/sessions/s9"), 404, "not_found")
        assert await indexed(b, "s9") == set()
        # Only the waiter's own line events were appended; the lock is unchanged.
        found = await events(c, since=start)
        assert {e["type"] for e in found} <= {"lock.queued"}
        assert (await c.get("/v1/sessions/s9/locks/l")).json()["owner"] == "a"

        # An existing session with an idle TTL is not touched by a refused call.
        assert (await c.put("/v1/sessions/s8", json={"ttl": "1h"})).status_code == 201
        mine = (await lock(c, "s8", "l", "a", ttl=30)).json()
        before = (await c.get("/v1/sessions/s8")).json()
        await asyncio.sleep(0.01)  # so that a touch would move updated_at
        problem(await lock(c, "s8", "l", "b"), 409, "lock_held")
        r = await c.post("/v1/sessions/s8/locks/l/release",
                         json={"owner": "a", "token": mine["token"] + 1})
        problem(r, 409, "lock_not_held")
        after = (await c.get("/v1/sessions/s8")).json()
        assert after["updated_at"] == before["updated_at"]
        assert after["expires_at"] == before["expires_at"]


async def test_a_call_refused_by_the_session_quota_takes_no_lock(
    make_settings: MakeSettings,
) -> None:
    async with service(make_settings, namespace_max_bytes=1024) as (c, b):
        assert (await c.put("/v1/sessions/have")).status_code == 201  # 2 bytes: '{}'
        assert (await c.put("/v1/kv/fill", json="x" * 1020)).status_code == 201  # 1022
        start = await revision(c)
        for body in ({}, {"mode": "queue", "entry": 1}, {"wait": "0.1s"}):
            r = await lock(c, "new", "l", "a", **body)
            assert problem(r, 507, "quota_exceeded")["quota"] == "bytes"
        r = await c.post("/v1/sessions/new/locks/l/force-release")
        problem(r, 507, "quota_exceeded")
        problem(await c.get("/v1/sessions/new"), 404, "not_found")
        r = await c.get("/v1/sessions/new/locks/l")
        assert r.status_code == 404 and r.json()["pending_count"] == 0
        assert await indexed(b, "new") == set()
        assert await revision(c) == start  # nothing at all was written
        # A session that exists needs no room for a lock call.
        assert (await lock(c, "have", "l", "a")).status_code == 200
        assert (await lock(c, "have", "l", "b", mode="queue", entry=1)).status_code == 202
        assert await indexed(b, "have") <= {"l"}
        # Room given back: the new session can be created by its lock call.
        assert (await c.delete("/v1/kv/fill")).status_code == 204
        assert (await lock(c, "new", "l", "a")).status_code == 200
        assert (await c.get("/v1/sessions/new")).status_code == 200


async def test_a_deleted_session_is_not_recreated_by_a_call_that_changes_nothing(
    client: httpx.AsyncClient,
) -> None:
    a = (await lock(client, "s1", "l", "a", ttl=30)).json()
    assert (await lock(client, "s1", "l", "b", mode="queue", entry=1)).status_code == 202
    assert (await client.delete("/v1/sessions/s1")).status_code == 204
    r = await client.post("/v1/sessions/s1/locks/l/force-release")  # free, nothing pending
    assert r.status_code == 200 and r.json() == {"status": "free", "pending": []}
    r = await client.post("/v1/sessions/s1/locks/l/refresh",
                          json={"owner": "a", "token": a["token"]})
    problem(r, 409, "lock_not_held")
    problem(await client.get("/v1/sessions/s1"), 404, "not_found")
    assert (await client.get("/v1/sessions")).json()["items"] == []


async def test_deleting_a_session_hands_its_locks_to_the_waiters(
    make_settings: MakeSettings,
) -> None:
    async with service(make_settings) as (c, b):
        held = (await lock(c, "s1", "l", "a", ttl=30)).json()
        assert (await lock(c, "s1", "l", "q", mode="queue", entry="e")).status_code == 202
        since = await revision(c)
        waiter = asyncio.create_task(lock(c, "s1", "l", "w", ttl=30, wait="8s"))
        await queued(c, since)
        assert (await c.delete("/v1/sessions/s1")).status_code == 204
        r = await waiter
        assert r.status_code == 200, r.text
        got = r.json()
        # The waiter got the lock with a new token and the entries still pending; its
        # claim created the session again, indexed and holding the lock.
        assert got["owner"] == "w" and got["token"] == held["token"] + 1
        assert got["pending"] == ["e"]
        assert (await c.get("/v1/sessions/s1")).status_code == 200
        snap = (await c.get("/v1/sessions/s1/snapshot")).json()
        assert snap["locks"]["l"]["owner"] == "w"
        assert snap["pending_locks"] == {}
        assert await indexed(b, "s1") <= {"l"}


async def test_a_waiter_handed_the_lock_touches_its_session(
    make_settings: MakeSettings,
) -> None:
    async with service(make_settings) as (c, b):
        assert (await c.put("/v1/sessions/s1", json={"ttl": "1h"})).status_code == 201
        assert (await lock(c, "s1", "l", "a", ttl=0.3)).status_code == 200
        since = await revision(c)
        waiter = asyncio.create_task(lock(c, "s1", "l", "w", ttl=30, wait="8s"))
        await queued(c, since)
        before = (await c.get("/v1/sessions/s1")).json()
        r = await waiter  # handed the lock when a's lease ran out (the sweeper)
        assert r.status_code == 200 and r.json()["owner"] == "w", r.text
        after = (await c.get("/v1/sessions/s1")).json()
        assert after["updated_at"] > before["updated_at"]
        assert after["expires_at"] > before["expires_at"]
        # Entries queued for the new holder are in the snapshot, with the lock.
        assert (await lock(c, "s1", "l", "x", mode="queue", entry=2)).status_code == 202
        snap = (await c.get("/v1/sessions/s1/snapshot")).json()
        assert snap["locks"]["l"]["owner"] == "w"
        assert snap["pending_locks"] == {"l": [2]}
        assert await indexed(b, "s1") <= {"l"}


async def test_a_waiter_refused_by_the_session_quota_gives_the_lock_back(
    make_settings: MakeSettings,
) -> None:
    async with service(make_settings, namespace_max_bytes=1024) as (c, b):
        held = await b.lock_acquire(NS, "s1", "l", LockRequest("a", 30_000))  # no session
        assert held.holder is not None
        assert (await c.put("/v1/kv/fill", json="x" * 1000)).status_code == 201  # 1002
        since = await revision(c)
        waiter = asyncio.create_task(lock(c, "s1", "l", "w", ttl=30, wait="8s"))
        await queued(c, since)  # joining the line needs no room and creates nothing
        problem(await c.get("/v1/sessions/s1"), 404, "not_found")
        assert (await c.put("/v1/kv/more", json="x" * 19)).status_code == 201  # 1023
        since = await revision(c)
        await b.lock_release(NS, "s1", "l", "a", held.holder.token)  # handed to w
        r = await waiter
        problem(r, 507, "quota_exceeded")
        # The claim gave the lock back (nobody else waits: it is free) and wrote no session.
        problem(await c.get("/v1/sessions/s1"), 404, "not_found")
        problem(await c.get("/v1/sessions/s1/locks/l"), 404, "not_found")
        assert await indexed(b, "s1") == set()
        found = await events(c, since=since, types="lock")
        assert [e["type"] for e in found] == ["lock.released", "lock.acquired",
                                               "lock.released"]
        assert found[-1]["owner"] == "w" and found[-1]["abandoned"] is True


async def test_an_import_that_frees_a_lock_hands_it_to_the_waiters(
    make_settings: MakeSettings,
) -> None:
    """An import ends the session's holders as a delete does: a lock it leaves free (the
    snapshot holds it not, or its holder's expires_at has passed) goes to the first
    waiter in line at once, who claims the imported pending entries; a lock the snapshot
    holds stays held, its waiters waiting for its release."""
    async with service(make_settings) as (c, b):
        for name in ("l", "m", "n"):
            assert (await lock(c, "s1", name, "a", ttl=30)).status_code == 200
        since = await revision(c)
        # Waits far longer than the test's bounds: a waiter answered only when its wait
        # ends (the lock left free and nobody told) fails them.
        waiters = {name: asyncio.create_task(lock(c, "s1", name, "w", ttl=30, wait="60s"))
                   for name in ("l", "m", "n")}
        await queued(c, since, count=3)
        snap = (await c.get("/v1/sessions/s1/snapshot")).json()
        held = {name: snap["locks"][name]["token"] for name in ("l", "m", "n")}
        snap["locks"] = {
            "m": {**snap["locks"]["m"], "expires_at": "2001-01-01T00:00:00.000Z"},
            "n": {**snap["locks"]["n"], "owner": "z"},
        }
        snap["pending_locks"] = {"l": ["e1"], "m": ["e2"]}
        before = await revision(c)
        r = await c.put("/v1/sessions/s1/snapshot", json=snap)
        assert r.status_code in (200, 201), r.text
        for name, entry in (("l", "e1"), ("m", "e2")):
            got = await asyncio.wait_for(waiters[name], 15)
            assert got.status_code == 200, got.text
            assert got.json()["owner"] == "w" and got.json()["token"] > held[name]
            assert got.json()["pending"] == [entry]
        assert not waiters["n"].done()
        found = await events(c, since=before)
        kinds = [(e["type"], e.get("key")) for e in found]
        assert kinds[0] == ("session.imported", "s1")
        assert sorted(kinds[1:3]) == [("lock.acquired", "l"), ("lock.acquired", "m")]
        # The imported holder of "n" releases it: the waiter gets it then.
        imported = (await c.get("/v1/sessions/s1/locks/n")).json()
        assert imported["owner"] == "z"
        r = await c.post("/v1/sessions/s1/locks/n/release",
                         json={"owner": "z", "token": imported["token"]})
        assert r.status_code == 200, r.text
        got = await asyncio.wait_for(waiters["n"], 15)
        assert got.status_code == 200 and got.json()["owner"] == "w", got.text
        snap = (await c.get("/v1/sessions/s1/snapshot")).json()
        assert {name: lk["owner"] for name, lk in snap["locks"].items()} == {
            "l": "w", "m": "w", "n": "w"}
        assert snap["pending_locks"] == {}
        assert await indexed(b, "s1") <= {"l", "m", "n"}
