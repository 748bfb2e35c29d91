"""Sessions across replicas: two real uvicorn processes on one Redis agree on dedupe,
variable versions and batches, as one process would."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import flush
from tests.support import ServiceProcess, running

S = "/v1/sessions/chat"


@pytest.fixture(scope="module")
def replicas(redis_url: str) -> Iterator[list[ServiceProcess]]:
    env = {"CORKBOARD_BACKEND": redis_url, "CORKBOARD_LOG_LEVEL": "warning"}
    with running(ServiceProcess(env), ServiceProcess(env)) as started:
        yield started


@pytest.fixture
def urls(replicas: list[ServiceProcess], redis_url: str) -> list[str]:
    flush(redis_url)
    return [r.url for r in replicas]


async def test_dedupe_across_replicas_sees_one_first(urls: list[str]) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        for round_ in range(3):
            key = f"message-{round_}"
            replies = await asyncio.gather(*(
                client.post(urls[i % 2] + f"{S}/dedupe", json={"key": key, "limit": 100})
                for i in range(50)
            ))
            assert all(r.status_code == 200 for r in replies), [r.text for r in replies]
            assert sorted(r.json()["duplicate"] for r in replies) == [False] + [True] * 49


async def test_dedupe_window_trims_in_order_across_replicas(urls: list[str]) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        for i in range(8):
            r = await client.post(urls[i % 2] + f"{S}/dedupe", json={"key": f"k{i}", "limit": 5})
            assert r.json() == {"duplicate": False}
        order = (await client.get(urls[0] + f"{S}/snapshot")).json()["dedupe_order"]
        assert order == ["k3", "k4", "k5", "k6", "k7"]
        assert (await client.post(urls[1] + f"{S}/dedupe",
                                  json={"key": "k2", "limit": 5})).json()["duplicate"] is False
        assert (await client.post(urls[0] + f"{S}/dedupe",
                                  json={"key": "k7", "limit": 5})).json()["duplicate"] is True


async def test_concurrent_writes_across_replicas_take_one_version_each(urls: list[str]) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        for name in ("a", "b"):
            r = await client.post(urls[0] + f"{S}/variables",
                                  json={"name": name, "type": "integer", "value": 0})
            assert r.status_code == 201
        singles = [client.put(urls[i % 2] + f"{S}/variables/a", json={"value": i})
                   for i in range(20)]
        batches = [client.patch(urls[i % 2] + f"{S}/values",
                                json={"updates": {"a": -i, "b": i}}) for i in range(20)]
        replies = await asyncio.gather(*singles, *batches)
        assert all(r.status_code == 200 for r in replies), [r.text for r in replies]
        versions_a = sorted([r.json()["version"] for r in replies[:20]]
                            + [r.json()["versions"]["a"] for r in replies[20:]])
        assert versions_a == list(range(2, 42))
        final = (await client.get(urls[1] + f"{S}/values")).json()["values"]
        a = (await client.get(urls[0] + f"{S}/variables/a")).json()
        b = (await client.get(urls[0] + f"{S}/variables/b")).json()
        assert a["version"] == 41 and b["version"] == 21
        assert final == {"a": a["value"], "b": b["value"]}
