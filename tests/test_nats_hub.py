"""The hub on NATS, fed by real writes: test_hub's filter test emits events of any type
through memory's and Redis's internals, which NATS has no counterpart of (an event there is
the message of a key, lock or session record), so here the locks, sessions and keys make
them, and each filter gets exactly the events of the log that match it."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from app.backends.nats import NatsBackend
from app.events import EVENT, EventFilter, Hub
from app.settings import Settings
from tests.sse import event_matches
from tests.support import app_client

NS = "hubtest"


async def test_events_of_every_resource_are_filtered_generically(
    nats_engine: NatsBackend, nats_url: str,
) -> None:
    hub = Hub(nats_engine, progress_seconds=0.05)
    await hub.start()
    try:
        specs: dict[str, tuple[str | None, str | None, str | None]] = {
            "locks": (None, "lock", None), "updates": (None, "variable.updated,kv.put", None),
            "session": (None, None, "s1"), "jobs": ("jobs/*", None, None),
            "all": (None, None, None),
        }
        subs = {name: await hub.subscribe(NS, EventFilter.parse(*spec), None)
                for name, spec in specs.items()}
        await driven(nats_url)
        final = await nats_engine.current_revision(NS)
        log = [orjson.loads(e.data) for e in (await nats_engine.read_events(NS, 0)).events]
        types = {e["type"] for e in log}
        assert {"lock.acquired", "lock.released", "session.updated", "variable.created",
                "variable.updated", "kv.put"} <= types, types
        for name, sub in subs.items():
            pattern, type_list, session = specs[name]
            expected = [
                e["revision"] for e in log
                if event_matches(e, pattern, type_list.split(",") if type_list else None)
                and (session is None or e.get("session") == session)
            ]
            got: list[int] = []

            async def run(sub: Any = sub, got: list[int] = got) -> None:
                while sub.position < final:
                    frames = await sub.next(timeout=0.05)
                    assert frames is not None
                    got.extend(f.revision for f in frames if f.kind == EVENT)

            await asyncio.wait_for(run(), 10)
            assert got == expected and expected, (name, got, expected)
            sub.close()
    finally:
        await hub.close()


async def driven(nats_url: str) -> None:
    """Lock, session, variable and key changes through Corkboard's HTTP API."""
    async with app_client(Settings(backend=nats_url)) as c:
        def ok(r: Any) -> None:
            assert r.status_code < 300, r.text

        held = await c.post("/v1/locks/jobs/1", params={"ns": NS}, json={"owner": "a"})
        ok(held)
        ok(await c.put("/v1/sessions/s1", params={"ns": NS}, json={}))
        r = await c.post("/v1/sessions/s1/variables", params={"ns": NS},
                         json={"name": "temperature", "type": "float", "value": 0.5})
        ok(r)
        ok(await c.put(f"/v1/sessions/s1/variables/{r.json()['id']}", params={"ns": NS},
                       json={"value": 0.7}))
        ok(await c.put("/v1/kv/jobs/x", params={"ns": NS}, json=1))
        ok(await c.post("/v1/locks/jobs/1/release", params={"ns": NS},
                        json={"owner": "a", "token": held.json()["token"]}))
        ok(await c.put("/v1/sessions/s2", params={"ns": NS}, json={}))
        ok(await c.post("/v1/sessions/s2/variables", params={"ns": NS},
                        json={"name": "mood", "type": "string", "value": "ok"}))
        ok(await c.put("/v1/kv/other", params={"ns": NS}, json=2))

