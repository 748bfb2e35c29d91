"""On Redis, data and revisions survive a restart of the service."""

from __future__ import annotations

import httpx

from tests.conftest import flush
from tests.support import ServiceProcess, running


def test_restart_keeps_data_and_revisions_grow(redis_url: str) -> None:
    flush(redis_url)
    env = {"CORKBOARD_BACKEND": redis_url}
    with running(ServiceProcess(env)) as (first,):
        for i in range(5):
            httpx.put(f"{first.url}/v1/kv/k{i}", json=i).raise_for_status()
        httpx.post(f"{first.url}/v1/kv/k0/increment", json={"by": 10}).raise_for_status()
        last = httpx.get(f"{first.url}/v1/kv").json()["revision"]
    with running(ServiceProcess(env)) as (second,):
        listing = httpx.get(f"{second.url}/v1/kv").json()
        assert listing["revision"] == last
        assert [(i["key"], i["value"]) for i in listing["items"]] == [
            ("k0", 10), ("k1", 1), ("k2", 2), ("k3", 3), ("k4", 4)
        ]
        r = httpx.put(f"{second.url}/v1/kv/k1", json="new").json()
        assert r["revision"] == last + 1
        assert r["version"] == 2
        history = httpx.get(f"{second.url}/v1/kv/k1/history").json()["items"]
        assert [h["value"] for h in history] == ["new", 1]
