"""Touch on NATS (its expiry override lives in ``_corkboard`` as ``ttl.<ns>.<key>``,
app/backends/nats/entries.py): the revision a write replaces keeps the expiry it was
touched to in the key's history (``Cb-Ended``), as on the other engines, and the
override record is removed when the key is rewritten, deleted or expired; a touch of
the new revision keeps its own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import nats
import pytest

from app.backends.nats import NatsBackend
from app.backends.nats.names import SYSTEM_BUCKET
from app.domain.keys import KeyEntry
from app.settings import Settings
from tests.nats_server import flush_nats
from tests.support import app_client


@pytest.fixture
async def corkboard(nats_url: str) -> AsyncIterator[httpx.AsyncClient]:
    flush_nats(nats_url)
    async with app_client(Settings(backend=nats_url, sweep_interval_seconds=0.05)) as c:
        yield c


async def override(nats_url: str, key: str) -> bytes | None:
    """The override record of ``key`` in namespace default, read with nats-py alone."""
    nc = await nats.connect(nats_url)
    try:
        kv = await nc.jetstream().key_value("_corkboard")
        try:
            return (await kv.get(f"ttl.default.{key}")).value
        except nats.js.errors.KeyNotFoundError:
            return None
    finally:
        await nc.close()


async def test_a_rewritten_touched_revision_keeps_its_expiry_in_history(
    corkboard: httpx.AsyncClient, nats_url: str,
) -> None:
    c = corkboard
    assert (await c.put("/v1/kv/k", json=1)).status_code == 201
    touched = (await c.post("/v1/kv/k/touch", json={"ttl": "2h"})).json()
    assert await override(nats_url, "k") is not None
    assert (await c.put("/v1/kv/k", json=2, params={"ttl": "1h"})).status_code == 200
    assert await override(nats_url, "k") is None  # superseded: removed
    history = (await c.get("/v1/kv/k/history")).json()["items"]
    assert [h["value"] for h in history] == [2, 1]
    assert history[1]["expires_at"] == touched["expires_at"]
    old = (await c.get("/v1/kv/k", params={"revision": touched["revision"]})).json()
    assert old["expires_at"] == touched["expires_at"]
    # A touch of the new revision is its own record; touched to no expiry, the next
    # write shows the old revision without one.
    assert (await c.post("/v1/kv/k/touch", json={"ttl": 0})).status_code == 200
    assert await override(nats_url, "k") is not None
    assert (await c.put("/v1/kv/k", json=3)).status_code == 200
    assert await override(nats_url, "k") is None
    history = (await c.get("/v1/kv/k/history")).json()["items"]
    assert [h["expires_at"] for h in history] == [None, None, touched["expires_at"]]


async def test_the_override_goes_with_a_delete_and_an_expiry(
    corkboard: httpx.AsyncClient, nats_url: str,
) -> None:
    c = corkboard
    for key in ("gone", "due"):
        assert (await c.put(f"/v1/kv/{key}", json=1)).status_code == 201
    assert (await c.post("/v1/kv/gone/touch", json={"ttl": "1h"})).status_code == 200
    assert (await c.delete("/v1/kv/gone")).status_code == 204
    assert await override(nats_url, "gone") is None
    since = (await c.get("/v1/kv", params={"limit": 1})).json()["revision"]
    assert (await c.post("/v1/kv/due/touch", json={"ttl": "100ms"})).status_code == 200
    assert await override(nats_url, "due") is not None
    r = await c.get("/v1/events", params={"since": since, "types": "kv.expire", "wait": "5s"})
    assert [e["key"] for e in r.json()["events"]] == ["due"]
    assert await override(nats_url, "due") is None


async def test_touches_and_writes_of_one_key_in_one_process_take_turns(
    nats_url: str,
) -> None:
    """Concurrent touches and PUTs of one key in one process: each touch applies to the
    revision it answers with (it waits its turn instead of redoing its override after
    each write that came between: the tries are bounded), and the key's turns are gone
    once nothing writes it."""
    flush_nats(nats_url)
    engine = NatsBackend(nats_url)
    await engine.start()
    try:
        await engine.kv_put("t", "k", b"0")
        overrides = await engine.store.nc.subscribe(f"$KV.{SYSTEM_BUCKET}.ttl.t.>")
        results = await asyncio.gather(*(
            engine.kv_touch("t", "k", 3_600_000) if n % 2 else
            engine.kv_put("t", "k", str(n).encode())
            for n in range(40)
        ))
        touches = [r for r in results if isinstance(r, KeyEntry)]
        assert len(touches) == 20 and all(t.expires_at for t in touches)
        # One override record per touch (none redone after a write came between).
        await engine.store.nc.flush()
        assert overrides._received == 20
        history = {e.revision: e for e in await engine.kv_history("t", "k")}
        for touched in touches:  # a later write ended it with the touched expiry
            if touched.revision in history:
                assert history[touched.revision].expires_at == touched.expires_at
        assert not engine.keys._turns
    finally:
        await engine.close()
