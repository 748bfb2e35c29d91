"""One suite, every backend: the ``backend`` fixture runs each test on memory, Redis and
a Redis Cluster.

Redis is a real ``redis-server`` started on a free port for the session (or the server at
``CORKBOARD_TEST_REDIS_URL``), flushed before each test; the cluster is 3 masters and 3
replicas of it (tests/redis_cluster.py), every master flushed before each test. With
``CORKBOARD_REQUIRE_REDIS=1`` a missing Redis fails the run instead of skipping.
"""

from __future__ import annotations

import os
import shutil
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx
import pytest
import redis

from app.settings import Settings
from tests.redis_cluster import RedisCluster
from tests.support import RedisServer, app_client

BACKENDS = ["memory", "redis", "cluster"]
#: Modules whose ``backend`` tests also run on the Redis Cluster: the shared backend suite
#: (keys, watch, locks, sessions, artifacts). Elsewhere (access control, bad input, the
#: service's plumbing) the engine makes no difference, and a third run would only add
#: minutes to the suite.
CLUSTER_MODULES = {
    "test_kv", "test_kv_listing", "test_ttl", "test_event_log", "test_events_poll",
    "test_hub", "test_locks", "test_locks_backend", "test_sessions",
    "test_session_snapshots", "test_variable_types", "test_artifacts", "test_quotas",
    "test_lock_waiters", "test_watch", "test_session_locks",
}
REQUIRE_REDIS = os.environ.get("CORKBOARD_REQUIRE_REDIS") == "1"


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A Redis URL for tests; never the developer's own Redis on 6379 unless asked."""
    url = os.environ.get("CORKBOARD_TEST_REDIS_URL")
    if url:
        yield worker_database(url)
        return
    if shutil.which("redis-server") is None:
        message = "redis-server is not on PATH (install it, or set CORKBOARD_TEST_REDIS_URL)"
        if REQUIRE_REDIS:
            pytest.fail(message + "; CORKBOARD_REQUIRE_REDIS=1 forbids skipping")
        pytest.skip(message)
    server = RedisServer().start()
    try:
        yield server.url
    finally:
        server.cleanup()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect the cluster runs of tests outside CLUSTER_MODULES."""
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        callspec = getattr(item, "callspec", None)
        module = item.nodeid.split("::", 1)[0].rsplit("/", 1)[-1].removesuffix(".py")
        if (
            callspec is not None
            and callspec.params.get("backend") == "cluster"
            and module not in CLUSTER_MODULES
        ):
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def need_redis_binaries() -> None:
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        message = "redis-server or redis-cli is not on PATH"
        if REQUIRE_REDIS:
            pytest.fail(message + "; CORKBOARD_REQUIRE_REDIS=1 forbids skipping")
        pytest.skip(message)


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    """A Redis Cluster of 3 masters and 3 replicas on loopback, for the session."""
    need_redis_binaries()
    cluster = RedisCluster().start()
    try:
        yield cluster
    finally:
        cluster.cleanup()


def worker_database(url: str) -> str:
    """``url`` for this pytest-xdist worker: worker N uses the database N places after
    the URL's (each test flushes its database, so workers must not share one)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw"):
        return url
    parts = urllib.parse.urlsplit(url)
    base = int(parts.path.strip("/") or 0)
    return urllib.parse.urlunsplit(parts._replace(path=f"/{base + int(worker[2:])}"))


def flush(url: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The backend URL of this run of a test: memory://, a flushed Redis or Redis Cluster."""
    if request.param == "memory":
        return "memory://"
    if request.param == "cluster":
        cluster: RedisCluster = request.getfixturevalue("redis_cluster")
        cluster.flush()
        return cluster.url
    url: str = request.getfixturevalue("redis_url")
    flush(url)
    return url


@pytest.fixture
def make_settings(backend: str) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {"backend": backend, "sweep_interval_seconds": 0.05}
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture
def make_client(
    make_settings: Callable[..., Settings],
) -> Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]:
    """Another app on this test's backend, with setting overrides."""

    def make(**overrides: Any) -> AbstractAsyncContextManager[httpx.AsyncClient]:
        return app_client(make_settings(**overrides))

    return make


@pytest.fixture
async def client(
    make_client: Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]],
) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client() as c:
        yield c
