"""Bounded memory and work per namespace (API.md section 9), measured in the backend: the
event log's bytes, state left by reads, and what a deadline sweep visits."""

from __future__ import annotations

import asyncio
import time
import tracemalloc
from typing import Any

import pytest

from app.backends.base import Backend
from app.syntax import Pattern
from tests.helpers import events, problem
from tests.test_quotas import MakeSettings, service

MIB = 1_048_576


async def log_bytes(backend: Backend, ns: str = "default") -> tuple[int, int, int]:
    """(the backend's byte counter, the bytes of the events it holds, how many)."""
    if backend.info.name == "memory":
        st = backend.store.namespaces[ns]  # type: ignore[attr-defined]
        held = (await backend.read_events(ns, 0, limit=10**9)).events
        return st.event_bytes, sum(e.size for e in held), len(held)
    client = backend.client  # type: ignore[attr-defined]
    rows = await client.xrange(f"cb:{{{ns}}}:log", "-", "+")
    # The events kept: from the one 'logn' names first (the stream may still store a few
    # compacted ones before it, at most one node's: common.lua, compact_log).
    first = int((await client.lindex(f"cb:{{{ns}}}:logn", 0)).split(b":")[0])
    kept = [fields for id_, fields in rows if int(id_.split(b"-")[0]) >= first]
    assert len(rows) - len(kept) <= 100, (len(rows), len(kept))
    # An event's size: its stored fields' names and values (events.fields_size).
    held = sum(len(k) + len(v) for fields in kept for k, v in fields.items())
    return int(await client.hget(f"cb:{{{ns}}}:quota", "eb")), held, len(kept)


async def test_event_log_stays_under_its_byte_limit(make_settings: MakeSettings) -> None:
    limit = 6 * MIB
    body = b'"' + b"x" * (MIB - 2) + b'"'  # 1 MiB of JSON; each event carries two values
    json_type = {"content-type": "application/json"}
    async with service(make_settings, event_retention_bytes=limit, key_history=1) as (c, b):
        # 1,000 writes on both: on Redis each 1 MiB write takes ~13 ms (the event carries
        # the new and the old value, stored as fields: no JSON built in Lua), ~15 s here.
        writes = 1000
        for i in range(writes):
            r = await c.put("/v1/kv/big", content=body, headers=json_type)
            assert r.status_code in (200, 201), r.text
            if i % 100 == 99:
                counter, held, count = await log_bytes(b)
                assert counter == held <= limit, (i, counter, held)
                assert count >= 2
        if b.info.name == "redis":
            usage = await b.client.memory_usage("cb:{default}:log")  # type: ignore[attr-defined]
            assert usage < limit * 1.1, usage
        # Older events are gone: a resume from 0 (or from 500) starts with reset.
        for since in (0, writes // 2):
            first = (await events(c, since))[0]
            assert first["type"] == "reset" and first["current_revision"] == writes, first
            assert first["compacted_revision"] >= writes - 10


async def test_event_log_bytes_also_bound_small_events(make_settings: MakeSettings) -> None:
    async with service(make_settings, event_retention_bytes=65_536) as (c, b):
        for i in range(300):
            await c.put(f"/v1/kv/k{i % 5}", json="y" * 500)
        counter, held, count = await log_bytes(b)
        assert counter == held <= 65_536 and 50 < count < 300
        assert (await events(c, 300 - count))[0]["revision"] == 301 - count


READS = [
    ("get", "/v1/kv/some/key", {}),
    ("get", "/v1/kv", {"pattern": "a*"}),
    ("get", "/v1/kv/some/key/history", {}),
    ("get", "/v1/events", {"since": 0}),
    ("get", "/v1/events", {"since": 0, "wait": "10ms"}),
    ("get", "/v1/locks/l", {}),
    ("get", "/v1/locks", {}),
    ("get", "/v1/sessions", {}),
    ("get", "/v1/sessions/s", {}),
    ("get", "/v1/sessions/s/variables", {}),
    ("get", "/v1/sessions/s/threads/t/state", {}),
    ("get", "/v1/artifacts", {}),
    ("get", "/v1/artifacts/a", {}),
]


def memory_state(backend: Any) -> dict[str, int]:
    return {
        "namespaces": len(backend.store.namespaces),
        "sessions": len(backend.sessions.table),
        "lock slots": len(backend.locks.slots),
        "artifact spaces": len(backend.artifacts.spaces),
        "wakers": len(backend.store.wakers),
        "deadlines": len(backend.store.deadlines),
    }


async def test_reads_create_no_state_in_memory(backend: str, make_settings: MakeSettings) -> None:
    if backend != "memory://":
        pytest.skip("the memory backend's own state")
    async with service(make_settings, backend="memory://") as (c, b):
        await c.put("/v1/kv/warm", json=1)  # warm caches that are not per namespace
        for method, path, params in READS:
            await c.request(method, path, params={**params, "ns": "warm-up"})
        before = memory_state(b)
        # 2,000 namespaces read through HTTP, each route of READS in turn (a bounded
        # number at once), and every read call of the backend on each of them ...
        pattern = Pattern.compile("a*")

        async def read(i: int) -> None:
            method, path, params = READS[i % len(READS)]
            r = await c.request(method, path, params={**params, "ns": f"team-{i}"})
            assert r.status_code in (200, 404), (path, r.text)

        async def read_backend(ns: str) -> None:
            await b.kv_get(ns, "k")
            await b.kv_history(ns, "k")
            await b.kv_list(ns, pattern, limit=10, after=None)
            await b.read_events(ns, 0)
            await b.lock_get(ns, "", "l")
            await b.lock_list(ns, "", pattern, limit=10, after=None)
            await b.session_list(ns, pattern, limit=10, after=None)
            await b.session_get(ns, "s")
            await b.var_list(ns, "s")
            await b.state_get(ns, "s", "thread", "t")
            await b.artifact_list(ns, pattern, limit=10, after=None)
            await b.artifact_get(ns, "a")

        for first in range(0, 1_800, 50):
            await asyncio.gather(*(read(i) for i in range(first, first + 50)))
        for i in range(2_000):
            await read_backend(f"team-{i}")
        for i in range(50):
            await b.read_events(f"waited-{i}", 0, timeout=0.005)
        assert memory_state(b) == before
        # ... the last 200 under tracemalloc: what the backend keeps.
        tracemalloc.start(12)
        try:
            snap = tracemalloc.take_snapshot()
            for i in range(1_800, 2_000):
                await read(i)
            after_snap = tracemalloc.take_snapshot()
        finally:
            tracemalloc.stop()
        assert memory_state(b) == before
        backends = [tracemalloc.Filter(True, "*/app/backends/*", all_frames=True)]
        grown = sum(
            s.size_diff
            for s in after_snap.filter_traces(backends).compare_to(
                snap.filter_traces(backends), "filename"
            )
        )
        # 200 namespaces of state would be over 500 KB (2.6 KB each before); what is left
        # is far below that (a fraction is caches and allocator noise, not per namespace).
        assert grown < 200_000, grown


@pytest.mark.redis_only
async def test_reads_create_no_keys_in_redis(
    redis_url: str, backend: str, make_settings: MakeSettings
) -> None:
    if not backend.startswith("redis"):
        pytest.skip("Redis only")
    async with service(make_settings, backend=redis_url) as (c, b):
        await c.put("/v1/kv/warm", json=1)
        before = await b.client.dbsize()  # type: ignore[attr-defined]
        for i in range(100):
            for method, path, params in READS:
                r = await c.request(method, path, params={**params, "ns": f"team-{i}"})
                assert r.status_code in (200, 404), (path, r.text)
        assert await b.client.dbsize() == before  # type: ignore[attr-defined]


def visits(backend: Any) -> int:
    if backend.info.name == "memory":
        return int(backend.store.sweep_visits)
    return int(backend.deadlines.visits)


async def test_a_sweep_visits_only_what_is_due(backend: str, make_settings: MakeSettings) -> None:
    if backend.startswith("nats"):
        # The visit counter is memory's and Redis's; NATS's sweep reads its deadline index
        # and visits only the namespaces it says are due (log.py expire_due). And 2,000
        # namespaces are 2,000 JetStream streams, more than a test server makes quickly.
        pytest.skip("counts the visits of memory's and Redis's sweepers")
    async with service(make_settings, sweep_interval_seconds=0.05) as (c, b):
        # Set up 2,000 namespaces straight through the backend (pipelined): fast.
        for first in range(0, 2000, 500):
            await asyncio.gather(*(b.kv_put(f"idle-{i}", "k", b"1")
                                   for i in range(first, first + 500)))
        # A namespace whose deadline passed is visited once, then never again.
        await c.put("/v1/kv/gone", json=1, params={"ns": "idle-0", "ttl": "50ms"})
        await asyncio.sleep(0.3)
        start = visits(b)
        for _ in range(5):
            await b.expire_due()
        assert visits(b) == start  # 2,000 idle namespaces: nothing visited
        # A key with a TTL still expires at its deadline, with its event.
        put = (await c.put("/v1/kv/soon", json=1, params={"ttl": "200ms"})).json()
        began = time.monotonic()
        expired = (await c.get("/v1/events", params={"since": put["revision"], "wait": "5s",
                                                    "types": "kv.expire"})).json()["events"]
        assert [(e["type"], e["key"]) for e in expired] == [("kv.expire", "soon")]
        assert expired[0]["at"] >= put["expires_at"]
        assert 0.1 < time.monotonic() - began < 2.0
        assert visits(b) - start <= 3
        problem(await c.get("/v1/kv/soon"), 404, "not_found")


async def _every_kind_of_event(client: Any) -> None:
    """Events of every resource, many of them: more bytes than the smallest limit."""
    c = _Checked(client)
    await c.post("/v1/leases", json={"ttl": "30s", "id": "l1"})
    await c.post("/v1/locks/job", json={"owner": "team/a", "lease": "l1"})
    await c.post("/v1/locks/job", json={"owner": "w/2", "mode": "queue", "entry": {"n": 1}})
    await c.put("/v1/sessions/s1", json={"metadata": {"who": "a/b"}})
    r = await c.post("/v1/sessions/s1/variables",
                     json={"name": "t", "type": "float", "value": 0.1})
    await c.put(f"/v1/sessions/s1/variables/{r.json()['id']}", json={"value": 1e300})
    await c.put("/v1/sessions/s1/threads/t1/state", json={"step": 2.5})
    await c.post("/v1/sessions/s1/dedupe", json={"key": "m\t1", "limit": 1})
    await c.post("/v1/sessions/s1/dedupe", json={"key": "m2", "limit": 1})
    await c.put("/v1/artifacts/a", content=b"hi", headers={"Content-Type": "text/x;\tq=\"1\""})
    for i in range(40):
        await c.put(f"/v1/kv/k/{i % 3}", json={"i": i, "f": i / 7, "s": "x/" * 400})
        await c.post("/v1/txn", json={"success": [
            {"op": "put", "key": f"t/{i % 2}", "value": [i, 0.5]}]})
    await c.delete("/v1/leases/l1")
    await c.delete("/v1/artifacts/a")
    await c.delete("/v1/sessions/s1")


async def test_an_event_counts_the_same_bytes_on_both_backends(
    backend: str, make_settings: MakeSettings
) -> None:
    """An event's size is its fields' (events.fields_size), whichever backend stored it:
    the same writes leave the same byte counter and compact at the same revision."""
    if backend == "memory://":
        pytest.skip("compares memory with the other backends")
    seen = []
    for url in ("memory://", backend):
        async with service(make_settings, backend=url, event_retention_bytes=65_536) as (c, b):
            await _every_kind_of_event(c)
            counter, held, count = await log_bytes(b)
            assert counter == held
            first = (await events(c, 0))[0]
            assert first["type"] == "reset"
            seen.append((counter, count, first["compacted_revision"]))
    assert seen[0] == seen[1] and seen[0][2] > 0, seen


class _Checked:
    """A client whose every call must succeed."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def __getattr__(self, method: str) -> Any:
        async def call(*args: Any, **kw: Any) -> Any:
            r = await getattr(self.client, method)(*args, **kw)
            assert r.status_code < 300, (method, args, r.text)
            return r
        return call
