"""CORKBOARD_NAMESPACE_MAX_LOCKS on every backend, through HTTP: a namespace holds at most
that many locks, namespace and session locks together; a call that would make a new
holder past it is 507 quota_exceeded and changes nothing (no event, no token used, no
waiter queued), while everything a holder does with a lock it holds, entries queued on a
held lock, and a hand-over to a waiter in line still work at the quota."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx

from tests.helpers import problem, revision
from tests.locks_support import acquire, refresh, release, wait_event

MakeClient = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


def refused(r: httpx.Response, limit: int) -> None:
    body = problem(r, 507, "quota_exceeded")
    assert body["quota"] == "locks" and body["limit"] == limit, body
    assert "CORKBOARD_NAMESPACE_MAX_LOCKS" in body["detail"]


async def session_lock(c: httpx.AsyncClient, sid: str, name: str, owner: str,
                       **body: Any) -> httpx.Response:
    return await c.post(f"/v1/sessions/{sid}/locks/{name}", json={"owner": owner, **body})


async def test_a_new_holder_past_the_quota_is_507_and_nothing_changes(
    make_client: MakeClient,
) -> None:
    async with make_client(namespace_max_locks=3) as c:
        limits = (await c.get("/v1/capabilities")).json()["limits"]
        assert limits["namespace_max_locks"] == 3
        held = {}
        for name in ("a", "b", "c"):
            r = await acquire(c, name, "alice", ttl=60)
            assert r.status_code == 200, r.text
            held[name] = r.json()["token"]
        before = await revision(c)
        # Every way of taking the free lock 'd' is refused: plain, queue and debounce
        # modes (which acquire a free lock) and a wait (which would not queue a waiter).
        refused(await acquire(c, "d", "bob"), 3)
        refused(await acquire(c, "d", "bob", mode="queue", entry=1), 3)
        refused(await acquire(c, "d", "bob", mode="debounce", entry=1), 3)
        refused(await acquire(c, "d", "bob", wait="0.2s"), 3)
        assert await revision(c) == before  # no event, nothing written
        r = await c.get("/v1/locks/d")
        assert r.status_code == 404 and r.json()["pending_count"] == 0
        # At the quota, the holders keep using their locks and others queue on them.
        r = await acquire(c, "a", "alice", ttl=60)  # re-acquire: same token
        assert r.status_code == 200 and r.json()["token"] == held["a"]
        r = await refresh(c, "b", "alice", held["b"], ttl=90)
        assert r.status_code == 200, r.text
        r = await acquire(c, "c", "bob", mode="queue", entry={"job": 1})
        assert r.status_code == 202 and r.json()["status"] == "queued"
        r = await acquire(c, "c", "bob", mode="debounce", entry={"job": 2})
        assert r.status_code == 202 and r.json()["status"] == "debounced"
        problem(await acquire(c, "c", "bob"), 409, "lock_held")  # held: not the quota
        # Another namespace has its own count.
        assert (await acquire(c, "d", "bob", ns="other")).status_code == 200
        # A release makes room: 'd' gets token 1 (no token was used by the refusals).
        assert (await release(c, "a", "alice", held["a"])).status_code == 200
        r = await acquire(c, "d", "bob")
        assert r.status_code == 200 and r.json()["token"] == 1
        refused(await acquire(c, "a", "alice"), 3)


async def test_session_locks_count_with_namespace_locks(make_client: MakeClient) -> None:
    async with make_client(namespace_max_locks=2) as c:
        assert (await acquire(c, "x", "alice")).status_code == 200
        s = await session_lock(c, "s1", "l", "alice")
        assert s.status_code == 200, s.text
        before = await revision(c)
        refused(await session_lock(c, "s1", "m", "alice"), 2)
        refused(await session_lock(c, "s2", "m", "alice"), 2)
        refused(await acquire(c, "y", "alice"), 2)
        assert await revision(c) == before
        problem(await c.get("/v1/sessions/s2"), 404, "not_found")  # not created either
        # The session's own lock still works at the quota.
        assert (await session_lock(c, "s1", "l", "alice")).status_code == 200
        r = await c.post("/v1/sessions/s1/locks/l/release",
                         json={"owner": "alice", "token": s.json()["token"]})
        assert r.status_code == 200, r.text
        r = await acquire(c, "y", "alice")
        assert r.status_code == 200 and r.json()["token"] == 1
        refused(await session_lock(c, "s1", "l", "alice"), 2)


async def test_a_waiter_handed_the_lock_is_not_refused(make_client: MakeClient) -> None:
    """The lock was counted while held: its hand-over to the next in line is no new lock."""
    async with make_client(namespace_max_locks=1) as c:
        first = (await acquire(c, "a", "alice", ttl=60)).json()
        start = await revision(c)
        waiting = asyncio.ensure_future(acquire(c, "a", "bob", wait="10s", ttl=60))
        await wait_event(c, start, "lock.queued", owner="bob")  # bob is in line
        assert (await release(c, "a", "alice", first["token"])).status_code == 200
        r = await waiting
        assert r.status_code == 200 and r.json()["owner"] == "bob", r.text
        refused(await acquire(c, "b", "carol"), 1)


async def test_a_snapshot_import_past_the_quota_is_507(make_client: MakeClient) -> None:
    """An import restores the locks its snapshot holds: refused (nothing written) when
    it holds more than the session does now and the namespace has no room for them."""
    async with make_client(namespace_max_locks=2) as c:
        assert (await session_lock(c, "s1", "l", "alice", ttl=60)).status_code == 200
        doc = (await c.get("/v1/sessions/s1/snapshot")).json()
        assert (await acquire(c, "x", "alice")).status_code == 200  # 2 held
        before = await revision(c)
        refused(await c.put("/v1/sessions/copy/snapshot", json=doc), 2)
        assert await revision(c) == before
        problem(await c.get("/v1/sessions/copy"), 404, "not_found")
        # Importing over s1 holds no more than s1 does: allowed at the quota.
        assert (await c.put("/v1/sessions/s1/snapshot", json=doc)).status_code == 200
        r = await c.post("/v1/locks/x/force-release")
        assert r.status_code == 200, r.text
        assert (await c.put("/v1/sessions/copy/snapshot", json=doc)).status_code == 201
        refused(await acquire(c, "x", "alice"), 2)
