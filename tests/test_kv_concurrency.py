"""Atomicity under concurrency: increments, compare-and-swap and server-side patches."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.support import ServiceProcess, running


async def test_100_concurrent_increments(client: httpx.AsyncClient) -> None:
    results = await asyncio.gather(
        *(client.post("/v1/kv/counter/increment", json={"by": 1}) for _ in range(100))
    )
    assert all(r.status_code in (200, 201) for r in results)
    assert sum(r.status_code == 201 for r in results) == 1
    assert sorted(r.json()["value"] for r in results) == list(range(1, 101))
    entry = (await client.get("/v1/kv/counter")).json()
    assert entry["value"] == 100
    assert entry["version"] == 100


async def test_50_if_match_writers_exactly_one_wins(client: httpx.AsyncClient) -> None:
    etag = (await client.put("/v1/kv/k", json=0)).headers["etag"]
    results = await asyncio.gather(
        *(client.put("/v1/kv/k", json=i, headers={"if-match": etag}) for i in range(1, 51))
    )
    winners = [r for r in results if r.status_code == 200]
    losers = [r for r in results if r.status_code == 412]
    assert len(winners) == 1
    assert len(losers) == 49
    winner = winners[0].json()
    for r in losers:
        assert r.json()["code"] == "revision_mismatch"
        assert r.json()["current"]["revision"] == winner["revision"]
    assert (await client.get("/v1/kv/k")).json() == winner


async def test_concurrent_patches_lose_no_update(client: httpx.AsyncClient) -> None:
    await client.put("/v1/kv/doc", json={})
    results = await asyncio.gather(
        *(
            client.patch(
                "/v1/kv/doc",
                content=f'{{"f{i}": {i}}}',
                headers={"content-type": "application/merge-patch+json"},
            )
            for i in range(40)
        )
    )
    assert all(r.status_code == 200 for r in results), [r.text for r in results]
    assert (await client.get("/v1/kv/doc")).json()["value"] == {f"f{i}": i for i in range(40)}


async def test_concurrent_create_only_one_wins(client: httpx.AsyncClient) -> None:
    results = await asyncio.gather(
        *(client.put("/v1/kv/once", json=i, headers={"if-none-match": "*"}) for i in range(30))
    )
    assert sorted(r.status_code for r in results) == [201] + [412] * 29


def test_increments_across_worker_processes(redis_url: str) -> None:
    """Two uvicorn workers on one Redis: 200 increments over real TCP end at exactly 200."""
    from tests.conftest import flush

    flush(redis_url)
    with running(ServiceProcess({"CORKBOARD_BACKEND": redis_url}, workers=2)) as (service,):

        async def hammer() -> list[int]:
            limits = httpx.Limits(max_connections=20)
            async with httpx.AsyncClient(base_url=service.url, limits=limits) as c:
                rs = await asyncio.gather(
                    *(c.post("/v1/kv/n/increment", json={}) for _ in range(200))
                )
                return [r.status_code for r in rs]

        codes = asyncio.run(hammer())
        assert all(c in (200, 201) for c in codes)
        assert httpx.get(service.url + "/v1/kv/n").json()["value"] == 200


pytestmark = pytest.mark.filterwarnings("error")
