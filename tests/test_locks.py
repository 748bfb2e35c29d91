"""Locks through HTTP on every backend: each call and error code, tokens, modes, waiting,
expiry, fencing and events (API.md section 4)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any

import httpx
import pytest

from app.settings import Settings
from tests.locks_support import (
    acquire,
    app_with_session_locks,
    client_of,
    events,
    refresh,
    release,
    revision,
    wait_event,
)

MakeClient = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


def ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# -- acquire -----------------------------------------------------------------------------


async def test_acquire_a_free_lock(client: httpx.AsyncClient) -> None:
    before = now_ms()
    r = await acquire(client, "jobs/nightly", "alice", ttl="10s")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "acquired"
    assert body["owner"] == "alice"
    assert body["name"] == "jobs/nightly"
    assert isinstance(body["token"], int) and body["token"] >= 1
    assert body["pending"] == []
    assert before + 10_000 - 50 <= ms(body["expires_at"]) <= now_ms() + 10_000 + 50
    got = (await client.get("/v1/locks/jobs/nightly")).json()
    assert got == {
        "name": "jobs/nightly", "owner": "alice", "token": body["token"],
        "acquired_at": body["acquired_at"], "expires_at": body["expires_at"], "pending_count": 0,
    }


async def test_default_ttl_is_30s_and_zero_means_no_expiry(client: httpx.AsyncClient) -> None:
    r = await acquire(client, "a")
    assert abs(ms(r.json()["expires_at"]) - now_ms() - 30_000) < 1000
    r = await acquire(client, "b", ttl=0)
    assert r.json()["expires_at"] is None
    assert (await client.get("/v1/locks/b")).json()["expires_at"] is None
    r = await acquire(client, "c", ttl=0.25)
    assert abs(ms(r.json()["expires_at"]) - now_ms() - 250) < 200


async def test_held_lock_is_409_with_the_holder_and_changes_nothing(
    client: httpx.AsyncClient,
) -> None:
    first = (await acquire(client, "a", "alice")).json()
    rev = await revision(client)
    r = await acquire(client, "a", "bob", entry={"ignored": True})
    assert r.status_code == 409
    problem = r.json()
    assert r.headers["content-type"] == "application/problem+json"
    assert problem["code"] == "lock_held"
    assert problem["holder"]["owner"] == "alice"
    assert problem["holder"]["token"] == first["token"]
    assert problem["holder"]["pending_count"] == 0
    assert await revision(client) == rev
    assert (await client.get("/v1/locks/a")).json()["pending_count"] == 0


async def test_same_owner_again_extends_and_keeps_its_token(client: httpx.AsyncClient) -> None:
    first = (await acquire(client, "a", "alice", ttl="2s")).json()
    since = await revision(client)
    again = await acquire(client, "a", "alice", ttl="20s")
    assert again.status_code == 200
    assert again.json()["token"] == first["token"]
    assert ms(again.json()["expires_at"]) > ms(first["expires_at"]) + 15_000
    [event] = await events(client, since)
    assert event["type"] == "lock.refreshed"
    assert event["token"] == first["token"]


async def test_tokens_grow_across_release_and_expiry_and_are_per_name(
    client: httpx.AsyncClient,
) -> None:
    tokens = []
    for owner in ("a", "b", "c"):
        body = (await acquire(client, "t", owner)).json()
        tokens.append(body["token"])
        assert (await release(client, "t", owner, body["token"])).status_code == 200
    since = await revision(client)
    body = (await acquire(client, "t", "d", ttl="100ms")).json()
    tokens.append(body["token"])
    await wait_event(client, since, "lock.expired", owner="d")
    tokens.append((await acquire(client, "t", "e")).json()["token"])
    assert tokens == sorted(set(tokens)) and len(tokens) == 5
    assert (await acquire(client, "other", "a")).json()["token"] == 1
    r = await acquire(client, "t", "x", ns="elsewhere")
    assert r.json()["token"] == 1


# -- queue and debounce --------------------------------------------------------------------


async def test_queue_mode_keeps_every_entry_in_order(client: httpx.AsyncClient) -> None:
    holder = (await acquire(client, "reply", "bot", mode="queue", entry={"text": "m0"})).json()
    assert holder["status"] == "acquired" and holder["pending"] == []
    for i in range(1, 6):
        r = await acquire(client, "reply", f"user{i}", mode="queue", entry={"text": f"m{i}"})
        assert r.status_code == 202
        assert r.json() == {"status": "queued", "position": i}
    assert (await client.get("/v1/locks/reply")).json()["pending_count"] == 5
    r = await release(client, "reply", "bot", holder["token"])
    assert r.status_code == 200
    assert r.json()["status"] == "released"
    assert r.json()["pending"] == [{"text": f"m{i}"} for i in range(1, 6)]
    # handed over once: the next holder starts with an empty list
    nxt = (await acquire(client, "reply", "bot")).json()
    assert nxt["pending"] == []
    assert (await release(client, "reply", "bot", nxt["token"])).json()["pending"] == []


async def test_queue_mode_on_a_free_lock_acquires_and_keeps_no_entry(
    client: httpx.AsyncClient,
) -> None:
    r = await acquire(client, "q", "bot", mode="queue", entry="mine")
    assert r.status_code == 200 and r.json()["pending"] == []
    assert (await client.get("/v1/locks/q")).json()["pending_count"] == 0


async def test_debounce_keeps_only_the_latest_entry(client: httpx.AsyncClient) -> None:
    holder = (await acquire(client, "render", "worker")).json()
    for i in range(4):
        r = await acquire(client, "render", f"edit{i}", mode="debounce", entry={"v": i})
        assert r.status_code == 202
        assert r.json() == {"status": "debounced"}
        assert (await client.get("/v1/locks/render")).json()["pending_count"] == 1
    r = await release(client, "render", "worker", holder["token"])
    assert r.json()["pending"] == [{"v": 3}]


async def test_queued_entries_without_entry_are_null(client: httpx.AsyncClient) -> None:
    holder = (await acquire(client, "q", "bot")).json()
    assert (await acquire(client, "q", "u", mode="queue")).status_code == 202
    assert (await release(client, "q", "bot", holder["token"])).json()["pending"] == [None]


async def test_a_full_pending_list_refuses_with_lock_held(make_client: MakeClient) -> None:
    async with make_client(lock_max_pending=2) as client:
        await acquire(client, "q", "bot")
        for i in range(2):
            assert (await acquire(client, "q", "u", mode="queue", entry=i)).status_code == 202
        rev = await revision(client)
        r = await acquire(client, "q", "u", mode="queue", entry=2)
        assert r.status_code == 409
        assert r.json()["code"] == "lock_held"
        assert r.json()["holder"]["pending_count"] == 2
        assert await revision(client) == rev
        # debounce replaces, so it always fits
        assert (await acquire(client, "q", "u", mode="debounce", entry=3)).status_code == 202


async def test_the_same_owner_in_queue_mode_acquires_and_takes_the_pending_entries(
    client: httpx.AsyncClient,
) -> None:
    first = (await acquire(client, "q", "bot", mode="queue", entry=0)).json()
    await acquire(client, "q", "user", mode="queue", entry=1)
    again = await acquire(client, "q", "bot", mode="queue", entry=2)
    assert again.status_code == 200
    assert again.json()["token"] == first["token"]
    assert again.json()["pending"] == [1]


# -- refresh, release, force-release --------------------------------------------------------


async def test_refresh_extends_the_lease(client: httpx.AsyncClient) -> None:
    body = (await acquire(client, "a", "alice", ttl="2s")).json()
    r = await refresh(client, "a", "alice", body["token"], ttl="40s")
    assert r.status_code == 200
    got = r.json()
    assert got["status"] == "refreshed"
    assert got["token"] == body["token"]
    assert abs(ms(got["expires_at"]) - now_ms() - 40_000) < 1000
    # without ttl: the TTL it was last given
    r = await refresh(client, "a", "alice", body["token"])
    assert abs(ms(r.json()["expires_at"]) - now_ms() - 40_000) < 1000
    r = await refresh(client, "a", "alice", body["token"], ttl=0)
    assert r.json()["expires_at"] is None


async def test_refresh_and_release_errors(client: httpx.AsyncClient) -> None:
    body = (await acquire(client, "a", "alice")).json()
    token = body["token"]
    rev = await revision(client)
    for call in (refresh, release):
        r = await call(client, "a", "bob", token)
        assert r.status_code == 409 and r.json()["code"] == "not_owner"
        assert r.json()["holder"]["owner"] == "alice"
        r = await call(client, "a", "alice", token + 1)
        assert r.status_code == 409 and r.json()["code"] == "lock_not_held"
        r = await call(client, "never", "alice", 1)
        assert r.status_code == 409 and r.json()["code"] == "lock_not_held"
    assert await revision(client) == rev
    assert (await release(client, "a", "alice", token)).status_code == 200
    r = await release(client, "a", "alice", token)
    assert r.status_code == 409 and r.json()["code"] == "lock_not_held"
    r = await refresh(client, "a", "alice", token)
    assert r.status_code == 409 and r.json()["code"] == "lock_not_held"


async def test_an_expired_lock_is_not_held(client: httpx.AsyncClient) -> None:
    body = (await acquire(client, "a", "alice", ttl="50ms")).json()
    await wait_event(client, 0, "lock.expired")
    for call in (refresh, release):
        r = await call(client, "a", "alice", body["token"])
        assert r.status_code == 409 and r.json()["code"] == "lock_not_held"
    # the same owner acquiring again gets a new token, and the old one stays dead
    again = (await acquire(client, "a", "alice")).json()
    assert again["token"] > body["token"]
    r = await release(client, "a", "alice", body["token"])
    assert r.json()["code"] == "lock_not_held"


async def test_force_release(client: httpx.AsyncClient) -> None:
    body = (await acquire(client, "a", "alice")).json()
    await acquire(client, "a", "bob", mode="queue", entry="x")
    since = await revision(client)
    r = await client.post("/v1/locks/a/force-release")
    assert r.status_code == 200
    assert r.json() == {"status": "released", "owner": "alice", "token": body["token"],
                        "pending": ["x"]}
    assert (await client.get("/v1/locks/a")).status_code == 404
    [event] = await events(client, since)
    assert event["type"] == "lock.released" and event["forced"] is True
    assert event["handed_over"] == 1
    # a free lock: nothing to release, nothing changes
    rev = await revision(client)
    r = await client.post("/v1/locks/a/force-release")
    assert r.json() == {"status": "free", "pending": []}
    assert await revision(client) == rev
    # a free lock with entries left by an expired holder: they are taken
    await acquire(client, "b", "alice", ttl="50ms")
    await acquire(client, "b", "bob", mode="queue", entry=1)
    await wait_event(client, rev, "lock.expired")
    r = await client.post("/v1/locks/b/force-release")
    assert r.json() == {"status": "free", "pending": [1]}


async def test_force_release_hands_the_lock_to_the_next_waiter(
    client: httpx.AsyncClient,
) -> None:
    await acquire(client, "a", "alice")
    since = await revision(client)
    waiter = asyncio.create_task(acquire(client, "a", "bob", wait=10))
    await wait_event(client, since, "lock.queued", owner="bob")
    await client.post("/v1/locks/a/force-release")
    r = await waiter
    assert r.status_code == 200 and r.json()["owner"] == "bob"


# -- get and list --------------------------------------------------------------------------


async def test_get_is_404_when_free_with_the_pending_count(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/locks/nothing")
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    assert r.json()["pending_count"] == 0
    await acquire(client, "a", "alice", ttl="50ms")
    await acquire(client, "a", "bob", mode="queue", entry=1)
    await wait_event(client, 0, "lock.expired")
    r = await client.get("/v1/locks/a")
    assert r.status_code == 404 and r.json()["pending_count"] == 1


async def test_list_by_pattern(client: httpx.AsyncClient) -> None:
    for name in ("jobs/b", "jobs/a", "other", "jobs/c"):
        await acquire(client, name, "o-" + name)
    token = (await client.get("/v1/locks/jobs/c")).json()["token"]
    await release(client, "jobs/c", "o-jobs/c", token)
    await acquire(client, "jobs/x", "o", ns="elsewhere")
    r = await client.get("/v1/locks", params={"pattern": "jobs/*"})
    assert r.status_code == 200
    assert [i["name"] for i in r.json()["items"]] == ["jobs/a", "jobs/b"]
    assert r.json()["items"][0]["owner"] == "o-jobs/a"
    assert set(r.json()["items"][0]) == {
        "name", "owner", "token", "acquired_at", "expires_at", "pending_count"}
    all_names = [i["name"] for i in (await client.get("/v1/locks")).json()["items"]]
    assert all_names == ["jobs/a", "jobs/b", "other"]
    r = await client.get("/v1/locks", params={"pattern": "other"})
    assert [i["name"] for i in r.json()["items"]] == ["other"]
    r = await client.get("/v1/locks", params={"pattern": "*b"})
    assert [i["name"] for i in r.json()["items"]] == ["jobs/b"]
    r = await client.get("/v1/locks", params={"pattern": "bad pattern"})
    assert r.status_code == 400 and r.json()["code"] == "invalid_pattern"


# -- bad input -------------------------------------------------------------------------------


def nested(depth: int) -> Any:
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


BAD_ACQUIRES: list[tuple[str, Any, int, str]] = [
    ("a", {}, 422, "validation_failed"),
    ("a", {"owner": ""}, 422, "validation_failed"),
    ("a", {"owner": "x" * 257}, 422, "validation_failed"),
    ("a", {"owner": "tab\there"}, 422, "validation_failed"),
    ("a", {"owner": 5}, 422, "validation_failed"),
    ("a", {"owner": "o", "mode": "shared"}, 422, "validation_failed"),
    ("a", {"owner": "o", "color": "red"}, 422, "validation_failed"),
    ("a", ["owner"], 422, "validation_failed"),
    ("a", {"owner": "o", "ttl": -1}, 400, "invalid_ttl"),
    ("a", {"owner": "o", "ttl": "soon"}, 400, "invalid_ttl"),
    ("a", {"owner": "o", "ttl": True}, 422, "validation_failed"),
    ("a", {"owner": "o", "wait": "61s"}, 400, "invalid_ttl"),
    ("a", {"owner": "o", "wait": "-1"}, 400, "invalid_ttl"),
    ("a", {"owner": "o", "mode": "queue", "entry": nested(300)}, 422, "validation_failed"),
    ("bad name", {"owner": "o"}, 400, "invalid_key"),
    ("a/%2E%2E/b", {"owner": "o"}, 400, "invalid_key"),  # httpx would resolve "a/../b"
    ("refresh", {"owner": "o"}, 400, "invalid_key"),
    ("a*", {"owner": "o"}, 400, "invalid_key"),
]


@pytest.mark.parametrize(("name", "body", "status", "code"), BAD_ACQUIRES)
async def test_bad_acquires_change_nothing(
    client: httpx.AsyncClient, name: str, body: Any, status: int, code: str
) -> None:
    rev = await revision(client)
    r = await client.post(f"/v1/locks/{name}", json=body)
    assert r.status_code == status, r.text
    assert r.json()["code"] == code
    assert await revision(client) == rev
    assert (await client.get("/v1/locks")).json()["items"] == []


async def test_malformed_bodies(client: httpx.AsyncClient) -> None:
    body = (await acquire(client, "a", "alice")).json()
    rev = await revision(client)
    r = await client.post("/v1/locks/a", content=b"{not json")
    assert r.status_code == 400 and r.json()["code"] == "invalid_request"
    r = await client.post("/v1/locks/a/release", content=b"")
    assert r.status_code == 422 and r.json()["code"] == "validation_failed"
    for path in ("refresh", "release"):
        for bad in ({"owner": "alice"}, {"owner": "alice", "token": "1"},
                    {"owner": "alice", "token": 0}, {"owner": "alice", "token": 1.5}):
            r = await client.post(f"/v1/locks/a/{path}", json=bad)
            assert r.status_code == 422, (path, bad, r.text)
    r = await refresh(client, "a", "alice", body["token"], ttl="forever")
    assert r.status_code == 400 and r.json()["code"] == "invalid_ttl"
    r = await client.get("/v1/locks/a/release")
    assert r.status_code == 400 and r.json()["code"] == "invalid_key"
    r = await client.get("/v1/locks/a", params={"ns": "Bad NS"})
    assert r.status_code == 400
    assert await revision(client) == rev
    assert (await client.get("/v1/locks/a")).json()["token"] == body["token"]


async def test_an_entry_over_the_value_limit_is_413(make_client: MakeClient) -> None:
    async with make_client(max_value_bytes=100) as client:
        await acquire(client, "a", "alice")
        rev = await revision(client)
        r = await acquire(client, "a", "bob", mode="queue", entry="x" * 200)
        assert r.status_code == 413 and r.json()["code"] == "payload_too_large"
        r = await client.post("/v1/locks/a", content=b'{"owner":"b","entry":"' + b"x" * 40_000
                              + b'"}', headers={"content-type": "application/json"})
        assert r.status_code == 413
        assert await revision(client) == rev
        assert (await client.get("/v1/locks/a")).json()["pending_count"] == 0
        r = await acquire(client, "a", "bob", mode="queue", entry="x" * 50)
        assert r.status_code == 202


# -- expiry ----------------------------------------------------------------------------------


async def test_expiry_at_the_deadline_keeps_the_pending_entries(
    client: httpx.AsyncClient,
) -> None:
    holder = (await acquire(client, "job", "doomed", ttl="300ms")).json()
    for i in range(3):
        await acquire(client, "job", "producer", mode="queue", entry={"n": i})
    # nobody touches the lock: the sweeper expires it on time, with its event
    event = await wait_event(client, 0, "lock.expired")
    assert event["key"] == "job" and event["owner"] == "doomed"
    assert event["token"] == holder["token"] and event["pending_count"] == 3
    assert 0 <= ms(event["at"]) - ms(holder["expires_at"]) < 1000
    assert (await client.get("/v1/locks/job")).status_code == 404
    r = await client.put("/v1/kv/out", json=1,
                         headers={"Fence-Lock": "job", "Fence-Token": str(holder["token"])})
    assert r.status_code == 409 and r.json()["code"] == "stale_fence"
    nxt = (await acquire(client, "job", "heir")).json()
    assert nxt["token"] > holder["token"]
    assert nxt["pending"] == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert (await client.get("/v1/locks/job")).json()["pending_count"] == 0


async def test_a_refreshed_lock_does_not_expire_at_its_first_deadline(
    client: httpx.AsyncClient,
) -> None:
    body = (await acquire(client, "a", "alice", ttl="200ms")).json()
    await refresh(client, "a", "alice", body["token"], ttl="10s")
    since = await revision(client)
    await acquire(client, "marker", "m", ttl="400ms")  # expires after the first deadline
    await wait_event(client, since, "lock.expired", key="marker")
    assert (await client.get("/v1/locks/a")).json()["token"] == body["token"]


# -- waiting ---------------------------------------------------------------------------------


async def test_a_waiter_wakes_as_soon_as_the_lock_is_released(
    client: httpx.AsyncClient,
) -> None:
    holder = (await acquire(client, "a", "alice")).json()
    await acquire(client, "a", "producer", mode="queue", entry="e")
    since = await revision(client)
    waiter = asyncio.create_task(acquire(client, "a", "bob", wait=30, ttl="5s"))
    queued = await wait_event(client, since, "lock.queued", owner="bob")
    assert queued["mode"] == "exclusive" and queued["position"] == 1
    released = time.monotonic()
    r = await release(client, "a", "alice", holder["token"])
    assert r.json()["pending"] == ["e"]
    got = await waiter
    assert time.monotonic() - released < 0.5  # woken by the release, not by a timer
    assert got.status_code == 200
    body = got.json()
    assert body["owner"] == "bob" and body["token"] == holder["token"] + 1
    assert body["pending"] == []
    assert abs(ms(body["expires_at"]) - now_ms() - 5000) < 1000
    types = [e["type"] for e in await events(client, since)]
    assert types == ["lock.queued", "lock.released", "lock.acquired", "lock.refreshed"]


async def test_a_waiter_gets_the_lock_and_entries_of_an_expired_holder(
    client: httpx.AsyncClient,
) -> None:
    holder = (await acquire(client, "a", "doomed", ttl="300ms")).json()
    await acquire(client, "a", "producer", mode="queue", entry=1)
    r = await acquire(client, "a", "bob", wait=10)
    assert r.status_code == 200
    body = r.json()
    assert body["token"] > holder["token"] and body["pending"] == [1]
    assert ms(body["acquired_at"]) >= ms(holder["expires_at"])


async def test_a_waiter_that_times_out_gets_lock_held_and_leaves_the_line(
    client: httpx.AsyncClient,
) -> None:
    holder = (await acquire(client, "a", "alice")).json()
    started = time.monotonic()
    r = await acquire(client, "a", "bob", wait="300ms")
    assert 0.29 <= time.monotonic() - started < 2
    assert r.status_code == 409 and r.json()["code"] == "lock_held"
    assert r.json()["holder"]["owner"] == "alice"
    await release(client, "a", "alice", holder["token"])
    assert (await client.get("/v1/locks/a")).status_code == 404


async def test_waiters_are_served_first_come_first_served(client: httpx.AsyncClient) -> None:
    holder = (await acquire(client, "a", "h")).json()
    order: list[str] = []

    async def wait_then_release(owner: str) -> None:
        r = await acquire(client, "a", owner, wait=30)
        assert r.status_code == 200, r.text
        order.append(owner)
        assert (await release(client, "a", owner, r.json()["token"])).status_code == 200

    owners = [f"w{i}" for i in range(6)]
    tasks = []
    for owner in owners:
        since = await revision(client)
        tasks.append(asyncio.create_task(wait_then_release(owner)))
        await wait_event(client, since, "lock.queued", owner=owner)
    # a late comer without waiting does not jump the line
    assert (await acquire(client, "a", "late")).status_code == 409
    await release(client, "a", "h", holder["token"])
    await asyncio.gather(*tasks)
    assert order == owners


async def test_wait_applies_to_exclusive_mode_only(client: httpx.AsyncClient) -> None:
    await acquire(client, "a", "alice")
    started = time.monotonic()
    r = await acquire(client, "a", "bob", mode="queue", wait=30, entry=1)
    assert r.status_code == 202 and time.monotonic() - started < 1


# -- fencing ---------------------------------------------------------------------------------


async def test_fenced_key_writes_apply_only_with_the_holding_token(
    client: httpx.AsyncClient,
) -> None:
    old = (await acquire(client, "f", "alice")).json()["token"]
    await release(client, "f", "alice", old)
    token = (await acquire(client, "f", "bob")).json()["token"]
    await client.put("/v1/kv/k", json=0)

    def fence(t: int) -> dict[str, str]:
        return {"Fence-Lock": "f", "Fence-Token": str(t)}

    writes = [
        lambda h: client.put("/v1/kv/k", json=1, headers=h),
        lambda h: client.patch("/v1/kv/k", content=b"2",
                               headers={**h, "content-type": "application/merge-patch+json"}),
        lambda h: client.post("/v1/kv/k/increment", json={"by": 1}, headers=h),
        lambda h: client.post("/v1/kv/k/touch", json={"ttl": "1h"}, headers=h),
        lambda h: client.delete("/v1/kv/k", headers=h),
    ]
    for write in writes:
        rev = await revision(client)
        r = await write(fence(old))
        assert r.status_code == 409 and r.json()["code"] == "stale_fence", r.text
        r = await write({"Fence-Lock": "nolock", "Fence-Token": str(token)})
        assert r.status_code == 409 and r.json()["code"] == "stale_fence"
        assert await revision(client) == rev
        assert (await write(fence(token))).status_code in (200, 201, 204)
    assert (await client.get("/v1/kv/k")).status_code == 404
    await release(client, "f", "bob", token)
    r = await client.put("/v1/kv/k", json=1, headers=fence(token))
    assert r.status_code == 409 and r.json()["code"] == "stale_fence"
    assert (await client.get("/v1/kv/k")).status_code == 404


# -- events ----------------------------------------------------------------------------------


async def test_every_lock_change_is_an_event(client: httpx.AsyncClient) -> None:
    since = await revision(client)
    a = (await acquire(client, "ev", "alice", ttl="10s")).json()
    await acquire(client, "ev", "bob", mode="queue", entry=1)
    await acquire(client, "ev", "carol", mode="debounce", entry=2)
    await refresh(client, "ev", "alice", a["token"])
    await release(client, "ev", "alice", a["token"])
    got = await events(client, since)
    assert [e["type"] for e in got] == [
        "lock.acquired", "lock.queued", "lock.queued", "lock.refreshed", "lock.released"]
    for e in got:
        assert e["key"] == "ev" and e["ns"] == "default"
        assert "value" not in e and "old_value" not in e and "session" not in e
    acquired, queued, debounced, refreshed, released = got
    assert acquired["owner"] == "alice" and acquired["token"] == a["token"]
    assert acquired["expires_at"] == a["expires_at"] and acquired["pending_count"] == 0
    assert queued["mode"] == "queue" and queued["owner"] == "bob"
    assert queued["position"] == 1 and queued["pending_count"] == 1
    assert debounced["mode"] == "debounce" and debounced["pending_count"] == 1
    assert refreshed["pending_count"] == 1 and refreshed["handed_over"] == 0
    assert released["owner"] == "alice" and released["pending_count"] == 0
    assert released["handed_over"] == 1
    r = await client.get("/v1/events", params={"since": since, "pattern": "ev",
                                               "types": "lock.released"})
    assert [e["type"] for e in r.json()["events"]] == ["lock.released"]


async def test_owners_with_any_characters_survive_events(client: httpx.AsyncClient) -> None:
    owner = 'agent "7" / caf\u00e9 \\ \u2603'
    since = await revision(client)
    body = (await acquire(client, "u", owner)).json()
    assert body["owner"] == owner
    assert (await events(client, since))[0]["owner"] == owner
    assert (await client.get("/v1/locks/u")).json()["owner"] == owner
    assert (await release(client, "u", owner, body["token"])).status_code == 200


# -- scopes ----------------------------------------------------------------------------------


async def test_the_router_mounts_unchanged_for_session_scoped_locks(
    make_settings: Callable[..., Settings],
) -> None:
    async with client_of(app_with_session_locks(make_settings())) as client:
        ns_lock = (await acquire(client, "reply", "bot")).json()
        r = await client.post("/v1/sessions/s1/locks/reply", json={"owner": "bot"})
        assert r.status_code == 200
        s_lock = r.json()
        assert s_lock["token"] == ns_lock["token"] == 1  # separate token counters
        r = await client.post("/v1/sessions/s1/locks/reply", json={"owner": "x", "mode": "queue",
                                                                   "entry": "hi"})
        assert r.json() == {"status": "queued", "position": 1}
        assert (await client.get("/v1/locks/reply")).json()["pending_count"] == 0
        assert (await client.get("/v1/sessions/s1/locks/reply")).json()["pending_count"] == 1
        assert (await client.get("/v1/sessions/s2/locks/reply")).status_code == 404
        items = (await client.get("/v1/sessions/s1/locks")).json()["items"]
        assert [i["name"] for i in items] == ["reply"]
        # fencing a write with a session lock needs Fence-Session
        fence = {"Fence-Lock": "reply", "Fence-Token": "1", "Fence-Session": "s1"}
        assert (await client.put("/v1/kv/k", json=1, headers=fence)).status_code == 201
        fence["Fence-Session"] = "s2"
        assert (await client.put("/v1/kv/k", json=2, headers=fence)).status_code == 409
        r = await client.get("/v1/events", params={"since": 0, "session": "s1"})
        session_events = r.json()["events"]
        assert [e["type"] for e in session_events] == ["lock.acquired", "lock.queued"]
        assert all(e["session"] == "s1" for e in session_events)
        r = await client.post("/v1/sessions/s1/locks/reply/release",
                              json={"owner": "bot", "token": 1})
        assert r.json()["pending"] == ["hi"]
        r = await client.post("/v1/sessions/bad/id/locks/x", json={"owner": "o"})
        assert r.status_code in (400, 404)
        spec = (await client.get("/openapi.json")).json()
        ids = [op["operationId"] for path in spec["paths"].values() for op in path.values()]
        assert len(ids) == len(set(ids))
        assert {"acquire_lock", "acquire_session_lock", "list_session_locks"} <= set(ids)
