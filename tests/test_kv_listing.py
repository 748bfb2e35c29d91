"""Listing keys by pattern with stable, complete paging (API.md section 2), both backends."""

from __future__ import annotations

import asyncio

import httpx

from tests.helpers import problem


async def all_pages(client: httpx.AsyncClient, **params: object) -> list[list[str]]:
    pages: list[list[str]] = []
    cursor = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        r = await client.get("/v1/kv", params=query)
        assert r.status_code == 200, r.text
        body = r.json()
        pages.append([item["key"] for item in body["items"]])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) < 100, "paging does not end"


async def test_250_keys_in_pages_of_100_come_back_exactly_once(client: httpx.AsyncClient) -> None:
    keys = [f"item/{i:03d}" for i in range(250)]
    await asyncio.gather(*(client.put(f"/v1/kv/{k}", json=i) for i, k in enumerate(keys)))
    pages = await all_pages(client, limit=100)
    assert [len(p) for p in pages] == [100, 100, 50]
    assert [k for p in pages for k in p] == keys  # each once, in key order


async def test_paging_is_stable_under_concurrent_writes(client: httpx.AsyncClient) -> None:
    """Keys that exist throughout the paging appear exactly once, whatever else changes."""
    stable = [f"s/{i:03d}" for i in range(120)]
    for k in stable:
        await client.put(f"/v1/kv/{k}", json=1)
    seen: list[str] = []
    cursor = None
    churn = 0
    while True:
        params: dict[str, object] = {"limit": 25, "pattern": "s/*"}
        if cursor:
            params["cursor"] = cursor
        body = (await client.get("/v1/kv", params=params)).json()
        seen += [i["key"] for i in body["items"]]
        # between pages: add keys before and after the cursor, delete transient ones
        await client.put(f"/v1/kv/s/000-new{churn}", json=1)
        await client.put(f"/v1/kv/s/999-new{churn}", json=1)
        await client.delete(f"/v1/kv/s/000-new{churn}")
        churn += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    stable_seen = [k for k in seen if "-new" not in k]
    assert stable_seen == stable
    assert len(seen) == len(set(seen))


async def test_patterns(client: httpx.AsyncClient) -> None:
    for key in ["config.timeout", "config.retries", "configx", "agents/a1/status",
                "agents/a2/status", "agents/a2/load", "a.b+c"]:
        await client.put(f"/v1/kv/{key}", json=key)

    async def keys(pattern: str) -> list[str]:
        r = await client.get("/v1/kv", params={"pattern": pattern})
        return [i["key"] for i in r.json()["items"]]

    assert await keys("config.*") == ["config.retries", "config.timeout"]
    assert await keys("agents/*/status") == ["agents/a1/status", "agents/a2/status"]
    assert await keys("*load") == ["agents/a2/load"]
    assert await keys("configx") == ["configx"]  # no '*': exactly one key
    assert await keys("a.b+c") == ["a.b+c"]  # pattern characters are literal
    assert await keys("a.b*") == ["a.b+c"]
    assert await keys("nothing*") == []
    assert len(await keys("*")) == 7


async def test_values_flag_and_revision(client: httpx.AsyncClient) -> None:
    last = (await client.put("/v1/kv/k", json={"big": "value"})).json()["revision"]
    with_values = (await client.get("/v1/kv")).json()
    assert with_values["items"][0]["value"] == {"big": "value"}
    assert with_values["revision"] == last
    without = (await client.get("/v1/kv", params={"values": "false"})).json()
    assert "value" not in without["items"][0]
    assert without["items"][0]["revision"] == last


async def test_cursor_from_another_listing_is_refused(client: httpx.AsyncClient) -> None:
    problem(await client.get("/v1/kv", params={"cursor": "@@@"}), 400, "invalid_request")
