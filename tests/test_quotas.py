"""Per-namespace quotas (API.md section 9): 507 quota_exceeded and nothing written, room
given back by deletes, expiry, history trimming, session deletion and import; the
backend's counter equals a recount from scratch after a random mix of writes."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx

from app.backends.base import Backend
from app.backends.memory.rows import value_size
from app.backends.memory.session_state import var_bytes
from app.backends.nats.entries import derive
from app.backends.nats.names import key_of_subject
from app.backends.nats.sessionstate import decode_any, quota_bytes
from app.main import create_app
from app.settings import Settings
from tests.helpers import problem, revision
from tests.support import LifespanApp

MakeSettings = Callable[..., Settings]


@contextlib.asynccontextmanager
async def service(
    make_settings: MakeSettings, **overrides: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, Backend]]:
    """A client and the backend behind it, for measuring the backend's own state."""
    app = LifespanApp(create_app(make_settings(**overrides)))
    await app.start()
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://corkboard") as c:
            yield c, app.state["backend"]
    finally:
        await app.stop()


async def counted_bytes(backend: Backend, ns: str = "default") -> tuple[int, int]:
    """(the backend's quota counter, the same bytes recounted from the stored state)."""
    if backend.info.name == "nats":
        return await nats_counted(backend, ns)
    if backend.info.name == "memory":
        st = backend.store.namespaces.get(ns)  # type: ignore[attr-defined]
        # Every kept revision: the live row and the older ones in the key's history.
        kept = backend.keys.kept  # type: ignore[attr-defined]
        total = sum(value_size(row) for key in st.keys for row in kept(st, key)) if st else 0
        sessions = backend.sessions.table.get(ns, {})  # type: ignore[attr-defined]
        for sess in sessions.values():
            total += len(sess.metadata) + sum(var_bytes(v) for v in sess.variables.values())
            total += sum(len(s) for s in [*sess.threads.values(), *sess.channels.values()])
        return (st.used_bytes if st else 0), total
    p = f"cb:{{{ns}}}:"
    client = backend.client_for(p + "rev")  # type: ignore[attr-defined]  # (its cluster node)
    # The sweeper may expire something while the recount scans: then the counter read
    # before differs from the one read after, and the recount is taken again.
    while True:
        before = int(await client.hget(p + "quota", "b") or 0)
        total = await _recount(client, p)
        after = int(await client.hget(p + "quota", "b") or 0)
        if before == after and total is not None:
            return after, total


async def nats_counted(backend: Backend, ns: str) -> tuple[int, int]:
    """NATS: the counter (app/backends/nats/quotas.py), and every stored key's kept
    revisions read back from its messages and every session's bytes from its record
    (expired ones the sweeper has not reached included, as memory and Redis count them
    too); as the sweeper may expire something meanwhile, read until the counter is the
    same before and after."""
    store = backend.store  # type: ignore[attr-defined]
    while True:
        before = await backend.quotas.used(ns)  # type: ignore[attr-defined]
        total = 0
        newest, _ = await store.multi_last(ns, f"$KV.{ns}.>")
        for msg in newest:
            key = key_of_subject(ns, msg.subject)
            if key is None:
                # A session's record: its session's bytes as memory counts them (one
                # past its idle deadline, not yet swept, included, as on the others).
                record = decode_any(ns, msg)
                total += quota_bytes(record.session) if record is not None else 0
                continue
            if msg.deleted:
                continue
            kept = []
            for entry in reversed(derive(key, await store.history(ns, msg.subject))):
                if entry is None or len(kept) == store.key_history:
                    break
                kept.append(entry)
            total += sum(len(e.value) for e in kept)
        if await backend.quotas.used(ns) == before:  # type: ignore[attr-defined]
            return before.bytes, total


async def _recount(client: Any, p: str) -> int | None:
    """The stored bytes; None when a key or session went (expired by the sweeper) between
    the scan naming it and its read: recount then."""
    total = 0
    # A key's current revision is its entry hash; its older ones are its history list.
    async for key in client.scan_iter(match=p + "k:*"):
        value = await client.hget(key, "v")
        if value is None:
            return None
        total += len(value)
    async for key in client.scan_iter(match=p + "h:*"):
        for item in await client.lrange(key, 0, -1):
            total += len(item.split(b"|", 6)[6])
    async for key in client.scan_iter(match=p + "s:*"):
        metadata = await client.hget(key, "md")
        if metadata is None:
            return None
        total += len(metadata)
    async for key in client.scan_iter(match=p + "sv:*"):
        values = await client.hgetall(p + "svv:" + key.decode()[len(p) + 3:])
        for var_id, meta in (await client.hgetall(key)).items():
            total += len(meta.split(b"|", 3)[3]) + len(values[var_id])
    for part in ("sth", "sch"):
        async for key in client.scan_iter(match=p + part + ":*"):
            total += sum(len(v) for v in await client.hvals(key))
    return total


async def test_key_quota_refuses_and_changes_nothing(make_settings: MakeSettings) -> None:
    async with service(make_settings, namespace_max_keys=3) as (c, _):
        for i in range(3):
            assert (await c.put(f"/v1/kv/k{i}", json=i)).status_code == 201
        before = await revision(c)
        body = problem(await c.put("/v1/kv/k3", json=3), 507, "quota_exceeded")
        assert "CORKBOARD_NAMESPACE_MAX_KEYS" in body["detail"]
        problem(await c.post("/v1/kv/n/increment", json={"by": 1}), 507, "quota_exceeded")
        problem(await c.get("/v1/kv/k3"), 404, "not_found")
        assert await revision(c) == before
        assert (await c.get("/v1/events", params={"since": before})).json()["events"] == []
        # Existing keys may still change; another namespace has its own quota.
        assert (await c.put("/v1/kv/k0", json="again")).status_code == 200
        assert (await c.put("/v1/kv/k3", json=3, params={"ns": "other"})).status_code == 201
        assert (await c.delete("/v1/kv/k1")).status_code == 204
        assert (await c.put("/v1/kv/k3", json=3)).status_code == 201


async def test_byte_quota_counts_history_and_session_state(make_settings: MakeSettings) -> None:
    async with service(make_settings, namespace_max_bytes=1024, key_history=2) as (c, b):
        big = "x" * 398  # 400 bytes of JSON
        assert (await c.put("/v1/kv/a", json=big)).status_code == 201
        assert (await c.put("/v1/kv/a", json=big)).status_code == 200  # two revisions: 800
        assert (await c.put("/v1/kv/a", json=big)).status_code == 200  # oldest trimmed: 800
        assert await counted_bytes(b) == (800, 800)
        before = await revision(c)
        problem(await c.put("/v1/kv/b", json=big), 507, "quota_exceeded")
        problem(await c.put("/v1/sessions/s", json={"metadata": {"m": big}}), 507,
                "quota_exceeded")
        problem(await c.put("/v1/sessions/s/threads/t/state", json={"m": big}), 507,
                "quota_exceeded")
        problem(await c.post("/v1/sessions/s/variables",
                             json={"name": "v", "type": "string", "value": big}),
                507, "quota_exceeded")
        assert await revision(c) == before
        problem(await c.get("/v1/sessions/s"), 404, "not_found")
        assert await counted_bytes(b) == (800, 800)
        # A session within the quota, then deleting the key gives its 800 bytes back.
        assert (await c.put("/v1/sessions/s/threads/t/state", json={"n": 1})).status_code == 201
        problem(await c.put("/v1/sessions/s/channels/c/state", json={"m": big}), 507,
                "quota_exceeded")
        assert (await c.delete("/v1/kv/a")).status_code == 204
        assert (await c.put("/v1/sessions/s/channels/c/state", json={"m": big})).status_code \
            in (200, 201)
        assert (await c.put("/v1/sessions/s/channels/d/state", json={"m": big})).status_code \
            in (200, 201)
        used, recount = await counted_bytes(b)
        assert used == recount and 800 < used < 1024
        snapshot = (await c.get("/v1/sessions/s/snapshot")).json()
        problem(await c.put("/v1/sessions/copy/snapshot", json=snapshot), 507, "quota_exceeded")
        problem(await c.get("/v1/sessions/copy"), 404, "not_found")
        assert (await c.delete("/v1/sessions/s")).status_code == 204
        assert await counted_bytes(b) == (0, 0)
        assert (await c.put("/v1/sessions/copy/snapshot", json=snapshot)).status_code == 201
        assert await counted_bytes(b) == (used, used)


async def test_counter_equals_a_recount_after_random_writes(make_settings: MakeSettings) -> None:
    rng = random.Random(11)
    async with service(make_settings, key_history=3) as (c, b):
        for step in range(300):
            op = rng.randrange(12)
            key = f"k{rng.randrange(8)}"
            sid = f"s{rng.randrange(3)}"
            value = "v" * rng.randrange(40)
            if op <= 2:
                ttl = rng.choice([None, None, "50ms"])
                await c.put(f"/v1/kv/{key}", json=value, params={"ttl": ttl} if ttl else {})
            elif op == 3:
                await c.delete(f"/v1/kv/{key}")
            elif op == 4:
                await c.patch(f"/v1/kv/{key}", json={"a": value},
                              headers={"content-type": "application/merge-patch+json"})
            elif op == 5:
                await c.put(f"/v1/sessions/{sid}",
                            json={"metadata": {"m": value}, "ttl": rng.choice([None, 0.1])})
            elif op == 6:
                await c.delete(f"/v1/sessions/{sid}")
            elif op == 7:
                name = f"v{rng.randrange(3)}"
                r = await c.post(f"/v1/sessions/{sid}/variables",
                                 json={"name": name, "type": "string", "value": value})
                if r.status_code == 409:
                    await c.put(f"/v1/sessions/{sid}/variables/{name}",
                                json={"value": value, "metadata": {"step": step}})
            elif op == 8:
                await c.delete(f"/v1/sessions/{sid}/variables/v{rng.randrange(3)}")
            elif op == 9:
                kind = rng.choice(["threads", "channels"])
                await c.put(f"/v1/sessions/{sid}/{kind}/t{rng.randrange(2)}/state",
                            json={"x": value})
            elif op == 10:
                await c.delete(f"/v1/sessions/{sid}/threads/t{rng.randrange(2)}/state")
            else:
                r = await c.get(f"/v1/sessions/{sid}/snapshot")
                if r.status_code == 200:
                    await c.put(f"/v1/sessions/s{rng.randrange(3)}/snapshot", json=r.json())
            if step % 50 == 49:
                used, recount = await counted_bytes(b)
                assert used == recount, (step, used, recount)
        await asyncio.sleep(0.3)  # TTLs (keys 50 ms, sessions 100 ms) pass; the sweeper runs
        used, recount = await counted_bytes(b)
        assert used == recount, (used, recount)


async def test_a_key_with_one_revision_has_no_history_list_and_old_lists_still_read(
    make_settings: MakeSettings,
) -> None:
    """Redis keeps a key's older revisions apart from its entry: a key written once has no
    history list. A list written by the earlier layout (the current revision at its head)
    reads the same, and the next write turns it into the new layout with the same bytes."""
    async with service(make_settings, key_history=3) as (c, b):
        if b.info.name in ("memory", "nats"):
            return  # the layout of Redis lists; memory's own is tested in test_memory_store
        p = "cb:{default}:"
        client = b.client_for(p + "rev")  # type: ignore[attr-defined]
        assert (await c.put("/v1/kv/one", json="a")).status_code == 201
        assert not await client.exists(p + "h:one")
        for value in ("a", "b"):
            await c.put("/v1/kv/two", json=value)
        assert await client.llen(p + "h:two") == 1  # only the older revision
        history = (await c.get("/v1/kv/two/history")).json()["items"]
        assert [h["value"] for h in history] == ["b", "a"]
        # The earlier layout: the current revision's item also heads the list.
        current = await b.kv_history("default", "two")
        item = "|".join(str(x) for x in (
            current[0].revision, current[0].created_revision, current[0].version,
            current[0].created_at, current[0].modified_at, current[0].expires_at or 0,
        )) + '|"b"'
        await client.lpush(p + "h:two", item)  # (that layout counted its list: 6 bytes)
        assert await client.hget(p + "k:two", "h") == b"1"  # (the layout mark)
        await client.hdel(p + "k:two", "h")  # that layout wrote none
        assert int(await client.hget(p + "quota", "b")) == 3 + 6
        assert [h["value"] for h in (await c.get("/v1/kv/two/history")).json()["items"]] \
            == ["b", "a"]
        entry = (await c.get("/v1/kv/two", params={"revision": current[1].revision})).json()
        assert entry["value"] == "a"
        for value in ("c", "d"):
            assert (await c.put("/v1/kv/two", json=value)).status_code == 200
        assert [h["value"] for h in (await c.get("/v1/kv/two/history")).json()["items"]] \
            == ["d", "c", "b"]
        assert await client.llen(p + "h:two") == 2
        assert await client.hget(p + "k:two", "h") == b"1"  # marked again by the write
        assert await counted_bytes(b) == (3 + 9, 3 + 9)  # "a" trimmed, "c" and "d" added
        assert (await c.delete("/v1/kv/two")).status_code == 204
        assert (await c.delete("/v1/kv/one")).status_code == 204
        assert await counted_bytes(b) == (0, 0)
