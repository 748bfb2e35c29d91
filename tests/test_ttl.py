"""Expiry happens at the deadline, with a kv.expire event, without anyone reading the key."""

from __future__ import annotations

import asyncio
import itertools
import time

import httpx

from tests.helpers import events, problem


async def test_key_expires_on_time_with_an_event(client: httpx.AsyncClient) -> None:
    put = await client.put("/v1/kv/session-token", json="abc", params={"ttl": "1s"})
    started = time.monotonic()
    since = put.json()["revision"]
    # Wait on the event feed only: the key itself is never read until it has expired.
    got = await events(client, since, wait="3s", types="kv.expire")
    elapsed = time.monotonic() - started
    assert [(e["type"], e["key"], e["old_value"], e["value"]) for e in got] == [
        ("kv.expire", "session-token", "abc", None)
    ]
    assert 0.9 <= elapsed < 2.0, elapsed
    problem(await client.get("/v1/kv/session-token"), 404, "not_found")
    listing = (await client.get("/v1/kv")).json()
    assert listing["items"] == []


async def test_touch_extends_the_deadline(client: httpx.AsyncClient) -> None:
    put = await client.put("/v1/kv/lease", json=1, params={"ttl": "1s"})
    since = put.json()["revision"]
    await client.post("/v1/kv/lease/touch", json={"ttl": "2.5s"})
    # Past the original deadline no expiry event arrives ...
    assert await events(client, since, wait="1.5s", types="kv.expire") == []
    assert (await client.get("/v1/kv/lease")).status_code == 200
    # ... and at the new one it does.
    got = await events(client, since, wait="3s", types="kv.expire")
    assert [e["key"] for e in got] == ["lease"]


async def test_rewrite_without_ttl_cancels_expiry(client: httpx.AsyncClient) -> None:
    since = (await client.put("/v1/kv/k", json=1, params={"ttl": "0.3s"})).json()["revision"]
    await client.put("/v1/kv/k", json=2)
    assert await events(client, since, wait="1s", types="kv.expire") == []
    assert (await client.get("/v1/kv/k")).json()["value"] == 2


async def test_expired_key_is_absent_before_the_sweep(make_client: object) -> None:
    # A sweep interval far longer than the TTL: reads must not show the key regardless.
    async with make_client(sweep_interval_seconds=5) as client:  # type: ignore[operator]
        await client.put("/v1/kv/k", json=1, params={"ttl": "100ms"})
        got = await events(client, 0, wait="0.3s", types="kv.expire")
        assert got == []  # the sweeper has not run yet
        problem(await client.get("/v1/kv/k"), 404, "not_found")
        assert (await client.get("/v1/kv")).json()["items"] == []
        # a write first expires the old entry (with its event), then creates a new key
        r = await client.put("/v1/kv/k", json=2)
        assert r.status_code == 201
        assert r.json()["version"] == 1
        types = [e["type"] for e in await events(client, 0)]
        assert types == ["kv.put", "kv.expire", "kv.put"]


async def test_a_rewrite_stores_what_it_answers(client: httpx.AsyncClient) -> None:
    """Each rewrite of a key (a deadline set, moved, kept, dropped) stores the entry its
    answer shows: the revision, version, modified_at and expires_at change, created_at and
    created_revision stay; the history keeps each replaced revision as it was answered."""
    answers = []
    for params in ({}, {"ttl": "60s"}, {"ttl": "120s"}, {"ttl": "120s"}, {}, {}):
        # Distinct milliseconds, so an unchanged modified_at cannot pass for a stored one.
        await asyncio.sleep(0.003)
        put = await client.put("/v1/kv/k", json=len(answers), params=params)
        assert put.status_code == (201 if not answers else 200), put.text
        answer = put.json()
        assert (await client.get("/v1/kv/k")).json() == answer
        answers.append(answer)
    first = answers[0]
    for before, after in itertools.pairwise(answers):
        assert after["version"] == before["version"] + 1
        assert after["modified_at"] > before["modified_at"]
        assert (after["created_at"], after["created_revision"]) == (
            first["created_at"], first["created_revision"])
    assert [a["expires_at"] is None for a in answers] == [True, False, False, False, True, True]
    assert answers[1]["expires_at"] < answers[2]["expires_at"]
    for answer in answers[:-1]:
        old = await client.get("/v1/kv/k", params={"revision": answer["revision"]})
        assert old.json() == answer
