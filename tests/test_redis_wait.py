"""``CORKBOARD_REDIS_WAIT_REPLICAS`` on a plain ``redis://`` master with a replica, and
the cluster URL's own rules: a write is acknowledged only once a replica has it, else
503 with Retry-After; a malformed cluster URL is refused with a clear message.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis

from app.backends import UnknownBackend, backend_from_url
from app.backends.redis.cluster import parse_cluster_url
from app.settings import Settings
from tests.support import RedisServer, app_client


@pytest.fixture
def master_and_replica() -> Iterator[tuple[RedisServer, RedisServer]]:
    master = RedisServer().start()
    replica = RedisServer(extra=("--replicaof", "127.0.0.1", str(master.port))).start()
    try:
        client = redis.Redis(port=replica.port)
        deadline = time.monotonic() + 15
        while client.info("replication").get("master_link_status") != "up":
            assert time.monotonic() < deadline, "the replica never synced"
            time.sleep(0.02)
        client.close()
        yield master, replica
    finally:
        replica.cleanup()
        master.cleanup()


async def test_writes_wait_for_a_replica_and_fail_without_one(
    master_and_replica: tuple[RedisServer, RedisServer],
) -> None:
    master, replica = master_and_replica
    settings = Settings(  # type: ignore[call-arg]
        backend=master.url, redis_wait_replicas=1, backend_timeout_seconds=1
    )
    async with app_client(settings) as client:
        r = await client.put("/v1/kv/k", json=1)
        assert r.status_code == 201, r.text
        # Acknowledged: the replica has it.
        on_replica = redis.Redis(port=replica.port)
        assert on_replica.hget("cb:{default}:k:k", "v") == b"1"
        on_replica.close()
        caps = (await client.get("/v1/capabilities")).json()
        assert caps["limits"]["redis_wait_replicas"] == 1
        # Watchers get what a replica confirmed.
        events = (await client.get("/v1/events", params={"since": 0})).json()["events"]
        assert [e["revision"] for e in events] == [1]

        replica.stop()
        r = await client.put("/v1/kv/k", json=2)
        assert r.status_code == 503, r.text
        assert r.headers["retry-after"]
        body = r.json()
        assert body["code"] == "backend_unavailable"
        assert "replicas confirmed" in body["detail"]
        # The write reached the master (it may or may not survive a failover).
        assert (await client.get("/v1/kv/k")).json()["value"] == 2
        # Reads need no replica.
        assert (await client.get("/v1/kv/k")).status_code == 200


async def test_without_wait_a_write_needs_no_replica(redis_url: str) -> None:
    async with app_client(Settings(backend=redis_url)) as client:  # type: ignore[call-arg]
        assert (await client.put("/v1/kv/solo", json=1)).status_code in (200, 201)
        caps = (await client.get("/v1/capabilities")).json()
        assert caps["limits"]["redis_wait_replicas"] == 0


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+cluster://h1", "host:port"),
        ("redis+cluster://h1:7000,:7001", "host:port"),
        ("redis+cluster://h1:7000/3", "only database 0"),
    ],
)
def test_malformed_cluster_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(UnknownBackend, match=message):
        backend_from_url(url, Settings(backend=url))  # type: ignore[call-arg]


def test_cluster_url_parts() -> None:
    scheme, userinfo, seeds, query = parse_cluster_url(
        "rediss+cluster://user:pw@a.example:7000,b.example:7001/0?ssl_cert_reqs=none"
    )
    assert scheme == "rediss" and userinfo == "user:pw@"
    assert seeds == [("a.example", 7000), ("b.example", 7001)]
    assert query == "ssl_cert_reqs=none"
