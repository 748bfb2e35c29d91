"""GET /v1/events (the long poll) and the watch endpoint's non-streaming answers, on both
backends through the in-process app.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx
import pytest

from tests.helpers import problem, revision

MakeClient = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
async def debug_client(make_client: MakeClient) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(debug_endpoints=True) as c:
        yield c


async def poll(c: httpx.AsyncClient, **params: Any) -> tuple[dict[str, Any], float]:
    started = time.monotonic()
    r = await c.get("/v1/events", params=params)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body, time.monotonic() - started


async def put(c: httpx.AsyncClient, key: str, value: Any = 1) -> int:
    r = await c.put(f"/v1/kv/{key}", json=value)
    assert r.status_code in (200, 201), r.text
    rev: int = r.json()["revision"]
    return rev


async def watchers(c: httpx.AsyncClient) -> int:
    count: int = (await c.get("/debug/watch")).json()["watchers"]
    return count


async def test_returns_at_once_with_pending_events(client: httpx.AsyncClient) -> None:
    await put(client, "a", 1)
    await put(client, "b", {"x": 2})
    body, took = await poll(client, since=0, wait="10s")
    assert took < 2
    assert [e["revision"] for e in body["events"]] == [1, 2]
    assert body["events"][1] == {**body["events"][1], "type": "kv.put", "key": "b",
                                 "value": {"x": 2}, "old_value": None, "ns": "default"}
    assert body["revision"] == 2


async def test_without_events_returns_within_wait(client: httpx.AsyncClient) -> None:
    rev = await put(client, "a")
    body, took = await poll(client, since=rev, wait="300ms")
    assert body == {"events": [], "revision": rev}
    assert 0.25 <= took < 2
    body, took = await poll(client, since=rev)  # no wait: at once
    assert body == {"events": [], "revision": rev} and took < 1


async def test_a_write_during_the_wait_answers_it(debug_client: httpx.AsyncClient) -> None:
    c = debug_client
    rev = await put(c, "a")
    waiting = asyncio.create_task(poll(c, since=rev, wait="20s"))
    while await watchers(c) == 0:  # the poll has joined the live feed
        await asyncio.sleep(0.01)
    await put(c, "b", 7)
    body, took = await waiting
    assert [(e["key"], e["value"]) for e in body["events"]] == [("b", 7)]
    assert body["revision"] == rev + 1 and took < 5
    assert await watchers(c) == 0  # the poll let go of its watcher
    text = (await c.get("/metrics")).text
    assert "corkboard_watchers_open 0.0" in text
    assert "corkboard_events_published_total 1.0" in text  # read once by the feed
    assert "corkboard_events_delivered_total 1.0" in text


async def test_unmatched_changes_advance_the_revision(debug_client: httpx.AsyncClient) -> None:
    c = debug_client
    await put(c, "x1")
    await put(c, "y1")
    await put(c, "x2")
    body, _ = await poll(c, since=0, pattern="y*")
    assert [e["key"] for e in body["events"]] == ["y1"] and body["revision"] == 3
    # Waiting: a change that does not match neither answers nor is lost from `revision`.
    waiting = asyncio.create_task(poll(c, since=3, pattern="y*", wait="400ms"))
    while await watchers(c) == 0:
        await asyncio.sleep(0.01)
    await put(c, "x3")
    body, took = await waiting
    assert body == {"events": [], "revision": 4} and took >= 0.35
    await c.delete("/v1/kv/y1")
    body, _ = await poll(c, since=0, types="kv.delete")
    assert [(e["type"], e["key"], e["old_value"]) for e in body["events"]] == [
        ("kv.delete", "y1", 1)]


async def test_limit_pages_through_the_feed(client: httpx.AsyncClient) -> None:
    for i in range(5):
        await put(client, f"k{i}", i)
    body, _ = await poll(client, since=0, limit=2)
    assert [e["revision"] for e in body["events"]] == [1, 2] and body["revision"] == 2
    body, _ = await poll(client, since=2, limit=2)
    assert [e["revision"] for e in body["events"]] == [3, 4] and body["revision"] == 4
    body, _ = await poll(client, since=4, limit=2, wait="5s")
    assert [e["revision"] for e in body["events"]] == [5] and body["revision"] == 5


async def test_compacted_since_gives_reset(make_client: MakeClient) -> None:
    async with make_client(event_retention=10) as c:
        for i in range(25):
            await put(c, f"k{i}", i)
        body, _ = await poll(c, since=3, wait="5s")
        assert body == {"events": [{"type": "reset", "ns": "default", "revision": 25,
                                    "compacted_revision": 15, "current_revision": 25}],
                        "revision": 25}
        body, _ = await poll(c, since=0)  # 0 after compaction: reset too
        assert body == {"events": [{"type": "reset", "ns": "default", "revision": 25,
                                    "compacted_revision": 15, "current_revision": 25}],
                        "revision": 25}
        body, _ = await poll(c, since=99)  # never reached: the client's state is foreign
        assert body["events"][0]["type"] == "reset" and body["revision"] == 25


async def test_bad_input_is_refused_and_changes_nothing(debug_client: httpx.AsyncClient) -> None:
    c = debug_client
    await put(c, "a")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"wait": "-1"}, "invalid_ttl"),
        ({"wait": "301"}, "invalid_ttl"),
        ({"wait": "soon"}, "invalid_ttl"),
        ({"wait": "nan"}, "invalid_ttl"),
        ({"since": "-1"}, "invalid_request"),
        ({"since": "1.5"}, "invalid_request"),
        ({"limit": "0"}, "invalid_request"),
        ({"limit": "10001"}, "invalid_request"),
        ({"types": "kv,nope"}, "invalid_request"),
        ({"pattern": ""}, "invalid_pattern"),
        ({"session": "a/b"}, "invalid_key"),
        ({"ns": "UPPER"}, "invalid_request"),
    ]
    for params, code in cases:
        problem(await c.get("/v1/events", params=params), 400, code)
    assert await revision(c) == 1
    assert await watchers(c) == 0


async def test_debug_endpoint_is_off_by_default(client: httpx.AsyncClient) -> None:
    problem(await client.get("/debug/watch"), 404, "not_found")
    spec = (await client.get("/openapi.json")).json()
    assert "/debug/watch" not in spec["paths"]
    watch = spec["paths"]["/v1/watch"]["get"]
    assert "text/event-stream" in watch["responses"]["200"]["content"]
    names = {p["name"] for p in watch["parameters"]}
    assert {"pattern", "types", "session", "since", "snapshot", "Last-Event-ID"} <= names


async def test_watch_and_poll_honour_access_tokens(make_client: MakeClient) -> None:
    token = "t-read-0123456789abcdef"
    tokens = f'[{{"token": "{token}", "namespaces": ["team-*"], "permissions": ["read"]}}]'
    async with make_client(tokens=tokens) as c:
        problem(await c.get("/v1/watch", params={"ns": "team-a"}), 401, "unauthorized")
        problem(await c.get("/v1/events", params={"ns": "team-a"}), 401, "unauthorized")
        for path in ("/v1/watch", "/v1/events"):
            r = await c.get(path, params={"ns": "other", "access_token": token})
            problem(r, 403, "forbidden")
        # EventSource cannot send headers: the token may come as ?access_token=.
        r = await c.get("/v1/events", params={"ns": "team-a", "access_token": token})
        assert r.status_code == 200 and r.json() == {"events": [], "revision": 0}
        r = await c.get("/v1/events", params={"ns": "team-a"},
                        headers={"authorization": f"Bearer {token}"})
        assert r.status_code == 200
