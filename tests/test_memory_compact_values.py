"""The memory backend keeps a session's bytes in buffers of their own length.

``orjson.dumps`` leaves its result in a 4 KiB allocation whatever its length (orjson
3.x; ``app.buffers``), and a session's metadata, its variables' values and its thread and
channel state are made by it (on a write, and on a snapshot's import): kept as they came,
each held ~4 KB of slack (a variable ~5.5 KB in all, a session's metadata ~6 KB).
Measured with tracemalloc through the app, each write 200 times.
"""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Awaitable, Callable

import httpx

from app.main import create_app
from app.settings import Settings
from tests.locks_support import client_of

COUNT = 200
#: What one write may leave held, its session's share, the change log's event and the
#: dict slots included (1.1-2.1 KB measured); the slack of one orjson result alone is 4 KB.
MOST_PER_WRITE = 3_000


async def held_per_call(call: Callable[[int], Awaitable[httpx.Response]]) -> float:
    gc.collect()
    tracemalloc.start()
    try:
        for i in range(COUNT):
            r = await call(i)
            assert r.status_code in (200, 201, 204), r.text
        gc.collect()
        return tracemalloc.get_traced_memory()[0] / COUNT
    finally:
        tracemalloc.stop()


async def test_session_bytes_written_or_imported_keep_no_orjson_slack() -> None:
    app = create_app(Settings(backend="memory://"))
    async with client_of(app) as c:
        warm = await c.post("/v1/sessions/s0/variables",
                            json={"name": "warm", "type": "integer", "value": 1})
        assert warm.status_code == 201, warm.text
        held = {
            "register": await held_per_call(lambda i: c.post(
                f"/v1/sessions/s{i % 5}/variables",
                json={"name": f"v{i}", "type": "integer", "value": i})),
            "write": await held_per_call(lambda i: c.put(
                f"/v1/sessions/s{i % 5}/variables/v{i}", json={"value": -i})),
            "metadata": await held_per_call(lambda i: c.put(
                f"/v1/sessions/m{i}", json={"metadata": {"team": i}})),
            "thread": await held_per_call(lambda i: c.put(
                f"/v1/sessions/t/threads/th{i}/state", json={"x": i})),
            "channel": await held_per_call(lambda i: c.patch(
                f"/v1/sessions/t/channels/ch{i}/state", json={"x": i})),
        }
        for r in (await c.put("/v1/sessions/src", json={"metadata": {"team": "a"}}),
                  await c.post("/v1/sessions/src/variables",
                               json={"name": "v", "type": "integer", "value": 1}),
                  await c.put("/v1/sessions/src/threads/th/state", json={"x": 1}),
                  await c.put("/v1/sessions/src/channels/ch/state", json={"y": 2})):
            assert r.status_code in (200, 201), r.text
        source = await c.get("/v1/sessions/src/snapshot")
        assert source.status_code == 200, source.text
        # an import keeps four results: the metadata, a value, a thread's and a channel's
        # state
        held["import"] = await held_per_call(lambda i: c.put(
            f"/v1/sessions/imported{i}/snapshot", json=source.json())) / 4
    assert all(size < MOST_PER_WRITE for size in held.values()), held
