"""Namespace quotas on NATS beyond the shared suite (test_quotas runs there too;
sessions' bytes: tests/test_nats_session_quota.py): a key's bytes are its kept
revisions, carried in each message's ``Cb-Kept`` header and counted in ``quota.<ns>``
of ``_corkboard``; deletes, expiry and history trimming give room back; concurrent
writers of three processes never take a namespace past its quota (a write reserves
before it publishes); a key a NATS client wrote counts from its first write through
Corkboard (app/backends/nats/quotas.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import httpx
import nats

from app.backends.nats.quotas import NatsQuotas, Usage
from app.settings import Settings
from tests.helpers import problem, revision
from tests.nats_server import flush_nats
from tests.support import app_client


@contextlib.asynccontextmanager
async def apps(nats_url: str, count: int, **settings: object) -> AsyncIterator[
    list[httpx.AsyncClient]
]:
    async with contextlib.AsyncExitStack() as stack:
        yield [await stack.enter_async_context(app_client(Settings(
            backend=nats_url, sweep_interval_seconds=0.05, **settings)))  # type: ignore[arg-type]
            for _ in range(count)]


async def used(nats_url: str, ns: str = "default") -> Usage:
    """The counters, read with nats-py alone (JetStream counters: ``{"val": "12"}``)."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        found = []
        for what in ("keys", "bytes"):
            try:
                msg = await js.get_last_msg("KV__corkboard_quota",
                                            f"$KV._corkboard_quota.{ns}.{what}")
            except nats.js.errors.NotFoundError:
                found.append(0)
                continue
            found.append(int(json.loads(msg.data or b"{}")["val"]))
        return Usage(found[0], found[1])
    finally:
        await nc.close()


async def test_bytes_are_the_kept_revisions_and_come_back(nats_url: str) -> None:
    flush_nats(nats_url)
    async with apps(nats_url, 1, namespace_max_bytes=1024, key_history=2) as [c]:
        big = "x" * 398  # 400 bytes of JSON
        assert (await c.put("/v1/kv/a", json=big)).status_code == 201
        assert (await c.put("/v1/kv/a", json=big)).status_code == 200
        assert (await c.put("/v1/kv/a", json=big)).status_code == 200  # oldest trimmed
        assert await used(nats_url) == Usage(1, 800)
        nc = await nats.connect(nats_url)
        try:
            msg = await nc.jetstream().get_last_msg("KV_default", "$KV.default.a")
            assert msg.headers is not None and msg.headers["Cb-Kept"] == "400 400"
        finally:
            await nc.close()
        before = await revision(c)
        body = problem(await c.put("/v1/kv/b", json=big), 507, "quota_exceeded")
        assert "CORKBOARD_NAMESPACE_MAX_BYTES" in body["detail"]
        problem(await c.patch("/v1/kv/a", json={"m": big, "n": big}, params={"initial": "{}"},
                              headers={"content-type": "application/merge-patch+json"}),
                507, "quota_exceeded")
        assert await revision(c) == before  # nothing written
        problem(await c.get("/v1/kv/b"), 404, "not_found")
        assert await used(nats_url) == Usage(1, 800)
        # A smaller value frees what falls out of the history; a delete frees it all.
        assert (await c.put("/v1/kv/a", json=1)).status_code == 200
        assert await used(nats_url) == Usage(1, 401)
        assert (await c.put("/v1/kv/b", json=big, params={"ttl": "100ms"})).status_code == 201
        assert await used(nats_url) == Usage(2, 801)
        assert (await c.delete("/v1/kv/a")).status_code == 204
        assert await used(nats_url) == Usage(1, 400)
        # The sweeper's expiry gives the expired key's bytes back.
        r = await c.get("/v1/events", params={"since": before, "types": "kv.expire",
                                              "wait": "5s"})
        assert [e["key"] for e in r.json()["events"]] == ["b"]
        assert await used(nats_url) == Usage(0, 0)
        assert (await c.put("/v1/kv/c", json=big)).status_code == 201
        assert (await c.put("/v1/kv/d", json=big)).status_code == 201
        assert await used(nats_url) == Usage(2, 800)


async def test_concurrent_writers_of_three_processes_never_pass_the_quota(
    nats_url: str,
) -> None:
    flush_nats(nats_url)
    async with apps(nats_url, 3, namespace_max_keys=10) as clients:
        results = await asyncio.gather(*(
            clients[n % 3].put(f"/v1/kv/k{n}", json=n) for n in range(40)
        ))
        assert sorted(r.status_code for r in results) == [201] * 10 + [507] * 30
        listed = (await clients[0].get("/v1/kv", params={"limit": 100})).json()["items"]
        assert len(listed) == 10
        assert await used(nats_url) == Usage(10, sum(len(str(n)) for n in range(40)
                                                     if results[n].status_code == 201))
        # Deletes and new keys racing: the count is exact when they are done.
        deleted = [item["key"] for item in listed[:5]]
        await asyncio.gather(
            *(clients[n % 3].delete(f"/v1/kv/{key}") for n, key in enumerate(deleted)),
            *(clients[n % 3].put(f"/v1/kv/new{n}", json=0) for n in range(8)),
        )
        live = (await clients[0].get("/v1/kv", params={"limit": 100})).json()["items"]
        assert 5 <= len(live) <= 10
        assert (await used(nats_url)).keys == len(live)


async def test_a_key_a_nats_client_wrote_counts_from_its_first_corkboard_write(
    nats_url: str,
) -> None:
    flush_nats(nats_url)
    async with apps(nats_url, 1, namespace_max_keys=1) as [c]:
        assert (await c.put("/v1/kv/mine", json=1)).status_code == 201
        nc = await nats.connect(nats_url)
        try:
            kv = await nc.jetstream().key_value("default")
            await kv.put("theirs", b'"hello"')  # not counted: the quota is not NATS's
            assert (await c.get("/v1/kv/theirs")).json()["value"] == "hello"
            assert await used(nats_url) == Usage(1, 1)
            problem(await c.put("/v1/kv/third", json=3), 507, "quota_exceeded")
            # A write through Corkboard makes it count (and here, passes the quota:
            # the key exists already, so it adds no key).
            assert (await c.put("/v1/kv/theirs", json=2)).status_code == 200
            assert await used(nats_url) == Usage(2, 2)
            await kv.delete("mine")  # a NATS client's delete: still counted
            assert await used(nats_url) == Usage(2, 2)
            assert (await c.delete("/v1/kv/theirs")).status_code == 204
            assert await used(nats_url) == Usage(1, 1)
        finally:
            await nc.close()


def test_usage_of_a_change() -> None:
    quotas = NatsQuotas(None, max_keys=1, max_bytes=1, key_history=2)  # type: ignore[arg-type]
    headers: dict[str, str] = {}
    assert quotas.change(None, b"abc", "put", headers) == Usage(1, 3)
    assert headers == {"Cb-Kept": "3"}
    assert Usage(1, -3).growth == Usage(1, 0) and Usage(1, -3).room == Usage(0, -3)
