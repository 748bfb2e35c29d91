"""Redis Cluster faults on real processes: 3 service replicas on a 3+3 cluster with
``CORKBOARD_REDIS_WAIT_REPLICAS=1``, writers and a watcher running, while the master
owning the namespace's slot is SIGKILLed (its replica is promoted), and while a
namespace's slot moves to another master a few keys per MIGRATE (``redis-cli --cluster
reshard``'s default). The service answers only 200/201, or 503 with
Retry-After; it recovers by itself; every acknowledged write survives, and the watcher
sees every revision exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest

from app.backends.redis import RedisBackend
from tests.conftest import need_redis_binaries
from tests.redis_cluster import ClusterNode, RedisCluster, slot_of_namespace
from tests.sse import Parser
from tests.support import ServiceProcess, running

pytestmark = pytest.mark.slow

REPLICAS = 3
WRITERS = 6
RECOVERY_SECONDS = 10.0


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    """A cluster of its own: these tests kill and move its nodes' slots."""
    need_redis_binaries()  # a skip, or a failure under CORKBOARD_REQUIRE_REDIS=1
    c = RedisCluster().start()
    try:
        yield c
    finally:
        c.cleanup()


@pytest.fixture(scope="module")
def services(cluster: RedisCluster) -> Iterator[list[ServiceProcess]]:
    env = {
        "CORKBOARD_BACKEND": cluster.url,
        "CORKBOARD_REDIS_WAIT_REPLICAS": "1",
        "CORKBOARD_LOG_LEVEL": "warning",
        "CORKBOARD_WATCH_PROGRESS_SECONDS": "0.5",
    }
    with running(*(ServiceProcess(env) for _ in range(REPLICAS))) as started:
        yield started


def namespace_on_slot(slot: int, prefix: str) -> str:
    """A namespace whose keys hash to ``slot`` (so that a reshard of one slot moves it)."""
    for i in itertools.count():
        ns = f"{prefix}{i}"
        if slot_of_namespace(ns) == slot:
            return ns
    raise AssertionError("unreachable")


def first_slot_of(cluster: RedisCluster, node: ClusterNode) -> int:
    return min(start for start, _, port in cluster.slot_ranges() if port == node.port)


@dataclass
class Load:
    """What the writers and the watcher saw."""

    ns: str
    #: Writers write a new key each time (their keys 0, 1, ...); with ``cycle``, every
    #: other writer cycles over ``cycle`` keys of its own instead, overwriting them.
    cycle: int | None = None
    acked: dict[str, tuple[int, int]] = field(default_factory=dict)  # key -> (value, rev)
    statuses: Counter[int] = field(default_factory=Counter)
    #: The Redis error behind each 503 (from its detail), e.g. 'TryAgainError'.
    unavailable: Counter[str] = field(default_factory=Counter)
    bad: list[str] = field(default_factory=list)
    last_ok: float = 0.0
    seen: list[tuple[int, str]] = field(default_factory=list)  # watcher: (revision, key)
    values: dict[str, Any] = field(default_factory=dict)  # watcher: key -> its last value
    resets: list[str] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)  # the writers
    writers: list[asyncio.Task[None]] = field(default_factory=list)

    def ok_count(self) -> int:
        return self.statuses[200] + self.statuses[201]

    async def stop_writers(self) -> None:
        self.stop.set()
        await asyncio.wait(self.writers, timeout=30)


async def writer(
    client: httpx.AsyncClient, name: str, load: Load, cycle: int | None = None
) -> None:
    for n in itertools.count():
        if load.stop.is_set():
            return
        key = f"{name}/{n if cycle is None else n % cycle}"
        try:
            r = await client.put(f"/v1/kv/{key}", params={"ns": load.ns}, json=n)
        except httpx.HTTPError as exc:
            load.bad.append(f"PUT {key}: {exc!r}")
            continue
        load.statuses[r.status_code] += 1
        if r.status_code in (200, 201):
            load.acked[key] = (n, r.json()["revision"])
            load.last_ok = time.monotonic()
        elif r.status_code == 503 and r.headers.get("retry-after"):
            cause = re.search(r"\((\w+):", r.json().get("detail", ""))
            load.unavailable[cause.group(1) if cause else r.text[:100]] += 1
            await asyncio.sleep(0.02)  # a tiny pause instead of Retry-After's second
        else:
            load.bad.append(f"PUT {key}: {r.status_code} {r.headers} {r.text[:300]}")


async def watcher(client: httpx.AsyncClient, load: Load) -> None:
    """Follow the namespace from its start, resuming (Last-Event-ID) whenever a stream
    ends, until stopped."""
    last = "0"
    while True:
        try:
            async with client.stream(
                "GET", "/v1/watch", params={"ns": load.ns},
                headers={"last-event-id": last}, timeout=httpx.Timeout(5, read=None),
            ) as r:
                if r.status_code != 200:
                    load.statuses[r.status_code] += 1
                    if r.status_code != 503:
                        load.bad.append(f"watch: {r.status_code} {await r.aread()!r}")
                    await asyncio.sleep(0.05)
                    continue
                parser = Parser()
                async for chunk in r.aiter_raw():
                    for frame in parser.feed(chunk):
                        if frame.event == "reset":
                            load.resets.append(str(frame.data))
                        if frame.id is not None:
                            last = frame.id
                        if frame.is_event and frame.event not in ("progress", "reset"):
                            load.seen.append((frame.revision, frame.json["key"]))
                            load.values[frame.json["key"]] = frame.json.get("value")
        except httpx.HTTPError as exc:
            load.bad.append(f"watch: {exc!r}")
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def load_running(
    services: list[ServiceProcess], ns: str, cycle: int | None = None
) -> AsyncIterator[tuple[Load, list[httpx.AsyncClient]]]:
    """Writers through every replica and a watcher on the first, until the block ends."""
    load = Load(ns, cycle)
    clients = [httpx.AsyncClient(base_url=s.url, timeout=30) for s in services]
    load.writers = [
        asyncio.create_task(writer(
            clients[i % REPLICAS], f"w{i}", load, cycle if i % 2 == 0 else None
        ))
        for i in range(WRITERS)
    ]
    watching = asyncio.create_task(watcher(clients[0], load))
    try:
        yield load, clients
    finally:
        await load.stop_writers()
        watching.cancel()
        await asyncio.gather(*load.writers, watching, return_exceptions=True)
        for c in clients:
            await c.aclose()


async def until(condition: Any, timeout: float, what: str) -> float:
    """Poll ``condition`` (tiny intervals) until true; the seconds it took."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)
    return time.monotonic() - start


async def until_ready_is(client: httpx.AsyncClient, status: int, timeout: float) -> None:
    start = time.monotonic()
    while (r := await client.get("/readyz")).status_code != status:
        assert r.status_code in (200, 503), r.text
        if time.monotonic() - start > timeout:
            raise AssertionError(f"/readyz stayed {r.status_code}: {r.text}")
        await asyncio.sleep(0.02)


async def more_writes(load: Load, count: int, timeout: float, what: str) -> float:
    target = load.ok_count() + count
    return await until(lambda: load.ok_count() >= target, timeout, what)


async def read_through_elections(
    client: httpx.AsyncClient, path: str, params: dict[str, Any], timeout: float = 15.0
) -> httpx.Response:
    """A read, asked again while it answers 503 with Retry-After: after a fault a
    cluster may still move a leader (a restarted NATS server rejoining made its bucket
    leaderless for a moment, after reads had answered again). Its first other answer,
    or the 503 once ``timeout`` has passed."""
    deadline = time.monotonic() + timeout
    while True:
        r = await client.get(path, params=params)
        if (r.status_code != 503 or not r.headers.get("retry-after")
                or time.monotonic() > deadline):
            return r
        await asyncio.sleep(0.05)


async def check_everything(load: Load, client: httpx.AsyncClient) -> None:
    assert not load.bad, load.bad[:10]
    assert set(load.statuses) <= {200, 201, 503}, load.statuses
    # Every acknowledged write is there.
    acked_values: dict[str, Any] = {}
    for key, (value, _) in load.acked.items():
        r = await read_through_elections(client, f"/v1/kv/{key}", {"ns": load.ns})
        assert r.status_code == 200, (key, r.status_code, r.text)
        # (a key written again may hold a later write answered 503 by WAIT but applied)
        assert r.json()["value"] >= value, (key, r.json(), value)
        acked_values[key] = r.json()["value"]
    # The watcher sees everything up to the namespace's revision, each once, in order.
    r = await read_through_elections(client, "/v1/kv", {"ns": load.ns, "limit": 1})
    assert r.status_code == 200, r.text
    current = r.json()["revision"]
    await until(
        lambda: bool(load.seen) and load.seen[-1][0] >= current, 15, "the watcher to catch up"
    )
    assert not load.resets, load.resets
    revisions = [rev for rev, _ in load.seen]
    assert revisions == list(range(1, len(revisions) + 1))
    by_revision = dict(load.seen)
    for key, (_, rev) in load.acked.items():
        assert by_revision[rev] == key, (key, rev)
    # Each key holds what its last event says, and keeps the revisions its events name
    # (no write left half done: an event without its entry, an entry without history).
    events: dict[str, list[int]] = {}
    for rev, key in reversed(load.seen):
        events.setdefault(key, []).append(rev)
    for key, value in acked_values.items():
        assert load.values[key] == value, (key, load.values[key], value)
        r = await read_through_elections(client, f"/v1/kv/{key}/history", {"ns": load.ns})
        assert r.status_code == 200, (key, r.status_code, r.text)
        kept = [item["revision"] for item in r.json()["items"]]
        assert kept and kept == events[key][: len(kept)], (key, kept, events[key])


async def test_failover_of_the_namespace_master_loses_no_acknowledged_write(
    cluster: RedisCluster, services: list[ServiceProcess]
) -> None:
    victim = cluster.masters()[0]
    ns = namespace_on_slot(first_slot_of(cluster, victim), "fo")
    async with load_running(services, ns) as (load, clients):
        await more_writes(load, 100, 20, "writes before the fault")
        assert (await clients[0].get("/readyz")).status_code == 200
        victim.kill()
        killed_at = time.monotonic()
        await until_ready_is(clients[0], 503, 5)  # a master is gone: not ready
        # Its replica takes over; then the dead node comes back (as an orchestrator
        # would restart it) and rejoins as the new master's replica, so that writes can
        # have WAIT 1 confirmed again.
        slot = slot_of_namespace(ns)
        await until(lambda: cluster.owner_port(slot) not in (None, victim.port), 15,
                    "a replica to be promoted")
        victim.start()
        await more_writes(load, 1, RECOVERY_SECONDS, "the first write after the fault")
        recovered = time.monotonic() - killed_at
        assert recovered <= RECOVERY_SECONDS, recovered
        await more_writes(load, 100, 20, "writes after recovery")
        await until_ready_is(clients[0], 200, 15)
        await load.stop_writers()
        assert load.statuses[503] > 0, "the fault went unnoticed: was the right master killed?"
        await check_everything(load, clients[1])
    cluster.wait_ok()


#: Keys written into the namespace before the move, so that it takes a few hundred
#: MIGRATEs of 10 keys.
FILLER_KEYS = 1000


async def fill(cluster: RedisCluster, ns: str, count: int) -> None:
    backend = RedisBackend.from_url(cluster.url)
    await backend.start()
    value = orjson.dumps({"filler": "x" * 1000})
    try:
        for start in range(0, count, 100):
            await asyncio.gather(*(
                backend.kv_put(ns, f"fill/{i}", value) for i in range(start, start + 100)
            ))
    finally:
        await backend.close()


def tryagains(cluster: RedisCluster) -> int:
    """TRYAGAIN errors answered so far by the cluster's masters."""
    total = 0
    for node in cluster.masters():
        c = node.client()
        try:
            stats = c.info("errorstats")
        finally:
            c.close()
        total += int(stats.get("errorstat_TRYAGAIN", {}).get("count", 0))
    return total


async def test_moving_the_namespace_slot_loses_no_acknowledged_write(
    cluster: RedisCluster, services: list[ServiceProcess]
) -> None:
    """``redis-cli --cluster reshard`` with its default pipeline (10 keys per MIGRATE)
    splits the namespace's few hundred keys between two masters for a while: its
    scripts are refused (TRYAGAIN, sent again, at worst 503) until the slot is the
    target's, and none runs on half of the keys."""
    cluster.wait_ok()
    source, target = cluster.masters()[:2]
    slot = first_slot_of(cluster, source)
    ns = namespace_on_slot(slot, "mv")
    await fill(cluster, ns, FILLER_KEYS)
    # Half of the writers create keys, half overwrite 50 keys each again and again.
    async with load_running(services, ns, cycle=50) as (load, clients):
        await more_writes(load, 300, 30, "writes before the move")
        client = source.client()
        try:
            in_slot = client.execute_command("CLUSTER COUNTKEYSINSLOT", slot)
        finally:
            client.close()
        assert in_slot > FILLER_KEYS, in_slot  # each key's hash (and older revisions')
        refused = tryagains(cluster)
        cli = shutil.which("redis-cli")
        assert cli is not None
        proc = await asyncio.create_subprocess_exec(
            cli, "--cluster", "reshard", source.addr, "--cluster-from", source.node_id(),
            "--cluster-to", target.node_id(), "--cluster-slots", "1", "--cluster-yes",
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        out, _ = await proc.communicate()
        assert proc.returncode == 0, out.decode(errors="replace")[-2000:]
        assert cluster.owner_port(slot) == target.port
        assert tryagains(cluster) > refused, "no script met the moving slot"
        # A 503 is a refusal before anything ran (TRYAGAIN for over a second), never a
        # script that Redis stopped part-way ('non local key': a ResponseError).
        assert set(load.unavailable) <= {"TryAgainError"}, load.unavailable
        await more_writes(load, 200, 20, "writes after the move")
        await load.stop_writers()
        await check_everything(load, clients[2])
