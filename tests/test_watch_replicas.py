"""Several service processes on one Redis: a change made through any replica reaches
watchers on every replica, in the same order, and a stream resumes on another replica.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.sse import Parser, watch
from tests.support import ServiceProcess, running

REPLICAS = 3
WRITES_PER_REPLICA = 150


@pytest.fixture(scope="module")
def replicas(redis_url: str) -> Iterator[list[ServiceProcess]]:
    env = {"CORKBOARD_BACKEND": redis_url, "CORKBOARD_WATCH_PROGRESS_SECONDS": "0.3"}
    with running(*(ServiceProcess(env) for _ in range(REPLICAS))) as started:
        yield started


def clients(replicas: list[ServiceProcess]) -> list[httpx.AsyncClient]:
    return [httpx.AsyncClient(base_url=s.url, timeout=30) for s in replicas]


async def write_through(c: httpx.AsyncClient, ns: str, name: str) -> int:
    last = 0
    for i in range(WRITES_PER_REPLICA):
        key = f"{'a' if i % 2 else 'b'}/{name}/{i % 10}"
        r = await c.put(f"/v1/kv/{key}", json={"by": name, "i": i}, params={"ns": ns})
        assert r.status_code in (200, 201), r.text
        last = max(last, r.json()["revision"])
    return last


async def test_every_replica_delivers_every_change_in_one_order(
    replicas: list[ServiceProcess],
) -> None:
    ns = "r" + uuid.uuid4().hex[:10]
    cs = clients(replicas)
    try:
        async with (
            watch(cs[0], ns=ns) as w0, watch(cs[1], ns=ns) as w1, watch(cs[2], ns=ns) as w2,
            watch(cs[2], ns=ns, pattern="a/*") as a2, watch(cs[0], ns=ns, pattern="a/*") as a0,
        ):
            # Every stream has joined its replica's feed (the opening frame came after it).
            finals = await asyncio.gather(
                *(write_through(c, ns, f"r{i}") for i, c in enumerate(cs))
            )
            final = max(finals)
            assert final == REPLICAS * WRITES_PER_REPLICA
            seen: list[list[dict[str, Any]]] = []
            for stream in (w0, w1, w2, a0, a2):
                events: list[dict[str, Any]] = []
                while True:
                    frame = await stream.event()
                    if frame.event != "progress":
                        events.append(frame.json)
                    if frame.revision >= final:
                        break
                seen.append(events)
        full = list(range(1, final + 1))
        for events in seen[:3]:
            assert [e["revision"] for e in events] == full
            assert events == seen[0]  # same order, same bytes' content, on every replica
        expected_a = [e for e in seen[0] if e["key"].startswith("a/")]
        assert seen[3] == expected_a and seen[4] == expected_a
        writers = {e["value"]["by"] for e in seen[1]}
        assert writers == {"r0", "r1", "r2"}  # replica 1 saw the others' writes
    finally:
        for c in cs:
            await c.aclose()


async def test_a_stream_resumes_on_another_replica(replicas: list[ServiceProcess]) -> None:
    ns = "r" + uuid.uuid4().hex[:10]
    cs = clients(replicas)
    rng = random.Random(3)
    try:
        writer = asyncio.create_task(write_through(cs[0], ns, "w"))
        got: list[int] = []
        last = "0"
        hops = 0
        while not (writer.done() and int(last) >= writer.result()):
            c = cs[hops % REPLICAS]  # each reconnect goes to the next replica
            headers = {"last-event-id": last}
            async with c.stream("GET", "/v1/watch", params={"ns": ns}, headers=headers) as r:
                parser = Parser()
                budget = rng.randint(200, 4000)
                received = 0
                async for chunk in r.aiter_raw():
                    received += len(chunk)
                    for frame in parser.feed(chunk):
                        if frame.id is not None:
                            last = frame.id
                        if frame.is_event and frame.event != "progress":
                            got.append(frame.revision)
                    if received >= budget or (writer.done() and int(last) >= writer.result()):
                        break
            hops += 1
        assert got == list(range(1, WRITES_PER_REPLICA + 1))
        assert hops >= 3
    finally:
        for c in cs:
            await c.aclose()
