"""NATS JetStream cluster faults on real processes (issue 17): 3 service replicas on
``nats://h1,h2,h3?replicas=3`` (every bucket on all three servers), writers through
every replica and a watcher (``GET /v1/watch``) on one, while the server leading the
namespace's bucket stream is SIGKILLed. The service answers only 200/201, or 503 with
Retry-After; it recovers by itself (the other two elect a leader); every acknowledged
write is there afterwards; the watcher sees every revision exactly once, in order, with
no reset; the killed server, restarted on its ports and storage, catches up.

The writers, the watcher and the checks are tests/test_cluster_faults.py's (the Redis
Cluster's fault test), so both engines meet the same bar.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import nats
import pytest

from tests.conftest import need_nats
from tests.nats_cluster import NatsCluster, NatsNode, stream_info
from tests.support import ServiceProcess, running
from tests.test_cluster_faults import (
    REPLICAS,
    check_everything,
    load_running,
    more_writes,
    until,
)

pytestmark = pytest.mark.slow

#: JetStream's Raft waits 4 to 9 s (its election timeout, not configurable) before
#: the surviving replicas of a stream elect a new leader; writes meanwhile time out
#: (CORKBOARD_BACKEND_TIMEOUT_SECONDS) and are answered 503. Measured: 5 to 7 s.
RECOVERY_SECONDS = 15.0


@pytest.fixture(scope="module")
def cluster() -> Iterator[NatsCluster]:
    """A cluster of its own: this test kills its servers."""
    need_nats()  # a skip, or a failure under CORKBOARD_REQUIRE_NATS=1
    c = NatsCluster().start()
    try:
        yield c
    finally:
        c.cleanup()


@pytest.fixture(scope="module")
def services(cluster: NatsCluster) -> Iterator[list[ServiceProcess]]:
    env = {
        "CORKBOARD_BACKEND": cluster.url("?replicas=3"),
        "CORKBOARD_LOG_LEVEL": "warning",
        "CORKBOARD_WATCH_PROGRESS_SECONDS": "0.5",
    }
    with running(*(ServiceProcess(env) for _ in range(REPLICAS))) as started:
        yield started


def bucket_info(cluster: NatsCluster, ns: str) -> dict[str, Any]:
    async def info(nc: nats.NATS) -> dict[str, Any]:
        return await stream_info(nc, f"KV_{ns}")

    return cluster.run(info)


def leader_of(cluster: NatsCluster, ns: str) -> NatsNode:
    return cluster.node(bucket_info(cluster, ns)["cluster"]["leader"])


def caught_up(cluster: NatsCluster, ns: str, node: NatsNode) -> bool:
    """Whether ``node`` is a current replica of the bucket, at the leader's sequence."""
    try:
        info = bucket_info(cluster, ns)
    except Exception:  # no leader for a moment: not yet
        return False
    group = info.get("cluster", {})
    if group.get("leader") == node.name:
        return True
    peers = {p["name"]: p for p in group.get("replicas", [])}
    peer = peers.get(node.name)
    return bool(peer and peer.get("current") and not peer.get("offline")
                and peer.get("lag", 0) == 0)


async def reads_answer(client: httpx.AsyncClient, ns: str, timeout: float) -> None:
    """Until a listing answers 200 (a read may still meet a 503 with Retry-After for a
    moment after the restart: the quota counters' and ``_corkboard``'s streams elect and
    catch up too); a failure after ``timeout``."""
    deadline = time.monotonic() + timeout
    while (r := await client.get("/v1/kv", params={"ns": ns, "limit": 1})).status_code != 200:
        assert r.status_code == 503 and r.headers.get("retry-after"), r.text
        assert time.monotonic() < deadline, r.text
        await asyncio.sleep(0.05)


async def test_killing_the_bucket_leader_loses_no_acknowledged_write(
    cluster: NatsCluster, services: list[ServiceProcess]
) -> None:
    ns = "fault"
    async with load_running(services, ns) as (load, clients):
        await more_writes(load, 100, 20, "writes before the fault")
        victim = leader_of(cluster, ns)
        victim.kill()
        killed_at = time.monotonic()
        # Until the other two elect a leader, writes get 503 (checked by the writers);
        # then they go on by themselves: 20 acknowledged writes within the bound.
        await more_writes(load, 20, RECOVERY_SECONDS, "writes after the fault")
        recovered = time.monotonic() - killed_at
        assert recovered <= RECOVERY_SECONDS, recovered
        await more_writes(load, 100, 20, "writes after recovery")
        new_leader = leader_of(cluster, ns)
        assert new_leader is not victim
        # The killed server comes back (as an orchestrator would restart it) on its
        # ports and storage, and catches up with the writes it missed.
        victim.start()
        await more_writes(load, 50, 20, "writes while it catches up")
        await load.stop_writers()
        await until(lambda: caught_up(cluster, ns, victim), 30,
                    "the restarted server to catch up")
        await reads_answer(clients[1], ns, 15)
        await check_everything(load, clients[1])
    print(f"recovered in {recovered:.2f} s; statuses {dict(load.statuses)}; "
          f"503 causes {dict(load.unavailable)}")
