"""The change log every resource writes through: one event per revision, capped retention."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import httpx

ClientFactory = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


async def test_retention_caps_the_log_and_resume_says_reset(make_client: ClientFactory) -> None:
    async with make_client(event_retention=10) as client:
        for i in range(25):
            await client.put(f"/v1/kv/k{i % 3}", json=i)
        # since=0 is older than the log once anything was compacted: reset, like any
        # resume point the log no longer covers (API.md section 9).
        r = (await client.get("/v1/events", params={"since": 0})).json()
        assert r["events"] == [
            {"type": "reset", "ns": "default", "revision": 25,
             "compacted_revision": 15, "current_revision": 25}
        ]
        assert r["revision"] == 25
        r = (await client.get("/v1/events", params={"since": 3})).json()
        assert r["events"] == [
            {"type": "reset", "ns": "default", "revision": 25,
             "compacted_revision": 15, "current_revision": 25}
        ]
        assert r["revision"] == 25
        r = (await client.get("/v1/events", params={"since": 15})).json()
        assert [e["revision"] for e in r["events"]] == list(range(16, 26))
        assert r["revision"] == 25
        r = (await client.get("/v1/events", params={"since": 14})).json()
        assert r["events"][0]["type"] == "reset"


async def test_log_filters_and_paging(client: httpx.AsyncClient) -> None:
    for key in ["a/1", "b/1", "a/2"]:
        await client.put(f"/v1/kv/{key}", json=1)
    await client.delete("/v1/kv/a/1")
    r = (await client.get("/v1/events", params={"pattern": "a/*"})).json()
    assert [(e["type"], e["key"]) for e in r["events"]] == [
        ("kv.put", "a/1"), ("kv.put", "a/2"), ("kv.delete", "a/1")
    ]
    assert r["revision"] == 4
    r = (await client.get("/v1/events", params={"types": "kv.delete"})).json()
    assert [e["revision"] for e in r["events"]] == [4]
    r = (await client.get("/v1/events", params={"since": 1, "limit": 2})).json()
    assert [e["revision"] for e in r["events"]] == [2, 3]
    assert r["revision"] == 3
    r = (await client.get("/v1/events", params={"since": 4, "wait": "0.2s"})).json()
    assert r == {"events": [], "revision": 4}


async def test_log_parameter_errors(client: httpx.AsyncClient) -> None:
    for params, code in [
        ({"since": "-1"}, "invalid_request"),
        ({"wait": "forever"}, "invalid_ttl"),
        ({"wait": "301s"}, "invalid_ttl"),
        ({"types": "kv,bogus"}, "invalid_request"),
        ({"pattern": ""}, "invalid_pattern"),
        ({"session": "a/b"}, "invalid_key"),
    ]:
        r = await client.get("/v1/events", params=params)
        assert r.status_code == 400, (params, r.text)
        assert r.json()["code"] == code
